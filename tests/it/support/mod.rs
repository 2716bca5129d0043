//! The shared harness of the integration tests: one of each.
//!
//! - [`proxy`]: the real `scimtap` binary on 127.0.0.1:0 (`Proxy::start(ProxyConfig::new(url))`),
//!   its audit file, admin endpoints and log;
//! - [`upstream`]: in-process upstreams on 127.0.0.1:0, and the one fake SCIM service;
//! - [`peers`]: where the peers are (the venv of `SCIMTAP_PEER_VENV`, `tests/peer`, tansu,
//!   rsyslogd, systemd-analyze...), and the rule for a missing one (below);
//! - [`process`]: the one launcher for peer processes (killed on drop, output kept for the
//!   failure message) and for commands run to completion (bounded);
//! - [`wait`]: the one "wait until" helper, and free ports (always from a bind to port 0);
//! - [`collector`] (tests/peer/collector.py), [`tansu`] (a Kafka broker) and [`postgres`] (a
//!   throwaway PostgreSQL cluster): peers with an API;
//! - here: HTTP/1.1 and HTTP/2 clients (plain, TLS, mTLS), streamed bodies, a test PKI.
//!
//! Every wait has a timeout; a failing wait panics with what it waited for and what it saw
//! (the proxy's log tail, the events so far, a peer's log).
//!
//! # A missing peer never passes silently
//!
//! A test that needs an optional peer (tansu, rsyslogd, systemd-analyze, gzip...) gets it from
//! [`peers::require`] and returns when that gives `None`:
//!
//! ```ignore
//! let Some(tansu) = peers::require("tansu") else { return };
//! ```
//!
//! With `SCIMTAP_REQUIRE_PEERS=1` (scripts/test.sh sets it, so CI) a missing peer **fails** the
//! test, saying what is missing and how to install it. Without it (a developer's plain
//! `cargo test`), the test writes `SKIPPED <test>: <why>` to stderr (uncaptured, so it shows in
//! the run's output) and passes. No test may return early or print "skipped" any other way.
//! Peers that every test setup has (the Python venv and its packages, python3, rsyslogd) are
//! found with [`peers::venv_python`] / [`peers::need`], which fail whenever they are missing.

pub mod collector;
pub mod peers;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod relay;
pub mod tansu;
pub mod upstream;
pub mod wait;

pub use process::{report, run, scimtap, scimtap_bin, scimtap_verify};
pub use proxy::{metric_value, Proxy, ProxyConfig};
pub use upstream::Upstream;
pub use wait::{closed_port, free_udp_port};

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::mpsc;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How long any wait in the suite lasts before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

// === clients ===

pub fn http1_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends `req` and reads the whole response within [`WAIT`]; panics naming the request when
/// it fails or takes longer.
pub async fn roundtrip<C>(
    client: &Client<C, TestBody>,
    req: http::Request<TestBody>,
) -> http::Response<Bytes>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let what = format!("{} {}", req.method(), req.uri());
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{what}: body: {e}"));
        http::Response::from_parts(parts, body.to_bytes())
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{what}: no whole response within {WAIT:?}"))
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
