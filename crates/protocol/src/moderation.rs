//! What codex says about how an answer may be shown: an `agentMessage` item's `moderation`
//! (codex 0.171.0: `{"moderated": bool, "display": {"mode": "show" | "hide" | "block", ...}}`;
//! 0.169.0 had `display: {"action", "blockType", ...}`). A chat front end is to hide or block
//! the text when told to; codex keeps the text in its own history either way.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An answer's moderation, as codex reports it on an `agentMessage` item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentMessageModeration {
    /// Whether the answer was moderated at all.
    pub moderated: bool,
    /// How to present it, when codex says.
    #[serde(default)]
    pub display: Option<AgentMessageDisplay>,
}

/// How to present a moderated answer: a union tagged by `mode`. The other fields (`version`,
/// `replacement`, `reason`, `annotation`, `trustedContacts`) are kept as codex sent them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum AgentMessageDisplay {
    /// Show the text (possibly with an annotation).
    Show {
        /// The rest of the display, as sent.
        #[serde(flatten)]
        rest: Map<String, Value>,
    },
    /// Hide the text (a `replacement` says what to show instead).
    Hide {
        /// The rest of the display, as sent.
        #[serde(flatten)]
        rest: Map<String, Value>,
    },
    /// Block the text (a `reason` says why).
    Block {
        /// The rest of the display, as sent.
        #[serde(flatten)]
        rest: Map<String, Value>,
    },
}

/// What a client may be given of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Withheld {
    /// Codex says to hide the text.
    Hide,
    /// Codex says to block the text.
    Block,
}

impl Withheld {
    /// The mode of a name on the wire (`hide`, `block`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "hide" => Some(Self::Hide),
            "block" => Some(Self::Block),
            _ => None,
        }
    }

    /// The mode's name on the wire (`hide`, `block`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hide => "hide",
            Self::Block => "block",
        }
    }
}

impl AgentMessageModeration {
    /// The moderation of an `agentMessage` item (raw JSON), if it has one.
    pub fn of_item(item: &Value) -> Option<Result<Self, serde_json::Error>> {
        let m = item.get("moderation").filter(|m| !m.is_null())?;
        Some(serde_json::from_value(m.clone()))
    }

    /// Whether the text must be withheld from clients, and how. A moderated answer whose display
    /// this version cannot read (another codex version's shape, a new mode) is withheld as hidden:
    /// not showing text codex flagged is the safe side.
    pub fn withheld_in(item: &Value) -> Option<Withheld> {
        match Self::of_item(item)? {
            Ok(m) => match m.display {
                Some(AgentMessageDisplay::Hide { .. }) => Some(Withheld::Hide),
                Some(AgentMessageDisplay::Block { .. }) => Some(Withheld::Block),
                Some(AgentMessageDisplay::Show { .. }) => None,
                None if m.moderated => Some(Withheld::Hide),
                None => None,
            },
            Err(_) => {
                let moderated = item["moderation"].get("moderated").and_then(Value::as_bool).unwrap_or(true);
                moderated.then_some(Withheld::Hide)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modes_decide_what_is_withheld() {
        let item = |m: Value| json!({"type": "agentMessage", "id": "i", "text": "t", "moderation": m});
        let display = |mode: &str| json!({"moderated": true, "display": {"mode": mode, "version": 1}});
        assert_eq!(AgentMessageModeration::withheld_in(&item(display("hide"))), Some(Withheld::Hide));
        assert_eq!(AgentMessageModeration::withheld_in(&item(display("block"))), Some(Withheld::Block));
        assert_eq!(AgentMessageModeration::withheld_in(&item(display("show"))), None);
        assert_eq!(AgentMessageModeration::withheld_in(&item(Value::Null)), None);
        assert_eq!(AgentMessageModeration::withheld_in(&json!({"type": "agentMessage", "text": "t"})), None);
        assert_eq!(AgentMessageModeration::withheld_in(&item(json!({"moderated": false}))), None);
        // A mode this version does not know, or 0.169.0's shape: withheld.
        assert_eq!(AgentMessageModeration::withheld_in(&item(display("blur"))), Some(Withheld::Hide));
        let old = json!({"moderated": true, "display": {"action": "hide"}});
        assert_eq!(AgentMessageModeration::withheld_in(&item(old)), Some(Withheld::Hide));
    }
}
