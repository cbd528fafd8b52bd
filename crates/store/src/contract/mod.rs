//! The contract every [`ThreadStore`] keeps, as one test run against each of them.

mod keys;
mod ownership;
pub(crate) mod pending;
mod transcripts;

use crate::*;
use codex_pool_protocol::TurnId;
use serde_json::json;

/// The contract every store must keep.
pub(crate) async fn exercise(store: &dyn ThreadStore) {
    let settings = ThreadSettings { developer_instructions: Some("be brief".into()), ..Default::default() };
    let (a_id, b_id, gone) = (ConversationId::from("a"), ConversationId::from("b"), ConversationId::from("gone"));
    assert_eq!(store.load(&a_id).await.unwrap(), None);
    assert!(store.history(&a_id).await.unwrap().is_empty());
    store.save(ThreadRecord { ephemeral: true, ..ThreadRecord::new("a", settings.clone()) }).await.unwrap();
    store.save(ThreadRecord::new("b", Default::default())).await.unwrap();
    let a = store.load(&a_id).await.unwrap().unwrap();
    assert_eq!(a.settings, settings);
    assert!(a.ephemeral);
    assert_eq!((a.turns, a.last_turn.as_ref().map(TurnId::as_str)), (0, None));

    let item =
        |n: u32| json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": n.to_string()}]});
    store
        .record_turns(&[
            TurnRecord::completed("a", "t1", vec![item(1), item(2)]),
            TurnRecord::completed("b", "t1", vec![item(10)]),
            TurnRecord { completed: false, ..TurnRecord::completed("a", "t2", vec![item(3)]) },
            TurnRecord::completed("gone", "t1", vec![item(99)]),
        ])
        .await
        .unwrap();
    store.record_turns(&[TurnRecord::completed("a", "t3", vec![item(4)])]).await.unwrap();
    assert_eq!(store.history(&a_id).await.unwrap(), vec![item(1), item(2), item(3), item(4)]);
    assert_eq!(store.history(&b_id).await.unwrap(), vec![item(10)]);
    assert!(store.history(&gone).await.unwrap().is_empty(), "no history without a record");
    assert_eq!(store.load(&gone).await.unwrap(), None);
    let a2 = store.load(&a_id).await.unwrap().unwrap();
    assert_eq!(a2.turns, 2, "the unfinished turn is not counted");
    assert_eq!(a2.last_turn.as_ref().map(TurnId::as_str), Some("t3"), "the last turn, written with it");
    assert_eq!(store.load(&b_id).await.unwrap().unwrap().last_turn.as_ref().map(TurnId::as_str), Some("t1"));
    // An unfinished turn that added items is the last; one that added nothing is not; a
    // finished turn is, even without items.
    store
        .record_turns(&[TurnRecord { completed: false, ..TurnRecord::completed("b", "t2", vec![item(11)]) }])
        .await
        .unwrap();
    assert_eq!(store.load(&b_id).await.unwrap().unwrap().last_turn.as_ref().map(TurnId::as_str), Some("t2"));
    store.record_turns(&[TurnRecord { completed: false, ..TurnRecord::completed("b", "t3", vec![]) }]).await.unwrap();
    assert_eq!(store.load(&b_id).await.unwrap().unwrap().last_turn.as_ref().map(TurnId::as_str), Some("t2"));
    store.record_turns(&[TurnRecord::completed("b", "t4", vec![])]).await.unwrap();
    assert_eq!(store.load(&b_id).await.unwrap().unwrap().last_turn.as_ref().map(TurnId::as_str), Some("t4"));
    assert!(a2.updated_at_ms >= a.updated_at_ms);

    // Saving new settings keeps the history and the creation time.
    let changed = ThreadSettings { model: Some("m".into()), ..settings.clone() };
    store.save(ThreadRecord { settings: changed.clone(), ..a2.clone() }).await.unwrap();
    let a3 = store.load(&a_id).await.unwrap().unwrap();
    assert_eq!((a3.settings, a3.created_at_ms, a3.turns), (changed, a.created_at_ms, 2));
    assert_eq!(store.history(&a_id).await.unwrap().len(), 4);
    assert_eq!(store.count().await.unwrap(), 2);

    let again = ThreadSettings { model: Some("n".into()), ..settings.clone() };
    store.update_settings(&a_id, again.clone(), None).await.unwrap();
    assert_eq!(store.load(&a_id).await.unwrap().unwrap().settings, again);
    store.update_settings(&gone, again, None).await.unwrap();
    assert_eq!(store.load(&gone).await.unwrap(), None, "no record is created");

    assert!(store.delete(&a_id).await.unwrap());
    assert_eq!(store.load(&a_id).await.unwrap(), None);
    assert!(store.history(&a_id).await.unwrap().is_empty());
    assert!(!store.delete(&a_id).await.unwrap());
    assert_eq!(store.count().await.unwrap(), 1);
    // A new conversation under a deleted id starts with no history.
    store.save(ThreadRecord::new("a", Default::default())).await.unwrap();
    assert!(store.history(&a_id).await.unwrap().is_empty());
    store.delete(&a_id).await.unwrap();
    store.delete(&b_id).await.unwrap();

    listing(store).await;
    paging_items(store).await;
    ownership::exercise(store).await;
    transcripts::exercise(store).await;
    pending::exercise(store).await;
    keys::exercise(store).await;
}

/// The list runs newest first, page by page, and carries profile and metadata.
async fn listing(store: &dyn ThreadStore) {
    assert!(store.list(None, 10).await.unwrap().is_empty());
    for n in 0..5 {
        let mut record = ThreadRecord::new(format!("c{n}"), Default::default());
        record.created_at_ms = 1_000 + n / 2; // two share a creation time: the id orders them
        record.profile = if n == 0 { "codex".to_owned() } else { "chat".to_owned() };
        record.metadata.insert("n".to_owned(), json!(n));
        store.save(record).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(after.clone(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(ListCursor { created_at_ms: last.created_at_ms, id: last.id.clone() });
        seen.extend(page.iter().map(|r| r.id.to_string()));
    }
    assert_eq!(seen, ["c4", "c3", "c2", "c1", "c0"]);
    let c0 = store.load(&"c0".into()).await.unwrap().unwrap();
    assert_eq!((c0.profile.as_str(), c0.metadata.get("n")), ("codex", Some(&json!(0))));
    for n in 0..5 {
        store.delete(&format!("c{n}").into()).await.unwrap();
    }
}

/// Items come page by page, in order, with their place and turn.
async fn paging_items(store: &dyn ThreadStore) {
    let id = ConversationId::from("paged");
    store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
    let turns = (0..3).map(|t| {
        TurnRecord::completed(id.clone(), format!("t{t}"), vec![json!({"n": 2 * t}), json!({"n": 2 * t + 1})])
    });
    store.record_turns(&turns.collect::<Vec<_>>()).await.unwrap();
    let first = store.items(&id, 0, 4).await.unwrap();
    assert_eq!(first.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!((first[2].turn_id.as_str(), &first[2].item), ("t1", &json!({"n": 2})));
    let rest = store.items(&id, 4, 4).await.unwrap();
    assert_eq!(rest.iter().map(|i| i.item["n"].as_i64().unwrap()).collect::<Vec<_>>(), [4, 5]);
    assert!(store.items(&id, 6, 4).await.unwrap().is_empty());
    // Past i64::MAX (where SQL's integers end) there is nothing either, not the whole history.
    for after in [i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        assert!(store.items(&id, after, 4).await.unwrap().is_empty(), "after {after}");
    }
    assert!(store.items(&"nobody".into(), 0, 4).await.unwrap().is_empty());
    store.delete(&id).await.unwrap();
}
