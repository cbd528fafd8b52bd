//! The contract of pending tool calls, run against every store with the rest of it.

use crate::*;
use codex_pool_protocol::TurnId;
use serde_json::{json, Value};

pub(super) async fn exercise(store: &dyn ThreadStore) {
    turns_set_replace_and_clear_them(store).await;
    a_batch_leaves_its_last_word(store).await;
    a_fenced_out_write_leaves_them(store).await;
    save_writes_them(store).await;
}

/// A client tool call, as the pool would note it.
pub(crate) fn call(n: u32) -> PendingCall {
    PendingCall {
        call_id: format!("call_{n}"),
        name: "get_weather".to_owned(),
        arguments: format!(r#"{{"city": "Paris", "n": {n}}}"#),
        since_ms: 1_700_000_000_000 + i64::from(n),
    }
}

/// The `function_call` item of a call.
fn function_call(call: &PendingCall) -> Value {
    json!({"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments})
}

async fn pending(store: &dyn ThreadStore, id: &ConversationId) -> Vec<PendingCall> {
    store.load(id).await.unwrap().expect("the conversation exists").pending_calls
}

/// A partial turn sets them, a later one replaces them, a turn that says nothing of them leaves
/// them, a completed turn clears them; the list shows them too.
async fn turns_set_replace_and_clear_them(store: &dyn ThreadStore) {
    let id = ConversationId::from("tools");
    store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
    assert_eq!(pending(store, &id).await, [], "none at first");
    let user = json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]});
    let partial = TurnRecord::partial(id.clone(), "t1", vec![user.clone(), function_call(&call(1))], vec![call(1)]);
    assert_eq!((partial.completed, partial.pending_calls.clone()), (false, Some(vec![call(1)])));
    store.record_turns(&[partial]).await.unwrap();
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(record.pending_calls, [call(1)]);
    assert_eq!((record.turns, record.last_turn.as_ref().map(TurnId::as_str)), (0, Some("t1")), "not finished");
    assert_eq!(store.history(&id).await.unwrap(), [user, function_call(&call(1))], "with the items");

    // The output came, and the model called two tools at once in the same turn.
    let output = json!({"type": "function_call_output", "call_id": "call_1", "output": "sunny"});
    let items = vec![output, function_call(&call(2)), function_call(&call(3))];
    store.record_turns(&[TurnRecord::partial(id.clone(), "t1", items, vec![call(2), call(3)])]).await.unwrap();
    assert_eq!(pending(store, &id).await, [call(2), call(3)], "replaced, in order");
    let listed = store.list(None, 100).await.unwrap();
    let listed = listed.iter().find(|r| r.id == id).expect("listed");
    assert_eq!(listed.pending_calls, [call(2), call(3)], "the list shows them");

    // A write that says nothing of them (`None`) leaves them, items or not.
    let silent =
        TurnRecord { pending_calls: None, ..TurnRecord::partial(id.clone(), "t1", vec![json!({"n": 1})], vec![]) };
    store.record_turns(&[silent]).await.unwrap();
    let silent = TurnRecord { pending_calls: None, ..TurnRecord::completed(id.clone(), "t0", vec![]) };
    store.record_turns(&[silent]).await.unwrap();
    assert_eq!(pending(store, &id).await, [call(2), call(3)], "left as they were");

    // codex finished the turn: nothing is pending.
    let reply = json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]});
    store.record_turns(&[TurnRecord::completed(id.clone(), "t1", vec![reply])]).await.unwrap();
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!((record.pending_calls, record.turns), (vec![], 2));
    assert_eq!(store.history(&id).await.unwrap().len(), 7);
    store.delete(&id).await.unwrap();
}

/// Several turns of one conversation in one batch: the last that says something of the pending
/// calls wins, and a conversation that is gone is skipped.
async fn a_batch_leaves_its_last_word(store: &dyn ThreadStore) {
    let (x, y) = (ConversationId::from("batch-x"), ConversationId::from("batch-y"));
    for id in [&x, &y] {
        store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
    }
    store
        .record_turns(&[
            TurnRecord::partial(x.clone(), "t1", vec![function_call(&call(1))], vec![call(1)]),
            TurnRecord::partial(y.clone(), "t1", vec![function_call(&call(5))], vec![call(5)]),
            TurnRecord::partial(x.clone(), "t1", vec![function_call(&call(2))], vec![call(2)]),
            TurnRecord { pending_calls: None, ..TurnRecord::completed(x.clone(), "t2", vec![]) },
            TurnRecord::partial("batch-gone", "t1", vec![function_call(&call(9))], vec![call(9)]),
        ])
        .await
        .unwrap();
    assert_eq!(pending(store, &x).await, [call(2)]);
    assert_eq!(pending(store, &y).await, [call(5)]);
    assert_eq!(store.load(&"batch-gone".into()).await.unwrap(), None);
    store
        .record_turns(&[
            TurnRecord::completed(y.clone(), "t1", vec![]),
            TurnRecord::partial(y.clone(), "t2", vec![function_call(&call(6))], vec![call(6)]),
        ])
        .await
        .unwrap();
    assert_eq!(pending(store, &y).await, [call(6)], "cleared, then set again, in order");
    for id in [&x, &y] {
        store.delete(id).await.unwrap();
    }
}

/// A write refused by its fence changes nothing, pending calls included; the new owner's does.
async fn a_fenced_out_write_leaves_them(store: &dyn ThreadStore) {
    let id = ConversationId::from("tools-fenced");
    let (a, b) = (NodeId::from("pending-a"), NodeId::from("pending-b"));
    store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
    let old = store.acquire_lease(&id, &a, Duration::ZERO).await.unwrap();
    let partial = TurnRecord::partial(id.clone(), "t1", vec![function_call(&call(1))], vec![call(1)]);
    store.record_turns(&[partial.with_fence(old.fence)]).await.unwrap();
    // A's lease ran out; B took the conversation over.
    let new = store.acquire_lease(&id, &b, Duration::from_secs(600)).await.unwrap();
    assert_ne!(old.fence, new.fence);
    let stale = [
        TurnRecord::completed(id.clone(), "t1", vec![json!({"n": "stale"})]).with_fence(old.fence),
        TurnRecord::partial(id.clone(), "t1", vec![], vec![call(7)]).with_fence(old.fence),
    ];
    for write in stale {
        let err = store.record_turns(std::slice::from_ref(&write)).await.unwrap_err();
        assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
        assert_eq!(pending(store, &id).await, [call(1)], "the refused write changed nothing");
    }
    assert_eq!(store.history(&id).await.unwrap(), [function_call(&call(1))]);
    let output = json!({"type": "function_call_output", "call_id": "call_1", "output": "sunny"});
    store.record_turns(&[TurnRecord::completed(id.clone(), "t2", vec![output]).with_fence(new.fence)]).await.unwrap();
    assert_eq!(pending(store, &id).await, [], "the owner's write cleared them");
    assert!(store.release_lease(&id, &b).await.unwrap());
    store.delete(&id).await.unwrap();
}

/// `save` writes the record's pending calls, as it writes the rest of it.
async fn save_writes_them(store: &dyn ThreadStore) {
    let id = ConversationId::from("tools-saved");
    let record =
        ThreadRecord { pending_calls: vec![call(1), call(2)], ..ThreadRecord::new(id.clone(), Default::default()) };
    store.save(record.clone()).await.unwrap();
    assert_eq!(store.load(&id).await.unwrap().unwrap(), record);
    store.save(ThreadRecord { pending_calls: vec![], ..record }).await.unwrap();
    assert_eq!(pending(store, &id).await, []);
    store.delete(&id).await.unwrap();
}
