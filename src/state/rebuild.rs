//! `scimtap state rebuild FILES...`: the shadow state recomputed from native audit files, by
//! replaying each event through the same [`super::observe`] the audit worker uses.
//!
//! What comes back depends on what the events carry. With `capture.include_bodies =
//! "redacted"` they hold the (redacted) bodies, so attribute values come back too. Without,
//! only what the event itself says: ids, userName/displayName/externalId, `active` (from
//! actions and PATCH values), group memberships, and the scalar PATCH values events show.
//! Files are read by [`crate::trail`]: integrity records and lines that are not events are
//! skipped, an event read twice counts once, and events are replayed in `timestamp` order,
//! since files are in order of completion. Each event goes to the state namespace of its
//! `route` ([`Namespaces`]).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::tracker::{track, Attempt};
use super::{observe, Seen, StateError, Store};
use crate::clock::Timestamp;
use crate::scim::{Changes, Operation, PatchOpInfo, ScimInfo, Target};

/// What a rebuild did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RebuildReport {
    pub events: u64,
    /// Lines skipped: integrity records, blank lines, lines that are not JSON events, repeats
    /// of an event already read.
    pub skipped: u64,
}

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Read(#[from] crate::trail::ReadError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Which state namespace an event's route writes: the configured routes' `state_namespace`
/// by route name. An event without a `route` (written before routes existed) belongs to the
/// first route; one whose route is null (no route took it) or not configured is skipped.
#[derive(Debug, Clone)]
pub struct Namespaces {
    /// (route name, namespace), the first route first.
    pub routes: Vec<(String, String)>,
}

impl Namespaces {
    fn of(&self, event: &Value) -> Option<&str> {
        let found = match event.get("route") {
            None => self.routes.first(),
            Some(Value::String(route)) => self.routes.iter().find(|(name, _)| name == route),
            Some(_) => None,
        };
        found.map(|(_, namespace)| namespace.as_str())
    }
}

/// Replays the events of `files` into `store`, each into its route's namespace.
///
/// # Errors
/// [`RebuildError`] when a file cannot be read or the store fails.
pub fn rebuild(
    store: &mut Store,
    files: &[&Path],
    confirm_within: Duration,
    namespaces: &Namespaces,
) -> Result<RebuildReport, RebuildError> {
    let mut report = RebuildReport::default();
    let mut events: Vec<Value> = Vec::new();
    report.skipped = crate::trail::for_each_event(files, |event| events.push(event))?;
    report.skipped += crate::trail::in_order(&mut events);
    for event in &events {
        fn text(v: Option<&Value>) -> &str {
            v.and_then(Value::as_str).unwrap_or_default()
        }
        // Alert events say nothing about identities.
        if text(event.pointer("/scim/actions/0")).starts_with("alert.") {
            continue;
        }
        let Some(namespace) = namespaces.of(event) else {
            report.skipped += 1;
            continue;
        };
        store.use_namespace(namespace);
        if text(event.pointer("/scim/actions/0")) == "deprovision.gap" {
            // Reported already: the tracker must not report it again.
            store.mark_gap_reported(
                "User",
                text(event.pointer("/scim/target/id")),
                text(event.get("event_id")),
            )?;
            report.events += 1;
            continue;
        }
        let Some(mut scim) = scim_of(event) else {
            report.skipped += 1;
            continue;
        };
        let http = event.get("http");
        let body = |name: &str| http.and_then(|h| h.get(name)).filter(|b| b.is_object());
        let seen = Seen {
            success: event.get("outcome").and_then(Value::as_str) == Some("success"),
            // A Bulk event carries the whole envelope, not its operation's body.
            request: body("request_body").filter(|_| scim.bulk.is_none()),
            response: body("response_body").filter(|_| scim.bulk.is_none()),
            at: event
                .get("timestamp")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        };
        scim.outcome_reason = match event.get("outcome_reason").and_then(Value::as_str) {
            Some("already_absent") => Some(crate::scim::OutcomeReason::AlreadyAbsent),
            Some("not_found_lookup") => Some(crate::scim::OutcomeReason::NotFoundLookup),
            _ => None,
        };
        observe(store, &mut scim, &seen)?;
        let context = || {
            serde_json::json!({
                "request_id": event.get("request_id"),
                "method": event.pointer("/http/method"),
                "path": event.pointer("/http/path"),
                "client": event.get("client"),
                "target": event.pointer("/scim/target"),
            })
        };
        scim.error = event
            .pointer("/scim/error")
            .and_then(|e| serde_json::from_value(e.clone()).ok());
        let attempt = Attempt {
            event_id: text(event.get("event_id")),
            at: Timestamp::parse_rfc3339(seen.at).unwrap_or_else(Timestamp::now),
            success: seen.success,
            status: event
                .pointer("/http/status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok()),
            failure_kind: event.pointer("/failure/kind").and_then(Value::as_str),
            scim: &scim,
            context: &context,
        };
        // What the tracker would report is in the files already; only its memory is rebuilt.
        track(store, &attempt, confirm_within)?;
        report.events += 1;
    }
    Ok(report)
}

/// The parts of an event's `scim` object the state reads.
fn scim_of(event: &Value) -> Option<ScimInfo> {
    let scim = event.get("scim")?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let target = scim.get("target");
    let changes = scim.get("changes");
    let operation = match scim.get("operation").and_then(Value::as_str)? {
        "create" => Operation::Create,
        "replace" => Operation::Replace,
        "patch" => Operation::Patch,
        "delete" => Operation::Delete,
        "read" => Operation::Read,
        "list" => Operation::List,
        "search" => Operation::Search,
        _ => return None,
    };
    Some(ScimInfo {
        operation: Some(operation),
        resource_type: text(scim.get("resource_type")),
        target: Target {
            id: text(target.and_then(|t| t.get("id"))),
            external_id: text(target.and_then(|t| t.get("external_id"))),
            user_name: text(target.and_then(|t| t.get("user_name"))),
            display_name: text(target.and_then(|t| t.get("display_name"))),
        },
        actions: strings(scim.get("actions")),
        changes: Changes {
            patch_ops: changes
                .and_then(|c| c.get("patch_ops"))
                .and_then(Value::as_array)
                .map(|ops| {
                    ops.iter()
                        .map(|op| PatchOpInfo {
                            op: text(op.get("op")).unwrap_or_default(),
                            raw_op: None,
                            path: text(op.get("path")),
                            value: op.get("value").cloned(),
                            raw_value: None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            members_added: strings(changes.and_then(|c| c.get("members_added"))),
            members_removed: strings(changes.and_then(|c| c.get("members_removed"))),
            members_replaced: changes
                .and_then(|c| c.get("members_replaced"))
                .filter(|v| v.is_array())
                .map(|v| strings(Some(v))),
            ..Changes::default()
        },
        bulk: scim
            .get("bulk")
            .filter(|b| b.is_object())
            .map(|_| crate::scim::BulkRef {
                index: 0,
                bulk_id: None,
                method: None,
                path: None,
                status: None,
            }),
        ..ScimInfo::default()
    })
}
