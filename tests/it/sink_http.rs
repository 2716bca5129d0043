//! The `http` sink against a real collector process (`tests/peer/collector.py`): every
//! encoding delivers exactly the events the file sink wrote, with the envelope each receiver
//! expects; 503 + Retry-After, `_bulk` item errors, refused batches and an absent collector
//! are retried, rejected or dropped as documented, and the metrics account for every event;
//! the sink's secrets never reach scimtap's log.
//!
//! Requests are counted on the client side: each test knows how many SCIM requests (and so
//! events) it sent, and reads what the collector received from its request log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::support::collector::Collector;
use crate::support::*;
use http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";

// === a SCIM service and traffic ===

/// One SCIM request through the proxy; panics unless it succeeded.
async fn send(proxy: &Proxy, method: &str, path: &str, request_id: &str, body: Option<Value>) {
    let req = Request::builder()
        .method(method)
        .uri(proxy.url(path))
        .header("x-request-id", request_id)
        .header("authorization", "Bearer idp-token")
        .header("content-type", "application/scim+json")
        .body(body.map_or_else(empty, |b| full(b.to_string())))
        .unwrap();
    let resp = tokio::time::timeout(WAIT, http1_client().request(req))
        .await
        .expect("proxy answers in time")
        .unwrap();
    assert!(
        resp.status().is_success(),
        "{method} {path}: {}",
        resp.status()
    );
    resp.into_body().collect().await.unwrap();
}

/// Events made by [`drive`]: six single requests and a Bulk of three operations.
const DRIVE_EVENTS: usize = 9;

/// Sends one request of each kind (create, read, replace, patch, delete, list) and a Bulk
/// request of three operations, with request ids `<tag>-0` ... `<tag>-6` (the Bulk).
async fn drive(proxy: &Proxy, tag: &str) -> usize {
    let user = json!({"schemas": [USER], "userName": format!("{tag}@example.com"), "active": true});
    let patch = json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": "u-7"}]}
    ]});
    let bulk = json!({
        "schemas": [BULK_REQUEST],
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "b1", "data": {"schemas": [USER], "userName": format!("bulk-{tag}@example.com")}},
            {"method": "PATCH", "path": "/Users/u-3", "data": {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": false}]}},
            {"method": "DELETE", "path": "/Groups/g-2"},
        ],
    });
    let requests: [(&str, &str, Option<Value>); 7] = [
        ("POST", "/scim/v2/Users", Some(user.clone())),
        ("GET", "/scim/v2/Users/u-1", None),
        ("PUT", "/scim/v2/Users/u-1", Some(user)),
        ("PATCH", "/scim/v2/Groups/g-1", Some(patch)),
        ("DELETE", "/scim/v2/Users/u-2", None),
        (
            "GET",
            "/scim/v2/Users?filter=userName%20eq%20%22bob%22",
            None,
        ),
        ("POST", "/scim/v2/Bulk", Some(bulk)),
    ];
    for (i, (method, path, body)) in requests.into_iter().enumerate() {
        send(proxy, method, path, &format!("{tag}-{i}"), body).await;
    }
    DRIVE_EVENTS
}

// === comparing events ===

/// Events by `event_id`; panics on a duplicate id.
fn by_id(what: &str, events: &[Value]) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for event in events {
        let id = event["event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: event without event_id: {event}"))
            .to_owned();
        assert!(
            map.insert(id.clone(), event.clone()).is_none(),
            "{what}: event {id} delivered twice"
        );
    }
    map
}

/// `got` holds exactly the events of `want`, each once, field for field.
fn assert_same_events(what: &str, got: &[Value], want: &[Value]) {
    let (got, want) = (by_id(what, got), by_id("file sink", want));
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, unexpected {extra:?}"
    );
    for (id, event) in &want {
        assert_eq!(
            &got[id], event,
            "{what}: event {id} differs from the file sink's"
        );
    }
}

/// The file sink's events, once all `n` are there.
async fn reference_events(proxy: &Proxy, n: usize) -> Vec<Value> {
    let events = proxy.wait_for_events(n).await;
    assert_eq!(events.len(), n, "the file sink has exactly the events sent");
    events
}

// === metrics ===

#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    written: f64,
    rejected: f64,
    write_error: f64,
    retried: f64,
    write_errors: f64,
    sends: f64,
    queue_depth: f64,
}

impl Counts {
    /// Events accounted for: written or dropped.
    fn settled(&self) -> f64 {
        self.written + self.rejected + self.write_error
    }
}

async fn counts(proxy: &Proxy, sink: &str) -> Counts {
    let (status, text) = proxy.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let m =
        |name: &str, extra: &str| metric_value(&text, &format!("{name}{{sink=\"{sink}\"{extra}}}"));
    Counts {
        written: m("scimtap_sink_events_written_total", ""),
        rejected: m("scimtap_sink_events_dropped_total", ",reason=\"rejected\""),
        write_error: m(
            "scimtap_sink_events_dropped_total",
            ",reason=\"write_error\"",
        ),
        retried: m("scimtap_sink_events_retried_total", ""),
        write_errors: m("scimtap_sink_write_errors_total", ""),
        sends: m("scimtap_sink_send_duration_seconds_count", ""),
        queue_depth: m("scimtap_sink_queue_depth", ""),
    }
}

/// Waits until the counts of `sink` satisfy `done`.
async fn wait_counts(proxy: &Proxy, sink: &str, done: impl Fn(&Counts) -> bool) -> Counts {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = counts(proxy, sink).await;
        if done(&c) {
            return c;
        }
        if Instant::now() > deadline {
            panic!(
                "sink {sink} did not get there: {c:?}\nlog:\n{}",
                proxy.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// === helpers ===

fn header<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request["headers"][name].as_str()
}

fn body(request: &Value) -> &str {
    request["body"].as_str().unwrap_or("")
}

/// (action, source) pairs of a `_bulk` request body.
fn bulk_pairs(request: &Value) -> Vec<(Value, Value)> {
    let lines: Vec<Value> = body(request)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() % 2, 0, "bulk body in pairs: {request}");
    lines
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect()
}

/// A file holding `text`, in `dir`.
fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Event timestamp (RFC 3339) as Unix seconds.
fn unix_secs(timestamp: &str) -> f64 {
    humantime::parse_rfc3339(timestamp)
        .unwrap_or_else(|e| panic!("timestamp {timestamp}: {e}"))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn http_sink(name: &str, url: &str, extra: &str) -> String {
    format!("[[sinks]]\ntype = \"http\"\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n")
}

const FILE_SINK: &str = "[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\n";

// === tests ===

#[tokio::test(flavor = "multi_thread")]
async fn every_encoding_delivers_exactly_the_file_sinks_events_in_its_envelope() {
    let secrets = tempfile::tempdir().unwrap();
    let bearer = "bearer-0f3c9a1e";
    let api_key = "apikey-77d2b41c";
    let hec_token = "6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    let bearer_file = secret_file(secrets.path(), "bearer", &format!("{bearer}\n"));
    let api_key_file = secret_file(secrets.path(), "api-key", &format!("  {api_key}\n"));
    let hec_file = secret_file(secrets.path(), "hec", &format!("{hec_token}\n"));

    let ndjson = Collector::start(&[]);
    let array = Collector::start(&[]);
    let hec = Collector::start(&["--hec-token", hec_token]);
    let es = Collector::start(&[]);
    let upstream = Upstream::scim().await;
    let common = "batch = { max_events = 4, timeout_secs = 0.1 }\nretry = { initial_backoff_secs = 0.05, max_backoff_secs = 0.5 }";
    let sinks = [
        FILE_SINK.to_owned(),
        http_sink(
            "ndjson",
            &ndjson.url("/ingest/ndjson"),
            &format!(
                "encoding = \"ndjson\"\nheaders = {{ \"X-Tenant\" = \"t1\" }}\nheader_files = {{ \"X-Api-Key\" = \"{}\" }}\ntoken_file = \"{}\"\n{common}",
                api_key_file.display(),
                bearer_file.display()
            ),
        ),
        http_sink(
            "array",
            &array.url("/ingest/array"),
            &format!("encoding = \"json_array\"\nheaders = {{ \"X-Tenant\" = \"t2\" }}\n{common}"),
        ),
        http_sink(
            "hec",
            &hec.url("/services/collector/event"),
            &format!(
                "encoding = \"splunk_hec\"\ntoken_file = \"{}\"\nindex = \"scim-audit\"\nsource = \"scimtap-test\"\nsourcetype = \"scimtap:test\"\nhost = \"proxy-7.example\"\n{common}",
                hec_file.display()
            ),
        ),
        http_sink(
            "es",
            &es.url("/_bulk"),
            &format!("encoding = \"elasticsearch_bulk\"\nindex = \"scimtap-audit\"\nheaders = {{ \"X-Tenant\" = \"t4\" }}\n{common}"),
        ),
    ]
    .concat();
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));

    let n = drive(&proxy, "enc").await;
    let want = reference_events(&proxy, n).await;
    // Several kinds of request, and one event per Bulk operation.
    let bulk: Vec<&Value> = want.iter().filter(|e| e["request_id"] == "enc-6").collect();
    assert_eq!(bulk.len(), 3, "one event per Bulk operation");
    assert!(bulk.iter().all(|e| e["scim"]["bulk"].is_object()));
    let operations: std::collections::BTreeSet<&str> = want
        .iter()
        .filter_map(|e| e["scim"]["operation"].as_str())
        .collect();
    for op in ["create", "read", "replace", "patch", "delete", "list"] {
        assert!(operations.contains(op), "no {op} event: {operations:?}");
    }

    for sink in ["ndjson", "array", "hec", "es"] {
        let c = wait_counts(&proxy, sink, |c| c.settled() >= n as f64).await;
        assert_eq!(
            (c.written, c.rejected, c.write_error, c.retried),
            (n as f64, 0.0, 0.0, 0.0),
            "sink {sink}: {c:?}"
        );
    }

    // NDJSON: one event per line, batches of at most 4, headers and secrets from files.
    let requests = ndjson.requests().await;
    assert_same_events("ndjson", &ndjson.events().await.0, &want);
    let mut lines = 0;
    for r in &requests {
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["method"], "POST");
        assert_eq!(r["path"], "/ingest/ndjson");
        assert_eq!(header(r, "content-type"), Some("application/x-ndjson"));
        assert_eq!(header(r, "x-tenant"), Some("t1"));
        assert_eq!(
            header(r, "x-api-key"),
            Some(api_key),
            "header_files value, trimmed"
        );
        assert_eq!(
            header(r, "authorization"),
            Some(format!("Bearer {bearer}").as_str()),
            "token_file value, trimmed"
        );
        assert!(header(r, "user-agent").is_some_and(|u| u.starts_with("scimtap/")));
        let count = body(r).lines().count();
        assert!((1..=4).contains(&count), "batch.max_events = 4: {count}");
        assert!(body(r).ends_with('\n'));
        lines += count;
    }
    assert_eq!(lines, n, "every event sent once");
    assert_eq!(requests.len() as f64, counts(&proxy, "ndjson").await.sends);

    // JSON array.
    assert_same_events("json_array", &array.events().await.0, &want);
    let mut total = 0;
    for r in array.requests().await {
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert_eq!(header(&r, "x-tenant"), Some("t2"));
        assert_eq!(header(&r, "authorization"), None, "no token configured");
        let batch: Vec<Value> = serde_json::from_str(body(&r)).expect("a JSON array");
        total += batch.len();
    }
    assert_eq!(total, n);

    // Splunk HEC: the collector checked the token; every envelope carries the configured
    // fields and the event's own time.
    assert_same_events("splunk_hec", &hec.events().await.0, &want);
    let want_by_id = by_id("file sink", &want);
    let mut envelopes = 0;
    for r in hec.requests().await {
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(
            header(&r, "authorization"),
            Some(format!("Splunk {hec_token}").as_str())
        );
        for envelope in serde_json::Deserializer::from_str(body(&r)).into_iter::<Value>() {
            let envelope = envelope.unwrap();
            envelopes += 1;
            let keys: Vec<&String> = envelope.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                ["time", "host", "source", "sourcetype", "index", "event"],
                "{envelope}"
            );
            assert_eq!(envelope["host"], "proxy-7.example");
            assert_eq!(envelope["source"], "scimtap-test");
            assert_eq!(envelope["sourcetype"], "scimtap:test");
            assert_eq!(envelope["index"], "scim-audit");
            let event = &want_by_id[envelope["event"]["event_id"].as_str().unwrap()];
            let time = envelope["time"].as_f64().expect("time is a number");
            let expected = unix_secs(event["timestamp"].as_str().unwrap());
            assert!(
                (time - expected).abs() < 0.0005,
                "HEC time {time} is the event's timestamp {expected}"
            );
        }
    }
    assert_eq!(envelopes, n);

    // Elasticsearch _bulk: `index` actions into the configured index, `_id` = event_id.
    let (docs, duplicates) = es.events().await;
    assert_eq!(duplicates, 0);
    let stripped: Vec<Value> = docs
        .iter()
        .map(|d| {
            let mut d = d.clone();
            let id = d.as_object_mut().unwrap().remove("_id").unwrap();
            assert_eq!(id, d["event_id"], "_id is the event id");
            d
        })
        .collect();
    assert_same_events("elasticsearch_bulk", &stripped, &want);
    let mut items = 0;
    for r in es.requests().await {
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["path"], "/_bulk");
        assert_eq!(header(&r, "content-type"), Some("application/x-ndjson"));
        assert_eq!(header(&r, "x-tenant"), Some("t4"));
        assert!(body(&r).ends_with('\n'));
        for (action, source) in bulk_pairs(&r) {
            items += 1;
            assert_eq!(
                action,
                json!({"index": {"_index": "scimtap-audit", "_id": source["event_id"]}})
            );
        }
    }
    assert_eq!(items, n);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_on_503_is_honoured_and_no_event_is_lost() {
    let collector = Collector::start(&[]);
    collector
        .control("fail", json!({"status": 503, "count": 3, "retry_after": 1}))
        .await;
    let upstream = Upstream::scim().await;
    // The exponential backoff alone would wait at most 0.05, 0.1, 0.2 s.
    let sinks = format!(
        "{FILE_SINK}{}",
        http_sink(
            "flaky",
            &collector.url("/ingest"),
            "batch = { max_events = 100, timeout_secs = 0.1 }\nretry = { max_attempts = 8, initial_backoff_secs = 0.05, max_backoff_secs = 5.0 }"
        )
    );
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let n = drive(&proxy, "ra").await;
    let want = reference_events(&proxy, n).await;
    let c = wait_counts(&proxy, "flaky", |c| c.settled() >= n as f64).await;

    assert_same_events("after 503s", &collector.events().await.0, &want);
    let requests = collector.requests().await;
    let statuses: Vec<&Value> = requests.iter().map(|r| &r["status"]).collect();
    assert!(requests.len() >= 4, "{statuses:?}");
    assert_eq!(
        statuses[..4],
        [&json!(503), &json!(503), &json!(503), &json!(200)]
    );
    assert!(
        statuses[4..].iter().all(|s| **s == json!(200)),
        "{statuses:?}"
    );
    // The same batch, sent again after at least Retry-After each time.
    let first_batch = body(&requests[0]).lines().count();
    for pair in requests[..4].windows(2) {
        assert_eq!(body(&pair[0]), body(&pair[1]), "a retry resends the batch");
        let gap = pair[1]["time"].as_f64().unwrap() - pair[0]["time"].as_f64().unwrap();
        assert!(gap >= 0.9, "retried {gap:.3} s after a Retry-After: 1");
    }
    assert_eq!(c.written, n as f64);
    assert_eq!((c.rejected, c.write_error), (0.0, 0.0));
    assert_eq!(c.write_errors, 3.0, "{c:?}");
    assert_eq!(c.retried, (3 * first_batch) as f64, "{c:?}");
    assert_eq!(
        c.sends,
        requests.len() as f64,
        "one send per request received"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_item_errors_retry_only_the_429_item_and_reject_the_400_one() {
    let es = Collector::start(&[]);
    es.control(
        "bulk_item_errors",
        json!({"statuses": [null, 429, 400], "count": 1}),
    )
    .await;
    let upstream = Upstream::scim().await;
    // The four events of one Bulk request fill one batch (max_events = 4) at once.
    let sinks = format!(
        "{FILE_SINK}{}",
        http_sink(
            "es",
            &es.url("/_bulk"),
            "encoding = \"elasticsearch_bulk\"\nindex = \"scimtap-audit\"\nbatch = { max_events = 4, timeout_secs = 5.0 }\nretry = { initial_backoff_secs = 0.05, max_backoff_secs = 0.5 }"
        )
    );
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let bulk = json!({
        "schemas": [BULK_REQUEST],
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "a", "data": {"schemas": [USER], "userName": "a@example.com"}},
            {"method": "POST", "path": "/Users", "bulkId": "b", "data": {"schemas": [USER], "userName": "b@example.com"}},
            {"method": "DELETE", "path": "/Users/u-5"},
            {"method": "PATCH", "path": "/Groups/g-5", "data": {"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": "members[value eq \"u-5\"]"}]}},
        ],
    });
    send(&proxy, "POST", "/scim/v2/Bulk", "items-0", Some(bulk)).await;
    let want = reference_events(&proxy, 4).await;
    let c = wait_counts(&proxy, "es", |c| c.settled() >= 4.0).await;

    let requests = es.requests().await;
    assert_eq!(
        requests.len(),
        2,
        "one bulk request and one retry: {requests:#?}"
    );
    let first = bulk_pairs(&requests[0]);
    assert_eq!(first.len(), 4, "the whole batch first");
    let second = bulk_pairs(&requests[1]);
    assert_eq!(second.len(), 1, "the retry holds only the 429 item");
    assert_eq!(second[0], first[1], "the 429 item, same _id and document");
    let rejected_id = first[2].0["index"]["_id"].as_str().unwrap().to_owned();

    let (docs, duplicates) = es.events().await;
    assert_eq!(duplicates, 0, "no document indexed twice");
    let stripped: Vec<Value> = docs
        .iter()
        .map(|d| {
            let mut d = d.clone();
            d.as_object_mut().unwrap().remove("_id");
            d
        })
        .collect();
    let expected: Vec<Value> = want
        .iter()
        .filter(|e| e["event_id"] != rejected_id.as_str())
        .cloned()
        .collect();
    assert_eq!(expected.len(), 3);
    assert_same_events("bulk after item errors", &stripped, &expected);

    assert_eq!(
        (c.written, c.rejected, c.write_error, c.retried),
        (3.0, 1.0, 0.0, 1.0),
        "{c:?}"
    );
    assert_eq!(c.sends, 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_bulk_request_is_sent_again_and_each_document_is_stored_once() {
    let es = Collector::start(&[]);
    // The collector stores the first request's documents, then answers too late.
    es.control("delay", json!({"ms": 1500, "count": 1})).await;
    let upstream = Upstream::scim().await;
    let sinks = format!(
        "{FILE_SINK}{}",
        http_sink(
            "es",
            &es.url("/scimtap-audit/_bulk"),
            "encoding = \"elasticsearch_bulk\"\nrequest_timeout_secs = 0.5\nbatch = { max_events = 100, timeout_secs = 0.1 }\nretry = { initial_backoff_secs = 0.05, max_backoff_secs = 0.5 }"
        )
    );
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let n = drive(&proxy, "slow").await;
    let want = reference_events(&proxy, n).await;
    let c = wait_counts(&proxy, "es", |c| c.settled() >= n as f64).await;

    let requests = es.requests().await;
    assert!(requests.len() >= 2, "{requests:#?}");
    assert_eq!(
        body(&requests[0]),
        body(&requests[1]),
        "the batch sent again"
    );
    for r in &requests {
        assert_eq!(r["path"], "/scimtap-audit/_bulk");
        for (action, source) in bulk_pairs(r) {
            assert_eq!(action, json!({"index": {"_id": source["event_id"]}}));
        }
    }
    let first_batch = bulk_pairs(&requests[0]).len();
    let (docs, duplicates) = es.events().await;
    assert_eq!(
        duplicates, first_batch as u64,
        "the resent documents overwrote themselves"
    );
    let stripped: Vec<Value> = docs
        .iter()
        .map(|d| {
            let mut d = d.clone();
            let id = d.as_object_mut().unwrap().remove("_id").unwrap();
            assert_eq!(id, d["event_id"]);
            d
        })
        .collect();
    assert_same_events("after a timeout", &stripped, &want);
    assert_eq!(
        (c.written, c.rejected, c.write_error),
        (n as f64, 0.0, 0.0),
        "{c:?}"
    );
    assert!(
        c.write_errors >= 1.0 && c.retried >= first_batch as f64,
        "{c:?}"
    );
    assert!(proxy.log_tail().contains("no answer within"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_batch_is_rejected_once_while_408_and_429_are_retried() {
    let collector = Collector::start(&[]);
    let upstream = Upstream::scim().await;
    let sinks = format!(
        "{FILE_SINK}{}",
        http_sink(
            "strict",
            &collector.url("/ingest"),
            // Retry-After is capped by max_backoff_secs: a 1 h Retry-After waits 0.2 s.
            "batch = { max_events = 100, timeout_secs = 0.05 }\nretry = { initial_backoff_secs = 0.05, max_backoff_secs = 0.2 }"
        )
    );
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));

    collector
        .control("fail", json!({"status": 400, "count": 1}))
        .await;
    send(&proxy, "GET", "/scim/v2/Users/u-1", "refused-0", None).await;
    let c = wait_counts(&proxy, "strict", |c| c.settled() >= 1.0).await;
    assert_eq!((c.written, c.rejected), (0.0, 1.0), "{c:?}");

    collector
        .control(
            "fail",
            json!({"status": 429, "count": 1, "retry_after": 3600}),
        )
        .await;
    send(&proxy, "GET", "/scim/v2/Users/u-2", "refused-1", None).await;
    wait_counts(&proxy, "strict", |c| c.settled() >= 2.0).await;
    collector
        .control("fail", json!({"status": 408, "count": 1}))
        .await;
    send(&proxy, "GET", "/scim/v2/Users/u-3", "refused-2", None).await;
    wait_counts(&proxy, "strict", |c| c.settled() >= 3.0).await;

    // Later batches go through.
    let n = 3 + drive(&proxy, "later").await;
    let want = reference_events(&proxy, n).await;
    let c = wait_counts(&proxy, "strict", |c| c.settled() >= n as f64).await;
    assert_eq!(
        (c.written, c.rejected, c.write_error),
        ((n - 1) as f64, 1.0, 0.0),
        "{c:?}"
    );
    assert_eq!(
        c.retried, 2.0,
        "the 429 and the 408 batch, once each: {c:?}"
    );

    let requests = collector.requests().await;
    let statuses: Vec<u64> = requests
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses[..5], [400, 429, 200, 408, 200], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(c.sends, requests.len() as f64);
    let refused = proxy.event_for("refused-0").await;
    let refused_id = refused["event_id"].as_str().unwrap();
    assert_eq!(
        requests
            .iter()
            .filter(|r| body(r).contains(refused_id))
            .count(),
        1,
        "a refused batch is not sent again"
    );
    let expected: Vec<Value> = want
        .iter()
        .filter(|e| e["event_id"] != refused_id)
        .cloned()
        .collect();
    assert_same_events("after a refusal", &collector.events().await.0, &expected);
    assert!(
        proxy.log_tail().contains("Collector refused the batch"),
        "the refusal is logged:\n{}",
        proxy.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn events_wait_for_a_collector_that_starts_late() {
    let port = closed_port();
    let upstream = Upstream::scim().await;
    let sinks = format!(
        "{FILE_SINK}{}",
        http_sink(
            "late",
            &format!("http://127.0.0.1:{port}/ingest"),
            "connect_timeout_secs = 1.0\nbatch = { max_events = 100, timeout_secs = 0.1 }\nretry = { max_attempts = 200, initial_backoff_secs = 0.05, max_backoff_secs = 0.2 }"
        )
    );
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let n = drive(&proxy, "late").await;
    let want = reference_events(&proxy, n).await;
    // Connection refused, and refused again on a retry.
    let before = wait_counts(&proxy, "late", |c| c.write_errors >= 2.0).await;
    assert_eq!(before.written, 0.0);

    let collector = Collector::start_on(port, &[]);
    let c = wait_counts(&proxy, "late", |c| c.settled() >= n as f64).await;
    assert_eq!(
        (c.written, c.rejected, c.write_error),
        (n as f64, 0.0, 0.0),
        "{c:?}"
    );
    assert!(c.retried >= n as f64, "{c:?}");
    assert_same_events("late collector", &collector.events().await.0, &want);
    assert_eq!(
        collector.requests().await.len() as f64,
        c.sends - c.write_errors
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_collector_every_event_is_counted_as_a_write_error() {
    let port = closed_port();
    let upstream = Upstream::scim().await;
    let sinks = format!(
        "{FILE_SINK}{}",
        http_sink(
            "absent",
            &format!("http://127.0.0.1:{port}/ingest"),
            "batch = { max_events = 4, timeout_secs = 0.05 }\nretry = { max_attempts = 2, initial_backoff_secs = 0.05, max_backoff_secs = 0.1 }"
        )
    );
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let n = drive(&proxy, "absent").await;
    reference_events(&proxy, n).await;
    wait_counts(&proxy, "absent", |c| c.settled() >= n as f64).await;
    // Nothing is counted twice once settled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = counts(&proxy, "absent").await;
    assert_eq!(
        (c.written, c.rejected, c.write_error),
        (0.0, 0.0, n as f64),
        "{c:?}"
    );
    assert_eq!(c.retried, n as f64, "each batch retried once, whole: {c:?}");
    assert!(
        c.write_errors >= 2.0 && c.write_errors % 2.0 == 0.0,
        "two failed attempts per batch: {c:?}"
    );
    assert_eq!(c.sends, c.write_errors);
    assert_eq!(c.queue_depth, 0.0);
    assert_eq!(
        proxy.metric("scimtap_audit_events_encoded_total").await,
        n as f64
    );
    assert!(
        proxy.log_tail().contains("Audit events dropped."),
        "the drop is logged:\n{}",
        proxy.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_secrets_never_reach_the_log_even_at_trace_level() {
    let secrets = tempfile::tempdir().unwrap();
    let right = "hec-right-5b8e1d0c2a";
    let wrong = "hec-wrong-9c71e4f3a2";
    let bearer = "bearer-secret-3e8a6f21d4";
    let api_key = "apikey-secret-a4c2e9b170";
    let down_token = "down-secret-71f0c3b8e5";
    let hec = Collector::start(&["--hec-token", right]);
    let ok = Collector::start(&[]);
    let port = closed_port();
    let common = "batch = { max_events = 100, timeout_secs = 0.05 }\nretry = { max_attempts = 2, initial_backoff_secs = 0.05, max_backoff_secs = 0.1 }";
    let sinks = [
        FILE_SINK.to_owned(),
        // Refused: HEC answers 403 to a wrong token (logged with the answer's body).
        http_sink(
            "hec-wrong",
            &hec.url("/services/collector/event"),
            &format!(
                "encoding = \"splunk_hec\"\ntoken_file = \"{}\"\n{common}",
                secret_file(secrets.path(), "wrong", wrong).display()
            ),
        ),
        // Accepted, with a token and a header from files.
        http_sink(
            "ok",
            &ok.url("/ingest"),
            &format!(
                "token_file = \"{}\"\nheader_files = {{ \"X-Api-Key\" = \"{}\" }}\n{common}",
                secret_file(secrets.path(), "bearer", &format!("{bearer}\n")).display(),
                secret_file(secrets.path(), "key", api_key).display()
            ),
        ),
        // Connection refused, retried, dropped (logged at every attempt).
        http_sink(
            "down",
            &format!("http://127.0.0.1:{port}/ingest"),
            &format!(
                "token_file = \"{}\"\n{common}",
                secret_file(secrets.path(), "down", down_token).display()
            ),
        ),
    ]
    .concat();
    let upstream = Upstream::scim().await;
    let mut proxy = Proxy::start(
        ProxyConfig::new(upstream.url())
            .log_filter("trace")
            .sinks(&sinks),
    );
    let n = drive(&proxy, "secret").await;
    reference_events(&proxy, n).await;
    let wrong_counts = wait_counts(&proxy, "hec-wrong", |c| c.settled() >= n as f64).await;
    assert_eq!(
        wrong_counts.rejected, n as f64,
        "403 refuses: {wrong_counts:?}"
    );
    wait_counts(&proxy, "ok", |c| c.written >= n as f64).await;
    let down = wait_counts(&proxy, "down", |c| c.settled() >= n as f64).await;
    assert_eq!(down.write_error, n as f64);

    // The secrets were really used.
    assert!(hec
        .requests()
        .await
        .iter()
        .all(|r| r["status"] == 403
            && header(r, "authorization") == Some(&format!("Splunk {wrong}"))));
    assert!(ok.requests().await.iter().all(|r| r["status"] == 200
        && header(r, "authorization") == Some(&format!("Bearer {bearer}"))
        && header(r, "x-api-key") == Some(api_key)));

    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert_eq!(proxy.stop(), 0);
    let log = proxy.log.lock().unwrap().join("\n");
    assert!(
        log.contains("Collector refused the batch") && log.contains("Sink write failed."),
        "the failures were logged:\n{log}"
    );
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log level took effect:\n{log}"
    );
    for secret in [wrong, bearer, api_key, down_token] {
        assert!(!log.contains(secret), "{secret} leaked into stderr:\n{log}");
        assert!(!metrics.contains(secret), "{secret} leaked into /metrics");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_whose_batches_are_all_refused_is_not_ready() {
    let secrets = tempfile::tempdir().unwrap();
    let token = secret_file(secrets.path(), "hec.token", "wrong-token");
    let collector = Collector::start(&["--hec-token", "right-token"]);
    let upstream = Upstream::scim().await;
    let sinks = format!(
        "{}{FILE_SINK}",
        http_sink(
            "hec",
            &collector.url("/services/collector/event"),
            &format!(
                "encoding = \"splunk_hec\"\ntoken_file = \"{}\"\nbatch = {{ timeout_secs = 0.05 }}",
                token.display()
            ),
        )
    );
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let sent = drive(&proxy, "refused").await;
    let c = wait_counts(&proxy, "hec", |c| c.rejected >= sent as f64).await;
    assert_eq!(c.written, 0.0);
    assert!(
        c.write_errors >= 1.0,
        "a refused batch is a failed attempt: {c:?}"
    );
    let (status, body) = proxy.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("hec"), "{body}");
    assert!(collector
        .requests()
        .await
        .iter()
        .all(|r| r["status"] == 403));
}
