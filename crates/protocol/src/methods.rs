//! Client requests: each method is a type implementing [`Request`], naming its wire method, its
//! params and its response.

pub use crate::stored::{
    ThreadDeleteResponse, ThreadListParams, ThreadListResponse, ThreadSetNameParams, ThreadSetNameResponse,
};
use crate::types::{ApprovalPolicy, CodexThreadId, ReasoningEffort, SandboxMode, Thread, Turn, TurnId, UserInput};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A client-to-server request method.
pub trait Request {
    /// The wire method name.
    const METHOD: &'static str;
    /// The params object.
    type Params: Serialize + Send + Sync;
    /// The result object.
    type Response: DeserializeOwned + Send + 'static;
}

macro_rules! request {
    ($(#[$doc:meta])* $name:ident, $method:literal, $params:ty, $response:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub enum $name {}
        impl Request for $name {
            const METHOD: &'static str = $method;
            type Params = $params;
            type Response = $response;
        }
    };
}

request!(
    /// `initialize`: the first request of a connection.
    Initialize, "initialize", InitializeParams, InitializeResponse
);
request!(
    /// `thread/start`: creates a conversation.
    ThreadStart, "thread/start", ThreadStartParams, ThreadStartResponse
);
request!(
    /// `thread/resume`: loads a stored conversation into this process.
    ThreadResume, "thread/resume", ThreadResumeParams, ThreadResponse
);
request!(
    /// `thread/fork`: copies a stored conversation into a new thread id.
    ThreadFork, "thread/fork", ThreadForkParams, ThreadResponse
);
request!(
    /// `thread/inject_items` (experimental API): appends Responses API items to a loaded thread's
    /// model-visible history, without running a turn.
    ThreadInjectItems, "thread/inject_items", ThreadInjectItemsParams, EmptyResponse
);
request!(
    /// `thread/compact/start`: codex summarises the thread's history now, in a turn of its own
    /// (announced by `turn/started`; the answer names no turn).
    ThreadCompactStart, "thread/compact/start", ThreadIdParams, EmptyResponse
);
request!(
    /// `thread/unsubscribe`: stops this connection's interest in a thread.
    ThreadUnsubscribe, "thread/unsubscribe", ThreadIdParams, ThreadUnsubscribeResponse
);
request!(
    /// `thread/delete`: unloads a thread and removes what codex keeps of it on disk (its rollout
    /// file and its rows in codex's state databases).
    ThreadDelete, "thread/delete", ThreadIdParams, ThreadDeleteResponse
);
request!(
    /// `thread/name/set`: names a thread (the title codex's own tools list it by).
    ThreadSetName, "thread/name/set", ThreadSetNameParams, ThreadSetNameResponse
);
request!(
    /// `thread/list`: the threads codex keeps on disk, newest first, a page at a time.
    ThreadList, "thread/list", ThreadListParams, ThreadListResponse
);
request!(
    /// `thread/read`: reads a thread's metadata and, optionally, its turns.
    ThreadRead, "thread/read", ThreadReadParams, ThreadReadResponse
);
request!(
    /// `thread/loaded/list`: thread ids held in this process's memory.
    ThreadLoadedList, "thread/loaded/list", ThreadLoadedListParams, ThreadLoadedListResponse
);
request!(
    /// `turn/start`: sends user input and starts a turn.
    TurnStart, "turn/start", TurnStartParams, TurnStartResponse
);
request!(
    /// `turn/steer`: adds input to the running turn.
    TurnSteer, "turn/steer", TurnSteerParams, TurnSteerResponse
);
request!(
    /// `turn/interrupt`: stops the running turn.
    TurnInterrupt, "turn/interrupt", TurnInterruptParams, EmptyResponse
);
request!(
    /// `model/list`: the models the process can use.
    ModelList, "model/list", ModelListParams, ModelListResponse
);
request!(
    /// `account/read`: the account codex is logged in with, if any.
    AccountRead, "account/read", AccountReadParams, AccountReadResponse
);

/// Who we are, sent with `initialize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Client name.
    pub name: String,
    /// Client version.
    pub version: String,
}

/// Capabilities negotiated in `initialize`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeCapabilities {
    /// Opt into experimental API methods and fields.
    #[serde(default)]
    pub experimental_api: bool,
    /// Notification methods this connection does not want (saves codex and us the work).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out_notification_methods: Option<Vec<String>>,
}

/// Params of `initialize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    /// Who we are.
    pub client_info: ClientInfo,
    /// What we opt into or out of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<InitializeCapabilities>,
}

/// Result of `initialize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResponse {
    /// The server's `CODEX_HOME`.
    pub codex_home: String,
    /// The server's user agent (includes its version).
    pub user_agent: String,
    /// e.g. `unix`.
    pub platform_family: String,
    /// e.g. `linux`.
    pub platform_os: String,
}

/// Settings of a conversation, shared by `thread/start`, `thread/resume` and `thread/fork`.
///
/// Every field is optional; unset fields take the process's configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadSettings {
    /// The model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The model provider id (a key of `model_providers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_provider: Option<String>,
    /// Working directory of the thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Replaces codex's built-in base instructions (the system prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_instructions: Option<String>,
    /// Developer instructions added to the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_instructions: Option<String>,
    /// Sandbox mode for commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxMode>,
    /// When to ask the client for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<ApprovalPolicy>,
    /// Config overrides for this thread, as a TOML-shaped JSON object (e.g. `mcp_servers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Map<String, Value>>,
    /// Functions the client runs (`dynamicTools`, experimental API). codex takes them at
    /// `thread/start` only: a thread keeps the list it was started with, and `thread/resume` and
    /// `thread/fork` params leave it empty (their schema has no such field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dynamic_tools: Vec<crate::tools::ToolSpec>,
}

/// Params of `thread/start`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadStartParams {
    /// The thread's settings.
    #[serde(flatten)]
    pub settings: ThreadSettings,
    /// Keep the thread in memory only (nothing written to disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
    /// Experimental API: emit every item recorded in the thread's history as a
    /// `rawResponseItem/completed` notification (what a client needs to keep the history itself).
    /// Only threads started with it emit them; resumed and forked threads do not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub experimental_raw_events: bool,
}

/// Params of `thread/inject_items`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadInjectItemsParams {
    /// The (loaded) thread.
    pub thread_id: CodexThreadId,
    /// Raw Responses API items, as `rawResponseItem/completed` delivered them.
    pub items: Vec<Value>,
}

/// Params of `thread/resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadResumeParams {
    /// The thread to load.
    pub thread_id: CodexThreadId,
    /// Settings to apply on resume.
    #[serde(flatten)]
    pub settings: ThreadSettings,
    /// Return only metadata, not the turns.
    #[serde(default)]
    pub exclude_turns: bool,
}

/// Params of `thread/fork`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadForkParams {
    /// The thread to copy.
    pub thread_id: CodexThreadId,
    /// Settings of the new thread.
    #[serde(flatten)]
    pub settings: ThreadSettings,
    /// Return only metadata, not the turns.
    #[serde(default)]
    pub exclude_turns: bool,
}

/// Result of `thread/start`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadStartResponse {
    /// The new thread.
    pub thread: Thread,
    /// The model it will use.
    pub model: String,
    /// The provider it will use.
    pub model_provider: String,
    /// Its working directory.
    pub cwd: String,
}

/// Result of `thread/resume` and `thread/fork`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadResponse {
    /// The loaded (or new, for a fork) thread.
    pub thread: Thread,
    /// The model it will use.
    pub model: String,
}

/// Params naming one thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadIdParams {
    /// The thread.
    pub thread_id: CodexThreadId,
}

/// Outcome of `thread/unsubscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UnsubscribeStatus {
    /// The thread was not loaded.
    NotLoaded,
    /// This connection was not subscribed.
    NotSubscribed,
    /// Unsubscribed.
    Unsubscribed,
}

/// Result of `thread/unsubscribe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadUnsubscribeResponse {
    /// What happened.
    pub status: UnsubscribeStatus,
}

/// Params of `thread/read`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadReadParams {
    /// The thread.
    pub thread_id: CodexThreadId,
    /// Include turns and their items.
    #[serde(default)]
    pub include_turns: bool,
}

/// Result of `thread/read`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadReadResponse {
    /// The thread.
    pub thread: Thread,
}

/// Params of `thread/loaded/list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadLoadedListParams {
    /// Continue after this cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Result of `thread/loaded/list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadLoadedListResponse {
    /// Loaded thread ids.
    pub data: Vec<CodexThreadId>,
    /// Cursor of the next page, if any.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Params of `turn/start`. Per-turn overrides stick for later turns of the thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnStartParams {
    /// The thread.
    pub thread_id: CodexThreadId,
    /// The user's input.
    pub input: Vec<UserInput>,
    /// Model override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Reasoning effort override (`low`, `medium`, `high`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<ReasoningEffort>,
    /// Approval policy override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<ApprovalPolicy>,
    /// JSON Schema the final message must follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
}

impl TurnStartParams {
    /// A turn with the given input and no overrides.
    pub fn new(thread_id: impl Into<CodexThreadId>, input: Vec<UserInput>) -> Self {
        Self {
            thread_id: thread_id.into(),
            input,
            model: None,
            effort: None,
            approval_policy: None,
            output_schema: None,
        }
    }
}

/// Result of `turn/start`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnStartResponse {
    /// The new turn (status `inProgress`).
    pub turn: Turn,
}

/// Params of `turn/steer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnSteerParams {
    /// The thread.
    pub thread_id: CodexThreadId,
    /// The turn that must still be running.
    pub expected_turn_id: TurnId,
    /// Input to add.
    pub input: Vec<UserInput>,
}

/// Result of `turn/steer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnSteerResponse {
    /// The turn that took the input.
    pub turn_id: TurnId,
}

/// Params of `turn/interrupt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnInterruptParams {
    /// The thread.
    pub thread_id: CodexThreadId,
    /// The running turn.
    pub turn_id: TurnId,
}

/// A result with no members (`{}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmptyResponse {}

/// Params of `model/list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelListParams {
    /// Continue after this cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One model of `model/list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// Catalog id.
    pub id: String,
    /// Model slug to pass as `model`.
    pub model: String,
    /// Display name.
    pub display_name: String,
    /// Whether it is the default.
    pub is_default: bool,
}

/// Result of `model/list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelListResponse {
    /// The models.
    pub data: Vec<ModelInfo>,
    /// Cursor of the next page, if any.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Params of `account/read`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountReadParams {
    /// Refresh the token before answering.
    #[serde(default)]
    pub refresh_token: bool,
}

/// Result of `account/read`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountReadResponse {
    /// The account, or `None` when not logged in.
    #[serde(default)]
    pub account: Option<Value>,
    /// Whether the configured provider needs an OpenAI login at all.
    pub requires_openai_auth: bool,
}
