//! Trace events at each hand-off of a turn, for finding where a turn's time goes. They are TRACE
//! events of the target [`HOPS_TARGET`], naming the thread and the hop, and cost a level check
//! unless a subscriber asks for them (`codex-pool bench --trace-hops` times each hop with them).

/// The target of hop events.
pub const HOPS_TARGET: &str = "codex_pool::hops";

/// Marks that a turn of `thread` reached `hop`.
#[inline]
pub fn hop(thread: &str, hop: &'static str) {
    tracing::trace!(target: HOPS_TARGET, thread, hop);
}
