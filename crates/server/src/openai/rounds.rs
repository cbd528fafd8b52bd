//! A request's round on both OpenAI routes: where it runs (the conversation whose transcript the
//! request extends, or a new one given the request's history), and, once the round has stopped,
//! the conversation indexed under its new transcript before the client reads the stop.
//!
//! A request runs one of two things ([`New`]): the user's new message, as a turn; or outputs
//! for the tool calls the model waits on, given to the conversation (`api::tools::submit`): the
//! turn that waits takes them and goes on, or, when none waits any more, a new turn continues
//! from the store. Either way what the client reads is the round that follows: the model's reply
//! up to its next tool calls or the turn's end.

use crate::api::tools::{submit, Resumed};
use crate::events::FailureKind;
use crate::metrics::ChatOutcome;
use crate::openai::error::OpenAiError;
use crate::openai::input::{Entry, New, Role, Said, Transcript};
use crate::openai::reply::{self, Ending, Render, Reply, Step};
use crate::openai::transcripts::{self, TranscriptHead};
use crate::runs::RunLog;
use crate::state::AppState;
use axum::response::sse::{Event, Sse};
use codex_pool::{ConversationId, PoolError, Profile, TurnOptions};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_store::TranscriptKey;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{Map, Value};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// What identifies a transcript besides its entries, owned (indexing runs after the request).
#[derive(Debug, Clone)]
pub(crate) struct Head {
    /// The model, as the client named it.
    pub(crate) model: String,
    /// The system prompt.
    pub(crate) system: Option<String>,
    /// The developer prompt.
    pub(crate) developer: Option<String>,
    /// The API key whose transcripts these are (`None`: the operator's): two keys sending the
    /// same transcript never share a conversation.
    pub(crate) owner: Option<String>,
}

impl Head {
    fn borrowed(&self) -> TranscriptHead<'_> {
        TranscriptHead {
            model: &self.model,
            system: self.system.as_deref(),
            developer: self.developer.as_deref(),
            owner: self.owner.as_deref(),
        }
    }

    /// The key of a transcript of `entries` under this head.
    pub(crate) fn key(&self, entries: &[Entry]) -> TranscriptKey {
        transcripts::key(&self.borrowed(), entries)
    }
}

/// A round running: its conversation, the log its events are in and where it begins there.
pub(crate) struct Started {
    /// The conversation.
    pub(crate) conversation: ConversationId,
    /// The conversation was made for this request.
    pub(crate) created: bool,
    /// The turn's log.
    pub(crate) log: Arc<RunLog>,
    /// The round begins after this event of the log.
    pub(crate) after: u64,
    /// Whether the request continued a conversation.
    pub(crate) outcome: ChatOutcome,
}

impl Started {
    /// The round's number in its turn.
    pub(crate) fn round(&self) -> usize {
        reply::round_after(&self.log, self.after)
    }
}

/// How a new conversation for a request is made.
pub(crate) struct Creation {
    /// Its settings (tools included).
    pub(crate) settings: ThreadSettings,
    /// Its metadata.
    pub(crate) metadata: Map<String, Value>,
}

/// Runs `said` in `id`: its outputs given to the calls it waits on, or its message as a turn.
pub(crate) async fn run_in(
    state: &AppState,
    id: &ConversationId,
    said: &Transcript,
    options: TurnOptions,
    begun: Instant,
) -> Result<(Arc<RunLog>, u64), OpenAiError> {
    match &said.new {
        New::Outputs(outputs) => {
            let Resumed { log, after } = submit(state, id, outputs.clone(), options).await?;
            Ok((log, after))
        }
        New::Message(message) => {
            let room = crate::api::turns::room_for(state, id).await?;
            let turn = state.pool.start_turn(id, message.input(), options).await?;
            Ok((state.runs.run(turn, room, begun), 0))
        }
    }
}

/// Runs a request that names no conversation: in the one whose transcript (`head`, then
/// `said.history`) it extends, if one is indexed so and as it was left; else in a new one
/// made by `create`, given the history (and the outputs, whose calls it then holds).
pub(crate) async fn begin(
    state: &AppState,
    head: &Head,
    said: &Transcript,
    options: TurnOptions,
    create: Creation,
    begun: Instant,
) -> Result<Started, OpenAiError> {
    let key = head.key(&said.history);
    if let Some((id, turns)) = transcripts::take(&state.pool, &key).await? {
        match continued(state, &id, turns, said, options.clone(), begun).await {
            Ok(Some((log, after))) => {
                return Ok(Started { conversation: id, created: false, log, after, outcome: ChatOutcome::Continued })
            }
            // Gone, or gone on without the transcript: a new conversation takes over.
            Ok(None) => {}
            // A turn runs on it through the native API: a new conversation, this one kept.
            Err(Refusal::Pool(PoolError::ThreadBusy(_))) => transcripts::put(&state.pool, key, id, turns).await,
            // Any other error (another node serves it, the store failed, calls still wait):
            // the entry goes back, so the request tried again, here or on that node, finds it.
            Err(e) => {
                transcripts::put(&state.pool, key, id, turns).await;
                return Err(e.into());
            }
        }
    }
    begin_new(state, said, options, create, begun).await
}

/// Runs a request in a new conversation made by `create`, given the request's history (and its
/// outputs, whose calls it then holds: the model runs over them).
pub(crate) async fn begin_new(
    state: &AppState,
    said: &Transcript,
    options: TurnOptions,
    create: Creation,
    begun: Instant,
) -> Result<Started, OpenAiError> {
    let mut history = said.history_items();
    let input = match &said.new {
        New::Message(message) => message.input(),
        // The calls and their outputs are history; the model runs over them.
        New::Outputs(outputs) => {
            history.extend(outputs.iter().map(|o| o.to_item()));
            Vec::new()
        }
    };
    let caller = crate::keys::caller();
    crate::keys::limits::new_conversation(state, &caller).await?;
    let room = crate::api::turns::room(state)?;
    let id = state.pool.create_thread_with_history(create.settings, Profile::Chat, create.metadata, history).await?;
    if let Err(e) = crate::keys::own(&state.pool, &state.metrics, &caller, &id).await {
        let _ = state.pool.delete_thread(&id).await;
        return Err(e.into());
    }
    match state.pool.start_turn(&id, input, options).await {
        Ok(turn) => {
            let log = state.runs.run(turn, room, begun);
            Ok(Started { conversation: id, created: true, log, after: 0, outcome: ChatOutcome::New })
        }
        Err(e) => {
            let _ = state.pool.delete_thread(&id).await;
            Err(e.into())
        }
    }
}

/// Why a conversation found by its transcript was not continued.
enum Refusal {
    Pool(PoolError),
    Api(OpenAiError),
}

impl From<Refusal> for OpenAiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Pool(e) => e.into(),
            Refusal::Api(e) => e,
        }
    }
}

/// The round of a conversation a transcript's entry named, if it is as the transcript left it
/// (`turns` turns: a turn through the native API since would be news to the client). `None`
/// when it is not, or was deleted.
async fn continued(
    state: &AppState,
    id: &ConversationId,
    turns: u64,
    said: &Transcript,
    options: TurnOptions,
    begun: Instant,
) -> Result<Option<(Arc<RunLog>, u64)>, Refusal> {
    match state.pool.conversation(id).await.map_err(Refusal::Pool)? {
        Some(info) if info.record.turns == turns => {}
        Some(_) => {
            tracing::debug!(conversation = %id, "a conversation went on elsewhere; starting a new one");
            return Ok(None);
        }
        None => return Ok(None),
    }
    match &said.new {
        New::Outputs(_) => match run_in(state, id, said, options, begun).await {
            Ok(run) => Ok(Some(run)),
            Err(e) => Err(Refusal::Api(e)),
        },
        New::Message(message) => {
            let room = crate::api::turns::room(state).map_err(|e| Refusal::Api(e.into()))?;
            match state.pool.start_turn(id, message.input(), options).await {
                Ok(turn) => Ok(Some((state.runs.run(turn, room, begun), 0))),
                // Deleted meanwhile.
                Err(PoolError::UnknownThread(_)) => Ok(None),
                Err(e) => Err(Refusal::Pool(e)),
            }
        }
    }
}

/// The transcript a conversation stands at once a round has stopped: `said` (what came before,
/// and what ran), then the round's output (its messages, joined into one when `joined`, as
/// Chat Completions sends them back; then its calls). `None` when no client's transcript will
/// match it (a failed or interrupted turn); what came before alone when the turn left nothing.
pub(crate) fn after_round(said: &Transcript, reply: &Reply, joined: bool) -> Option<Vec<Entry>> {
    let mut entries = said.history.clone();
    match reply.ending() {
        Some(Ending::Failed { kind: FailureKind::Aborted(_) | FailureKind::EventsTooLarge, .. }) => {
            return Some(entries)
        }
        Some(Ending::Failed { .. }) | Some(Ending::Completed { interrupted: true, .. }) => return None,
        Some(Ending::Completed { interrupted: false, .. }) => {}
        None if reply.calls().is_empty() => return None,
        None => {}
    }
    match &said.new {
        New::Message(message) => entries.push(Entry::Message(Role::User, message.clone())),
        New::Outputs(outputs) => entries.extend(outputs.iter().cloned().map(Entry::Output)),
    }
    if joined {
        let text = reply.text();
        // An assistant message that only calls tools says nothing of its own.
        if !text.trim().is_empty() || reply.calls().is_empty() {
            entries.push(Entry::Message(Role::Assistant, Said::text(text)));
        }
    } else {
        entries.extend(reply.messages().iter().map(|m| Entry::Message(Role::Assistant, Said::text(m.clone()))));
    }
    entries.extend(reply.calls().iter().cloned().map(Entry::Call));
    Some(entries)
}

/// Waits, in a task of the service's, for the round after `after` in `log` to stop, then indexes
/// the conversation under its new transcript; answers the round's reply once indexed (a client
/// that reads the stop and sends the next request at once finds the conversation).
/// Without `index` (a conversation to forget), it only answers the reply. `must_call`: the
/// round must stop at tool calls ([`Reply::new`]).
pub(crate) fn index_when_stopped(
    state: &AppState,
    started: &Started,
    index: Option<Head>,
    said: Transcript,
    (joined, must_call): (bool, bool),
) -> oneshot::Receiver<Reply> {
    let (tx, rx) = oneshot::channel();
    let (pool, log, after, id) = (state.pool.clone(), started.log.clone(), started.after, started.conversation.clone());
    state.runs.task(async move {
        let reply = reply::settle(&log, after, Reply::new(must_call)).await;
        let entries = index.and_then(|head| Some((after_round(&said, &reply, joined)?, head)));
        if let Some((entries, head)) = entries {
            match pool.conversation(&id).await {
                Ok(Some(info)) => transcripts::put(&pool, head.key(&entries), id, info.record.turns).await,
                Ok(None) => {}
                Err(e) => tracing::warn!(conversation = %id, error = %e,
                    "a transcript could not be indexed; its next request starts a new conversation"),
            }
        }
        let _ = tx.send(reply);
    });
    rx
}

/// A round's events written by `render`, the stop's own (its calls, its end) held back until
/// `indexed` answers.
pub(crate) fn stream<R: Render>(
    log: Arc<RunLog>,
    (after, must_call): (u64, bool),
    render: R,
    indexed: oneshot::Receiver<Reply>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let held = Arc::new(Mutex::new(Vec::new()));
    let events = reply::events(log, after, Reply::new(must_call), Holding { render, held: held.clone() });
    let tail = stream::once(async move {
        let _ = indexed.await;
        let held = std::mem::take(&mut *held.lock().unwrap_or_else(|p| p.into_inner()));
        stream::iter(held.into_iter().map(Ok))
    })
    .flatten();
    crate::sse::respond(events.chain(tail))
}

/// A [`Render`] whose stop is held back.
struct Holding<R> {
    render: R,
    held: Arc<Mutex<Vec<Event>>>,
}

impl<R: Render> Render for Holding<R> {
    fn start(&mut self) -> Vec<Event> {
        self.render.start()
    }

    fn step(&mut self, step: Step, reply: &Reply) -> Vec<Event> {
        let stop = matches!(step, Step::ToolCalls(_) | Step::End(_));
        let out = self.render.step(step, reply);
        if !stop {
            return out;
        }
        self.held.lock().unwrap_or_else(|p| p.into_inner()).extend(out);
        Vec::new()
    }
}
