//! Delivery guarantees under failure, against the real collector process
//! (`tests/peer/collector.py`) and the real scimtap binary:
//! - a collector outage under steady load: with the memory buffer, delivered + counted drops =
//!   sent, exactly; with the disk buffer, every event arrives;
//! - SIGKILL with a disk buffer: after a restart every buffered event is delivered, and no
//!   line anywhere is torn or merged;
//! - `on_audit_failure = "reject"`: while the trail is full, SCIM writes get 503 and never reach
//!   the upstream; reads pass.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::collector::Collector;
use crate::support::*;
use http::Request;
use serde_json::{json, Value};

const SETTLE: Duration = Duration::from_secs(60);

/// One SCIM create through the proxy; returns the status.
async fn create_user(proxy: &Proxy, n: usize) -> u16 {
    let req = Request::post(proxy.url("/scim/v2/Users"))
        .header("content-type", "application/scim+json")
        .body(full(format!(
            r#"{{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"user{n}@example.com","active":true}}"#
        )))
        .unwrap();
    let resp = tokio::time::timeout(WAIT, http1_client().request(req))
        .await
        .expect("proxy answers in time")
        .expect("proxy answers");
    resp.status().as_u16()
}

/// Sends `count` creates, one every `every`, from a task; resolves to the statuses.
fn steady_load(
    proxy: &Arc<Proxy>,
    count: usize,
    every: Duration,
) -> tokio::task::JoinHandle<Vec<u16>> {
    let proxy = proxy.clone();
    tokio::spawn(async move {
        let mut statuses = Vec::with_capacity(count);
        let mut tick = tokio::time::interval(every);
        for n in 0..count {
            tick.tick().await;
            statuses.push(create_user(&proxy, n).await);
        }
        statuses
    })
}

/// The event ids of `events`, leaving out the records the hash chain adds (they travel to
/// native sinks too, but are not events of a request).
fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.get("record").is_none())
        .map(|e| {
            e["event_id"]
                .as_str()
                .unwrap_or_else(|| panic!("event without event_id: {e}"))
                .to_owned()
        })
        .collect()
}

/// Sum of `scimtap_sink_events_dropped_total{sink=..}` over every reason.
async fn dropped(proxy: &Proxy, sink: &str) -> f64 {
    let (_, text) = proxy.admin_get("/metrics").await;
    text.lines()
        .filter(|l| {
            l.starts_with("scimtap_sink_events_dropped_total{")
                && l.contains(&format!("sink=\"{sink}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs an outage under steady load: the collector fails with 503, then goes away, then comes
/// back on the same port. Returns the proxy, every event id the collectors accepted (all
/// instances, with repeats), and the event ids scimtap's file sink wrote.
async fn outage(buffer: &str, when_full: &str) -> (Arc<Proxy>, Vec<String>, Vec<String>) {
    let upstream = Upstream::scim().await;
    let first = Collector::start(&[]);
    let port = first.port;
    let sinks = format!(
        r#"[[sinks]]
name = "collector"
type = "http"
url = "{url}"
when_full = "{when_full}"
buffer = {buffer}
batch = {{ max_events = 10, timeout_secs = 0.05 }}
retry = {{ max_attempts = 1000, initial_backoff_secs = 0.05, max_backoff_secs = 0.2 }}

[[sinks]]
name = "reference"
type = "file"
path = "AUDIT_PLACEHOLDER"
"#,
        url = first.url("/ingest"),
    );
    let proxy = Arc::new(Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks)));
    const SENT: usize = 240;
    let load = steady_load(&proxy, SENT, Duration::from_millis(10));

    tokio::time::sleep(Duration::from_millis(600)).await;
    // The outage: 503s first, then nothing listening at all.
    first
        .control("fail", json!({"status": 503, "retry_after": 0}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (accepted, _) = first.events().await;
    let mut delivered = ids(&accepted);
    drop(first);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let second = Collector::start_on(port, &[]);

    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let written = ids(&proxy.wait_for_events(SENT).await);
    assert_eq!(
        written.len(),
        SENT,
        "one event per request in the file sink"
    );

    // Settle: every event is either at the collector or counted as dropped.
    let deadline = Instant::now() + SETTLE;
    loop {
        let (accepted, _) = second.events().await;
        let unique: HashSet<String> = delivered.iter().cloned().chain(ids(&accepted)).collect();
        let dropped = dropped(&proxy, "collector").await as usize;
        if unique.len() + dropped >= SENT || Instant::now() > deadline {
            delivered.extend(ids(&accepted));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (proxy, delivered, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_buffer_outage_delivered_plus_counted_drops_equal_sent() {
    let (proxy, delivered, written) =
        outage(r#"{ type = "memory", max_events = 20 }"#, "drop_newest").await;
    let unique: HashSet<&String> = delivered.iter().collect();
    let written_set: HashSet<&String> = written.iter().collect();
    assert!(
        unique.is_subset(&written_set),
        "the collector got events scimtap never wrote"
    );
    let dropped = dropped(&proxy, "collector").await as usize;
    let queue_full = proxy
        .metric(r#"scimtap_sink_events_dropped_total{sink="collector",reason="queue_full"}"#)
        .await as usize;
    assert!(
        queue_full > 0,
        "the outage must overflow the 20-event queue (else this test proves nothing)"
    );
    assert_eq!(
        unique.len() + dropped,
        written.len(),
        "delivered ({}) + dropped ({dropped}) must equal sent ({}); log:\n{}",
        unique.len(),
        written.len(),
        proxy.log_tail()
    );
    let retried = proxy
        .metric(r#"scimtap_sink_events_retried_total{sink="collector"}"#)
        .await;
    assert!(retried > 0.0, "the outage made the sink retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_buffer_outage_delivers_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = format!(
        r#"{{ type = "disk", path = "{}", max_bytes = 67108864 }}"#,
        dir.path().join("buffer").display()
    );
    let (proxy, delivered, written) = outage(&buffer, "block").await;
    let unique: HashSet<&String> = delivered.iter().collect();
    let missing: Vec<&String> = written.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} events never arrived: {missing:?}\nlog:\n{}",
        missing.len(),
        written.len(),
        proxy.log_tail()
    );
    assert_eq!(dropped(&proxy, "collector").await, 0.0);
    eprintln!(
        "disk buffer outage: {} events, {} deliveries ({} duplicates)",
        written.len(),
        delivered.len(),
        delivered.len() - unique.len()
    );
}

/// Every line of `text` is one whole JSON object.
fn assert_whole_lines(what: &str, text: &str) {
    for (i, line) in text.lines().enumerate() {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(
            matches!(parsed, Ok(Value::Object(_))),
            "{what} line {} is torn or merged: {line:?}",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_a_disk_buffer_loses_nothing_that_was_buffered() {
    let upstream = Upstream::scim().await;
    let buffer_dir = tempfile::tempdir().unwrap();
    // The collector refuses everything while the first scimtap runs, so events pile up in
    // the disk buffer.
    let collector = Collector::start(&[]);
    collector.control("fail", json!({"status": 503})).await;
    let sinks = format!(
        r#"[[sinks]]
name = "collector"
type = "http"
url = "{url}"
buffer = {{ type = "disk", path = "{buffer}", max_bytes = 67108864 }}
batch = {{ max_events = 25, timeout_secs = 0.02 }}
retry = {{ initial_backoff_secs = 0.05, max_backoff_secs = 0.2 }}

[[sinks]]
name = "reference"
type = "file"
path = "AUDIT_PLACEHOLDER"
"#,
        url = collector.url("/ingest"),
        buffer = buffer_dir.path().display(),
    );
    let first = Arc::new(Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks)));
    // Kill while requests are still arriving: the audit worker may be mid-append.
    let load = steady_load(&first, 400, Duration::from_millis(2));
    let deadline = Instant::now() + WAIT;
    while first.events().len() < 150 {
        assert!(
            Instant::now() < deadline,
            "events did not reach the file sink"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.signal("KILL");
    let _ = load.await;
    // The file sink comes after the disk-buffered sink: whatever it wrote was buffered first.
    let audit_text = std::fs::read_to_string(first.audit_path()).unwrap_or_default();
    let buffered: Vec<String> = ids(&audit_text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect::<Vec<_>>());
    assert!(buffered.len() >= 150);
    assert_eq!(
        collector.events().await.0.len(),
        0,
        "nothing delivered before the kill"
    );

    collector.control("reset", json!({})).await;
    let second = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let deadline = Instant::now() + SETTLE;
    let arrived = loop {
        let (events, _) = collector.events().await;
        let arrived: HashSet<String> = ids(&events).into_iter().collect();
        if buffered.iter().all(|id| arrived.contains(id)) {
            break arrived;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} buffered events arrived after the restart; log:\n{}",
            buffered.iter().filter(|id| arrived.contains(*id)).count(),
            buffered.len(),
            second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(arrived.len() >= buffered.len());
    assert_whole_lines("the killed run's audit file", &audit_text);
    let state = std::fs::read_to_string(collector.dir().join("events.jsonl")).unwrap();
    assert_whole_lines("what the collector received", &state);
    for request in collector.requests().await {
        if request["status"] == 200 {
            let body = request["body"].as_str().unwrap_or_default();
            assert_whole_lines("a request body", body);
        }
    }
    eprintln!(
        "SIGKILL: {} events buffered before the kill, {} distinct delivered after the restart",
        buffered.len(),
        arrived.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_undelivered_events_on_disk_for_the_next_start() {
    let upstream = Upstream::scim().await;
    let buffer_dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&[]);
    collector.control("fail", json!({"status": 503})).await;
    let sinks = format!(
        r#"[[sinks]]
name = "collector"
type = "http"
url = "{url}"
buffer = {{ type = "disk", path = "{buffer}" }}
batch = {{ max_events = 5, timeout_secs = 0.02 }}
retry = {{ initial_backoff_secs = 0.05, max_backoff_secs = 0.2 }}
"#,
        url = collector.url("/ingest"),
        buffer = buffer_dir.path().display(),
    );
    let mut first = Proxy::start(
        ProxyConfig::new(upstream.url())
            .shutdown_timeout_secs(10.0)
            .sinks(&sinks),
    );
    for n in 0..20 {
        assert_eq!(create_user(&first, n).await, 201);
    }
    // Let the sink fail at least once, so events are known to be waiting on disk.
    let deadline = Instant::now() + WAIT;
    while first
        .metric(r#"scimtap_sink_write_errors_total{sink="collector"}"#)
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the sink never tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    assert_eq!(first.stop(), 0, "a clean stop; log:\n{}", first.log_tail());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a failing receiver must not hold shutdown to its deadline"
    );
    assert!(
        first
            .log_tail()
            .contains("undelivered events in the disk buffer"),
        "the stop says events were left for the next start:\n{}",
        first.log_tail()
    );
    assert_eq!(collector.events().await.0.len(), 0);

    collector.control("reset", json!({})).await;
    let second = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let deadline = Instant::now() + SETTLE;
    let unique = loop {
        let (events, _) = collector.events().await;
        let unique: HashSet<String> = ids(&events).into_iter().collect();
        if unique.len() >= 20 || Instant::now() > deadline {
            break unique;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(unique.len(), 20, "every event of the first run, once");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_mode_refuses_writes_while_the_trail_is_full_and_reads_pass() {
    let upstream = Upstream::scim().await;
    let collector = Collector::start(&[]);
    // A collector that holds every request for 3 s: the sink's one-event queue fills.
    collector
        .control("delay", json!({"ms": 3000, "count": 1}))
        .await;
    let sinks = format!(
        r#"[[sinks]]
name = "collector"
type = "http"
url = "{url}"
buffer = {{ max_events = 1 }}
batch = {{ max_events = 1, timeout_secs = 0 }}
"#,
        url = collector.url("/ingest"),
    );
    let proxy = Proxy::start(
        ProxyConfig::new(upstream.url())
            .top("[audit]\non_audit_failure = \"reject\"\nqueue_max_events = 1\n")
            .sinks(&sinks),
    );
    // Fill: one event in flight at the collector, one in the queue, one in the hand-off.
    let mut statuses = Vec::new();
    for n in 0..6 {
        statuses.push(create_user(&proxy, n).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        statuses.contains(&503),
        "writes must be refused once the trail is full: {statuses:?}"
    );
    let forwarded = upstream.count();
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(
        forwarded, accepted,
        "a refused write never reaches the upstream"
    );

    // A read passes even now.
    let req = Request::get(proxy.url("/scim/v2/Users?filter=userName%20eq%20%22x%22"))
        .body(empty())
        .unwrap();
    let resp = http1_client().request(req).await.unwrap();
    assert_eq!(
        resp.status(),
        200,
        "reads are forwarded (the fake SCIM service answers a search with 200)"
    );
    assert_eq!(
        upstream.count(),
        forwarded + 1,
        "the read reached the upstream"
    );

    // The refusal is explicit: SCIM error, Retry-After, counted.
    let req = Request::post(proxy.url("/scim/v2/Users"))
        .body(full("{}"))
        .unwrap();
    let resp = http1_client().request(req).await.unwrap();
    if resp.status() == 503 {
        assert!(resp.headers().contains_key("retry-after"));
    }
    assert!(proxy.metric("scimtap_audit_refused_requests_total").await >= 1.0);

    // Once the collector answers again, writes flow.
    let deadline = Instant::now() + SETTLE;
    loop {
        if create_user(&proxy, 99).await == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "writes never resumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
