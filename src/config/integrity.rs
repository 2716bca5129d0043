//! `[integrity]`: the hash chain every native event carries (its key, checkpoints and where
//! its head is kept between runs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;
use super::SecretKey;

/// `[integrity]`: the hash chain every native event carries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIntegrity {
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

defaults! {
    spanned {
        default_checkpoint_interval_secs: f64 = 300.0;
    }
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

/// `[integrity]`, or its defaults when the section is absent.
pub(super) fn validate_integrity(
    c: &mut Checker<'_>,
    raw: Option<&Spanned<RawIntegrity>>,
) -> IntegrityConfig {
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
        match read_key_file(file.get_ref()) {
            Ok(key) => out.key = Some(key),
            Err(message) => c.at(file.span(), "integrity.key_file", message),
        }
    }
    out
}

/// The chain's HMAC key from `path`, as `integrity.key_file` reads it (surrounding whitespace
/// trimmed, at least 16 bytes). Also used by `scimtap verify --key-file`.
///
/// # Errors
/// A message naming the file (never its content) when it cannot be read or is too short.
pub fn read_key_file(path: &Path) -> Result<SecretKey, String> {
    match std::fs::read(path) {
        Ok(key) if key.trim_ascii().len() >= 16 => Ok(SecretKey(key.trim_ascii().to_vec())),
        Ok(_) => Err(format!(
            "{} holds fewer than 16 bytes: use a long random key (e.g. openssl rand -hex 32)",
            path.display()
        )),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}
