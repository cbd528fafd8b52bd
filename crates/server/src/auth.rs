//! The service's token: with one set, every request but `GET /healthz` must carry
//! `Authorization: Bearer <token>`, compared in constant time.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// Lets a request through when it carries the token (or none is set).
pub(crate) async fn require_token(State(token): State<Arc<Option<String>>>, request: Request, next: Next) -> Response {
    let Some(token) = token.as_deref() else { return next.run(request).await };
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let given =
        request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer).unwrap_or_default();
    if same(given.as_bytes(), token.as_bytes()) {
        return next.run(request).await;
    }
    let error = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong token; send the service's token as `Authorization: Bearer <token>`",
    );
    let mut response = error.into_response_for(request.uri().path());
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}

/// The credentials of a `Bearer` authorization; the scheme's name is case-insensitive (RFC
/// 7235), and spaces may follow it.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim_start_matches(' '))
}

/// Whether two byte strings are equal, in a time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let differences = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(differences) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn compares_whole_strings() {
        assert!(super::same(b"secret", b"secret"));
        assert!(!super::same(b"secret", b"secreT"));
        assert!(!super::same(b"secret", b"secret!"));
        assert!(!super::same(b"", b"x"));
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for value in ["Bearer t", "bearer t", "BEARER t", "bEaReR  t"] {
            assert_eq!(super::bearer(value), Some("t"), "{value}");
        }
        assert_eq!(super::bearer("Basic t"), None);
        assert_eq!(super::bearer("Bearert"), None);
    }
}
