//! docs/answers.md, question by question, on real traffic: the Okta lifecycle replayed through
//! scimtap (with `[state]`) into scim2-server, its upstream killed before a deactivation and
//! brought back for the IdP's retry; and the Entra ID lifecycle. Every answer is the doc's own
//! `jq` expression, run as written on the audit file.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::scim_server::ScimServer;
use crate::state::{answer, have_jq};
use crate::support::process::run;
use crate::support::relay::Relay;
use crate::support::wait::until;
use crate::support::*;

/// Sends the steps of `fixture` from `from` up to (not including) `until`, carrying ids from
/// part to part in `context`. Returns replay.py's output and its per-step results.
pub(crate) fn replay_part(
    proxy: &Proxy,
    fixture: &str,
    from: Option<&str>,
    until: Option<&str>,
    judged: bool,
    extra: &[&str],
) -> (Output, Vec<Value>) {
    let peer = peers::peer_dir().display().to_string();
    let out = proxy.dir.path().join("part.jsonl");
    let mut cmd = Command::new(peers::venv_python());
    cmd.arg(format!("{peer}/replay.py"))
        .arg(format!("http://{}/v2", proxy.addr))
        .arg(format!("{peer}/fixtures/{fixture}.jsonl"))
        .arg("--context")
        .arg(proxy.dir.path().join("context.json"))
        .arg("--out")
        .arg(&out)
        .arg("--quiet");
    if judged {
        cmd.arg("--baseline").arg(format!(
            "{peer}/fixtures/baseline/{fixture}.scim2-server.json"
        ));
    }
    if let Some(from) = from {
        cmd.args(["--from", from]);
    }
    if let Some(until) = until {
        cmd.args(["--until", until]);
    }
    cmd.args(extra);
    let output = run(&mut cmd);
    let steps = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (output, steps)
}

/// scimtap with `[state]` (its file in `dir`) and gaps due after one second.
pub(crate) fn proxy_with_state(upstream_port: u16, dir: &tempfile::TempDir) -> Proxy {
    let state = dir.path().join("state.db");
    Proxy::start(
        ProxyConfig::new(format!("http://127.0.0.1:{upstream_port}")).top(&format!(
            "[state]\npath = \"{}\"\nconfirm_within_secs = 1",
            state.display()
        )),
    )
}

/// Waits for an event whose first action is `action` and whose target is `user`.
pub(crate) async fn wait_for_action(proxy: &Proxy, action: &str, user: &str) -> Value {
    until(
        &format!("a {action} event for {user}"),
        WAIT,
        Duration::from_millis(50),
        async || {
            proxy
                .events()
                .into_iter()
                .find(|e| {
                    e["scim"]["actions"][0] == action && e["scim"]["target"]["user_name"] == user
                })
                .ok_or_else(|| format!("log:\n{}", proxy.log_tail()))
        },
    )
    .await
}

pub(crate) fn user_name_of(events: &[Value], step_action: &str, nth: usize) -> String {
    events
        .iter()
        .filter(|e| e["scim"]["actions"][0] == step_action && e["outcome"] == "success")
        .nth(nth)
        .and_then(|e| e["scim"]["target"]["user_name"].as_str())
        .unwrap_or_else(|| panic!("no successful {step_action} #{nth}"))
        .to_owned()
}

fn column<'a>(rows: &'a [Value], key: &str) -> Vec<&'a Value> {
    rows.iter().map(|r| &r[key]).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn okta_with_the_upstream_killed_midway_answers_every_question_from_events_alone() {
    if !have_jq() {
        return;
    }
    let server = ScimServer::start().await;
    let relay = Relay::start(server.port).await;
    let relay_port = relay.port;
    let state = tempfile::tempdir().unwrap();
    let proxy = proxy_with_state(relay.port, &state);
    let fixture = "okta_lifecycle";
    let deactivate_user2 = "okta: deactivate user2";

    // Everything up to user2's deactivation reaches the app.
    let (out, sent) = replay_part(&proxy, fixture, None, Some(deactivate_user2), true, &[]);
    assert!(out.status.success(), "{}", report(&out));
    let events = proxy.wait_for_events(sent.len()).await;
    let user1 = user_name_of(&events, "user.create", 0);
    let user2 = user_name_of(&events, "user.create", 1);

    // The upstream dies; the IdP sends the rest (all refused by scimtap with 502).
    relay.kill().await;
    let (out, rest) = replay_part(&proxy, fixture, Some(deactivate_user2), None, false, &[]);
    assert!(
        rest.iter().all(|s| s["status"] == 502),
        "{}\n{rest:?}",
        report(&out)
    );
    let gap = wait_for_action(&proxy, "deprovision.gap", &user2).await;
    assert_eq!(gap["outcome"], "failure");

    // Never confirmed: user2, asked once, never answered.
    let audit = &proxy.audit;
    let open = answer("never-confirmed", &[], audit);
    assert_eq!(
        column(&open, "user"),
        [&Value::from(user2.as_str())],
        "{open:?}"
    );
    assert_eq!(
        (
            &open[0]["attempts"],
            &open[0]["last_status"],
            &open[0]["why"]
        ),
        (
            &Value::from(1),
            &Value::from(502),
            &Value::from("connect_refused")
        ),
        "{open:?}"
    );
    assert_eq!(open[0]["who"], "okta");

    // Why the PATCHes failed: the deactivation, because the upstream refused connections.
    let failed = answer("why-failed", &[], audit);
    let deactivation = failed
        .iter()
        .find(|r| r["target"] == user2.as_str())
        .unwrap_or_else(|| panic!("{failed:?}"));
    assert_eq!(
        (
            &deactivation["action"],
            &deactivation["status"],
            &deactivation["why"]
        ),
        (
            &Value::from("user.deactivate"),
            &Value::from(502),
            &Value::from("connect_refused")
        )
    );

    // The upstream comes back and the IdP retries the deactivation: confirmed, linked.
    relay.restore().await;
    let (out, retried) = replay_part(
        &proxy,
        fixture,
        Some(deactivate_user2),
        Some("okta: unlink pushed group"),
        false,
        &[],
    );
    assert!(out.status.success(), "{}\n{retried:?}", report(&out));
    let closed = wait_for_action(&proxy, "deprovision.closed", &user2).await;
    assert_eq!(closed["deprovision"]["closed_by"], "response");
    assert_eq!(closed["deprovision"]["gap_event_id"], gap["event_id"]);
    assert!(closed["deprovision"]["latency_ms"].as_i64().unwrap() >= 1000);
    assert!(answer("never-confirmed", &[], audit).is_empty());

    let asked = answer("who-deprovisioned", &[("user", &user2)], audit);
    assert_eq!(
        column(&asked, "confirmed"),
        [&Value::from(false), &Value::from(true)],
        "{asked:?}"
    );
    assert_eq!(asked[0]["status"], 502);
    assert_eq!(asked[1]["retry_of"], asked[0]["event_id"], "{asked:?}");
    assert_eq!(
        closed["deprovision"]["requested_event_id"],
        asked[0]["event_id"]
    );

    // scimtap trace tells user2's story with the tracker's events in it.
    let story = crate::state::trace_entries(&user2, audit);
    let kinds: Vec<&str> = story.iter().filter_map(|e| e["kind"].as_str()).collect();
    let at = |kind: &str| {
        kinds
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("no {kind} in {kinds:?}"))
    };
    assert!(
        at("deprovision_gap") < at("deprovision_closed"),
        "{kinds:?}"
    );
    // The group deletion the dead upstream never saw is a failed attempt, not a loss.
    let lost = &story[at("group_lost")];
    assert_eq!(lost["outcome"], "failure", "{lost}");
    assert!(
        story.iter().any(|e| e["retry_of"] == asked[0]["event_id"]),
        "{story:?}"
    );

    // What changed on user1: the profile PUT, before → after; then the deactivations.
    let changes = answer("what-changed", &[("user", &user1)], audit);
    let put = changes
        .iter()
        .find(|r| r["changes"].get("name.givenName").is_some())
        .unwrap_or_else(|| panic!("{changes:?}"));
    assert_eq!(
        put["changes"]["name.givenName"],
        serde_json::json!({"before": "Test", "after": "Another"})
    );
    assert!(
        changes.iter().any(|r| r["action"] == "user.deactivate"
            && r["changes"]["active"] == serde_json::json!({"before": true, "after": false})),
        "{changes:?}"
    );

    // Groups user1 gained and lost: added, moved out, back in by the full push.
    let groups = answer("groups", &[("user", &user1)], audit);
    assert_eq!(
        column(&groups, "change"),
        [
            &Value::from("gained"),
            &Value::from("lost"),
            &Value::from("gained")
        ],
        "{groups:?}"
    );
    assert_eq!(groups[2]["how"], "group.members.replace");
    assert!(groups.iter().all(|g| g["group"].is_string()), "{groups:?}");

    // Every event of the run, the tracker's included, is one the schema describes.
    let valid = run(Command::new(peers::venv_python())
        .arg(peers::peer_script("validate_events.py"))
        .arg(peers::root().join("docs/event.schema.json"))
        .arg(audit));
    assert!(valid.status.success(), "{}", report(&valid));

    // Every event names the app it was about (here the relay in front of it), the tracker's
    // included.
    let text = std::fs::read_to_string(audit).expect("audit file");
    let all: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("record").is_none())
        .collect();
    assert!(all
        .iter()
        .any(|e| e["scim"]["actions"][0] == "deprovision.gap"));
    let app = serde_json::json!({"host": "127.0.0.1", "port": relay_port, "tls": false});
    assert!(all.iter().all(|e| e["upstream"] == app), "{all:?}");

    // The same gap, on the metrics: reported once, closed once, none open.
    assert_eq!(proxy.metric("scimtap_deprovision_gaps_total").await, 1.0);
    assert_eq!(proxy.metric("scimtap_deprovision_closed_total").await, 1.0);
    proxy
        .wait_for_metric("scimtap_deprovision_open", 0.0, WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_lifecycle_answers_why_patches_failed_and_what_changed() {
    if !have_jq() {
        return;
    }
    let server = ScimServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let proxy = proxy_with_state(server.port, &state);
    let (out, sent) = replay_part(&proxy, "entra_lifecycle", None, None, true, &[]);
    assert!(out.status.success(), "{}", report(&out));
    let sent = sent.iter().filter(|s| !s["status"].is_null()).count();
    let events = proxy.wait_for_events(sent).await;
    let audit: &Path = &proxy.audit;

    // The two membership removals scim2-server refuses, with the error it gave.
    let failed = answer("why-failed", &[], audit);
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed.iter().all(|r| r["status"] == 400
            && r["action"] == "group.members.remove"
            && r["why"].is_string()),
        "{failed:?}"
    );

    // Entra renames user1 by PATCH: the diff shows the old and the new userName.
    let renamed = events
        .iter()
        .find(|e| {
            e["scim"]["state"]["diff"]
                .as_array()
                .is_some_and(|d| d.iter().any(|c| c["attribute"] == "userName"))
        })
        .unwrap_or_else(|| panic!("no rename diff"));
    let user1 = renamed["scim"]["target"]["user_name"].as_str().unwrap();
    let changes = answer("what-changed", &[("user", user1)], audit);
    let rename = changes
        .iter()
        .find(|r| r["changes"].get("userName").is_some())
        .unwrap_or_else(|| panic!("{changes:?}"));
    assert_eq!(rename["changes"]["userName"]["after"], user1);
    assert_ne!(rename["changes"]["userName"]["before"], user1);
    assert_eq!(rename["action"], "user.update");

    // user1 was added to group1; the refused removal is not a loss, adding them again is no
    // gain, the filtered-path removal is the loss.
    let groups = answer("groups", &[("user", user1)], audit);
    assert_eq!(
        column(&groups, "change"),
        [&Value::from("gained"), &Value::from("lost")],
        "{groups:?}"
    );
    assert_eq!(groups[1]["how"], "group.members.remove");
    // user2 stayed a member until the group was deleted.
    let deleted = events
        .iter()
        .find(|e| e["scim"]["actions"][0] == "group.delete" && e["outcome"] == "success")
        .unwrap_or_else(|| panic!("no group deletion"));
    let user2 = deleted["scim"]["state"]["members_removed"][0]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{deleted}"));
    let groups = answer("groups", &[("user", user2)], audit);
    assert_eq!(
        (column(&groups, "change"), column(&groups, "how")),
        (
            vec![&Value::from("gained"), &Value::from("lost")],
            vec![
                &Value::from("group.members.add"),
                &Value::from("group.delete")
            ]
        ),
        "{groups:?}"
    );
}

/// With `[privacy]`, the state keeps what events show: pseudonyms, never a userName in clear
/// or a password; events name id-only targets by the same pseudonym, so the answers work with
/// it.
#[tokio::test(flavor = "multi_thread")]
async fn with_privacy_the_state_holds_pseudonyms_only_and_the_answers_still_work() {
    if !have_jq() {
        return;
    }
    let server = ScimServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pii.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef").unwrap();
    let db = dir.path().join("state.db");
    let proxy = Proxy::start(
        ProxyConfig::new(format!("http://127.0.0.1:{}", server.port)).top(&format!(
            "[state]\npath = \"{}\"\n[privacy]\nhash_key_file = \"{}\"\n[capture]\ninclude_bodies = \"redacted\"",
            db.display(),
            key.display()
        )),
    );
    let run_id = "c0ffee42";
    let (out, sent) = replay_part(
        &proxy,
        "okta_lifecycle",
        None,
        None,
        true,
        &["--run-id", run_id],
    );
    assert!(out.status.success(), "{}", report(&out));
    let events = proxy
        .wait_for_events(sent.iter().filter(|s| !s["status"].is_null()).count())
        .await;

    let user1 = format!("test.user.{run_id}@okta.local");
    let pseudonym = events
        .iter()
        .find(|e| e["scim"]["actions"][0] == "user.create" && e["outcome"] == "success")
        .and_then(|e| e["scim"]["target"]["user_name"].as_str())
        .unwrap()
        .to_owned();
    assert!(pseudonym.starts_with("hmac-sha256:"), "{pseudonym}");
    // The id-only deactivation is named by the same pseudonym, from state.
    let rows = answer("who-deprovisioned", &[("user", &pseudonym)], &proxy.audit);
    assert_eq!(rows.len(), 2, "{rows:?}");

    // Nothing in clear in the store (its WAL included): no userName, no password.
    let mut stored = Vec::new();
    for suffix in ["", "-wal"] {
        let mut path = db.clone().into_os_string();
        path.push(suffix);
        stored.extend(std::fs::read(&path).unwrap_or_default());
    }
    assert!(!stored.is_empty());
    let text = String::from_utf8_lossy(&stored);
    for secret in [user1.as_str(), "okta.local", "t1meMa$heen"] {
        assert!(!text.contains(secret), "the state file holds {secret:?}");
    }
    assert!(
        text.contains(&pseudonym),
        "the state should hold the pseudonym"
    );
}

/// README's recipes are docs/answers.md's expressions, so the tests above cover them too.
#[test]
fn readme_recipes_are_the_tested_answers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/answers.md")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut checked = 0;
    for part in doc.split("<!-- answer: ").skip(1) {
        let (name, rest) = part.split_once(" -->\n```sh\n").unwrap();
        let expression = rest.split_once("\n```").unwrap().0;
        assert!(
            readme.contains(&expression.replace("\"$USERNAME\"", "\"$U\"")),
            "README.md does not give docs/answers.md's {name} expression as written"
        );
        checked += 1;
    }
    assert_eq!(checked, 5, "docs/answers.md should answer five questions");
}
