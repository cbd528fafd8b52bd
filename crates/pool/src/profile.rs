//! Conversation profiles: what codex loads and sends the model for a conversation.
//!
//! [`Profile::Chat`], the default, is for chat and role-play: no tools, no skills, no plugins, no
//! permission or environment blocks, and short neutral base instructions in place of codex's
//! coding-agent prompt. [`Profile::Codex`] is codex's own configuration (the full coding agent).
//! Chat threads are also `ephemeral` in codex: codex writes no rollout file and no per-turn state
//! for them; their history lives in the pool's thread store, which rebuilds them when needed.
//! A profile is applied per thread (through `thread/start`'s `config` and `baseInstructions`), so
//! conversations of both kinds share one pool; a conversation's own settings win over its
//! profile's (for example `config.mcp_servers` to give a chat conversation an MCP server).

use crate::error::PoolError;
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_store::ThreadRecord;
use serde_json::{Map, Value};
use std::str::FromStr;

/// The base instructions of the chat profile, used when a conversation sets none.
pub const CHAT_BASE_INSTRUCTIONS: &str = "You are a helpful conversational assistant. Follow the developer \
instructions of this conversation, including any character or role they describe, and answer the user directly.";

/// Settings of the chat profile, each measured on the pinned CLI (see the README's table).
/// Keys are codex config keys, applied as the thread's `config`.
pub const CHAT_CONFIG: &[(&str, &str)] = &[
    ("features.shell_tool", "false"),
    ("features.view_image", "false"),
    ("web_search", "\"disabled\""),
    ("agents.enabled", "false"),
    ("features.goals", "false"),
    ("tools.experimental_request_user_input.enabled", "false"),
    ("include_permissions_instructions", "false"),
    ("include_environment_context", "false"),
    ("include_collaboration_mode_instructions", "false"),
    ("approval_policy", "\"never\""),
    ("features.apps", "false"),
    ("features.image_generation", "false"),
    ("features.tool_suggest", "false"),
    ("features.sleep_tool", "false"),
];

/// What a conversation is set up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Profile {
    /// Chat and role-play: lean requests, no tools unless the conversation asks for them.
    #[default]
    Chat,
    /// codex's own configuration: the full coding agent with its tools.
    Codex,
}

impl Profile {
    /// A stored conversation's profile, read strictly: a name the pool does not know (a corrupt
    /// or hand-edited record) is [`PoolError::CorruptProfile`], never taken for another profile.
    pub(crate) fn stored(record: &ThreadRecord) -> Result<Self, PoolError> {
        record.profile.parse().map_err(|_| PoolError::CorruptProfile { thread_id: record.id.clone() })
    }

    /// The name as configured (`chat`, `codex`; `default` is taken for `codex` too).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Chat => "chat",
            Profile::Codex => "codex",
        }
    }

    /// Whether codex keeps the profile's threads in memory only (`thread/start`'s `ephemeral`).
    /// The history is in the pool's store either way; codex's own copy on disk only serves
    /// people who open the thread with codex's tools, which coding-agent conversations may want.
    pub fn ephemeral(self) -> bool {
        self == Profile::Chat
    }

    /// Whether `instructions` are the base instructions [`Profile::apply`] fills in (and not
    /// ones a caller gave): what to leave out when showing a conversation's own instructions.
    pub fn is_default_instructions(instructions: &str) -> bool {
        instructions == CHAT_BASE_INSTRUCTIONS
    }

    /// Applies the profile to a conversation's settings; what the settings already say wins.
    pub fn apply(self, mut settings: ThreadSettings) -> ThreadSettings {
        if self == Profile::Codex {
            return settings;
        }
        if settings.base_instructions.is_none() {
            settings.base_instructions = Some(CHAT_BASE_INSTRUCTIONS.to_owned());
        }
        let mut config = Map::new();
        for (key, value) in CHAT_CONFIG {
            let value: Value = serde_json::from_str(value).expect("profile values are JSON literals");
            config.insert((*key).to_owned(), value);
        }
        // The conversation's own keys override the profile's.
        if let Some(own) = settings.config.take() {
            config.extend(own);
        }
        settings.config = Some(config);
        settings
    }
}

/// An unknown profile name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown profile {0:?}; use chat or codex")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "chat" => Ok(Profile::Chat),
            "default" | "codex" => Ok(Profile::Codex),
            _ => Err(UnknownProfile(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_profile_fills_in_and_yields_to_the_conversation() {
        let own = ThreadSettings {
            base_instructions: Some("You are Ada.".into()),
            config: Some(json!({"features.shell_tool": true, "mcp_servers": {}}).as_object().unwrap().clone()),
            ..Default::default()
        };
        let s = Profile::Chat.apply(own);
        assert_eq!(s.base_instructions.as_deref(), Some("You are Ada."));
        let config = s.config.unwrap();
        assert_eq!(config["features.shell_tool"], json!(true), "the conversation's own setting wins");
        assert_eq!(config["web_search"], json!("disabled"));
        assert!(config.contains_key("mcp_servers"));

        let s = Profile::Chat.apply(ThreadSettings::default());
        assert_eq!(s.base_instructions.as_deref(), Some(CHAT_BASE_INSTRUCTIONS));
        assert_eq!(Profile::Codex.apply(ThreadSettings::default()), ThreadSettings::default());
        assert_eq!("default".parse::<Profile>().unwrap(), Profile::Codex);
        assert!("lean".parse::<Profile>().is_err());
    }
}
