//! `[[routes]]`: several SCIM services behind one scimtap. Two real scim2-servers behind one
//! scimtap, by host and by path prefix, each route with its own clients, shadow state and
//! alert windows; and a reload that adds a route while a long response streams on another.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::scim_server::ScimServer;
use crate::support::upstream::USER;
use crate::support::wait::until;
use crate::support::*;

const TOKEN_A: &str = "routes-token-idp-a-4c1d";
const TOKEN_B: &str = "routes-token-idp-b-9e27";
/// A bearer token no `[[clients]]` entry has.
const TOKEN_NOBODY: &str = "routes-token-nobody-03ab";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SCIM_ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// Sends one request through `proxy` with `Host: host` (the default authority when `None`),
/// `Authorization: Bearer token` and `x-request-id: id`; returns the status and the JSON body
/// (`Null` when the body is not JSON).
async fn send(
    proxy: &Proxy,
    host: Option<&str>,
    method: &str,
    path: &str,
    token: &str,
    id: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(proxy.url(path))
        .header("x-request-id", id)
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "application/scim+json");
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/scim+json");
            full(b.to_string())
        }
        None => empty(),
    };
    let resp = roundtrip(&http1_client(), req.body(body).unwrap()).await;
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_slice(resp.body()).unwrap_or(Value::Null),
    )
}

/// `GET path` straight to the scim2-server on `port` (not through scimtap).
async fn direct_get(port: u16, path: &str) -> (u16, Value) {
    let req = Request::get(format!("http://127.0.0.1:{port}{path}"))
        .header("accept", "application/scim+json")
        .body(empty())
        .unwrap();
    let resp = roundtrip(&http1_client(), req).await;
    (
        resp.status().as_u16(),
        serde_json::from_slice(resp.body()).unwrap_or(Value::Null),
    )
}

/// Whether the scim2-server on `port` has a user with `id`, and how many named `user_name`.
async fn server_knows(port: u16, id: &str, user_name: &str) -> (bool, u64) {
    let filter = format!(
        "/v2/Users?filter=userName%20eq%20%22{}%22",
        user_name.replace('@', "%40")
    );
    let (status, list) = direct_get(port, &filter).await;
    assert_eq!(status, 200, "{list}");
    (
        id_found(port, id).await,
        list["totalResults"].as_u64().unwrap(),
    )
}

/// Whether the scim2-server on `port` answers `GET /v2/Users/{id}` with 200 (else 404).
async fn id_found(port: u16, id: &str) -> bool {
    match direct_get(port, &format!("/v2/Users/{id}")).await {
        (200, _) => true,
        (404, _) => false,
        (status, body) => panic!("GET /v2/Users/{id} on {port}: {status} {body}"),
    }
}

fn new_user(user_name: &str, title: &str) -> Option<Value> {
    Some(json!({
        "schemas": [USER],
        "userName": user_name,
        "title": title,
        "active": true,
    }))
}

fn replace_title(title: &str) -> Option<Value> {
    Some(json!({
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "title", "value": title}],
    }))
}

/// The `{before, after}` of `attribute` in the event's `scim.state.diff`.
fn diff_of(event: &Value, attribute: &str) -> (Value, Value) {
    let d = event["scim"]["state"]["diff"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["attribute"] == attribute))
        .unwrap_or_else(|| panic!("no {attribute} in scim.state.diff: {event:#}"));
    (d["before"].clone(), d["after"].clone())
}

fn filled_user_name(event: &Value) -> bool {
    event["scim"]["state"]["target_filled"]
        .as_array()
        .is_some_and(|f| f.contains(&json!("user_name")))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_real_scim_servers_behind_one_scimtap_by_host_and_by_path_prefix() {
    let server_a = ScimServer::start().await;
    let server_b = ScimServer::start().await;
    let (pa, pb) = (server_a.port, server_b.port);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("state.db");

    // Server A behind a host route and a path route sharing the state namespace "ns-a";
    // server B likewise ("ns-b"). Each route admits only its own IdP's token. One alert rule
    // watching every route, each with its own windows.
    let routes = format!(
        r#"
[[routes]]
name = "a-host"
host = "a.example.test"
clients = ["idp-a"]
state_namespace = "ns-a"
[routes.upstream]
url = "http://127.0.0.1:{pa}/v2"

[[routes]]
name = "b-host"
host = "B.Example.Test"
clients = ["idp-b"]
state_namespace = "ns-b"
[routes.upstream]
url = "http://127.0.0.1:{pb}/v2"

[[routes]]
name = "a-path"
path_prefix = "/appa"
clients = ["idp-a"]
state_namespace = "ns-a"
[routes.upstream]
url = "http://127.0.0.1:{pa}/v2"

[[routes]]
name = "b-path"
path_prefix = "/appb/"
clients = ["idp-b"]
state_namespace = "ns-b"
[routes.upstream]
url = "http://127.0.0.1:{pb}/v2"
"#
    );
    let top = format!(
        r#"[state]
path = "{}"

[[clients]]
name = "idp-a"
idp = "okta"
token_sha256 = "{}"

[[clients]]
name = "idp-b"
idp = "entra"
token_sha256 = "{}"

[[alerts]]
name = "burst"
kind = "status_burst"
window_secs = 60
threshold = 3
statuses = [401]
"#,
        state.display(),
        sha256_hex(TOKEN_A.as_bytes()),
        sha256_hex(TOKEN_B.as_bytes()),
    );
    let mut proxy = Proxy::start(
        ProxyConfig::new("http://unused.invalid")
            .top(&top)
            .routes(&routes),
    );
    let a_host = Some("a.example.test");
    // Any case, any port: still route b-host.
    let b_host = Some("b.EXAMPLE.test:8443");

    // --- A user created through route A lands on server A only (and likewise for B). ---
    let (status, ana) = send(
        &proxy,
        a_host,
        "POST",
        "/Users",
        TOKEN_A,
        "create-ana",
        new_user("ana@example.com", "A-one"),
    )
    .await;
    assert_eq!(status, 201, "{ana}\nlog:\n{}", proxy.log_tail());
    let ana_id = ana["id"]
        .as_str()
        .expect("created user has an id")
        .to_owned();
    assert_eq!(
        server_knows(pa, &ana_id, "ana@example.com").await,
        (true, 1)
    );
    assert_eq!(
        server_knows(pb, &ana_id, "ana@example.com").await,
        (false, 0)
    );

    // By path prefix: the prefix is removed before forwarding (scim2-server only serves
    // /v2/Users; /v2/appb/Users would be a 404), so the location it built has no /appb.
    let (status, bo) = send(
        &proxy,
        None,
        "POST",
        "/appb/Users",
        TOKEN_B,
        "create-bo",
        new_user("bo@example.com", "B-one"),
    )
    .await;
    assert_eq!(status, 201, "{bo}\nlog:\n{}", proxy.log_tail());
    let bo_id = bo["id"]
        .as_str()
        .expect("created user has an id")
        .to_owned();
    let location = bo["meta"]["location"].as_str().unwrap_or_default();
    assert!(
        location.contains("/v2/Users/") && !location.contains("appb"),
        "{bo}"
    );
    assert_eq!(server_knows(pb, &bo_id, "bo@example.com").await, (true, 1));
    assert_eq!(server_knows(pa, &bo_id, "bo@example.com").await, (false, 0));

    // The same userName on both services: two different resources, each on its server (one
    // server would refuse the second with 409).
    let (status, sam_a) = send(
        &proxy,
        None,
        "POST",
        "/appa/Users",
        TOKEN_A,
        "create-sam-a",
        new_user("sam@example.com", "A-title"),
    )
    .await;
    assert_eq!(status, 201, "{sam_a}");
    let (status, sam_b) = send(
        &proxy,
        b_host,
        "POST",
        "/Users",
        TOKEN_B,
        "create-sam-b",
        new_user("sam@example.com", "B-title"),
    )
    .await;
    assert_eq!(status, 201, "{sam_b}");
    let (sam_a_id, sam_b_id) = (
        sam_a["id"].as_str().unwrap().to_owned(),
        sam_b["id"].as_str().unwrap().to_owned(),
    );
    assert_ne!(sam_a_id, sam_b_id);
    assert_eq!(
        server_knows(pa, &sam_a_id, "sam@example.com").await,
        (true, 1)
    );
    assert_eq!(
        server_knows(pb, &sam_b_id, "sam@example.com").await,
        (true, 1)
    );
    assert!(!id_found(pa, &sam_b_id).await && !id_found(pb, &sam_a_id).await);

    for (id, route, port, path, client) in [
        ("create-ana", "a-host", pa, "/Users", "idp-a"),
        ("create-bo", "b-path", pb, "/appb/Users", "idp-b"),
        ("create-sam-a", "a-path", pa, "/appa/Users", "idp-a"),
        ("create-sam-b", "b-host", pb, "/Users", "idp-b"),
    ] {
        let e = proxy.event_for(id).await;
        assert_eq!(e["route"], route, "{e:#}");
        assert_eq!(e["upstream"]["port"], port, "{e:#}");
        assert_eq!(e["http"]["path"], path, "{e:#}");
        assert_eq!(e["http"]["status"], 201, "{e:#}");
        assert_eq!(e["outcome"], "success", "{e:#}");
        assert_eq!(e["client"]["name"], client, "{e:#}");
        assert_eq!(e["scim"]["actions"], json!(["user.create"]), "{e:#}");
    }

    // --- Shadow state, per namespace. ---
    // ana was created through a-host; a PATCH by id through a-path (the same namespace)
    // names her from state.
    let (status, _) = send(
        &proxy,
        None,
        "PATCH",
        &format!("/appa/Users/{ana_id}"),
        TOKEN_A,
        "patch-ana",
        replace_title("A-two"),
    )
    .await;
    assert_eq!(status, 204, "scim2-server answers a PATCH with 204");
    let e = proxy.event_for("patch-ana").await;
    assert_eq!(e["route"], "a-path", "{e:#}");
    assert_eq!(e["scim"]["target"]["user_name"], "ana@example.com", "{e:#}");
    assert_eq!(e["scim"]["state"]["known"], true, "{e:#}");
    assert!(filled_user_name(&e), "{e:#}");

    // The same userName on both sides: each PATCH is diffed against its own service's user.
    let (status, _) = send(
        &proxy,
        a_host,
        "PATCH",
        &format!("/Users/{sam_a_id}"),
        TOKEN_A,
        "patch-sam-a",
        replace_title("A-title-2"),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = send(
        &proxy,
        None,
        "PATCH",
        &format!("/appb/Users/{sam_b_id}"),
        TOKEN_B,
        "patch-sam-b",
        replace_title("B-title-2"),
    )
    .await;
    assert_eq!(status, 204);
    let e = proxy.event_for("patch-sam-a").await;
    assert_eq!(e["route"], "a-host", "{e:#}");
    assert_eq!(e["scim"]["target"]["user_name"], "sam@example.com", "{e:#}");
    assert_eq!(diff_of(&e, "title"), (json!("A-title"), json!("A-title-2")));
    let e = proxy.event_for("patch-sam-b").await;
    assert_eq!(e["route"], "b-path", "{e:#}");
    assert_eq!(e["scim"]["target"]["user_name"], "sam@example.com", "{e:#}");
    assert_eq!(diff_of(&e, "title"), (json!("B-title"), json!("B-title-2")));

    // A DELETE through route A of an id only route B knows: server A has no such user, and
    // the event does not borrow B's userName from B's state...
    let (status, _) = send(
        &proxy,
        a_host,
        "DELETE",
        &format!("/Users/{bo_id}"),
        TOKEN_A,
        "delete-bo-on-a",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let e = proxy.event_for("delete-bo-on-a").await;
    assert_eq!(e["route"], "a-host", "{e:#}");
    assert_eq!(e["upstream"]["port"], pa, "{e:#}");
    assert!(
        e["scim"]["target"]["user_name"].is_null(),
        "B's userName leaked into route A: {e:#}"
    );
    assert_eq!(e["scim"]["state"]["known"], false, "{e:#}");
    assert!(!filled_user_name(&e), "{e:#}");
    // ...nor forgets B's user (a 404 DELETE means "already absent" in A's namespace only).
    assert!(id_found(pb, &bo_id).await);
    let (status, _) = send(
        &proxy,
        b_host,
        "PATCH",
        &format!("/Users/{bo_id}"),
        TOKEN_B,
        "patch-bo",
        replace_title("B-two"),
    )
    .await;
    assert_eq!(status, 204);
    let e = proxy.event_for("patch-bo").await;
    assert_eq!(e["route"], "b-host", "{e:#}");
    assert_eq!(e["scim"]["target"]["user_name"], "bo@example.com", "{e:#}");
    assert_eq!(e["scim"]["state"]["known"], true, "{e:#}");
    assert_eq!(diff_of(&e, "title"), (json!("B-one"), json!("B-two")));

    // --- A token admitted on route B is refused on route A, and the reverse. ---
    let (status, body) = send(
        &proxy,
        None,
        "POST",
        "/appa/Users",
        TOKEN_B,
        "b-token-on-a",
        new_user("intruder@example.com", "x"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = send(
        &proxy,
        None,
        "GET",
        "/appb/Users",
        TOKEN_A,
        "a-token-on-b",
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    for (id, route, port) in [
        ("b-token-on-a", "a-path", pa),
        ("a-token-on-b", "b-path", pb),
    ] {
        let e = proxy.event_for(id).await;
        assert_eq!(e["route"], route, "{e:#}");
        assert_eq!(e["upstream"]["port"], port, "{e:#}");
        assert_eq!(e["http"]["status"], 401, "{e:#}");
        assert_eq!(e["outcome"], "failure", "{e:#}");
        assert_eq!(e["failure"]["kind"], "client_not_allowed", "{e:#}");
    }
    assert_eq!(
        server_knows(pa, "no-such-id", "intruder@example.com").await,
        (false, 0),
        "the refused create was forwarded"
    );

    // --- A request no route takes: 404 with a SCIM error, an event without a route. ---
    for (id, host, path) in [
        ("unmatched-host", Some("c.example.test"), "/Users"),
        ("unmatched-path", None, "/Users"),
        // A prefix matches at a segment boundary only.
        ("unmatched-segment", None, "/appax/Users"),
        ("unmatched-subdomain", Some("x.a.example.test"), "/Users"),
    ] {
        let (status, body) = send(&proxy, host, "GET", path, TOKEN_A, id, None).await;
        assert_eq!(status, 404, "{id}: {body}");
        assert!(
            body["schemas"]
                .as_array()
                .is_some_and(|s| s.contains(&json!(SCIM_ERROR))),
            "{id}: not a SCIM error: {body}"
        );
        let e = proxy.event_for(id).await;
        assert!(e.get("route").is_some_and(Value::is_null), "{id}: {e:#}");
        assert_eq!(e["failure"]["kind"], "no_route", "{id}: {e:#}");
        assert_eq!(e["http"]["status"], 404, "{id}: {e:#}");
        assert_eq!(e["outcome"], "failure", "{id}: {e:#}");
    }

    // --- Alert windows are per route. ---
    // Two 401s on a-host and two on b-host: four in the window, but below 3 on each route.
    for (i, host) in [a_host, b_host, a_host, b_host].into_iter().enumerate() {
        let id = format!("probe-{i}");
        let (status, _) = send(&proxy, host, "GET", "/Users", TOKEN_NOBODY, &id, None).await;
        assert_eq!(status, 401);
    }
    // The third on a-host fires, on a-host.
    let (status, _) = send(
        &proxy,
        a_host,
        "GET",
        "/Users",
        TOKEN_NOBODY,
        "probe-4",
        None,
    )
    .await;
    assert_eq!(status, 401);
    let firing = until(
        "the burst alert firing",
        WAIT,
        Duration::from_millis(50),
        async || {
            let events = proxy.events();
            match events.iter().find(|e| e["alert"]["status"] == "firing") {
                Some(a) => Ok(a.clone()),
                None => Err(format!("{events:#?}\nlog:\n{}", proxy.log_tail())),
            }
        },
    )
    .await;
    let last = proxy.event_for("probe-4").await;
    assert_eq!(
        firing["scim"]["actions"],
        json!(["alert.firing"]),
        "{firing:#}"
    );
    assert_eq!(firing["alert"]["rule"], "burst", "{firing:#}");
    assert_eq!(firing["route"], "a-host", "{firing:#}");
    assert_eq!(firing["alert"]["value"], 3.0, "{firing:#}");
    assert_eq!(
        firing["alert"]["last_event_id"], last["event_id"],
        "fired by probe-4: {firing:#}"
    );
    for i in 0..5 {
        let e = proxy.event_for(&format!("probe-{i}")).await;
        let route = if i % 2 == 0 { "a-host" } else { "b-host" };
        assert_eq!(e["route"], route, "{e:#}");
        assert_eq!(e["failure"]["kind"], "client_not_allowed", "{e:#}");
    }

    // After a clean stop nothing more can come: exactly that one alert.
    assert_eq!(proxy.stop(), 0, "{}", proxy.log_tail());
    let events = proxy.events();
    let alerts: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("alert").is_some_and(|a| !a.is_null()))
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    // Every event names its route (a string, or null for the unrouted ones).
    for e in &events {
        assert!(
            e.get("route").is_some_and(|r| r.is_string() || r.is_null()),
            "{e:#}"
        );
    }
    // The bearer tokens never reach the trail.
    let trail = std::fs::read_to_string(proxy.audit_path()).unwrap();
    for token in [TOKEN_A, TOKEN_B, TOKEN_NOBODY] {
        assert!(!trail.contains(token));
    }

    // `state rebuild` puts each event back into its route's namespace: ana (A) in ns-a only,
    // bo (B) in ns-b only, and each "sam" in her own server's namespace.
    let rebuilt = state_dir.path().join("rebuilt.db");
    let out = crate::support::process::run(
        std::process::Command::new(crate::support::process::scimtap_bin())
            .arg("--config")
            .arg(proxy.dir.path().join("proxy.toml"))
            .args(["state", "rebuild", "--state-file"])
            .arg(&rebuilt)
            .arg(proxy.audit_path()),
    );
    assert!(
        out.status.success(),
        "{}",
        crate::support::process::report(&out)
    );
    let mut ns_a = scimtap::state::Store::open(&rebuilt, "ns-a").unwrap();
    let mut ns_b = scimtap::state::Store::open(&rebuilt, "ns-b").unwrap();
    let known = |store: &mut scimtap::state::Store, id: &str| {
        store.get("User", id).unwrap().and_then(|r| r.user_name)
    };
    assert_eq!(
        known(&mut ns_a, &ana_id).as_deref(),
        Some("ana@example.com")
    );
    assert_eq!(known(&mut ns_b, &ana_id), None);
    assert_eq!(known(&mut ns_b, &bo_id).as_deref(), Some("bo@example.com"));
    assert_eq!(known(&mut ns_a, &bo_id), None);
    assert!(known(&mut ns_a, &sam_a_id).is_some() && known(&mut ns_b, &sam_a_id).is_none());
    assert!(known(&mut ns_b, &sam_b_id).is_some() && known(&mut ns_a, &sam_b_id).is_none());

    // `trace --route` reads that route's state: ana is known to a-path's namespace only.
    let trace = |route: &str| {
        crate::support::process::run(
            std::process::Command::new(crate::support::process::scimtap_bin())
                .arg("--config")
                .arg(proxy.dir.path().join("proxy.toml"))
                .args([
                    "trace",
                    "--json",
                    "--route",
                    route,
                    "--user",
                    &ana_id,
                    "--state-file",
                ])
                .arg(&state),
        )
    };
    let found = trace("a-path");
    assert_eq!(
        found.status.code(),
        Some(0),
        "{}",
        crate::support::process::report(&found)
    );
    assert!(String::from_utf8_lossy(&found.stdout).contains("ana@example.com"));
    let other = trace("b-host");
    assert_eq!(
        other.status.code(),
        Some(1),
        "{}",
        crate::support::process::report(&other)
    );
    let unknown = trace("nope");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no route named nope"));
}

const CHUNK: usize = 4096;
const CHUNKS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_route_while_a_long_stream_on_another_route_finishes() {
    // "slow" streams CHUNKS chunks 100 ms apart; half way it waits for the test's go, so the
    // reload certainly happens while the response is in flight.
    let expected = Bytes::from(pattern(CHUNK * CHUNKS, 0x5eed));
    let go = Arc::new(tokio::sync::Notify::new());
    let slow = {
        let (expected, go) = (expected.clone(), go.clone());
        Upstream::start(move |_req: Request<Incoming>| {
            let (expected, go) = (expected.clone(), go.clone());
            async move {
                let (tx, body) = ChannelBody::pair();
                tokio::spawn(async move {
                    for i in 0..CHUNKS {
                        if i == CHUNKS / 2 {
                            go.notified().await;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if tx
                            .send(expected.slice(i * CHUNK..(i + 1) * CHUNK))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
                Response::builder()
                    .status(200)
                    .header("content-type", "application/octet-stream")
                    .body(body)
                    .unwrap()
            }
        })
        .await
    };
    let new = Upstream::start(|req: Request<Incoming>| async move {
        let answer = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 0,
            "Resources": [],
            "seen_path": req.uri().path(),
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/scim+json")
            .body(full(answer.to_string()))
            .unwrap()
    })
    .await;

    let slow_route = |extra: &str| {
        format!(
            "[[routes]]\nname = \"slow\"\npath_prefix = \"/slow\"\n[routes.upstream]\nurl = \"{}/scim/v2\"\n{extra}\n",
            slow.url()
        )
    };
    let config = ProxyConfig::new("http://unused.invalid").routes(&slow_route(""));
    let proxy = Proxy::start(config.clone());
    let config_path = proxy.dir.path().join("proxy.toml");

    // Before the reload, /new is no route's.
    let (status, body) = send(&proxy, None, "GET", "/new/Users", "t", "new-before", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        proxy.event_for("new-before").await["failure"]["kind"],
        "no_route"
    );

    // The long response starts, and half of it arrives.
    let req = Request::get(proxy.url("/slow/Export"))
        .header("x-request-id", "slow-stream")
        .body(empty())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, http1_client().request(req))
        .await
        .expect("the slow response head within WAIT")
        .expect("the slow request");
    assert_eq!(resp.status(), 200);
    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut body = resp.into_body();
            let mut out = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.expect("the slow body");
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(data);
                    received.fetch_add(data.len(), Ordering::SeqCst);
                }
            }
            out
        })
    };
    let half = CHUNK * CHUNKS / 2;
    until(
        "half of the slow body",
        WAIT,
        Duration::from_millis(20),
        async || match received.load(Ordering::SeqCst) {
            n if n >= half => Ok(()),
            n => Err(format!("{n} bytes\nlog:\n{}", proxy.log_tail())),
        },
    )
    .await;

    // The reload adds route "new" (and changes "slow" itself, so the request in flight must
    // finish on the route it started on).
    let reloaded = config.routes(&format!(
        "{}\n[[routes]]\nname = \"new\"\npath_prefix = \"/new\"\n[routes.upstream]\nurl = \"{}/other/v2\"\n",
        slow_route("response_timeout_secs = 45"),
        new.url()
    ));
    std::fs::write(&config_path, reloaded.render(proxy.audit_path())).unwrap();
    proxy.signal("HUP");
    proxy
        .wait_for_metric(
            "scimtap_config_reloads_total{result=\"success\"}",
            1.0,
            WAIT,
        )
        .await;

    let (status, body) = send(
        &proxy,
        None,
        "GET",
        "/new/Users?startIndex=1",
        "t",
        "new-after",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}\nlog:\n{}", proxy.log_tail());
    assert_eq!(body["seen_path"], "/other/v2/Users", "{body}");
    assert_eq!(new.count(), 1);
    let e = proxy.event_for("new-after").await;
    assert_eq!(e["route"], "new", "{e:#}");
    assert_eq!(e["upstream"]["port"], new.addr.port(), "{e:#}");
    assert_eq!(e["outcome"], "success", "{e:#}");

    // The stream was still in flight all along (it waits for the go), and now completes.
    assert_eq!(
        received.load(Ordering::SeqCst),
        half,
        "the slow stream did not pause"
    );
    assert!(!reader.is_finished());
    go.notify_one();
    let got = tokio::time::timeout(WAIT, reader)
        .await
        .expect("the rest of the slow body within WAIT")
        .expect("the reader task");
    assert_eq!(got.len(), expected.len(), "log:\n{}", proxy.log_tail());
    assert_eq!(
        sha256_hex(&got),
        sha256_hex(&expected),
        "the streamed bytes changed"
    );
    assert_eq!(slow.count(), 1);

    let e = proxy.event_for("slow-stream").await;
    assert_eq!(e["route"], "slow", "{e:#}");
    assert_eq!(e["outcome"], "success", "{e:#}");
    assert!(e["failure"].is_null(), "{e:#}");
    assert_eq!(e["http"]["status"], 200, "{e:#}");
    assert_eq!(e["http"]["response_bytes"], expected.len(), "{e:#}");
    assert_eq!(e["upstream"]["port"], slow.addr.port(), "{e:#}");

    // The changed "slow" route serves new requests too.
    let (status, _) = {
        go.notify_one();
        let req = Request::get(proxy.url("/slow/Export"))
            .header("x-request-id", "slow-again")
            .body(empty())
            .unwrap();
        let resp = roundtrip(&http1_client(), req).await;
        (resp.status().as_u16(), resp.into_body())
    };
    assert_eq!(status, 200);
    assert_eq!(proxy.event_for("slow-again").await["route"], "slow");
}

/// Per route: `scimtap_route_requests_total{route,status_class}` counts each route's requests
/// (and `none` those no route took), and `/readyz/<route>` turns 503 while that route's
/// upstream cannot be reached, without taking scimtap (or the other route) out of service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_has_its_own_request_counts_and_readiness() {
    let up = Upstream::start(|_req: Request<Incoming>| async {
        Response::builder()
            .status(200)
            .header("content-type", "application/scim+json")
            .body(full(USER))
            .unwrap()
    })
    .await;
    let down = closed_port();
    let routes = format!(
        "[[routes]]\nname = \"up\"\npath_prefix = \"/up\"\nupstream = {{ url = \"{}\" }}\n\
         [[routes]]\nname = \"down\"\npath_prefix = \"/down\"\nupstream = {{ url = \"http://127.0.0.1:{down}\" }}\n",
        up.url()
    );
    let proxy = Proxy::start(ProxyConfig::new("http://unused.invalid").routes(&routes));

    for (path, id) in [("/up/Users/1", "up-1"), ("/up/Users/2", "up-2")] {
        let (status, body) = send(&proxy, None, "GET", path, "t", id, None).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = send(&proxy, None, "GET", "/down/Users/1", "t", "down-1", None).await;
    assert_eq!(status, 502);
    let (status, _) = send(&proxy, None, "GET", "/elsewhere", "t", "none-1", None).await;
    assert_eq!(status, 404);
    // A path an upstream could read as another one is refused, not routed by luck.
    let (status, _) = send(&proxy, None, "GET", "/%75p/Users/1", "t", "ambiguous", None).await;
    assert_eq!(status, 400);
    let e = proxy.event_for("ambiguous").await;
    assert_eq!(e["failure"]["kind"], "invalid_request_target", "{e:#}");
    assert!(e["route"].is_null(), "{e:#}");
    assert_eq!(up.count(), 2, "nothing more reached the upstream");
    // Counted when each exchange is handed to the audit side: wait for the last event.
    proxy.event_for("none-1").await;
    for (series, want) in [
        (
            "scimtap_route_requests_total{route=\"up\",status_class=\"2xx\"}",
            2.0,
        ),
        (
            "scimtap_route_requests_total{route=\"down\",status_class=\"5xx\"}",
            1.0,
        ),
        (
            "scimtap_route_requests_total{route=\"none\",status_class=\"4xx\"}",
            2.0,
        ),
        (
            "scimtap_route_requests_total{route=\"up\",status_class=\"5xx\"}",
            0.0,
        ),
    ] {
        proxy.wait_for_metric(series, want, WAIT).await;
        assert_eq!(proxy.metric(series).await, want, "{series}");
    }

    let (status, body) = proxy.admin_get("/readyz/up").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, body) = proxy.admin_get("/readyz/down").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("route down") && body.contains("connect_refused"),
        "{body}"
    );
    // One app down does not take scimtap out of service.
    let (status, _) = proxy.admin_get("/readyz").await;
    assert_eq!(status, 200);
    let (status, _) = proxy.admin_get("/readyz/nope").await;
    assert_eq!(status, 404);
}

/// `listen.extra_addresses` accept too, and a route's `listen` takes only the connections one
/// listener accepted: the same path reaches a different app depending on the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_take_only_the_connections_of_one_listener() {
    let answer = |who: &'static str| {
        move |_req: Request<Incoming>| async move {
            Response::builder()
                .status(200)
                .header("content-type", "application/scim+json")
                .body(full(format!(r#"{{"id":"1","userName":"{who}"}}"#)))
                .unwrap()
        }
    };
    let internal = Upstream::start(answer("internal")).await;
    let public = Upstream::start(answer("public")).await;
    let port = closed_port();
    let routes = format!(
        "[[routes]]\nname = \"internal\"\nlisten = \"127.0.0.1:{port}\"\nupstream = {{ url = \"{}\" }}\n\
         [[routes]]\nname = \"public\"\nupstream = {{ url = \"{}\" }}\n",
        internal.url(),
        public.url()
    );
    let config = ProxyConfig::new("http://unused.invalid")
        .routes(&routes)
        .listen(&format!("extra_addresses = [\"127.0.0.1:{port}\"]\n"));
    let proxy = Proxy::start(config);

    let get = |base: String, id: &'static str| async move {
        let req = Request::get(format!("{base}/Users/1"))
            .header("x-request-id", id)
            .body(empty())
            .unwrap();
        let resp = roundtrip(&http1_client(), req).await;
        assert_eq!(resp.status(), 200);
        serde_json::from_slice::<Value>(resp.body()).unwrap()["userName"].clone()
    };
    assert_eq!(get(proxy.url(""), "on-main").await, "public");
    assert_eq!(
        get(format!("http://127.0.0.1:{port}"), "on-extra").await,
        "internal"
    );
    assert_eq!(proxy.event_for("on-main").await["route"], "public");
    assert_eq!(proxy.event_for("on-extra").await["route"], "internal");
    assert_eq!((internal.count(), public.count()), (1, 1));
    // Both listeners are logged.
    let listening = proxy
        .log_tail()
        .lines()
        .filter(|l| l.contains("Proxy listening."))
        .count();
    assert_eq!(listening, 2, "{}", proxy.log_tail());
}
