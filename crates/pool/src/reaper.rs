//! Keeping codex's memory bounded: the reaper unloads conversations idle longer than the
//! configured time, the least recently used idle ones of a process over its cap of loaded
//! threads, and codex threads no conversation uses any more. With `thread_unload_delay_secs=0`
//! in the base overrides, codex drops an unsubscribed thread at once; the conversation is
//! rebuilt from the store on its next turn. A node sharing its store with others gives the
//! lease of an unloaded conversation back.

use crate::placement::Placer;
use crate::routing::Routing;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Runs until shutdown: on a timer, and whenever the routing table asks (over a cap, orphans).
pub(crate) async fn reap(
    routing: Arc<Routing>,
    placer: Arc<Placer>,
    idle_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = (idle_after / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
    let wake = routing.reap_signal();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        for orphan in routing.take_orphans() {
            placer.unload(&orphan, "orphaned").await;
        }
        for (id, loaded) in routing.take_idle(idle_after) {
            placer.unload(&loaded, "idle").await;
            // Nothing of it is left here: another node may take it at once.
            placer.let_go(&id).await;
            routing.unloaded(&id);
        }
    }
}
