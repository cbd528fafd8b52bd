//! A store that keeps records for the life of the process.

use crate::{now_ms, StoreFuture, ThreadRecord, ThreadStore};
use std::collections::HashMap;
use std::sync::Mutex;

/// A [`ThreadStore`] in memory: conversations survive process crashes but not a restart.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, ThreadRecord>,
    aliases: HashMap<String, String>,
}

impl Inner {
    fn resolve<'a>(&'a self, id: &'a str) -> &'a str {
        self.aliases.get(id).map(String::as_str).unwrap_or(id)
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut Inner) -> T) -> StoreFuture<'_, T> {
        let out = f(&mut self.inner.lock().expect("memory store poisoned"));
        Box::pin(async move { Ok(out) })
    }
}

impl ThreadStore for MemoryStore {
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()> {
        self.with(|i| {
            i.records.insert(record.thread_id.clone(), record);
        })
    }

    fn load<'a>(&'a self, thread_id: &'a str) -> StoreFuture<'a, Option<ThreadRecord>> {
        self.with(|i| i.records.get(i.resolve(thread_id)).cloned())
    }

    fn replace<'a>(&'a self, old_id: &'a str, record: ThreadRecord) -> StoreFuture<'a, ()> {
        self.with(|i| {
            let new_id = record.thread_id.clone();
            i.records.insert(new_id.clone(), record);
            if old_id != new_id {
                i.records.remove(old_id);
                for target in i.aliases.values_mut().filter(|t| t.as_str() == old_id) {
                    *target = new_id.clone();
                }
                i.aliases.insert(old_id.to_owned(), new_id);
            }
        })
    }

    fn touch<'a>(&'a self, thread_id: &'a str, turns: u64) -> StoreFuture<'a, ()> {
        self.with(|i| {
            let id = i.resolve(thread_id).to_owned();
            if let Some(r) = i.records.get_mut(&id) {
                r.turns += turns;
                r.updated_at_ms = now_ms();
            }
        })
    }

    fn delete<'a>(&'a self, thread_id: &'a str) -> StoreFuture<'a, bool> {
        self.with(|i| {
            let id = i.resolve(thread_id).to_owned();
            i.aliases.retain(|old, new| *new != id && *old != id);
            i.records.remove(&id).is_some()
        })
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        self.with(|i| i.records.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_behaves() {
        crate::tests::exercise(&super::MemoryStore::new()).await;
    }
}
