//! A store that keeps records for the life of the process.

use crate::{now_ms, StoreFuture, ThreadRecord, ThreadStore, TurnRecord};
use codex_pool_protocol::methods::ThreadSettings;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// A [`ThreadStore`] in memory: conversations survive process crashes but not a restart.
#[derive(Default)]
pub struct MemoryStore {
    threads: Mutex<HashMap<String, Stored>>,
}

struct Stored {
    record: ThreadRecord,
    history: Vec<Value>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut HashMap<String, Stored>) -> T) -> StoreFuture<'_, T> {
        let out = f(&mut self.threads.lock().expect("memory store poisoned"));
        Box::pin(async move { Ok(out) })
    }
}

impl ThreadStore for MemoryStore {
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()> {
        self.with(|threads| match threads.get_mut(&record.thread_id) {
            Some(stored) => {
                stored.record = ThreadRecord { created_at_ms: stored.record.created_at_ms, ..record };
            }
            None => {
                threads.insert(record.thread_id.clone(), Stored { record, history: Vec::new() });
            }
        })
    }

    fn update_settings<'a>(&'a self, thread_id: &'a str, settings: ThreadSettings) -> StoreFuture<'a, ()> {
        self.with(|threads| {
            if let Some(stored) = threads.get_mut(thread_id) {
                stored.record.settings = settings;
            }
        })
    }

    fn load<'a>(&'a self, thread_id: &'a str) -> StoreFuture<'a, Option<ThreadRecord>> {
        self.with(|threads| threads.get(thread_id).map(|s| s.record.clone()))
    }

    fn record_turns(&self, turns: Vec<TurnRecord>) -> StoreFuture<'_, ()> {
        self.with(|threads| {
            let now = now_ms();
            for turn in turns {
                let Some(stored) = threads.get_mut(&turn.thread_id) else { continue };
                stored.history.extend(turn.items);
                if turn.completed {
                    stored.record.turns += 1;
                    stored.record.updated_at_ms = now;
                }
            }
        })
    }

    fn history<'a>(&'a self, thread_id: &'a str) -> StoreFuture<'a, Vec<Value>> {
        self.with(|threads| threads.get(thread_id).map(|s| s.history.clone()).unwrap_or_default())
    }

    fn delete<'a>(&'a self, thread_id: &'a str) -> StoreFuture<'a, bool> {
        self.with(|threads| threads.remove(thread_id).is_some())
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        self.with(|threads| threads.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_behaves() {
        crate::tests::exercise(&super::MemoryStore::new()).await;
    }
}
