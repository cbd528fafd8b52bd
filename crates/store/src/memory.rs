//! A store that keeps records for the life of the process.

use crate::ownership::ttl_ms;
use crate::{
    now_ms, ConversationId, Fence, Lease, LeaseHolder, ListCursor, NodeId, NodeInfo, NodeStatus, Renewal, StoreError,
    StoreFuture, StoredItem, ThreadRecord, ThreadStore, TranscriptEntry, TranscriptKey, TurnRecord,
};
use codex_pool_protocol::methods::ThreadSettings;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// A [`ThreadStore`] in memory: conversations survive process crashes but not a restart. Leases
/// and heartbeats use this machine's clock.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) threads: HashMap<ConversationId, Stored>,
    /// API keys, oldest first, their usage counters and per-minute turn counts.
    pub(crate) keys: crate::memory_keys::Keys,
    leases: HashMap<ConversationId, Lease>,
    nodes: HashMap<NodeId, (String, i64)>,
    transcripts: HashMap<TranscriptKey, TranscriptEntry>,
    /// The last fence given out (fences are never reused, whatever is deleted).
    last_fence: u64,
}

pub(crate) struct Stored {
    pub(crate) record: ThreadRecord,
    history: Vec<StoredItem>,
}

impl State {
    /// Whether a write to `id` with `fence` may happen: no fence, an unknown conversation (the
    /// write is skipped anyway), or the conversation's lease has that fence.
    fn fence_allows(&self, id: &ConversationId, fence: Option<Fence>) -> Result<(), StoreError> {
        match fence {
            Some(fence)
                if self.threads.contains_key(id) && self.leases.get(id).is_none_or(|lease| lease.fence != fence) =>
            {
                Err(StoreError::Fenced { thread_id: id.to_string(), fence })
            }
            _ => Ok(()),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> StoreFuture<'_, T> {
        let out = f(&mut self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        Box::pin(async move { out })
    }
}

impl ThreadStore for MemoryStore {
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()> {
        self.with(|state| {
            match state.threads.get_mut(&record.id) {
                Some(stored) => {
                    stored.record = ThreadRecord {
                        created_at_ms: stored.record.created_at_ms,
                        owner: stored.record.owner.take(),
                        ..record
                    };
                }
                None => {
                    state.threads.insert(record.id.clone(), Stored { record, history: Vec::new() });
                }
            }
            Ok(())
        })
    }

    fn update_settings<'a>(
        &'a self,
        id: &'a ConversationId,
        settings: ThreadSettings,
        fence: Option<Fence>,
    ) -> StoreFuture<'a, ()> {
        self.with(|state| {
            state.fence_allows(id, fence)?;
            if let Some(stored) = state.threads.get_mut(id) {
                stored.record.settings = settings;
            }
            Ok(())
        })
    }

    fn load<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Option<ThreadRecord>> {
        self.with(|state| Ok(state.threads.get(id).map(|s| s.record.clone())))
    }

    fn record_turns<'a>(&'a self, turns: &'a [TurnRecord]) -> StoreFuture<'a, ()> {
        self.with(|state| {
            for turn in turns {
                state.fence_allows(&turn.conversation, turn.fence)?;
            }
            let now = now_ms();
            for turn in turns {
                let Some(stored) = state.threads.get_mut(&turn.conversation) else { continue };
                for item in &turn.items {
                    let seq = stored.history.len() as u64 + 1;
                    stored.history.push(StoredItem { seq, turn_id: turn.turn_id.clone(), item: item.clone() });
                }
                if turn.completed {
                    stored.record.turns += 1;
                    stored.record.updated_at_ms = stored.record.updated_at_ms.max(now);
                }
                if turn.is_last_turn() {
                    stored.record.last_turn = Some(turn.turn_id.clone());
                }
                if let Some(pending) = &turn.pending_calls {
                    stored.record.pending_calls.clone_from(pending);
                }
            }
            Ok(())
        })
    }

    fn history<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Vec<Value>> {
        self.with(|state| {
            Ok(state.threads.get(id).map(|s| s.history.iter().map(|i| i.item.clone()).collect()).unwrap_or_default())
        })
    }

    fn delete<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, bool> {
        self.with(|state| {
            state.leases.remove(id);
            state.transcripts.retain(|_, entry| &entry.conversation != id);
            Ok(state.threads.remove(id).is_some())
        })
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        self.with(|state| Ok(state.threads.len() as u64))
    }

    fn list(&self, after: Option<ListCursor>, limit: usize) -> StoreFuture<'_, Vec<ThreadRecord>> {
        self.with(move |state| {
            let key = |r: &ThreadRecord| (r.created_at_ms, r.id.clone());
            let mut records: Vec<ThreadRecord> = state
                .threads
                .values()
                .map(|s| s.record.clone())
                .filter(|r| after.as_ref().is_none_or(|c| key(r) < (c.created_at_ms, c.id.clone())))
                .collect();
            records.sort_by_key(|r| std::cmp::Reverse(key(r)));
            records.truncate(limit);
            Ok(records)
        })
    }

    fn items<'a>(&'a self, id: &'a ConversationId, after_seq: u64, limit: usize) -> StoreFuture<'a, Vec<StoredItem>> {
        self.with(move |state| {
            let Some(stored) = state.threads.get(id) else { return Ok(Vec::new()) };
            Ok(stored.history.iter().filter(|i| i.seq > after_seq).take(limit).cloned().collect())
        })
    }

    fn register_node<'a>(&'a self, node: &'a NodeInfo) -> StoreFuture<'a, ()> {
        self.with(|state| {
            state.nodes.insert(node.id.clone(), (node.address.clone(), now_ms()));
            Ok(())
        })
    }

    fn nodes(&self) -> StoreFuture<'_, Vec<NodeStatus>> {
        self.with(|state| {
            let now = now_ms();
            let mut nodes: Vec<NodeStatus> = state
                .nodes
                .iter()
                .map(|(id, (address, heartbeat_at_ms))| NodeStatus {
                    id: id.clone(),
                    address: address.clone(),
                    heartbeat_at_ms: *heartbeat_at_ms,
                    heartbeat_age_ms: now.saturating_sub(*heartbeat_at_ms).max(0) as u64,
                    conversations: state.leases.values().filter(|l| &l.node == id && l.expires_at_ms > now).count()
                        as u64,
                })
                .collect();
            nodes.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(nodes)
        })
    }

    fn acquire_lease<'a>(
        &'a self,
        conversation: &'a ConversationId,
        node: &'a NodeId,
        ttl: Duration,
    ) -> StoreFuture<'a, Lease> {
        self.with(|state| {
            let now = now_ms();
            let expires_at_ms = now.saturating_add(ttl_ms(ttl));
            let fence = match state.leases.get(conversation) {
                Some(held) if &held.node == node => held.fence,
                Some(held) if held.expires_at_ms > now => {
                    return Err(StoreError::OwnedElsewhere {
                        thread_id: conversation.to_string(),
                        node: held.node.clone(),
                        address: state.nodes.get(&held.node).map(|(address, _)| address.clone()),
                    });
                }
                _ => {
                    state.last_fence += 1;
                    Fence::new(state.last_fence)
                }
            };
            let lease = Lease { conversation: conversation.clone(), node: node.clone(), fence, expires_at_ms };
            state.leases.insert(conversation.clone(), lease.clone());
            Ok(lease)
        })
    }

    fn lease_holder<'a>(&'a self, conversation: &'a ConversationId) -> StoreFuture<'a, Option<LeaseHolder>> {
        self.with(|state| {
            let now = now_ms();
            Ok(state.leases.get(conversation).filter(|lease| lease.expires_at_ms > now).map(|lease| LeaseHolder {
                node: lease.node.clone(),
                address: state.nodes.get(&lease.node).map(|(address, _)| address.clone()),
                fence: lease.fence,
                expires_at_ms: lease.expires_at_ms,
            }))
        })
    }

    fn renew_leases<'a>(
        &'a self,
        node: &'a NodeId,
        conversations: &'a [ConversationId],
        ttl: Duration,
    ) -> StoreFuture<'a, Renewal> {
        self.with(|state| {
            let expires_at_ms = now_ms().saturating_add(ttl_ms(ttl));
            let mut held = Vec::new();
            for id in conversations {
                if let Some(lease) = state.leases.get_mut(id).filter(|lease| &lease.node == node) {
                    lease.expires_at_ms = expires_at_ms;
                    held.push(id.clone());
                }
            }
            Ok(Renewal::sort(conversations, &held, expires_at_ms))
        })
    }

    fn release_lease<'a>(&'a self, conversation: &'a ConversationId, node: &'a NodeId) -> StoreFuture<'a, bool> {
        self.with(|state| {
            let held = state.leases.get(conversation).is_some_and(|lease| &lease.node == node);
            if held {
                state.leases.remove(conversation);
            }
            Ok(held)
        })
    }

    fn release_leases<'a>(&'a self, node: &'a NodeId, conversations: &'a [ConversationId]) -> StoreFuture<'a, u64> {
        self.with(|state| {
            let mut released = 0;
            for id in conversations {
                if state.leases.get(id).is_some_and(|lease| &lease.node == node) {
                    state.leases.remove(id);
                    released += 1;
                }
            }
            Ok(released)
        })
    }

    fn take_transcript<'a>(&'a self, key: &'a TranscriptKey) -> StoreFuture<'a, Option<TranscriptEntry>> {
        self.with(|state| Ok(state.transcripts.remove(key)))
    }

    fn keys(&self) -> &dyn crate::KeyStore {
        self
    }

    fn put_transcript<'a>(&'a self, key: &'a TranscriptKey, entry: &'a TranscriptEntry) -> StoreFuture<'a, ()> {
        self.with(|state| {
            if state.threads.contains_key(&entry.conversation) {
                state.transcripts.retain(|_, held| held.conversation != entry.conversation);
                state.transcripts.insert(*key, entry.clone());
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_behaves() {
        crate::contract::exercise(&super::MemoryStore::new()).await;
    }
}
