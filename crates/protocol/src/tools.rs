//! Client tools (codex's "dynamic tools", experimental API): functions the client declares at
//! `thread/start` and runs itself. When the model calls one, codex asks the client with the
//! request `item/tool/call` and waits (with no timeout of its own) for the output.
//!
//! Three shapes meet here: the declaration codex takes ([`ToolSpec`]), the call as the model
//! made it ([`ToolCall`], read from the `function_call` item codex records) and the output the
//! client gives back ([`ToolOutput`]), which becomes either the answer to codex's request
//! ([`DynamicToolCallResponse`]) or, when that request is gone, a `function_call_output` history
//! item ([`ToolOutput::to_item`]).

use crate::types::{CodexThreadId, TurnId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A function the client runs: `dynamicTools` of `thread/start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "function", rename_all = "camelCase")]
pub struct ToolSpec {
    /// The function's name, as the model calls it.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// The JSON Schema of its arguments.
    pub input_schema: Value,
}

/// Params of the server request `item/tool/call`: the model called a client tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DynamicToolCallParams {
    /// The thread.
    pub thread_id: CodexThreadId,
    /// The turn that waits.
    pub turn_id: TurnId,
    /// The model's `call_id`.
    pub call_id: String,
    /// The tool's namespace, for a tool declared in one.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The tool's name.
    pub tool: String,
    /// The arguments, parsed.
    #[serde(default)]
    pub arguments: Value,
}

/// A part of a tool's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ToolContent {
    /// Text.
    #[serde(rename_all = "camelCase")]
    InputText {
        /// The text.
        text: String,
    },
    /// An image, by URL (codex takes `data:` URLs).
    #[serde(rename_all = "camelCase")]
    InputImage {
        /// The image's URL.
        image_url: String,
    },
}

/// The answer to `item/tool/call`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DynamicToolCallResponse {
    /// Whether the tool ran.
    pub success: bool,
    /// What it returned.
    pub content_items: Vec<ToolContent>,
}

/// A client tool call the model made, as codex recorded it (a `function_call` item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The arguments as the model wrote them: a JSON text.
    pub arguments: String,
    /// The model's `call_id`: what the output names.
    pub call_id: String,
    /// The tool's name.
    pub name: String,
}

impl ToolCall {
    /// The call in a `function_call` history item, if the item is one.
    pub fn from_item(item: &Value) -> Option<Self> {
        if item.get("type")?.as_str()? != "function_call" {
            return None;
        }
        Some(Self {
            call_id: item.get("call_id")?.as_str()?.to_owned(),
            name: item.get("name")?.as_str()?.to_owned(),
            arguments: item.get("arguments").and_then(Value::as_str).unwrap_or("{}").to_owned(),
        })
    }

    /// The call as a `function_call` history item.
    pub fn to_item(&self) -> Value {
        json!({"type": "function_call", "call_id": self.call_id, "name": self.name, "arguments": self.arguments})
    }
}

/// What a client tool returned for one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolOutput {
    /// The call it answers.
    pub call_id: String,
    /// The output: text and images.
    pub content: Vec<ToolContent>,
    /// Whether the tool ran (`false`: the output says why not).
    #[serde(default = "yes")]
    pub success: bool,
}

fn yes() -> bool {
    true
}

impl ToolOutput {
    /// A text output of a tool that ran.
    pub fn text(call_id: impl Into<String>, text: impl Into<String>) -> Self {
        Self { call_id: call_id.into(), content: vec![ToolContent::InputText { text: text.into() }], success: true }
    }

    /// The answer to codex's waiting `item/tool/call`.
    pub fn to_response(&self) -> DynamicToolCallResponse {
        DynamicToolCallResponse { success: self.success, content_items: self.content.clone() }
    }

    /// The output as the `function_call_output` history item codex records for it: one text
    /// part as a plain string, anything else as a list of Responses API content parts.
    pub fn to_item(&self) -> Value {
        let output = match self.content.as_slice() {
            [ToolContent::InputText { text }] => Value::String(text.clone()),
            parts => Value::Array(
                parts
                    .iter()
                    .map(|part| match part {
                        ToolContent::InputText { text } => json!({"type": "input_text", "text": text}),
                        ToolContent::InputImage { image_url } => json!({"type": "input_image", "image_url": image_url}),
                    })
                    .collect(),
            ),
        };
        json!({"type": "function_call_output", "call_id": self.call_id, "output": output})
    }

    /// The call id of a `function_call_output` history item, if the item is one.
    pub fn call_id_of(item: &Value) -> Option<&str> {
        (item.get("type")?.as_str()? == "function_call_output").then_some(())?;
        item.get("call_id")?.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_a_tagged_function() {
        let spec = ToolSpec { name: "f".into(), description: "d".into(), input_schema: json!({"type": "object"}) };
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v, json!({"type": "function", "name": "f", "description": "d", "inputSchema": {"type": "object"}}));
        assert_eq!(serde_json::from_value::<ToolSpec>(v).unwrap(), spec);
    }

    #[test]
    fn outputs_become_answers_and_items() {
        let out = ToolOutput::text("c1", "sunny");
        assert_eq!(
            serde_json::to_value(out.to_response()).unwrap(),
            json!({"success": true, "contentItems": [{"type": "inputText", "text": "sunny"}]})
        );
        assert_eq!(out.to_item(), json!({"type": "function_call_output", "call_id": "c1", "output": "sunny"}));
        let img = ToolOutput {
            call_id: "c2".into(),
            content: vec![
                ToolContent::InputText { text: "see".into() },
                ToolContent::InputImage { image_url: "data:image/png;base64,AA==".into() },
            ],
            success: true,
        };
        assert_eq!(
            img.to_item()["output"],
            json!([{"type": "input_text", "text": "see"}, {"type": "input_image", "image_url": "data:image/png;base64,AA=="}])
        );
        assert_eq!(ToolOutput::call_id_of(&img.to_item()), Some("c2"));
    }

    #[test]
    fn calls_are_read_from_function_call_items() {
        let item = json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{\"a\":1}", "id": "fc"});
        let call = ToolCall::from_item(&item).unwrap();
        assert_eq!(call, ToolCall { call_id: "c".into(), name: "f".into(), arguments: "{\"a\":1}".into() });
        assert_eq!(ToolCall::from_item(&json!({"type": "message"})), None);
    }
}
