//! The PostgreSQL store: the contract, and what only PostgreSQL does (several processes opening
//! one database, takeovers racing writes, a server that is away, a full disk). Each test gets a
//! database of its own on the test process's server (see `codex_pool_testkit::postgres`).

use super::*;
use crate::contract::{exercise, pending};
use codex_pool_protocol::TurnId;
use codex_pool_testkit::postgres::{TestDatabase, TestPostgres, URL_VAR};
use serde_json::json;

/// A fresh database, or `None` when PostgreSQL tests are skipped.
async fn database() -> Option<TestDatabase> {
    Some(TestPostgres::shared()?.database().await)
}

async fn open(db: &TestDatabase) -> PostgresStore {
    PostgresStore::open(db.url()).await.unwrap_or_else(|e| panic!("open {}: {e}", db.url()))
}

#[tokio::test]
async fn postgres_store_behaves() {
    let Some(db) = database().await else { return };
    exercise(&open(&db).await).await;
}

#[tokio::test]
async fn records_and_history_survive_reopening_and_migrations_run_once() {
    let Some(db) = database().await else { return };
    let item = json!({"type": "message", "role": "user", "content": [], "nul": "a\u{0}b", "big": u64::MAX});
    let calls = vec![pending::call(1), pending::call(2)];
    {
        let store = open(&db).await;
        store.save(ThreadRecord::new("a", Default::default())).await.unwrap();
        store.record_turns(&[TurnRecord::completed("a", "t", vec![item.clone()])]).await.unwrap();
        store.record_turns(&[TurnRecord::partial("a", "t2", vec![], calls.clone())]).await.unwrap();
    }
    // Opening again finds the schema up to date and changes nothing.
    let store = open(&db).await;
    let a = ConversationId::from("a");
    assert_eq!(store.load(&a).await.unwrap().unwrap().turns, 1);
    assert_eq!(store.history(&a).await.unwrap(), vec![item], "items come back exactly, NUL and u64 included");
    assert_eq!(store.load(&a).await.unwrap().unwrap().pending_calls, calls, "pending calls too");
    let one_version = "DO $$ BEGIN
        IF (SELECT array_agg(version) FROM codex_pool_schema) <> '{5}' THEN RAISE 'not one version row'; END IF;
    END $$";
    db.execute(one_version).await.expect("one version row");
}

#[tokio::test]
async fn nodes_opening_a_fresh_database_at_once_all_succeed() {
    let Some(db) = database().await else { return };
    let opens = (0..4).map(|_| {
        let url = db.url().to_owned();
        async move { PostgresStore::open(&url).await }
    });
    let stores: Vec<_> = futures_join_all(opens).await;
    for store in &stores {
        let store = store.as_ref().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.count().await.unwrap(), 0);
    }
}

/// Runs futures at once (each on a task of its own), in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(db) = database().await else { return };
    drop(open(&db).await);
    db.execute("UPDATE codex_pool_schema SET version = 99").await.unwrap();
    let err = PostgresStore::open(db.url()).await.err().expect("refused");
    assert!(matches!(err, StoreError::NewerSchema { found: 99, known: 5 }), "{err}");
}

#[tokio::test]
async fn a_corrupt_row_is_a_clear_error() {
    let Some(db) = database().await else { return };
    let store = open(&db).await;
    db.execute("INSERT INTO threads VALUES ('x', 'not json', 'chat', false, '{}', 0, 0, 0, 1)").await.unwrap();
    let x = ConversationId::from("x");
    assert!(matches!(store.load(&x).await, Err(StoreError::Corrupt { .. })));
    db.execute("INSERT INTO thread_items VALUES ('x', 1, 't', '{broken')").await.unwrap();
    assert!(matches!(store.history(&x).await, Err(StoreError::Corrupt { .. })));
    // Pending calls that are not JSON, or not calls: an error of the record, not a panic.
    for pending in ["'[{broken'", "'{\"call_id\": 1}'"] {
        db.execute(&format!(
            "DELETE FROM threads; INSERT INTO threads VALUES ('y', '{{}}', 'chat', false, '{{}}', 0, 0, 0, 1, NULL, {pending})"
        ))
        .await
        .unwrap();
        let err = store.load(&"y".into()).await.unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt { thread_id, .. } if thread_id == "y"), "{err}");
        assert!(matches!(store.list(None, 10).await, Err(StoreError::Corrupt { .. })));
    }
}

#[tokio::test]
async fn a_read_only_database_says_so() {
    let Some(db) = database().await else { return };
    drop(open(&db).await);
    db.execute(&format!("ALTER DATABASE {} SET default_transaction_read_only = on", db.name())).await.unwrap();
    let store = open(&db).await;
    let err = store.save(ThreadRecord::new("a", Default::default())).await.unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
    assert!(err.to_string().contains("read-only") && err.to_string().contains("25006"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_without_the_password() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://codex:hunter2-secret@127.0.0.1:{port}/pool?connect_timeout=2");
    let err = PostgresStore::open(&url).await.err().expect("refused");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{text}");
    assert!(text.contains(&format!("postgres://codex@127.0.0.1:{port}/pool")), "names the server: {text}");
    assert!(text.contains("refused") && text.contains("check that the server runs"), "says why and what to do: {text}");
    assert!(!text.contains("hunter2-secret"), "{text}");
    assert!(!format!("{err:?}").contains("hunter2-secret"), "{err:?}");
}

#[tokio::test]
async fn a_server_that_went_away_is_unavailable() {
    if TestPostgres::shared().is_none() {
        return;
    }
    if std::env::var(URL_VAR).is_ok() {
        println!("skipped: stopping the server needs a throwaway one, not the one {URL_VAR} names");
        return;
    }
    let server = TestPostgres::start().unwrap();
    let db = server.database().await;
    let store = open(&db).await;
    store.save(ThreadRecord::new("a", Default::default())).await.unwrap();
    server.stop();
    let err = store.load(&"a".into()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    std::mem::forget(db); // its server is gone: nothing to drop it from
}

#[tokio::test]
async fn many_leases_are_given_back_in_one_round_trip() {
    let Some(db) = database().await else { return };
    let store = open(&db).await;
    let node = NodeId::from("node-a");
    let ids: Vec<ConversationId> = (0..5).map(|n| ConversationId::from(format!("given-back-{n}"))).collect();
    for id in &ids {
        store.acquire_lease(id, &node, Duration::from_secs(60)).await.unwrap();
    }
    let before = store.round_trips();
    assert_eq!(store.release_leases(&node, &ids).await.unwrap(), 5);
    assert_eq!(store.round_trips() - before, 1);
    assert_eq!(store.release_leases(&node, &[]).await.unwrap(), 0);
    assert_eq!(store.round_trips() - before, 1, "none to give back costs nothing");
}

#[tokio::test]
async fn only_one_of_two_nodes_racing_for_a_lease_gets_it() {
    let Some(db) = database().await else { return };
    let (a, b) = (open(&db).await, open(&db).await);
    let (node_a, node_b) = (NodeId::from("node-a"), NodeId::from("node-b"));
    for n in 0..20 {
        let id = ConversationId::from(format!("race-{n}"));
        let (ra, rb) = tokio::join!(
            a.acquire_lease(&id, &node_a, Duration::from_secs(60)),
            b.acquire_lease(&id, &node_b, Duration::from_secs(60))
        );
        match (ra, rb) {
            (Ok(_), Err(StoreError::OwnedElsewhere { node, .. })) => assert_eq!(node.as_str(), "node-a"),
            (Err(StoreError::OwnedElsewhere { node, .. }), Ok(_)) => assert_eq!(node.as_str(), "node-b"),
            other => panic!("exactly one node gets the lease: {other:?}"),
        }
    }
}

/// The fence is checked under a lock on the lease: a write of the old owner either commits
/// before the takeover (and the new owner, reading after it took the lease, sees it) or is
/// refused. No write slips in between. (Batches are large, so that takeovers land while one is
/// being written.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_sees_every_write_the_old_owner_got_in() {
    let Some(db) = database().await else { return };
    let (a, b) = (open(&db).await, open(&db).await);
    let batch: Vec<Value> = (0..200).map(|n| json!({"n": n, "text": "x".repeat(2000)})).collect();
    for round in 0..6u64 {
        let id = ConversationId::from(format!("contended-{round}"));
        a.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
        let fence = a.acquire_lease(&id, &"node-a".into(), Duration::ZERO).await.unwrap().fence;
        let (writer, items, conversation) = (a.clone(), batch.clone(), id.clone());
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let written = done.clone();
        let writes = tokio::spawn(async move {
            for n in 0..1000 {
                let turn =
                    TurnRecord::completed(conversation.clone(), format!("t{n}"), items.clone()).with_fence(fence);
                match writer.record_turns(&[turn]).await {
                    Ok(()) => written.fetch_add(items.len(), std::sync::atomic::Ordering::SeqCst),
                    Err(StoreError::Fenced { .. }) => return written.load(std::sync::atomic::Ordering::SeqCst),
                    Err(e) => panic!("{e}"),
                };
            }
            panic!("the takeover never happened")
        });
        // The takeover lands while a later batch is being written.
        while done.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(3 * round)).await;
        let taken = b.acquire_lease(&id, &"node-b".into(), Duration::from_secs(60)).await.unwrap();
        assert!(taken.fence > fence);
        let seen = b.history(&id).await.unwrap().len();
        let written = writes.await.unwrap();
        assert_eq!(seen, written, "round {round}: the new owner saw every write the old one got in, and no later one");
        assert_eq!(b.history(&id).await.unwrap().len(), written);
    }
}

#[tokio::test]
async fn a_full_disk_fails_whole_batches_and_recovers() {
    if TestPostgres::shared().is_none() {
        return;
    }
    // A tablespace on a 2 MiB tmpfs: needs root (to mount) and a server of our own.
    // SAFETY: a plain syscall.
    if unsafe { libc::geteuid() } != 0 || std::env::var(URL_VAR).is_ok() {
        println!("skipped: provoking a full disk needs root and a throwaway server (mount -t tmpfs)");
        return;
    }
    let tiny = Tmpfs::mount(2 << 20);
    let server = TestPostgres::start().unwrap();
    tiny.hand_to(server.server_user());
    let db = server.database().await;
    let store = open(&db).await;
    db.execute(&format!("CREATE TABLESPACE tiny LOCATION '{}'", tiny.path.display())).await.unwrap();
    db.execute("ALTER TABLE thread_items SET TABLESPACE tiny").await.unwrap();
    let a = ConversationId::from("a");
    store.save(ThreadRecord::new(a.clone(), Default::default())).await.unwrap();
    let mut kept = 0;
    let err = loop {
        let batch = (0..4).map(|n| noise(kept + n)).collect::<Vec<_>>();
        match store.record_turns(&[TurnRecord::completed(a.clone(), "t", batch)]).await {
            Ok(()) => kept += 4,
            Err(e) => break e,
        }
        assert!(kept < 400, "the tmpfs never filled up");
    };
    assert!(matches!(err, StoreError::Full { .. }), "{err}");
    assert!(err.to_string().contains("free disk space") && err.to_string().contains("53100"), "{err}");
    assert_eq!(store.history(&a).await.unwrap().len(), kept, "nothing of the failed batch was kept");
    // Room again: the store goes on.
    db.execute("ALTER TABLE thread_items SET TABLESPACE pg_default").await.unwrap();
    store.record_turns(&[TurnRecord::completed(a.clone(), "t", vec![noise(9999)])]).await.unwrap();
    assert_eq!(store.items(&a, 0, 1000).await.unwrap().last().unwrap().seq, kept as u64 + 1);
    drop(store);
    drop(db);
    drop(server);
}

/// 100 KB of text that does not compress.
fn noise(seed: usize) -> Value {
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let text: String = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[(x % 62) as usize])
        })
        .collect();
    json!({"type": "message", "text": text})
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny");
        std::fs::create_dir(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed");
        Self { path, _dir: dir }
    }

    fn hand_to(&self, user: Option<(u32, u32)>) {
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&self.path, Some(uid), Some(gid)).unwrap();
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test]
async fn open_store_picks_the_backend_from_the_target() {
    assert!(crate::is_postgres_url("postgresql://h/db") && crate::is_postgres_url("POSTGRES://h/db"));
    assert!(!crate::is_postgres_url("/var/lib/codex-pool/threads.db") && !crate::is_postgres_url("postgres.db"));
    let dir = tempfile::tempdir().unwrap();
    let sqlite = crate::open_store(dir.path().join("threads.db").to_str().unwrap()).await.unwrap();
    sqlite.save(ThreadRecord::new("a", Default::default())).await.unwrap();
    assert!(dir.path().join("threads.db").exists());
    let Some(db) = database().await else { return };
    let postgres = crate::open_store(db.url()).await.unwrap();
    postgres.save(ThreadRecord::new("a", Default::default())).await.unwrap();
    assert_eq!(open(&db).await.count().await.unwrap(), 1, "it went to PostgreSQL");
}

#[tokio::test]
async fn a_database_of_the_previous_schema_gains_the_transcript_index_and_keeps_its_conversations() {
    let Some(db) = database().await else { return };
    db.execute(super::schema::MIGRATIONS[0]).await.unwrap();
    db.execute("CREATE TABLE codex_pool_schema (version bigint NOT NULL); INSERT INTO codex_pool_schema VALUES (1)")
        .await
        .unwrap();
    db.execute(
        "INSERT INTO threads (thread_id, settings, profile, created_at_ms, updated_at_ms) VALUES ('a', '{}', 'chat', 1, 1)",
    )
    .await
    .unwrap();
    let store = open(&db).await;
    assert!(store.load(&"a".into()).await.unwrap().is_some(), "the conversation stayed");
    let key = crate::TranscriptHasher::new().text("hi").finish();
    store.put_transcript(&key, &crate::TranscriptEntry::new("a", 1)).await.unwrap();
    assert!(store.delete(&"a".into()).await.unwrap());
    assert_eq!(store.take_transcript(&key).await.unwrap(), None, "the foreign key took the entry with it");
}

/// A database of the schema before pending calls (version 3) opens with its conversations, none
/// of them with pending calls, and its turns then set them.
#[tokio::test]
async fn a_database_of_the_previous_schema_gains_pending_calls_and_keeps_its_conversations() {
    let Some(db) = database().await else { return };
    for step in &super::schema::MIGRATIONS[..3] {
        db.execute(step).await.unwrap();
    }
    db.execute("CREATE TABLE codex_pool_schema (version bigint NOT NULL); INSERT INTO codex_pool_schema VALUES (3)")
        .await
        .unwrap();
    db.execute(
        "INSERT INTO threads (thread_id, settings, profile, created_at_ms, updated_at_ms, turns, last_turn)
         VALUES ('a', '{}', 'chat', 1, 1, 3, 't9')",
    )
    .await
    .unwrap();
    let store = open(&db).await;
    let a = store.load(&"a".into()).await.unwrap().expect("the conversation stayed");
    assert_eq!((a.turns, a.last_turn.as_ref().map(TurnId::as_str), a.pending_calls), (3, Some("t9"), vec![]));
    store.record_turns(&[TurnRecord::partial("a", "t10", vec![], vec![pending::call(1)])]).await.unwrap();
    assert_eq!(store.load(&"a".into()).await.unwrap().unwrap().pending_calls, [pending::call(1)]);
}
