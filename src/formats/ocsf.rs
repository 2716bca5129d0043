//! OCSF 1.8 events (being written: see issue 4).

use crate::event::AuditEvent;

/// OCSF schema version the events follow (`metadata.version`).
pub const OCSF_VERSION: &str = "1.8.0";

/// The event as one OCSF JSON object, newline included.
pub fn ocsf_line(event: &AuditEvent<'_>) -> Vec<u8> {
    let mut line = serde_json::to_vec(&serde_json::json!({
        "metadata": {"version": OCSF_VERSION, "uid": event.event_id},
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}
