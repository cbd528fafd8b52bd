//! The PostgreSQL schema and its migrations.

use super::db::Db;
use crate::StoreError;

/// The schema, one step per version (`codex_pool_schema.version` says how many have run). Ids
/// compare byte by byte (`COLLATE "C"`), as in SQLite and in memory, so every store lists
/// conversations in the same order. Items, settings and metadata are JSON text, kept exactly as
/// written (no `jsonb`: it would reorder keys and refuse `\u0000` in strings); so are pending calls.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: conversations and their histories; nodes; leases with their fences. `next_seq` is the
    // position the conversation's next item takes; fences come from a sequence, so none is
    // reused when a lease is released or its conversation deleted.
    r#"CREATE TABLE threads (
           thread_id     text COLLATE "C" PRIMARY KEY,
           settings      text NOT NULL,
           profile       text NOT NULL,
           ephemeral     boolean NOT NULL DEFAULT false,
           metadata      text NOT NULL DEFAULT '{}',
           created_at_ms bigint NOT NULL,
           updated_at_ms bigint NOT NULL,
           turns         bigint NOT NULL DEFAULT 0,
           next_seq      bigint NOT NULL DEFAULT 1
       );
       CREATE INDEX threads_newest ON threads (created_at_ms, thread_id);
       CREATE TABLE thread_items (
           thread_id text COLLATE "C" NOT NULL,
           seq       bigint NOT NULL,
           turn_id   text NOT NULL,
           item      text NOT NULL,
           PRIMARY KEY (thread_id, seq)
       );
       CREATE TABLE nodes (
           node_id      text COLLATE "C" PRIMARY KEY,
           address      text NOT NULL,
           heartbeat_at timestamptz NOT NULL
       );
       CREATE TABLE leases (
           thread_id  text COLLATE "C" PRIMARY KEY,
           node_id    text COLLATE "C" NOT NULL,
           fence      bigint NOT NULL,
           expires_at timestamptz NOT NULL
       );
       CREATE INDEX leases_node ON leases (node_id, expires_at);
       CREATE SEQUENCE lease_fences;"#,
    // 2: the chat transcript index: a transcript's key (SHA-256, 32 bytes) to its conversation
    // and the conversation's turns then; entries go with their conversation (the foreign key
    // cascades, in the delete's own statement).
    r#"CREATE TABLE chat_transcripts (
           key       bytea PRIMARY KEY,
           thread_id text COLLATE "C" NOT NULL REFERENCES threads (thread_id) ON DELETE CASCADE,
           turns     bigint NOT NULL
       );
       CREATE INDEX chat_transcripts_thread ON chat_transcripts (thread_id);"#,
    // 3: each conversation's last turn (ThreadRecord::last_turn), written with the turn.
    r#"ALTER TABLE threads ADD COLUMN last_turn text;"#,
    // 4: each conversation's pending client tool calls (ThreadRecord::pending_calls), a JSON
    // array written with the turn; NULL when none.
    r#"ALTER TABLE threads ADD COLUMN pending_calls text;"#,
    // 5: API keys (hashed), their usage counters and per-minute turn counts, and the key that
    // owns each conversation (NULL: the operator's).
    r#"CREATE TABLE api_keys (
           key_id            text COLLATE "C" PRIMARY KEY,
           name              text COLLATE "C" NOT NULL UNIQUE,
           prefix            text NOT NULL,
           sha256            bytea NOT NULL UNIQUE,
           created_at_ms     bigint NOT NULL,
           last_used_at_ms   bigint,
           revoked_at_ms     bigint,
           max_running_turns bigint,
           max_conversations bigint,
           turns_per_minute  bigint
       );
       CREATE TABLE api_key_usage (
           key_id text COLLATE "C" NOT NULL,
           what   text COLLATE "C" NOT NULL,
           n      bigint NOT NULL,
           PRIMARY KEY (key_id, what)
       );
       CREATE TABLE api_key_minutes (
           key_id text COLLATE "C" NOT NULL,
           minute bigint NOT NULL,
           n      bigint NOT NULL,
           PRIMARY KEY (key_id, minute)
       );
       ALTER TABLE threads ADD COLUMN owner text COLLATE "C";
       CREATE INDEX threads_owner ON threads (owner, created_at_ms, thread_id);"#,
];

/// The advisory lock that lets one process at a time migrate a database ("codexpoo").
const MIGRATION_LOCK: i64 = 0x636f_6465_7870_6f6f;

/// The schema's version, without writing anything (0: no schema yet).
async fn version(db: &Db) -> Result<i64, StoreError> {
    let exists = db.query("SELECT to_regclass('codex_pool_schema') IS NOT NULL", &[]).await?;
    if !exists.first().is_some_and(|r| r.get::<_, bool>(0)) {
        return Ok(0);
    }
    let rows = db.query("SELECT max(version) FROM codex_pool_schema", &[]).await?;
    Ok(rows.first().and_then(|r| r.get::<_, Option<i64>>(0)).unwrap_or(0))
}

/// Brings the database to the newest schema, in one transaction under an advisory lock, so
/// nodes starting at once neither both create it nor see it half made; a database already up
/// to date is only read (so a read-only one opens, and its writes fail as read-only). A
/// database written by a newer codex-pool is refused rather than misread. Returns the version
/// found.
pub(super) async fn migrate(db: &Db) -> Result<i64, StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found = version(db).await?;
    if found > known {
        return Err(StoreError::NewerSchema { found, known });
    }
    if found == known {
        return Ok(found);
    }
    db.timed(async {
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.error(&e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(|e| db.error(&e))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS codex_pool_schema (version bigint NOT NULL)")
            .await
            .map_err(|e| db.error(&e))?;
        // Read again under the lock: another node may have migrated meanwhile.
        let row = tx.query_opt("SELECT max(version) FROM codex_pool_schema", &[]).await.map_err(|e| db.error(&e))?;
        let version: i64 = row.and_then(|r| r.get::<_, Option<i64>>(0)).unwrap_or(0);
        if version > known {
            return Err(StoreError::NewerSchema { found: version, known });
        }
        for (n, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(step).await.map_err(|e| {
                let e = db.error(&e);
                tracing::error!(server = db.server(), version = n + 1, error = %e, "the store's migration failed");
                e
            })?;
        }
        if version < known {
            tx.execute("DELETE FROM codex_pool_schema", &[]).await.map_err(|e| db.error(&e))?;
            tx.execute("INSERT INTO codex_pool_schema (version) VALUES ($1)", &[&known])
                .await
                .map_err(|e| db.error(&e))?;
        }
        tx.commit().await.map_err(|e| db.error(&e))?;
        Ok(version)
    })
    .await
}
