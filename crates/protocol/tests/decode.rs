//! Property tests of decoding what codex sends: any line, any JSON, any params. Decoding never
//! panics; what we encode decodes back to itself; a notification that does not fit its type is
//! passed through whole.

use codex_pool_protocol::jsonrpc::{encode_line, OutgoingNotification, OutgoingRequest};
use codex_pool_protocol::notifications::method;
use codex_pool_protocol::{Incoming, RequestId, ServerNotification};
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// Any JSON value, a few levels deep. (Fractions are left out: serde_json's default parser may
/// read the last digit of one differently from how it wrote it, which is not ours to test.)
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,10}", inner, 0..5).prop_map(|m| json!(m)),
        ]
    })
}

fn any_id() -> impl Strategy<Value = RequestId> {
    prop_oneof![any::<i64>().prop_map(RequestId::Integer), ".{0,10}".prop_map(RequestId::String)]
}

/// Every method the decoder types, and others.
fn any_method() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            method::THREAD_STARTED,
            method::THREAD_CLOSED,
            method::TURN_STARTED,
            method::TURN_COMPLETED,
            method::ITEM_STARTED,
            method::ITEM_COMPLETED,
            method::AGENT_MESSAGE_DELTA,
            method::REASONING_TEXT_DELTA,
            method::REASONING_SUMMARY_TEXT_DELTA,
            method::TOKEN_USAGE_UPDATED,
            method::ERROR,
            method::RAW_RESPONSE_ITEM_COMPLETED,
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z/]{0,20}",
    ]
}

fn raw(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).unwrap()
}

/// Params as JSON (`"params": null` reads as none).
fn value_of(params: Option<Box<RawValue>>) -> Value {
    params.map_or(Value::Null, |p| serde_json::from_str(p.get()).unwrap())
}

/// The shape a JSON value has as a message: (an id of a valid kind, a method name).
fn shape(value: &Value) -> (bool, bool) {
    let Some(object) = value.as_object() else { return (false, false) };
    let id = object.get("id").is_some_and(|id| id.is_i64() || id.is_string());
    (id, object.get("method").is_some_and(Value::is_string))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_decode_or_fail_without_panicking(line in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Incoming::decode(&line);
    }

    #[test]
    fn any_json_decodes_as_the_shape_it_has(value in any_json()) {
        let (id, named) = shape(&value);
        match Incoming::decode(value.to_string().as_bytes()) {
            Ok(Incoming::Request { .. }) => prop_assert!(id && named),
            Ok(Incoming::Notification { .. }) => prop_assert!(named),
            Ok(Incoming::Response { .. } | Incoming::Error { .. }) => prop_assert!(id && !named),
            // Not an object, or one with neither an id nor a method (or members of the wrong type).
            Err(_) => prop_assert!(!(id && named)),
        }
    }

    #[test]
    fn requests_and_notifications_come_back_as_sent(id in any_id(), name in any_method(), params in any_json()) {
        let line = encode_line(&OutgoingRequest { id: &id, method: &name, params: &params });
        match Incoming::decode(&line[..line.len() - 1]).unwrap() {
            Incoming::Request { id: got, method, params: p } => {
                prop_assert_eq!((got, method), (id, name.clone()));
                prop_assert_eq!(value_of(p), params.clone());
            }
            other => prop_assert!(false, "{other:?}"),
        }
        let line = encode_line(&OutgoingNotification { method: &name, params: Some(&params) });
        match Incoming::decode(&line[..line.len() - 1]).unwrap() {
            Incoming::Notification { method, params: p } => {
                prop_assert_eq!(method, name);
                prop_assert_eq!(value_of(p), params);
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }

    #[test]
    fn replies_come_back_with_their_id(id in any_id(), result in any_json(), code in any::<i64>(), message in ".{0,20}") {
        let line = json!({"id": id, "result": result}).to_string();
        match Incoming::decode(line.as_bytes()).unwrap() {
            Incoming::Response { id: got, result: r } => {
                prop_assert_eq!(got, id.clone());
                prop_assert_eq!(serde_json::from_str::<Value>(r.get()).unwrap(), result);
            }
            other => prop_assert!(false, "{other:?}"),
        }
        let line = json!({"id": id, "error": {"code": code, "message": message}}).to_string();
        match Incoming::decode(line.as_bytes()).unwrap() {
            Incoming::Error { id: got, error } => prop_assert_eq!((got, error.code, error.message), (id, code, message)),
            other => prop_assert!(false, "{other:?}"),
        }
    }

    #[test]
    fn any_notification_decodes_and_an_unfitting_one_passes_through(name in any_method(), params in any_json()) {
        let decoded = ServerNotification::decode(&name, Some(&raw(&params)));
        let _ = (decoded.thread_id(), decoded.turn_id());
        if let ServerNotification::Other { method, params: passed } = decoded {
            prop_assert_eq!(&method, &name);
            prop_assert_eq!(passed, params);
        }
        let none = ServerNotification::decode(&name, None);
        let _ = (none.thread_id(), none.turn_id());
    }

    #[test]
    fn a_delta_comes_back_as_sent(thread in ".{1,12}", turn in ".{0,12}", item in ".{0,12}", delta in ".{0,40}", extra in any_json()) {
        let params = json!({"threadId": thread, "turnId": turn, "itemId": item, "delta": delta, "extra": extra});
        match ServerNotification::decode(method::AGENT_MESSAGE_DELTA, Some(&raw(&params))) {
            ServerNotification::AgentMessageDelta(d) => {
                prop_assert_eq!((d.thread_id.as_str(), d.turn_id.as_str(), d.item_id, d.delta), (thread.as_str(), turn.as_str(), item, delta));
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }
}
