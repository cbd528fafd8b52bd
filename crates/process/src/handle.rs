//! [`AppServerHandle`]: what callers hold to drive a process. Cheap to clone; every method is
//! safe to call concurrently and waits for its answer with a timeout of its own.

use crate::actor::ProcessState;
use crate::child::StderrTail;
use crate::command::{Command, Commands};
use crate::error::{ExitReason, ProcessError};
use crate::stats::{ProcessStats, SharedStats};
use crate::turn::TurnStream;
use codex_pool_protocol::methods::{
    Request, ThreadDelete, ThreadDeleteResponse, ThreadFork, ThreadForkParams, ThreadIdParams, ThreadInjectItems,
    ThreadInjectItemsParams, ThreadList, ThreadListParams, ThreadLoadedList, ThreadLoadedListParams, ThreadResponse,
    ThreadResume, ThreadResumeParams, ThreadSetName, ThreadSetNameParams, ThreadStart, ThreadStartParams,
    ThreadStartResponse, ThreadUnsubscribe, ThreadUnsubscribeResponse, TurnStartParams,
};
use codex_pool_protocol::tools::DynamicToolCallResponse;
use codex_pool_protocol::types::UserInput;
use codex_pool_protocol::CodexThreadId;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::time::Instant;

/// The most characters of text codex takes in one turn's input (it answers more with a JSON-RPC
/// error -32602); longer input is refused before it is sent.
pub const MAX_INPUT_CHARS: usize = 1 << 20;

/// A cheap, cloneable handle to a process. All methods are safe to call concurrently.
#[derive(Clone)]
pub struct AppServerHandle {
    inner: Arc<HandleInner>,
}

pub(crate) struct HandleInner {
    pub commands: Commands,
    pub permits: Semaphore,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub stats: Arc<SharedStats>,
    pub state: watch::Receiver<ProcessState>,
    /// How the OS process ended, once it has been reaped (stdout may close before that).
    pub reaped: watch::Receiver<Option<ExitReason>>,
    pub stderr_tail: StderrTail,
    pub pid: u32,
    pub label: String,
}

impl AppServerHandle {
    pub(crate) fn new(inner: HandleInner) -> Self {
        Self { inner: Arc::new(inner) }
    }

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

    /// How long codex has written nothing on stdout (a process streaming a turn is talking,
    /// however slow it is to answer a request).
    pub fn quiet_for(&self) -> Duration {
        self.inner.stats.quiet_for()
    }

    /// Waits until the process is gone (exited, or its stdout closed); returns how.
    pub async fn exited(&self) -> ExitReason {
        let mut rx = self.inner.state.clone();
        let state = rx.wait_for(|s| matches!(s, ProcessState::Exited(_))).await.map(|s| s.clone());
        match state {
            Ok(ProcessState::Exited(why)) => why,
            _ => ExitReason::Unknown,
        }
    }

    /// Waits until the process has left `Starting`; returns where it went.
    pub(crate) async fn ready_or_gone(&self) -> ProcessState {
        let mut rx = self.inner.state.clone();
        let state = rx.wait_for(|s| *s != ProcessState::Starting).await.map(|s| s.clone());
        state.unwrap_or(ProcessState::Exited(ExitReason::Unknown))
    }

    /// Waits up to `limit` until the OS process has been reaped (not just its stdout closed).
    pub(crate) async fn wait_reaped_for(&self, limit: Duration) -> bool {
        let mut rx = self.inner.reaped.clone();
        tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await.is_ok_and(|r| r.is_ok())
    }

    /// How the OS process ended, once it has been reaped.
    pub fn exit_status(&self) -> Option<ExitReason> {
        self.inner.reaped.borrow().clone()
    }

    /// The last lines codex wrote to stderr (at most 20), oldest first.
    pub fn stderr_tail(&self) -> String {
        let tail = self.inner.stderr_tail.lock().expect("stderr tail lock");
        tail.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }

    /// Sends a signal to the process group (nothing once the process has been reaped).
    pub fn signal(&self, signal: libc::c_int) {
        if self.inner.reaped.borrow().is_none() {
            crate::child::signal(self.inner.pid, signal);
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
        let deadline = Instant::now() + timeout;
        let _permit = self.acquire(deadline).await?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Call { method, params, reply })?;
        self.await_reply(method, rx, deadline, timeout).await?
    }

    /// Starts a turn. The returned stream yields its events; see [`TurnStream`]. Fails with
    /// [`ProcessError::ThreadBusy`] while another turn of the thread runs (a turn whose consumer
    /// dropped it is waited for: codex is ending it), and with [`ProcessError::InputTooLarge`]
    /// for input longer than codex takes.
    pub async fn start_turn(&self, params: TurnStartParams) -> Result<TurnStream, ProcessError> {
        check_input(&params.input)?;
        let timeout = self.inner.request_timeout;
        let deadline = Instant::now() + timeout;
        let _permit = self.acquire(deadline).await?;
        let (reply, rx) = oneshot::channel();
        // The thread's name outlives `params` only when hops are traced.
        let thread = tracing::enabled!(target: crate::hops::HOPS_TARGET, tracing::Level::TRACE)
            .then(|| params.thread_id.clone());
        self.send(Command::StartTurn { params, reply })?;
        if let Some(thread) = thread {
            crate::hops::hop(thread.as_str(), "handle.queued");
        }
        self.await_reply("turn/start", rx, deadline, timeout).await?
    }

    /// Interrupts the running turn of a thread; answers once codex has taken the interrupt (or
    /// the turn has ended). Never queues behind other requests.
    pub async fn interrupt(&self, thread_id: &CodexThreadId) -> Result<(), ProcessError> {
        let timeout = self.inner.request_timeout;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Interrupt { thread_id: thread_id.clone(), reply })?;
        self.await_reply("turn/interrupt", rx, Instant::now() + timeout, timeout).await?
    }

    /// Asks codex to compact a thread's history now (`thread/compact/start`): a turn codex runs
    /// itself, whose stream this returns (its id comes with `Started`). Fails with
    /// [`ProcessError::ThreadBusy`] while a turn runs on the thread.
    pub async fn compact_thread(&self, thread_id: &CodexThreadId) -> Result<TurnStream, ProcessError> {
        let timeout = self.inner.request_timeout;
        let deadline = Instant::now() + timeout;
        let _permit = self.acquire(deadline).await?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Compact { thread_id: thread_id.clone(), reply })?;
        self.await_reply("thread/compact/start", rx, deadline, timeout).await?
    }

    /// Gives codex the output of a client tool call its turn waits on (see
    /// [`TurnEvent::ToolCall`](crate::TurnEvent::ToolCall)); answers once it is written. Fails
    /// with [`ProcessError::NoSuchToolCall`] when no such call waits (answered already, or its
    /// turn ended). Never queues behind other requests.
    pub async fn answer_tool_call(
        &self,
        thread_id: &CodexThreadId,
        call_id: &str,
        answer: DynamicToolCallResponse,
    ) -> Result<(), ProcessError> {
        let timeout = self.inner.request_timeout;
        let (reply, rx) = oneshot::channel();
        self.send(Command::AnswerToolCall {
            thread_id: thread_id.clone(),
            call_id: call_id.to_owned(),
            answer,
            reply,
        })?;
        self.await_reply("item/tool/call", rx, Instant::now() + timeout, timeout).await?
    }

    /// A cheap request that bypasses the cap on requests in flight: a health check.
    pub async fn ping(&self, timeout: Duration) -> Result<(), ProcessError> {
        let params = serde_json::value::to_raw_value(&ThreadLoadedListParams { cursor: None, limit: Some(1) })
            .expect("params serialize");
        let (reply, rx) = oneshot::channel();
        self.send(Command::Call { method: ThreadLoadedList::METHOD, params, reply })?;
        self.await_reply(ThreadLoadedList::METHOD, rx, Instant::now() + timeout, timeout).await??;
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
    pub async fn inject_items(&self, thread_id: &CodexThreadId, items: Vec<Value>) -> Result<(), ProcessError> {
        let params = ThreadInjectItemsParams { thread_id: thread_id.clone(), items };
        self.request::<ThreadInjectItems>(&params).await.map(|_| ())
    }

    /// `thread/fork`.
    pub async fn fork_thread(&self, params: &ThreadForkParams) -> Result<ThreadResponse, ProcessError> {
        self.request::<ThreadFork>(params).await
    }

    /// `thread/unsubscribe`.
    pub async fn unsubscribe(&self, thread_id: &CodexThreadId) -> Result<ThreadUnsubscribeResponse, ProcessError> {
        self.request::<ThreadUnsubscribe>(&ThreadIdParams { thread_id: thread_id.clone() }).await
    }

    /// `thread/delete`: unloads the thread and removes codex's copy of it on disk.
    pub async fn delete_thread(&self, thread_id: &CodexThreadId) -> Result<ThreadDeleteResponse, ProcessError> {
        self.request::<ThreadDelete>(&ThreadIdParams { thread_id: thread_id.clone() }).await
    }

    /// `thread/name/set`.
    pub async fn set_thread_name(&self, thread_id: &CodexThreadId, name: &str) -> Result<(), ProcessError> {
        let params = ThreadSetNameParams { thread_id: thread_id.clone(), name: name.to_owned() };
        self.request::<ThreadSetName>(&params).await.map(|_| ())
    }

    /// The ids of the threads codex keeps on disk named exactly `name` (every page of
    /// `thread/list`, read from codex's state database).
    pub async fn threads_named(&self, name: &str) -> Result<Vec<CodexThreadId>, ProcessError> {
        let mut params = ThreadListParams {
            search_term: Some(name.to_owned()),
            limit: Some(100),
            use_state_db_only: Some(true),
            ..Default::default()
        };
        let mut ids = Vec::new();
        loop {
            let page = self.request::<ThreadList>(&params).await?;
            ids.extend(page.data.into_iter().filter(|t| t.name.as_deref() == Some(name)).map(|t| t.id));
            match page.next_cursor {
                Some(cursor) if params.cursor.as_ref() != Some(&cursor) => params.cursor = Some(cursor),
                _ => return Ok(ids),
            }
        }
    }

    pub(crate) fn send(&self, cmd: Command) -> Result<(), ProcessError> {
        self.inner.commands.send(cmd).map_err(|e| match e {
            ProcessError::ShuttingDown => self.gone(),
            e => e,
        })
    }

    /// Why a command could not be delivered: the process is gone, or going.
    fn gone(&self) -> ProcessError {
        match &*self.inner.state.borrow() {
            ProcessState::Exited(why) => ProcessError::Exited(why.clone()),
            _ => ProcessError::ShuttingDown,
        }
    }

    async fn acquire(&self, deadline: Instant) -> Result<InFlight<'_>, ProcessError> {
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
        deadline: Instant,
        timeout: Duration,
    ) -> Result<T, ProcessError> {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => Err(ProcessError::Timeout { method, timeout }),
        }
    }
}

impl std::fmt::Debug for AppServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppServerHandle").field("label", &self.inner.label).finish()
    }
}

/// Refuses input codex would refuse or drop, before it is sent: more text than codex takes
/// ([`MAX_INPUT_CHARS`]), and an image by URL that is not a `data:` URL (codex 0.169.0 and 0.171.0 refuse
/// `http:` and `https:` ones, "remote image URLs are not supported", and silently drop others).
pub fn check_input(input: &[UserInput]) -> Result<(), ProcessError> {
    let images = input.iter().filter_map(|i| match i {
        UserInput::Image { url } => Some(url),
        _ => None,
    });
    for (n, url) in images.enumerate() {
        if !url.get(..5).is_some_and(|scheme| scheme.eq_ignore_ascii_case("data:")) {
            return Err(ProcessError::InvalidInput(format!(
                "image {} of the input is not a `data:` URL; codex takes no remote image: send it inline, as \
                 `data:image/png;base64,...` (or image/jpeg, image/gif, image/webp)",
                n + 1
            )));
        }
    }
    let chars: usize = input
        .iter()
        .map(|i| match i {
            UserInput::Text { text } => text.chars().count(),
            _ => 0,
        })
        .sum();
    if chars > MAX_INPUT_CHARS {
        return Err(ProcessError::InputTooLarge { chars, limit: MAX_INPUT_CHARS });
    }
    Ok(())
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
