//! Reading requests: JSON bodies and query strings whose every rejection (malformed JSON, an
//! unknown field, a body over the limit, a bad query) is answered in the service's error shape.

use crate::edge_metrics::EdgeLimit;
use crate::error::ApiError;
use crate::origin::BodyDeadline;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// Why a body could not be read.
pub(crate) enum BodyError {
    /// Over the service's limit.
    TooLarge,
    /// It did not arrive within the service's body timeout.
    TooSlow,
    /// The connection failed.
    Unreadable(String),
}

impl BodyError {
    /// The native API's answer.
    pub(crate) fn api(self) -> ApiError {
        match self {
            BodyError::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is over the service's limit",
            )
            .closing(),
            BodyError::TooSlow => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time; send it whole, at once",
            )
            .closing(),
            BodyError::Unreadable(e) => ApiError::invalid(format!("the request body could not be read: {e}")),
        }
    }
}

/// Reads a whole body, within the deadline the edge gave it (none: no deadline).
pub(crate) async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, BodyError> {
    let deadline = req.extensions().get::<BodyDeadline>().cloned();
    let reading = Bytes::from_request(req, state);
    let read = match &deadline {
        Some(d) => tokio::time::timeout(d.within, reading).await.map_err(|_| {
            d.metrics.refused(EdgeLimit::BodyTimeout);
            BodyError::TooSlow
        })?,
        None => reading.await,
    };
    read.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            BodyError::TooLarge
        } else {
            BodyError::Unreadable(e.to_string())
        }
    })
}

/// A JSON body. An empty body reads as `{}` (every field optional).
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await.map_err(BodyError::api)?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(text).map(ApiJson).map_err(|e| {
            ApiError::invalid(format!("the request body is not valid for this endpoint: {}", shape_only(&e)))
        })
    }
}

/// A query string.
pub(crate) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state).await.map(|Query(q)| ApiQuery(q)).map_err(|e| {
            ApiError::invalid(format!("the query string is not valid for this endpoint: {}", e.body_text()))
        })
    }
}

/// serde's message, without the value it quotes for a value of the wrong type or range (that
/// value may be a prompt, which never goes into an error body or a log): `invalid type: string,
/// expected a sequence`. Names of fields and variants stay: they say what to fix.
fn shape_only(e: &serde_json::Error) -> String {
    let text = e.to_string();
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = text.strip_prefix(prefix) {
            let kind = rest.split([' ', ',']).next().unwrap_or_default();
            let expected = rest.rfind(", expected").map(|at| &rest[at..]).unwrap_or_default();
            return format!("{prefix}{kind}{expected}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_of_the_wrong_type_are_not_echoed() {
        let e = serde_json::from_str::<Vec<u8>>(r#""my secret prompt, expected nothing""#).unwrap_err();
        let text = super::shape_only(&e);
        assert!(!text.contains("secret"), "{text}");
        assert!(text.starts_with("invalid type: string, expected a sequence"), "{text}");
    }
}
