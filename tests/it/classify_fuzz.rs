//! Property test: arbitrary methods, paths, queries, headers and bodies (random bytes, and
//! random JSON built from SCIM's own vocabulary) through classification and event building:
//! nothing panics, every exchange yields at least one event, and every event encodes.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use proptest::prelude::*;
use scimtap::event::{events_for, EventContext};
use scimtap::exchange::{BodyCapture, BodyEnd, ConnInfo, Exchange, RequestHead, ResponseRecord};
use serde_json::{Map, Value};

const WORDS: &[&str] = &[
    "Users",
    "Groups",
    "Me",
    "Bulk",
    ".search",
    "Schemas",
    "ResourceTypes",
    "ServiceProviderConfig",
    "scim",
    "v2",
    "Operations",
    "op",
    "path",
    "value",
    "members",
    "active",
    "displayName",
    "userName",
    "password",
    "externalId",
    "id",
    "add",
    "remove",
    "replace",
    "Replace",
    "False",
    "true",
    "method",
    "bulkId",
    "data",
    "status",
    "response",
    "location",
    "Resources",
    "filter",
    "schemas",
    "members[value eq \"x\"]",
    "urn:ietf:params:scim:schemas:core:2.0:User:active",
    "emails[type eq \"work\"].value",
    "%2F",
    "%zz",
    "ü",
    "..",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(WORDS).prop_map(str::to_owned),
        "[a-zA-Z0-9%._~:\\[\\]\" -]{0,12}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((word(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..200),
        json().prop_map(|v| {
            let mut s = v.to_string().into_bytes();
            s.truncate(s.len() / 2);
            s
        }),
    ]
}

fn capture(bytes: Vec<u8>, truncated: bool) -> BodyCapture {
    let mut c = BodyCapture::empty(BodyEnd::Complete);
    c.total_bytes = bytes.len() as u64 + u64::from(truncated) * 10;
    c.captured_bytes = bytes.len();
    c.truncated = truncated;
    if !bytes.is_empty() {
        c.chunks.push(Bytes::from(bytes));
    }
    c
}

fn headers(pairs: Vec<(String, Vec<u8>)>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            h.append(n, v);
        }
    }
    h
}

fn header_pairs() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec(
        (
            prop::sample::select(
                &[
                    "authorization",
                    "user-agent",
                    "location",
                    "content-type",
                    "x-request-id",
                    "cookie",
                ][..],
            )
            .prop_map(str::to_owned),
            prop::collection::vec(any::<u8>(), 0..40),
        ),
        0..5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn classification_never_panics(
        method in prop_oneof![prop::sample::select(&["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"][..]).prop_map(str::to_owned), "[A-Z]{1,8}"],
        segments in prop::collection::vec(word(), 0..6),
        query in prop::option::of("[a-zA-Z0-9%=&+_.\"-]{0,40}"),
        request_body in body(),
        request_truncated in any::<bool>(),
        response_body in body(),
        status in prop::option::of(100u16..600),
        request_headers in header_pairs(),
        response_headers in header_pairs(),
    ) {
        let mut path = format!("/{}", segments.join("/"));
        if let Some(q) = &query {
            path.push('?');
            path.push_str(q);
        }
        let exchange = Exchange {
            request_id: "fuzz".into(),
            started_at: SystemTime::UNIX_EPOCH.into(),
            duration: Duration::from_millis(1),
            conn: ConnInfo::new("127.0.0.1:1".parse().unwrap(), false),
            route: Some(scimtap::exchange::RouteTag::named("default")),
            request: RequestHead {
                method: Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
                path_and_query: path,
                version: Version::HTTP_11,
                headers: headers(request_headers),
            },
            request_body: capture(request_body, request_truncated),
            response: status.map(|s| ResponseRecord {
                status: StatusCode::from_u16(s).unwrap_or(StatusCode::OK),
                headers: headers(response_headers),
                body: capture(response_body, false),
                generated: false,
            }),
            recorded_failure: None,
        };
        let mut ctx = EventContext::default();
        ctx.learn(&exchange);
        let events = events_for(&exchange, &ctx);
        prop_assert!(!events.is_empty());
        for event in &events {
            let line = event.to_json_line().expect("every event encodes");
            prop_assert!(serde_json::from_slice::<Value>(&line).is_ok());
        }
    }
}
