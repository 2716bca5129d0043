//! Test harness: a real `scimtap` process on 127.0.0.1:0, in-process upstreams on 127.0.0.1:0,
//! HTTP/1.1 and HTTP/2 clients (plain and TLS), generated certificates, and helpers that read
//! the audit file and the admin endpoints. Every wait has a timeout; a failing wait panics with
//! the proxy's log tail and the events seen so far.

pub mod collector;
pub mod tansu;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

// === scimtap process ===

/// Builds a `proxy.toml` for a test: listen and admin on port 0, a file sink in a temp dir.
#[derive(Clone)]
pub struct ProxyConfig {
    pub upstream_url: String,
    pub extra_listen: String,
    pub extra_upstream: String,
    pub extra_top: String,
    pub sinks: Option<String>,
    pub shutdown_timeout_secs: f64,
    /// `SCIMTAP_LOG` for the process (default `info`).
    pub log_filter: String,
}

impl ProxyConfig {
    pub fn new(upstream_url: impl Into<String>) -> Self {
        ProxyConfig {
            upstream_url: upstream_url.into(),
            extra_listen: String::new(),
            extra_upstream: String::new(),
            extra_top: String::new(),
            sinks: None,
            shutdown_timeout_secs: 10.0,
            log_filter: "info".to_owned(),
        }
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
        format!(
            "shutdown_timeout_secs = {}\n{}\n[listen]\naddress = \"127.0.0.1:0\"\n{}\n[upstream]\nurl = \"{}\"\n{}\n[admin]\naddress = \"127.0.0.1:0\"\n\n{}",
            self.shutdown_timeout_secs, self.extra_top, self.extra_listen, self.upstream_url, self.extra_upstream, sinks
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

pub fn scimtap_bin() -> &'static str {
    env!("CARGO_BIN_EXE_scimtap")
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
            .env("SCIMTAP_LOG", &config.log_filter)
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
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.events();
            if events.len() >= n {
                return events;
            }
            if Instant::now() > deadline {
                panic!(
                    "expected {n} events, got {}:\n{}\nlog:\n{}",
                    events.len(),
                    serde_json::to_string_pretty(&events).unwrap(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the event of `request_id`.
    pub async fn event_for(&self, request_id: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e["request_id"] == request_id)
            {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no event for request {request_id}; events:\n{}\nlog:\n{}",
                    serde_json::to_string_pretty(&self.events()).unwrap(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

    /// The file the default (or `AUDIT_PLACEHOLDER`) file sink writes.
    pub fn audit_path(&self) -> &Path {
        &self.audit
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then wait for exit; returns the exit code.
    pub fn stop(&mut self) -> i32 {
        self.signal("TERM");
        self.stop_wait()
    }

    /// Waits for the process to exit (after a signal sent elsewhere); returns the exit code.
    pub fn stop_wait(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "scimtap did not stop after SIGTERM; log:\n{}",
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

// === in-process upstreams ===

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

/// An HTTP/1.1 server on 127.0.0.1:0 (optionally TLS) answering with `handler`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        Self::start_inner(Arc::new(move |req| Box::pin(handler(req))), None).await
    }

    pub async fn start_tls<F, Fut>(handler: F, tls: Arc<rustls::ServerConfig>) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        Self::start_inner(Arc::new(move |req| Box::pin(handler(req))), Some(tls)).await
    }

    async fn start_inner(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let count = count.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(tls) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(tls).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A free port nobody listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// === clients ===

pub fn http1_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// HTTP/2 with prior knowledge over cleartext (h2c).
pub fn h2c_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// A TLS client configuration that trusts only `ca`.
fn trusting(
    ca: &CertificateDer<'static>,
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
}

/// HTTP/1.1 HTTPS client trusting `ca` and presenting a client certificate.
pub fn mtls_client(
    ca: &CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, TestBody> {
    let config = trusting(ca).with_client_auth_cert(vec![cert], key).unwrap();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// HTTPS client trusting `ca`, offering h2 and http/1.1 by ALPN (or only http/1.1).
pub fn tls_client(
    ca: &CertificateDer<'static>,
    h2: bool,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, TestBody> {
    let config = trusting(ca).with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let connector = if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    let mut client = Client::builder(TokioExecutor::new());
    if h2 {
        client.http2_only(true);
    }
    client.build(connector)
}

/// A request body fed chunk by chunk from the test (streaming, chunked on HTTP/1.1).
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn pair() -> (mpsc::Sender<Bytes>, TestBody) {
        let (tx, rx) = mpsc::channel(4);
        (tx, ChannelBody { rx }.boxed())
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

// === certificates ===

/// A CA and a leaf for 127.0.0.1 / localhost signed by it.
pub struct TestPki {
    /// Signs client certificates (mTLS tests).
    pub issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    pub leaf_pem: String,
    pub key_pem: String,
    pub leaf_der: CertificateDer<'static>,
    pub key_der: PrivateKeyDer<'static>,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "scimtap test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        TestPki {
            issuer,
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            leaf_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            leaf_der: leaf.der().clone(),
            key_der: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        }
    }

    /// A client certificate with subject `CN=<cn>, O=Example IdP`, signed by the test CA.
    pub fn client_cert(&self, cn: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example IdP");
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// Writes ca.pem, cert.pem, key.pem into `dir`.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let (ca, cert, key) = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        std::fs::write(&ca, &self.ca_pem).unwrap();
        std::fs::write(&cert, &self.leaf_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (ca, cert, key)
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![self.leaf_der.clone()], self.key_der.clone_key())
        .unwrap();
        Arc::new(config)
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes (xorshift), so large bodies are not compressible runs.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
