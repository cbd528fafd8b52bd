//! The consumer side of a turn: a stream of [`TurnEvent`]s that always ends with one terminal event.

use crate::actor::Command;
use crate::events::{AbortReason, TurnEvent};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

/// The events of one running turn.
///
/// Read it with [`TurnStream::next`] (or as a `futures_core::Stream`). It yields events until,
/// and including, exactly one terminal event ([`TurnEvent::Completed`] or [`TurnEvent::Aborted`]),
/// then `None`. If no event arrives for the silence timeout, the turn is interrupted and the
/// stream ends with [`AbortReason::Timeout`]: a long turn that keeps producing events is never cut.
/// Dropping the stream before its end interrupts the turn.
pub struct TurnStream {
    thread_id: String,
    turn_id: String,
    rx: mpsc::UnboundedReceiver<TurnEvent>,
    backlog: Arc<AtomicUsize>,
    commands: mpsc::UnboundedSender<Command>,
    silence: Option<Duration>,
    /// Fires at the silence deadline; re-armed (not re-created) when events came meanwhile.
    timer: Option<Pin<Box<Sleep>>>,
    last_event: Instant,
    finished: bool,
}

impl TurnStream {
    pub(crate) fn new(
        thread_id: String,
        turn_id: String,
        rx: mpsc::UnboundedReceiver<TurnEvent>,
        backlog: Arc<AtomicUsize>,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Self {
        Self {
            thread_id,
            turn_id,
            rx,
            backlog,
            commands,
            silence: None,
            timer: None,
            last_event: Instant::now(),
            finished: false,
        }
    }

    pub(crate) fn set_turn_id(&mut self, turn_id: String) {
        self.turn_id = turn_id;
    }

    /// Marks the stream as ended without an event (the turn never started).
    pub(crate) fn mark_finished(&mut self) {
        self.finished = true;
    }

    /// Sets the silence timeout: the longest wait for the next event before the turn is
    /// declared hung, interrupted, and ended with [`AbortReason::Timeout`].
    pub fn with_silence_timeout(mut self, timeout: Duration) -> Self {
        self.silence = Some(timeout);
        self.timer = None;
        self
    }

    /// The thread the turn runs on.
    pub fn thread_id(&self) -> &str {
        &self.thread_id
    }

    /// The turn id codex assigned.
    pub fn turn_id(&self) -> &str {
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
        self.backlog.fetch_sub(1, Ordering::Relaxed);
        if event.is_terminal() {
            self.finished = true;
            self.timer = None;
        }
        Some(event)
    }

    /// Reads the stream to its end and returns the concatenated reply text and the terminal event.
    pub async fn collect_text(self) -> (String, TurnEvent) {
        crate::events::collect_text(self).await
    }

    fn finish_with(&mut self, event: TurnEvent) -> Poll<Option<TurnEvent>> {
        self.finished = true;
        self.timer = None;
        Poll::Ready(Some(event))
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                self.backlog.fetch_sub(1, Ordering::Relaxed);
                if self.silence.is_some() {
                    self.last_event = Instant::now();
                }
                if event.is_terminal() {
                    return self.finish_with(event);
                }
                Poll::Ready(Some(event))
            }
            Poll::Ready(None) => self.finish_with(TurnEvent::Aborted {
                reason: AbortReason::ProcessExited,
                message: "the codex process went away before the turn ended".to_owned(),
            }),
            Poll::Pending => {
                let Some(silence) = self.silence else {
                    return Poll::Pending;
                };
                let last_event = self.last_event;
                let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(last_event + silence)));
                loop {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Events came since the timer was armed: wait out the silence from the last one.
                    let deadline = last_event + silence;
                    if Instant::now() < deadline {
                        timer.as_mut().reset(deadline);
                        continue;
                    }
                    self.abandon(AbortReason::Timeout);
                    return self.finish_with(TurnEvent::Aborted {
                        reason: AbortReason::Timeout,
                        message: format!("the turn produced no event for {silence:?}; it was interrupted"),
                    });
                }
            }
        }
    }

    fn abandon(&self, reason: AbortReason) {
        let _ = self.commands.send(Command::Abandon {
            thread_id: self.thread_id.clone(),
            turn_id: self.turn_id.clone(),
            reason,
        });
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
