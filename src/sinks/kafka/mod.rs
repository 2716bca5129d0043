//! `type = "kafka"`: every event produced to one topic with the pure-Rust `rskafka` client.
//!
//! - **Key**: the SCIM resource id the event is about (else the request id), so every event
//!   about one identity lands on one partition, in order.
//! - **Partition**: chosen like the Java client's default partitioner (murmur2 of the key
//!   bytes, made positive, modulo the topic's partition count), so scimtap places a key where
//!   any other Java-compatible producer of the same topic would. The partition count comes
//!   from the cluster's metadata, fetched on connect, again after any error and at least every
//!   five minutes (the Java client's `metadata.max.age.ms`).
//! - **Record**: value = the encoded event without its newline, timestamp = when the request
//!   arrived (`CreateTime`), header `event_id` = the event id (for consumers that deduplicate).
//! - **Durability**: rskafka sends every produce request with `acks = -1` (all in-sync
//!   replicas) and a broker-side timeout of 30 s; neither is configurable in rskafka 0.6, and
//!   `acks = all` is what an audit trail wants anyway.
//! - **Failures**: records are grouped per partition and each partition is produced
//!   concurrently; when some partitions fail, only their records are handed back for retry
//!   (`Delivered::AllBut`), and the whole connection is dropped, so the next attempt connects
//!   again and re-reads the metadata (a broker that went away and came back, a moved leader, a
//!   repartitioned topic). Delivery is at least once: a request that timed out on our side may
//!   still have been written, and then its records are written again.
//!
//! The client connects lazily, on the first batch: a broker that is down when scimtap starts
//! must not stop the proxy, only delay the sink (its queue and retries absorb the outage).
//! scimtap never creates the topic: a missing topic is an error (retried), not a silent
//! auto-creation with broker defaults.

pub(crate) mod config;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::chrono::{DateTime, Utc};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::BackoffConfig;

use self::config::{KafkaCompression, KafkaSinkConfig, SaslMechanism};
use crate::sinks::{BatchError, Delivered, Record, SinkError};

/// How long partition metadata is trusted before it is read again (Java's default).
const METADATA_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// Most approximate record bytes (key, value, headers, framing) in one produce request.
/// Brokers refuse record batches over `message.max.bytes` (1 MiB by default) and this bound
/// is checked before compression, so a large uncompressed sink batch is split in requests
/// that fit; a single larger record still goes alone (and only a broker that allows it
/// takes it).
const MAX_REQUEST_BYTES: usize = 900 * 1024;

/// Bytes a record costs on the wire besides its key, value and header bytes (varint lengths,
/// deltas, attributes): a generous estimate, only used to split requests.
const RECORD_OVERHEAD: usize = 32;

pub struct KafkaWriter {
    config: KafkaSinkConfig,
    compression: Compression,
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<SaslConfig>,
    /// `None` until the first batch, and again after any failure (reconnect on next use).
    connection: Option<Connection>,
}

/// A connected client and what it knows about the topic.
struct Connection {
    client: Arc<Client>,
    /// One slot per partition (index = partition id), filled on first use: each holds the
    /// connection to that partition's leader.
    partitions: Vec<Option<Arc<PartitionClient>>>,
    metadata_read: Instant,
}

/// What one partition's share of a batch came to.
struct PartitionOutcome {
    partition: usize,
    client: Option<Arc<PartitionClient>>,
    /// Indices (into the batch) of the records not written.
    failed: Vec<usize>,
    error: Option<String>,
}

impl KafkaWriter {
    /// Builds the TLS and SASL settings; does not connect (see the module docs).
    ///
    /// # Errors
    /// [`SinkError::Setup`] when a CA certificate cannot be used or the SASL password is not
    /// UTF-8 text.
    pub fn new(config: &KafkaSinkConfig) -> Result<KafkaWriter, SinkError> {
        let tls = match &config.tls_extra_roots {
            None => None,
            Some(extra) => {
                let tls = crate::tls::client_config(extra)
                    .map_err(|e| SinkError::Setup(format!("tls_ca_file: {e}")))?;
                Some(Arc::new(tls))
            }
        };
        let sasl = match &config.sasl {
            None => None,
            Some(sasl) => {
                let password = String::from_utf8(sasl.password.0.clone()).map_err(|_| {
                    SinkError::Setup("sasl_password_file does not hold UTF-8 text".to_owned())
                })?;
                let credentials = Credentials::new(sasl.username.clone(), password);
                Some(match sasl.mechanism {
                    SaslMechanism::Plain => SaslConfig::Plain(credentials),
                    SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
                    SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
                })
            }
        };
        Ok(KafkaWriter {
            config: config.clone(),
            compression: compression(config.compression),
            tls,
            sasl,
            connection: None,
        })
    }

    /// Produces one batch; see the module docs for partitioning and what is retried.
    pub async fn send(&mut self, records: &[Record]) -> Result<(), BatchError> {
        if records.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.ensure_connected().await {
            self.connection = None;
            return Err(BatchError::leading(0, error));
        }
        let Some(connection) = self.connection.as_mut() else {
            return Err(BatchError::leading(
                0,
                SinkError::Send("not connected".to_owned()),
            ));
        };
        let count = connection.partitions.len();
        let mut by_partition: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (index, record) in records.iter().enumerate() {
            by_partition
                .entry(partition_for(record.meta.key.as_bytes(), count))
                .or_default()
                .push(index);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (partition, indices) in by_partition {
            let chunks = chunks(records, &indices)
                .into_iter()
                .map(|chunk| {
                    let produced = chunk.iter().map(|&i| kafka_record(&records[i])).collect();
                    (chunk, produced)
                })
                .collect();
            tasks.spawn(produce_partition(
                connection.client.clone(),
                self.config.topic.clone(),
                partition,
                connection.partitions.get(partition).cloned().flatten(),
                chunks,
                self.compression,
                self.config.connect_timeout,
                self.config.request_timeout,
            ));
        }
        let mut failed = Vec::new();
        let mut errors = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let outcome = match joined {
                Ok(outcome) => outcome,
                Err(error) => {
                    // A produce task that panicked or was cancelled: its records' fate is
                    // unknown, so the whole batch is sent again (at least once).
                    self.connection = None;
                    return Err(BatchError::leading(
                        0,
                        SinkError::Send(format!("produce task failed: {error}")),
                    ));
                }
            };
            if let Some(slot) = connection.partitions.get_mut(outcome.partition) {
                *slot = outcome.client;
            }
            failed.extend(outcome.failed);
            if let Some(error) = outcome.error {
                errors.push(format!("partition {}: {error}", outcome.partition));
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        // Reconnect and re-read the metadata before the retry.
        self.connection = None;
        failed.sort_unstable();
        Err(BatchError {
            delivered: Delivered::AllBut(failed),
            error: SinkError::Send(format!(
                "topic {}: {}",
                self.config.topic,
                errors.join("; ")
            )),
            retry_after: None,
        })
    }

    /// Connects (when not connected) and re-reads the partition count when it is stale.
    async fn ensure_connected(&mut self) -> Result<(), SinkError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.metadata_read.elapsed() < METADATA_MAX_AGE)
        {
            return Ok(());
        }
        let (client, mut partitions) = match self.connection.take() {
            Some(connection) => (connection.client, connection.partitions),
            None => (Arc::new(self.connect().await?), Vec::new()),
        };
        let count = within(
            self.config.request_timeout,
            "reading the topic's metadata",
            partition_count(&client, &self.config.topic),
        )
        .await??;
        // Leader connections stay while the partitions stay; a new count starts afresh.
        if partitions.len() != count {
            partitions = vec![None; count];
        }
        self.connection = Some(Connection {
            client,
            partitions,
            metadata_read: Instant::now(),
        });
        Ok(())
    }

    async fn connect(&self) -> Result<Client, SinkError> {
        let mut builder = ClientBuilder::new(self.config.brokers.clone())
            .client_id(concat!("scimtap/", env!("CARGO_PKG_VERSION")))
            // rskafka retries a failed request itself (a stale connection, a moved leader),
            // with no deadline by default. A short budget keeps those quick fixes, and hands
            // anything longer to the sink's own retry policy: the configured one, logged and
            // counted in the metrics.
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(500),
                base: 3.0,
                deadline: Some(Duration::from_secs(1)),
            });
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.clone());
        }
        if let Some(sasl) = &self.sasl {
            builder = builder.sasl_config(sasl.clone());
        }
        within(
            self.config.connect_timeout,
            "connecting to the brokers",
            builder.build(),
        )
        .await?
        .map_err(|e| {
            SinkError::Send(format!(
                "cannot connect to {}: {}",
                self.config.brokers.join(", "),
                crate::tls::error_chain(&e)
            ))
        })
    }
}

/// Produces one partition's records, chunk after chunk (so they stay in order); after a
/// failed chunk the rest are not tried, and all of them are reported failed.
#[allow(clippy::too_many_arguments)]
async fn produce_partition(
    client: Arc<Client>,
    topic: String,
    partition: usize,
    cached: Option<Arc<PartitionClient>>,
    chunks: Vec<(Vec<usize>, Vec<rskafka::record::Record>)>,
    compression: Compression,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> PartitionOutcome {
    let all_failed = |chunks: &[(Vec<usize>, Vec<rskafka::record::Record>)]| {
        chunks
            .iter()
            .flat_map(|(indices, _)| indices.iter().copied())
            .collect::<Vec<_>>()
    };
    let partition_client = match cached {
        Some(c) => c,
        None => {
            let id = i32::try_from(partition).unwrap_or(i32::MAX);
            let created = within(
                connect_timeout,
                "connecting to the partition leader",
                client.partition_client(topic, id, UnknownTopicHandling::Retry),
            )
            .await;
            match created {
                Ok(Ok(c)) => Arc::new(c),
                Ok(Err(e)) => {
                    return PartitionOutcome {
                        partition,
                        client: None,
                        failed: all_failed(&chunks),
                        error: Some(format!(
                            "no leader connection: {}",
                            crate::tls::error_chain(&e)
                        )),
                    }
                }
                Err(e) => {
                    return PartitionOutcome {
                        partition,
                        client: None,
                        failed: all_failed(&chunks),
                        error: Some(e.to_string()),
                    }
                }
            }
        }
    };
    let mut failed = Vec::new();
    let mut error = None;
    for (indices, produced) in chunks {
        if error.is_some() {
            failed.extend(indices);
            continue;
        }
        match within(
            request_timeout,
            "producing",
            partition_client.produce(produced, compression),
        )
        .await
        {
            Ok(Ok(_offsets)) => {}
            Ok(Err(e)) => {
                error = Some(crate::tls::error_chain(&e));
                failed.extend(indices);
            }
            Err(e) => {
                error = Some(e.to_string());
                failed.extend(indices);
            }
        }
    }
    PartitionOutcome {
        partition,
        client: Some(partition_client),
        failed,
        error,
    }
}

/// The topic's partition count, from a fresh metadata request.
async fn partition_count(client: &Client, topic: &str) -> Result<usize, SinkError> {
    let topics = client.list_topics().await.map_err(|e| {
        SinkError::Send(format!(
            "cannot read the metadata: {}",
            crate::tls::error_chain(&e)
        ))
    })?;
    match topics.iter().find(|t| t.name == topic) {
        Some(t) if !t.partitions.is_empty() => Ok(t.partitions.len()),
        Some(_) => Err(SinkError::Send(format!("topic {topic} has no partitions"))),
        None => Err(SinkError::Send(format!(
            "topic {topic} does not exist (scimtap does not create topics)"
        ))),
    }
}

/// Runs `future` for at most `limit`.
async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> Result<T, SinkError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| SinkError::Send(format!("timed out after {limit:?} {what}")))
}

fn compression(c: KafkaCompression) -> Compression {
    match c {
        KafkaCompression::None => Compression::NoCompression,
        KafkaCompression::Gzip => Compression::Gzip,
        KafkaCompression::Lz4 => Compression::Lz4,
        KafkaCompression::Snappy => Compression::Snappy,
        KafkaCompression::Zstd => Compression::Zstd,
    }
}

/// The Kafka record for one event.
fn kafka_record(record: &Record) -> rskafka::record::Record {
    let line = record.line.strip_suffix(b"\n").unwrap_or(&record.line);
    rskafka::record::Record {
        key: Some(record.meta.key.as_bytes().to_vec()),
        value: Some(line.to_vec()),
        headers: BTreeMap::from([(
            "event_id".to_owned(),
            record.meta.event_id.as_bytes().to_vec(),
        )]),
        timestamp: timestamp(record.meta.time_millis),
    }
}

/// The record timestamp: when the request arrived, or now when that is unknown (0), as the
/// Java client does for a record without one.
fn timestamp(millis: i64) -> DateTime<Utc> {
    let millis = if millis > 0 {
        millis
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
    };
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

/// Splits one partition's records (indices into `records`, in order) into runs of at most
/// [`MAX_REQUEST_BYTES`]; a record over the bound gets a run of its own.
fn chunks(records: &[Record], indices: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for &i in indices {
        let meta = &records[i].meta;
        let size = records[i].line.len()
            + meta.key.len()
            + "event_id".len()
            + meta.event_id.len()
            + RECORD_OVERHEAD;
        if !current.is_empty() && bytes + size > MAX_REQUEST_BYTES {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The partition the Java client's default partitioner picks for `key`:
/// `Utils.toPositive(Utils.murmur2(key)) % numPartitions`.
fn partition_for(key: &[u8], partitions: usize) -> usize {
    let positive = (murmur2(key) & 0x7fff_ffff) as usize;
    positive % partitions.max(1)
}

/// Kafka's `Utils.murmur2` (MurmurHash2, seed `0x9747b28c`), bit for bit: the Java int
/// arithmetic is wrapping 32-bit, and `>>>` is the unsigned shift.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java hashes an `int` length; keys here are far below 2^31 bytes.
    let mut h = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in blocks.by_ref() {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests;
