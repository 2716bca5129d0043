//! `TeeBody`: a body wrapper that passes every frame through untouched and keeps a copy.
//!
//! Frames are handed to the reader as they arrive; a copy of their bytes is kept up to the
//! capture limit and the shared capture budget. The wrapper reports to its [`PendingExchange`]
//! exactly once: at end of stream, on error, or when dropped early (the reader went away).
//! It never buffers, never parses and never waits (the shape of linkerd2-proxy's body-eos).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

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

/// A body that tees its frames into the exchange's capture.
pub struct TeeBody<B: Body> {
    inner: B,
    tap: Option<Tap>,
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
        }
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
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match polled {
            Some(Ok(frame)) => {
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
                Poll::Ready(Some(Err(error)))
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
