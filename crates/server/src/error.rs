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
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for a program (`code`) and for a person (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable name: `invalid_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `payload_too_large`, `input_too_large`, `too_many_turns`,
    /// `not_ready`, `unavailable`, `codex_error`, `store_error`, `owned_elsewhere` (with a
    /// `307` to the node that serves the conversation), `lease_lost`, `internal`.
    pub code: &'static str,
    /// What happened, and how to fix it.
    pub message: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    owner: Option<OwnerAddress>,
}

/// The address of the node that serves a conversation, on an answer that sends the client
/// there: [`redirect_to_owner`] makes it the `Location`, with the request's own path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerAddress(pub String);

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, owner: None }
    }

    /// The node that serves the conversation, to send the client to.
    pub fn owner(&self) -> Option<&OwnerAddress> {
        self.owner.as_ref()
    }

    /// 400: the request cannot be understood (malformed JSON, unknown fields, bad values).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// Asks the client to retry after `seconds` (`Retry-After`).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `Retry-After` asked for, in seconds.
    pub fn retry_after_secs(&self) -> Option<u64> {
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
            response.extensions_mut().insert(owner);
        }
        response
    }
}

/// Middleware: an answer that names the node serving a conversation ([`OwnerAddress`]) gets
/// `Location: <that node's address><this request's path and query>`, so a `307` sends the
/// client, with its method and body, to the node that can serve it.
pub async fn redirect_to_owner(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = request.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let mut response = next.run(request).await;
    if let Some(OwnerAddress(address)) = response.extensions().get::<OwnerAddress>().cloned() {
        let location = format!("{}{path}", address.trim_end_matches('/'));
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
    }
    response
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
            PoolError::Overloaded { .. }
            | PoolError::Unavailable
            | PoolError::NoProcess(_)
            | PoolError::ShutDown
            | PoolError::Spawn(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).retry_after(1),
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
            // Another node serves the conversation: the client is sent there (a 307 keeps the
            // method and body). A node that never announced an address cannot be sent to: retry
            // once its lease runs out.
            StoreError::OwnedElsewhere { address: Some(address), node, .. } => {
                let mut error = Self::new(
                    StatusCode::TEMPORARY_REDIRECT,
                    "owned_elsewhere",
                    format!("node {node} serves this conversation; send the request to {address}"),
                );
                error.owner = Some(OwnerAddress(address));
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
