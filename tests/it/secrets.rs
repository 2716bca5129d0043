//! Canary: random secret values in every position a secret can take, sent through a real
//! scimtap with a file sink, a stdout sink and redacted bodies in events. None of them may
//! appear in any sink output, scimtap's stderr, or /metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::*;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

/// A fresh value nobody else would write.
fn canary(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "cnry{label}{:x}{:x}",
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_in_every_position_reach_no_output() {
    // The upstream echoes the request body back (so response bodies carry the secrets too)
    // and sets a cookie.
    let cookie_secret = canary("setcookie");
    let set_cookie = format!("sid={cookie_secret}; HttpOnly");
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let set_cookie = set_cookie.clone();
        async move {
            let status = if req.method() == http::Method::POST {
                201
            } else {
                200
            };
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Response::builder()
                .status(status)
                .header("content-type", "application/scim+json")
                .header("set-cookie", set_cookie)
                .body(full(body))
                .unwrap()
        }
    })
    .await;
    let (proxy, stdout) = Proxy::start_capturing_stdout(
        ProxyConfig::new(upstream.url())
            .top("[capture]\ninclude_bodies = \"redacted\"\n[redact]\nattributes = [\"ssn\"]\nquery_params = [\"sig\"]")
            .sinks(&format!(
                "[[sinks]]\ntype = \"file\"\npath = \"{}\"\n[[sinks]]\ntype = \"stdout\"\n",
                "AUDIT_PLACEHOLDER"
            )),
    );

    let mut secrets = vec![cookie_secret];
    let mut s = |label: &str| {
        let v = canary(label);
        secrets.push(v.clone());
        v
    };
    let (bearer, proxy_auth, cookie) = (s("bearer"), s("proxyauth"), s("cookie"));
    let (pw_post, pw_put, pw_patch_path, pw_patch_urn, pw_patch_obj, pw_nested) = (
        s("pwpost"),
        s("pwput"),
        s("pwpath"),
        s("pwurn"),
        s("pwobj"),
        s("pwnested"),
    );
    let (pw_bulk_data, pw_bulk_patch, ssn, token_q, sig_q, pw_case) = (
        s("pwbulk"),
        s("pwbulkpatch"),
        s("ssn"),
        s("tokenq"),
        s("sigq"),
        s("pwcase"),
    );

    let patch = |ops: serde_json::Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
    let requests: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        (
            "POST",
            "/scim/v2/Users".into(),
            Some(json!({"userName": "canary", "password": pw_post, "ssn": ssn})),
        ),
        (
            "PUT",
            "/scim/v2/Users/u1".into(),
            Some(json!({"id": "u1", "userName": "canary", "PassWord": pw_put, "active": true})),
        ),
        (
            "PATCH",
            "/scim/v2/Users/u1".into(),
            Some(patch(json!([
                {"op": "replace", "path": "password", "value": pw_patch_path},
                {"op": "Replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:password", "value": pw_patch_urn},
                {"op": "replace", "value": {"password": pw_patch_obj, "name": {"password": pw_nested}}},
                {"op": "replace", "path": "PASSWORD", "value": pw_case}
            ]))),
        ),
        (
            "POST",
            "/scim/v2/Bulk".into(),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                "Operations": [
                    {"method": "POST", "path": "/Users", "bulkId": "b1", "data": {"userName": "bulk", "password": pw_bulk_data}},
                    {"method": "PATCH", "path": "/Users/u2", "data": patch(json!([{"op": "replace", "path": "password", "value": pw_bulk_patch}]))}
                ]
            })),
        ),
        (
            "GET",
            format!(
                "/scim/v2/Users?access_token={token_q}&sig={sig_q}&filter=userName%20eq%20%22a%22"
            ),
            None,
        ),
    ];
    let client = http1_client();
    for (method, path, body) in &requests {
        let req = Request::builder()
            .method(*method)
            .uri(proxy.url(path))
            .header("authorization", format!("Bearer {bearer}"))
            .header("proxy-authorization", format!("Basic {proxy_auth}"))
            .header("cookie", format!("session={cookie}"))
            .header("content-type", "application/scim+json")
            .body(body.as_ref().map_or_else(empty, |b| full(b.to_string())))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert!(
            resp.status().is_success(),
            "{method} {path}: {}",
            resp.status()
        );
        resp.into_body().collect().await.unwrap();
    }
    // 4 plain requests plus 2 Bulk operations.
    let events = proxy.wait_for_events(requests.len() - 1 + 2).await;
    assert!(
        events.iter().any(|e| e["http"]["request_body"].is_object()),
        "bodies are in the events"
    );
    let (_, metrics) = proxy.admin_get("/metrics").await;
    let file = std::fs::read_to_string(&proxy.audit).unwrap();
    // Let the stdout sink catch up with the file sink.
    let deadline = std::time::Instant::now() + WAIT;
    while stdout.lock().unwrap().lines().count() < events.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "stdout sink did not write every event"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let outputs = [
        ("file sink", file),
        ("stdout sink", stdout.lock().unwrap().clone()),
        ("stderr", proxy.log.lock().unwrap().join("\n")),
        ("/metrics", metrics),
    ];
    for (where_, text) in &outputs {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} leaked into {where_}:\n{text}"
            );
        }
    }
    // And the redaction left something useful behind.
    assert!(outputs[0].1.contains("[REDACTED]"));
    assert!(outputs[0].1.contains("access_token=REDACTED"));
}
