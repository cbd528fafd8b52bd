//! The embedded SQLite store.

mod keys;
mod leases;
mod schema;
#[cfg(test)]
mod tests;
mod transcripts;

use crate::ownership::ttl_ms;
use crate::row::{encode_json, encode_pending, from_json, record_columns, to_json, RawRecord};
use crate::{
    now_ms, ConversationId, Fence, Lease, LeaseHolder, ListCursor, NodeId, NodeInfo, NodeStatus, Renewal, StoreError,
    StoreFuture, StoredItem, ThreadRecord, ThreadStore, TranscriptEntry, TranscriptKey, TurnRecord,
};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::TurnId;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use schema::{migrate, Db, BACKEND};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pages of write-ahead log after which SQLite copies it into the database (about 1 MiB).
const WAL_CHECKPOINT_PAGES: i64 = 256;
/// The size the write-ahead log is cut back to after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 1 << 20;

/// A [`ThreadStore`] in one SQLite file (WAL mode). Queries run on tokio's blocking pool, so no
/// async task waits on disk. Leases and heartbeats use this machine's clock. The write-ahead log is checkpointed every ~1 MiB and cut back to
/// 1 MiB, and emptied by [`ThreadStore::close`], so the files grow with the history only. A
/// delete leaves no copy of what it deleted: `secure_delete` zeroes the rows, and the log is
/// checkpointed and emptied right after.
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
        // Deleted rows are overwritten with zeros, not left in free space for anyone who reads
        // the file.
        conn.pragma_update(None, "secure_delete", "ON").db()?;
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

/// A row of [`record_columns!`] as SQLite holds it.
/// A page of conversations, newest first, after `after`: every one, or `owner`'s only (an API
/// key's).
fn list_page(
    conn: &rusqlite::Connection,
    owner: Option<&str>,
    after: Option<&ListCursor>,
    limit: usize,
) -> Result<Vec<ThreadRecord>, StoreError> {
    let (at, id) = match after {
        Some(c) => (c.created_at_ms, c.id.as_str().to_owned()),
        None => (i64::MAX, String::new()),
    };
    let sql = concat!(
        "SELECT ",
        record_columns!(),
        " FROM threads
         WHERE (?4 IS NULL OR owner = ?4)
           AND (created_at_ms < ?1 OR (created_at_ms = ?1 AND (?2 = '' OR thread_id < ?2)))
         ORDER BY created_at_ms DESC, thread_id DESC LIMIT ?3"
    );
    let mut query = conn.prepare_cached(sql).db()?;
    let rows = query.query_map(params![at, id, limit as i64, owner], read_record).db()?;
    rows.map(|row| row.db().and_then(RawRecord::decode)).collect()
}

fn read_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: r.get(0)?,
        settings: r.get(1)?,
        profile: r.get(2)?,
        ephemeral: r.get(3)?,
        metadata: r.get(4)?,
        created_at_ms: r.get(5)?,
        updated_at_ms: r.get(6)?,
        turns: r.get(7)?,
        last_turn: r.get(8)?,
        pending_calls: r.get(9)?,
        owner: r.get(10)?,
    })
}

/// A [`TurnRecord`] with its items as JSON text, owned by the write.
struct EncodedTurn {
    conversation: ConversationId,
    turn_id: String,
    fence: Option<Fence>,
    completed: bool,
    last_turn: bool,
    /// Whether the write sets the pending calls, and to what (NULL: none).
    set_pending: bool,
    pending: Option<String>,
    items: Vec<String>,
}

impl EncodedTurn {
    fn of(turn: &TurnRecord) -> Result<Self, StoreError> {
        Ok(Self {
            conversation: turn.conversation.clone(),
            turn_id: turn.turn_id.as_str().to_owned(),
            fence: turn.fence,
            completed: turn.completed,
            last_turn: turn.is_last_turn(),
            set_pending: turn.pending_calls.is_some(),
            pending: encode_pending(&turn.conversation, turn.pending_calls.as_deref().unwrap_or_default())?,
            items: turn.items.iter().map(|item| to_json(&turn.conversation, item)).collect::<Result<_, _>>()?,
        })
    }
}

impl ThreadStore for SqliteStore {
    fn save(&self, record: ThreadRecord) -> StoreFuture<'_, ()> {
        self.run(move |conn| {
            let (settings, metadata) = encode_json(&record)?;
            let pending = encode_pending(&record.id, &record.pending_calls)?;
            conn.execute(
                "INSERT INTO threads (thread_id, settings, profile, ephemeral, metadata, created_at_ms, updated_at_ms, turns,
                 last_turn, pending_calls, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT(thread_id) DO UPDATE SET settings = excluded.settings, profile = excluded.profile,
                 ephemeral = excluded.ephemeral, metadata = excluded.metadata,
                 updated_at_ms = excluded.updated_at_ms, turns = excluded.turns, last_turn = excluded.last_turn,
                 pending_calls = excluded.pending_calls",
                params![
                    record.id.as_str(),
                    settings,
                    record.profile,
                    record.ephemeral,
                    metadata,
                    record.created_at_ms,
                    record.updated_at_ms,
                    record.turns as i64,
                    record.last_turn.as_ref().map(TurnId::as_str),
                    pending,
                    record.owner
                ],
            )
            .db()?;
            Ok(())
        })
    }

    fn update_settings<'a>(
        &'a self,
        id: &'a ConversationId,
        settings: ThreadSettings,
        fence: Option<Fence>,
    ) -> StoreFuture<'a, ()> {
        let id = id.clone();
        self.run(move |conn| {
            let settings = to_json(&id, &settings)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).db()?;
            leases::check_fence(&tx, &id, fence)?;
            tx.execute("UPDATE threads SET settings = ?2 WHERE thread_id = ?1", params![id.as_str(), settings]).db()?;
            tx.commit().db()
        })
    }

    fn load<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, Option<ThreadRecord>> {
        let id = id.clone();
        self.run(move |conn| {
            let sql = concat!("SELECT ", record_columns!(), " FROM threads WHERE thread_id = ?1");
            let row = conn.query_row(sql, [id.as_str()], read_record).optional().db()?;
            row.map(RawRecord::decode).transpose()
        })
    }

    fn record_turns<'a>(&'a self, turns: &'a [TurnRecord]) -> StoreFuture<'a, ()> {
        // The items as the JSON text the rows hold, made here: the write runs off this thread.
        let turns = match turns.iter().map(EncodedTurn::of).collect::<Result<Vec<_>, _>>() {
            Ok(turns) => turns,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        self.run_now(move |conn| {
            // The write lock from the start: the fences checked stay the leases' until the commit.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).db()?;
            for turn in &turns {
                leases::check_fence(&tx, &turn.conversation, turn.fence)?;
            }
            let now = now_ms();
            for turn in &turns {
                let id = turn.conversation.as_str();
                // Statements are prepared once per connection: parsing them was a tenth of the
                // pool's own CPU per turn.
                let exists = tx
                    .prepare_cached(
                        "UPDATE threads SET turns = turns + ?2, updated_at_ms = max(updated_at_ms, ?3),
                         last_turn = CASE WHEN ?4 THEN ?5 ELSE last_turn END,
                         pending_calls = CASE WHEN ?6 THEN ?7 ELSE pending_calls END WHERE thread_id = ?1",
                    )
                    .db()?
                    .execute(params![
                        id,
                        turn.completed as i64,
                        if turn.completed { now } else { 0 },
                        turn.last_turn,
                        turn.turn_id,
                        turn.set_pending,
                        turn.pending
                    ])
                    .db()?
                    > 0;
                if !exists || turn.items.is_empty() {
                    continue;
                }
                let last: i64 = tx
                    .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM thread_items WHERE thread_id = ?1")
                    .db()?
                    .query_row([id], |r| r.get(0))
                    .db()?;
                let mut insert = tx
                    .prepare_cached("INSERT INTO thread_items (thread_id, seq, turn_id, item) VALUES (?1, ?2, ?3, ?4)")
                    .db()?;
                for (n, text) in turn.items.iter().enumerate() {
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
            rows.map(|text| from_json(&id, &text.db()?)).collect()
        })
    }

    fn delete<'a>(&'a self, id: &'a ConversationId) -> StoreFuture<'a, bool> {
        let id = id.clone();
        self.run(move |conn| {
            let tx = conn.transaction().db()?;
            let n = tx.execute("DELETE FROM threads WHERE thread_id = ?1", [id.as_str()]).db()?;
            tx.execute("DELETE FROM thread_items WHERE thread_id = ?1", [id.as_str()]).db()?;
            tx.execute("DELETE FROM leases WHERE thread_id = ?1", [id.as_str()]).db()?;
            tx.execute("DELETE FROM chat_transcripts WHERE thread_id = ?1", [id.as_str()]).db()?;
            tx.commit().db()?;
            // The log still holds the pages as they were before the delete: copy the zeroed ones
            // into the database and empty it, so no earlier copy of the text is left.
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").db()?;
            Ok(n > 0)
        })
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        self.run(|conn| {
            Ok(conn.query_row("SELECT COUNT(*) FROM threads", [], |r| r.get::<_, i64>(0)).db()?.max(0) as u64)
        })
    }

    fn list(&self, after: Option<ListCursor>, limit: usize) -> StoreFuture<'_, Vec<ThreadRecord>> {
        self.run(move |conn| list_page(conn, None, after.as_ref(), limit))
    }

    fn items<'a>(&'a self, id: &'a ConversationId, after_seq: u64, limit: usize) -> StoreFuture<'a, Vec<StoredItem>> {
        let id = id.clone();
        self.run(move |conn| {
            // Clamped, not cast: a position past i64::MAX has nothing after it (a cast wrapped
            // it to -1, which read the history from its start).
            let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut query = conn
                .prepare_cached(
                    "SELECT seq, turn_id, item FROM thread_items WHERE thread_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )
                .db()?;
            let rows = query
                .query_map(params![id.as_str(), after, limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })
                .db()?;
            rows.map(|row| {
                let (seq, turn_id, text) = row.db()?;
                let item = from_json(&id, &text)?;
                Ok(StoredItem { seq: seq.max(0) as u64, turn_id: TurnId::from(turn_id), item })
            })
            .collect()
        })
    }

    fn register_node<'a>(&'a self, node: &'a NodeInfo) -> StoreFuture<'a, ()> {
        let node = node.clone();
        self.run(move |conn| leases::register_node(conn, &node))
    }

    fn nodes(&self) -> StoreFuture<'_, Vec<NodeStatus>> {
        self.run(|conn| leases::nodes(conn))
    }

    fn acquire_lease<'a>(
        &'a self,
        conversation: &'a ConversationId,
        node: &'a NodeId,
        ttl: Duration,
    ) -> StoreFuture<'a, Lease> {
        let (conversation, node) = (conversation.clone(), node.clone());
        self.run_now(move |conn| leases::acquire(conn, &conversation, &node, ttl_ms(ttl)))
    }

    fn lease_holder<'a>(&'a self, conversation: &'a ConversationId) -> StoreFuture<'a, Option<LeaseHolder>> {
        let conversation = conversation.clone();
        self.run(move |conn| leases::holder(conn, &conversation))
    }

    fn renew_leases<'a>(
        &'a self,
        node: &'a NodeId,
        conversations: &'a [ConversationId],
        ttl: Duration,
    ) -> StoreFuture<'a, Renewal> {
        let (node, conversations) = (node.clone(), conversations.to_vec());
        self.run(move |conn| leases::renew(conn, &node, &conversations, ttl_ms(ttl)))
    }

    fn release_lease<'a>(&'a self, conversation: &'a ConversationId, node: &'a NodeId) -> StoreFuture<'a, bool> {
        let (conversation, node) = (conversation.clone(), node.clone());
        self.run(move |conn| leases::release(conn, &conversation, &node))
    }

    fn release_leases<'a>(&'a self, node: &'a NodeId, conversations: &'a [ConversationId]) -> StoreFuture<'a, u64> {
        let (node, conversations) = (node.clone(), conversations.to_vec());
        self.run(move |conn| leases::release_many(conn, &node, &conversations))
    }

    fn take_transcript<'a>(&'a self, key: &'a TranscriptKey) -> StoreFuture<'a, Option<TranscriptEntry>> {
        let key = *key;
        self.run_now(move |conn| transcripts::take(conn, &key))
    }

    fn put_transcript<'a>(&'a self, key: &'a TranscriptKey, entry: &'a TranscriptEntry) -> StoreFuture<'a, ()> {
        let (key, entry) = (*key, entry.clone());
        self.run_now(move |conn| transcripts::put(conn, &key, &entry))
    }

    fn keys(&self) -> &dyn crate::KeyStore {
        self
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        // Copies the log into the database and truncates it to nothing.
        self.run(|conn| conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").db())
    }
}
