use serde_json::{json, Value};

use super::*;
use crate::scim::{Changes, Target};

fn user_event(operation: Operation, id: &str, actions: &[&str]) -> ScimInfo {
    ScimInfo {
        operation: Some(operation),
        resource_type: Some("User".to_owned()),
        target: Target {
            id: Some(id.to_owned()),
            ..Target::default()
        },
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        ..ScimInfo::default()
    }
}

fn seen<'a>(request: Option<&'a Value>, response: Option<&'a Value>) -> Seen<'a> {
    Seen {
        success: true,
        request,
        response,
        at: "2026-11-22T09:00:00.000Z",
    }
}

fn created(store: &mut Store, id: &str, body: &Value) {
    let mut scim = user_event(Operation::Create, id, &["user.create"]);
    observe(store, &mut scim, &seen(Some(body), Some(body))).expect("create");
}

#[test]
fn migrations_run_once_and_a_reopened_file_keeps_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    {
        let mut store = Store::open(&path, "app:443").expect("open");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        created(
            &mut store,
            "u1",
            &json!({"id": "u1", "userName": "ann", "active": true}),
        );
    }
    let mut store = Store::open(&path, "app:443").expect("reopen");
    let known = store.get("User", "u1").expect("get").expect("known");
    assert_eq!(known.user_name.as_deref(), Some("ann"));
    // Another upstream's state is another's.
    let mut other = Store::open(&path, "other:443").expect("open other");
    assert!(other.get("User", "u1").expect("get").is_none());
}

#[test]
fn a_file_from_a_newer_scimtap_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.pragma_update(None, "user_version", 99)
        .expect("pragma");
    drop(conn);
    assert!(matches!(
        Store::open(&path, "app"),
        Err(StateError::NewerSchema { found: 99, .. })
    ));
}

#[test]
fn an_id_only_deactivation_is_named_from_state_and_diffs_active() {
    let mut store = Store::in_memory("app").expect("store");
    created(
        &mut store,
        "u1",
        &json!({"id": "u1", "userName": "ann@example.com", "externalId": "x1", "active": true,
                "password": "[REDACTED]"}),
    );
    let patch = json!({"Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    let mut scim = user_event(Operation::Patch, "u1", &["user.deactivate"]);
    observe(&mut store, &mut scim, &seen(Some(&patch), None)).expect("patch");
    assert_eq!(scim.target.user_name.as_deref(), Some("ann@example.com"));
    assert_eq!(scim.target.external_id.as_deref(), Some("x1"));
    let state = scim.state.expect("state");
    assert!(state.known);
    assert_eq!(state.target_filled, vec!["user_name", "external_id"]);
    assert_eq!(state.diff.len(), 1);
    assert_eq!(state.diff[0].attribute, "active");
    assert_eq!(
        (&state.diff[0].before, &state.diff[0].after),
        (&json!(true), &json!(false))
    );
    let known = store.get("User", "u1").expect("get").expect("known");
    assert_eq!(known.active, Some(false));
    assert!(!known.attributes.contains_key("password"));
}

#[test]
fn a_put_with_active_true_reactivates_a_user_known_inactive_and_a_repeat_is_a_noop() {
    let mut store = Store::in_memory("app").expect("store");
    created(
        &mut store,
        "u1",
        &json!({"id": "u1", "userName": "ann", "active": false}),
    );
    let put = json!({"id": "u1", "userName": "ann", "active": true});
    let mut scim = user_event(Operation::Replace, "u1", &["user.update"]);
    observe(&mut store, &mut scim, &seen(Some(&put), Some(&put))).expect("put");
    assert_eq!(scim.actions, vec!["user.reactivate"]);
    let state = scim.state.expect("state");
    assert_eq!(state.reclassified_from.as_deref(), Some("user.update"));
    assert!(!state.noop);

    let mut again = user_event(Operation::Replace, "u1", &["user.update"]);
    observe(&mut store, &mut again, &seen(Some(&put), Some(&put))).expect("put again");
    assert_eq!(
        again.actions,
        vec!["user.update"],
        "active already true: no reactivation"
    );
    assert!(again.state.expect("state").noop);
}

#[test]
fn without_state_a_put_stays_user_update_and_unknown_targets_are_not_invented() {
    let mut store = Store::in_memory("app").expect("store");
    let put = json!({"id": "u9", "userName": "zed", "active": true});
    let mut scim = user_event(Operation::Replace, "u9", &["user.update"]);
    observe(&mut store, &mut scim, &seen(Some(&put), None)).expect("put");
    assert_eq!(scim.actions, vec!["user.update"]);
    let state = scim.state.expect("state");
    assert!(!state.known && state.diff.is_empty() && !state.noop);
}

#[test]
fn a_failed_write_changes_nothing() {
    let mut store = Store::in_memory("app").expect("store");
    created(
        &mut store,
        "u1",
        &json!({"id": "u1", "userName": "ann", "active": true}),
    );
    let patch = json!({"Operations": [{"op": "replace", "path": "active", "value": false}]});
    let mut scim = user_event(Operation::Patch, "u1", &["user.deactivate"]);
    let failed = Seen {
        success: false,
        ..seen(Some(&patch), None)
    };
    observe(&mut store, &mut scim, &failed).expect("patch");
    assert_eq!(scim.target.user_name.as_deref(), Some("ann"));
    assert!(scim.state.expect("state").diff.is_empty());
    let known = store.get("User", "u1").expect("get").expect("known");
    assert_eq!(known.active, Some(true));
}

#[test]
fn membership_changes_name_their_members_and_update_the_group() {
    let mut store = Store::in_memory("app").expect("store");
    created(&mut store, "u1", &json!({"id": "u1", "userName": "ann"}));
    created(&mut store, "u2", &json!({"id": "u2", "userName": "bob"}));
    let group = json!({"id": "g1", "displayName": "Eng", "members": [{"value": "u1"}]});
    let mut create = ScimInfo {
        operation: Some(Operation::Create),
        resource_type: Some("Group".to_owned()),
        target: Target {
            id: Some("g1".to_owned()),
            ..Target::default()
        },
        ..ScimInfo::default()
    };
    observe(&mut store, &mut create, &seen(Some(&group), Some(&group))).expect("create");

    let mut patch = ScimInfo {
        operation: Some(Operation::Patch),
        resource_type: Some("Group".to_owned()),
        target: Target {
            id: Some("g1".to_owned()),
            ..Target::default()
        },
        actions: vec!["group.members.remove".into(), "group.members.add".into()],
        changes: Changes {
            members_added: vec!["u2".into(), "u3".into()],
            members_removed: vec!["u1".into()],
            ..Changes::default()
        },
        ..ScimInfo::default()
    };
    observe(&mut store, &mut patch, &seen(None, None)).expect("patch");
    assert_eq!(patch.target.display_name.as_deref(), Some("Eng"));
    let state = patch.state.clone().expect("state");
    let names =
        |m: &[MemberRef]| -> Vec<Option<String>> { m.iter().map(|m| m.name.clone()).collect() };
    assert_eq!(names(&state.members_added), vec![Some("bob".into()), None]);
    assert_eq!(names(&state.members_removed), vec![Some("ann".into())]);
    assert!(!state.noop);
    let known = store.get("Group", "g1").expect("get").expect("known");
    assert_eq!(known.members, Some(vec!["u2".to_owned(), "u3".to_owned()]));

    // Deleting a user takes it out of its groups.
    let mut delete = user_event(Operation::Delete, "u2", &["user.delete"]);
    observe(&mut store, &mut delete, &seen(None, None)).expect("delete");
    assert_eq!(delete.target.user_name.as_deref(), Some("bob"));
    assert!(store.get("User", "u2").expect("get").is_none());
    let known = store.get("Group", "g1").expect("get").expect("known");
    assert_eq!(known.members, Some(vec!["u3".to_owned()]));

    // A replaced member list says whom it added and removed, compared with the known list.
    let mut replace = ScimInfo {
        actions: vec!["group.members.replace".into()],
        changes: Changes {
            members_replaced: Some(vec!["u1".into()]),
            ..Changes::default()
        },
        state: None,
        ..patch.clone()
    };
    observe(&mut store, &mut replace, &seen(None, None)).expect("replace");
    let state = replace.state.expect("state");
    assert_eq!(names(&state.members_added), vec![Some("ann".into())]);
    assert_eq!(
        state
            .members_removed
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>(),
        ["u3"]
    );

    // Deleting the group: its members lost it.
    let mut gone = ScimInfo {
        operation: Some(Operation::Delete),
        actions: vec!["group.delete".into()],
        changes: Changes::default(),
        state: None,
        ..patch
    };
    observe(&mut store, &mut gone, &seen(None, None)).expect("delete group");
    let state = gone.state.expect("state");
    assert_eq!(names(&state.members_removed), vec![Some("ann".into())]);
    assert!(store.get("Group", "g1").expect("get").is_none());
}

#[test]
fn a_list_response_teaches_ids_for_later_requests() {
    let mut store = Store::in_memory("app").expect("store");
    let list = json!({"Resources": [{"id": "u7", "userName": "eve", "active": true}]});
    let mut scim = ScimInfo {
        operation: Some(Operation::List),
        resource_type: Some("User".to_owned()),
        ..ScimInfo::default()
    };
    observe(&mut store, &mut scim, &seen(None, Some(&list))).expect("list");
    assert!(scim.state.is_none());
    let mut read = user_event(Operation::Delete, "u7", &["user.delete"]);
    observe(&mut store, &mut read, &seen(None, None)).expect("delete");
    assert_eq!(read.target.user_name.as_deref(), Some("eve"));
}

#[test]
fn a_read_only_store_finds_users_by_id_name_or_external_id_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    {
        let mut store = Store::open(&path, "app:443").expect("open");
        created(
            &mut store,
            "u1",
            &json!({"id": "u1", "userName": "Ann@Example.com", "externalId": "00u1"}),
        );
        let group = Resource {
            resource_type: "Group".to_owned(),
            id: "g1".to_owned(),
            display_name: Some("Finance".to_owned()),
            members: Some(vec!["u1".to_owned()]),
            ..Resource::default()
        };
        store.put(&group, "2026-11-22T09:00:01.000Z").expect("put");
    }
    // The only upstream in the file is taken when none is named.
    let store = Store::open_read_only(&path, None).expect("open read-only");
    for key in ["u1", "ann@example.com", "00u1"] {
        assert_eq!(store.find("User", key).expect("find"), ["u1"], "{key}");
    }
    assert!(
        store.find("User", "00U1").expect("find").is_empty(),
        "externalId is exact"
    );
    assert_eq!(
        store.groups_of("u1").expect("groups"),
        [("g1".to_owned(), Some("Finance".to_owned()))]
    );
    assert_eq!(
        store
            .updated_at("User", "u1")
            .expect("updated_at")
            .as_deref(),
        Some("2026-11-22T09:00:00.000Z")
    );
    let mut store = store;
    assert!(
        store.remove("User", "u1").is_err(),
        "a read-only store refuses writes"
    );
    // Another upstream's rows make the choice ambiguous.
    drop(store);
    let mut other = Store::open(&path, "other:443").expect("open");
    created(&mut other, "u2", &json!({"id": "u2", "userName": "bob"}));
    drop(other);
    let error = Store::open_read_only(&path, None).expect_err("two upstreams");
    assert!(error.to_string().contains("app:443, other:443"), "{error}");
    let named = Store::open_read_only(&path, Some("other:443")).expect("named");
    assert_eq!(named.find("User", "bob").expect("find"), ["u2"]);
}

#[test]
fn read_only_open_refuses_a_missing_file_and_one_that_is_not_a_state_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.db");
    assert!(Store::open_read_only(&missing, None).is_err());
    assert!(!missing.exists(), "nothing is created");
    let empty = dir.path().join("empty.db");
    rusqlite::Connection::open(&empty)
        .and_then(|c| c.execute_batch("CREATE TABLE t (x)"))
        .expect("sqlite");
    let error = Store::open_read_only(&empty, None).expect_err("not a state file");
    assert!(matches!(error, StateError::NotAStateFile { .. }), "{error}");
    let text = dir.path().join("audit.jsonl");
    std::fs::write(&text, "{\"not\": \"sqlite\"}\n".repeat(100)).expect("write");
    assert!(Store::open_read_only(&text, None).is_err());
}
