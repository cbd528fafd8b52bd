//! The embedded SQLite store.

use crate::{now_ms, ConversationId, StoreError, StoreFuture, ThreadRecord, ThreadStore, TurnRecord};
use codex_pool_protocol::methods::ThreadSettings;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The schema, one step per version (`PRAGMA user_version` says how many have run).
const MIGRATIONS: &[&str] = &[
    // 1: conversations, and the history of each, item by item.
    "CREATE TABLE threads (
         thread_id     TEXT PRIMARY KEY,
         settings      TEXT NOT NULL,
         ephemeral     INTEGER NOT NULL DEFAULT 0,
         created_at_ms INTEGER NOT NULL,
         updated_at_ms INTEGER NOT NULL,
         turns         INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE thread_items (
         thread_id TEXT NOT NULL,
         seq       INTEGER NOT NULL,
         turn_id   TEXT NOT NULL,
         item      TEXT NOT NULL,
         PRIMARY KEY (thread_id, seq)
     ) WITHOUT ROWID;",
];

/// Pages of write-ahead log after which SQLite copies it into the database (about 1 MiB).
const WAL_CHECKPOINT_PAGES: i64 = 256;
/// The size the write-ahead log is cut back to after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 1 << 20;

const BACKEND: &str = "sqlite";

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
trait Db<T> {
    fn db(self) -> Result<T, StoreError>;
}

impl<T> Db<T> for Result<T, rusqlite::Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(db_error)
    }
}

/// A [`ThreadStore`] in one SQLite file (WAL mode). Queries run on tokio's blocking pool, so no
/// async task waits on disk. The write-ahead log is checkpointed every ~1 MiB and cut back to
/// 1 MiB, and emptied by [`ThreadStore::close`], so the files grow with the history only.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let conn = Connection::open(path).db()?;
        conn.pragma_update(None, "journal_mode", "WAL").db()?;
        conn.pragma_update(None, "synchronous", "NORMAL").db()?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES).db()?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT).db()?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).db()?;
        Self::init(conn)
    }

    /// A private database in memory (tests, throwaway pools).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().db()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        migrate(&mut conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Caps the database's size (`None`: no cap beyond the disk). Writes that would grow it past
    /// the cap fail with [`StoreError::Full`], as they would on a full disk; the cap can be
    /// lowered below the current size (nothing more fits then) and raised again.
    pub fn set_size_limit(&self, max_bytes: Option<u64>) -> StoreFuture<'_, ()> {
        self.run(move |conn| {
            let pages = match max_bytes {
                Some(bytes) => {
                    let page_size = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0)).db()?.max(1);
                    (bytes as i64 / page_size).max(1)
                }
                None => i64::from(i32::MAX),
            };
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(())).db()
        })
    }

    /// Runs `f` on the connection, on tokio's blocking pool.
    fn run<'a, T, F>(&'a self, f: F) -> StoreFuture<'a, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                f(&mut guard)
            })
            .await
            .map_err(|e| StoreError::Backend { backend: BACKEND, message: format!("the query's task failed: {e}") })?
        })
    }

    /// Runs `f` on the connection at once, on this thread, for the writes on a turn's path: on a
    /// multi-threaded runtime, tokio is told the thread blocks (its other tasks move to another
    /// worker) rather than handing the query to a blocking-pool thread that must first be woken,
    /// which costs milliseconds when codex keeps every core busy. Elsewhere, as [`Self::run`].
    fn run_now<'a, T, F>(&'a self, f: F) -> StoreFuture<'a, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let multi_threaded = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi_threaded {
            return self.run(f);
        }
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::block_in_place(|| {
                let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                f(&mut guard)
            })
        })
    }

    /// Runs a statement on the connection as it is (tests: simulate a full disk, a corrupt row).
    #[cfg(test)]
    pub(crate) fn raw(&self, sql: &str) {
        self.conn.lock().unwrap().execute_batch(sql).unwrap();
    }
}

/// Brings the database to the newest schema, in one transaction that holds the write lock from
/// the start (so two processes opening a new file at once do not both create it). A database
/// written by a newer codex-pool is refused rather than misread.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
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

fn corrupt(id: &ConversationId, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { thread_id: id.to_string(), reason: e.to_string() }
}

impl ThreadStore for SqliteStore {
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()> {
        self.run(move |conn| {
            let settings = serde_json::to_string(&record.settings).map_err(|e| corrupt(&record.id, e))?;
            conn.execute(
                "INSERT INTO threads (thread_id, settings, ephemeral, created_at_ms, updated_at_ms, turns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(thread_id) DO UPDATE SET settings = excluded.settings, ephemeral = excluded.ephemeral,
                 updated_at_ms = excluded.updated_at_ms, turns = excluded.turns",
                params![
                    record.id.as_str(),
                    settings,
                    record.ephemeral,
                    record.created_at_ms,
                    record.updated_at_ms,
                    record.turns as i64
                ],
            )
            .db()?;
            Ok(())
        })
    }

    fn update_settings<'a>(&'a self, id: &'a ConversationId, settings: ThreadSettings) -> StoreFuture<'a, ()> {
        let id = id.clone();
        self.run(move |conn| {
            let settings = serde_json::to_string(&settings).map_err(|e| corrupt(&id, e))?;
            conn.execute("UPDATE threads SET settings = ?2 WHERE thread_id = ?1", params![id.as_str(), settings])
                .db()?;
            Ok(())
        })
    }

    fn load<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Option<ThreadRecord>> {
        let id = id.clone();
        self.run(move |conn| {
            let row = conn
                .query_row(
                    "SELECT settings, ephemeral, created_at_ms, updated_at_ms, turns FROM threads WHERE thread_id = ?1",
                    [id.as_str()],
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
                .optional()
                .db()?;
            row.map(|(settings, ephemeral, created_at_ms, updated_at_ms, turns)| {
                let settings = serde_json::from_str(&settings).map_err(|e| corrupt(&id, e))?;
                Ok(ThreadRecord {
                    id: id.clone(),
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
        self.run_now(move |conn| {
            let tx = conn.transaction().db()?;
            let now = now_ms();
            for turn in &turns {
                let id = turn.conversation.as_str();
                let exists = tx
                    .execute(
                        "UPDATE threads SET turns = turns + ?2, updated_at_ms = max(updated_at_ms, ?3) WHERE thread_id = ?1",
                        params![id, turn.completed as i64, if turn.completed { now } else { 0 }],
                    )
                    .db()?
                    > 0;
                if !exists || turn.items.is_empty() {
                    continue;
                }
                let last: i64 = tx
                    .query_row("SELECT COALESCE(MAX(seq), 0) FROM thread_items WHERE thread_id = ?1", [id], |r| r.get(0))
                    .db()?;
                let mut insert = tx
                    .prepare_cached("INSERT INTO thread_items (thread_id, seq, turn_id, item) VALUES (?1, ?2, ?3, ?4)")
                    .db()?;
                for (n, item) in turn.items.iter().enumerate() {
                    let text = serde_json::to_string(item).map_err(|e| corrupt(&turn.conversation, e))?;
                    insert.execute(params![id, last + 1 + n as i64, turn.turn_id, text]).db()?;
                }
            }
            tx.commit().db()?;
            Ok(())
        })
    }

    fn history<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Vec<Value>> {
        let id = id.clone();
        self.run(move |conn| {
            let mut query =
                conn.prepare_cached("SELECT item FROM thread_items WHERE thread_id = ?1 ORDER BY seq").db()?;
            let rows = query.query_map([id.as_str()], |r| r.get::<_, String>(0)).db()?;
            rows.map(|text| serde_json::from_str(&text.db()?).map_err(|e| corrupt(&id, e))).collect()
        })
    }

    fn delete<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, bool> {
        let id = id.clone();
        self.run(move |conn| {
            let tx = conn.transaction().db()?;
            let n = tx.execute("DELETE FROM threads WHERE thread_id = ?1", [id.as_str()]).db()?;
            tx.execute("DELETE FROM thread_items WHERE thread_id = ?1", [id.as_str()]).db()?;
            tx.commit().db()?;
            Ok(n > 0)
        })
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        self.run(|conn| {
            Ok(conn.query_row("SELECT COUNT(*) FROM threads", [], |r| r.get::<_, i64>(0)).db()?.max(0) as u64)
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        // Copies the log into the database and truncates it to nothing.
        self.run(|conn| conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").db())
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
        let a = ConversationId::from("a");
        assert_eq!(store.load(&a).await.unwrap().unwrap().turns, 1);
        assert_eq!(store.history(&a).await.unwrap(), vec![item]);
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("threads.db");
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let err = SqliteStore::open(&path).err().expect("refused");
        assert!(matches!(err, StoreError::NewerSchema { found: 99, known: 1 }), "{err}");
        assert!(err.to_string().contains("upgrade codex-pool"), "{err}");
    }

    #[tokio::test]
    async fn a_corrupt_row_is_a_clear_error() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.raw("INSERT INTO threads VALUES ('x', 'not json', 0, 0, 0, 0)");
        let x = ConversationId::from("x");
        let err = store.load(&x).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        store.raw("INSERT INTO thread_items VALUES ('x', 1, 't', '{broken')");
        let err = store.history(&x).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    fn item(n: usize) -> Value {
        let text = format!("message {n} {}", "x".repeat(200));
        serde_json::json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
    }

    #[tokio::test]
    async fn a_full_database_fails_whole_batches_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("threads.db")).unwrap();
        let a = ConversationId::from("a");
        store.save(ThreadRecord::new(a.clone(), Default::default())).await.unwrap();
        store.record_turns(vec![TurnRecord::completed(a.clone(), "t0", vec![item(0)])]).await.unwrap();
        // No room for more pages: as a full disk would do.
        store.set_size_limit(Some(1)).await.unwrap();
        let big: Vec<Value> = (1..200).map(item).collect();
        let err = store.record_turns(vec![TurnRecord::completed(a.clone(), "t1", big.clone())]).await.unwrap_err();
        assert!(matches!(err, StoreError::Full { .. }), "{err}");
        assert!(err.to_string().contains("free disk space"), "{err}");
        // Nothing of the failed batch was kept.
        assert_eq!(store.history(&a).await.unwrap(), vec![item(0)]);
        assert_eq!(store.load(&a).await.unwrap().unwrap().turns, 1);
        // Room again: the store goes on.
        store.set_size_limit(None).await.unwrap();
        store.record_turns(vec![TurnRecord::completed(a.clone(), "t2", big)]).await.unwrap();
        assert_eq!(store.history(&a).await.unwrap().len(), 200);
    }

    #[tokio::test]
    async fn a_read_only_database_says_so() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.raw("PRAGMA query_only = 1;");
        let err = store.save(ThreadRecord::new("a", Default::default())).await.unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
    }

    /// Bytes of the database file and of its write-ahead log.
    fn sizes(dir: &Path) -> (u64, u64) {
        let len = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0);
        (len("threads.db"), len("threads.db-wal"))
    }

    #[tokio::test]
    async fn the_write_ahead_log_stays_bounded_and_is_emptied_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("threads.db")).unwrap();
        let a = ConversationId::from("a");
        store.save(ThreadRecord::new(a.clone(), Default::default())).await.unwrap();
        let mut largest_wal = 0;
        // 1,000 turns of a user message and a reply each: about 4 MB of WAL without the limits.
        for n in 0..1000 {
            let turn = TurnRecord::completed(a.clone(), format!("t{n}"), vec![item(2 * n), item(2 * n + 1)]);
            store.record_turns(vec![turn]).await.unwrap();
            largest_wal = largest_wal.max(sizes(dir.path()).1);
        }
        let (db, wal) = sizes(dir.path());
        println!(
            "after 1000 turns: database {db} bytes, log {wal} bytes (largest {largest_wal}), {} bytes a turn",
            db / 1000
        );
        assert!(largest_wal <= 2 * WAL_SIZE_LIMIT as u64, "the log grew to {largest_wal} bytes");
        store.close().await.unwrap();
        assert_eq!(sizes(dir.path()).1, 0, "the log is emptied on close");
        assert_eq!(store.history(&a).await.unwrap().len(), 2000, "and the store goes on");
    }
}
