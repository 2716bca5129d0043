//! The `kafka` sink against a real Kafka-protocol broker (`tansu`, in-memory storage), read
//! back by an independent consumer (kafka-python, tests/peer/kafka_consume.py): every event the
//! file sink wrote arrives exactly once, as the same JSON, keyed by the SCIM resource id, on
//! the partition the Java client's murmur2 partitioner picks, in order per resource; every
//! compression is readable; and events sent while the broker is down arrive once it is up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use crate::support::peers;
use crate::support::tansu::{Consumed, Tansu};
use crate::support::*;
use http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// For each user in turn, phase by phase (so events about different users interleave):
/// create, two patches, delete. Returns how many requests were sent.
async fn send_lifecycles(proxy: &Proxy, users: &[&str]) -> usize {
    let client = http1_client();
    let mut sent = 0;
    for phase in 0..4 {
        for user in users {
            let id = format!("id-{user}");
            let req = match phase {
                0 => Request::post(proxy.url("/scim/v2/Users"))
                    .header("content-type", "application/scim+json")
                    .body(full(
                        json!({"schemas": [USER], "userName": user}).to_string(),
                    )),
                1 | 2 => Request::patch(proxy.url(&format!("/scim/v2/Users/{id}")))
                    .header("content-type", "application/scim+json")
                    .body(full(
                        json!({
                            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                            "Operations": [{"op": "replace", "path": "active", "value": phase == 1}]
                        })
                        .to_string(),
                    )),
                _ => Request::delete(proxy.url(&format!("/scim/v2/Users/{id}"))).body(empty()),
            }
            .unwrap();
            let resp = client.request(req).await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.into_body().collect().await.unwrap();
            sent += 1;
        }
    }
    sent
}

fn kafka_sink(name: &str, bootstrap: &str, topic: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\ntype = \"kafka\"\nname = \"{name}\"\nbrokers = [\"{bootstrap}\"]\ntopic = \"{topic}\"\nbatch = {{ timeout_secs = 0.2 }}\n{extra}\n"
    )
}

const FILE_SINK: &str = "[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\n";

fn event_id(event: &Value) -> String {
    event["event_id"].as_str().unwrap().to_owned()
}

/// Checks that `records` hold exactly `written` (the file sink's events, in order): each event
/// once, as the same JSON, keyed by its resource id, stamped with its time, on the partition
/// murmur2 picks, and in the file's order per key.
fn assert_delivered(records: &[Consumed], written: &[Value], partitions: i32) {
    assert_eq!(
        records.len(),
        written.len(),
        "one record per event, no duplicates: {records:#?}"
    );
    let by_id: BTreeMap<String, &Consumed> = records
        .iter()
        .map(|r| (r.headers["event_id"].clone(), r))
        .collect();
    assert_eq!(
        by_id.keys().cloned().collect::<BTreeSet<_>>(),
        written.iter().map(event_id).collect::<BTreeSet<_>>(),
        "the event_id headers are the file sink's event ids, each once"
    );
    for event in written {
        let record = by_id[&event_id(event)];
        let value: Value = serde_json::from_str(record.value.as_deref().unwrap()).unwrap();
        assert_eq!(&value, event, "the value is the event's JSON");
        assert!(
            !record.value.as_deref().unwrap().ends_with('\n'),
            "no newline in the value"
        );
        let resource = event["scim"]["target"]["id"].as_str().unwrap();
        assert_eq!(
            record.key.as_deref(),
            Some(resource),
            "keyed by resource id"
        );
        let millis = humantime::parse_rfc3339(event["timestamp"].as_str().unwrap())
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert_eq!(record.timestamp, millis, "record time = event time");
        assert_eq!(record.partitions, partitions);
        assert_eq!(
            Some(record.partition),
            record.murmur2_partition,
            "key {resource} is where the Java client's partitioner puts it"
        );
    }
    // Per key: one partition, and the file's order by offset.
    let mut per_key: BTreeMap<&str, Vec<&Consumed>> = BTreeMap::new();
    for r in records {
        per_key
            .entry(r.key.as_deref().unwrap())
            .or_default()
            .push(r);
    }
    for (key, mut recs) in per_key {
        let parts: BTreeSet<i32> = recs.iter().map(|r| r.partition).collect();
        assert_eq!(parts.len(), 1, "all events of {key} on one partition");
        recs.sort_by_key(|r| r.offset);
        let got: Vec<&str> = recs
            .iter()
            .map(|r| r.headers["event_id"].as_str())
            .collect();
        let want: Vec<String> = written
            .iter()
            .filter(|e| e["scim"]["target"]["id"] == key)
            .map(event_id)
            .collect();
        assert_eq!(got, want, "events of {key} in order");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tansu_gets_every_event_once_keyed_by_resource_id_in_order_per_partition() {
    let Some(bin) = peers::require("tansu") else {
        return;
    };
    let tansu = Tansu::start(&bin);
    tansu.create_topic("scim-audit", 3);
    let upstream = Upstream::scim().await;
    let sinks = format!(
        "{FILE_SINK}{}",
        kafka_sink("kafka", &tansu.bootstrap(), "scim-audit", "")
    );
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let users = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let n = send_lifecycles(&proxy, &users).await;
    assert_eq!(n, 24);
    let written = proxy.wait_for_events(n).await;
    let records = tansu.consume("scim-audit", n, Duration::from_secs(60));
    assert_delivered(&records, &written, 3);
    let keys: BTreeSet<&str> = records.iter().filter_map(|r| r.key.as_deref()).collect();
    let expected: BTreeSet<String> = users.iter().map(|u| format!("id-{u}")).collect();
    assert_eq!(
        keys,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    let used: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    assert!(used.len() > 1, "six keys spread over partitions: {used:?}");
    assert_eq!(
        proxy
            .wait_for_metric(
                "scimtap_sink_events_written_total{sink=\"kafka\"}",
                n as f64,
                WAIT
            )
            .await,
        n as f64
    );
    assert_eq!(
        proxy
            .metric("scimtap_sink_write_errors_total{sink=\"kafka\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_compression_is_read_back_by_an_independent_consumer() {
    let Some(bin) = peers::require("tansu") else {
        return;
    };
    let tansu = Tansu::start(&bin);
    let codecs = ["none", "gzip", "lz4", "snappy", "zstd"];
    let mut sinks = FILE_SINK.to_owned();
    for codec in codecs {
        let topic = format!("audit-{codec}");
        tansu.create_topic(&topic, 2);
        sinks.push_str(&kafka_sink(
            &format!("kafka-{codec}"),
            &tansu.bootstrap(),
            &topic,
            &format!("compression = \"{codec}\""),
        ));
    }
    let upstream = Upstream::scim().await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let n = send_lifecycles(&proxy, &["grace", "heidi", "ivan"]).await;
    let written = proxy.wait_for_events(n).await;
    for codec in codecs {
        let records = tansu.consume(&format!("audit-{codec}"), n, Duration::from_secs(60));
        assert_delivered(&records, &written, 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_sent_while_the_broker_is_down_arrive_once_it_is_up() {
    let Some(bin) = peers::require("tansu") else {
        return;
    };
    let port = closed_port();
    let upstream = Upstream::scim().await;
    let sinks = format!(
        "{FILE_SINK}{}",
        kafka_sink(
            "kafka",
            &format!("127.0.0.1:{port}"),
            "late",
            "retry = { max_attempts = 50, initial_backoff_secs = 0.1, max_backoff_secs = 1 }",
        )
    );
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let n = send_lifecycles(&proxy, &["judy", "mallory", "oscar"]).await;
    let written = proxy.wait_for_events(n).await;
    // The sink has tried, and failed, before the broker exists.
    proxy
        .wait_for_metric("scimtap_sink_write_errors_total{sink=\"kafka\"}", 2.0, WAIT)
        .await;
    assert_eq!(
        proxy
            .metric("scimtap_sink_events_written_total{sink=\"kafka\"}")
            .await,
        0.0
    );
    let tansu = Tansu::start_on(&bin, port);
    tansu.create_topic("late", 3);
    let records = tansu.consume("late", n, Duration::from_secs(60));
    assert_delivered(&records, &written, 3);
    proxy
        .wait_for_metric(
            "scimtap_sink_events_written_total{sink=\"kafka\"}",
            n as f64,
            WAIT,
        )
        .await;
    assert!(
        proxy
            .metric("scimtap_sink_events_retried_total{sink=\"kafka\"}")
            .await
            > 0.0
    );
    assert_eq!(
        proxy
            .metric("scimtap_sink_events_dropped_total{sink=\"kafka\",reason=\"write_error\"}")
            .await,
        0.0,
        "nothing given up; log:\n{}",
        proxy.log_tail()
    );
}

/// A TLS terminator on 127.0.0.1 forwarding each connection to `backend` in the clear. It
/// stands in for a broker's own TLS listener, which tansu 0.6's CLI cannot enable (`--cert`
/// and `--key` share one clap group, so giving both is refused).
async fn tls_terminator(
    tls: std::sync::Arc<rustls::ServerConfig>,
    backend: u16,
) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_trusting_the_configured_ca_delivers_and_an_unknown_ca_is_refused() {
    let Some(bin) = peers::require("tansu") else {
        return;
    };
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = pki.write(dir.path());
    let plain = closed_port();
    let (tls_port, terminator) = tls_terminator(pki.server_config(), plain).await;
    // Metadata sends every client to the TLS port.
    let tansu = Tansu::start_advertising(&bin, plain, tls_port);
    tansu.create_topic("tls-audit", 3);
    tansu.create_topic("tls-untrusted", 1);
    let bootstrap = format!("127.0.0.1:{tls_port}");
    let sinks = format!(
        "{FILE_SINK}{}{}",
        kafka_sink(
            "kafka-tls",
            &bootstrap,
            "tls-audit",
            &format!("tls = true\ntls_ca_file = \"{}\"", ca.display()),
        ),
        // Web roots only: the test CA is unknown, so the handshake must fail.
        kafka_sink(
            "kafka-untrusted",
            &bootstrap,
            "tls-untrusted",
            "tls = true\nretry = { max_attempts = 2, initial_backoff_secs = 0.1, max_backoff_secs = 0.1 }",
        ),
    );
    let upstream = Upstream::scim().await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let n = send_lifecycles(&proxy, &["peggy", "rupert"]).await;
    let written = proxy.wait_for_events(n).await;
    let records = crate::support::tansu::consume(
        &bootstrap,
        Some(&ca),
        "tls-audit",
        n,
        Duration::from_secs(60),
        &tansu.log(),
    );
    assert_delivered(&records, &written, 3);
    proxy
        .wait_for_metric(
            "scimtap_sink_events_dropped_total{sink=\"kafka-untrusted\",reason=\"write_error\"}",
            n as f64,
            WAIT,
        )
        .await;
    assert_eq!(
        proxy
            .metric("scimtap_sink_events_written_total{sink=\"kafka-untrusted\"}")
            .await,
        0.0
    );
    assert!(
        proxy
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("sink=kafka-untrusted") && l.contains("UnknownIssuer")),
        "the untrusted sink failed on the certificate:\n{}",
        proxy.log_tail()
    );
    terminator.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_is_survived_by_reconnecting() {
    let Some(bin) = peers::require("tansu") else {
        return;
    };
    let first = Tansu::start(&bin);
    let port = first.port;
    first.create_topic("restart", 3);
    let upstream = Upstream::scim().await;
    let sinks = format!(
        "{FILE_SINK}{}",
        kafka_sink(
            "kafka",
            &first.bootstrap(),
            "restart",
            "retry = { max_attempts = 50, initial_backoff_secs = 0.1, max_backoff_secs = 1 }",
        )
    );
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let before = send_lifecycles(&proxy, &["trent"]).await;
    let written = proxy.wait_for_events(before).await;
    assert_delivered(
        &first.consume("restart", before, Duration::from_secs(60)),
        &written,
        3,
    );
    proxy
        .wait_for_metric(
            "scimtap_sink_events_written_total{sink=\"kafka\"}",
            before as f64,
            WAIT,
        )
        .await;
    // The broker goes away (with its in-memory topic); the sink's connections go stale.
    drop(first);
    let after = send_lifecycles(&proxy, &["victor", "walter"]).await;
    let written = proxy.wait_for_events(before + after).await;
    proxy
        .wait_for_metric("scimtap_sink_write_errors_total{sink=\"kafka\"}", 1.0, WAIT)
        .await;
    let second = Tansu::start_on(&bin, port);
    second.create_topic("restart", 3);
    let records = second.consume("restart", after, Duration::from_secs(60));
    assert_delivered(&records, &written[before..], 3);
    proxy
        .wait_for_metric(
            "scimtap_sink_events_written_total{sink=\"kafka\"}",
            (before + after) as f64,
            WAIT,
        )
        .await;
}
