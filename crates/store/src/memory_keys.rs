//! API keys in the memory store.

use crate::{ApiKey, ConversationId, KeyStore, ListCursor, MemoryStore, StoreError, StoreFuture, ThreadRecord};
use std::collections::{BTreeMap, HashMap};

/// The memory store's keys, their usage counters and per-minute turn counts.
#[derive(Default)]
pub(crate) struct Keys {
    keys: Vec<ApiKey>,
    usage: HashMap<String, BTreeMap<String, u64>>,
    minutes: HashMap<(String, i64), u64>,
}

fn owned_newest_first(
    threads: impl Iterator<Item = ThreadRecord>,
    owner: &str,
    after: Option<&ListCursor>,
    limit: usize,
) -> Vec<ThreadRecord> {
    let mut records: Vec<ThreadRecord> = threads
        .filter(|r| r.owner.as_deref() == Some(owner))
        .filter(|r| after.is_none_or(|c| (r.created_at_ms, &r.id) < (c.created_at_ms, &c.id)))
        .collect();
    records.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
    records.truncate(limit);
    records
}

impl KeyStore for MemoryStore {
    fn create_key<'a>(&'a self, key: &'a ApiKey) -> StoreFuture<'a, ()> {
        self.with(|state| {
            if state.keys.keys.iter().any(|k| k.name == key.name) {
                return Err(StoreError::KeyNameTaken { name: key.name.clone() });
            }
            state.keys.keys.push(key.clone());
            Ok(())
        })
    }

    fn list_keys(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        self.with(|state| {
            let mut keys = state.keys.keys.clone();
            keys.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(keys)
        })
    }

    fn key_by_hash<'a>(&'a self, sha256: &'a [u8; 32]) -> StoreFuture<'a, Option<ApiKey>> {
        self.with(|state| Ok(state.keys.keys.iter().find(|k| &k.sha256 == sha256).cloned()))
    }

    fn revoke_key<'a>(&'a self, id_or_name: &'a str) -> StoreFuture<'a, Option<ApiKey>> {
        self.with(|state| {
            let found = state.keys.keys.iter_mut().find(|k| k.id == id_or_name || k.name == id_or_name);
            Ok(found.map(|key| {
                key.revoked_at_ms.get_or_insert_with(crate::now_ms);
                key.clone()
            }))
        })
    }

    fn touch_key<'a>(&'a self, id: &'a str, at_ms: i64) -> StoreFuture<'a, ()> {
        self.with(|state| {
            if let Some(key) = state.keys.keys.iter_mut().find(|k| k.id == id) {
                key.last_used_at_ms = Some(key.last_used_at_ms.map_or(at_ms, |t| t.max(at_ms)));
            }
            Ok(())
        })
    }

    fn add_key_usage<'a>(&'a self, id: &'a str, counts: &'a [(String, u64)]) -> StoreFuture<'a, ()> {
        self.with(|state| {
            let usage = state.keys.usage.entry(id.to_owned()).or_default();
            for (what, n) in counts {
                *usage.entry(what.clone()).or_default() += n;
            }
            Ok(())
        })
    }

    fn key_usage<'a>(&'a self, id: &'a str) -> StoreFuture<'a, BTreeMap<String, u64>> {
        self.with(|state| Ok(state.keys.usage.get(id).cloned().unwrap_or_default()))
    }

    fn count_key_turn<'a>(&'a self, id: &'a str, minute: i64) -> StoreFuture<'a, u64> {
        self.with(|state| {
            state.keys.minutes.retain(|(_, m), _| *m >= minute - 1);
            let n = state.keys.minutes.entry((id.to_owned(), minute)).or_default();
            *n += 1;
            Ok(*n)
        })
    }

    fn set_owner<'a>(&'a self, conversation: &'a ConversationId, owner: &'a str) -> StoreFuture<'a, bool> {
        self.with(|state| {
            Ok(state.threads.get_mut(conversation).is_some_and(|stored| {
                let record = &mut stored.record;
                record.owner.get_or_insert_with(|| owner.to_owned()) == owner
            }))
        })
    }

    fn list_owned<'a>(
        &'a self,
        owner: &'a str,
        after: Option<ListCursor>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ThreadRecord>> {
        self.with(|state| {
            let records = state.threads.values().map(|s| s.record.clone());
            Ok(owned_newest_first(records, owner, after.as_ref(), limit))
        })
    }

    fn count_owned<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, u64> {
        self.with(
            |state| Ok(state.threads.values().filter(|s| s.record.owner.as_deref() == Some(owner)).count() as u64),
        )
    }
}
