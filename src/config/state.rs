//! `[state]`: scimtap's memory of the identities it has seen (a "shadow state"), so an event
//! about a user names that user even when the request carried only the id, and says what a
//! write changed before → after. Present = on; absent = events exactly as without state.
//! Read once at startup: a reload (SIGHUP) does not open another store.

use std::path::PathBuf;

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
}

defaults! {
    spanned {
        default_path: PathBuf = PathBuf::from("scimtap-state.db");
    }
}

/// The resolved `[state]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The SQLite file.
    pub path: PathBuf,
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
    Some(StateConfig { path })
}
