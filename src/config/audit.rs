//! `[audit]`: the hand-off between the request path and the audit pipeline, what happens to
//! SCIM writes when the audit trail cannot take their events, and write-ahead mode.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;
use super::{EventFormat, SinkConfig, SinkKind};

/// `[audit]`: the hand-off between the request path and the audit pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    /// Finished exchanges waiting for the audit worker. When full, the exchange's event is
    /// dropped and counted (`scimtap_audit_handoff_dropped_total{reason="queue_full"}`): the
    /// request path never waits.
    #[serde(default = "default_queue_max_events")]
    queue_max_events: Spanned<u64>,
    /// `"drop"` (default): an event that cannot be queued or buffered is dropped and counted,
    /// and traffic flows. `"reject"`: while the audit trail cannot take events (hand-off queue
    /// or a sink's queue/buffer full), SCIM writes are answered 503 with `Retry-After` and
    /// never reach the upstream; reads pass.
    #[serde(default)]
    on_audit_failure: OnAuditFailure,
    /// `"async"` (default): events after the exchange, off the request path. `"write_ahead"`:
    /// a SCIM write is forwarded only after its intent record is durable (fsync'd).
    #[serde(default)]
    mode: AuditMode,
    /// How long a SCIM write may wait for its intent record to become durable; past it the
    /// write gets 503 and is not forwarded.
    #[serde(default = "default_write_ahead_timeout_ms")]
    write_ahead_timeout_ms: Spanned<u64>,
}

defaults! {
    spanned {
        default_write_ahead_timeout_ms: u64 = 1000;
        default_queue_max_events: u64 = 8192;
    }
}

/// When events are recorded relative to forwarding.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuditMode {
    #[default]
    Async,
    WriteAhead,
}

/// What happens to SCIM writes when the audit trail cannot take their events.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnAuditFailure {
    #[default]
    Drop,
    Reject,
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub queue_max_events: usize,
    pub on_audit_failure: OnAuditFailure,
    pub mode: AuditMode,
    pub write_ahead_timeout: Duration,
}

/// `[audit]`, or its defaults when the section is absent.
pub(super) fn validate_audit(
    c: &mut Checker<'_>,
    audit: Option<&Spanned<RawAudit>>,
) -> AuditConfig {
    let (max, timeout, on_audit_failure, mode) = match audit.map(Spanned::get_ref) {
        None => (
            default_queue_max_events(),
            default_write_ahead_timeout_ms(),
            OnAuditFailure::Drop,
            AuditMode::Async,
        ),
        Some(raw) => (
            raw.queue_max_events.clone(),
            raw.write_ahead_timeout_ms.clone(),
            raw.on_audit_failure,
            raw.mode,
        ),
    };
    if *max.get_ref() == 0 || *max.get_ref() > 10_000_000 {
        c.at(
            max.span(),
            "audit.queue_max_events",
            "must be between 1 and 10000000",
        );
    }
    if !(1..=60_000).contains(timeout.get_ref()) {
        c.at(
            timeout.span(),
            "audit.write_ahead_timeout_ms",
            "must be between 1 and 60000",
        );
    }
    AuditConfig {
        queue_max_events: (*max.get_ref()).clamp(1, 10_000_000) as usize,
        on_audit_failure,
        mode,
        write_ahead_timeout: Duration::from_millis(*timeout.get_ref()),
    }
}

/// Write-ahead mode needs a sink that can make an intent record durable.
pub(super) fn check_write_ahead(c: &mut Checker<'_>, audit: &AuditConfig, sinks: &[SinkConfig]) {
    if audit.mode == AuditMode::WriteAhead
        && !sinks.iter().any(|s| {
            s.format == EventFormat::Native
                && (matches!(s.kind, SinkKind::File(_)) || s.disk_buffer.is_some())
        })
    {
        c.line(
            None,
            "audit.mode",
            "write_ahead needs a durable place for intent records: a native-format file sink, or a native-format sink with a disk buffer",
        );
    }
}
