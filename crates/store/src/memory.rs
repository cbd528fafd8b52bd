//! A store that keeps records for the life of the process.

use crate::{now_ms, ConversationId, ListCursor, StoreFuture, StoredItem, ThreadRecord, ThreadStore, TurnRecord};
use codex_pool_protocol::methods::ThreadSettings;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// A [`ThreadStore`] in memory: conversations survive process crashes but not a restart.
#[derive(Default)]
pub struct MemoryStore {
    threads: Mutex<HashMap<ConversationId, Stored>>,
}

struct Stored {
    record: ThreadRecord,
    history: Vec<StoredItem>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut HashMap<ConversationId, Stored>) -> T) -> StoreFuture<'_, T> {
        let out = f(&mut self.threads.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        Box::pin(async move { Ok(out) })
    }
}

impl ThreadStore for MemoryStore {
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()> {
        self.with(|threads| match threads.get_mut(&record.id) {
            Some(stored) => {
                stored.record = ThreadRecord { created_at_ms: stored.record.created_at_ms, ..record };
            }
            None => {
                threads.insert(record.id.clone(), Stored { record, history: Vec::new() });
            }
        })
    }

    fn update_settings<'a>(&'a self, id: &'a ConversationId, settings: ThreadSettings) -> StoreFuture<'a, ()> {
        self.with(|threads| {
            if let Some(stored) = threads.get_mut(id) {
                stored.record.settings = settings;
            }
        })
    }

    fn load<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Option<ThreadRecord>> {
        self.with(|threads| threads.get(id).map(|s| s.record.clone()))
    }

    fn record_turns(&self, turns: Vec<TurnRecord>) -> StoreFuture<'_, ()> {
        self.with(|threads| {
            let now = now_ms();
            for turn in turns {
                let Some(stored) = threads.get_mut(&turn.conversation) else { continue };
                for item in turn.items {
                    let seq = stored.history.len() as u64 + 1;
                    stored.history.push(StoredItem { seq, turn_id: turn.turn_id.clone(), item });
                }
                if turn.completed {
                    stored.record.turns += 1;
                    stored.record.updated_at_ms = now;
                }
            }
        })
    }

    fn history<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Vec<Value>> {
        self.with(|threads| {
            threads.get(id).map(|s| s.history.iter().map(|i| i.item.clone()).collect()).unwrap_or_default()
        })
    }

    fn delete<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, bool> {
        self.with(|threads| threads.remove(id).is_some())
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        self.with(|threads| threads.len() as u64)
    }

    fn list(&self, after: Option<ListCursor>, limit: usize) -> StoreFuture<'_, Vec<ThreadRecord>> {
        self.with(move |threads| {
            let key = |r: &ThreadRecord| (r.created_at_ms, r.id.clone());
            let mut records: Vec<ThreadRecord> = threads
                .values()
                .map(|s| s.record.clone())
                .filter(|r| after.as_ref().is_none_or(|c| key(r) < (c.created_at_ms, c.id.clone())))
                .collect();
            records.sort_by_key(|r| std::cmp::Reverse(key(r)));
            records.truncate(limit);
            records
        })
    }

    fn items<'a>(&'a self, id: &'a ConversationId, after_seq: u64, limit: usize) -> StoreFuture<'a, Vec<StoredItem>> {
        self.with(move |threads| {
            let Some(stored) = threads.get(id) else { return Vec::new() };
            stored.history.iter().filter(|i| i.seq > after_seq).take(limit).cloned().collect()
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
