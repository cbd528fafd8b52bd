//! A small client of the service's native API, over HTTP/1.1: JSON requests, and turns read as
//! server-sent events. What the tests and `codex-pool bench --http` drive the service with; a
//! starting point for Rust callers that talk to a service rather than embed the pool.
//!
//! ```no_run
//! # async fn demo() -> Result<(), codex_pool_server::client::ClientError> {
//! use codex_pool_server::client::Client;
//! let client = Client::new("http://127.0.0.1:7878", None);
//! let conversation = client.post("/v1/conversations", serde_json::json!({})).await?.json()?;
//! let id = conversation["id"].as_str().unwrap_or_default();
//! let mut events = client.stream(&format!("/v1/conversations/{id}/turns"), serde_json::json!({"text": "hi"})).await?;
//! while let Some(event) = events.next().await? {
//!     if event.event == "text.delta" {
//!         print!("{}", event.data["delta"].as_str().unwrap_or_default());
//!     }
//! }
//! # Ok(()) }
//! ```

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The request could not be made or its answer read.
    #[error("request failed: {0}")]
    Http(String),
    /// The service answered with an error.
    #[error("{status}: {body}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The error body.
        body: Value,
    },
    /// The answer was not the JSON or events expected.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// A connection pool to one service.
#[derive(Clone)]
pub struct Client {
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

/// An answer: status, headers and the whole body.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Unexpected(format!("not JSON: {e}")))
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// Its `id`.
    pub id: Option<String>,
    /// Its `event` name.
    pub event: String,
    /// Its `data`, as JSON (`null` if it was not JSON).
    pub data: Value,
}

/// The events of a streamed answer, read as they come.
pub struct EventStream {
    body: Incoming,
    buffer: BytesMut,
    /// The answer's headers.
    pub headers: hyper::HeaderMap,
}

impl Client {
    /// A client of the service at `base` (e.g. `http://127.0.0.1:7878`), sending `token` if given.
    pub fn new(base: &str, token: Option<String>) -> Self {
        // A request's head and body may go out as two writes: with Nagle's algorithm the second
        // waits for the service's delayed ACK.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
        Self { http, base: base.trim_end_matches('/').to_owned(), token }
    }

    /// The service's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut builder = self.builder(method, path);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        builder.body(Full::new(body.unwrap_or_default())).map_err(|e| ClientError::Http(e.to_string()))
    }

    /// Sends a request with a raw body (or none) and reads the whole answer, whatever its status.
    pub async fn send(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<Answer, ClientError> {
        self.send_with(self.request(method, path, body)?).await
    }

    /// Sends a request built by the caller (extra headers, say).
    pub async fn send_with(&self, request: Request<Full<Bytes>>) -> Result<Answer, ClientError> {
        let response = self.http.request(request).await.map_err(|e| ClientError::Http(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| ClientError::Http(e.to_string()))?.to_bytes();
        Ok(Answer { status: parts.status, headers: parts.headers, body })
    }

    /// A request for this service with `token` (for headers of the caller's own).
    pub fn builder(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        let mut builder = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder
    }

    /// `GET`; an error status is an error.
    pub async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        ok(self.send(Method::GET, path, None).await?)
    }

    /// `POST` with a JSON body; an error status is an error.
    pub async fn post(&self, path: &str, body: Value) -> Result<Answer, ClientError> {
        ok(self.send(Method::POST, path, Some(Bytes::from(body.to_string()))).await?)
    }

    /// `POST` with a JSON body, reading the answer as events (`text/event-stream`).
    pub async fn stream(&self, path: &str, body: Value) -> Result<EventStream, ClientError> {
        self.open(self.request(Method::POST, path, Some(Bytes::from(body.to_string())))?).await
    }

    /// Sends a request and reads its answer as events.
    pub async fn open(&self, request: Request<Full<Bytes>>) -> Result<EventStream, ClientError> {
        let response = self.http.request(request).await.map_err(|e| ClientError::Http(e.to_string()))?;
        let (parts, body) = response.into_parts();
        if !parts.status.is_success() {
            let body = body.collect().await.map_err(|e| ClientError::Http(e.to_string()))?.to_bytes();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(ClientError::Status { status: parts.status, body });
        }
        Ok(EventStream { body, buffer: BytesMut::new(), headers: parts.headers })
    }
}

fn ok(answer: Answer) -> Result<Answer, ClientError> {
    if answer.status.is_success() {
        Ok(answer)
    } else {
        Err(ClientError::Status { status: answer.status, body: answer.json().unwrap_or(Value::Null) })
    }
}

impl EventStream {
    /// The next event; `None` at the end of the stream. Comments (keep-alives) are skipped.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            if let Some(event) = self.take_event() {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(ClientError::Http(e.to_string())),
                None => return Ok(None),
            }
        }
    }

    /// Parses one whole event out of the buffer, if one is there.
    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buffer.windows(2).position(|w| w == b"\n\n")?;
            let block = self.buffer.split_to(end + 2);
            let text = String::from_utf8_lossy(&block);
            let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
            let mut any = false;
            for line in text.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = Some(value.to_owned()),
                    "event" => event = value.to_owned(),
                    "data" => {
                        if any {
                            data.push('\n');
                        }
                        data.push_str(value);
                        any = true;
                    }
                    _ => {}
                }
            }
            if any {
                return Some(SseEvent { id, event, data: serde_json::from_str(&data).unwrap_or(Value::Null) });
            }
        }
    }
}
