//! `audit.mode = "write_ahead"`: no SCIM write reaches the upstream without a durable intent
//! record. SIGKILL at random points under load, repeatedly: every write the upstream ever
//! received has its `audit.intent` record in the audit file; with an audit file that cannot be
//! written (`/dev/full`: every write fails with ENOSPC), writes get 503 and the upstream
//! receives none of them, while reads pass.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::Value;

/// An upstream that remembers the request id of every write it received.
async fn recording_upstream() -> (Upstream, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let recorder = seen.clone();
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if req.method() != http::Method::GET {
            if let Some(id) = req.headers().get("x-request-id") {
                recorder
                    .lock()
                    .unwrap()
                    .push(id.to_str().unwrap_or_default().to_owned());
            }
        }
        async move {
            Response::builder()
                .status(201)
                .header("content-type", "application/scim+json")
                .body(full(format!(
                    r#"{{"id":"u{n}","userName":"user{n}@example.com"}}"#
                )))
                .unwrap()
        }
    })
    .await;
    (upstream, seen)
}

async fn send(proxy_url: &str, method: &str, request_id: &str) -> Option<u16> {
    let req = Request::builder()
        .method(method)
        .uri(proxy_url)
        .header("x-request-id", request_id)
        .header("content-type", "application/scim+json")
        .body(full(format!(
            r#"{{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"{request_id}@example.com"}}"#
        )))
        .unwrap();
    let resp = tokio::time::timeout(WAIT, http1_client().request(req))
        .await
        .ok()?
        .ok()?;
    Some(resp.status().as_u16())
}

fn write_ahead_config(upstream: &Upstream, audit: &std::path::Path) -> ProxyConfig {
    ProxyConfig::new(upstream.url())
        .top("[audit]\nmode = \"write_ahead\"\nwrite_ahead_timeout_ms = 1000\n")
        .sinks(&format!(
            "[[sinks]]\ntype = \"file\"\npath = \"{}\"\n",
            audit.display()
        ))
}

fn lines(audit: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    // Whole lines only: a running sink may be in the middle of a write.
    let whole = text.rfind('\n').map_or("", |end| &text[..=end]);
    whole
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("torn or merged line in the audit file: {l:?}: {e}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_forwarded_only_after_its_intent_record_and_reads_need_none() {
    let (upstream, seen) = recording_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let proxy = Proxy::start(write_ahead_config(&upstream, &audit));
    assert_eq!(
        send(&proxy.url("/scim/v2/Users"), "POST", "wa-create").await,
        Some(201)
    );
    assert_eq!(
        send(&proxy.url("/scim/v2/Users/u0"), "GET", "wa-read").await,
        Some(201)
    );
    let deadline = Instant::now() + WAIT;
    let all = loop {
        let all = lines(&audit);
        if all.iter().filter(|l| l.get("record").is_none()).count() >= 2 {
            break all;
        }
        assert!(Instant::now() < deadline, "events: {all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let intent_at = all
        .iter()
        .position(|l| l["record"] == "audit.intent" && l["request_id"] == "wa-create")
        .expect("an intent record for the write");
    let event_at = all
        .iter()
        .position(|l| l.get("record").is_none() && l["request_id"] == "wa-create")
        .expect("the write's event");
    assert!(intent_at < event_at, "the intent comes before the outcome");
    let intent = &all[intent_at];
    assert_eq!(intent["http"]["method"], "POST");
    assert_eq!(intent["operations"][0]["operation"], "create");
    assert_eq!(intent["operations"][0]["resource_type"], "User");
    assert_eq!(
        intent["operations"][0]["target"]["user_name"],
        "wa-create@example.com"
    );
    assert!(
        !all.iter()
            .any(|l| l["record"] == "audit.intent" && l["request_id"] == "wa-read"),
        "reads need no intent"
    );
    assert_eq!(*seen.lock().unwrap(), ["wa-create"]);
    // The event of the write still carries the request body as forwarded.
    let event = &all[event_at];
    assert_eq!(event["scim"]["operation"], "create");
    assert_eq!(event["http"]["status"], 201);
}

/// With the upstream down, the intent and the outcome event of the same write agree: both
/// say what the request asked (a deactivation), the event adding that it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intent_and_the_event_of_a_write_the_upstream_never_saw_agree() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let proxy = Proxy::start(
        ProxyConfig::new(format!("http://127.0.0.1:{}", closed_port()))
            .top("[audit]\nmode = \"write_ahead\"\nwrite_ahead_timeout_ms = 1000\n")
            .sinks(&format!(
                "[[sinks]]\ntype = \"file\"\npath = \"{}\"\n",
                audit.display()
            )),
    );
    // Entra ID's deactivation: a path-less value object with the string "False".
    let req = Request::patch(proxy.url("/scim/v2/Users/u7"))
        .header("x-request-id", "wa-down")
        .header("content-type", "application/scim+json")
        .body(full(
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","value":{"active":"False"}}]}"#,
        ))
        .unwrap();
    let resp = roundtrip(&http1_client(), req).await;
    assert_eq!(resp.status(), 502);
    let deadline = Instant::now() + WAIT;
    let (intent, event) = loop {
        let all = lines(&audit);
        let find = |intent: bool| {
            all.iter()
                .find(|l| l["request_id"] == "wa-down" && (l["record"] == "audit.intent") == intent)
                .cloned()
        };
        if let (Some(intent), Some(event)) = (find(true), find(false)) {
            break (intent, event);
        }
        assert!(Instant::now() < deadline, "lines: {all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        intent["operations"][0]["actions"],
        serde_json::json!(["user.deactivate"])
    );
    assert_eq!(
        event["scim"]["actions"], intent["operations"][0]["actions"],
        "{event}"
    );
    assert_eq!(
        event["scim"]["changes"], intent["operations"][0]["changes"],
        "{event}"
    );
    assert!(event["scim"]["parse_error"].is_null(), "{event}");
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["failure"]["kind"], "connect_refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_unwritable_audit_file_writes_get_503_and_never_reach_the_upstream() {
    let (upstream, seen) = recording_upstream().await;
    let proxy = Proxy::start(write_ahead_config(
        &upstream,
        std::path::Path::new("/dev/full"),
    ));
    for (n, method) in ["POST", "PUT", "PATCH", "DELETE"].iter().enumerate() {
        let path = if *method == "POST" {
            "/scim/v2/Users".to_owned()
        } else {
            format!("/scim/v2/Users/u{n}")
        };
        let req = Request::builder()
            .method(*method)
            .uri(proxy.url(&path))
            .header("x-request-id", format!("full-{n}"))
            .body(full(r#"{"userName":"x"}"#))
            .unwrap();
        let resp = http1_client().request(req).await.unwrap();
        assert_eq!(resp.status(), 503, "{method} must be refused");
        assert!(resp.headers().contains_key("retry-after"));
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "no write reached the upstream"
    );
    // A search is a read: it passes.
    assert_eq!(
        send(&proxy.url("/scim/v2/Users/.search"), "POST", "full-search").await,
        Some(201)
    );
    assert_eq!(
        send(&proxy.url("/scim/v2/Users/u1"), "GET", "full-get").await,
        Some(201)
    );
    assert!(proxy.metric("scimtap_audit_refused_requests_total").await >= 4.0);
    assert!(seen.lock().unwrap().iter().all(|id| id == "full-search"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_never_leaves_a_forwarded_write_without_its_intent() {
    let (upstream, seen) = recording_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = write_ahead_config(&upstream, &audit);
    let mut sent = 0usize;
    for round in 0..6u64 {
        let proxy = Arc::new(Proxy::start(config.clone()));
        let url = proxy.url("/scim/v2/Users");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut load = Vec::new();
        for worker in 0..4 {
            let url = url.clone();
            let stop = stop.clone();
            load.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _ = send(&url, "POST", &format!("r{round}-w{worker}-{n}")).await;
                    n += 1;
                }
                n
            }));
        }
        // A different point each round: 40 ms to 400 ms into the load.
        let pause = 40 + (round * 7919 + 13) % 360;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        proxy.signal("KILL");
        stop.store(true, Ordering::Relaxed);
        for task in load {
            sent += task.await.unwrap();
        }
        let Ok(mut proxy) = Arc::try_unwrap(proxy) else {
            panic!("the proxy handle is still shared");
        };
        proxy.stop_wait();
    }
    let all = lines(&audit);
    let intents: HashSet<&str> = all
        .iter()
        .filter(|l| l["record"] == "audit.intent")
        .filter_map(|l| l["request_id"].as_str())
        .collect();
    let forwarded = seen.lock().unwrap().clone();
    assert!(
        forwarded.len() > 20,
        "the load must have forwarded writes ({} of {sent} sent)",
        forwarded.len()
    );
    let missing: Vec<&String> = forwarded
        .iter()
        .filter(|id| !intents.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} forwarded writes have no intent record: {missing:?}",
        missing.len()
    );

    // A last clean run closes the chain; every unclean stop is visible, nothing is broken.
    let mut last = Proxy::start(config.clone());
    assert_eq!(last.stop(), 0);
    let verify_config = dir.path().join("verify.toml");
    std::fs::write(&verify_config, config.render(&audit)).unwrap();
    let (code, report) = scimtap_verify(&verify_config, &[&audit], &[]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("6 restarts after an unclean stop"),
        "{report}"
    );
}
