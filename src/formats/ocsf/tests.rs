use super::*;
use crate::event::FailureInfo;
use crate::exchange::FailureSide;
use crate::formats::testing::{event, scim};
use crate::scim::{BulkRef, ScimError, Target};

/// The first (most significant) record of `e`.
fn value(e: &AuditEvent<'_>) -> Value {
    let lines = ocsf_lines(e);
    let line = lines.first().expect("at least one record");
    assert_eq!(line.last(), Some(&b'\n'));
    serde_json::from_slice(line).unwrap()
}

#[test]
fn the_most_significant_action_picks_the_activity() {
    let e = event(
        "PATCH",
        scim(
            "User",
            Operation::Patch,
            &["user.update", "user.deactivate"],
        ),
        Some(200),
    );
    let v = value(&e);
    assert_eq!(v["class_uid"], 3001);
    assert_eq!(v["category_uid"], 3);
    assert_eq!(v["activity_id"], 5);
    assert_eq!(v["type_uid"], 300105);
    assert_eq!(v["type_name"], "Account Change: Disable");
    assert_eq!(v["user"]["uid"], "u1");
    assert_eq!(v["user"]["name"], "bjensen");
    assert_eq!(v["unmapped"]["scim"]["actions"][0], "user.update");
    assert_eq!(v["metadata"]["event_code"], "user.deactivate");
    assert!(
        v.get("api").is_none(),
        "api is a Cloud-profile attribute here"
    );
}

#[test]
fn user_and_group_actions_map_to_the_issue_table() {
    let cases: &[(&str, &str, Operation, u32, u32)] = &[
        ("User", "user.create", Operation::Create, 3001, 1),
        ("User", "user.reactivate", Operation::Patch, 3001, 2),
        ("User", "user.deactivate", Operation::Patch, 3001, 5),
        ("User", "user.delete", Operation::Delete, 3001, 6),
        ("User", "user.update", Operation::Replace, 3001, 99),
        ("Group", "group.members.add", Operation::Patch, 3006, 3),
        ("Group", "group.members.remove", Operation::Patch, 3006, 4),
        ("Group", "group.delete", Operation::Delete, 3006, 5),
        ("Group", "group.create", Operation::Create, 3006, 6),
        ("Group", "group.rename", Operation::Patch, 3006, 99),
        ("Group", "group.members.replace", Operation::Patch, 3006, 99),
        ("Device", "device.create", Operation::Create, 6003, 1),
        ("Device", "device.update", Operation::Patch, 6003, 3),
        ("Device", "device.delete", Operation::Delete, 6003, 4),
    ];
    for (rt, action, op, class, id) in cases {
        let v = value(&event("POST", scim(rt, *op, &[action]), Some(200)));
        assert_eq!(v["class_uid"], *class, "{action}");
        assert_eq!(v["activity_id"], *id, "{action}");
        assert_eq!(
            v["type_uid"].as_u64(),
            Some(u64::from(*class) * 100 + u64::from(*id))
        );
    }
    let v = value(&event(
        "PATCH",
        scim("Group", Operation::Patch, &["group.rename"]),
        Some(200),
    ));
    assert_eq!(v["activity_name"], "Rename");
    assert_eq!(v["type_name"], "Group Management: Other");
    assert_eq!(v["group"]["name"], "Babs");
}

#[test]
fn reads_and_non_scim_requests_are_api_activity() {
    let v = value(&event("GET", scim("User", Operation::Read, &[]), Some(200)));
    assert_eq!(v["class_uid"], 6003);
    assert_eq!(v["category_uid"], 6);
    assert_eq!(v["activity_id"], 2);
    assert_eq!(v["api"]["operation"], "scim.read");
    assert_eq!(v["api"]["request"]["uid"], "req-1");
    assert_eq!(v["resources"][0]["uid"], "u1");
    assert_eq!(v["actor"]["user"]["name"], "okta-prod");
    assert_eq!(v["actor"]["idp"]["name"], "okta");

    let v = value(&event("OPTIONS", ScimInfo::default(), Some(204)));
    assert_eq!(v["activity_id"], 99);
    assert_eq!(v["api"]["operation"], "http.request");
    assert!(v["api"].get("service").is_none());
    assert_eq!(v["http_request"]["http_method"], "OPTIONS");

    // A method outside OCSF's enum is kept, but not in `http_method`.
    let v = value(&event("PROPFIND", ScimInfo::default(), Some(405)));
    assert!(v["http_request"].get("http_method").is_none());
    assert_eq!(v["unmapped"]["http"]["method"], "PROPFIND");
    assert_eq!(
        v["message"],
        "http.request PROPFIND /scim/v2/Users/u1: failure"
    );
}

#[test]
fn a_change_without_a_nameable_target_is_api_activity() {
    let mut s = scim("User", Operation::Create, &["user.create"]);
    s.target = Target::default();
    let v = value(&event("POST", s, Some(400)));
    assert_eq!(v["class_uid"], 6003);
    assert_eq!(v["activity_id"], 1);
    assert_eq!(v["api"]["operation"], "user.create");
    assert!(v.get("user").is_none() && v.get("resources").is_none());
}

#[test]
fn each_member_is_the_user_of_its_own_membership_record() {
    let mut s = scim("Group", Operation::Patch, &["group.members.add"]);
    s.changes.members_added = vec!["m1".into()];
    let e = event("PATCH", s.clone(), Some(204));
    assert_eq!(ocsf_lines(&e).len(), 1);
    let v = value(&e);
    assert_eq!(v["activity_id"], 3);
    assert_eq!(v["user"]["uid"], "m1");
    assert_eq!(v["group"]["uid"], "u1");
    assert_eq!(
        v["metadata"]["uid"], "0190-event",
        "one record keeps the event id"
    );

    s.changes.members_added.push("m2".into());
    let e = event("PATCH", s, Some(204));
    let records: Vec<Value> = ocsf_lines(&e)
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    for (n, (r, member)) in records.iter().zip(["m1", "m2"]).enumerate() {
        assert_eq!(r["user"]["uid"], member);
        assert_eq!(r["metadata"]["uid"], format!("0190-event/{}", n + 1));
        assert_eq!(
            r["unmapped"]["scim"]["changes"]["members_added"],
            json!(["m1", "m2"])
        );
    }
}

#[test]
fn a_member_change_that_names_no_member_is_still_one_record() {
    let s = scim("Group", Operation::Patch, &["group.members.remove"]);
    let e = event("PATCH", s, Some(204));
    assert_eq!(ocsf_lines(&e).len(), 1);
    let v = value(&e);
    assert_eq!(v["activity_id"], 4);
    assert!(v.get("user").is_none());
}

#[test]
fn a_token_alone_makes_the_actor_a_service_account() {
    let mut e = event("GET", ScimInfo::default(), Some(200));
    e.client.name = None;
    assert_eq!(
        value(&e)["actor"]["user"],
        json!({"uid": "0123456789abcdef", "type_id": 4, "type": "Service"})
    );
    e.client.token_fingerprint = None;
    assert!(value(&e)["actor"].get("user").is_none());
}

#[test]
fn status_comes_from_the_scim_result() {
    let mut s = scim("User", Operation::Delete, &["user.delete"]);
    s.error = Some(ScimError {
        status: Some("404".into()),
        scim_type: Some("invalidValue".into()),
        detail: Some("no such user".into()),
    });
    s.bulk = Some(BulkRef {
        index: 3,
        bulk_id: None,
        method: Some("DELETE".into()),
        path: Some("/Users/u1".into()),
        status: Some(404),
    });
    let mut e = event("POST", s, Some(200));
    e.outcome = Outcome::Failure;
    let v = value(&e);
    assert_eq!(v["status_id"], 2);
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["status_code"], "404");
    assert_eq!(v["http_response"]["code"], 200);
    assert_eq!(v["status_detail"], "invalidValue: no such user");
    assert_eq!(v["severity_id"], 3);

    let mut e = event("GET", scim("User", Operation::Read, &[]), None);
    e.failure = Some(FailureInfo {
        side: FailureSide::Upstream,
        kind: crate::exchange::FailureKind::ConnectRefused,
        detail: "connection refused".into(),
    });
    let v = value(&e);
    assert_eq!(v["status_detail"], "connect_refused: connection refused");
    assert_eq!(v["severity_id"], 2);
    assert!(v.get("status_code").is_none() && v.get("http_response").is_none());
    assert_eq!(v["unmapped"]["failure"]["side"], "upstream");
}

#[test]
fn base_attributes_are_present() {
    let v = value(&event("GET", scim("User", Operation::Read, &[]), Some(200)));
    assert_eq!(v["time"], 1_700_000_000_123u64);
    assert_eq!(v["duration"], 2);
    assert_eq!(v["severity_id"], 1);
    assert_eq!(v["status_code"], "200");
    assert_eq!(v["metadata"]["version"], OCSF_VERSION);
    assert_eq!(v["metadata"]["uid"], "0190-event");
    assert_eq!(v["metadata"]["correlation_uid"], "req-1");
    assert_eq!(v["metadata"]["product"]["name"], "scimtap");
    assert_eq!(v["src_endpoint"], json!({"ip": "10.0.0.7", "port": 5555}));
    assert_eq!(v["http_request"]["url"]["path"], "/scim/v2/Users/u1");
    assert_eq!(v["http_request"]["uid"], "req-1");
    assert_eq!(
        v["unmapped"]["client"]["token_fingerprint"],
        "0123456789abcdef"
    );
}

#[test]
fn an_unknown_client_is_still_an_actor() {
    let mut e = event("GET", ScimInfo::default(), Some(200));
    e.client.name = None;
    e.client.idp = None;
    e.client.user_agent = None;
    e.client.token_fingerprint = None;
    assert_eq!(value(&e)["actor"], json!({"app_name": "unknown"}));
}
