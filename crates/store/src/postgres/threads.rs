//! Conversations and their histories in PostgreSQL: one statement, one round trip, per call
//! (but `delete`).

use super::db::Db;
use crate::row::{encode_json, encode_pending, from_json, record_columns, to_json, RawRecord};
use crate::{ConversationId, ListCursor, StoreError, StoredItem, ThreadRecord};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::TurnId;
use serde_json::Value;
use tokio_postgres::Row;

const SAVE: &str =
    "INSERT INTO threads (thread_id, settings, profile, ephemeral, metadata, created_at_ms, updated_at_ms, turns, last_turn,
     pending_calls, owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (thread_id) DO UPDATE SET settings = excluded.settings, profile = excluded.profile,
     ephemeral = excluded.ephemeral, metadata = excluded.metadata,
     updated_at_ms = excluded.updated_at_ms, turns = excluded.turns, last_turn = excluded.last_turn,
     pending_calls = excluded.pending_calls";

/// With a fence ($3), the update happens only while the conversation's lease has it; the
/// lease row is locked (`FOR SHARE`) so a takeover waits for this statement, or this one sees
/// the takeover. Returns (allowed, exists).
const UPDATE_SETTINGS: &str = "WITH held AS (
         SELECT fence FROM leases WHERE thread_id = $1 AND $3::bigint IS NOT NULL FOR SHARE
     ),
     allowed AS (
         SELECT $3::bigint IS NULL OR EXISTS (SELECT 1 FROM held WHERE fence = $3::bigint) AS ok
     ),
     updated AS (
         UPDATE threads SET settings = $2 WHERE thread_id = $1 AND (SELECT ok FROM allowed) RETURNING 1
     )
     SELECT (SELECT ok FROM allowed), EXISTS (SELECT 1 FROM threads WHERE thread_id = $1)";

const LOAD: &str = concat!("SELECT ", record_columns!(), " FROM threads WHERE thread_id = $1");

const LIST_FIRST: &str =
    concat!("SELECT ", record_columns!(), " FROM threads ORDER BY created_at_ms DESC, thread_id DESC LIMIT $1");

const LIST_AFTER: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM threads WHERE (created_at_ms, thread_id) < ($1, $2)
      ORDER BY created_at_ms DESC, thread_id DESC LIMIT $3"
);

const HISTORY: &str = "SELECT item FROM thread_items WHERE thread_id = $1 ORDER BY seq";

const ITEMS: &str =
    "SELECT seq, turn_id, item FROM thread_items WHERE thread_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// A row of [`record_columns!`] as a record.
pub(super) fn record(row: &Row) -> Result<ThreadRecord, StoreError> {
    RawRecord {
        id: row.get(0),
        settings: row.get(1),
        profile: row.get(2),
        ephemeral: row.get(3),
        metadata: row.get(4),
        created_at_ms: row.get(5),
        updated_at_ms: row.get(6),
        turns: row.get(7),
        last_turn: row.get(8),
        pending_calls: row.get(9),
        owner: row.get(10),
    }
    .decode()
}

pub(super) async fn save(db: &Db, record: ThreadRecord) -> Result<(), StoreError> {
    let (settings, metadata) = encode_json(&record)?;
    let turns = record.turns as i64;
    let pending = encode_pending(&record.id, &record.pending_calls)?;
    db.execute(
        SAVE,
        &[
            &record.id.as_str(),
            &settings,
            &record.profile,
            &record.ephemeral,
            &metadata,
            &record.created_at_ms,
            &record.updated_at_ms,
            &turns,
            &record.last_turn.as_ref().map(TurnId::as_str),
            &pending,
            &record.owner,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn update_settings(
    db: &Db,
    id: &ConversationId,
    settings: &ThreadSettings,
    fence: Option<crate::Fence>,
) -> Result<(), StoreError> {
    let text = to_json(id, settings)?;
    let fence_param = fence.map(crate::Fence::to_db);
    let rows = db.query(UPDATE_SETTINGS, &[&id.as_str(), &text, &fence_param]).await?;
    let (allowed, exists): (bool, bool) = rows.first().map(|r| (r.get(0), r.get(1))).unwrap_or((true, false));
    match fence {
        Some(fence) if exists && !allowed => Err(StoreError::Fenced { thread_id: id.to_string(), fence }),
        _ => Ok(()),
    }
}

pub(super) async fn load(db: &Db, id: &ConversationId) -> Result<Option<ThreadRecord>, StoreError> {
    db.query(LOAD, &[&id.as_str()]).await?.first().map(record).transpose()
}

pub(super) async fn history(db: &Db, id: &ConversationId) -> Result<Vec<Value>, StoreError> {
    let rows = db.query(HISTORY, &[&id.as_str()]).await?;
    rows.iter().map(|row| from_json(id, row.get(0))).collect()
}

/// Three statements in one transaction (five round trips with its start and end): the
/// conversation's row first, which waits for a write to it in flight and stops later ones, then
/// its items and its lease, read after that write (its chat transcript entries go with the row,
/// by their foreign key).
pub(super) async fn delete(db: &Db, id: &ConversationId) -> Result<bool, StoreError> {
    db.timed(async {
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.error(&e))?;
        let mut changed = [0; 3];
        for (n, sql) in [
            "DELETE FROM threads WHERE thread_id = $1",
            "DELETE FROM thread_items WHERE thread_id = $1",
            "DELETE FROM leases WHERE thread_id = $1",
        ]
        .into_iter()
        .enumerate()
        {
            let statement = tx.prepare_cached(sql).await.map_err(|e| db.error(&e))?;
            changed[n] = tx.execute(&statement, &[&id.as_str()]).await.map_err(|e| db.error(&e))?;
        }
        tx.commit().await.map_err(|e| db.error(&e))?;
        db.count(5);
        Ok(changed[0] > 0)
    })
    .await
}

pub(super) async fn count(db: &Db) -> Result<u64, StoreError> {
    let rows = db.query("SELECT count(*) FROM threads", &[]).await?;
    Ok(rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0).max(0) as u64)
}

pub(super) async fn list(db: &Db, after: Option<ListCursor>, limit: usize) -> Result<Vec<ThreadRecord>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match &after {
        None => db.query(LIST_FIRST, &[&limit]).await?,
        Some(cursor) => db.query(LIST_AFTER, &[&cursor.created_at_ms, &cursor.id.as_str(), &limit]).await?,
    };
    rows.iter().map(record).collect()
}

pub(super) async fn items(
    db: &Db,
    id: &ConversationId,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<StoredItem>, StoreError> {
    let (after, limit) = (i64::try_from(after_seq).unwrap_or(i64::MAX), i64::try_from(limit).unwrap_or(i64::MAX));
    let rows = db.query(ITEMS, &[&id.as_str(), &after, &limit]).await?;
    rows.iter()
        .map(|row| {
            Ok(StoredItem {
                seq: row.get::<_, i64>(0).max(0) as u64,
                turn_id: TurnId::from(row.get::<_, String>(1)),
                item: from_json(id, row.get(2))?,
            })
        })
        .collect()
}
