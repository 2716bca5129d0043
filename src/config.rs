//! Configuration: one TOML file (`proxy.toml`), parsed, validated and resolved in three steps.
//!
//! 1. [`Config::from_toml_str`] is pure: it deserializes the text into the raw structs below
//!    (every one `deny_unknown_fields`) and then runs [`RawConfig::validate`].
//! 2. Every problem is collected before anything is refused: a field of the wrong type or an
//!    unknown key is recorded with its line, the offending line is blanked out and the text is
//!    parsed again, so one run names every bad key instead of the first one only.
//! 3. The result, [`Config`], holds resolved values (socket addresses, durations, loaded TLS
//!    material) so nothing downstream re-parses or re-checks. Nothing binds a port here.
//!
//! The field docs of the raw structs are the user reference; `proxy.toml` shows every default.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use toml::Spanned;

/// How many repair passes are tried before giving up listing problems.
const MAX_PASSES: usize = 64;

// === raw (deserialized) configuration ===

/// The file as written. Sections that must exist are `Option` so that a missing one is reported
/// with every other problem rather than stopping the parse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Seconds to drain in-flight exchanges and flush sinks after SIGTERM/SIGINT.
    #[serde(default = "default_shutdown_timeout_secs")]
    shutdown_timeout_secs: Spanned<f64>,
    listen: Option<Spanned<RawListen>>,
    upstream: Option<Spanned<RawUpstream>>,
    admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    capture: Option<Spanned<RawCapture>>,
    #[serde(default)]
    audit: Option<Spanned<RawAudit>>,
    /// Kept as tables here and deserialized one by one: a `type`-tagged enum would lose the
    /// positions toml gives us, and each sink's problems should be reported on their own.
    #[serde(default)]
    sinks: Option<Vec<Spanned<toml::Table>>>,
    scim: Option<Spanned<RawScim>>,
    #[serde(default)]
    clients: Vec<Spanned<RawClient>>,
    redact: Option<Spanned<RawRedact>>,
    privacy: Option<Spanned<RawPrivacy>>,
    integrity: Option<Spanned<RawIntegrity>>,
}

/// `[integrity]`: the hash chain every native event carries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegrity {
    /// File holding the HMAC-SHA256 key (at least 16 bytes). Without it the chain uses plain
    /// SHA-256: it catches accidents and cuts, not a forger who can recompute hashes.
    key_file: Option<Spanned<PathBuf>>,
    /// Seconds between checkpoint records while the proxy runs, so a cut tail shows even when
    /// no traffic comes. 0: none.
    #[serde(default = "default_checkpoint_interval_secs")]
    checkpoint_interval_secs: Spanned<f64>,
    /// Where the chain's head is kept between runs when no native-format file sink holds it.
    state_file: Option<Spanned<PathBuf>>,
}

fn default_checkpoint_interval_secs() -> Spanned<f64> {
    Spanned::new(0..0, 300.0)
}

/// `[scim]`: how to read the SCIM traffic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScim {
    /// Path where the SCIM endpoints start (`/scim/v2`). Optional: without it the endpoint is
    /// found wherever it starts in the path.
    base_path: Option<Spanned<String>>,
    /// Custom resource types, besides those learned from `/ResourceTypes` responses.
    #[serde(default)]
    resource_types: Vec<Spanned<RawResourceType>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResourceType {
    /// The type's name as events show it (`Device`).
    name: String,
    /// Its endpoint (`/Devices`).
    endpoint: String,
}

/// `[[clients]]`: identity providers scimtap knows by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    /// Name in events (`client.name`), e.g. `okta-prod`.
    name: String,
    /// Hex SHA-256 of the bearer token this client sends (`printf %s "$TOKEN" | sha256sum`);
    /// the token itself never goes into the configuration.
    token_sha256: Option<Spanned<String>>,
    /// Subject of the client certificate this client presents over mTLS, RFC 4514 form as
    /// `openssl x509 -noout -subject -nameopt RFC2253` prints it (`CN=okta-scim,O=Example`).
    cert_subject: Option<String>,
    /// The identity provider, for `client.idp` (`okta`, `entra`, ...).
    idp: Option<String>,
    /// Turns the allow-list on: with `required = true` on any client, a request whose bearer
    /// token or certificate matches no configured client gets 401 and is not forwarded.
    #[serde(default)]
    required: bool,
}

/// `[redact]`: values that never leave scimtap, besides `password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedact {
    /// Attribute names (any casing) whose values are never shown.
    #[serde(default)]
    attributes: Vec<String>,
    /// Query parameters whose values are replaced in `http.query`, besides the built-in list.
    #[serde(default)]
    query_params: Vec<String>,
}

/// `[privacy]`: keyed pseudonymisation of personal data in events.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    /// File holding the secret HMAC key. When set, userName, emails, displayName and filter
    /// literals appear as `hmac-sha256:<hex>` values.
    hash_key_file: Option<Spanned<PathBuf>>,
}

fn default_shutdown_timeout_secs() -> Spanned<f64> {
    Spanned::new(0..0, 30.0)
}

/// `[listen]`: where identity providers connect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    /// `IP:PORT` to accept on. Required. Port 0 picks a free port (logged at startup).
    address: Option<Spanned<String>>,
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

fn default_zero() -> Spanned<u64> {
    Spanned::new(0..0, 0)
}
fn default_body_idle_timeout_secs() -> Spanned<f64> {
    Spanned::new(0..0, 30.0)
}
fn default_max_header_bytes() -> Spanned<u64> {
    Spanned::new(0..0, 64 * 1024)
}
fn default_max_headers() -> Spanned<u64> {
    Spanned::new(0..0, 100)
}
fn default_max_connections() -> Spanned<u64> {
    Spanned::new(0..0, 4096)
}
fn default_http2_max_concurrent_streams() -> Spanned<u64> {
    Spanned::new(0..0, 100)
}

fn default_header_read_timeout_secs() -> Spanned<f64> {
    Spanned::new(0..0, 30.0)
}
fn default_tls_handshake_timeout_secs() -> Spanned<f64> {
    Spanned::new(0..0, 10.0)
}

/// `[upstream]`: the SCIM service every request is forwarded to, and only it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    /// `http://` or `https://` base URL. The request's path and query are appended unchanged.
    url: Option<Spanned<String>>,
    /// Extra PEM CA bundle trusted for an `https` upstream, on top of the standard web roots.
    ca_file: Option<Spanned<PathBuf>>,
    /// Seconds to establish the TCP connection to the upstream (the TLS handshake counts
    /// against `response_timeout_secs`); then 504 with failure kind `connect_timeout`.
    #[serde(default = "default_connect_timeout_secs")]
    connect_timeout_secs: Spanned<f64>,
    /// Seconds from the start of forwarding (connecting, sending the head and streaming the
    /// request body) until the upstream's response head arrives; then 504 with failure kind
    /// `response_timeout`. A client that uploads slower than this also ends here.
    #[serde(default = "default_response_timeout_secs")]
    response_timeout_secs: Spanned<f64>,
    /// Forward the client's Host header instead of the upstream's authority.
    #[serde(default)]
    preserve_host: bool,
    /// Seconds an idle pooled upstream connection is kept.
    #[serde(default = "default_pool_idle_timeout_secs")]
    pool_idle_timeout_secs: Spanned<f64>,
}

fn default_connect_timeout_secs() -> Spanned<f64> {
    Spanned::new(0..0, 5.0)
}
fn default_response_timeout_secs() -> Spanned<f64> {
    Spanned::new(0..0, 30.0)
}
fn default_pool_idle_timeout_secs() -> Spanned<f64> {
    Spanned::new(0..0, 90.0)
}

/// `[admin]`: health, readiness and Prometheus metrics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    /// `IP:PORT` for `/healthz`, `/readyz` and `/metrics`. Required when `[admin]` is present.
    address: Option<Spanned<String>>,
}

/// `[capture]`: how much of each body is kept for the audit pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    /// Bytes of each body (request and response) kept for classification; beyond it the event
    /// says the body was truncated. Forwarding is never limited by this.
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: Spanned<u64>,
    /// Bytes of captured bodies held in memory at once, across every exchange in flight or
    /// waiting for the audit worker. Past it, captures are truncated (and counted), which
    /// bounds memory under load or when a sink stalls.
    #[serde(default = "default_max_pending_bytes")]
    max_pending_bytes: Spanned<u64>,
    /// `"none"` (default) or `"redacted"`: add the redacted request and response bodies to
    /// events.
    #[serde(default)]
    include_bodies: IncludeBodies,
}

fn default_max_body_bytes() -> Spanned<u64> {
    Spanned::new(0..0, 1024 * 1024)
}
fn default_max_pending_bytes() -> Spanned<u64> {
    Spanned::new(0..0, 64 * 1024 * 1024)
}

/// `[audit]`: the hand-off between the request path and the audit pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    /// Finished exchanges waiting for the audit worker. When full, the exchange's event is
    /// dropped and counted (`scimtap_audit_handoff_dropped_total{reason="queue_full"}`): the
    /// request path never waits.
    #[serde(default = "default_queue_max_events")]
    queue_max_events: Spanned<u64>,
    /// `"drop"` (default): an event that cannot be queued or buffered is dropped and counted,
    /// and traffic flows. `"reject"`: while the audit trail cannot take events (hand-off queue
    /// or a sink's queue/buffer full), SCIM writes are answered 503 with `Retry-After` and
    /// never reach the upstream; reads pass.
    #[serde(default)]
    on_audit_failure: OnAuditFailure,
    /// `"async"` (default): events after the exchange, off the request path. `"write_ahead"`:
    /// a SCIM write is forwarded only after its intent record is durable (fsync'd).
    #[serde(default)]
    mode: AuditMode,
    /// How long a SCIM write may wait for its intent record to become durable; past it the
    /// write gets 503 and is not forwarded.
    #[serde(default = "default_write_ahead_timeout_ms")]
    write_ahead_timeout_ms: Spanned<u64>,
}

/// When events are recorded relative to forwarding.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuditMode {
    #[default]
    Async,
    WriteAhead,
}

fn default_write_ahead_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}

/// What happens to SCIM writes when the audit trail cannot take their events.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnAuditFailure {
    #[default]
    Drop,
    Reject,
}

fn default_queue_max_events() -> Spanned<u64> {
    Spanned::new(0..0, 8192)
}

/// One `[[sinks]]` entry, selected by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawSink {
    Stdout(RawStdoutSink),
    File(RawFileSink),
    Syslog(RawSyslogSink),
    Http(RawHttpSink),
    Kafka(RawKafkaSink),
}

/// `type = "http"`: batches POSTed to a collector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpSink {
    name: Option<String>,
    #[serde(default)]
    format: EventFormat,
    /// Where batches are POSTed (`http://` or `https://`). Required.
    url: Option<String>,
    #[serde(default)]
    encoding: HttpEncoding,
    /// Extra request headers, sent as written (nothing secret here: use `header_files`).
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    /// Headers whose value is read from a file (a secret), trimmed of surrounding whitespace.
    #[serde(default)]
    header_files: std::collections::BTreeMap<String, PathBuf>,
    /// File holding a token: sent as `Authorization: Splunk <token>` for `splunk_hec`,
    /// `Authorization: Bearer <token>` otherwise.
    token_file: Option<PathBuf>,
    /// Extra PEM CA bundle trusted for an `https://` url, on top of the standard web roots.
    ca_file: Option<PathBuf>,
    /// Elasticsearch `_index` of each document (`elasticsearch_bulk`), or HEC `index`.
    index: Option<String>,
    /// HEC `source` (default `scimtap`).
    source: Option<String>,
    /// HEC `sourcetype` (default `scimtap:<format>`).
    sourcetype: Option<String>,
    /// HEC `host` (default: this machine's host name).
    host: Option<String>,
    #[serde(default = "default_connect_timeout_secs_plain")]
    connect_timeout_secs: f64,
    /// Time allowed for one batch's request and response.
    #[serde(default = "default_request_timeout_secs")]
    request_timeout_secs: f64,
    #[serde(default)]
    batch: RawBatch,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    when_full: WhenFull,
    #[serde(default)]
    buffer: RawBuffer,
}

fn default_request_timeout_secs() -> f64 {
    10.0
}

/// How an HTTP sink lays out a batch.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HttpEncoding {
    /// One event per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// One JSON array of events (`application/json`).
    JsonArray,
    /// Splunk HTTP Event Collector envelopes (`/services/collector/event`).
    SplunkHec,
    /// Elasticsearch `_bulk` API: `index` actions with the event id as `_id`.
    ElasticsearchBulk,
}

/// `type = "kafka"`: produced to one topic, keyed by the SCIM resource id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafkaSink {
    name: Option<String>,
    #[serde(default)]
    format: EventFormat,
    /// Bootstrap brokers, `host:port`. Required.
    #[serde(default)]
    brokers: Vec<String>,
    /// Topic to produce to. Required.
    topic: Option<String>,
    #[serde(default)]
    compression: KafkaCompression,
    /// Connect with TLS. `tls_ca_file` adds a PEM CA bundle to the standard web roots.
    #[serde(default)]
    tls: bool,
    tls_ca_file: Option<PathBuf>,
    /// SASL authentication: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    sasl_mechanism: Option<String>,
    sasl_username: Option<String>,
    /// File holding the SASL password.
    sasl_password_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout_secs_plain")]
    connect_timeout_secs: f64,
    /// Time allowed for one produce request (acks = all) and its answer.
    #[serde(default = "default_request_timeout_secs")]
    request_timeout_secs: f64,
    #[serde(default)]
    batch: RawBatch,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    when_full: WhenFull,
    #[serde(default)]
    buffer: RawBuffer,
}

/// Compression of produced record batches.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    None,
    Gzip,
    Lz4,
    Snappy,
    #[default]
    Zstd,
}

/// `batch = { max_events, max_bytes, timeout_secs }`: how much a sink sends at once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    /// Most events in one batch.
    #[serde(default = "default_batch_max_events")]
    max_events: u64,
    /// Most bytes of encoded events in one batch (a single larger event goes alone).
    #[serde(default = "default_batch_max_bytes")]
    max_bytes: u64,
    /// How long a sink waits for a batch to fill once it holds one event (default 1 s for
    /// http and kafka, 5 ms for file, stdout and syslog). 0: send what is there at once.
    timeout_secs: Option<f64>,
}

impl Default for RawBatch {
    fn default() -> Self {
        RawBatch {
            max_events: default_batch_max_events(),
            max_bytes: default_batch_max_bytes(),
            timeout_secs: None,
        }
    }
}

fn default_batch_max_events() -> u64 {
    512
}
fn default_batch_max_bytes() -> u64 {
    1024 * 1024
}

/// `retry = { max_attempts, initial_backoff_secs, max_backoff_secs }`: what a sink does when
/// a batch fails. Waits double from the initial backoff up to the maximum, each with random
/// jitter (half to all of it); a receiver's `Retry-After` is honoured (up to the maximum).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    /// Attempts per batch (first try included) before its events are dropped and counted.
    #[serde(default = "default_retry_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_retry_initial_backoff_secs")]
    initial_backoff_secs: f64,
    #[serde(default = "default_retry_max_backoff_secs")]
    max_backoff_secs: f64,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            max_attempts: default_retry_max_attempts(),
            initial_backoff_secs: default_retry_initial_backoff_secs(),
            max_backoff_secs: default_retry_max_backoff_secs(),
        }
    }
}

fn default_retry_max_attempts() -> u32 {
    8
}
fn default_retry_initial_backoff_secs() -> f64 {
    0.1
}
fn default_retry_max_backoff_secs() -> f64 {
    30.0
}

/// `type = "syslog"`: RFC 5424 messages over UDP, TCP (RFC 6587 octet counting) or TLS
/// (RFC 5425), one event per message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslogSink {
    name: Option<String>,
    /// Line format: `"native"` (the JSON event, default), `"ocsf"`, `"ecs"` or `"cef"`.
    #[serde(default)]
    format: EventFormat,
    /// `host:port` of the receiver. Required.
    address: Option<String>,
    #[serde(default)]
    protocol: SyslogProtocol,
    /// Facility name (`auth`, `authpriv`, `local0` ... `local7`, ...).
    #[serde(default = "default_facility")]
    facility: String,
    #[serde(default = "default_app_name")]
    app_name: String,
    /// HOSTNAME field; defaults to this machine's host name.
    hostname: Option<String>,
    /// Extra PEM CA bundle trusted for `protocol = "tls"`, on top of the standard web roots.
    tls_ca_file: Option<PathBuf>,
    /// Name checked against the receiver's certificate; defaults to the host of `address`.
    tls_server_name: Option<String>,
    /// Largest message sent. A bigger event is not cut (half a JSON document is worse than
    /// none): it is dropped from this sink and counted (`reason="too_large"`). rsyslog's own
    /// default limit is 8 KiB (`global(maxMessageSize=...)`).
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: usize,
    #[serde(default = "default_connect_timeout_secs_plain")]
    connect_timeout_secs: f64,
    #[serde(default)]
    batch: RawBatch,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    when_full: WhenFull,
    #[serde(default)]
    buffer: RawBuffer,
}

fn default_facility() -> String {
    "auth".to_owned()
}
fn default_app_name() -> String {
    "scimtap".to_owned()
}
fn default_max_message_bytes() -> usize {
    8192
}
fn default_connect_timeout_secs_plain() -> f64 {
    5.0
}

/// Transport of a syslog sink.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SyslogProtocol {
    Udp,
    #[default]
    Tcp,
    Tls,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStdoutSink {
    /// Name used in metrics and logs. Defaults to the type (`stdout`, `file`) when there is
    /// one sink, and to `<type>-<index>` for every sink when there are several.
    name: Option<String>,
    /// Line format: `"native"` (the JSON event, default), `"ocsf"`, `"ecs"` or `"cef"`.
    #[serde(default)]
    format: EventFormat,
    #[serde(default)]
    batch: RawBatch,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    when_full: WhenFull,
    #[serde(default)]
    buffer: RawBuffer,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSink {
    name: Option<String>,
    /// Line format: `"native"` (the JSON event, default), `"ocsf"`, `"ecs"` or `"cef"`.
    #[serde(default)]
    format: EventFormat,
    /// File to append events to, one JSON object per line. Required.
    path: Option<PathBuf>,
    /// Rotate (rename to `<path>.1`, shift older ones) once the file reaches this size; 0 never.
    #[serde(default = "default_max_file_bytes")]
    max_file_bytes: u64,
    /// Rotated files kept (`<path>.1` .. `<path>.N`); older ones are deleted.
    #[serde(default = "default_keep_files")]
    keep_files: u32,
    #[serde(default)]
    batch: RawBatch,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    when_full: WhenFull,
    #[serde(default)]
    buffer: RawBuffer,
}

fn default_max_file_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_keep_files() -> u32 {
    10
}

/// `buffer = { type = "memory", max_events = N }` (default) or
/// `buffer = { type = "disk", path = "...", max_bytes = N }`: the sink's own queue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuffer {
    #[serde(rename = "type", default)]
    kind: BufferKind,
    /// Memory: events held. Disk: events read ahead into memory (a small number is enough).
    #[serde(default = "default_buffer_max_events")]
    max_events: u64,
    /// Disk: the directory of segment files (one per sink). Required for `type = "disk"`.
    path: Option<PathBuf>,
    /// Disk: most bytes kept on disk; past it `when_full` applies.
    max_bytes: Option<u64>,
}

impl Default for RawBuffer {
    fn default() -> Self {
        RawBuffer {
            kind: BufferKind::Memory,
            max_events: default_buffer_max_events(),
            path: None,
            max_bytes: None,
        }
    }
}

fn default_buffer_max_events() -> u64 {
    4096
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum BufferKind {
    #[default]
    Memory,
    Disk,
}

/// How a sink writes each event.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EventFormat {
    /// scimtap's JSON event (docs/events.md).
    #[default]
    Native,
    /// ArcSight Common Event Format, one `CEF:0|...` line per event.
    Cef,
    /// Elastic Common Schema: one ECS JSON document per line.
    Ecs,
    /// OCSF 1.8: Account Change, Group Management or API Activity, one JSON object per line.
    Ocsf,
}

/// What a sink's queue does when the sink cannot keep up.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room. Only the audit worker waits, never a request; if the sink stays stalled
    /// the hand-off queue fills and further events are dropped and counted there.
    #[default]
    Block,
    /// Drop the event that does not fit and count it
    /// (`scimtap_sink_events_dropped_total{reason="queue_full"}`).
    DropNewest,
}

// === resolved configuration ===

/// A validated configuration: every value resolved, every file read.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub origin: PathBuf,
    pub shutdown_timeout: Duration,
    pub listen: ListenConfig,
    pub upstream: UpstreamConfig,
    pub admin: Option<AdminConfig>,
    pub capture: CaptureConfig,
    pub audit: AuditConfig,
    pub sinks: Vec<SinkConfig>,
    pub scim: ScimConfig,
    pub integrity: IntegrityConfig,
}

/// How events describe SCIM traffic: endpoints, clients, redaction and privacy.
#[derive(Debug, Clone, Default)]
pub struct ScimConfig {
    pub base_path: Option<String>,
    /// Custom resource types: lower-case endpoint segment → type name.
    pub resource_types: Vec<(String, String)>,
    pub clients: Vec<ClientConfig>,
    /// Refuse (401) requests from clients matching no entry of `clients`.
    pub clients_required: bool,
    pub redact_attributes: Vec<String>,
    pub redact_query_params: Vec<String>,
    /// The HMAC key for pseudonymisation. Never printed.
    pub hash_key: Option<SecretKey>,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub name: String,
    pub token_sha256: Option<[u8; 32]>,
    /// Normalised with [`normalize_subject`].
    pub cert_subject: Option<String>,
    pub idp: Option<String>,
}

/// Key material read from a `*_file` option. Debug shows only its length.
#[derive(Clone)]
pub struct SecretKey(pub Vec<u8>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(<{} bytes redacted>)", self.0.len())
    }
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub address: SocketAddr,
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
pub struct UpstreamConfig {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix of the upstream URL without a trailing slash ("" for none).
    pub base_path: String,
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub preserve_host: bool,
}

impl UpstreamConfig {
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub address: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub max_body_bytes: usize,
    pub max_pending_bytes: usize,
    pub include_bodies: IncludeBodies,
}

/// `capture.include_bodies`: whether events carry the bodies.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IncludeBodies {
    /// No bodies in events (the default).
    #[default]
    None,
    /// JSON bodies with every sensitive value replaced by `[REDACTED]`.
    Redacted,
}

/// The hash chain's settings.
#[derive(Debug, Clone)]
pub struct IntegrityConfig {
    /// `None`: plain SHA-256.
    pub key: Option<SecretKey>,
    /// Zero: no checkpoints.
    pub checkpoint_interval: Duration,
    pub state_file: Option<PathBuf>,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig {
            key: None,
            checkpoint_interval: Duration::from_secs_f64(
                *default_checkpoint_interval_secs().get_ref(),
            ),
            state_file: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub queue_max_events: usize,
    pub on_audit_failure: OnAuditFailure,
    pub mode: AuditMode,
    pub write_ahead_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub format: EventFormat,
    pub when_full: WhenFull,
    pub max_events: usize,
    /// `Some` when the queue is kept on disk.
    pub disk_buffer: Option<DiskBufferConfig>,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub kind: SinkKind,
}

#[derive(Debug, Clone)]
pub struct DiskBufferConfig {
    pub path: PathBuf,
    pub max_bytes: u64,
}

const DEFAULT_DISK_BUFFER_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub max_events: usize,
    pub max_bytes: usize,
    /// Zero: send what is queued at once.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    Stdout,
    File(FileSinkConfig),
    Syslog(SyslogSinkConfig),
    Http(HttpSinkConfig),
    Kafka(KafkaSinkConfig),
}

#[derive(Debug, Clone)]
pub struct HttpSinkConfig {
    pub url: http::Uri,
    pub encoding: HttpEncoding,
    /// Plain headers and the ones read from files; values from files are marked sensitive
    /// (`HeaderValue::set_sensitive`), so hyper never logs them.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub index: Option<String>,
    pub source: String,
    pub sourcetype: String,
    pub host: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    pub brokers: Vec<String>,
    pub topic: String,
    pub compression: KafkaCompression,
    /// `Some` (possibly empty: web roots only) when connecting with TLS.
    pub tls_extra_roots: Option<Vec<CertificateDer<'static>>>,
    pub sasl: Option<KafkaSasl>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: SecretKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

#[derive(Debug, Clone)]
pub struct SyslogSinkConfig {
    /// `host:port` as written (resolved when connecting).
    pub address: String,
    pub protocol: SyslogProtocol,
    /// Facility code (RFC 5424 §6.2.1).
    pub facility: u8,
    pub app_name: String,
    pub hostname: Option<String>,
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub tls_server_name: Option<String>,
    pub max_message_bytes: usize,
    pub connect_timeout: Duration,
}

/// RFC 5424 facility codes by name.
fn facility_code(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .and_then(|i| u8::try_from(i).ok())
}

#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    pub path: PathBuf,
    pub max_file_bytes: u64,
    pub keep_files: u32,
}

// === errors ===

/// One thing wrong with the file: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

/// Why a configuration was refused. Display lists every problem, one per line, each as
/// `file:line: key: message`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(file: &Path, problems: &[Problem]) -> String {
    let mut out = format!(
        "{} has {} problem{}:",
        file.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&file.display().to_string());
        if let Some(line) = p.line {
            out.push_str(&format!(":{line}"));
        }
        if p.key.is_empty() {
            out.push_str(&format!(": {}", p.message));
        } else {
            out.push_str(&format!(": {}: {}", p.key, p.message));
        }
    }
    out
}

// === loading ===

impl Config {
    /// Reads and validates `path`.
    ///
    /// # Errors
    /// [`ConfigError::Read`] if the file cannot be read, [`ConfigError::Invalid`] listing every
    /// problem otherwise.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text, path)
    }

    /// Parses and validates `text`; `origin` names the file in messages and anchors relative
    /// paths (TLS files, sink paths are taken as written, relative to the working directory).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with every problem found.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let (expanded, unset) = expand_env(text, |name| std::env::var(name).ok());
        if !unset.is_empty() {
            return Err(ConfigError::Invalid {
                file: origin.to_owned(),
                problems: unset,
            });
        }
        let mut src = expanded;
        let mut problems = Vec::new();
        for _ in 0..MAX_PASSES {
            match parse_pass(&src) {
                Ok((raw, sinks)) => {
                    if problems.is_empty() {
                        return raw.validate(&src, sinks, origin);
                    }
                    // Still report what validation finds in the parts that did parse.
                    if let Err(ConfigError::Invalid { problems: more, .. }) =
                        raw.validate(&src, sinks, origin)
                    {
                        // One problem per key: a key already reported (an unknown sink
                        // type, then that sink's missing type) is not reported again.
                        for p in more {
                            if !problems.iter().any(|q: &Problem| q.key == p.key) {
                                problems.push(p);
                            }
                        }
                    }
                    break;
                }
                Err(PassError::Syntax(p)) => {
                    // A syntax error in the original text is reported; one caused by our own
                    // blanking of a multi-line value is not the user's and is dropped.
                    if problems.is_empty() {
                        problems.push(p);
                    }
                    break;
                }
                Err(PassError::Field(p)) => {
                    let line = p.line;
                    if !problems.iter().any(|q| q.key == p.key) {
                        problems.push(p);
                    }
                    match line {
                        Some(line) => blank_entry(&mut src, line),
                        None => break,
                    }
                }
            }
        }
        problems.dedup();
        Err(ConfigError::Invalid {
            file: origin.to_owned(),
            problems,
        })
    }
}

enum PassError {
    Syntax(Problem),
    Field(Problem),
}

/// Replaces `${NAME}` with the environment variable NAME (so secrets and paths such as
/// systemd's `${CREDENTIALS_DIRECTORY}` can come from the environment); `$${` stands for a
/// literal `${`. Unset variables are problems, reported by line, never by value.
fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> (String, Vec<Problem>) {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            match after.find('}') {
                Some(end)
                    if end > 0
                        && after[..end]
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
                {
                    let name = &after[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => problems.push(Problem {
                            line: Some(line_of(text, text.len() - tail.len())),
                            key: format!("${{{name}}}"),
                            message: format!("environment variable {name} is not set"),
                        }),
                    }
                    rest = &after[end + 1..];
                }
                _ => {
                    out.push_str("${");
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    (out, problems)
}

/// One parse of the (possibly repaired) text: the top level, then each sink on its own.
fn parse_pass(src: &str) -> Result<(RawConfig, Vec<(usize, RawSink)>), PassError> {
    let de = toml::Deserializer::parse(src).map_err(|e| {
        PassError::Syntax(Problem {
            line: e.span().map(|s| line_of(src, s.start)),
            key: String::new(),
            message: format!("invalid TOML: {}", e.message()),
        })
    })?;
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = error_key(&e.path().to_string(), e.inner().message());
        let line = e
            .inner()
            .span()
            .map(|s| line_of(src, s.start))
            .filter(|_| !key.is_empty());
        PassError::Field(Problem {
            line,
            key,
            message: e.inner().message().to_owned(),
        })
    })?;
    let mut sinks = Vec::new();
    for (index, table) in raw.sinks.iter().flatten().enumerate() {
        let start = table.span().start;
        let value = toml::Value::Table(table.get_ref().clone());
        match deserialize_sink(value) {
            Ok(sink) => sinks.push((line_of(src, start), sink)),
            Err((field, message)) => {
                let line = find_key_line(src, table.span(), last_segment(&field))
                    .unwrap_or_else(|| line_of(src, start));
                let key = if field.is_empty() {
                    format!("sinks[{index}]")
                } else {
                    format!("sinks[{index}].{field}")
                };
                return Err(PassError::Field(Problem {
                    line: Some(line),
                    key,
                    message,
                }));
            }
        }
    }
    Ok((raw, sinks))
}

const SINK_TYPES: &str = "`file`, `stdout`, `syslog`, `http` or `kafka`";

/// One `[[sinks]]` table: `type` picks the struct, which then gets the rest of the table.
/// Done by hand rather than by a `type`-tagged enum, whose buffering loses the path of a bad
/// field (`buffer.max_events`). Errors come back as (dotted field, message).
fn deserialize_sink(value: toml::Value) -> Result<RawSink, (String, String)> {
    let toml::Value::Table(mut table) = value else {
        return Err((String::new(), "a sink must be a table".to_owned()));
    };
    let kind = table.remove("type");
    let rest = toml::Value::Table(table);
    fn fields<T: serde::de::DeserializeOwned>(rest: toml::Value) -> Result<T, (String, String)> {
        serde_path_to_error::deserialize::<_, T>(rest).map_err(|e| {
            let message = e.inner().message().to_owned();
            (error_key(&e.path().to_string(), &message), message)
        })
    }
    match kind.as_ref().map(|k| k.as_str()) {
        Some(Some("file")) => fields(rest).map(RawSink::File),
        Some(Some("stdout")) => fields(rest).map(RawSink::Stdout),
        Some(Some("syslog")) => fields(rest).map(RawSink::Syslog),
        Some(Some("http")) => fields(rest).map(RawSink::Http),
        Some(Some("kafka")) => fields(rest).map(RawSink::Kafka),
        Some(Some(other)) => Err((
            "type".to_owned(),
            format!("unknown sink type `{other}`, expected {SINK_TYPES}"),
        )),
        Some(None) => Err((
            "type".to_owned(),
            format!("`type` must be a string: {SINK_TYPES}"),
        )),
        None => Err((
            "type".to_owned(),
            format!("missing: a sink needs a `type`: {SINK_TYPES}"),
        )),
    }
}

/// The dotted key of an error: serde's path without the `Spanned` wrapper's internal
/// segments, and, for an unknown key (reported at its parent), the key itself.
fn error_key(path: &str, message: &str) -> String {
    let mut segments: Vec<&str> = path
        .split('.')
        .filter(|s| !s.is_empty() && !s.starts_with("$__"))
        .collect();
    let unknown = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))
        .and_then(|rest| rest.split('`').next());
    if let Some(field) = unknown {
        if segments.last() != Some(&field) {
            segments.push(field);
        }
    }
    segments.join(".")
}

fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// 1-based line of byte offset `at`.
fn line_of(src: &str, at: usize) -> usize {
    let at = at.min(src.len());
    src.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The line of `key` inside the table whose header starts at `span` (toml gives an
/// array-of-tables entry the span of its header only, and no position for errors found after
/// the entry was read as a whole).
fn find_key_line(src: &str, span: std::ops::Range<usize>, key: &str) -> Option<usize> {
    if key.is_empty() || key.contains('[') {
        return None;
    }
    let table = header_name(src.get(span.clone())?);
    let mut offset = span.end.min(src.len());
    for line in src.get(offset..)?.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') && !is_sub_table(trimmed, table) {
            break;
        }
        if let Some(rest) = trimmed.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Some(line_of(src, offset));
            }
        }
        offset += line.len();
    }
    None
}

/// `sinks` for `[[sinks]]`, `upstream` for `[upstream]` (comments and spaces ignored).
fn header_name(header: &str) -> &str {
    header
        .split('#')
        .next()
        .unwrap_or("")
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim()
}

/// Whether a header line opens a sub-table of `table` (`[sinks.buffer]` of `sinks`).
fn is_sub_table(line: &str, table: &str) -> bool {
    !table.is_empty()
        && header_name(line.lines().next().unwrap_or("")).starts_with(&format!("{table}."))
}

/// Blanks the entry at `line` so the next pass can see past it. Spaces keep every byte offset
/// (and so every later line number) where it was. A table header takes its whole table with it,
/// so its keys are not misread as belonging to the table before.
fn blank_entry(src: &mut String, line: usize) {
    let mut starts: Vec<usize> = vec![0];
    starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
    let Some(&start) = starts.get(line - 1) else {
        return;
    };
    let first = src[start..].trim_start();
    let is_header = first.starts_with('[');
    let mut end_line = line;
    if is_header {
        // The table's own sub-tables (`[sinks.buffer]` under `[[sinks]]`) go with it.
        let table = header_name(first.lines().next().unwrap_or("")).to_owned();
        while let Some(&s) = starts.get(end_line) {
            let next = src[s..].trim_start();
            if next.starts_with('[') && !is_sub_table(next, &table) {
                break;
            }
            end_line += 1;
        }
    }
    let end = starts.get(end_line).copied().unwrap_or(src.len());
    let blanked: String = src[start..end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    // Multi-byte characters become one space each; pad so offsets after stay put.
    let pad = (end - start).saturating_sub(blanked.len());
    let mut replacement = blanked;
    if pad > 0 {
        let newline_at_end = replacement.ends_with('\n');
        if newline_at_end {
            replacement.pop();
        }
        replacement.push_str(&" ".repeat(pad));
        if newline_at_end {
            replacement.push('\n');
        }
    }
    src.replace_range(start..end, &replacement);
}

// === validation ===

/// Collects problems with their lines while resolving values.
struct Checker<'a> {
    src: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, key: &str, message: impl Into<String>) {
        let line = (span.end > 0).then(|| line_of(self.src, span.start));
        self.problems.push(Problem {
            line,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn line(&mut self, line: Option<usize>, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn secs(&mut self, value: &Spanned<f64>, key: &str) -> Duration {
        let secs = *value.get_ref();
        if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0 * 365.0) {
            self.at(
                value.span(),
                key,
                format!("must be a positive number of seconds, got {secs}"),
            );
            return Duration::from_secs(1);
        }
        Duration::from_secs_f64(secs)
    }

    fn socket_addr(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.at(
                    value.span(),
                    key,
                    format!(
                        "`{}` is not an IP:PORT socket address (e.g. \"127.0.0.1:8080\")",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// [`Checker::certs`] for a key inside a `[[sinks]]` table (known by line, not span).
    fn certs_at(&mut self, line: usize, key: &str, path: &Path) -> Vec<CertificateDer<'static>> {
        let certs = self.certs(&Spanned::new(0..0, path.to_path_buf()), key);
        if let Some(last) = self.problems.last_mut() {
            if last.key == key && last.line.is_none() {
                last.line = Some(line);
            }
        }
        certs
    }

    /// A secret read from a file: trimmed, non-empty.
    fn secret_at(&mut self, line: usize, key: &str, path: &Path) -> Option<SecretKey> {
        match std::fs::read(path) {
            Ok(bytes) if !bytes.trim_ascii().is_empty() => {
                Some(SecretKey(bytes.trim_ascii().to_vec()))
            }
            Ok(_) => {
                self.line(Some(line), key, format!("{} is empty", path.display()));
                None
            }
            Err(e) => {
                self.line(
                    Some(line),
                    key,
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }

    /// A number of seconds inside a `[[sinks]]` table; `zero_ok` admits 0.
    fn secs_at(&mut self, line: usize, key: &str, secs: f64, zero_ok: bool) -> Duration {
        if secs.is_finite() && (secs > 0.0 || (zero_ok && secs == 0.0)) && secs <= 86_400.0 {
            Duration::from_secs_f64(secs)
        } else {
            let range = if zero_ok { "0" } else { "more than 0" };
            self.line(
                Some(line),
                key,
                format!("must be {range} and at most 86400 seconds, got {secs}"),
            );
            Duration::from_secs(1)
        }
    }

    fn certs(&mut self, value: &Spanned<PathBuf>, key: &str) -> Vec<CertificateDer<'static>> {
        let path = value.get_ref();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>());
        match certs {
            Ok(certs) if !certs.is_empty() => certs,
            Ok(_) => {
                self.at(
                    value.span(),
                    key,
                    format!("{} holds no PEM CERTIFICATE block", path.display()),
                );
                Vec::new()
            }
            Err(e) => {
                self.at(
                    value.span(),
                    key,
                    format!("cannot load certificates from {}: {e}", path.display()),
                );
                Vec::new()
            }
        }
    }
}

impl RawConfig {
    fn validate(
        self,
        src: &str,
        sinks: Vec<(usize, RawSink)>,
        origin: &Path,
    ) -> Result<Config, ConfigError> {
        let mut c = Checker {
            src,
            problems: Vec::new(),
        };
        let shutdown_timeout = c.secs(&self.shutdown_timeout_secs, "shutdown_timeout_secs");
        let listen = match &self.listen {
            None => {
                c.line(None, "listen", "missing section [listen] (with `address`)");
                None
            }
            Some(listen) => validate_listen(&mut c, listen),
        };
        let upstream = match &self.upstream {
            None => {
                c.line(None, "upstream", "missing section [upstream] (with `url`)");
                None
            }
            Some(upstream) => validate_upstream(&mut c, upstream),
        };
        let admin = self
            .admin
            .as_ref()
            .and_then(|admin| match &admin.get_ref().address {
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
            });
        let capture = match &self.capture {
            None => CaptureConfig {
                max_body_bytes: *default_max_body_bytes().get_ref() as usize,
                max_pending_bytes: *default_max_pending_bytes().get_ref() as usize,
                include_bodies: IncludeBodies::None,
            },
            Some(capture) => {
                let raw = capture.get_ref();
                let (body, pending) = (&raw.max_body_bytes, &raw.max_pending_bytes);
                if *body.get_ref() > 1 << 30 {
                    c.at(
                        body.span(),
                        "capture.max_body_bytes",
                        "must be at most 1 GiB",
                    );
                }
                if *pending.get_ref() > 64 << 30 {
                    c.at(
                        pending.span(),
                        "capture.max_pending_bytes",
                        "must be at most 64 GiB",
                    );
                }
                CaptureConfig {
                    max_body_bytes: usize::try_from(*body.get_ref()).unwrap_or(usize::MAX),
                    max_pending_bytes: usize::try_from(*pending.get_ref()).unwrap_or(usize::MAX),
                    include_bodies: raw.include_bodies,
                }
            }
        };
        let audit = match &self.audit {
            None => AuditConfig {
                queue_max_events: *default_queue_max_events().get_ref() as usize,
                on_audit_failure: OnAuditFailure::Drop,
                mode: AuditMode::Async,
                write_ahead_timeout: Duration::from_millis(
                    *default_write_ahead_timeout_ms().get_ref(),
                ),
            },
            Some(audit) => {
                let max = &audit.get_ref().queue_max_events;
                if *max.get_ref() == 0 || *max.get_ref() > 10_000_000 {
                    c.at(
                        max.span(),
                        "audit.queue_max_events",
                        "must be between 1 and 10000000",
                    );
                }
                let timeout = &audit.get_ref().write_ahead_timeout_ms;
                if !(1..=60_000).contains(timeout.get_ref()) {
                    c.at(
                        timeout.span(),
                        "audit.write_ahead_timeout_ms",
                        "must be between 1 and 60000",
                    );
                }
                AuditConfig {
                    queue_max_events: (*max.get_ref()).clamp(1, 10_000_000) as usize,
                    on_audit_failure: audit.get_ref().on_audit_failure,
                    mode: audit.get_ref().mode,
                    write_ahead_timeout: Duration::from_millis(*timeout.get_ref()),
                }
            }
        };
        let sinks = validate_sinks(&mut c, sinks);
        let scim = validate_scim(&mut c, &self);
        let integrity = validate_integrity(&mut c, self.integrity.as_ref());
        if audit.mode == AuditMode::WriteAhead
            && !sinks.iter().any(|s| {
                s.format == EventFormat::Native
                    && (matches!(s.kind, SinkKind::File(_)) || s.disk_buffer.is_some())
            })
        {
            c.line(
                None,
                "audit.mode",
                "write_ahead needs a durable place for intent records: a native-format file sink, or a native-format sink with a disk buffer",
            );
        }

        if let (Some(listen), Some(admin)) = (&listen, &admin) {
            if listen.address == admin.address && listen.address.port() != 0 {
                c.line(None, "admin.address", "must differ from listen.address");
            }
        }

        match (listen, upstream) {
            (Some(listen), Some(upstream)) if c.problems.is_empty() => Ok(Config {
                origin: origin.to_owned(),
                shutdown_timeout,
                listen,
                upstream,
                admin,
                capture,
                audit,
                sinks,
                scim,
                integrity,
            }),
            _ => Err(ConfigError::Invalid {
                file: origin.to_owned(),
                problems: c.problems,
            }),
        }
    }
}

fn validate_listen(c: &mut Checker<'_>, listen: &Spanned<RawListen>) -> Option<ListenConfig> {
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
    Some(ListenConfig {
        address: address?,
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

fn validate_upstream(
    c: &mut Checker<'_>,
    upstream: &Spanned<RawUpstream>,
) -> Option<UpstreamConfig> {
    let raw = upstream.get_ref();
    let connect_timeout = c.secs(&raw.connect_timeout_secs, "upstream.connect_timeout_secs");
    let response_timeout = c.secs(&raw.response_timeout_secs, "upstream.response_timeout_secs");
    let pool_idle_timeout = c.secs(
        &raw.pool_idle_timeout_secs,
        "upstream.pool_idle_timeout_secs",
    );
    let Some(url) = &raw.url else {
        c.at(
            upstream.span(),
            "upstream.url",
            "missing: [upstream] needs a `url`",
        );
        return None;
    };
    let parsed = match url.get_ref().parse::<Uri>() {
        Ok(uri) => uri,
        Err(e) => {
            c.at(url.span(), "upstream.url", format!("not a URL: {e}"));
            return None;
        }
    };
    let scheme = match parsed.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        _ => {
            c.at(
                url.span(),
                "upstream.url",
                "must start with http:// or https://",
            );
            return None;
        }
    };
    let Some(authority) = parsed.authority().cloned() else {
        c.at(url.span(), "upstream.url", "needs a host");
        return None;
    };
    if authority.as_str().contains('@') {
        c.at(
            url.span(),
            "upstream.url",
            "must not carry credentials; scimtap forwards the client's own Authorization",
        );
        return None;
    }
    if parsed.query().is_some() {
        c.at(url.span(), "upstream.url", "must not have a query string");
        return None;
    }
    let extra_roots = match &raw.ca_file {
        Some(ca) => {
            if scheme != Scheme::HTTPS {
                c.at(
                    ca.span(),
                    "upstream.ca_file",
                    "only used with an https:// upstream url",
                );
            }
            c.certs(ca, "upstream.ca_file")
        }
        None => Vec::new(),
    };
    Some(UpstreamConfig {
        scheme,
        authority,
        base_path: parsed.path().trim_end_matches('/').to_owned(),
        extra_roots,
        connect_timeout,
        response_timeout,
        pool_idle_timeout,
        preserve_host: raw.preserve_host,
    })
}

fn validate_scim(c: &mut Checker<'_>, raw: &RawConfig) -> ScimConfig {
    let mut out = ScimConfig::default();
    if let Some(scim) = &raw.scim {
        let scim = scim.get_ref();
        if let Some(base) = &scim.base_path {
            if !base.get_ref().starts_with('/') {
                c.at(
                    base.span(),
                    "scim.base_path",
                    "must start with `/` (e.g. \"/scim/v2\")",
                );
            }
            out.base_path = Some(base.get_ref().trim_end_matches('/').to_owned());
        }
        for (i, rt) in scim.resource_types.iter().enumerate() {
            let key = format!("scim.resource_types[{i}]");
            let segment = rt.get_ref().endpoint.trim_matches('/').to_ascii_lowercase();
            if segment.is_empty() || segment.contains('/') {
                c.at(
                    rt.span(),
                    &format!("{key}.endpoint"),
                    "must be one path segment such as \"/Devices\"",
                );
            } else if segment == "users" || segment == "groups" {
                c.at(
                    rt.span(),
                    &format!("{key}.endpoint"),
                    "Users and Groups are built in",
                );
            } else {
                out.resource_types
                    .push((segment, rt.get_ref().name.clone()));
            }
        }
    }
    for (i, client) in raw.clients.iter().enumerate() {
        let key = format!("clients[{i}]");
        let raw_client = client.get_ref();
        let token_sha256 = raw_client.token_sha256.as_ref().and_then(|hex| {
            let parsed = parse_sha256_hex(hex.get_ref());
            if parsed.is_none() {
                c.at(
                    hex.span(),
                    &format!("{key}.token_sha256"),
                    "must be 64 hex digits: the SHA-256 of the token (printf %s \"$TOKEN\" | sha256sum)",
                );
            }
            parsed
        });
        if raw_client.token_sha256.is_none() && raw_client.cert_subject.is_none() {
            c.at(
                client.span(),
                &format!("{key}.token_sha256"),
                "missing: a client is matched by its token's SHA-256 or its certificate's subject (cert_subject)",
            );
        }
        if out
            .clients
            .iter()
            .any(|o: &ClientConfig| o.name == raw_client.name)
        {
            c.at(
                client.span(),
                &format!("{key}.name"),
                format!("duplicate client name `{}`", raw_client.name),
            );
        }
        out.clients_required |= raw_client.required;
        out.clients.push(ClientConfig {
            name: raw_client.name.clone(),
            token_sha256,
            cert_subject: raw_client.cert_subject.as_deref().map(normalize_subject),
            idp: raw_client.idp.clone(),
        });
    }
    if let Some(redact) = &raw.redact {
        out.redact_attributes = redact.get_ref().attributes.clone();
        out.redact_query_params = redact.get_ref().query_params.clone();
    }
    if let Some(file) = raw
        .privacy
        .as_ref()
        .and_then(|p| p.get_ref().hash_key_file.as_ref())
    {
        match std::fs::read(file.get_ref()) {
            Ok(key) if key.iter().filter(|b| !b.is_ascii_whitespace()).count() >= 16 => {
                let trimmed: Vec<u8> = key.trim_ascii().to_vec();
                out.hash_key = Some(SecretKey(trimmed));
            }
            Ok(_) => c.at(
                file.span(),
                "privacy.hash_key_file",
                format!("{} holds fewer than 16 bytes: use a long random key (e.g. openssl rand -hex 32)", file.get_ref().display()),
            ),
            Err(e) => c.at(
                file.span(),
                "privacy.hash_key_file",
                format!("cannot read {}: {e}", file.get_ref().display()),
            ),
        }
    }
    out
}

fn validate_integrity(c: &mut Checker<'_>, raw: Option<&Spanned<RawIntegrity>>) -> IntegrityConfig {
    let mut out = IntegrityConfig::default();
    let Some(raw) = raw else {
        return out;
    };
    let raw = raw.get_ref();
    let interval = *raw.checkpoint_interval_secs.get_ref();
    if interval != 0.0 {
        out.checkpoint_interval = c.secs(
            &raw.checkpoint_interval_secs,
            "integrity.checkpoint_interval_secs",
        );
    } else {
        out.checkpoint_interval = Duration::ZERO;
    }
    out.state_file = raw.state_file.as_ref().map(|f| f.get_ref().clone());
    if let Some(file) = &raw.key_file {
        match std::fs::read(file.get_ref()) {
            Ok(key) if key.trim_ascii().len() >= 16 => {
                out.key = Some(SecretKey(key.trim_ascii().to_vec()));
            }
            Ok(_) => c.at(
                file.span(),
                "integrity.key_file",
                format!(
                    "{} holds fewer than 16 bytes: use a long random key (e.g. openssl rand -hex 32)",
                    file.get_ref().display()
                ),
            ),
            Err(e) => c.at(
                file.span(),
                "integrity.key_file",
                format!("cannot read {}: {e}", file.get_ref().display()),
            ),
        }
    }
    out
}

/// A distinguished name for comparison: no spaces around `,` and `=`, lower case, RDNs in
/// sorted order (so `CN=a,O=b` written either way round matches).
pub fn normalize_subject(subject: &str) -> String {
    let mut rdns: Vec<String> = subject
        .split(',')
        .map(|rdn| {
            rdn.split('=')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("=")
                .to_lowercase()
        })
        .collect();
    rdns.sort();
    rdns.join(",")
}

fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn validate_sinks(c: &mut Checker<'_>, sinks: Vec<(usize, RawSink)>) -> Vec<SinkConfig> {
    let mut out: Vec<SinkConfig> = Vec::new();
    if sinks.is_empty() {
        c.line(
            None,
            "sinks",
            "no [[sinks]] configured: add at least one (type = \"file\", \"stdout\", \"syslog\", \"http\" or \"kafka\"), or events have nowhere to go",
        );
    }
    let total = sinks.len();
    for (index, (line, sink)) in sinks.into_iter().enumerate() {
        let key = |field: &str| format!("sinks[{index}].{field}");
        let format = match &sink {
            RawSink::Stdout(s) => s.format,
            RawSink::File(f) => f.format,
            RawSink::Syslog(s) => s.format,
            RawSink::Http(h) => h.format,
            RawSink::Kafka(k) => k.format,
        };
        let (name, when_full, buffer, batch, retry, kind) = match sink {
            RawSink::Stdout(s) => (
                s.name,
                s.when_full,
                s.buffer,
                s.batch,
                s.retry,
                SinkKind::Stdout,
            ),
            RawSink::Http(h) => {
                let Some(kind) = validate_http(c, line, &key, &h) else {
                    continue;
                };
                (h.name, h.when_full, h.buffer, h.batch, h.retry, kind)
            }
            RawSink::Kafka(k) => {
                let Some(kind) = validate_kafka(c, line, &key, &k) else {
                    continue;
                };
                (k.name, k.when_full, k.buffer, k.batch, k.retry, kind)
            }
            RawSink::Syslog(s) => {
                let Some(address) = s.address else {
                    c.line(
                        Some(line),
                        &key("address"),
                        "missing: a syslog sink needs an `address` (host:port)",
                    );
                    continue;
                };
                if address
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    c.line(
                        Some(line),
                        &key("address"),
                        format!("`{address}` is not host:port"),
                    );
                }
                let facility = facility_code(&s.facility).unwrap_or_else(|| {
                    c.line(
                        Some(line),
                        &key("facility"),
                        format!("unknown facility `{}` (auth, authpriv, daemon, local0 ... local7, ...)", s.facility),
                    );
                    4
                });
                if !(480..=1_048_576).contains(&s.max_message_bytes) {
                    c.line(
                        Some(line),
                        &key("max_message_bytes"),
                        "must be between 480 and 1048576",
                    );
                }
                if s.app_name.is_empty()
                    || s.app_name.len() > 48
                    || !s.app_name.bytes().all(|b| b.is_ascii_graphic())
                {
                    c.line(
                        Some(line),
                        &key("app_name"),
                        "must be 1 to 48 printable ASCII characters (RFC 5424)",
                    );
                }
                let extra_roots = match &s.tls_ca_file {
                    Some(path) => c.certs_at(line, &key("tls_ca_file"), path),
                    None => Vec::new(),
                };
                if s.protocol != SyslogProtocol::Tls
                    && (s.tls_ca_file.is_some() || s.tls_server_name.is_some())
                {
                    c.line(
                        Some(line),
                        &key("protocol"),
                        "tls_ca_file and tls_server_name need protocol = \"tls\"",
                    );
                }
                let connect_timeout = c.secs(
                    &Spanned::new(0..0, s.connect_timeout_secs),
                    &key("connect_timeout_secs"),
                );
                (
                    s.name,
                    s.when_full,
                    s.buffer,
                    s.batch,
                    s.retry,
                    SinkKind::Syslog(SyslogSinkConfig {
                        address,
                        protocol: s.protocol,
                        facility,
                        app_name: s.app_name,
                        hostname: s.hostname,
                        extra_roots,
                        tls_server_name: s.tls_server_name,
                        max_message_bytes: s.max_message_bytes,
                        connect_timeout,
                    }),
                )
            }
            RawSink::File(f) => {
                let Some(path) = f.path else {
                    c.line(
                        Some(line),
                        &key("path"),
                        "missing: a file sink needs a `path`",
                    );
                    continue;
                };
                if f.keep_files == 0 && f.max_file_bytes > 0 {
                    c.line(
                        Some(line),
                        &key("keep_files"),
                        "must be at least 1 when rotating",
                    );
                }
                (
                    f.name,
                    f.when_full,
                    f.buffer,
                    f.batch,
                    f.retry,
                    SinkKind::File(FileSinkConfig {
                        path,
                        max_file_bytes: f.max_file_bytes,
                        keep_files: f.keep_files,
                    }),
                )
            }
        };
        let disk_buffer = match buffer.kind {
            BufferKind::Memory => {
                if buffer.path.is_some() || buffer.max_bytes.is_some() {
                    c.line(
                        Some(line),
                        &key("buffer.type"),
                        "path and max_bytes are for buffer type = \"disk\"",
                    );
                }
                None
            }
            BufferKind::Disk => {
                let max_bytes = buffer.max_bytes.unwrap_or(DEFAULT_DISK_BUFFER_BYTES);
                if max_bytes < 1024 * 1024 {
                    c.line(
                        Some(line),
                        &key("buffer.max_bytes"),
                        "must be at least 1048576 (1 MiB)",
                    );
                }
                match buffer.path {
                    Some(path) => Some(DiskBufferConfig { path, max_bytes }),
                    None => {
                        c.line(
                            Some(line),
                            &key("buffer.path"),
                            "missing: a disk buffer needs a `path` (a directory of its own)",
                        );
                        None
                    }
                }
            }
        };
        if let Some(disk) = &disk_buffer {
            let clash = out.iter().any(|s| {
                s.disk_buffer
                    .as_ref()
                    .is_some_and(|other| other.path == disk.path)
            });
            if clash {
                c.line(
                    Some(line),
                    &key("buffer.path"),
                    format!("{} is already another sink's buffer", disk.path.display()),
                );
            }
        }
        if buffer.max_events == 0 || buffer.max_events > 10_000_000 {
            c.line(
                Some(line),
                &key("buffer.max_events"),
                "must be between 1 and 10000000",
            );
        }
        let type_name = match &kind {
            SinkKind::Stdout => "stdout",
            SinkKind::File(_) => "file",
            SinkKind::Syslog(_) => "syslog",
            SinkKind::Http(_) => "http",
            SinkKind::Kafka(_) => "kafka",
        };
        let network = matches!(kind, SinkKind::Http(_) | SinkKind::Kafka(_));
        let batch = validate_batch(c, line, &key, &batch, network);
        let retry = validate_retry(c, line, &key, &retry);
        let name = name.unwrap_or_else(|| {
            if total == 1 {
                type_name.to_owned()
            } else {
                format!("{type_name}-{index}")
            }
        });
        if out.iter().any(|s| s.name == name) {
            c.line(
                Some(line),
                &key("name"),
                format!("duplicate sink name `{name}`"),
            );
        }
        if let SinkKind::File(file) = &kind {
            let clash = out
                .iter()
                .any(|s| matches!(&s.kind, SinkKind::File(o) if o.path == file.path));
            if clash {
                c.line(
                    Some(line),
                    &key("path"),
                    format!("{} is already written by another sink", file.path.display()),
                );
            }
        }
        out.push(SinkConfig {
            name,
            format,
            when_full,
            max_events: buffer.max_events.clamp(1, 10_000_000) as usize,
            disk_buffer,
            batch,
            retry,
            kind,
        });
    }
    out
}

fn validate_batch(
    c: &mut Checker<'_>,
    line: usize,
    key: &dyn Fn(&str) -> String,
    raw: &RawBatch,
    network: bool,
) -> BatchConfig {
    if !(1..=100_000).contains(&raw.max_events) {
        c.line(
            Some(line),
            &key("batch.max_events"),
            "must be between 1 and 100000",
        );
    }
    if !(1024..=256 * 1024 * 1024).contains(&raw.max_bytes) {
        c.line(
            Some(line),
            &key("batch.max_bytes"),
            "must be between 1024 and 268435456",
        );
    }
    // Network sinks wait a little for a fuller batch (fewer requests); local ones linger
    // 5 ms, so under load one write (and one wake-up of the sink thread) carries many events.
    let default_timeout = if network { 1.0 } else { 0.005 };
    let timeout = c.secs_at(
        line,
        &key("batch.timeout_secs"),
        raw.timeout_secs.unwrap_or(default_timeout),
        true,
    );
    BatchConfig {
        max_events: raw.max_events.clamp(1, 100_000) as usize,
        max_bytes: raw.max_bytes.clamp(1024, 256 * 1024 * 1024) as usize,
        timeout,
    }
}

fn validate_retry(
    c: &mut Checker<'_>,
    line: usize,
    key: &dyn Fn(&str) -> String,
    raw: &RawRetry,
) -> RetryConfig {
    if !(1..=1000).contains(&raw.max_attempts) {
        c.line(
            Some(line),
            &key("retry.max_attempts"),
            "must be between 1 and 1000",
        );
    }
    let initial_backoff = c.secs_at(
        line,
        &key("retry.initial_backoff_secs"),
        raw.initial_backoff_secs,
        false,
    );
    let max_backoff = c.secs_at(
        line,
        &key("retry.max_backoff_secs"),
        raw.max_backoff_secs,
        false,
    );
    if max_backoff < initial_backoff {
        c.line(
            Some(line),
            &key("retry.max_backoff_secs"),
            "must not be less than retry.initial_backoff_secs",
        );
    }
    RetryConfig {
        max_attempts: raw.max_attempts.clamp(1, 1000),
        initial_backoff,
        max_backoff,
    }
}

fn validate_http(
    c: &mut Checker<'_>,
    line: usize,
    key: &dyn Fn(&str) -> String,
    raw: &RawHttpSink,
) -> Option<SinkKind> {
    let Some(url) = &raw.url else {
        c.line(
            Some(line),
            &key("url"),
            "missing: an http sink needs a `url`",
        );
        return None;
    };
    let url = match url.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            uri
        }
        _ => {
            c.line(
                Some(line),
                &key("url"),
                format!("`{url}` is not an http:// or https:// URL"),
            );
            return None;
        }
    };
    // Headers scimtap sets itself, or that would be sent twice (`request.header` appends).
    for name in raw.headers.keys().chain(raw.header_files.keys()) {
        let lower = name.to_ascii_lowercase();
        let field = if raw.headers.contains_key(name) {
            "headers"
        } else {
            "header_files"
        };
        let k = key(&format!("{field}.{name}"));
        if matches!(
            lower.as_str(),
            "content-type" | "content-length" | "host" | "transfer-encoding"
        ) {
            c.line(
                Some(line),
                &k,
                format!("`{name}` is set by scimtap from the encoding and body"),
            );
        } else if lower == "authorization" && raw.token_file.is_some() {
            c.line(
                Some(line),
                &k,
                "Authorization is already set by token_file: use one or the other",
            );
        } else if raw.headers.keys().any(|h| h.eq_ignore_ascii_case(name))
            && raw
                .header_files
                .keys()
                .any(|h| h.eq_ignore_ascii_case(name))
        {
            c.line(
                Some(line),
                &k,
                "set in both headers and header_files: use one",
            );
        }
    }
    if raw.encoding == HttpEncoding::ElasticsearchBulk
        && raw.index.is_none()
        && !bulk_path_names_an_index(url.path())
    {
        c.line(
            Some(line),
            &key("index"),
            "missing: elasticsearch_bulk needs an `index`, or a url ending in /<index>/_bulk",
        );
    }
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let header_key = key(&format!("headers.{name}"));
        match (
            http::HeaderName::try_from(name.as_str()),
            http::HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => c.line(Some(line), &header_key, "not a valid header name and value"),
        }
    }
    let mut secret_header = |c: &mut Checker<'_>, k: &str, name: &str, value: Vec<u8>| {
        match (
            http::HeaderName::try_from(name),
            http::HeaderValue::try_from(value),
        ) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(true);
                headers.push((n, v));
            }
            // The value is a secret: never echo it.
            _ => c.line(Some(line), k, "not a valid header name and value"),
        }
    };
    for (name, path) in &raw.header_files {
        let k = key(&format!("header_files.{name}"));
        if let Some(secret) = c.secret_at(line, &k, path) {
            secret_header(c, &k, name, secret.0);
        }
    }
    if let Some(path) = &raw.token_file {
        let k = key("token_file");
        if let Some(secret) = c.secret_at(line, &k, path) {
            let scheme: &[u8] = if raw.encoding == HttpEncoding::SplunkHec {
                b"Splunk "
            } else {
                b"Bearer "
            };
            let mut value = scheme.to_vec();
            value.extend_from_slice(&secret.0);
            secret_header(c, &k, "authorization", value);
        }
    }
    let extra_roots = match &raw.ca_file {
        Some(path) => c.certs_at(line, &key("ca_file"), path),
        None => Vec::new(),
    };
    if raw.ca_file.is_some() && url.scheme_str() != Some("https") {
        c.line(Some(line), &key("ca_file"), "needs an https:// url");
    }
    if raw.encoding != HttpEncoding::SplunkHec
        && (raw.source.is_some() || raw.sourcetype.is_some() || raw.host.is_some())
    {
        c.line(
            Some(line),
            &key("encoding"),
            "source, sourcetype and host are Splunk HEC fields: they need encoding = \"splunk_hec\"",
        );
    }
    Some(SinkKind::Http(HttpSinkConfig {
        url,
        encoding: raw.encoding,
        headers,
        extra_roots,
        index: raw.index.clone(),
        source: raw.source.clone().unwrap_or_else(|| "scimtap".to_owned()),
        sourcetype: raw.sourcetype.clone().unwrap_or_else(|| {
            let format = match raw.format {
                EventFormat::Native => "native",
                EventFormat::Cef => "cef",
                EventFormat::Ecs => "ecs",
                EventFormat::Ocsf => "ocsf",
            };
            format!("scimtap:{format}")
        }),
        host: raw.host.clone(),
        connect_timeout: c.secs_at(
            line,
            &key("connect_timeout_secs"),
            raw.connect_timeout_secs,
            false,
        ),
        request_timeout: c.secs_at(
            line,
            &key("request_timeout_secs"),
            raw.request_timeout_secs,
            false,
        ),
    }))
}

/// Whether an Elasticsearch `_bulk` URL path carries the index (`/<index>/_bulk`).
fn bulk_path_names_an_index(path: &str) -> bool {
    let mut segments = path.trim_end_matches('/').rsplit('/');
    segments.next() == Some("_bulk") && segments.next().is_some_and(|s| !s.is_empty())
}

fn validate_kafka(
    c: &mut Checker<'_>,
    line: usize,
    key: &dyn Fn(&str) -> String,
    raw: &RawKafkaSink,
) -> Option<SinkKind> {
    if raw.brokers.is_empty() {
        c.line(
            Some(line),
            &key("brokers"),
            "missing: a kafka sink needs `brokers` ([\"host:port\", ...])",
        );
    }
    for broker in &raw.brokers {
        if broker
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            c.line(
                Some(line),
                &key("brokers"),
                format!("`{broker}` is not host:port"),
            );
        }
    }
    let topic = match &raw.topic {
        Some(t)
            if !t.is_empty()
                && t.len() <= 249
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            t.clone()
        }
        Some(t) => {
            c.line(
                Some(line),
                &key("topic"),
                format!("`{t}` is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)"),
            );
            return None;
        }
        None => {
            c.line(
                Some(line),
                &key("topic"),
                "missing: a kafka sink needs a `topic`",
            );
            return None;
        }
    };
    let tls_extra_roots = match (&raw.tls_ca_file, raw.tls) {
        (Some(path), true) => Some(c.certs_at(line, &key("tls_ca_file"), path)),
        (None, true) => Some(Vec::new()),
        (Some(_), false) => {
            c.line(Some(line), &key("tls_ca_file"), "needs tls = true");
            None
        }
        (None, false) => None,
    };
    let sasl = match (
        &raw.sasl_mechanism,
        &raw.sasl_username,
        &raw.sasl_password_file,
    ) {
        (None, None, None) => None,
        (Some(mechanism), Some(username), Some(password_file)) => {
            let mechanism = match mechanism.to_ascii_uppercase().as_str() {
                "PLAIN" => Some(SaslMechanism::Plain),
                "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
                "SCRAM-SHA-512" => Some(SaslMechanism::ScramSha512),
                _ => {
                    c.line(
                        Some(line),
                        &key("sasl_mechanism"),
                        format!("unknown SASL mechanism `{mechanism}`: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                    );
                    None
                }
            };
            let password = c.secret_at(line, &key("sasl_password_file"), password_file);
            match (mechanism, password) {
                (Some(mechanism), Some(password)) => Some(KafkaSasl {
                    mechanism,
                    username: username.clone(),
                    password,
                }),
                _ => None,
            }
        }
        _ => {
            c.line(
                Some(line),
                &key("sasl_mechanism"),
                "SASL needs all of sasl_mechanism, sasl_username and sasl_password_file",
            );
            None
        }
    };
    let connect_timeout = c.secs_at(
        line,
        &key("connect_timeout_secs"),
        raw.connect_timeout_secs,
        false,
    );
    let request_timeout = c.secs_at(
        line,
        &key("request_timeout_secs"),
        raw.request_timeout_secs,
        false,
    );
    // Returned even when a broker is bad (the problem is recorded), so the rest of the
    // table (buffer, batch, ...) is still checked and reported in the same pass.
    Some(SinkKind::Kafka(KafkaSinkConfig {
        brokers: raw.brokers.clone(),
        topic,
        compression: raw.compression,
        tls_extra_roots,
        sasl,
        connect_timeout,
        request_timeout,
    }))
}

#[cfg(test)]
mod tests;
