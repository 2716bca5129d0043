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
