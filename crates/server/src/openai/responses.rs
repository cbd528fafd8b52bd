//! `POST /v1/responses`: OpenAI's Responses API on the pool (`GET /v1/responses/{id}` is in `readback.rs`).
//!
//! A response is one round of a turn of a conversation: up to the model's calls of the client's
//! tools, or to the turn's end. Without `previous_response_id`, a request whose input extends a
//! conversation's history (messages, `function_call` and `function_call_output` items, as
//! stateless clients resend them) continues it ([`rounds`]); any other starts a conversation
//! (its `instructions`, leading system/developer messages, earlier items and `metadata` set it
//! up). With one, the round runs next in that response's conversation, on its codex thread: the
//! user's next message as a turn, or `function_call_output` items given to the calls that
//! response stopped at (the same turn goes on); when that response is not the conversation's
//! latest, in a new conversation forked from it (given the history up to it). Ids:
//! `resp_<conversation>_<turn>[_r<round>]`.

use crate::metrics::ChatOutcome;
use crate::openai::error::{Fields, OpenAiBody, OpenAiError};
use crate::openai::input::{check_items, transcript, New, Said, Transcript};
use crate::openai::reply::{self, Render, Reply, Step};
use crate::openai::rounds::{self, Started};
use crate::openai::tools::{self, Choice, Shape};
use crate::openai::wire::{self, output_message, response, text_part, ResponseHead};
use crate::openai::{now_secs, parse_response_id, response_id};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use codex_pool::{Fork, Profile};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::{ToolSpec, TurnId};
use serde_json::{json, Map, Value};
use std::time::Instant;

/// The fields `POST /v1/responses` reads: those its request shape documents.
static KNOWN: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(wire::fields_of::<wire::CreateResponse>);

/// Why a field OpenAI has is refused here.
fn why(field: &str) -> &'static str {
    match field {
        "max_tool_calls" => "codex does not bound the calls of a turn",
        "temperature" | "top_p" | "max_output_tokens" | "top_logprobs" | "text" | "truncation" => {
            "codex chooses sampling, output limits and formats itself"
        }
        "conversation" => "conversations continue with `previous_response_id`",
        "background" => "a response runs while its request is open (streamed or not)",
        "reasoning" => "the reasoning effort is codex's",
        _ => "the pool cannot honour it",
    }
}

/// A model the service serves, or the default.
pub(crate) fn served_model(state: &AppState, asked: Option<String>) -> Result<Option<String>, OpenAiError> {
    state
        .model(asked)
        .map_err(|e| OpenAiError::new(StatusCode::NOT_FOUND, Some("model_not_found"), e.message()).param("model"))
}

/// Where a response's round runs, and what the Response says.
struct Plan {
    started: Started,
    head: ResponseHead,
}

/// Creates a response: runs the round (a turn on the user's message, or the model going on
/// over the outputs of the calls it waits on), and streams its events (`stream: true`) or
/// answers the Response once it has stopped (at the model's next tool calls, or at the turn's
/// end). A client that goes away does not cut the turn.
#[utoipa::path(post, path = "/v1/responses", request_body = wire::CreateResponse, tag = "openai",
    responses(
        (status = 200, description = "The Response (JSON), or its events (`text/event-stream`) with `stream: true`",
         content_type = "application/json", body = Object),
        (status = 400, body = crate::openai::error::OpenAiErrorBody), (status = 404, body = crate::openai::error::OpenAiErrorBody),
        (status = 409, body = crate::openai::error::OpenAiErrorBody), (status = 429, body = crate::openai::error::OpenAiErrorBody),
        (status = 503, description = "Not ready; or another node serves the conversation `previous_response_id` \
         continues, and the request, forwarded to it, could not be answered (`owned_elsewhere`, `owner_unreachable`; \
         `Retry-After`)", body = crate::openai::error::OpenAiErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    OpenAiBody(body): OpenAiBody,
) -> Result<Response, OpenAiError> {
    state.ready()?;
    let begun = Instant::now();
    let mut f = Fields::new(body, &KNOWN, why)?;
    let model = f.string("model")?;
    let input =
        f.take("input").ok_or_else(|| OpenAiError::invalid("input", "`input` is required: the user's message"))?;
    let instructions = f.string("instructions")?;
    let previous = f.string("previous_response_id")?;
    let store = f.boolean("store")?.unwrap_or(true);
    let metadata = f.metadata("metadata")?;
    let stream = f.boolean("stream")?.unwrap_or(false);
    let (specs, tool_choice) =
        tools::read(f.take("tools"), f.take("tool_choice"), f.take("parallel_tool_calls"), Shape::Responses)?;
    let must_call = tool_choice.must_call();
    tools::include(f.take("include"))?;
    let said = match input {
        Value::String(text) => Transcript { new: New::Message(Said::text(text)), ..Transcript::default() },
        Value::Array(items) => {
            check_items(&items, "input", state.max_input_items)
                .inspect_err(|_| state.metrics.limit_refused("max_input_items"))?;
            transcript(&items, "input")?
        }
        _ => return Err(OpenAiError::invalid("input", "`input` is a string or a list of messages")),
    };
    state.check_settings(
        &[
            ("instructions", instructions.as_deref()),
            ("input", said.system.as_deref()),
            ("input", said.developer.as_deref()),
        ],
        metadata.as_ref().map(|m| ("metadata", m)),
        true,
    )?;
    let served = served_model(&state, model.clone())?;
    let asked = Asked { model, served, instructions, metadata, store, tools: specs, tool_choice, must_call };
    let (plan, indexed) = match previous {
        Some(previous) => {
            let plan = continuing(&state, previous, &said, asked, begun).await?;
            let indexed = rounds::index_when_stopped(&state, &plan.started, None, said, (false, must_call));
            (plan, indexed)
        }
        None => {
            said.check_outputs_answer_calls()?;
            starting(&state, said, asked, begun).await?
        }
    };
    let Plan { started, head } = plan;
    if !store && started.created {
        let (pool, id) = (state.pool.clone(), started.conversation.clone());
        state.runs.after_end(started.log.clone(), async move {
            if let Err(e) = pool.delete_thread(&id).await {
                tracing::warn!(conversation = %id, error = %e, "could not delete a `store: false` conversation");
            }
        });
    }
    if stream {
        let render = Responses { head, seq: 0 };
        return Ok(rounds::stream(started.log, (started.after, must_call), render, indexed).into_response());
    }
    let reply = match indexed.await {
        Ok(reply) => reply,
        Err(_) => reply::settle(&started.log, started.after, Reply::new(must_call)).await,
    };
    Ok(Json(response(&head, &reply)).into_response())
}

/// What a request asks besides its input.
struct Asked {
    /// The model as the client named it.
    model: Option<String>,
    /// The model the service serves for it.
    served: Option<String>,
    instructions: Option<String>,
    metadata: Option<Map<String, Value>>,
    store: bool,
    tools: Vec<ToolSpec>,
    tool_choice: Choice,
    must_call: bool,
}

/// A Response's head before its turn is known.
pub(crate) fn head(
    model: Option<String>,
    instructions: Option<String>,
    metadata: Map<String, Value>,
    store: bool,
) -> ResponseHead {
    ResponseHead {
        id: String::new(),
        turn_id: TurnId::default(),
        round: 0,
        tools: Vec::new(),
        tool_choice: json!("auto"),
        created_at: now_secs(),
        model: model.unwrap_or_else(|| "codex".to_owned()),
        instructions: instructions.filter(|i| !Profile::is_default_instructions(i)),
        metadata,
        previous_response_id: None,
        store,
    }
}

/// Names the round the response is in its head.
fn named(mut head: ResponseHead, started: &Started, tools: Vec<ToolSpec>, tool_choice: &Choice) -> ResponseHead {
    head.turn_id = started.log.turn_id.clone();
    head.round = started.round();
    head.id = response_id(&started.conversation, &head.turn_id, head.round);
    head.tools = tools;
    head.tool_choice = tool_choice.shown();
    head
}

/// A request without `previous_response_id`: it continues the conversation whose history its
/// input extends (indexed as chat transcripts are), or starts one given that history.
async fn starting(
    state: &AppState,
    said: Transcript,
    asked: Asked,
    begun: Instant,
) -> Result<(Plan, tokio::sync::oneshot::Receiver<Reply>), OpenAiError> {
    let base_instructions = match (asked.instructions, said.system.clone()) {
        (Some(_), Some(_)) => {
            return Err(OpenAiError::unsupported(
                "instructions",
                "give the system prompt once: as `instructions` or as a system message",
            ))
        }
        (a, b) => a.or(b),
    };
    let settings = ThreadSettings {
        base_instructions: base_instructions.clone(),
        developer_instructions: said.developer.clone(),
        model: asked.served.clone(),
        dynamic_tools: asked.tools.clone(),
        ..ThreadSettings::default()
    };
    let metadata = asked.metadata.unwrap_or_default();
    let transcript_head = rounds::Head {
        model: asked.model.clone().unwrap_or_default(),
        system: base_instructions.clone(),
        developer: said.developer.clone(),
        owner: crate::keys::caller().key_id().map(str::to_owned),
    };
    let creation = rounds::Creation { settings, metadata: metadata.clone() };
    let options = tools::turn_options(&asked.tools);
    let started = if asked.store {
        rounds::begin(state, &transcript_head, &said, options, creation, begun).await?
    } else {
        // Not kept: deleted once its turn has ended, so never continued by its transcript.
        rounds::begin_new(state, &said, options, creation, begun).await?
    };
    let index = asked.store.then_some(transcript_head);
    let indexed = rounds::index_when_stopped(state, &started, index, said, (false, asked.must_call));
    let head = head(asked.served, base_instructions, metadata, asked.store);
    let head = named(head, &started, asked.tools, &asked.tool_choice);
    Ok((Plan { started, head }, indexed))
}

/// The round after `previous`: next in its conversation, or in a fork of it.
async fn continuing(
    state: &AppState,
    previous: String,
    said: &Transcript,
    asked: Asked,
    begun: Instant,
) -> Result<Plan, OpenAiError> {
    let message = format!("no response {previous:?} is kept here");
    let unknown = || OpenAiError::not_found(Some("previous_response_id"), message.clone());
    if !asked.store {
        return Err(OpenAiError::unsupported(
            "store",
            "a turn after a kept response is kept with its conversation; `store: false` only starts a conversation, \
             deleted once its turn has ended",
        ));
    }
    if said.system.is_some() || said.developer.is_some() || !said.history.is_empty() {
        return Err(OpenAiError::unsupported(
            "input",
            "with `previous_response_id`, `input` is the user's next message, or the outputs of the calls that \
             response stopped at",
        ));
    }
    let (id, turn, _round) = parse_response_id(&previous).ok_or_else(unknown)?;
    // Another node serves it: forwarded there before its history is read here for nothing.
    state.pool.check_served_here(&id).await?;
    let info = state.pool.conversation(&id).await?.ok_or_else(unknown)?;
    let caller = crate::keys::caller();
    if !caller.owns(info.record.owner.as_deref()) {
        return Err(unknown());
    }
    let record = &info.record;
    if asked.instructions.as_ref().is_some_and(|i| Some(i) != record.settings.base_instructions.as_ref()) {
        return Err(OpenAiError::unsupported(
            "instructions",
            "a conversation's instructions are set when it starts; leave them out (or repeat them) to continue it",
        ));
    }
    if asked.metadata.as_ref().is_some_and(|m| *m != record.metadata) {
        return Err(OpenAiError::unsupported("metadata", "metadata is the conversation's, set when it starts"));
    }
    let mut options = tools::turn_options(&asked.tools);
    if asked.served.is_some() && asked.served != record.settings.model {
        options.model.clone_from(&asked.served);
    }
    let mut head = head(
        asked.served.or(record.settings.model.clone()),
        record.settings.base_instructions.clone(),
        record.metadata.clone(),
        true,
    );
    head.previous_response_id = Some(previous);
    // The conversation's latest turn, as its record says: no need to read its history. Else an
    // earlier response: a new conversation goes on from it, the original is left as it is.
    let (conversation, created) = if record.last_turn.as_ref() == Some(&turn) {
        (id, false)
    } else {
        // An earlier response may make a new conversation: the key's conversation limit holds.
        crate::keys::limits::new_conversation(state, &caller).await?;
        match state.pool.fork_at(&id, &turn).await? {
            Fork::Latest => (id, false),
            Fork::New(fork) => {
                if let Err(e) = crate::keys::own(&state.pool, &state.metrics, &caller, &fork).await {
                    let _ = state.pool.delete_thread(&fork).await;
                    return Err(e.into());
                }
                (fork, true)
            }
            Fork::NoSuchTurn => return Err(unknown()),
        }
    };
    let (log, after) = match rounds::run_in(state, &conversation, said, options, begun).await {
        Ok(run) => run,
        Err(e) => {
            if created {
                let _ = state.pool.delete_thread(&conversation).await;
            }
            return Err(e);
        }
    };
    let started = Started { conversation, created, log, after, outcome: ChatOutcome::Continued };
    let head = named(head, &started, asked.tools, &asked.tool_choice);
    Ok(Plan { started, head })
}

/// The Responses API's events, numbered.
struct Responses {
    head: ResponseHead,
    seq: u64,
}

impl Responses {
    fn event(&mut self, kind: &'static str, mut data: Value) -> Event {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        Event::default().event(kind).data(data.to_string())
    }
}

impl Render for Responses {
    fn start(&mut self) -> Vec<Event> {
        let now = response(&self.head, &Reply::default());
        vec![
            self.event("response.created", json!({"response": now})),
            self.event("response.in_progress", json!({"response": now})),
        ]
    }

    fn step(&mut self, step: Step, reply: &Reply) -> Vec<Event> {
        let (turn, round) = (self.head.turn_id.clone(), self.head.round);
        let at = |n: usize| json!({"item_id": crate::openai::message_id(&turn, round, n), "output_index": n, "content_index": 0});
        let with = |mut base: Value, extra: Value| {
            if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
                b.extend(e);
            }
            base
        };
        match step {
            Step::ToolCalls(calls) => {
                let mut out = Vec::new();
                for (i, call) in calls.iter().enumerate() {
                    let n = reply.messages().len() + i;
                    let item = wire::function_call(call);
                    let mut opened = item.clone();
                    opened["arguments"] = json!("");
                    opened["status"] = json!("in_progress");
                    let at = json!({"item_id": item["id"], "output_index": n});
                    out.push(self.event("response.output_item.added", json!({"output_index": n, "item": opened})));
                    out.push(self.event(
                        "response.function_call_arguments.delta",
                        with(at.clone(), json!({"delta": call.arguments})),
                    ));
                    out.push(self.event(
                        "response.function_call_arguments.done",
                        with(at, json!({"arguments": call.arguments, "name": call.name})),
                    ));
                    out.push(self.event("response.output_item.done", json!({"output_index": n, "item": item})));
                }
                let body = response(&self.head, reply);
                out.push(self.event("response.completed", json!({"response": body})));
                out
            }
            Step::Open(n) => vec![
                self.event(
                    "response.output_item.added",
                    json!({"output_index": n, "item": output_message(&turn, round, n, None)}),
                ),
                self.event("response.content_part.added", with(at(n), json!({"part": text_part("")}))),
            ],
            Step::Delta(n, delta) => {
                vec![self.event("response.output_text.delta", with(at(n), json!({"delta": delta, "logprobs": []})))]
            }
            Step::Close(n, text) => vec![
                self.event("response.output_text.done", with(at(n), json!({"text": text, "logprobs": []}))),
                self.event("response.content_part.done", with(at(n), json!({"part": text_part(&text)}))),
                self.event(
                    "response.output_item.done",
                    json!({"output_index": n, "item": output_message(&turn, round, n, Some(&text))}),
                ),
            ],
            Step::Withheld(n, mode) => vec![
                self.event("response.refusal.done", with(at(n), json!({"refusal": wire::refusal_text(mode)}))),
                self.event("response.content_part.done", with(at(n), json!({"part": wire::refusal_part(mode)}))),
                self.event(
                    "response.output_item.done",
                    json!({"output_index": n, "item": wire::refused_message(&turn, round, n, mode)}),
                ),
            ],
            Step::End(ending) => {
                let body = response(&self.head, reply);
                vec![self.event(wire::terminal_event(&ending), json!({"response": body}))]
            }
        }
    }
}
