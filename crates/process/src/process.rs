//! Spawning a process and the handles that drive it.

use crate::actor::{Actor, Command, Inbound, ProcessState};
use crate::config::ProcessConfig;
use crate::error::{ProcessError, SpawnError};
use crate::lines::{Line, LineReader};
use crate::stats::{ProcessStats, SharedStats};
use crate::turn::TurnStream;
use codex_pool_protocol::jsonrpc::{encode_line, OutgoingNotification};
use codex_pool_protocol::methods::{
    AccountRead, AccountReadParams, ClientInfo, Initialize, InitializeCapabilities, InitializeParams,
    InitializeResponse, Request, ThreadFork, ThreadForkParams, ThreadIdParams, ThreadInjectItems,
    ThreadInjectItemsParams, ThreadLoadedList, ThreadLoadedListParams, ThreadResponse, ThreadResume,
    ThreadResumeParams, ThreadStart, ThreadStartParams, ThreadStartResponse, ThreadUnsubscribe,
    ThreadUnsubscribeResponse, TurnStartParams,
};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

/// How long a process gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// A running `codex app-server` process: the owner. Hand out [`AppServer::handle`]s to drive it;
/// call [`AppServer::shutdown`] to end it. Dropping it kills the process.
pub struct AppServer {
    handle: AppServerHandle,
    tasks: Vec<JoinHandle<()>>,
    init: Option<InitializeResponse>,
}

/// A cheap, cloneable handle to a process. All methods are safe to call concurrently.
#[derive(Clone)]
pub struct AppServerHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    commands: mpsc::UnboundedSender<Command>,
    permits: Semaphore,
    max_in_flight: usize,
    request_timeout: Duration,
    stats: Arc<SharedStats>,
    state: watch::Receiver<ProcessState>,
    /// The exit status once the process has been reaped (stdout may close before that).
    reaped: watch::Receiver<Option<String>>,
    /// The last lines codex wrote to stderr, for error messages.
    stderr_tail: Arc<std::sync::Mutex<VecDeque<String>>>,
    pid: u32,
    label: String,
}

/// Lines of stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 20;

impl AppServer {
    /// Spawns the process, performs the handshake and (with `require_login`) checks the login.
    pub async fn spawn(config: ProcessConfig) -> Result<Self, SpawnError> {
        config.prepare_dirs()?;
        let mut cmd = config.command();
        let mut child = cmd.spawn().map_err(|source| SpawnError::Spawn { path: config.codex_bin.clone(), source })?;
        let pid = child.id().unwrap_or(0);
        let label = format!("{}[{pid}]", config.label);
        tracing::info!(process = %label, bin = %config.codex_bin.display(), "codex app-server spawned");

        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (writer_tx, writer_rx) = mpsc::channel::<Vec<u8>>(4096);
        let (inbound_tx, inbound_rx) = mpsc::channel::<Inbound>(1024);
        let (command_tx, command_rx) = mpsc::unbounded_channel::<Command>();
        let (state_tx, state_rx) = watch::channel(ProcessState::Starting);
        let stats = Arc::new(SharedStats::default());
        let (reaped_tx, reaped_rx) = watch::channel(None);
        let stderr_tail = Arc::new(std::sync::Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));

        let actor = Actor::new(
            label.clone(),
            writer_tx,
            command_tx.clone(),
            config.handler.clone(),
            stats.clone(),
            state_tx,
            config.max_turn_backlog,
            config.interrupt_grace,
        );
        let tasks = vec![
            tokio::spawn(write_stdin(stdin, writer_rx, label.clone())),
            tokio::spawn(drain_stderr(stderr, stderr_tail.clone(), label.clone())),
            tokio::spawn(wait_exit(child, inbound_tx, reaped_tx, label.clone())),
            tokio::spawn(actor.run(
                command_rx,
                inbound_rx,
                LineReader::new(BufReader::with_capacity(1 << 16, stdout), config.max_line_bytes),
            )),
        ];
        let handle = AppServerHandle {
            inner: Arc::new(HandleInner {
                commands: command_tx,
                permits: Semaphore::new(config.max_in_flight),
                max_in_flight: config.max_in_flight,
                request_timeout: config.request_timeout,
                stats,
                state: state_rx,
                reaped: reaped_rx,
                stderr_tail,
                pid,
                label,
            }),
        };
        let mut server = AppServer { handle, tasks, init: None };
        match server.handshake(&config).await {
            Ok(init) => {
                server.init = Some(init);
                Ok(server)
            }
            Err(err) => {
                let handle = server.handle.clone();
                server.shutdown(Duration::from_millis(200)).await;
                // A process that died during the handshake: say how, and what it printed.
                let died = matches!(&err, SpawnError::Handshake(e) if e.is_process_gone());
                match (died, handle.exit_status()) {
                    (true, Some(status)) => Err(SpawnError::Died { status, stderr: handle.stderr_tail() }),
                    _ => Err(err),
                }
            }
        }
    }

    async fn handshake(&self, config: &ProcessConfig) -> Result<InitializeResponse, SpawnError> {
        let params = InitializeParams {
            client_info: ClientInfo { name: "codex-pool".to_owned(), version: env!("CARGO_PKG_VERSION").to_owned() },
            capabilities: Some(InitializeCapabilities {
                // For `experimentalRawEvents` and `thread/inject_items`: the pool keeps each
                // conversation's history itself.
                experimental_api: true,
                opt_out_notification_methods: (!config.opt_out_notifications.is_empty())
                    .then(|| config.opt_out_notifications.clone()),
            }),
        };
        let h = &self.handle;
        let init = h
            .request_with_timeout::<Initialize>(&params, config.handshake_timeout)
            .await
            .map_err(SpawnError::Handshake)?;
        h.send(Command::Notify {
            line: encode_line(&OutgoingNotification::<()> { method: "initialized", params: None }),
        })
        .map_err(SpawnError::Handshake)?;
        if config.require_login {
            let account =
                h.request::<AccountRead>(&AccountReadParams::default()).await.map_err(SpawnError::Handshake)?;
            if account.requires_openai_auth && account.account.is_none() {
                return Err(SpawnError::NotLoggedIn {
                    codex_bin: config.codex_bin.display().to_string(),
                    codex_home: config.codex_home.display().to_string(),
                });
            }
        }
        h.send(Command::MarkReady).map_err(SpawnError::Handshake)?;
        // Serve only once the actor has taken the transition (or report why it could not).
        let mut state = h.inner.state.clone();
        match state.wait_for(|s| *s != ProcessState::Starting).await.map(|s| s.clone()) {
            Ok(ProcessState::Ready) => {}
            Ok(ProcessState::Exited(why)) => return Err(SpawnError::Handshake(ProcessError::Exited(why))),
            Ok(_) | Err(_) => return Err(SpawnError::Handshake(ProcessError::ShuttingDown)),
        }
        tracing::info!(process = %h.inner.label, user_agent = %init.user_agent, "codex app-server ready");
        Ok(init)
    }

    /// A handle for driving the process.
    pub fn handle(&self) -> &AppServerHandle {
        &self.handle
    }

    /// What the server said in `initialize`.
    pub fn init_info(&self) -> Option<&InitializeResponse> {
        self.init.as_ref()
    }

    /// Ends the process: running turns are interrupted and end with [`crate::AbortReason::Shutdown`],
    /// stdin is closed, and the process gets `grace` to exit before SIGTERM, then SIGKILL. Returns
    /// once the process and all its tasks are gone.
    pub async fn shutdown(mut self, grace: Duration) {
        let h = &self.handle;
        let _ = h.inner.commands.send(Command::Shutdown);
        if !h.wait_reaped_for(grace).await {
            tracing::warn!(process = %h.inner.label, "codex did not exit after stdin closed; sending SIGTERM");
            h.signal(libc::SIGTERM);
            if !h.wait_reaped_for(TERM_GRACE).await {
                tracing::warn!(process = %h.inner.label, "codex ignored SIGTERM; sending SIGKILL");
                h.signal(libc::SIGKILL);
                h.wait_reaped_for(TERM_GRACE).await;
            }
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            // Not shut down: make sure no codex outlives its owner.
            self.handle.signal(libc::SIGKILL);
            for task in &self.tasks {
                task.abort();
            }
        }
    }
}

impl AppServerHandle {
    /// OS process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// A name for logs: `label[pid]`.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// Where the process stands.
    pub fn state(&self) -> ProcessState {
        self.inner.state.borrow().clone()
    }

    /// Whether it serves requests.
    pub fn is_ready(&self) -> bool {
        matches!(*self.inner.state.borrow(), ProcessState::Ready)
    }

    /// Its load now.
    pub fn stats(&self) -> ProcessStats {
        self.inner.stats.snapshot(self.inner.pid)
    }

    /// Waits until the process has exited; returns why.
    pub async fn exited(&self) -> String {
        let mut rx = self.inner.state.clone();
        loop {
            if let ProcessState::Exited(why) = &*rx.borrow_and_update() {
                return why.clone();
            }
            if rx.changed().await.is_err() {
                return "the process actor ended".to_owned();
            }
        }
    }

    /// Waits until the OS process has been reaped (not just its stdout closed).
    async fn wait_reaped_for(&self, limit: Duration) -> bool {
        let mut rx = self.inner.reaped.clone();
        tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await.is_ok_and(|r| r.is_ok())
    }

    /// The exit status, once the process has been reaped.
    pub fn exit_status(&self) -> Option<String> {
        self.inner.reaped.borrow().clone()
    }

    /// The last lines codex wrote to stderr (at most 20), oldest first.
    pub fn stderr_tail(&self) -> String {
        let tail = self.inner.stderr_tail.lock().expect("stderr tail lock");
        tail.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }

    /// Sends a signal to the process group (no-op once the process has been reaped).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.inner.pid as libc::pid_t;
        if pid > 0 && self.inner.reaped.borrow().is_none() {
            // SAFETY: plain syscalls on a process group this crate created.
            unsafe {
                libc::kill(-pid, signal);
                libc::kill(pid, signal);
            }
        }
    }

    /// Sends a typed request and waits for its answer (within the request timeout).
    pub async fn request<R: Request>(&self, params: &R::Params) -> Result<R::Response, ProcessError> {
        self.request_with_timeout::<R>(params, self.inner.request_timeout).await
    }

    /// [`AppServerHandle::request`] with a timeout of the caller's choosing.
    pub async fn request_with_timeout<R: Request>(
        &self,
        params: &R::Params,
        timeout: Duration,
    ) -> Result<R::Response, ProcessError> {
        let raw = serde_json::value::to_raw_value(params)
            .map_err(|e| ProcessError::BadResponse { method: R::METHOD, reason: format!("params: {e}") })?;
        let result = self.call(R::METHOD, raw, timeout).await?;
        serde_json::from_str(result.get())
            .map_err(|e| ProcessError::BadResponse { method: R::METHOD, reason: e.to_string() })
    }

    /// Sends a request by method name with raw params: for methods without a typed wrapper.
    pub async fn call(
        &self,
        method: &'static str,
        params: Box<RawValue>,
        timeout: Duration,
    ) -> Result<Box<RawValue>, ProcessError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let _permit = self.acquire(deadline).await?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Call { method, params, reply })?;
        self.await_reply(method, rx, deadline, timeout).await?
    }

    /// Starts a turn. The returned stream yields its events; see [`TurnStream`].
    /// Fails with [`ProcessError::ThreadBusy`] while another turn of the thread runs.
    pub async fn start_turn(&self, params: TurnStartParams) -> Result<TurnStream, ProcessError> {
        let timeout = self.inner.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let _permit = self.acquire(deadline).await?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::StartTurn { params, reply })?;
        self.await_reply("turn/start", rx, deadline, timeout).await?
    }

    /// Interrupts the running turn of a thread. Never queues behind other requests.
    pub async fn interrupt(&self, thread_id: &str) -> Result<(), ProcessError> {
        let timeout = self.inner.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        // The turn running now; retries go to it only, never to a turn started meanwhile.
        let mut target: Option<String> = None;
        loop {
            let (reply, rx) = oneshot::channel();
            self.send(Command::Interrupt { thread_id: thread_id.to_owned(), turn_id: target.clone(), reply })?;
            match self.await_reply("turn/interrupt", rx, deadline, timeout).await? {
                Ok(_) => return Ok(()),
                // codex answers `turn/start` a moment before the turn counts as active; the turn
                // has not ended (we would have seen `turn/completed`), so ask again shortly.
                Err(ProcessError::Rpc { error, .. })
                    if is_turn_not_active_yet(&error) && tokio::time::Instant::now() < deadline =>
                {
                    if target.is_none() {
                        target = self.current_turn(thread_id).await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // The turn ended between two attempts: there is nothing left to interrupt.
                Err(ProcessError::NoActiveTurn { .. }) if target.is_some() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    async fn current_turn(&self, thread_id: &str) -> Option<String> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::CurrentTurn { thread_id: thread_id.to_owned(), reply }).ok()?;
        rx.await.ok().flatten()
    }

    /// A cheap request that bypasses the cap on requests in flight: a health check.
    pub async fn ping(&self, timeout: Duration) -> Result<(), ProcessError> {
        let params = serde_json::value::to_raw_value(&ThreadLoadedListParams { cursor: None, limit: Some(1) })
            .expect("params serialize");
        let (reply, rx) = oneshot::channel();
        self.send(Command::Call { method: ThreadLoadedList::METHOD, params, reply })?;
        self.await_reply(ThreadLoadedList::METHOD, rx, tokio::time::Instant::now() + timeout, timeout).await??;
        Ok(())
    }

    /// `thread/start`.
    pub async fn start_thread(&self, params: &ThreadStartParams) -> Result<ThreadStartResponse, ProcessError> {
        self.request::<ThreadStart>(params).await
    }

    /// `thread/resume`.
    pub async fn resume_thread(&self, params: &ThreadResumeParams) -> Result<ThreadResponse, ProcessError> {
        self.request::<ThreadResume>(params).await
    }

    /// `thread/inject_items`: appends Responses API items to a loaded thread's history.
    pub async fn inject_items(&self, thread_id: &str, items: Vec<Value>) -> Result<(), ProcessError> {
        let params = ThreadInjectItemsParams { thread_id: thread_id.to_owned(), items };
        self.request::<ThreadInjectItems>(&params).await.map(|_| ())
    }

    /// `thread/fork`.
    pub async fn fork_thread(&self, params: &ThreadForkParams) -> Result<ThreadResponse, ProcessError> {
        self.request::<ThreadFork>(params).await
    }

    /// `thread/unsubscribe`.
    pub async fn unsubscribe(&self, thread_id: &str) -> Result<ThreadUnsubscribeResponse, ProcessError> {
        self.request::<ThreadUnsubscribe>(&ThreadIdParams { thread_id: thread_id.to_owned() }).await
    }

    fn send(&self, cmd: Command) -> Result<(), ProcessError> {
        self.inner.commands.send(cmd).map_err(|_| ProcessError::Exited(self.exit_reason()))
    }

    fn exit_reason(&self) -> String {
        match &*self.inner.state.borrow() {
            ProcessState::Exited(why) => why.clone(),
            _ => "the process actor ended".to_owned(),
        }
    }

    async fn acquire(&self, deadline: tokio::time::Instant) -> Result<InFlight<'_>, ProcessError> {
        match tokio::time::timeout_at(deadline, self.inner.permits.acquire()).await {
            Ok(Ok(permit)) => {
                self.inner.stats.in_flight.fetch_add(1, Ordering::Relaxed);
                Ok(InFlight { _permit: permit, stats: &self.inner.stats })
            }
            Ok(Err(_)) => Err(ProcessError::ShuttingDown),
            Err(_) => Err(ProcessError::Overloaded { limit: self.inner.max_in_flight }),
        }
    }

    async fn await_reply<T>(
        &self,
        method: &'static str,
        rx: oneshot::Receiver<T>,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<T, ProcessError> {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(ProcessError::Exited(self.exit_reason())),
            Err(_) => Err(ProcessError::Timeout { method, timeout }),
        }
    }
}

impl std::fmt::Debug for AppServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppServerHandle").field("label", &self.inner.label).finish()
    }
}

fn is_turn_not_active_yet(r: &codex_pool_protocol::RpcError) -> bool {
    r.code == codex_pool_protocol::RpcError::INVALID_REQUEST && r.message.contains("no active turn")
}

/// A request slot; counts itself in the stats while held.
struct InFlight<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    stats: &'a SharedStats,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn write_stdin(mut stdin: ChildStdin, mut lines: mpsc::Receiver<Vec<u8>>, label: String) {
    while let Some(line) = lines.recv().await {
        if let Err(e) = stdin.write_all(&line).await {
            tracing::debug!(process = %label, error = %e, "stdin closed");
            return;
        }
    }
    // The actor dropped its sender: closing stdin tells codex to exit.
    let _ = stdin.shutdown().await;
}

/// Forwards codex's stderr to `tracing` at DEBUG, at most `BURST` lines a second (the rest are
/// counted), reading continuously so codex never blocks on a full pipe.
async fn drain_stderr(
    stderr: tokio::process::ChildStderr,
    tail: Arc<std::sync::Mutex<VecDeque<String>>>,
    label: String,
) {
    const BURST: u32 = 50;
    let mut lines = LineReader::new(BufReader::new(stderr), 64 << 10);
    let mut window = tokio::time::Instant::now();
    let (mut logged, mut skipped) = (0u32, 0u64);
    while let Ok(Some(line)) = lines.next_line().await {
        if window.elapsed() >= Duration::from_secs(1) {
            if skipped > 0 {
                tracing::debug!(process = %label, skipped, "codex stderr lines not logged");
            }
            window = tokio::time::Instant::now();
            (logged, skipped) = (0, 0);
        }
        if let Line::Complete(bytes) = &line {
            let mut tail = tail.lock().expect("stderr tail lock");
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned());
        }
        if logged >= BURST {
            skipped += 1;
            continue;
        }
        logged += 1;
        match line {
            Line::Complete(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                tracing::debug!(target: "codex_pool::codex_stderr", process = %label, "{text}");
            }
            Line::TooLong { len } => {
                tracing::debug!(target: "codex_pool::codex_stderr", process = %label, len, "long stderr line skipped");
            }
        }
    }
}

async fn wait_exit(
    mut child: Child,
    inbound: mpsc::Sender<Inbound>,
    reaped: watch::Sender<Option<String>>,
    label: String,
) {
    let pid = child.id();
    let why = match child.wait().await {
        Ok(status) => format!("exited with {status}"),
        Err(e) => format!("wait failed: {e}"),
    };
    // Whatever codex started (tool shells, MCP servers) goes with it: its group is still ours.
    if let Some(pid) = pid {
        // SAFETY: a plain syscall on the process group this crate created.
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        }
    }
    reaped.send_replace(Some(why.clone()));
    tracing::info!(process = %label, reason = %why, "codex app-server exited");
    let _ = inbound.send(Inbound::Exited(why)).await;
}
