//! The SQLite schema, its migrations, and how SQLite's errors map onto the store's.

use crate::StoreError;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};

/// The schema, one step per version (`PRAGMA user_version` says how many have run).
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: conversations, and the history of each, item by item.
    "CREATE TABLE threads (
         thread_id     TEXT PRIMARY KEY,
         settings      TEXT NOT NULL,
         profile       TEXT NOT NULL,
         ephemeral     INTEGER NOT NULL DEFAULT 0,
         metadata      TEXT NOT NULL DEFAULT '{}',
         created_at_ms INTEGER NOT NULL,
         updated_at_ms INTEGER NOT NULL,
         turns         INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX threads_newest ON threads (created_at_ms DESC, thread_id DESC);
     CREATE TABLE thread_items (
         thread_id TEXT NOT NULL,
         seq       INTEGER NOT NULL,
         turn_id   TEXT NOT NULL,
         item      TEXT NOT NULL,
         PRIMARY KEY (thread_id, seq)
     ) WITHOUT ROWID;",
    // 2: nodes, and leases on conversations with their fences (the last one given out is kept
    // apart, so no fence is reused when a lease is released or its conversation deleted).
    "CREATE TABLE nodes (
         node_id         TEXT PRIMARY KEY,
         address         TEXT NOT NULL,
         heartbeat_at_ms INTEGER NOT NULL
     );
     CREATE TABLE leases (
         thread_id     TEXT PRIMARY KEY,
         node_id       TEXT NOT NULL,
         fence         INTEGER NOT NULL,
         expires_at_ms INTEGER NOT NULL
     );
     CREATE INDEX leases_node ON leases (node_id);
     CREATE TABLE lease_fences (
         id   INTEGER PRIMARY KEY CHECK (id = 1),
         last INTEGER NOT NULL
     );
     INSERT INTO lease_fences VALUES (1, 0);",
    // 3: the chat transcript index: a transcript's key (SHA-256, 32 bytes) to its conversation
    // and the conversation's turns then. Entries go with their conversation (`delete`).
    "CREATE TABLE chat_transcripts (
         key       BLOB PRIMARY KEY,
         thread_id TEXT NOT NULL,
         turns     INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX chat_transcripts_thread ON chat_transcripts (thread_id);",
    // 4: each conversation's last turn (ThreadRecord::last_turn), written with the turn.
    "ALTER TABLE threads ADD COLUMN last_turn TEXT;",
    // 5: each conversation's pending client tool calls (ThreadRecord::pending_calls), a JSON
    // array written with the turn; NULL when none.
    "ALTER TABLE threads ADD COLUMN pending_calls TEXT;",
    // 6: API keys (hashed), their usage counters and per-minute turn counts, and the key that
    // owns each conversation (NULL: the operator's).
    "CREATE TABLE api_keys (
         key_id            TEXT PRIMARY KEY,
         name              TEXT NOT NULL UNIQUE,
         prefix            TEXT NOT NULL,
         sha256            BLOB NOT NULL UNIQUE,
         created_at_ms     INTEGER NOT NULL,
         last_used_at_ms   INTEGER,
         revoked_at_ms     INTEGER,
         max_running_turns INTEGER,
         max_conversations INTEGER,
         turns_per_minute  INTEGER
     );
     CREATE TABLE api_key_usage (
         key_id TEXT NOT NULL,
         what   TEXT NOT NULL,
         n      INTEGER NOT NULL,
         PRIMARY KEY (key_id, what)
     ) WITHOUT ROWID;
     CREATE TABLE api_key_minutes (
         key_id TEXT NOT NULL,
         minute INTEGER NOT NULL,
         n      INTEGER NOT NULL,
         PRIMARY KEY (key_id, minute)
     ) WITHOUT ROWID;
     ALTER TABLE threads ADD COLUMN owner TEXT;
     CREATE INDEX threads_owner ON threads (owner, created_at_ms DESC, thread_id DESC);",
];

pub(super) const BACKEND: &str = "sqlite";

/// Maps SQLite's errors onto the store's shapes.
fn db_error(e: rusqlite::Error) -> StoreError {
    let message = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full { backend: BACKEND, message },
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly { backend: BACKEND, message },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy { backend: BACKEND, message },
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::NotADatabase) => {
            StoreError::Unavailable { backend: BACKEND, message }
        }
        _ => StoreError::Backend { backend: BACKEND, message },
    }
}

/// `?` for SQLite results inside the store.
pub(super) trait Db<T> {
    fn db(self) -> Result<T, StoreError>;
}

impl<T> Db<T> for Result<T, rusqlite::Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(db_error)
    }
}

/// Brings the database to the newest schema, in one transaction that holds the write lock from
/// the start (so two processes opening a new file at once do not both create it). A database
/// written by a newer codex-pool is refused rather than misread.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).db()?;
    let version = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).db()?.max(0);
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::NewerSchema { found: version, known });
    }
    for step in &MIGRATIONS[version as usize..] {
        tx.execute_batch(step).db()?;
    }
    tx.pragma_update(None, "user_version", known).db()?;
    tx.commit().db()?;
    Ok(())
}
