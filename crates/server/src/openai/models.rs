//! `GET /v1/models` and `GET /v1/models/{id}`: the models the service serves (the service's
//! list, else the pool's default model).

use crate::openai::error::OpenAiError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

/// The models served, the default first.
fn served(state: &AppState) -> Vec<String> {
    if state.models.is_empty() {
        state.pool.config().default_model.clone().into_iter().collect()
    } else {
        state.models.to_vec()
    }
}

fn model(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "codex-pool"})
}

/// Lists the models the service serves.
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, description = "The models", body = Object)))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = served(&state).iter().map(|m| model(m)).collect();
    Json(json!({"object": "list", "data": data}))
}

/// One model the service serves.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "openai", params(("id" = String, Path, description = "The model")),
    responses((status = 200, description = "The model", body = Object),
              (status = 404, body = crate::openai::error::OpenAiErrorBody)))]
pub(crate) async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    if served(&state).contains(&id) {
        Ok(Json(model(&id)))
    } else {
        Err(OpenAiError::not_found(Some("model"), format!("the model {id:?} is not served here; see GET /v1/models")))
    }
}
