//! `[ui]`: the live view, a read-only web page of recent events, one identity's timeline, open
//! deprovisioning gaps, active alerts and a per-hour chart, on a listener of its own. Off
//! when the section is absent. It shows personal data, so it always wants a bearer token.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;
use super::SecretKey;

/// `[ui]`: where the live view listens and what opens it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUi {
    /// `IP:PORT` of the live view's own plain-HTTP listener. Loopback by default: reach it
    /// through an SSH tunnel.
    #[serde(default = "default_ui_address")]
    address: Spanned<String>,
    /// A file holding the bearer token that opens the view (surrounding whitespace trimmed,
    /// at least 16 characters). Required.
    token_file: Option<Spanned<PathBuf>>,
    /// How many of the newest events the view keeps in memory for its lists and timelines.
    #[serde(default = "default_recent_events")]
    recent_events: Spanned<u64>,
}

defaults! {
    spanned {
        default_ui_address: String = DEFAULT_ADDRESS.to_owned();
        default_recent_events: u64 = 1000;
    }
}

/// `address` when not set.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9091";

/// The shortest token accepted: a guessable token would make the view's protection moot.
const MIN_TOKEN_LEN: usize = 16;

/// The most events `recent_events` may keep (each is a few KiB in memory).
const MAX_RECENT_EVENTS: u64 = 100_000;

/// The resolved `[ui]` section. Debug never shows the token.
#[derive(Debug, Clone)]
pub struct UiConfig {
    pub address: SocketAddr,
    /// The bearer token, read from `token_file`.
    pub token: SecretKey,
    pub recent_events: usize,
}

/// `[ui]`, or `None` (the live view off) when the section is absent.
pub(super) fn validate_ui(c: &mut Checker<'_>, raw: Option<&Spanned<RawUi>>) -> Option<UiConfig> {
    let section = raw?;
    let raw = section.get_ref();
    let address = c.socket_addr(&raw.address, "ui.address");
    let recent = *raw.recent_events.get_ref();
    if !(1..=MAX_RECENT_EVENTS).contains(&recent) {
        c.at(
            raw.recent_events.span(),
            "ui.recent_events",
            format!("must be between 1 and {MAX_RECENT_EVENTS}, got {recent}"),
        );
    }
    let token = match &raw.token_file {
        None => {
            c.at(
                section.span(),
                "ui.token_file",
                "missing: the live view shows personal data and needs a token \
                 (openssl rand -hex 32 > ui.token)",
            );
            None
        }
        Some(file) => match read_token(file.get_ref()) {
            Ok(token) => Some(token),
            Err(message) => {
                c.at(file.span(), "ui.token_file", message);
                None
            }
        },
    };
    Some(UiConfig {
        address: address?,
        token: SecretKey(token?),
        recent_events: usize::try_from(recent.clamp(1, MAX_RECENT_EVENTS)).unwrap_or(1000),
    })
}

/// The token of `token_file`: its content, surrounding whitespace trimmed. Never quoted in a
/// message.
fn read_token(path: &std::path::Path) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.trim_ascii().len() >= MIN_TOKEN_LEN => Ok(bytes.trim_ascii().to_vec()),
        Ok(_) => Err(format!(
            "{} must hold a token of at least {MIN_TOKEN_LEN} characters",
            path.display()
        )),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The live view's listener cannot be the proxy's or the admin's.
pub(super) fn check_ui_address(
    c: &mut Checker<'_>,
    ui: Option<&UiConfig>,
    others: &[(&str, Option<SocketAddr>)],
) {
    let Some(ui) = ui else { return };
    for (name, other) in others {
        if *other == Some(ui.address) && ui.address.port() != 0 {
            c.line(None, "ui.address", format!("must differ from {name}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const BASE: &str = "[listen]\naddress = \"127.0.0.1:8080\"\n[upstream]\nurl = \"http://127.0.0.1:9000\"\n[admin]\naddress = \"127.0.0.1:9090\"\n[[sinks]]\ntype = \"stdout\"\n";

    fn parse(ui: &str) -> Result<Config, Vec<String>> {
        Config::from_toml_str(&format!("{BASE}[ui]\n{ui}"), Path::new("proxy.toml")).map_err(|e| {
            match e {
                ConfigError::Invalid { problems, .. } => problems
                    .iter()
                    .map(|p| format!("{}: {}", p.key, p.message))
                    .collect(),
                other => vec![other.to_string()],
            }
        })
    }

    #[test]
    fn the_live_view_takes_its_defaults_and_never_shows_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("ui.token");
        std::fs::write(&token, "  s3cret-s3cret-s3cret\n").unwrap();
        let config = parse(&format!("token_file = \"{}\"", token.display())).unwrap();
        let ui = config.ui.expect("[ui] on");
        assert_eq!(ui.address, super::DEFAULT_ADDRESS.parse().unwrap());
        assert_eq!(ui.recent_events, 1000);
        assert_eq!(ui.token.0, b"s3cret-s3cret-s3cret");
        assert!(!format!("{ui:?}").contains("s3cret"));
        assert!(Config::from_toml_str(BASE, Path::new("proxy.toml"))
            .unwrap()
            .ui
            .is_none());
    }

    #[test]
    fn the_live_view_needs_a_long_enough_token_and_an_address_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.token");
        std::fs::write(&short, "tooshort").unwrap();
        let missing = parse("address = \"127.0.0.1:9090\"\nrecent_events = 0").unwrap_err();
        let said = missing.join("\n");
        assert!(said.contains("ui.token_file: missing"), "{said}");
        assert!(said.contains("ui.recent_events: must be between"), "{said}");
        let token = dir.path().join("ui.token");
        std::fs::write(&token, "long-enough-token-here").unwrap();
        let clash = parse(&format!(
            "address = \"127.0.0.1:9090\"\ntoken_file = \"{}\"",
            token.display()
        ))
        .unwrap_err()
        .join("\n");
        assert!(
            clash.contains("ui.address: must differ from admin.address"),
            "{clash}"
        );
        let said = parse(&format!("token_file = \"{}\"", short.display()))
            .unwrap_err()
            .join("\n");
        assert!(
            said.contains("at least 16 characters") && !said.contains("tooshort\""),
            "{said}"
        );
    }
}
