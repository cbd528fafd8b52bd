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
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        read_json(req, state).await.map(ApiJson)
    }
}

/// How a route's API refuses a body it cannot take: the native shape ([`ApiError`]) or
/// OpenAI's (`openai::error::OpenAiError`).
pub(crate) trait BodyRejection: Sized {
    /// Whether an empty body reads as `{}` (the native API: every field optional).
    const EMPTY_IS_OBJECT: bool;
    /// The body could not be read.
    fn unread(e: BodyError) -> Self;
    /// The body is not the JSON the route takes; `why` is serde's message without the values it
    /// quotes.
    fn not_json(why: String) -> Self;
}

impl BodyRejection for ApiError {
    const EMPTY_IS_OBJECT: bool = true;

    fn unread(e: BodyError) -> Self {
        e.api()
    }

    fn not_json(why: String) -> Self {
        ApiError::invalid(format!("the request body is not valid for this endpoint: {why}"))
    }
}

/// Reads a JSON body as `T`, every refusal in the shape of the route's API (`R`): the one
/// reading function of both APIs' body extractors.
pub(crate) async fn read_json<T, R, S>(req: Request, state: &S) -> Result<T, R>
where
    T: DeserializeOwned,
    R: BodyRejection,
    S: Send + Sync,
{
    let bytes = read_body(req, state).await.map_err(R::unread)?;
    let text: &[u8] = if R::EMPTY_IS_OBJECT && bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
    serde_json::from_slice(text).map_err(|e| R::not_json(shape_only(&e)))
}

/// A query string.
pub(crate) struct ApiQuery<T>(pub(crate) T);

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
    use super::ApiJson;
    use crate::openai::error::OpenAiBody;
    use axum::body::{to_bytes, Body};
    use axum::extract::{FromRequest, Request};
    use axum::response::IntoResponse;

    /// What a body's refusal answers: status and body text.
    async fn refusal<T: FromRequest<()>>(body: &'static str) -> (u16, String)
    where
        T::Rejection: IntoResponse,
    {
        let Err(e) = T::from_request(Request::new(Body::from(body)), &()).await else { panic!("{body:?} was taken") };
        let response = e.into_response();
        let status = response.status().as_u16();
        (status, String::from_utf8(to_bytes(response.into_body(), 1 << 16).await.unwrap().to_vec()).unwrap())
    }

    #[tokio::test]
    async fn each_api_refuses_a_body_in_its_own_shape() {
        let (status, native) = refusal::<ApiJson<Vec<u8>>>("[true]").await;
        assert_eq!(status, 400);
        assert_eq!(
            native,
            r#"{"error":{"code":"invalid_request","message":"the request body is not valid for this endpoint: invalid type: boolean, expected u8 at line 1 column 5"}}"#
        );
        // The native API reads an empty body as `{}`; OpenAI's refuses it as JSON.
        assert!(refusal::<ApiJson<Vec<u8>>>(" ").await.1.contains("invalid type: map, expected a sequence"));
        let (status, openai) = refusal::<OpenAiBody>("").await;
        assert_eq!(status, 400);
        assert_eq!(
            openai,
            r#"{"error":{"message":"the body is not valid JSON: EOF while parsing a value at line 1 column 0","type":"invalid_request_error","param":null,"code":"invalid_json"}}"#
        );
        assert_eq!(
            refusal::<OpenAiBody>("[]").await.1,
            r#"{"error":{"message":"the body must be a JSON object","type":"invalid_request_error","param":null,"code":"invalid_request"}}"#
        );
    }

    #[test]
    fn values_of_the_wrong_type_are_not_echoed() {
        let e = serde_json::from_str::<Vec<u8>>(r#""my secret prompt, expected nothing""#).unwrap_err();
        let text = super::shape_only(&e);
        assert!(!text.contains("secret"), "{text}");
        assert!(text.starts_with("invalid type: string, expected a sequence"), "{text}");
    }
}
