//! `scimtap report` on real traffic: the Okta lifecycle replayed through scimtap (with
//! `[state]`) into scim2-server, its upstream killed before user2's deactivation and brought
//! back for the retry (a gap, then its closing), and the Entra ID lifecycle after it. The JSON
//! report's numbers are checked against counts made here from the audit file; the HTML page is
//! rendered by Chromium (headless) to a PNG kept as a test artifact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::answers::{proxy_with_state, replay_part, user_name_of, wait_for_action};
use crate::scim_server::ScimServer;
use crate::support::process::run;
use crate::support::relay::Relay;
use crate::support::*;

/// `scimtap report ARGS`: its exit code and stderr.
fn report_cli(args: &[&str]) -> (i32, String) {
    let out = run(scimtap(&["report"]).args(args));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Where a test keeps what a person may want to look at afterwards: `$SCIMTAP_TEST_ARTIFACTS`,
/// else `test-artifacts` in the target directory.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("SCIMTAP_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("test-artifacts"))
        })
        .unwrap_or_else(|| peers::root().join("target/test-artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The events of a native audit file (integrity records left out).
fn events_of(audit: &Path) -> Vec<Value> {
    std::fs::read_to_string(audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("record").is_none())
        .collect()
}

fn actions(event: &Value) -> Vec<&str> {
    event["scim"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

fn is_tracker(event: &Value) -> bool {
    actions(event).iter().any(|a| a.starts_with("deprovision."))
}

/// Renders `html` to `png` with Chromium, headless; panics with its log when it fails or
/// takes longer than a minute.
fn screenshot(chromium: &Path, html: &Path, png: &Path) {
    let profile = tempfile::tempdir().unwrap();
    let log = profile.path().join("chromium.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,2000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .env("HOME", profile.path())
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", chromium.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium ran longer than a minute; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success() && png.exists(),
        "chromium failed ({status}); its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_of_the_replayed_lifecycles_matches_the_audit_file_and_renders() {
    let server = ScimServer::start().await;
    let relay = Relay::start(server.port).await;
    let state = tempfile::tempdir().unwrap();
    let mut proxy = proxy_with_state(relay.port, &state);
    let fixture = "okta_lifecycle";
    let deactivate_user2 = "okta: deactivate user2";

    // Okta up to user2's deactivation; then the upstream dies and the rest is refused (502);
    // user2's deactivation becomes a gap; the upstream comes back and the retry closes it.
    let (out, sent) = replay_part(&proxy, fixture, None, Some(deactivate_user2), true, &[]);
    assert!(out.status.success(), "{}", report(&out));
    proxy.wait_for_events(sent.len()).await;
    relay.kill().await;
    let (_, rest) = replay_part(&proxy, fixture, Some(deactivate_user2), None, false, &[]);
    assert!(rest.iter().all(|s| s["status"] == 502), "{rest:?}");
    let events = proxy.wait_for_events(sent.len() + rest.len()).await;
    let user2 = user_name_of(&events, "user.create", 1);
    let gap = wait_for_action(&proxy, "deprovision.gap", &user2).await;
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

    // Entra ID's lifecycle through the same proxy, then a clean stop: the chain closes.
    let replayed = proxy.dir.path().join("entra.jsonl");
    let entra = crate::state::replay("entra_lifecycle", &[&proxy], &replayed, None);
    let expected = sent.len() + rest.len() + retried.len() + entra.len() + 2;
    proxy.wait_for_events(expected).await;
    assert_eq!(proxy.stop(), 0, "{}", proxy.log_tail());
    let audit = proxy.audit.clone();

    // The JSON report.
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("report.json");
    let (code, stderr) = report_cli(&[
        "--format",
        "json",
        "--out",
        json_path.to_str().unwrap(),
        audit.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();

    // Counted here from the audit file: exchanges by action and outcome, and the totals.
    let events = events_of(&audit);
    let exchanges: Vec<&Value> = events.iter().filter(|e| !is_tracker(e)).collect();
    let mut by_action: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for event in &exchanges {
        for action in actions(event) {
            let counts = by_action.entry(action).or_default();
            if event["outcome"] == "success" {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
    let reported: BTreeMap<&str, (u64, u64)> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(
                a["total"],
                a["success"].as_u64().unwrap() + a["failure"].as_u64().unwrap()
            );
            (
                a["action"].as_str().unwrap(),
                (
                    a["success"].as_u64().unwrap(),
                    a["failure"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(reported, by_action);
    assert!(by_action["user.deactivate"].1 >= 1, "{by_action:?}");
    let failed = exchanges
        .iter()
        .filter(|e| e["outcome"] == "failure")
        .count() as u64;
    let writes = exchanges.iter().filter(|e| !actions(e).is_empty()).count() as u64;
    let t = &report["totals"];
    assert_eq!(t["events"], events.len() as u64);
    assert_eq!(t["exchanges"], exchanges.len() as u64);
    assert_eq!(t["failure"], failed);
    assert_eq!(t["success"], exchanges.len() as u64 - failed);
    assert_eq!(t["writes"], writes);
    assert_eq!(t["reads"], exchanges.len() as u64 - writes);
    assert_eq!(t["tracker_events"], 2);
    assert_eq!(t["duplicates"], 0);
    let buckets = report["timeline"]["buckets"].as_array().unwrap();
    let drawn = |field: &str| {
        buckets
            .iter()
            .map(|b| b[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        (drawn("exchanges"), drawn("writes"), drawn("failures")),
        (exchanges.len() as u64, writes, failed)
    );

    // Failures: every failed exchange in one group; the dead upstream's as connect_refused.
    let groups = report["failures"].as_array().unwrap();
    assert_eq!(
        groups
            .iter()
            .map(|g| g["count"].as_u64().unwrap())
            .sum::<u64>(),
        failed
    );
    let refused = exchanges
        .iter()
        .filter(|e| e["failure"]["kind"] == "connect_refused")
        .count() as u64;
    let group = groups
        .iter()
        .find(|g| g["reason"] == "connect_refused")
        .unwrap_or_else(|| panic!("{groups:?}"));
    assert_eq!(
        (group["count"].as_u64(), &group["statuses"]),
        (Some(refused), &serde_json::json!([502]))
    );

    // Deprovisionings: every attempt in one row; user2's gap paired with its closing.
    let d = &report["deprovisionings"];
    let items = d["items"].as_array().unwrap();
    let attempts = exchanges
        .iter()
        .filter(|e| {
            actions(e)
                .iter()
                .any(|a| *a == "user.deactivate" || *a == "user.delete")
        })
        .count() as u64;
    assert_eq!(
        items
            .iter()
            .map(|i| i["attempts"].as_u64().unwrap())
            .sum::<u64>(),
        attempts,
        "{items:#?}"
    );
    let user2_row = items
        .iter()
        .find(|i| i["gap_event_id"] == gap["event_id"])
        .unwrap_or_else(|| panic!("{items:#?}"));
    assert_eq!(user2_row["target"], user2.as_str());
    assert_eq!(user2_row["status"], "confirmed");
    assert_eq!(
        user2_row["first_event_id"],
        closed["deprovision"]["requested_event_id"]
    );
    assert_eq!(
        user2_row["latency_ms"].as_f64(),
        closed["deprovision"]["latency_ms"].as_f64()
    );
    assert_eq!(
        (d["open_gaps"].as_u64(), d["unconfirmed"].as_u64()),
        (Some(0), Some(0)),
        "{items:#?}"
    );
    assert_eq!(d["confirmed"], d["total"]);
    assert_eq!(report["alerts"]["episodes"], serde_json::json!([]));

    // The period, and the chain: intact, closed, every line a record of it.
    let mut times: Vec<&str> = events
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    times.sort_unstable();
    assert_eq!(report["period"]["first_event"], times[0]);
    assert_eq!(report["period"]["last_event"], times[times.len() - 1]);
    let lines = std::fs::read_to_string(&audit).unwrap().lines().count() as u64;
    let integrity = &report["integrity"];
    assert_eq!(
        (integrity["status"].as_str(), integrity["closed"].as_bool()),
        (Some("intact"), Some(true)),
        "{integrity}"
    );
    assert_eq!(integrity["records"], lines);

    // The HTML page, rendered by a real browser.
    let html_path = dir.path().join("report.html");
    let (code, stderr) = report_cli(&[
        "--out",
        html_path.to_str().unwrap(),
        audit.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let page = std::fs::read_to_string(&html_path).unwrap();
    assert!(page.contains("<svg class=\"chart\""), "no chart");
    assert!(
        page.contains(&format!("<div class=\"n \">{}</div>", exchanges.len())),
        "no exchange count"
    );
    assert!(page.contains(&format!(
        "<td class=\"mono\">{}</td>",
        user2_row["first_asked"].as_str().unwrap()
    )));
    assert!(page.contains("Chain intact"));
    let kept = artifacts();
    std::fs::copy(&html_path, kept.join("report.html")).unwrap();
    std::fs::copy(&json_path, kept.join("report.json")).unwrap();

    // A period after every event: nothing in it, all of it outside.
    let (code, stderr) = report_cli(&[
        "--format",
        "json",
        "--from",
        "2999-01-01",
        "--out",
        json_path.to_str().unwrap(),
        audit.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let empty: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(
        (
            &empty["totals"]["events"],
            &empty["totals"]["outside_period"]
        ),
        (&Value::from(0), &Value::from(events.len()))
    );
    let (code, stderr) = report_cli(&[
        "--from",
        "2026-11-22",
        "--to",
        "2026-11-22T00:00:00Z",
        audit.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");

    // An edited line: the report is still written, says where the chain broke, and exits
    // as verify does (10).
    let edited = dir.path().join("edited.jsonl");
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(
        &edited,
        text.replacen("\"outcome\":\"failure\"", "\"outcome\":\"success\"", 1),
    )
    .unwrap();
    let (code, stderr) = report_cli(&[
        "--format",
        "json",
        "--out",
        json_path.to_str().unwrap(),
        edited.to_str().unwrap(),
    ]);
    assert_eq!(code, 10, "{stderr}");
    assert!(stderr.contains("BROKEN"), "{stderr}");
    let broken: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(broken["integrity"]["broken"]["kind"], "edited");

    // Chromium draws the page; the PNG is kept.
    let Some(chromium) = peers::require("chromium") else {
        return;
    };
    let png = kept.join("report.png");
    let _ = std::fs::remove_file(&png);
    screenshot(&chromium, &html_path, &png);
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
    let size = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(
        (size(16), size(20)),
        (1280, 2000),
        "the IHDR's width and height"
    );
    assert!(
        bytes.len() > 20_000,
        "{} is only {} bytes: a blank page?",
        png.display(),
        bytes.len()
    );
}
