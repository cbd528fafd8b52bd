//! Why a slot's process is down, typed up to where it is shown: [`SlotStats`]'s `down_reason`
//! (a string when serialized, as before) and the error of a pool that could not start one.
//!
//! [`SlotStats`]: crate::SlotStats

use codex_pool_process::{ExitReason, SpawnError};
use serde::{Serialize, Serializer};
use std::sync::Arc;
use std::time::Duration;

/// Why a slot's process is down (or why it was, until its replacement serves).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DownReason {
    /// It could not be started.
    #[error("{0}")]
    SpawnFailed(Arc<SpawnError>),
    /// It exited (or its output closed), and how.
    #[error("{0}")]
    Exited(ExitReason),
    /// The pool found it hung and killed it.
    #[error("{0}")]
    Hung(Hang),
    /// The pool's root certificates changed: it was replaced to get them.
    #[error("replaced: the pool's CA bundle changed")]
    CaReplaced,
    /// The pool is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// How a process was found hung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Hang {
    /// A health check went unanswered, and codex wrote nothing, for this long.
    #[error("no answer to a health check and no output for {0:?}")]
    Silent(Duration),
    /// codex stopped reading its input.
    #[error("codex stopped reading its input")]
    NotReading,
}

/// Serialized as its message, as the reason was when it was a string.
impl Serialize for DownReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_reads_and_serializes_as_the_message_it_was() {
        let cases = [
            (DownReason::Exited(ExitReason::Signal(9)), "signal: 9"),
            (
                DownReason::Hung(Hang::Silent(Duration::from_secs(10))),
                "no answer to a health check and no output for 10s",
            ),
            (DownReason::Hung(Hang::NotReading), "codex stopped reading its input"),
            (DownReason::CaReplaced, "replaced: the pool's CA bundle changed"),
            (DownReason::ShuttingDown, "shutting down"),
        ];
        for (reason, message) in cases {
            assert_eq!(reason.to_string(), message);
            assert_eq!(serde_json::to_value(&reason).unwrap(), message);
        }
    }
}
