//! The syslog sink against a real rsyslog on 127.0.0.1: UDP, TCP (octet counting) and TLS
//! (RFC 5425) at once. rsyslog writes the APP-NAME, severity and MSG of every message it
//! receives to a file; each transport must deliver exactly the events the file sink wrote, and
//! in every format a failed exchange arrives at warning severity and a write refused for its
//! credentials (401/403) at error severity.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::process::{self, Process};
use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::Value;

struct Rsyslog {
    process: Process,
    out: PathBuf,
    udp: u16,
    tcp: u16,
    tls: u16,
}

impl Rsyslog {
    fn start(pki: &TestPki) -> Rsyslog {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pki.write(dir.path());
        let out = dir.path().join("received.log");
        let (udp, tcp, tls) = (free_udp_port(), closed_port(), closed_port());
        let conf = dir.path().join("rsyslog.conf");
        let d = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{d}" maxMessageSize="64k"
  DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imudp")
module(load="imtcp")
template(name="raw" type="string" string="%app-name% %syslogseverity-text% %msg%\n")
ruleset(name="out") {{ action(type="omfile" file="{out}" template="raw") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="out")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="out")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="out" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
"#,
                ca = ca.display(),
                cert = cert.display(),
                key = key.display(),
                out = out.display(),
            ),
        )
        .unwrap();
        let pid = dir.path().join("rsyslogd.pid");
        let mut process = Process::spawn(
            "rsyslogd",
            dir,
            Command::new(peers::need("rsyslogd"))
                .arg("-n")
                .arg("-f")
                .arg(&conf)
                .arg("-i")
                .arg(pid),
        );
        process.wait_listening(tcp);
        process.wait_listening(tls);
        // imudp starts with the TCP inputs; give it a moment to bind.
        std::thread::sleep(Duration::from_millis(300));
        Rsyslog {
            process,
            out,
            udp,
            tcp,
            tls,
        }
    }

    /// (app-name, parsed MSG) of every message received so far.
    fn received(&self) -> Vec<(String, Value)> {
        self.received_raw()
            .into_iter()
            .map(|(app, _, msg)| {
                let msg = serde_json::from_str(&msg).unwrap_or(Value::String(msg));
                (app, msg)
            })
            .collect()
    }

    /// (app-name, severity, MSG as text) of every message received so far.
    fn received_raw(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (app, rest) = l.split_once(' ')?;
                let (severity, msg) = rest.split_once(' ')?;
                Some((app.to_owned(), severity.to_owned(), msg.to_owned()))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rsyslog_receives_every_event_over_udp_tcp_and_tls() {
    const N: usize = 20;
    let pki = TestPki::new();
    let rsyslog = Rsyslog::start(&pki);
    let ca_path = rsyslog.process.path("ca.pem");
    let upstream = Upstream::start(|_req: Request<Incoming>| async {
        Response::builder()
            .status(200)
            .body(full(r#"{"id":"u1","userName":"a"}"#))
            .unwrap()
    })
    .await;
    let syslog = |protocol: &str, port: u16, extra: &str| {
        format!(
            "[[sinks]]\ntype = \"syslog\"\nname = \"syslog-{protocol}\"\nprotocol = \"{protocol}\"\naddress = \"127.0.0.1:{port}\"\napp_name = \"scimtap-{protocol}\"\n{extra}\n"
        )
    };
    let sinks = format!(
        "[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\n{}{}{}",
        syslog("udp", rsyslog.udp, ""),
        syslog("tcp", rsyslog.tcp, ""),
        syslog(
            "tls",
            rsyslog.tls,
            &format!(
                "tls_ca_file = \"{}\"\ntls_server_name = \"localhost\"",
                ca_path.display()
            )
        ),
    );
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let client = http1_client();
    for i in 0..N {
        let req = Request::get(proxy.url(&format!("/scim/v2/Users/u{i}")))
            .header("x-request-id", format!("syslog-{i}"))
            .body(empty())
            .unwrap();
        roundtrip(&client, req).await;
    }
    let written = proxy.wait_for_events(N).await;
    let deadline = Instant::now() + WAIT;
    while rsyslog.received().len() < 3 * N {
        assert!(
            Instant::now() < deadline,
            "rsyslog got {} of {} messages; scimtap log:\n{}",
            rsyslog.received().len(),
            3 * N,
            proxy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = rsyslog.received();
    assert_eq!(received.len(), 3 * N, "no duplicates");
    for app in ["scimtap-udp", "scimtap-tcp", "scimtap-tls"] {
        let mut got: Vec<&Value> = received
            .iter()
            .filter(|(a, _)| a == app)
            .map(|(_, v)| v)
            .collect();
        let mut want: Vec<&Value> = written.iter().collect();
        let key = |v: &&Value| v["request_id"].as_str().unwrap_or("").to_owned();
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(got, want, "{app} delivered exactly the file sink's events");
    }
    for sink in ["syslog-udp", "syslog-tcp", "syslog-tls"] {
        let series = format!("scimtap_sink_events_written_total{{sink=\"{sink}\"}}");
        assert_eq!(proxy.metric(&series).await, N as f64, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn native_failures_are_warnings_and_refused_writes_errors_in_syslog() {
    severity_follows_the_outcome("native").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cef_failures_are_warnings_and_refused_writes_errors_in_syslog() {
    severity_follows_the_outcome("cef").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ecs_failures_are_warnings_and_refused_writes_errors_in_syslog() {
    severity_follows_the_outcome("ecs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ocsf_failures_are_warnings_and_refused_writes_errors_in_syslog() {
    severity_follows_the_outcome("ocsf").await;
}

/// The syslog severity comes from the event, whatever the format: a failed exchange is a
/// warning, a SCIM write the service refused for its credentials (a revoked token: 401) an
/// error, and a successful one informational, whether the line is scimtap's JSON, CEF, ECS or
/// OCSF (none of the last three contains `"outcome":"failure"`). A second sink in another
/// format rides along, so records of two formats share the audit worker's pass.
async fn severity_follows_the_outcome(format: &str) {
    let other = if format == "native" { "cef" } else { "native" };
    let formats = [format, other];
    let pki = TestPki::new();
    let rsyslog = Rsyslog::start(&pki);
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        if req.uri().path().ends_with("/revoked") {
            Response::builder()
                .status(401)
                .header("content-type", "application/scim+json")
                .body(full(
                    r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"401","detail":"token revoked"}"#,
                ))
                .unwrap()
        } else if req.uri().path().ends_with("/missing") {
            Response::builder()
                .status(500)
                .header("content-type", "application/scim+json")
                .body(full(
                    r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"404","detail":"no such user"}"#,
                ))
                .unwrap()
        } else {
            Response::builder()
                .status(200)
                .body(full(r#"{"id":"ok","userName":"a"}"#))
                .unwrap()
        }
    })
    .await;
    let mut sinks = String::from("[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\n");
    for format in formats {
        sinks.push_str(&format!(
            "[[sinks]]\ntype = \"syslog\"\nname = \"syslog-{format}\"\nprotocol = \"tcp\"\naddress = \"127.0.0.1:{}\"\napp_name = \"scimtap-{format}\"\nformat = \"{format}\"\n",
            rsyslog.tcp
        ));
    }
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).sinks(&sinks));
    let client = http1_client();
    let requests = [
        ("sev-ok", "GET", "ok"),
        ("sev-fail", "GET", "missing"),
        ("sev-unauth", "DELETE", "revoked"),
    ];
    for (id, method, path) in requests {
        let req = Request::builder()
            .method(method)
            .uri(proxy.url(&format!("/scim/v2/Users/{path}")))
            .header("x-request-id", id)
            .body(empty())
            .unwrap();
        roundtrip(&client, req).await;
    }
    let written = proxy.wait_for_events(requests.len()).await;
    let outcome = |id: &str| {
        written
            .iter()
            .find(|e| e["request_id"] == id)
            .map(|e| e["outcome"].clone())
    };
    assert_eq!(outcome("sev-ok"), Some(Value::from("success")));
    assert_eq!(outcome("sev-fail"), Some(Value::from("failure")));
    assert_eq!(outcome("sev-unauth"), Some(Value::from("failure")));

    let deadline = Instant::now() + WAIT;
    while rsyslog.received_raw().len() < requests.len() * formats.len() {
        assert!(
            Instant::now() < deadline,
            "rsyslog got {:?}; scimtap log:\n{}",
            rsyslog.received_raw(),
            proxy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = rsyslog.received_raw();
    for format in formats {
        let app = format!("scimtap-{format}");
        for (id, severity) in [
            ("sev-fail", "warning"),
            ("sev-ok", "info"),
            ("sev-unauth", "err"),
        ] {
            let got: Vec<&str> = received
                .iter()
                .filter(|(a, _, msg)| *a == app && msg.contains(id))
                .map(|(_, s, _)| s.as_str())
                .collect();
            assert_eq!(
                got,
                [severity],
                "{format}: the {id} event's severity; all: {received:?}"
            );
        }
    }
}

/// With the default `when_full = "block"`, an rsyslog that stops reading (SIGSTOP) under load
/// holds back only its own sink: the file sink next to it writes every event while rsyslog is
/// stopped, the syslog sink's losses are counted as `stalled`, and nothing is dropped at the
/// hand-off.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_rsyslog_does_not_hold_back_the_file_sink_next_to_it() {
    const N: usize = 1500;
    let pki = TestPki::new();
    let rsyslog = Rsyslog::start(&pki);
    // Large events (each carries a redacted 16 KiB response body), so that the stopped
    // daemon's socket buffers fill after a few hundred.
    let filler = "x".repeat(16 * 1024);
    let body: Bytes = format!(r#"{{"id":"u1","userName":"a","title":"{filler}"}}"#).into();
    let upstream = Upstream::start(move |_req: Request<Incoming>| {
        let body = body.clone();
        async move {
            Response::builder()
                .status(200)
                .header("content-type", "application/scim+json")
                .body(full(body))
                .unwrap()
        }
    })
    .await;
    let sinks = format!(
        "[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\n\
         [[sinks]]\ntype = \"syslog\"\nname = \"syslog-tcp\"\nprotocol = \"tcp\"\n\
         address = \"127.0.0.1:{}\"\nmax_message_bytes = 65536\n\
         buffer = {{ type = \"memory\", max_events = 64 }}\nblock_timeout_ms = 100\n",
        rsyslog.tcp
    );
    let proxy = Proxy::start(
        ProxyConfig::new(upstream.url())
            .top("[capture]\ninclude_bodies = \"redacted\"")
            .sinks(&sinks),
    );
    process::signal(rsyslog.process.pid(), "STOP");

    let client = http1_client();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (client, next, url) = (client.clone(), next.clone(), proxy.url("/scim/v2/Users/u1"));
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < N {
                let req = Request::get(&url).body(empty()).unwrap();
                assert_eq!(roundtrip(&client, req).await.status(), 200);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }

    // rsyslog is still stopped: the file sink has every event anyway.
    assert_eq!(
        proxy.wait_for_events(N).await.len(),
        N,
        "{}",
        proxy.log_tail()
    );
    let stalled = proxy
        .metric("scimtap_sink_events_dropped_total{sink=\"syslog-tcp\",reason=\"stalled\"}")
        .await;
    assert!(
        stalled > 0.0,
        "the syslog sink never stalled; log:\n{}",
        proxy.log_tail()
    );
    assert_eq!(
        proxy
            .metric("scimtap_audit_handoff_dropped_total{reason=\"queue_full\"}")
            .await,
        0.0
    );
    assert!(
        proxy.log_tail().contains("Sink stalled"),
        "{}",
        proxy.log_tail()
    );
    process::signal(rsyslog.process.pid(), "CONT");
}
