//! What every handler shares: the pool and the turns the service runs.

use crate::caps::{OverCap, SettingsCaps};
use crate::edge_metrics::EdgeLimit;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::policy::AgentPolicy;
use crate::runs::Runs;
use axum::http::StatusCode;
use codex_pool::Pool;
use std::sync::Arc;

/// The service's state, cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The pool (and, through it, the store).
    pub(crate) pool: Pool,
    /// The turns the service runs.
    pub(crate) runs: Arc<Runs>,
    /// The models clients may ask for (the first is the default); empty: any, codex's default.
    pub(crate) models: Arc<Vec<String>>,
    /// What clients may make codex do.
    pub(crate) policy: Arc<AgentPolicy>,
    /// What the service counts (`GET /metrics`).
    pub(crate) metrics: Arc<Metrics>,
    /// Caps on conversations' settings and list pages.
    pub(crate) caps: Arc<SettingsCaps>,
    /// Items one turn's input may have (`ServiceConfig::max_input_items`).
    pub(crate) max_input_items: usize,
}

impl AppState {
    /// The model a request asked for, checked against the served list (`None`: the default).
    pub(crate) fn model(&self, asked: Option<String>) -> Result<Option<String>, ApiError> {
        match asked {
            Some(model) if !self.models.is_empty() && !self.models.contains(&model) => Err(ApiError::invalid(format!(
                "model {model:?} is not served here; use one of: {}",
                self.models.join(", ")
            ))),
            asked => Ok(asked.or_else(|| self.models.first().cloned())),
        }
    }

    /// Checks a new conversation's texts and metadata (`strings_only`: OpenAI's rule for
    /// metadata values) against the caps, counting a refusal in `/metrics`.
    pub(crate) fn check_settings(
        &self,
        texts: &[(&str, Option<&str>)],
        metadata: Option<(&str, &serde_json::Map<String, serde_json::Value>)>,
        strings_only: bool,
    ) -> Result<(), OverCap> {
        let checked = self.caps.texts(texts).and_then(|()| match metadata {
            Some((field, map)) => self.caps.metadata(field, map, strings_only),
            None => Ok(()),
        });
        if checked.is_err() {
            self.metrics.edge.refused(EdgeLimit::Settings);
        }
        checked
    }

    /// 503 unless the pool serves.
    pub(crate) fn ready(&self) -> Result<(), ApiError> {
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
