//! Output formats besides the native JSON event: what a sink writes for each [`AuditEvent`].
//!
//! CEF (ArcSight Common Event Format):
//! `CEF:0|scimtap|scimtap|<version>|<class id>|<name>|<severity>|<extension>`, with the header
//! escaping `\` and `|`, and extension values escaping `\`, `=`, CR and LF, as the CEF
//! implementation standard requires. The class id is the SCIM action (`user.deactivate`), or
//! `scim.<operation>` / `http.request` when the request asked nothing of an identity.

mod ocsf;
#[cfg(test)]
pub(crate) mod testing;

use std::fmt::Write;

use crate::config::EventFormat;
use crate::event::{AuditEvent, Outcome};
use crate::exchange::FailureKind;
use crate::scim::Operation;
use crate::sinks::Severity;

pub(crate) use ocsf::operation_name;
pub use ocsf::{ocsf_lines, OCSF_VERSION};

/// The event in `format`: its lines, each newline included and each one sink record. One line,
/// except in OCSF, which gives one record per SCIM action and per member added or removed
/// (docs/formats-ocsf.md); those records are told apart by [`record_id`].
///
/// # Errors
/// When the native event cannot be serialised (not expected: every field is plain data).
pub fn encode(
    format: EventFormat,
    event: &AuditEvent<'_>,
) -> Result<Vec<Vec<u8>>, serde_json::Error> {
    Ok(match format {
        EventFormat::Native => vec![event.to_json_line()?],
        EventFormat::Cef => vec![cef_line(event)],
        EventFormat::Ecs => vec![ecs_line(event)],
        EventFormat::Ocsf => ocsf_lines(event),
    })
}

/// The id of line `index` (0-based) of the `count` lines an event gives: the event id when it
/// gives one, else `<event_id>/<n>` with `n` counting from 1. OCSF's `metadata.uid`, and the
/// record's id in sinks (Elasticsearch `_id`), so two records of one event never overwrite
/// each other.
pub fn record_id(event_id: &str, index: usize, count: usize) -> String {
    if count <= 1 {
        event_id.to_owned()
    } else {
        format!("{event_id}/{}", index + 1)
    }
}

/// How urgent `event` is, the same in every format (docs/formats.md, "Severity"): a SCIM write
/// refused for its credentials is [`Severity::Error`], any other failure
/// [`Severity::Warning`], a success [`Severity::Info`].
pub fn severity(event: &AuditEvent<'_>) -> Severity {
    if let Some(alert) = &event.alert {
        return match alert.status {
            "firing" if is_severe_alert(alert) => Severity::Error,
            "firing" => Severity::Warning,
            _ => Severity::Info,
        };
    }
    // A user the IdP removed who may still have access is the most severe thing scimtap sees.
    let gap = event
        .deprovision
        .as_ref()
        .is_some_and(|d| d.status == crate::scim::DeprovisionStatus::Gap);
    if is_refused_write(event) || gap {
        Severity::Error
    } else if event.outcome == Outcome::Failure {
        Severity::Warning
    } else {
        Severity::Info
    }
}

/// A firing alert as severe as a refused write: a token problem or someone probing (a burst of
/// 401 or 403), a mass deactivation, a deprovisioning gap. Failure rates, 429 bursts and retry
/// storms are warnings.
fn is_severe_alert(alert: &crate::alerts::AlertInfo) -> bool {
    match alert.kind {
        "mass_deactivation" | "deprovision_gap" => true,
        "status_burst" => matches!(alert.key.status, Some(401 | 403)),
        _ => false,
    }
}

/// A SCIM write (create, replace, patch, delete, Bulk; not a read or a `.search`, which are
/// POSTs too) answered 401 or 403, by the service or by scimtap refusing an unknown client: an
/// unauthenticated or revoked credential trying to change identities.
fn is_refused_write(event: &AuditEvent<'_>) -> bool {
    let write = matches!(
        event.scim.operation,
        Some(
            Operation::Create
                | Operation::Replace
                | Operation::Patch
                | Operation::Delete
                | Operation::Bulk
        )
    );
    let refused = matches!(event.http.status, Some(401 | 403))
        || event
            .failure
            .as_ref()
            .is_some_and(|f| f.kind == FailureKind::ClientNotAllowed);
    write && refused
}

/// The CEF header severity (0-10) and ECS `event.severity` of a [`Severity`]: 3 (Low), 6
/// (Medium), 8 (High) on CEF's scale.
fn numeric_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 3,
        Severity::Warning => 6,
        Severity::Error => 8,
    }
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
    let name = match (&scim.resource_type, scim.operation, &event.alert) {
        (_, _, Some(alert)) => format!("{class_id} {}", alert.rule),
        (Some(rt), Some(_), _) => format!("{} {rt}", class_id),
        _ => format!("{} {} {}", class_id, event.http.method, event.http.path),
    };
    let severity = numeric_severity(severity(event));
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
    if let Some(upstream) = &event.upstream {
        ext.field("dhost", Some(upstream.host.clone()));
        ext.field("dpt", Some(upstream.port.to_string()));
    }
    // The route: the provisioned app, as scimtap names it.
    ext.field(
        "destinationServiceName",
        event.route.as_deref().map(str::to_owned),
    );
    ext.field("suser", event.client.name.clone());
    ext.field("suid", event.client.token_fingerprint.clone());
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
    ext.labelled(
        "cn1",
        "httpStatus",
        event.http.status.map(|s| s.to_string()),
    );
    ext.labelled("cs1", "resourceType", scim.resource_type.clone());
    ext.labelled(
        "cs2",
        "actions",
        (!scim.actions.is_empty()).then(|| scim.actions.join(",")),
    );
    ext.labelled("cs3", "eventId", Some(event.event_id.clone()));
    let ids = |ids: &[String]| (!ids.is_empty()).then(|| ids.join(","));
    ext.labelled(
        "flexString1",
        "membersAdded",
        ids(&scim.changes.members_added),
    );
    ext.labelled(
        "flexString2",
        "membersRemoved",
        ids(&scim.changes.members_removed),
    );
    ext.labelled(
        "cs6",
        "membersReplaced",
        scim.changes.members_replaced.as_deref().and_then(ids),
    );
    if let Some(d) = &event.deprovision {
        ext.field("reason", d.last_failure.clone());
        ext.labelled("cn2", "attempts", Some(d.attempts.to_string()));
        ext.labelled("cn3", "latencyMs", d.latency_ms.map(|ms| ms.to_string()));
    }
    if let Some(a) = &event.alert {
        ext.field("msg", Some(a.summary.clone()));
        ext.field("cat", Some(format!("alert.{}", a.kind)));
        ext.labelled("cs6", "alertRule", Some(a.rule.clone()));
        ext.labelled("cs4", "alertEpisode", Some(a.episode_id.clone()));
        ext.labelled("cfp1", "alertValue", Some(a.value.to_string()));
        ext.labelled("cfp2", "alertThreshold", Some(a.threshold.to_string()));
    }
    ext.labelled(
        "cs4",
        "scimError",
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
    ext.labelled(
        "cs5",
        "failureSide",
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
    /// A custom key (`cs1`, `cn1`, `flexString1`, ...) and its `<key>Label`: both when there
    /// is a value, neither when there is none (a label alone names nothing).
    fn labelled(&mut self, key: &str, label: &str, value: Option<String>) {
        if value.is_some() {
            self.field(&format!("{key}Label"), Some(label.to_owned()));
            self.field(key, value);
        }
    }

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
        // An alert is about provisioning, and changes nothing itself.
        Some(_) if event.alert.is_some() => ("iam", vec!["info"]),
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
        "kind": (if event.alert.is_some() { "alert" } else { "event" }),
        "category": [category],
        "type": kind_type,
        "action": event_action,
        "outcome": match event.outcome { Outcome::Success => "success", Outcome::Failure => "failure" },
        "severity": numeric_severity(severity(event)),
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
    if is_group {
        // A membership change targets its members: `user.target.id` (one id, or every id of
        // the adds, removes and replacement, in that order) in `user.target.group` (the group).
        let changes = &scim.changes;
        let mut members: Vec<&String> = Vec::new();
        for id in changes
            .members_added
            .iter()
            .chain(&changes.members_removed)
            .chain(changes.members_replaced.iter().flatten())
        {
            if !members.contains(&id) {
                members.push(id);
            }
        }
        if let Some(only) = members.first().filter(|_| members.len() == 1) {
            user.insert("target".into(), json!({"id": only}));
        } else if !members.is_empty() {
            user.insert("target".into(), json!({"id": members}));
        }
        let group = present(&[("id", &scim.target.id), ("name", &scim.target.display_name)]);
        if !members.is_empty() && !group.is_empty() {
            user["target"]["group"] = Value::Object(group);
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
    if let Some(upstream) = &event.upstream {
        let key = if upstream.host_is_ip() {
            "ip"
        } else {
            "domain"
        };
        doc.insert(
            "destination".into(),
            json!({key: upstream.host, "address": upstream.host, "port": upstream.port}),
        );
    }
    // The route: the provisioned app, as scimtap names it.
    if let Some(route) = &event.route {
        doc.insert("service".into(), json!({"target": {"name": &**route}}));
    }
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
            "retry_of": event.retry_of,
            "deprovision": event.deprovision,
            "alert": event.alert,
        }),
    );
    if let Some(alert) = &event.alert {
        doc.insert("message".into(), json!(alert.summary));
    }
    let mut line = serde_json::to_vec(&Value::Object(doc)).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FailureInfo;
    use crate::exchange::{FailureKind, FailureSide};
    use crate::formats::testing::{event, scim};
    use crate::scim::Operation;
    use serde_json::{json, Value};

    /// The lines `encode` gives for `event` in `format`.
    fn records(format: EventFormat, e: &AuditEvent<'_>) -> Vec<String> {
        encode(format, e)
            .unwrap()
            .into_iter()
            .map(|line| {
                let text = String::from_utf8(line).unwrap();
                assert!(text.ends_with('\n') && !text.trim_end().contains('\n'));
                text.trim_end().to_owned()
            })
            .collect()
    }

    fn docs(format: EventFormat, e: &AuditEvent<'_>) -> Vec<Value> {
        records(format, e)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A PATCH of group `u1` that adds `added` and removes `removed`.
    fn membership_patch(added: &[&str], removed: &[&str]) -> AuditEvent<'static> {
        let mut actions = Vec::new();
        if !added.is_empty() {
            actions.push("group.members.add");
        }
        if !removed.is_empty() {
            actions.push("group.members.remove");
        }
        let mut s = scim("Group", Operation::Patch, &actions);
        s.changes.members_added = added.iter().map(|m| (*m).to_owned()).collect();
        s.changes.members_removed = removed.iter().map(|m| (*m).to_owned()).collect();
        event("PATCH", s, Some(204))
    }

    #[test]
    fn every_format_names_the_route_as_the_target_service() {
        let mut read = event("GET", scim("User", Operation::Read, &[]), Some(200));
        read.route = Some(std::sync::Arc::from("crm"));
        let mut create = event(
            "POST",
            scim("User", Operation::Create, &["user.create"]),
            Some(201),
        );
        create.route = Some(std::sync::Arc::from("crm"));

        let ocsf = &docs(EventFormat::Ocsf, &read)[0];
        assert_eq!(ocsf["class_uid"], 6003, "{ocsf}");
        assert_eq!(ocsf["api"]["service"]["name"], "crm", "{ocsf}");
        assert_eq!(ocsf["unmapped"]["route"], "crm", "{ocsf}");
        let ocsf = &docs(EventFormat::Ocsf, &create)[0];
        assert_eq!(ocsf["class_uid"], 3001, "{ocsf}");
        assert_eq!(ocsf["unmapped"]["route"], "crm", "{ocsf}");
        let ecs = &docs(EventFormat::Ecs, &create)[0];
        assert_eq!(ecs["service"]["target"]["name"], "crm", "{ecs}");
        let cef = &records(EventFormat::Cef, &create)[0];
        assert!(cef.contains(" destinationServiceName=crm "), "{cef}");

        // A request no route took: no route is invented.
        read.route = None;
        assert!(docs(EventFormat::Ocsf, &read)[0]["unmapped"]
            .get("route")
            .is_none());
        assert!(docs(EventFormat::Ecs, &read)[0].get("service").is_none());
        assert!(!records(EventFormat::Cef, &read)[0].contains("destinationServiceName"));
    }

    #[test]
    fn every_format_names_the_upstream_service_as_the_destination() {
        let upstream = |host: &str| {
            Some(std::sync::Arc::new(crate::event::UpstreamInfo {
                host: host.into(),
                port: 8443,
                tls: true,
            }))
        };
        let mut deactivate = event(
            "PATCH",
            scim("User", Operation::Patch, &["user.deactivate"]),
            Some(200),
        );
        deactivate.upstream = upstream("app.example.com");
        let mut read = event("GET", scim("User", Operation::Read, &[]), Some(200));
        read.upstream = upstream("10.1.2.3");

        let ocsf = &docs(EventFormat::Ocsf, &deactivate)[0];
        assert_eq!(ocsf["class_uid"], 3001, "{ocsf}");
        assert_eq!(
            ocsf["unmapped"]["upstream"]["host"], "app.example.com",
            "{ocsf}"
        );
        let ocsf = &docs(EventFormat::Ocsf, &read)[0];
        assert_eq!(ocsf["class_uid"], 6003, "{ocsf}");
        assert_eq!(
            ocsf["dst_endpoint"],
            json!({"ip": "10.1.2.3", "port": 8443, "svc_name": "SCIM"})
        );
        assert_eq!(ocsf["api"]["service"]["uid"], "10.1.2.3:8443", "{ocsf}");
        assert!(ocsf["observables"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["name"] == "dst_endpoint.ip")));

        let ecs = &docs(EventFormat::Ecs, &deactivate)[0];
        assert_eq!(ecs["destination"]["domain"], "app.example.com", "{ecs}");
        assert_eq!(ecs["destination"]["port"], 8443, "{ecs}");
        let ecs = &docs(EventFormat::Ecs, &read)[0];
        assert_eq!(ecs["destination"]["ip"], "10.1.2.3", "{ecs}");

        let cef = &records(EventFormat::Cef, &deactivate)[0];
        assert!(cef.contains(" dhost=app.example.com dpt=8443"), "{cef}");

        // Without an upstream (not from a running proxy) nothing is invented.
        let bare = event("GET", scim("User", Operation::Read, &[]), Some(200));
        assert!(docs(EventFormat::Ocsf, &bare)[0]
            .get("dst_endpoint")
            .is_none());
        assert!(docs(EventFormat::Ecs, &bare)[0]
            .get("destination")
            .is_none());
    }

    #[test]
    fn ocsf_keeps_every_membership_action_of_a_patch() {
        let recs = docs(EventFormat::Ocsf, &membership_patch(&["m1"], &["m2"]));
        let got: Vec<(u64, &str)> = recs
            .iter()
            .map(|r| {
                (
                    r["type_uid"].as_u64().unwrap_or(0),
                    r["user"]["uid"].as_str().unwrap_or("-"),
                )
            })
            .collect();
        assert_eq!(got, [(300603, "m1"), (300604, "m2")], "{recs:?}");
        for r in &recs {
            assert_eq!(r["group"]["uid"], "u1");
            assert_eq!(r["metadata"]["correlation_uid"], "req-1");
        }
        assert_ne!(recs[0]["metadata"]["uid"], recs[1]["metadata"]["uid"]);
    }

    #[test]
    fn ocsf_gives_each_added_member_its_own_add_user_record() {
        let recs = docs(EventFormat::Ocsf, &membership_patch(&["m1", "m2"], &[]));
        let users: Vec<&Value> = recs.iter().map(|r| &r["user"]["uid"]).collect();
        assert_eq!(users, [&json!("m1"), &json!("m2")], "{recs:?}");
        assert!(recs.iter().all(|r| r["activity_id"] == 3));
    }

    #[test]
    fn ocsf_keeps_an_attribute_update_beside_a_disable() {
        let e = event(
            "PATCH",
            scim(
                "User",
                Operation::Patch,
                &["user.update", "user.deactivate"],
            ),
            Some(200),
        );
        let recs = docs(EventFormat::Ocsf, &e);
        let got: Vec<u64> = recs.iter().filter_map(|r| r["type_uid"].as_u64()).collect();
        assert_eq!(got, [300105, 300199], "the most significant first");
    }

    #[test]
    fn ocsf_actor_is_the_idp_service_account_with_the_token_as_uid() {
        let e = membership_patch(&["m1"], &[]);
        let r = &docs(EventFormat::Ocsf, &e)[0];
        assert_eq!(
            r["actor"]["user"],
            json!({"name": "okta-prod", "uid": "0123456789abcdef", "type_id": 4, "type": "Service"})
        );
        let observables: Vec<(String, u64, String)> = r["observables"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|o| {
                (
                    o["name"].as_str().unwrap_or("").to_owned(),
                    o["type_id"].as_u64().unwrap_or(0),
                    o["value"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        for expected in [
            ("src_endpoint.ip", 2, "10.0.0.7"),
            ("actor.user.uid", 19, "0123456789abcdef"),
            ("group.uid", 33, "u1"),
            ("user.uid", 31, "m1"),
        ] {
            let expected = (expected.0.to_owned(), expected.1, expected.2.to_owned());
            assert!(
                observables.contains(&expected),
                "{expected:?} in {observables:?}"
            );
        }
    }

    #[test]
    fn ecs_names_the_member_of_a_membership_change_as_the_target_user() {
        let d = &docs(EventFormat::Ecs, &membership_patch(&["m1"], &[]))[0];
        assert_eq!(d["user"]["target"]["id"], "m1", "{d}");
        assert_eq!(d["user"]["target"]["group"]["id"], "u1", "{d}");
        let d = &docs(EventFormat::Ecs, &membership_patch(&["m1"], &["m2", "m3"]))[0];
        assert_eq!(d["user"]["target"]["id"], json!(["m1", "m2", "m3"]), "{d}");
    }

    #[test]
    fn cef_names_members_and_token_and_never_a_label_without_its_value() {
        let line = &records(EventFormat::Cef, &membership_patch(&["m1", "m2"], &["m3"]))[0];
        assert!(line.contains(" suid=0123456789abcdef"), "{line}");
        assert!(
            line.contains(" flexString1Label=membersAdded flexString1=m1,m2"),
            "{line}"
        );
        assert!(
            line.contains(" flexString2Label=membersRemoved flexString2=m3"),
            "{line}"
        );
        // A success without a SCIM error or a failure: no scimError, no failureSide.
        let ext = line.splitn(8, '|').nth(7).unwrap_or_default();
        let keys: Vec<&str> = ext
            .split(' ')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
            .collect();
        for key in &keys {
            if let Some(field) = key.strip_suffix("Label") {
                assert!(keys.contains(&field), "{key} without {field}: {line}");
            }
        }
        let e = event("GET", scim("User", Operation::Read, &[]), None);
        let line = &records(EventFormat::Cef, &e)[0];
        assert!(!line.contains("cn1Label"), "no status, no label: {line}");
    }

    /// Severity by format: (OCSF `severity_id`, CEF severity, ECS `event.severity`).
    fn severities(e: &AuditEvent<'_>) -> (u64, String, u64) {
        let ocsf = docs(EventFormat::Ocsf, e)[0]["severity_id"]
            .as_u64()
            .unwrap_or(0);
        let cef = records(EventFormat::Cef, e)[0]
            .split('|')
            .nth(6)
            .unwrap_or_default()
            .to_owned();
        let ecs = docs(EventFormat::Ecs, e)[0]["event"]["severity"]
            .as_u64()
            .unwrap_or(0);
        (ocsf, cef, ecs)
    }

    #[test]
    fn an_unauthenticated_write_is_more_severe_than_a_failed_deprovisioning() {
        let delete = |status| {
            event(
                "DELETE",
                scim("User", Operation::Delete, &["user.delete"]),
                Some(status),
            )
        };
        assert_eq!(severities(&delete(204)), (1, "3".to_owned(), 3));
        assert_eq!(severities(&delete(500)), (3, "6".to_owned(), 6));
        assert_eq!(severities(&delete(401)), (4, "8".to_owned(), 8));
        let patch = event(
            "PATCH",
            scim("User", Operation::Patch, &["user.deactivate"]),
            Some(403),
        );
        assert_eq!(severities(&patch), (4, "8".to_owned(), 8));
        // scimtap's own refusal of an unknown client.
        let mut refused = event(
            "POST",
            scim("User", Operation::Create, &["user.create"]),
            Some(401),
        );
        refused.http.response_generated = true;
        refused.failure = Some(FailureInfo {
            side: FailureSide::Downstream,
            kind: FailureKind::ClientNotAllowed,
            detail: "no configured client".into(),
        });
        assert_eq!(severities(&refused), (4, "8".to_owned(), 8));
        // Reads and searches refused are ordinary failures.
        let read = event("GET", scim("User", Operation::Read, &[]), Some(401));
        assert_eq!(severities(&read), (2, "6".to_owned(), 6));
        let search = event("POST", scim("User", Operation::Search, &[]), Some(403));
        assert_eq!(severities(&search), (2, "6".to_owned(), 6));
    }

    #[test]
    fn a_deprovisioning_gap_is_high_severity_in_every_format_and_carries_its_record() {
        let mut gap = event(
            "PATCH",
            crate::scim::ScimInfo {
                operation: None,
                ..scim("User", Operation::Patch, &["deprovision.gap"])
            },
            Some(502),
        );
        gap.deprovision = Some(crate::scim::DeprovisionInfo {
            status: crate::scim::DeprovisionStatus::Gap,
            requested_action: "user.deactivate".into(),
            requested_event_id: "e1".into(),
            requested_at: "2026-11-22T09:00:00.000Z".into(),
            attempts: 2,
            last_event_id: "e2".into(),
            last_status: Some(502),
            last_failure: Some("connect_refused".into()),
            due_at: "2026-11-22T10:00:00.000Z".into(),
            gap_event_id: Some("0190-event".into()),
            closed_by: None,
            closing_event_id: None,
            latency_ms: None,
        });
        assert_eq!(severities(&gap), (4, "8".to_owned(), 8));
        let ocsf = &docs(EventFormat::Ocsf, &gap)[0];
        assert_eq!(ocsf["class_uid"], 3001, "{ocsf}");
        assert_eq!(ocsf["activity_name"], "Deprovisioning Gap", "{ocsf}");
        assert_eq!(ocsf["unmapped"]["deprovision"]["attempts"], 2, "{ocsf}");
        let ecs = &docs(EventFormat::Ecs, &gap)[0];
        assert_eq!(ecs["event"]["action"], "deprovision-gap", "{ecs}");
        assert_eq!(
            ecs["scimtap"]["deprovision"]["requested_event_id"], "e1",
            "{ecs}"
        );
        let cef = &records(EventFormat::Cef, &gap)[0];
        assert!(cef.contains("|deprovision.gap|"), "{cef}");
        assert!(cef.contains(" reason=connect_refused"), "{cef}");
        assert!(cef.contains(" cn2Label=attempts cn2=2"), "{cef}");
        assert!(!cef.contains("cn3Label"), "no latency on a gap: {cef}");
    }

    #[test]
    fn header_and_extension_escaping_follow_the_standard() {
        assert_eq!(header(r"a|b\c"), r"a\|b\\c");
        let mut ext = Extension::default();
        ext.field("msg", Some("a=b\\c\nd|e".to_owned()));
        ext.field("absent", None);
        assert_eq!(ext.0, r"msg=a\=b\\c\nd|e");
    }
}
