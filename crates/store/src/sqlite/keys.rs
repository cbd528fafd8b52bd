//! API keys in SQLite.

use super::schema::Db;
use super::{list_page, SqliteStore};
use crate::{ApiKey, ConversationId, KeyLimits, KeyStore, ListCursor, StoreError, StoreFuture, ThreadRecord};
use rusqlite::{params, OptionalExtension};
use std::collections::BTreeMap;

/// The columns an [`ApiKey`] is read from, in [`read_key`]'s order.
const KEY_COLUMNS: &str = "key_id, name, prefix, sha256, created_at_ms, last_used_at_ms, revoked_at_ms, \
                           max_running_turns, max_conversations, turns_per_minute";

fn read_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    let sha: Vec<u8> = r.get(3)?;
    Ok(ApiKey {
        id: r.get(0)?,
        name: r.get(1)?,
        prefix: r.get(2)?,
        sha256: sha.try_into().unwrap_or([0; 32]),
        created_at_ms: r.get(4)?,
        last_used_at_ms: r.get(5)?,
        revoked_at_ms: r.get(6)?,
        limits: KeyLimits {
            max_running_turns: r.get::<_, Option<i64>>(7)?.map(|n| n.clamp(0, u32::MAX.into()) as u32),
            max_conversations: r.get::<_, Option<i64>>(8)?.map(|n| n.max(0) as u64),
            turns_per_minute: r.get::<_, Option<i64>>(9)?.map(|n| n.clamp(0, u32::MAX.into()) as u32),
        },
    })
}

impl KeyStore for SqliteStore {
    fn create_key<'a>(&'a self, key: &'a ApiKey) -> StoreFuture<'a, ()> {
        let key = key.clone();
        self.run(move |conn| {
            let taken = conn
                .query_row("SELECT 1 FROM api_keys WHERE name = ?1", [&key.name], |_| Ok(()))
                .optional()
                .db()?
                .is_some();
            if taken {
                return Err(StoreError::KeyNameTaken { name: key.name });
            }
            conn.execute(
                &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    key.id,
                    key.name,
                    key.prefix,
                    &key.sha256[..],
                    key.created_at_ms,
                    key.last_used_at_ms,
                    key.revoked_at_ms,
                    key.limits.max_running_turns.map(i64::from),
                    key.limits.max_conversations.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                    key.limits.turns_per_minute.map(i64::from),
                ],
            )
            .db()?;
            Ok(())
        })
    }

    fn list_keys(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        self.run(|conn| {
            let mut query = conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY name")).db()?;
            let rows = query.query_map([], read_key).db()?;
            rows.map(|r| r.db()).collect()
        })
    }

    fn key_by_hash<'a>(&'a self, sha256: &'a [u8; 32]) -> StoreFuture<'a, Option<ApiKey>> {
        let sha256 = *sha256;
        self.run(move |conn| {
            conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE sha256 = ?1"))
                .db()?
                .query_row([&sha256[..]], read_key)
                .optional()
                .db()
        })
    }

    fn revoke_key<'a>(&'a self, id_or_name: &'a str) -> StoreFuture<'a, Option<ApiKey>> {
        let which = id_or_name.to_owned();
        self.run(move |conn| {
            conn.execute(
                "UPDATE api_keys SET revoked_at_ms = COALESCE(revoked_at_ms, ?2) WHERE key_id = ?1 OR name = ?1",
                params![which, crate::now_ms()],
            )
            .db()?;
            conn.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?1 OR name = ?1"),
                [&which],
                read_key,
            )
            .optional()
            .db()
        })
    }

    fn touch_key<'a>(&'a self, id: &'a str, at_ms: i64) -> StoreFuture<'a, ()> {
        let id = id.to_owned();
        self.run(move |conn| {
            conn.execute(
                "UPDATE api_keys SET last_used_at_ms = max(COALESCE(last_used_at_ms, 0), ?2) WHERE key_id = ?1",
                params![id, at_ms],
            )
            .db()?;
            Ok(())
        })
    }

    fn add_key_usage<'a>(&'a self, id: &'a str, counts: &'a [(String, u64)]) -> StoreFuture<'a, ()> {
        let (id, counts) = (id.to_owned(), counts.to_vec());
        self.run(move |conn| {
            let tx = conn.transaction().db()?;
            for (what, n) in &counts {
                tx.prepare_cached(
                    "INSERT INTO api_key_usage (key_id, what, n) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key_id, what) DO UPDATE SET n = n + excluded.n",
                )
                .db()?
                .execute(params![id, what, i64::try_from(*n).unwrap_or(i64::MAX)])
                .db()?;
            }
            tx.commit().db()
        })
    }

    fn key_usage<'a>(&'a self, id: &'a str) -> StoreFuture<'a, BTreeMap<String, u64>> {
        let id = id.to_owned();
        self.run(move |conn| {
            let mut query = conn.prepare_cached("SELECT what, n FROM api_key_usage WHERE key_id = ?1").db()?;
            let rows =
                query.query_map([&id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))).db()?;
            rows.map(|r| r.db()).collect()
        })
    }

    fn count_key_turn<'a>(&'a self, id: &'a str, minute: i64) -> StoreFuture<'a, u64> {
        let id = id.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction().db()?;
            tx.execute("DELETE FROM api_key_minutes WHERE minute < ?1", [minute - 1]).db()?;
            let n: i64 = tx
                .query_row(
                    "INSERT INTO api_key_minutes (key_id, minute, n) VALUES (?1, ?2, 1)
                     ON CONFLICT (key_id, minute) DO UPDATE SET n = n + 1 RETURNING n",
                    params![id, minute],
                    |r| r.get(0),
                )
                .db()?;
            tx.commit().db()?;
            Ok(n.max(0) as u64)
        })
    }

    fn set_owner<'a>(&'a self, conversation: &'a ConversationId, owner: &'a str) -> StoreFuture<'a, bool> {
        let (id, owner) = (conversation.clone(), owner.to_owned());
        self.run(move |conn| {
            conn.execute(
                "UPDATE threads SET owner = ?2 WHERE thread_id = ?1 AND owner IS NULL",
                params![id.as_str(), owner],
            )
            .db()?;
            let now: Option<Option<String>> = conn
                .query_row("SELECT owner FROM threads WHERE thread_id = ?1", [id.as_str()], |r| r.get(0))
                .optional()
                .db()?;
            Ok(now.flatten().as_deref() == Some(owner.as_str()))
        })
    }

    fn list_owned<'a>(
        &'a self,
        owner: &'a str,
        after: Option<ListCursor>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ThreadRecord>> {
        let owner = owner.to_owned();
        self.run(move |conn| list_page(conn, Some(&owner), after.as_ref(), limit))
    }

    fn count_owned<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, u64> {
        let owner = owner.to_owned();
        self.run(move |conn| {
            let n: i64 =
                conn.query_row("SELECT COUNT(*) FROM threads WHERE owner = ?1", [&owner], |r| r.get(0)).db()?;
            Ok(n.max(0) as u64)
        })
    }
}
