//! Who serves which conversation when several nodes share one store: nodes, their leases and
//! fences (the rule is in the crate's documentation).

use crate::{ConversationId, StoreError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The id of a node: one codex-pool process among those sharing a store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// Wraps an id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for NodeId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for NodeId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

/// A lease's fencing number: the same while a node keeps the lease, larger after every change
/// of owner, never reused for the conversation (there may be gaps). Every history write made
/// under a lease carries it ([`TurnRecord::fence`](crate::TurnRecord::fence)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence(u64);

impl Fence {
    /// A fence from its number.
    pub const fn new(number: u64) -> Self {
        Self(number)
    }

    /// Its number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// From a database's integer column (never negative).
    pub(crate) fn from_db(number: i64) -> Self {
        Self(number.max(0) as u64)
    }

    /// As a database's integer column.
    pub(crate) fn to_db(self) -> i64 {
        self.0 as i64
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A node as it announces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// Its id.
    pub id: NodeId,
    /// Where other nodes and clients reach it (e.g. `http://10.0.0.5:8080`); shown to them as is.
    pub address: String,
}

impl NodeInfo {
    /// A node with its advertised address.
    pub fn new(id: impl Into<NodeId>, address: impl Into<String>) -> Self {
        Self { id: id.into(), address: address.into() }
    }
}

/// A node as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// Its id.
    pub id: NodeId,
    /// The address it announced last.
    pub address: String,
    /// Its last heartbeat, by the store's clock (ms since the epoch).
    pub heartbeat_at_ms: i64,
    /// How long ago that was, by the store's clock (so the nodes' own clocks do not matter).
    pub heartbeat_age_ms: u64,
    /// Conversations it holds an unexpired lease on.
    pub conversations: u64,
}

/// A node's right to serve a conversation, and the fence its writes carry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The conversation.
    pub conversation: ConversationId,
    /// The node that holds it.
    pub node: NodeId,
    /// The fencing number its writes carry.
    pub fence: Fence,
    /// When it runs out unless renewed, by the store's clock (ms since the epoch). A node should
    /// count its own deadline from when it asked, by its own clock, so a slow answer errs short.
    pub expires_at_ms: i64,
}

/// Who holds a conversation's unexpired lease, as
/// [`ThreadStore::lease_holder`](crate::ThreadStore::lease_holder) reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseHolder {
    /// The node that holds it.
    pub node: NodeId,
    /// The address that node announced last (`None` if it never registered).
    pub address: Option<String>,
    /// The lease's fence.
    pub fence: Fence,
    /// When it runs out unless renewed, by the store's clock (ms since the epoch).
    pub expires_at_ms: i64,
}

impl LeaseHolder {
    /// The error a node other than the holder gets for a turn of `conversation`
    /// ([`StoreError::OwnedElsewhere`], naming the holder and its address).
    pub fn owned_elsewhere(&self, conversation: &ConversationId) -> StoreError {
        StoreError::OwnedElsewhere {
            thread_id: conversation.to_string(),
            node: self.node.clone(),
            address: self.address.clone(),
        }
    }
}

/// What [`ThreadStore::renew_leases`](crate::ThreadStore::renew_leases) found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Renewal {
    /// The conversations whose lease the node still held: renewed until `expires_at_ms`, fences
    /// unchanged.
    pub renewed: Vec<ConversationId>,
    /// The conversations it no longer holds (taken over, released or deleted): it must stop
    /// serving them, and its writes to them are refused.
    pub lost: Vec<ConversationId>,
    /// When the renewed leases run out, by the store's clock (ms since the epoch).
    pub expires_at_ms: i64,
}

impl Renewal {
    /// Sorts `asked` into renewed (those in `held`) and lost, keeping the order asked.
    pub(crate) fn sort(asked: &[ConversationId], held: &[ConversationId], expires_at_ms: i64) -> Self {
        let held: std::collections::HashSet<&ConversationId> = held.iter().collect();
        let (renewed, lost) = asked.iter().cloned().partition(|id| held.contains(id));
        Self { renewed, lost, expires_at_ms }
    }
}

/// Milliseconds in a lease's time to live, as the stores count it.
pub(crate) fn ttl_ms(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}
