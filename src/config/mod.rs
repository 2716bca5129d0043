//! Configuration: one TOML file (`proxy.toml`), parsed, validated and resolved in three steps.
//!
//! 1. [`Config::from_toml_str`] is pure: it deserializes the text into the raw structs below
//!    (every one `deny_unknown_fields`) and then runs `RawConfig::validate`.
//! 2. Every problem is collected before anything is refused: a field of the wrong type or an
//!    unknown key is recorded with its line, the offending line is blanked out and the text is
//!    parsed again, so one run names every bad key instead of the first one only.
//! 3. The result, [`Config`], holds resolved values (socket addresses, durations, loaded TLS
//!    material) so nothing downstream re-parses or re-checks. Nothing binds a port here.
//!
//! The field docs of the raw structs are the user reference; `proxy.toml` shows every default.
//!
//! Layout: this file holds the resolved [`Config`] and the file's top level; `load.rs` the
//! passes that parse the text and list its problems with their lines; `validate.rs` the
//! `Checker` that collects problems while resolving values; one file per section (`listen`,
//! `upstream`, `routes`, `capture`, `audit`, `scim`, `integrity`, `state`, `alerts`, `ui`) its raw struct, defaults, resolved
//! struct and checks.
//! Each sink's options live next to the sink (`crate::sinks::<type>::config`), the options
//! every sink shares in `crate::sinks::config`, and the buffer's in `crate::buffer::config`;
//! they are re-exported here so `crate::config::*` names every resolved type.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Named serde defaults (`#[serde(default = "default_x")]`), one line each.
///
/// `spanned { ... }` makes `fn default_x() -> Spanned<T>` for values whose line a message
/// names: a default has no place in the file, so its span is empty (and messages about it
/// carry no line). Otherwise `[vis] default_x: T = value;` makes a plain `fn default_x() -> T`.
macro_rules! defaults {
    (spanned { $($name:ident: $ty:ty = $value:expr;)* }) => {
        $(fn $name() -> ::toml::Spanned<$ty> {
            ::toml::Spanned::new(0..0, $value)
        })*
    };
    ($($vis:vis $name:ident: $ty:ty = $value:expr;)*) => {
        $($vis fn $name() -> $ty {
            $value
        })*
    };
}
pub(crate) use defaults;

mod alerts;
mod audit;
mod capture;
mod integrity;
mod listen;
pub(crate) mod load;
mod routes;
mod scim;
mod state;
mod ui;
mod upstream;
pub(crate) mod validate;

pub use self::alerts::{AlertKind, AlertRule, WebhookUrl};
pub use self::audit::{AuditConfig, AuditMode, OnAuditFailure};
pub use self::capture::{CaptureConfig, IncludeBodies};
pub use self::integrity::{read_key_file, IntegrityConfig};
pub use self::listen::{AdminConfig, ListenConfig, ServerTls, TlsMinVersion};
pub use self::load::{ConfigError, Problem};
pub use self::routes::{RouteConfig, DEFAULT_ROUTE, MAX_ROUTES};
pub use self::scim::{normalize_subject, ClientConfig, ScimConfig};
pub use self::state::{PostgresTarget, StateConfig, StateStore, DEFAULT_CONFIRM_WITHIN};
pub use self::ui::UiConfig;
pub use self::upstream::UpstreamConfig;
pub use crate::buffer::config::DiskBufferConfig;
pub use crate::sinks::config::{
    BatchConfig, EventFormat, RetryConfig, SinkConfig, SinkKind, WhenFull,
};
pub use crate::sinks::file::config::FileSinkConfig;
pub use crate::sinks::http::config::{HttpEncoding, HttpSinkConfig};
pub use crate::sinks::kafka::config::{
    KafkaCompression, KafkaSasl, KafkaSinkConfig, SaslMechanism,
};
pub use crate::sinks::syslog::config::{SyslogProtocol, SyslogSinkConfig};

// === raw (deserialized) configuration ===

/// The file as written. Sections that must exist are `Option` so that a missing one is reported
/// with every other problem rather than stopping the parse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Seconds to drain in-flight exchanges and flush sinks after SIGTERM/SIGINT.
    #[serde(default = "default_shutdown_timeout_secs")]
    shutdown_timeout_secs: Spanned<f64>,
    listen: Option<Spanned<listen::RawListen>>,
    upstream: Option<Spanned<upstream::RawUpstream>>,
    #[serde(default)]
    routes: Vec<Spanned<routes::RawRoute>>,
    admin: Option<Spanned<listen::RawAdmin>>,
    #[serde(default)]
    capture: Option<Spanned<capture::RawCapture>>,
    #[serde(default)]
    audit: Option<Spanned<audit::RawAudit>>,
    /// Kept as tables here and deserialized one by one: a `type`-tagged enum would lose the
    /// positions toml gives us, and each sink's problems should be reported on their own.
    #[serde(default)]
    sinks: Option<Vec<Spanned<toml::Table>>>,
    scim: Option<Spanned<scim::RawScim>>,
    #[serde(default)]
    clients: Vec<Spanned<scim::RawClient>>,
    redact: Option<Spanned<scim::RawRedact>>,
    privacy: Option<Spanned<scim::RawPrivacy>>,
    integrity: Option<Spanned<integrity::RawIntegrity>>,
    state: Option<Spanned<state::RawState>>,
    #[serde(default)]
    alerts: Vec<Spanned<alerts::RawAlert>>,
    ui: Option<Spanned<ui::RawUi>>,
}

defaults! {
    spanned {
        default_shutdown_timeout_secs: f64 = 30.0;
    }
}

// === resolved configuration ===

/// A validated configuration: every value resolved, every file read.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub origin: PathBuf,
    pub shutdown_timeout: Duration,
    pub listen: ListenConfig,
    /// `[[routes]]`, or the one implicit route of `[upstream]`: never empty.
    pub routes: Vec<RouteConfig>,
    pub admin: Option<AdminConfig>,
    pub capture: CaptureConfig,
    pub audit: AuditConfig,
    pub sinks: Vec<SinkConfig>,
    pub scim: ScimConfig,
    pub integrity: IntegrityConfig,
    /// `[state]`: the shadow state store; `None` when the section is absent (state off).
    pub state: Option<StateConfig>,
    /// `[[alerts]]`: the alert rules the audit worker evaluates (none: alerts off).
    pub alerts: Vec<AlertRule>,
    /// `[ui]`: the live view; `None` when the section is absent (off).
    pub ui: Option<UiConfig>,
}

impl Config {
    /// The first route: the only one without `[[routes]]`. What the offline commands
    /// (`state rebuild`, `trace`, `report`) read the state of.
    pub fn first_route(&self) -> &RouteConfig {
        // Validation never yields a configuration without a route.
        &self.routes[0]
    }
}

/// Key material read from a `*_file` option. Debug shows only its length; equality compares
/// the bytes (a reload tells a rotated key from the same one).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub Vec<u8>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(<{} bytes redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests;
