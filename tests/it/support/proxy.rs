//! The scimtap process under test: [`ProxyConfig`] renders a `proxy.toml` (listen and admin on
//! 127.0.0.1:0, a file sink in a temp dir), [`Proxy`] runs the real binary and reads back the
//! audit file, the admin endpoints and its log. A failing wait panics with the log tail and the
//! events seen so far.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;

use super::process::scimtap_bin;
use super::wait::until;
use super::{empty, http1_client, WAIT};

/// Builds a `proxy.toml` for a test: listen and admin on port 0, a file sink in a temp dir.
#[derive(Clone)]
pub struct ProxyConfig {
    pub upstream_url: String,
    pub extra_listen: String,
    pub extra_upstream: String,
    pub extra_top: String,
    pub sinks: Option<String>,
    /// `[[routes]]` tables written instead of the `[upstream]` section (then `upstream_url`
    /// and `extra_upstream` are unused).
    pub routes: Option<String>,
    pub shutdown_timeout_secs: f64,
    /// `SCIMTAP_LOG` for the process (default `info`).
    pub log_filter: String,
    /// More environment for the process (`NOTIFY_SOCKET`...).
    pub env: Vec<(String, String)>,
}

impl ProxyConfig {
    pub fn new(upstream_url: impl Into<String>) -> Self {
        ProxyConfig {
            upstream_url: upstream_url.into(),
            extra_listen: String::new(),
            extra_upstream: String::new(),
            extra_top: String::new(),
            sinks: None,
            routes: None,
            shutdown_timeout_secs: 10.0,
            log_filter: "info".to_owned(),
            env: Vec::new(),
        }
    }
    /// Runs the process with `key=value` in its environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
    pub fn shutdown_timeout_secs(mut self, secs: f64) -> Self {
        self.shutdown_timeout_secs = secs;
        self
    }
    pub fn listen(mut self, extra: &str) -> Self {
        self.extra_listen.push_str(extra);
        self.extra_listen.push('\n');
        self
    }
    pub fn upstream(mut self, extra: &str) -> Self {
        self.extra_upstream.push_str(extra);
        self.extra_upstream.push('\n');
        self
    }
    /// Runs the process with `SCIMTAP_LOG=filter`.
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = filter.to_owned();
        self
    }
    pub fn top(mut self, extra: &str) -> Self {
        self.extra_top.push_str(extra);
        self.extra_top.push('\n');
        self
    }
    /// Writes `routes` (`[[routes]]` tables) in place of the `[upstream]` section.
    pub fn routes(mut self, routes: &str) -> Self {
        self.routes = Some(routes.to_owned());
        self
    }
    /// Replaces the default file sink.
    pub fn sinks(mut self, sinks: &str) -> Self {
        self.sinks = Some(sinks.to_owned());
        self
    }

    pub fn render(&self, audit: &Path) -> String {
        // `AUDIT_PLACEHOLDER` in custom sinks stands for the test's audit file.
        let sinks = self
            .sinks
            .clone()
            .unwrap_or_else(|| {
                "[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\n".to_owned()
            })
            .replace("AUDIT_PLACEHOLDER", &audit.display().to_string());
        let upstream = match &self.routes {
            Some(routes) => routes.clone(),
            None => format!(
                "[upstream]\nurl = \"{}\"\n{}",
                self.upstream_url, self.extra_upstream
            ),
        };
        format!(
            "shutdown_timeout_secs = {}\n{}\n[listen]\naddress = \"127.0.0.1:0\"\n{}\n{}\n[admin]\naddress = \"127.0.0.1:0\"\n\n{}",
            self.shutdown_timeout_secs, self.extra_top, self.extra_listen, upstream, sinks
        )
    }
}

/// A running `scimtap` binary.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub audit: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn start(config: ProxyConfig) -> Proxy {
        Self::start_with(config, Stdio::null())
    }

    /// Starts scimtap with the given stdout (a pipe nobody reads stalls a stdout sink).
    /// Starts scimtap with its stdout collected (for stdout sinks).
    pub fn start_capturing_stdout(config: ProxyConfig) -> (Proxy, Arc<Mutex<String>>) {
        let mut proxy = Self::start_with(config, Stdio::piped());
        let out = Arc::new(Mutex::new(String::new()));
        let stdout = proxy.child.stdout.take().unwrap();
        let sink = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        (proxy, out)
    }

    pub fn start_with(config: ProxyConfig, stdout: Stdio) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        let config_path = dir.path().join("proxy.toml");
        std::fs::write(&config_path, config.render(&audit)).unwrap();
        let mut child = Command::new(scimtap_bin())
            .arg("--config")
            .arg(&config_path)
            .env_remove("SCIMTAP_CONFIG")
            .env("SCIMTAP_LOG", &config.log_filter)
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("scimtap starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<(String, SocketAddr)>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    for (marker, what) in
                        [("Proxy listening.", "proxy"), ("Admin listening.", "admin")]
                    {
                        if line.contains(marker) {
                            if let Some(addr) = field(&line, "address") {
                                let _ = tx.send((what.to_owned(), addr.parse().unwrap()));
                            }
                        }
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + WAIT;
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((what, a)) if what == "proxy" => addr = Some(a),
                Ok((_, a)) => admin = Some(a),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "scimtap did not start; log:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            }
        }
        Proxy {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            dir,
            audit,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The `address=` of the first log line containing `marker` (`"UI listening."`).
    pub fn logged_address(&self, marker: &str) -> Option<SocketAddr> {
        let log = self.log.lock().unwrap();
        log.iter()
            .find(|line| line.contains(marker))
            .and_then(|line| field(line, "address"))
            .and_then(|addr| addr.parse().ok())
    }

    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let start = log.len().saturating_sub(40);
        log[start..].join("\n")
    }

    /// Every event in the audit file so far.
    pub fn events(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|v| v.get("record").is_none())
            .collect()
    }

    /// Every line of the audit file: events, and the records the hash chain adds
    /// (`integrity.*`, `audit.intent`; they have a `record` member).
    pub fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
        // Like any tailer, read whole lines only: the sink may be in the middle of a write.
        let whole = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        whole
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}"))
            })
            .collect()
    }

    /// Waits until `n` events are in the audit file.
    pub async fn wait_for_events(&self, n: usize) -> Vec<Value> {
        until(
            &format!("{n} events"),
            WAIT,
            Duration::from_millis(20),
            async || {
                let events = self.events();
                if events.len() >= n {
                    return Ok(events);
                }
                Err(format!(
                    "got {}:\n{}\nlog:\n{}",
                    events.len(),
                    serde_json::to_string_pretty(&events).unwrap(),
                    self.log_tail()
                ))
            },
        )
        .await
    }

    /// Waits for the event of `request_id`.
    pub async fn event_for(&self, request_id: &str) -> Value {
        let what = format!("the event for request {request_id}");
        until(&what, WAIT, Duration::from_millis(20), async || {
            let events = self.events();
            match events.iter().find(|e| e["request_id"] == request_id) {
                Some(e) => Ok(e.clone()),
                None => Err(format!(
                    "events:\n{}\nlog:\n{}",
                    serde_json::to_string_pretty(&events).unwrap(),
                    self.log_tail()
                )),
            }
        })
        .await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let client = http1_client();
        let resp = client
            .request(
                Request::get(format!("http://{}{}", self.admin, path))
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The value of one metric line, e.g. `scimtap_requests_total{status_class="2xx"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics").await;
        metric_value(&text, series)
    }

    /// Waits until the metric `series` is at least `at_least` (within `wait`); returns it.
    pub async fn wait_for_metric(&self, series: &str, at_least: f64, wait: Duration) -> f64 {
        let what = format!("{series} >= {at_least}");
        until(&what, wait, Duration::from_millis(20), async || {
            let value = self.metric(series).await;
            if value >= at_least {
                return Ok(value);
            }
            Err(format!("{series} = {value}; log:\n{}", self.log_tail()))
        })
        .await
    }

    /// The file the default (or `AUDIT_PLACEHOLDER`) file sink writes.
    pub fn audit_path(&self) -> &Path {
        &self.audit
    }

    /// Sends `sig` (`TERM`, `HUP`...) to the process.
    pub fn signal(&self, sig: &str) {
        super::process::signal(self.child.id(), sig);
    }

    /// SIGTERM, then wait for exit; returns the exit code.
    pub fn stop(&mut self) -> i32 {
        self.signal("TERM");
        self.stop_wait()
    }

    /// Waits for the process to exit (after a signal sent elsewhere); returns the exit code.
    /// Kills it when it has not exited in time, and panics with its log.
    pub fn stop_wait(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "scimtap did not stop within {WAIT:?}; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // scripts/test.sh validates every event the suite made against docs/event.schema.json.
        if let Some(dir) = std::env::var_os("SCIMTAP_EMITTED_EVENTS_DIR") {
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "{}-{}-{}.jsonl",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                self.addr.port()
            );
            let _ = std::fs::create_dir_all(&dir);
            if std::fs::metadata(&self.audit).is_ok_and(|m| m.len() > 0) {
                let _ = std::fs::copy(&self.audit, PathBuf::from(dir).join(name));
            }
        }
    }
}

/// `key=value` from a tracing fmt line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    line[start..].split_whitespace().next()
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}
