//! The command line: check-config, refusals of bad configuration with file, line and key,
//! --version, and a clear error when the port is taken.

use std::path::Path;
use std::process::Output;

use crate::support::{report, run};

fn scimtap(args: &[&str]) -> Output {
    run(&mut crate::support::scimtap(args))
}

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

#[test]
fn check_config_accepts_the_bundled_proxy_toml() {
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
    let out = scimtap(&["check-config", "--config", bundled]);
    assert!(out.status.success(), "{}", report(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:8080"), "{stdout}");
}

#[test]
fn malformed_config_is_refused_naming_file_line_and_key_for_every_problem() {
    let (_dir, path) = write_config(
        "[listen]\n\
         port = 8080\n\
         \n\
         [upstream]\n\
         url = \"http://127.0.0.1:9000\"\n\
         connect_timeout_secs = \"soon\"\n\
         \n\
         [[sinks]]\n\
         type = \"stdout\"\n",
    );
    let out = scimtap(&["check-config", "--config", &path]);
    assert_eq!(out.status.code(), Some(64), "{}", report(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown key, wrong type and missing address, all in one run.
    assert!(
        stderr.contains(&format!("{path}:2: listen.port: unknown field `port`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{path}:6: upstream.connect_timeout_secs: invalid type"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{path}:1: listen.address: missing")),
        "{stderr}"
    );
    assert!(stderr.contains("3 problems"), "{stderr}");
}

#[test]
fn running_with_a_bad_config_binds_nothing_and_exits_64() {
    let (_dir, path) = write_config("[listen]\naddress = \"127.0.0.1:0\"\n");
    let out = scimtap(&["--config", &path]);
    assert_eq!(out.status.code(), Some(64), "{}", report(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upstream: missing section [upstream]"),
        "{stderr}"
    );
    assert!(!stderr.contains("Proxy listening"), "{stderr}");
}

#[test]
fn config_path_comes_from_the_environment() {
    let (_dir, path) = write_config(
        "[listen]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[[sinks]]\ntype = \"stdout\"\n",
    );
    let out = run(crate::support::scimtap(&["check-config"]).env("SCIMTAP_CONFIG", &path));
    assert!(out.status.success(), "{}", report(&out));
}

#[test]
fn missing_config_file_is_named() {
    let out = scimtap(&["check-config", "--config", "/nonexistent/proxy.toml"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/proxy.toml"));
}

#[test]
fn version_is_printed() {
    let out = scimtap(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("scimtap {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_taken_port_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_dir, path) = write_config(&format!(
        "[listen]\naddress = \"{addr}\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[[sinks]]\ntype = \"stdout\"\n"
    ));
    let out = scimtap(&["--config", &path]);
    assert_eq!(out.status.code(), Some(1), "{}", report(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn secrets_from_the_environment_and_files_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("hec.token");
    std::fs::write(&token, "file-secret-4c1d9e").unwrap();
    let text = r#"[listen]
address = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:9"
[[sinks]]
type = "http"
url = "http://127.0.0.1:9/ingest"
headers = { "X-Api-Key" = "${SCIMTAP_TEST_SECRET}" }
[[sinks]]
type = "http"
url = "http://127.0.0.1:9/services/collector/event"
encoding = "splunk_hec"
token_file = "${SCIMTAP_TEST_DIR}/hec.token"
"#;
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    let out = run(crate::support::scimtap(&["check-config", "--config"])
        .arg(&path)
        .env("SCIMTAP_TEST_SECRET", "env-secret-93b2aa")
        .env("SCIMTAP_TEST_DIR", dir.path()));
    let all = report(&out);
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("env-secret-93b2aa"), "{all}");
    assert!(!all.contains("file-secret-4c1d9e"), "{all}");

    // Unset: refused, naming the line and the variable, never a value.
    let out = run(crate::support::scimtap(&["check-config", "--config"])
        .arg(&path)
        .env_remove("SCIMTAP_TEST_SECRET")
        .env("SCIMTAP_TEST_DIR", dir.path()));
    assert_eq!(out.status.code(), Some(64), "{}", report(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            ":8: ${SCIMTAP_TEST_SECRET}: environment variable SCIMTAP_TEST_SECRET is not set"
        ),
        "{stderr}"
    );
}

/// The `file:line:` of each problem line `check-config` printed, in order (`None`: no line).
fn problem_lines(stderr: &str, path: &str) -> Vec<Option<usize>> {
    stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix(path))
        .filter_map(|rest| {
            let rest = rest.strip_prefix(':')?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some(digits.parse().ok())
        })
        .collect()
}

#[test]
fn a_misspelt_sink_type_is_named_with_its_line_and_problems_come_in_line_order() {
    let (_dir, path) = write_config(
        "[listen]\n\
         port = 8080\n\
         \n\
         [upstream]\n\
         url = \"http://127.0.0.1:9000\"\n\
         connect_timeout_secs = \"soon\"\n\
         \n\
         [[sinks]]\n\
         typ = \"stdout\"\n",
    );
    let out = scimtap(&["check-config", "--config", &path]);
    assert_eq!(out.status.code(), Some(64), "{}", report(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{path}:9: sinks[0].typ: unknown field `typ`")),
        "the misspelt key is named at its line: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{path}:8: sinks[0].type: missing")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("no [[sinks]] configured"),
        "a sink table is there, only its type is misspelt: {stderr}"
    );
    // Every problem is kept: listen.port, listen.address, the timeout, typ, type.
    assert!(stderr.contains("5 problems"), "{stderr}");
    let lines = problem_lines(&stderr, &path);
    assert_eq!(lines.len(), 5, "{stderr}");
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| (l.is_none(), *l));
    assert_eq!(lines, sorted, "problems sorted by line: {stderr}");
}

#[test]
fn problems_without_a_line_come_last() {
    let (_dir, path) = write_config(
        "[upstream]\nurl = \"http://127.0.0.1:9000\"\nconnect_timeout_secs = \"soon\"\n",
    );
    let out = scimtap(&["check-config", "--config", &path]);
    assert_eq!(out.status.code(), Some(64), "{}", report(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = problem_lines(&stderr, &path);
    assert!(lines.len() >= 3, "{stderr}");
    assert_eq!(lines[0], Some(3), "{stderr}");
    assert!(lines[1..].iter().all(Option::is_none), "{stderr}");
}
/// An unkeyed chain: `verify` needs no configuration at all; a keyed one takes `--key-file`.
#[test]
fn verify_needs_no_configuration_for_an_unkeyed_chain_and_takes_a_key_file() {
    use scimtap::integrity::{Chain, RecordKind};
    let dir = tempfile::tempdir().unwrap();
    let write_chain = |key: Option<&[u8]>, name: &str| {
        let mut chain = Chain::resume(key.map(<[u8]>::to_vec), None);
        let mut text = chain
            .record(RecordKind::Start, serde_json::json!({"genesis": true}))
            .1;
        text.extend(chain.seal(b"{\"event_id\":\"e1\"}\n".to_vec()));
        text.extend(chain.record(RecordKind::Stop, serde_json::json!({})).1);
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let unkeyed = write_chain(None, "plain.jsonl");
    let key = b"a-long-random-key-for-verify-cli";
    let keyed = write_chain(Some(key), "keyed.jsonl");
    let key_file = dir.path().join("chain.key");
    std::fs::write(&key_file, format!("{}\n", String::from_utf8_lossy(key))).unwrap();
    // Run where no proxy.toml exists.
    let verify = |args: &[&str], file: &Path| {
        run(crate::support::scimtap(&["verify"])
            .args(args)
            .arg(file)
            .current_dir(dir.path()))
    };
    let out = verify(&[], &unkeyed);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK: 3 records"));
    let out = verify(&["--key-file", &key_file.display().to_string()], &keyed);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    // The keyed chain without its key: edited at seq 1, with a hint.
    let out = verify(&[], &keyed);
    assert_eq!(out.status.code(), Some(10), "{}", report(&out));
    assert!(report(&out).contains("--key-file"), "{}", report(&out));
    // A key file that cannot be read is a usage problem, not a broken chain.
    let out = verify(&["--key-file", "/nonexistent/chain.key"], &keyed);
    assert_eq!(out.status.code(), Some(64), "{}", report(&out));
}
