//! The shadow state: scimtap's memory of the identities it has seen, per (upstream, resource
//! type, id), so an event can say who a request was about when the request carried only an
//! id, resolve member ids to names, and show what a write changed before → after.
//!
//! Audit side only. The audit worker (a dedicated thread, `crate::pipeline`) owns the
//! [`Store`]: for each event it calls [`observe`], which reads what the state knew, adds
//! `scim.state` (and fills `scim.target`) and then records what the exchange established. The
//! request path never imports this module and never waits on it. What the state keeps is
//! what events may show: bodies redacted and pseudonymised by the event's own rules
//! (`crate::event::redacted_bodies`), never a sensitive attribute.
//!
//! State is learned only from successful exchanges: a refused or unanswered write changes
//! nothing the service holds.

mod diff;
mod postgres;
pub mod rebuild;
mod recent;
pub mod settle;
mod sql;
mod store;
pub mod tracker;

use std::path::PathBuf;

use serde_json::Value;

use crate::scim::{MemberRef, Operation, OutcomeReason, ScimInfo, StateInfo};

pub use diff::{apply_patch, diff, flatten};
pub use postgres::PG_SCHEMA_VERSION;
pub use store::{OpenDeprovision, Resource, Store, SCHEMA_VERSION};

/// Why the state store failed. The audit worker logs and counts these and writes the event
/// anyway: state is an aid to reading events, never a condition for having them.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the state file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot connect to the state database {target}: {source}")]
    Connect {
        /// The URL without its password.
        target: String,
        #[source]
        source: ::postgres::Error,
    },
    #[error("the state database {target} is unreachable; next attempt in {retry_in_ms} ms")]
    Unavailable { target: String, retry_in_ms: u128 },
    #[error("the state store has schema version {found}; this scimtap knows up to {supported} (written by a newer scimtap?)")]
    NewerSchema { found: i64, supported: i64 },
    #[error("{} is not a scimtap state file (no schema version)", path.display())]
    NotAStateFile { path: PathBuf },
    #[error("{} holds the state of several upstreams: {}", path.display(), upstreams.join(", "))]
    SeveralUpstreams {
        path: PathBuf,
        upstreams: Vec<String>,
    },
    #[error("state store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("state store: stored attributes are not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What an event's exchange brought besides its classification.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// The event's `outcome` is `success`.
    pub success: bool,
    /// The request and response bodies, redacted (`None`: absent, not JSON, or not known,
    /// e.g. when rebuilding from events written without `include_bodies = "redacted"`).
    pub request: Option<&'a Value>,
    pub response: Option<&'a Value>,
    /// When, for `updated_at` (RFC 3339).
    pub at: &'a str,
}

/// Reads what the state knew of the event's target, adds it to the event (`scim.state`,
/// missing `scim.target` names, `user.reactivate` for a PUT that re-enabled an inactive user),
/// then records what the exchange established when it succeeded.
///
/// Events without a resource type, and list/search events (which only teach the state), get
/// no `scim.state`.
///
/// # Errors
/// [`StateError`] when the store fails; `scim` may then be partly filled in, which is still
/// true of the event.
pub fn observe(store: &mut Store, scim: &mut ScimInfo, seen: &Seen<'_>) -> Result<(), StateError> {
    let Some(resource_type) = scim.resource_type.clone() else {
        return Ok(());
    };
    if matches!(scim.operation, Some(Operation::List | Operation::Search)) {
        if seen.success {
            learn_list(store, &resource_type, seen)?;
        }
        return Ok(());
    }
    let Some(id) = scim.target.id.clone() else {
        return Ok(());
    };
    let before = store.get(&resource_type, &id)?;
    let mut info = StateInfo {
        known: before.is_some(),
        ..StateInfo::default()
    };
    if let Some(before) = &before {
        fill_target(scim, before, &mut info);
        reclassify(scim, before, seen, &mut info);
    }
    let mut name = |id: &String| -> Result<MemberRef, StateError> {
        Ok(MemberRef {
            id: id.clone(),
            name: store.member_name(id)?,
        })
    };
    let changes = &scim.changes;
    // Against a known member list, only what changes it: re-adding a member (Entra sends
    // the same add again) or removing a non-member gains or loses nothing.
    let known_members = before.as_ref().and_then(|b| b.members.as_ref());
    let is_member = |id: &String| known_members.map(|m| m.contains(id));
    info.members_added = changes
        .members_added
        .iter()
        .filter(|id| is_member(id) != Some(true))
        .map(&mut name)
        .collect::<Result<_, _>>()?;
    info.members_removed = changes
        .members_removed
        .iter()
        .filter(|id| is_member(id) != Some(false))
        .map(&mut name)
        .collect::<Result<_, _>>()?;
    info.members_replaced = changes
        .members_replaced
        .as_ref()
        .map(|ids| ids.iter().map(&mut name).collect::<Result<_, _>>())
        .transpose()?;

    let gone = matches!(scim.operation, Some(Operation::Delete))
        && (seen.success || scim.outcome_reason == Some(OutcomeReason::AlreadyAbsent))
        || matches!(scim.operation, Some(Operation::Read))
            && scim.outcome_reason == Some(OutcomeReason::NotFoundLookup);
    if gone {
        // A deleted group's members lost it.
        if let Some(members) = before.as_ref().and_then(|b| b.members.as_ref()) {
            if seen.success && info.members_removed.is_empty() {
                info.members_removed = members.iter().map(&mut name).collect::<Result<_, _>>()?;
            }
        }
        store.remove(&resource_type, &id)?;
    } else if seen.success {
        let after = after_exchange(scim, before.as_ref(), &resource_type, &id, seen);
        // A replaced member list: who it added and removed, compared with the known list.
        if let (Some(_), Some(old), Some(new)) = (
            &changes.members_replaced,
            before.as_ref().and_then(|b| b.members.as_ref()),
            &after.members,
        ) {
            let added: Vec<&String> = new.iter().filter(|m| !old.contains(m)).collect();
            let removed: Vec<&String> = old.iter().filter(|m| !new.contains(m)).collect();
            info.members_added.extend(
                added
                    .into_iter()
                    .map(&mut name)
                    .collect::<Result<Vec<_>, _>>()?,
            );
            info.members_removed.extend(
                removed
                    .into_iter()
                    .map(&mut name)
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        if matches!(scim.operation, Some(Operation::Replace | Operation::Patch)) {
            if let Some(before) = &before {
                info.diff = diff(&before.attributes, &after.attributes);
                info.noop = info.diff.is_empty() && same_members(before, &after);
            }
        }
        store.put(&after, seen.at)?;
    }
    scim.state = Some(info);
    Ok(())
}

/// Names the target from state where the exchange did not.
fn fill_target(scim: &mut ScimInfo, before: &Resource, info: &mut StateInfo) {
    let target = &mut scim.target;
    for (field, slot, known) in [
        ("user_name", &mut target.user_name, &before.user_name),
        (
            "display_name",
            &mut target.display_name,
            &before.display_name,
        ),
        ("external_id", &mut target.external_id, &before.external_id),
    ] {
        if slot.is_none() && known.is_some() {
            slot.clone_from(known);
            info.target_filled.push(field);
        }
    }
}

/// A PUT with `active: true` of a user the state knows inactive re-enabled them: classified
/// statelessly it is `user.update` (Okta sends `active: true` in every profile PUT), with
/// state it is `user.reactivate`.
fn reclassify(scim: &mut ScimInfo, before: &Resource, seen: &Seen<'_>, info: &mut StateInfo) {
    let activates = seen
        .request
        .and_then(|body| body.as_object())
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("active")))
        .and_then(|(_, v)| diff::as_bool(v))
        == Some(true);
    if scim.operation == Some(Operation::Replace)
        && before.resource_type == "User"
        && before.active == Some(false)
        && activates
    {
        if let Some(action) = scim.actions.iter_mut().find(|a| *a == "user.update") {
            *action = "user.reactivate".to_owned();
            info.reclassified_from = Some("user.update".to_owned());
        }
    }
}

/// A single resource in a response body (not a ListResponse or an error).
fn resource_body(body: Option<&Value>) -> Option<&Value> {
    body.filter(|b| {
        b.as_object()
            .is_some_and(|o| o.keys().any(|k| k.eq_ignore_ascii_case("id")))
    })
}

/// What the resource is after a successful exchange: the service's answer when it returned
/// the resource, else what the request set (a create or PUT body, a PATCH applied to what was
/// known), else what the event itself says (target names, activation).
fn after_exchange(
    scim: &ScimInfo,
    before: Option<&Resource>,
    resource_type: &str,
    id: &str,
    seen: &Seen<'_>,
) -> Resource {
    let mut after = before.cloned().unwrap_or_else(|| Resource {
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        ..Resource::default()
    });
    let full = resource_body(seen.response).or(match scim.operation {
        Some(Operation::Create | Operation::Replace) => seen.request,
        _ => None,
    });
    let mut members_from_body = None;
    if let Some(body) = full {
        after.attributes = flatten(body);
        members_from_body = member_ids(body);
    } else if scim.operation == Some(Operation::Patch) {
        let operations = seen
            .request
            .and_then(|b| field(b, "Operations"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| ops_from_event(scim));
        apply_patch(&mut after.attributes, &operations);
    }
    // Identity: from the attributes, else from the event, else as known.
    let text = |key: &str| {
        after
            .attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| v.as_str().map(str::to_owned))
    };
    let target = &scim.target;
    after.user_name = text("userName")
        .or_else(|| target.user_name.clone())
        .or(after.user_name.take());
    after.display_name = text("displayName")
        .or_else(|| target.display_name.clone())
        .or(after.display_name.take());
    after.external_id = text("externalId")
        .or_else(|| target.external_id.clone())
        .or(after.external_id.take());
    let active_attribute = after
        .attributes
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("active"))
        .and_then(|(_, v)| diff::as_bool(v));
    let active_action = scim
        .actions
        .iter()
        .find_map(|a| match a.rsplit('.').next() {
            Some("deactivate") => Some(false),
            Some("reactivate") => Some(true),
            _ => None,
        });
    after.active = active_attribute.or(active_action).or(after.active);
    if resource_type == "Group" {
        after.members = Some(members_after(
            scim,
            members_from_body.or_else(|| after.members.take()),
        ));
    }
    after
}

/// A group's member list after the exchange: the body's when it had one, else what was known
/// with the request's additions, removals or replacement applied.
fn members_after(scim: &ScimInfo, known: Option<Vec<String>>) -> Vec<String> {
    let changes = &scim.changes;
    let mut members = match &changes.members_replaced {
        Some(replaced) if scim.operation != Some(Operation::Create) => replaced.clone(),
        _ => known.unwrap_or_default(),
    };
    members.retain(|m| !changes.members_removed.contains(m));
    for added in &changes.members_added {
        if !members.contains(added) {
            members.push(added.clone());
        }
    }
    members
}

fn same_members(before: &Resource, after: &Resource) -> bool {
    let sorted = |m: &Option<Vec<String>>| {
        let mut m = m.clone().unwrap_or_default();
        m.sort();
        m
    };
    sorted(&before.members) == sorted(&after.members)
}

/// Member ids of a Group body's `members`, when it has that attribute.
fn member_ids(body: &Value) -> Option<Vec<String>> {
    let members = field(body, "members")?.as_array()?;
    Some(
        members
            .iter()
            .filter_map(|m| field(m, "value").and_then(Value::as_str).map(str::to_owned))
            .collect(),
    )
}

/// The PATCH operations the event shows (`scim.changes.patch_ops`, scalar values only), for
/// when the request body is not at hand (rebuilding from events without bodies).
fn ops_from_event(scim: &ScimInfo) -> Vec<Value> {
    scim.changes
        .patch_ops
        .iter()
        .map(|op| {
            let mut o = serde_json::Map::new();
            o.insert("op".to_owned(), Value::String(op.op.clone()));
            if let Some(path) = &op.path {
                o.insert("path".to_owned(), Value::String(path.clone()));
            }
            if let Some(value) = &op.value {
                o.insert("value".to_owned(), value.clone());
            }
            Value::Object(o)
        })
        .collect()
}

/// Learns every resource of a successful list or search response (Entra looks users up by
/// filter before it writes: the answer names the id later requests use).
fn learn_list(store: &mut Store, resource_type: &str, seen: &Seen<'_>) -> Result<(), StateError> {
    let Some(resources) = seen
        .response
        .and_then(|b| field(b, "Resources"))
        .and_then(Value::as_array)
    else {
        return Ok(());
    };
    for body in resources {
        let Some(id) = field(body, "id").and_then(Value::as_str) else {
            continue;
        };
        let before = store.get(resource_type, id)?;
        let mut resource = before.clone().unwrap_or_else(|| Resource {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            ..Resource::default()
        });
        resource.attributes = flatten(body);
        let text = |key: &str| field(body, key).and_then(Value::as_str).map(str::to_owned);
        resource.user_name = text("userName").or(resource.user_name);
        resource.display_name = text("displayName").or(resource.display_name);
        resource.external_id = text("externalId").or(resource.external_id);
        resource.active = field(body, "active")
            .and_then(diff::as_bool)
            .or(resource.active);
        if let Some(members) = member_ids(body) {
            resource.members = Some(members);
        }
        store.put(&resource, seen.at)?;
    }
    Ok(())
}

/// A member of a JSON object, its name matched without regard to case (SCIM attribute names
/// are case-insensitive).
fn field<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    value
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests;
