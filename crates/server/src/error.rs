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
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    /// Boxed: errors travel in `Result`s, which stay small.
    owner: Option<Box<OwnerAddress>>,
    /// The request's body was left unread: the connection closes after the answer
    /// (`Connection: close`), so the client does not send its next request on it.
    close: bool,
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
        Self { status, code, message: message.into(), retry_after: None, owner: None, close: false }
    }

    /// The node that serves the conversation, to forward the request to.
    pub(crate) fn owner(&self) -> Option<&OwnerAddress> {
        self.owner.as_deref()
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
        self.retry_after = Some(seconds);
        self
    }

    /// Closes the connection after the answer (`Connection: close`): the request's body was
    /// left unread.
    pub(crate) fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Whether the connection closes after the answer.
    pub(crate) fn closes(&self) -> bool {
        self.close
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// The message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The `Retry-After` asked for, in seconds.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.status {
            StatusCode::INTERNAL_SERVER_ERROR | StatusCode::BAD_GATEWAY => {
                tracing::warn!(status = %self.status, code = self.code, message = %self.message, "request failed")
            }
            _ => tracing::debug!(status = %self.status, code = self.code, message = %self.message, "request refused"),
        }
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message } };
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
    error.retry_after =
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
                error.owner = Some(Box::new(OwnerAddress { conversation: thread_id, node: node.to_string(), address }));
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
