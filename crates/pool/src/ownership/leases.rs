//! [`Leases`]: what the rest of the pool sees of [`Ownership`], the same calls whether or not
//! the pool shares its store, so no caller asks which.

use super::{NodeConfig, Ownership};
use crate::pool::NodeStats;
use crate::routing::Routing;
use codex_pool_store::{ConversationId, Fence, StoreError, ThreadStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// This node's leases when several nodes share the store. A pool alone on its store has none
/// to take: every call then does nothing (no turn needs a lease, no other node holds one).
#[derive(Clone, Default)]
pub(crate) struct Leases(Option<Arc<Ownership>>);

/// The lease a turn runs under (several nodes): the fence its writes carry.
#[derive(Clone)]
pub(crate) struct TurnLease {
    fence: Fence,
    changed: bool,
    owner: Arc<Ownership>,
}

impl TurnLease {
    /// The fence the turn's writes carry.
    pub(crate) fn fence(&self) -> Fence {
        self.fence
    }

    /// The lease is new to this node (or came back under another fence): another node may have
    /// served the conversation meanwhile, so codex's copy here, if any, is stale.
    pub(crate) fn changed(&self) -> bool {
        self.changed
    }

    /// A write under this lease was refused: the lease is gone, whatever this node thought.
    pub(crate) fn lost(&self, id: &ConversationId) {
        self.owner.lost(id, self.fence);
    }
}

impl Leases {
    /// Leases for `node`, or none for a pool alone on its store (`None`).
    pub(crate) fn new(node: Option<&NodeConfig>, idle_after: Duration, store: Arc<dyn ThreadStore>) -> Self {
        Self(node.map(|node| Arc::new(Ownership::new(node, idle_after, store))))
    }

    /// Whether several nodes share the store.
    pub(crate) fn shared(&self) -> bool {
        self.0.is_some()
    }

    /// This node and how many leases it holds (several nodes only).
    pub(crate) fn stats(&self) -> Option<NodeStats> {
        self.0.as_ref().map(|o| NodeStats {
            id: o.node().id.to_string(),
            address: o.node().address.clone(),
            leases: o.count(),
        })
    }

    /// Announces the node (at start, so the first lease it takes already names its address).
    pub(crate) async fn register(&self) -> Result<(), StoreError> {
        match &self.0 {
            Some(ownership) => ownership.register().await,
            None => Ok(()),
        }
    }

    /// Fails with [`StoreError::OwnedElsewhere`] if another node holds the conversation's lease
    /// (see [`Ownership::check_elsewhere`]).
    pub(crate) async fn check_elsewhere(&self, id: &ConversationId) -> Result<(), StoreError> {
        match &self.0 {
            Some(ownership) => ownership.check_elsewhere(id).await,
            None => Ok(()),
        }
    }

    /// The lease for a turn of `id` (see [`Ownership::fence`]); `None` for a pool alone.
    pub(crate) async fn for_turn(&self, id: &ConversationId) -> Result<Option<TurnLease>, StoreError> {
        let Some(ownership) = &self.0 else { return Ok(None) };
        let taken = ownership.fence(id).await?;
        Ok(Some(TurnLease { fence: taken.fence, changed: taken.changed, owner: ownership.clone() }))
    }

    /// Takes the lease on a conversation this node has just created: the fence its first
    /// writes carry (`None` for a pool alone).
    pub(crate) async fn take_new(&self, id: &ConversationId) -> Result<Option<Fence>, StoreError> {
        match &self.0 {
            Some(ownership) => Ok(Some(ownership.fence(id).await?.fence)),
            None => Ok(None),
        }
    }

    /// Gives a lease back (see [`Ownership::release`]).
    pub(crate) async fn release(&self, id: &ConversationId) {
        if let Some(ownership) = &self.0 {
            ownership.release(id).await;
        }
    }

    /// The conversation was deleted (its lease with it).
    pub(crate) fn forget(&self, id: &ConversationId) {
        if let Some(ownership) = &self.0 {
            ownership.forget(id);
        }
    }

    /// Gives every lease back, in one round trip (at shutdown, once nothing runs).
    pub(crate) async fn release_all(&self) {
        if let Some(ownership) = &self.0 {
            ownership.release_all().await;
        }
    }

    /// The task that keeps the leases and the heartbeat alive until shutdown (see
    /// [`super::renew`]); ends at once for a pool alone.
    pub(crate) async fn renew(self, routing: Arc<Routing>, shutdown: watch::Receiver<bool>) {
        if let Some(ownership) = self.0 {
            super::renew(ownership, routing, shutdown).await;
        }
    }
}
