//! The params and results of the methods about what codex keeps of threads on disk: listing,
//! naming and deleting them (the requests themselves are with the others, in `methods`).

use crate::types::{CodexThreadId, Thread};
use serde::{Deserialize, Serialize};

/// Result of `thread/delete` (empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThreadDeleteResponse {}

/// Params of `thread/name/set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadSetNameParams {
    /// The thread.
    pub thread_id: CodexThreadId,
    /// Its new name.
    pub name: String,
}

/// Result of `thread/name/set` (empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThreadSetNameResponse {}

/// Params of `thread/list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadListParams {
    /// Only threads whose title (their name, once named) holds this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_term: Option<String>,
    /// The page after this one (a previous answer's `next_cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Read codex's state database only, without scanning its rollout files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_state_db_only: Option<bool>,
}

/// Result of `thread/list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadListResponse {
    /// The threads of this page.
    pub data: Vec<Thread>,
    /// The next page, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
