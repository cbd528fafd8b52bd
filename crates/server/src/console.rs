//! The operator's console: one page (`GET /`, `GET /console`) and its assets (`GET
//! /console/<asset>`), plain files in `crates/server/console/` embedded in the binary, so it works
//! on a machine with no network. They hold no data, so they are served without the token; the
//! page asks for the token and sends it on every API call it makes (the public API only).
//!
//! Every answer carries a Content-Security-Policy that allows the service's own scripts, styles
//! and connections and nothing else (no inline script, no frame, no form), `nosniff`, frames
//! denied and no referrer; each asset a strong `ETag` (a `304` to `If-None-Match`) and
//! `Cache-Control: no-cache`, so a browser revalidates and never runs an old script with a new
//! page.

use crate::error::ApiError;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

/// The Content-Security-Policy of every console answer.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                              connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Its name under `/console/` (the page itself: `index.html`).
    name: &'static str,
    /// Its content type.
    content_type: &'static str,
    /// Its bytes.
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console.
const ASSETS: &[Asset] = &[
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", body: include_str!("../console/index.html") },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../console/console.css"),
    },
    Asset { name: "console.js", content_type: JS, body: include_str!("../console/console.js") },
    Asset { name: "api.js", content_type: JS, body: include_str!("../console/api.js") },
    Asset { name: "sse.js", content_type: JS, body: include_str!("../console/sse.js") },
    Asset { name: "dom.js", content_type: JS, body: include_str!("../console/dom.js") },
    Asset { name: "pool.js", content_type: JS, body: include_str!("../console/pool.js") },
    Asset { name: "conversations.js", content_type: JS, body: include_str!("../console/conversations.js") },
    Asset { name: "metrics.js", content_type: JS, body: include_str!("../console/metrics.js") },
    Asset { name: "chart.js", content_type: JS, body: include_str!("../console/chart.js") },
    Asset { name: "playground.js", content_type: JS, body: include_str!("../console/playground.js") },
];

/// The console's routes, outside the token's layer (they serve no data).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page).fallback(wrong_method))
        .route("/console", get(page).fallback(wrong_method))
        .route("/console/{asset}", get(asset).fallback(wrong_method))
        .layer(axum::middleware::map_response(secured))
}

async fn page(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

async fn asset(Path(name): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset, &headers),
        None => {
            ApiError::not_found("the console has no such file; open / for the console").into_response_for(uri.path())
        }
    }
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    let message = format!("the console's pages take GET, not {method}; the API is under /v1 (see GET /openapi.json)");
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message).into_response_for(uri.path())
}

/// The file, or `304` when the browser holds this very version.
fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let tag = etag(asset);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.body.into_response() };
    let h = response.headers_mut();
    if !fresh {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    }
    if let Ok(value) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, value);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The strong `ETag` of an asset: a hash of its bytes (FNV-1a, 64 bits), computed once.
fn etag(asset: &Asset) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| ASSETS.iter().map(|a| format!("\"{:016x}\"", fnv1a(a.body.as_bytes()))).collect());
    let at = ASSETS.iter().position(|a| a.name == asset.name).unwrap_or(0);
    tags[at].as_str()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The security headers every console answer carries, errors included.
async fn secured(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the page and its modules name is embedded, and every embedded file is named.
    #[test]
    fn every_asset_named_is_embedded_and_every_embedded_one_named() {
        let texts: Vec<&str> = ASSETS.iter().map(|a| a.body).collect();
        for asset in &ASSETS[1..] {
            let named = texts.iter().any(|t| t.contains(&format!("/console/{}", asset.name)))
                || texts.iter().any(|t| t.contains(&format!("\"./{}\"", asset.name)));
            assert!(named, "{} is embedded but nothing loads it", asset.name);
        }
        for text in &texts {
            for (at, _) in text.match_indices("\"./") {
                let name = text[at + 3..].split('"').next().unwrap();
                assert!(ASSETS.iter().any(|a| a.name == name), "{name} is imported but not embedded");
            }
        }
    }

    /// The page and its modules never turn data into markup, and load nothing from elsewhere.
    #[test]
    fn no_markup_from_data_and_nothing_from_elsewhere() {
        for asset in ASSETS {
            for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "localStorage"] {
                assert!(!asset.body.contains(banned), "{} uses {banned}", asset.name);
            }
            for remote in ["http://", "https://", "//cdn", "@import"] {
                assert!(!asset.body.contains(remote), "{} names {remote}", asset.name);
            }
        }
        let page = ASSETS[0].body;
        assert!(!page.contains("<script>") && !page.contains("style="), "no inline script or style");
    }

    #[test]
    fn etags_differ_by_content_and_are_strong() {
        let tags: Vec<&str> = ASSETS.iter().map(etag).collect();
        for (i, tag) in tags.iter().enumerate() {
            assert!(tag.starts_with('"') && !tag.starts_with("W/"), "{tag}");
            assert!(!tags[i + 1..].contains(tag), "two assets share {tag}");
        }
    }
}
