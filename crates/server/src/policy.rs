//! What a client of the service may make codex do. The operator decides, with the flags the
//! service was started with; a client only picks among what they allow. Conversations are chat
//! conversations (no tools) unless the operator allows the coding agent (`--allow-profile codex`)
//! or names MCP servers (`--allow-mcp NAME=COMMAND`), and a client never sends codex
//! configuration of its own: the settings it may give are a fixed list of typed fields.

use crate::error::ApiError;
use axum::http::StatusCode;
use codex_pool::Profile;
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::{ApprovalPolicy, ReasoningEffort, SandboxMode};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A reasoning effort a conversation may ask for: the service offers these, of the open list
/// codex takes ([`ReasoningEffort`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// `minimal`.
    Minimal,
    /// `low`.
    Low,
    /// `medium`.
    Medium,
    /// `high`.
    High,
}

impl Effort {
    /// Every effort offered, in order.
    pub const ALL: [Effort; 4] = [Effort::Minimal, Effort::Low, Effort::Medium, Effort::High];

    /// Its name, as clients and codex write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
        }
    }

    /// The effort named `name`, or a 400 naming the ones offered.
    pub(crate) fn parse(name: &str) -> Result<Effort, ApiError> {
        Effort::ALL.into_iter().find(|e| e.as_str() == name).ok_or_else(|| {
            let offered: Vec<&str> = Effort::ALL.iter().map(|e| e.as_str()).collect();
            ApiError::invalid(format!("reasoning_effort {name:?} is not one of {}", offered.join(", ")))
        })
    }
}

impl From<Effort> for ReasoningEffort {
    fn from(effort: Effort) -> ReasoningEffort {
        ReasoningEffort::new(effort.as_str()).expect("an offered effort has a name")
    }
}

/// An MCP server the operator named: the command codex starts for conversations that ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServer {
    /// The program.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl McpServer {
    /// From `NAME=COMMAND ARGS...` (arguments split on whitespace, no quoting).
    pub fn parse(spec: &str) -> Result<(String, McpServer), String> {
        let (name, command) = spec.split_once('=').ok_or_else(|| format!("{spec:?} is not NAME=COMMAND"))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("{name:?} is not an MCP server name (letters, digits, '_' and '-')"));
        }
        let mut words = command.split_whitespace().map(str::to_owned);
        let command = words.next().ok_or_else(|| format!("no command for MCP server {name:?}"))?;
        Ok((name.to_owned(), McpServer { command, args: words.collect() }))
    }
}

/// What the operator allows, and how the coding agent is confined.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentPolicy {
    /// Clients may create coding-agent conversations (`profile: codex`).
    pub allow_codex_profile: bool,
    /// The sandbox of coding-agent conversations (read-only unless the operator says otherwise).
    pub agent_sandbox: SandboxMode,
    /// Whether coding-agent commands may reach the network (only with a workspace-write sandbox).
    pub agent_network: bool,
    /// MCP servers conversations may ask for, by name.
    pub mcp_servers: BTreeMap<String, McpServer>,
}

impl Default for AgentPolicy {
    fn default() -> Self {
        Self {
            allow_codex_profile: false,
            agent_sandbox: SandboxMode::ReadOnly,
            agent_network: false,
            mcp_servers: BTreeMap::new(),
        }
    }
}

/// What a client asked for, from a request's typed fields.
pub(crate) struct Asked {
    /// `chat` or `codex`.
    pub(crate) profile: Option<String>,
    /// Reasoning effort.
    pub(crate) reasoning_effort: Option<String>,
    /// MCP servers, by the operator's names.
    pub(crate) tools: Vec<String>,
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

impl AgentPolicy {
    /// The profile and settings of a new conversation, or why the operator does not allow it
    /// (403, naming the flag that would) or it makes no sense (400).
    pub(crate) fn apply(
        &self,
        asked: Asked,
        mut settings: ThreadSettings,
    ) -> Result<(ThreadSettings, Profile), ApiError> {
        // The pool's parser, the one every profile name goes through (its message names the
        // profiles there are).
        let profile = match asked.profile.as_deref().map(str::parse::<Profile>).transpose() {
            Ok(profile) => profile.unwrap_or_default(),
            Err(unknown) => return Err(ApiError::invalid(unknown.to_string())),
        };
        if profile == Profile::Codex && !self.allow_codex_profile {
            return Err(forbidden(
                "this service serves chat conversations only; the coding-agent profile needs the operator's \
                 --allow-profile codex"
                    .to_owned(),
            ));
        }
        let mut config = serde_json::Map::new();
        if let Some(name) = asked.reasoning_effort {
            let effort = ReasoningEffort::from(Effort::parse(&name)?);
            config.insert("model_reasoning_effort".to_owned(), json!(effort));
        }
        for name in asked.tools {
            let Some(server) = self.mcp_servers.get(&name) else {
                return Err(forbidden(format!(
                    "tool {name:?} is not offered by this service; the operator names MCP servers with \
                     --allow-mcp NAME=COMMAND"
                )));
            };
            config.insert(format!("mcp_servers.{name}"), json!({"command": server.command, "args": server.args}));
        }
        if profile == Profile::Codex {
            // The coding agent: confined to its sandbox, and every command not known to be safe
            // needs an approval, which the service's policy declines.
            settings.sandbox = Some(self.agent_sandbox);
            settings.approval_policy = Some(ApprovalPolicy::Untrusted);
            config.insert("sandbox_workspace_write.network_access".to_owned(), Value::Bool(self.agent_network));
        }
        if !config.is_empty() {
            settings.config = Some(config);
        }
        Ok((settings, profile))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(profile: Option<&str>, tools: &[&str]) -> Asked {
        Asked {
            profile: profile.map(str::to_owned),
            reasoning_effort: None,
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn chat_by_default_and_the_rest_only_as_the_operator_allows() {
        let closed = AgentPolicy::default();
        let (settings, profile) = closed.apply(asked(None, &[]), ThreadSettings::default()).ok().unwrap();
        assert_eq!((profile, settings.config), (Profile::Chat, None));
        let err = closed.apply(asked(Some("codex"), &[]), ThreadSettings::default()).err().unwrap();
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        let err = closed.apply(asked(None, &["weather"]), ThreadSettings::default()).err().unwrap();
        assert_eq!(err.status(), StatusCode::FORBIDDEN);

        let (name, server) = McpServer::parse("weather=python3 weather.py --fast").unwrap();
        let open =
            AgentPolicy { allow_codex_profile: true, mcp_servers: [(name, server)].into(), ..AgentPolicy::default() };
        let (settings, profile) =
            open.apply(asked(Some("codex"), &["weather"]), ThreadSettings::default()).ok().unwrap();
        assert_eq!(profile, Profile::Codex);
        assert_eq!(settings.sandbox, Some(SandboxMode::ReadOnly));
        assert_eq!(settings.approval_policy, Some(ApprovalPolicy::Untrusted));
        let config = settings.config.unwrap();
        assert_eq!(config["mcp_servers.weather"], json!({"command": "python3", "args": ["weather.py", "--fast"]}));
        assert_eq!(config["sandbox_workspace_write.network_access"], json!(false));
        assert!(McpServer::parse("no command").is_err());
        assert!(McpServer::parse("bad name=x").is_err());
    }

    #[test]
    fn an_offered_effort_goes_to_codex_and_another_is_a_400_naming_the_offered_ones() {
        let policy = AgentPolicy::default();
        let low = Asked { reasoning_effort: Some("low".to_owned()), ..asked(None, &[]) };
        let (settings, _) = policy.apply(low, ThreadSettings::default()).ok().unwrap();
        assert_eq!(settings.config.unwrap()["model_reasoning_effort"], json!("low"));
        for name in ["extreme", "", "LOW"] {
            let odd = Asked { reasoning_effort: Some(name.to_owned()), ..asked(None, &[]) };
            let err = policy.apply(odd, ThreadSettings::default()).err().unwrap();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert!(err.message().contains("is not one of minimal, low, medium, high"), "{}", err.message());
        }
    }
}
