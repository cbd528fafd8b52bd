//! The OS side of a process: starting codex so that it dies with its owner, waiting for it,
//! draining its stderr, and signalling its process group.

use crate::error::ExitReason;
use crate::lines::{Line, LineReader};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::sync::{oneshot, watch};

/// Lines of stderr kept for error messages.
pub(crate) const STDERR_TAIL_LINES: usize = 20;

/// The last lines a process wrote to stderr, oldest first.
pub(crate) type StderrTail = Arc<Mutex<VecDeque<String>>>;

struct SpawnJob {
    command: tokio::process::Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<std::io::Result<tokio::process::Child>>,
}

/// Starts `command` from a thread that lives as long as the program.
///
/// Each codex gets `PR_SET_PDEATHSIG` (see `ProcessConfig::command`), which Linux fires when the
/// *thread* that forked the child ends, not the process. Spawned from a tokio blocking-pool
/// thread (which ends after 10 s idle) or from a caller's short-lived thread, codex would be
/// killed with it; from this thread, only when the program itself dies.
pub(crate) async fn spawn(command: tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    static SPAWNER: OnceLock<std::sync::mpsc::Sender<SpawnJob>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("codex-pool-spawner".to_owned())
            .spawn(move || {
                for mut job in rx {
                    // The child's reaping belongs to the caller's runtime.
                    let _entered = job.runtime.enter();
                    let _ = job.reply.send(job.command.spawn());
                }
            })
            .expect("the spawner thread starts");
        tx
    });
    let (reply, spawned) = oneshot::channel();
    let job = SpawnJob { command, runtime: tokio::runtime::Handle::current(), reply };
    spawner.send(job).map_err(|_| std::io::Error::other("the codex spawner thread is gone"))?;
    spawned.await.map_err(|_| std::io::Error::other("the codex spawner thread is gone"))?
}

/// Waits for the process to end, then kills what is left of its group and publishes how it
/// ended.
pub(crate) async fn wait_exit(
    mut child: tokio::process::Child,
    reaped: watch::Sender<Option<ExitReason>>,
    label: String,
) {
    let pid = child.id();
    let why = match child.wait().await {
        Ok(status) => ExitReason::from_status(status),
        Err(e) => ExitReason::WaitFailed(e.to_string()),
    };
    // Whatever codex started (tool shells, MCP servers) goes with it: its group is still ours.
    if let Some(pid) = pid {
        // SAFETY: a plain syscall on the process group this crate created.
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        }
    }
    tracing::info!(process = %label, reason = %why, "codex app-server exited");
    reaped.send_replace(Some(why));
}

/// Sends `signal` to the process group of `pid` and to `pid` itself.
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    let pid = pid as libc::pid_t;
    if pid > 0 {
        // SAFETY: plain syscalls on a process group this crate created.
        unsafe {
            libc::kill(-pid, signal);
            libc::kill(pid, signal);
        }
    }
}

/// Forwards codex's stderr to `tracing` at DEBUG, at most `BURST` lines a second (the rest are
/// counted), reading continuously so codex never blocks on a full pipe; keeps the last lines for
/// error messages.
pub(crate) async fn drain_stderr(stderr: tokio::process::ChildStderr, tail: StderrTail, label: String) {
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
