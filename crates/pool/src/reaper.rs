//! Keeping codex's memory bounded: the reaper unloads conversations idle longer than the
//! configured time, the least recently used idle ones of a process over its cap of loaded
//! threads, and codex threads no conversation uses any more. With `thread_unload_delay_secs=0`
//! in the base overrides, codex drops an unsubscribed thread at once; the conversation is
//! rebuilt from the store on its next turn. A node sharing its store with others gives the
//! lease of an unloaded conversation back.
//!
//! It runs on no period: it sleeps until the least recently used idle conversation has idled
//! out (the routing table keeps them ordered), or until the table wakes it (over a cap, orphans,
//! a conversation idle when none was).

use crate::placement::Placer;
use crate::routing::Routing;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Runs until shutdown: at the next expiry, and whenever the routing table asks.
pub(crate) async fn reap(
    routing: Arc<Routing>,
    placer: Arc<Placer>,
    idle_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let wake = routing.reap_signal();
    loop {
        let next = routing.next_expiry(idle_after);
        let expiry = async move {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = expiry => {}
            () = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        for orphan in routing.take_orphans() {
            placer.unload(&orphan, "orphaned").await;
        }
        for (id, loaded) in routing.take_idle(idle_after) {
            if let Some(loaded) = loaded {
                placer.unload(&loaded, "idle").await;
            }
            // Nothing of it is left here: another node may take it at once.
            placer.let_go(&id).await;
            routing.unloaded(&id);
        }
    }
}
