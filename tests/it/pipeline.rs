//! The audit side: a stalled sink never slows requests (overflow is counted), SIGTERM drains
//! and flushes, SIGHUP reopens the file, the admin endpoints answer.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Sends `n` GETs with `concurrency` in flight; returns (elapsed, slowest single request).
async fn drive(proxy: &Proxy, n: usize, concurrency: usize) -> (Duration, Duration) {
    let client = http1_client();
    let url = proxy.url("/scim/v2/Users/1");
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                let t = Instant::now();
                let req = Request::get(&url).body(empty()).unwrap();
                let resp = tokio::time::timeout(WAIT, client.request(req))
                    .await
                    .expect("request answered in time")
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
                slowest = slowest.max(t.elapsed());
            }
            slowest
        }));
    }
    let mut slowest = Duration::ZERO;
    for w in workers {
        slowest = slowest.max(w.await.unwrap());
    }
    (started.elapsed(), slowest)
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_sink_does_not_slow_requests_and_overflow_is_counted() {
    const N: usize = 1500;
    let upstream = Upstream::scim().await;
    // Baseline: the same proxy with a healthy file sink.
    let healthy = Proxy::start(ProxyConfig::new(upstream.url()));
    let (healthy_time, _) = drive(&healthy, N, 8).await;

    // stdout is a pipe nobody reads: once its 64 KiB fill, every write blocks forever. Its
    // `block` waits as long as allowed (10 minutes), so the audit worker is held back and the
    // hand-off queue overflows: the backpressure a long `block_timeout_ms` asks for.
    let stalled = Proxy::start_with(
        ProxyConfig::new(upstream.url())
            .top("[audit]\nqueue_max_events = 32")
            .sinks(
                "[[sinks]]\ntype = \"stdout\"\nbuffer = { type = \"memory\", max_events = 16 }\nblock_timeout_ms = 600000\n",
            ),
        Stdio::piped(),
    );
    let (stalled_time, slowest) = drive(&stalled, N, 8).await;
    eprintln!("healthy sink: {healthy_time:?}; stalled sink: {stalled_time:?}, slowest request {slowest:?}");
    // A proxy that waited on its sink would hang (and time out above). The ratio bound is
    // loose on purpose: the machine is shared and noisy.
    assert!(
        stalled_time < healthy_time * 4 + Duration::from_secs(2),
        "stalled sink slowed requests: {stalled_time:?} vs {healthy_time:?}"
    );

    let dropped = stalled
        .metric("scimtap_audit_handoff_dropped_total{reason=\"queue_full\"}")
        .await;
    let encoded = stalled.metric("scimtap_audit_events_encoded_total").await;
    let answered = stalled
        .metric("scimtap_requests_total{status_class=\"2xx\"}")
        .await;
    assert_eq!(answered, N as f64);
    assert!(
        dropped > 0.0,
        "overflow must be counted; log:\n{}",
        stalled.log_tail()
    );
    let waiting = stalled.metric("scimtap_audit_handoff_queue_depth").await;
    assert_eq!(waiting, 32.0, "the hand-off queue is full");
    assert_eq!(
        dropped + encoded + waiting,
        N as f64,
        "every exchange is encoded, waiting, or counted as dropped"
    );
    let depth = stalled
        .metric("scimtap_sink_queue_depth{sink=\"stdout\"}")
        .await;
    assert!(depth <= 16.0);
    // The healthy proxy lost nothing.
    assert_eq!(healthy.wait_for_events(N).await.len(), N);
    assert_eq!(
        healthy
            .metric("scimtap_audit_handoff_dropped_total{reason=\"queue_full\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_exchanges_and_flushes_every_event() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Response::new(full("done"))
    })
    .await;
    let mut proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let client = http1_client();
    let mut in_flight = Vec::new();
    for i in 0..20 {
        let req = Request::get(proxy.url("/Users"))
            .header("x-request-id", format!("drain-{i}"))
            .body(empty())
            .unwrap();
        in_flight.push(tokio::spawn(client.request(req)));
    }
    // Let every request reach the upstream, then stop scimtap while they wait there.
    let deadline = Instant::now() + WAIT;
    while upstream.count() < 20 {
        assert!(
            Instant::now() < deadline,
            "requests did not reach the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = {
        let pid = proxy.child.id();
        std::thread::spawn(move || process::signal(pid, "TERM"))
    };
    for r in in_flight {
        let resp = r
            .await
            .unwrap()
            .expect("in-flight request completed during drain");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "done");
    }
    stopping.join().unwrap();
    let code = proxy.stop_wait();
    assert_eq!(code, 0, "log:\n{}", proxy.log_tail());
    let events = proxy.events();
    assert_eq!(events.len(), 20, "log:\n{}", proxy.log_tail());
    for i in 0..20 {
        assert!(events
            .iter()
            .any(|e| e["request_id"] == format!("drain-{i}")));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reopens_the_audit_file_after_external_rotation() {
    let upstream = Upstream::scim().await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let client = http1_client();
    let get = |id: &str| {
        Request::get(proxy.url("/Users/1"))
            .header("x-request-id", id)
            .body(empty())
            .unwrap()
    };
    roundtrip(&client, get("before")).await;
    proxy.wait_for_events(1).await;
    let rotated = proxy.dir.path().join("audit.jsonl.rotated");
    std::fs::rename(&proxy.audit, &rotated).unwrap();
    proxy.signal("HUP");
    let deadline = Instant::now() + WAIT;
    while !proxy.log_tail().contains("SIGHUP received") {
        assert!(Instant::now() < deadline, "SIGHUP not handled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    roundtrip(&client, get("after")).await;
    let events = proxy.wait_for_events(1).await;
    assert_eq!(events[0]["request_id"], "after");
    let old = std::fs::read_to_string(&rotated).unwrap();
    // The chain's integrity.start record, then the one event.
    assert_eq!(old.lines().count(), 2);
    assert!(old.lines().next().unwrap().contains("\"integrity.start\""));
    assert!(old.contains("\"before\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_report_health_readiness_and_metrics() {
    let upstream = Upstream::scim().await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    assert_eq!(proxy.admin_get("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(proxy.admin_get("/readyz").await.0, 200);
    http1_client()
        .request(Request::get(proxy.url("/Users/1")).body(empty()).unwrap())
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    proxy.wait_for_events(1).await;
    let (status, text) = proxy.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "scimtap_requests_total{status_class=\"2xx\"} 1",
        "scimtap_request_duration_seconds_bucket",
        // The integrity.start record and the event.
        "scimtap_sink_events_written_total{sink=\"file\"} 2",
        "scimtap_connections_accepted_total",
        "scimtap_audit_handoff_dropped_total",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert_eq!(proxy.admin_get("/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_sink_path_stops_startup_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        "[listen]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[[sinks]]\ntype = \"file\"\npath = \"/nonexistent-dir/audit.jsonl\"\n",
    )
    .unwrap();
    let out = run(scimtap(&["--config"]).arg(&config));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent-dir/audit.jsonl"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_stuck_in_a_write_cannot_hold_shutdown_past_its_deadline() {
    let upstream = Upstream::scim().await;
    let mut proxy = Proxy::start_with(
        ProxyConfig::new(upstream.url())
            .shutdown_timeout_secs(1.0)
            .sinks("[[sinks]]\ntype = \"stdout\"\n"),
        Stdio::piped(),
    );
    // Enough events to fill the 64 KiB pipe nobody reads: the sink thread blocks in write(2).
    drive(&proxy, 400, 4).await;
    let started = Instant::now();
    let code = proxy.stop();
    let took = started.elapsed();
    assert_eq!(
        code,
        1,
        "unwritten events make a non-zero exit; log:\n{}",
        proxy.log_tail()
    );
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with a 1 s deadline"
    );
    assert!(
        proxy.log_tail().contains("shutdown deadline"),
        "{}",
        proxy.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_exchange_is_closed_at_the_drain_deadline_and_still_recorded() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Response::new(full("too late"))
    })
    .await;
    let mut proxy = Proxy::start(ProxyConfig::new(upstream.url()).shutdown_timeout_secs(1.5));
    let req = Request::get(proxy.url("/Users"))
        .header("x-request-id", "stuck-1")
        .body(empty())
        .unwrap();
    let pending = tokio::spawn(http1_client().request(req));
    let deadline = Instant::now() + WAIT;
    while upstream.count() < 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let code = proxy.stop();
    let took = started.elapsed();
    assert_eq!(
        code,
        0,
        "every event was written; log:\n{}",
        proxy.log_tail()
    );
    assert!(
        took < Duration::from_secs(4),
        "shutdown took {took:?} with a 1.5 s deadline"
    );
    assert!(
        pending.await.unwrap().is_err(),
        "the stuck request was cut off"
    );
    let events = proxy.events();
    let event = events
        .iter()
        .find(|e| e["request_id"] == "stuck-1")
        .expect("the cut exchange has its event");
    assert_eq!(event["failure"]["side"], "proxy", "{event}");
    assert_eq!(event["failure"]["kind"], "shutdown");
}

/// Per SCIM action metrics with bounded labels, the build info gauge, and the accounting
/// identities per operation: a Bulk request is one request, one exchange and one event per
/// operation in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_counted_per_event_and_bulk_keeps_the_accounting_exact() {
    const TOKEN: &str = "metrics-test-token-91c2";
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        let bulk = req.uri().path().ends_with("/Bulk");
        let body = if bulk {
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkResponse"],"Operations":[{"method":"POST","bulkId":"a","status":"201","location":"/Users/a"},{"method":"POST","bulkId":"b","status":"201","location":"/Users/b"},{"method":"DELETE","status":"204"}]}"#
        } else {
            r#"{"id":"u1","userName":"m@example.com"}"#
        };
        Response::builder()
            .status(if bulk { 200 } else { 201 })
            .body(full(body))
            .unwrap()
    })
    .await;
    let clients = format!(
        "[[clients]]\nname = \"okta-prod\"\nidp = \"okta\"\ntoken_sha256 = \"{}\"\n",
        sha256_hex(TOKEN.as_bytes())
    );
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).top(&clients));
    let client = http1_client();
    let send = |req: Request<_>| {
        let client = client.clone();
        async move {
            let resp = client.request(req).await.unwrap();
            resp.into_body().collect().await.unwrap();
        }
    };
    // A create from the configured client.
    send(
        Request::post(proxy.url("/scim/v2/Users"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/scim+json")
            .body(full(r#"{"userName":"m@example.com"}"#))
            .unwrap(),
    )
    .await;
    // A Bulk of three operations from an unconfigured Okta.
    send(
        Request::post(proxy.url("/scim/v2/Bulk"))
            .header("user-agent", "Okta SCIM Client 1.0.0")
            .header("content-type", "application/scim+json")
            .body(full(
                r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[{"method":"POST","bulkId":"a","path":"/Users","data":{"userName":"a@example.com"}},{"method":"POST","bulkId":"b","path":"/Users","data":{"userName":"b@example.com"}},{"method":"DELETE","path":"/Users/x"}]}"#,
            ))
            .unwrap(),
    )
    .await;
    // A read from nobody known.
    send(
        Request::get(proxy.url("/scim/v2/Users/u1"))
            .body(empty())
            .unwrap(),
    )
    .await;
    proxy.wait_for_events(5).await;

    let (_, text) = proxy.admin_get("/metrics").await;
    let value = |series: &str| metric_value(&text, series);
    let action = |action: &str, client: &str| {
        value(&format!(
            "scimtap_scim_actions_total{{action=\"{action}\",outcome=\"success\",client=\"{client}\"}}"
        ))
    };
    assert_eq!(action("user.create", "okta-prod"), 1.0, "{text}");
    assert_eq!(action("user.create", "unknown/okta"), 2.0, "{text}");
    assert_eq!(action("user.delete", "unknown/okta"), 1.0, "{text}");
    assert_eq!(action("none", "unknown"), 1.0, "{text}");
    assert!(
        text.lines().any(|l| l.starts_with(&format!(
            "scimtap_build_info{{version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        )) && l.ends_with(" 1")),
        "{text}"
    );

    // What equals what: 3 requests, 3 exchanges described, 5 events (the Bulk made 3).
    let requests = value("scimtap_requests_total{status_class=\"2xx\"}");
    let described = value("scimtap_audit_exchanges_described_total");
    let encoded = value("scimtap_audit_events_encoded_total");
    let dropped = value("scimtap_audit_handoff_dropped_total{reason=\"queue_full\"}")
        + value("scimtap_audit_handoff_dropped_total{reason=\"shutdown\"}");
    let waiting = value("scimtap_audit_handoff_queue_depth");
    assert_eq!(requests, 3.0, "{text}");
    assert_eq!(requests, dropped + waiting + described, "{text}");
    assert_eq!(encoded, 5.0, "{text}");
    let actions: f64 = text
        .lines()
        .filter(|l| l.starts_with("scimtap_scim_actions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // No event here carries two actions, so the counts add up to the events.
    assert_eq!(actions, encoded, "{text}");
}
