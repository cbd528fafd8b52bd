//! Errors of one process.

use codex_pool_protocol::{CodexThreadId, RpcError};
use std::path::PathBuf;
use std::time::Duration;

/// Why the codex binary could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// No binary anywhere we looked.
    #[error(
        "no codex binary found (looked at: {looked}). Install the pinned CLI with \
         `npm ci --prefix tools/codex` in the codex-pool repository, or point --codex-bin / CODEX_BIN at one"
    )]
    NotFound {
        /// Every place tried, in order.
        looked: String,
    },
    /// The path is a directory or another non-file.
    #[error("{path} is not a file; point --codex-bin / CODEX_BIN at the codex binary itself")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The path exists but is not an executable file.
    #[error("{path} is not an executable file; fix its permissions (chmod +x) or point CODEX_BIN elsewhere")]
    NotExecutable {
        /// The path.
        path: PathBuf,
    },
    /// `codex --version` failed.
    #[error("`{path} --version` failed: {reason}")]
    VersionCheck {
        /// The path.
        path: PathBuf,
        /// What happened.
        reason: String,
    },
    /// The binary is another version than the one codex-pool is built and tested for.
    #[error(
        "{path} is codex {found}, but codex-pool is pinned to {expected}; install the pinned one \
         (`npm ci --prefix tools/codex` in the repository, or `npm install @openai/codex@{expected}` and point \
         --codex-bin / CODEX_BIN at it), or set CODEX_POOL_ALLOW_ANY_CODEX_VERSION=1 to use this one anyway"
    )]
    WrongVersion {
        /// The path.
        path: PathBuf,
        /// Version found.
        found: String,
        /// Version expected.
        expected: &'static str,
    },
}

/// How a process ended (or stopped being reachable).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// The process exited with this status code.
    Code(i32),
    /// A signal ended the process.
    Signal(i32),
    /// Its stdout closed (end of file, or a read error), so nothing it says can be read any more;
    /// the process itself may still run until it is killed.
    StdoutClosed {
        /// The read error, if it was one.
        error: Option<String>,
    },
    /// The OS could not tell how the process ended.
    WaitFailed(String),
    /// The actor that owned the process ended before the process's end was known.
    Unknown,
}

impl ExitReason {
    /// From the status the OS reported.
    pub fn from_status(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitReason::Code(code),
            (None, Some(signal)) => ExitReason::Signal(signal),
            (None, None) => ExitReason::WaitFailed(status.to_string()),
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Code(code) => write!(f, "exit status: {code}"),
            ExitReason::Signal(signal) => write!(f, "signal: {signal}"),
            ExitReason::StdoutClosed { error: None } => write!(f, "stdout closed: end of file"),
            ExitReason::StdoutClosed { error: Some(e) } => write!(f, "stdout closed: {e}"),
            ExitReason::WaitFailed(e) => write!(f, "wait failed: {e}"),
            ExitReason::Unknown => write!(f, "the process actor ended"),
        }
    }
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The binary is unusable.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// A directory the process needs could not be made.
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The OS refused to start it.
    #[error("cannot start {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `initialize` failed.
    #[error("codex app-server handshake failed: {0}")]
    Handshake(#[source] ProcessError),
    /// The process died during start-up.
    #[error("codex app-server died during start-up ({status}); it said:\n{stderr}")]
    Died {
        /// How it ended.
        status: ExitReason,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// The process needs an OpenAI login and has none.
    #[error(
        "codex is not logged in (CODEX_HOME={codex_home}); run `CODEX_HOME={codex_home} {codex_bin} login`, \
         or use a model provider that needs no login"
    )]
    NotLoggedIn {
        /// The codex binary.
        codex_bin: String,
        /// The CODEX_HOME in use.
        codex_home: String,
    },
}

/// Why a request to a running process failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The server answered with a JSON-RPC error.
    #[error("codex answered {method} with an error: {error}")]
    Rpc {
        /// The method.
        method: &'static str,
        /// The error.
        error: RpcError,
    },
    /// No answer within the request timeout.
    #[error("codex did not answer {method} within {timeout:?}")]
    Timeout {
        /// The method.
        method: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// The process has exited (or its pipes broke).
    #[error("the codex process has exited ({0})")]
    Exited(ExitReason),
    /// The process is shutting down and takes no new work.
    #[error("the codex process is shutting down")]
    ShuttingDown,
    /// codex is not reading its input: the queue to its stdin is full.
    #[error("codex is not reading its input (stdin queue full)")]
    StdinBacklog,
    /// The process's actor has more commands queued than it takes; it is far behind.
    #[error("the codex process has {capacity} commands queued and takes no more; retry later")]
    CommandQueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// Too many requests in flight on this process.
    #[error("too many requests in flight on this codex process ({limit}); retry later")]
    Overloaded {
        /// The limit.
        limit: usize,
    },
    /// A turn is already running on the thread.
    #[error("thread {thread_id} already has a turn running; wait for it to end or interrupt it")]
    ThreadBusy {
        /// The thread.
        thread_id: CodexThreadId,
    },
    /// No call of that id waits for its output on the thread (it was answered, its turn ended,
    /// or codex never made it).
    #[error("no tool call {call_id} waits on thread {thread_id}; it was answered already or its turn ended")]
    NoSuchToolCall {
        /// The thread.
        thread_id: CodexThreadId,
        /// The call id.
        call_id: String,
    },
    /// No turn is running on the thread.
    #[error("thread {thread_id} has no turn running")]
    NoActiveTurn {
        /// The thread.
        thread_id: CodexThreadId,
    },
    /// The input is longer than codex accepts; it was not sent.
    #[error("the input has {chars} characters of text, over codex's limit of {limit}; shorten it or split it over several turns")]
    InputTooLarge {
        /// Characters of text in the input.
        chars: usize,
        /// The most codex accepts in one turn.
        limit: usize,
    },
    /// The input has something codex refuses or would drop (see [`crate::check_input`]); it was
    /// not sent. The message says what to send instead and quotes nothing of the input.
    #[error("{0}")]
    InvalidInput(String),
    /// The server's answer did not have the shape the protocol says.
    #[error("codex answered {method} with an unexpected shape: {reason}")]
    BadResponse {
        /// The method.
        method: &'static str,
        /// The decode error.
        reason: String,
    },
}

impl ProcessError {
    /// The JSON-RPC error, when codex answered with one.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            ProcessError::Rpc { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether the process itself is gone or going (as opposed to one request failing).
    pub fn is_process_gone(&self) -> bool {
        matches!(self, ProcessError::Exited(_) | ProcessError::ShuttingDown)
    }
}
