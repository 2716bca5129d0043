//! `tests/peer/collector.py` as a child process: a real HTTP log collector (NDJSON / JSON array,
//! Splunk HEC, Elasticsearch `_bulk`) with a control API for fault injection. Started on a port
//! file with a bounded wait, killed on drop.

use std::process::Command;

use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;

use super::peers::{need, peer_script};
use super::process::Process;
use super::{empty, full, http1_client, WAIT};

/// A running `collector.py`.
pub struct Collector {
    process: Process,
    pub port: u16,
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
        let state_file = dir.path().join("events.jsonl");
        let mut process = Process::spawn(
            "collector",
            dir,
            Command::new(need("python3"))
                .arg(peer_script("collector.py"))
                .arg("--port")
                .arg(port.to_string())
                .arg("--port-file")
                .arg(&port_file)
                .arg("--state-file")
                .arg(state_file)
                .args(args),
        );
        let text = process.wait_for_file(&port_file);
        let bound: u16 = text.parse().expect("port file holds a port");
        assert!(port == 0 || bound == port);
        Collector {
            process,
            port: bound,
        }
    }

    /// `http://127.0.0.1:PORT<path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The collector's output.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The collector's working directory (port and state files).
    pub fn dir(&self) -> &std::path::Path {
        self.process.dir.path()
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("content-type", "application/json")
            .body(body.map_or_else(empty, |b| full(b.to_string())))
            .unwrap();
        let resp = match tokio::time::timeout(WAIT, http1_client().request(req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => panic!("collector: {method} {path}: {e}; its log:\n{}", self.log()),
            Err(_) => panic!(
                "collector: {method} {path}: no answer in {WAIT:?}; its log:\n{}",
                self.log()
            ),
        };
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
}
