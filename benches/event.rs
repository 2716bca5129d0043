//! Cost of the audit side per exchange: classify it, build the event from a finished exchange and encode
//! it as one JSON line. Runs off the hot path, but it bounds how many exchanges per second one
//! audit worker can absorb. Prints ns per event; `cargo bench --bench event`.
//!
//! A plain timing loop (no criterion) keeps the dependency tree small; figures are for
//! comparing builds side by side on the same machine, not absolute claims.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use scimtap::event::{events_for, EventContext};
use scimtap::exchange::{BodyCapture, BodyEnd, ConnInfo, Exchange, RequestHead, ResponseRecord};

fn user_create() -> Exchange {
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_static("Bearer 0123456789abcdef0123456789abcdef"),
    );
    headers.insert(
        "user-agent",
        HeaderValue::from_static("Okta SCIM Client 1.0.0"),
    );
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/scim+json; charset=utf-8"),
    );
    let body = Bytes::from_static(include_bytes!(
        "../tests/peer/fixtures/okta_lifecycle.jsonl"
    ));
    let mut response_headers = HeaderMap::new();
    response_headers.insert(
        "content-type",
        HeaderValue::from_static("application/scim+json"),
    );
    Exchange {
        request_id: "0192f1c2-7a4b-7c3d-9e8f-0123456789ab".to_owned(),
        started_at: SystemTime::now(),
        duration: Duration::from_micros(850),
        conn: ConnInfo::new("10.1.2.3:51234".parse().expect("valid address"), true),
        request: RequestHead {
            method: Method::POST,
            path_and_query: "/scim/v2/Users".to_owned(),
            version: Version::HTTP_11,
            headers,
        },
        request_body: BodyCapture {
            captured_bytes: body.len(),
            total_bytes: body.len() as u64,
            chunks: vec![body],
            truncated: false,
            end: BodyEnd::Complete,
            budget: None,
        },
        response: Some(ResponseRecord {
            status: StatusCode::CREATED,
            headers: response_headers,
            body: BodyCapture::empty(BodyEnd::Complete),
            generated: false,
        }),
        recorded_failure: None,
    }
}

fn main() {
    let exchange = user_create();
    let ctx = EventContext::default();
    let encode = |ex: &Exchange| -> usize {
        events_for(ex, &ctx)
            .iter()
            .filter_map(|e| e.to_json_line().ok())
            .map(|l| l.len())
            .sum()
    };
    let iterations = 200_000u32;
    // Warm up, then measure.
    for _ in 0..10_000 {
        black_box(encode(&exchange));
    }
    let started = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..iterations {
        bytes += encode(black_box(&exchange));
    }
    let elapsed = started.elapsed();
    println!(
        "classify+event build+encode (user create): {:.0} ns/event, {} bytes/event, {:.0} events/s on one core",
        elapsed.as_nanos() as f64 / f64::from(iterations),
        bytes / iterations as usize,
        f64::from(iterations) / elapsed.as_secs_f64()
    );
}
