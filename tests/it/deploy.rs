//! The deployment artifacts in `deploy/`: the systemd unit passes `systemd-analyze verify`
//! (and its offline security review), scimtap speaks the sd_notify protocol, the Kubernetes
//! manifests are valid YAML whose probes, ports and users agree with the image and the embedded
//! config, the Dockerfile builds a non-root image with a working HEALTHCHECK, the example
//! configs for Okta and Entra ID really validate, and `scimtap healthcheck` answers as the
//! container and the kubelet expect.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::peers::{self, root};
use crate::support::{
    closed_port, report, run, scimtap_bin, sha256_hex, Proxy, ProxyConfig, TestPki,
};
use serde_json::Value;

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn scimtap(args: &[&str]) -> Output {
    run(&mut crate::support::scimtap(args))
}

/// Files the example configs refer to under `/etc/scimtap`, made up in `dir`: a certificate
/// and its key, CA bundles, key and token files. Returns the config text pointing there.
fn materialize(text: &str, dir: &Path, pki: &TestPki) -> String {
    let etc = dir.join("etc/scimtap");
    let mut rest = text;
    while let Some(start) = rest.find("\"/etc/scimtap/") {
        let path = &rest[start + 1..];
        let end = path.find('"').unwrap();
        let rel = path["/etc/scimtap/".len()..end].to_owned();
        rest = &path[end..];
        let file = etc.join(&rel);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let content = if rel.ends_with("key.pem") {
            pki.key_pem.clone()
        } else if rel.ends_with("cert.pem") {
            pki.leaf_pem.clone()
        } else if rel.ends_with(".pem") {
            pki.ca_pem.clone()
        } else {
            format!("{}\n", sha256_hex(rel.as_bytes()))
        };
        std::fs::write(&file, content).unwrap();
    }
    text.replace("\"/etc/scimtap/", &format!("\"{}/", etc.display()))
}

/// The optional blocks of an example uncommented: a line `# [section]` or `# [[section]]` and
/// the `# key = value` lines right after it.
fn uncomment_optional_blocks(text: &str) -> (String, usize) {
    let mut out = String::new();
    let mut in_block = false;
    let mut blocks = 0;
    for line in text.lines() {
        let header = line
            .strip_prefix("# [")
            .is_some_and(|rest| rest.trim_end().ends_with(']'));
        if header {
            in_block = true;
            blocks += 1;
        } else if !line.starts_with("# ") {
            in_block = false;
        }
        if in_block {
            out.push_str(&line[2..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    (out, blocks)
}

/// `scimtap check-config` on `text`, with every `/etc/scimtap` file it names made up.
fn check_config(name: &str, text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let text = materialize(text, dir.path(), &pki);
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    scimtap(&["check-config", "--config", path.to_str().unwrap()])
}

fn toml_table(text: &str) -> toml::Table {
    text.parse().unwrap()
}

fn port_of(table: &toml::Table, section: &str) -> u16 {
    let address = table[section]["address"].as_str().unwrap();
    address.parse::<SocketAddr>().unwrap().port()
}

fn rust_version() -> String {
    toml_table(&read("Cargo.toml"))["package"]["rust-version"]
        .as_str()
        .unwrap()
        .to_owned()
}

// === systemd ===

/// The unit's settings, in order: (section, key, value).
fn unit_settings(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{line}"));
        out.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    out
}

fn service_values(settings: &[(String, String, String)], key: &str) -> Vec<String> {
    settings
        .iter()
        .filter(|(s, k, _)| s == "Service" && k == key)
        .map(|(_, _, v)| v.clone())
        .collect()
}

/// The unit, with ExecStart pointing at the binary under test, written to a temp dir.
fn installable_unit() -> (tempfile::TempDir, PathBuf) {
    let text = read("deploy/systemd/scimtap.service");
    assert!(text.contains("ExecStart=/usr/local/bin/scimtap "), "{text}");
    let text = text.replace(
        "ExecStart=/usr/local/bin/scimtap ",
        &format!("ExecStart={} ", scimtap_bin()),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scimtap.service");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = peers::require("systemd-analyze") else {
        return;
    };
    let (_dir, unit) = installable_unit();
    let out = run(Command::new(&analyze).arg("verify").arg(&unit));
    // verify exits 0 on an unknown key or a value it cannot parse, and only warns: any
    // output at all is a failure.
    assert!(out.status.success(), "{}", report(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        report(&out)
    );
}

#[test]
fn systemd_unit_passes_the_offline_security_review() {
    let Some(analyze) = peers::require("systemd-analyze") else {
        return;
    };
    let (_dir, unit) = installable_unit();
    // Exposure 0.0 (best) .. 10.0; --threshold is in tenths. 2.0 or less is rated "OK".
    let out = run(Command::new(&analyze)
        .args(["security", "--offline=yes", "--no-pager", "--threshold=20"])
        .arg(&unit));
    assert!(out.status.success(), "{}", report(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Overall exposure level"), "{stdout}");
}

#[test]
fn systemd_unit_is_sandboxed_and_stops_in_time() {
    let settings = unit_settings(&read("deploy/systemd/scimtap.service"));
    let one = |key: &str| -> String {
        let values = service_values(&settings, key);
        assert_eq!(
            values.len(),
            1,
            "[Service] {key}= should be set once: {values:?}"
        );
        values[0].clone()
    };
    for (key, value) in [
        ("Type", "notify"),
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictNamespaces", "yes"),
        ("ExecReload", "kill -HUP $MAINPID"),
        ("RestartPreventExitStatus", "64"),
        ("StateDirectory", "scimtap"),
        ("LogsDirectory", "scimtap"),
        ("ConfigurationDirectory", "scimtap"),
    ] {
        assert_eq!(one(key), value, "[Service] {key}=");
    }
    // No User= without DynamicUser and nothing that would hand back privileges.
    for key in [
        "ReadWritePaths",
        "PermissionsStartOnly",
        "SupplementaryGroups",
    ] {
        assert!(service_values(&settings, key).is_empty(), "{key}= is set");
    }
    // The config it starts with lives in its ConfigurationDirectory.
    assert!(one("ExecStart").ends_with(" --config /etc/scimtap/proxy.toml"));

    // The stop timeout covers the drain deadline of every config meant for it.
    let stop: f64 = one("TimeoutStopSec").parse().unwrap();
    for rel in [
        "deploy/examples/okta.toml",
        "deploy/examples/entra.toml",
        "proxy.toml",
    ] {
        let table = toml_table(&read(rel));
        let shutdown = table
            .get("shutdown_timeout_secs")
            .and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
            .unwrap_or(30.0);
        assert!(
            stop > shutdown,
            "TimeoutStopSec={stop} must exceed {rel}'s shutdown_timeout_secs={shutdown}"
        );
    }
    // Every path the examples write to is one systemd makes writable.
    for rel in ["deploy/examples/okta.toml", "deploy/examples/entra.toml"] {
        let text = read(rel);
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some(at) = line.find("\"/var/") {
                let path = &line[at + 1..];
                assert!(
                    path.starts_with("/var/log/scimtap/") || path.starts_with("/var/lib/scimtap/"),
                    "{rel}: {line}: not under LogsDirectory or StateDirectory"
                );
            }
        }
    }
}

// === sd_notify ===

/// scimtap with `NOTIFY_SOCKET` set, on a closed upstream port.
fn start_notified(notify_socket: &str) -> Proxy {
    let upstream = format!("http://127.0.0.1:{}", closed_port());
    Proxy::start(ProxyConfig::new(upstream).env("NOTIFY_SOCKET", notify_socket))
}

fn recv_state(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn check_notifications(socket: &UnixDatagram, address: &str) {
    let mut proxy = start_notified(address);
    let ready = recv_state(socket);
    assert_eq!(ready, "READY=1");
    // READY=1 comes once the proxy port accepts: systemd starts dependants only then.
    TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(5))
        .expect("the proxy accepts once READY=1 was sent");
    let code = proxy.stop();
    assert_eq!(code, 0, "log:\n{}", proxy.log_tail());
    assert_eq!(recv_state(socket), "STOPPING=1");
}

#[test]
fn type_notify_gets_ready_once_listening_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    check_notifications(&socket, path.to_str().unwrap());
}

#[test]
fn type_notify_reaches_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    // systemd passes its notification socket as an abstract address: "@name".
    let name = format!("scimtap-deploy-test-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&address).unwrap();
    check_notifications(&socket, &format!("@{name}"));
}

#[test]
fn without_notify_socket_nothing_is_sent_and_the_proxy_runs() {
    let mut proxy = start_notified("");
    // An empty NOTIFY_SOCKET is not a socket: a warning at most, and the proxy serves.
    TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(5)).unwrap();
    assert_eq!(proxy.stop(), 0, "log:\n{}", proxy.log_tail());
}

// === scimtap healthcheck ===

/// An admin stand-in: answers every connection with `response`, or never when `None`.
fn fake_admin(response: Option<&'static str>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            match response {
                Some(response) => {
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf);
                    let _ = stream.write_all(response.as_bytes());
                }
                None => held.push(stream),
            }
        }
    });
    addr
}

fn healthcheck(args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["healthcheck"];
    all.extend_from_slice(args);
    let out = scimtap(&all);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn healthcheck_passes_against_a_running_scimtap_and_fails_once_it_stopped() {
    let mut proxy = Proxy::start(ProxyConfig::new(format!(
        "http://127.0.0.1:{}",
        closed_port()
    )));
    let base = format!("http://{}", proxy.admin);
    let (code, stdout, stderr) = healthcheck(&["--url", &base]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, format!("{base}/readyz: ready\n"));
    let (code, stdout, _) = healthcheck(&["--url", &base, "--liveness"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout, format!("{base}/healthz: ok\n"));

    // From a config file: only [admin] address is read, so a config whose key files are not
    // readable here (a credential of another user, say) still works.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\naddress = \"0.0.0.0:8443\"\ntls_cert_file = \"/nonexistent/cert.pem\"\n\
             tls_key_file = \"/nonexistent/key.pem\"\n[upstream]\nurl = \"https://saas.example.com\"\n\
             [admin]\naddress = \"{}\"\n[[sinks]]\ntype = \"stdout\"\n",
            proxy.admin
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = healthcheck(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    // SCIMTAP_CONFIG, as the container image sets it.
    let out = run(crate::support::scimtap(&["healthcheck"]).env("SCIMTAP_CONFIG", &config));
    assert!(out.status.success(), "{}", report(&out));

    assert_eq!(proxy.stop(), 0);
    let (code, stdout, stderr) = healthcheck(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with(&format!(
            "scimtap healthcheck: http://{}/readyz: cannot connect",
            proxy.admin
        )),
        "{stderr}"
    );
}

#[test]
fn healthcheck_fails_on_503_with_the_reason_and_probes_wildcards_on_loopback() {
    let admin = fake_admin(Some(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 35\r\n\
         connection: close\r\n\r\nnot ready: sinks failing: collector\n",
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    // The image's config listens on 0.0.0.0: the probe goes to 127.0.0.1.
    std::fs::write(
        &config,
        format!("[admin]\naddress = \"0.0.0.0:{}\"\n", admin.port()),
    )
    .unwrap();
    let (code, stdout, stderr) = healthcheck(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr,
        format!(
            "scimtap healthcheck: http://127.0.0.1:{}/readyz: 503 not ready: sinks failing: collector\n",
            admin.port()
        )
    );
}

#[test]
fn healthcheck_gives_up_after_its_timeout() {
    let admin = fake_admin(None);
    let started = Instant::now();
    let (code, _, stderr) =
        healthcheck(&["--url", &format!("http://{admin}"), "--timeout-secs", "0.5"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no answer within 0.5s"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn healthcheck_explains_a_config_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[listen]\naddress = \"127.0.0.1:8080\"\n",
            "has no [admin] section",
        ),
        ("[admin]\naddress = \"127.0.0.1:0\"\n", "port 0"),
        (
            "[admin]\naddress = \"localhost:9090\"\n",
            "admin.address \"localhost:9090\"",
        ),
        ("[admin\n", "proxy.toml"),
    ];
    for (text, expected) in cases {
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, text).unwrap();
        let (code, _, stderr) = healthcheck(&["--config", config.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let (code, _, stderr) = healthcheck(&["--config", "/nonexistent/proxy.toml"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("cannot read /nonexistent/proxy.toml"),
        "{stderr}"
    );
    let (code, _, stderr) = healthcheck(&["--url", "https://127.0.0.1:9090"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("plain http://"), "{stderr}");
}

// === Dockerfile ===

/// The Dockerfile's instructions: (INSTRUCTION, arguments), continuation lines joined.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (instruction, args) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((instruction.to_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

#[test]
fn dockerfile_builds_with_the_msrv_and_runs_non_root_with_a_healthcheck() {
    let instructions = dockerfile_instructions(&read("deploy/docker/Dockerfile"));
    let all = |name: &str| -> Vec<String> {
        instructions
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.clone())
            .collect()
    };
    let froms = all("FROM");
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert_eq!(
        froms[0],
        format!("rust:{}-bookworm AS build", rust_version()),
        "the builder is the toolchain of Cargo.toml's rust-version"
    );
    assert!(
        froms[0].contains("bookworm") && froms.last().unwrap().contains("debian12"),
        "builder and runtime share Debian 12's glibc: {froms:?}"
    );

    // The runtime stage: everything after the last FROM.
    let last_from = instructions.iter().rposition(|(i, _)| i == "FROM").unwrap();
    let runtime = &instructions[last_from..];
    let get = |name: &str| -> Vec<String> {
        runtime
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.clone())
            .collect()
    };
    assert!(get("RUN").is_empty(), "the distroless runtime has no shell");
    let user = get("USER");
    assert_eq!(user.len(), 1, "{user:?}");
    let (uid, gid) = user[0].split_once(':').unwrap();
    let (uid, gid): (u32, u32) = (uid.parse().unwrap(), gid.parse().unwrap());
    assert!(uid != 0 && gid != 0, "numeric and not root: {user:?}");

    let entrypoint: Vec<String> = serde_json::from_str(&get("ENTRYPOINT")[0]).unwrap();
    assert_eq!(entrypoint, ["/usr/local/bin/scimtap"]);
    assert!(get("COPY")
        .iter()
        .any(|c| c.ends_with("/out/scimtap /usr/local/bin/scimtap")));

    // The healthcheck runs `scimtap healthcheck`, in exec form (there is no shell).
    let health = get("HEALTHCHECK");
    assert_eq!(health.len(), 1, "{health:?}");
    let cmd = &health[0][health[0].find("CMD ").unwrap() + 4..];
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    assert_eq!(cmd[..2], ["/usr/local/bin/scimtap", "healthcheck"]);
    let timeout: f64 = cmd[cmd.iter().position(|a| a == "--timeout-secs").unwrap() + 1]
        .parse()
        .unwrap();
    let docker_timeout = health[0]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--timeout="))
        .and_then(|t| t.strip_suffix('s'))
        .map(|t| t.parse::<f64>().unwrap())
        .unwrap();
    assert!(
        timeout < docker_timeout,
        "the probe gives up before Docker kills it"
    );

    // The config the image ships: where SCIMTAP_CONFIG says, valid, ports exposed.
    let env = get("ENV");
    assert!(
        env.contains(&"SCIMTAP_CONFIG=/etc/scimtap/proxy.toml".to_owned()),
        "{env:?}"
    );
    assert!(get("COPY").contains(&"deploy/docker/proxy.toml /etc/scimtap/proxy.toml".to_owned()));
    let config = read("deploy/docker/proxy.toml");
    let out = check_config("proxy.toml", &config);
    assert!(out.status.success(), "{}", report(&out));
    let table = toml_table(&config);
    let exposed: Vec<u16> = get("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    assert_eq!(
        exposed,
        [port_of(&table, "listen"), port_of(&table, "admin")]
    );
    // The admin port answers on the container's loopback too (the HEALTHCHECK runs inside).
    let admin: SocketAddr = table["admin"]["address"].as_str().unwrap().parse().unwrap();
    assert!(admin.ip().is_unspecified() || admin.ip().is_loopback());
    // Its sink writes where the image has a volume owned by the user.
    let volumes = get("VOLUME").join(" ");
    for dir in ["/var/log/scimtap", "/var/lib/scimtap"] {
        assert!(volumes.contains(dir), "{volumes}");
        assert!(
            get("COPY")
                .iter()
                .any(|c| c.contains(&format!("--chown={uid}:{gid}"))
                    && c.ends_with(&format!("{dir}/"))),
            "{dir} is created owned by {uid}:{gid}"
        );
    }
    let sink_path = table["sinks"][0]["path"].as_str().unwrap();
    assert!(sink_path.starts_with("/var/log/scimtap/"), "{sink_path}");

    // The build context leaves out what the build does not need.
    let ignore = read("deploy/docker/Dockerfile.dockerignore");
    for entry in ["target/", ".git/", "tests/peer/.venv/"] {
        assert!(ignore.lines().any(|l| l == entry), "{entry} not ignored");
    }
}

// === Kubernetes ===

/// Every YAML document of `rel`, through PyYAML (tests/peer/.venv) into JSON.
fn yaml_documents(rel: &str) -> Vec<Value> {
    let python = peers::venv_python();
    let out = run(Command::new(&python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             with open(sys.argv[1]) as f:\n    docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
             print(json.dumps(docs))",
        ])
        .arg(root().join(rel)),
    );
    assert!(
        out.status.success(),
        "{rel} is not valid YAML:\n{}",
        report(&out)
    );
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!docs.is_empty(), "{rel}: no documents");
    docs
}

fn image_user() -> (u64, u64) {
    let instructions = dockerfile_instructions(&read("deploy/docker/Dockerfile"));
    let user = instructions
        .iter()
        .rev()
        .find(|(i, _)| i == "USER")
        .map(|(_, a)| a.clone())
        .unwrap();
    let (uid, gid) = user.split_once(':').unwrap();
    (uid.parse().unwrap(), gid.parse().unwrap())
}

/// Checks one manifest file; returns the kinds it holds.
fn check_manifests(rel: &str) -> Vec<String> {
    let docs = yaml_documents(rel);
    let mut kinds = Vec::new();
    let mut config_maps: BTreeMap<String, &Value> = BTreeMap::new();
    for doc in &docs {
        let kind = doc["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{rel}: no kind: {doc}"));
        assert!(
            doc["apiVersion"].is_string(),
            "{rel}: {kind} has no apiVersion"
        );
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{rel}: {kind} has no metadata.name"));
        kinds.push(kind.to_owned());
        if kind == "ConfigMap" {
            config_maps.insert(name.to_owned(), doc);
        }
    }
    let (uid, gid) = image_user();
    for deployment in docs.iter().filter(|d| d["kind"] == "Deployment") {
        assert_eq!(deployment["apiVersion"], "apps/v1");
        let pod = &deployment["spec"]["template"];
        let labels = pod["metadata"]["labels"].as_object().unwrap();
        for (key, value) in deployment["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(
                labels.get(key),
                Some(value),
                "{rel}: selector matches the pod"
            );
        }
        let spec = &pod["spec"];
        let volumes: Vec<&Value> = spec["volumes"].as_array().unwrap().iter().collect();
        let containers = spec["containers"].as_array().unwrap();
        let scimtap = containers
            .iter()
            .find(|c| c["name"] == "scimtap")
            .unwrap_or_else(|| panic!("{rel}: no scimtap container"));

        // Probes: /readyz and /healthz on the port named "admin".
        let ports = scimtap["ports"].as_array().unwrap();
        let port = |name: &str| -> u64 {
            ports
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{rel}: no container port {name}"))["containerPort"]
                .as_u64()
                .unwrap()
        };
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &scimtap[probe]["httpGet"];
            assert_eq!(get["path"], path, "{rel}: {probe}");
            assert_eq!(get["port"], "admin", "{rel}: {probe} on the admin port");
        }

        // Locked down, as the image's user.
        let pod_sc = &spec["securityContext"];
        let sc = &scimtap["securityContext"];
        let either = |key: &str| -> Value {
            if sc[key].is_null() {
                pod_sc[key].clone()
            } else {
                sc[key].clone()
            }
        };
        assert_eq!(either("runAsNonRoot"), true, "{rel}");
        assert_eq!(
            either("runAsUser"),
            uid,
            "{rel}: runAsUser is the image's USER"
        );
        assert_eq!(either("runAsGroup"), gid, "{rel}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{rel}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{rel}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{rel}"
        );
        assert!(
            scimtap["resources"]["requests"].is_object(),
            "{rel}: resources"
        );
        assert!(
            scimtap["resources"]["limits"]["memory"].is_string(),
            "{rel}: memory limit"
        );

        // The config: where SCIMTAP_CONFIG says, in a volume from a ConfigMap of this file.
        let config_path = scimtap["env"]
            .as_array()
            .and_then(|env| env.iter().find(|e| e["name"] == "SCIMTAP_CONFIG"))
            .map(|e| e["value"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| "/etc/scimtap/proxy.toml".to_owned());
        let mounts = scimtap["volumeMounts"].as_array().unwrap();
        let mount = mounts
            .iter()
            .find(|m| config_path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
            .unwrap_or_else(|| panic!("{rel}: nothing mounted at {config_path}"));
        let file_in_mount = &config_path[mount["mountPath"].as_str().unwrap().len() + 1..];
        for m in mounts {
            assert!(
                volumes.iter().any(|v| v["name"] == m["name"]),
                "{rel}: volume {} is not declared",
                m["name"]
            );
        }
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        let (map_name, key) = if let Some(sources) = volume["projected"]["sources"].as_array() {
            let source = sources
                .iter()
                .filter_map(|s| s["configMap"].as_object())
                .find(|cm| {
                    cm["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|i| i["path"] == file_in_mount)
                })
                .unwrap_or_else(|| panic!("{rel}: no ConfigMap item for {file_in_mount}"));
            let item = source["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["path"] == file_in_mount)
                .unwrap();
            (
                source["name"].as_str().unwrap().to_owned(),
                item["key"].as_str().unwrap().to_owned(),
            )
        } else {
            (
                volume["configMap"]["name"].as_str().unwrap().to_owned(),
                file_in_mount.to_owned(),
            )
        };
        let config_map = config_maps
            .get(&map_name)
            .unwrap_or_else(|| panic!("{rel}: ConfigMap {map_name} is not in the file"));
        let config = config_map["data"][&key].as_str().unwrap();

        // It validates, and the ports agree with the container's.
        let out = check_config("proxy.toml", config);
        assert!(out.status.success(), "{rel}: {}", report(&out));
        let table = toml_table(config);
        assert_eq!(u64::from(port_of(&table, "admin")), port("admin"), "{rel}");
        assert_eq!(u64::from(port_of(&table, "listen")), port("scim"), "{rel}");
        // Files it writes are on writable volumes (the root filesystem is read-only).
        for line in config.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some(at) = line.find("\"/var/") {
                let path = &line[at + 1..line[at + 1..].find('"').unwrap() + at + 1];
                let writable = mounts.iter().any(|m| {
                    m["readOnly"] != true
                        && path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap()))
                });
                assert!(writable, "{rel}: {path} is not on a writable volume");
            }
        }
        // Secrets it reads are in the config volume.
        for line in config.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some(at) = line.find("\"/etc/scimtap/") {
                let path = &line[at + 1..line[at + 1..].find('"').unwrap() + at + 1];
                let rel_path = &path["/etc/scimtap/".len()..];
                let provided = volume["projected"]["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| {
                        s.as_object().unwrap().values().any(|src| {
                            src["items"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|i| i["path"] == rel_path)
                        })
                    });
                assert!(provided, "{rel}: nothing provides {path}");
            }
        }

        // Time to drain: SIGKILL comes after the grace period.
        let shutdown = table
            .get("shutdown_timeout_secs")
            .and_then(toml::Value::as_integer)
            .unwrap_or(30) as u64;
        let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
        let pre_stop = scimtap["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        assert!(grace > shutdown + pre_stop, "{rel}: grace {grace}s");

        // Services send to the scimtap port, never to the admin port or the app.
        for service in docs.iter().filter(|d| d["kind"] == "Service") {
            for (key, value) in service["spec"]["selector"].as_object().unwrap() {
                assert_eq!(
                    labels.get(key),
                    Some(value),
                    "{rel}: Service selects the pods"
                );
            }
            for p in service["spec"]["ports"].as_array().unwrap() {
                assert_eq!(p["targetPort"], "scim", "{rel}: Service targets scimtap");
            }
        }
    }
    kinds
}

#[test]
fn kubernetes_deployment_is_valid_and_probes_the_admin_port() {
    let kinds = check_manifests("deploy/kubernetes/deployment.yaml");
    assert!(kinds.contains(&"Deployment".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"ConfigMap".to_owned()), "{kinds:?}");
    assert!(
        kinds.contains(&"PodDisruptionBudget".to_owned()),
        "{kinds:?}"
    );
    // The Service of the Deployment is in its own file: same labels, scimtap's port.
    let service = yaml_documents("deploy/kubernetes/service.yaml");
    let deployment = yaml_documents("deploy/kubernetes/deployment.yaml");
    let deployment = deployment
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    assert_eq!(service.len(), 1);
    let service = &service[0];
    assert_eq!(service["kind"], "Service");
    assert!(service["apiVersion"].is_string() && service["metadata"]["name"].is_string());
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(labels.get(key), Some(value));
    }
    for port in service["spec"]["ports"].as_array().unwrap() {
        assert_eq!(port["targetPort"], "scim");
    }
    // No session affinity: any replica takes any request.
    assert!(
        service["spec"]["sessionAffinity"].is_null()
            || service["spec"]["sessionAffinity"] == "None"
    );
}

#[test]
fn kubernetes_sidecar_is_valid_and_probes_the_admin_port() {
    let kinds = check_manifests("deploy/kubernetes/sidecar.yaml");
    for kind in ["ConfigMap", "Deployment", "Service"] {
        assert!(kinds.contains(&kind.to_owned()), "{kinds:?}");
    }
}

#[test]
fn every_kubernetes_manifest_parses() {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    assert_eq!(files, ["deployment.yaml", "service.yaml", "sidecar.yaml"]);
    for file in files {
        for doc in yaml_documents(&format!("deploy/kubernetes/{file}")) {
            assert!(doc["apiVersion"].is_string(), "{file}: {doc}");
            assert!(doc["kind"].is_string(), "{file}: {doc}");
            assert!(doc["metadata"]["name"].is_string(), "{file}: {doc}");
        }
    }
}

// === example configs ===

fn check_example(rel: &str, idp: &str, base_path: &str) {
    let text = read(rel);
    let out = check_config("proxy.toml", &text);
    assert!(out.status.success(), "{rel}: {}", report(&out));
    // The commented-out options are valid too, once uncommented.
    let (full, blocks) = uncomment_optional_blocks(&text);
    assert!(blocks >= 2, "{rel}: {blocks} optional blocks");
    let out = check_config("proxy.toml", &full);
    assert!(
        out.status.success(),
        "{rel} with its optional blocks:\n{full}\n{}",
        report(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(", 2 sinks)"), "{stdout}");

    let table = toml_table(&text);
    assert!(table["upstream"]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    assert!(table["listen"]["tls_cert_file"]
        .as_str()
        .unwrap()
        .starts_with("/etc/scimtap/"));
    assert!(table["listen"]["tls_key_file"]
        .as_str()
        .unwrap()
        .starts_with("/etc/scimtap/"));
    let admin: SocketAddr = table["admin"]["address"].as_str().unwrap().parse().unwrap();
    assert!(admin.ip().is_loopback(), "{rel}: admin stays on loopback");
    assert_eq!(
        table["scim"]["base_path"].as_str(),
        Some(base_path),
        "{rel}"
    );
    let client = &table["clients"][0];
    assert_eq!(client["idp"].as_str(), Some(idp));
    // The placeholder is what its comment says it is.
    let token = client["token_sha256"].as_str().unwrap();
    let said = text
        .split("(the hash of \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("{rel}: the placeholder's comment is missing"));
    assert_eq!(token, sha256_hex(said.as_bytes()), "{rel}: {said}");
    assert!(text.contains("printf %s \"$TOKEN\" | sha256sum"), "{rel}");
    // A disk buffer under the StateDirectory.
    let buffer = &table["sinks"][0]["buffer"];
    assert_eq!(buffer["type"].as_str(), Some("disk"));
    assert!(buffer["path"]
        .as_str()
        .unwrap()
        .starts_with("/var/lib/scimtap/"));
}

#[test]
fn okta_example_config_validates() {
    check_example("deploy/examples/okta.toml", "okta", "/scim/v2");
    assert!(read("deploy/examples/okta.toml")
        .contains("SCIM connector base URL        https://scim-gw.example.com:8443/scim/v2"));
}

#[test]
fn entra_example_config_validates() {
    check_example("deploy/examples/entra.toml", "entra", "/scim");
    assert!(read("deploy/examples/entra.toml")
        .contains("Tenant URL     https://scim-gw.example.com:8443/scim?aadOptscim062020"));
}
