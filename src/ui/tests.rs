use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::feed::{Feed, Filter};
use super::{handle, Ui};
use crate::clock::Timestamp;
use crate::telemetry::Metrics;

const TOKEN: &str = "correct-horse-battery-staple";

fn event(seq: u32, action: &str, outcome: &str, user: &str) -> Value {
    json!({
        "event_id": format!("019aa3a3-2a00-7b20-9d3e-{seq:012}"),
        "timestamp": "2026-11-22T09:00:00.000Z",
        "request_id": format!("r{seq}"),
        "outcome": outcome,
        "client": {"address": "10.0.0.7", "name": "okta-prod", "idp": "okta", "user_agent": "Okta SCIM Client 1.0.0"},
        "route": "crm",
        "http": {"method": "PATCH", "path": format!("/scim/v2/Users/id-{user}"), "status": if outcome == "success" { 200 } else { 502 }},
        "scim": {
            "resource_type": "User", "operation": "patch",
            "target": {"id": format!("id-{user}"), "user_name": user, "external_id": null, "display_name": null},
            "actions": [action],
            "changes": {"requested": {"user_name": null}},
        },
        "failure": if outcome == "failure" { json!({"kind": "connect_refused", "side": "upstream"}) } else { Value::Null },
    })
}

fn gap(status: &str, requested: &str, user: &str) -> Value {
    let mut e = event(
        90,
        &format!("deprovision.{status}"),
        if status == "gap" {
            "failure"
        } else {
            "success"
        },
        user,
    );
    e["deprovision"] = json!({"status": status, "requested_action": "user.deactivate",
        "requested_event_id": requested, "requested_at": "2026-11-22T08:59:00.000Z",
        "attempts": 1, "last_status": 502, "last_failure": "connect_refused"});
    e
}

/// A shutdown signal that never fires (its sender is kept for the whole test run: a dropped
/// sender means "stop").
fn running() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    rx
}

fn ui() -> Arc<Ui> {
    Ui::new(Feed::new(3), TOKEN.as_bytes(), Metrics::new())
}

async fn get(
    ui: &Arc<Ui>,
    path: &str,
    auth: Option<(&str, String)>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::get(path);
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    let response = handle(req.body(Full::new(Bytes::new())).unwrap(), ui, running()).await;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn bearer() -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {TOKEN}")))
}

#[test]
fn filters_match_by_action_prefix_outcome_client_route_and_part_of_a_user_name() {
    let e = event(1, "user.deactivate", "failure", "Ann@Example.com");
    let f = |q: &str| Filter::from_query(Some(q)).matches(&e);
    assert!(f(""));
    assert!(f("action=user.deactivate") && f("action=user.") && !f("action=group."));
    assert!(f("outcome=failure") && !f("outcome=success"));
    assert!(f("client=OKTA") && f("client=10.0.0") && !f("client=entra"));
    assert!(f("route=CRM") && f("route=cr") && !f("route=hr"));
    assert!(f("user=ann%40example") && f("user=id-Ann") && !f("user=bob"));
    assert!(f("action=user.&outcome=failure&client=okta&user=ann"));
    let filter = Filter::from_query(Some("user=a+b&outcome=failure&other=1"));
    assert_eq!(filter.to_query(), "outcome=failure&user=a+b");
}

#[test]
fn the_feed_keeps_the_newest_events_and_follows_gaps_and_alerts() {
    let feed = Feed::new(3);
    for n in 0..5 {
        feed.push(event(n, "user.update", "success", &format!("u{n}")));
    }
    let snapshot = feed.snapshot(Timestamp::parse_rfc3339("2026-11-22T09:30:00Z").unwrap());
    let kept: Vec<u64> = snapshot.recent.iter().map(|i| i.seq).collect();
    assert_eq!(kept, [5, 4, 3]);
    assert_eq!(snapshot.hours.len(), super::feed::CHART_HOURS as usize);
    let this_hour = snapshot.hours.last().unwrap().1;
    assert_eq!(
        (this_hour.events, this_hour.actions, this_hour.failures),
        (5, 5, 0)
    );

    feed.push(gap("gap", "req-1", "ann"));
    feed.push(gap("gap", "req-2", "bob"));
    feed.push(gap("closed", "req-1", "ann"));
    let gaps = feed.snapshot(Timestamp::now()).gaps;
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].event["scim"]["target"]["user_name"], "bob");

    let mut firing = event(7, "alert.firing", "failure", "x");
    firing["alert"] = json!({"rule": "mass-deactivation", "kind": "threshold", "status": "firing",
        "episode_id": "ep-1", "since": "2026-11-22T09:00:00.000Z", "summary": "12 deactivations in 5 min"});
    feed.push(firing.clone());
    assert_eq!(feed.counts().alerts, 1);
    firing["scim"]["actions"] = json!(["alert.resolved"]);
    feed.push(firing);
    assert_eq!(feed.counts().alerts, 0);
    assert_eq!(feed.counts().gaps, 1);
    assert_eq!(
        feed.since(8).iter().map(|i| i.seq).collect::<Vec<_>>(),
        [9, 10]
    );
}

#[tokio::test]
async fn without_a_token_every_page_answers_401_with_www_authenticate() {
    let ui = ui();
    for path in [
        "/",
        "/user?u=ann",
        "/gaps",
        "/alerts",
        "/activity",
        "/events/stream",
        "/nope",
    ] {
        for auth in [
            None,
            Some(("authorization", "Bearer wrong-token-wrong-token".to_owned())),
            Some(("authorization", format!("Basic {TOKEN}"))),
            Some(("cookie", format!("scimtap_ui={TOKEN}"))),
        ] {
            let (status, headers, body) = get(&ui, path, auth.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {auth:?}");
            assert!(headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
            assert!(!body.contains(TOKEN));
        }
    }
    let (status, _, body) = get(&ui, "/login", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("name=\"token\""));
}

#[tokio::test]
async fn the_token_opens_the_pages_and_login_trades_it_for_a_session_cookie() {
    let ui = ui();
    let (status, headers, _) = get(&ui, "/", bearer()).await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");

    let post = |form: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form.to_owned())))
            .unwrap()
    };
    let wrong = handle(post("token=nope"), &ui, running()).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());
    let signed_in = handle(post(&format!("token={TOKEN}")), &ui, running()).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let cookie = signed_in.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(TOKEN),
        "the cookie is not the token: {cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let (status, _, _) = get(
        &ui,
        "/gaps",
        Some(("cookie", format!("theme=dark; {pair}"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_script_in_a_user_name_is_shown_as_text() {
    let ui = ui();
    let evil = "<script>alert(1)</script>\"'&";
    ui.feed.push(event(1, "user.create", "success", evil));
    ui.feed.push(gap("gap", "req-9", evil));
    for path in [
        "/",
        "/gaps",
        "/user?u=id-%3Cscript%3Ealert(1)%3C%2Fscript%3E%22'%26",
        "/activity",
    ] {
        let (status, _, body) = get(&ui, path, bearer()).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!body.contains("<script>alert"), "{path}: {body}");
        if path != "/activity" {
            assert!(
                body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{path}: {body}"
            );
        }
        // Only the page's own script is a script.
        assert!(body.matches("<script").count() <= 1, "{path}");
    }
}

#[tokio::test]
async fn the_events_page_filters_on_the_server_and_the_timeline_tells_one_story() {
    let ui = ui();
    ui.feed.push(event(1, "user.update", "success", "ann"));
    ui.feed.push(event(2, "user.deactivate", "failure", "bob"));
    ui.feed.push(event(3, "user.deactivate", "success", "ann"));
    let (_, _, all) = get(&ui, "/", bearer()).await;
    assert_eq!(all.matches("data-event-id=").count(), 3, "{all}");
    let (_, _, failed) = get(&ui, "/?outcome=failure", bearer()).await;
    assert!(
        failed.contains(">bob<") && !failed.contains(">ann<"),
        "{failed}"
    );
    let (_, _, timeline) = get(&ui, "/user?u=ann", bearer()).await;
    assert!(
        timeline.contains("user.deactivate") && timeline.contains("deactivated"),
        "{timeline}"
    );
    assert!(!timeline.contains(">bob<"), "{timeline}");
}

#[tokio::test]
async fn the_stream_sends_new_matching_rows_and_the_gap_count() {
    let ui = ui();
    ui.feed.push(event(1, "user.update", "success", "before"));
    let (status, headers, _) = {
        // The body never ends: read the head only.
        let req = Request::get("/events/stream?user=ann")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = handle(req, &ui, running()).await;
        let (parts, body) = response.into_parts();
        let ui = ui.clone();
        let reader = tokio::spawn(async move {
            let mut body = body;
            let mut seen = String::new();
            while !(seen.contains("event: row") && seen.contains("\"gaps\":1")) {
                match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        seen.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()))
                    }
                    _ => break,
                }
            }
            seen
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        ui.feed.push(event(2, "user.update", "success", "bob"));
        ui.feed.push(gap("gap", "req-3", "ann"));
        let seen = reader.await.unwrap();
        assert!(seen.contains("id: 3\nevent: row\ndata: <tr"), "{seen}");
        assert!(
            seen.contains("deprovision.gap")
                && !seen.contains(">bob<")
                && !seen.contains(">before<"),
            "{seen}"
        );
        assert!(
            seen.contains("event: counts\ndata: {\"gaps\":1,\"alerts\":0}"),
            "{seen}"
        );
        (parts.status, parts.headers, seen)
    };
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/event-stream; charset=utf-8"
    );
}

#[tokio::test]
async fn a_reconnecting_stream_catches_up_from_last_event_id() {
    let ui = ui();
    for n in 1..=3 {
        ui.feed
            .push(event(n, "user.update", "success", &format!("u{n}")));
    }
    let req = Request::get("/events/stream")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header("last-event-id", "1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = handle(req, &ui, running()).await.into_body();
    let mut seen = String::new();
    while !seen.contains("id: 3\n") {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a frame in time")
            .expect("the stream is open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()));
    }
    assert!(
        seen.contains("id: 2\n") && !seen.contains("id: 1\n"),
        "{seen}"
    );
}
