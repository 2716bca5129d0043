//! The live view (`[ui]`) in a real browser: headless Chromium (Debian's), driven by
//! tests/peer/ui_check.py through Playwright, against scimtap with `[state]` in front of
//! scim2-server. Entra ID and Okta traffic is replayed while the page is open; the rows must
//! arrive without a reload. Then the list is filtered to one user, their timeline opened, the
//! upstream killed before a deactivation, and the `deprovision.gap` must appear on the open page
//! and in the open gaps. Without the token the view answers 401.
//!
//! Screenshots go to `$SCIMTAP_TEST_ARTIFACTS/ui/` or `target/test-artifacts/ui/`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::answers::{replay_part, user_name_of, wait_for_action};
use crate::scim_server::ScimServer;
use crate::support::relay::Relay;
use crate::support::*;

const TOKEN: &str = "ui-test-token-0123456789abcdef";

/// The longest one browser command may take (its own waits are shorter).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// Where screenshots go.
fn artifacts() -> PathBuf {
    let base = match std::env::var_os("SCIMTAP_TEST_ARTIFACTS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        // <target>/tmp for integration tests; artifacts beside it.
        _ => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .map_or_else(|| peers::root().join("target"), Path::to_path_buf)
            .join("test-artifacts"),
    };
    base.join("ui")
}

/// tests/peer/ui_check.py and its Chromium, one command at a time.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Browser {
    fn start(base: &str, token_file: &Path, chromium: &Path) -> Browser {
        let mut child = Command::new(peers::venv_python())
            .arg("-u")
            .arg(peers::peer_script("ui_check.py"))
            .arg(base)
            .arg(token_file)
            .arg(artifacts())
            .arg("--chromium")
            .arg(chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ui_check.py starts");
        let (tx, answers) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut s = keep.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let stdin = child.stdin.take().unwrap();
        let mut browser = Browser {
            child,
            stdin,
            answers,
            stderr,
        };
        browser.answer("the browser to start");
        browser
    }

    fn answer(&mut self, what: &str) -> Value {
        match self.answers.recv_timeout(COMMAND_TIMEOUT) {
            Ok(line) => {
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{what}: ui_check.py said {line:?}: {e}"));
                assert!(
                    value["ok"] == true,
                    "{what}: {}\nui_check.py stderr:\n{}",
                    serde_json::to_string_pretty(&value).unwrap(),
                    self.stderr.lock().unwrap()
                );
                value
            }
            Err(_) => {
                let _ = self.child.kill();
                panic!(
                    "{what}: no answer from ui_check.py within {COMMAND_TIMEOUT:?}; stderr:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
        }
    }

    fn send(&mut self, command: Value) -> Value {
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| {
                panic!(
                    "{command}: cannot write to ui_check.py: {e}\nstderr:\n{}",
                    self.stderr.lock().unwrap()
                )
            });
        self.answer(&command.to_string())
    }

    fn open(&mut self, path: &str) -> Value {
        self.send(json!({"do": "open", "path": path}))
    }

    fn wait_text(&mut self, selector: &str, text: &str) {
        self.send(json!({"do": "wait_text", "selector": selector, "text": text, "timeout": 25}));
    }

    fn texts(&mut self, selector: &str) -> Vec<String> {
        let answer = self.send(json!({"do": "texts", "selector": selector}));
        serde_json::from_value(answer["texts"].clone()).unwrap()
    }

    fn marked(&mut self) -> bool {
        self.send(json!({"do": "marked"}))["marked"] == true
    }

    fn screenshot(&mut self, name: &str) {
        self.send(json!({"do": "screenshot", "name": name}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.stdin.write_all(b"{\"do\": \"quit\"}\n");
        let _ = self.stdin.flush();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_shows_events_as_they_happen_a_timeline_and_a_gap_in_chromium() {
    let Some(chromium) = peers::require("chromium") else {
        return;
    };
    let server = ScimServer::start().await;
    let relay = Relay::start(server.port).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("ui.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let proxy = Proxy::start(
        ProxyConfig::new(format!("http://127.0.0.1:{}", relay.port)).top(&format!(
            "[state]\npath = \"{}\"\nconfirm_within_secs = 1\n[ui]\naddress = \"127.0.0.1:0\"\ntoken_file = \"{}\"\nrecent_events = 500",
            dir.path().join("state.db").display(),
            token_file.display()
        )),
    );
    let ui = proxy
        .logged_address("UI listening.")
        .unwrap_or_else(|| panic!("no `UI listening.` line; log:\n{}", proxy.log_tail()));
    assert!(
        !proxy.log_tail().contains(TOKEN),
        "the token is never logged"
    );
    let _ = std::fs::remove_dir_all(artifacts());
    let mut browser = Browser::start(&format!("http://{ui}"), &token_file, &chromium);

    // The page is open before any traffic.
    assert_eq!(browser.open("/")["status"], 200);
    browser.wait_text("#live", "live");
    browser.send(json!({"do": "mark"}));

    // Entra ID, then Okta up to user2's deactivation, replayed while the page is open.
    let (out, entra) = replay_part(&proxy, "entra_lifecycle", None, None, true, &[]);
    assert!(out.status.success(), "{}", report(&out));
    let deactivate_user2 = "okta: deactivate user2";
    let (out, okta) = replay_part(
        &proxy,
        "okta_lifecycle",
        None,
        Some(deactivate_user2),
        true,
        &[],
    );
    assert!(out.status.success(), "{}", report(&out));
    // Steps whose placeholders did not resolve were not sent (status null).
    let sent = entra
        .iter()
        .chain(&okta)
        .filter(|s| !s["status"].is_null())
        .count();
    let events = proxy.wait_for_events(sent).await;
    let okta_events: Vec<Value> = events
        .iter()
        .filter(|e| e["client"]["idp"] == "okta")
        .cloned()
        .collect();
    let user1 = user_name_of(&okta_events, "user.create", 0);
    let user2 = user_name_of(&okta_events, "user.create", 1);
    let user1_id = okta_events
        .iter()
        .find(|e| e["scim"]["actions"][0] == "user.create" && e["outcome"] == "success")
        .and_then(|e| e["scim"]["target"]["id"].as_str())
        .unwrap()
        .to_owned();

    browser.wait_text("#events-body", &user2);
    // Entra ID's users (its User-Agent names no identity provider, so the client is its address).
    browser.wait_text("#events-body", "Test_User_");
    browser.wait_text("#events-body", "user.deactivate");
    assert!(
        browser.marked(),
        "the rows arrived by a reload, not the stream"
    );
    let rows = browser.texts("#events-body tr");
    assert!(
        rows.len() >= okta.len(),
        "{} rows for {} Okta requests (and {} Entra ones)",
        rows.len(),
        okta.len(),
        entra.len()
    );
    browser.screenshot("1-events-live");

    // Filtered to one user, by the form (a GET: the server filters).
    browser.send(json!({"do": "fill", "selector": "input[name=user]", "value": user1}));
    browser.send(json!({"do": "click", "selector": "form.filters button[type=submit]"}));
    let rows = browser.texts("#events-body tr");
    assert!(rows.len() >= 5, "{rows:?}");
    for row in &rows {
        assert!(
            row.contains(&user1) || row.contains(&user1_id),
            "a row not about {user1}: {row}"
        );
    }
    browser.screenshot("2-filtered-to-user1");

    // Their timeline, from a row's link.
    let opened = browser.send(json!({"do": "click", "selector": "#events-body td.target a"}));
    assert!(
        opened["url"].as_str().unwrap().contains("/user?u="),
        "{opened}"
    );
    browser.wait_text("#timeline", "created");
    browser.wait_text("#timeline", "deactivated");
    browser.wait_text("#timeline", "reactivated");
    browser.screenshot("3-timeline-user1");

    // The upstream dies before user2's deactivation: a gap appears on the open page.
    assert_eq!(browser.open("/")["status"], 200);
    browser.wait_text("#live", "live");
    browser.send(json!({"do": "mark"}));
    relay.kill().await;
    let (out, refused) = replay_part(
        &proxy,
        "okta_lifecycle",
        Some(deactivate_user2),
        Some("okta: unlink pushed group"),
        false,
        &[],
    );
    assert!(
        refused.iter().all(|s| s["status"] == 502),
        "{}\n{refused:?}",
        report(&out)
    );
    wait_for_action(&proxy, "deprovision.gap", &user2).await;
    browser.wait_text("#events-body", "deprovision.gap");
    browser.wait_text("#gap-count", "1");
    assert!(
        browser.marked(),
        "the gap arrived by a reload, not the stream"
    );
    browser.screenshot("4-gap-live");
    assert_eq!(browser.open("/gaps")["status"], 200);
    browser.wait_text("#gaps", &user2);
    browser.wait_text("#gaps", "connect_refused");
    browser.screenshot("5-open-gaps");

    assert_eq!(browser.open("/activity")["status"], 200);
    assert_eq!(browser.texts("#chart rect.actions").len(), 24);
    assert!(!browser.texts("#activity tbody tr").is_empty());
    browser.screenshot("6-activity");
    assert_eq!(browser.open("/alerts")["status"], 200);
    browser.wait_text("#alerts", "No alert is firing.");

    // Nothing was blocked by the page's own Content-Security-Policy, and no script failed.
    let console = browser.send(json!({"do": "console"}));
    let errors: Vec<&Value> = console["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e.as_str().unwrap_or_default().contains("favicon"))
        .collect();
    assert!(errors.is_empty(), "browser console errors: {errors:?}");

    // Without the token: 401. With it, typed into /login: in.
    let anonymous = browser.send(json!({"do": "anonymous", "path": "/"}));
    assert_eq!(anonymous["status"], 401, "{anonymous}");
    assert!(
        anonymous["www_authenticate"]
            .as_str()
            .is_some_and(|v| v.starts_with("Bearer")),
        "{anonymous}"
    );
    let signed_in = browser.send(json!({"do": "login"}));
    assert_eq!(signed_in["status"], 200, "{signed_in}");
    assert!(proxy.metric("scimtap_ui_unauthorized_requests_total").await >= 1.0);
    assert!(
        !proxy.log_tail().contains(TOKEN),
        "the token is never logged"
    );
    drop(browser);
    for shot in [
        "1-events-live",
        "3-timeline-user1",
        "4-gap-live",
        "5-open-gaps",
    ] {
        let path = artifacts().join(format!("{shot}.png"));
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 0),
            "{} missing",
            path.display()
        );
    }
}
