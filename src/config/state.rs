//! `[state]`: scimtap's memory of the identities it has seen (a "shadow state"), so an event
//! about a user names that user even when the request carried only the id, and says what a
//! write changed before → after. Present = on; absent = events exactly as without state.
//! Read once at startup: a reload (SIGHUP) does not open another store.

use std::path::PathBuf;
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
    #[serde(default = "default_path")]
    path: Spanned<PathBuf>,
    /// How long a deactivation or deletion the app refused (or never answered) may stay
    /// unconfirmed before it becomes a `deprovision.gap` event.
    #[serde(default = "default_confirm_within_secs")]
    confirm_within_secs: Spanned<f64>,
}

defaults! {
    spanned {
        default_path: PathBuf = PathBuf::from("scimtap-state.db");
        default_confirm_within_secs: f64 = DEFAULT_CONFIRM_WITHIN.as_secs_f64();
    }
}

/// `confirm_within_secs` when not set: Entra ID's provisioning cycle runs every 40 minutes, so
/// a refused change is retried within the hour.
pub const DEFAULT_CONFIRM_WITHIN: Duration = Duration::from_secs(3600);

/// The resolved `[state]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The SQLite file.
    pub path: PathBuf,
    /// `confirm_within_secs`: how long a refused or unanswered deprovisioning may stay open
    /// before the tracker reports a gap.
    pub confirm_within: Duration,
}

/// `[state]`, or `None` (state off) when the section is absent.
pub(super) fn validate_state(
    c: &mut Checker<'_>,
    raw: Option<&Spanned<RawState>>,
) -> Option<StateConfig> {
    let raw = raw?;
    let path = raw.get_ref().path.get_ref().clone();
    if path.as_os_str().is_empty() {
        c.at(raw.get_ref().path.span(), "state.path", "must not be empty");
        return None;
    }
    let confirm_within = c.secs(
        &raw.get_ref().confirm_within_secs,
        "state.confirm_within_secs",
    );
    Some(StateConfig {
        path,
        confirm_within,
    })
}
