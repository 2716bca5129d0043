//! `scimtap trace --user X`: everything that happened to one identity, oldest first, from
//! native audit files and, when one is at hand, the shadow state.
//!
//! **Who X is.** X may be an id, a userName (compared without regard to ASCII case, as SCIM
//! compares userNames; also as its pseudonym when the events' `[privacy]` key is known) or an
//! externalId. Any user event whose `scim.target` names X, or whose successful write set X
//! (`scim.changes.requested`), gives the user's id; so does the state. From then on the trace
//! follows the id, so a rename mid-history does not lose the user. A refused rename *to* X
//! gives nothing (X belongs to someone else), and a refused create of X, which has no id, is
//! an entry of its own.
//!
//! **What the timeline shows.** One [`Entry`] per change: created, updated (before → after
//! from `scim.state.diff`, else the values the request set; the identity names the trace saw
//! change either way), deactivated, reactivated, deleted, group gained or lost (from the
//! member lists of group events: added, removed, a replaced list she entered or left, a
//! group deleted under her), the deprovisioning tracker's `deprovision.gap` /
//! `deprovision.closed`, and last what the state holds now. Failed attempts are entries too,
//! with their status and reason, and a retry names the attempt it retries (`retry_of`).
//! Reads, lists and searches change nothing and make no entry.
//!
//! **How.** The files are read up to three times through [`crate::trail`]: to learn the ids,
//! to learn which groups ever listed her (a pushed member list that leaves her out, or a
//! group's deletion, matters only for those), and to keep the events about her, their member
//! lists cut down to her ids, and her groups' names. Only those are held and sorted: tracing through a year of files needs
//! memory for one user's history, not the year's. Files may come in any order (`audit.jsonl*`
//! lists the newest first).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::scim::{DiffEntry, MemberRef, Pseudonymizer, Target};
use crate::state::{StateError, Store};
use crate::trail::{self, ReadError};

mod output;
pub use output::{write_json, write_text};

/// Why a trace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Who to trace, and what helps to find them.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    /// As given: an id, a userName or an externalId.
    pub user: &'a str,
    /// The events' pseudonymisation key (`[privacy] hash_key_file`): a userName is also looked
    /// for as its pseudonym.
    pub pseudonymizer: Option<&'a Pseudonymizer>,
    /// The shadow state (opened with [`Store::open_read_only`]): finds the user by today's
    /// names, names groups, and says what it holds now.
    pub state: Option<&'a Store>,
}

/// One user's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The user's ids (more than one when X named several users over time, e.g. one deleted
    /// and provisioned again).
    pub ids: Vec<String>,
    pub entries: Vec<Entry>,
    /// Events that name the user (reads included), and events and skipped lines read in all.
    pub events_naming: u64,
    pub events_read: u64,
    pub lines_skipped: u64,
    /// Some userName in the files was a pseudonym and no key was given: X, typed in clear,
    /// could not match it.
    pub pseudonyms_unmatched: bool,
}

impl Trace {
    /// Some event, or the state, names the user.
    pub fn found(&self) -> bool {
        self.events_naming > 0 || !self.entries.is_empty()
    }
}

/// What an entry says happened. `--json` writes these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Created,
    Updated,
    Deactivated,
    Reactivated,
    Deleted,
    GroupGained,
    GroupLost,
    DeprovisionGap,
    DeprovisionClosed,
    /// What the state store holds now (the last entry, with a state file).
    State,
}

/// One line of the timeline. Every field is always written (`null` or empty where it does not
/// apply), in this order; docs/answers.md documents them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The event's `timestamp`; for [`Kind::State`], when the state last learned of the user.
    pub at: Option<String>,
    pub kind: Kind,
    /// The SCIM action behind the entry (`user.deactivate`, `group.members.replace`,
    /// `deprovision.gap`); null for [`Kind::State`].
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub outcome_reason: Option<String>,
    /// What the client got (a Bulk operation's own status).
    pub status: Option<u64>,
    /// The user as known at this point, in the shape of `scim.target` (names from the events
    /// so far, or the state).
    pub user: Target,
    /// The group of a membership entry.
    pub group: Option<MemberRef>,
    /// Before → after: `scim.state.diff`, plus the identity names (userName, externalId,
    /// displayName) the trace saw change when the state does not list them.
    pub diff: Vec<DiffEntry>,
    /// The values the request set, as the event shows them (scalar PATCH values).
    pub set: Vec<Set>,
    /// `scim.changes.attributes`: what the request touched.
    pub attributes: Vec<String>,
    /// `scim.state.noop`: a write that changed nothing the state knew.
    pub noop: bool,
    pub failure: Option<Failure>,
    /// The event's `client` object, as written (docs/events.md).
    pub client: Option<Value>,
    /// The event id of the earlier failed attempt this one retries.
    pub retry_of: Option<String>,
    /// A deprovisioning tracker event's `deprovision` object, as written.
    pub deprovision: Option<Value>,
    /// For [`Kind::State`]: `active` and the groups, as the state holds them.
    pub state: Option<StateNow>,
    pub event_id: Option<String>,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Set {
    pub attribute: String,
    pub value: Value,
}

/// Why an attempt failed: `failure.kind` / `failure.detail` when the exchange broke, else the
/// service's SCIM error (`scim_type` / `detail`), else the parse error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub kind: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateNow {
    pub active: Option<bool>,
    pub groups: Vec<MemberRef>,
}

/// Traces `lookup.user` through `files` (and the state).
///
/// # Errors
/// [`TraceError`] when a file cannot be read or the state store fails.
pub fn trace(files: &[&Path], lookup: &Lookup<'_>) -> Result<Trace, TraceError> {
    let mut tracer = Tracer::new(lookup)?;
    let skipped = trail::for_each_event(files, |event| tracer.resolve(&event))?;
    if !tracer.ids.is_empty() {
        trail::for_each_event(files, |event| tracer.note_groups(&event))?;
    }
    if !tracer.ids.is_empty() || tracer.named_without_id {
        trail::for_each_event(files, |event| tracer.collect(event))?;
    }
    Ok(tracer.finish(skipped)?)
}

/// Traces `lookup.user` through events already in memory (the live view's recent events),
/// with the same three passes as [`trace`]. `events` may be in any order.
///
/// # Errors
/// [`StateError`] only when `lookup.state` is given and fails.
pub fn trace_events(events: &[Value], lookup: &Lookup<'_>) -> Result<Trace, StateError> {
    let mut tracer = Tracer::new(lookup)?;
    for event in events {
        tracer.resolve(event);
    }
    if !tracer.ids.is_empty() {
        for event in events {
            tracer.note_groups(event);
        }
    }
    if !tracer.ids.is_empty() || tracer.named_without_id {
        for event in events {
            tracer.collect(event.clone());
        }
    }
    tracer.finish(0)
}

// === resolving and collecting ===

fn text<'v>(event: &'v Value, pointer: &str) -> Option<&'v str> {
    event.pointer(pointer).and_then(Value::as_str)
}

fn texts<'v>(event: &'v Value, pointer: &str) -> impl Iterator<Item = &'v str> {
    event
        .pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn actions(event: &Value) -> impl Iterator<Item = &str> {
    texts(event, "/scim/actions")
}

fn succeeded(event: &Value) -> bool {
    text(event, "/outcome") == Some("success")
}

/// An event about a user: on `/Users`, or carrying a user or deprovisioning action (the
/// tracker's events name the user as their target).
fn is_user_event(event: &Value) -> bool {
    text(event, "/scim/resource_type") == Some("User")
        || actions(event).any(|a| a.starts_with("user.") || a.starts_with("deprovision."))
}

fn is_group_event(event: &Value) -> bool {
    text(event, "/scim/resource_type") == Some("Group")
        || actions(event).any(|a| a.starts_with("group."))
}

/// The `scim.changes` lists of member ids.
const MEMBER_LISTS: [&str; 3] = ["members_added", "members_removed", "members_replaced"];

struct Tracer<'a> {
    lookup: Lookup<'a>,
    pseudonym: Option<String>,
    ids: BTreeSet<String>,
    /// An event names X without an id (a refused create).
    named_without_id: bool,
    /// Groups whose member lists ever named one of the ids.
    groups: HashSet<String>,
    /// Those groups' ids → (timestamp, displayName) as events named them.
    group_names: HashMap<String, Vec<(String, String)>>,
    kept: Vec<Value>,
    events_read: u64,
    pseudonyms_seen: bool,
}

impl<'a> Tracer<'a> {
    fn new(lookup: &Lookup<'a>) -> Result<Self, StateError> {
        let mut ids = BTreeSet::new();
        let pseudonym = lookup.pseudonymizer.map(|p| p.hash(lookup.user));
        if let Some(store) = lookup.state {
            for key in std::iter::once(lookup.user).chain(pseudonym.as_deref()) {
                ids.extend(store.find("User", key)?);
            }
        }
        Ok(Tracer {
            lookup: *lookup,
            pseudonym,
            ids,
            named_without_id: false,
            groups: HashSet::new(),
            group_names: HashMap::new(),
            kept: Vec::new(),
            events_read: 0,
            pseudonyms_seen: false,
        })
    }

    fn is_name(&self, value: Option<&str>) -> bool {
        value.is_some_and(|v| {
            v.eq_ignore_ascii_case(self.lookup.user) || Some(v) == self.pseudonym.as_deref()
        })
    }

    /// The user event names X: its target, or what its successful write set.
    fn names_user(&self, event: &Value) -> bool {
        let target = |field: &str| text(event, &format!("/scim/target/{field}"));
        let requested = |field: &str| {
            text(event, &format!("/scim/changes/requested/{field}")).filter(|_| succeeded(event))
        };
        target("id") == Some(self.lookup.user)
            || self.is_name(target("user_name"))
            || target("external_id") == Some(self.lookup.user)
            || self.is_name(requested("user_name"))
            || requested("external_id") == Some(self.lookup.user)
    }

    /// First pass: learn the user's ids.
    fn resolve(&mut self, event: &Value) {
        self.events_read += 1;
        let id = text(event, "/scim/target/id");
        if is_user_event(event) {
            self.pseudonyms_seen |= text(event, "/scim/target/user_name")
                .is_some_and(|n| n.starts_with("hmac-sha256:"));
            if self.names_user(event) {
                match id {
                    Some(id) => _ = self.ids.insert(id.to_owned()),
                    None => self.named_without_id = true,
                }
            }
        }
    }

    fn lists_user(&self, event: &Value, lists: &[&str]) -> bool {
        lists.iter().any(|list| {
            texts(event, &format!("/scim/changes/{list}")).any(|m| self.ids.contains(m))
        })
    }

    /// Second pass: the groups whose member lists ever named her.
    fn note_groups(&mut self, event: &Value) {
        if is_group_event(event) && self.lists_user(event, &MEMBER_LISTS) {
            if let Some(group) = text(event, "/scim/target/id") {
                self.groups.insert(group.to_owned());
            }
        }
    }

    /// Third pass: keep the events about her, and learn her groups' names.
    fn collect(&mut self, mut event: Value) {
        let group = text(&event, "/scim/target/id").filter(|g| self.groups.contains(*g));
        let about_user = if is_user_event(&event) {
            match text(&event, "/scim/target/id") {
                Some(id) => self.ids.contains(id),
                None => self.names_user(&event),
            }
        } else if is_group_event(&event) {
            if let (Some(id), Some(name)) = (group, text(&event, "/scim/target/display_name")) {
                let at = text(&event, "/timestamp").unwrap_or_default();
                self.group_names
                    .entry(id.to_owned())
                    .or_default()
                    .push((at.to_owned(), name.to_owned()));
            }
            // A pushed list or a deletion may end a membership without naming her.
            let of_her_group = group.is_some()
                && (event
                    .pointer("/scim/changes/members_replaced")
                    .is_some_and(Value::is_array)
                    || actions(&event).any(|a| a == "group.delete"));
            of_her_group || self.lists_user(&event, &MEMBER_LISTS)
        } else {
            false
        };
        if !about_user {
            return;
        }
        // Only her ids matter in a member list (a push may list thousands).
        for list in MEMBER_LISTS {
            if let Some(Value::Array(members)) = event.pointer_mut(&format!("/scim/changes/{list}"))
            {
                members.retain(|m| m.as_str().is_some_and(|m| self.ids.contains(m)));
            }
        }
        self.kept.push(event);
    }

    fn finish(mut self, lines_skipped: u64) -> Result<Trace, StateError> {
        trail::in_order(&mut self.kept);
        let mut timeline = Timeline {
            tracer: &self,
            names: HashMap::new(),
            members: HashSet::new(),
            entries: Vec::new(),
            naming: 0,
        };
        for event in &self.kept {
            if is_user_event(event) {
                timeline.user_event(event);
            } else {
                timeline.group_event(event)?;
            }
        }
        let Timeline {
            mut entries,
            naming,
            ..
        } = timeline;
        if let Some(store) = self.lookup.state {
            for id in &self.ids {
                entries.extend(state_entry(store, id)?);
            }
        }
        Ok(Trace {
            ids: self.ids.iter().cloned().collect(),
            entries,
            events_naming: naming,
            events_read: self.events_read,
            lines_skipped,
            pseudonyms_unmatched: self.pseudonyms_seen && self.pseudonym.is_none(),
        })
    }

    /// The group's name at `at`: the last one events gave it by then, else the first one they
    /// gave it, else the state's.
    fn group_name(&self, id: &str, at: &str) -> Result<Option<String>, StateError> {
        if let Some(names) = self.group_names.get(id) {
            let named = names
                .iter()
                .filter(|(t, _)| t.as_str() <= at)
                .max_by(|a, b| a.0.cmp(&b.0))
                .or_else(|| names.first());
            if let Some((_, name)) = named {
                return Ok(Some(name.clone()));
            }
        }
        match self.lookup.state {
            Some(store) => Ok(store.peek("Group", id)?.and_then(|g| g.display_name)),
            None => Ok(None),
        }
    }
}

// === building the timeline ===

struct Timeline<'t, 'a> {
    tracer: &'t Tracer<'a>,
    /// The names each user id had as of the last event.
    names: HashMap<String, Target>,
    /// (user id, group id) memberships as of the last event.
    members: HashSet<(String, String)>,
    entries: Vec<Entry>,
    naming: u64,
}

impl Timeline<'_, '_> {
    fn user_event(&mut self, event: &Value) {
        self.naming += 1;
        let id = text(event, "/scim/target/id");
        let before = id
            .and_then(|id| self.names.get(id))
            .cloned()
            .unwrap_or_default();
        let mut now = before.clone();
        now.id = id.map(str::to_owned);
        // Target names are the service's or the state's, or what a successful write set
        // (docs/events.md, scim.target): true of the user whatever the outcome.
        for (slot, field) in [
            (&mut now.user_name, "user_name"),
            (&mut now.external_id, "external_id"),
            (&mut now.display_name, "display_name"),
        ] {
            if let Some(name) = text(event, &format!("/scim/target/{field}")) {
                *slot = Some(name.to_owned());
            }
        }
        if let Some(id) = id {
            self.names.insert(id.to_owned(), now.clone());
        }
        let Some((kind, action)) = actions(event).find_map(|a| user_kind(a).map(|k| (k, a))) else {
            return; // a read: names the user, changes nothing
        };
        let mut entry = base_entry(event, kind, action, now.clone());
        entry.diff = event
            .pointer("/scim/state/diff")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|d| DiffEntry {
                attribute: text(d, "/attribute").unwrap_or_default().to_owned(),
                before: d.get("before").cloned().unwrap_or(Value::Null),
                after: d.get("after").cloned().unwrap_or(Value::Null),
            })
            .collect();
        if succeeded(event) && kind != Kind::Created {
            for (attribute, old, new) in [
                ("userName", &before.user_name, &now.user_name),
                ("externalId", &before.external_id, &now.external_id),
                ("displayName", &before.display_name, &now.display_name),
            ] {
                let listed = entry
                    .diff
                    .iter()
                    .any(|d| d.attribute.eq_ignore_ascii_case(attribute));
                if let (Some(old), Some(new), false) = (old, new, listed) {
                    if old != new {
                        entry.diff.push(DiffEntry {
                            attribute: attribute.to_owned(),
                            before: Value::from(old.as_str()),
                            after: Value::from(new.as_str()),
                        });
                    }
                }
            }
        }
        entry.set = set_values(event);
        entry.attributes = texts(event, "/scim/changes/attributes")
            .map(str::to_owned)
            .collect();
        entry.noop = event.pointer("/scim/state/noop") == Some(&Value::Bool(true));
        entry.deprovision = event.get("deprovision").filter(|d| d.is_object()).cloned();
        if kind == Kind::Deleted && succeeded(event) {
            if let Some(id) = id {
                self.members.retain(|(user, _)| user != id);
            }
        }
        self.entries.push(entry);
    }

    /// Membership entries of a group event, one per traced id it gained or lost.
    fn group_event(&mut self, event: &Value) -> Result<(), StateError> {
        let Some(group) = text(event, "/scim/target/id") else {
            return Ok(());
        };
        let at = text(event, "/timestamp").unwrap_or_default();
        let name = match text(event, "/scim/target/display_name") {
            Some(name) => Some(name.to_owned()),
            None => self.tracer.group_name(group, at)?,
        };
        let listed =
            |list: &str, id: &str| texts(event, &format!("/scim/changes/{list}")).any(|m| m == id);
        let replaced = event
            .pointer("/scim/changes/members_replaced")
            .filter(|v| v.is_array());
        let created = actions(event).any(|a| a == "group.create");
        let deleted = actions(event).any(|a| a == "group.delete");
        for id in &self.tracer.ids {
            let key = (id.clone(), group.to_owned());
            let member = self.members.contains(&key);
            let mut changes = Vec::new();
            if listed("members_removed", id) {
                changes.push((Kind::GroupLost, "group.members.remove"));
            }
            if listed("members_added", id) {
                let action = if created {
                    "group.create"
                } else {
                    "group.members.add"
                };
                changes.push((Kind::GroupGained, action));
            }
            if replaced.is_some() {
                match (listed("members_replaced", id), member) {
                    (true, false) => changes.push((Kind::GroupGained, "group.members.replace")),
                    (false, true) => changes.push((Kind::GroupLost, "group.members.replace")),
                    _ => {} // no change for her
                }
            }
            if deleted && member {
                changes.push((Kind::GroupLost, "group.delete"));
            }
            if changes.is_empty() {
                continue;
            }
            self.naming += 1;
            let user = self.names.get(id).cloned().unwrap_or_else(|| Target {
                id: Some(id.clone()),
                ..Target::default()
            });
            for (kind, action) in changes {
                if succeeded(event) {
                    if kind == Kind::GroupGained {
                        self.members.insert(key.clone());
                    } else {
                        self.members.remove(&key);
                    }
                }
                let mut entry = base_entry(event, kind, action, user.clone());
                entry.group = Some(MemberRef {
                    id: group.to_owned(),
                    name: name.clone(),
                });
                self.entries.push(entry);
            }
        }
        Ok(())
    }
}

fn user_kind(action: &str) -> Option<Kind> {
    Some(match action {
        "user.create" => Kind::Created,
        "user.deactivate" => Kind::Deactivated,
        "user.reactivate" => Kind::Reactivated,
        "user.delete" => Kind::Deleted,
        "deprovision.gap" => Kind::DeprovisionGap,
        "deprovision.closed" => Kind::DeprovisionClosed,
        a if a.starts_with("user.") => Kind::Updated,
        _ => return None,
    })
}

/// What every entry takes from its event as written.
fn base_entry(event: &Value, kind: Kind, action: &str, user: Target) -> Entry {
    let owned = |pointer: &str| text(event, pointer).map(str::to_owned);
    let failure = (!succeeded(event)).then(|| Failure {
        kind: owned("/failure/kind").or_else(|| owned("/scim/error/scim_type")),
        detail: owned("/failure/detail")
            .or_else(|| owned("/scim/error/detail"))
            .or_else(|| owned("/scim/parse_error")),
    });
    let status = event
        .pointer("/scim/bulk/status")
        .or_else(|| event.pointer("/http/status"))
        .and_then(Value::as_u64);
    Entry {
        at: owned("/timestamp"),
        kind,
        action: Some(action.to_owned()),
        outcome: owned("/outcome"),
        outcome_reason: owned("/outcome_reason"),
        status,
        user,
        group: None,
        diff: Vec::new(),
        set: Vec::new(),
        attributes: Vec::new(),
        noop: false,
        failure: failure.filter(|f| f.kind.is_some() || f.detail.is_some()),
        client: event.get("client").filter(|c| c.is_object()).cloned(),
        retry_of: owned("/retry_of"),
        deprovision: None,
        state: None,
        event_id: owned("/event_id"),
        request_id: owned("/request_id"),
    }
}

/// The scalar values a PATCH set, as the event shows them (`patch_ops[].value`; a path-less
/// operation's value object reduced to its scalar members).
fn set_values(event: &Value) -> Vec<Set> {
    let mut set = Vec::new();
    let ops = event
        .pointer("/scim/changes/patch_ops")
        .and_then(Value::as_array);
    for op in ops.into_iter().flatten() {
        if text(op, "/op") == Some("remove") {
            continue;
        }
        match (text(op, "/path"), op.get("value")) {
            (Some(path), Some(value)) => set.push(Set {
                attribute: path.to_owned(),
                value: value.clone(),
            }),
            (None, Some(Value::Object(members))) => {
                set.extend(members.iter().map(|(k, v)| Set {
                    attribute: k.clone(),
                    value: v.clone(),
                }));
            }
            _ => {}
        }
    }
    set
}

/// What the state holds now about `id`, as the last entry.
fn state_entry(store: &Store, id: &str) -> Result<Option<Entry>, StateError> {
    let Some(user) = store.peek("User", id)? else {
        return Ok(None);
    };
    let groups = store
        .groups_of(id)?
        .into_iter()
        .map(|(id, name)| MemberRef { id, name })
        .collect();
    Ok(Some(Entry {
        at: store.updated_at("User", id)?,
        kind: Kind::State,
        action: None,
        outcome: None,
        outcome_reason: None,
        status: None,
        user: Target {
            id: Some(user.id),
            user_name: user.user_name,
            external_id: user.external_id,
            display_name: user.display_name,
        },
        group: None,
        diff: Vec::new(),
        set: Vec::new(),
        attributes: Vec::new(),
        noop: false,
        failure: None,
        client: None,
        retry_of: None,
        deprovision: None,
        state: Some(StateNow {
            active: user.active,
            groups,
        }),
        event_id: None,
        request_id: None,
    }))
}

#[cfg(test)]
mod tests;
