//! Errors as the service answers them: an HTTP status and always the same body,
//! `{"error": {"code", "message"}}`, whose message says what to do.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use codex_pool::PoolError;
use codex_pool_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    pub(crate) error: ErrorDetail,
}

/// What went wrong, for a program (`code`) and for a person (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable, machine-readable name: `invalid_request`, `unauthorized`, `forbidden`,
    /// `forbidden_origin` (403: a web page's origin not allowed), `not_found`, `request_timeout`
    /// (408: the body came too slowly), `conflict`, `payload_too_large`, `input_too_large`,
    /// `settings_too_large` (413), `unsupported_media_type` (415: the body is not JSON),
    /// `misdirected_request` (421: a `Host` the service does not answer to), `too_many_turns`,
    /// `too_many_connections` (503), `not_ready`, `unavailable`, `codex_error`, `store_error`,
    /// `owned_elsewhere` (503: another node serves the conversation and the request could not be
    /// forwarded to it), `owner_unreachable` (503 or 502: the node that serves it did not answer),
    /// `lease_lost`, `internal`.
    pub(crate) code: &'static str,
    /// What happened, and how to fix it.
    pub(crate) message: String,
}

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    head: ErrorHead,
    code: &'static str,
    message: String,
}

/// What an error answer carries besides its body, the same in both APIs' shapes: the status,
/// `Retry-After`, the owner to forward to, `Connection: close`. [`ErrorHead::respond`] is the
/// one place an error becomes a response.
#[derive(Debug)]
pub(crate) struct ErrorHead {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// Asks the client to retry after this many seconds (`Retry-After`).
    pub(crate) retry_after: Option<u64>,
    /// The node that serves the conversation: the service forwards the request there rather
    /// than answering it. Boxed: errors travel in `Result`s, which stay small.
    pub(crate) owner: Option<Box<OwnerAddress>>,
    /// The request's body was left unread: the connection closes after the answer
    /// (`Connection: close`), so the client does not send its next request on it.
    pub(crate) close: bool,
}

impl ErrorHead {
    /// A head with only a status.
    pub(crate) fn new(status: StatusCode) -> Self {
        Self { status, retry_after: None, owner: None, close: false }
    }

    /// The response: `body` as JSON under the head's status and headers, the owner as an
    /// extension. Logged: a failure of the service or of codex at WARN, a refusal at DEBUG (an
    /// answer that names the conversation's node is forwarded there, not answered).
    pub(crate) fn respond(self, code: &str, message: &str, body: impl Serialize) -> Response {
        let failed = matches!(self.status, StatusCode::INTERNAL_SERVER_ERROR | StatusCode::BAD_GATEWAY);
        if failed && self.owner.is_none() {
            tracing::warn!(status = %self.status, code, message, "request failed");
        } else {
            tracing::debug!(status = %self.status, code, message, "request refused");
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(owner) = self.owner {
            response.extensions_mut().insert(*owner);
        }
        if self.close {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The node that serves a conversation, on an answer that says another node serves it: the
/// service forwards the request there rather than answering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerAddress {
    /// The conversation.
    pub(crate) conversation: String,
    /// The node's id.
    pub(crate) node: String,
    /// Where it said it can be reached (`http://host:port`).
    pub(crate) address: String,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { head: ErrorHead::new(status), code, message: message.into() }
    }

    /// 400: the request cannot be understood (malformed JSON, unknown fields, bad values).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// Asks the client to retry after `seconds` (`Retry-After`).
    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.head.retry_after = Some(seconds);
        self
    }

    /// Closes the connection after the answer (`Connection: close`): the request's body was
    /// left unread.
    pub(crate) fn closing(mut self) -> Self {
        self.head.close = true;
        self
    }

    /// The HTTP status.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.head.status
    }

    /// The message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// Its parts: the head, the code, the message (for OpenAI's shape).
    pub(crate) fn into_parts(self) -> (ErrorHead, &'static str, String) {
        (self.head, self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message.clone() } };
        self.head.respond(self.code, &self.message, body)
    }
}

/// Middleware: an error answer that is not JSON (axum's own rejections, such as a path
/// parameter with an invalid percent-encoding, answer `text/plain`) is answered again in the
/// error shape of the route's API, with a message that says what to fix (axum's text is
/// dropped: it may quote the request).
pub(crate) async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::BAD_REQUEST => {
            ("invalid_request", "the request's path or query could not be read: check its percent-encoding")
        }
        StatusCode::NOT_FOUND => ("not_found", "no such route; see GET /openapi.json"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is over the service's limit"),
        s if s.is_server_error() => ("internal", "the service failed to answer; see its log"),
        _ => ("invalid_request", "the request was refused; see GET /openapi.json for what this route takes"),
    };
    let mut error = ApiError::new(status, code, message);
    error.head.retry_after =
        response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    error.into_response_for(&path)
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        let message = e.to_string();
        match e {
            PoolError::UnknownThread(_) => Self::not_found(message),
            PoolError::ThreadBusy(_) | PoolError::NoActiveTurn(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", message)
            }
            PoolError::ToolCallsPending { .. } => Self::new(StatusCode::CONFLICT, "tool_calls_pending", message),
            PoolError::UnknownToolCalls { .. } => Self::new(StatusCode::BAD_REQUEST, "unknown_tool_call", message),
            PoolError::MissingToolOutputs { .. } => Self::new(StatusCode::BAD_REQUEST, "missing_tool_outputs", message),
            PoolError::InputTooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "input_too_large", message),
            PoolError::InvalidRequest(_) => Self::invalid(message),
            // One admission limit: a turn whose process is full is told at once, as the
            // service's own cap tells it.
            PoolError::Overloaded { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_turns", message).retry_after(1)
            }
            PoolError::Unavailable | PoolError::NoProcess(_) | PoolError::ShutDown | PoolError::Spawn(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).retry_after(1)
            }
            PoolError::Store(e) => e.into(),
            PoolError::Rebuild { .. } | PoolError::Codex(_) | PoolError::History(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "codex_error", message)
            }
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::Busy { .. } | StoreError::Unavailable { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_error", message).retry_after(1)
            }
            // Another node serves the conversation: the request is forwarded there (the answer
            // below is what the client gets when it cannot be: a request forwarded already). A
            // node that never announced an address cannot be forwarded to: retry once its lease
            // runs out.
            StoreError::OwnedElsewhere { address: Some(address), node, thread_id } => {
                let mut error = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "owned_elsewhere",
                    format!("node {node} serves this conversation, and it just moved there; retry"),
                )
                .retry_after(1);
                error.head.owner =
                    Some(Box::new(OwnerAddress { conversation: thread_id, node: node.to_string(), address }));
                error
            }
            StoreError::OwnedElsewhere { address: None, .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "owned_elsewhere", message).retry_after(1)
            }
            StoreError::Fenced { .. } => Self::new(StatusCode::CONFLICT, "lease_lost", message),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "store_error", message),
        }
    }
}
