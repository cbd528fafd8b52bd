//! Server-sent events: a turn's log written as a stream, the one loop both APIs' streams run,
//! with the keep-alive every stream has.

use crate::events::ApiEvent;
use crate::runs::RunLog;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How often a stream with nothing to send writes a comment, so that proxies and clients do
/// not take it for dead.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How a route writes a turn's events as server-sent events.
pub(crate) trait Writer: Send + 'static {
    /// What goes out before the turn's first event.
    fn start(&mut self) -> Vec<Event> {
        Vec::new()
    }

    /// Writes what one of the turn's events makes into `out`; `true` once the route's answer
    /// is whole (the stream ends after what `out` holds, without waiting for the log's end).
    fn write(&mut self, event: &ApiEvent, out: &mut VecDeque<Event>) -> bool;
}

/// A turn's events from after `after`, written by `writer`, as an SSE response with its
/// keep-alive. The stream ends with the log or once the writer's answer is whole; the turn runs
/// on whether or not anyone reads it.
pub(crate) fn from_log<W: Writer>(
    log: Arc<RunLog>,
    after: u64,
    writer: W,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    respond(events(log, after, writer))
}

/// A stream of events as an SSE response, with the keep-alive.
pub(crate) fn respond<S>(events: S) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// [`from_log`]'s events, bare.
pub(crate) fn events<W: Writer>(
    log: Arc<RunLog>,
    after: u64,
    mut writer: W,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let ready: VecDeque<Event> = writer.start().into();
    let state = (log, after, ready, writer, false);
    let events = stream::unfold(state, |(log, mut after, mut ready, mut writer, mut done)| async move {
        loop {
            if let Some(event) = ready.pop_front() {
                return Some((Ok(event), (log, after, ready, writer, done)));
            }
            if done {
                return None;
            }
            let Some(events) = log.next_after(after).await else {
                done = true;
                continue;
            };
            for event in events {
                after = event.id;
                done |= writer.write(&event, &mut ready);
            }
        }
    });
    events
}
