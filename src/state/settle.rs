//! Which ids an exchange will write and which it will read, for the claims that keep several
//! instances sharing one store in step (`Store::claim`, and the audit worker's hold in
//! `crate::pipeline`).
//!
//! Why claims and not only a delay: each instance records an exchange a moment after its
//! response went back, and an IdP sends its next request as soon as it has the response,
//! perhaps to another instance behind the load balancer. A delay before every lookup does not
//! help by itself, since the first instance's record is delayed by as much as the second's
//! lookup. What helps is that the first instance *announces* the ids at once, when its worker
//! is handed the exchange (before any delay, one small insert), and the second waits for those
//! announcements to be released before it reads. `settle_ms` only covers the announcement's
//! own way to the database.

use serde_json::Value;

use crate::exchange::Exchange;
use crate::scim::endpoint::percent_decode;
use crate::scim::ScimInfo;

/// The ids an exchange may write state for, known without classifying it: the last segment
/// of its path (`/Users/{id}`; for a collection, the collection's name, which is no id and
/// harmless), and the `id` of the resource, or of each resource of a list, its response
/// returned (a create's new id, a search's finds). Over-claiming costs nothing but a wait
/// nobody does.
pub fn written_ids(exchange: &Exchange) -> Vec<String> {
    let mut ids = Vec::new();
    let path = exchange.request.path_and_query.split(['?', '#']).next();
    if let Some(last) = path
        .and_then(|p| p.trim_end_matches('/').rsplit('/').next())
        .filter(|s| !s.is_empty())
    {
        ids.push(percent_decode(last));
    }
    let body = exchange
        .response
        .as_ref()
        .filter(|r| r.status.is_success())
        .and_then(|r| serde_json::from_slice::<Value>(&r.body.to_bytes()).ok());
    if let Some(body) = body {
        let id = |v: &Value| v.get("id").and_then(Value::as_str).map(str::to_owned);
        ids.extend(id(&body));
        if let Some(found) = body.get("Resources").and_then(Value::as_array) {
            ids.extend(found.iter().filter_map(id));
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// The ids an event's state lookup reads: its target and the members it names.
pub fn read_ids(scim: &ScimInfo) -> impl Iterator<Item = &String> {
    let changes = &scim.changes;
    scim.target
        .id
        .iter()
        .chain(&changes.members_added)
        .chain(&changes.members_removed)
        .chain(changes.members_replaced.iter().flatten())
}
