//! `[capture]`: how much of each body is kept for the audit pipeline, and whether events carry
//! the (redacted) bodies.

use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;

/// `[capture]`: how much of each body is kept for the audit pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCapture {
    /// Bytes of each body (request and response) kept for classification; beyond it the event
    /// says the body was truncated. Forwarding is never limited by this.
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: Spanned<u64>,
    /// Bytes of captured bodies held in memory at once, across every exchange in flight or
    /// waiting for the audit worker. Past it, captures are truncated (and counted), which
    /// bounds memory under load or when a sink stalls.
    #[serde(default = "default_max_pending_bytes")]
    max_pending_bytes: Spanned<u64>,
    /// `"none"` (default) or `"redacted"`: add the redacted request and response bodies to
    /// events.
    #[serde(default)]
    include_bodies: IncludeBodies,
}

defaults! {
    spanned {
        default_max_body_bytes: u64 = 1024 * 1024;
        default_max_pending_bytes: u64 = 64 * 1024 * 1024;
    }
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub max_body_bytes: usize,
    pub max_pending_bytes: usize,
    pub include_bodies: IncludeBodies,
}

/// `capture.include_bodies`: whether events carry the bodies.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IncludeBodies {
    /// No bodies in events (the default).
    #[default]
    None,
    /// JSON bodies with every sensitive value replaced by `[REDACTED]`.
    Redacted,
}

/// `[capture]`, or its defaults when the section is absent.
pub(super) fn validate_capture(
    c: &mut Checker<'_>,
    capture: Option<&Spanned<RawCapture>>,
) -> CaptureConfig {
    let (body, pending, include_bodies) = match capture.map(Spanned::get_ref) {
        None => (
            default_max_body_bytes(),
            default_max_pending_bytes(),
            IncludeBodies::None,
        ),
        Some(raw) => (
            raw.max_body_bytes.clone(),
            raw.max_pending_bytes.clone(),
            raw.include_bodies,
        ),
    };
    if *body.get_ref() > 1 << 30 {
        c.at(
            body.span(),
            "capture.max_body_bytes",
            "must be at most 1 GiB",
        );
    }
    if *pending.get_ref() > 64 << 30 {
        c.at(
            pending.span(),
            "capture.max_pending_bytes",
            "must be at most 64 GiB",
        );
    }
    CaptureConfig {
        max_body_bytes: usize::try_from(*body.get_ref()).unwrap_or(usize::MAX),
        max_pending_bytes: usize::try_from(*pending.get_ref()).unwrap_or(usize::MAX),
        include_bodies,
    }
}
