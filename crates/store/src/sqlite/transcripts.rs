//! The chat transcript index in SQLite.

use super::schema::Db;
use crate::{ConversationId, StoreError, TranscriptEntry, TranscriptKey};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// One statement: the row is gone from the index as it is read, so no second caller reads it.
pub(super) fn take(conn: &mut Connection, key: &TranscriptKey) -> Result<Option<TranscriptEntry>, StoreError> {
    let row = conn
        .prepare_cached("DELETE FROM chat_transcripts WHERE key = ?1 RETURNING thread_id, turns")
        .db()?
        .query_row([&key.as_bytes()[..]], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .optional()
        .db()?;
    Ok(row.map(|(id, turns)| TranscriptEntry { conversation: ConversationId::from(id), turns: turns.max(0) as u64 }))
}

/// In one transaction that holds the write lock from the start, so a delete of the conversation
/// comes wholly before (nothing is written) or after (the entry goes with it).
pub(super) fn put(conn: &mut Connection, key: &TranscriptKey, entry: &TranscriptEntry) -> Result<(), StoreError> {
    let id = entry.conversation.as_str();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).db()?;
    let exists = tx
        .prepare_cached("SELECT 1 FROM threads WHERE thread_id = ?1")
        .db()?
        .query_row([id], |_| Ok(()))
        .optional()
        .db()?
        .is_some();
    if exists {
        tx.prepare_cached("DELETE FROM chat_transcripts WHERE thread_id = ?1").db()?.execute([id]).db()?;
        tx.prepare_cached(
            "INSERT INTO chat_transcripts (key, thread_id, turns) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET thread_id = excluded.thread_id, turns = excluded.turns",
        )
        .db()?
        .execute(params![&key.as_bytes()[..], id, i64::try_from(entry.turns).unwrap_or(i64::MAX)])
        .db()?;
    }
    tx.commit().db()
}
