//! `type = "kafka"` options: brokers and topic, compression, TLS, SASL and timeouts.

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use crate::config::SecretKey;
use crate::sinks::config::{sink_options, SinkKind, SinkTable};

sink_options! {
    /// `type = "kafka"`: produced to one topic, keyed by the SCIM resource id.
    pub(crate) struct RawKafkaSink {
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
    }
    network_timeouts: "Time allowed for one produce request (acks = all) and its answer.";
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

impl RawKafkaSink {
    /// Checks and resolves the kafka sink's own options; `None` when the sink cannot be built.
    pub(crate) fn resolve(&self, t: &mut SinkTable<'_, '_>) -> Option<SinkKind> {
        if self.brokers.is_empty() {
            t.problem(
                "brokers",
                "missing: a kafka sink needs `brokers` ([\"host:port\", ...])",
            );
        }
        for broker in &self.brokers {
            if broker
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                t.problem("brokers", format!("`{broker}` is not host:port"));
            }
        }
        let topic = match &self.topic {
            Some(topic)
                if !topic.is_empty()
                    && topic.len() <= 249
                    && topic
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
            {
                topic.clone()
            }
            Some(topic) => {
                t.problem(
                    "topic",
                    format!("`{topic}` is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)"),
                );
                return None;
            }
            None => {
                t.problem("topic", "missing: a kafka sink needs a `topic`");
                return None;
            }
        };
        let tls_extra_roots = match (&self.tls_ca_file, self.tls) {
            (Some(path), true) => Some(t.certs("tls_ca_file", path)),
            (None, true) => Some(Vec::new()),
            (Some(_), false) => {
                t.problem("tls_ca_file", "needs tls = true");
                None
            }
            (None, false) => None,
        };
        let sasl = match (
            &self.sasl_mechanism,
            &self.sasl_username,
            &self.sasl_password_file,
        ) {
            (None, None, None) => None,
            (Some(mechanism), Some(username), Some(password_file)) => {
                let mechanism = match mechanism.to_ascii_uppercase().as_str() {
                    "PLAIN" => Some(SaslMechanism::Plain),
                    "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
                    "SCRAM-SHA-512" => Some(SaslMechanism::ScramSha512),
                    _ => {
                        t.problem("sasl_mechanism", format!("unknown SASL mechanism `{mechanism}`: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                        );
                        None
                    }
                };
                let password = t.secret("sasl_password_file", password_file);
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
                t.problem(
                    "sasl_mechanism",
                    "SASL needs all of sasl_mechanism, sasl_username and sasl_password_file",
                );
                None
            }
        };
        let connect_timeout = t.secs("connect_timeout_secs", self.connect_timeout_secs, false);
        let request_timeout = t.secs("request_timeout_secs", self.request_timeout_secs, false);
        // Returned even when a broker is bad (the problem is recorded), so the rest of the
        // table (buffer, batch, ...) is still checked and reported in the same pass.
        Some(SinkKind::Kafka(KafkaSinkConfig {
            brokers: self.brokers.clone(),
            topic,
            compression: self.compression,
            tls_extra_roots,
            sasl,
            connect_timeout,
            request_timeout,
        }))
    }
}
