//! Going on from an earlier turn of a conversation: a new conversation with the history up to
//! that turn, the original left as it is.

use crate::error::PoolError;
use crate::pool::Pool;
use crate::profile::Profile;
use codex_pool_protocol::TurnId;
use codex_pool_store::ConversationId;

/// Where a conversation goes on from one of its turns ([`Pool::fork_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fork {
    /// The turn is the conversation's latest: it goes on in the conversation itself.
    Latest,
    /// A new conversation, with the history up to the turn (its settings, profile and metadata
    /// the original's).
    New(ConversationId),
    /// The conversation's history holds no such turn.
    NoSuchTurn,
}

impl Pool {
    /// A conversation that goes on from turn `turn_id` of conversation `id`: `id` itself when the
    /// turn is its latest (its stored [`last_turn`](codex_pool_store::ThreadRecord::last_turn)
    /// says so without reading the history), else a new conversation given the history up to
    /// and with the turn's items. Fails with [`PoolError::UnknownThread`] for an unknown `id`.
    pub async fn fork_at(&self, id: &ConversationId, turn_id: &TurnId) -> Result<Fork, PoolError> {
        let record = self.inner.store.load(id).await?.ok_or_else(|| PoolError::UnknownThread(id.clone()))?;
        if record.last_turn.as_ref() == Some(turn_id) {
            return Ok(Fork::Latest);
        }
        // Records written before the last turn was kept, and a finished turn after the one
        // asked for that added nothing: the history says.
        let items = self.all_items(id).await?;
        let Some(last_of_turn) = items.iter().rposition(|i| &i.turn_id == turn_id) else {
            return Ok(Fork::NoSuchTurn);
        };
        if last_of_turn + 1 == items.len() {
            return Ok(Fork::Latest);
        }
        let profile = Profile::stored(&record)?;
        let history = items.into_iter().take(last_of_turn + 1).map(|i| i.item).collect();
        let fork = self.create_thread_with_history(record.settings, profile, record.metadata, history).await?;
        tracing::debug!(conversation = %id, %fork, "going on from an earlier turn: forked");
        Ok(Fork::New(fork))
    }
}
