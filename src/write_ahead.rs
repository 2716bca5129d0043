//! `audit.mode = "write_ahead"`: no SCIM write reaches the upstream before a durable record of
//! what it is about to do.
//!
//! For a POST, PUT, PATCH or DELETE (not `.search`), the request path reads the request body
//! (up to `capture.max_body_bytes`; beyond that the intent is made from what was read and the
//! rest streams on), hands a snapshot to the audit worker, which classifies it like any event
//! and writes an `audit.intent` record to the trail, and waits until a sink has the record on
//! stable storage: a native file sink after `fdatasync` (one sync covers every intent in a
//! batch: group commit), or a disk buffer after its append is synced. Only then is the request
//! forwarded, replaying the frames read. If that does not happen within
//! `audit.write_ahead_timeout_ms`, the write is refused with 503 and `Retry-After`, and
//! nothing reaches the upstream. This is the one place the request path waits on audit work,
//! by design.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::clock::Timestamp;
use crate::exchange::{BodyCapture, BodyEnd, ConnInfo, Exchange, Handoff, RequestHead};

/// The request body as forwarded upstream: the frames already read (write-ahead: those read
/// before the intent record was made durable), then the rest of the client's body as it
/// arrives.
///
/// When it is dropped before its end (the upstream failed before reading it all), whatever
/// it did not forward goes to its [`Unread`] slot, so the request path can still read the
/// rest for the event (never to forward it): a deactivation refused with 502 is still
/// recorded as a deactivation.
pub struct ForwardBody {
    replay: VecDeque<Frame<Bytes>>,
    rest: Option<Incoming>,
    unread: Option<Unread>,
}

/// Where a [`ForwardBody`] leaves what it did not forward: frames not replayed and the body
/// not read to its end.
#[derive(Clone, Default)]
pub struct Unread(Arc<Mutex<Option<Left>>>);

/// What a [`ForwardBody`] did not forward: frames not replayed, and the body not read to its
/// end.
pub type Left = (VecDeque<Frame<Bytes>>, Option<Incoming>);

impl Unread {
    /// What the body left behind, if it was dropped before its end.
    pub fn take(&self) -> Option<Left> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl ForwardBody {
    /// The client's body, streamed as it arrives.
    pub fn streaming(body: Incoming) -> ForwardBody {
        ForwardBody {
            replay: VecDeque::new(),
            rest: Some(body),
            unread: None,
        }
    }

    /// Leaves what is not forwarded in `unread` when dropped early.
    pub fn keep_unread(mut self, unread: Unread) -> ForwardBody {
        self.unread = Some(unread);
        self
    }
}

impl Drop for ForwardBody {
    fn drop(&mut self) {
        let Some(unread) = self.unread.take() else {
            return;
        };
        if self.replay.is_empty() && self.rest.is_none() {
            return;
        }
        let left = (std::mem::take(&mut self.replay), self.rest.take());
        *unread.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(left);
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.replay.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(body) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.rest = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .replay
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(body) => {
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + buffered);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
        }
    }
}

/// Reads what a [`ForwardBody`] left unforwarded, for the event only: up to `max_bytes` in
/// total and for at most `deadline`. Returns the bytes read and whether the body ended.
pub async fn read_unread(
    (replay, rest): Left,
    max_bytes: usize,
    deadline: Duration,
) -> (Vec<Bytes>, bool) {
    let deadline = tokio::time::Instant::now() + deadline;
    let mut read = 0usize;
    let mut chunks = Vec::new();
    for frame in replay {
        if let Ok(data) = frame.into_data() {
            read += data.len();
            chunks.push(data);
        }
    }
    let Some(mut body) = rest else {
        return (chunks, true);
    };
    while read < max_bytes && !body.is_end_stream() {
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout_at(deadline, next).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    read += data.len();
                    chunks.push(data);
                }
            }
            Ok(None) => return (chunks, true),
            Ok(Some(Err(_))) | Err(_) => return (chunks, false),
        }
    }
    let ended = body.is_end_stream();
    (chunks, ended)
}

/// Why a write could not be recorded ahead.
#[derive(Debug)]
pub enum Refusal {
    /// The client's body failed or stalled while it was read.
    Body(String),
    /// The intent record was not durable in time (queue full, sink stuck, disk refusing).
    NotDurable(String),
}

/// What the request path needs to record an intent.
pub struct Intent<'a> {
    pub request_id: &'a str,
    pub conn: &'a ConnInfo,
    /// The route that took the request.
    pub route: Option<std::sync::Arc<crate::exchange::RouteTag>>,
    pub head: RequestHead,
    pub started_at: Timestamp,
    pub max_body_bytes: usize,
    pub timeout: Duration,
    pub handoff: &'a Handoff,
}

/// Reads the body's first `max_body_bytes`, records the intent durably, and returns the body
/// to forward (the frames read, then the rest). Everything is bounded by `timeout`.
///
/// # Errors
/// [`Refusal`] when the write must not be forwarded.
pub async fn record(intent: Intent<'_>, mut body: Incoming) -> Result<ForwardBody, Refusal> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + intent.timeout;
    let mut frames = VecDeque::new();
    let mut capture = BodyCapture::empty(BodyEnd::Complete);
    let mut read = 0usize;
    let mut ended = body.is_end_stream();
    while !ended && read < intent.max_body_bytes {
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout_at(deadline, next).await {
            Err(_) => {
                return Err(Refusal::Body(format!(
                    "the request body did not arrive within write_ahead_timeout_ms ({} ms)",
                    intent.timeout.as_millis()
                )))
            }
            Ok(None) => ended = true,
            Ok(Some(Err(error))) => return Err(Refusal::Body(error.to_string())),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len();
                    capture.record(data, intent.max_body_bytes);
                }
                frames.push_back(frame);
                ended = body.is_end_stream();
            }
        }
    }
    if !ended {
        capture.truncated = true;
    }
    let snapshot = Exchange {
        request_id: intent.request_id.to_owned(),
        started_at: intent.started_at,
        duration: started.elapsed(),
        conn: intent.conn.clone(),
        route: intent.route,
        request: intent.head,
        request_body: capture,
        response: None,
        recorded_failure: None,
    };
    let Some(durable) = intent.handoff.auditor().submit_intent(snapshot) else {
        return Err(Refusal::NotDurable(
            "the audit hand-off queue is full or closed".to_owned(),
        ));
    };
    match tokio::time::timeout_at(deadline, durable).await {
        Ok(Ok(())) => Ok(ForwardBody {
            replay: frames,
            rest: (!ended).then_some(body),
            unread: None,
        }),
        Ok(Err(_)) => Err(Refusal::NotDurable(
            "no sink could make the intent record durable".to_owned(),
        )),
        Err(_) => Err(Refusal::NotDurable(format!(
            "the intent record was not durable within write_ahead_timeout_ms ({} ms)",
            intent.timeout.as_millis()
        ))),
    }
}
