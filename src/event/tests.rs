use super::*;
use crate::clients::fingerprint;
use crate::exchange::{BodyCapture, BodyEnd, ConnInfo, RequestHead, ResponseRecord};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Method, StatusCode, Version};
use serde_json::json;
use sha2::{Digest, Sha256};

fn exchange(status: Option<u16>) -> Exchange {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_static("Bearer s3cr3t-token"),
    );
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static("Okta SCIM Client 1.0.0"),
    );
    headers.insert(
        http::header::COOKIE,
        HeaderValue::from_static("session=abc"),
    );
    Exchange {
        request_id: "req-1".into(),
        started_at: Timestamp::from_unix_millis(1_700_000_000_123),
        duration: std::time::Duration::from_micros(1500),
        conn: ConnInfo::new("10.0.0.7:5555".parse().unwrap(), true),
        route: Some(crate::exchange::RouteTag::named("default")),
        request: RequestHead {
            method: Method::GET,
            path_and_query: "/scim/v2/Users?filter=userName%20eq%20%22a%22".into(),
            version: Version::HTTP_11,
            headers,
        },
        request_body: BodyCapture::empty(BodyEnd::Complete),
        response: status.map(|s| ResponseRecord {
            status: StatusCode::from_u16(s).unwrap(),
            headers: HeaderMap::new(),
            body: BodyCapture::empty(BodyEnd::Complete),
            generated: false,
        }),
        recorded_failure: None,
    }
}

fn json(ex: &Exchange) -> serde_json::Value {
    let events = events_for(ex, &EventContext::default());
    assert_eq!(events.len(), 1);
    let line = events[0].to_json_line().unwrap();
    assert_eq!(line.last(), Some(&b'\n'));
    serde_json::from_slice(&line).unwrap()
}

#[test]
fn the_upstream_is_named_by_host_and_port_with_ipv6_unbracketed() {
    let config = |url: &str| {
        let text = format!(
            "[listen]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"{url}\"\n[[sinks]]\ntype = \"stdout\"\n"
        );
        Config::from_toml_str(&text, std::path::Path::new("t.toml")).expect("valid")
    };
    let up = |url: &str| UpstreamInfo::from_config(&config(url).first_route().upstream);
    let named = up("https://app.example.com/scim/v2");
    assert_eq!(
        (
            named.host.as_str(),
            named.port,
            named.tls,
            named.host_is_ip()
        ),
        ("app.example.com", 443, true, false)
    );
    let v6 = up("http://[::1]:9000");
    assert_eq!((v6.host.as_str(), v6.port, v6.tls), ("::1", 9000, false));
    assert!(v6.host_is_ip());
}

#[test]
fn event_has_the_documented_fields() {
    let v = json(&exchange(Some(200)));
    assert_eq!(v["schema_version"], SCHEMA_VERSION);
    assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["duration_ms"], 1.5);
    assert_eq!(v["request_id"], "req-1");
    assert_eq!(v["outcome"], "success");
    assert_eq!(v["client"]["address"], "10.0.0.7");
    assert_eq!(v["client"]["user_agent"], "Okta SCIM Client 1.0.0");
    assert_eq!(v["client"]["auth_scheme"], "bearer");
    assert_eq!(v["http"]["method"], "GET");
    assert_eq!(v["http"]["path"], "/scim/v2/Users");
    assert_eq!(v["http"]["query"], "filter=userName%20eq%20%22a%22");
    assert_eq!(v["http"]["status"], 200);
    assert!(v["failure"].is_null());
    let id = v["event_id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
}

#[test]
fn token_is_fingerprinted_never_copied() {
    let v = json(&exchange(Some(200)));
    let fp = v["client"]["token_fingerprint"].as_str().unwrap();
    assert_eq!(fp.len(), 16);
    assert_eq!(fp, &fingerprint(b"s3cr3t-token"));
    let text = v.to_string();
    assert!(!text.contains("s3cr3t"));
    assert!(!text.contains("session=abc"));
}

#[test]
fn a_scheme_without_credentials_has_no_fingerprint() {
    let mut ex = exchange(Some(401));
    ex.request
        .headers
        .insert(AUTHORIZATION, HeaderValue::from_static("Bearer"));
    let v = json(&ex);
    assert_eq!(v["client"]["auth_scheme"], "bearer");
    assert!(v["client"]["token_fingerprint"].is_null());
}

#[test]
fn configured_clients_are_named_and_idps_recognised() {
    let mut ctx = EventContext::default();
    let digest: [u8; 32] = Sha256::digest(b"s3cr3t-token").into();
    ctx.clients.push(ClientConfig {
        name: "okta-prod".into(),
        token_sha256: Some(digest),
        cert_subject: None,
        idp: Some("okta".into()),
    });
    let ex = exchange(Some(200));
    let v = serde_json::to_value(&events_for(&ex, &ctx)[0]).unwrap();
    assert_eq!(v["client"]["name"], "okta-prod");
    assert_eq!(v["client"]["idp"], "okta");
    // Unconfigured: the name stays empty and the idp comes from the User-Agent.
    let v = json(&ex);
    assert!(v["client"]["name"].is_null());
    assert_eq!(v["client"]["idp"], "okta");
}

#[test]
fn with_pseudonymisation_the_raw_filter_leaves_the_query() {
    let mut ctx = EventContext::default();
    ctx.scim.pseudonymizer = Some(crate::scim::Pseudonymizer::new(
        b"0123456789abcdef".to_vec(),
    ));
    let ex = exchange(Some(200));
    let v = serde_json::to_value(&events_for(&ex, &ctx)[0]).unwrap();
    assert_eq!(v["http"]["query"], "filter=PSEUDONYMISED");
    assert!(v["scim"]["filter"]
        .as_str()
        .unwrap()
        .contains("hmac-sha256:"));
}

#[test]
fn secret_query_parameters_are_replaced() {
    let mut ex = exchange(Some(200));
    ex.request.path_and_query = "/Users?access_token=abc&count=5&Password=p".into();
    let v = json(&ex);
    assert_eq!(
        v["http"]["query"],
        "access_token=REDACTED&count=5&Password=REDACTED"
    );
}

#[test]
fn status_400_and_above_is_a_failure() {
    assert_eq!(json(&exchange(Some(399)))["outcome"], "success");
    assert_eq!(json(&exchange(Some(404)))["outcome"], "failure");
    assert!(json(&exchange(Some(404)))["failure"].is_null());
}

#[test]
fn missing_response_is_a_downstream_failure() {
    let v = json(&exchange(None));
    assert_eq!(v["outcome"], "failure");
    assert_eq!(v["failure"]["side"], "downstream");
    assert!(v["http"]["status"].is_null());
}

#[test]
fn response_body_error_is_an_upstream_failure() {
    let mut ex = exchange(Some(200));
    if let Some(r) = ex.response.as_mut() {
        r.body.end = BodyEnd::Error("connection reset".into());
    }
    let v = json(&ex);
    assert_eq!(v["outcome"], "failure");
    assert_eq!(v["failure"]["side"], "upstream");
    assert_eq!(v["failure"]["kind"], "response_body_error");
}

/// An exchange with bodies: `request` as captured, `response` as sent (`generated` when
/// scimtap answered itself).
fn with_bodies(
    method: Method,
    path: &str,
    request: &str,
    response: Option<(u16, &str, bool)>,
) -> Exchange {
    let mut ex = exchange(None);
    ex.request.method = method;
    ex.request.path_and_query = path.into();
    if !request.is_empty() {
        ex.request.headers.insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(request.len()),
        );
        let mut c = BodyCapture::empty(BodyEnd::Complete);
        c.record(&bytes::Bytes::copy_from_slice(request.as_bytes()), 1 << 20);
        ex.request_body = c;
    }
    ex.response = response.map(|(status, body, generated)| {
        let mut c = BodyCapture::empty(BodyEnd::Complete);
        c.record(&bytes::Bytes::copy_from_slice(body.as_bytes()), 1 << 20);
        ResponseRecord {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: c,
            generated,
        }
    });
    ex
}

const NOT_FOUND: &str = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"404","detail":"Resource 5171a35d not found"}"#;
const NO_RESULTS: &str = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"Resources":[],"startIndex":1,"itemsPerPage":20}"#;

#[test]
fn deleting_what_is_already_gone_and_lookups_that_find_nothing_are_marked() {
    /// Request, answer, and the outcome and reason expected.
    type Case<'c> = (Method, &'c str, u16, &'c str, &'c str, Option<&'c str>);
    let cases: &[Case<'_>] = &[
        (
            Method::DELETE,
            "/scim/Users/5171a35d",
            404,
            NOT_FOUND,
            "success",
            Some("already_absent"),
        ),
        (
            Method::DELETE,
            "/scim/Groups/g1",
            404,
            NOT_FOUND,
            "success",
            Some("already_absent"),
        ),
        // Not a SCIM error: a gateway's page or a wrong base path, not a missing resource.
        (
            Method::DELETE,
            "/scim/Users/5171a35d",
            404,
            "<html>Not Found</html>",
            "failure",
            None,
        ),
        (
            Method::DELETE,
            "/scim/Users/5171a35d",
            404,
            "",
            "failure",
            None,
        ),
        (
            Method::DELETE,
            "/scim/Users/5171a35d",
            500,
            NOT_FOUND,
            "failure",
            None,
        ),
        (
            Method::DELETE,
            "/scim/Users/5171a35d",
            204,
            "",
            "success",
            None,
        ),
        (
            Method::GET,
            "/scim/Users/5171a35d",
            404,
            NOT_FOUND,
            "success",
            Some("not_found_lookup"),
        ),
        (
            Method::GET,
            "/scim/Users?filter=userName+eq+%22non-existent%20user%22",
            200,
            NO_RESULTS,
            "success",
            Some("not_found_lookup"),
        ),
        (
            Method::GET,
            "/scim/Groups?excludedAttributes=members&filter=displayName+eq+%22g%22",
            200,
            NO_RESULTS,
            "success",
            Some("not_found_lookup"),
        ),
        // An import page that is empty is not a lookup; a lookup that finds one is not empty.
        (
            Method::GET,
            "/scim/Users?startIndex=1&count=100",
            200,
            NO_RESULTS,
            "success",
            None,
        ),
        (
            Method::GET,
            "/scim/Users?filter=userName+eq+%22a%22",
            200,
            r#"{"totalResults":1,"Resources":[{"id":"u1"}]}"#,
            "success",
            None,
        ),
        (
            Method::PATCH,
            "/scim/Users/5171a35d",
            404,
            NOT_FOUND,
            "failure",
            None,
        ),
        (
            Method::PUT,
            "/scim/Users/5171a35d",
            404,
            NOT_FOUND,
            "failure",
            None,
        ),
    ];
    for (method, path, status, body, outcome, reason) in cases {
        let request = if matches!(*method, Method::PATCH | Method::PUT) {
            r#"{"userName":"a"}"#
        } else {
            ""
        };
        let ex = with_bodies(method.clone(), path, request, Some((*status, body, false)));
        let v = json(&ex);
        let what = format!("{method} {path} {status} {body}");
        assert_eq!(v["outcome"], *outcome, "{what}: {v}");
        assert_eq!(v["outcome_reason"], json!(reason), "{what}: {v}");
    }
    // A Bulk DELETE the BulkResponse calls "already gone" is no success when the envelope
    // failed (found by the classify_exchange fuzz target with status 600).
    let bulk = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[{"method":"DELETE","path":"/Users/u1"}]}"#;
    let answer = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkResponse"],"Operations":[{"method":"DELETE","status":"404","response":{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"404"}}]}"#;
    for (status, outcome) in [(200, "success"), (500, "failure"), (600, "failure")] {
        let ex = with_bodies(
            Method::POST,
            "/scim/Bulk",
            bulk,
            Some((status, answer, false)),
        );
        let v = json(&ex);
        assert_eq!(v["outcome"], outcome, "Bulk answered {status}: {v}");
        let reason = (outcome == "success").then_some("already_absent");
        assert_eq!(
            v["outcome_reason"],
            json!(reason),
            "Bulk answered {status}: {v}"
        );
    }
    // A failure of the exchange itself outweighs any reason.
    let mut ex = with_bodies(
        Method::DELETE,
        "/scim/Users/5171a35d",
        "",
        Some((404, NOT_FOUND, false)),
    );
    if let Some(r) = ex.response.as_mut() {
        r.body.end = BodyEnd::Cancelled;
    }
    let v = json(&ex);
    assert_eq!(v["outcome"], "failure");
    assert!(v["outcome_reason"].is_null(), "{v}");
    // The reason sits right after `outcome`.
    let line = String::from_utf8(
        events_for(
            &with_bodies(
                Method::DELETE,
                "/scim/Users/x",
                "",
                Some((404, NOT_FOUND, false)),
            ),
            &EventContext::default(),
        )[0]
        .to_json_line()
        .unwrap(),
    )
    .unwrap();
    assert!(
        line.contains(r#""outcome":"success","outcome_reason":"already_absent","client":"#),
        "{line}"
    );
}

#[test]
fn a_deactivation_the_upstream_never_answered_is_still_a_deactivation() {
    let bodies = [
        // Okta: path-less value object.
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}"#,
        // Entra default: capitalised op, string "False".
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}"#,
        // Entra, path-less value object with the string.
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","value":{"active":"False"}}]}"#,
    ];
    let put = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"u1","userName":"a@example.com","active":false}"#;
    let failures = [
        (502, FailureKind::ConnectRefused, "connection refused"),
        (504, FailureKind::ResponseTimeout, "no response head"),
        (
            502,
            FailureKind::UpstreamClosed,
            "closed before message completed",
        ),
    ];
    let generated = |status: u16, detail: &str| {
        format!(
            r#"{{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"{status}","detail":"scimtap: {detail}"}}"#
        )
    };
    for (status, kind, detail) in failures {
        let body = generated(status, detail);
        let requests = bodies
            .iter()
            .map(|b| (Method::PATCH, *b))
            .chain([(Method::PUT, put)]);
        for (method, request) in requests {
            let mut ex = with_bodies(
                method.clone(),
                "/scim/v2/Users/u1",
                request,
                Some((status, &body, true)),
            );
            ex.recorded_failure = Some(Failure::new(kind, detail.to_owned()));
            let v = json(&ex);
            let what = format!("{method} {request} answered {status} by scimtap");
            assert_eq!(v["http"]["response_generated"], true, "{what}");
            assert_eq!(v["failure"]["side"], "upstream", "{what}");
            assert_eq!(v["outcome"], "failure", "{what}");
            assert_eq!(
                v["scim"]["actions"],
                json!(["user.deactivate"]),
                "{what}: {v}"
            );
            assert_eq!(
                v["scim"]["changes"]["attributes"]
                    .as_array()
                    .map(|a| a.iter().any(|x| x == "active")),
                Some(true),
                "{what}: {v}"
            );
            if method == Method::PATCH {
                assert_eq!(
                    v["scim"]["changes"]["patch_ops"][0]["op"], "replace",
                    "{what}: {v}"
                );
                let shown = &v["scim"]["changes"]["patch_ops"][0]["value"];
                assert!(
                    shown == &json!(false) || shown == &json!({"active": false}),
                    "{what}: {v}"
                );
            }
            assert!(v["scim"]["parse_error"].is_null(), "{what}: {v}");
            assert!(v["scim"]["error"].is_null(), "{what}: {v}");
        }
    }
}
