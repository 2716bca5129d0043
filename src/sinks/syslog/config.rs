//! `type = "syslog"` options: the receiver, transport, RFC 5424 header fields and message size.

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use toml::Spanned;

use crate::config::defaults;
use crate::sinks::config::{default_connect_timeout_secs_plain, sink_options, SinkKind, SinkTable};

sink_options! {
    /// `type = "syslog"`: RFC 5424 messages over UDP, TCP (RFC 6587 octet counting) or TLS
    /// (RFC 5425), one event per message.
    pub(crate) struct RawSyslogSink {
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
    }
}

defaults! {
    default_facility: String = "auth".to_owned();
    default_app_name: String = "scimtap".to_owned();
    default_max_message_bytes: usize = 8192;
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

impl RawSyslogSink {
    /// Checks and resolves the syslog sink's own options; `None` without an `address`.
    pub(crate) fn resolve(&self, t: &mut SinkTable<'_, '_>) -> Option<SinkKind> {
        let Some(address) = &self.address else {
            t.problem(
                "address",
                "missing: a syslog sink needs an `address` (host:port)",
            );
            return None;
        };
        if address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            t.problem("address", format!("`{address}` is not host:port"));
        }
        let facility = facility_code(&self.facility).unwrap_or_else(|| {
            t.problem(
                "facility",
                format!(
                    "unknown facility `{}` (auth, authpriv, daemon, local0 ... local7, ...)",
                    self.facility
                ),
            );
            4
        });
        if !(480..=1_048_576).contains(&self.max_message_bytes) {
            t.problem("max_message_bytes", "must be between 480 and 1048576");
        }
        if self.app_name.is_empty()
            || self.app_name.len() > 48
            || !self.app_name.bytes().all(|b| b.is_ascii_graphic())
        {
            t.problem(
                "app_name",
                "must be 1 to 48 printable ASCII characters (RFC 5424)",
            );
        }
        let extra_roots = match &self.tls_ca_file {
            Some(path) => t.certs("tls_ca_file", path),
            None => Vec::new(),
        };
        if self.protocol != SyslogProtocol::Tls
            && (self.tls_ca_file.is_some() || self.tls_server_name.is_some())
        {
            t.problem(
                "protocol",
                "tls_ca_file and tls_server_name need protocol = \"tls\"",
            );
        }
        // Checked like a top-level value with no position: a bad one is reported without a
        // line (unlike the same option of the http and kafka sinks).
        let key = t.key("connect_timeout_secs");
        let connect_timeout =
            t.c.secs(&Spanned::new(0..0, self.connect_timeout_secs), &key);
        Some(SinkKind::Syslog(SyslogSinkConfig {
            address: address.clone(),
            protocol: self.protocol,
            facility,
            app_name: self.app_name.clone(),
            hostname: self.hostname.clone(),
            extra_roots,
            tls_server_name: self.tls_server_name.clone(),
            max_message_bytes: self.max_message_bytes,
            connect_timeout,
        }))
    }
}
