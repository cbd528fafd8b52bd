//! What the actor writes to codex's stdin. A line is written at once when the pipe has room
//! (no hand-off to another task on a request's path); what does not fit waits here, and the
//! actor's loop writes it as the pipe drains.

use crate::error::ProcessError;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::AsyncWrite;

/// Bytes waiting for codex to read them; past this, codex counts as not reading its input.
const MAX_WAITING: usize = 64 << 20;

/// The actor's end of codex's stdin.
pub(crate) struct Outbox<W> {
    /// `None` once closed (which tells codex to exit).
    pipe: Option<W>,
    waiting: Vec<u8>,
    /// How much of `waiting` is written.
    written: usize,
    /// Close the pipe once `waiting` is written.
    closing: bool,
}

impl<W: AsyncWrite + Unpin> Outbox<W> {
    pub(crate) fn new(pipe: W) -> Self {
        Self { pipe: Some(pipe), waiting: Vec::new(), written: 0, closing: false }
    }

    /// Whether lines are still taken.
    pub(crate) fn is_open(&self) -> bool {
        self.pipe.is_some() && !self.closing
    }

    /// Writes a line, at once if the pipe has room.
    pub(crate) fn write(&mut self, line: &[u8]) -> Result<(), ProcessError> {
        if !self.is_open() {
            return Err(ProcessError::ShuttingDown);
        }
        if self.waiting.len() - self.written + line.len() > MAX_WAITING {
            return Err(ProcessError::StdinBacklog);
        }
        self.waiting.extend_from_slice(line);
        // Nothing to wake: if the pipe is full, the loop's `flush` takes over with a real waker.
        let mut cx = Context::from_waker(Waker::noop());
        let _ = self.poll_flush(&mut cx);
        Ok(())
    }

    /// Asks for the pipe to be closed once what waits is written.
    pub(crate) fn close(&mut self) {
        self.closing = true;
    }

    /// Whether the loop has anything to do here.
    pub(crate) fn is_busy(&self) -> bool {
        self.pipe.is_some() && (self.written < self.waiting.len() || self.closing)
    }

    /// Writes what waits (then closes the pipe, if asked). Ready when there is nothing left to
    /// do, with an error if the pipe broke (codex is gone).
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(pipe) = self.pipe.as_mut() else { return Poll::Ready(Ok(())) };
        while self.written < self.waiting.len() {
            match Pin::new(&mut *pipe).poll_write(cx, &self.waiting[self.written..]) {
                Poll::Ready(Ok(0)) => return self.broken(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return self.broken(e),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.waiting.clear();
        self.written = 0;
        if self.closing {
            let _ = std::task::ready!(Pin::new(&mut *pipe).poll_shutdown(cx));
            self.pipe = None;
        }
        Poll::Ready(Ok(()))
    }

    fn broken(&mut self, e: std::io::Error) -> Poll<std::io::Result<()>> {
        self.pipe = None;
        self.waiting = Vec::new();
        self.written = 0;
        Poll::Ready(Err(e))
    }
}
