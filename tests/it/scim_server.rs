//! A real SCIM server (scim2-server from PyPI, in the venv scripts/setup.sh creates) behind a
//! real scimtap, driven with real SCIM requests: one event per request, with the right
//! request id, method, path and status.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::process::Process;
use crate::support::*;
use http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};

/// scim2-server on 127.0.0.1 at a port chosen at run time.
pub(crate) struct ScimServer {
    process: Process,
    pub(crate) port: u16,
}

impl ScimServer {
    pub(crate) async fn start() -> ScimServer {
        let server = peers::venv_bin("scim2-server");
        // The server takes a port number, not a listener: pick a free one, and retry if
        // another program grabs it in between.
        for _attempt in 0..5 {
            let port = closed_port();
            let mut process = Process::spawn(
                "scim2-server",
                tempfile::tempdir().unwrap(),
                Command::new(peers::venv_python())
                    .arg("-u")
                    .arg(&server)
                    .args(["--hostname", "127.0.0.1", "--port", &port.to_string()]),
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            let probe = format!("http://127.0.0.1:{port}/v2/ServiceProviderConfig");
            while Instant::now() < deadline {
                if process.exited().is_some() {
                    break;
                }
                let req = Request::get(&probe).body(empty()).unwrap();
                if let Ok(Ok(resp)) =
                    tokio::time::timeout(Duration::from_secs(1), http1_client().request(req)).await
                {
                    if resp.status() == 200 {
                        return ScimServer { process, port };
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!(
                "scim2-server did not answer on {port}; its log:\n{}",
                process.log()
            );
        }
        panic!("scim2-server did not start in 5 attempts");
    }

    fn log_path(&self) -> PathBuf {
        self.process.path("scim2-server.log")
    }
}

struct Sent {
    id: String,
    method: &'static str,
    path: String,
    status: u16,
}

async fn send(
    proxy: &Proxy,
    sent: &mut Vec<Sent>,
    method: &'static str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let id = format!("scim-{}", sent.len());
    let mut req = Request::builder()
        .method(method)
        .uri(proxy.url(path))
        .header("x-request-id", &id)
        .header("authorization", "Bearer idp-token-1")
        .header("accept", "application/scim+json");
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/scim+json");
            full(b.to_string())
        }
        None => empty(),
    };
    let resp = http1_client()
        .request(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    // scim2-server (wsgiref) answers HTTP/1.0; the version is per hop, so our client still
    // gets HTTP/1.1 (and keeps its connection).
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    sent.push(Sent {
        id,
        method,
        path: path.split('?').next().unwrap().to_owned(),
        status,
    });
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn real_scim_server_behind_scimtap_yields_one_event_per_request() {
    let server = ScimServer::start().await;
    let proxy = Proxy::start(ProxyConfig::new(format!(
        "http://127.0.0.1:{}/v2",
        server.port
    )));
    let mut sent = Vec::new();

    let user = send(
        &proxy,
        &mut sent,
        "POST",
        "/Users",
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "bjensen@example.com",
            "externalId": "00u1",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "active": true
        })),
    )
    .await;
    let user_id = user["id"]
        .as_str()
        .expect("created user has an id")
        .to_owned();
    // The same user again: refused with 409 (and a Location of the collection).
    send(
        &proxy,
        &mut sent,
        "POST",
        "/Users",
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "bjensen@example.com"
        })),
    )
    .await;
    send(&proxy, &mut sent, "GET", &format!("/Users/{user_id}"), None).await;
    send(
        &proxy,
        &mut sent,
        "GET",
        "/Users?filter=userName%20eq%20%22nobody%40example.com%22",
        None,
    )
    .await;
    send(
        &proxy,
        &mut sent,
        "GET",
        "/Users?filter=userName%20eq%20%22bjensen%40example.com%22",
        None,
    )
    .await;
    send(
        &proxy,
        &mut sent,
        "PATCH",
        &format!("/Users/{user_id}"),
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": false}]
        })),
    )
    .await;
    let group = send(
        &proxy,
        &mut sent,
        "POST",
        "/Groups",
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Engineering",
            "members": [{"value": user_id}]
        })),
    )
    .await;
    let group_id = group["id"]
        .as_str()
        .expect("created group has an id")
        .to_owned();
    send(
        &proxy,
        &mut sent,
        "DELETE",
        &format!("/Groups/{group_id}"),
        None,
    )
    .await;
    send(
        &proxy,
        &mut sent,
        "DELETE",
        &format!("/Users/{user_id}"),
        None,
    )
    .await;
    send(
        &proxy,
        &mut sent,
        "DELETE",
        &format!("/Users/{user_id}"),
        None,
    )
    .await;
    send(&proxy, &mut sent, "GET", &format!("/Users/{user_id}"), None).await;
    send(&proxy, &mut sent, "GET", "/ServiceProviderConfig", None).await;

    let statuses: Vec<u16> = sent.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [201, 409, 200, 200, 200, 204, 201, 204, 204, 404, 404, 200],
        "what the real server answered"
    );
    // What the "not found" answers mean for the provisioning intent (docs/events.md, Outcome
    // rule): the lookup that finds nobody, the second DELETE and the GET of the deleted user.
    let reasons: [(&str, Option<&str>); 12] = [
        ("scim-0", None),
        ("scim-1", None),
        ("scim-2", None),
        ("scim-3", Some("not_found_lookup")),
        ("scim-4", None),
        ("scim-5", None),
        ("scim-6", None),
        ("scim-7", None),
        ("scim-8", None),
        ("scim-9", Some("already_absent")),
        ("scim-10", Some("not_found_lookup")),
        ("scim-11", None),
    ];

    let events = proxy.wait_for_events(sent.len()).await;
    assert_eq!(events.len(), sent.len(), "exactly one event per request");
    for s in &sent {
        let matching: Vec<&Value> = events
            .iter()
            .filter(|e| e["request_id"] == s.id.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "one event for {}", s.id);
        let e = matching[0];
        assert_eq!(e["http"]["method"], s.method, "{e}");
        assert_eq!(e["http"]["path"], s.path.as_str(), "{e}");
        assert_eq!(e["http"]["status"], s.status, "{e}");
        let reason = reasons
            .iter()
            .find(|(id, _)| *id == s.id)
            .and_then(|(_, r)| *r);
        assert_eq!(e["outcome_reason"], json!(reason), "{e}");
        assert_eq!(
            e["outcome"],
            if s.status < 400 || reason.is_some() {
                "success"
            } else {
                "failure"
            },
            "{e}"
        );
        assert_eq!(e["client"]["auth_scheme"], "bearer");
        assert!(e["failure"].is_null(), "{e}");
    }
    // The refused create: not the collection's name as an id, the name only as requested.
    let refused = events
        .iter()
        .find(|e| e["request_id"] == "scim-1")
        .expect("an event for the refused create");
    assert_eq!(refused["outcome"], "failure", "{refused}");
    assert!(refused["scim"]["target"]["id"].is_null(), "{refused}");
    assert_eq!(
        refused["scim"]["error"]["scim_type"], "uniqueness",
        "{refused}"
    );
    assert_eq!(
        refused["scim"]["changes"]["requested"]["user_name"],
        "bjensen@example.com"
    );
    assert!(!std::fs::read_to_string(&proxy.audit)
        .unwrap()
        .contains("idp-token-1"));
}

/// Replays a documented IdP lifecycle (tests/peer/fixtures) through scimtap with the peer
/// scripts' `replay.py`, judged against the statuses scim2-server gave without a proxy: the
/// proxy in the middle must reproduce them exactly, and write one event per request sent.
async fn replay_matches_the_direct_baseline(fixture: &str) {
    let server = ScimServer::start().await;
    let proxy = Proxy::start(ProxyConfig::new(format!(
        "http://127.0.0.1:{}",
        server.port
    )));
    let peer = peers::peer_dir().display().to_string();
    let out = proxy.dir.path().join("replay.jsonl");
    let result = run(Command::new(peers::venv_python())
        .arg(format!("{peer}/replay.py"))
        .arg(format!("http://{}/v2", proxy.addr))
        .arg(format!("{peer}/fixtures/{fixture}.jsonl"))
        .arg("--baseline")
        .arg(format!(
            "{peer}/fixtures/baseline/{fixture}.scim2-server.json"
        ))
        .arg("--out")
        .arg(&out)
        .arg("--quiet"));
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "replay through scimtap differs from the direct baseline:\n{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let steps: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sent: Vec<&Value> = steps.iter().filter(|s| !s["status"].is_null()).collect();
    assert!(sent.len() > 10, "{stdout}");
    let events = proxy.wait_for_events(sent.len()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events_now = proxy.events();
    assert_eq!(
        events_now.len(),
        sent.len(),
        "one event per request sent, no more"
    );
    // Sequential replay: events are written in the order the requests were sent.
    for (step, event) in sent.iter().zip(&events) {
        assert_eq!(event["http"]["method"], step["method"], "{event}");
        assert_eq!(event["http"]["status"], step["status"], "{event}");
        let path = step["path"].as_str().unwrap().split('?').next().unwrap();
        assert_eq!(event["http"]["path"], path, "{event}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn okta_lifecycle_through_scimtap_matches_the_direct_baseline() {
    replay_matches_the_direct_baseline("okta_lifecycle").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_lifecycle_through_scimtap_matches_the_direct_baseline() {
    replay_matches_the_direct_baseline("entra_lifecycle").await;
}

/// Runs scim2-tester and scim-sanity (tests/peer/run_conformance.sh) against `base_url`; returns
/// summary.json.
fn conformance(base_url: &str, server: &ScimServer, out: &std::path::Path) -> Value {
    let result = run(Command::new("bash")
        .arg(peers::peer_script("run_conformance.sh"))
        .arg(base_url)
        .arg(out)
        .env("SCIM_SERVER_LOG", server.log_path())
        .env("CONFORMANCE_SEED", "0"));
    assert!(
        result.status.success(),
        "conformance checkers failed to run:\n{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_checkers_see_the_same_server_through_scimtap_as_directly() {
    let dir = tempfile::tempdir().unwrap();
    let direct_server = ScimServer::start().await;
    let direct = conformance(
        &format!("http://127.0.0.1:{}/v2", direct_server.port),
        &direct_server,
        &dir.path().join("direct"),
    );
    let proxied_server = ScimServer::start().await;
    let proxy = Proxy::start(ProxyConfig::new(format!(
        "http://127.0.0.1:{}",
        proxied_server.port
    )));
    let proxied = conformance(
        &format!("http://{}/v2", proxy.addr),
        &proxied_server,
        &dir.path().join("proxied"),
    );
    let mut requests = 0;
    for checker in ["scim2-tester", "scim-sanity"] {
        let (d, p) = (&direct[checker], &proxied[checker]);
        assert!(d.is_object(), "{checker} did not run directly: {direct}");
        for key in [
            "total",
            "passed",
            "failed",
            "skipped",
            "failed_checks",
            "requests_sent",
        ] {
            assert_eq!(d[key], p[key], "{checker}.{key}: direct vs through scimtap");
        }
        assert_eq!(
            p["requests_sent"], p["requests_seen_by_server"],
            "{checker}: every request reached the server once"
        );
        requests += p["requests_sent"].as_u64().unwrap() as usize;
    }
    assert!(
        requests > 500,
        "the checkers ran for real: {requests} requests"
    );
    let events = proxy.wait_for_events(requests).await;
    assert_eq!(events.len(), requests, "one event per checker request");

    // Every request the checkers sent (their own client-side logs, in order: scim2-tester,
    // then scim-sanity) has its event, in the same order, and the event's SCIM reading matches
    // what an independent reading of the request line says.
    let mut sent = Vec::new();
    for checker in ["scim2-tester", "scim-sanity"] {
        let log = std::fs::read_to_string(
            dir.path()
                .join("proxied")
                .join(format!("{checker}.requests.jsonl")),
        )
        .unwrap();
        sent.extend(
            log.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    assert_eq!(sent.len(), events.len());
    let mut mismatches = Vec::new();
    for (request, event) in sent.iter().zip(&events) {
        let method = request["method"].as_str().unwrap();
        let url = request["url"].as_str().unwrap();
        let path_and_query = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
        let path = path_and_query.split('?').next().unwrap();
        let expected = expected_reading(method, path);
        let actual = (
            event["http"]["method"].as_str().unwrap_or(""),
            event["http"]["path"].as_str().unwrap_or(""),
            event["scim"]["operation"].as_str(),
            event["scim"]["resource_type"].as_str(),
            event["scim"]["target"]["id"].as_str(),
        );
        let mut ok = actual.0 == method
            && actual.1 == path
            && actual.2 == expected.0
            && actual.3 == expected.1;
        match (&expected.2, actual.4) {
            (Some(id), got) => ok &= got == Some(id.as_str()),
            // A successful create names the id the server gave it.
            (None, got) if expected.0 == Some("create") && request["status"] == 201 => {
                ok &= got.is_some()
            }
            (None, _) => {}
        }
        if !ok {
            mismatches.push(format!(
                "{method} {path} -> expected {expected:?}, event {actual:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} events misread their request:\n{}",
        mismatches.len(),
        sent.len(),
        mismatches.join("\n")
    );
}

/// An independent reading of a request line against scim2-server's layout (`/v2/...`):
/// (operation, resource type, target id).
fn expected_reading(
    method: &str,
    path: &str,
) -> (Option<&'static str>, Option<&'static str>, Option<String>) {
    let segments: Vec<&str> = path
        .trim_start_matches("/v2")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let decode = |s: &str| scimtap::scim::endpoint::percent_decode(s);
    match (method, segments.as_slice()) {
        (_, [t, rest @ ..]) if *t == "Users" || *t == "Groups" => {
            let rt = Some(if *t == "Users" { "User" } else { "Group" });
            match (method, rest) {
                ("GET", []) => (Some("list"), rt, None),
                ("POST", []) => (Some("create"), rt, None),
                ("POST", [".search"]) => (Some("search"), rt, None),
                ("GET", [id]) => (Some("read"), rt, Some(decode(id))),
                ("PUT", [id]) => (Some("replace"), rt, Some(decode(id))),
                ("PATCH", [id]) => (Some("patch"), rt, Some(decode(id))),
                ("DELETE", [id]) => (Some("delete"), rt, Some(decode(id))),
                (_, [id]) => (None, rt, Some(decode(id))),
                _ => (None, None, None),
            }
        }
        ("GET", ["ServiceProviderConfig" | "ResourceTypes" | "Schemas", ..]) => {
            (Some("discovery"), None, None)
        }
        ("POST", [".search"]) => (Some("search"), None, None),
        ("GET", ["Me"]) => (Some("read"), Some("User"), None),
        _ => (None, None, None),
    }
}
