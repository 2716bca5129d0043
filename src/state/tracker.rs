//! The deprovisioning tracker, and the links between a failed write and its retries.
//!
//! A `user.deactivate` or `user.delete` the app answers with success is confirmed at once. One
//! it refuses, or never answers (upstream down, timed out), is *open* until a later attempt
//! succeeds or a later read shows the user inactive (deactivation) or gone (both). Still open
//! `[state] confirm_within_secs` after it was first asked, it is reported by a
//! `deprovision.gap` event; when it is finally confirmed, a `deprovision.closed` event gives
//! the latency from the first attempt. Open deprovisionings live in the state store, so they
//! survive a restart and instances that share a store report each gap and closing once.
//!
//! Every failed write also leaves its fingerprint (the same change to the same target): the
//! next attempt at it carries `retry_of`, the event id of the attempt it retries.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{OpenDeprovision, StateError, Store};
use crate::clock::{new_uuid_v7, Timestamp};
use crate::event::{AuditEvent, ClientInfo, HttpInfo, Outcome};
use crate::scim::{
    ClosedBy, DeprovisionInfo, DeprovisionStatus, Operation, OutcomeReason, ScimInfo, Target,
};

/// A failed write older than this is not linked to a retry: by then it is a new attempt.
const RETRY_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the tracker reads of one event.
pub struct Attempt<'a> {
    pub event_id: &'a str,
    pub at: Timestamp,
    pub success: bool,
    /// The status the app answered; none when it never did.
    pub status: Option<u16>,
    /// `failure.kind` when the exchange failed in transport.
    pub failure_kind: Option<&'a str>,
    pub scim: &'a ScimInfo,
    /// What a gap or closed event repeats of this attempt (request id, method, path, client,
    /// target), made only when a deprovisioning is opened or updated.
    pub context: &'a dyn Fn() -> Value,
}

/// What tracking one event found.
#[derive(Debug, Default)]
pub struct Tracked {
    /// The earlier failed attempt this event retries.
    pub retry_of: Option<String>,
    /// A deprovisioning this event confirmed (or withdrew).
    pub closed: Option<Notice>,
}

/// A `deprovision.gap` or `deprovision.closed` event to write.
#[derive(Debug, Clone)]
pub struct Notice {
    pub event_id: String,
    pub at: Timestamp,
    pub request_id: String,
    pub method: String,
    pub path: String,
    /// The last failed attempt's status (gap), the closing exchange's (closed).
    pub status: Option<u16>,
    pub client: ClientInfo,
    pub target: Target,
    pub info: DeprovisionInfo,
}

/// Tracks one event after the state has seen it (so its target is named): links a retry to
/// the failure it retries, opens, updates or closes the target's deprovisioning.
///
/// # Errors
/// [`StateError`] when the store fails.
pub fn track(
    store: &mut Store,
    attempt: &Attempt<'_>,
    confirm_within: Duration,
) -> Result<Tracked, StateError> {
    let scim = attempt.scim;
    let mut tracked = Tracked::default();
    if let Some(fingerprint) = fingerprint(scim) {
        tracked.retry_of = store.failed_write(&fingerprint)?;
        let failed = (!attempt.success).then(|| (attempt.event_id, attempt.at.unix_millis()));
        if failed.is_some() || tracked.retry_of.is_some() {
            store.set_failed_write(&fingerprint, failed)?;
        }
    }
    let (Some("User"), Some(id)) = (scim.resource_type.as_deref(), scim.target.id.as_deref())
    else {
        return Ok(tracked);
    };
    let deprovision = scim
        .actions
        .iter()
        .find(|a| *a == "user.deactivate" || *a == "user.delete");
    if let Some(action) = deprovision {
        let open = store.open_deprovision("User", id)?;
        if attempt.success {
            // A deletion confirms a pending deactivation too; a deactivation does not
            // confirm a deletion.
            if open.is_some_and(|o| o.requested_action == *action || action == "user.delete") {
                tracked.closed = close(store, id, attempt, ClosedBy::Response)?;
            }
        } else {
            if tracked.retry_of.is_none() {
                tracked.retry_of = open.as_ref().map(|o| o.last_event_id.clone());
            }
            let row = reopen(open, id, action, attempt, confirm_within);
            store.save_deprovision(&row)?;
        }
        return Ok(tracked);
    }
    let confirmed_by_read = scim.operation == Some(Operation::Read)
        && (scim.outcome_reason == Some(OutcomeReason::NotFoundLookup)
            || attempt.success
                && store
                    .get("User", id)?
                    .is_some_and(|u| u.active == Some(false)));
    let withdrawn = attempt.success && scim.actions.iter().any(|a| a == "user.reactivate");
    if confirmed_by_read || withdrawn {
        if let Some(open) = store.open_deprovision("User", id)? {
            // Seeing the user inactive confirms a deactivation; only "gone" confirms a delete.
            let gone = scim.outcome_reason == Some(OutcomeReason::NotFoundLookup);
            if withdrawn || open.requested_action == "user.deactivate" || gone {
                let by = if withdrawn {
                    ClosedBy::Reactivation
                } else {
                    ClosedBy::Read
                };
                tracked.closed = close(store, id, attempt, by)?;
            }
        }
    }
    Ok(tracked)
}

/// Claims the open deprovisionings due by `now` and not yet reported, one gap each.
///
/// # Errors
/// [`StateError`] when the store fails.
pub fn due_gaps(store: &mut Store, now: Timestamp) -> Result<Vec<Notice>, StateError> {
    store.forget_failed_writes(now.unix_millis() - RETRY_MEMORY.as_millis() as i64)?;
    let claimed = store.claim_gaps(now.unix_millis(), || new_uuid_v7().to_string())?;
    Ok(claimed
        .into_iter()
        .map(|open| {
            let event_id = open.gap_event_id.clone().unwrap_or_default();
            notice(event_id, now, &open, open.last_status, |info| info)
        })
        .collect())
}

/// Opens a deprovisioning, or counts another failed attempt at one already open.
fn reopen(
    open: Option<OpenDeprovision>,
    id: &str,
    action: &str,
    attempt: &Attempt<'_>,
    confirm_within: Duration,
) -> OpenDeprovision {
    let last_failure = attempt.failure_kind.map(str::to_owned).or_else(|| {
        attempt
            .scim
            .error
            .as_ref()
            .and_then(|e| e.detail.clone().or_else(|| e.scim_type.clone()))
    });
    let mut row = open.unwrap_or_else(|| OpenDeprovision {
        resource_type: "User".to_owned(),
        id: id.to_owned(),
        requested_action: action.to_owned(),
        requested_event_id: attempt.event_id.to_owned(),
        requested_at: attempt.at.to_string(),
        due_ms: attempt.at.unix_millis() + confirm_within.as_millis() as i64,
        attempts: 0,
        last_event_id: String::new(),
        last_status: None,
        last_failure: None,
        context: Value::Null,
        gap_event_id: None,
    });
    if action == "user.delete" {
        row.requested_action = action.to_owned();
    }
    row.attempts += 1;
    row.last_event_id = attempt.event_id.to_owned();
    row.last_status = attempt.status;
    row.last_failure = last_failure;
    row.context = (attempt.context)();
    row
}

fn close(
    store: &mut Store,
    id: &str,
    attempt: &Attempt<'_>,
    by: ClosedBy,
) -> Result<Option<Notice>, StateError> {
    // Another instance sharing the store may have closed it first: then it reports it.
    let Some(open) = store.close_deprovision("User", id)? else {
        return Ok(None);
    };
    let latency_ms = Timestamp::parse_rfc3339(&open.requested_at)
        .map(|asked| attempt.at.unix_millis() - asked.unix_millis());
    Ok(Some(notice(
        new_uuid_v7().to_string(),
        attempt.at,
        &open,
        attempt.status,
        |info| DeprovisionInfo {
            status: DeprovisionStatus::Closed,
            closed_by: Some(by),
            closing_event_id: Some(attempt.event_id.to_owned()),
            latency_ms,
            ..info
        },
    )))
}

fn notice(
    event_id: String,
    at: Timestamp,
    open: &OpenDeprovision,
    status: Option<u16>,
    finish: impl FnOnce(DeprovisionInfo) -> DeprovisionInfo,
) -> Notice {
    let text = |key: &str| {
        open.context
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let from_context = |key: &str| open.context.get(key).cloned().unwrap_or(Value::Null);
    let target: Target = serde_json::from_value(from_context("target")).unwrap_or_default();
    let client = serde_json::from_value(from_context("client")).unwrap_or_else(|_| ClientInfo {
        address: String::new(),
        port: 0,
        tls: false,
        certificate_subject: None,
        user_agent: None,
        auth_scheme: None,
        token_fingerprint: None,
        name: None,
        idp: None,
    });
    let due_at = u64::try_from(open.due_ms)
        .map(|ms| Timestamp::from_unix_millis(ms).to_string())
        .unwrap_or_default();
    let info = DeprovisionInfo {
        status: DeprovisionStatus::Gap,
        requested_action: open.requested_action.clone(),
        requested_event_id: open.requested_event_id.clone(),
        requested_at: open.requested_at.clone(),
        attempts: open.attempts,
        last_event_id: open.last_event_id.clone(),
        last_status: open.last_status,
        last_failure: open.last_failure.clone(),
        due_at,
        gap_event_id: open.gap_event_id.clone(),
        closed_by: None,
        closing_event_id: None,
        latency_ms: None,
    };
    Notice {
        event_id,
        at,
        request_id: text("request_id"),
        method: text("method"),
        path: text("path"),
        status,
        client,
        target: Target {
            id: target.id.or_else(|| Some(open.id.clone())),
            ..target
        },
        info: finish(info),
    }
}

impl Notice {
    /// The event that reports it: `deprovision.gap` (outcome failure) or
    /// `deprovision.closed` (success), about the user, with the client and request of the
    /// last attempt.
    pub fn event(&self) -> AuditEvent<'_> {
        let gap = self.info.status == DeprovisionStatus::Gap;
        let action = if gap {
            "deprovision.gap"
        } else {
            "deprovision.closed"
        };
        AuditEvent {
            schema_version: crate::event::SCHEMA_VERSION,
            event_id: self.event_id.clone(),
            timestamp: self.at,
            duration_ms: 0.0,
            request_id: &self.request_id,
            outcome: if gap {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            client: self.client.clone(),
            http: HttpInfo {
                // Not an HTTP exchange of its own.
                version: "unknown",
                method: &self.method,
                path: &self.path,
                query: None,
                status: self.status,
                request_bytes: 0,
                response_bytes: 0,
                request_content_type: None,
                response_content_type: None,
                request_body_truncated: false,
                response_body_truncated: false,
                response_generated: false,
                request_body: None,
                response_body: None,
            },
            scim: ScimInfo {
                endpoint: Some("Users"),
                resource_type: Some("User".to_owned()),
                target: self.target.clone(),
                actions: vec![action.to_owned()],
                ..ScimInfo::default()
            },
            failure: None,
            retry_of: None,
            deprovision: Some(self.info.clone()),
            alert: None,
            // Set by the audit worker, which knows the service.
            route: None,
            upstream: None,
        }
    }
}

/// The same change to the same target: what a retry repeats. Writes only, and only those
/// that ask something of an identity.
fn fingerprint(scim: &ScimInfo) -> Option<String> {
    let write = matches!(
        scim.operation,
        Some(Operation::Create | Operation::Replace | Operation::Patch | Operation::Delete)
    );
    if !write || scim.actions.is_empty() {
        return None;
    }
    let requested = &scim.changes.requested;
    let target = scim
        .target
        .id
        .as_ref()
        .or(requested.external_id.as_ref())
        .or(requested.user_name.as_ref())
        .or(requested.display_name.as_ref())?;
    let mut hash = Sha256::new();
    for part in [
        scim.resource_type.as_deref().unwrap_or_default(),
        target,
        &scim.actions.join(","),
        &serde_json::to_string(&scim.changes).ok()?,
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    Some(hex::encode(&hash.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scim::{Changes, PatchOpInfo};

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000 + secs * 1000)
    }

    fn deactivation(id: &str) -> ScimInfo {
        ScimInfo {
            operation: Some(Operation::Patch),
            resource_type: Some("User".to_owned()),
            target: Target {
                id: Some(id.to_owned()),
                user_name: Some("ann@example.com".to_owned()),
                ..Target::default()
            },
            actions: vec!["user.deactivate".to_owned()],
            changes: Changes {
                patch_ops: vec![PatchOpInfo {
                    op: "replace".to_owned(),
                    raw_op: None,
                    path: Some("active".to_owned()),
                    value: Some(json!(false)),
                    raw_value: None,
                }],
                ..Changes::default()
            },
            ..ScimInfo::default()
        }
    }

    fn attempt<'a>(
        event_id: &'a str,
        secs: u64,
        status: Option<u16>,
        scim: &'a ScimInfo,
        context: &'a dyn Fn() -> Value,
    ) -> Attempt<'a> {
        Attempt {
            event_id,
            at: at(secs),
            success: status.is_some_and(|s| s < 300),
            status,
            failure_kind: status.is_none().then_some("connect_refused"),
            scim,
            context,
        }
    }

    fn context() -> Value {
        json!({"request_id": "r", "method": "PATCH", "path": "/scim/v2/Users/u1",
               "client": {"address": "10.0.0.1", "port": 1, "tls": true, "name": "okta-prod",
                          "certificate_subject": null, "user_agent": null, "auth_scheme": null,
                          "token_fingerprint": "ab", "idp": "okta"},
               "target": {"id": "u1", "user_name": "ann@example.com", "external_id": null,
                          "display_name": null}})
    }

    #[test]
    fn a_refused_deactivation_becomes_one_gap_when_due_and_a_retry_closes_it() {
        let mut store = Store::in_memory("app").expect("store");
        let scim = deactivation("u1");
        let first = track(&mut store, &attempt("e1", 0, None, &scim, &context), HOUR).expect("e1");
        assert!(first.retry_of.is_none() && first.closed.is_none());
        let second = track(
            &mut store,
            &attempt("e2", 60, Some(500), &scim, &context),
            HOUR,
        )
        .expect("e2");
        assert_eq!(second.retry_of.as_deref(), Some("e1"));
        assert_eq!(store.open_deprovisions().expect("count"), 1);

        // Not due before confirm_within has passed since the first attempt.
        assert!(due_gaps(&mut store, at(3599)).expect("early").is_empty());
        let gaps = due_gaps(&mut store, at(3600)).expect("due");
        assert_eq!(gaps.len(), 1);
        let gap = gaps[0].event();
        assert_eq!(gap.scim.actions, ["deprovision.gap"]);
        assert_eq!(gap.outcome, Outcome::Failure);
        assert_eq!(
            gap.scim.target.user_name.as_deref(),
            Some("ann@example.com")
        );
        assert_eq!(gap.client.name.as_deref(), Some("okta-prod"));
        let info = gap.deprovision.as_ref().expect("deprovision");
        assert_eq!(
            (
                info.requested_event_id.as_str(),
                info.attempts,
                info.last_status
            ),
            ("e1", 2, Some(500))
        );
        assert_eq!(info.last_event_id, "e2");
        // Reported once, however often the tracker looks.
        assert!(due_gaps(&mut store, at(7200)).expect("again").is_empty());

        let third = track(
            &mut store,
            &attempt("e3", 4000, Some(200), &scim, &context),
            HOUR,
        )
        .expect("e3");
        assert_eq!(third.retry_of.as_deref(), Some("e2"));
        let notice = third.closed.expect("closed");
        let closed = notice.event();
        assert_eq!(closed.scim.actions, ["deprovision.closed"]);
        assert_eq!(closed.outcome, Outcome::Success);
        let info = closed.deprovision.expect("deprovision");
        assert_eq!(info.closed_by, Some(ClosedBy::Response));
        assert_eq!(info.closing_event_id.as_deref(), Some("e3"));
        assert_eq!(info.latency_ms, Some(4_000_000));
        assert_eq!(info.gap_event_id.as_deref(), Some(gap.event_id.as_str()));
        assert_eq!(store.open_deprovisions().expect("count"), 0);
        // The change succeeded: a later identical request retries nothing.
        let fourth = track(
            &mut store,
            &attempt("e4", 5000, Some(200), &scim, &context),
            HOUR,
        )
        .expect("e4");
        assert!(fourth.retry_of.is_none() && fourth.closed.is_none());
    }

    #[test]
    fn a_deactivation_answered_with_success_opens_nothing() {
        let mut store = Store::in_memory("app").expect("store");
        let scim = deactivation("u1");
        let tracked = track(
            &mut store,
            &attempt("e1", 0, Some(200), &scim, &context),
            HOUR,
        )
        .expect("ok");
        assert!(tracked.closed.is_none() && tracked.retry_of.is_none());
        assert_eq!(store.open_deprovisions().expect("count"), 0);
        assert!(due_gaps(&mut store, at(86_400)).expect("due").is_empty());
    }

    #[test]
    fn a_read_showing_the_user_gone_confirms_a_deletion_and_inactive_confirms_only_a_deactivation()
    {
        let mut store = Store::in_memory("app").expect("store");
        let mut delete = deactivation("u1");
        delete.operation = Some(Operation::Delete);
        delete.actions = vec!["user.delete".to_owned()];
        delete.changes = Changes::default();
        track(
            &mut store,
            &attempt("d1", 0, Some(503), &delete, &context),
            HOUR,
        )
        .expect("d1");

        // The state knows the user inactive: not enough for a deletion.
        store
            .put(
                &super::super::Resource {
                    resource_type: "User".to_owned(),
                    id: "u1".to_owned(),
                    active: Some(false),
                    ..Default::default()
                },
                "2027-01-15T08:00:00.000Z",
            )
            .expect("put");
        let mut read = deactivation("u1");
        read.operation = Some(Operation::Read);
        read.actions = Vec::new();
        read.changes = Changes::default();
        let seen = track(
            &mut store,
            &attempt("r1", 10, Some(200), &read, &context),
            HOUR,
        )
        .expect("read");
        assert!(seen.closed.is_none());

        read.outcome_reason = Some(OutcomeReason::NotFoundLookup);
        let gone = track(
            &mut store,
            &attempt("r2", 20, Some(404), &read, &context),
            HOUR,
        )
        .expect("gone");
        let info = gone.closed.expect("closed").info;
        assert_eq!(
            (
                info.closed_by,
                info.requested_action.as_str(),
                info.latency_ms
            ),
            (Some(ClosedBy::Read), "user.delete", Some(20_000))
        );
    }

    #[test]
    fn a_reactivation_withdraws_an_open_deactivation() {
        let mut store = Store::in_memory("app").expect("store");
        let scim = deactivation("u1");
        track(
            &mut store,
            &attempt("e1", 0, Some(500), &scim, &context),
            HOUR,
        )
        .expect("e1");
        let mut reactivate = deactivation("u1");
        reactivate.actions = vec!["user.reactivate".to_owned()];
        let tracked = track(
            &mut store,
            &attempt("e2", 5, Some(200), &reactivate, &context),
            HOUR,
        )
        .expect("e2");
        assert_eq!(
            tracked.closed.expect("closed").info.closed_by,
            Some(ClosedBy::Reactivation)
        );
        assert!(due_gaps(&mut store, at(86_400)).expect("due").is_empty());
    }

    #[test]
    fn a_different_change_to_the_same_user_is_not_a_retry() {
        let mut store = Store::in_memory("app").expect("store");
        let mut rename = deactivation("u1");
        rename.actions = vec!["user.update".to_owned()];
        rename.changes.patch_ops[0].path = Some("userName".to_owned());
        rename.changes.patch_ops[0].value = Some(json!("ann2"));
        track(
            &mut store,
            &attempt("e1", 0, Some(409), &rename, &context),
            HOUR,
        )
        .expect("e1");
        let mut other = rename.clone();
        other.changes.patch_ops[0].value = Some(json!("ann3"));
        let tracked = track(
            &mut store,
            &attempt("e2", 1, Some(200), &other, &context),
            HOUR,
        )
        .expect("e2");
        assert!(tracked.retry_of.is_none());
        let again = track(
            &mut store,
            &attempt("e3", 2, Some(200), &rename, &context),
            HOUR,
        )
        .expect("e3");
        assert_eq!(again.retry_of.as_deref(), Some("e1"));
    }
}
