//! The functions a client declares for a conversation (`functions`, on the native API), as
//! codex takes them.

use codex_pool::ToolSpec;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// A function the client runs: the model may call it, and the turn then waits for its output.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Function {
    /// Its name: 1 to 64 letters, digits, `_` or `-`, none of codex's own tools' names.
    pub(crate) name: String,
    /// What it does, for the model.
    pub(crate) description: Option<String>,
    /// The JSON Schema of its arguments (an object; the default takes none).
    #[schema(value_type = Option<Object>)]
    pub(crate) parameters: Option<Value>,
}

/// The service's functions as codex takes them.
pub(crate) fn specs(functions: Vec<Function>) -> Vec<ToolSpec> {
    functions
        .into_iter()
        .map(|f| ToolSpec {
            name: f.name,
            description: f.description.unwrap_or_default(),
            input_schema: f.parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        })
        .collect()
}
