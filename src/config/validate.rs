//! Validation: the [`Checker`] that collects every problem with its line while raw values are
//! resolved (durations, socket addresses, certificates, secrets read from files), and the
//! top-level pass that checks each section in turn and refuses the file only at the end.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use toml::Spanned;

use super::load::line_of;
use super::{alerts, audit, capture, integrity, listen, routes, scim, state, ui};
use super::{Config, ConfigError, Problem, RawConfig, SecretKey};
use crate::sinks::config::{validate_sinks, RawSink};

// === validation ===

/// A name that labels metrics (an alert rule's, a route's): 1 to 64 letters, digits, `_`,
/// `-` or `.`.
pub(crate) fn is_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
}

/// Collects problems with their lines while resolving values.
pub(crate) struct Checker<'a> {
    pub(super) src: &'a str,
    pub(super) problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(crate) fn at(
        &mut self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) {
        let line = (span.end > 0).then(|| line_of(self.src, span.start));
        self.problems.push(Problem {
            line,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    pub(crate) fn line(&mut self, line: Option<usize>, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    pub(crate) fn secs(&mut self, value: &Spanned<f64>, key: &str) -> Duration {
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

    pub(crate) fn socket_addr(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
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
    pub(crate) fn certs_at(
        &mut self,
        line: usize,
        key: &str,
        path: &Path,
    ) -> Vec<CertificateDer<'static>> {
        let certs = self.certs(&Spanned::new(0..0, path.to_path_buf()), key);
        if let Some(last) = self.problems.last_mut() {
            if last.key == key && last.line.is_none() {
                last.line = Some(line);
            }
        }
        certs
    }

    /// A secret read from a file: trimmed, non-empty.
    pub(crate) fn secret_at(&mut self, line: usize, key: &str, path: &Path) -> Option<SecretKey> {
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
    pub(crate) fn secs_at(&mut self, line: usize, key: &str, secs: f64, zero_ok: bool) -> Duration {
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

    pub(crate) fn certs(
        &mut self,
        value: &Spanned<PathBuf>,
        key: &str,
    ) -> Vec<CertificateDer<'static>> {
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
    /// Checks every section, in the file's order of importance, and resolves it; `sinks` are
    /// the `[[sinks]]` tables, parsed one by one, with the line each starts on.
    pub(super) fn validate(
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
        let listen = listen::validate_listen(&mut c, self.listen.as_ref());
        let admin = listen::validate_admin(&mut c, self.admin.as_ref());
        let capture = capture::validate_capture(&mut c, self.capture.as_ref());
        let audit = audit::validate_audit(&mut c, self.audit.as_ref());
        let sinks = validate_sinks(&mut c, sinks);
        let scim = scim::validate_scim(&mut c, &self);
        let integrity = integrity::validate_integrity(&mut c, self.integrity.as_ref());
        let state = state::validate_state(&mut c, self.state.as_ref());
        let alerts = alerts::validate_alerts(&mut c, &self.alerts, self.state.is_some());
        let known = routes::Known {
            listen: listen.as_ref(),
            scim: &scim,
            alerts: &alerts,
            sinks: &sinks,
        };
        let routes = routes::validate_routes(&mut c, self.upstream.as_ref(), &self.routes, &known);
        audit::check_write_ahead(&mut c, &audit, &sinks);
        listen::check_admin_address(&mut c, listen.as_ref(), admin.as_ref());
        let ui = ui::validate_ui(&mut c, self.ui.as_ref());
        let mut others = vec![("admin.address", admin.as_ref().map(|a| a.address))];
        others.extend(listen.iter().flat_map(|l| {
            l.addresses().enumerate().map(|(i, a)| {
                let name = if i == 0 {
                    "listen.address"
                } else {
                    "listen.extra_addresses"
                };
                (name, Some(a))
            })
        }));
        ui::check_ui_address(&mut c, ui.as_ref(), &others);

        match (listen, routes) {
            (Some(listen), Some(routes)) if c.problems.is_empty() => Ok(Config {
                origin: origin.to_owned(),
                shutdown_timeout,
                listen,
                routes,
                admin,
                capture,
                audit,
                sinks,
                scim,
                integrity,
                state,
                alerts,
                ui,
            }),
            _ => Err(ConfigError::Invalid {
                file: origin.to_owned(),
                problems: c.problems,
            }),
        }
    }
}
