//! A real Kafka-protocol broker for the kafka sink's tests: `tansu` (crates.io, installed by
//! scripts/setup.sh) with in-memory storage on 127.0.0.1, topics made with its own CLI, and an
//! independent consumer, tests/peer/kafka_consume.py (kafka-python), to read back what
//! scimtap produced.
//!
//! Without tansu or the consumer's Python packages a test is skipped with a message, unless
//! `SCIMTAP_REQUIRE_PEERS` is set (CI sets it): then it fails, so a CI that lost its peers
//! cannot pass by skipping.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{closed_port, WAIT};

fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peer")
}

fn python() -> PathBuf {
    peer_dir().join(".venv/bin/python")
}

/// `tansu` on PATH or in ~/.cargo/bin (where `cargo install` puts it).
fn tansu_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("tansu"))
            .collect::<Vec<_>>()
    });
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    on_path
        .chain(cargo_home.map(|c| c.join("bin/tansu")))
        .find(|p| p.is_file())
}

/// The peers these tests need, or why they are missing.
fn find_peers() -> Result<PathBuf, String> {
    let tansu = tansu_bin().ok_or_else(|| {
        "tansu is not installed (not on PATH nor in ~/.cargo/bin): run scripts/setup.sh, \
         which runs `cargo install tansu --locked --features dynostore`"
            .to_owned()
    })?;
    let imports = Command::new(python())
        .args(["-c", "import kafka, zstandard, lz4.frame, snappy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !imports.is_ok_and(|s| s.success()) {
        return Err(format!(
            "{} cannot import kafka-python and its codecs: run scripts/setup.sh \
             (tests/peer/setup.sh installs tests/peer/requirements.txt)",
            python().display()
        ));
    }
    Ok(tansu)
}

/// The tansu binary; `None` (after saying why) when the peers are missing and the test
/// should be skipped. Panics instead when `SCIMTAP_REQUIRE_PEERS` is set.
pub fn tansu_or_skip(test: &str) -> Option<PathBuf> {
    match find_peers() {
        Ok(tansu) => Some(tansu),
        Err(why) if std::env::var_os("SCIMTAP_REQUIRE_PEERS").is_some() => {
            panic!(
                "{test}: {why} (SCIMTAP_REQUIRE_PEERS is set, so this fails instead of skipping)"
            )
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// A running `tansu broker` with in-memory storage.
pub struct Tansu {
    bin: PathBuf,
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts tansu on a free port.
    pub fn start(bin: &Path) -> Tansu {
        Self::start_on(bin, closed_port())
    }

    /// Starts tansu on `port` and waits until it accepts connections.
    pub fn start_on(bin: &Path, port: u16) -> Tansu {
        Self::start_advertising(bin, port, port)
    }

    /// Starts tansu on `port`, telling clients (in metadata) to connect to `advertised`
    /// instead: a TLS terminator in front of it, say.
    pub fn start_advertising(bin: &Path, port: u16, advertised: u16) -> Tansu {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let child = Command::new(bin)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("CLUSTER_ID")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        let mut tansu = Tansu {
            bin: bin.to_owned(),
            child,
            port,
            dir,
        };
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = tansu.child.try_wait() {
                panic!("tansu exited ({status}) before listening:\n{}", tansu.log());
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {port}:\n{}",
                tansu.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        tansu
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Creates `topic` with `partitions` partitions (tansu's own CLI, retried while the
    /// broker settles).
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = Command::new(&self.bin)
                .args(["topic", "create", topic])
                .args(["--broker", &format!("tcp://{}", self.bootstrap())])
                .args(["--partitions", &partitions.to_string()])
                .stdin(Stdio::null())
                .output()
                .expect("tansu topic create runs");
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tansu topic create {topic} failed: {}{}\nbroker log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every record of `topic`, read by kafka-python once at least `count` are there (and
    /// a moment longer, to catch duplicates). Panics when fewer arrive within `timeout`.
    pub fn consume(&self, topic: &str, count: usize, timeout: Duration) -> Vec<Consumed> {
        consume(&self.bootstrap(), None, topic, count, timeout, &self.log())
    }
}

/// Every record of `topic` at `bootstrap` (over TLS trusting `tls_ca` when given), read by
/// kafka-python; see [`Tansu::consume`]. `broker_log` goes into the failure message.
pub fn consume(
    bootstrap: &str,
    tls_ca: Option<&Path>,
    topic: &str,
    count: usize,
    timeout: Duration,
    broker_log: &str,
) -> Vec<Consumed> {
    let mut command = Command::new(python());
    command
        .arg(peer_dir().join("kafka_consume.py"))
        .arg(bootstrap)
        .arg(topic)
        .arg(count.to_string())
        .args(["--timeout", &timeout.as_secs_f64().to_string()]);
    if let Some(ca) = tls_ca {
        command.arg("--tls-ca").arg(ca);
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .expect("kafka_consume.py runs");
    let records: Vec<Consumed> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect();
    assert!(
        out.status.success(),
        "kafka_consume.py {topic} {count}: {}\ngot {} records\nbroker log:\n{broker_log}",
        String::from_utf8_lossy(&out.stderr),
        records.len(),
    );
    records
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One record as kafka_consume.py prints it.
#[derive(Debug, Clone, Deserialize)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub timestamp: i64,
    pub headers: BTreeMap<String, String>,
    /// The topic's partition count.
    pub partitions: i32,
    /// Where kafka-python's DefaultPartitioner (the Java client's murmur2) puts the key.
    pub murmur2_partition: Option<i32>,
}
