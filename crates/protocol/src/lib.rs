//! Typed messages of the `codex app-server` protocol, as spoken by the pinned Codex CLI.
//!
//! The wire format is JSON-RPC 2.0 without the `jsonrpc` field, one JSON object per line
//! ([`jsonrpc`]). On top of it, [`methods`] lists the client requests codex-pool sends (each a
//! [`methods::Request`] with typed params and response), [`notifications`] decodes what the server
//! announces, and [`server_requests`] decodes what the server asks of the client (approvals, user
//! input, dynamic tool calls).
//!
//! Everything decodes leniently: unknown fields are ignored and unknown notification or request
//! methods come through as raw JSON instead of failing. The test `tests/schema.rs` checks these
//! types against the JSON Schema that the pinned CLI generates, so a protocol change fails loudly.

#![deny(missing_docs)]

pub mod jsonrpc;
pub mod methods;
pub mod moderation;
pub mod notifications;
pub mod server_requests;
mod stored;
pub mod tools;
pub mod types;

pub use jsonrpc::{Incoming, RequestId, RpcError};
pub use moderation::{AgentMessageModeration, Withheld};
pub use notifications::ServerNotification;
pub use server_requests::ServerRequest;
pub use tools::{ToolCall, ToolContent, ToolOutput, ToolSpec};
pub use types::{CodexThreadId, TurnId};
