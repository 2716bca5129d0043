//! The event contract (docs/events.md, docs/event.schema.json) against what the code emits.
//!
//! Every case of tests/fixtures/classification.json (real Okta, Entra ID and RFC 7644 traffic)
//! and a set of transport, failure and configuration variants are turned into exchanges, then
//! into events with `scimtap::event::events_for`, under two contexts: the default one, and one
//! from a configuration with `[[clients]]`, `[redact]`, `[privacy] hash_key_file` and
//! `capture.include_bodies = "redacted"`. The JSON lines are validated by
//! tests/peer/validate_events.py (jsonschema, Draft 2020-12) from `$SCIMTAP_PEER_VENV`
//! (default tests/peer/.venv; `tests/peer/setup.sh` creates it). The validator must also reject
//! deliberately broken events, so that this test can fail, and every JSON example in
//! docs/events.md must match the schema and the field order the code writes.
//!
//! With `SCIMTAP_SCHEMA_EVENTS_OUT=<file>` the events are also written there, one
//! `{"case": ..., "context": ..., "event": {...}}` object per line: docs/events.md's examples
//! are copied from that file.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use scimtap::config::Config;
use scimtap::event::{events_for, EventContext};
use scimtap::exchange::{
    BodyCapture, BodyEnd, ConnInfo, Exchange, Failure, FailureSide, RequestHead, ResponseRecord,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::peers::{self, root};
use crate::support::process::{self, run};

const OKTA_TOKEN: &str = "okta-tok-Zq81mW4xPz0c";
const ENTRA_TOKEN: &str = "entra-tok-Vb27kR9sLm3d";
const OTHER_TOKEN: &str = "other-tok-Hn55tY2gQa8e";
/// Secrets that never reach an event: the tokens above, the fixture's passwords and the value
/// of a built-in secret query parameter.
const SECRETS: &[&str] = &[
    OKTA_TOKEN,
    ENTRA_TOKEN,
    OTHER_TOKEN,
    "1mz050nq",
    "t1meMa$heen",
    "bulk-secret-1",
    "qp-secret-77",
];
/// Secrets only the configured context hides: a `[redact] query_params` value and a
/// `[redact] attributes` value.
const CONFIGURED_SECRETS: &[&str] = &["sig-secret-88", "EMP-4471-secret"];
const OKTA_UA: &str = "Okta SCIM Client 1.0.0";
const SCIM_JSON: &str = "application/scim+json";
/// 2026-11-22T09:00:00.000Z.
const BASE_MILLIS: u64 = 1_795_338_000_000;

// === exchanges ===

#[derive(Clone, Copy)]
enum Idp {
    Okta,
    Entra,
    Other,
}

impl Idp {
    fn of(case_name: &str) -> Idp {
        if case_name.starts_with("okta") {
            Idp::Okta
        } else if case_name.starts_with("entra") {
            Idp::Entra
        } else {
            Idp::Other
        }
    }
}

fn capture(bytes: &[u8]) -> BodyCapture {
    let mut c = BodyCapture::empty(BodyEnd::Complete);
    c.record(&Bytes::copy_from_slice(bytes), 1 << 20);
    c
}

fn header(headers: &mut HeaderMap, name: http::header::HeaderName, value: &str) {
    headers.insert(
        name,
        HeaderValue::from_str(value).expect("valid header value"),
    );
}

/// A request from `idp`, as the proxy would record it.
struct Req {
    idp: Idp,
    method: String,
    path_and_query: String,
    body: Vec<u8>,
    version: Version,
}

/// A response as sent to the client.
struct Resp {
    status: u16,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    location: Option<String>,
    generated: bool,
}

fn exchange(n: usize, req: Req, resp: Option<Resp>) -> Exchange {
    let mut headers = HeaderMap::new();
    let (token, peer) = match req.idp {
        Idp::Okta => (OKTA_TOKEN, "198.51.100.23"),
        Idp::Entra => (ENTRA_TOKEN, "203.0.113.10"),
        Idp::Other => (OTHER_TOKEN, "192.0.2.44"),
    };
    header(&mut headers, AUTHORIZATION, &format!("Bearer {token}"));
    if let Idp::Okta = req.idp {
        header(&mut headers, USER_AGENT, OKTA_UA);
    }
    if !req.body.is_empty() {
        let ct = match req.idp {
            Idp::Okta => "application/json; charset=utf-8",
            _ => SCIM_JSON,
        };
        header(&mut headers, CONTENT_TYPE, ct);
    }
    let response = resp.map(|r| {
        let mut h = HeaderMap::new();
        if let Some(ct) = r.content_type {
            header(&mut h, CONTENT_TYPE, ct);
        }
        if let Some(location) = &r.location {
            header(&mut h, LOCATION, location);
        }
        ResponseRecord {
            status: StatusCode::from_u16(r.status).expect("valid status"),
            headers: h,
            body: capture(&r.body),
            generated: r.generated,
        }
    });
    Exchange {
        request_id: uuid::Uuid::now_v7().to_string(),
        started_at: (SystemTime::UNIX_EPOCH + Duration::from_millis(BASE_MILLIS + n as u64 * 1371))
            .into(),
        duration: Duration::from_micros(1800 + n as u64 * 397),
        conn: ConnInfo::new(
            format!("{peer}:{}", 40000 + n)
                .parse()
                .expect("valid address"),
            true,
        ),
        route: Some(scimtap::exchange::RouteTag::named("default")),
        request: RequestHead {
            method: Method::from_bytes(req.method.as_bytes()).expect("valid method"),
            path_and_query: req.path_and_query,
            version: req.version,
            headers,
        },
        request_body: capture(&req.body),
        response,
        recorded_failure: None,
    }
}

/// A fixture body: `<key>_raw` as written, else the JSON value (key order kept).
fn fixture_body(case: &Value, key: &str) -> Vec<u8> {
    if let Some(raw) = case[format!("{key}_raw")].as_str() {
        return raw.as_bytes().to_vec();
    }
    match &case[key] {
        Value::Null => Vec::new(),
        v => serde_json::to_vec(v).expect("JSON encodes"),
    }
}

fn fixture_exchange(n: usize, case: &Value) -> Exchange {
    let name = case["name"].as_str().expect("case name");
    let mut path_and_query = case["path"].as_str().expect("case path").to_owned();
    if let Some(q) = case["query"].as_str() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let response_body = fixture_body(case, "response");
    let content_type = if response_body.is_empty() {
        None
    } else if response_body.starts_with(b"<") {
        Some("text/html")
    } else {
        Some(SCIM_JSON)
    };
    let resp = case["status"].as_u64().map(|status| Resp {
        status: status as u16,
        body: response_body,
        content_type,
        location: case["location"].as_str().map(str::to_owned),
        generated: false,
    });
    exchange(
        n,
        Req {
            idp: Idp::of(name),
            method: case["method"].as_str().expect("method").to_owned(),
            path_and_query,
            body: fixture_body(case, "request"),
            version: Version::HTTP_11,
        },
        resp,
    )
}

/// scimtap's own SCIM error body, as src/proxy.rs generates it.
fn generated_body(status: u16, detail: &str) -> Vec<u8> {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.to_string(),
        "detail": format!("scimtap: {detail}"),
    })
    .to_string()
    .into_bytes()
}

fn generated(status: u16, failure: &Failure) -> Resp {
    Resp {
        status,
        body: generated_body(status, &failure.detail),
        content_type: Some(SCIM_JSON),
        location: None,
        generated: true,
    }
}

fn ok(status: u16, body: Value) -> Resp {
    Resp {
        status,
        body: if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        },
        content_type: (!body.is_null()).then_some(SCIM_JSON),
        location: None,
        generated: false,
    }
}

fn req(idp: Idp, method: &str, path_and_query: &str, body: Value) -> Req {
    Req {
        idp,
        method: method.to_owned(),
        path_and_query: path_and_query.to_owned(),
        body: if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        },
        version: Version::HTTP_11,
    }
}

const USER_ID: &str = "23a35c27-23d3-4c03-b4c5-6443c09e7173";
const GROUP_ID: &str = "abf4dd94-a4c0-4f67-89c9-76b03340cb9b";

/// Transport, failure and configuration cases the fixture does not cover.
fn variants(first: usize) -> Vec<(String, Exchange)> {
    let patch_op = |ops: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
    let deactivate = patch_op(json!([{"op": "replace", "value": {"active": false}}]));
    let user_path = format!("/scim/v2/Users/{USER_ID}");
    let group_path = format!("/scim/v2/Groups/{GROUP_ID}");
    let mut out: Vec<(String, Exchange)> = Vec::new();
    let mut n = first;
    let mut push = |name: &str, ex: Exchange| {
        out.push((name.to_owned(), ex));
    };
    let mut next = || {
        n += 1;
        n
    };

    // The upstream refused the connection: scimtap answered 502 and read the body the
    // upstream never did for the event (as observed on a real run).
    let refused = Failure {
        side: FailureSide::Upstream,
        kind: scimtap::exchange::FailureKind::ConnectRefused,
        detail: "client error (Connect): tcp connect error: Connection refused (os error 111)"
            .to_owned(),
    };
    let r = req(Idp::Okta, "PATCH", &user_path, deactivate.clone());
    let mut ex = exchange(next(), r, Some(generated(502, &refused)));
    header(
        &mut ex.request.headers,
        CONTENT_TYPE,
        "application/json; charset=utf-8",
    );
    ex.recorded_failure = Some(refused);
    push("upstream connect_refused 502", ex);

    for (status, kind, detail) in [
        (
            504,
            "response_timeout",
            "no response head from the upstream within 30s (upstream.response_timeout_secs)",
        ),
        (
            504,
            "connect_timeout",
            "client error (Connect): tcp connect error: connection timed out",
        ),
        (
            502,
            "upstream_closed",
            "client error (SendRequest): connection closed before message completed",
        ),
        (
            502,
            "tls_error",
            "client error (Connect): invalid peer certificate: UnknownIssuer",
        ),
        (
            502,
            "connect_error",
            "client error (Connect): dns error: failed to lookup address information",
        ),
    ] {
        let failure = Failure {
            side: FailureSide::Upstream,
            kind: kind.parse().unwrap(),
            detail: detail.to_owned(),
        };
        let mut ex = exchange(
            next(),
            req(
                Idp::Entra,
                "GET",
                "/scim/Users?filter=userName+eq+%22Test_User_00aa%22",
                Value::Null,
            ),
            Some(generated(status, &failure)),
        );
        ex.recorded_failure = Some(failure);
        push(&format!("upstream {kind} {status}"), ex);
    }

    // The upstream's response body broke off mid-stream.
    let mut ex = exchange(
        next(),
        req(Idp::Okta, "GET", &user_path, Value::Null),
        Some(Resp {
            status: 200,
            body: br#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"23a"#
                .to_vec(),
            content_type: Some(SCIM_JSON),
            location: None,
            generated: false,
        }),
    );
    if let Some(r) = ex.response.as_mut() {
        r.body.end = BodyEnd::Error("error reading a body from connection".to_owned());
    }
    push("upstream response_body_error", ex);

    // The client went away before the response head, and while reading the body.
    push(
        "client_disconnected before the head",
        exchange(
            next(),
            req(Idp::Okta, "PATCH", &user_path, deactivate.clone()),
            None,
        ),
    );
    let mut ex = exchange(
        next(),
        req(
            Idp::Entra,
            "GET",
            "/scim/Users?startIndex=1&count=100",
            Value::Null,
        ),
        Some(ok(
            200,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 0, "Resources": []}),
        )),
    );
    if let Some(r) = ex.response.as_mut() {
        r.body.end = BodyEnd::Cancelled;
    }
    push("client_disconnected during the body", ex);

    // The client's request body failed mid-upload.
    let failure = Failure {
        side: FailureSide::Downstream,
        kind: scimtap::exchange::FailureKind::RequestBodyError,
        detail: "error reading a body from connection: unexpected end of file".to_owned(),
    };
    let mut ex = exchange(
        next(),
        req(
            Idp::Okta,
            "POST",
            "/scim/v2/Users",
            json!({"userName": "x"}),
        ),
        Some(generated(502, &failure)),
    );
    ex.request_body.end = BodyEnd::Error(failure.detail.clone());
    push("request_body_error", ex);

    // Refusals: nothing forwarded.
    for (method, target, version, status, kind, detail) in [
        (
            "GET",
            "/latest/meta-data",
            Version::HTTP_11,
            400,
            "absolute_form_refused",
            "absolute-form request targets are not supported: scimtap forwards only to its configured upstream",
        ),
        (
            "CONNECT",
            "",
            Version::HTTP_11,
            405,
            "connect_refused_by_proxy",
            "CONNECT is not supported: scimtap forwards only to its configured upstream",
        ),
        (
            "OPTIONS",
            "*",
            Version::HTTP_2,
            400,
            "invalid_request_target",
            "the request target must be an absolute path",
        ),
    ] {
        let failure = Failure {
            side: FailureSide::Downstream,
            kind: kind.parse().unwrap(),
            detail: detail.to_owned(),
        };
        let mut r = req(Idp::Other, method, target, Value::Null);
        r.version = version;
        let mut ex = exchange(next(), r, Some(generated(status, &failure)));
        ex.request_body = BodyCapture::empty(BodyEnd::NotForwarded);
        ex.recorded_failure = Some(failure);
        push(&format!("refused {kind}"), ex);
    }

    // A request body longer than capture.max_body_bytes: not classified, still forwarded.
    let big = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "big.user@okta.local",
        "password": "1mz050nq",
        "name": {"givenName": "Big", "familyName": "User"},
    })
    .to_string();
    let mut ex = exchange(
        next(),
        req(Idp::Okta, "POST", "/scim/v2/Users", Value::Null),
        Some(ok(
            201,
            json!({"id": "7a1c0f52-4b6e-4d8e-9d61-2b1f0f6b9a10", "userName": "big.user@okta.local"}),
        )),
    );
    let mut c = BodyCapture::empty(BodyEnd::Complete);
    c.record(&Bytes::from(big.into_bytes()), 40);
    ex.request_body = c;
    header(
        &mut ex.request.headers,
        CONTENT_TYPE,
        "application/json; charset=utf-8",
    );
    push("truncated request body", ex);

    // Secret query parameters (built-in and configured), HTTP/2, Basic auth, no auth.
    let mut r = req(
        Idp::Other,
        "GET",
        "/scim/v2/Users?filter=userName%20eq%20%22bjensen%22&access_token=qp-secret-77&sig=sig-secret-88&count=10",
        Value::Null,
    );
    r.version = Version::HTTP_2;
    let mut ex = exchange(
        next(),
        r,
        Some(ok(
            200,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 0, "Resources": []}),
        )),
    );
    header(&mut ex.request.headers, AUTHORIZATION, "Basic c2NpbTpwYXNz");
    push("secret query parameters, HTTP/2, basic auth", ex);

    let mut r = req(
        Idp::Other,
        "GET",
        "/scim/v2/ServiceProviderConfig",
        Value::Null,
    );
    r.version = Version::HTTP_10;
    let mut ex = exchange(
        next(),
        r,
        Some(ok(
            200,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"], "bulk": {"supported": true}}),
        )),
    );
    ex.request.headers.remove(AUTHORIZATION);
    header(&mut ex.request.headers, USER_AGENT, "curl/8.5.0");
    push("no authorization, HTTP/1.0", ex);

    let mut ex = exchange(
        next(),
        req(Idp::Other, "GET", "/scim/v2/Users/u1", Value::Null),
        Some(ok(
            401,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": 401, "detail": "no credentials"}),
        )),
    );
    header(&mut ex.request.headers, AUTHORIZATION, "Bearer");
    header(
        &mut ex.request.headers,
        USER_AGENT,
        "Microsoft.AzureAD/Provisioning",
    );
    ex.request_id = "entra-req-0042".to_owned();
    push("scheme without credentials, client request id", ex);

    // PATCH forms the fixture does not have.
    push(
        "members replace with a filter path (group.members.update)",
        exchange(
            next(),
            req(
                Idp::Other,
                "PATCH",
                &group_path,
                patch_op(
                    json!([{"op": "replace", "path": "members[value eq \"2819c223\"].display", "value": "Babs"}]),
                ),
            ),
            Some(ok(204, Value::Null)),
        ),
    );
    push(
        "remove active, remove displayName, sensitive and pii values",
        exchange(
            next(),
            req(
                Idp::Entra,
                "PATCH",
                "/scim/Users/5171a35d82074e068ce2",
                patch_op(json!([
                    {"op": "remove", "path": "active"},
                    {"op": "replace", "path": "password", "value": "t1meMa$heen"},
                    {"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": "EMP-4471-secret"},
                    {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "babs@example.com"},
                    {"op": "replace", "path": "userName", "value": "babs@example.com"},
                    {"op": "add", "value": {"nickName": "Babs", "employeeNumber": "EMP-4471-secret", "active": "True"}},
                    {"op": "remove"},
                ])),
            ),
            Some(ok(
                200,
                json!({"id": "5171a35d82074e068ce2", "userName": "babs@example.com", "password": "t1meMa$heen"}),
            )),
        ),
    );
    push(
        "members remove with a filter that is not value eq",
        exchange(
            next(),
            req(
                Idp::Other,
                "PATCH",
                &group_path,
                patch_op(json!([{"op": "remove", "path": "members[display eq \"Babs Jensen\"]"}])),
            ),
            Some(ok(204, Value::Null)),
        ),
    );
    push(
        "group PUT with a new displayName",
        exchange(
            next(),
            req(
                Idp::Okta,
                "PUT",
                &group_path,
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": GROUP_ID, "displayName": "Engineering"}),
            ),
            Some(ok(
                200,
                json!({"id": GROUP_ID, "displayName": "Engineering"}),
            )),
        ),
    );
    push(
        "custom type patch and delete",
        exchange(
            next(),
            req(
                Idp::Other,
                "PATCH",
                "/scim/v2/Devices/d-1",
                patch_op(json!([{"op": "replace", "path": "displayName", "value": "laptop-2"}])),
            ),
            Some(ok(204, Value::Null)),
        ),
    );
    push(
        "custom type delete",
        exchange(
            next(),
            req(Idp::Other, "DELETE", "/scim/v2/Devices/d-1", Value::Null),
            Some(ok(204, Value::Null)),
        ),
    );
    push(
        "PATCH with a body that is not a PatchOp",
        exchange(
            next(),
            req(Idp::Other, "PATCH", &user_path, json!({"active": false})),
            Some(ok(
                400,
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "400", "scimType": "invalidSyntax"}),
            )),
        ),
    );

    // Bulk: stopped by failOnErrors (no entry for the last operation), and refused whole.
    let bulk = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "failOnErrors": 1,
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "u1", "data": {"userName": "carol@example.com", "password": "bulk-secret-1"}},
            {"method": "delete", "path": "/Groups/g-9"},
            {"method": "PATCH", "path": "/Groups/g-1", "data": {"Operations": [{"op": "add", "path": "members", "value": [{"value": "u-7"}]}]}},
        ],
    });
    push(
        "bulk stopped by failOnErrors",
        exchange(
            next(),
            req(Idp::Other, "POST", "/scim/v2/Bulk", bulk.clone()),
            Some(ok(
                200,
                json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"],
                    "Operations": [
                        {"method": "POST", "bulkId": "u1", "status": "409", "response": {"status": "409", "scimType": "uniqueness", "detail": "userName exists"}},
                    ],
                }),
            )),
        ),
    );
    push(
        "bulk refused whole",
        exchange(
            next(),
            req(Idp::Other, "POST", "/scim/v2/Bulk", bulk),
            Some(ok(
                413,
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "413", "detail": "maxOperations is 2"}),
            )),
        ),
    );
    push(
        "bulk without operations",
        exchange(
            next(),
            req(
                Idp::Other,
                "POST",
                "/scim/v2/Bulk",
                json!({"Operations": []}),
            ),
            Some(ok(200, json!({"Operations": []}))),
        ),
    );
    push(
        "bulk without a body",
        exchange(
            next(),
            req(Idp::Other, "POST", "/scim/v2/Bulk", Value::Null),
            Some(ok(400, Value::Null)),
        ),
    );
    // A JSON body that is a bare `null` and one that is not an object.
    let mut ex = exchange(
        next(),
        req(Idp::Other, "POST", "/scim/v2/Users", Value::Null),
        Some(ok(400, json!("bad request"))),
    );
    ex.request_body = capture(b"null");
    push("request body null, response body a string", ex);

    // mTLS: a client certificate and no Authorization header (matched by cert_subject in the
    // configured context, written differently on purpose).
    let mut ex = exchange(
        next(),
        req(Idp::Okta, "DELETE", &user_path, Value::Null),
        Some(ok(204, Value::Null)),
    );
    ex.request.headers.remove(AUTHORIZATION);
    ex.conn.client_cert_subject = Some("CN=okta-scim,O=Example Corp".into());
    push("mTLS client certificate", ex);
    out
}

// === contexts ===

const MINIMAL_CONFIG: &str = r#"
[listen]
address = "127.0.0.1:8080"

[upstream]
url = "http://127.0.0.1:9000"

[[sinks]]
type = "stdout"

[scim]
resource_types = [{ name = "Device", endpoint = "/Devices" }]
"#;

/// The context of a configuration without `[[clients]]`, `[redact]`, `[privacy]` or
/// `include_bodies`: what a default deployment emits. (Built from a configuration, as the
/// proxy does, rather than `EventContext::default()`, whose `ScimContext` lacks the built-in
/// `password` redaction that `ScimContext::new` adds.)
fn plain_context(dir: &Path) -> EventContext {
    let config = Config::from_toml_str(MINIMAL_CONFIG, &dir.join("minimal.toml"))
        .unwrap_or_else(|e| panic!("minimal configuration is valid: {e}"));
    EventContext::from_config(&config)
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A context from a real configuration: named clients, redaction, pseudonymisation with a
/// random key, and redacted bodies in events.
fn configured_context(dir: &Path) -> EventContext {
    let key_file = dir.join("pii.key");
    let mut key = [0u8; 32];
    loop {
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .expect("random key");
        if key.iter().filter(|b| !b.is_ascii_whitespace()).count() >= 16 {
            break;
        }
    }
    std::fs::write(&key_file, key).expect("write key");
    let text = format!(
        r#"{MINIMAL_CONFIG}
[capture]
include_bodies = "redacted"

[[clients]]
name = "okta-prod"
idp = "okta"
token_sha256 = "{okta}"

[[clients]]
name = "okta-mtls"
idp = "okta"
cert_subject = "o=example corp, cn=okta-scim"

[[clients]]
name = "entra-prod"
idp = "entra"
token_sha256 = "{entra}"

[redact]
attributes = ["employeeNumber"]
query_params = ["sig"]

[privacy]
hash_key_file = '{key}'
"#,
        okta = sha256_hex(OKTA_TOKEN),
        entra = sha256_hex(ENTRA_TOKEN),
        key = key_file.display(),
    );
    let config = Config::from_toml_str(&text, &dir.join("proxy.toml"))
        .unwrap_or_else(|e| panic!("test configuration is valid: {e}"));
    EventContext::from_config(&config)
}

// === building and validating ===

struct Line {
    case: String,
    context: &'static str,
    json: String,
}

fn all_events(dir: &Path) -> Vec<Line> {
    let cases: Vec<Value> = serde_json::from_str(include_str!("../fixtures/classification.json"))
        .expect("fixture file is JSON");
    assert!(cases.len() >= 50, "the table lost cases");
    let contexts = [
        ("default", plain_context(dir)),
        ("configured", configured_context(dir)),
    ];
    let mut exchanges: Vec<(String, Exchange)> = cases
        .iter()
        .enumerate()
        .map(|(n, case)| {
            (
                case["name"].as_str().expect("name").to_owned(),
                fixture_exchange(n, case),
            )
        })
        .collect();
    exchanges.extend(variants(cases.len()));

    let mut lines = Vec::new();
    for (context, ctx) in &contexts {
        for (case, ex) in &exchanges {
            let events = events_for(ex, ctx);
            assert!(!events.is_empty(), "{case}: no event");
            for event in events {
                let bytes = event.to_json_line().expect("event encodes");
                let json = String::from_utf8(bytes).expect("UTF-8");
                assert!(json.ends_with('\n') && !json[..json.len() - 1].contains('\n'));
                lines.push(Line {
                    case: case.clone(),
                    context,
                    json: json.trim_end().to_owned(),
                });
            }
        }
    }
    lines
}

/// Runs the validator on `files`: (exit code, stdout and stderr).
fn validate(files: &[&Path]) -> (Option<i32>, String) {
    let output = run(Command::new(peers::venv_python())
        .arg(peers::peer_script("validate_events.py"))
        .arg(root().join("docs/event.schema.json"))
        .args(files));
    (output.status.code(), process::text(&output))
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).expect("write events");
}

#[test]
fn every_event_matches_the_documented_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lines = all_events(dir.path());

    if let Some(out) = std::env::var_os("SCIMTAP_SCHEMA_EVENTS_OUT") {
        let labelled: Vec<String> = lines
            .iter()
            .map(|l| {
                let event: Value = serde_json::from_str(&l.json).expect("event is JSON");
                json!({"case": l.case, "context": l.context, "event": event}).to_string()
            })
            .collect();
        write_lines(Path::new(&out), &labelled);
    }

    // What the contract promises besides the schema.
    for l in &lines {
        let configured = if l.context == "configured" {
            CONFIGURED_SECRETS
        } else {
            &[]
        };
        for secret in SECRETS.iter().chain(configured) {
            assert!(
                !l.json.contains(secret),
                "{} ({}): secret {secret:?} in the event: {}",
                l.case,
                l.context,
                l.json
            );
        }
        let bodies = l.json.contains("\"request_body\":") || l.json.contains("\"response_body\":");
        if l.context == "default" {
            assert!(!bodies, "{}: a body without include_bodies", l.case);
        }
    }
    // The optional fields are exercised, so the schema's rules for them are too.
    for needle in [
        "\"certificate_subject\":\"CN=",
        "\"name\":\"okta-mtls\"",
        "\"request_body\":",
        "\"response_body\":",
        "\"value\":",
        "hmac-sha256:",
        "\"raw_op\":",
        "\"raw_value\":",
        "\"outcome_reason\":\"already_absent\"",
        "\"outcome_reason\":\"not_found_lookup\"",
    ] {
        assert!(
            lines.iter().any(|l| l.json.contains(needle)),
            "no event has {needle}"
        );
    }

    let file = dir.path().join("events.jsonl");
    write_lines(
        &file,
        &lines.iter().map(|l| l.json.clone()).collect::<Vec<_>>(),
    );
    let (code, output) = validate(&[&file]);
    assert_eq!(
        code,
        Some(0),
        "events do not match docs/event.schema.json:\n{output}"
    );
    assert!(
        output.contains(&format!("OK {} events", lines.len())),
        "{output}"
    );

    // A directory argument validates every *.jsonl in it.
    let (code, output) = validate(&[dir.path()]);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains(&format!("OK {} events", lines.len())),
        "{output}"
    );
}

fn set(event: &mut Value, pointer: &str, value: Value) {
    *event
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} exists")) = value;
}

fn rename(event: &mut Value, pointer: &str, new_key: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    let object = event
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{parent} is an object"));
    let value = object
        .remove(key)
        .unwrap_or_else(|| panic!("{pointer} exists"));
    object.insert(new_key.to_owned(), value);
}

fn remove(event: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    event
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|o| o.remove(key))
        .unwrap_or_else(|| panic!("{pointer} exists"));
}

#[test]
fn the_validator_rejects_events_that_break_the_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lines = all_events(dir.path());
    let find = |case: &str, context: &str| -> Value {
        let l = lines
            .iter()
            .find(|l| l.case.starts_with(case) && l.context == context)
            .unwrap_or_else(|| panic!("an event for {case}"));
        serde_json::from_str(&l.json).expect("event is JSON")
    };
    let created = find("okta O1 create user", "configured");
    let deactivated = find("okta O3 deactivate", "default");
    let bulk = find("RFC 7644 3.7.3 bulk", "default");
    let refused = find("upstream connect_refused", "default");
    let already_absent = find("entra E9 delete of a user already gone", "default");
    let renamed = find("entra E4 replace userName refused", "configured");

    type Mutation = (&'static str, Value, Box<dyn Fn(&mut Value)>);
    let mutations: Vec<Mutation> = vec![
        (
            "an extra top-level field",
            created.clone(),
            Box::new(|e| {
                e.as_object_mut().unwrap().insert("extra".into(), json!(1));
            }),
        ),
        (
            "a renamed client field",
            created.clone(),
            Box::new(|e| {
                rename(e, "/client/token_fingerprint", "token_fp");
            }),
        ),
        (
            "a renamed changes field",
            deactivated.clone(),
            Box::new(|e| {
                rename(e, "/scim/changes/members_added", "membersAdded");
            }),
        ),
        (
            "a missing http field",
            created.clone(),
            Box::new(|e| remove(e, "/http/request_bytes")),
        ),
        (
            "a missing nullable field",
            created.clone(),
            Box::new(|e| remove(e, "/scim/note")),
        ),
        (
            "an unknown action",
            created.clone(),
            Box::new(|e| {
                set(e, "/scim/actions", json!(["user.explode"]));
            }),
        ),
        (
            "an unknown operation",
            created.clone(),
            Box::new(|e| {
                set(e, "/scim/operation", json!("upsert"));
            }),
        ),
        (
            "an unknown endpoint",
            created.clone(),
            Box::new(|e| {
                set(e, "/scim/endpoint", json!("users"));
            }),
        ),
        (
            "the old schema version",
            created.clone(),
            Box::new(|e| {
                set(e, "/schema_version", json!("1.0"));
            }),
        ),
        (
            "a status as a string",
            created.clone(),
            Box::new(|e| {
                set(e, "/http/status", json!("201"));
            }),
        ),
        (
            "null where never null",
            created.clone(),
            Box::new(|e| {
                set(e, "/http/response_generated", Value::Null);
            }),
        ),
        (
            "an extra field in a patch op",
            deactivated.clone(),
            Box::new(|e| {
                e.pointer_mut("/scim/changes/patch_ops/0")
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .insert("from".into(), json!("x"));
            }),
        ),
        (
            "an extra field in bulk",
            bulk.clone(),
            Box::new(|e| {
                e.pointer_mut("/scim/bulk")
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .insert("version".into(), json!("W/\"1\""));
            }),
        ),
        (
            "success despite a failure",
            refused.clone(),
            Box::new(|e| {
                set(e, "/outcome", json!("success"));
            }),
        ),
        (
            "failure although everything succeeded",
            created.clone(),
            Box::new(|e| {
                set(e, "/outcome", json!("failure"));
            }),
        ),
        (
            "a reason on a failure",
            already_absent.clone(),
            Box::new(|e| {
                set(e, "/outcome", json!("failure"));
            }),
        ),
        (
            "a reason with a failure object",
            already_absent.clone(),
            Box::new(|e| {
                set(
                    e,
                    "/failure",
                    json!({"side": "downstream", "kind": "client_disconnected", "detail": "x"}),
                );
            }),
        ),
        (
            "an unknown outcome reason",
            already_absent.clone(),
            Box::new(|e| {
                set(e, "/outcome_reason", json!("gone"));
            }),
        ),
        (
            "already_absent on something other than a delete",
            already_absent.clone(),
            Box::new(|e| {
                set(e, "/scim/operation", json!("patch"));
            }),
        ),
        (
            "success on a 404 without a reason",
            already_absent.clone(),
            Box::new(|e| {
                set(e, "/outcome_reason", Value::Null);
            }),
        ),
        (
            "a missing outcome_reason",
            created.clone(),
            Box::new(|e| remove(e, "/outcome_reason")),
        ),
        (
            "an extra field in changes.requested",
            renamed.clone(),
            Box::new(|e| {
                e.pointer_mut("/scim/changes/requested")
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .insert("email".into(), json!("a@b"));
            }),
        ),
        (
            "a raw_op that is not a string",
            renamed.clone(),
            Box::new(|e| {
                set(e, "/scim/changes/patch_ops/0/raw_op", json!(1));
            }),
        ),
        (
            "an unknown failure kind",
            refused.clone(),
            Box::new(|e| {
                set(e, "/failure/kind", json!("oops"));
            }),
        ),
        (
            "an unknown failure side",
            refused.clone(),
            Box::new(|e| {
                set(e, "/failure/side", json!("client"));
            }),
        ),
        (
            "an event id that is not a UUIDv7",
            created.clone(),
            Box::new(|e| {
                set(
                    e,
                    "/event_id",
                    json!("5b0b9d0e-6f35-4c6a-9f3c-7a3c1f5d2e10"),
                );
            }),
        ),
        (
            "a long token fingerprint",
            created.clone(),
            Box::new(|e| {
                set(
                    e,
                    "/client/token_fingerprint",
                    json!("9f86d081884c7d659a2feaa0c55ad015"),
                );
            }),
        ),
        (
            "an extra field in target",
            created.clone(),
            Box::new(|e| {
                e.pointer_mut("/scim/target")
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .insert("email".into(), json!("a@b"));
            }),
        ),
        (
            "an extra field in failure",
            refused.clone(),
            Box::new(|e| {
                e.pointer_mut("/failure")
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .insert("status".into(), json!(502));
            }),
        ),
        (
            "an extra field in scim.error",
            refused.clone(),
            Box::new(|e| {
                e["scim"]["error"] =
                    json!({"status": "409", "scim_type": null, "detail": null, "schemas": []});
            }),
        ),
    ];

    // Line 1 is a valid event, then one broken event per line.
    let mut text = vec![serde_json::to_string(&created).unwrap()];
    for (what, base, mutate) in &mutations {
        let mut e = base.clone();
        mutate(&mut e);
        assert_ne!(&e, base, "{what}: the mutation changed nothing");
        text.push(serde_json::to_string(&e).unwrap());
    }
    let file = dir.path().join("broken.jsonl");
    write_lines(&file, &text);
    let (code, output) = validate(&[&file]);
    assert_eq!(
        code,
        Some(1),
        "the validator accepted broken events:\n{output}"
    );
    assert!(
        !output.contains(&format!("{}:1:", file.display())),
        "the valid event was rejected:\n{output}"
    );
    for (i, (what, _, _)) in mutations.iter().enumerate() {
        let tag = format!("{}:{}:", file.display(), i + 2);
        assert!(
            output.contains(&tag),
            "{what} (line {}) was not reported:\n{output}",
            i + 2
        );
    }
    assert!(
        output.contains(&format!(
            "FAILED {} of {} events",
            mutations.len(),
            mutations.len() + 1
        )),
        "{output}"
    );

    // Lines that are not events at all.
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "\n{\"a\":1,\"a\":2}\nnot json\n").unwrap();
    let (code, output) = validate(&[&junk]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("FAILED 3 of 3 events"), "{output}");
}

/// The ```json blocks of docs/events.md, each one event.
fn documented_examples() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("docs/events.md")).expect("docs/events.md");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```json\n") {
        let body = &rest[start + "```json\n".len()..];
        let end = body.find("\n```").expect("closed code block");
        out.push(
            serde_json::from_str(&body[..end])
                .unwrap_or_else(|e| panic!("an example in docs/events.md is not JSON: {e}")),
        );
        rest = &body[end..];
    }
    out
}

#[test]
fn the_documented_examples_match_the_schema_and_the_field_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = documented_examples();
    assert!(
        examples.len() >= 15,
        "docs/events.md lost examples: {}",
        examples.len()
    );
    let lines: Vec<String> = examples
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let file = dir.path().join("examples.jsonl");
    write_lines(&file, &lines);
    let (code, output) = validate(&[&file]);
    assert_eq!(
        code,
        Some(0),
        "docs/events.md examples (in order of appearance) do not match the schema:\n{output}"
    );

    // Field order as the code writes it (the schema cannot say).
    let generated: Vec<Value> = all_events(dir.path())
        .iter()
        .map(|l| serde_json::from_str(&l.json).unwrap())
        .collect();
    let keys =
        |v: &Value| -> Option<Vec<String>> { v.as_object().map(|o| o.keys().cloned().collect()) };
    for pointer in [
        "",
        "/client",
        "/http",
        "/scim",
        "/scim/target",
        "/scim/changes",
        "/scim/changes/requested",
        "/scim/bulk",
        "/scim/error",
        "/failure",
    ] {
        // The longest key list the code produced for this object (optional fields included).
        let mut reference = generated
            .iter()
            .filter_map(|g| g.pointer(pointer).and_then(keys))
            .max_by_key(Vec::len)
            .unwrap_or_else(|| panic!("no generated event has an object at {pointer:?}"));
        if pointer.is_empty() {
            // The [state] fields these events (made without state) lack, in the order
            // AuditEvent writes them: after `failure`.
            // Then the alert rules' `alert`.
            reference.extend([
                "retry_of".to_owned(),
                "deprovision".to_owned(),
                "alert".to_owned(),
            ]);
        }
        for (i, example) in examples.iter().enumerate() {
            // Integrity records have their own layout (their schema checks them above).
            if example.get("record").is_some() {
                continue;
            }
            let Some(actual) = example.pointer(pointer).and_then(keys) else {
                continue;
            };
            let expected: Vec<String> = reference
                .iter()
                .filter(|k| actual.contains(k))
                .cloned()
                .collect();
            assert_eq!(
                actual,
                expected,
                "docs/events.md example {} has the fields of {pointer:?} out of order",
                i + 1
            );
        }
    }
}
