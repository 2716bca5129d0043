//! Micro-benchmarks of the audit side, per fixture kind: classify + redact + build the event +
//! encode it (native JSON line, and each other format), and the body tee's overhead per frame.
//! The audit side runs off the hot path, but it bounds how many exchanges per second one audit
//! worker absorbs; the tee runs on the hot path, for every frame.
//!
//! `cargo bench --bench event` (divan). Figures compare builds side by side on one machine;
//! they are not absolute claims.

use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use http_body::Body;
use http_body_util::StreamBody;
use scimtap::config::EventFormat;
use scimtap::event::{events_for, EventContext};
use scimtap::exchange::{
    BodyCapture, BodyEnd, ConnInfo, Exchange, PendingExchange, RequestHead, ResponseRecord,
};

fn main() {
    divan::main();
}

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

fn capture(body: Bytes) -> BodyCapture {
    BodyCapture {
        captured_bytes: body.len(),
        total_bytes: body.len() as u64,
        chunks: vec![body],
        truncated: false,
        end: BodyEnd::Complete,
        budget: None,
    }
}

fn exchange(
    method: Method,
    path: &str,
    request: String,
    status: u16,
    response: String,
) -> Exchange {
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
    let mut response_headers = HeaderMap::new();
    response_headers.insert(
        "content-type",
        HeaderValue::from_static("application/scim+json"),
    );
    Exchange {
        request_id: "0192f1c2-7a4b-7c3d-9e8f-0123456789ab".to_owned(),
        started_at: SystemTime::now().into(),
        duration: Duration::from_micros(850),
        conn: ConnInfo::new("10.1.2.3:51234".parse().expect("valid address"), true),
        route: Some(scimtap::exchange::RouteTag::named("default")),
        request: RequestHead {
            method,
            path_and_query: path.to_owned(),
            version: Version::HTTP_11,
            headers,
        },
        request_body: capture(Bytes::from(request)),
        response: Some(ResponseRecord {
            status: StatusCode::from_u16(status).expect("valid status"),
            headers: response_headers,
            body: capture(Bytes::from(response)),
            generated: false,
        }),
        recorded_failure: None,
    }
}

fn user_json(n: usize) -> serde_json::Value {
    serde_json::json!({
        "schemas": [USER],
        "id": format!("u-{n}"),
        "externalId": format!("00u{n:08}"),
        "userName": format!("user{n}@example.com"),
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [{"value": format!("user{n}@example.com"), "primary": true, "type": "work"}],
        "active": true,
        "password": "correct horse battery staple",
    })
}

/// The fixture kinds the issue names.
#[derive(Debug, Clone, Copy)]
enum Kind {
    UserCreate,
    GroupPatch50Members,
    Bulk20,
    MalformedBody,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::UserCreate,
        Kind::GroupPatch50Members,
        Kind::Bulk20,
        Kind::MalformedBody,
    ];

    fn exchange(self) -> Exchange {
        match self {
            Kind::UserCreate => {
                let user = user_json(1);
                exchange(
                    Method::POST,
                    "/scim/v2/Users",
                    user.to_string(),
                    201,
                    user.to_string(),
                )
            }
            Kind::GroupPatch50Members => {
                let members: Vec<_> = (0..50)
                    .map(|n| serde_json::json!({"value": format!("u-{n}")}))
                    .collect();
                let patch = serde_json::json!({
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "add", "path": "members", "value": members}],
                });
                exchange(
                    Method::PATCH,
                    "/scim/v2/Groups/g-1",
                    patch.to_string(),
                    204,
                    String::new(),
                )
            }
            Kind::Bulk20 => {
                let operations: Vec<_> = (0..20)
                    .map(|n| {
                        serde_json::json!({
                            "method": "POST", "path": "/Users", "bulkId": format!("b{n}"),
                            "data": user_json(n),
                        })
                    })
                    .collect();
                let results: Vec<_> = (0..20)
                    .map(|n| {
                        serde_json::json!({
                            "method": "POST", "bulkId": format!("b{n}"), "status": "201",
                            "location": format!("https://example.com/scim/v2/Users/u-{n}"),
                        })
                    })
                    .collect();
                exchange(
                    Method::POST,
                    "/scim/v2/Bulk",
                    serde_json::json!({
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                        "Operations": operations,
                    })
                    .to_string(),
                    200,
                    serde_json::json!({
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"],
                        "Operations": results,
                    })
                    .to_string(),
                )
            }
            Kind::MalformedBody => exchange(
                Method::PATCH,
                "/scim/v2/Users/u-1",
                r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":fal"#.to_owned(),
                400,
                "<html><body><h1>400 Bad Request</h1></body></html>".to_owned(),
            ),
        }
    }
}

/// Classify, redact, build every event of the exchange and encode each as a native JSON line.
#[divan::bench(args = Kind::ALL)]
fn classify_and_encode_native(bencher: divan::Bencher, kind: Kind) {
    let exchange = kind.exchange();
    let ctx = EventContext::default();
    bencher.bench_local(|| {
        events_for(black_box(&exchange), &ctx)
            .iter()
            .filter_map(|e| e.to_json_line().ok())
            .map(|l| l.len())
            .sum::<usize>()
    });
}

/// The same, encoded in each other format (made only when a sink asks for it).
#[divan::bench(args = [EventFormat::Ocsf, EventFormat::Ecs, EventFormat::Cef])]
fn classify_and_encode_format(bencher: divan::Bencher, format: EventFormat) {
    let exchange = Kind::UserCreate.exchange();
    let ctx = EventContext::default();
    bencher.bench_local(|| {
        events_for(black_box(&exchange), &ctx)
            .iter()
            .filter_map(|e| scimtap::formats::encode(format, e).ok())
            .flatten()
            .map(|l| l.len())
            .sum::<usize>()
    });
}

/// Sealing one line into the hash chain (HMAC-SHA256).
#[divan::bench]
fn seal_into_the_chain(bencher: divan::Bencher) {
    let exchange = Kind::UserCreate.exchange();
    let line = events_for(&exchange, &EventContext::default())[0]
        .to_json_line()
        .expect("encodes");
    let mut chain =
        scimtap::integrity::Chain::resume(Some(b"0123456789abcdef0123456789abcdef".to_vec()), None);
    bencher
        .with_inputs(|| line.clone())
        .bench_local_values(|line| chain.seal(black_box(line)).len());
}

/// A 64-frame body of 16 KiB frames polled through the tee (copying up to the capture limit)
/// and, for comparison, the same body polled bare: the difference is the tee's cost.
#[divan::bench(args = [false, true])]
fn body_of_64_frames(bencher: divan::Bencher, through_tee: bool) {
    const FRAMES: usize = 64;
    let frame = Bytes::from(vec![b'x'; 16 * 1024]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let metrics = scimtap::telemetry::Metrics::new();
    let (queue, _pipeline) = scimtap::pipeline::Pipeline::start(
        1 << 20,
        scimtap::pipeline::RouteStages::with_events(EventContext::default()),
        Vec::new(),
        scimtap::pipeline::ChainSetup {
            chain: scimtap::integrity::Chain::resume(None, None),
            start: serde_json::json!({}),
            state_file: None,
            tap: None,
        },
        None,
        None,
        &metrics,
    )
    .expect("pipeline");
    let handoff = scimtap::exchange::Handoff::new(Arc::new(queue));
    let limits = scimtap::tee::CaptureLimits {
        max_body_bytes: 1024 * 1024,
        budget: scimtap::exchange::CaptureBudget::new(
            usize::MAX / 2,
            prometheus_client::metrics::counter::Counter::default(),
        ),
    };
    bencher.bench_local(|| {
        let frames = (0..FRAMES)
            .map(|_| Ok::<_, std::convert::Infallible>(http_body::Frame::data(frame.clone())));
        let body = StreamBody::new(futures_stream(frames));
        runtime.block_on(async {
            if through_tee {
                let pending = PendingExchange::new(
                    "bench".to_owned(),
                    ConnInfo::new("127.0.0.1:1".parse().expect("address"), false),
                    RequestHead {
                        method: Method::POST,
                        path_and_query: "/scim/v2/Users".to_owned(),
                        version: Version::HTTP_11,
                        headers: HeaderMap::new(),
                    },
                    handoff.clone(),
                    Some(scimtap::exchange::RouteTag::named("default")),
                );
                let tee = scimtap::tee::TeeBody::request(body, Arc::clone(&pending), &limits);
                drain(tee).await
            } else {
                drain(body).await
            }
        })
    });
}

async fn drain<B: Body<Data = Bytes> + Unpin>(mut body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut n = 0;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame.map(|f| f.into_data()) {
            n += data.map(|d| d.len()).unwrap_or(0);
        }
    }
    let _ = body.is_end_stream();
    black_box(n)
}

/// An iterator as a `Stream`, without pulling in the futures crate.
fn futures_stream<I: Iterator + Unpin>(iter: I) -> IterStream<I> {
    IterStream(iter)
}

struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}
