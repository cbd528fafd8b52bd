//! What every handler shares: the pool and the turns the service runs.

use crate::error::ApiError;
use crate::runs::Runs;
use axum::http::StatusCode;
use codex_pool::Pool;
use std::sync::Arc;

/// The service's state, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The pool (and, through it, the store).
    pub pool: Pool,
    /// The turns the service runs.
    pub runs: Arc<Runs>,
}

impl AppState {
    /// 503 unless the pool serves.
    pub fn ready(&self) -> Result<(), ApiError> {
        if self.pool.is_ready() {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the pool is starting or has no codex process serving; retry shortly",
            )
            .retry_after(1))
        }
    }
}
