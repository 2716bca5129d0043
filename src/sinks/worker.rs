//! The sink thread: builds the output for a sink, takes batches from its queue, writes them
//! with retries, backoff and jitter, and accounts for every event (written or dropped with a
//! reason). [`start`] wires a sink's handle, queue and thread together.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot};

use super::handle::{SinkHandle, SinkThread};
use super::queue::{BatchBell, Next, QueueRx, QueueTx, Wait};
use super::{
    BatchError, Delivered, DiskBuffer, FileWriter, HttpWriter, KafkaWriter, Position, Record,
    SinkError, SinkWriter, StdoutWriter, SyslogWriter,
};
use crate::config::{BatchConfig, EventFormat, RetryConfig, SinkConfig, SinkKind};
use crate::telemetry::{DropReason, Metrics, SinkLabels, SinkReasonLabels};

/// Shared signal to reopen every sink's output (SIGHUP).
#[derive(Clone, Default)]
pub struct ReopenSignal(Arc<AtomicU64>);

impl ReopenSignal {
    pub fn trigger(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn generation(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Builds the writer for `config` and starts its thread.
///
/// # Errors
/// [`SinkError::Open`] / [`SinkError::Setup`] when the output cannot be opened or the client
/// cannot be built (checked before the proxy accepts anything, so a bad path stops startup).
pub fn start(
    config: &SinkConfig,
    metrics: &Metrics,
    reopen: ReopenSignal,
) -> Result<(SinkHandle, SinkThread), SinkError> {
    let sink = SinkLabels {
        sink: config.name.clone(),
    };
    let dropped = |reason| {
        metrics.sink_dropped.get_or_create_owned(&SinkReasonLabels {
            sink: config.name.clone(),
            reason,
        })
    };
    let output = match &config.kind {
        SinkKind::Stdout => Output::Blocking(Box::new(StdoutWriter::new())),
        SinkKind::File(file) => Output::Blocking(Box::new(FileWriter::open(file)?)),
        SinkKind::Syslog(syslog) => Output::Blocking(Box::new(SyslogWriter::new(
            syslog,
            dropped(DropReason::too_large),
        )?)),
        SinkKind::Http(http) => Output::Http(Box::new(HttpWriter::new(
            http,
            config.format,
            dropped(DropReason::rejected),
        )?)),
        SinkKind::Kafka(kafka) => Output::Kafka(Box::new(KafkaWriter::new(kafka)?)),
    };
    let (tx, rx) = match &config.disk_buffer {
        None => {
            let (tx, rx) = mpsc::channel(config.max_events);
            (QueueTx::Memory(tx), QueueRx::Memory(rx))
        }
        Some(disk) => {
            let (buffer, reader) = DiskBuffer::open(&disk.path, disk.max_bytes)
                .map_err(|e| SinkError::Setup(e.to_string()))?;
            (QueueTx::Disk(buffer), QueueRx::Disk(reader))
        }
    };
    let healthy = Arc::new(AtomicBool::new(true));
    let saturated = Arc::new(AtomicBool::new(false));
    let bell = Arc::new(BatchBell::default());
    let (done_tx, done) = oneshot::channel();
    let worker = SinkWorker {
        name: config.name.clone(),
        output,
        rx,
        reopen,
        batch: config.batch.clone(),
        retry: config.retry.clone(),
        written: metrics.sink_written.get_or_create_owned(&sink),
        write_errors: metrics.sink_write_errors.get_or_create_owned(&sink),
        retried: metrics.sink_retried.get_or_create_owned(&sink),
        send_duration: metrics.sink_send_duration.get_or_create_owned(&sink),
        dropped_write: dropped(DropReason::write_error),
        dropped_torn: dropped(DropReason::torn),
        queue_depth: metrics.sink_queue_depth.get_or_create_owned(&sink),
        capacity: config.max_events as u64,
        healthy: healthy.clone(),
        saturated: saturated.clone(),
        bell: bell.clone(),
        stopping: false,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SinkError::Setup(format!("runtime for sink {}: {e}", config.name)))?;
    std::thread::Builder::new()
        .name(format!("sink-{}", config.name))
        .spawn(move || {
            runtime.block_on(worker.run());
            let _ = done_tx.send(());
        })
        .map_err(|source| SinkError::Open {
            path: format!("thread for sink {}", config.name),
            source,
        })?;
    Ok((
        SinkHandle {
            name: config.name.clone(),
            format: config.format,
            tx,
            when_full: config.when_full,
            block_timeout: config.block_timeout,
            stalled: AtomicBool::new(false),
            dropped_full: dropped(DropReason::queue_full),
            dropped_stalled: dropped(DropReason::stalled),
            dropped_shutdown: dropped(DropReason::shutdown),
            dropped_encode: dropped(DropReason::encode_error),
            dropped_buffer: dropped(DropReason::buffer_error),
            queue_depth: metrics.sink_queue_depth.get_or_create_owned(&sink),
            capacity: config.max_events,
            healthy,
            saturated,
            trail: config.format == EventFormat::Native
                && matches!(config.kind, SinkKind::File(_) | SinkKind::Stdout),
            durable: config.format == EventFormat::Native
                && (matches!(config.kind, SinkKind::File(_)) || config.disk_buffer.is_some()),
            bell,
            batch_events: config.batch.max_events as u64,
            batch_bytes: config.batch.max_bytes,
        },
        SinkThread {
            name: config.name.clone(),
            done,
        },
    ))
}

/// Where a sink's batches go: a blocking writer (called on the sink's own thread, where
/// blocking stalls nothing else) or an async network client.
enum Output {
    Blocking(Box<dyn SinkWriter>),
    Http(Box<HttpWriter>),
    Kafka(Box<KafkaWriter>),
}

impl Output {
    async fn write_batch(&mut self, records: &[Record]) -> Result<(), BatchError> {
        match self {
            Output::Blocking(writer) => writer.write_batch(records),
            Output::Http(writer) => writer.send(records).await,
            Output::Kafka(writer) => writer.send(records).await,
        }
    }

    fn take_skipped(&mut self) -> usize {
        match self {
            Output::Blocking(writer) => writer.take_skipped(),
            Output::Http(writer) => writer.take_skipped(),
            Output::Kafka(_) => 0,
        }
    }

    /// Whether the receiver refused the last batch whole: it is gone (counted as rejected),
    /// but the sink is failing.
    fn take_refused(&mut self) -> bool {
        match self {
            Output::Http(writer) => writer.take_refused(),
            Output::Blocking(_) | Output::Kafka(_) => false,
        }
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        match self {
            Output::Blocking(writer) => writer.reopen(),
            Output::Http(_) | Output::Kafka(_) => Ok(()),
        }
    }

    fn abandon(&mut self) {
        if let Output::Blocking(writer) = self {
            writer.abandon();
        }
    }
}

struct SinkWorker {
    name: String,
    output: Output,
    rx: QueueRx,
    reopen: ReopenSignal,
    batch: BatchConfig,
    retry: RetryConfig,
    written: Counter,
    write_errors: Counter,
    retried: Counter,
    send_duration: prometheus_client::metrics::histogram::Histogram,
    dropped_write: Counter,
    dropped_torn: Counter,
    queue_depth: Gauge,
    capacity: u64,
    healthy: Arc<AtomicBool>,
    saturated: Arc<AtomicBool>,
    bell: Arc<BatchBell>,
    /// Set when shutdown leaves events in the disk buffer: the worker stops reading.
    stopping: bool,
}

impl SinkWorker {
    async fn run(mut self) {
        let mut seen_generation = self.reopen.generation();
        let mut batch: Vec<Record> = Vec::with_capacity(self.batch.max_events.min(4096));
        loop {
            // Disk buffer: the position just after the last event taken into `batch`.
            // Taken from the queue without leaving the bell's byte count until the linger
            // ends: the audit worker counts it towards a full batch.
            let mut upto = match self.rx.next(Wait::Forever).await {
                Next::Event(record, position) => {
                    batch.push(record);
                    position
                }
                Next::Empty => continue,
                Next::Closed => break,
            };
            let mut bytes = batch[0].line.len();
            if !self.batch.timeout.is_zero() && batch[0].meta.ack.is_none() {
                // Linger without listening to the queue (each enqueue would wake this thread
                // again); the bell ends it early.
                let deadline = tokio::time::Instant::now() + self.batch.timeout;
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = self.bell.ring.notified() => {}
                }
            }
            if matches!(self.rx, QueueRx::Memory(_)) {
                self.bell.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            }
            while batch.len() < self.batch.max_events && bytes < self.batch.max_bytes {
                let Next::Event(record, position) = self.take(Wait::No).await else {
                    break;
                };
                if bytes + record.line.len() > self.batch.max_bytes {
                    // Too big to join this batch: it opens the next one.
                    self.flush(&mut batch, upto, &mut seen_generation).await;
                    bytes = 0;
                }
                bytes += record.line.len();
                batch.push(record);
                upto = position;
            }
            self.flush(&mut batch, upto, &mut seen_generation).await;
            if self.stopping {
                break;
            }
        }
        self.queue_depth.set(0);
        tracing::debug!(sink = %self.name, "Sink drained and closed.");
    }

    /// The next record from the queue, keeping the bell's byte count.
    async fn take(&mut self, wait: Wait) -> Next {
        let next = self.rx.next(wait).await;
        if let (Next::Event(record, None), QueueRx::Memory(_)) = (&next, &self.rx) {
            self.bell
                .queued_bytes
                .fetch_sub(record.line.len(), Ordering::Relaxed);
        }
        next
    }

    async fn flush(
        &mut self,
        batch: &mut Vec<Record>,
        upto: Option<Position>,
        seen_generation: &mut u64,
    ) {
        if batch.is_empty() || self.stopping {
            // Stopping: what is left stays on disk, unacknowledged, for the next start.
            batch.clear();
            return;
        }
        self.queue_depth
            .set(i64::try_from(self.rx.len()).unwrap_or(i64::MAX));
        let generation = self.reopen.generation();
        if generation != *seen_generation {
            *seen_generation = generation;
            match self.output.reopen() {
                Ok(()) => tracing::info!(sink = %self.name, "Sink output reopened."),
                Err(error) => {
                    tracing::error!(sink = %self.name, %error, "Cannot reopen sink output.")
                }
            }
        }
        let pending = std::mem::take(batch);
        let count = pending.len() as u64;
        if !self.write_with_retries(pending).await {
            self.stopping = true;
            return;
        }
        if let (QueueRx::Disk(reader), Some(upto)) = (&mut self.rx, upto) {
            self.dropped_torn.inc_by(reader.take_torn());
            if let Err(error) = reader.ack(upto, count) {
                tracing::error!(sink = %self.name, %error, "Cannot save the disk buffer position (events may be sent again after a restart).");
            }
        }
        let depth = self.rx.len();
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        let full = match &self.rx {
            QueueRx::Memory(_) => depth >= self.capacity,
            QueueRx::Disk(reader) => reader.is_full(),
        };
        self.saturated.store(full, Ordering::Relaxed);
    }

    /// Sends `pending` until every event is out or `retry.max_attempts` is used up; only
    /// what failed is sent again, so a partial success duplicates nothing.
    ///
    /// With a disk buffer, attempts never run out: the events wait on disk (and the buffer
    /// fills) rather than being dropped; `max_backoff_secs` still spaces the attempts. At
    /// shutdown a failed batch is left on disk for the next start instead (returns `false`:
    /// not settled, so its position must not be acknowledged).
    async fn write_with_retries(&mut self, mut pending: Vec<Record>) -> bool {
        let durable = matches!(self.rx, QueueRx::Disk(_));
        let max_attempts = if durable {
            u32::MAX
        } else {
            self.retry.max_attempts
        };
        for attempt in 1..=max_attempts {
            if attempt > 1 {
                self.retried.inc_by(pending.len() as u64);
            }
            let started = Instant::now();
            let result = self.output.write_batch(&pending).await;
            self.send_duration.observe(started.elapsed().as_secs_f64());
            let skipped = self.output.take_skipped();
            let error = match result {
                Ok(()) => {
                    self.written
                        .inc_by(pending.len().saturating_sub(skipped) as u64);
                    let refused = self.output.take_refused();
                    if refused {
                        self.write_errors.inc();
                    }
                    self.healthy.store(!refused, Ordering::Relaxed);
                    return true;
                }
                Err(error) => error,
            };
            let before = pending.len();
            pending = remaining(pending, error.delivered);
            let out = before - pending.len();
            self.written.inc_by(out.saturating_sub(skipped) as u64);
            self.write_errors.inc();
            self.healthy.store(false, Ordering::Relaxed);
            tracing::error!(
                sink = %self.name,
                attempt,
                remaining = pending.len(),
                error = %error.error,
                "Sink write failed."
            );
            if pending.is_empty() {
                return true;
            }
            if let QueueRx::Disk(reader) = &self.rx {
                if reader.is_closed() {
                    tracing::warn!(
                        sink = %self.name,
                        count = reader.queued(),
                        "Shutting down with undelivered events in the disk buffer; they are sent after the next start."
                    );
                    return false;
                }
            }
            if attempt < max_attempts {
                let wait = backoff(&self.retry, attempt, error.retry_after);
                tokio::time::sleep(wait).await;
                if let Err(error) = self.output.reopen() {
                    tracing::error!(sink = %self.name, %error, "Cannot reopen sink output.");
                }
            }
        }
        self.output.abandon();
        self.dropped_write.inc_by(pending.len() as u64);
        tracing::error!(
            sink = %self.name,
            count = pending.len(),
            reason = "write_error",
            "Audit events dropped."
        );
        true
    }
}

/// The events of `batch` still to be sent after a failure that delivered `delivered`.
pub(super) fn remaining(batch: Vec<Record>, delivered: Delivered) -> Vec<Record> {
    match delivered {
        Delivered::Leading(n) => batch.into_iter().skip(n).collect(),
        Delivered::AllBut(failed) => batch
            .into_iter()
            .enumerate()
            .filter(|(i, _)| failed.contains(i))
            .map(|(_, record)| record)
            .collect(),
    }
}

/// Wait before attempt `attempt + 1`: the initial backoff doubled per attempt, capped, with
/// "equal jitter" (half fixed, half random, so many instances do not retry in step), or the
/// receiver's `Retry-After` when it asks for longer (capped too: a receiver cannot park a
/// sink for an hour).
pub(super) fn backoff(
    retry: &RetryConfig,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = retry
        .initial_backoff
        .saturating_mul(1u32 << (attempt - 1).min(20))
        .min(retry.max_backoff);
    let jittered = exp / 2 + exp.mul_f64(random_fraction() / 2.0);
    match retry_after {
        Some(asked) if asked > jittered => asked.min(retry.max_backoff),
        _ => jittered,
    }
}

/// A number in [0, 1) from the standard library's randomly keyed hasher: plenty for jitter.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
