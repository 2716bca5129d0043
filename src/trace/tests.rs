//! The timeline builder over hand-written event lines: each line is a real event's shape
//! (docs/events.md) with only what the case is about filled in.

use serde_json::{json, Value};

use super::*;
use crate::trail::testing::line;

fn at(second: u32) -> String {
    format!("2026-11-22T09:00:{second:02}.000Z")
}

/// Okta's create of `user_name` as `id`.
fn create(second: u32, id: &str, user_name: &str, external_id: &str) -> String {
    line(json!({
        "timestamp": at(second),
        "http": {"method": "POST", "path": "/scim/v2/Users", "status": 201},
        "scim": {"operation": "create",
                 "target": {"id": id, "user_name": user_name, "external_id": external_id},
                 "actions": ["user.create"],
                 "changes": {"attributes": ["userName", "externalId", "active"],
                             "requested": {"user_name": user_name, "external_id": external_id}}}
    }))
}

/// Okta's deactivating PATCH: the id only.
fn deactivate(second: u32, id: &str) -> String {
    line(json!({
        "timestamp": at(second),
        "scim": {"target": {"id": id}, "actions": ["user.deactivate"],
                 "changes": {"attributes": ["active"],
                             "patch_ops": [{"op": "replace", "path": null, "value": {"active": false}}]}}
    }))
}

/// A group PATCH (or POST / DELETE, by `actions`) with member lists.
fn group(second: u32, id: &str, actions: &[&str], changes: Value) -> String {
    line(json!({
        "timestamp": at(second),
        "http": {"path": format!("/scim/v2/Groups/{id}"), "status": 204},
        "scim": {"endpoint": "Groups", "resource_type": "Group", "target": {"id": id},
                 "actions": actions, "changes": changes}
    }))
}

/// [`trace`] over lines instead of files: the same passes, the same line filter.
fn trace_lines(lines: &[String], lookup: &Lookup<'_>) -> Trace {
    let events = || {
        lines
            .iter()
            .filter_map(|l| trail::event_of_line(l.as_bytes()))
    };
    let mut tracer = Tracer::new(lookup).unwrap();
    events().for_each(|e| tracer.resolve(&e));
    events().for_each(|e| tracer.note_groups(&e));
    events().for_each(|e| tracer.collect(e));
    let skipped = lines.len() - events().count();
    tracer.finish(skipped as u64).unwrap()
}

fn lookup(user: &str) -> Lookup<'_> {
    Lookup {
        user,
        pseudonymizer: None,
        state: None,
    }
}

fn kinds(trace: &Trace) -> Vec<(Kind, Option<&str>)> {
    trace
        .entries
        .iter()
        .map(|e| (e.kind, e.outcome.as_deref()))
        .collect()
}

fn text_of(trace: &Trace, user: &str) -> String {
    let mut out = Vec::new();
    write_text(trace, user, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

const OK: Option<&str> = Some("success");
const FAILED: Option<&str> = Some("failure");

#[test]
fn a_rename_mid_history_is_followed_by_id_from_either_name() {
    let lines = [
        create(1, "u1", "ann@example.com", "00u1"),
        // Entra's rename: a PATCH of userName; the target takes the new name on success.
        line(json!({
            "timestamp": at(2),
            "scim": {"target": {"id": "u1", "user_name": "anna@example.com"},
                     "actions": ["user.update"],
                     "changes": {"attributes": ["userName"],
                                 "patch_ops": [{"op": "replace", "path": "userName",
                                                "value": "anna@example.com"}],
                                 "requested": {"user_name": "anna@example.com"}}}
        })),
        deactivate(3, "u1"),
        // Someone else, never named ann or anna.
        deactivate(4, "u2"),
    ];
    for name in ["ann@example.com", "ANNA@example.com", "u1", "00u1"] {
        let trace = trace_lines(&lines, &lookup(name));
        assert_eq!(trace.ids, ["u1"], "{name}");
        assert_eq!(
            kinds(&trace),
            [
                (Kind::Created, OK),
                (Kind::Updated, OK),
                (Kind::Deactivated, OK)
            ],
            "{name}"
        );
        let renamed = &trace.entries[1];
        assert_eq!(renamed.diff.len(), 1, "{renamed:?}");
        assert_eq!(renamed.diff[0].attribute, "userName");
        assert_eq!(renamed.diff[0].before, "ann@example.com");
        assert_eq!(renamed.diff[0].after, "anna@example.com");
        assert_eq!(
            trace.entries[2].user.user_name.as_deref(),
            Some("anna@example.com"),
            "the deactivation names her by her name at the time"
        );
    }
    let text = text_of(
        &trace_lines(&lines, &lookup("ann@example.com")),
        "ann@example.com",
    );
    assert!(
        text.contains("userName: \"ann@example.com\" → \"anna@example.com\""),
        "{text}"
    );
}

#[test]
fn a_refused_rename_to_the_name_does_not_pull_in_the_renamer() {
    let lines = [
        create(1, "u1", "ann@example.com", "00u1"),
        create(2, "u2", "bob@example.com", "00u2"),
        // Bob asked to become ann: 409, the name stays hers.
        line(json!({
            "timestamp": at(3), "outcome": "failure",
            "http": {"status": 409},
            "scim": {"target": {"id": "u2"}, "actions": ["user.update"],
                     "changes": {"requested": {"user_name": "ann@example.com"}},
                     "error": {"status": "409", "scim_type": "uniqueness", "detail": "userName exists"}}
        })),
    ];
    let trace = trace_lines(&lines, &lookup("ann@example.com"));
    assert_eq!(trace.ids, ["u1"]);
    assert_eq!(kinds(&trace), [(Kind::Created, OK)]);
}

#[test]
fn a_refused_create_without_id_is_an_entry_with_its_reason() {
    let lines = [
        create(1, "u1", "ann@example.com", "00u1"),
        line(json!({
            "timestamp": at(2), "outcome": "failure",
            "http": {"method": "POST", "status": 409},
            "scim": {"operation": "create",
                     "target": {"user_name": "ann@example.com", "external_id": "00u1"},
                     "actions": ["user.create"],
                     "error": {"status": "409", "scim_type": "uniqueness", "detail": "userName exists"}}
        })),
    ];
    let trace = trace_lines(&lines, &lookup("ann@example.com"));
    assert_eq!(
        kinds(&trace),
        [(Kind::Created, OK), (Kind::Created, FAILED)]
    );
    let failure = trace.entries[1].failure.as_ref().unwrap();
    assert_eq!(failure.kind.as_deref(), Some("uniqueness"));
    assert_eq!(failure.detail.as_deref(), Some("userName exists"));
    assert_eq!(trace.entries[1].status, Some(409));
}

#[test]
fn a_pseudonymised_user_is_found_by_name_only_with_the_key() {
    let key = Pseudonymizer::new(b"0123456789abcdef".to_vec());
    let pseudonym = key.hash("carol@example.com");
    let lines = [create(1, "u3", &pseudonym, "00u3"), deactivate(2, "u3")];
    let with_key = trace_lines(
        &lines,
        &Lookup {
            pseudonymizer: Some(&key),
            ..lookup("carol@example.com")
        },
    );
    assert_eq!(with_key.ids, ["u3"]);
    assert_eq!(
        kinds(&with_key),
        [(Kind::Created, OK), (Kind::Deactivated, OK)]
    );
    assert!(!with_key.pseudonyms_unmatched);
    // The pseudonym is kept whole for scripts and cut short for people.
    assert_eq!(
        with_key.entries[0].user.user_name.as_deref(),
        Some(pseudonym.as_str())
    );
    let text = text_of(&with_key, "carol@example.com");
    assert!(text.contains(&format!("{}…", &pseudonym[..24])), "{text}");
    assert!(!text.contains(&pseudonym), "{text}");

    let without = trace_lines(&lines, &lookup("carol@example.com"));
    assert!(!without.found());
    assert!(
        without.pseudonyms_unmatched,
        "the hint that a key is needed"
    );
    // The externalId and the pseudonym itself are never pseudonymised further.
    assert_eq!(trace_lines(&lines, &lookup("00u3")).ids, ["u3"]);
    assert_eq!(trace_lines(&lines, &lookup(&pseudonym)).ids, ["u3"]);
}

#[test]
fn memberships_via_add_replace_remove_and_group_deletion() {
    let lines = [
        create(1, "u1", "ann@example.com", "00u1"),
        // The group's name comes from its create; later PATCHes carry only the id.
        line(json!({
            "timestamp": at(2),
            "http": {"method": "POST", "status": 201},
            "scim": {"endpoint": "Groups", "operation": "create", "resource_type": "Group",
                     "target": {"id": "g1", "display_name": "Engineering"},
                     "actions": ["group.create"]}
        })),
        // Okta's push: she is in the new list.
        group(
            3,
            "g1",
            &["group.members.replace"],
            json!({"members_replaced": ["u1", "u2"]}),
        ),
        // Pushed again with her still in: no change for her, no entry.
        group(
            4,
            "g1",
            &["group.members.replace"],
            json!({"members_replaced": ["u2", "u1"]}),
        ),
        // Pushed without her: she lost it.
        group(
            5,
            "g1",
            &["group.members.replace"],
            json!({"members_replaced": ["u2"]}),
        ),
        group(
            6,
            "g1",
            &["group.members.add"],
            json!({"members_added": ["u1"]}),
        ),
        // Another group, other members: nothing for her.
        group(
            7,
            "g2",
            &["group.members.add"],
            json!({"members_added": ["u2"]}),
        ),
        group(8, "g1", &["group.delete"], json!({})),
    ];
    let trace = trace_lines(&lines, &lookup("ann@example.com"));
    let groups: Vec<_> = trace
        .entries
        .iter()
        .skip(1)
        .map(|e| {
            (
                e.kind,
                e.action.as_deref().unwrap(),
                e.group.as_ref().unwrap().name.as_deref(),
            )
        })
        .collect();
    let eng = Some("Engineering");
    assert_eq!(
        groups,
        [
            (Kind::GroupGained, "group.members.replace", eng),
            (Kind::GroupLost, "group.members.replace", eng),
            (Kind::GroupGained, "group.members.add", eng),
            (Kind::GroupLost, "group.delete", eng),
        ]
    );
    let text = text_of(&trace, "ann@example.com");
    assert!(
        text.contains("group gained") && text.contains("\"Engineering\" by group.members.replace"),
        "{text}"
    );
}

#[test]
fn a_failed_deactivation_then_its_retry() {
    let lines = [
        create(1, "u1", "ann@example.com", "00u1"),
        line(json!({
            "event_id": "ev-failed", "timestamp": at(2), "outcome": "failure",
            "http": {"status": 502},
            "scim": {"target": {"id": "u1"}, "actions": ["user.deactivate"]},
            "failure": {"side": "upstream", "kind": "connect_refused",
                        "detail": "tcp connect error: Connection refused (os error 111)"}
        })),
        line(json!({
            "timestamp": at(9), "retry_of": "ev-failed",
            "scim": {"target": {"id": "u1"}, "actions": ["user.deactivate"]}
        })),
    ];
    let trace = trace_lines(&lines, &lookup("ann@example.com"));
    assert_eq!(
        kinds(&trace),
        [
            (Kind::Created, OK),
            (Kind::Deactivated, FAILED),
            (Kind::Deactivated, OK)
        ]
    );
    let failed = &trace.entries[1];
    assert_eq!(failed.status, Some(502));
    assert_eq!(
        failed.failure.as_ref().and_then(|f| f.kind.as_deref()),
        Some("connect_refused")
    );
    assert_eq!(trace.entries[2].retry_of.as_deref(), Some("ev-failed"));
    let text = text_of(&trace, "ann@example.com");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[2].contains("FAILED 502") && lines[2].contains("connect_refused: tcp connect"),
        "{text}"
    );
    assert!(
        lines[3].contains("ok 200") && lines[3].contains(&format!("retry of {}", at(2))),
        "{text}"
    );
}

#[test]
fn deprovisioning_gap_and_closing_are_entries() {
    let tracker = |second: u32, action: &str, deprovision: Value| {
        line(json!({
            "timestamp": at(second), "outcome": "failure",
            "http": null, "client": null,
            "scim": {"target": {"id": "u1", "user_name": "ann@example.com"}, "actions": [action]},
            "deprovision": deprovision
        }))
    };
    let lines = [
        create(1, "u1", "ann@example.com", "00u1"),
        tracker(
            30,
            "deprovision.gap",
            json!({
            "requested_action": "user.deactivate", "requested_event_id": "ev-x",
            "requested_at": at(2), "attempts": 3, "last_status": 502,
            "confirmed_by": null, "latency_ms": null}),
        ),
        tracker(
            40,
            "deprovision.closed",
            json!({
            "requested_action": "user.deactivate", "requested_event_id": "ev-x",
            "requested_at": at(2), "attempts": 4, "last_status": 200,
            "confirmed_by": "read", "latency_ms": 38000.0}),
        ),
    ];
    let trace = trace_lines(&lines, &lookup("u1"));
    let got: Vec<Kind> = trace.entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        got,
        [Kind::Created, Kind::DeprovisionGap, Kind::DeprovisionClosed]
    );
    assert_eq!(
        trace.entries[1].deprovision.as_ref().unwrap()["attempts"],
        3
    );
    let text = text_of(&trace, "u1");
    assert!(
        text.contains("UNCONFIRMED") && text.contains("3 attempts, last status 502"),
        "{text}"
    );
    assert!(text.contains("confirmed by read after 38.0 s"), "{text}");
}

#[test]
fn integrity_records_are_skipped_even_when_they_look_like_the_user() {
    let record = json!({
        "schema_version": "1.4", "record": "audit.intent",
        "timestamp": at(2), "event_id": "intent-1",
        "scim": {"resource_type": "User", "target": {"id": "u1"}, "actions": ["user.delete"]},
    })
    .to_string();
    let lines = [
        r#"{"schema_version":"1.4","record":"integrity.start","details":{"genesis":true}}"#
            .to_owned(),
        create(1, "u1", "ann@example.com", "00u1"),
        record,
        String::new(),
    ];
    let trace = trace_lines(&lines, &lookup("ann@example.com"));
    assert_eq!(kinds(&trace), [(Kind::Created, OK)]);
    assert_eq!(trace.lines_skipped, 3);
    assert_eq!(trace.events_read, 1);
}

#[test]
fn nobody_named_is_not_found() {
    let lines = [create(1, "u1", "ann@example.com", "00u1")];
    let trace = trace_lines(&lines, &lookup("zoe@example.com"));
    assert!(!trace.found());
    assert!(trace.entries.is_empty() && trace.ids.is_empty());
}

#[test]
fn the_state_finds_her_by_todays_name_names_groups_and_ends_the_timeline() {
    let mut store = Store::in_memory("app:443").unwrap();
    store
        .put(
            &crate::state::Resource {
                resource_type: "User".to_owned(),
                id: "u9".to_owned(),
                user_name: Some("dora@example.com".to_owned()),
                active: Some(false),
                ..Default::default()
            },
            &at(5),
        )
        .unwrap();
    store
        .put(
            &crate::state::Resource {
                resource_type: "Group".to_owned(),
                id: "g9".to_owned(),
                display_name: Some("Finance".to_owned()),
                members: Some(vec!["u9".to_owned()]),
                ..Default::default()
            },
            &at(5),
        )
        .unwrap();
    // The files hold only id-only writes (scimtap started after she was provisioned).
    let lines = [
        group(
            3,
            "g9",
            &["group.members.add"],
            json!({"members_added": ["u9"]}),
        ),
        deactivate(4, "u9"),
    ];
    let trace = trace_lines(
        &lines,
        &Lookup {
            state: Some(&store),
            ..lookup("Dora@example.com")
        },
    );
    assert_eq!(trace.ids, ["u9"]);
    let got: Vec<Kind> = trace.entries.iter().map(|e| e.kind).collect();
    assert_eq!(got, [Kind::GroupGained, Kind::Deactivated, Kind::State]);
    assert_eq!(
        trace.entries[0].group.as_ref().unwrap().name.as_deref(),
        Some("Finance")
    );
    let now = trace.entries[2].state.as_ref().unwrap();
    assert_eq!(now.active, Some(false));
    assert_eq!(now.groups[0].name.as_deref(), Some("Finance"));
    assert_eq!(trace.entries[2].at.as_deref(), Some(at(5).as_str()));
    let text = text_of(&trace, "Dora@example.com");
    assert!(
        text.contains("inactive; userName dora@example.com; in Finance"),
        "{text}"
    );
}

#[test]
fn json_lines_carry_every_documented_field_in_order() {
    let lines = [
        create(1, "u1", "ann@example.com", "00u1"),
        deactivate(2, "u1"),
    ];
    let trace = trace_lines(&lines, &lookup("ann@example.com"));
    let mut out = Vec::new();
    write_json(&trace, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let fields = [
        "at",
        "kind",
        "action",
        "outcome",
        "outcome_reason",
        "status",
        "user",
        "group",
        "diff",
        "set",
        "attributes",
        "noop",
        "failure",
        "client",
        "retry_of",
        "deprovision",
        "state",
        "event_id",
        "request_id",
    ];
    let docs = include_str!("../../docs/answers.md");
    for line in text.lines() {
        let entry: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
        let keys: Vec<&str> = entry.keys().map(String::as_str).collect();
        assert_eq!(keys, fields, "{line}");
    }
    for field in fields {
        assert!(
            docs.contains(&format!("| `{field}` |")),
            "docs/answers.md does not document the trace field {field}"
        );
    }
    let deactivated: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(deactivated["kind"], "deactivated");
    assert_eq!(deactivated["user"]["user_name"], "ann@example.com");
    assert_eq!(
        deactivated["set"],
        json!([{"attribute": "active", "value": false}])
    );
}

#[test]
fn human_lines_are_aligned_in_columns() {
    let lines = [
        create(1, "u1", "ann@example.com", "00u1"),
        group(
            2,
            "g1",
            &["group.members.add"],
            json!({"members_added": ["u1"]}),
        ),
        deactivate(3, "u1"),
    ];
    let trace = trace_lines(&lines, &lookup("ann@example.com"));
    let text = text_of(&trace, "ann@example.com");
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{text}");
    // The result column ("ok ...") starts at the same place on every line.
    let starts: Vec<usize> = rows.iter().map(|r| r.find("ok ").unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] == w[1]), "{text}");
    assert!(
        text.starts_with(
            "ann@example.com: user u1 (userName ann@example.com, externalId 00u1); 3 entries"
        ),
        "{text}"
    );
}
