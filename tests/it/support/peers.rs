//! Where the tests find their peers: the Python venv (`SCIMTAP_PEER_VENV`), the scripts in
//! `tests/peer`, and the programs scripts/setup.sh installs (tansu, rsyslogd, systemd-analyze,
//! gzip...). Every lookup of a peer goes through here, and so does the one rule for a missing
//! peer (see [`require`] and the module doc of `support`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable that turns a skip into a failure (scripts/test.sh sets it).
pub const REQUIRE_PEERS: &str = "SCIMTAP_REQUIRE_PEERS";

/// The repository root (fixtures, docs and deploy files are read from here).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/peer`: the Python peers and their fixtures.
pub fn peer_dir() -> PathBuf {
    root().join("tests/peer")
}

/// `tests/peer/<name>`.
pub fn peer_script(name: &str) -> PathBuf {
    peer_dir().join(name)
}

/// The peers' venv: `$SCIMTAP_PEER_VENV` (relative to the repository root when relative), or
/// `tests/peer/.venv`, which `tests/peer/setup.sh` creates.
pub fn venv() -> PathBuf {
    match std::env::var_os("SCIMTAP_PEER_VENV") {
        Some(v) if !v.is_empty() => {
            let p = PathBuf::from(v);
            if p.is_absolute() {
                p
            } else {
                root().join(p)
            }
        }
        _ => peer_dir().join(".venv"),
    }
}

/// A program of the venv (`python`, `scim2-server`); panics with how to make the venv when it
/// is missing: the venv is part of every test setup, so its absence is never a skip.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh (or tests/peer/setup.sh) to create the test venv \
         from tests/peer/requirements.txt, or point SCIMTAP_PEER_VENV at one",
        path.display()
    );
    path
}

/// The venv's python (jsonschema, pycef, PyYAML, kafka-python, scim2-server...).
pub fn venv_python() -> PathBuf {
    venv_bin("python")
}

/// `name` on PATH, in ~/.cargo/bin (where `cargo install` puts tansu), in /usr/sbin and /sbin
/// (rsyslogd, when those are not on PATH) or in /usr/lib/postgresql/<major>/bin (pg_ctl).
pub fn which(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    on_path
        .into_iter()
        .chain(cargo_home.map(|c| c.join("bin")))
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .chain(postgres_bin_dirs())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Debian keeps PostgreSQL's server programs (initdb, pg_ctl) off PATH, in
/// /usr/lib/postgresql/<major>/bin: 15 (Debian 12's) first, then any other, newest first.
fn postgres_bin_dirs() -> Vec<PathBuf> {
    let mut majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    majors.sort_by_key(|m| (*m != 15, std::cmp::Reverse(*m)));
    majors
        .into_iter()
        .map(|m| PathBuf::from(format!("/usr/lib/postgresql/{m}/bin")))
        .collect()
}

/// Finds `peer`, or says why it is missing and how to install it.
fn find(peer: &str) -> Result<PathBuf, String> {
    let found = which(peer).ok_or_else(|| {
        let how = match peer {
            "tansu" => "scripts/setup.sh runs `cargo install tansu --locked --features dynostore`",
            "rsyslogd" => "scripts/setup.sh installs rsyslog and rsyslog-gnutls",
            "systemd-analyze" => "scripts/setup.sh installs systemd",
            "pg_ctl" | "initdb" | "psql" => "scripts/setup.sh --test-peers installs postgresql-15",
            "chromium" => "scripts/setup.sh --test-peers installs Debian's chromium",
            _ => "install it (scripts/setup.sh installs the test peers)",
        };
        format!("{peer} is not installed (not on PATH, in ~/.cargo/bin or /usr/sbin): {how}")
    })?;
    if peer == "tansu" {
        // The kafka tests read back with an independent consumer, kafka-python and its codecs.
        let python = venv().join("bin/python");
        let imports = Command::new(&python)
            .args(["-c", "import kafka, zstandard, lz4.frame, snappy"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !imports.is_ok_and(|s| s.success()) {
            return Err(format!(
                "{} cannot import kafka-python and its codecs: run scripts/setup.sh \
                 (tests/peer/setup.sh installs tests/peer/requirements.txt)",
                python.display()
            ));
        }
    }
    Ok(found)
}

/// The peer program a test cannot run without. When it is missing: with
/// `SCIMTAP_REQUIRE_PEERS` set (scripts/test.sh, so CI), the test fails with why; otherwise it
/// prints `SKIPPED <test>: <why>` on stderr and returns `None`, and the caller returns.
///
/// Use this for every optional peer; never return early from a test any other way.
pub fn require(peer: &str) -> Option<PathBuf> {
    let why = match find(peer) {
        Ok(path) => return Some(path),
        Err(why) => why,
    };
    let current = std::thread::current();
    let test = current.name().unwrap_or("this test");
    if std::env::var_os(REQUIRE_PEERS).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{test}: {why} ({REQUIRE_PEERS} is set, so this fails instead of skipping)");
    }
    // Straight to fd 2, not eprintln!: the test harness captures eprintln! of a passing test,
    // and a skip must be seen in the run's output.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (set {REQUIRE_PEERS}=1 to make this a failure)"
    );
    None
}

/// The peer program a test always needs (the suite's basic setup): panics with how to
/// install it when it is missing, skip or not.
pub fn need(peer: &str) -> PathBuf {
    find(peer).unwrap_or_else(|why| panic!("{why}"))
}
