//! The contract of the chat transcript index, run against every store with the rest of it.

use crate::*;

fn key(text: &str) -> TranscriptKey {
    TranscriptHasher::new().text(text).finish()
}

pub(super) async fn exercise(store: &dyn ThreadStore) {
    a_take_is_atomic(store).await;
    a_put_replaces(store).await;
    entries_go_with_their_conversation(store).await;
}

/// Two takes of one key: at most one gets the entry, even at once.
async fn a_take_is_atomic(store: &dyn ThreadStore) {
    let id = ConversationId::from("chat-1");
    store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
    assert_eq!(store.take_transcript(&key("nothing")).await.unwrap(), None);
    store.put_transcript(&key("hi"), &TranscriptEntry::new("chat-1", 1)).await.unwrap();
    assert_eq!(store.take_transcript(&key("hi")).await.unwrap(), Some(TranscriptEntry::new("chat-1", 1)));
    assert_eq!(store.take_transcript(&key("hi")).await.unwrap(), None, "taken: gone from the index");
    for round in 0..20 {
        let k = key(&format!("round {round}"));
        store.put_transcript(&k, &TranscriptEntry::new("chat-1", round)).await.unwrap();
        let (a, b) = tokio::join!(store.take_transcript(&k), store.take_transcript(&k));
        let got = [a.unwrap(), b.unwrap()].into_iter().flatten().collect::<Vec<_>>();
        assert_eq!(got, [TranscriptEntry::new("chat-1", round)], "round {round}: exactly one take gets it");
    }
    store.delete(&id).await.unwrap();
}

/// A put replaces what the key held, and a conversation's older entry (it has one transcript).
async fn a_put_replaces(store: &dyn ThreadStore) {
    for id in ["chat-a", "chat-b"] {
        store.save(ThreadRecord::new(id, Default::default())).await.unwrap();
    }
    store.put_transcript(&key("k"), &TranscriptEntry::new("chat-a", 1)).await.unwrap();
    store.put_transcript(&key("k"), &TranscriptEntry::new("chat-b", 2)).await.unwrap();
    assert_eq!(store.take_transcript(&key("k")).await.unwrap(), Some(TranscriptEntry::new("chat-b", 2)));
    store.put_transcript(&key("old"), &TranscriptEntry::new("chat-a", 1)).await.unwrap();
    store.put_transcript(&key("new"), &TranscriptEntry::new("chat-a", 2)).await.unwrap();
    assert_eq!(store.take_transcript(&key("old")).await.unwrap(), None, "the conversation's older entry went");
    assert_eq!(store.take_transcript(&key("new")).await.unwrap(), Some(TranscriptEntry::new("chat-a", 2)));
    // Another conversation's entry stays.
    store.put_transcript(&key("a"), &TranscriptEntry::new("chat-a", 3)).await.unwrap();
    store.put_transcript(&key("b"), &TranscriptEntry::new("chat-b", 3)).await.unwrap();
    assert_eq!(store.take_transcript(&key("a")).await.unwrap(), Some(TranscriptEntry::new("chat-a", 3)));
    assert_eq!(store.take_transcript(&key("b")).await.unwrap(), Some(TranscriptEntry::new("chat-b", 3)));
    for id in ["chat-a", "chat-b"] {
        store.delete(&id.into()).await.unwrap();
    }
}

/// A deleted conversation's entries go with it, and none is made for an unknown conversation:
/// a new conversation under the same id is not continued by the old one's transcript.
async fn entries_go_with_their_conversation(store: &dyn ThreadStore) {
    let id = ConversationId::from("chat-gone");
    store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
    store.put_transcript(&key("gone"), &TranscriptEntry::new("chat-gone", 1)).await.unwrap();
    assert!(store.delete(&id).await.unwrap());
    store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
    assert_eq!(store.take_transcript(&key("gone")).await.unwrap(), None, "deleted with its conversation");
    store.delete(&id).await.unwrap();
    store.put_transcript(&key("never"), &TranscriptEntry::new("chat-gone", 1)).await.unwrap();
    store.save(ThreadRecord::new(id.clone(), Default::default())).await.unwrap();
    assert_eq!(store.take_transcript(&key("never")).await.unwrap(), None, "no entry for an unknown conversation");
    store.delete(&id).await.unwrap();
}
