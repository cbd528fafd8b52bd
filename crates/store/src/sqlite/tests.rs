//! The SQLite store: the contract, and what only SQLite does (files, schema versions, a full
//! disk).

use super::*;
use crate::contract::{exercise, pending};
use rusqlite::Connection;

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
        store.record_turns(&[TurnRecord::completed("a", "t", vec![item.clone()])]).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let a = ConversationId::from("a");
    assert_eq!(store.load(&a).await.unwrap().unwrap().turns, 1);
    assert_eq!(store.history(&a).await.unwrap(), vec![item]);
}

#[tokio::test]
async fn pending_calls_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threads.db");
    let calls = vec![pending::call(1), pending::call(2)];
    {
        let store = SqliteStore::open(&path).unwrap();
        store.save(ThreadRecord::new("a", Default::default())).await.unwrap();
        store.record_turns(&[TurnRecord::partial("a", "t", vec![], calls.clone())]).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.load(&"a".into()).await.unwrap().unwrap().pending_calls, calls);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threads.db");
    Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::NewerSchema { found: 99, known: 6 }), "{err}");
    assert!(err.to_string().contains("upgrade codex-pool"), "{err}");
}

#[tokio::test]
async fn a_corrupt_row_is_a_clear_error() {
    let store = SqliteStore::open_in_memory().unwrap();
    store.raw("INSERT INTO threads VALUES ('x', 'not json', 'chat', 0, '{}', 0, 0, 0, NULL, NULL, NULL)");
    let x = ConversationId::from("x");
    let err = store.load(&x).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    store.raw("INSERT INTO thread_items VALUES ('x', 1, 't', '{broken')");
    let err = store.history(&x).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    // Pending calls that are not JSON, or not calls: an error of the record, not a panic.
    for pending in [
        "'[{broken'",
        "'[{\"since_ms\": \"secret-words\", \"call_id\": \"c\", \"name\": \"t\", \"arguments\": \"{}\"}]'",
    ] {
        store.raw(&format!("DELETE FROM threads; INSERT INTO threads VALUES ('y', '{{}}', 'chat', 0, '{{}}', 0, 0, 0, NULL, {pending}, NULL)"));
        let err = store.load(&"y".into()).await.unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt { thread_id, .. } if thread_id == "y"), "{err}");
        assert!(err.to_string().contains("pending calls") && !err.to_string().contains("secret-words"), "{err}");
        let err = store.list(None, 10).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
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
    store.record_turns(&[TurnRecord::completed(a.clone(), "t0", vec![item(0)])]).await.unwrap();
    // No room for more pages: as a full disk would do.
    store.set_size_limit(Some(1)).await.unwrap();
    let big: Vec<Value> = (1..200).map(item).collect();
    let err = store.record_turns(&[TurnRecord::completed(a.clone(), "t1", big.clone())]).await.unwrap_err();
    assert!(matches!(err, StoreError::Full { .. }), "{err}");
    assert!(err.to_string().contains("free disk space"), "{err}");
    // Nothing of the failed batch was kept.
    assert_eq!(store.history(&a).await.unwrap(), vec![item(0)]);
    assert_eq!(store.load(&a).await.unwrap().unwrap().turns, 1);
    // Room again: the store goes on.
    store.set_size_limit(None).await.unwrap();
    store.record_turns(&[TurnRecord::completed(a.clone(), "t2", big)]).await.unwrap();
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
        store.record_turns(&[turn]).await.unwrap();
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

#[tokio::test]
async fn a_delete_leaves_no_copy_of_the_text_in_the_database_or_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threads.db");
    let marker = "deleted-text-canary-3f9e";
    let item = |text: &str| serde_json::json!({"type": "message", "role": "user", "content": [{"text": text}]});
    let store = SqliteStore::open(&path).unwrap();
    for id in ["gone", "kept"] {
        store.save(ThreadRecord::new(id, Default::default())).await.unwrap();
    }
    // Some text big enough for overflow pages, some small, in several writes.
    let big = format!("{marker} {}", "x".repeat(20_000));
    for text in [marker, big.as_str(), marker] {
        store.record_turns(&[TurnRecord::completed("gone", "t", vec![item(text)])]).await.unwrap();
        store.record_turns(&[TurnRecord::completed("kept", "t", vec![item("other")])]).await.unwrap();
    }
    let holding = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| std::fs::read(p).unwrap().windows(marker.len()).any(|w| w == marker.as_bytes()))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert!(!holding().is_empty(), "the text was written");
    assert!(store.delete(&ConversationId::from("gone")).await.unwrap());
    assert_eq!(holding(), Vec::<String>::new(), "no file holds the deleted text");
    assert_eq!(store.history(&ConversationId::from("kept")).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_database_of_the_previous_schema_gains_the_transcript_index_and_keeps_its_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threads.db");
    {
        let conn = Connection::open(&path).unwrap();
        for step in &schema::MIGRATIONS[..2] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    store.save(ThreadRecord::new("a", Default::default())).await.unwrap();
    let key = crate::TranscriptHasher::new().text("hi").finish();
    store.put_transcript(&key, &crate::TranscriptEntry::new("a", 1)).await.unwrap();
    assert_eq!(store.take_transcript(&key).await.unwrap(), Some(crate::TranscriptEntry::new("a", 1)));
}

/// Two nodes on one file (each its own connection): what one indexes, the other finds, under
/// the key it computes itself; of two takes at once, one gets the entry.
#[tokio::test]
async fn two_nodes_on_one_file_share_the_transcript_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threads.db");
    let (a, b) = (SqliteStore::open(&path).unwrap(), SqliteStore::open(&path).unwrap());
    a.save(ThreadRecord::new("c", Default::default())).await.unwrap();
    // Each node hashes the transcript itself.
    let key = || crate::TranscriptHasher::new().text("model").optional(None).text("hi").finish();
    let (key_a, key_b) = (key(), key());
    a.put_transcript(&key_a, &crate::TranscriptEntry::new("c", 1)).await.unwrap();
    assert_eq!(b.take_transcript(&key_b).await.unwrap(), Some(crate::TranscriptEntry::new("c", 1)));
    for round in 0..10 {
        b.put_transcript(&key_b, &crate::TranscriptEntry::new("c", round)).await.unwrap();
        let (x, y) = tokio::join!(a.take_transcript(&key_a), b.take_transcript(&key_b));
        assert_eq!([x.unwrap(), y.unwrap()].into_iter().flatten().count(), 1, "round {round}");
    }
}

/// A database of the schema before pending calls (version 4) opens with its conversations, none
/// of them with pending calls, and its turns then set them.
#[tokio::test]
async fn a_database_of_the_previous_schema_gains_pending_calls_and_keeps_its_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threads.db");
    {
        let conn = Connection::open(&path).unwrap();
        for step in &schema::MIGRATIONS[..4] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        conn.execute_batch("INSERT INTO threads VALUES ('a', '{}', 'chat', 0, '{}', 1, 1, 3, 't9')").unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let a = store.load(&"a".into()).await.unwrap().expect("the conversation stayed");
    assert_eq!((a.turns, a.last_turn.as_ref().map(TurnId::as_str), a.pending_calls), (3, Some("t9"), vec![]));
    store.record_turns(&[TurnRecord::partial("a", "t10", vec![], vec![pending::call(1)])]).await.unwrap();
    assert_eq!(store.load(&"a".into()).await.unwrap().unwrap().pending_calls, [pending::call(1)]);
}
