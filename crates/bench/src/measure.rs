//! What the benchmark measures: CPU time of this process, of a client thread in it and of the
//! codex processes, resident memory, and the fake model's request counters.

use crate::error::{BenchError, IoContext};
use crate::mock_child::MockChild;
use std::time::Duration;

/// One completed turn.
pub struct Sample {
    /// From `start_turn` to the terminal event.
    pub latency: Duration,
    /// From `start_turn` to the first text delta.
    pub ttft: Option<Duration>,
}

/// The p-th percentile (nearest rank) of the values; 0 when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// CPU time used by this process so far (user + system).
pub(crate) fn self_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time used so far by the calling thread.
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Runs the future `work` makes on a single-threaded runtime of its own, on a thread of its own
/// (`bench-client`), and returns its output with the CPU time that thread used. The HTTP arms
/// drive the service from there, so that the client's share of this process's CPU can be told
/// from the service's. The thread ends when `work` has, or when this future is dropped and
/// `work` ends.
pub async fn on_client_thread<T, F, Fut>(work: F) -> Result<(T, Duration), BenchError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread().enable_all().build().map(|runtime| {
                let begun = thread_cpu();
                let output = runtime.block_on(work());
                drop(runtime);
                (output, thread_cpu().saturating_sub(begun))
            });
            let _ = done.send(outcome);
        })
        .doing("starting the bench's client thread")?;
    let outcome =
        result.await.map_err(|_| BenchError::Child("the bench's client thread ended without an answer".to_owned()))?;
    outcome.doing("starting the runtime of the bench's client thread")
}

/// CPU time used so far by a process, from /proc (0 when it is gone).
pub(crate) fn proc_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11..13).map(|f| f.iter().filter_map(|x| x.parse::<u64>().ok()).sum()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// Resident memory of a process in MiB, from /proc.
fn rss_mb(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Counters at the start of the measured phase.
pub struct CpuClock {
    client: Duration,
    codex: Duration,
    mock_requests: u64,
    mock_bytes: u64,
}

/// What the measured phase used.
pub struct Usage {
    client_cpu: Duration,
    codex_cpu: Duration,
    requests: u64,
    request_bytes: u64,
    rss_mb: f64,
    codex_rss_mb: f64,
}

impl CpuClock {
    pub async fn start(pids: &[u32], mock: &MockChild) -> Self {
        let (mock_requests, mock_bytes) = mock.stats().await.unwrap_or((0, 0));
        Self { client: self_cpu(), codex: pids.iter().map(|p| proc_cpu(*p)).sum(), mock_requests, mock_bytes }
    }

    pub async fn stop(self, pids: &[u32], mock: &MockChild) -> Usage {
        let codex: Duration = pids.iter().map(|p| proc_cpu(*p)).sum();
        let client = self_cpu();
        let (requests, bytes) = mock.stats().await.unwrap_or((0, 0));
        Usage {
            client_cpu: client.saturating_sub(self.client),
            codex_cpu: codex.saturating_sub(self.codex),
            requests: requests.saturating_sub(self.mock_requests),
            request_bytes: bytes.saturating_sub(self.mock_bytes),
            rss_mb: rss_mb("self"),
            codex_rss_mb: pids.iter().map(|p| rss_mb(&p.to_string())).sum(),
        }
    }
}

impl Usage {
    pub fn into_result(self) -> crate::RunResult {
        crate::RunResult {
            ca_bundle: String::new(),
            ready: Duration::ZERO,
            wall: Duration::ZERO,
            samples: Vec::new(),
            errors: 0,
            client_cpu: self.client_cpu,
            http_client_cpu: None,
            codex_cpu: self.codex_cpu,
            request_bytes: self.request_bytes,
            requests: self.requests,
            rss_mb: self.rss_mb,
            codex_rss_mb: self.codex_rss_mb,
            health: None,
            chat: None,
            store_round_trips: None,
            forwarded: None,
            balancer_cpu: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn reads_its_own_cpu_and_memory() {
        let before = proc_cpu(std::process::id());
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(self_cpu() > Duration::ZERO);
        assert!(proc_cpu(std::process::id()) >= before);
        assert!(rss_mb("self") > 1.0);
    }

    #[tokio::test]
    async fn counts_the_cpu_of_the_client_thread_alone() {
        let (sum, cpu) = on_client_thread(|| async {
            let mut x = 0u64;
            for i in 0..50_000_000u64 {
                x = x.wrapping_add(std::hint::black_box(i * i));
            }
            x
        })
        .await
        .expect("client thread");
        assert!(sum > 0);
        assert!(cpu > Duration::from_millis(1), "the loop's CPU is counted: {cpu:?}");
        // This thread's CPU is not the client's: the client's stays below the whole process's.
        assert!(cpu <= self_cpu());
    }
}
