//! Table-driven classification over what identity providers really send: every documented
//! Okta and Microsoft Entra ID flow, the RFC 7644 examples, and the quirks list
//! (tests/fixtures/classification.json, each case citing its source).

use scimtap::scim::{classify, Body, CustomTypes, Parts, ScimContext};
use serde_json::Value;

fn context() -> ScimContext {
    let mut custom = CustomTypes::new();
    custom.insert("devices".to_owned(), "Device".to_owned());
    ScimContext::new(None, custom, &[], None)
}

/// A case's body as the proxy would have captured it: the raw text, or the JSON serialized.
fn body_text(case: &Value, json_key: &str, raw_key: &str) -> Option<String> {
    match (case[raw_key].as_str(), &case[json_key]) {
        (Some(raw), _) => Some(raw.to_owned()),
        (None, Value::Null) => None,
        (None, v) => Some(v.to_string()),
    }
}

/// Parsed as the audit worker parses captured bodies.
fn body<'a>(text: &'a Option<String>, side: &str) -> Body<'a> {
    match text {
        Some(t) => Body::parse(t.as_bytes(), t.len() as u64, false, side),
        None => Body::Absent,
    }
}

/// `expected` holds for `actual`: objects by their listed keys, arrays and scalars exactly,
/// `"@contains:x"` as a substring.
fn check(path: &str, actual: &Value, expected: &Value, problems: &mut Vec<String>) {
    match expected {
        Value::Object(map) => {
            for (k, v) in map {
                check(&format!("{path}.{k}"), &actual[k], v, problems);
            }
        }
        Value::String(s) if s.starts_with("@contains:") => {
            let needle = &s["@contains:".len()..];
            if !actual.as_str().is_some_and(|a| a.contains(needle)) {
                problems.push(format!(
                    "{path}: expected to contain {needle:?}, got {actual}"
                ));
            }
        }
        other => {
            if actual != other {
                problems.push(format!("{path}: expected {other}, got {actual}"));
            }
        }
    }
}

#[test]
fn documented_idp_flows_rfc_examples_and_quirks_classify_as_expected() {
    let cases: Vec<Value> = serde_json::from_str(include_str!("../fixtures/classification.json"))
        .expect("fixture file is JSON");
    assert!(cases.len() >= 50, "the table lost cases");
    let ctx = context();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let request_text = body_text(case, "request", "request_raw");
        let response_text = body_text(case, "response", "response_raw");
        let request = body(&request_text, "request");
        let response = body(&response_text, "response");
        let parts = Parts {
            method: case["method"].as_str().unwrap(),
            path: case["path"].as_str().unwrap(),
            query: case["query"].as_str(),
            request: &request,
            status: case["status"].as_u64().map(|s| s as u16),
            response: &response,
            location: case["location"].as_str(),
        };
        let infos = classify(&parts, &ctx);
        // `outcome_reason` is decided here but written at the event's top level, so it is not
        // in the serialized `scim` object: cases check it under the same name.
        let actual: Vec<Value> = infos
            .iter()
            .map(|i| {
                let mut v = serde_json::to_value(i).unwrap();
                v["outcome_reason"] = serde_json::to_value(i.outcome_reason).unwrap();
                v
            })
            .collect();
        let expected: Vec<Value> = match (&case["expect"], &case["expect_events"]) {
            (Value::Object(_), _) => vec![case["expect"].clone()],
            (_, Value::Array(events)) => events.clone(),
            _ => panic!("case {name} expects nothing"),
        };
        let mut problems = Vec::new();
        if actual.len() != expected.len() {
            problems.push(format!(
                "expected {} events, got {}",
                expected.len(),
                actual.len()
            ));
        }
        for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
            check(&format!("event[{i}]"), a, e, &mut problems);
        }
        // Whatever the case, the secrets in it never come out.
        let text = serde_json::to_string(&actual).unwrap();
        for secret in ["1mz050nq", "t1meMa$heen", "bulk-secret-1"] {
            if text.contains(secret) {
                problems.push(format!("secret {secret:?} in the classification"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{name} ({}):\n  {}\n  actual: {}",
                case["source"].as_str().unwrap_or(""),
                problems.join("\n  "),
                serde_json::to_string(&actual).unwrap()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
