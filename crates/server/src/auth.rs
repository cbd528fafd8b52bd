//! The service's token and API keys: with a token set, every request but `GET /healthz` must
//! carry `Authorization: Bearer <token>` (the operator) or an API key (an application, see
//! [`crate::keys`]), compared in constant time. An application's key is kept to its own
//! conversations ([`crate::keys::guard`]).

use crate::error::ApiError;
use crate::keys::{guard, limits, Auth, Caller};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// Lets a request through when it carries the token or a live API key (or no token is set),
/// with its [`Caller`] as an extension; an API key only to what it may see.
pub(crate) async fn require_token(State(auth): State<Arc<Auth>>, mut request: Request, next: Next) -> Response {
    if auth.token.is_none() || request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let given =
        request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer).unwrap_or_default();
    let caller = match auth.identify(given).await {
        Ok(caller) => caller,
        Err(e) => return ApiError::from(e).into_response_for(request.uri().path()),
    };
    let Some(caller) = caller else {
        let error = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing, wrong or revoked token; send the service's token or an API key as `Authorization: Bearer <token>`",
        );
        let mut response = error.into_response_for(request.uri().path());
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return response;
    };
    let mut slot = None;
    if let Caller::Key(key) = &caller {
        if let Err(refused) = guard::check(&auth, key, request.uri().path()).await {
            return refused.into_response_for(request.uri().path());
        }
        if limits::starts_turn(request.method(), request.uri().path()) {
            match limits::admit_turn(auth.store().as_ref(), &auth.running, &auth.metrics, key).await {
                Ok(admitted) => slot = admitted,
                Err(refused) => return refused.into_response_for(request.uri().path()),
            }
        }
    }
    request.extensions_mut().insert(caller.clone());
    let response = crate::keys::as_caller(caller, next.run(request)).await;
    match slot {
        // The turn counts as long as its answer is being sent (a stream: to its end).
        Some(slot) => response.map(|body| {
            axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                let _held = &slot;
                frame
            }))
        }),
        None => response,
    }
}

/// The credentials of a `Bearer` authorization; the scheme's name is case-insensitive (RFC
/// 7235), and spaces may follow it.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim_start_matches(' '))
}

#[cfg(test)]
mod tests {
    #[test]
    fn compares_whole_strings() {
        use crate::keys::same;
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret!"));
        assert!(!same(b"", b"x"));
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
