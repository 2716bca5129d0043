//! The shadow state (`[state]`) end to end: the Okta and Entra ID lifecycles
//! (tests/peer/fixtures) replayed through scimtap against the real scim2-server, and the
//! questions docs/answers.md answers checked on the events they produce.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::scim_server::ScimServer;
use crate::support::process::run;
use crate::support::*;

/// Replays `fixture` through scimtap with `[state]` on; returns the steps sent (replay.py's
/// `--out` lines with a status) zipped with their events, and the proxy.
/// The state file's directory is returned too, so it lives as long as the proxy.
async fn replay_with_state(
    fixture: &str,
) -> (Vec<(Value, Value)>, Proxy, ScimServer, tempfile::TempDir) {
    let server = ScimServer::start().await;
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("state.db");
    let proxy = Proxy::start(
        ProxyConfig::new(format!("http://127.0.0.1:{}", server.port))
            .top(&format!("[state]\npath = \"{}\"", state.display())),
    );
    let out = proxy.dir.path().join("replay.jsonl");
    let steps = replay(fixture, &[&proxy], &out, None);
    let events = proxy.wait_for_events(steps.len()).await;
    assert!(
        state.exists(),
        "[state] path was not created; log:\n{}",
        proxy.log_tail()
    );
    // Sequential replay: events are in the order the requests were sent.
    let pairs = steps.into_iter().zip(events).collect();
    (pairs, proxy, server, state_dir)
}

/// Replays `fixture` (tests/peer/fixtures) with replay.py through `proxies`, taking turns
/// when there are several (round robin, one request at a time, each after the previous
/// response, as an IdP behind a load balancer would), judged against what scim2-server
/// answers without a proxy. Returns the steps that were sent (replay.py's `--out` lines with
/// a status; `via` names the proxy when there are several). `run_id` fixes the `{{run.id}}`
/// in user names, so two replays name the same users.
pub(crate) fn replay(
    fixture: &str,
    proxies: &[&Proxy],
    out: &Path,
    run_id: Option<&str>,
) -> Vec<Value> {
    let peer = peers::peer_dir().display().to_string();
    let mut command = Command::new(peers::venv_python());
    command
        .arg(format!("{peer}/replay.py"))
        .arg(format!("http://{}/v2", proxies[0].addr))
        .arg(format!("{peer}/fixtures/{fixture}.jsonl"))
        // Judged against what scim2-server answers without a proxy (it deviates from the
        // IdPs' expectations in places; that is not what this test is about).
        .arg("--baseline")
        .arg(format!(
            "{peer}/fixtures/baseline/{fixture}.scim2-server.json"
        ))
        .arg("--out")
        .arg(out)
        .arg("--quiet");
    for proxy in &proxies[1..] {
        command
            .arg("--also")
            .arg(format!("http://{}/v2", proxy.addr));
    }
    if let Some(id) = run_id {
        command.args(["--run-id", id]);
    }
    let result = run(&mut command);
    assert!(
        result.status.success(),
        "replay failed:\n{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|s: &Value| !s["status"].is_null())
        .collect()
}

/// The event of the step named `name` (the first one starting with it).
fn event<'a>(pairs: &'a [(Value, Value)], name: &str) -> &'a Value {
    pairs
        .iter()
        .find(|(step, _)| step["name"].as_str().is_some_and(|n| n.starts_with(name)))
        .map(|(_, event)| event)
        .unwrap_or_else(|| panic!("no step {name:?} in the replay"))
}

fn member_names(event: &Value, list: &str) -> Vec<Value> {
    event["scim"]["state"][list]
        .as_array()
        .unwrap_or_else(|| panic!("no scim.state.{list}: {event}"))
        .iter()
        .map(|m| m["name"].clone())
        .collect()
}

fn diff_of<'a>(event: &'a Value, attribute: &str) -> Option<&'a Value> {
    diff_in(&event["scim"]["state"]["diff"], attribute)
}

/// The `{attribute, before, after}` of `attribute` in a diff list (an event's
/// `scim.state.diff`, a trace entry's `diff`).
fn diff_in<'a>(diff: &'a Value, attribute: &str) -> Option<&'a Value> {
    diff.as_array()?
        .iter()
        .find(|d| d["attribute"] == attribute)
}

/// `scimtap trace --user USER [extra] FILE`: its stdout, after checking it succeeded.
fn trace(user: &str, extra: &[&str], file: &Path) -> String {
    let out = run(crate::support::scimtap(&["trace", "--user", user])
        .args(extra)
        .arg(file));
    assert!(out.status.success(), "{}", report(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The same with `--json`: its entries.
pub(crate) fn trace_entries(user: &str, file: &Path) -> Vec<Value> {
    trace(user, &["--json"], file)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The trace entry made from `event`.
fn entry_for<'a>(entries: &'a [Value], event: &Value) -> &'a Value {
    entries
        .iter()
        .find(|e| e["event_id"] == event["event_id"])
        .unwrap_or_else(|| panic!("no trace entry for {event}: {entries:?}"))
}

/// The `jq` expression docs/answers.md gives under `<!-- answer: NAME -->`, run on `file`.
pub(crate) fn answer(name: &str, args: &[(&str, &str)], file: &Path) -> Vec<Value> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/answers.md"))
            .unwrap();
    let marker = format!("<!-- answer: {name} -->");
    let block = doc
        .split_once(&marker)
        .and_then(|(_, rest)| rest.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(block, _)| block)
        .unwrap_or_else(|| panic!("docs/answers.md has no answer {name}"));
    // The expression is the single-quoted argument of `jq`.
    let expression = block
        .split_once(" '")
        .and_then(|(_, rest)| rest.rsplit_once("' "))
        .map(|(e, _)| e)
        .unwrap_or_else(|| panic!("no jq expression in {block}"));
    let mut jq = Command::new("jq");
    jq.arg("-c");
    // `jq -n '[inputs] ...'`: answers that look across events read them all.
    if block.starts_with("jq -n") || block.contains(" -n ") {
        jq.arg("-n");
    }
    for (k, v) in args {
        jq.args(["--arg", k, v]);
    }
    let out = run(jq.arg(expression).arg(file));
    assert!(
        out.status.success(),
        "jq failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn have_jq() -> bool {
    let found = Command::new("jq").arg("--version").output().is_ok();
    if !found && std::env::var_os("SCIMTAP_REQUIRE_PEERS").is_some() {
        panic!("jq is not installed (scripts/setup.sh --test-peers installs it)");
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn okta_lifecycle_events_name_targets_diff_puts_and_name_members() {
    let (pairs, proxy, server, _state) = replay_with_state("okta_lifecycle").await;
    let created = event(&pairs, "okta: create user1");
    let user1 = created["scim"]["target"]["user_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let user2 = event(&pairs, "okta: create user2")["scim"]["target"]["user_name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(created["scim"]["state"]["known"], false, "{created}");

    // The deactivation PATCH carries only the id; state names the user.
    let deactivated = event(&pairs, "okta: deactivate user1 (PATCH");
    assert_eq!(deactivated["scim"]["actions"][0], "user.deactivate");
    assert_eq!(
        deactivated["scim"]["target"]["user_name"],
        user1.as_str(),
        "{deactivated}"
    );
    assert!(deactivated["scim"]["state"]["target_filled"]
        .as_array()
        .unwrap()
        .contains(&Value::from("user_name")));

    // Okta's profile update is a full PUT: diffed against what was known.
    let put = event(&pairs, "okta: update user1 profile (PUT");
    let given = diff_of(put, "name.givenName").unwrap_or_else(|| panic!("{put}"));
    assert_eq!(
        (&given["before"], &given["after"]),
        (&Value::from("Test"), &Value::from("Another"))
    );
    let middle = diff_of(put, "name.middleName").unwrap_or_else(|| panic!("{put}"));
    assert_eq!(
        (&middle["before"], &middle["after"]),
        (&Value::Null, &Value::from("Excited"))
    );
    assert_eq!(put["scim"]["state"]["noop"], false);

    // AIW: deactivate and reactivate by PUT; the reactivation is known from state.
    let reactivated = event(&pairs, "okta: reactivate user1 (PUT");
    assert_eq!(
        reactivated["scim"]["actions"][0], "user.reactivate",
        "{reactivated}"
    );
    assert_eq!(
        reactivated["scim"]["state"]["reclassified_from"],
        "user.update"
    );
    let active = diff_of(reactivated, "active").unwrap_or_else(|| panic!("{reactivated}"));
    assert_eq!(
        (&active["before"], &active["after"]),
        (&Value::from(false), &Value::from(true))
    );

    // Group memberships name their members.
    let added = event(&pairs, "okta: add user1 to group1");
    assert_eq!(
        member_names(added, "members_added"),
        vec![Value::from(user1.as_str())]
    );
    let moved = event(&pairs, "okta: membership update");
    assert_eq!(
        member_names(moved, "members_removed"),
        vec![Value::from(user1.as_str())]
    );
    assert_eq!(
        member_names(moved, "members_added"),
        vec![Value::from(user2.as_str())]
    );

    // The password sync never reaches a diff.
    let password = event(&pairs, "okta: sync password");
    assert!(diff_of(password, "password").is_none(), "{password}");

    // docs/answers.md: who deprovisioned user1, and when.
    if have_jq() {
        let rows = answer("who-deprovisioned", &[("user", &user1)], &proxy.audit);
        let whens: Vec<&Value> = rows.iter().map(|r| &r["when"]).collect();
        assert_eq!(
            whens,
            vec![
                &deactivated["timestamp"],
                &event(&pairs, "okta: deactivate user1 (PUT")["timestamp"]
            ],
            "{rows:?}"
        );
        assert!(
            rows.iter()
                .all(|r| r["who"] == "okta" && r["confirmed"] == true),
            "{rows:?}"
        );
    }

    // The state can be rebuilt from the audit file alone (events without bodies: names,
    // activation, memberships).
    let rebuilt = proxy.dir.path().join("rebuilt.db");
    let out = run(Command::new(scimtap_bin())
        .arg("--config")
        .arg(proxy.dir.path().join("proxy.toml"))
        .args(["state", "rebuild", "--state-file"])
        .arg(&rebuilt)
        .arg(&proxy.audit));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut store =
        scimtap::state::Store::open(&rebuilt, &format!("127.0.0.1:{}", server.port)).unwrap();
    let id = |step: &str| {
        event(&pairs, step)["scim"]["target"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let known1 = store
        .get("User", &id("okta: create user1"))
        .unwrap()
        .expect("user1");
    assert_eq!(known1.user_name.as_deref(), Some(user1.as_str()));
    assert_eq!(known1.active, Some(true), "reactivated last");
    let known2 = store
        .get("User", &id("okta: create user2"))
        .unwrap()
        .expect("user2");
    assert_eq!(known2.active, Some(false), "deactivated last");
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_lifecycle_events_name_id_only_targets_and_members() {
    let (pairs, proxy, _server, _state) = replay_with_state("entra_lifecycle").await;
    // The name user1 has after Entra's rename, as the service reports it.
    let read = event(&pairs, "entra: get user1 after string-boolean disable");
    let user1 = read["scim"]["target"]["user_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let disabled = event(&pairs, "entra: disable user1 (no flag");
    assert_eq!(disabled["scim"]["actions"][0], "user.deactivate");
    assert_eq!(
        disabled["scim"]["target"]["user_name"],
        user1.as_str(),
        "{disabled}"
    );
    let active = diff_of(disabled, "active").unwrap_or_else(|| panic!("{disabled}"));
    assert_eq!(
        (&active["before"], &active["after"]),
        (&Value::from(true), &Value::from(false))
    );

    let renamed = event(&pairs, "entra: update user1 single-valued");
    assert!(diff_of(renamed, "userName").is_some(), "{renamed}");

    let added = event(&pairs, "entra: add user1 to group1");
    assert_eq!(
        member_names(added, "members_added"),
        vec![Value::from(user1.as_str())]
    );
    let removed = event(&pairs, "entra: remove user1 from group1");
    assert_eq!(
        member_names(removed, "members_removed"),
        vec![Value::from(user1.as_str())]
    );

    let deleted = event(&pairs, "entra: delete user1");
    assert_eq!(
        deleted["scim"]["target"]["user_name"],
        user1.as_str(),
        "{deleted}"
    );

    // `scimtap trace` by the name user1 was created with follows her id through Entra's
    // rename to her deletion.
    let created = event(&pairs, "entra: create user1");
    let old_name = created["scim"]["target"]["user_name"].as_str().unwrap();
    assert_ne!(old_name, user1, "the fixture renames user1");
    let entries = trace_entries(old_name, &proxy.audit);
    let kinds: Vec<&str> = entries.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"created"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"deleted"), "{kinds:?}");
    let rename = entry_for(&entries, renamed);
    let user_name = diff_in(&rename["diff"], "userName").unwrap_or_else(|| panic!("{rename}"));
    assert_eq!(
        (&user_name["before"], &user_name["after"]),
        (&Value::from(old_name), &Value::from(user1.as_str()))
    );
    assert_eq!(entries.last().unwrap()["user"]["user_name"], user1.as_str());

    if have_jq() {
        let rows = answer("who-deprovisioned", &[("user", &user1)], &proxy.audit);
        let actions: Vec<&str> = rows.iter().filter_map(|r| r["action"].as_str()).collect();
        assert_eq!(
            actions,
            vec!["user.deactivate", "user.deactivate", "user.delete"],
            "{rows:?}"
        );
    }
}

/// A store that fails (here: its table dropped under it) costs the events nothing but what
/// state adds: each is written, counted in `scimtap_state_errors_total`, and the log says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_store_is_counted_and_events_are_written_without_state() {
    let upstream = Upstream::scim().await;
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("state.db");
    let proxy = Proxy::start(
        ProxyConfig::new(upstream.url()).top(&format!("[state]\npath = \"{}\"", db_path.display())),
    );
    let send = |path: &'static str| {
        let addr = proxy.addr;
        async move {
            let req = http::Request::patch(format!("http://{addr}{path}"))
                .header("content-type", "application/scim+json")
                .body(full(
                    r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}"#,
                ))
                .unwrap();
            http1_client().request(req).await.unwrap().status()
        }
    };
    send("/scim/v2/Users/u1").await;
    let first = proxy.wait_for_events(1).await;
    assert!(first[0]["scim"]["state"].is_object(), "{}", first[0]);

    let db = rusqlite::Connection::open(&db_path).unwrap();
    db.execute_batch("DROP TABLE resources").unwrap();
    drop(db);
    send("/scim/v2/Users/u2").await;
    let events = proxy.wait_for_events(2).await;
    assert_eq!(events[1]["scim"]["actions"][0], "user.deactivate");
    assert!(events[1]["scim"].get("state").is_none(), "{}", events[1]);
    proxy
        .wait_for_metric("scimtap_state_errors_total", 1.0, WAIT)
        .await;
    assert!(
        proxy.log_tail().contains("Shadow state store failed"),
        "{}",
        proxy.log_tail()
    );
}

/// `scimtap trace` on the audit file of the Okta lifecycle: user1's story, for people and for
/// scripts, from the file alone and with the state file.
#[tokio::test(flavor = "multi_thread")]
async fn okta_lifecycle_traced_by_scimtap_trace() {
    let (pairs, proxy, _server, _state) = replay_with_state("okta_lifecycle").await;
    let created = event(&pairs, "okta: create user1");
    let user1 = created["scim"]["target"]["user_name"].as_str().unwrap();
    let id1 = created["scim"]["target"]["id"].as_str().unwrap();
    let group_name = event(&pairs, "okta: push group (create)")["scim"]["target"]["display_name"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = proxy.dir.path().join("proxy.toml");
    // For scripts: one JSON object per line, oldest first.
    let entries = trace_entries(user1, &proxy.audit);
    let of = |kind: &str| -> Vec<&Value> { entries.iter().filter(|e| e["kind"] == kind).collect() };
    let story: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["outcome"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    let created_entries = of("created");
    assert_eq!(
        created_entries.len(),
        2,
        "the create and the refused second one: {story:?}"
    );
    assert_eq!(created_entries[0]["outcome"], "success");
    assert_eq!(created_entries[0]["user"]["id"], id1);
    assert_eq!(created_entries[0]["event_id"], created["event_id"]);
    assert_eq!(created_entries[1]["outcome"], "failure");
    assert_eq!(created_entries[1]["status"], 409);
    // Deactivated twice (Okta's PATCH, then the AIW PUT), and named although the PATCH
    // carried only the id.
    let deactivated = of("deactivated");
    assert_eq!(deactivated.len(), 2, "{story:?}");
    assert_eq!(
        deactivated[0]["event_id"],
        event(&pairs, "okta: deactivate user1 (PATCH")["event_id"]
    );
    assert!(deactivated
        .iter()
        .all(|e| e["user"]["user_name"] == user1 && e["outcome"] == "success"));
    // The profile PUT, before → after from scim.state.
    let put = event(&pairs, "okta: update user1 profile (PUT");
    let given = diff_in(&entry_for(&entries, put)["diff"], "name.givenName")
        .unwrap_or_else(|| panic!("{story:?}"));
    assert_eq!(given["after"], "Another");
    // Groups: gained by the add, lost by the filtered remove, gained again in the pushed
    // list, lost with the group's deletion; each named.
    let groups: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| !e["group"].is_null())
        .map(|e| (e["kind"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        groups,
        [
            ("group_gained", "group.members.add"),
            ("group_lost", "group.members.remove"),
            ("group_gained", "group.members.replace"),
            ("group_lost", "group.delete"),
        ],
        "{story:?}"
    );
    assert_eq!(of("group_gained")[0]["group"]["name"], group_name.as_str());
    // Oldest first.
    let times: Vec<&str> = entries.iter().filter_map(|e| e["at"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // For people: one aligned line per entry, under a line naming the user.
    let text = trace(user1, &[], &proxy.audit);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{user1}: user {id1}")),
        "{text}"
    );
    assert_eq!(lines.len(), entries.len() + 1, "{text}");
    let line_of = |id: &Value| {
        let at = entries.iter().find(|e| e["event_id"] == *id).unwrap()["at"]
            .as_str()
            .unwrap();
        *lines
            .iter()
            .find(|l| l.starts_with(at))
            .unwrap_or_else(|| panic!("{at}: {text}"))
    };
    assert!(
        line_of(&created["event_id"]).contains("created")
            && line_of(&created["event_id"]).contains("ok 201"),
        "{text}"
    );
    let refused = line_of(&created_entries[1]["event_id"]);
    assert!(
        refused.contains("FAILED 409") && refused.contains("uniqueness"),
        "{text}"
    );
    assert!(
        line_of(&deactivated[0]["event_id"]).contains("deactivated"),
        "{text}"
    );
    let gained = line_of(&of("group_gained")[0]["event_id"]);
    assert!(
        gained.contains("group gained")
            && gained.contains(&format!("\"{group_name}\" by group.members.add")),
        "{text}"
    );
    assert!(
        line_of(&put["event_id"]).contains("name.givenName: \"Test\" → \"Another\""),
        "{text}"
    );

    // With the configuration, the state file adds what it holds now.
    let with_state = trace(user1, &["--config", config.to_str().unwrap()], &proxy.audit);
    let last = with_state.lines().last().unwrap();
    assert!(
        last.contains("state now") && last.contains("active"),
        "{with_state}"
    );

    // Nobody by that name: exit 1, and a message.
    let out =
        run(crate::support::scimtap(&["trace", "--user", "nobody@example.com"]).arg(&proxy.audit));
    assert_eq!(out.status.code(), Some(1), "{}", report(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no event names \"nobody@example.com\""),
        "{}",
        report(&out)
    );
    // A file that is not there: 66, as verify.
    let out = run(&mut crate::support::scimtap(&[
        "trace",
        "--user",
        user1,
        "/nonexistent/audit.jsonl",
    ]));
    assert_eq!(out.status.code(), Some(66), "{}", report(&out));
}
