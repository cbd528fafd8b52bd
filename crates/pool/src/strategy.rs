//! Choosing a process for a new thread (or for a thread whose process is gone).

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a strategy sees of one process that can take work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The slot index in the pool.
    pub slot: usize,
    /// Turns running on it now.
    pub active_turns: usize,
    /// Threads loaded (subscribed) on it now.
    pub loaded_threads: usize,
}

/// Picks one of the candidates. Implement it to add a strategy.
pub trait SelectionStrategy: Send + Sync + 'static {
    /// The chosen candidate's position in `candidates` (never empty), or `None` to refuse.
    fn select(&self, candidates: &[Candidate]) -> Option<usize>;
}

/// Each new thread goes to the next process in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl SelectionStrategy for RoundRobin {
    fn select(&self, candidates: &[Candidate]) -> Option<usize> {
        (!candidates.is_empty()).then(|| self.next.fetch_add(1, Ordering::Relaxed) % candidates.len())
    }
}

/// The process with the fewest running turns, then the fewest loaded threads, wins.
#[derive(Debug, Default)]
pub struct LeastBusy;

impl SelectionStrategy for LeastBusy {
    fn select(&self, candidates: &[Candidate]) -> Option<usize> {
        candidates.iter().enumerate().min_by_key(|(_, c)| (c.active_turns, c.loaded_threads, c.slot)).map(|(i, _)| i)
    }
}

/// The strategies selectable by name (`CODEX_SELECTION_STRATEGY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// `round_robin` (the default).
    #[default]
    RoundRobin,
    /// `least_busy`.
    LeastBusy,
}

impl Strategy {
    /// A fresh instance of the strategy.
    pub fn build(self) -> Box<dyn SelectionStrategy> {
        match self {
            Strategy::RoundRobin => Box::new(RoundRobin::default()),
            Strategy::LeastBusy => Box::new(LeastBusy),
        }
    }

    /// The name as configured.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastBusy => "least_busy",
        }
    }
}

/// An unknown strategy name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown selection strategy {0:?}; use round_robin or least_busy")]
pub struct UnknownStrategy(pub String);

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "round_robin" => Ok(Strategy::RoundRobin),
            "least_busy" => Ok(Strategy::LeastBusy),
            _ => Err(UnknownStrategy(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(slot: usize, active_turns: usize, loaded_threads: usize) -> Candidate {
        Candidate { slot, active_turns, loaded_threads }
    }

    #[test]
    fn round_robin_cycles() {
        let rr = RoundRobin::default();
        let cands = [c(0, 9, 9), c(1, 0, 0), c(2, 5, 5)];
        let picks: Vec<_> = (0..6).map(|_| rr.select(&cands).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(rr.select(&[]), None);
    }

    #[test]
    fn least_busy_prefers_fewest_turns_then_threads() {
        let lb = LeastBusy;
        assert_eq!(lb.select(&[c(0, 2, 0), c(1, 1, 50), c(2, 1, 10)]), Some(2));
        assert_eq!(lb.select(&[c(0, 0, 3), c(1, 0, 3)]), Some(0));
    }

    #[test]
    fn names_parse_and_unknown_is_an_error() {
        assert_eq!("round_robin".parse::<Strategy>().unwrap(), Strategy::RoundRobin);
        assert_eq!("Least-Busy".parse::<Strategy>().unwrap(), Strategy::LeastBusy);
        let err = "fastest".parse::<Strategy>().unwrap_err();
        assert!(err.to_string().contains("round_robin or least_busy"));
    }
}
