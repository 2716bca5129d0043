//! The tee against a scripted body: every way a stream can end reports exactly once.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::{BodyGuards, CaptureLimits, TeeBody, TeeError};
use crate::exchange::testing::{self, Collected};
use crate::exchange::CaptureBudget;
use crate::exchange::{BodyEnd, ConnInfo, PendingExchange, RequestHead, ResponseOutcome};

/// A body that yields what it was given, then ends (or fails).
struct Scripted {
    frames: VecDeque<Result<Frame<Bytes>, String>>,
}

impl Scripted {
    fn data(chunks: &[&'static str]) -> Self {
        Scripted {
            frames: chunks
                .iter()
                .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
                .collect(),
        }
    }
    fn then_error(mut self, message: &str) -> Self {
        self.frames.push_back(Err(message.to_owned()));
        self
    }
    fn then_trailers(mut self) -> Self {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        self.frames.push_back(Ok(Frame::trailers(trailers)));
        self
    }
}

impl Body for Scripted {
    type Data = Bytes;
    type Error = String;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, String>>> {
        Poll::Ready(self.get_mut().frames.pop_front())
    }
    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }
}

fn pending() -> (std::sync::Arc<PendingExchange>, std::sync::Arc<Collected>) {
    let (handoff, rx) = testing::handoff();
    let head = RequestHead {
        method: Method::POST,
        path_and_query: "/Users".into(),
        version: Version::HTTP_11,
        headers: HeaderMap::new(),
    };
    let conn = ConnInfo::new("127.0.0.1:1".parse().unwrap(), false);
    (
        PendingExchange::new("r1".into(), conn, head, handoff, None),
        rx,
    )
}

fn limits(max_body_bytes: usize) -> CaptureLimits {
    CaptureLimits {
        max_body_bytes,
        budget: CaptureBudget::new(1 << 20, Default::default()),
    }
}

/// Finishes the response side so the exchange is handed off after the request side reports.
fn finish_response(p: &PendingExchange) {
    p.finish_response(ResponseOutcome::Generated {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        failure: None,
    });
}

#[tokio::test]
async fn frames_pass_through_unchanged_and_are_captured() {
    let (p, rx) = pending();
    finish_response(&p);
    let tee = TeeBody::request(Scripted::data(&["hello ", "world"]), p, &limits(1024));
    let collected = tee.collect().await.unwrap().to_bytes();
    assert_eq!(collected, "hello world");
    let ex = rx.try_recv().expect("handed off once the body ended");
    assert_eq!(ex.request_body.end, BodyEnd::Complete);
    assert_eq!(ex.request_body.total_bytes, 11);
    assert_eq!(ex.request_body.to_bytes(), "hello world");
    assert!(!ex.request_body.truncated);
    assert!(rx.try_recv().is_err(), "handed off exactly once");
}

#[tokio::test]
async fn capture_stops_at_the_limit_and_says_so() {
    let (p, rx) = pending();
    finish_response(&p);
    let tee = TeeBody::request(Scripted::data(&["0123", "4567", "89"]), p, &limits(6));
    let collected = tee.collect().await.unwrap().to_bytes();
    assert_eq!(collected, "0123456789", "forwarding is never limited");
    let ex = rx.try_recv().unwrap();
    assert_eq!(ex.request_body.to_bytes(), "012345");
    assert_eq!(ex.request_body.total_bytes, 10);
    assert!(ex.request_body.truncated);
}

#[tokio::test]
async fn trailers_end_the_stream_normally() {
    let (p, rx) = pending();
    finish_response(&p);
    let tee = TeeBody::request(Scripted::data(&["x"]).then_trailers(), p, &limits(64));
    let collected = tee.collect().await.unwrap();
    assert!(collected.trailers().is_some());
    assert_eq!(rx.try_recv().unwrap().request_body.end, BodyEnd::Complete);
}

#[tokio::test]
async fn an_error_mid_stream_is_passed_on_and_recorded() {
    let (p, rx) = pending();
    finish_response(&p);
    let mut tee = TeeBody::request(
        Scripted::data(&["part"]).then_error("reset by peer"),
        p,
        &limits(64),
    );
    assert!(tee.frame().await.unwrap().is_ok());
    assert_eq!(
        tee.frame().await.unwrap().unwrap_err().to_string(),
        "reset by peer"
    );
    drop(tee);
    let ex = rx.try_recv().unwrap();
    assert_eq!(ex.request_body.end, BodyEnd::Error("reset by peer".into()));
    assert_eq!(ex.request_body.total_bytes, 4);
    assert!(
        rx.try_recv().is_err(),
        "drop after an error does not report again"
    );
}

#[tokio::test]
async fn dropped_early_is_cancelled() {
    let (p, rx) = pending();
    finish_response(&p);
    let mut tee = TeeBody::request(Scripted::data(&["a", "b"]), p, &limits(64));
    assert!(tee.frame().await.is_some());
    drop(tee);
    let ex = rx.try_recv().unwrap();
    assert_eq!(ex.request_body.end, BodyEnd::Cancelled);
    assert_eq!(ex.request_body.total_bytes, 1);
}

#[tokio::test]
async fn an_empty_body_dropped_unpolled_is_complete() {
    let (p, rx) = pending();
    finish_response(&p);
    drop(TeeBody::request(Scripted::data(&[]), p, &limits(64)));
    assert_eq!(rx.try_recv().unwrap().request_body.end, BodyEnd::Complete);
}

#[tokio::test]
async fn nothing_is_handed_off_until_both_sides_finish() {
    let (p, rx) = pending();
    let tee = TeeBody::request(Scripted::data(&["x"]), p.clone(), &limits(64));
    tee.collect().await.unwrap();
    assert!(rx.try_recv().is_err(), "response side still open");
    let body = TeeBody::response(
        Scripted::data(&["{}"]),
        p,
        StatusCode::CREATED,
        HeaderMap::new(),
        &limits(64),
    );
    body.collect().await.unwrap();
    let ex = rx.try_recv().unwrap();
    let response = ex.response.unwrap();
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(response.body.to_bytes(), "{}");
}

#[tokio::test]
async fn the_shared_budget_truncates_captures_and_is_given_back() {
    let budget = CaptureBudget::new(5, Default::default());
    let limits = CaptureLimits {
        max_body_bytes: 100,
        budget: budget.clone(),
    };
    let (p, rx) = pending();
    finish_response(&p);
    let tee = TeeBody::request(Scripted::data(&["abc", "defg", "h"]), p, &limits);
    assert_eq!(
        tee.collect().await.unwrap().to_bytes(),
        "abcdefgh",
        "forwarding is never limited"
    );
    let ex = rx.try_recv().unwrap();
    assert_eq!(
        ex.request_body.to_bytes(),
        "abc",
        "\"defg\" did not fit the budget of 5"
    );
    assert!(ex.request_body.truncated);
    assert_eq!(ex.request_body.total_bytes, 8);
    assert_eq!(budget.used(), 3);
    drop(ex);
    assert_eq!(
        budget.used(),
        0,
        "dropping the exchange gives its bytes back"
    );
}

/// A body that yields its chunks, then never ends (a client that stopped sending).
struct Stalling {
    frames: VecDeque<Bytes>,
}

impl Body for Stalling {
    type Data = Bytes;
    type Error = String;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, String>>> {
        match self.get_mut().frames.pop_front() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_is_cut_after_the_idle_timeout() {
    let (p, rx) = pending();
    finish_response(&p);
    let body = Stalling {
        frames: VecDeque::from([Bytes::from_static(b"{\"userName\"")]),
    };
    let mut tee = TeeBody::request(body, p, &limits(64)).guard(BodyGuards {
        idle_timeout: Some(std::time::Duration::from_millis(50)),
        max_bytes: None,
    });
    assert!(
        tee.frame().await.unwrap().is_ok(),
        "bytes pass while they arrive"
    );
    let started = std::time::Instant::now();
    let cut = tokio::time::timeout(std::time::Duration::from_secs(5), tee.frame())
        .await
        .expect("cut well before 5 s");
    assert!(matches!(cut, Some(Err(TeeError::Idle(_)))));
    assert!(started.elapsed() >= std::time::Duration::from_millis(40));
    assert!(tee.frame().await.is_none(), "a cut body stays ended");
    drop(tee);
    let ex = rx.try_recv().unwrap();
    assert_eq!(ex.request_body.end, BodyEnd::IdleTimeout);
    assert_eq!(ex.request_body.total_bytes, 11);
    assert_eq!(
        ex.failure().unwrap().kind,
        crate::exchange::FailureKind::RequestBodyTimeout
    );
    assert!(rx.try_recv().is_err(), "reported once");
}

#[tokio::test]
async fn a_request_body_over_the_limit_is_cut_before_the_crossing_frame() {
    let (p, rx) = pending();
    finish_response(&p);
    let mut tee = TeeBody::request(Scripted::data(&["0123", "4567", "89"]), p, &limits(64)).guard(
        BodyGuards {
            idle_timeout: None,
            max_bytes: Some(6),
        },
    );
    assert!(tee.frame().await.unwrap().is_ok());
    assert!(matches!(
        tee.frame().await,
        Some(Err(TeeError::TooLarge(6)))
    ));
    assert!(tee.frame().await.is_none());
    drop(tee);
    let ex = rx.try_recv().unwrap();
    assert_eq!(ex.request_body.end, BodyEnd::TooLarge);
    assert_eq!(
        ex.request_body.to_bytes(),
        "0123",
        "only what was forwarded"
    );
    let failure = ex.failure().unwrap();
    assert_eq!(
        failure.kind,
        crate::exchange::FailureKind::RequestBodyTooLarge
    );
    assert_eq!(failure.side, crate::exchange::FailureSide::Downstream);
}

#[tokio::test]
async fn a_body_at_the_limit_passes_whole() {
    let (p, rx) = pending();
    finish_response(&p);
    let tee = TeeBody::request(Scripted::data(&["0123", "45"]), p, &limits(64)).guard(BodyGuards {
        idle_timeout: Some(std::time::Duration::from_secs(30)),
        max_bytes: Some(6),
    });
    assert_eq!(tee.collect().await.unwrap().to_bytes(), "012345");
    assert_eq!(rx.try_recv().unwrap().request_body.end, BodyEnd::Complete);
}
