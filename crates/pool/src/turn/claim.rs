//! A conversation's claim for one turn, and what a turn holds with it once codex may run it.
//! The claim is the one place a turn gives its conversation back: what that does depends on
//! the state the turn ended in, which each state sets as it is entered ([`Ending`]).

use crate::history::{own_items, own_items_after};
use crate::ownership::TurnLease;
use crate::routing::Routing;
use crate::store_writer::{StoreWriter, WriteTicket};
use crate::tools::ClientTools;
use codex_pool_protocol::types::UserInput;
use codex_pool_protocol::TurnId;
use codex_pool_store::{ConversationId, PendingCall, TurnRecord};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// A conversation taken for one turn: `TurnRunning` in the routing table from
/// [`Routing::claim_turn`] until the claim is dropped, which makes it `Idle` again as its
/// [`Ending`] says. A new claim ends as [`Ending::Kept`]; each state of the turn sets the end
/// it needs as it is entered ([`Claim::ending`]), so whatever drops it (an error, a caller that
/// gave up, the end of the turn) gives the conversation back right.
pub(crate) struct Claim {
    routing: Arc<Routing>,
    conversation: ConversationId,
    ending: Ending,
}

/// How a claim gives its conversation back: what the turn left in codex's copy of it.
pub(crate) enum Ending {
    /// codex's copy holds what the store holds (nothing reached codex, codex refused the turn,
    /// or the store kept it): it serves the next turn.
    Kept,
    /// codex's copy may hold what the store does not (a `turn/start` that may have reached
    /// codex, a turn codex did not finish, a turn the store did not keep): the next turn
    /// rebuilds the conversation from the store, and the reaper unloads the old thread.
    Rebuild,
    /// codex finished the turn and its record is being written, with nobody left to wait for
    /// the store's answer: the next turn waits for it (and rebuilds if the turn was not kept).
    Unconfirmed(WriteTicket),
}

impl Claim {
    /// The claim on `conversation`, which [`Routing::claim_turn`] has just made `TurnRunning`.
    pub(crate) fn new(routing: Arc<Routing>, conversation: ConversationId) -> Self {
        Self { routing, conversation, ending: Ending::Kept }
    }

    /// The conversation claimed.
    pub(crate) fn conversation(&self) -> &ConversationId {
        &self.conversation
    }

    /// The claim, ending as `ending` from now on.
    pub(crate) fn ending(mut self, ending: Ending) -> Self {
        self.ending = ending;
        self
    }

    /// The conversation's client tool calls with no output, as the store now holds them.
    pub(crate) fn set_pending(&self, pending: Vec<PendingCall>) {
        self.routing.set_pending(&self.conversation, pending);
    }

    /// Gives the conversation back now, as `ending` says.
    pub(crate) fn end(self, ending: Ending) {
        drop(self.ending(ending));
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let unconfirmed = match std::mem::replace(&mut self.ending, Ending::Kept) {
            Ending::Kept => None,
            Ending::Rebuild => {
                self.routing.forget_codex_thread(&self.conversation);
                None
            }
            Ending::Unconfirmed(ticket) => Some(ticket),
        };
        self.routing.end_turn(&self.conversation, unconfirmed);
    }
}

/// What a turn holds from the moment codex may run it to its end: its claim, room on its
/// process, and (several nodes) the lease whose fence its writes carry.
pub(crate) struct Held {
    pub claim: Claim,
    pub lease: Option<TurnLease>,
    /// Room on its process, given back when the turn ends.
    _permit: OwnedSemaphorePermit,
}

impl Held {
    pub(crate) fn new(claim: Claim, lease: Option<TurnLease>, permit: OwnedSemaphorePermit) -> Self {
        Self { claim, lease, _permit: permit }
    }
}

/// A turn codex runs: what it holds, and what the store is to keep of it so far. Its claim ends
/// as [`Ending::Rebuild`]: a turn dropped here was not finished by codex, so nothing of it is
/// kept since its last checkpoint (the store has what it wrote at each tool call), and codex's
/// copy is not trusted.
pub(crate) struct Running {
    held: Held,
    writer: Arc<StoreWriter>,
    /// The turn's input: how its own user message is told from what codex records before it.
    input: Vec<UserInput>,
    /// What the turn gave codex itself, first in its record: the tool outputs a continuation
    /// injected before it ran.
    given: Vec<Value>,
    /// The turn's history items since its last write.
    items: Vec<Value>,
    /// A checkpoint has been written: every item from now on is the turn's own.
    trimmed: bool,
    /// codex is compacting the history: what it records now is the summariser's answer.
    compacting: bool,
    /// A turn codex ran by itself (a compaction): its items go with this earlier turn, which
    /// stays the conversation's latest, and it counts as no turn.
    record_as: Option<TurnId>,
    /// The conversation's client tools, and the calls of them the model made in the response
    /// being read.
    pub tools: ClientTools,
    /// The first text delta was seen (for the hop trace).
    pub first_delta: bool,
    /// The answers codex marked `hide` or `block`, by item id (its recorded message may come
    /// after the mark).
    moderated: Vec<(String, codex_pool_protocol::Withheld)>,
}

impl Running {
    /// A turn of `input`, which gave codex `given` (tool outputs) before it started.
    pub(crate) fn new(
        held: Held,
        writer: Arc<StoreWriter>,
        input: Vec<UserInput>,
        given: Vec<Value>,
        tools: ClientTools,
    ) -> Self {
        let held = Held { claim: held.claim.ending(Ending::Rebuild), ..held };
        Self {
            held,
            writer,
            input,
            given,
            items: Vec::new(),
            trimmed: false,
            compacting: false,
            record_as: None,
            tools,
            first_delta: false,
            moderated: Vec::new(),
        }
    }

    /// codex recorded `item` in the turn. During a compaction, that is the summariser's answer,
    /// kept as the compaction's marker (see [`crate::compaction`]).
    pub(crate) fn push(&mut self, item: Value) {
        if self.compacting && item["type"] == "message" && item["role"] == "assistant" {
            self.items.push(crate::compaction::marker(&item));
            return;
        }
        self.tools.saw(&item);
        let mut item = item;
        if let Some((_, mode)) = self.moderated.iter().find(|(id, _)| item["id"].as_str() == Some(id)) {
            crate::history::mark_moderated(&mut item, *mode);
        }
        self.items.push(item);
    }

    /// codex marked its answer `id` `mode`: the recorded message of that id is kept marked.
    pub(crate) fn moderated(&mut self, id: &str, mode: codex_pool_protocol::Withheld) {
        for item in self.items.iter_mut().filter(|item| item["id"].as_str() == Some(id)) {
            crate::history::mark_moderated(item, mode);
        }
        self.moderated.push((id.to_owned(), mode));
    }

    /// Records the turn's items with `turn` (see the field `record_as`).
    pub(crate) fn record_as(&mut self, turn: TurnId) {
        self.record_as = Some(turn);
    }

    /// codex began (or ended) compacting the history.
    pub(crate) fn compacting(&mut self, now: bool) {
        self.compacting = now;
    }

    /// The conversation's pending tool calls are now `pending` in the store.
    pub(crate) fn set_pending(&self, pending: Vec<PendingCall>) {
        self.held.claim.set_pending(pending);
    }

    /// The lease whose fence the turn's writes carry (several nodes).
    pub(crate) fn lease(&self) -> Option<&TurnLease> {
        self.held.lease.as_ref()
    }

    /// The items to write next: the turn's own since the last write.
    fn take_items(&mut self) -> Vec<Value> {
        let mut items = std::mem::take(&mut self.items);
        if !std::mem::replace(&mut self.trimmed, true) {
            if self.given.is_empty() {
                own_items(&mut items, &self.input);
            } else {
                own_items_after(&mut items, &self.given);
            }
            let mut given = std::mem::take(&mut self.given);
            given.append(&mut items);
            items = given;
        }
        items
    }

    /// The model called client tools and the turn waits on them: what the turn recorded so far,
    /// the calls included, is written with the calls as the conversation's pending ones.
    pub(crate) fn checkpoint(&mut self, turn_id: &TurnId, pending: Vec<PendingCall>) -> WriteTicket {
        let items = self.take_items();
        let record = TurnRecord {
            fence: self.held.lease.as_ref().map(TurnLease::fence),
            ..TurnRecord::partial(self.held.claim.conversation.clone(), turn_id.as_str(), items, pending)
        };
        self.writer.record(record)
    }

    /// codex finished the turn: its record is queued; the store's answer comes with the ticket.
    pub(crate) fn record(mut self, turn_id: &TurnId) -> (Held, WriteTicket) {
        let items = self.take_items();
        let Self { held, writer, record_as, .. } = self;
        let conversation = held.claim.conversation.clone();
        let record = match record_as {
            Some(earlier) => TurnRecord::partial(conversation, earlier, items, Vec::new()),
            None => TurnRecord::completed(conversation, turn_id.as_str(), items),
        };
        let record = TurnRecord { fence: held.lease.as_ref().map(TurnLease::fence), ..record };
        let ticket = writer.record(record);
        (held, ticket)
    }

    /// The turn ended without codex finishing it: nothing of it is kept.
    pub(crate) fn abandon(self) {
        self.held.claim.end(Ending::Rebuild);
    }
}
