//! The contract of API keys, their usage, and conversations by owner.

use crate::*;

/// Keys are created once per name, found by their hash, revoked once; usage adds up; a
/// conversation's owner is set once and kept by later saves; lists and counts by owner see
/// only the owner's conversations.
pub(crate) async fn exercise(store: &dyn ThreadStore) {
    let keys = store.keys();
    assert!(keys.list_keys().await.unwrap().is_empty());
    let limits = KeyLimits { max_running_turns: Some(2), max_conversations: Some(10), turns_per_minute: None };
    let (a, secret_a) = ApiKey::generate("app-a", limits).unwrap();
    let (b, _) = ApiKey::generate("app-b", KeyLimits::default()).unwrap();
    keys.create_key(&a).await.unwrap();
    keys.create_key(&b).await.unwrap();
    let (again, _) = ApiKey::generate("app-a", KeyLimits::default()).unwrap();
    assert!(matches!(keys.create_key(&again).await, Err(StoreError::KeyNameTaken { .. })));
    assert_eq!(keys.list_keys().await.unwrap().iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["app-a", "app-b"]);
    let found = keys.key_by_hash(&hash_secret(&secret_a)).await.unwrap().unwrap();
    assert_eq!(found, a);
    assert!(found.matches(&secret_a));
    assert_eq!(keys.key_by_hash(&hash_secret("cpk_nope")).await.unwrap(), None);

    keys.touch_key(&a.id, 5_000).await.unwrap();
    keys.touch_key(&a.id, 4_000).await.unwrap();
    assert_eq!(keys.key_by_hash(&a.sha256).await.unwrap().unwrap().last_used_at_ms, Some(5_000));

    let revoked = keys.revoke_key("app-b").await.unwrap().unwrap();
    let when = revoked.revoked_at_ms.unwrap();
    assert_eq!(keys.revoke_key(&b.id).await.unwrap().unwrap().revoked_at_ms, Some(when), "the first time is kept");
    assert!(keys.key_by_hash(&b.sha256).await.unwrap().unwrap().is_revoked());
    assert_eq!(keys.revoke_key("nobody").await.unwrap(), None);

    let usage = [(usage::TURNS.to_owned(), 2), (usage::INPUT_TOKENS.to_owned(), 30)];
    keys.add_key_usage(&a.id, &usage).await.unwrap();
    keys.add_key_usage(&a.id, &usage[..1]).await.unwrap();
    let read = keys.key_usage(&a.id).await.unwrap();
    assert_eq!((read[usage::TURNS], read[usage::INPUT_TOKENS]), (4, 30));
    assert!(keys.key_usage(&b.id).await.unwrap().is_empty());

    assert_eq!(keys.count_key_turn(&a.id, 100).await.unwrap(), 1);
    assert_eq!(keys.count_key_turn(&a.id, 100).await.unwrap(), 2);
    assert_eq!(keys.count_key_turn(&b.id, 100).await.unwrap(), 1);
    assert_eq!(keys.count_key_turn(&a.id, 101).await.unwrap(), 1, "a new minute starts at one");

    for (n, owner) in [(1, Some(&a)), (2, Some(&a)), (3, Some(&b)), (4, None)] {
        let id = ConversationId::from(format!("owned-{n}"));
        let mut record = ThreadRecord::new(id.clone(), Default::default());
        record.created_at_ms = 2_000 + n;
        store.save(record.clone()).await.unwrap();
        if let Some(key) = owner {
            assert!(keys.set_owner(&id, &key.id).await.unwrap());
        }
        // A later save keeps the owner.
        store.save(record).await.unwrap();
    }
    assert!(!keys.set_owner(&"owned-1".into(), &b.id).await.unwrap(), "the owner is set once");
    assert!(keys.set_owner(&"owned-1".into(), &a.id).await.unwrap(), "and stays");
    assert!(!keys.set_owner(&"nobody".into(), &a.id).await.unwrap());
    assert_eq!(store.load(&"owned-1".into()).await.unwrap().unwrap().owner.as_deref(), Some(a.id.as_str()));
    assert_eq!(store.load(&"owned-4".into()).await.unwrap().unwrap().owner, None);
    let first = keys.list_owned(&a.id, None, 1).await.unwrap();
    assert_eq!(first.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["owned-2"]);
    let cursor = ListCursor { created_at_ms: first[0].created_at_ms, id: first[0].id.clone() };
    let rest = keys.list_owned(&a.id, Some(cursor), 10).await.unwrap();
    assert_eq!(rest.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["owned-1"]);
    assert_eq!(keys.list_owned(&b.id, None, 10).await.unwrap().len(), 1);
    assert_eq!((keys.count_owned(&a.id).await.unwrap(), keys.count_owned(&b.id).await.unwrap()), (2, 1));
    for n in 1..=4 {
        store.delete(&format!("owned-{n}").into()).await.unwrap();
    }
    assert_eq!(keys.count_owned(&a.id).await.unwrap(), 0);
}
