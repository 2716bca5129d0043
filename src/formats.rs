//! Output formats besides the native JSON event: what a sink writes for each [`AuditEvent`].
//!
//! CEF (ArcSight Common Event Format):
//! `CEF:0|scimtap|scimtap|<version>|<class id>|<name>|<severity>|<extension>`, with the header
//! escaping `\` and `|`, and extension values escaping `\`, `=`, CR and LF, as the CEF
//! implementation standard requires. The class id is the SCIM action (`user.deactivate`), or
//! `scim.<operation>` / `http.request` when the request asked nothing of an identity.

mod ocsf;
#[cfg(test)]
mod testing;

use std::fmt::Write;

use crate::config::EventFormat;
use crate::event::{AuditEvent, Outcome};

pub use ocsf::{ocsf_line, OCSF_VERSION};

/// The event in `format`, one line, newline included.
///
/// # Errors
/// When the native event cannot be serialised (not expected: every field is plain data).
pub fn encode(format: EventFormat, event: &AuditEvent<'_>) -> Result<Vec<u8>, serde_json::Error> {
    Ok(match format {
        EventFormat::Native => event.to_json_line()?,
        EventFormat::Cef => cef_line(event),
        EventFormat::Ecs => ecs_line(event),
        EventFormat::Ocsf => ocsf_line(event),
    })
}

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
    ext.field("rt", Some(event.timestamp.unix_millis().to_string()));
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

/// An object of the fields that have a value.
fn present(fields: &[(&str, &Option<String>)]) -> serde_json::Map<String, serde_json::Value> {
    fields
        .iter()
        .filter_map(|(name, value)| Some(((*name).to_owned(), value.as_ref()?.clone().into())))
        .collect()
}

/// ECS version the documents follow (`ecs.version`).
pub const ECS_VERSION: &str = "8.12.0";

/// The event as one ECS document (JSON), newline included.
///
/// `event.category` is `iam` for requests that change users or groups and `api` for the rest
/// (reads, and changes to custom resource types, which are not identities);
/// `event.type` follows ECS's expected pairs (`user`+`creation`, `group`+`change`, ...);
/// `user.*` is the actor (the configured client), `user.target.*` the user acted on, `group.*`
/// the group. Everything scimtap knows that ECS has no field for stays under `scimtap.*`.
pub fn ecs_line(event: &AuditEvent<'_>) -> Vec<u8> {
    use serde_json::{json, Map, Value};
    let scim = &event.scim;
    let action = scim.actions.first().map(String::as_str);
    let is_user = scim.resource_type.as_deref() == Some("User");
    let is_group = scim.resource_type.as_deref() == Some("Group");
    let (category, kind_type): (&str, Vec<&str>) = match action {
        Some(a) => {
            let change = if a.ends_with(".create") {
                "creation"
            } else if a.ends_with(".delete") {
                "deletion"
            } else {
                "change"
            };
            if is_user {
                ("iam", vec!["user", change])
            } else if is_group {
                ("iam", vec!["group", change])
            } else {
                ("api", vec![change])
            }
        }
        None => ("api", vec!["access"]),
    };
    let event_action =
        action
            .map(|a| a.replace('.', "-"))
            .unwrap_or_else(|| match scim.operation {
                Some(op) => format!(
                    "scim-{}",
                    serde_json::to_value(op)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ),
                None => "http-request".to_owned(),
            });
    let mut doc = Map::new();
    doc.insert("@timestamp".into(), json!(event.timestamp));
    doc.insert("ecs".into(), json!({"version": ECS_VERSION}));
    let mut ev = json!({
        "kind": "event",
        "category": [category],
        "type": kind_type,
        "action": event_action,
        "outcome": match event.outcome { Outcome::Success => "success", Outcome::Failure => "failure" },
        "id": event.event_id,
        "duration": (event.duration_ms * 1_000_000.0).round() as u64,
        "dataset": "scimtap.audit",
        "provider": "scimtap",
    });
    let reason = event
        .failure
        .as_ref()
        .map(|f| format!("{}: {}", f.kind, f.detail))
        .or_else(|| scim.error.as_ref().and_then(|e| e.detail.clone()))
        .or_else(|| scim.parse_error.clone());
    if let Some(reason) = reason {
        ev["reason"] = json!(reason);
    }
    doc.insert("event".into(), ev);

    let mut user = Map::new();
    if let Some(name) = &event.client.name {
        user.insert("name".into(), json!(name));
    }
    if is_user {
        let target = present(&[
            ("id", &scim.target.id),
            ("name", &scim.target.user_name),
            ("full_name", &scim.target.display_name),
        ]);
        if !target.is_empty() {
            user.insert("target".into(), Value::Object(target));
        }
        // Only a PATCH that names userName is known to change it: a PUT carries userName
        // whether or not it changed.
        let renames = scim.changes.patch_ops.iter().any(|op| {
            op.path.as_deref().is_some_and(|p| {
                p.rsplit(':')
                    .next()
                    .is_some_and(|a| a.eq_ignore_ascii_case("userName"))
            })
        }) || (!scim.changes.patch_ops.is_empty()
            && scim
                .changes
                .attributes
                .iter()
                .any(|a| a.eq_ignore_ascii_case("userName")));
        if matches!(action, Some("user.update")) && renames {
            if let Some(name) = &scim.target.user_name {
                user.insert("changes".into(), json!({"name": name}));
            }
        }
    }
    if !user.is_empty() {
        doc.insert("user".into(), Value::Object(user));
    }
    if is_group {
        let group = present(&[("id", &scim.target.id), ("name", &scim.target.display_name)]);
        if !group.is_empty() {
            doc.insert("group".into(), Value::Object(group));
        }
    }
    doc.insert(
        "source".into(),
        json!({"ip": event.client.address, "port": event.client.port}),
    );
    if let Some(ua) = &event.client.user_agent {
        doc.insert("user_agent".into(), json!({"original": ua}));
    }
    if let Some(subject) = &event.client.certificate_subject {
        doc.insert("tls".into(), json!({"client": {"subject": subject}}));
    }
    let mut http = json!({
        "request": {"method": event.http.method, "id": event.request_id, "body": {"bytes": event.http.request_bytes}},
        "response": {"body": {"bytes": event.http.response_bytes}},
        "version": event.http.version.trim_start_matches("HTTP/"),
    });
    if let Some(status) = event.http.status {
        http["response"]["status_code"] = json!(status);
    }
    doc.insert("http".into(), http);
    let mut url = json!({"path": event.http.path});
    if let Some(query) = &event.http.query {
        url["query"] = json!(query);
    }
    doc.insert("url".into(), url);
    if let Some(error) = &scim.error {
        let mut e = Map::new();
        if let Some(code) = error.scim_type.clone().or_else(|| error.status.clone()) {
            e.insert("code".into(), json!(code));
        }
        if let Some(detail) = &error.detail {
            e.insert("message".into(), json!(detail));
        }
        if !e.is_empty() {
            doc.insert("error".into(), Value::Object(e));
        }
    }
    // What ECS has no field for, in scimtap's own namespace.
    doc.insert(
        "scimtap".into(),
        json!({
            "schema_version": event.schema_version,
            "scim": scim,
            "client": {"token_fingerprint": event.client.token_fingerprint, "idp": event.client.idp},
            "failure": event.failure.as_ref().map(|f| json!({"side": f.side, "kind": f.kind})),
        }),
    );
    let mut line = serde_json::to_vec(&Value::Object(doc)).unwrap_or_default();
    line.push(b'\n');
    line
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
