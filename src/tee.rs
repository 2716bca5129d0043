//! `TeeBody`: a body wrapper that passes every frame through untouched and keeps a copy.
//!
//! Frames are handed to the reader as they arrive; a copy of their bytes is kept up to the
//! capture limit and the shared capture budget. The wrapper reports to its [`PendingExchange`]
//! exactly once: at end of stream, on error, or when dropped early (the reader went away).
//! It never buffers, never parses and never waits (the shape of linkerd2-proxy's body-eos).
//!
//! A request body can also be guarded ([`TeeBody::guard`]): cut when no bytes arrive for the
//! idle timeout while the upstream waits for them, or when it grows past the size limit. A cut
//! is an error frame, which makes the upstream client abort the request, and the exchange
//! records why ([`BodyEnd::IdleTimeout`], [`BodyEnd::TooLarge`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::exchange::{
    BodyCapture, BodyEnd, CaptureBudget, PendingExchange, ResponseOutcome, Side,
};

/// How much of each body to keep: per body (`capture.max_body_bytes`) and in total.
#[derive(Debug, Clone)]
pub struct CaptureLimits {
    pub max_body_bytes: usize,
    pub budget: CaptureBudget,
}

/// Where a finished capture goes.
enum Report {
    Request,
    Response {
        status: StatusCode,
        headers: HeaderMap,
    },
}

struct Tap {
    pending: Arc<PendingExchange>,
    report: Report,
    limit: usize,
    capture: BodyCapture,
}

impl Tap {
    fn record(&mut self, data: &Bytes) {
        self.capture.record(data, self.limit);
    }

    fn finish(self, end: BodyEnd) {
        let Tap {
            pending,
            report,
            mut capture,
            ..
        } = self;
        capture.end = end;
        match report {
            Report::Request => pending.finish_request(capture),
            Report::Response { status, headers } => {
                pending.finish_response(ResponseOutcome::Forwarded {
                    status,
                    headers,
                    body: capture,
                })
            }
        }
    }
}

/// Why a [`TeeBody`] stream failed: the inner body's own error, or a guard scimtap applied.
#[derive(Debug, thiserror::Error)]
pub enum TeeError<E> {
    #[error("{0}")]
    Inner(E),
    #[error("no request body bytes arrived for {}", humantime::format_duration(*.0))]
    Idle(Duration),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
}

/// Limits on a request body while it streams (`listen.body_idle_timeout_secs`,
/// `listen.max_request_body_bytes`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyGuards {
    pub idle_timeout: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// The idle clock of a guarded body. It runs only while the body's reader waits on the
/// writer (the upstream client waiting for request body bytes from the IdP): time in which the
/// reader did not ask (an upstream slow to read) is not the writer's stall. The sleep is
/// allocated on the first wait and re-armed only when a new wait starts, not on every frame.
struct IdleClock {
    timeout: Duration,
    /// When the current wait began; `None` while bytes are moving.
    waiting_since: Option<tokio::time::Instant>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleClock {
    fn progress(&mut self) {
        self.waiting_since = None;
    }

    /// Called when the inner body is pending; true once this wait has lasted the timeout.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let since = *self
            .waiting_since
            .get_or_insert_with(tokio::time::Instant::now);
        let deadline = since + self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// A body that tees its frames into the exchange's capture.
pub struct TeeBody<B: Body> {
    inner: B,
    tap: Option<Tap>,
    idle: Option<IdleClock>,
    max_bytes: Option<u64>,
    seen_bytes: u64,
    /// A guard ended the stream early.
    cut: bool,
}

impl<B: Body> TeeBody<B> {
    /// Wraps a request body.
    pub fn request(inner: B, pending: Arc<PendingExchange>, limits: &CaptureLimits) -> Self {
        Self::new(inner, pending, Report::Request, limits)
    }

    /// Wraps a response body; `status` and `headers` are what the client receives.
    pub fn response(
        inner: B,
        pending: Arc<PendingExchange>,
        status: StatusCode,
        headers: HeaderMap,
        limits: &CaptureLimits,
    ) -> Self {
        Self::new(inner, pending, Report::Response { status, headers }, limits)
    }

    fn new(
        inner: B,
        pending: Arc<PendingExchange>,
        report: Report,
        limits: &CaptureLimits,
    ) -> Self {
        let mut capture = BodyCapture::empty(BodyEnd::Complete);
        capture.budget = Some(limits.budget.clone());
        TeeBody {
            inner,
            tap: Some(Tap {
                pending,
                report,
                limit: limits.max_body_bytes,
                capture,
            }),
            idle: None,
            max_bytes: None,
            seen_bytes: 0,
            cut: false,
        }
    }

    /// Applies `guards` to this body (meant for request bodies).
    pub fn guard(mut self, guards: BodyGuards) -> Self {
        self.idle = guards.idle_timeout.map(|timeout| IdleClock {
            timeout,
            waiting_since: None,
            sleep: None,
        });
        self.max_bytes = guards.max_bytes;
        self
    }

    /// Which side this body is on (for tests and logs).
    pub fn side(&self) -> Option<Side> {
        self.tap.as_ref().map(|t| match t.report {
            Report::Request => Side::Request,
            Report::Response { .. } => Side::Response,
        })
    }

    fn finish(&mut self, end: BodyEnd) {
        if let Some(tap) = self.tap.take() {
            tap.finish(end);
        }
    }
}

impl<B> Body for TeeBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = TeeError<B::Error>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.cut {
            // A guard already cut this body; it stays ended.
            return Poll::Ready(None);
        }
        let polled = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(polled) => polled,
            Poll::Pending => {
                if let Some(idle) = this.idle.as_mut() {
                    if idle.poll_expired(cx) {
                        let timeout = idle.timeout;
                        this.cut = true;
                        this.finish(BodyEnd::IdleTimeout);
                        return Poll::Ready(Some(Err(TeeError::Idle(timeout))));
                    }
                }
                return Poll::Pending;
            }
        };
        match polled {
            Some(Ok(frame)) => {
                if let Some(idle) = this.idle.as_mut() {
                    idle.progress();
                }
                if let Some(data) = frame.data_ref() {
                    this.seen_bytes += data.len() as u64;
                    if let Some(max) = this.max_bytes.filter(|&max| this.seen_bytes > max) {
                        // The frame that crosses the limit is neither forwarded nor captured.
                        this.cut = true;
                        this.finish(BodyEnd::TooLarge);
                        return Poll::Ready(Some(Err(TeeError::TooLarge(max))));
                    }
                }
                if let (Some(data), Some(tap)) = (frame.data_ref(), this.tap.as_mut()) {
                    tap.record(data);
                }
                // Trailers are always the last frame, and hyper stops polling after writing
                // them, so they end the stream as surely as `is_end_stream`.
                if frame.is_trailers() || this.inner.is_end_stream() {
                    this.finish(BodyEnd::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                this.finish(BodyEnd::Error(error.to_string()));
                Poll::Ready(Some(Err(TeeError::Inner(error))))
            }
            None => {
                this.finish(BodyEnd::Complete);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for TeeBody<B> {
    fn drop(&mut self) {
        if let Some(tap) = self.tap.take() {
            // Dropped before we saw the end. A body already at its end (HEAD, 204, an empty
            // body nobody needed to poll) finished normally; anything else was abandoned.
            let end = if self.inner.is_end_stream() {
                BodyEnd::Complete
            } else {
                BodyEnd::Cancelled
            };
            tap.finish(end);
        }
    }
}

#[cfg(test)]
mod tests;
