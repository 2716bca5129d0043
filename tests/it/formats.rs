//! Output formats: a sink with `format = "cef"` writes CEF lines that an independent parser
//! (PyPI `pycef`) splits back into exactly the values of the native event; the ECS and OCSF
//! documents of every classification fixture, and of a live file sink, conform to the
//! vendored ECS field reference and OCSF schema.

use std::collections::HashMap;
use std::process::Command;

use crate::support::*;
use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};

/// pycef names custom fields by their labels (`cn1Label=httpStatus cn1=201` → `httpStatus`).
/// CEF extension value unescaping (`\\`, `\=`, `\n`, `\r`), which pycef leaves to its caller.
pub(crate) fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Every line of the CEF file at `path` as the independent parser (PyPI `pycef`) splits it:
/// header fields and extensions by name, values still escaped (see [`unescape`]).
pub(crate) fn parse_cef(path: &std::path::Path) -> Vec<HashMap<String, String>> {
    let script = "import json, sys, pycef\nprint(json.dumps([pycef.parse(l.rstrip('\\n')) for l in open(sys.argv[1]) if l.strip()]))";
    let out = run(Command::new(peers::venv_python())
        .arg("-c")
        .arg(script)
        .arg(path));
    assert!(
        out.status.success(),
        "pycef failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cef_lines_round_trip_through_an_independent_parser() {
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        let status = if req.uri().path().ends_with("/missing") { 404 } else { 201 };
        let body = if status == 404 {
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "404", "detail": "no such user | really = gone"})
        } else {
            json!({"id": "id=1|2", "userName": "tricky = name | with \\ and\nnewline"})
        };
        Response::builder().status(status).body(full(body.to_string())).unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cef_path = dir.path().join("audit.cef");
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&format!(
        "[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\n[[sinks]]\ntype = \"file\"\nformat = \"cef\"\npath = \"{}\"\n",
        cef_path.display()
    )));
    let client = http1_client();
    let requests = [
        (
            "POST",
            "/scim/v2/Users",
            Some(json!({"userName": "tricky = name | with \\ and\nnewline", "active": true})),
        ),
        (
            "PATCH",
            "/scim/v2/Users/u%3D1",
            Some(json!({"Operations": [{"op": "replace", "path": "active", "value": "False"}]})),
        ),
        ("GET", "/scim/v2/Users/missing", None),
        ("GET", "/healthz", None),
        (
            "PATCH",
            "/scim/v2/Groups/g1",
            Some(json!({"Operations": [
                {"op": "add", "path": "members", "value": [{"value": "u7"}, {"value": "u8"}]},
                {"op": "remove", "path": "members[value eq \"u9\"]"},
            ]})),
        ),
    ];
    for (i, (method, path, body)) in requests.iter().enumerate() {
        let req = Request::builder()
            .method(*method)
            .uri(proxy.url(path))
            .header("x-request-id", format!("cef-{i}"))
            .header("user-agent", "Okta SCIM Client 1.0.0")
            .header("authorization", "Bearer cef-token")
            .body(body.as_ref().map_or_else(empty, |b| full(b.to_string())))
            .unwrap();
        roundtrip(&client, req).await;
    }
    let native = proxy.wait_for_events(requests.len()).await;
    // The CEF file sink writes in its own thread; wait for it too.
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::read_to_string(&cef_path)
        .unwrap_or_default()
        .lines()
        .count()
        < requests.len()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "CEF sink did not write every event"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let parsed = parse_cef(&cef_path);
    assert_eq!(parsed.len(), requests.len());
    for cef in &parsed {
        let id = unescape(&cef["externalId"]);
        let event = native
            .iter()
            .find(|e| e["request_id"] == id.as_str())
            .expect("one native event per CEF line");
        assert_eq!(cef["DeviceVendor"], "scimtap");
        assert_eq!(
            cef["Severity"],
            if event["outcome"] == "success" {
                "3"
            } else {
                "6"
            }
        );
        let get = |key: &str| cef.get(key).map(|v| unescape(v));
        let text = |v: &Value| v.as_str().map(str::to_owned);
        assert_eq!(get("requestMethod"), text(&event["http"]["method"]));
        assert_eq!(get("request"), text(&event["http"]["path"]));
        assert_eq!(
            get("httpStatus"),
            event["http"]["status"].as_u64().map(|s| s.to_string())
        );
        assert_eq!(get("duid"), text(&event["scim"]["target"]["id"]), "{cef:?}");
        assert_eq!(
            get("duser"),
            text(&event["scim"]["target"]["user_name"]),
            "{cef:?}"
        );
        assert_eq!(get("eventId"), text(&event["event_id"]));
        assert_eq!(
            get("requestClientApplication"),
            text(&event["client"]["user_agent"])
        );
        // A label always comes with its value (pycef folds each pair into one key).
        let labels: Vec<&String> = cef.keys().filter(|k| k.ends_with("Label")).collect();
        assert!(
            labels.is_empty(),
            "labels without values: {labels:?} in {cef:?}"
        );
        assert_eq!(get("suid"), text(&event["client"]["token_fingerprint"]));
        let members = |key: &str| {
            let ids: Vec<&str> = event["scim"]["changes"][key]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            (!ids.is_empty()).then(|| ids.join(","))
        };
        assert_eq!(get("membersAdded"), members("members_added"), "{cef:?}");
        assert_eq!(get("membersRemoved"), members("members_removed"), "{cef:?}");
        match event["scim"]["actions"].as_array().and_then(|a| a.first()) {
            Some(action) => assert_eq!(get("act"), text(action)),
            None => assert!(get("act").is_some()),
        }
    }
    let by_id = |id: &str| {
        parsed
            .iter()
            .find(|c| unescape(&c["externalId"]) == id)
            .unwrap()
    };
    assert_eq!(unescape(&by_id("cef-1")["act"]), "user.deactivate");
    assert!(unescape(&by_id("cef-2")["scimError"]).contains("no such user | really = gone"));
    assert_eq!(by_id("cef-3")["DeviceEventClassID"], "http.request");
    assert_eq!(unescape(&by_id("cef-4")["membersAdded"]), "u7,u8");
    assert_eq!(unescape(&by_id("cef-4")["membersRemoved"]), "u9");
}

// === Fixtures shared by the ECS and OCSF tests ===

const FIXTURE_OKTA_TOKEN: &str = "okta-fixture-token-1";
const FIXTURE_OKTA_UA: &str = "Okta SCIM Client 1.0.0";
const FIXTURE_MINIMAL_CONFIG: &str = r#"
[listen]
address = "127.0.0.1:8080"

[upstream]
url = "http://127.0.0.1:9000"

[[sinks]]
type = "stdout"

[scim]
resource_types = [{ name = "Device", endpoint = "/Devices" }]
"#;

/// A finished exchange as the proxy would record it: Okta cases carry Okta's User-Agent and
/// token, the others neither (so the actor is unknown in the default context).
fn fixture_exchange(
    n: usize,
    method: &str,
    path_and_query: &str,
    request_body: &[u8],
    response: Option<(u16, Vec<u8>, Option<&str>)>,
    okta: bool,
) -> scimtap::exchange::Exchange {
    use http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, USER_AGENT};
    use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
    use scimtap::exchange::{
        BodyCapture, BodyEnd, ConnInfo, Exchange, RequestHead, ResponseRecord,
    };
    use std::time::{Duration, SystemTime};

    let capture = |bytes: &[u8]| {
        let mut c = BodyCapture::empty(BodyEnd::Complete);
        c.record(&bytes::Bytes::copy_from_slice(bytes), 1 << 20);
        c
    };
    let mut headers = HeaderMap::new();
    if okta {
        let bearer = format!("Bearer {FIXTURE_OKTA_TOKEN}");
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&bearer).unwrap());
        headers.insert(USER_AGENT, HeaderValue::from_static(FIXTURE_OKTA_UA));
    }
    if !request_body.is_empty() {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/scim+json"),
        );
    }
    let response = response.map(|(status, body, location)| {
        let mut h = HeaderMap::new();
        if !body.is_empty() {
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/scim+json"),
            );
        }
        if let Some(location) = location {
            h.insert(LOCATION, HeaderValue::from_str(location).unwrap());
        }
        ResponseRecord {
            status: StatusCode::from_u16(status).unwrap(),
            headers: h,
            body: capture(&body),
            generated: false,
        }
    });
    Exchange {
        request_id: format!("fixture-{n}"),
        started_at: (SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_338_000_000 + n as u64))
            .into(),
        duration: Duration::from_micros(1800 + n as u64 * 397),
        conn: ConnInfo::new(
            format!("198.51.100.23:{}", 40000 + n).parse().unwrap(),
            true,
        ),
        route: Some(scimtap::exchange::RouteTag::named("default")),
        request: RequestHead {
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            path_and_query: path_and_query.to_owned(),
            version: Version::HTTP_11,
            headers,
        },
        request_body: capture(request_body),
        response,
        recorded_failure: None,
    }
}

/// Every case of tests/fixtures/classification.json, plus failures and transports the table
/// does not have (upstream refused, client gone, an unusual method, mTLS, IPv6).
fn fixture_exchanges() -> Vec<(String, scimtap::exchange::Exchange)> {
    use scimtap::exchange::{Failure, FailureSide};

    let cases: Vec<Value> = serde_json::from_str(include_str!("../fixtures/classification.json"))
        .expect("fixture file is JSON");
    assert!(cases.len() >= 50, "the table lost cases");
    let body = |case: &Value, key: &str| -> Vec<u8> {
        if let Some(raw) = case[format!("{key}_raw")].as_str() {
            return raw.as_bytes().to_vec();
        }
        match &case[key] {
            Value::Null => Vec::new(),
            v => serde_json::to_vec(v).unwrap(),
        }
    };
    let mut out: Vec<(String, scimtap::exchange::Exchange)> = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let mut target = case["path"].as_str().unwrap().to_owned();
        if let Some(q) = case["query"].as_str() {
            target = format!("{target}?{q}");
        }
        let response = case["status"]
            .as_u64()
            .map(|s| (s as u16, body(case, "response"), case["location"].as_str()));
        let ex = fixture_exchange(
            n,
            case["method"].as_str().unwrap(),
            &target,
            &body(case, "request"),
            response,
            name.starts_with("okta"),
        );
        out.push((name.to_owned(), ex));
    }
    let mut n = cases.len();
    let mut next = || {
        n += 1;
        n
    };
    let refused = Failure {
        side: FailureSide::Upstream,
        kind: scimtap::exchange::FailureKind::ConnectRefused,
        detail: "tcp connect error: Connection refused (os error 111)".to_owned(),
    };
    let generated = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "502", "detail": "scimtap: upstream refused"});
    let mut ex = fixture_exchange(
        next(),
        "DELETE",
        "/scim/v2/Users/u1",
        b"",
        Some((502, generated.to_string().into_bytes(), None)),
        true,
    );
    if let Some(r) = ex.response.as_mut() {
        r.generated = true;
    }
    ex.recorded_failure = Some(refused);
    out.push(("upstream refused: generated 502".into(), ex));
    let ex = fixture_exchange(next(), "GET", "/scim/v2/Users/u1", b"", None, true);
    out.push(("client went away before the response".into(), ex));
    let ex = fixture_exchange(
        next(),
        "PROPFIND",
        "/scim/v2/Users",
        b"",
        Some((405, Vec::new(), None)),
        false,
    );
    out.push(("a method OCSF has no enum value for".into(), ex));
    let mut ex = fixture_exchange(
        next(),
        "GET",
        "/scim/v2/Groups/g1",
        b"",
        Some((200, br#"{"id":"g1","displayName":"Eng"}"#.to_vec(), None)),
        false,
    );
    ex.conn.client_cert_subject = Some("CN=okta-scim,O=Example Corp".into());
    out.push(("mTLS client".into(), ex));
    let mut ex = fixture_exchange(
        next(),
        "PATCH",
        "/scim/v2/Users/u1",
        br#"{"Operations":[{"op":"replace","path":"active","value":false}]}"#,
        Some((200, Vec::new(), None)),
        true,
    );
    ex.conn.peer = "[2001:db8::7]:443".parse().unwrap();
    out.push(("IPv6 peer".into(), ex));
    out
}

/// The contexts every fixture is classified under: `default` (the minimal configuration, so
/// the actor is unknown) and `configured` (Okta's token matched to a `[[clients]]` entry,
/// redacted bodies captured, a PII hash key).
fn fixture_contexts(dir: &std::path::Path) -> Vec<(&'static str, scimtap::event::EventContext)> {
    use scimtap::config::Config;
    use scimtap::event::EventContext;

    let key_file = dir.join("pii.key");
    std::fs::write(&key_file, "0123456789abcdef0123456789abcdef").unwrap();
    let configured = format!(
        "{FIXTURE_MINIMAL_CONFIG}\n[capture]\ninclude_bodies = \"redacted\"\n\n[[clients]]\nname = \"okta-prod\"\nidp = \"okta\"\ntoken_sha256 = \"{}\"\n\n[privacy]\nhash_key_file = '{}'\n",
        sha256_hex(FIXTURE_OKTA_TOKEN.as_bytes()),
        key_file.display()
    );
    [
        ("default", FIXTURE_MINIMAL_CONFIG.to_owned()),
        ("configured", configured),
    ]
    .into_iter()
    .map(|(name, text)| {
        let config = Config::from_toml_str(&text, &dir.join("proxy.toml"))
            .unwrap_or_else(|e| panic!("{name} configuration is valid: {e}"));
        (name, EventContext::from_config(&config))
    })
    .collect()
}

/// Calls `each(label, event)` for every event of every fixture exchange (see
/// [`fixture_exchanges`]) under every context (see [`fixture_contexts`]), labelled
/// `<case> (<context>)`. `dir` takes the contexts' files.
fn for_each_fixture_event(
    dir: &std::path::Path,
    mut each: impl FnMut(String, &scimtap::event::AuditEvent<'_>),
) {
    let contexts = fixture_contexts(dir);
    let exchanges = fixture_exchanges();
    for (context, ctx) in &contexts {
        for (case, ex) in &exchanges {
            let events = scimtap::event::events_for(ex, ctx);
            assert!(!events.is_empty(), "{case}: no event");
            for event in &events {
                each(format!("{case} ({context})"), event);
            }
        }
    }
}

fn write_jsonl(path: &std::path::Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// Waits until the file sink at `path` has written `n` lines (it writes in its own thread).
/// What the live sink tests send through the proxy, with `x-request-id: live-<index>`.
fn live_requests() -> Vec<(&'static str, &'static str, Option<Value>)> {
    let patch = |ops: Value| {
        Some(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}),
        )
    };
    vec![
        (
            "POST",
            "/scim/v2/Users",
            Some(json!({"userName": "bjensen", "displayName": "Babs"})),
        ),
        (
            "PATCH",
            "/scim/v2/Users/u1",
            patch(json!([{"op": "replace", "path": "active", "value": false}])),
        ),
        ("DELETE", "/scim/v2/Users/u1", None),
        (
            "POST",
            "/scim/v2/Groups",
            Some(json!({"displayName": "Eng", "members": [{"value": "u1"}]})),
        ),
        (
            "PATCH",
            "/scim/v2/Groups/g1",
            patch(json!([{"op": "remove", "path": "members[value eq \"u1\"]"}])),
        ),
        (
            "GET",
            "/scim/v2/Users?filter=userName%20eq%20%22bjensen%22",
            None,
        ),
        ("GET", "/scim/v2/Users/missing", None),
        (
            "POST",
            "/scim/v2/Bulk",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [
                    {"method": "POST", "path": "/Users", "bulkId": "q1", "data": {"userName": "alice"}},
                    {"method": "DELETE", "path": "/Groups/g1"},
                ]}),
            ),
        ),
    ]
}

/// One event per request of [`live_requests`], and one more for the second Bulk operation.
const LIVE_EVENTS: usize = 9;

/// Sends [`live_requests`] through a proxy with a native file sink and a file sink in
/// `format` that writes `lines` lines for them: the native events, the sink's file and its
/// lines as JSON.
async fn live_sink_run(
    dir: &std::path::Path,
    format: &str,
    lines: usize,
) -> (Vec<Value>, std::path::PathBuf, Vec<Value>) {
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        let (status, body) = match (req.method().as_str(), req.uri().path()) {
            ("POST", p) if p.ends_with("/Bulk") => (
                200,
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"], "Operations": [
                    {"method": "POST", "bulkId": "q1", "location": "https://x/scim/v2/Users/u9", "status": "201"},
                    {"method": "DELETE", "location": "https://x/scim/v2/Groups/g1", "status": "204"},
                ]}),
            ),
            ("POST", p) if p.ends_with("/Users") => (
                201,
                json!({"id": "u1", "userName": "bjensen", "displayName": "Babs"}),
            ),
            ("POST", p) if p.ends_with("/Groups") => {
                (201, json!({"id": "g1", "displayName": "Eng"}))
            }
            (_, p) if p.ends_with("/missing") => (
                404,
                json!({"status": "404", "detail": "not found", "scimType": "invalidValue"}),
            ),
            _ => (200, json!({})),
        };
        Response::builder()
            .status(status)
            .body(full(body.to_string()))
            .unwrap()
    })
    .await;
    let path = dir.join(format!("audit.{format}.jsonl"));
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&format!(
        "[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\n[[sinks]]\ntype = \"file\"\nformat = \"{format}\"\npath = \"{}\"\n",
        path.display()
    )));
    let client = http1_client();
    for (i, (method, target, body)) in live_requests().iter().enumerate() {
        let req = Request::builder()
            .method(*method)
            .uri(proxy.url(target))
            .header("x-request-id", format!("live-{i}"))
            .header("user-agent", FIXTURE_OKTA_UA)
            .body(body.as_ref().map_or_else(empty, |b| full(b.to_string())))
            .unwrap();
        roundtrip(&client, req).await;
    }
    let native = proxy.wait_for_events(LIVE_EVENTS).await;
    let docs = wait::json_lines(&path, lines, format).await;
    assert_eq!(
        (native.len(), docs.len()),
        (LIVE_EVENTS, lines),
        "{lines} {format} lines for {LIVE_EVENTS} native events"
    );
    (native, path, docs)
}

// === ECS ===

/// The vendored ECS 8.12 reference (tests/fixtures/ecs, see its README).
pub(crate) struct EcsReference {
    /// Field name → ECS type (`keyword`, `long`, `object`, ...), `.text` multi-fields included.
    types: HashMap<String, String>,
    /// `event.kind`, `event.category`, `event.type`, `event.outcome` → allowed values.
    allowed: HashMap<String, Vec<String>>,
    /// `event.category` value → the `event.type` values ECS expects with it.
    expected_event_types: HashMap<String, Vec<String>>,
}

/// ECS requires these of scimtap's documents (`@timestamp` and `ecs.version` are required by
/// ECS itself, the rest by what an audit event must say).
const ECS_REQUIRED: [&str; 9] = [
    "@timestamp",
    "ecs.version",
    "event.kind",
    "event.category",
    "event.type",
    "event.action",
    "event.outcome",
    "url.path",
    "source.ip",
];

impl EcsReference {
    pub(crate) fn load() -> Self {
        let mut rows = include_str!("../fixtures/ecs/fields.csv").lines();
        assert_eq!(rows.next(), Some("field,type"));
        let types: HashMap<String, String> = rows
            .map(|l| {
                let (field, ty) = l.split_once(',').expect("field,type");
                (field.to_owned(), ty.to_owned())
            })
            .collect();
        assert_eq!(
            types.len(),
            1780,
            "the vendored ECS field reference changed"
        );
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        let allowed: Value =
            serde_json::from_str(include_str!("../fixtures/ecs/allowed_values.json")).unwrap();
        let allowed: HashMap<String, Vec<String>> = allowed
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), strings(v)))
            .collect();
        let expected: Value =
            serde_json::from_str(include_str!("../fixtures/ecs/expected_event_types.json"))
                .unwrap();
        let expected_event_types: HashMap<String, Vec<String>> = expected
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), strings(v)))
            .collect();
        let mut categories: Vec<&String> = expected_event_types.keys().collect();
        categories.sort();
        let mut allowed_categories: Vec<&String> = allowed["event.category"].iter().collect();
        allowed_categories.sort();
        assert_eq!(
            categories, allowed_categories,
            "expected_event_types.json covers every category"
        );
        EcsReference {
            types,
            allowed,
            expected_event_types,
        }
    }

    /// Everything wrong with `doc` as an ECS document from scimtap; empty when it is valid.
    pub(crate) fn violations(&self, doc: &Value) -> Vec<String> {
        let mut out = Vec::new();
        match doc.as_object() {
            Some(map) => self.fields(map, "", &mut out),
            None => out.push("the document is not a JSON object".to_owned()),
        }
        let at = |path: &str| -> Option<&Value> {
            path.split('.')
                .try_fold(doc, |v, key| v.as_object().and_then(|m| m.get(key)))
        };
        for path in ECS_REQUIRED {
            if at(path).is_none_or(Value::is_null) {
                out.push(format!("{path} is required"));
            }
        }
        if let Some(version) = at("ecs.version") {
            if version != scimtap::formats::ECS_VERSION {
                out.push(format!(
                    "ecs.version is {version}, not {}",
                    scimtap::formats::ECS_VERSION
                ));
            }
        }
        // `event.kind` and `event.outcome` are single values; `event.category` and
        // `event.type` are arrays (`normalize: [array]` in ecs_flat.yml).
        let mut values: HashMap<&str, Vec<&str>> = HashMap::new();
        for (key, array) in [
            ("event.kind", false),
            ("event.category", true),
            ("event.type", true),
            ("event.outcome", false),
        ] {
            let Some(v) = at(key) else { continue };
            let items: Vec<&Value> = match (v, array) {
                (Value::Array(items), true) => items.iter().collect(),
                (Value::String(_), false) => vec![v],
                _ => {
                    out.push(format!(
                        "{key} must be {}: {v}",
                        if array { "an array" } else { "a single string" }
                    ));
                    continue;
                }
            };
            if array && items.is_empty() {
                out.push(format!("{key} is empty"));
            }
            for item in items {
                match item.as_str() {
                    Some(s) if self.allowed[key].iter().any(|a| a == s) => {
                        values.entry(key).or_default().push(s);
                    }
                    _ => out.push(format!("{key} = {item} is not an allowed ECS value")),
                }
            }
        }
        // Every type is one ECS expects with one of the categories, and every category has one
        // of its expected types.
        let categories = values.remove("event.category").unwrap_or_default();
        let types = values.remove("event.type").unwrap_or_default();
        let expected =
            |category: &str, ty: &str| self.expected_event_types[category].iter().any(|t| t == ty);
        if !categories.is_empty() {
            for ty in &types {
                if !categories.iter().any(|c| expected(c, ty)) {
                    out.push(format!(
                        "event.type {ty} is not an expected event type of event.category {categories:?}"
                    ));
                }
            }
            for category in &categories {
                if !types.iter().any(|ty| expected(category, ty)) {
                    out.push(format!(
                        "event.category {category} has none of its expected event types in {types:?}"
                    ));
                }
            }
        }
        out
    }

    /// Checks the members of an object at `prefix`: each is an ECS field of the right type, or
    /// an object leading to ECS fields. `scimtap.*` is scimtap's custom namespace.
    fn fields(&self, map: &serde_json::Map<String, Value>, prefix: &str, out: &mut Vec<String>) {
        if map.is_empty() {
            out.push(format!("{prefix} is an empty object"));
        }
        for (key, value) in map {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if path == "scimtap" {
                if !value.is_object() {
                    out.push(format!("scimtap must be an object: {value}"));
                }
                continue;
            }
            match (self.types.get(&path), value) {
                (Some(ty), _) => self.typed(&path, ty, value, out),
                (None, Value::Object(inner)) => self.fields(inner, &path, out),
                (None, _) => out.push(format!("{path} is not an ECS field")),
            }
        }
    }

    /// Checks that `value` at the ECS field `path` has the field's type `ty`.
    fn typed(&self, path: &str, ty: &str, value: &Value, out: &mut Vec<String>) {
        // An object, or several (an array of objects).
        fn objects(value: &Value) -> Option<Vec<&serde_json::Map<String, Value>>> {
            match value {
                Value::Object(m) => Some(vec![m]),
                Value::Array(items) => items.iter().map(Value::as_object).collect(),
                _ => None,
            }
        }
        match ty {
            // Any content (ECS gives no sub-fields).
            "flattened" => {
                if objects(value).is_none() {
                    out.push(format!("{path} is flattened: an object, not {value}"));
                }
            }
            // Arbitrary sub-keys, but those ECS defines keep their types.
            "object" | "nested" => match objects(value) {
                Some(maps) => {
                    for map in maps {
                        for (key, v) in map {
                            let sub = format!("{path}.{key}");
                            match self.types.get(&sub) {
                                Some(ty) => self.typed(&sub, ty, v, out),
                                None if ty == "nested" => match v {
                                    Value::Object(inner) => self.fields(inner, &sub, out),
                                    _ => out.push(format!("{sub} is not an ECS field")),
                                },
                                None => {}
                            }
                        }
                    }
                }
                None => out.push(format!("{path} is {ty}: an object, not {value}")),
            },
            _ => match value {
                // Any field may hold several values.
                Value::Array(items) if !items.is_empty() => {
                    for item in items {
                        if item.is_array() {
                            out.push(format!("{path} holds a nested array: {value}"));
                        } else {
                            self.typed(path, ty, item, out);
                        }
                    }
                }
                _ => {
                    if let Err(why) = ecs_scalar(ty, value) {
                        out.push(format!("{path} ({ty}) {why}: {value}"));
                    }
                }
            },
        }
    }
}

/// Whether one JSON value fits the basic ECS type `ty`.
fn ecs_scalar(ty: &str, value: &Value) -> Result<(), &'static str> {
    let (ok, why) = match ty {
        _ if value.is_null() => (false, "is null"),
        _ if value.is_array() => (false, "is an empty array"),
        "keyword" | "constant_keyword" | "wildcard" | "match_only_text" | "text" => {
            (value.is_string(), "is not a string")
        }
        "long" => (value.is_i64() || value.is_u64(), "is not an integer"),
        "float" | "scaled_float" | "half_float" | "double" => {
            (value.is_number(), "is not a number")
        }
        "boolean" => (value.is_boolean(), "is not a boolean"),
        "ip" => (
            value
                .as_str()
                .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
            "is not an IP address",
        ),
        "date" => (
            value.as_str().is_some_and(is_rfc3339),
            "is not an RFC 3339 date",
        ),
        "geo_point" => (
            value.is_string() || (value["lat"].is_number() && value["lon"].is_number()),
            "is not a geo point",
        ),
        _ => (false, "has a type this check does not know"),
    };
    if ok {
        Ok(())
    } else {
        Err(why)
    }
}

/// RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, with real dates and times.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if !(1..=days).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                && (*h1 - b'0') * 10 + (*h2 - b'0') <= 23
                && (*m1 - b'0') * 10 + (*m2 - b'0') <= 59
        }
        _ => false,
    }
}

/// Every classification fixture (under a plain and a configured context) and a proxy run with
/// a `format = "ecs"` file sink, Bulk included, yield ECS documents that use only fields of the
/// vendored ECS 8.12 reference (tests/fixtures/ecs) with values of their types, allowed
/// `event.*` values in pairs ECS expects, and the basics an audit event needs; deliberately
/// broken documents are rejected.
#[tokio::test(flavor = "multi_thread")]
async fn ecs_documents_for_every_fixture_use_only_ecs_fields_and_allowed_values() {
    let reference = EcsReference::load();
    let dir = tempfile::tempdir().unwrap();

    // === every fixture, in process ===
    let mut labels: Vec<String> = Vec::new();
    let mut docs: Vec<Value> = Vec::new();
    let mut failures = String::new();
    for_each_fixture_event(dir.path(), |label, event| {
        let line = String::from_utf8(scimtap::formats::ecs_line(event)).unwrap();
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let doc: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["event"]["id"], event.event_id.as_str(), "{label}");
        assert_eq!(doc["http"]["request"]["id"], event.request_id, "{label}");
        for why in reference.violations(&doc) {
            failures.push_str(&format!("[{label}] {why}\n"));
        }
        labels.push(label);
        docs.push(doc);
    });
    assert!(
        failures.is_empty(),
        "ECS documents do not conform:\n{failures}"
    );
    let cases: std::collections::HashSet<&String> = labels.iter().collect();
    assert_eq!(
        cases.len(),
        2 * fixture_exchanges().len(),
        "a document for every case under both contexts"
    );

    // The mapping reaches every category/type pair scimtap means to use.
    let pairs: std::collections::HashSet<String> = docs
        .iter()
        .map(|d| format!("{}/{}", d["event"]["category"], d["event"]["type"]))
        .collect();
    for expected in [
        r#"["iam"]/["user","creation"]"#,
        r#"["iam"]/["user","change"]"#,
        r#"["iam"]/["user","deletion"]"#,
        r#"["iam"]/["group","creation"]"#,
        r#"["iam"]/["group","change"]"#,
        r#"["iam"]/["group","deletion"]"#,
        r#"["api"]/["access"]"#,
        r#"["api"]/["creation"]"#,
    ] {
        assert!(
            pairs.contains(expected),
            "no fixture maps to {expected}: {pairs:?}"
        );
    }
    let by_label = |label: &str| -> &Value {
        let i = labels
            .iter()
            .position(|l| l == label)
            .unwrap_or_else(|| panic!("no document for {label}"));
        &docs[i]
    };
    let d = by_label("okta O3 deactivate: PATCH without path, value object (configured)");
    assert_eq!(d["event"]["action"], "user-deactivate");
    assert_eq!(d["user"]["name"], "okta-prod");
    assert_eq!(
        d["user"]["target"]["id"],
        "23a35c27-23d3-4c03-b4c5-6443c09e7173"
    );
    assert_eq!(d["scimtap"]["client"]["idp"], "okta");
    let d = by_label("okta O1 create user (with cleartext password) (default)");
    assert_eq!(d["user"]["target"]["name"], "test.user@okta.local");
    assert!(d["user"].get("name").is_none(), "no actor without a client");
    let d = by_label("entra E12 add member with $ref null (default)");
    assert_eq!(d["event"]["type"], json!(["group", "change"]));
    assert_eq!(d["group"]["id"], "a99962b9f99d4c4fac67");
    // The member added is the target user, in the group.
    assert_eq!(
        Some(&d["user"]["target"]["id"]),
        d["scimtap"]["scim"]["changes"]["members_added"]
            .as_array()
            .and_then(|a| a.first()),
        "{d}"
    );
    assert_eq!(d["user"]["target"]["group"]["id"], "a99962b9f99d4c4fac67");
    let d = by_label("okta 404 with numeric status in the error body (default)");
    assert_eq!(d["event"]["outcome"], "success"); // a lookup that found nothing (1.3)
    assert_eq!(d["error"]["code"], "404");
    assert_eq!(d["http"]["response"]["status_code"], 404);
    // A custom resource type is no identity: API activity, nothing under `user.target`.
    let d = by_label("custom resource type from config (default)");
    assert_eq!(d["event"]["category"], json!(["api"]));
    assert_eq!(d["event"]["type"], json!(["creation"]));
    assert_eq!(d["event"]["action"], "device-create");
    assert!(d.get("user").is_none(), "{d}");
    assert_eq!(d["scimtap"]["scim"]["target"]["id"], "d-1");
    let d = by_label("IPv6 peer (default)");
    assert_eq!(d["source"]["ip"], "2001:db8::7");
    let d = by_label("mTLS client (default)");
    assert_eq!(d["tls"]["client"]["subject"], "CN=okta-scim,O=Example Corp");
    let d = by_label("upstream refused: generated 502 (default)");
    assert_eq!(d["event"]["outcome"], "failure");
    assert!(d["event"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("connect_refused: "));
    let d = by_label("client went away before the response (default)");
    assert!(d["http"]["response"].get("status_code").is_none(), "{d}");
    let bulk: Vec<&Value> = labels
        .iter()
        .zip(&docs)
        .filter(|(l, _)| l.as_str() == "RFC 7644 3.7.3 bulk: one event per operation (default)")
        .map(|(_, d)| d)
        .collect();
    assert!(
        bulk.len() > 1,
        "a Bulk request yields one ECS document per operation"
    );

    // === through the proxy, with an ECS file sink ===
    let (native, _, sink) = live_sink_run(dir.path(), "ecs", LIVE_EVENTS).await;
    for doc in &sink {
        let violations = reference.violations(doc);
        assert!(
            violations.is_empty(),
            "ECS sink output does not conform: {violations:?}\n{doc}"
        );
    }
    for e in &native {
        let matching: Vec<&Value> = sink
            .iter()
            .filter(|d| d["event"]["id"] == e["event_id"])
            .collect();
        assert_eq!(matching.len(), 1, "one ECS document per native event: {e}");
        assert_eq!(matching[0]["http"]["request"]["id"], e["request_id"]);
        assert_eq!(matching[0]["@timestamp"], e["timestamp"]);
    }
    let by_request = |id: &str| -> Vec<&Value> {
        sink.iter()
            .filter(|d| d["http"]["request"]["id"] == id)
            .collect()
    };
    let one = |id: &str| -> &Value {
        let docs = by_request(id);
        assert_eq!(docs.len(), 1, "{id}");
        docs[0]
    };
    assert_eq!(one("live-0")["event"]["type"], json!(["user", "creation"]));
    assert_eq!(one("live-0")["user"]["target"]["name"], "bjensen");
    assert_eq!(one("live-1")["event"]["action"], "user-deactivate");
    assert_eq!(one("live-1")["user"]["target"]["id"], "u1");
    assert_eq!(one("live-2")["event"]["type"], json!(["user", "deletion"]));
    assert_eq!(one("live-3")["group"]["name"], "Eng");
    assert_eq!(one("live-4")["event"]["type"], json!(["group", "change"]));
    assert_eq!(one("live-4")["user"]["target"]["id"], "u1");
    assert_eq!(one("live-4")["user"]["target"]["group"]["id"], "g1");
    assert_eq!(
        one("live-4")["scimtap"]["scim"]["changes"]["members_removed"],
        json!(["u1"])
    );
    assert_eq!(one("live-5")["event"]["category"], json!(["api"]));
    assert_eq!(
        one("live-5")["url"]["query"],
        "filter=userName%20eq%20%22bjensen%22"
    );
    assert_eq!(one("live-6")["event"]["outcome"], "success"); // GET 404: not_found_lookup
    assert_eq!(one("live-6")["error"]["code"], "invalidValue");
    assert_eq!(one("live-6")["http"]["response"]["status_code"], 404);
    let mut bulk: Vec<String> = by_request("live-7")
        .iter()
        .map(|d| d["event"]["type"].to_string())
        .collect();
    bulk.sort();
    assert_eq!(
        bulk,
        [r#"["group","deletion"]"#, r#"["user","creation"]"#],
        "one ECS document per Bulk operation"
    );

    // === the checker can fail ===
    let base = by_label("okta O1 create user (with cleartext password) (configured)").clone();
    let changed = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        v
    };
    let remove = |path: &str| {
        changed(&|v| {
            let mut keys: Vec<&str> = path.split('.').collect();
            let last = keys.pop().unwrap();
            let parent = keys.into_iter().fold(v, |p, k| &mut p[k]);
            assert!(parent.as_object_mut().unwrap().remove(last).is_some());
        })
    };
    let broken: Vec<(&str, &str, Value)> = vec![
        (
            "a field ECS does not have",
            "user.login is not an ECS field",
            changed(&|v| v["user"]["login"] = json!("x")),
        ),
        (
            "a top-level namespace ECS does not have",
            "audit.actor is not an ECS field",
            changed(&|v| v["audit"] = json!({"actor": "x"})),
        ),
        (
            "a multi-field written as a sub-object",
            "user.target.name (keyword) is not a string",
            changed(&|v| v["user"]["target"]["name"] = json!({"text": "x"})),
        ),
        (
            "an empty object",
            "group is an empty object",
            changed(&|v| v["group"] = json!({})),
        ),
        (
            "a category outside the allowed values",
            "event.category = \"identity\" is not an allowed ECS value",
            changed(&|v| v["event"]["category"] = json!(["identity"])),
        ),
        (
            "a type outside the allowed values",
            "event.type = \"created\" is not an allowed ECS value",
            changed(&|v| v["event"]["type"] = json!(["user", "created"])),
        ),
        (
            "a kind outside the allowed values",
            "event.kind = \"audit\" is not an allowed ECS value",
            changed(&|v| v["event"]["kind"] = json!("audit")),
        ),
        (
            "an outcome outside the allowed values",
            "event.outcome = \"ok\" is not an allowed ECS value",
            changed(&|v| v["event"]["outcome"] = json!("ok")),
        ),
        (
            "a type ECS does not expect with the category",
            "event.type access is not an expected event type of event.category [\"iam\"]",
            changed(&|v| v["event"]["type"] = json!(["user", "access"])),
        ),
        (
            "a category none of whose expected types is there",
            "event.category web has none of its expected event types",
            changed(&|v| v["event"]["category"] = json!(["iam", "web"])),
        ),
        (
            "event.type as a single string",
            "event.type must be an array",
            changed(&|v| v["event"]["type"] = json!("creation")),
        ),
        (
            "event.outcome as an array",
            "event.outcome must be a single string",
            changed(&|v| v["event"]["outcome"] = json!(["success"])),
        ),
        (
            "not an IP address",
            "source.ip (ip) is not an IP address: \"198.51.100.23:40000\"",
            changed(&|v| v["source"]["ip"] = json!("198.51.100.23:40000")),
        ),
        (
            "a port as a string",
            "source.port (long) is not an integer",
            changed(&|v| v["source"]["port"] = json!("40000")),
        ),
        (
            "a status code as a string",
            "http.response.status_code (long) is not an integer",
            changed(&|v| v["http"]["response"]["status_code"] = json!("201")),
        ),
        (
            "a fractional duration",
            "event.duration (long) is not an integer",
            changed(&|v| v["event"]["duration"] = json!(1.5)),
        ),
        (
            "a date without a time zone",
            "@timestamp (date) is not an RFC 3339 date",
            changed(&|v| v["@timestamp"] = json!("2026-11-23T10:00:00")),
        ),
        (
            "a date that does not exist",
            "@timestamp (date) is not an RFC 3339 date",
            changed(&|v| v["@timestamp"] = json!("2026-02-29T10:00:00.000Z")),
        ),
        (
            "a date as epoch milliseconds",
            "@timestamp (date) is not an RFC 3339 date",
            changed(&|v| v["@timestamp"] = json!(1_795_338_000_000u64)),
        ),
        (
            "a keyword as a number",
            "http.version (keyword) is not a string",
            changed(&|v| v["http"]["version"] = json!(1.1)),
        ),
        (
            "a null ECS field",
            "user.name (keyword) is null",
            changed(&|v| v["user"]["name"] = Value::Null),
        ),
        (
            "an object field given a string",
            "labels is object: an object, not \"x\"",
            changed(&|v| v["labels"] = json!("x")),
        ),
        (
            "a defined sub-field of an object field with the wrong type",
            "log.syslog.priority (long) is not an integer",
            changed(&|v| v["log"] = json!({"syslog": {"priority": "high"}})),
        ),
        (
            "another ECS version",
            "ecs.version is \"1.12.0\"",
            changed(&|v| v["ecs"]["version"] = json!("1.12.0")),
        ),
        (
            "@timestamp missing",
            "@timestamp is required",
            remove("@timestamp"),
        ),
        (
            "ecs.version missing",
            "ecs.version is required",
            remove("ecs.version"),
        ),
        (
            "event.kind missing",
            "event.kind is required",
            remove("event.kind"),
        ),
        (
            "event.category missing",
            "event.category is required",
            remove("event.category"),
        ),
        (
            "event.type missing",
            "event.type is required",
            remove("event.type"),
        ),
        (
            "event.action missing",
            "event.action is required",
            remove("event.action"),
        ),
        (
            "event.outcome missing",
            "event.outcome is required",
            remove("event.outcome"),
        ),
        (
            "url.path missing",
            "url.path is required",
            remove("url.path"),
        ),
        (
            "source.ip missing",
            "source.ip is required",
            remove("source.ip"),
        ),
    ];
    for (why, reason, doc) in &broken {
        let violations = reference.violations(doc);
        assert!(
            violations.iter().any(|v| v.contains(reason)),
            "not rejected for the expected reason ({reason}): {why}\n{violations:?}\n{doc}"
        );
    }
    // ... and what ECS allows passes: arbitrary keys under object and flattened fields, arrays
    // of values, offsets in dates, IPv6, and anything under `scimtap.*`.
    let allowed = changed(&|v| {
        v["labels"] = json!({"env": "prod", "team": "iam"});
        v["log"] = json!({"syslog": {"priority": 86, "structured_data": {"origin": {"ip": "x"}}}});
        v["tags"] = json!(["scim", "audit"]);
        v["@timestamp"] = json!("2026-11-23T10:00:00.5+01:00");
        v["source"]["ip"] = json!("2001:db8::7");
        v["scimtap"]["anything"] = json!({"at": [null, 1, "x"]});
    });
    assert_eq!(reference.violations(&allowed), Vec::<String>::new());
    assert!(reference.violations(&base).is_empty());
}

// === OCSF ===

/// Runs tests/peer/validate_ocsf.py on `files`: (exit code, stdout and stderr).
pub(crate) fn validate_ocsf(files: &[&std::path::Path]) -> (Option<i32>, String) {
    let output = run(Command::new(peers::venv_python())
        .arg(peers::peer_script("validate_ocsf.py"))
        .args(files));
    (output.status.code(), process::text(&output))
}

/// Every classification fixture (under a plain and a configured context) and a proxy run with
/// an `format = "ocsf"` file sink, Bulk included, yield OCSF events that validate against the
/// vendored OCSF 1.8.0 definitions (tests/fixtures/ocsf, checked against PyPI
/// `ocsf-json-schema`'s export); deliberately broken events are rejected.
#[tokio::test(flavor = "multi_thread")]
async fn ocsf_events_for_every_fixture_validate_against_the_ocsf_schema() {
    let dir = tempfile::tempdir().unwrap();
    // === every fixture, in process ===
    let mut lines: Vec<String> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    for_each_fixture_event(dir.path(), |label, event| {
        let records = scimtap::formats::ocsf_lines(event);
        let count = records.len();
        for (index, line) in records.into_iter().enumerate() {
            let line = String::from_utf8(line).unwrap();
            assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(
                v["metadata"]["uid"],
                scimtap::formats::record_id(&event.event_id, index, count),
                "{label}"
            );
            lines.push(line.trim_end().to_owned());
            labels.push(label.clone());
        }
    });
    let fixtures_file = dir.path().join("fixtures.ocsf.jsonl");
    write_jsonl(&fixtures_file, &lines);
    let (code, output) = validate_ocsf(&[&fixtures_file]);
    let mut located = String::new();
    for l in output.lines() {
        // `FILE:LINE: ...` → name the fixture case.
        let line_no = l
            .strip_prefix(&format!("{}:", fixtures_file.display()))
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse::<usize>().ok());
        match line_no {
            Some(n) => located.push_str(&format!("[{}] {l}\n", labels[n - 1])),
            None => located.push_str(&format!("{l}\n")),
        }
    }
    assert_eq!(code, Some(0), "OCSF events do not validate:\n{located}");
    assert!(
        output.contains(&format!("OK {} events", lines.len())),
        "{output}"
    );

    // The mapping covers the issue's table: every class and the activities fixtures reach.
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let type_uids: std::collections::HashSet<u64> = parsed
        .iter()
        .filter_map(|v| v["type_uid"].as_u64())
        .collect();
    for expected in [
        300101, 300102, 300105, 300106, 300199, // Account Change
        300603, 300604, 300605, 300606, 300699, // Group Management
        600301, 600302, 600399, // API Activity
    ] {
        assert!(
            type_uids.contains(&expected),
            "no fixture maps to type_uid {expected}: {type_uids:?}"
        );
    }
    let by_label = |label: &str| -> &Value {
        let i = labels
            .iter()
            .position(|l| l == label)
            .unwrap_or_else(|| panic!("no event for {label}"));
        &parsed[i]
    };
    let v = by_label("okta O3 deactivate: PATCH without path, value object (configured)");
    assert_eq!(v["type_uid"], 300105);
    assert_eq!(v["actor"]["user"]["name"], "okta-prod");
    assert_eq!(
        v["actor"]["user"]["type_id"], 4,
        "the IdP is a service account"
    );
    assert!(
        v["actor"]["user"]["uid"].is_string(),
        "the token fingerprint"
    );
    let observed = |v: &Value, name: &str| -> Vec<Value> {
        v["observables"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|o| o["name"] == name)
                    .map(|o| o["value"].clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        observed(v, "actor.user.uid"),
        [v["actor"]["user"]["uid"].clone()]
    );
    assert_eq!(observed(v, "user.uid"), [v["user"]["uid"].clone()]);
    assert_eq!(
        observed(v, "src_endpoint.ip"),
        [v["src_endpoint"]["ip"].clone()]
    );
    assert_eq!(v["actor"]["idp"]["name"], "okta");
    assert_eq!(v["user"]["uid"], "23a35c27-23d3-4c03-b4c5-6443c09e7173");
    let v = by_label("entra E12 add member with $ref null (default)");
    assert_eq!(v["type_uid"], 300603);
    assert!(v["user"]["uid"].is_string() && v["group"]["uid"].is_string());
    let v = by_label("okta 404 with numeric status in the error body (default)");
    assert_eq!(
        (v["class_uid"].as_u64(), v["status_id"].as_u64()),
        (Some(6003), Some(1))
    );
    assert_eq!(v["status_code"], "404");
    let bulk: Vec<&Value> = labels
        .iter()
        .zip(&parsed)
        .filter(|(l, _)| l.as_str() == "RFC 7644 3.7.3 bulk: one event per operation (default)")
        .map(|(_, v)| v)
        .collect();
    assert!(
        bulk.len() > 1,
        "a Bulk request yields one OCSF event per operation"
    );

    // === through the proxy, with an OCSF file sink ===
    // One more record than events: the group created with a member (live-3) is a Create and
    // an Add User record.
    let (native, ocsf_path, sink) = live_sink_run(dir.path(), "ocsf", LIVE_EVENTS + 1).await;
    let (code, output) = validate_ocsf(&[&ocsf_path]);
    assert_eq!(
        code,
        Some(0),
        "OCSF sink output does not validate:\n{output}"
    );
    for e in &native {
        let id = e["event_id"].as_str().unwrap_or_default();
        let records: Vec<&Value> = sink
            .iter()
            .filter(|o| {
                o["metadata"]["uid"].as_str().is_some_and(|uid| {
                    uid == id || uid.strip_prefix(id).is_some_and(|n| n.starts_with('/'))
                })
            })
            .collect();
        assert!(!records.is_empty(), "no OCSF record for {e}");
        for o in records {
            assert_eq!(o["metadata"]["correlation_uid"], e["request_id"]);
        }
    }
    let by_request = |id: &str| -> Vec<&Value> {
        sink.iter()
            .filter(|o| o["metadata"]["correlation_uid"] == id)
            .collect()
    };
    assert_eq!(by_request("live-0")[0]["type_uid"], 300101);
    assert_eq!(by_request("live-1")[0]["type_uid"], 300105);
    assert_eq!(by_request("live-2")[0]["type_uid"], 300106);
    let created: Vec<(&Value, &Value)> = by_request("live-3")
        .iter()
        .map(|o| (&o["type_uid"], &o["user"]["uid"]))
        .collect();
    assert_eq!(
        created,
        [
            (&json!(300606), &Value::Null),
            (&json!(300603), &json!("u1"))
        ],
        "a group created with a member: Create, then Add User"
    );
    assert_eq!(by_request("live-4")[0]["type_uid"], 300604);
    assert_eq!(by_request("live-4")[0]["user"]["uid"], "u1");
    assert_eq!(by_request("live-5")[0]["class_uid"], 6003);
    assert_eq!(
        by_request("live-6")[0]["status_detail"],
        "invalidValue: not found"
    );
    let mut bulk: Vec<u64> = by_request("live-7")
        .iter()
        .filter_map(|o| o["type_uid"].as_u64())
        .collect();
    bulk.sort_unstable();
    assert_eq!(bulk, [300101, 300605], "one OCSF event per Bulk operation");

    // === the validator can fail ===
    let first = |class: u64| -> Value {
        parsed
            .iter()
            .find(|v| v["class_uid"] == class)
            .cloned()
            .unwrap()
    };
    let (account, group, api) = (first(3001), first(3006), first(6003));
    let broken: Vec<(&str, &str, Value)> = vec![
        (
            "attribute outside the class",
            "('scimtap' was unexpected)",
            {
                let mut v = account.clone();
                v["scimtap"] = json!({});
                v
            },
        ),
        ("attribute outside an object", "('login' was unexpected)", {
            let mut v = account.clone();
            v["user"]["login"] = json!("x");
            v
        }),
        (
            "required target missing",
            "'user' is a required property",
            {
                let mut v = account.clone();
                v.as_object_mut().unwrap().remove("user");
                v
            },
        ),
        (
            "type_uid not class_uid * 100 + activity_id",
            "is not class_uid * 100 + activity_id",
            {
                let mut v = account.clone();
                v["activity_id"] = json!(1);
                v["activity_name"] = json!("Create");
                v["type_uid"] = json!(300102);
                v["type_name"] = json!("Account Change: Enable");
                v
            },
        ),
        (
            "activity_id outside the enum",
            "$.activity_id: 13 is not one of",
            {
                let mut v = account.clone();
                v["activity_id"] = json!(13);
                v["type_uid"] = json!(300113);
                v
            },
        ),
        (
            "status_code is a string in OCSF",
            "404 is not of type 'string'",
            {
                let mut v = api.clone();
                v["status_code"] = json!(404);
                v
            },
        ),
        (
            "not an IP address",
            "$.src_endpoint.ip: 'not-an-ip' does not match",
            {
                let mut v = api.clone();
                v["src_endpoint"]["ip"] = json!("not-an-ip");
                v
            },
        ),
        (
            "sibling caption does not match the id",
            "'High' is not the caption of severity_id",
            {
                let mut v = api.clone();
                v["severity"] = json!("High");
                v
            },
        ),
        (
            "deprecated attribute",
            "$.user.credential_uid: 'User Credential ID' is deprecated",
            {
                let mut v = account.clone();
                v["user"]["credential_uid"] = json!("0123456789abcdef");
                v
            },
        ),
        ("another OCSF version", "'1.7.0' is not '1.8.0'", {
            let mut v = group.clone();
            v["metadata"]["version"] = json!("1.7.0");
            v
        }),
        (
            "API Activity without api",
            "'api' is a required property",
            {
                let mut v = api.clone();
                v.as_object_mut().unwrap().remove("api");
                v
            },
        ),
        (
            "group with neither name nor uid",
            "$.group: {'desc': 'x'} is not valid under any of the given schemas",
            {
                let mut v = group.clone();
                v["group"] = json!({"desc": "x"});
                v
            },
        ),
        (
            "a class that is not vendored",
            "3002 is not one of the vendored classes",
            {
                let mut v = api.clone();
                v["class_uid"] = json!(3002);
                v
            },
        ),
        (
            "HTTP method outside the enum",
            "'PROPFIND' is not one of",
            {
                let mut v = api.clone();
                v["http_request"]["http_method"] = json!("PROPFIND");
                v
            },
        ),
    ];
    let broken_file = dir.path().join("broken.jsonl");
    write_jsonl(
        &broken_file,
        &broken
            .iter()
            .map(|(_, _, v)| v.to_string())
            .collect::<Vec<_>>(),
    );
    let (code, output) = validate_ocsf(&[&broken_file]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(&format!(
            "FAILED {} of {} events",
            broken.len(),
            broken.len()
        )),
        "every broken event must be rejected:\n{output}"
    );
    for (i, (why, reason, _)) in broken.iter().enumerate() {
        let prefix = format!("{}:{}: ", broken_file.display(), i + 1);
        assert!(
            output
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(reason)),
            "not rejected for the expected reason ({reason}): {why}\n{output}"
        );
    }
}
