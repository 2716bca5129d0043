//! Unit tests of the classifier's edges; the documented IdP flows are table-driven in
//! tests/it/classify.rs.

use super::*;
use serde_json::json;

fn one(method: &str, path: &str, request: Body, status: u16, response: Body) -> ScimInfo {
    let parts = Parts {
        method,
        path,
        query: None,
        request: &request,
        status: Some(status),
        response: &response,
        location: None,
    };
    let mut infos = classify(
        &parts,
        &ScimContext::new(None, CustomTypes::new(), &[], None),
    );
    assert_eq!(infos.len(), 1);
    infos.remove(0)
}

#[test]
fn truncated_bodies_are_not_parsed_and_say_why() {
    let body = Body::parse(b"{\"userName\":", 5_000_000, true, "request");
    let info = one("POST", "/Users", body, 201, Body::Absent);
    assert_eq!(info.actions, ["user.create"]);
    assert!(info
        .parse_error
        .unwrap()
        .contains("only the first 12 of 5000000 bytes"));
}

#[test]
fn a_utf8_bom_is_tolerated() {
    let body = Body::parse(b"\xEF\xBB\xBF{\"userName\":\"a\"}", 20, false, "request");
    let info = one("POST", "/Users", body, 201, Body::Absent);
    assert!(info.parse_error.is_none());
    assert_eq!(info.target.user_name.as_deref(), Some("a"));
}

#[test]
fn redacted_attributes_never_show_and_configured_ones_too() {
    let ctx = ScimContext::new(None, CustomTypes::new(), &["SSN".to_owned()], None);
    let body = json!({
        "userName": "a", "password": "p1", "ssn": "s1",
        "Operations": [{"op": "replace", "path": "PASSWORD", "value": "p2"},
                       {"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:password", "value": "p3"},
                       {"op": "replace", "value": {"password": "p4", "nested": {"Password": "p5"}}}]
    });
    let shown = redact_json(&Json::from(&body), &ctx).to_string();
    for secret in ["p1", "s1", "p2", "p3", "p4", "p5"] {
        assert!(
            !shown.contains(&format!("\"{secret}\"")),
            "{secret} in {shown}"
        );
    }
    assert!(shown.contains("\"userName\":\"a\""));
}

#[test]
fn pseudonymised_targets_and_filters_hide_the_raw_values() {
    let p = Pseudonymizer::new(b"0123456789abcdef".to_vec());
    let ctx = ScimContext::new(None, CustomTypes::new(), &[], Some(p.clone()));
    let request = json!({"userName": "bjensen@example.com", "displayName": "Babs"});
    let request = Body::Json(Json::from(&request));
    let parts = Parts {
        method: "POST",
        path: "/Users",
        query: None,
        request: &request,
        status: Some(201),
        response: &Body::Absent,
        location: None,
    };
    let info = classify(&parts, &ctx).remove(0);
    assert_eq!(info.target.user_name, Some(p.hash("bjensen@example.com")));
    assert_eq!(info.target.display_name, Some(p.hash("Babs")));
    let list = Parts {
        method: "GET",
        query: Some("filter=userName%20eq%20%22bjensen%40example.com%22"),
        request: &Body::Absent,
        ..parts
    };
    let filter = classify(&list, &ctx).remove(0).filter.unwrap();
    assert!(!filter.contains("bjensen"), "{filter}");
    assert!(filter.starts_with("userName eq \"hmac-sha256:"));
}

#[test]
fn resource_types_are_learned_from_discovery_responses() {
    let mut ctx = ScimContext::default();
    ctx.learn_resource_types(&Json::from(&json!({
        "Resources": [
            {"name": "User", "endpoint": "/Users"},
            {"name": "Device", "endpoint": "/Devices"},
            {"name": "Broken"}
        ]
    })));
    assert_eq!(
        ctx.custom_types.get("devices").map(String::as_str),
        Some("Device")
    );
    assert_eq!(ctx.custom_types.len(), 1);
}

#[test]
fn odd_json_shapes_never_panic() {
    for body in [
        json!(null),
        json!([]),
        json!("Operations"),
        json!({"Operations": "x"}),
        json!({"Operations": [null, 1, "x", {"op": 5, "path": 7}, {"op": "replace", "value": [1]}]}),
        json!({"Operations": [{"op": "add", "path": "members", "value": {"value": 5}}]}),
        json!({"members": "x", "active": {"a": 1}}),
    ] {
        for (method, path) in [
            ("PATCH", "/Groups/g"),
            ("PATCH", "/Users/u"),
            ("PUT", "/Groups/g"),
            ("POST", "/Groups"),
            ("POST", "/Bulk"),
        ] {
            let info = classify(
                &Parts {
                    method,
                    path,
                    query: Some("filter=%zz&&="),
                    request: &Body::Json(Json::from(&body)),
                    status: Some(400),
                    response: &Body::Json(Json::from(&body)),
                    location: Some("::"),
                },
                &ScimContext::default(),
            );
            assert!(!info.is_empty());
        }
    }
}

#[test]
fn pseudonymised_bodies_hide_member_names_and_email_values_but_keep_types() {
    let p = Pseudonymizer::new(b"0123456789abcdef".to_vec());
    let ctx = ScimContext::new(None, CustomTypes::new(), &[], Some(p.clone()));
    let body = json!({
        "displayName": "Eng",
        "emails": [{"type": "work", "value": "a@example.com", "primary": true}],
        "members": [{"value": "u1", "display": "test.user@okta.local"}]
    });
    let shown = redact_json(&Json::from(&body), &ctx);
    let text = shown.to_string();
    for raw in ["a@example.com", "test.user@okta.local", "\"Eng\""] {
        assert!(!text.contains(raw), "{raw} in {text}");
    }
    assert_eq!(shown["emails"][0]["type"], "work");
    assert_eq!(shown["emails"][0]["primary"], true);
    assert_eq!(
        shown["members"][0]["display"],
        p.hash("test.user@okta.local")
    );
}

#[test]
fn a_repeated_key_counts_once_with_its_last_value() {
    let raw = br#"{"userName":"first","active":true,"USERNAME":"folded","userName":"second","members":[],"members":[{"value":"m2"}]}"#;
    let Body::Json(body) = Body::parse(raw, raw.len() as u64, false, "request") else {
        panic!("not parsed");
    };
    assert_eq!(
        get_ci(&body, "userName").and_then(Json::as_str),
        Some("second")
    );
    assert_eq!(
        get_ci(&body, "username").and_then(Json::as_str),
        Some("second")
    );
    assert_eq!(
        body_attributes(&body),
        vec!["active", "USERNAME", "userName", "members"]
    );
    let info = one("POST", "/Groups", Body::Json(body), 201, Body::Absent);
    assert_eq!(info.changes.members_added, vec!["m2"]);
}

fn with_location(
    method: &str,
    path: &str,
    request: Value,
    status: u16,
    response: Option<Value>,
    location: Option<&str>,
) -> ScimInfo {
    let request = Body::Json(Json::from(&request));
    let response = match &response {
        Some(v) => Body::Json(Json::from(v)),
        None => Body::Absent,
    };
    let parts = Parts {
        method,
        path,
        query: None,
        request: &request,
        status: Some(status),
        response: &response,
        location,
    };
    classify(&parts, &ScimContext::default()).remove(0)
}

#[test]
fn a_create_takes_its_id_only_from_a_2xx_answer_naming_a_resource() {
    // scim2-server answers a refused create with `Location: …/v2/Users`, the collection.
    let error = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                       "status": "409", "scimType": "uniqueness", "detail": "exists", "id": "e1"});
    /// Status, Location, response body, and the id expected.
    type Case<'c> = (u16, Option<&'c str>, Option<Value>, Option<&'c str>);
    let cases: [Case<'_>; 9] = [
        (
            409,
            Some("http://127.0.0.1:9/v2/Users"),
            Some(error.clone()),
            None,
        ),
        (400, Some("http://127.0.0.1:9/v2/Users"), None, None),
        (
            409,
            Some("http://127.0.0.1:9/v2/Users/u-1"),
            Some(error),
            None,
        ),
        (201, Some("http://127.0.0.1:9/v2/Users"), None, None),
        (201, Some("/v2/Users/"), None, None),
        (
            201,
            Some("https://x.example/scim/v2/Groups/g-1"),
            None,
            None,
        ),
        (
            201,
            Some("https://x.example/scim/v2/Users/u%2F1?a=1#f"),
            None,
            Some("u/1"),
        ),
        (201, Some("/Users/u-2/"), None, Some("u-2")),
        (201, None, Some(json!({"id": "u-3"})), Some("u-3")),
    ];
    for (status, location, response, expected) in cases {
        let info = with_location(
            "POST",
            "/v2/Users",
            json!({"userName": "a"}),
            status,
            response,
            location,
        );
        assert_eq!(
            info.target.id.as_deref(),
            expected,
            "{status} Location {location:?}"
        );
        assert_eq!(info.actions, ["user.create"]);
    }
}

#[test]
fn a_rejected_rename_never_becomes_the_targets_name() {
    let rename = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "userName", "value": "new@example.com"}]});
    let group_put = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "New name", "externalId": "x-new"});
    let conflict = json!({"status": "409", "scimType": "uniqueness"});
    for status in [409, 400, 412, 500, 502] {
        let info = with_location(
            "PATCH",
            "/Users/u1",
            rename.clone(),
            status,
            Some(conflict.clone()),
            None,
        );
        assert_eq!(info.target.id.as_deref(), Some("u1"));
        assert_eq!(info.target.user_name, None, "PATCH answered {status}");
        assert_eq!(
            info.changes.requested.user_name.as_deref(),
            Some("new@example.com"),
            "PATCH answered {status}"
        );
        let info = with_location(
            "PUT",
            "/Groups/g1",
            group_put.clone(),
            status,
            Some(conflict.clone()),
            None,
        );
        assert_eq!(info.target.display_name, None, "PUT answered {status}");
        assert_eq!(info.target.external_id, None, "PUT answered {status}");
        assert_eq!(
            info.changes.requested,
            Requested {
                external_id: Some("x-new".into()),
                user_name: None,
                display_name: Some("New name".into()),
            }
        );
    }
    // A successful rename: the new name is the name.
    let info = with_location("PATCH", "/Users/u1", rename, 200, None, None);
    assert_eq!(info.target.user_name.as_deref(), Some("new@example.com"));
    assert_eq!(
        info.changes.requested.user_name.as_deref(),
        Some("new@example.com")
    );
    let info = with_location("PUT", "/Groups/g1", group_put, 200, None, None);
    assert_eq!(info.target.display_name.as_deref(), Some("New name"));
    // A refused rename with a pseudonymiser: both hidden, still the same pseudonym.
    let p = Pseudonymizer::new(b"0123456789abcdef".to_vec());
    let ctx = ScimContext::new(None, CustomTypes::new(), &[], Some(p.clone()));
    let request =
        json!({"Operations": [{"op": "replace", "path": "userName", "value": "new@example.com"}]});
    let request = Body::Json(Json::from(&request));
    let parts = Parts {
        method: "PATCH",
        path: "/Users/u1",
        query: None,
        request: &request,
        status: Some(409),
        response: &Body::Absent,
        location: None,
    };
    let info = classify(&parts, &ctx).remove(0);
    assert_eq!(info.target.user_name, None);
    assert_eq!(
        info.changes.requested.user_name,
        Some(p.hash("new@example.com"))
    );
}

#[test]
fn patch_ops_keep_the_op_and_value_as_sent_next_to_the_normalised_ones() {
    let body = json!({"Operations": [
        {"op": "Replace", "path": "active", "value": "False"},
        {"op": "replace", "path": "active", "value": false},
        {"op": "Add", "value": {"active": "True", "nickName": "Babs"}},
        {"op": "REPLACE", "path": "password", "value": "False"},
        {"op": "replace", "path": "nickName", "value": "False"},
    ]});
    let info = with_location("PATCH", "/Users/u1", body, 200, None, None);
    let ops = serde_json::to_value(&info.changes.patch_ops).unwrap();
    assert_eq!(ops[0]["op"], "replace");
    assert_eq!(ops[0]["raw_op"], "Replace");
    assert_eq!(ops[0]["value"], false);
    assert_eq!(ops[0]["raw_value"], "False");
    // Already normal: nothing extra.
    assert!(ops[1].get("raw_op").is_none(), "{}", ops[1]);
    assert!(ops[1].get("raw_value").is_none(), "{}", ops[1]);
    // Path-less: the members that were converted, as sent.
    assert_eq!(ops[2]["raw_op"], "Add");
    assert_eq!(ops[2]["value"], json!({"active": true, "nickName": "Babs"}));
    assert_eq!(ops[2]["raw_value"], json!({"active": "True"}));
    // A secret is never shown, raw or not.
    assert_eq!(ops[3]["raw_op"], "REPLACE");
    assert_eq!(ops[3]["value"], "[REDACTED]");
    assert!(ops[3].get("raw_value").is_none(), "{}", ops[3]);
    // Only `active` is converted: other strings are shown as sent.
    assert_eq!(ops[4]["value"], "False");
    assert!(ops[4].get("raw_value").is_none(), "{}", ops[4]);
    assert_eq!(
        info.actions,
        ["user.deactivate", "user.reactivate", "user.update"]
    );
}

#[test]
fn deprovisioning_status_and_closing_serialize_as_documented() {
    use super::{ClosedBy, DeprovisionStatus};
    let json = |v: serde_json::Value| v.as_str().map(str::to_owned);
    let status = [DeprovisionStatus::Gap, DeprovisionStatus::Closed]
        .map(|s| json(serde_json::to_value(s).expect("status")));
    assert_eq!(status, [Some("gap".into()), Some("closed".into())]);
    for by in [ClosedBy::Response, ClosedBy::Read, ClosedBy::Reactivation] {
        let written = json(serde_json::to_value(by).expect("closed_by"));
        assert_eq!(written.as_deref(), Some(by.as_str()));
    }
}
