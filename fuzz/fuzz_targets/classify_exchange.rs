//! Any exchange (method, target, headers, both bodies, status, how each side ended) through
//! classification and event building, one to four exchanges sharing a context that learns
//! custom types: nothing panics, every exchange yields at least one event, and every event
//! says what happened on the wire. Covers the endpoint locator, PATCH and filter parsing,
//! Bulk splitting and BulkResponse matching, the redactor and pseudonymisation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scimtap::event::{events_for, Outcome};
use scimtap_fuzz::{contexts, parse_case};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let case = parse_case(data);
    let mut ctx = contexts()[case.context].clone();
    for ex in &case.exchanges {
        ctx.learn(ex);
        let events = events_for(ex, &ctx);
        assert!(!events.is_empty(), "an exchange without an event");
        let status = ex.response.as_ref().map(|r| r.status.as_u16());
        let mut last_index = None;
        for event in &events {
            assert_eq!(event.http.method, ex.request.method.as_str());
            assert_eq!(event.request_id, ex.request_id);
            assert_eq!(event.http.status, status);
            assert!(
                ex.request.path_and_query.starts_with(event.http.path),
                "http.path {:?} is not the start of the target {:?}",
                event.http.path,
                ex.request.path_and_query
            );
            if event.outcome == Outcome::Success {
                // A 404 is a success only with a reason (already_absent, not_found_lookup).
                assert!(
                    status.is_some_and(|s| s < 400 || (s == 404 && event.outcome_reason().is_some())),
                    "success with status {status:?}"
                );
                assert!(event.failure.is_none(), "success with a failure");
            }
            if events.len() > 1 {
                let bulk = event
                    .scim
                    .bulk
                    .as_ref()
                    .expect("several events, not all Bulk");
                assert!(
                    last_index.is_none_or(|i| bulk.index > i),
                    "Bulk indexes out of order"
                );
                last_index = Some(bulk.index);
            }
            let line = event.to_json_line().expect("every event encodes");
            match serde_json::from_slice::<Value>(&line) {
                Ok(Value::Object(o)) => assert!(o.contains_key("schema_version")),
                other => panic!("native line is not a JSON object: {other:?}"),
            }
        }
    }
});
