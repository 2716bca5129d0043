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
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::clock::Timestamp;
use crate::exchange::{BodyCapture, BodyEnd, ConnInfo, Exchange, Handoff, RequestHead};

/// The request body as forwarded upstream: streamed as it arrives, or (write-ahead) the frames
/// read before the intent record was made durable, then the rest.
pub enum ForwardBody {
    Streaming(Incoming),
    Replayed {
        frames: VecDeque<Frame<Bytes>>,
        rest: Option<Incoming>,
    },
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ForwardBody::Streaming(body) => Pin::new(body).poll_frame(cx),
            ForwardBody::Replayed { frames, rest } => {
                if let Some(frame) = frames.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                match rest {
                    Some(body) => Pin::new(body).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ForwardBody::Streaming(body) => body.is_end_stream(),
            ForwardBody::Replayed { frames, rest } => {
                frames.is_empty() && rest.as_ref().is_none_or(Body::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ForwardBody::Streaming(body) => body.size_hint(),
            ForwardBody::Replayed { frames, rest } => {
                let buffered: u64 = frames
                    .iter()
                    .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                    .sum();
                match rest {
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
    }
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
        Ok(Ok(())) => Ok(ForwardBody::Replayed {
            frames,
            rest: (!ended).then_some(body),
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
