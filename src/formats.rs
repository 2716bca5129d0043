//! Output formats besides the native JSON event: what a sink writes for each [`AuditEvent`].
//!
//! CEF (ArcSight Common Event Format):
//! `CEF:0|scimtap|scimtap|<version>|<class id>|<name>|<severity>|<extension>`, with the header
//! escaping `\` and `|`, and extension values escaping `\`, `=`, CR and LF, as the CEF
//! implementation standard requires. The class id is the SCIM action (`user.deactivate`), or
//! `scim.<operation>` / `http.request` when the request asked nothing of an identity.

use std::fmt::Write;

use crate::event::{AuditEvent, Outcome};

/// The event as one CEF line, newline included.
pub fn cef_line(event: &AuditEvent<'_>) -> Vec<u8> {
    let scim = &event.scim;
    let class_id = scim
        .actions
        .first()
        .cloned()
        .or_else(|| {
            scim.operation
                .and_then(|op| serde_json::to_value(op).ok())
                .and_then(|v| v.as_str().map(|op| format!("scim.{op}")))
        })
        .unwrap_or_else(|| "http.request".to_owned());
    let name = match (&scim.resource_type, scim.operation) {
        (Some(rt), Some(_)) => format!("{} {rt}", class_id),
        _ => format!("{} {} {}", class_id, event.http.method, event.http.path),
    };
    let severity = match event.outcome {
        Outcome::Success => 3,
        Outcome::Failure => 6,
    };
    let mut line = String::with_capacity(512);
    line.push_str("CEF:0|scimtap|scimtap|");
    line.push_str(&header(env!("CARGO_PKG_VERSION")));
    let _ = write!(line, "|{}|{}|{severity}|", header(&class_id), header(&name));

    let mut ext = Extension::default();
    ext.field(
        "rt",
        event_time_millis(&event.timestamp).map(|t| t.to_string()),
    );
    ext.field(
        "act",
        scim.actions.first().cloned().or(Some(class_id.clone())),
    );
    ext.field(
        "outcome",
        Some(match event.outcome {
            Outcome::Success => "success".to_owned(),
            Outcome::Failure => "failure".to_owned(),
        }),
    );
    ext.field("src", Some(event.client.address.clone()));
    ext.field("spt", Some(event.client.port.to_string()));
    ext.field("suser", event.client.name.clone());
    ext.field("requestClientApplication", event.client.user_agent.clone());
    ext.field("requestMethod", Some(event.http.method.to_owned()));
    ext.field("request", Some(event.http.path.to_owned()));
    ext.field("externalId", Some(event.request_id.to_owned()));
    ext.field("duid", scim.target.id.clone());
    ext.field(
        "duser",
        scim.target
            .user_name
            .clone()
            .or_else(|| scim.target.display_name.clone()),
    );
    ext.field("cn1Label", Some("httpStatus".to_owned()));
    ext.field("cn1", event.http.status.map(|s| s.to_string()));
    ext.field("cs1Label", Some("resourceType".to_owned()));
    ext.field("cs1", scim.resource_type.clone());
    ext.field("cs2Label", Some("actions".to_owned()));
    ext.field(
        "cs2",
        (!scim.actions.is_empty()).then(|| scim.actions.join(",")),
    );
    ext.field("cs3Label", Some("eventId".to_owned()));
    ext.field("cs3", Some(event.event_id.clone()));
    ext.field("cs4Label", Some("scimError".to_owned()));
    ext.field(
        "cs4",
        scim.error.as_ref().map(|e| {
            [
                e.status.as_deref(),
                e.scim_type.as_deref(),
                e.detail.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
        }),
    );
    ext.field("cs5Label", Some("failureSide".to_owned()));
    ext.field(
        "cs5",
        event
            .failure
            .as_ref()
            .map(|f| format!("{:?}", f.side).to_lowercase()),
    );
    ext.field(
        "reason",
        event
            .failure
            .as_ref()
            .map(|f| format!("{}: {}", f.kind, f.detail))
            .or_else(|| scim.error.as_ref().and_then(|e| e.detail.clone()))
            .or_else(|| scim.parse_error.clone()),
    );
    line.push_str(&ext.0);
    line.push('\n');
    line.into_bytes()
}

/// Header fields escape `\` and `|`; a header never spans lines.
fn header(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `key=value` pairs separated by spaces; values escape `\`, `=`, CR and LF.
#[derive(Default)]
struct Extension(String);

impl Extension {
    fn field(&mut self, key: &str, value: Option<String>) {
        let Some(value) = value else { return };
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        self.0.push_str(key);
        self.0.push('=');
        for c in value.chars() {
            match c {
                '\\' => self.0.push_str("\\\\"),
                '=' => self.0.push_str("\\="),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                c => self.0.push(c),
            }
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 timestamp (CEF `rt`).
fn event_time_millis(timestamp: &str) -> Option<u128> {
    let t = humantime::parse_rfc3339(timestamp).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_extension_escaping_follow_the_standard() {
        assert_eq!(header(r"a|b\c"), r"a\|b\\c");
        let mut ext = Extension::default();
        ext.field("msg", Some("a=b\\c\nd|e".to_owned()));
        ext.field("absent", None);
        assert_eq!(ext.0, r"msg=a\=b\\c\nd|e");
    }
}
