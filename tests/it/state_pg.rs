//! The shadow state in PostgreSQL (`[state] url`), against a real cluster the harness starts
//! (support::postgres): the store itself (migrations, two handles, concurrent opens), two
//! scimtap instances sharing one database behind a round-robin client compared with one
//! instance, and a database restart in the middle of traffic.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Request;
use serde_json::{json, Value};

use crate::scim_server::ScimServer;
use crate::state::replay;
use crate::support::postgres::Postgres;
use crate::support::*;
use scimtap::config::PostgresTarget;
use scimtap::state::{Resource, StateError, Store, PG_SCHEMA_VERSION};

fn target(pg: &Postgres, url: &str) -> PostgresTarget {
    PostgresTarget::from_url(url, Some(pg.password().as_bytes().to_vec())).unwrap()
}

fn user(id: &str, name: &str) -> Resource {
    Resource {
        resource_type: "User".to_owned(),
        id: id.to_owned(),
        user_name: Some(name.to_owned()),
        active: Some(true),
        ..Resource::default()
    }
}

// === the store ===

#[test]
fn postgres_migrations_run_once_even_when_instances_open_together() {
    let Some(pg) = Postgres::require() else {
        return;
    };

    // Eight handles opening a fresh database at once: every one opens, the schema is
    // migrated once (a second CREATE TABLE would fail the open that ran it).
    let url = pg.create_database("together");
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let target = target(&pg, &url);
            std::thread::spawn(move || Store::connect(&target, "app:443").map(|_| ()))
        })
        .collect();
    for open in opens {
        open.join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    }
    let recorded = pg.psql(
        "together",
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM scimtap_schema",
    );
    let expected: Vec<String> = (1..=PG_SCHEMA_VERSION).map(|v| v.to_string()).collect();
    assert_eq!(recorded, expected.join(","));

    // Opening again changes nothing and keeps the rows.
    let mut store = Store::connect(&target(&pg, &url), "app:443").unwrap();
    assert_eq!(store.schema_version().unwrap(), PG_SCHEMA_VERSION);
    store
        .put(&user("u1", "ann"), "2026-01-01T00:00:00.000Z")
        .unwrap();
    drop(store);
    let mut store = Store::connect(&target(&pg, &url), "app:443").unwrap();
    assert_eq!(
        store.get("User", "u1").unwrap().and_then(|u| u.user_name),
        Some("ann".to_owned())
    );
    assert_eq!(
        pg.psql("together", "SELECT COUNT(*) FROM scimtap_schema"),
        PG_SCHEMA_VERSION.to_string()
    );

    // A database migrated by a newer scimtap is refused, not misread.
    pg.psql(
        "together",
        "INSERT INTO scimtap_schema (version) VALUES (999)",
    );
    match Store::connect(&target(&pg, &url), "app:443") {
        Err(StateError::NewerSchema { found: 999, .. }) => {}
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn two_postgres_handles_see_each_others_writes_and_keep_the_newest() {
    let Some(pg) = Postgres::require() else {
        return;
    };
    let url = pg.create_database("shared");
    let mut a = Store::connect(&target(&pg, &url), "app:443").unwrap();
    let mut b = Store::connect(&target(&pg, &url), "app:443").unwrap();

    a.put(&user("u1", "ann"), "2026-01-01T00:00:01.000Z")
        .unwrap();
    a.put(&user("u2", "bob"), "2026-01-01T00:00:01.000Z")
        .unwrap();
    let group = Resource {
        resource_type: "Group".to_owned(),
        id: "g1".to_owned(),
        display_name: Some("staff".to_owned()),
        members: Some(vec!["u2".to_owned(), "u1".to_owned()]),
        ..Resource::default()
    };
    a.put(&group, "2026-01-01T00:00:02.000Z").unwrap();
    let seen = b.get("Group", "g1").unwrap().expect("b sees a's group");
    assert_eq!(
        seen.members,
        Some(vec!["u2".to_owned(), "u1".to_owned()]),
        "in order"
    );
    assert_eq!(b.member_name("u2").unwrap().as_deref(), Some("bob"));
    assert_eq!(b.member_name("g1").unwrap().as_deref(), Some("staff"));

    // b records a later observation; a's older one, arriving after it, does not replace it.
    let mut renamed = user("u1", "ann.new");
    assert!(b.put(&renamed, "2026-01-01T00:00:05.000Z").unwrap());
    renamed.user_name = Some("ann.stale".to_owned());
    assert!(!a.put(&renamed, "2026-01-01T00:00:04.000Z").unwrap());
    assert_eq!(a.member_name("u1").unwrap().as_deref(), Some("ann.new"));

    // A removal by one is seen by the other, memberships included.
    b.remove("User", "u2").unwrap();
    assert!(a.get("User", "u2").unwrap().is_none());
    let members = a.get("Group", "g1").unwrap().unwrap().members;
    assert_eq!(members, Some(vec!["u1".to_owned()]));

    // Another upstream's rows are its own.
    let mut other = Store::connect(&target(&pg, &url), "other:443").unwrap();
    assert!(other.get("User", "u1").unwrap().is_none());
    assert_eq!(other.count().unwrap(), 0);
    assert_eq!(a.count().unwrap(), 2);
}

// === two instances, one database ===

/// The scimtap configuration's `[state]` for `url`.
fn shared_state(pg: &Postgres, url: &str) -> String {
    format!(
        "[state]\nurl = \"{url}\"\npassword_file = \"{}\"",
        pg.password_file().display()
    )
}

/// What state adds to each event, with what legitimately differs between two runs against
/// two fresh scim2-servers (resource ids, its port, timestamps and versions it makes up)
/// replaced by stable labels: ids become `id#n` in order of first appearance.
fn described(events: &[Value]) -> Vec<Value> {
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut note = |id: &Value| {
        if let Some(id) = id.as_str() {
            let next = format!("id#{}", ids.len());
            ids.entry(id.to_owned()).or_insert(next);
        }
    };
    for event in events {
        let scim = &event["scim"];
        note(&scim["target"]["id"]);
        for list in ["members_added", "members_removed", "members_replaced"] {
            for member in scim["state"][list].as_array().into_iter().flatten() {
                note(&member["id"]);
            }
        }
    }
    events
        .iter()
        .map(|event| {
            let scim = &event["scim"];
            let mut target = scim["target"].clone();
            if let Some(t) = target.as_object_mut() {
                t.remove("id");
            }
            let mut state = scim["state"].clone();
            for d in state["diff"].as_array_mut().into_iter().flatten() {
                // scim2-server's meta (lastModified, version, location) is its own clock.
                if d["attribute"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("meta."))
                {
                    for side in ["before", "after"] {
                        if !d[side].is_null() {
                            d[side] = json!("<meta>");
                        }
                    }
                }
            }
            let mut text = json!({
                "actions": scim["actions"],
                "outcome": event["outcome"],
                "target": target,
                "state": state,
            })
            .to_string();
            for (id, label) in &ids {
                text = text.replace(id.as_str(), label);
            }
            serde_json::from_str(&text).unwrap()
        })
        .collect()
}

/// The events of `fixture` through one scimtap with the default SQLite state.
async fn through_one_instance(fixture: &str, run_id: &str) -> Vec<Value> {
    let server = ScimServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        ProxyConfig::new(format!("http://127.0.0.1:{}", server.port)).top(&format!(
            "[state]\npath = \"{}\"",
            dir.path().join("state.db").display()
        )),
    );
    let steps = replay(
        fixture,
        &[&proxy],
        &proxy.dir.path().join("replay.jsonl"),
        Some(run_id),
    );
    proxy.wait_for_events(steps.len()).await
}

/// The events of `fixture` sent alternately to two scimtap instances sharing database `db`,
/// in the order the requests were sent.
async fn through_two_instances(pg: &Postgres, db: &str, fixture: &str, run_id: &str) -> Vec<Value> {
    let url = pg.create_database(db);
    let server = ScimServer::start().await;
    let config =
        ProxyConfig::new(format!("http://127.0.0.1:{}", server.port)).top(&shared_state(pg, &url));
    let (a, b) = (Proxy::start(config.clone()), Proxy::start(config));
    let steps = replay(
        fixture,
        &[&a, &b],
        &a.dir.path().join("replay.jsonl"),
        Some(run_id),
    );
    let via = |n: u64| steps.iter().filter(|s| s["via"] == n).count();
    let mut from_a = a.wait_for_events(via(0)).await.into_iter();
    let mut from_b = b.wait_for_events(via(1)).await.into_iter();
    // Each instance wrote its events in the order it was sent them.
    steps
        .iter()
        .map(|step| {
            let next = if step["via"] == 0 {
                from_a.next()
            } else {
                from_b.next()
            };
            next.unwrap_or_else(|| panic!("no event for {step}"))
        })
        .collect()
}

/// Done when (issue #12): two instances behind a round-robin front sharing one PostgreSQL
/// state describe the Okta and Entra ID lifecycles exactly as one instance does: the same
/// named targets, before → after diffs, reclassifications and named members, event by event.
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_sharing_postgres_describe_lifecycles_as_one_instance_does() {
    let Some(pg) = Postgres::require() else {
        return;
    };
    for (fixture, run_id) in [
        ("okta_lifecycle", "0c7a0001"),
        ("entra_lifecycle", "0e7a0002"),
    ] {
        let one = described(&through_one_instance(fixture, run_id).await);
        let two = described(&through_two_instances(&pg, fixture, fixture, run_id).await);
        assert_eq!(one.len(), two.len(), "{fixture}: event counts");
        let differing: Vec<String> = one
            .iter()
            .zip(&two)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(n, (a, b))| format!("event {n}:\n  one instance:  {a}\n  two instances: {b}"))
            .collect();
        assert!(
            differing.is_empty(),
            "{fixture}: {} of {} events differ:\n{}",
            differing.len(),
            one.len(),
            differing.join("\n")
        );
        // The comparison has something to compare: state named, diffed and resolved.
        let with = |key: &str| two.iter().filter(|e| !e["state"][key].is_null()).count();
        assert!(with("known") > 0 && with("diff") > 0, "{fixture}: {two:?}");
    }
}

// === a database restart ===

async fn send(proxy: &Proxy, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(proxy.url(path))
        .header("content-type", "application/scim+json")
        .body(body.map_or_else(empty, |b| full(b.to_string())))
        .unwrap();
    let resp = roundtrip(&http1_client(), req).await;
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_slice(resp.body()).unwrap_or(Value::Null),
    )
}

/// Creates an active user through `proxy`; returns its path (`/v2/Users/{id}`).
async fn create_user(proxy: &Proxy, user_name: &str) -> String {
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "active": true
    });
    let (status, created) = send(proxy, "POST", "/v2/Users", Some(user)).await;
    assert_eq!(status, 201, "{created}");
    format!("/v2/Users/{}", created["id"].as_str().unwrap())
}

fn deactivate() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}]
    })
}

/// A lost database does not stop events (they go out without state, the errors counted), and
/// state resumes once it is back, without restarting scimtap.
#[tokio::test(flavor = "multi_thread")]
async fn events_keep_flowing_while_postgres_is_down_and_state_resumes_after() {
    let Some(pg) = Postgres::require() else {
        return;
    };
    let url = pg.create_database("restart");
    let server = ScimServer::start().await;
    let proxy = Proxy::start(
        ProxyConfig::new(format!("http://127.0.0.1:{}", server.port)).top(&shared_state(&pg, &url)),
    );
    let user_path = create_user(&proxy, "restart.user@example.com").await;
    let mut sent = 1;
    // Recorded (after settle_ms) before the database goes.
    let first = proxy.wait_for_events(sent).await;
    assert_eq!(first[0]["scim"]["state"]["known"], false, "{first:?}");

    pg.stop();
    for _ in 0..3 {
        let (status, _) = send(&proxy, "GET", &user_path, None).await;
        assert_eq!(status, 200);
        sent += 1;
    }
    let events = proxy.wait_for_events(sent).await;
    assert!(
        events[1..].iter().all(|e| e["scim"]["state"].is_null()),
        "events written while the database is down carry no state: {events:?}"
    );
    let errors = proxy.metric("scimtap_state_errors_total").await;
    assert!(
        errors >= 3.0,
        "state errors counted: {errors}\n{}",
        proxy.log_tail()
    );

    pg.start_again();
    // Reconnected on a later event (after the back-off): the id-only deactivation is named
    // from what was stored before the outage.
    let deadline = std::time::Instant::now() + WAIT;
    let named = loop {
        let (status, _) = send(&proxy, "PATCH", &user_path, Some(deactivate())).await;
        assert!(matches!(status, 200 | 204), "{status}");
        sent += 1;
        let events = proxy.wait_for_events(sent).await;
        let last = events.last().unwrap().clone();
        if !last["scim"]["state"].is_null() {
            break last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "state did not resume within {WAIT:?}; log:\n{}\npostgres log:\n{}",
            proxy.log_tail(),
            pg.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(named["scim"]["state"]["known"], true, "{named}");
    assert_eq!(
        named["scim"]["target"]["user_name"], "restart.user@example.com",
        "{named}"
    );
    assert_eq!(
        proxy.wait_for_events(sent).await.len(),
        sent,
        "no event lost"
    );

    // `state rebuild` into the shared database: refused while it holds this upstream's rows,
    // done with --replace (only this upstream's rows), from the audit file alone.
    let rebuild = |replace: bool| {
        let mut command = scimtap(&["state", "rebuild"]);
        command
            .arg("--config")
            .arg(proxy.dir.path().join("proxy.toml"));
        if replace {
            command.arg("--replace");
        }
        run(command.arg(&proxy.audit))
    };
    let refused = rebuild(false);
    assert_eq!(refused.status.code(), Some(64), "{}", report(&refused));
    pg.psql(
        "restart",
        "INSERT INTO resources (upstream, resource_type, id, attributes, updated_at) \
         VALUES ('other:443', 'User', 'x', '{}', '2026-01-01T00:00:00.000Z')",
    );
    let rebuilt = rebuild(true);
    assert!(rebuilt.status.success(), "{}", report(&rebuilt));
    let id = user_path.rsplit('/').next().unwrap().to_owned();
    let url_again = url.clone();
    let pw = pg.password().as_bytes().to_vec();
    let upstream = format!("127.0.0.1:{}", server.port);
    let (known, others) = tokio::task::spawn_blocking(move || {
        let target = PostgresTarget::from_url(&url_again, Some(pw)).unwrap();
        let mut store = Store::connect(&target, &upstream).unwrap();
        let known = store.get("User", &id).unwrap();
        let mut other = Store::connect(&target, "other:443").unwrap();
        (known, other.count().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(
        known.and_then(|u| u.user_name).as_deref(),
        Some("restart.user@example.com")
    );
    assert_eq!(others, 1, "another upstream's rows are left alone");
}

// === deprovisioning gaps across instances ===

/// An app that refuses every deactivation (500 with a SCIM error) and otherwise answers as
/// the shared fake SCIM service does.
async fn refusing_app() -> Upstream {
    Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        if req.method() == http::Method::PATCH {
            let error = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": "500",
                "detail": "directory is read-only"
            });
            return http::Response::builder()
                .status(500)
                .header("content-type", "application/scim+json")
                .body(full(error.to_string()))
                .unwrap();
        }
        upstream::scim_service(req).await
    })
    .await
}

/// A user created, then deactivated twice (both refused) and read back still active, sent
/// to `proxies` in turn; the events once the gap is due (`confirm_within_secs = 1`, the
/// tracker ticking each second), from every proxy, in the order written.
async fn refused_deactivation(proxies: &[&Proxy]) -> Vec<Value> {
    let mut turn = proxies.iter().cycle();
    let path = create_user(turn.next().unwrap(), "gap.user@example.com").await;
    for _ in 0..2 {
        let (status, _) = send(turn.next().unwrap(), "PATCH", &path, Some(deactivate())).await;
        assert_eq!(status, 500);
    }
    let (status, _) = send(turn.next().unwrap(), "GET", &path, None).await;
    assert_eq!(status, 200);
    // Due a second after the first attempt; every instance ticks each second. Wait for the
    // gap, then two more ticks, in which a second instance would report it again.
    let gaps = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["scim"]["actions"][0] == "deprovision.gap")
            .count()
    };
    let all = || -> Vec<Value> { proxies.iter().flat_map(|p| p.events()).collect() };
    let deadline = std::time::Instant::now() + WAIT;
    while gaps(&all()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no deprovision.gap within {WAIT:?}: {:?}",
            all()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut events = all();
    events.sort_by(|a, b| a["timestamp"].as_str().cmp(&b["timestamp"].as_str()));
    events
}

/// What the tracker says in each event, without ids and times that differ between runs.
fn tracked(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let d = &e["deprovision"];
            json!({
                "actions": e["scim"]["actions"],
                "outcome": e["outcome"],
                "user_name": e["scim"]["target"]["user_name"],
                "retry": !e["retry_of"].is_null(),
                "deprovision": if d.is_null() { Value::Null } else { json!({
                    "status": d["status"],
                    "requested_action": d["requested_action"],
                    "attempts": d["attempts"],
                    "last_status": d["last_status"],
                    "last_failure": d["last_failure"],
                })},
            })
        })
        .collect()
}

/// Done when (issue #12), gaps: a deactivation the app refuses, tried through one instance and
/// retried through the other, becomes exactly one `deprovision.gap` across both instances
/// (not one each), saying what one instance alone says; the retry is linked to the first
/// attempt though another instance made it.
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_sharing_postgres_report_one_gap_as_one_instance_does() {
    let Some(pg) = Postgres::require() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let app = refusing_app().await;
    let one = Proxy::start(ProxyConfig::new(app.url()).top(&format!(
        "[state]\npath = \"{}\"\nconfirm_within_secs = 1",
        dir.path().join("state.db").display()
    )));
    let alone = tracked(&refused_deactivation(&[&one]).await);

    let app = refusing_app().await;
    let url = pg.create_database("gaps");
    let config = ProxyConfig::new(app.url()).top(&format!(
        "{}\nconfirm_within_secs = 1",
        shared_state(&pg, &url)
    ));
    let (a, b) = (Proxy::start(config.clone()), Proxy::start(config));
    let together = refused_deactivation(&[&a, &b]).await;
    let gaps: Vec<&Value> = together
        .iter()
        .filter(|e| e["scim"]["actions"][0] == "deprovision.gap")
        .collect();
    assert_eq!(
        gaps.len(),
        1,
        "exactly one gap across both instances: {gaps:#?}"
    );
    assert_eq!(tracked(&together), alone, "{together:#?}");
    assert_eq!(
        alone.iter().filter(|e| e["retry"] == true).count(),
        1,
        "the second attempt is a retry of the first: {alone:#?}"
    );
}
