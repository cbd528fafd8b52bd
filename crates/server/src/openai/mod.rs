//! OpenAI's API on the pool, so clients built on the official libraries use Codex conversations
//! without new integration:
//!
//! - `POST /v1/responses` ([`responses`]): the Responses API, stateful like the pool:
//!   `previous_response_id` continues that conversation on its codex thread; a request without
//!   it whose input extends a conversation's history continues it too, as stateless clients
//!   need ([`rounds`], [`transcripts`]). `GET /v1/responses/{id}` ([`readback`]) reads one back.
//! - `POST /v1/chat/completions` ([`chat`]): Chat Completions. A request whose earlier messages
//!   are a conversation's history continues it ([`transcripts`]); any other starts one, given
//!   the earlier messages as history.
//!
//! Both take function tools ([`tools`]): the model's calls stop the reply (a round of the turn,
//! [`reply`]); the client runs them and sends their outputs, which the same turn takes (or, when
//! it is gone, a turn that continues from the store), and the next round follows.
//! - `GET /v1/models[/{id}]` ([`models`]): what the service serves.
//!
//! Errors on these routes take OpenAI's shape, `{"error": {"message", "type", "param",
//! "code"}}` ([`error`]); a field the pool cannot honour is a 400 naming it (`param`).
//!
//! Ids are derived from what the store keeps, so they survive a restart with no table of their
//! own: a response is `resp_<conversation id>_<codex turn id>` (`..._r<n>` for the `n`th round
//! of a turn that called tools: the round after the `n`th calls' outputs), its message
//! `msg_<turn id>_<n>` (`msg_<turn id>_r<round>_<n>`), a function call `fc_<call id>`, a chat
//! completion `chatcmpl-<conversation id>_<turn id>` (`..._r<n>`).

pub(crate) mod chat;
pub(crate) mod error;
pub(crate) mod input;
pub(crate) mod models;
pub(crate) mod readback;
pub(crate) mod reply;
pub(crate) mod responses;
pub(crate) mod rounds;
pub(crate) mod tools;
pub(crate) mod transcripts;
pub(crate) mod wire;

use codex_pool::ConversationId;
use codex_pool_protocol::TurnId;
use std::time::{SystemTime, UNIX_EPOCH};

/// Whether a path is one of OpenAI's (its errors take OpenAI's shape).
pub(crate) fn is_openai_path(path: &str) -> bool {
    ["/v1/responses", "/v1/chat/", "/v1/models"].iter().any(|p| path.starts_with(p))
}

/// A turn's round (`0`, or `_r<n>`), as ids end.
fn round_suffix(round: usize) -> String {
    if round == 0 {
        String::new()
    } else {
        format!("_r{round}")
    }
}

/// The id of the response that a round of a turn of a conversation is.
pub(crate) fn response_id(conversation: &ConversationId, turn_id: &TurnId, round: usize) -> String {
    format!("resp_{conversation}_{turn_id}{}", round_suffix(round))
}

/// The conversation, codex turn and round a response id names (conversation and turn ids are
/// codex's, which hold no `_`).
pub(crate) fn parse_response_id(id: &str) -> Option<(ConversationId, TurnId, usize)> {
    let (conversation, rest) = id.strip_prefix("resp_")?.split_once('_')?;
    let (turn, round) = match rest.split_once("_r") {
        Some((turn, round)) => (turn, round.parse::<usize>().ok().filter(|r| *r > 0)?),
        None => (rest, 0),
    };
    let ok = !conversation.is_empty() && !turn.is_empty() && !turn.contains('_');
    ok.then(|| (ConversationId::from(conversation), TurnId::from(turn), round))
}

/// The id of the `n`th message (from 0) of a round of a turn's output.
pub(crate) fn message_id(turn_id: &TurnId, round: usize, n: usize) -> String {
    format!("msg_{turn_id}{}_{n}", round_suffix(round))
}

/// The id of a chat completion: a round of a turn.
pub(crate) fn completion_id(conversation: &ConversationId, turn_id: &TurnId, round: usize) -> String {
    format!("chatcmpl-{conversation}_{turn_id}{}", round_suffix(round))
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_ids_name_their_conversation_and_turn() {
        let conversation = ConversationId::from("019a-b-c");
        let id = response_id(&conversation, &TurnId::from("019d-e"), 0);
        assert_eq!(id, "resp_019a-b-c_019d-e");
        assert_eq!(parse_response_id(&id), Some((conversation.clone(), TurnId::from("019d-e"), 0)));
        let id = response_id(&conversation, &TurnId::from("019d-e"), 2);
        assert_eq!(parse_response_id(&id), Some((conversation, TurnId::from("019d-e"), 2)));
        for bad in ["resp_", "resp_x", "resp__t", "msg_a_b", "resp_a_", "resp_a_t_r0", "resp_a_t_rx", "resp_a_t_x"] {
            assert_eq!(parse_response_id(bad), None, "{bad}");
        }
    }
}
