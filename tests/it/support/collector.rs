//! `tests/peer/collector.py` as a child process: a real HTTP log collector (NDJSON / JSON array,
//! Splunk HEC, Elasticsearch `_bulk`) with a control API for fault injection. Started on a port
//! file with a bounded wait, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;

use super::{empty, full, http1_client, WAIT};

pub fn collector_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peer/collector.py")
}

/// A running `collector.py`.
pub struct Collector {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Collector {
    /// On a port the OS picks. `args` go to the script (`--hec-token T`, ...).
    pub fn start(args: &[&str]) -> Collector {
        Self::start_on(0, args)
    }

    /// On `port` (0: any free one).
    pub fn start_on(port: u16, args: &[&str]) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let log = std::fs::File::create(dir.path().join("collector.log")).unwrap();
        let child = Command::new("python3")
            .arg(collector_script())
            .arg("--port")
            .arg(port.to_string())
            .arg("--port-file")
            .arg(&port_file)
            .arg("--state-file")
            .arg(dir.path().join("events.jsonl"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("python3 runs tests/peer/collector.py");
        let mut collector = Collector {
            child,
            port: 0,
            dir,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                collector.port = text.trim().parse().expect("port file holds a port");
                break;
            }
            let exited = collector.child.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "collector did not start (exit {exited:?}); its log:\n{}",
                    collector.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(port == 0 || collector.port == port);
        collector
    }

    /// `http://127.0.0.1:PORT<path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The collector's stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("collector.log")).unwrap_or_default()
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("content-type", "application/json")
            .body(body.map_or_else(empty, |b| full(b.to_string())))
            .unwrap();
        let resp = tokio::time::timeout(WAIT, http1_client().request(req))
            .await
            .expect("collector answers in time")
            .expect("collector answers");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    /// `POST /_collector/<name>` with `body`; panics unless the collector says ok.
    pub async fn control(&self, name: &str, body: Value) {
        let (status, answer) = self
            .call("POST", &format!("/_collector/{name}"), Some(body))
            .await;
        assert_eq!(status, 200, "control {name}: {answer}");
    }

    /// Every ingest request so far, in arrival order: `method`, `path`, `query`, `headers`
    /// (lower-case names), `body`, `status` (null while pending), `time` (Unix seconds).
    pub async fn requests(&self) -> Vec<Value> {
        let (status, answer) = self.call("GET", "/_collector/requests", None).await;
        assert_eq!(status, 200);
        match answer {
            Value::Array(requests) => requests,
            other => panic!("requests: {other}"),
        }
    }

    /// The accepted events (without the hash chain's records), in arrival order, and the
    /// count of duplicates it saw (`_bulk`).
    pub async fn events(&self) -> (Vec<Value>, u64) {
        let (status, answer) = self.call("GET", "/_collector/events", None).await;
        assert_eq!(status, 200);
        let duplicates = answer["duplicates"].as_u64().unwrap();
        match answer {
            Value::Object(mut map) => match map.remove("events") {
                // The hash chain's own records (`integrity.*`) travel to native sinks too;
                // they are not events of a request.
                Some(Value::Array(events)) => (
                    events
                        .into_iter()
                        .filter(|e| e.get("record").is_none())
                        .collect(),
                    duplicates,
                ),
                other => panic!("events: {other:?}"),
            },
            other => panic!("events: {other}"),
        }
    }

    /// Waits until at least `n` events were accepted.
    pub async fn wait_for_events(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let (events, _) = self.events().await;
            if events.len() >= n {
                return events;
            }
            if Instant::now() > deadline {
                panic!(
                    "collector got {} of {n} events; requests:\n{}",
                    events.len(),
                    serde_json::to_string_pretty(&self.requests().await).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
