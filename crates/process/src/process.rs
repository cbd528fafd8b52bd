//! [`AppServer`]: the owner of one `codex app-server` process, and the wiring of the tasks that
//! drive it (the actor; the stderr drain and the reaper for a real child).

use crate::actor::{Actor, ActorSettings, Inputs, ProcessState};
use crate::child::{self, StderrTail, STDERR_TAIL_LINES};
use crate::command::{Command, Commands};
use crate::config::ProcessConfig;
use crate::error::{ExitReason, ProcessError, SpawnError};
use crate::handle::{AppServerHandle, HandleInner};
use crate::lines::LineReader;
use crate::stats::SharedStats;
use codex_pool_protocol::jsonrpc::{encode_line, OutgoingNotification};
use codex_pool_protocol::methods::{
    AccountRead, AccountReadParams, ClientInfo, Initialize, InitializeCapabilities, InitializeParams,
    InitializeResponse,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::{mpsc, watch, Semaphore};
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

/// The I/O a connection runs over, and what identifies it in logs and stats.
pub(crate) struct Connection<R, W> {
    pub stdout: R,
    pub stdin: W,
    pub reaped: watch::Receiver<Option<ExitReason>>,
    pub stderr_tail: StderrTail,
    pub pid: u32,
    pub label: String,
}

/// Starts the actor over `conn`; returns the handle and its task.
pub(crate) fn wire<R, W>(config: &ProcessConfig, conn: Connection<R, W>) -> (AppServerHandle, Vec<JoinHandle<()>>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (commands, command_rx) = Commands::channel(config.max_queued_commands.max(1));
    let (abandon_tx, abandon_rx) = mpsc::unbounded_channel();
    let (state_tx, state_rx) = watch::channel(ProcessState::Starting);
    let stats = Arc::new(SharedStats::default());
    let settings = ActorSettings {
        label: conn.label.clone(),
        handler: config.handler.clone(),
        stats: stats.clone(),
        endpoint: config.endpoint.as_deref().map(Arc::from),
        max_backlog: config.max_turn_backlog,
        interrupt_grace: config.interrupt_grace,
    };
    let actor = Actor::new(settings, conn.stdin, state_tx, abandon_tx);
    let inputs = Inputs {
        commands: command_rx,
        abandoned: abandon_rx,
        reaped: conn.reaped.clone(),
        stdout: LineReader::new(BufReader::with_capacity(1 << 16, conn.stdout), config.max_line_bytes),
    };
    let tasks = vec![tokio::spawn(actor.run(inputs))];
    let handle = AppServerHandle::new(HandleInner {
        commands,
        permits: Semaphore::new(config.max_in_flight),
        max_in_flight: config.max_in_flight,
        request_timeout: config.request_timeout,
        stats,
        state: state_rx,
        reaped: conn.reaped,
        stderr_tail: conn.stderr_tail,
        pid: conn.pid,
        label: conn.label,
    });
    (handle, tasks)
}

impl AppServer {
    /// Spawns the process, performs the handshake and (with `require_login`) checks the login.
    pub async fn spawn(config: ProcessConfig) -> Result<Self, SpawnError> {
        config.prepare_dirs()?;
        let mut child = child::spawn(config.command())
            .await
            .map_err(|source| SpawnError::Spawn { path: config.codex_bin.clone(), source })?;
        let pid = child.id().unwrap_or(0);
        let label = format!("{}[{pid}]", config.label);
        tracing::info!(process = %label, bin = %config.codex_bin.display(), "codex app-server spawned");

        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (reaped_tx, reaped_rx) = watch::channel(None);
        let stderr_tail: StderrTail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let mut tasks = vec![
            tokio::spawn(child::drain_stderr(stderr, stderr_tail.clone(), label.clone())),
            tokio::spawn(child::wait_exit(child, reaped_tx, label.clone())),
        ];
        let conn = Connection { stdout, stdin, reaped: reaped_rx, stderr_tail, pid, label };
        let (handle, wired) = wire(&config, conn);
        tasks.extend(wired);
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

    /// Drives a peer that is not a child process of this one, over `stdout` (what it writes) and
    /// `stdin` (what it reads), and performs the same handshake as [`AppServer::spawn`]. `ended`
    /// stands for the OS's word on the process: the peer sets it when it is gone (a child's
    /// reaper does that for [`AppServer::spawn`]). No signal reaches such a peer (its pid is 0);
    /// [`AppServer::shutdown`] closes `stdin` and waits for `ended`. For a scripted peer in tests
    /// (faults the real binary cannot produce on demand) and for codex reached by other means.
    pub async fn connect<R, W>(
        config: ProcessConfig,
        stdout: R,
        stdin: W,
        ended: watch::Receiver<Option<ExitReason>>,
    ) -> Result<Self, SpawnError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let stderr_tail: StderrTail = Arc::new(Mutex::new(VecDeque::new()));
        let label = config.label.clone();
        let conn = Connection { stdout, stdin, reaped: ended, stderr_tail, pid: 0, label };
        let (handle, tasks) = wire(&config, conn);
        let mut server = AppServer { handle, tasks, init: None };
        match server.handshake(&config).await {
            Ok(init) => {
                server.init = Some(init);
                Ok(server)
            }
            Err(err) => {
                server.shutdown(Duration::from_millis(200)).await;
                Err(err)
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
        match h.ready_or_gone().await {
            ProcessState::Ready => {}
            ProcessState::Exited(why) => return Err(SpawnError::Handshake(ProcessError::Exited(why))),
            _ => return Err(SpawnError::Handshake(ProcessError::ShuttingDown)),
        }
        tracing::info!(process = %h.label(), user_agent = %init.user_agent, "codex app-server ready");
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
        let h = self.handle.clone();
        let _ = h.send(Command::Shutdown);
        if !h.wait_reaped_for(grace).await {
            tracing::warn!(process = %h.label(), "codex did not exit after stdin closed; sending SIGTERM");
            h.signal(libc::SIGTERM);
            if !h.wait_reaped_for(TERM_GRACE).await {
                tracing::warn!(process = %h.label(), "codex ignored SIGTERM; sending SIGKILL");
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
