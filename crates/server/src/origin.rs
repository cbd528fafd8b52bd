//! What a web page may not do to the service: every request must name the service in its `Host`
//! (an IP address, `localhost`, the node's advertised address or a name given with
//! `--allow-host`; else 421, which defeats DNS rebinding: a rebound page sends its own name),
//! a request from a browser page
//! (`Origin`) must come from the service itself or an origin given with `--allow-origin` (else
//! 403; allowed origins get CORS headers and their preflights answered), and a body must be
//! `application/json` (else 415: a form or `text/plain`, which a page may send anywhere without
//! a preflight, is refused). Also hands the body's deadline to the extractors that read bodies.

use crate::edge_metrics::{EdgeLimit, EdgeMetrics};
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a request's body may take; read by the extractors that read bodies.
#[derive(Debug, Clone)]
pub(crate) struct BodyDeadline {
    /// The time the body has, from when its reading starts.
    pub(crate) within: Duration,
    /// Where a body that took longer is counted.
    pub(crate) metrics: Arc<EdgeMetrics>,
}

/// The hosts and origins the service answers to. Any IP literal and `localhost` are accepted
/// with any port: DNS rebinding needs a name of the attacker's, and a port mapped by Docker or
/// a proxy differs from the one bound; names must be configured.
#[derive(Debug)]
pub(crate) struct Guard {
    /// `host:port` accepted as they are (lower case).
    exact: Vec<String>,
    /// Names accepted with any port (lower case).
    names: Vec<String>,
    /// Cross-origin pages allowed (lower case, no trailing `/`).
    origins: Vec<String>,
    body: BodyDeadline,
}

impl Guard {
    /// The guard of a service answering to IP addresses, `localhost` and `hosts` (a name, any
    /// port; or `name:port`, that port only), and to pages from `origins`.
    pub(crate) fn new(hosts: &[String], origins: &[String], body_timeout: Duration, metrics: Arc<EdgeMetrics>) -> Self {
        let (mut exact, mut names) = (Vec::new(), vec!["localhost".to_owned()]);
        for host in hosts.iter().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()) {
            if split_host(&host).1.is_some() {
                exact.push(host);
            } else {
                names.push(host);
            }
        }
        let origins = origins.iter().map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase()).collect();
        Self { exact, names, origins, body: BodyDeadline { within: body_timeout, metrics } }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let (name, port) = split_host(&host);
        let port = port.unwrap_or(80);
        self.exact.contains(&host)
            || self.exact.contains(&format!("{name}:{port}"))
            || self.names.iter().any(|n| n == name)
            || name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name).parse::<IpAddr>().is_ok()
    }

    /// Whether a page of `origin` may use the service reached at `host`: its own pages, and the
    /// origins allowed; `Some(true)` when CORS headers are needed.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> Option<bool> {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        let authority = origin.split_once("://").map(|(_, a)| a);
        if authority.is_some() && authority == host.map(str::to_ascii_lowercase).as_deref() {
            return Some(false);
        }
        self.origins.contains(&origin).then_some(true)
    }
}

/// `host[:port]` split (an IPv6 literal keeps its brackets).
fn split_host(host: &str) -> (&str, Option<u16>) {
    let at = if host.starts_with('[') { host.find(']').map(|i| i + 1) } else { host.find(':') };
    match at {
        Some(i) if host[i..].starts_with(':') => (&host[..i], host[i + 1..].parse().ok()),
        _ => (host, None),
    }
}

/// Whether a body of this request must be refused for its content type: one is present and not
/// `application/json` (parameters such as `charset` allowed), or none is given for a body.
fn wrong_content_type(method: &Method, headers: &HeaderMap) -> bool {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return false;
    }
    match headers.get(header::CONTENT_TYPE) {
        Some(value) => {
            let essence = value.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
            !essence.eq_ignore_ascii_case("application/json")
        }
        None => {
            let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
            headers.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|l| l.trim() != "0")
        }
    }
}

/// The middleware.
pub(crate) async fn guard(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let metrics = &guard.body.metrics;
    let headers = request.headers();
    let host = headers.get(header::HOST).map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
    if host.as_deref().is_some_and(|h| !guard.host_allowed(h)) {
        metrics.refused(EdgeLimit::Host);
        let message = "this service does not answer to the host this request names; use its address, or start \
                       it with --allow-host NAME";
        return ApiError::new(StatusCode::MISDIRECTED_REQUEST, "misdirected_request", message).into_response_for(&path);
    }
    let origin = headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null").to_owned());
    let cors = match origin.as_deref().map(|o| guard.origin_allowed(o, host.as_deref())) {
        None | Some(Some(false)) => None,
        Some(Some(true)) => origin.clone(),
        Some(None) => {
            metrics.refused(EdgeLimit::Origin);
            let message = "requests from this web page's origin are refused; a front end of your own is allowed \
                           with --allow-origin ORIGIN";
            return ApiError::new(StatusCode::FORBIDDEN, "forbidden_origin", message).into_response_for(&path);
        }
    };
    if let Some(origin) = &cors {
        if request.method() == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
            let mut response = Response::new(axum::body::Body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            let h = response.headers_mut();
            allow(h, origin);
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, DELETE"));
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, last-event-id"),
            );
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
            return response;
        }
    }
    if wrong_content_type(request.method(), headers) {
        metrics.refused(EdgeLimit::ContentType);
        let message = "the request body must be JSON: send it with `Content-Type: application/json`";
        return ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
            .into_response_for(&path);
    }
    request.extensions_mut().insert(guard.body.clone());
    let mut response = next.run(request).await;
    if let Some(origin) = &cors {
        allow(response.headers_mut(), origin);
    }
    response
}

/// The CORS headers of an answer to an allowed origin.
fn allow(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after, location"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(hosts: &[&str]) -> Guard {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        Guard::new(&hosts, &["https://app.example".into()], Duration::from_secs(1), Default::default())
    }

    #[test]
    fn hosts() {
        let g = guard(&["api.example", "node1:9000"]);
        for ok in [
            "127.0.0.1:7878",
            "127.0.0.1:8080",
            "localhost:7878",
            "LOCALHOST",
            "10.1.2.3:7878",
            "[::1]:7878",
            "[fe80::1]",
            "api.example",
            "api.example:443",
            "node1:9000",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for no in ["evil.example:7878", "evil.example", "node1:9001", "localhost.evil.example", "127.0.0.1.nip.io:7878"]
        {
            assert!(!g.host_allowed(no), "{no}");
        }
    }

    #[test]
    fn origins() {
        let g = guard(&[]);
        assert_eq!(g.origin_allowed("http://127.0.0.1:7878", Some("127.0.0.1:7878")), Some(false));
        assert_eq!(g.origin_allowed("https://APP.example/", Some("127.0.0.1:7878")), Some(true));
        assert_eq!(g.origin_allowed("http://evil.example", Some("127.0.0.1:7878")), None);
        assert_eq!(g.origin_allowed("null", Some("127.0.0.1:7878")), None);
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(!wrong_content_type(&Method::POST, &h), "no body, no type");
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        assert!(wrong_content_type(&Method::POST, &h), "a body with no type");
        for (kind, wrong) in [
            ("application/json", false),
            ("Application/JSON; charset=utf-8", false),
            ("text/plain", true),
            ("application/x-www-form-urlencoded", true),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            assert_eq!(wrong_content_type(&Method::POST, &h), wrong, "{kind}");
        }
        assert!(!wrong_content_type(&Method::GET, &h));
    }
}
