//! JSON-RPC 2.0 framing as `codex app-server` speaks it: the `jsonrpc` field is omitted, and every
//! message is one JSON object on one line.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// The id of a request, chosen by whoever sends it (codex-pool uses integers; the server may use
/// either form for its own requests).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A numeric id.
    Integer(i64),
    /// A string id.
    String(String),
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Integer(n) => write!(f, "{n}"),
            RequestId::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// The `error` member of a JSON-RPC error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("JSON-RPC error {code}: {message}")]
pub struct RpcError {
    /// The error code (`-32600` invalid request, `-32601` method not found, `-32001` overloaded, ...).
    pub code: i64,
    /// A human-readable message.
    pub message: String,
    /// Optional structured details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl RpcError {
    /// The request was malformed or not valid in the current state.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method is not known to the receiver.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The params did not fit the method.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Something failed inside the receiver.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// codex answers this when its request queue is full.
    pub const SERVER_OVERLOADED: i64 = -32001;

    /// An error with the given code and message and no data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }
}

/// One message read from the server, classified by shape. Params and results stay as raw JSON
/// text so each is decoded once, straight into its typed form, by whoever handles it.
#[derive(Debug)]
pub enum Incoming {
    /// A successful reply to one of our requests.
    Response {
        /// The id of our request.
        id: RequestId,
        /// The result, raw.
        result: Box<RawValue>,
    },
    /// An error reply to one of our requests.
    Error {
        /// The id of our request.
        id: RequestId,
        /// What went wrong.
        error: RpcError,
    },
    /// A request from the server that expects our reply.
    Request {
        /// The id to answer with.
        id: RequestId,
        /// The method.
        method: String,
        /// Its params, raw.
        params: Option<Box<RawValue>>,
    },
    /// A notification from the server.
    Notification {
        /// The method.
        method: String,
        /// Its params, raw.
        params: Option<Box<RawValue>>,
    },
}

/// Why a line could not be read as a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The line is not a JSON object.
    #[error("not a JSON object: {0}")]
    Json(#[from] serde_json::Error),
    /// The line is JSON but no object, or an object of none of the shapes JSON-RPC allows.
    #[error("not a JSON object that is a request, response or notification")]
    Shape,
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(default)]
    id: Option<RequestId>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Box<RawValue>>,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<RpcError>,
}

impl Incoming {
    /// Decodes one line (without its newline). Unknown members are ignored.
    pub fn decode(line: &[u8]) -> Result<Self, DecodeError> {
        // serde reads a struct from an array too, by position: `["", ""]` would be a request.
        if line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(DecodeError::Shape);
        }
        let raw: RawMessage = serde_json::from_slice(line)?;
        match raw {
            RawMessage { id: Some(id), method: Some(method), params, .. } => {
                Ok(Incoming::Request { id, method, params })
            }
            RawMessage { id: None, method: Some(method), params, .. } => Ok(Incoming::Notification { method, params }),
            RawMessage { id: Some(id), error: Some(error), .. } => Ok(Incoming::Error { id, error }),
            RawMessage { id: Some(id), result, .. } => Ok(Incoming::Response {
                id,
                // `"result": null` and an absent result both mean "no payload".
                result: result.unwrap_or_else(null_raw),
            }),
            _ => Err(DecodeError::Shape),
        }
    }
}

fn null_raw() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is valid JSON")
}

/// A request we send: `{"id":..,"method":..,"params":..}`.
#[derive(Debug, Serialize)]
pub struct OutgoingRequest<'a, P: Serialize> {
    /// Correlates the reply.
    pub id: &'a RequestId,
    /// The method name.
    pub method: &'a str,
    /// The params object.
    pub params: &'a P,
}

/// A notification we send: `{"method":..,"params":..}` (params omitted when `None`).
#[derive(Debug, Serialize)]
pub struct OutgoingNotification<'a, P: Serialize> {
    /// The method name.
    pub method: &'a str,
    /// The params object, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<&'a P>,
}

/// Our reply to a server request: either `result` or `error`.
#[derive(Debug, Serialize)]
pub struct OutgoingResponse<'a> {
    /// The id of the server's request.
    pub id: &'a RequestId,
    /// The result, when the request succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a serde_json::Value>,
    /// The error, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a RpcError>,
}

/// Serializes a message as one line, newline included.
pub fn encode_line<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = serde_json::to_vec(msg).expect("protocol messages always serialize");
    buf.push(b'\n');
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_shape() {
        let cases: [(&str, &str); 5] = [
            (r#"{"id":1,"result":{"a":1}}"#, "response"),
            (r#"{"id":1}"#, "response"),
            (r#"{"id":"x","error":{"code":-32600,"message":"no"}}"#, "error"),
            (r#"{"id":7,"method":"item/tool/call","params":{}}"#, "request"),
            (r#"{"method":"turn/started","params":{},"emittedAtMs":1}"#, "notification"),
        ];
        for (line, want) in cases {
            let got = match Incoming::decode(line.as_bytes()).unwrap() {
                Incoming::Response { .. } => "response",
                Incoming::Error { .. } => "error",
                Incoming::Request { .. } => "request",
                Incoming::Notification { .. } => "notification",
            };
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn rejects_garbage_and_shapeless_objects() {
        assert!(matches!(Incoming::decode(b"not json"), Err(DecodeError::Json(_))));
        assert!(matches!(Incoming::decode(b"[1,2]"), Err(DecodeError::Shape)));
        // An array is no message, even one that would fill a request's members in order.
        assert!(matches!(Incoming::decode(br#"["", "m"]"#), Err(DecodeError::Shape)));
        assert!(matches!(Incoming::decode(br#"{"hello":1}"#), Err(DecodeError::Shape)));
    }

    #[test]
    fn encodes_without_jsonrpc_field() {
        let id = RequestId::Integer(3);
        let line = encode_line(&OutgoingRequest { id: &id, method: "m", params: &serde_json::json!({}) });
        assert_eq!(line, b"{\"id\":3,\"method\":\"m\",\"params\":{}}\n");
        let n = encode_line(&OutgoingNotification::<()> { method: "initialized", params: None });
        assert_eq!(n, b"{\"method\":\"initialized\"}\n");
    }
}
