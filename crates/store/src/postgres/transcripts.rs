//! The chat transcript index in PostgreSQL: one statement, one round trip, per call.

use super::db::Db;
use crate::{ConversationId, StoreError, TranscriptEntry, TranscriptKey};

/// Of two takes of one key at once, the second waits for the first's row lock, then finds the
/// row gone: at most one caller gets the entry.
const TAKE: &str = "DELETE FROM chat_transcripts WHERE key = $1 RETURNING thread_id, turns";

/// The conversation's row is locked (`FOR KEY SHARE`) for the statement, so a delete of it comes
/// wholly before (nothing is written) or after (the entry goes with it, by the foreign key);
/// the conversation's other entries go, and the key's entry is replaced.
const PUT: &str = "WITH owner AS (
         SELECT thread_id FROM threads WHERE thread_id = $2 FOR KEY SHARE
     ),
     others AS (
         DELETE FROM chat_transcripts WHERE thread_id = (SELECT thread_id FROM owner) AND key <> $1
     )
     INSERT INTO chat_transcripts (key, thread_id, turns) SELECT $1, thread_id, $3 FROM owner
     ON CONFLICT (key) DO UPDATE SET thread_id = excluded.thread_id, turns = excluded.turns";

pub(super) async fn take(db: &Db, key: &TranscriptKey) -> Result<Option<TranscriptEntry>, StoreError> {
    let rows = db.query(TAKE, &[&&key.as_bytes()[..]]).await?;
    Ok(rows.first().map(|row| TranscriptEntry {
        conversation: ConversationId::from(row.get::<_, String>(0)),
        turns: row.get::<_, i64>(1).max(0) as u64,
    }))
}

pub(super) async fn put(db: &Db, key: &TranscriptKey, entry: &TranscriptEntry) -> Result<(), StoreError> {
    let turns = i64::try_from(entry.turns).unwrap_or(i64::MAX);
    db.execute(PUT, &[&&key.as_bytes()[..], &entry.conversation.as_str(), &turns]).await?;
    Ok(())
}
