//! Errors as OpenAI's clients read them, `{"error": {"message", "type", "param", "code"}}`, and
//! request bodies read into a JSON object whose every rejection takes that shape.

use crate::error::{ApiError, ErrorHead};
use crate::extract::{read_json, BodyError, BodyRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// The body of an error on OpenAI's routes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OpenAiErrorBody {
    /// What went wrong.
    pub(crate) error: OpenAiErrorDetail,
}

/// What went wrong, as OpenAI words it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OpenAiErrorDetail {
    /// What happened, and how to fix it.
    pub(crate) message: String,
    /// `invalid_request_error`, `authentication_error`, `not_found_error`, `rate_limit_error`,
    /// `server_error`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// The request field at fault, when one is.
    pub(crate) param: Option<String>,
    /// A machine-readable code (the native API's, or OpenAI's where it has one).
    pub(crate) code: Option<String>,
}

/// An error answer on OpenAI's routes.
#[derive(Debug)]
pub(crate) struct OpenAiError {
    head: ErrorHead,
    kind: &'static str,
    code: Option<String>,
    param: Option<String>,
    message: String,
}

impl OpenAiError {
    /// The body OpenAI's clients read: `{"error": {"message", "type", "param", "code"}}` (also
    /// what a stream that fails midway sends as its last chunk).
    pub(crate) fn into_body(self) -> OpenAiErrorBody {
        OpenAiErrorBody {
            error: OpenAiErrorDetail { message: self.message, kind: self.kind, param: self.param, code: self.code },
        }
    }

    /// An error with a status; its `type` follows from the status.
    pub(crate) fn new(status: StatusCode, code: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            head: ErrorHead::new(status),
            kind: kind_of(status),
            code: code.map(str::to_owned),
            param: None,
            message: message.into(),
        }
    }

    /// 400 naming the field at fault.
    pub(crate) fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalid_request"), message).param(param)
    }

    /// 400 for a field the pool cannot honour.
    pub(crate) fn unsupported(param: impl Into<String>, why: &str) -> Self {
        let param = param.into();
        let message = format!("`{param}` is not supported here: {why}");
        Self::new(StatusCode::BAD_REQUEST, Some("unsupported_parameter"), message).param(param)
    }

    /// 404 naming the field that pointed nowhere.
    pub(crate) fn not_found(param: Option<&str>, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::NOT_FOUND, Some("not_found"), message);
        e.param = param.map(str::to_owned);
        e
    }

    /// Names the field at fault.
    pub(crate) fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }
}

fn kind_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        let (head, code, message) = e.into_parts();
        let kind = kind_of(head.status);
        OpenAiError { head, kind, code: Some(code.to_owned()), param: None, message }
    }
}

impl From<codex_pool::PoolError> for OpenAiError {
    fn from(e: codex_pool::PoolError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<codex_pool_store::StoreError> for OpenAiError {
    fn from(e: codex_pool_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let code = self.code.clone().unwrap_or_default();
        let message = self.message.clone();
        let body = OpenAiErrorBody {
            error: OpenAiErrorDetail { message: self.message, kind: self.kind, param: self.param, code: self.code },
        };
        self.head.respond(&code, &message, body)
    }
}

/// A request body that must be a JSON object.
pub(crate) struct OpenAiBody(pub(crate) Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for OpenAiBody {
    type Rejection = OpenAiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, OpenAiError> {
        match read_json::<Value, OpenAiError, S>(req, state).await? {
            Value::Object(map) => Ok(OpenAiBody(map)),
            _ => Err(OpenAiError::new(
                StatusCode::BAD_REQUEST,
                Some("invalid_request"),
                "the body must be a JSON object",
            )),
        }
    }
}

impl BodyRejection for OpenAiError {
    const EMPTY_IS_OBJECT: bool = false;

    fn unread(e: BodyError) -> Self {
        e.api().into()
    }

    fn not_json(why: String) -> Self {
        OpenAiError::new(StatusCode::BAD_REQUEST, Some("invalid_json"), format!("the body is not valid JSON: {why}"))
    }
}

/// Reading the fields of a request body, each failure naming its field.
pub(crate) struct Fields {
    map: Map<String, Value>,
}

impl Fields {
    /// The body; `known` lists the fields the route reads. Any other field that is not `null`
    /// is refused, naming it; `why` says why for the fields OpenAI has and the pool does not.
    pub(crate) fn new(
        mut map: Map<String, Value>,
        known: &[String],
        why: impl Fn(&str) -> &'static str,
    ) -> Result<Self, OpenAiError> {
        map.retain(|_, v| !v.is_null());
        if let Some(key) = map.keys().find(|k| !known.contains(k)) {
            return Err(OpenAiError::unsupported(key.clone(), why(key)));
        }
        Ok(Self { map })
    }

    /// Takes a field as it is.
    pub(crate) fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    /// A string field.
    pub(crate) fn string(&mut self, key: &str) -> Result<Option<String>, OpenAiError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(OpenAiError::invalid(key, format!("`{key}` must be a string"))),
        }
    }

    /// A boolean field.
    pub(crate) fn boolean(&mut self, key: &str) -> Result<Option<bool>, OpenAiError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(OpenAiError::invalid(key, format!("`{key}` must be true or false"))),
        }
    }

    /// `metadata`: an object (its caps are checked by [`crate::AppState::check_settings`]).
    pub(crate) fn metadata(&mut self, key: &str) -> Result<Option<Map<String, Value>>, OpenAiError> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(OpenAiError::invalid(key, "metadata is an object of string keys and string values")),
        }
    }
}

impl ApiError {
    /// The error as a response in the shape of the API of the route at `path`: OpenAI's on
    /// OpenAI's routes, the native one elsewhere.
    pub(crate) fn into_response_for(self, path: &str) -> Response {
        if super::is_openai_path(path) {
            OpenAiError::from(self).into_response()
        } else {
            self.into_response()
        }
    }
}
