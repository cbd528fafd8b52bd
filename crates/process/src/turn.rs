//! The consumer side of a turn: a stream of [`TurnEvent`]s that always ends with one terminal
//! event, and the watchdog that ends a turn which has gone silent or stopped making progress.

use crate::events::{AbortReason, TurnEvent};
use codex_pool_protocol::tools::DynamicToolCallResponse;
use codex_pool_protocol::types::{TokenUsageBreakdown, TurnError};
use codex_pool_protocol::{CodexThreadId, TurnId};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

/// A turn's consumer stopped reading it: the actor interrupts the turn and drops its events.
/// Each stream sends at most one, so the channel carrying them is bounded by the turns alive.
/// What a turn's stream tells its process's actor.
#[derive(Debug)]
pub(crate) enum FromStream {
    /// The consumer left (or the watchdog fired) before the turn ended.
    Abandoned(Abandoned),
    /// The consumer gives a client tool call its output.
    ToolOutput { thread_id: CodexThreadId, call_id: String, answer: DynamicToolCallResponse },
}

#[derive(Debug)]
pub(crate) struct Abandoned {
    pub thread_id: CodexThreadId,
    pub turn_id: TurnId,
    pub reason: AbortReason,
}

/// The events of one running turn.
///
/// Read it with [`TurnStream::next`] (or as a `futures_core::Stream`). It yields events until,
/// and including, exactly one terminal event ([`TurnEvent::Completed`] or [`TurnEvent::Aborted`]),
/// then `None`. Two optional watchdogs end a turn that hangs, interrupting it in codex:
/// [`TurnStream::with_silence_timeout`] (no event at all) ends it with [`AbortReason::Timeout`],
/// so a long turn that keeps producing events is never cut; [`TurnStream::with_progress_timeout`]
/// (nothing but codex's own retry announcements) ends it with [`AbortReason::ModelUnreachable`],
/// or, when codex announced no retry since the turn last moved (the model's stream went silent),
/// with [`AbortReason::ModelStalled`].
/// Dropping the stream before its end interrupts the turn.
pub struct TurnStream {
    thread_id: CodexThreadId,
    turn_id: TurnId,
    rx: mpsc::UnboundedReceiver<TurnEvent>,
    backlog: Arc<AtomicUsize>,
    abandon: mpsc::UnboundedSender<FromStream>,
    watchdog: Watchdog,
    /// Where codex sends its model requests, named in the message of a turn that cannot reach it.
    endpoint: Option<Arc<str>>,
    /// The last error codex said it would retry, for that message.
    last_retry: Option<TurnError>,
    /// Whether codex announced a retry since the last progress (unreachable, not stalled).
    retrying: bool,
    /// Text deltas so far, for the message of a stalled stream.
    text_deltas: u64,
    /// Tokens of the turn's model calls so far, given to its end.
    usage: TokenUsageBreakdown,
    finished: bool,
    abandoned: bool,
    /// Client tool calls codex waits on (their outputs not given yet): the watchdog sleeps
    /// while there are any, since codex is silent then by design.
    waiting_calls: Vec<String>,
}

/// The two deadlines of a turn, checked with one timer that is re-armed (not re-created) when
/// events came in the meantime.
struct Watchdog {
    silence: Option<Duration>,
    progress: Option<Duration>,
    last_event: Instant,
    last_progress: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

/// Which watchdog fired.
enum Expired {
    Silence(Duration),
    Progress(Duration),
}

impl Watchdog {
    fn new() -> Self {
        let now = Instant::now();
        Self { silence: None, progress: None, last_event: now, last_progress: now, timer: None }
    }

    fn armed(&self) -> bool {
        self.silence.is_some() || self.progress.is_some()
    }

    fn saw(&mut self, event: &TurnEvent) {
        if self.armed() {
            let now = Instant::now();
            self.last_event = now;
            if event.is_progress() {
                self.last_progress = now;
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let silence = self.silence.map(|d| self.last_event + d);
        let progress = self.progress.map(|d| self.last_progress + d);
        silence.into_iter().chain(progress).min()
    }

    /// Pending until a deadline passes with no event since; then which one.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        let Some(deadline) = self.deadline() else { return Poll::Pending };
        let (silence, progress) = (self.silence, self.progress);
        let (last_event, last_progress) = (self.last_event, self.last_progress);
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if let Some(d) = silence.filter(|d| now >= last_event + *d) {
                return Poll::Ready(Expired::Silence(d));
            }
            if let Some(d) = progress.filter(|d| now >= last_progress + *d) {
                return Poll::Ready(Expired::Progress(d));
            }
            // Events came since the timer was armed: wait until the new deadline.
            timer.as_mut().reset(deadline);
        }
    }
}

impl TurnStream {
    pub(crate) fn new(
        thread_id: CodexThreadId,
        rx: mpsc::UnboundedReceiver<TurnEvent>,
        backlog: Arc<AtomicUsize>,
        abandon: mpsc::UnboundedSender<FromStream>,
        endpoint: Option<Arc<str>>,
    ) -> Self {
        Self {
            thread_id,
            turn_id: TurnId::default(),
            rx,
            backlog,
            abandon,
            watchdog: Watchdog::new(),
            endpoint,
            last_retry: None,
            retrying: false,
            text_deltas: 0,
            usage: TokenUsageBreakdown::default(),
            finished: false,
            abandoned: false,
            waiting_calls: Vec::new(),
        }
    }

    pub(crate) fn set_turn_id(&mut self, turn_id: TurnId) {
        self.turn_id = turn_id;
    }

    /// Marks the stream as ended without an event (the turn never started).
    pub(crate) fn mark_finished(&mut self) {
        self.finished = true;
    }

    /// Sets the silence timeout: the longest wait for the next event before the turn is
    /// declared hung, interrupted, and ended with [`AbortReason::Timeout`].
    pub fn with_silence_timeout(mut self, timeout: Duration) -> Self {
        self.watchdog.silence = Some(timeout);
        self.watchdog.timer = None;
        self
    }

    /// Sets the progress timeout: the longest time codex may spend only announcing retries of
    /// the model (an unreachable or failing endpoint) before the turn is interrupted and ended
    /// with [`AbortReason::ModelUnreachable`], naming the endpoint and codex's last error; or
    /// sending nothing at all (a model stream that stalled), ended with
    /// [`AbortReason::ModelStalled`].
    pub fn with_progress_timeout(mut self, timeout: Duration) -> Self {
        self.watchdog.progress = Some(timeout);
        self.watchdog.timer = None;
        self
    }

    /// The codex thread the turn runs on.
    pub fn thread_id(&self) -> &CodexThreadId {
        &self.thread_id
    }

    /// The turn id codex assigned.
    pub fn turn_id(&self) -> &TurnId {
        &self.turn_id
    }

    /// Whether the terminal event has been yielded.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next event, or `None` after the terminal one.
    pub async fn next(&mut self) -> Option<TurnEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next event if one has already arrived, without waiting: for a consumer that stops
    /// reading and wants to know whether the turn had ended meanwhile.
    pub fn try_next(&mut self) -> Option<TurnEvent> {
        if self.finished {
            return None;
        }
        let event = self.rx.try_recv().ok()?;
        Some(self.take(event))
    }

    /// Reads the stream to its end and returns the concatenated reply text and the terminal event.
    pub async fn collect_text(self) -> (String, TurnEvent) {
        crate::events::collect_text(self).await
    }

    /// Books an event that left the channel.
    fn take(&mut self, mut event: TurnEvent) -> TurnEvent {
        self.backlog.fetch_sub(1, Ordering::Relaxed);
        // The turn's usage is added up here, once, and carried by its end.
        match &mut event {
            TurnEvent::TokenUsage { usage } => self.usage += usage.last,
            TurnEvent::Completed { usage, .. } => *usage = self.usage,
            _ => {}
        }
        self.watchdog.saw(&event);
        match &event {
            TurnEvent::ToolCall { request } => self.waiting_calls.push(request.call_id.clone()),
            // A turn codex started itself (a compaction) is named here.
            TurnEvent::Started { turn_id, .. } if self.turn_id.as_str().is_empty() => self.turn_id = turn_id.clone(),
            _ => {}
        }
        match &event {
            TurnEvent::Error { error, will_retry: true } => {
                self.last_retry = Some(error.clone());
                self.retrying = true;
            }
            TurnEvent::AgentMessageDelta { .. } => {
                self.text_deltas += 1;
                self.retrying = false;
            }
            _ => self.retrying = false,
        }
        if event.is_terminal() {
            self.finish();
        }
        event
    }

    fn finish(&mut self) {
        self.finished = true;
        self.watchdog.timer = None;
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(self.take(event))),
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(Some(TurnEvent::Aborted {
                    reason: AbortReason::ProcessExited,
                    message: "the codex process went away before the turn ended".to_owned(),
                }))
            }
            Poll::Pending if !self.waiting_calls.is_empty() => Poll::Pending,
            Poll::Pending => {
                let Poll::Ready(expired) = self.watchdog.poll_expired(cx) else { return Poll::Pending };
                let (reason, message) = match expired {
                    Expired::Silence(d) => {
                        (AbortReason::Timeout, format!("the turn produced no event for {d:?}; it was interrupted"))
                    }
                    Expired::Progress(d) if self.retrying => {
                        (AbortReason::ModelUnreachable, self.unreachable_message(d))
                    }
                    Expired::Progress(d) => (AbortReason::ModelStalled, self.stalled_message(d)),
                };
                self.abandon(reason);
                self.finish();
                Poll::Ready(Some(TurnEvent::Aborted { reason, message }))
            }
        }
    }

    /// The client tool calls codex waits on (each came as a [`TurnEvent::ToolCall`]), in the
    /// order codex asked them.
    pub fn waiting_calls(&self) -> &[String] {
        &self.waiting_calls
    }

    /// Gives a client tool call codex waits on (see [`TurnEvent::ToolCall`]) its output, without
    /// waiting for it to be written: the turn's events say what codex made of it. Returns `false`
    /// (and sends nothing) when no call of that id waits. The turn's watchdog sleeps while calls
    /// wait, and starts counting again from the last output given.
    pub fn answer_tool_call(&mut self, call_id: &str, answer: DynamicToolCallResponse) -> bool {
        let Some(at) = self.waiting_calls.iter().position(|c| c == call_id) else { return false };
        if self.finished {
            return false;
        }
        self.waiting_calls.remove(at);
        let told = FromStream::ToolOutput { thread_id: self.thread_id.clone(), call_id: call_id.to_owned(), answer };
        if self.abandon.send(told).is_err() {
            return false;
        }
        let now = Instant::now();
        self.watchdog.last_event = now;
        self.watchdog.last_progress = now;
        self.watchdog.timer = None;
        true
    }

    fn unreachable_message(&self, limit: Duration) -> String {
        let endpoint = self.endpoint.as_deref().unwrap_or("the model provider");
        let why = match &self.last_retry {
            Some(TurnError { message, additional_details: Some(details), .. }) => {
                format!(" (codex's last error: {message}: {details})")
            }
            Some(e) => format!(" (codex's last error: {})", e.message),
            None => String::new(),
        };
        format!("codex made no progress for {limit:?}, retrying requests to {endpoint}{why}; the turn was interrupted")
    }

    fn stalled_message(&self, limit: Duration) -> String {
        let endpoint = self.endpoint.as_deref().unwrap_or("the model provider");
        let after = match self.text_deltas {
            0 => "before any text".to_owned(),
            1 => "after 1 text delta".to_owned(),
            n => format!("after {n} text deltas"),
        };
        format!(
            "the model's stream stalled: codex got no event from {endpoint} for {limit:?}, {after}, and was not \
             retrying; the turn was interrupted"
        )
    }

    fn abandon(&mut self, reason: AbortReason) {
        if std::mem::replace(&mut self.abandoned, true) {
            return;
        }
        let turn_id = self.turn_id.clone();
        let _ =
            self.abandon.send(FromStream::Abandoned(Abandoned { thread_id: self.thread_id.clone(), turn_id, reason }));
    }
}

impl Drop for TurnStream {
    fn drop(&mut self) {
        if !self.finished {
            self.abandon(AbortReason::Shutdown);
        }
    }
}

impl futures_core::Stream for TurnStream {
    type Item = TurnEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>> {
        self.get_mut().poll_event(cx)
    }
}

impl std::fmt::Debug for TurnStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnStream")
            .field("thread_id", &self.thread_id)
            .field("turn_id", &self.turn_id)
            .field("finished", &self.finished)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codex_pool_protocol::types::{ThreadTokenUsage, TurnStatus};

    fn call(input: i64, output: i64) -> TurnEvent {
        let last = TokenUsageBreakdown {
            input_tokens: input,
            cached_input_tokens: 1,
            output_tokens: output,
            reasoning_output_tokens: 0,
            total_tokens: input + output,
        };
        // `total` is the thread's so far: never what a turn used.
        let total = TokenUsageBreakdown { total_tokens: 1000, ..last };
        TurnEvent::TokenUsage { usage: ThreadTokenUsage { last, total, model_context_window: None } }
    }

    #[tokio::test]
    async fn the_end_carries_the_usage_of_every_model_call_of_the_turn() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (abandon, _abandoned) = mpsc::unbounded_channel();
        let end = TurnEvent::Completed {
            turn_id: "u".into(),
            status: TurnStatus::Completed,
            error: None,
            usage: TokenUsageBreakdown::default(),
        };
        let events = [call(10, 3), call(5, 4), end];
        let backlog = Arc::new(AtomicUsize::new(events.len()));
        for event in events {
            tx.send(event).unwrap();
        }
        let stream = TurnStream::new("t".into(), rx, backlog, abandon, None);
        let (_, end) = stream.collect_text().await;
        let TurnEvent::Completed { usage, .. } = end else { panic!("{end:?}") };
        let expected = TokenUsageBreakdown {
            input_tokens: 15,
            cached_input_tokens: 2,
            output_tokens: 7,
            reasoning_output_tokens: 0,
            total_tokens: 22,
        };
        assert_eq!(usage, expected);
    }
}
