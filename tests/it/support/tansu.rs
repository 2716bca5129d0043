//! A real Kafka-protocol broker for the kafka sink's tests: `tansu` (crates.io, installed by
//! scripts/setup.sh) with in-memory storage on 127.0.0.1, topics made with its own CLI, and an
//! independent consumer, tests/peer/kafka_consume.py (kafka-python), to read back what
//! scimtap produced.
//!
//! A test gets the binary from `peers::require("tansu")`, which also checks the consumer's
//! Python packages: without them the test is skipped with a message, unless
//! `SCIMTAP_REQUIRE_PEERS` is set (CI sets it): then it fails, so a CI that lost its peers
//! cannot pass by skipping.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use super::peers::{peer_script, venv_python};
use super::process::{run, Process};
use super::wait::until_blocking;
use super::{closed_port, WAIT};

/// A running `tansu broker` with in-memory storage.
pub struct Tansu {
    bin: PathBuf,
    process: Process,
    pub port: u16,
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
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let mut process = Process::spawn(
            "tansu",
            tempfile::tempdir().unwrap(),
            Command::new(bin)
                .arg("broker")
                .args(["--listener-url", &url])
                .args(["--advertised-listener-url", &advertised])
                .args(["--storage-engine", "memory://tansu/"])
                .env_remove("CLUSTER_ID")
                .env_remove("LISTENER_URL")
                .env_remove("ADVERTISED_LISTENER_URL")
                .env_remove("STORAGE_ENGINE")
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT"),
        );
        process.wait_listening(port);
        Tansu {
            bin: bin.to_owned(),
            process,
            port,
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Creates `topic` with `partitions` partitions (tansu's own CLI, retried while the
    /// broker settles).
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let what = format!("tansu topic create {topic}");
        until_blocking(&what, WAIT, Duration::from_millis(200), || {
            let out = run(Command::new(&self.bin)
                .args(["topic", "create", topic])
                .args(["--broker", &format!("tcp://{}", self.bootstrap())])
                .args(["--partitions", &partitions.to_string()]));
            if out.status.success() {
                return Ok(());
            }
            Err(format!(
                "{}{}\nbroker log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ))
        })
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
    let mut command = Command::new(venv_python());
    command
        .arg(peer_script("kafka_consume.py"))
        .arg(bootstrap)
        .arg(topic)
        .arg(count.to_string())
        .args(["--timeout", &timeout.as_secs_f64().to_string()]);
    if let Some(ca) = tls_ca {
        command.arg("--tls-ca").arg(ca);
    }
    let out = run(&mut command);
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

/// One record as kafka_consume.py prints it.
#[derive(Debug, Clone, Deserialize)]
pub struct Consumed {
    #[allow(dead_code)] // printed in failure messages through Debug
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
