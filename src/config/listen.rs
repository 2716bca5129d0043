//! `[listen]` and `[admin]`: the sockets scimtap accepts on, one for identity providers (with
//! its TLS material and per-connection limits), one for health, readiness and metrics.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;

/// `[listen]`: where identity providers connect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    /// `IP:PORT` to accept on. Required. Port 0 picks a free port (logged at startup).
    address: Option<Spanned<String>>,
    /// More `IP:PORT`s to accept on, with the same settings; a `[[routes]]` entry's `listen`
    /// can pick one.
    extra_addresses: Option<Spanned<Vec<String>>>,
    /// PEM certificate chain; with `tls_key_file`, terminate TLS (1.2+, ALPN h2 and http/1.1).
    tls_cert_file: Option<Spanned<PathBuf>>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_cert_file`.
    tls_key_file: Option<Spanned<PathBuf>>,
    /// PEM CA bundle; when set, every client must present a certificate it signed (mTLS).
    client_ca_file: Option<Spanned<PathBuf>>,
    /// Seconds a client may take to send a complete request head.
    #[serde(default = "default_header_read_timeout_secs")]
    header_read_timeout_secs: Spanned<f64>,
    /// Seconds a client may take to complete the TLS handshake.
    #[serde(default = "default_tls_handshake_timeout_secs")]
    tls_handshake_timeout_secs: Spanned<f64>,
    /// Seconds a request or response body may stall (no bytes moving either way) before the
    /// exchange is cut: slow uploads and clients that stop reading cannot hold a slot.
    #[serde(default = "default_body_idle_timeout_secs")]
    body_idle_timeout_secs: Spanned<f64>,
    /// Largest request head (request line and headers) in bytes; larger gets 431.
    #[serde(default = "default_max_header_bytes")]
    max_header_bytes: Spanned<u64>,
    /// Most header fields in a request head.
    #[serde(default = "default_max_headers")]
    max_headers: Spanned<u64>,
    /// Most client connections open at once; further ones wait in the kernel backlog.
    #[serde(default = "default_max_connections")]
    max_connections: Spanned<u64>,
    /// Most concurrent HTTP/2 streams per connection.
    #[serde(default = "default_http2_max_concurrent_streams")]
    http2_max_concurrent_streams: Spanned<u64>,
    /// Largest request body forwarded, in bytes; larger gets 413 and is not forwarded
    /// (Content-Length) or is cut (chunked). 0: no limit.
    #[serde(default = "default_zero")]
    max_request_body_bytes: Spanned<u64>,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    tls_min_version: TlsMinVersion,
}

/// The lowest TLS protocol version scimtap accepts from clients.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
pub enum TlsMinVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

defaults! {
    spanned {
        default_zero: u64 = 0;
        default_body_idle_timeout_secs: f64 = 30.0;
        default_max_header_bytes: u64 = 64 * 1024;
        default_max_headers: u64 = 100;
        default_max_connections: u64 = 4096;
        default_http2_max_concurrent_streams: u64 = 100;
        default_header_read_timeout_secs: f64 = 30.0;
        default_tls_handshake_timeout_secs: f64 = 10.0;
    }
}

/// `[admin]`: health, readiness and Prometheus metrics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    /// `IP:PORT` for `/healthz`, `/readyz` and `/metrics`. Required when `[admin]` is present.
    address: Option<Spanned<String>>,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub address: SocketAddr,
    /// `extra_addresses`: accepted on as well, with the same settings.
    pub extra_addresses: Vec<SocketAddr>,
    pub tls: Option<ServerTls>,
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub http2_max_concurrent_streams: u32,
    /// `None`: no limit.
    pub max_request_body_bytes: Option<u64>,
    pub tls_min_version: TlsMinVersion,
}

impl ListenConfig {
    /// Every address scimtap accepts identity providers on: `address`, then
    /// `extra_addresses`. A connection's listener is its index here.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.address).chain(self.extra_addresses.iter().copied())
    }
}

/// Loaded TLS server material. Debug never prints key bytes.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    pub client_ca: Option<Vec<CertificateDer<'static>>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_chain_len", &self.cert_chain.len())
            .field("key", &"<redacted>")
            .field("mtls", &self.client_ca.is_some())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub address: SocketAddr,
}

/// `[listen]`, which must be there: `None` when it is missing or has no usable address.
pub(super) fn validate_listen(
    c: &mut Checker<'_>,
    listen: Option<&Spanned<RawListen>>,
) -> Option<ListenConfig> {
    let Some(listen) = listen else {
        c.line(None, "listen", "missing section [listen] (with `address`)");
        return None;
    };
    let raw = listen.get_ref();
    let address = match &raw.address {
        None => {
            c.at(
                listen.span(),
                "listen.address",
                "missing: [listen] needs an `address`",
            );
            None
        }
        Some(addr) => c.socket_addr(addr, "listen.address"),
    };
    let header_read_timeout = c.secs(
        &raw.header_read_timeout_secs,
        "listen.header_read_timeout_secs",
    );
    let tls_handshake_timeout = c.secs(
        &raw.tls_handshake_timeout_secs,
        "listen.tls_handshake_timeout_secs",
    );
    let body_idle_timeout = c.secs(&raw.body_idle_timeout_secs, "listen.body_idle_timeout_secs");
    let mut bounded = |value: &Spanned<u64>, key: &str, range: std::ops::RangeInclusive<u64>| {
        if !range.contains(value.get_ref()) {
            c.at(
                value.span(),
                key,
                format!(
                    "must be between {} and {}, got {}",
                    range.start(),
                    range.end(),
                    value.get_ref()
                ),
            );
        }
        (*value.get_ref()).clamp(*range.start(), *range.end())
    };
    // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
    let max_header_bytes = bounded(
        &raw.max_header_bytes,
        "listen.max_header_bytes",
        8192..=1024 * 1024,
    ) as usize;
    let max_headers = bounded(&raw.max_headers, "listen.max_headers", 8..=1000) as usize;
    let max_connections = bounded(
        &raw.max_connections,
        "listen.max_connections",
        1..=1_000_000,
    ) as usize;
    let http2_max_concurrent_streams = bounded(
        &raw.http2_max_concurrent_streams,
        "listen.http2_max_concurrent_streams",
        1..=10_000,
    ) as u32;
    let max_request_body_bytes = match *raw.max_request_body_bytes.get_ref() {
        0 => None,
        n => Some(n),
    };
    let tls = match (&raw.tls_cert_file, &raw.tls_key_file) {
        (None, None) => {
            if let Some(ca) = &raw.client_ca_file {
                c.at(
                    ca.span(),
                    "listen.client_ca_file",
                    "needs TLS: set tls_cert_file and tls_key_file too",
                );
            }
            None
        }
        (Some(cert), None) => {
            c.at(
                cert.span(),
                "listen.tls_key_file",
                "missing: tls_cert_file needs tls_key_file",
            );
            None
        }
        (None, Some(key)) => {
            c.at(
                key.span(),
                "listen.tls_cert_file",
                "missing: tls_key_file needs tls_cert_file",
            );
            None
        }
        (Some(cert), Some(key)) => {
            let cert_chain = c.certs(cert, "listen.tls_cert_file");
            let key_der = match PrivateKeyDer::from_pem_file(key.get_ref()) {
                Ok(k) => Some(k),
                Err(e) => {
                    c.at(
                        key.span(),
                        "listen.tls_key_file",
                        format!(
                            "cannot load a private key from {}: {e}",
                            key.get_ref().display()
                        ),
                    );
                    None
                }
            };
            let client_ca = raw
                .client_ca_file
                .as_ref()
                .map(|ca| c.certs(ca, "listen.client_ca_file"));
            key_der.map(|key| ServerTls {
                cert_chain,
                key: Arc::new(key),
                client_ca,
            })
        }
    };
    let mut extra_addresses: Vec<SocketAddr> = Vec::new();
    let extra = raw.extra_addresses.as_ref();
    let extra_span = extra.map(Spanned::span).unwrap_or_default();
    for text in extra.map(Spanned::get_ref).into_iter().flatten() {
        let value = Spanned::new(extra_span.clone(), text.clone());
        let Some(addr) = c.socket_addr(&value, "listen.extra_addresses") else {
            continue;
        };
        let taken = address == Some(addr) || extra_addresses.contains(&addr);
        if taken && addr.port() != 0 {
            c.at(
                extra_span.clone(),
                "listen.extra_addresses",
                format!("{addr} is listed twice"),
            );
        }
        extra_addresses.push(addr);
    }
    Some(ListenConfig {
        address: address?,
        extra_addresses,
        tls,
        header_read_timeout,
        tls_handshake_timeout,
        body_idle_timeout,
        max_header_bytes,
        max_headers,
        max_connections,
        http2_max_concurrent_streams,
        max_request_body_bytes,
        tls_min_version: raw.tls_min_version,
    })
}

/// `[admin]`, which is optional; when present it needs an `address`.
pub(super) fn validate_admin(
    c: &mut Checker<'_>,
    admin: Option<&Spanned<RawAdmin>>,
) -> Option<AdminConfig> {
    admin.and_then(|admin| match &admin.get_ref().address {
        None => {
            c.at(
                admin.span(),
                "admin.address",
                "missing: [admin] needs an `address`",
            );
            None
        }
        Some(addr) => c
            .socket_addr(addr, "admin.address")
            .map(|address| AdminConfig { address }),
    })
}

/// The two sockets cannot be one (port 0 picks two different free ports).
pub(super) fn check_admin_address(
    c: &mut Checker<'_>,
    listen: Option<&ListenConfig>,
    admin: Option<&AdminConfig>,
) {
    if let (Some(listen), Some(admin)) = (listen, admin) {
        if listen.addresses().any(|a| a == admin.address) && admin.address.port() != 0 {
            c.line(
                None,
                "admin.address",
                "must differ from listen.address and listen.extra_addresses",
            );
        }
    }
}
