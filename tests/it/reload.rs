//! SIGHUP reloads the configuration: a valid file's event settings take effect without a
//! restart, an invalid file changes nothing (and is counted), and sections that need a
//! restart are named in the log.

use std::time::{Duration, Instant};

use crate::support::*;
use http::{Request, Response};
use hyper::body::Incoming;

const TOKEN: &str = "reload-test-token-7f3a";

async fn create(proxy: &Proxy, request_id: &str) {
    let req = Request::post(proxy.url("/scim/v2/Users"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("x-request-id", request_id)
        .header("content-type", "application/scim+json")
        .body(full(r#"{"userName":"reload@example.com"}"#))
        .unwrap();
    let resp = http1_client().request(req).await.unwrap();
    assert_eq!(resp.status(), 201);
}

async fn wait_reloads(proxy: &Proxy, result: &str, n: f64) {
    let series = format!("scimtap_config_reloads_total{{result=\"{result}\"}}");
    proxy.wait_for_metric(&series, n, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_event_settings_keeps_the_old_on_error_and_names_restart_sections() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async {
        Response::builder()
            .status(201)
            .body(full(r#"{"id":"u1","userName":"reload@example.com"}"#))
            .unwrap()
    })
    .await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let config_path = proxy.dir.path().join("proxy.toml");
    let original = std::fs::read_to_string(&config_path).unwrap();

    create(&proxy, "before").await;
    assert!(proxy.event_for("before").await["client"]["name"].is_null());

    // A client entry appears: events name the client from now on, without a restart.
    let with_client = format!(
        "{original}\n[[clients]]\nname = \"okta-prod\"\nidp = \"okta\"\ntoken_sha256 = \"{}\"\n",
        sha256_hex(TOKEN.as_bytes())
    );
    std::fs::write(&config_path, &with_client).unwrap();
    proxy.signal("HUP");
    wait_reloads(&proxy, "success", 1.0).await;
    create(&proxy, "after").await;
    let after = proxy.event_for("after").await;
    assert_eq!(after["client"]["name"], "okta-prod", "{after}");
    assert_eq!(after["client"]["idp"], "okta");

    // A broken file is refused whole; the running settings stay.
    std::fs::write(&config_path, format!("{with_client}\n[listen]\nport = 1\n")).unwrap();
    proxy.signal("HUP");
    wait_reloads(&proxy, "failure", 1.0).await;
    create(&proxy, "still").await;
    assert_eq!(
        proxy.event_for("still").await["client"]["name"],
        "okta-prod"
    );
    assert!(
        proxy.log_tail().contains("Configuration reload refused"),
        "{}",
        proxy.log_tail()
    );

    // A change that needs a restart is applied to nothing and named (routes and [upstream]
    // reload: tests/it/routes.rs).
    let slower = with_client.replace("[listen]\n", "[listen]\nheader_read_timeout_secs = 7\n");
    assert_ne!(slower, with_client);
    std::fs::write(&config_path, slower).unwrap();
    proxy.signal("HUP");
    wait_reloads(&proxy, "success", 2.0).await;
    let deadline = Instant::now() + WAIT;
    while !proxy.log_tail().contains("only after a restart") {
        assert!(Instant::now() < deadline, "{}", proxy.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        proxy.log_tail().contains("sections=listen"),
        "{}",
        proxy.log_tail()
    );
}

/// A reload that changes event settings leaves an `integrity.reload` record in the chained
/// trail naming what changed (a key file by its path, never its content), the log says the
/// same at info, and the trail still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_event_settings_is_recorded_in_the_trail_and_logged() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async {
        Response::builder()
            .status(201)
            .body(full(r#"{"id":"u1","userName":"reload@example.com"}"#))
            .unwrap()
    })
    .await;
    let mut proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let config_path = proxy.dir.path().join("proxy.toml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    create(&proxy, "before").await;
    assert!(proxy.event_for("before").await["http"]["request_body"].is_null());

    let key = proxy.dir.path().join("privacy.key");
    std::fs::write(&key, "privacy-key-content-5e1f0a9b77").unwrap();
    std::fs::write(
        &config_path,
        format!(
            "{original}\n[capture]\ninclude_bodies = \"redacted\"\n[privacy]\nhash_key_file = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    proxy.signal("HUP");
    wait_reloads(&proxy, "success", 1.0).await;
    create(&proxy, "after").await;
    let after = proxy.event_for("after").await;
    assert!(!after["http"]["request_body"].is_null(), "{after}");

    let lines = proxy.lines();
    let records: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["record"] == "integrity.reload")
        .collect();
    assert_eq!(records.len(), 1, "{lines:#?}");
    let reload = records[0];
    let changed: Vec<&str> = reload["details"]["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        changed,
        ["capture.include_bodies", "privacy.hash_key_file"],
        "{reload}"
    );
    let text = reload.to_string();
    assert!(text.contains(&key.display().to_string()), "{text}");
    assert!(!text.contains("privacy-key-content"), "{text}");
    // The record sits between the events described before and after the swap.
    let position = |test: &dyn Fn(&serde_json::Value) -> bool| lines.iter().position(test).unwrap();
    assert!(
        position(&|l| l["request_id"] == "before")
            < position(&|l| l["record"] == "integrity.reload")
    );
    assert!(
        position(&|l| l["record"] == "integrity.reload")
            < position(&|l| l["request_id"] == "after")
    );
    let deadline = Instant::now() + WAIT;
    while !proxy
        .log_tail()
        .lines()
        .any(|l| l.contains("INFO") && l.contains("capture.include_bodies, privacy.hash_key_file"))
    {
        assert!(Instant::now() < deadline, "{}", proxy.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(proxy.stop(), 0);
    let (code, out) = scimtap_verify(&config_path, &[proxy.audit_path()], &[]);
    assert_eq!(code, 0, "{out}");
    // Every line, the reload record included, matches the documented schemas.
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/event.schema.json");
    let out = run(std::process::Command::new(peers::venv_python())
        .arg(peers::peer_script("validate_events.py"))
        .arg(schema)
        .arg(proxy.audit_path()));
    assert!(out.status.success(), "{}", report(&out));
}
