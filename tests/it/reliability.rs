//! Reliability under load and faults, against the real scimtap binary:
//!
//! - soak: many requests over many keep-alive connections; events = requests, matched one to
//!   one by request id, no duplicates, nothing dropped;
//! - SIGTERM mid-load: every request that got a response (and every one the upstream saw) has
//!   its event, and scimtap exits 0;
//! - SIGKILL mid-load: no torn or merged lines; the loss is only what was still queued in
//!   memory (README, Delivery guarantees), measured and bounded; after a restart the chain
//!   verifies, with the unclean stop reported;
//! - the audit disk full (a 1 MiB tmpfs, or `/dev/full` where mounting is not allowed):
//!   `on_audit_failure = "drop"` keeps traffic flowing and counts every lost event,
//!   `"reject"` refuses SCIM writes with 503 and lets reads pass; lines already written stay
//!   whole and the chain in the file verifies; freeing space lets events flow again;
//! - RSS stays bounded while an HTTP sink's collector is down under steady load.
//!
//! Each has a short version that runs in the normal `cargo test` (seconds) and a long one,
//! `#[ignore]`d, that `scripts/reliability.sh` runs on a release build. Collector outages with
//! memory and disk buffers, SIGKILL with a disk buffer and `reject` with a slow collector are in
//! `delivery.rs`; SIGTERM with in-flight requests and a stdout sink nobody reads in
//! `pipeline.rs`.
//!
//! Every test prints one `RELIABILITY <name> key=value ...` line with its figures, which
//! `scripts/reliability.sh` collects.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

// === the upstream ===

/// A SCIM-ish upstream that records the `X-Request-Id` of every request it answers.
async fn recording_upstream() -> (Upstream, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::with_capacity(1 << 16)));
    let log = seen.clone();
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let log = log.clone();
        async move {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let method = req.method().clone();
            let _ = req.into_body().collect().await;
            log.lock().unwrap().push(id);
            let (status, body) = match method.as_str() {
                "POST" => (
                    201,
                    r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"u1","userName":"soak@example.com","active":true}"#,
                ),
                "DELETE" => (204, ""),
                "GET" => (
                    200,
                    r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":1,"Resources":[{"id":"u1","userName":"soak@example.com"}]}"#,
                ),
                _ => (
                    200,
                    r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"u1","userName":"soak@example.com","active":false}"#,
                ),
            };
            Response::builder()
                .status(status)
                .header("content-type", "application/scim+json")
                .body(full(body))
                .unwrap()
        }
    })
    .await;
    (upstream, seen)
}

// === load ===

/// The n-th request of the mix: Okta-like create, read, filter, deactivate, replace, delete.
/// `pad` adds an `X-Pad` header of that many bytes (0: none).
fn nth_request(addr: SocketAddr, n: usize, id: &str, pad: &str) -> Request<Full<Bytes>> {
    let (method, path, body): (&str, String, String) = match n % 6 {
        0 => (
            "POST",
            "/scim/v2/Users".into(),
            format!(
                r#"{{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"user{n}@example.com","name":{{"givenName":"U","familyName":"{n}"}},"emails":[{{"primary":true,"value":"user{n}@example.com","type":"work"}}],"active":true,"password":"pw-{n}"}}"#
            ),
        ),
        1 => ("GET", format!("/scim/v2/Users/u{n}"), String::new()),
        2 => (
            "GET",
            format!("/scim/v2/Users?filter=userName%20eq%20%22user{n}%40example.com%22&startIndex=1&count=100"),
            String::new(),
        ),
        3 => (
            "PATCH",
            format!("/scim/v2/Users/u{n}"),
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}"#.into(),
        ),
        4 => (
            "PUT",
            format!("/scim/v2/Users/u{n}"),
            format!(r#"{{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"user{n}@example.com","active":true}}"#),
        ),
        _ => ("DELETE", format!("/scim/v2/Groups/g{n}"), String::new()),
    };
    let mut builder = Request::builder();
    if !pad.is_empty() {
        builder = builder.header("x-pad", pad);
    }
    builder
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("x-request-id", id)
        .header("authorization", "Bearer soak-token")
        .header("user-agent", "Okta SCIM Client 1.0.0")
        .header("content-type", "application/scim+json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// When the load stops.
#[derive(Clone)]
enum Until {
    /// After this many requests in all.
    Count(usize),
    /// When the flag turns true, or a connection can no longer be made.
    Flag(Arc<AtomicBool>),
}

#[derive(Default)]
struct LoadReport {
    /// Request ids that got a response, with the status.
    answered: HashMap<String, u16>,
    /// Request ids that were sent (at least partly) but got no response.
    failed: Vec<String>,
    elapsed: Duration,
    /// Slowest single request.
    slowest: Duration,
}

/// `connections` keep-alive HTTP/1.1 connections, each sending one request after the other,
/// request ids `<prefix>-<n>`. A connection that breaks is made again (until `Until::Flag`).
async fn drive(addr: SocketAddr, connections: usize, until: Until, prefix: &str) -> LoadReport {
    drive_with(addr, connections, until, prefix, 0, Duration::ZERO).await
}

/// [`drive`] with an `X-Pad` header of `pad` bytes on every request, and a pause of `pace`
/// after each response on every connection.
async fn drive_with(
    addr: SocketAddr,
    connections: usize,
    until: Until,
    prefix: &str,
    pad: usize,
    pace: Duration,
) -> LoadReport {
    let pad: Arc<str> = "p".repeat(pad).into();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let next = next.clone();
        let until = until.clone();
        let prefix = prefix.to_owned();
        let pad = pad.clone();
        workers.push(tokio::spawn(async move {
            let mut report = LoadReport::default();
            let mut conn: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> = None;
            loop {
                if let Until::Flag(stop) = &until {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                if conn.as_ref().is_none_or(|c| c.is_closed()) {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                            .await
                    else {
                        match until {
                            Until::Flag(_) => break, // scimtap stopped listening
                            Until::Count(_) => panic!("cannot connect to scimtap"),
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let Ok((send, connection)) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
                    else {
                        continue;
                    };
                    tokio::spawn(connection);
                    conn = Some(send);
                }
                let sender = conn.as_mut().unwrap();
                if sender.ready().await.is_err() {
                    conn = None;
                    continue;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if let Until::Count(total) = until {
                    if n >= total {
                        break;
                    }
                }
                let id = format!("{prefix}-{n}");
                let t = Instant::now();
                let result = tokio::time::timeout(
                    Duration::from_secs(60),
                    sender.send_request(nth_request(addr, n, &id, &pad)),
                )
                .await;
                match result {
                    Ok(Ok(resp)) => {
                        let status = resp.status().as_u16();
                        // The response counts once its body is whole.
                        if resp.into_body().collect().await.is_ok() {
                            report.answered.insert(id, status);
                        } else {
                            report.failed.push(id);
                            conn = None;
                        }
                    }
                    _ => {
                        report.failed.push(id);
                        conn = None;
                    }
                }
                report.slowest = report.slowest.max(t.elapsed());
                if !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
            }
            report
        }));
    }
    let mut total = LoadReport::default();
    for w in workers {
        let r = w.await.unwrap();
        total.answered.extend(r.answered);
        total.failed.extend(r.failed);
        total.slowest = total.slowest.max(r.slowest);
    }
    total.elapsed = started.elapsed();
    total
}

// === what scimtap wrote ===

/// The lines of an audit file, read as a stream (a long soak writes hundreds of MB).
#[derive(Default)]
struct Trail {
    /// `request_id` of every event, in file order.
    ids: Vec<String>,
    /// Chain records (`integrity.*`).
    records: usize,
    /// Lines that are not one whole JSON object (torn or merged), with their line number.
    bad: Vec<(usize, String)>,
    /// The file ends in the middle of a line.
    torn_tail: bool,
}

#[derive(serde::Deserialize)]
struct LineHead {
    request_id: Option<String>,
    record: Option<serde::de::IgnoredAny>,
}

fn read_trail(path: &Path) -> Trail {
    let mut trail = Trail::default();
    let Ok(file) = std::fs::File::open(path) else {
        return trail;
    };
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).unwrap() == 0 {
            break;
        }
        number += 1;
        if line.last() != Some(&b'\n') {
            trail.torn_tail = true;
        }
        match serde_json::from_slice::<LineHead>(&line) {
            Ok(head) if head.record.is_some() => trail.records += 1,
            Ok(LineHead {
                request_id: Some(id),
                ..
            }) => trail.ids.push(id),
            _ => trail.bad.push((
                number,
                String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned(),
            )),
        }
    }
    trail
}

/// How often each id occurs.
fn counts(ids: &[String]) -> HashMap<&str, usize> {
    let mut c: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
    for id in ids {
        *c.entry(id.as_str()).or_default() += 1;
    }
    c
}

/// Sum of every series of a metric (all label sets).
async fn metric_sum(proxy: &Proxy, name: &str) -> f64 {
    let (_, text) = proxy.admin_get("/metrics").await;
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples a process's RSS every `every` until dropped.
struct RssSampler {
    samples: Arc<Mutex<Vec<(Duration, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32, every: Duration) -> RssSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !st.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    s.lock().unwrap().push((t0.elapsed(), kib));
                }
                std::thread::sleep(every);
            }
        });
        RssSampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }
    fn finish(mut self) -> Vec<(Duration, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.samples.lock().unwrap().clone()
    }
}

fn max_mib(samples: &[(Duration, u64)]) -> f64 {
    samples.iter().map(|(_, k)| *k).max().unwrap_or(0) as f64 / 1024.0
}

/// Runs `scimtap verify` on `file` with `config` (for the key); returns (exit code, report).
fn verify(config: &Path, file: &Path, allow_open: bool) -> (i32, String) {
    let extra: &[&str] = if allow_open { &["--allow-open"] } else { &[] };
    scimtap_verify(config, &[file], extra)
}

// === soak ===

async fn soak(requests: usize, connections: usize) {
    let (upstream, seen) = recording_upstream().await;
    let mut proxy =
        Proxy::start(ProxyConfig::new(upstream.url()).sinks(
            "[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\nmax_file_bytes = 0\n",
        ));
    let rss = RssSampler::start(proxy.child.id(), Duration::from_millis(500));
    let load = drive(proxy.addr, connections, Until::Count(requests), "soak").await;
    let samples = rss.finish();
    assert!(
        load.failed.is_empty(),
        "{} requests failed, e.g. {:?}; log:\n{}",
        load.failed.len(),
        &load.failed[..load.failed.len().min(5)],
        proxy.log_tail()
    );
    assert_eq!(load.answered.len(), requests);
    let unexpected: Vec<_> = load
        .answered
        .iter()
        .filter(|(_, s)| !matches!(**s, 200 | 201 | 204))
        .take(5)
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");

    let handoff_dropped = metric_sum(&proxy, "scimtap_audit_handoff_dropped_total").await;
    let sink_dropped = metric_sum(&proxy, "scimtap_sink_events_dropped_total").await;
    assert_eq!(proxy.stop(), 0, "clean stop; log:\n{}", proxy.log_tail());

    let trail = read_trail(proxy.audit_path());
    let upstream_seen = seen.lock().unwrap().clone();
    let by_id = counts(&trail.ids);
    let duplicates = by_id.values().filter(|n| **n > 1).count();
    let missing: Vec<&String> = load
        .answered
        .keys()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .collect();
    let strangers = by_id
        .keys()
        .filter(|id| !load.answered.contains_key(**id))
        .count();
    let upstream_dups = upstream_seen.len() - upstream_seen.iter().collect::<HashSet<_>>().len();
    println!(
        "RELIABILITY soak requests={requests} connections={connections} seconds={:.1} rps={:.0} slowest_ms={} events={} duplicates={duplicates} missing={} strangers={strangers} upstream_requests={} upstream_duplicates={upstream_dups} handoff_dropped={handoff_dropped} sink_dropped={sink_dropped} rss_max_mib={:.1}",
        load.elapsed.as_secs_f64(),
        requests as f64 / load.elapsed.as_secs_f64(),
        load.slowest.as_millis(),
        trail.ids.len(),
        missing.len(),
        upstream_seen.len(),
        max_mib(&samples),
    );
    assert!(
        trail.bad.is_empty() && !trail.torn_tail,
        "torn lines: {:?}",
        &trail.bad[..trail.bad.len().min(3)]
    );
    assert_eq!(handoff_dropped, 0.0, "no event dropped at the hand-off");
    assert_eq!(sink_dropped, 0.0, "no event dropped by the sink");
    assert_eq!(duplicates, 0, "no duplicate events");
    assert!(
        missing.is_empty(),
        "{} requests without an event, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(strangers, 0, "events for requests never sent");
    assert_eq!(trail.ids.len(), requests, "events = requests");
    assert_eq!(
        upstream_seen.len(),
        requests,
        "the upstream got every request once"
    );
    assert_eq!(upstream_dups, 0);
    assert!(trail.records >= 2, "the chain's start and stop records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short_5000_requests_over_32_connections() {
    soak(5_000, 32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: scripts/reliability.sh"]
async fn soak_long_200000_requests_over_64_connections() {
    let requests = std::env::var("SCIMTAP_SOAK_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    soak(requests, 64).await;
}

// === SIGTERM mid-load ===

/// Each connection of the SIGTERM and SIGKILL loads waits this long after each response, so the
/// load (a few thousand requests a second) stays within what the audit worker writes: then any
/// loss is the signal's, not a hand-off overflow (those are counted drops, see the soak).
const PACE: Duration = Duration::from_millis(10);

async fn sigterm_mid_load(connections: usize, load_for: Duration) {
    let (upstream, seen) = recording_upstream().await;
    let mut proxy = Proxy::start(
        ProxyConfig::new(upstream.url())
            .shutdown_timeout_secs(20.0)
            .sinks(
                "[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\nmax_file_bytes = 0\n",
            ),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(drive_with(
        proxy.addr,
        connections,
        Until::Flag(stop.clone()),
        "term",
        0,
        PACE,
    ));
    tokio::time::sleep(load_for).await;
    let dropped_before = metric_sum(&proxy, "scimtap_audit_handoff_dropped_total").await;
    let before = upstream.count();
    proxy.signal("TERM");
    // The clients carry on: their next connections are refused, which ends the load.
    let code = tokio::task::spawn_blocking(move || {
        let code = proxy.stop_wait();
        (code, proxy)
    });
    let (code, proxy) = code.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let load = load.await.unwrap();
    assert_eq!(code, 0, "exit 0 after SIGTERM; log:\n{}", proxy.log_tail());
    assert!(
        proxy.log_tail().contains("every queued event was written"),
        "{}",
        proxy.log_tail()
    );

    let trail = read_trail(proxy.audit_path());
    let by_id = counts(&trail.ids);
    let upstream_seen = seen.lock().unwrap().clone();
    let lost_answered: Vec<&String> = load
        .answered
        .keys()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .collect();
    let lost_forwarded: Vec<&String> = upstream_seen
        .iter()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .collect();
    let duplicates = by_id.values().filter(|n| **n > 1).count();
    println!(
        "RELIABILITY sigterm connections={connections} load_seconds={:.1} answered={} failed={} upstream_before_term={before} handoff_dropped_before_term={dropped_before} upstream_requests={} events={} lost_answered={} lost_forwarded={} duplicates={duplicates} exit={code}",
        load_for.as_secs_f64(),
        load.answered.len(),
        load.failed.len(),
        upstream_seen.len(),
        trail.ids.len(),
        lost_answered.len(),
        lost_forwarded.len(),
    );
    assert!(load.answered.len() > 100, "the load must have been running");
    assert_eq!(
        dropped_before, 0.0,
        "the hand-off overflowed before SIGTERM: the load was more than the audit worker writes"
    );
    assert!(trail.bad.is_empty() && !trail.torn_tail);
    assert!(
        lost_answered.is_empty(),
        "answered without an event: {:?}",
        &lost_answered[..lost_answered.len().min(5)]
    );
    assert!(
        lost_forwarded.is_empty(),
        "forwarded without an event: {:?}",
        &lost_forwarded[..lost_forwarded.len().min(5)]
    );
    assert_eq!(duplicates, 0);
    // Requests that failed (their connection was closed under them) have an event only if they
    // reached scimtap; none may have two.
    let (_, report) = verify(
        &proxy.dir.path().join("proxy.toml"),
        proxy.audit_path(),
        false,
    );
    assert!(
        report.contains("OK"),
        "a clean stop closes the chain: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_short_loses_nothing() {
    sigterm_mid_load(32, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: scripts/reliability.sh"]
async fn sigterm_mid_load_long_loses_nothing() {
    sigterm_mid_load(64, Duration::from_secs(30)).await;
}

// === SIGKILL mid-load ===

/// The most a SIGKILL can lose with the default memory queues, beyond exchanges still in
/// flight: the hand-off queue (`audit.queue_max_events`, 8192), the sink's queue
/// (`buffer.max_events`, 4096) and the batch being written (`batch.max_events`, 512).
const SIGKILL_LOSS_BOUND: usize = 8192 + 4096 + 512;

async fn sigkill_mid_load(connections: usize, load_for: Duration) {
    let (upstream, seen) = recording_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = ProxyConfig::new(upstream.url()).sinks(&format!(
        "[[sinks]]\ntype = \"file\"\npath = \"{}\"\nmax_file_bytes = 0\n",
        audit.display()
    ));
    let proxy = Proxy::start(config.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(drive_with(
        proxy.addr,
        connections,
        Until::Flag(stop.clone()),
        "kill",
        0,
        PACE,
    ));
    tokio::time::sleep(load_for).await;
    // Where events are at the moment of the kill (read just before it, under load).
    let (_, metrics) = proxy.admin_get("/metrics").await;
    proxy.signal("KILL");
    stop.store(true, Ordering::Relaxed);
    let load = load.await.unwrap();
    let at_kill = |series: &str| metric_value(&metrics, series);
    let handoff_depth = at_kill("scimtap_audit_handoff_queue_depth");
    let sink_depth = at_kill("scimtap_sink_queue_depth{sink=\"file\"}");
    let handoff_dropped: f64 = ["queue_full", "shutdown"]
        .iter()
        .map(|r| {
            at_kill(&format!(
                "scimtap_audit_handoff_dropped_total{{reason=\"{r}\"}}"
            ))
        })
        .sum();
    let written_at_kill = at_kill("scimtap_sink_events_written_total{sink=\"file\"}");
    let mut proxy = proxy;
    let code = proxy.stop_wait();

    let trail = read_trail(&audit);
    let by_id = counts(&trail.ids);
    let upstream_seen = seen.lock().unwrap().clone();
    let lost_answered = load
        .answered
        .keys()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .count();
    let lost_forwarded = upstream_seen
        .iter()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .count();
    let duplicates = by_id.values().filter(|n| **n > 1).count();
    let forwarded: HashSet<&str> = upstream_seen.iter().map(String::as_str).collect();
    let strangers = by_id.keys().filter(|id| !forwarded.contains(**id)).count();

    // Restart on the same file: the chain continues and says the last stop was unclean.
    let mut second = Proxy::start(config.clone());
    for n in 0..3 {
        let resp = http1_client()
            .request(
                Request::get(second.url(&format!("/scim/v2/Users/after-kill-{n}")))
                    .header("x-request-id", format!("after-kill-{n}"))
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(second.stop(), 0);
    let (verified, report) = verify(&second.dir.path().join("proxy.toml"), &audit, false);
    println!(
        "RELIABILITY sigkill connections={connections} load_seconds={:.1} answered={} upstream_requests={} events={} lost_answered={lost_answered} lost_forwarded={lost_forwarded} bound={SIGKILL_LOSS_BOUND} at_kill_handoff_depth={handoff_depth} at_kill_sink_depth={sink_depth} at_kill_handoff_dropped={handoff_dropped} at_kill_written={written_at_kill} duplicates={duplicates} strangers={strangers} torn_lines={} torn_tail={} exit={code} verify_exit={verified}",
        load_for.as_secs_f64(),
        load.answered.len(),
        upstream_seen.len(),
        trail.ids.len(),
        trail.bad.len(),
        trail.torn_tail,
    );
    println!(
        "RELIABILITY sigkill verify: {}",
        report.trim().replace('\n', " | ")
    );
    assert!(load.answered.len() > 100, "the load must have been running");
    assert!(
        trail.bad.is_empty(),
        "torn or merged lines: {:?}",
        trail.bad
    );
    assert!(
        !trail.torn_tail,
        "the killed run left half a line at the end"
    );
    assert_eq!(duplicates, 0);
    assert_eq!(
        strangers, 0,
        "an event for a request the upstream never saw"
    );
    // Lost = dropped and counted before the kill (none at this pace) + what the queues held
    // + exchanges still in flight (one per connection).
    assert!(
        lost_forwarded as f64 <= handoff_dropped + (SIGKILL_LOSS_BOUND + connections) as f64,
        "{lost_forwarded} events lost, more than the queues hold"
    );
    assert_eq!(verified, 0, "{report}");
    assert!(
        report.contains("unclean"),
        "the restart reports the unclean stop: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_short_loses_only_what_was_queued() {
    sigkill_mid_load(32, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: scripts/reliability.sh"]
async fn sigkill_mid_load_long_loses_only_what_was_queued() {
    sigkill_mid_load(64, Duration::from_secs(30)).await;
}

// === the audit disk full ===

/// A 1 MiB tmpfs, unmounted on drop; `None` when mounting is not allowed (not root, or no
/// CAP_SYS_ADMIN in a container).
struct SmallDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs"])
            .arg(&mount)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { mount, _dir: dir })
    }

    /// Fills the disk with a file until a write fails with ENOSPC.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.mount.join("filler")).unwrap();
        let block = vec![0xAAu8; 4096];
        while filler.write_all(&block).is_ok() {}
        let _ = filler.flush();
    }

    fn free_space(&self) {
        let _ = std::fs::remove_file(self.mount.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .status();
    }
}

/// Sends `n` creates with `concurrency` in flight; returns the statuses by request id.
async fn creates(
    proxy: &Proxy,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> HashMap<String, u16> {
    let client = http1_client();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, url, prefix) = (
            client.clone(),
            next.clone(),
            proxy.url("/scim/v2/Users"),
            prefix.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = HashMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                let id = format!("{prefix}-{i}");
                let req = Request::post(&url)
                    .header("x-request-id", &id)
                    .header("content-type", "application/scim+json")
                    .body(full(format!(
                        r#"{{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"{id}@example.com","active":true}}"#
                    )))
                    .unwrap();
                let resp = tokio::time::timeout(WAIT, client.request(req))
                    .await
                    .expect("answered in time")
                    .expect("answered");
                out.insert(id, resp.status().as_u16());
                resp.into_body().collect().await.unwrap();
            }
        }));
    }
    let mut all = HashMap::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Waits until the metric stops changing for 500 ms; returns its value.
async fn settled(proxy: &Proxy, name: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = metric_sum(proxy, name).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = metric_sum(proxy, name).await;
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// The file sink of these tests: small batches, few quick retries, a small queue.
fn disk_full_sink(path: &Path) -> String {
    format!(
        "[[sinks]]\nname = \"trail\"\ntype = \"file\"\npath = \"{}\"\nmax_file_bytes = 0\nbuffer = {{ type = \"memory\", max_events = 16 }}\nbatch = {{ max_events = 8 }}\nretry = {{ max_attempts = 3, initial_backoff_secs = 0.01, max_backoff_secs = 0.05 }}\n",
        path.display()
    )
}

/// Every line whole, and the bytes written before the disk filled are still there unchanged.
fn assert_written_lines_intact(path: &Path, before: &[u8]) -> Trail {
    let now = std::fs::read(path).unwrap_or_default();
    assert!(
        now.starts_with(before),
        "lines written before the disk filled were changed ({} bytes before, {} now)",
        before.len(),
        now.len()
    );
    let trail = read_trail(path);
    assert!(
        trail.bad.is_empty(),
        "torn or merged lines: {:?}",
        trail.bad
    );
    assert!(!trail.torn_tail, "half a line at the end of the file");
    trail
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_disk_full_drop_keeps_traffic_flowing_and_counts_every_loss() {
    let (upstream, seen) = recording_upstream().await;
    let Some(disk) = SmallDisk::mount() else {
        // Without mount rights only /dev/full is left: every write fails from the start.
        eprintln!("cannot mount a tmpfs (not root?): using /dev/full");
        return disk_full_on_dev_full("drop").await;
    };
    let path = disk.mount.join("audit.jsonl");
    let mut proxy = Proxy::start(
        ProxyConfig::new(upstream.url())
            .top("[audit]\non_audit_failure = \"drop\"\n")
            .sinks(&disk_full_sink(&path)),
    );
    // Room for a few dozen events, then full.
    let first = creates(&proxy, "fits", 10, 2).await;
    let deadline = Instant::now() + WAIT;
    while read_trail(&path).ids.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "the first events were not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written_before = std::fs::read(&path).unwrap();
    disk.fill();
    let full = creates(&proxy, "full", 600, 8).await;
    assert!(
        first.values().chain(full.values()).all(|s| *s == 201),
        "with drop, every write passes"
    );
    assert_eq!(seen.lock().unwrap().len(), 610);
    let encoded = settled(&proxy, "scimtap_audit_events_encoded_total").await;
    let dropped = settled(&proxy, "scimtap_sink_events_dropped_total").await;
    let handoff = metric_sum(&proxy, "scimtap_audit_handoff_dropped_total").await;
    let errors = metric_sum(&proxy, "scimtap_sink_write_errors_total").await;
    let queued = metric_sum(&proxy, "scimtap_sink_queue_depth").await;
    let trail = assert_written_lines_intact(&path, &written_before);
    let (code, report) = verify(&proxy.dir.path().join("proxy.toml"), &path, true);
    println!(
        "RELIABILITY disk_full_drop medium=tmpfs-1MiB requests=610 answered_201=610 events_in_file={} encoded={encoded} sink_dropped={dropped} handoff_dropped={handoff} write_errors={errors} queued={queued} verify_exit={code}",
        trail.ids.len()
    );
    println!(
        "RELIABILITY disk_full_drop verify: {}",
        report.trim().replace('\n', " | ")
    );
    assert!(
        errors > 0.0 && dropped > 0.0,
        "the full disk must have failed writes"
    );
    // Each event: in the file, dropped and counted, or still queued. Chain records written
    // to the file count as encoded lines too.
    assert_eq!(
        trail.ids.len() as f64 + dropped + queued,
        encoded,
        "written + dropped + queued = encoded"
    );

    // Space again: events flow again.
    disk.free_space();
    let after = creates(&proxy, "after", 5, 1).await;
    assert!(after.values().all(|s| *s == 201));
    let deadline = Instant::now() + WAIT;
    while !read_trail(&path).ids.iter().any(|id| id == "after-4") {
        assert!(
            Instant::now() < deadline,
            "events did not resume after the disk was freed; log:\n{}",
            proxy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(proxy.stop(), 0);
    assert_written_lines_intact(&path, &written_before);
    let (code, report) = verify(&proxy.dir.path().join("proxy.toml"), &path, false);
    println!(
        "RELIABILITY disk_full_drop verify_after_stop_exit={code}: {}",
        report.trim().replace('\n', " | ")
    );
    // The events dropped while the disk was full are a gap in the chain: verify must say so
    // (deleted records), never that a written line was edited or torn.
    assert!(matches!(code, 0 | 11), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_disk_full_reject_refuses_writes_and_reads_pass() {
    let (upstream, seen) = recording_upstream().await;
    let Some(disk) = SmallDisk::mount() else {
        eprintln!("cannot mount a tmpfs (not root?): using /dev/full");
        return disk_full_on_dev_full("reject").await;
    };
    let path = disk.mount.join("audit.jsonl");
    let mut proxy = Proxy::start(
        ProxyConfig::new(upstream.url())
            .top("[audit]\non_audit_failure = \"reject\"\nqueue_max_events = 16\n")
            .sinks(&disk_full_sink(&path)),
    );
    let first = creates(&proxy, "fits", 10, 2).await;
    assert!(first.values().all(|s| *s == 201));
    let deadline = Instant::now() + WAIT;
    while read_trail(&path).ids.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "the first events were not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written_before = std::fs::read(&path).unwrap();
    disk.fill();
    let statuses = creates(&proxy, "full", 300, 4).await;
    let refused = statuses.values().filter(|s| **s == 503).count();
    let passed = statuses.values().filter(|s| **s == 201).count();
    assert_eq!(
        refused + passed,
        statuses.len(),
        "only 201 or 503: {statuses:?}"
    );
    assert!(refused > 0, "writes must be refused once the trail is full");
    let forwarded: HashSet<String> = seen.lock().unwrap().iter().cloned().collect();
    for (id, status) in &statuses {
        assert_eq!(
            forwarded.contains(id),
            *status == 201,
            "{id}: a refused write never reaches the upstream"
        );
    }
    // A refused write says why and when to come back.
    let resp = http1_client()
        .request(
            Request::post(proxy.url("/scim/v2/Users"))
                .header("x-request-id", "refused-check")
                .body(full("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("urn:ietf:params:scim:api:messages:2.0:Error"));
    // Reads pass.
    let resp = http1_client()
        .request(
            Request::get(proxy.url("/scim/v2/Users?filter=userName%20eq%20%22x%22"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let counted = metric_sum(&proxy, "scimtap_audit_refused_requests_total").await;
    assert!(
        counted >= refused as f64 + 1.0,
        "{counted} refusals counted, {refused} seen"
    );
    let trail = assert_written_lines_intact(&path, &written_before);
    let (code, report) = verify(&proxy.dir.path().join("proxy.toml"), &path, true);
    println!(
        "RELIABILITY disk_full_reject medium=tmpfs-1MiB writes=300 passed={passed} refused_503={refused} refusals_counted={counted} events_in_file={} verify_exit={code}",
        trail.ids.len()
    );

    // Space again: writes pass again.
    disk.free_space();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statuses = creates(&proxy, "recovered", 1, 1).await;
        if statuses.values().all(|s| *s == 201) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes never resumed; log:\n{}",
            proxy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(proxy.stop(), 0);
    assert_written_lines_intact(&path, &written_before);
    assert_eq!(
        code, 0,
        "the lines written before the disk filled verify: {report}"
    );
    // The refusals' own events could not be written either: a gap the chain shows as deleted
    // records, never as an edited or torn line.
    let (code, report) = verify(&proxy.dir.path().join("proxy.toml"), &path, false);
    println!(
        "RELIABILITY disk_full_reject verify_after_stop_exit={code}: {}",
        report.trim().replace('\n', " | ")
    );
    assert!(matches!(code, 0 | 11), "{report}");
}

/// Fallback without mount rights: the audit file is `/dev/full`, so every write fails. Nothing
/// is ever written, so only the policy can be checked.
async fn disk_full_on_dev_full(policy: &str) {
    let (upstream, seen) = recording_upstream().await;
    let proxy = Proxy::start(
        ProxyConfig::new(upstream.url())
            .top(&format!(
                "[audit]\non_audit_failure = \"{policy}\"\nqueue_max_events = 16\n"
            ))
            .sinks(&disk_full_sink(Path::new("/dev/full"))),
    );
    let statuses = creates(&proxy, "devfull", 200, 4).await;
    let refused = statuses.values().filter(|s| **s == 503).count();
    println!("RELIABILITY disk_full_{policy} medium=/dev/full writes=200 refused_503={refused} forwarded={}", seen.lock().unwrap().len());
    if policy == "drop" {
        assert_eq!(refused, 0);
        assert!(settled(&proxy, "scimtap_sink_events_dropped_total").await > 0.0);
    } else {
        assert!(refused > 0);
        assert_eq!(seen.lock().unwrap().len(), 200 - refused);
    }
}

// === RSS during a sink outage ===

/// What an outage run measured.
struct Outage {
    requests: usize,
    start_kib: u64,
    samples: Vec<(Duration, u64)>,
    /// When (from the first sample) the hand-off queue first overflowed: every queue full.
    full_at: Duration,
}

impl Outage {
    fn max_kib(&self) -> u64 {
        self.samples.iter().map(|(_, k)| *k).max().unwrap_or(0)
    }
    fn growth_mib(&self) -> f64 {
        self.max_kib().saturating_sub(self.start_kib) as f64 / 1024.0
    }
    /// RSS once the queues had been full for 2 s (the first such sample), and the highest
    /// RSS after it.
    fn steady_kib(&self) -> (u64, u64) {
        let settle = self.full_at + Duration::from_secs(2);
        let steady: Vec<u64> = self
            .samples
            .iter()
            .filter(|(t, _)| *t >= settle)
            .map(|(_, k)| *k)
            .collect();
        (
            steady.first().copied().unwrap_or(0),
            steady.iter().copied().max().unwrap_or(0),
        )
    }
}

/// Steady load while the HTTP sink's collector is down (connection refused), with the default
/// memory queues: until the queues are full (the hand-off queue overflows), then `duration`
/// more. Samples scimtap's RSS every second. The collector's sink blocks for as long as it may
/// (`block_timeout_ms = 600000`), so that every queue fills: the most memory scimtap can hold
/// (with the default 250 ms the stalled sink would drop its own overflow instead).
async fn outage(name: &str, duration: Duration, connections: usize, pad: usize) -> Outage {
    let (upstream, _seen) = recording_upstream().await;
    let sinks = format!(
        "[[sinks]]\nname = \"collector\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{}/ingest\"\nconnect_timeout_secs = 1\nblock_timeout_ms = 600000\n\n[[sinks]]\nname = \"trail\"\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\nmax_file_bytes = 0\n",
        closed_port()
    );
    let mut proxy = Proxy::start(
        ProxyConfig::new(upstream.url())
            .shutdown_timeout_secs(3.0)
            .sinks(&sinks),
    );
    let pid = proxy.child.id();
    let start_kib = rss_kib(pid).unwrap();
    let rss = RssSampler::start(pid, Duration::from_secs(1));
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(drive_with(
        proxy.addr,
        connections,
        Until::Flag(stop.clone()),
        "rss",
        pad,
        Duration::ZERO,
    ));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    while metric_sum(&proxy, "scimtap_audit_handoff_dropped_total").await == 0.0 {
        assert!(Instant::now() < deadline, "the queues never filled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let full_at = started.elapsed();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let load = load.await.unwrap();
    let samples = rss.finish();
    let handoff = metric_sum(&proxy, "scimtap_audit_handoff_dropped_total").await;
    let sink_dropped = metric_sum(&proxy, "scimtap_sink_events_dropped_total").await;
    let errors = metric_sum(&proxy, "scimtap_sink_write_errors_total").await;
    let (_, ready) = proxy.admin_get("/readyz").await;
    // The collector is still down: the stop gives up on its memory queue at the deadline.
    let code = proxy.stop();
    let run = Outage {
        requests: load.answered.len(),
        start_kib,
        samples,
        full_at,
    };
    let (first, second) = run.steady_kib();
    println!(
        "RELIABILITY {name} seconds={} queues_full_after_s={:.1} connections={connections} request_head_pad={pad} requests={} failed={} rss_start_mib={:.1} rss_max_mib={:.1} rss_growth_mib={:.1} steady_start_mib={:.1} steady_max_mib={:.1} handoff_dropped={handoff} sink_dropped={sink_dropped} write_errors={errors} readyz={:?} stop_exit={code}",
        duration.as_secs(),
        full_at.as_secs_f64(),
        run.requests,
        load.failed.len(),
        start_kib as f64 / 1024.0,
        run.max_kib() as f64 / 1024.0,
        run.growth_mib(),
        first as f64 / 1024.0,
        second as f64 / 1024.0,
        ready.trim(),
    );
    let trace: Vec<String> = run
        .samples
        .iter()
        .step_by((run.samples.len() / 30).max(1))
        .map(|(t, k)| format!("{}s:{}M", t.as_secs(), k / 1024))
        .collect();
    println!("RELIABILITY {name} trace {}", trace.join(" "));
    assert!(load.failed.is_empty(), "requests failed during the outage");
    assert!(run.requests > 1000, "the load must have been running");
    assert!(
        errors > 0.0,
        "the collector was down: sends must have failed"
    );
    assert!(
        handoff > 0.0,
        "the queues must have filled (else this proves nothing)"
    );
    assert!(ready.contains("not ready"), "{ready}");
    run
}

/// Growth allowed with the default queues full: the hand-off queue (8192 exchanges) and the
/// collector's queue (4096 events). Measured +107 MiB with the system allocator and +169 to
/// +178 MiB with mimalloc (debug and release builds alike). Reaching 64 MiB would need the fix
/// described at `rss_does_not_grow_with_the_size_of_request_heads`.
const RSS_GROWTH_BOUND_MIB: f64 = 256.0;

/// Growth allowed once the queues are full: allocator noise, not a trend.
const RSS_STEADY_SLACK_MIB: u64 = 32;

async fn rss_bounded(name: &str, duration: Duration, connections: usize) {
    let run = outage(name, duration, connections, 0).await;
    assert!(
        run.growth_mib() < RSS_GROWTH_BOUND_MIB,
        "RSS grew by {:.1} MiB",
        run.growth_mib()
    );
    // Bounded, not merely slow: once the queues are full, RSS stays where it is.
    let (steady_start, steady_max) = run.steady_kib();
    assert!(steady_start > 0, "no sample after the queues filled");
    assert!(
        steady_max < steady_start + RSS_STEADY_SLACK_MIB * 1024,
        "RSS still growing with the queues full: {} MiB, then up to {} MiB",
        steady_start / 1024,
        steady_max / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_stays_bounded_during_a_20_second_sink_outage() {
    rss_bounded("rss_outage", Duration::from_secs(20), 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: scripts/reliability.sh"]
async fn rss_long_stays_bounded_during_a_5_minute_sink_outage() {
    rss_bounded("rss_outage_long", Duration::from_secs(300), 32).await;
}

/// README: captured bytes are capped by `capture.max_pending_bytes`, and "memory stays bounded
/// even when a sink stalls and the queues fill". But each exchange waiting in the hand-off queue
/// also keeps its request `HeaderMap` (src/proxy.rs, `RequestHead { headers:
/// parts.headers.clone() }`), whose values are `Bytes` slices of hyper's connection read buffer,
/// so the whole buffer allocation (8 KiB, growing to `max_header_bytes` for large heads) stays
/// pinned per queued exchange, outside any budget. Measured with default queues and the system
/// allocator: about 14 KiB per queued exchange with small heads (RSS +107 MiB), 63 KiB with a
/// 40 KB header (RSS +428 MiB); with mimalloc +178 MiB and +638 MiB.
/// Fix: copy the header values the event needs (or `HeaderValue::from_bytes` copies) instead of
/// cloning the map; likewise for the response head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_does_not_grow_with_the_size_of_request_heads() {
    let small = outage("rss_small_heads", Duration::from_secs(10), 16, 0).await;
    let large = outage("rss_40kb_heads", Duration::from_secs(10), 16, 40_000).await;
    assert!(
        large.growth_mib() < small.growth_mib() + 32.0,
        "RSS grew by {:.0} MiB with 40 KB request heads, {:.0} MiB with small ones",
        large.growth_mib(),
        small.growth_mib()
    );
}
