//! Requests the server sends the client. Each needs a reply, or the turn that asked waits forever.

use serde_json::value::RawValue;
use serde_json::Value;

/// The methods the pinned CLI can send.
pub mod method {
    /// Approve a shell command.
    pub const COMMAND_EXECUTION_APPROVAL: &str = "item/commandExecution/requestApproval";
    /// Approve a file change.
    pub const FILE_CHANGE_APPROVAL: &str = "item/fileChange/requestApproval";
    /// Approve extra permissions.
    pub const PERMISSIONS_APPROVAL: &str = "item/permissions/requestApproval";
    /// Ask the user questions.
    pub const TOOL_REQUEST_USER_INPUT: &str = "item/tool/requestUserInput";
    /// Run a client-side (dynamic) tool.
    pub const DYNAMIC_TOOL_CALL: &str = "item/tool/call";
    /// An MCP server asks the user for input.
    pub const MCP_ELICITATION: &str = "mcpServer/elicitation/request";
    /// Refresh ChatGPT tokens held by the client.
    pub const CHATGPT_AUTH_TOKENS_REFRESH: &str = "account/chatgptAuthTokens/refresh";
    /// Produce an attestation token.
    pub const ATTESTATION_GENERATE: &str = "attestation/generate";
    /// `currentTime/read` (experimental API): the client's clock. Sent by 0.169.0, no longer by
    /// 0.171.0 (kept so an older codex is still answered).
    pub const CURRENT_TIME_READ: &str = "currentTime/read";
    /// Legacy (v1) patch approval.
    pub const APPLY_PATCH_APPROVAL: &str = "applyPatchApproval";
    /// Legacy (v1) command approval.
    pub const EXEC_COMMAND_APPROVAL: &str = "execCommandApproval";
}

/// What kind of thing the server asks for. The params stay raw JSON: a policy reads what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerRequestKind {
    /// `item/commandExecution/requestApproval`
    CommandExecutionApproval,
    /// `item/fileChange/requestApproval`
    FileChangeApproval,
    /// `item/permissions/requestApproval`
    PermissionsApproval,
    /// `item/tool/requestUserInput`
    ToolRequestUserInput,
    /// `item/tool/call`
    DynamicToolCall,
    /// `mcpServer/elicitation/request`
    McpElicitation,
    /// `account/chatgptAuthTokens/refresh`
    ChatgptAuthTokensRefresh,
    /// `attestation/generate`
    AttestationGenerate,
    /// `currentTime/read`: what time the client has.
    CurrentTimeRead,
    /// `applyPatchApproval` (v1)
    ApplyPatchApproval,
    /// `execCommandApproval` (v1)
    ExecCommandApproval,
    /// A method this version of codex-pool does not know.
    Unknown,
}

impl ServerRequestKind {
    /// Classifies a method name.
    pub fn of(m: &str) -> Self {
        match m {
            method::COMMAND_EXECUTION_APPROVAL => Self::CommandExecutionApproval,
            method::FILE_CHANGE_APPROVAL => Self::FileChangeApproval,
            method::PERMISSIONS_APPROVAL => Self::PermissionsApproval,
            method::TOOL_REQUEST_USER_INPUT => Self::ToolRequestUserInput,
            method::DYNAMIC_TOOL_CALL => Self::DynamicToolCall,
            method::MCP_ELICITATION => Self::McpElicitation,
            method::CHATGPT_AUTH_TOKENS_REFRESH => Self::ChatgptAuthTokensRefresh,
            method::ATTESTATION_GENERATE => Self::AttestationGenerate,
            method::CURRENT_TIME_READ => Self::CurrentTimeRead,
            method::APPLY_PATCH_APPROVAL => Self::ApplyPatchApproval,
            method::EXEC_COMMAND_APPROVAL => Self::ExecCommandApproval,
            _ => Self::Unknown,
        }
    }
}

/// A request from the server, decoded enough to route and answer it.
#[derive(Debug, Clone)]
pub struct ServerRequest {
    /// What it asks for.
    pub kind: ServerRequestKind,
    /// The wire method.
    pub method: String,
    /// Its params (`null` when absent).
    pub params: Value,
}

impl ServerRequest {
    /// Decodes a request's method and params.
    pub fn decode(method: &str, params: Option<&RawValue>) -> Self {
        Self {
            kind: ServerRequestKind::of(method),
            method: method.to_owned(),
            params: params.and_then(|p| serde_json::from_str(p.get()).ok()).unwrap_or(Value::Null),
        }
    }

    /// The thread the request is about, when it names one.
    pub fn thread_id(&self) -> Option<&str> {
        // v2 requests say `threadId`; the v1 ones say `conversationId`.
        self.params.get("threadId").or_else(|| self.params.get("conversationId")).and_then(Value::as_str)
    }

    /// The turn the request is about, when it names one.
    pub fn turn_id(&self) -> Option<&str> {
        self.params.get("turnId").and_then(Value::as_str)
    }
}
