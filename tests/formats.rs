//! Output formats: a sink with `format = "cef"` writes CEF lines that an independent parser
//! (PyPI `pycef`) splits back into exactly the values of the native event.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use support::*;

fn peer_python() -> PathBuf {
    std::env::var_os("SCIMTAP_PEER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer/.venv")))
        .join("bin/python")
}

/// pycef names custom fields by their labels (`cn1Label=httpStatus cn1=201` → `httpStatus`).
/// CEF extension value unescaping (`\\`, `\=`, `\n`, `\r`), which pycef leaves to its caller.
fn unescape(value: &str) -> String {
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
    ];
    for (i, (method, path, body)) in requests.iter().enumerate() {
        let req = Request::builder()
            .method(*method)
            .uri(proxy.url(path))
            .header("x-request-id", format!("cef-{i}"))
            .header("user-agent", "Okta SCIM Client 1.0.0")
            .body(body.as_ref().map_or_else(empty, |b| full(b.to_string())))
            .unwrap();
        client
            .request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
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

    let script = "import json, sys, pycef\nprint(json.dumps([pycef.parse(l.rstrip('\\n')) for l in open(sys.argv[1]) if l.strip()]))";
    let out = Command::new(peer_python())
        .arg("-c")
        .arg(script)
        .arg(&cef_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pycef failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<HashMap<String, String>> = serde_json::from_slice(&out.stdout).unwrap();
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
}

/// Dotted paths of every leaf of a JSON document (arrays count as leaves).
fn leaf_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(v, &path, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ecs_documents_use_only_ecs_fields_and_allowed_values() {
    let fields: std::collections::HashSet<String> = include_str!("fixtures/ecs/fields.csv")
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .map(str::to_owned)
        .collect();
    assert!(
        fields.len() > 1000,
        "the vendored ECS field reference is incomplete"
    );
    let allowed: Value =
        serde_json::from_str(include_str!("fixtures/ecs/allowed_values.json")).unwrap();

    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        let (status, body) = match (req.method().as_str(), req.uri().path()) {
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
    let dir = tempfile::tempdir().unwrap();
    let ecs_path = dir.path().join("audit.ecs.jsonl");
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&format!(
        "[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\n[[sinks]]\ntype = \"file\"\nformat = \"ecs\"\npath = \"{}\"\n",
        ecs_path.display()
    )));
    let patch = |ops: Value| {
        Some(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}),
        )
    };
    let requests = [
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
    ];
    let client = http1_client();
    for (i, (method, path, body)) in requests.iter().enumerate() {
        let req = Request::builder()
            .method(*method)
            .uri(proxy.url(path))
            .header("x-request-id", format!("ecs-{i}"))
            .header("user-agent", "Okta SCIM Client 1.0.0")
            .body(body.as_ref().map_or_else(empty, |b| full(b.to_string())))
            .unwrap();
        client
            .request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
    }
    proxy.wait_for_events(requests.len()).await;
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::read_to_string(&ecs_path)
        .unwrap_or_default()
        .lines()
        .count()
        < requests.len()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "ECS sink did not write every event"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let docs: Vec<Value> = std::fs::read_to_string(&ecs_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for doc in &docs {
        let mut paths = Vec::new();
        leaf_paths(doc, "", &mut paths);
        for path in paths.iter().filter(|p| !p.starts_with("scimtap.")) {
            assert!(fields.contains(path), "{path} is not an ECS field: {doc}");
        }
        for key in ["category", "type", "kind", "outcome"] {
            let values: Vec<&Value> = match &doc["event"][key] {
                Value::Array(a) => a.iter().collect(),
                v => vec![v],
            };
            let permitted = allowed[format!("event.{key}")].as_array().unwrap();
            for v in values {
                assert!(
                    permitted.contains(v),
                    "event.{key} = {v} is not an allowed ECS value"
                );
            }
        }
    }
    let by_id = |id: &str| {
        docs.iter()
            .find(|d| d["http"]["request"]["id"] == id)
            .unwrap()
    };
    assert_eq!(by_id("ecs-0")["event"]["type"], json!(["user", "creation"]));
    assert_eq!(by_id("ecs-0")["user"]["target"]["name"], "bjensen");
    assert_eq!(by_id("ecs-1")["event"]["action"], "user-deactivate");
    assert_eq!(by_id("ecs-1")["user"]["target"]["id"], "u1");
    assert_eq!(by_id("ecs-2")["event"]["type"], json!(["user", "deletion"]));
    assert_eq!(by_id("ecs-3")["group"]["name"], "Eng");
    assert_eq!(by_id("ecs-4")["event"]["type"], json!(["group", "change"]));
    assert_eq!(
        by_id("ecs-4")["scimtap"]["scim"]["changes"]["members_removed"],
        json!(["u1"])
    );
    assert_eq!(by_id("ecs-5")["event"]["category"], json!(["api"]));
    assert_eq!(by_id("ecs-6")["event"]["outcome"], "failure");
    assert_eq!(by_id("ecs-6")["error"]["code"], "invalidValue");
    assert_eq!(by_id("ecs-6")["http"]["response"]["status_code"], 404);
}

// === OCSF ===

const OCSF_OKTA_TOKEN: &str = "okta-ocsf-token-1";
const OCSF_OKTA_UA: &str = "Okta SCIM Client 1.0.0";
const OCSF_MINIMAL_CONFIG: &str = r#"
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
fn ocsf_exchange(
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
        let bearer = format!("Bearer {OCSF_OKTA_TOKEN}");
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&bearer).unwrap());
        headers.insert(USER_AGENT, HeaderValue::from_static(OCSF_OKTA_UA));
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
        request_id: format!("ocsf-fixture-{n}"),
        started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_338_000_000 + n as u64),
        duration: Duration::from_micros(1800 + n as u64 * 397),
        conn: ConnInfo::new(
            format!("198.51.100.23:{}", 40000 + n).parse().unwrap(),
            true,
        ),
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
fn ocsf_fixture_exchanges() -> Vec<(String, scimtap::exchange::Exchange)> {
    use scimtap::exchange::{Failure, FailureSide};

    let cases: Vec<Value> = serde_json::from_str(include_str!("fixtures/classification.json"))
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
        let ex = ocsf_exchange(
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
        kind: "connect_refused",
        detail: "tcp connect error: Connection refused (os error 111)".to_owned(),
    };
    let generated = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "502", "detail": "scimtap: upstream refused"});
    let mut ex = ocsf_exchange(
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
    let ex = ocsf_exchange(next(), "GET", "/scim/v2/Users/u1", b"", None, true);
    out.push(("client went away before the response".into(), ex));
    let ex = ocsf_exchange(
        next(),
        "PROPFIND",
        "/scim/v2/Users",
        b"",
        Some((405, Vec::new(), None)),
        false,
    );
    out.push(("a method OCSF has no enum value for".into(), ex));
    let mut ex = ocsf_exchange(
        next(),
        "GET",
        "/scim/v2/Groups/g1",
        b"",
        Some((200, br#"{"id":"g1","displayName":"Eng"}"#.to_vec(), None)),
        false,
    );
    ex.conn.client_cert_subject = Some("CN=okta-scim,O=Example Corp".into());
    out.push(("mTLS client".into(), ex));
    let mut ex = ocsf_exchange(
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

/// Runs tests/peer/validate_ocsf.py on `files`: (exit code, stdout and stderr).
fn validate_ocsf(files: &[&std::path::Path]) -> (Option<i32>, String) {
    let python = peer_python();
    assert!(
        python.exists(),
        "{} is missing: run tests/peer/setup.sh (it installs ocsf-json-schema and jsonschema from tests/peer/requirements.txt)",
        python.display()
    );
    let output = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peer/validate_ocsf.py"
        ))
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

fn write_jsonl(path: &std::path::Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// Every classification fixture (under a plain and a configured context) and a proxy run with
/// an `format = "ocsf"` file sink, Bulk included, yield OCSF events that validate against the
/// vendored OCSF 1.8.0 definitions (tests/fixtures/ocsf, checked against PyPI
/// `ocsf-json-schema`'s export); deliberately broken events are rejected.
#[tokio::test(flavor = "multi_thread")]
async fn ocsf_events_for_every_fixture_validate_against_the_ocsf_schema() {
    use scimtap::config::Config;
    use scimtap::event::{events_for, EventContext};

    let dir = tempfile::tempdir().unwrap();
    // === every fixture, in process ===
    let key_file = dir.path().join("pii.key");
    std::fs::write(&key_file, "0123456789abcdef0123456789abcdef").unwrap();
    let configured = format!(
        "{OCSF_MINIMAL_CONFIG}\n[capture]\ninclude_bodies = \"redacted\"\n\n[[clients]]\nname = \"okta-prod\"\nidp = \"okta\"\ntoken_sha256 = \"{}\"\n\n[privacy]\nhash_key_file = '{}'\n",
        sha256_hex(OCSF_OKTA_TOKEN.as_bytes()),
        key_file.display()
    );
    let contexts: Vec<(&str, EventContext)> = [
        ("default", OCSF_MINIMAL_CONFIG.to_owned()),
        ("configured", configured),
    ]
    .into_iter()
    .map(|(name, text)| {
        let config = Config::from_toml_str(&text, &dir.path().join("proxy.toml"))
            .unwrap_or_else(|e| panic!("{name} configuration is valid: {e}"));
        (name, EventContext::from_config(&config))
    })
    .collect();
    let exchanges = ocsf_fixture_exchanges();
    let mut lines: Vec<String> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    for (context, ctx) in &contexts {
        for (case, ex) in &exchanges {
            let events = events_for(ex, ctx);
            assert!(!events.is_empty(), "{case}: no event");
            for event in &events {
                let line = String::from_utf8(scimtap::formats::ocsf_line(event)).unwrap();
                assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["metadata"]["uid"], event.event_id.as_str(), "{case}");
                lines.push(line.trim_end().to_owned());
                labels.push(format!("{case} ({context})"));
            }
        }
    }
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
    assert_eq!(v["actor"]["idp"]["name"], "okta");
    assert_eq!(v["user"]["uid"], "23a35c27-23d3-4c03-b4c5-6443c09e7173");
    let v = by_label("entra E12 add member with $ref null (default)");
    assert_eq!(v["type_uid"], 300603);
    assert!(v["user"]["uid"].is_string() && v["group"]["uid"].is_string());
    let v = by_label("okta 404 with numeric status in the error body (default)");
    assert_eq!(
        (v["class_uid"].as_u64(), v["status_id"].as_u64()),
        (Some(6003), Some(2))
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
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        let (status, body) = match (req.method().as_str(), req.uri().path()) {
            ("POST", p) if p.ends_with("/Bulk") => (
                200,
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"], "Operations": [
                    {"method": "POST", "bulkId": "q1", "location": "https://x/scim/v2/Users/u9", "status": "201"},
                    {"method": "DELETE", "location": "https://x/scim/v2/Groups/g1", "status": "204"},
                ]}),
            ),
            ("POST", p) if p.ends_with("/Users") => (201, json!({"id": "u1", "userName": "bjensen"})),
            ("POST", p) if p.ends_with("/Groups") => (201, json!({"id": "g1", "displayName": "Eng"})),
            (_, p) if p.ends_with("/missing") => (
                404,
                json!({"status": "404", "detail": "not found", "scimType": "invalidValue"}),
            ),
            _ => (200, json!({})),
        };
        Response::builder().status(status).body(full(body.to_string())).unwrap()
    })
    .await;
    let ocsf_path = dir.path().join("audit.ocsf.jsonl");
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&format!(
        "[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\n[[sinks]]\ntype = \"file\"\nformat = \"ocsf\"\npath = \"{}\"\n",
        ocsf_path.display()
    )));
    let patch = |ops: Value| {
        Some(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}),
        )
    };
    let requests = [
        (
            "POST",
            "/scim/v2/Users",
            Some(json!({"userName": "bjensen"})),
        ),
        (
            "PATCH",
            "/scim/v2/Users/u1",
            patch(json!([{"op": "replace", "path": "active", "value": false}])),
        ),
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
    ];
    let client = http1_client();
    for (i, (method, path, body)) in requests.iter().enumerate() {
        let req = Request::builder()
            .method(*method)
            .uri(proxy.url(path))
            .header("x-request-id", format!("ocsf-{i}"))
            .header("user-agent", OCSF_OKTA_UA)
            .body(body.as_ref().map_or_else(empty, |b| full(b.to_string())))
            .unwrap();
        client
            .request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
    }
    let expected_events = requests.len() + 1; // the Bulk request has two operations
    let native = proxy.wait_for_events(expected_events).await;
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::read_to_string(&ocsf_path)
        .unwrap_or_default()
        .lines()
        .count()
        < expected_events
    {
        assert!(
            std::time::Instant::now() < deadline,
            "OCSF sink did not write every event"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (code, output) = validate_ocsf(&[&ocsf_path]);
    assert_eq!(
        code,
        Some(0),
        "OCSF sink output does not validate:\n{output}"
    );
    let sink: Vec<Value> = std::fs::read_to_string(&ocsf_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sink.len(), native.len());
    for e in &native {
        let o = sink
            .iter()
            .find(|o| o["metadata"]["uid"] == e["event_id"])
            .expect("one OCSF event per native event");
        assert_eq!(o["metadata"]["correlation_uid"], e["request_id"]);
    }
    let by_request = |id: &str| -> Vec<&Value> {
        sink.iter()
            .filter(|o| o["metadata"]["correlation_uid"] == id)
            .collect()
    };
    assert_eq!(by_request("ocsf-0")[0]["type_uid"], 300101);
    assert_eq!(by_request("ocsf-1")[0]["type_uid"], 300105);
    assert_eq!(by_request("ocsf-2")[0]["type_uid"], 300606);
    assert_eq!(by_request("ocsf-3")[0]["type_uid"], 300604);
    assert_eq!(by_request("ocsf-3")[0]["user"]["uid"], "u1");
    assert_eq!(
        by_request("ocsf-4")[0]["status_detail"],
        "invalidValue: not found"
    );
    let mut bulk: Vec<u64> = by_request("ocsf-5")
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
