//! API keys in PostgreSQL: one statement, one round trip, per call (but `add_key_usage`, one
//! per counter).

use super::threads::record;
use super::PostgresStore;
use crate::row::record_columns;
use crate::{ApiKey, ConversationId, KeyLimits, KeyStore, ListCursor, StoreError, StoreFuture, ThreadRecord};
use std::collections::BTreeMap;
use tokio_postgres::Row;

macro_rules! key_columns {
    () => {
        "key_id, name, prefix, sha256, created_at_ms, last_used_at_ms, revoked_at_ms, max_running_turns, \
         max_conversations, turns_per_minute"
    };
}

/// A new key, unless its name is taken (then no row: the caller says so).
const CREATE: &str = concat!(
    "INSERT INTO api_keys (",
    key_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) DO NOTHING"
);

const LIST: &str = concat!("SELECT ", key_columns!(), " FROM api_keys ORDER BY name");

const BY_HASH: &str = concat!("SELECT ", key_columns!(), " FROM api_keys WHERE sha256 = $1");

const REVOKE: &str = concat!(
    "UPDATE api_keys SET revoked_at_ms = COALESCE(revoked_at_ms, $2) WHERE key_id = $1 OR name = $1 RETURNING ",
    key_columns!()
);

const TOUCH: &str =
    "UPDATE api_keys SET last_used_at_ms = GREATEST(COALESCE(last_used_at_ms, 0), $2) WHERE key_id = $1";

const ADD_USAGE: &str = "INSERT INTO api_key_usage (key_id, what, n) VALUES ($1, $2, $3)
     ON CONFLICT (key_id, what) DO UPDATE SET n = api_key_usage.n + excluded.n";

const USAGE: &str = "SELECT what, n FROM api_key_usage WHERE key_id = $1";

/// Old minutes go in the same statement as the count.
const COUNT_TURN: &str = "WITH old AS (DELETE FROM api_key_minutes WHERE minute < $2::bigint - 1)
     INSERT INTO api_key_minutes (key_id, minute, n) VALUES ($1, $2, 1)
     ON CONFLICT (key_id, minute) DO UPDATE SET n = api_key_minutes.n + 1 RETURNING n";

const SET_OWNER: &str = "WITH set AS (
         UPDATE threads SET owner = $2 WHERE thread_id = $1 AND owner IS NULL RETURNING owner
     )
     SELECT COALESCE((SELECT owner FROM set), (SELECT owner FROM threads WHERE thread_id = $1)) = $2";

const LIST_OWNED_FIRST: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM threads WHERE owner = $2 ORDER BY created_at_ms DESC, thread_id DESC LIMIT $1"
);

const LIST_OWNED_AFTER: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM threads WHERE owner = $4 AND (created_at_ms, thread_id) < ($1, $2)
      ORDER BY created_at_ms DESC, thread_id DESC LIMIT $3"
);

fn to_u32(n: Option<i64>) -> Option<u32> {
    n.map(|n| n.clamp(0, u32::MAX.into()) as u32)
}

fn key(row: &Row) -> ApiKey {
    let sha: Vec<u8> = row.get(3);
    ApiKey {
        id: row.get(0),
        name: row.get(1),
        prefix: row.get(2),
        sha256: sha.try_into().unwrap_or([0; 32]),
        created_at_ms: row.get(4),
        last_used_at_ms: row.get(5),
        revoked_at_ms: row.get(6),
        limits: KeyLimits {
            max_running_turns: to_u32(row.get(7)),
            max_conversations: row.get::<_, Option<i64>>(8).map(|n| n.max(0) as u64),
            turns_per_minute: to_u32(row.get(9)),
        },
    }
}

impl KeyStore for PostgresStore {
    fn create_key<'a>(&'a self, key: &'a ApiKey) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let limits = &key.limits;
            let written = self
                .db
                .execute(
                    CREATE,
                    &[
                        &key.id,
                        &key.name,
                        &key.prefix,
                        &&key.sha256[..],
                        &key.created_at_ms,
                        &key.last_used_at_ms,
                        &key.revoked_at_ms,
                        &limits.max_running_turns.map(i64::from),
                        &limits.max_conversations.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                        &limits.turns_per_minute.map(i64::from),
                    ],
                )
                .await?;
            if written == 0 {
                return Err(StoreError::KeyNameTaken { name: key.name.clone() });
            }
            Ok(())
        })
    }

    fn list_keys(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        Box::pin(async move { Ok(self.db.query(LIST, &[]).await?.iter().map(key).collect()) })
    }

    fn key_by_hash<'a>(&'a self, sha256: &'a [u8; 32]) -> StoreFuture<'a, Option<ApiKey>> {
        Box::pin(async move { Ok(self.db.query(BY_HASH, &[&&sha256[..]]).await?.first().map(key)) })
    }

    fn revoke_key<'a>(&'a self, id_or_name: &'a str) -> StoreFuture<'a, Option<ApiKey>> {
        Box::pin(async move { Ok(self.db.query(REVOKE, &[&id_or_name, &crate::now_ms()]).await?.first().map(key)) })
    }

    fn touch_key<'a>(&'a self, id: &'a str, at_ms: i64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.db.execute(TOUCH, &[&id, &at_ms]).await?;
            Ok(())
        })
    }

    fn add_key_usage<'a>(&'a self, id: &'a str, counts: &'a [(String, u64)]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // Each counter is its own atomic upsert: counters only grow, so no transaction is
            // needed for them to add up on every node.
            for (what, n) in counts {
                let n = i64::try_from(*n).unwrap_or(i64::MAX);
                self.db.execute(ADD_USAGE, &[&id, what, &n]).await?;
            }
            Ok(())
        })
    }

    fn key_usage<'a>(&'a self, id: &'a str) -> StoreFuture<'a, BTreeMap<String, u64>> {
        Box::pin(async move {
            let rows = self.db.query(USAGE, &[&id]).await?;
            Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64)).collect())
        })
    }

    fn count_key_turn<'a>(&'a self, id: &'a str, minute: i64) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let rows = self.db.query(COUNT_TURN, &[&id, &minute]).await?;
            Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
        })
    }

    fn set_owner<'a>(&'a self, conversation: &'a ConversationId, owner: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let rows = self.db.query(SET_OWNER, &[&conversation.as_str(), &owner]).await?;
            Ok(rows.first().and_then(|r| r.get::<_, Option<bool>>(0)).unwrap_or(false))
        })
    }

    fn list_owned<'a>(
        &'a self,
        owner: &'a str,
        after: Option<ListCursor>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ThreadRecord>> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = match &after {
                None => self.db.query(LIST_OWNED_FIRST, &[&limit, &owner]).await?,
                Some(c) => self.db.query(LIST_OWNED_AFTER, &[&c.created_at_ms, &c.id.as_str(), &limit, &owner]).await?,
            };
            rows.iter().map(record).collect()
        })
    }

    fn count_owned<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let rows = self.db.query("SELECT count(*) FROM threads WHERE owner = $1", &[&owner]).await?;
            Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
        })
    }
}
