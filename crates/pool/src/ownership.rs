//! Who serves which conversation when several nodes share one store. [`Ownership`] is the one
//! owner of this node's leases: which conversations it holds, under which fence, and until when
//! by its own clock. A turn asks it for the fence before it runs (from memory while the lease has
//! more than half its time left, so the hot path costs no round trip); [`renew`] keeps every
//! lease held alive and the node's heartbeat fresh; shutdown gives every lease back.
//!
//! The rule itself is the store's (see `codex_pool_store`): a conversation is leased by at most
//! one node at a time; a lease that runs out may be taken by the next node asked for a turn,
//! with a new fence; every history write carries the fence it was made under, and the store
//! refuses it once the fence is not the conversation's any more. So a node that was paused or
//! cut off past its lease cannot write, even if it does not know yet.

mod leases;

pub(crate) use leases::{Leases, TurnLease};

use crate::routing::Routing;
use codex_pool_store::{ConversationId, Fence, NodeId, NodeInfo, StoreError, ThreadStore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// This node, when several share the store ([`PoolConfig::node`](crate::PoolConfig::node)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Its id, unique among the nodes sharing the store.
    pub id: NodeId,
    /// Where clients and other nodes reach it (`http://host:port`): other nodes forward its
    /// conversations' requests there.
    pub address: String,
    /// How long a lease lasts unless renewed: how long a dead node's conversations wait before
    /// another node takes them over. Renewed every third of it.
    pub lease_ttl: Duration,
}

impl NodeConfig {
    /// A node with the default lease (15 s).
    pub fn new(id: impl Into<NodeId>, address: impl Into<String>) -> Self {
        Self { id: id.into(), address: address.into(), lease_ttl: Duration::from_secs(15) }
    }
}

/// A lease this node holds, as far as it knows.
#[derive(Debug, Clone, Copy)]
struct Held {
    fence: Fence,
    /// When it runs out, counted from when it was asked for (so a slow answer errs short).
    until: Instant,
    /// When a turn last asked for it.
    used: Instant,
}

/// A lease as [`Ownership::fence`] found or took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    /// The fence its writes carry.
    pub fence: Fence,
    /// The lease is new to this node (or came back under another fence): another node may have
    /// served the conversation meanwhile, so codex's copy here, if any, is stale.
    pub changed: bool,
}

/// This node's leases.
pub(crate) struct Ownership {
    node: NodeInfo,
    ttl: Duration,
    /// Leases unused for this long are given back rather than renewed.
    idle_after: Duration,
    store: Arc<dyn ThreadStore>,
    held: Mutex<HashMap<ConversationId, Held>>,
}

impl Ownership {
    pub(crate) fn new(config: &NodeConfig, idle_after: Duration, store: Arc<dyn ThreadStore>) -> Self {
        Self {
            node: NodeInfo::new(config.id.clone(), config.address.clone()),
            ttl: config.lease_ttl,
            idle_after,
            store,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<ConversationId, Held>> {
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This node.
    pub(crate) fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Conversations this node holds a lease on.
    pub(crate) fn count(&self) -> usize {
        self.held().len()
    }

    /// The fence for a turn of `id`: the lease held, if more than half its time is left; else
    /// taken (or renewed) in the store. Fails with [`StoreError::OwnedElsewhere`] while another
    /// node holds it.
    pub(crate) async fn fence(&self, id: &ConversationId) -> Result<Taken, StoreError> {
        let asked = Instant::now();
        let known = {
            let mut held = self.held();
            let known = held.get_mut(id);
            if let Some(h) = known.filter(|h| h.until > asked + self.ttl / 2) {
                h.used = asked;
                return Ok(Taken { fence: h.fence, changed: false });
            }
            held.get(id).copied()
        };
        let lease = match self.store.acquire_lease(id, &self.node.id, self.ttl).await {
            Ok(lease) => lease,
            Err(e) => {
                if matches!(e, StoreError::OwnedElsewhere { .. }) {
                    self.held().remove(id);
                }
                return Err(e);
            }
        };
        self.held().insert(id.clone(), Held { fence: lease.fence, until: asked + self.ttl, used: asked });
        Ok(Taken { fence: lease.fence, changed: known.map(|h| h.fence) != Some(lease.fence) })
    }

    /// Fails with [`StoreError::OwnedElsewhere`] if another node holds the conversation's lease
    /// (for requests about a turn, which runs where the lease is). Costs nothing when this node
    /// holds it; else it reads the holder from the store, taking nothing (so it cannot undo a
    /// lease a turn takes meanwhile).
    pub(crate) async fn check_elsewhere(&self, id: &ConversationId) -> Result<(), StoreError> {
        if self.held().contains_key(id) {
            return Ok(());
        }
        match self.store.lease_holder(id).await? {
            Some(holder) if holder.node != self.node.id => Err(holder.owned_elsewhere(id)),
            _ => Ok(()),
        }
    }

    /// A write under `fence` was refused: the lease is gone, whatever this node thought.
    pub(crate) fn lost(&self, id: &ConversationId, fence: Fence) {
        let mut held = self.held();
        if held.get(id).is_some_and(|h| h.fence == fence) {
            held.remove(id);
        }
    }

    /// Gives a lease back, so another node can take the conversation at once (it was unloaded
    /// here). Nothing to do if this node does not hold it.
    pub(crate) async fn release(&self, id: &ConversationId) {
        if self.held().remove(id).is_none() {
            return;
        }
        if let Err(e) = self.store.release_lease(id, &self.node.id).await {
            // It runs out on its own.
            tracing::warn!(conversation = %id, error = %e, "could not give a lease back");
        }
    }

    /// The conversation was deleted (its lease with it).
    pub(crate) fn forget(&self, id: &ConversationId) {
        self.held().remove(id);
    }

    /// Announces the node (at start, so the first lease it takes already names its address).
    pub(crate) async fn register(&self) -> Result<(), StoreError> {
        self.store.register_node(&self.node).await
    }

    /// Announces the node and renews every lease it holds, but gives back those no turn asked
    /// for in `idle_after` (unless one runs), in three round trips at most; returns the conversations it
    /// no longer holds: given back, or taken over by another node after the lease ran out.
    async fn renew_once(&self, routing: &Routing) -> Result<Vec<ConversationId>, StoreError> {
        self.register().await?;
        let now = Instant::now();
        let unused: Vec<ConversationId> = {
            let mut held = self.held();
            let unused: Vec<ConversationId> = held
                .iter()
                .filter(|(id, h)| now - h.used >= self.idle_after && !routing.is_running(id))
                .map(|(id, _)| id.clone())
                .collect();
            for id in &unused {
                held.remove(id);
            }
            unused
        };
        self.store.release_leases(&self.node.id, &unused).await?;
        let ids: Vec<ConversationId> = self.held().keys().cloned().collect();
        if ids.is_empty() {
            return Ok(unused);
        }
        let asked = Instant::now();
        let renewal = self.store.renew_leases(&self.node.id, &ids, self.ttl).await?;
        let mut held = self.held();
        for id in &renewal.renewed {
            if let Some(h) = held.get_mut(id) {
                h.until = asked + self.ttl;
            }
        }
        for id in &renewal.lost {
            held.remove(id);
        }
        Ok(unused.into_iter().chain(renewal.lost).collect())
    }

    /// Gives every lease back (at shutdown, once nothing runs), in one round trip, so other
    /// nodes take the conversations over at once.
    pub(crate) async fn release_all(&self) {
        let ids: Vec<ConversationId> = self.held().drain().map(|(id, _)| id).collect();
        if let Err(e) = self.store.release_leases(&self.node.id, &ids).await {
            tracing::warn!(node = %self.node.id, leases = ids.len(), error = %e, "could not give the leases back; they run out on their own");
        } else if !ids.is_empty() {
            tracing::info!(node = %self.node.id, leases = ids.len(), "leases given back");
        }
    }
}

/// Runs until shutdown: announces the node and renews its leases every third of a lease's time
/// (at once on start). What it no longer holds, the routing table forgets (if idle).
async fn renew(ownership: Arc<Ownership>, routing: Arc<Routing>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval((ownership.ttl / 3).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match ownership.renew_once(&routing).await {
            Ok(gone) => {
                for id in &gone {
                    tracing::debug!(conversation = %id, "lease no longer held here");
                    routing.evict_if_idle(id);
                }
            }
            // The leases run out on their own; turns then ask the store again, and fail clearly
            // while it cannot answer.
            Err(e) => tracing::warn!(node = %ownership.node.id, error = %e, "could not renew the node's leases"),
        }
    }
}

#[cfg(test)]
mod tests;
