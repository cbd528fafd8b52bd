//! One supervisor task per slot: it owns the slot's process, watches its health, and replaces it
//! when it dies or hangs, with exponential backoff so a crash loop never spins.

use crate::config::PoolConfig;
use crate::down::{DownReason, Hang};
use crate::routing::Routing;
use crate::tls::CaState;
use codex_pool_process::{AppServer, AppServerHandle, ProcessError, ProcessStats};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

/// Where a slot's process stands. The handle never leaves the pool: callers see [`SlotStats`].
#[derive(Debug, Clone)]
pub(crate) enum SlotState {
    /// Being spawned.
    Starting,
    /// Serving; `generation` counts the processes this slot has had.
    Ready { handle: AppServerHandle, generation: u64 },
    /// Dead or not started; a restart follows after the backoff.
    Down { reason: DownReason, generation: u64 },
    /// Shut down for good.
    Stopped,
}

impl SlotStatus {
    /// Every status, in the order of a process's life.
    pub const ALL: [SlotStatus; 4] = [SlotStatus::Starting, SlotStatus::Ready, SlotStatus::Down, SlotStatus::Stopped];

    /// Its name, as serialized (`starting`, `ready`, `down`, `stopped`).
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Starting => "starting",
            SlotStatus::Ready => "ready",
            SlotStatus::Down => "down",
            SlotStatus::Stopped => "stopped",
        }
    }
}

/// What the pool and the supervisor share about a slot.
#[derive(Debug)]
pub(crate) struct Slot {
    pub index: usize,
    pub state: watch::Receiver<SlotState>,
    /// Room for turns on the slot's process.
    pub turn_permits: Arc<Semaphore>,
    /// Processes started after the first.
    pub restarts: AtomicU64,
    /// Spawns or handshakes that failed.
    pub spawn_failures: AtomicU64,
    /// The last health check was answered.
    pub healthy: AtomicBool,
    /// Health checks answered.
    pub health_checks: AtomicU64,
    /// Health checks not answered in time while the process was talking (busy, not hung).
    pub busy_checks: AtomicU64,
    /// The longest a health check took to be answered, in microseconds.
    pub slowest_check_us: AtomicU64,
    /// The epoch of the root certificates the current process was spawned with.
    pub ca_epoch: AtomicU64,
}

impl Slot {
    pub(crate) fn new(index: usize, state: watch::Receiver<SlotState>, max_turns: usize) -> Self {
        Self {
            index,
            state,
            turn_permits: Arc::new(Semaphore::new(max_turns)),
            restarts: AtomicU64::new(0),
            spawn_failures: AtomicU64::new(0),
            healthy: AtomicBool::new(false),
            health_checks: AtomicU64::new(0),
            busy_checks: AtomicU64::new(0),
            slowest_check_us: AtomicU64::new(0),
            ca_epoch: AtomicU64::new(0),
        }
    }

    /// The process and its generation, when ready.
    pub(crate) fn ready(&self) -> Option<(AppServerHandle, u64)> {
        match &*self.state.borrow() {
            SlotState::Ready { handle, generation } if handle.is_ready() => Some((handle.clone(), *generation)),
            _ => None,
        }
    }

    /// The process, if it is the one of `generation` and still serves.
    pub(crate) fn live(&self, generation: u64) -> Option<AppServerHandle> {
        self.ready().filter(|(_, g)| *g == generation).map(|(h, _)| h)
    }
}

/// Where a slot's process stands, as [`SlotStats`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SlotStatus {
    /// Being spawned.
    Starting,
    /// Serving.
    Ready,
    /// Dead or not started; a restart follows.
    Down,
    /// Shut down for good.
    Stopped,
}

/// A snapshot of one slot.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SlotStats {
    /// The slot index.
    pub slot: usize,
    /// Where its process stands.
    pub state: SlotStatus,
    /// Why it is down, when it is (serialized as its message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_reason: Option<DownReason>,
    /// OS pid of the current process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Which process of the slot this is.
    pub generation: u64,
    /// Whether its last health check was answered.
    pub healthy: bool,
    /// Turns the pool runs on it.
    pub active_turns: usize,
    /// Conversations the pool has loaded on it.
    pub loaded_threads: usize,
    /// Restarts so far.
    pub restarts: u64,
    /// Failed spawns so far.
    pub spawn_failures: u64,
    /// Health checks answered so far.
    pub health_checks: u64,
    /// Health checks not answered in time while the process was talking (busy, not hung).
    pub busy_checks: u64,
    /// The longest a health check took to be answered, in milliseconds.
    pub slowest_check_ms: f64,
    /// The process's own counters (codex's view: turns it ran, threads it reports loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessStats>,
}

impl Slot {
    /// Its snapshot, with the routing table's counts for it.
    pub(crate) fn stats(&self, active_turns: usize, loaded_threads: usize) -> SlotStats {
        let (state, down_reason, pid, generation, process) = match &*self.state.borrow() {
            SlotState::Starting => (SlotStatus::Starting, None, None, 0, None),
            SlotState::Ready { handle, generation } => {
                (SlotStatus::Ready, None, Some(handle.pid()), *generation, Some(handle.stats()))
            }
            SlotState::Down { reason, generation } => (SlotStatus::Down, Some(reason.clone()), None, *generation, None),
            SlotState::Stopped => (SlotStatus::Stopped, None, None, 0, None),
        };
        SlotStats {
            slot: self.index,
            state,
            down_reason,
            pid,
            generation,
            healthy: state == SlotStatus::Ready && self.healthy.load(Ordering::Relaxed),
            active_turns,
            loaded_threads,
            restarts: self.restarts.load(Ordering::Relaxed),
            spawn_failures: self.spawn_failures.load(Ordering::Relaxed),
            health_checks: self.health_checks.load(Ordering::Relaxed),
            busy_checks: self.busy_checks.load(Ordering::Relaxed),
            slowest_check_ms: self.slowest_check_us.load(Ordering::Relaxed) as f64 / 1000.0,
            process,
        }
    }
}

/// Why a running process stopped being served.
enum Ended {
    Exited(codex_pool_process::ExitReason),
    Hung(Hang),
    /// The pool's root certificates changed: the process must be replaced to get them.
    CaReplaced,
    Shutdown,
}

/// Runs the slot until shutdown: spawn, serve, watch, replace.
pub(crate) async fn supervise(
    slot: Arc<Slot>,
    state: watch::Sender<SlotState>,
    config: Arc<PoolConfig>,
    routing: Arc<Routing>,
    mut tls: watch::Receiver<CaState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut generation = 0u64;
    let mut failures_in_a_row = 0u32;
    loop {
        if *shutdown.borrow() {
            break;
        }
        generation += 1;
        if generation > 1 {
            slot.restarts.fetch_add(1, Ordering::Relaxed);
        }
        state.send_replace(SlotState::Starting);
        let mut process = config.process.clone();
        process.label = format!("codex#{}", slot.index);
        {
            let roots = tls.borrow_and_update();
            process.ca = roots.files();
            slot.ca_epoch.store(roots.epoch, Ordering::Relaxed);
        }
        let mut replaced = false;
        let born = Instant::now();
        let spawned = tokio::select! {
            r = config.spawner.spawn(process) => Some(r),
            _ = shutdown.changed() => None,
        };
        let reason = match spawned {
            None => break,
            Some(Err(e)) => {
                slot.spawn_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(slot = slot.index, error = %e, "codex process failed to start");
                DownReason::SpawnFailed(Arc::new(e))
            }
            Some(Ok(server)) => {
                let handle = server.handle().clone();
                routing.slot_restarted(slot.index, generation);
                slot.healthy.store(true, Ordering::Relaxed);
                state.send_replace(SlotState::Ready { handle: handle.clone(), generation });
                let ended = tokio::select! {
                    why = handle.exited() => Ended::Exited(why),
                    why = watch_health(&handle, &config, &slot) => Ended::Hung(why),
                    _ = roots_changed(&mut tls) => Ended::CaReplaced,
                    _ = shutdown.changed() => Ended::Shutdown,
                };
                match ended {
                    Ended::Shutdown => {
                        state.send_replace(SlotState::Down { reason: DownReason::ShuttingDown, generation });
                        server.shutdown(config.shutdown_grace).await;
                        break;
                    }
                    Ended::Hung(why) => {
                        tracing::warn!(slot = slot.index, process = handle.label(), reason = %why, "codex process hung; killing it");
                        slot.healthy.store(false, Ordering::Relaxed);
                        let why = DownReason::Hung(why);
                        state.send_replace(SlotState::Down { reason: why.clone(), generation });
                        kill(&handle, server).await;
                        why
                    }
                    Ended::CaReplaced => {
                        // Its turns end as `process_exited`, explained to their callers by the
                        // pool.
                        tracing::info!(
                            slot = slot.index,
                            process = handle.label(),
                            "replacing codex process: new CA bundle"
                        );
                        replaced = true;
                        slot.healthy.store(false, Ordering::Relaxed);
                        let why = DownReason::CaReplaced;
                        state.send_replace(SlotState::Down { reason: why.clone(), generation });
                        kill(&handle, server).await;
                        why
                    }
                    Ended::Exited(why) => {
                        tracing::warn!(slot = slot.index, process = handle.label(), reason = %why, "codex process died");
                        slot.healthy.store(false, Ordering::Relaxed);
                        let why = DownReason::Exited(why);
                        state.send_replace(SlotState::Down { reason: why.clone(), generation });
                        server.shutdown(Duration::from_millis(200)).await;
                        why
                    }
                }
            }
        };
        state.send_replace(SlotState::Down { reason, generation });
        if replaced {
            continue;
        }
        if born.elapsed() >= config.stable_after {
            failures_in_a_row = 0;
        } else {
            failures_in_a_row = failures_in_a_row.saturating_add(1);
        }
        let delay = backoff(&config, failures_in_a_row);
        if !delay.is_zero() {
            tracing::info!(
                slot = slot.index,
                delay_ms = delay.as_millis() as u64,
                failures_in_a_row,
                "restarting codex process after backoff"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => break,
        }
    }
    state.send_replace(SlotState::Stopped);
}

/// Resolves when the pool's roots change (never, once their owner is gone).
/// Kills a process the pool gave up on (hung, or on roots it no longer uses) and waits for its
/// end. Killed, not shut down: the actor sees the death itself, so running turns end as
/// `process_exited` rather than as a shutdown, and leave nothing half-recorded.
async fn kill(handle: &AppServerHandle, server: AppServer) {
    handle.signal(libc::SIGKILL);
    let _ = tokio::time::timeout(Duration::from_secs(5), handle.exited()).await;
    server.shutdown(Duration::from_millis(200)).await;
}

async fn roots_changed(tls: &mut watch::Receiver<CaState>) {
    if tls.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The delay before the next start: none after a process that lived long, then doubling.
pub(crate) fn backoff(config: &PoolConfig, failures_in_a_row: u32) -> Duration {
    if failures_in_a_row == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures_in_a_row.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
    config.restart_backoff.saturating_mul(factor).min(config.restart_backoff_max)
}

/// Pings the process until it is hung: a ping unanswered within the health timeout while codex
/// wrote nothing for that long either (a process busy streaming turns may answer slowly, but it
/// talks; a stopped or wedged one is silent). Returns why. Records how long each answer took.
async fn watch_health(handle: &AppServerHandle, config: &PoolConfig, slot: &Slot) -> Hang {
    let mut tick = tokio::time::interval(config.health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let asked = Instant::now();
        let answer = handle.ping(config.health_timeout).await;
        if !matches!(answer, Err(ProcessError::Timeout { .. })) {
            let took = asked.elapsed().as_micros() as u64;
            slot.slowest_check_us.fetch_max(took, Ordering::Relaxed);
            slot.health_checks.fetch_add(1, Ordering::Relaxed);
        }
        match answer {
            Err(ProcessError::Timeout { timeout, .. }) if handle.quiet_for() < timeout => {
                slot.busy_checks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    slot = slot.index,
                    process = handle.label(),
                    ?timeout,
                    "a health check is slow, but codex talks: busy, not hung"
                );
            }
            Err(ProcessError::Timeout { timeout, .. }) => {
                slot.healthy.store(false, Ordering::Relaxed);
                return Hang::Silent(timeout);
            }
            Err(ProcessError::StdinBacklog) => return Hang::NotReading,
            // Exit (and shutdown) are reported by `exited()`; stay pending so it wins the race.
            Err(ProcessError::Exited(_) | ProcessError::ShuttingDown) => std::future::pending::<()>().await,
            // Any answer, even an error, means codex is alive.
            Ok(()) | Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codex_pool_process::ProcessConfig;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut c = PoolConfig::new(ProcessConfig::new("x".into(), "/h".into(), "/w".into()));
        c.restart_backoff = Duration::from_millis(100);
        c.restart_backoff_max = Duration::from_secs(1);
        let d: Vec<u64> = (0..7).map(|n| backoff(&c, n).as_millis() as u64).collect();
        assert_eq!(d, vec![0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&c, u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn status_names_are_the_serialized_ones() {
        for status in SlotStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}
