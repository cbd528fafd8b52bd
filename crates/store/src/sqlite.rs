//! The embedded SQLite store.

use crate::{now_ms, StoreError, StoreFuture, ThreadRecord, ThreadStore, TurnRecord};
use codex_pool_protocol::methods::ThreadSettings;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The schema, one step per version (`PRAGMA user_version` says how many have run).
const MIGRATIONS: &[&str] = &[
    // 1: conversations and their ids after a move.
    "CREATE TABLE threads (
         thread_id     TEXT PRIMARY KEY,
         settings      TEXT NOT NULL,
         created_at_ms INTEGER NOT NULL,
         updated_at_ms INTEGER NOT NULL,
         turns         INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE thread_aliases (old_id TEXT PRIMARY KEY, new_id TEXT NOT NULL);",
    // 2: the history lives here, not in codex; a conversation keeps its id when it moves
    // (`thread_aliases` is no longer read: the first release announced every id change, and
    // its rows are left as they were).
    "ALTER TABLE threads ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE thread_items (
         thread_id TEXT NOT NULL,
         seq       INTEGER NOT NULL,
         turn_id   TEXT NOT NULL,
         item      TEXT NOT NULL,
         PRIMARY KEY (thread_id, seq)
     ) WITHOUT ROWID;",
];

/// A [`ThreadStore`] in one SQLite file (WAL mode). Queries run on tokio's blocking pool, so no
/// async task waits on disk.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Self::init(conn)
    }

    /// A private database in memory (tests, throwaway pools).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        migrate(&mut conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    fn run<'a, T, F>(&'a self, f: F) -> StoreFuture<'a, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = conn.lock().map_err(|_| StoreError::Worker("connection lock poisoned".into()))?;
                f(&mut guard)
            })
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
        })
    }
}

/// Brings the database to the newest schema, in one transaction that holds the write lock from
/// the start (so two processes opening a new file at once do not both create it). A database
/// written by a newer codex-pool is refused rather than misread.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?.max(0) as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt {
            thread_id: "*".into(),
            reason: format!("schema version {version} is newer than this codex-pool knows ({})", MIGRATIONS.len()),
        });
    }
    // Databases of the first release were created without a version.
    let legacy = version == 0
        && tx
            .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'threads'", [], |_| Ok(()))
            .optional()?
            .is_some();
    let from = if legacy { 1 } else { version };
    for step in &MIGRATIONS[from..] {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    Ok(())
}

fn corrupt(thread_id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { thread_id: thread_id.to_owned(), reason: e.to_string() }
}

impl ThreadStore for SqliteStore {
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()> {
        self.run(move |conn| {
            let settings = serde_json::to_string(&record.settings).map_err(|e| corrupt(&record.thread_id, e))?;
            conn.execute(
                "INSERT INTO threads (thread_id, settings, ephemeral, created_at_ms, updated_at_ms, turns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(thread_id) DO UPDATE SET settings = excluded.settings, ephemeral = excluded.ephemeral,
                 updated_at_ms = excluded.updated_at_ms, turns = excluded.turns",
                params![
                    record.thread_id,
                    settings,
                    record.ephemeral,
                    record.created_at_ms,
                    record.updated_at_ms,
                    record.turns as i64
                ],
            )?;
            Ok(())
        })
    }

    fn update_settings<'a>(&'a self, thread_id: &'a str, settings: ThreadSettings) -> StoreFuture<'a, ()> {
        let thread_id = thread_id.to_owned();
        self.run(move |conn| {
            let settings = serde_json::to_string(&settings).map_err(|e| corrupt(&thread_id, e))?;
            conn.execute("UPDATE threads SET settings = ?2 WHERE thread_id = ?1", params![thread_id, settings])?;
            Ok(())
        })
    }

    fn load<'a>(&'a self, thread_id: &'a str) -> StoreFuture<'a, Option<ThreadRecord>> {
        let thread_id = thread_id.to_owned();
        self.run(move |conn| {
            let row = conn
                .query_row(
                    "SELECT settings, ephemeral, created_at_ms, updated_at_ms, turns FROM threads WHERE thread_id = ?1",
                    [&thread_id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, bool>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )
                .optional()?;
            row.map(|(settings, ephemeral, created_at_ms, updated_at_ms, turns)| {
                let settings = serde_json::from_str(&settings).map_err(|e| corrupt(&thread_id, e))?;
                Ok(ThreadRecord {
                    thread_id: thread_id.clone(),
                    settings,
                    ephemeral,
                    created_at_ms,
                    updated_at_ms,
                    turns: turns.max(0) as u64,
                })
            })
            .transpose()
        })
    }

    fn record_turns(&self, turns: Vec<TurnRecord>) -> StoreFuture<'_, ()> {
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let now = now_ms();
            for turn in &turns {
                let exists = tx.execute(
                    "UPDATE threads SET turns = turns + ?2, updated_at_ms = max(updated_at_ms, ?3) WHERE thread_id = ?1",
                    params![turn.thread_id, turn.completed as i64, if turn.completed { now } else { 0 }],
                )? > 0;
                if !exists || turn.items.is_empty() {
                    continue;
                }
                let last: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(seq), 0) FROM thread_items WHERE thread_id = ?1",
                    [&turn.thread_id],
                    |r| r.get(0),
                )?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO thread_items (thread_id, seq, turn_id, item) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (n, item) in turn.items.iter().enumerate() {
                    let text = serde_json::to_string(item).map_err(|e| corrupt(&turn.thread_id, e))?;
                    insert.execute(params![turn.thread_id, last + 1 + n as i64, turn.turn_id, text])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn history<'a>(&'a self, thread_id: &'a str) -> StoreFuture<'a, Vec<Value>> {
        let thread_id = thread_id.to_owned();
        self.run(move |conn| {
            let mut query = conn.prepare_cached("SELECT item FROM thread_items WHERE thread_id = ?1 ORDER BY seq")?;
            let rows = query.query_map([&thread_id], |r| r.get::<_, String>(0))?;
            rows.map(|text| serde_json::from_str(&text?).map_err(|e| corrupt(&thread_id, e))).collect()
        })
    }

    fn delete<'a>(&'a self, thread_id: &'a str) -> StoreFuture<'a, bool> {
        let thread_id = thread_id.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let n = tx.execute("DELETE FROM threads WHERE thread_id = ?1", [&thread_id])?;
            tx.execute("DELETE FROM thread_items WHERE thread_id = ?1", [&thread_id])?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        self.run(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM threads", [], |r| r.get::<_, i64>(0))?.max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::exercise;

    #[tokio::test]
    async fn sqlite_store_behaves() {
        exercise(&SqliteStore::open_in_memory().unwrap()).await;
    }

    #[tokio::test]
    async fn records_and_history_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("threads.db");
        let item = serde_json::json!({"type": "message", "role": "user", "content": []});
        {
            let store = SqliteStore::open(&path).unwrap();
            store.save(ThreadRecord::new("a", Default::default())).await.unwrap();
            store.record_turns(vec![TurnRecord::completed("a", "t", vec![item.clone()])]).await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.load("a").await.unwrap().unwrap().turns, 1);
        assert_eq!(store.history("a").await.unwrap(), vec![item]);
    }

    #[tokio::test]
    async fn a_first_release_database_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("threads.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute("INSERT INTO threads VALUES ('old', '{\"model\":\"m\"}', 1, 2, 3)", []).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let old = store.load("old").await.unwrap().unwrap();
        assert_eq!((old.settings.model.as_deref(), old.turns, old.ephemeral), (Some("m"), 3, false));
        store.record_turns(vec![TurnRecord::completed("old", "t", vec![serde_json::json!({})])]).await.unwrap();
        assert_eq!(store.history("old").await.unwrap().len(), 1);
        drop(store);
        // Opening again runs nothing more.
        SqliteStore::open(&path).unwrap();
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("threads.db");
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let err = SqliteStore::open(&path).err().expect("refused");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[tokio::test]
    async fn a_corrupt_row_is_a_clear_error() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.conn.lock().unwrap().execute("INSERT INTO threads VALUES ('x', 'not json', 0, 0, 0, 0)", []).unwrap();
        let err = store.load("x").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        store.conn.lock().unwrap().execute("INSERT INTO thread_items VALUES ('x', 1, 't', '{broken')", []).unwrap();
        let err = store.history("x").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}
