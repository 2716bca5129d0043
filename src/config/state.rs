//! `[state]`: scimtap's memory of the identities it has seen (a "shadow state"), so an event
//! about a user names that user even when the request carried only the id, and says what a
//! write changed before → after. Present = on; absent = events exactly as without state.
//! Read once at startup: a reload (SIGHUP) does not open another store.
//!
//! Kept in a SQLite file (`path`, the default) or, when several scimtap instances serve one
//! application behind a load balancer, in one PostgreSQL database they share (`url`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;

/// `[state]`: where the shadow state is kept. The section being present turns it on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    /// The SQLite file holding the state (created when missing; WAL mode, so a `-wal` and a
    /// `-shm` file appear beside it). Relative paths are read from the working directory.
    /// Default `scimtap-state.db` when `url` is not set.
    path: Option<Spanned<PathBuf>>,
    /// A PostgreSQL connection URL (`postgres://user@host:port/dbname`) instead of `path`:
    /// one database shared by every instance serving the same application.
    url: Option<Spanned<String>>,
    /// A file holding the PostgreSQL password (surrounding whitespace trimmed), instead of
    /// one in `url`.
    password_file: Option<Spanned<PathBuf>>,
    /// How long a deactivation or deletion the app refused (or never answered) may stay
    /// unconfirmed before it becomes a `deprovision.gap` event.
    #[serde(default = "default_confirm_within_secs")]
    confirm_within_secs: Spanned<f64>,
    /// With `url`: how long after an exchange ends its state lookup waits, so that what
    /// another instance recorded just before is seen (default 100).
    settle_ms: Option<Spanned<u64>>,
}

const DEFAULT_PATH: &str = "scimtap-state.db";

defaults! {
    spanned {
        default_confirm_within_secs: f64 = DEFAULT_CONFIRM_WITHIN.as_secs_f64();
    }
}

/// `confirm_within_secs` when not set: Entra ID's provisioning cycle runs every 40 minutes, so
/// a refused change is retried within the hour.
pub const DEFAULT_CONFIRM_WITHIN: Duration = Duration::from_secs(3600);

/// `settle_ms` when not set (with `url`): far above what an instance needs to hand a finished
/// exchange to its audit worker and record its claim (about a millisecond), well below what
/// anyone reading events notices.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(100);

/// The longest `settle_ms` accepted.
const MAX_SETTLE_MS: u64 = 10_000;

/// The resolved `[state]` section.
#[derive(Debug, Clone)]
pub struct StateConfig {
    pub store: StateStore,
    /// `confirm_within_secs`: how long a refused or unanswered deprovisioning may stay open
    /// before the tracker reports a gap.
    pub confirm_within: Duration,
    /// `settle_ms` (PostgreSQL only; zero with SQLite, which one instance owns).
    pub settle: Duration,
}

/// Where the state is kept.
#[derive(Debug, Clone)]
pub enum StateStore {
    /// A SQLite file, owned by this instance.
    Sqlite(PathBuf),
    /// A PostgreSQL database, possibly shared with other instances.
    Postgres(Box<PostgresTarget>),
}

/// A PostgreSQL database to connect to: the parsed URL with the password (from the URL or
/// `password_file`) set. Debug and Display never show the password.
#[derive(Clone)]
pub struct PostgresTarget {
    /// Connection settings, password included.
    pub config: postgres::Config,
    /// The URL without its password, for messages.
    display: String,
}

impl PostgresTarget {
    /// Parses a `postgres://` (or `postgresql://`) URL; `password` (from `password_file`)
    /// replaces none in the URL.
    ///
    /// # Errors
    /// Why the URL is not one scimtap can use, never quoting its password.
    pub fn from_url(url: &str, password: Option<Vec<u8>>) -> Result<PostgresTarget, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("must be a postgres:// URL (postgres://user@host:port/dbname)".to_owned());
        }
        let mut config = postgres::Config::from_str(url).map_err(|e| {
            // tokio-postgres' parse errors name the offending part, never the password.
            format!("is not a PostgreSQL connection URL: {e}")
        })?;
        let tls = config.get_ssl_mode();
        if tls == postgres::config::SslMode::Require {
            return Err(
                "sslmode=require: this scimtap connects to PostgreSQL without TLS (use a local \
                 socket, a private network or a TLS tunnel)"
                    .to_owned(),
            );
        }
        // Without TLS support, `prefer` (the default) is plain text either way: say so.
        config.ssl_mode(postgres::config::SslMode::Disable);
        if config.get_user().is_none() {
            return Err("names no user (postgres://USER@host/dbname)".to_owned());
        }
        if config.get_hosts().is_empty() {
            return Err("names no host (postgres://user@HOST:port/dbname)".to_owned());
        }
        match (config.get_password().is_some(), password) {
            (true, Some(_)) => {
                return Err(
                    "holds a password and password_file is set too: keep it in one place \
                     (password_file)"
                        .to_owned(),
                )
            }
            (false, Some(password)) => {
                config.password(password);
            }
            _ => {}
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.application_name("scimtap");
        Ok(PostgresTarget {
            display: without_password(url),
            config,
        })
    }
}

/// `url` with the password of its userinfo (`user:secret@`) replaced by `***`. A password
/// given as a `password=` query parameter is refused by validation, so it never gets here.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

impl fmt::Display for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("url", &self.display)
            .field(
                "password",
                &self.config.get_password().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `[state]`, or `None` (state off) when the section is absent.
pub(super) fn validate_state(
    c: &mut Checker<'_>,
    raw: Option<&Spanned<RawState>>,
) -> Option<StateConfig> {
    let raw = raw?.get_ref();
    let confirm_within = c.secs(&raw.confirm_within_secs, "state.confirm_within_secs");
    let mut settle = Duration::ZERO;
    if let Some(ms) = &raw.settle_ms {
        if raw.url.is_none() {
            c.at(
                ms.span(),
                "state.settle_ms",
                "only with url (a SQLite file has one writer)",
            );
        } else if *ms.get_ref() > MAX_SETTLE_MS {
            c.at(
                ms.span(),
                "state.settle_ms",
                format!("must be at most {MAX_SETTLE_MS}"),
            );
        }
    }
    let store = match (&raw.path, &raw.url) {
        (Some(path), Some(_)) => {
            c.at(
                path.span(),
                "state.path",
                "set either path (SQLite) or url (PostgreSQL), not both",
            );
            return None;
        }
        (path, None) => {
            if let Some(file) = &raw.password_file {
                c.at(
                    file.span(),
                    "state.password_file",
                    "only with url (PostgreSQL)",
                );
            }
            let path = path
                .as_ref()
                .map_or_else(|| PathBuf::from(DEFAULT_PATH), |p| p.get_ref().clone());
            if path.as_os_str().is_empty() {
                let span = raw.path.as_ref().map_or(0..0, Spanned::span);
                c.at(span, "state.path", "must not be empty");
                return None;
            }
            StateStore::Sqlite(path)
        }
        (None, Some(url)) => {
            let password = match &raw.password_file {
                Some(file) => match read_password(file.get_ref()) {
                    Ok(password) => Some(password),
                    Err(message) => {
                        c.at(file.span(), "state.password_file", message);
                        return None;
                    }
                },
                None => None,
            };
            if url.get_ref().contains("password=") {
                c.at(
                    url.span(),
                    "state.url",
                    "holds a password= parameter: put the password in password_file",
                );
                return None;
            }
            settle = raw
                .settle_ms
                .as_ref()
                .map_or(DEFAULT_SETTLE, |ms| Duration::from_millis(*ms.get_ref()));
            match PostgresTarget::from_url(url.get_ref(), password) {
                Ok(target) => StateStore::Postgres(Box::new(target)),
                Err(message) => {
                    c.at(url.span(), "state.url", message);
                    return None;
                }
            }
        }
    };
    Some(StateConfig {
        store,
        confirm_within,
        settle,
    })
}

/// The password of `password_file`: its content, surrounding whitespace trimmed.
fn read_password(path: &std::path::Path) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(bytes) if !bytes.trim_ascii().is_empty() => Ok(bytes.trim_ascii().to_vec()),
        Ok(_) => Err(format!("{} is empty", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_password_is_hidden_from_display_and_debug() {
        let target =
            PostgresTarget::from_url("postgres://app:s3cret@db:5432/scimtap", None).expect("valid");
        assert_eq!(target.to_string(), "postgres://app:***@db:5432/scimtap");
        let debug = format!("{target:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert_eq!(target.config.get_password(), Some(&b"s3cret"[..]));
    }

    #[test]
    fn a_password_file_sets_the_password_and_never_shows_it() {
        let target =
            PostgresTarget::from_url("postgres://app@db/scimtap", Some(b"fromfile".to_vec()))
                .expect("valid");
        assert_eq!(target.config.get_password(), Some(&b"fromfile"[..]));
        assert!(!format!("{target:?}").contains("fromfile"));
        assert_eq!(target.to_string(), "postgres://app@db/scimtap");
    }

    #[test]
    fn bad_urls_are_refused_with_why() {
        for (url, why) in [
            ("mysql://app@db/x", "postgres:// URL"),
            ("postgres://db/x", "names no user"),
            ("postgres://app@db/x?sslmode=require", "without TLS"),
            (
                "postgres://app@db:notaport/x",
                "not a PostgreSQL connection URL",
            ),
        ] {
            let error = PostgresTarget::from_url(url, None).expect_err(url);
            assert!(error.contains(why), "{url}: {error}");
        }
        let twice = PostgresTarget::from_url("postgres://a:b@db/x", Some(b"c".to_vec()));
        assert!(twice.expect_err("two passwords").contains("one place"));
    }
}
