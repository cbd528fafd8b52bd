//! The embedded SQLite store.

use crate::{now_ms, StoreError, StoreFuture, ThreadRecord, ThreadStore};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS threads (
    thread_id     TEXT PRIMARY KEY,
    settings      TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    turns         INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS thread_aliases (
    old_id TEXT PRIMARY KEY,
    new_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS thread_aliases_new ON thread_aliases(new_id);
";

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

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.execute_batch(SCHEMA)?;
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

fn resolve(conn: &Connection, thread_id: &str) -> rusqlite::Result<String> {
    Ok(conn
        .query_row("SELECT new_id FROM thread_aliases WHERE old_id = ?1", [thread_id], |r| r.get(0))
        .optional()?
        .unwrap_or_else(|| thread_id.to_owned()))
}

fn insert(conn: &Connection, record: &ThreadRecord) -> Result<(), StoreError> {
    let settings = serde_json::to_string(&record.settings)
        .map_err(|e| StoreError::Corrupt { thread_id: record.thread_id.clone(), reason: e.to_string() })?;
    conn.execute(
        "INSERT INTO threads (thread_id, settings, created_at_ms, updated_at_ms, turns) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(thread_id) DO UPDATE SET settings = excluded.settings, updated_at_ms = excluded.updated_at_ms,
         turns = excluded.turns",
        params![record.thread_id, settings, record.created_at_ms, record.updated_at_ms, record.turns as i64],
    )?;
    Ok(())
}

impl ThreadStore for SqliteStore {
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()> {
        self.run(move |conn| insert(conn, &record))
    }

    fn load<'a>(&'a self, thread_id: &'a str) -> StoreFuture<'a, Option<ThreadRecord>> {
        let thread_id = thread_id.to_owned();
        self.run(move |conn| {
            let id = resolve(conn, &thread_id)?;
            let row = conn
                .query_row(
                    "SELECT thread_id, settings, created_at_ms, updated_at_ms, turns FROM threads WHERE thread_id = ?1",
                    [&id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )
                .optional()?;
            row.map(|(thread_id, settings, created_at_ms, updated_at_ms, turns)| {
                let settings = serde_json::from_str(&settings)
                    .map_err(|e| StoreError::Corrupt { thread_id: thread_id.clone(), reason: e.to_string() })?;
                Ok(ThreadRecord { thread_id, settings, created_at_ms, updated_at_ms, turns: turns.max(0) as u64 })
            })
            .transpose()
        })
    }

    fn replace<'a>(&'a self, old_id: &'a str, record: ThreadRecord) -> StoreFuture<'a, ()> {
        let old_id = old_id.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            insert(&tx, &record)?;
            if old_id != record.thread_id {
                tx.execute("DELETE FROM threads WHERE thread_id = ?1", [&old_id])?;
                tx.execute("UPDATE thread_aliases SET new_id = ?2 WHERE new_id = ?1", [&old_id, &record.thread_id])?;
                tx.execute(
                    "INSERT OR REPLACE INTO thread_aliases (old_id, new_id) VALUES (?1, ?2)",
                    [&old_id, &record.thread_id],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn touch<'a>(&'a self, thread_id: &'a str, turns: u64) -> StoreFuture<'a, ()> {
        let thread_id = thread_id.to_owned();
        self.run(move |conn| {
            let id = resolve(conn, &thread_id)?;
            conn.execute(
                "UPDATE threads SET turns = turns + ?3, updated_at_ms = ?2 WHERE thread_id = ?1",
                params![id, now_ms(), turns as i64],
            )?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, thread_id: &'a str) -> StoreFuture<'a, bool> {
        let thread_id = thread_id.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let id = resolve(&tx, &thread_id)?;
            let n = tx.execute("DELETE FROM threads WHERE thread_id = ?1", [&id])?;
            tx.execute("DELETE FROM thread_aliases WHERE new_id = ?1 OR old_id = ?1", [&id])?;
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
    async fn records_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("threads.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.save(ThreadRecord::new("a", Default::default())).await.unwrap();
            store.replace("a", ThreadRecord::new("b", Default::default())).await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.load("a").await.unwrap().unwrap().thread_id, "b");
    }

    #[tokio::test]
    async fn a_corrupt_row_is_a_clear_error() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.conn.lock().unwrap().execute("INSERT INTO threads VALUES ('x', 'not json', 0, 0, 0)", []).unwrap();
        let err = store.load("x").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}
