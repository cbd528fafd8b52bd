//! Several nodes on one store: a request about a conversation another node serves is forwarded
//! to that node, and the node's answer streamed back as it comes (a turn's events one by one),
//! so a client never needs a second address or to follow a redirect, whichever node a load
//! balancer sends it to.
//!
//! The request is sent on as the client sent it: method, path and query, body, and its
//! end-to-end headers, `Authorization` included, so the owner checks the very credential this
//! node checked and nothing opens to a forwarded request that is closed to the client. It carries
//! `X-Codex-Pool-Forwarded-By: <this node>`; a node that gets a forwarded request about a
//! conversation it does not serve either (the lease moved meanwhile) answers 503
//! `owned_elsewhere` with `Retry-After: 1` and never forwards it again, so no request goes round.
//!
//! An owner that cannot be reached (connection refused, or no connection within
//! `--forward-connect-timeout-ms`: a node killed before its lease ran out) is waited for until
//! its lease runs out (at most the lease time and a second); then the request runs on this
//! node, which takes the conversation over with its history from the store. If the lease is
//! still held then (the owner is alive but out of reach), the client gets 503
//! `owner_unreachable` with `Retry-After` the seconds left on the lease.

use crate::error::{ApiError, OwnerAddress};
use crate::extract::read_body;
use crate::metrics::{ForwardOutcome, Metrics};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use codex_pool::Pool;
use codex_pool_store::ConversationId;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::time::Duration;

/// The header a forwarded request carries: the id of the node that forwarded it.
pub(crate) const FORWARDED_BY: &str = "x-codex-pool-forwarded-by";

/// What forwards requests: a pooled HTTP client to the other nodes, and what it needs to know.
pub(crate) struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    /// This node's id, as the header's value; `None` for a pool alone on its store, which has
    /// nothing to forward.
    node: Option<HeaderValue>,
    /// How long a lease lasts: the longest an unreachable owner is waited for (and a second).
    lease_ttl: Duration,
    pool: Pool,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    /// The forwarder of a service on `pool`, connecting to other nodes within `connect_timeout`
    /// and keeping an idle connection to one for half of `header_timeout` (the time a node keeps
    /// an idle connection open: reusing one the other end is closing fails the request).
    pub(crate) fn new(pool: Pool, metrics: Arc<Metrics>, connect_timeout: Duration, header_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(header_timeout / 2)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let node_config = pool.config().node.as_ref();
        let node = node_config.and_then(|n| HeaderValue::from_str(n.id.as_str()).ok());
        let lease_ttl = node_config.map_or(Duration::ZERO, |n| n.lease_ttl);
        Self { client, node, lease_ttl, pool, metrics }
    }
}

/// Middleware: runs the request here; an answer that names the node serving the conversation
/// ([`OwnerAddress`]) is replaced by that node's answer to the same request.
pub(crate) async fn forward_to_owner(
    State(forwarder): State<Arc<Forwarder>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(node) = forwarder.node.clone() else { return next.run(request).await };
    let path = request.uri().path().to_owned();
    // Buffered, so it can be sent on: within --max-body-bytes and the body timeout, as the
    // handlers read it.
    let (parts, body) = request.into_parts();
    let body = match read_body(Request::from_parts(parts.clone(), body), &()).await {
        Ok(body) => body,
        Err(e) => return e.api().into_response_for(&path),
    };
    let response = next.clone().run(again(&parts, &body)).await;
    let Some(owner) = response.extensions().get::<OwnerAddress>().cloned() else { return response };
    // The header is not trusted to grant anything, so it needs no proof: all it can do is stop
    // a forward (a client that sends it gets a 503 it could have avoided); the request was
    // authenticated with its own `Authorization` here, as on the node that forwarded it.
    if parts.headers.contains_key(FORWARDED_BY) {
        forwarder.metrics.forwarded(ForwardOutcome::Loop);
        tracing::debug!(owner = %owner.node, "a forwarded request about a conversation another node serves: not forwarded again");
        return response;
    }
    forwarder.forward(owner, &node, parts, body, next).await
}

/// The request again, with its buffered body.
fn again(parts: &Parts, body: &Bytes) -> Request {
    Request::from_parts(parts.clone(), Body::from(body.clone()))
}

/// Why a forward got no answer.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// No connection: refused, or not made in time. Nothing was sent.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The request may have been sent, but no answer came (the node stopped midway).
    #[error("no answer: {0}")]
    Broken(String),
    /// The node's address is not one this node can send to (only `http://` is).
    #[error("its address {0:?} is not an http:// URL")]
    Address(String),
}

impl Forwarder {
    /// Sends the request to `owner` and answers what it answers. If it cannot be reached, waits
    /// for its lease to run out and runs the request here once (forwarding it once more if it
    /// has moved to a third node meanwhile).
    async fn forward(
        &self,
        mut owner: OwnerAddress,
        node: &HeaderValue,
        parts: Parts,
        body: Bytes,
        next: Next,
    ) -> Response {
        let path = parts.uri.path().to_owned();
        let (mut ran_here, mut sent_again) = (false, false);
        loop {
            let failure = match self.send(&owner, node, &parts, body.clone()).await {
                Ok(response) => {
                    self.metrics.forwarded(ForwardOutcome::Ok);
                    return response;
                }
                // A kept-alive connection to a node that has just died can still be taken from
                // the pool, and the request written into it breaks without an answer: sent once
                // more, on a new connection, which a dead node refuses (then its lease is waited
                // out below). A live owner that received the first copy and is still running it
                // refuses the second as busy (409); only an answer lost after the owner had
                // finished a turn would have it run twice, the case HAProxy's
                // `retry-on empty-response` accepts too (deploy/haproxy.cfg).
                Err(Failure::Broken(why)) if !sent_again => {
                    sent_again = true;
                    tracing::debug!(owner = %owner.node, error = %why, "a forwarded request broke; sending it again");
                    continue;
                }
                Err(failure) => failure,
            };
            self.metrics.forwarded(ForwardOutcome::Unreachable);
            tracing::warn!(owner = %owner.node, address = %owner.address, error = %failure,
                "the node that serves a conversation did not answer a forwarded request");
            if ran_here || !matches!(failure, Failure::Connect(_)) {
                let message = format!(
                    "node {} serves this conversation and {}; retry: once its lease runs out, any node serves it",
                    owner.node,
                    match failure {
                        Failure::Address(_) => "its advertised address cannot be forwarded to (only http:// is)",
                        _ => "did not answer",
                    }
                );
                return ApiError::new(StatusCode::BAD_GATEWAY, "owner_unreachable", message)
                    .retry_after(1)
                    .into_response_for(&path);
            }
            if let Err(error) = self.lease_runs_out(&owner).await {
                return error.into_response_for(&path);
            }
            ran_here = true;
            let response = next.clone().run(again(&parts, &body)).await;
            match response.extensions().get::<OwnerAddress>() {
                Some(other) => owner = other.clone(),
                None => return response,
            }
        }
    }

    /// One forward: the owner's answer, its body streamed as it comes. Dropping the answer (the
    /// client went away) drops the connection to the owner, which sees its client go.
    async fn send(
        &self,
        owner: &OwnerAddress,
        node: &HeaderValue,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response, Failure> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = format!("{}{path}", owner.address.trim_end_matches('/'))
            .parse::<Uri>()
            .ok()
            .filter(|u| u.scheme_str() == Some("http"))
            .ok_or_else(|| Failure::Address(owner.address.clone()))?;
        let mut request = hyper::Request::new(Full::new(body));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = end_to_end(&parts.headers);
        request.headers_mut().insert(HeaderName::from_static(FORWARDED_BY), node.clone());
        let response = self.client.request(request).await.map_err(|e| {
            let why = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            if e.is_connect() {
                Failure::Connect(why)
            } else {
                Failure::Broken(why)
            }
        })?;
        let (mut head, body) = response.into_parts();
        head.headers = end_to_end(&head.headers);
        Ok(Response::from_parts(head, Body::new(body)))
    }

    /// Waits until `owner` no longer holds the conversation's lease (run out, or taken by
    /// another node), at most the lease time and a second; then 503 `owner_unreachable` with
    /// the seconds left on the lease.
    async fn lease_runs_out(&self, owner: &OwnerAddress) -> Result<(), ApiError> {
        let id = ConversationId::from(owner.conversation.as_str());
        let give_up = tokio::time::Instant::now() + self.lease_ttl + Duration::from_secs(1);
        loop {
            let holder = self.pool.store().lease_holder(&id).await?;
            let Some(holder) = holder.filter(|h| h.node.as_str() == owner.node) else { return Ok(()) };
            // The store's clock says when; this node's is near enough to pace the next look.
            let left_ms = u64::try_from(holder.expires_at_ms.saturating_sub(now_ms())).unwrap_or(0);
            let now = tokio::time::Instant::now();
            if now >= give_up {
                let secs = left_ms.div_ceil(1000).max(1);
                let message = format!(
                    "node {} serves this conversation and does not answer; its lease runs out in about {secs} s, \
                     then any node serves it: retry then",
                    owner.node
                );
                return Err(
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "owner_unreachable", message).retry_after(secs)
                );
            }
            tokio::time::sleep(Duration::from_millis(left_ms.clamp(50, 500)).min(give_up - now)).await;
        }
    }
}

/// Milliseconds since the epoch, by this node's clock.
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// The headers that go on to the next hop: all but the hop-by-hop ones (and those `Connection`
/// names), `Host` and `Content-Length` (the client sets them for its own request), `Expect` (the
/// body is here already), `Origin` (this node checked it; the owner would compare it with its own
/// name) and a forwarded-by header.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
        .collect();
    let dropped = |name: &HeaderName| {
        matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "expect"
                | "host"
                | "origin"
                | "content-length"
                | FORWARDED_BY
        ) || named.iter().any(|n| n == name.as_str())
    };
    headers.iter().filter(|(name, _)| !dropped(name)).map(|(n, v)| (n.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_end_to_end_headers_go_on() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
            ("last-event-id", "3"),
            ("openai-organization", "o"),
            ("x-stainless-lang", "python"),
            ("host", "127.0.0.1:1"),
            ("origin", "http://127.0.0.1:1"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "p"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-length", "12"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("expect", "100-continue"),
            ("x-codex-pool-forwarded-by", "z"),
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let kept = end_to_end(&headers);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            ["authorization", "content-type", "accept", "last-event-id", "openai-organization", "x-stainless-lang"]
        );
        assert_eq!(kept["authorization"], "Bearer t");
    }
}
