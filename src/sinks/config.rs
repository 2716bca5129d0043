//! The options every `[[sinks]]` table shares, and the pass that resolves each sink.
//!
//! Every sink takes `name`, `format`, `batch`, `retry`, `when_full` and `buffer` besides its
//! own options. serde's `flatten` cannot share them: it does not combine with
//! `deny_unknown_fields`, and a typo must fail. So [`sink_options!`] writes them into each
//! sink's raw struct (in one order, with one doc comment each), and [`validate_sinks`] checks
//! them in one place; the options of one type are checked by its own `config.rs`
//! (`RawFileSink::resolve`, ...).

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use super::file::config::{check_path_unique, FileSinkConfig, RawFileSink};
use super::http::config::{HttpSinkConfig, RawHttpSink};
use super::kafka::config::{KafkaSinkConfig, RawKafkaSink};
use super::stdout::config::RawStdoutSink;
use super::syslog::config::{RawSyslogSink, SyslogSinkConfig};
use crate::buffer::config::{validate_buffer, DiskBufferConfig, RawBuffer};
use crate::config::load::error_key;
use crate::config::validate::Checker;
use crate::config::{defaults, SecretKey};

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
    /// Wait for room, at most `block_timeout_ms`. Only the audit worker waits, never a
    /// request. A sink whose queue stays full that long is stalled: it drops (and counts) what
    /// does not fit until it has room again, so it holds back the other sinks once, briefly.
    #[default]
    Block,
    /// Drop the event that does not fit and count it
    /// (`scimtap_sink_events_dropped_total{reason="queue_full"}`).
    DropNewest,
}

/// One resolved `[[sinks]]` entry: the shared options, and the type's own in `kind`.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub format: EventFormat,
    pub when_full: WhenFull,
    /// `block_timeout_ms`: how long `when_full = "block"` waits before the sink is stalled.
    pub block_timeout: Duration,
    pub max_events: usize,
    /// `Some` when the queue is kept on disk.
    pub disk_buffer: Option<DiskBufferConfig>,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub kind: SinkKind,
}

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

/// The sink type and its resolved options.
#[derive(Debug, Clone)]
pub enum SinkKind {
    Stdout,
    File(FileSinkConfig),
    Syslog(SyslogSinkConfig),
    Http(HttpSinkConfig),
    Kafka(KafkaSinkConfig),
}

impl SinkKind {
    /// The `type` that selects this sink.
    fn type_name(&self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::File(_) => "file",
            SinkKind::Syslog(_) => "syslog",
            SinkKind::Http(_) => "http",
            SinkKind::Kafka(_) => "kafka",
        }
    }
}

/// One `[[sinks]]` table being checked. toml gives no position inside a table read as a
/// whole, so its problems are recorded at the line the table starts on, under the key
/// `sinks[<index>].<field>`.
pub(crate) struct SinkTable<'t, 'src> {
    pub(crate) c: &'t mut Checker<'src>,
    pub(crate) line: usize,
    pub(crate) index: usize,
}

impl SinkTable<'_, '_> {
    /// The full key of one of this table's fields (`sinks[2].batch.max_events`).
    pub(crate) fn key(&self, field: &str) -> String {
        format!("sinks[{}].{field}", self.index)
    }

    /// Records a problem with `field` of this table.
    pub(crate) fn problem(&mut self, field: &str, message: impl Into<String>) {
        let key = self.key(field);
        self.c.line(Some(self.line), &key, message);
    }

    /// See [`Checker::certs_at`].
    pub(crate) fn certs(&mut self, field: &str, path: &Path) -> Vec<CertificateDer<'static>> {
        let key = self.key(field);
        self.c.certs_at(self.line, &key, path)
    }

    /// See [`Checker::secret_at`].
    pub(crate) fn secret(&mut self, field: &str, path: &Path) -> Option<SecretKey> {
        let key = self.key(field);
        self.c.secret_at(self.line, &key, path)
    }

    /// See [`Checker::secs_at`].
    pub(crate) fn secs(&mut self, field: &str, secs: f64, zero_ok: bool) -> Duration {
        let key = self.key(field);
        self.c.secs_at(self.line, &key, secs, zero_ok)
    }
}

// === raw (deserialized) options ===

/// One `[[sinks]]` entry, selected by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum RawSink {
    Stdout(RawStdoutSink),
    File(RawFileSink),
    Syslog(RawSyslogSink),
    Http(RawHttpSink),
    Kafka(RawKafkaSink),
}

/// Writes the raw struct of one sink type: `name` and `format` first, then the type's own
/// fields, then (with `network_timeouts: "<doc of request_timeout_secs>";`) the network sinks'
/// `connect_timeout_secs` and `request_timeout_secs`, then `batch`, `retry`, `when_full` and
/// `buffer` (the order serde lists them in when a key is unknown), with
/// `deny_unknown_fields`, and `shared()` to read the common part.
macro_rules! sink_options {
    (
        $(#[$meta:meta])*
        pub(crate) struct $name:ident {
            $($(#[$field_meta:meta])* $field:ident: $ty:ty,)*
        }
        $(network_timeouts: $request_doc:literal;)?
    ) => {
        $(#[$meta])*
        #[derive(Debug, ::serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            /// Name used in metrics and logs. Defaults to the type (`stdout`, `file`) when there
            /// is one sink, and to `<type>-<index>` for every sink when there are several.
            name: Option<String>,
            /// Line format: `"native"` (the JSON event, default), `"ocsf"`, `"ecs"` or `"cef"`.
            #[serde(default)]
            format: $crate::sinks::config::EventFormat,
            $($(#[$field_meta])* $field: $ty,)*
            $(
            /// Seconds to establish the connection to the receiver.
            #[serde(default = "crate::sinks::config::default_connect_timeout_secs_plain")]
            connect_timeout_secs: f64,
            #[doc = $request_doc]
            #[serde(default = "crate::sinks::config::default_request_timeout_secs")]
            request_timeout_secs: f64,
            )?
            /// How much is sent at once (`batch = { max_events, max_bytes, timeout_secs }`).
            #[serde(default)]
            batch: $crate::sinks::config::RawBatch,
            /// What a failed batch gets (`retry = { max_attempts, ... }`).
            #[serde(default)]
            retry: $crate::sinks::config::RawRetry,
            /// What the sink's queue does when the sink cannot keep up.
            #[serde(default)]
            when_full: $crate::sinks::config::WhenFull,
            /// With `when_full = "block"`: milliseconds to wait for room before the sink is
            /// stalled and stops holding back the others.
            #[serde(default = "crate::sinks::config::default_block_timeout_ms")]
            block_timeout_ms: u64,
            /// Where the sink's queue is kept (memory, or disk).
            #[serde(default)]
            buffer: $crate::buffer::config::RawBuffer,
        }

        impl $name {
            /// The options every sink takes.
            pub(crate) fn shared(&self) -> $crate::sinks::config::SharedOptions<'_> {
                $crate::sinks::config::SharedOptions {
                    name: self.name.as_deref(),
                    format: self.format,
                    batch: &self.batch,
                    retry: &self.retry,
                    when_full: self.when_full,
                    block_timeout_ms: self.block_timeout_ms,
                    buffer: &self.buffer,
                }
            }
        }
    };
}
pub(crate) use sink_options;

/// The options every sink takes, as written (see [`sink_options!`]).
pub(crate) struct SharedOptions<'a> {
    pub(crate) name: Option<&'a str>,
    pub(crate) format: EventFormat,
    pub(crate) batch: &'a RawBatch,
    pub(crate) retry: &'a RawRetry,
    pub(crate) when_full: WhenFull,
    pub(crate) block_timeout_ms: u64,
    pub(crate) buffer: &'a RawBuffer,
}

impl RawSink {
    fn shared(&self) -> SharedOptions<'_> {
        match self {
            RawSink::Stdout(s) => s.shared(),
            RawSink::File(s) => s.shared(),
            RawSink::Syslog(s) => s.shared(),
            RawSink::Http(s) => s.shared(),
            RawSink::Kafka(s) => s.shared(),
        }
    }

    /// Checks the type's own options; `None` when the sink cannot be built at all (its
    /// problems are recorded, and its shared options are then not checked).
    fn resolve(&self, t: &mut SinkTable<'_, '_>) -> Option<SinkKind> {
        match self {
            RawSink::Stdout(_) => Some(SinkKind::Stdout),
            RawSink::File(s) => s.resolve(t),
            RawSink::Syslog(s) => s.resolve(t),
            RawSink::Http(s) => s.resolve(t),
            RawSink::Kafka(s) => s.resolve(t),
        }
    }
}

/// `batch = { max_events, max_bytes, timeout_secs }`: how much a sink sends at once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBatch {
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

/// `retry = { max_attempts, initial_backoff_secs, max_backoff_secs }`: what a sink does when
/// a batch fails. Waits double from the initial backoff up to the maximum, each with random
/// jitter (half to all of it); a receiver's `Retry-After` is honoured (up to the maximum).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
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

defaults! {
    default_batch_max_events: u64 = 512;
    default_batch_max_bytes: u64 = 1024 * 1024;
    default_retry_max_attempts: u32 = 8;
    default_retry_initial_backoff_secs: f64 = 0.1;
    default_retry_max_backoff_secs: f64 = 30.0;
    pub(crate) default_connect_timeout_secs_plain: f64 = 5.0;
    pub(crate) default_request_timeout_secs: f64 = 10.0;
    pub(crate) default_block_timeout_ms: u64 = 250;
}

// === parsing ===

const SINK_TYPES: &str = "`file`, `stdout`, `syslog`, `http` or `kafka`";

/// One `[[sinks]]` table: `type` picks the struct, which then gets the rest of the table.
/// Done by hand rather than by a `type`-tagged enum, whose buffering loses the path of a bad
/// field (`buffer.max_events`). Errors come back as (dotted field, message).
pub(crate) fn deserialize_sink(value: toml::Value) -> Result<RawSink, (String, String)> {
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
        None => match unknown_to_every_type(&rest) {
            // A key no sink type knows, in a sink without `type`: most likely `type` misspelt.
            // Named first (with its own line); `type` is reported missing on the next pass.
            Some(key) => Err((
                key.clone(),
                format!(
                    "unknown field `{key}`: no sink type has it, and this sink has no `type` (a misspelling?)"
                ),
            )),
            None => Err((
                "type".to_owned(),
                format!("missing: a sink needs a `type`: {SINK_TYPES}"),
            )),
        },
    }
}

/// The first key of a sink table (by name) that every sink type refuses as unknown.
fn unknown_to_every_type(rest: &toml::Value) -> Option<String> {
    let toml::Value::Table(table) = rest else {
        return None;
    };
    fn refuses<T: serde::de::DeserializeOwned>(single: &toml::Value, key: &str) -> bool {
        // Only this key: serde reports an unknown field before any missing one.
        T::deserialize(single.clone())
            .is_err_and(|e| e.message().starts_with(&format!("unknown field `{key}`")))
    }
    table
        .iter()
        .map(|(key, _)| key)
        .find(|key| {
            let mut single = toml::Table::new();
            single.insert((*key).clone(), toml::Value::Boolean(false));
            let single = toml::Value::Table(single);
            refuses::<RawFileSink>(&single, key)
                && refuses::<RawStdoutSink>(&single, key)
                && refuses::<RawSyslogSink>(&single, key)
                && refuses::<RawHttpSink>(&single, key)
                && refuses::<RawKafkaSink>(&single, key)
        })
        .cloned()
}

// === validation ===

/// Resolves every `[[sinks]]` table: the type's own options, then the shared ones, then what
/// must be unique across sinks (names, files, buffer directories).
pub(crate) fn validate_sinks(c: &mut Checker<'_>, sinks: Vec<(usize, RawSink)>) -> Vec<SinkConfig> {
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
        let t = &mut SinkTable { c, line, index };
        let Some(kind) = sink.resolve(t) else {
            continue;
        };
        let shared = sink.shared();
        let taken = out.iter().filter_map(|s| s.disk_buffer.as_ref());
        let (disk_buffer, max_events) = validate_buffer(t, shared.buffer, taken);
        let type_name = kind.type_name();
        let network = matches!(kind, SinkKind::Http(_) | SinkKind::Kafka(_));
        let batch = validate_batch(t, shared.batch, network);
        let retry = validate_retry(t, shared.retry);
        if !(1..=600_000).contains(&shared.block_timeout_ms) {
            t.problem("block_timeout_ms", "must be between 1 and 600000");
        }
        let name = shared.name.map(str::to_owned).unwrap_or_else(|| {
            if total == 1 {
                type_name.to_owned()
            } else {
                format!("{type_name}-{index}")
            }
        });
        if out.iter().any(|s| s.name == name) {
            t.problem("name", format!("duplicate sink name `{name}`"));
        }
        if let SinkKind::File(file) = &kind {
            check_path_unique(t, file, &out);
        }
        out.push(SinkConfig {
            name,
            format: shared.format,
            when_full: shared.when_full,
            block_timeout: Duration::from_millis(shared.block_timeout_ms),
            max_events,
            disk_buffer,
            batch,
            retry,
            kind,
        });
    }
    out
}

fn validate_batch(t: &mut SinkTable<'_, '_>, raw: &RawBatch, network: bool) -> BatchConfig {
    if !(1..=100_000).contains(&raw.max_events) {
        t.problem("batch.max_events", "must be between 1 and 100000");
    }
    if !(1024..=256 * 1024 * 1024).contains(&raw.max_bytes) {
        t.problem("batch.max_bytes", "must be between 1024 and 268435456");
    }
    // Network sinks wait a little for a fuller batch (fewer requests); local ones linger
    // 5 ms, so under load one write (and one wake-up of the sink thread) carries many events.
    let default_timeout = if network { 1.0 } else { 0.005 };
    let timeout = t.secs(
        "batch.timeout_secs",
        raw.timeout_secs.unwrap_or(default_timeout),
        true,
    );
    BatchConfig {
        max_events: raw.max_events.clamp(1, 100_000) as usize,
        max_bytes: raw.max_bytes.clamp(1024, 256 * 1024 * 1024) as usize,
        timeout,
    }
}

fn validate_retry(t: &mut SinkTable<'_, '_>, raw: &RawRetry) -> RetryConfig {
    if !(1..=1000).contains(&raw.max_attempts) {
        t.problem("retry.max_attempts", "must be between 1 and 1000");
    }
    let initial_backoff = t.secs(
        "retry.initial_backoff_secs",
        raw.initial_backoff_secs,
        false,
    );
    let max_backoff = t.secs("retry.max_backoff_secs", raw.max_backoff_secs, false);
    if max_backoff < initial_backoff {
        t.problem(
            "retry.max_backoff_secs",
            "must not be less than retry.initial_backoff_secs",
        );
    }
    RetryConfig {
        max_attempts: raw.max_attempts.clamp(1, 1000),
        initial_backoff,
        max_backoff,
    }
}
