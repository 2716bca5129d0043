//! Sinks: where encoded audit events go.
//!
//! Each sink owns a bounded queue and a dedicated thread: writes to files and pipes are
//! blocking system calls, and a stalled one (a full disk, a reader that stopped reading stdout)
//! must stall only that thread, never the async runtime serving requests. The thread takes a
//! batch of whole lines, writes it, and accounts for every event: written, or dropped with a
//! reason.

mod file;
mod stdout;
mod syslog;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot};

use crate::config::{EventFormat, SinkConfig, SinkKind, WhenFull};
use crate::telemetry::{DropReason, Metrics, SinkLabels, SinkReasonLabels};

pub use file::FileWriter;
pub use stdout::StdoutWriter;
pub use syslog::SyslogWriter;

/// Most events written in one batch (one write(2) of whole lines).
const MAX_BATCH_EVENTS: usize = 512;
/// Attempts at writing one batch before its events are dropped and counted.
const WRITE_ATTEMPTS: u32 = 3;

/// One encoded event on its way to a sink: the line, and what network sinks need besides it.
#[derive(Debug, Clone)]
pub struct Record {
    /// The event in the sink's format, one line, newline included.
    pub line: Bytes,
    pub meta: Arc<RecordMeta>,
}

/// Facts about an event that some sinks put beside the line (shared by every format's record).
#[derive(Debug, Default)]
pub struct RecordMeta {
    /// The event id: Elasticsearch `_id`, so a retried item is not indexed twice.
    pub event_id: String,
    /// The SCIM resource id the event is about (else the request id): the Kafka message key,
    /// so events about one identity stay in order on one partition.
    pub key: String,
    /// When the request arrived, milliseconds since the Unix epoch (HEC `time`).
    pub time_millis: i64,
}

impl RecordMeta {
    pub fn of(event: &crate::event::AuditEvent<'_>) -> Arc<RecordMeta> {
        Arc::new(RecordMeta {
            event_id: event.event_id.clone(),
            key: event
                .scim
                .target
                .id
                .clone()
                .unwrap_or_else(|| event.request_id.to_owned()),
            time_millis: crate::formats::event_time_millis(&event.timestamp)
                .and_then(|t| i64::try_from(t).ok())
                .unwrap_or(0),
        })
    }
}

impl std::ops::Deref for Record {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.line
    }
}

impl From<Bytes> for Record {
    fn from(line: Bytes) -> Record {
        Record {
            line,
            meta: Arc::default(),
        }
    }
}

/// Why a sink could not be built or could not write.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("write failed: {0}")]
    Write(#[source] std::io::Error),
    #[error("rotation failed: {0}")]
    Rotate(#[source] std::io::Error),
}

/// A batch that was only partly written: the first `written` lines are out, whole; the rest
/// are not.
#[derive(Debug)]
pub struct BatchError {
    pub written: usize,
    pub error: SinkError,
}

/// The blocking writer behind one sink.
pub trait SinkWriter: Send + 'static {
    /// Writes whole lines, in order, with as few write(2) calls as possible (one per batch
    /// unless the file rotates in between).
    ///
    /// # Errors
    /// [`BatchError`] saying how many leading lines were written whole; the caller retries
    /// only the rest (so nothing is duplicated), then counts what is left as dropped.
    fn write_batch(&mut self, lines: &[Record]) -> Result<(), BatchError>;

    /// Closes and reopens the output (after external log rotation, on SIGHUP, or after an
    /// error). The default does nothing.
    ///
    /// # Errors
    /// [`SinkError::Open`] when the output cannot be reopened.
    fn reopen(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Lines of the last `write_batch` call that were deliberately not written (and already
    /// counted as dropped by the writer), so they are not counted as written too.
    fn take_skipped(&mut self) -> usize {
        0
    }

    /// Called when the lines of a failed batch are given up: whatever a writer left half
    /// written must not run into the next event. The default does nothing.
    fn abandon(&mut self) {}
}

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

/// The audit worker's end of one sink.
pub struct SinkHandle {
    name: String,
    format: EventFormat,
    tx: mpsc::Sender<Record>,
    when_full: WhenFull,
    dropped_full: Counter,
    dropped_shutdown: Counter,
    dropped_encode: Counter,
    queue_depth: Gauge,
    capacity: usize,
    healthy: Arc<AtomicBool>,
}

/// Lets the owner wait for a sink thread to finish its last batch. Waiting is async and
/// bounded by the caller: a thread stuck in a write (a pipe nobody reads) must not hold up
/// shutdown past its deadline, so the thread is never joined.
pub struct SinkThread {
    pub name: String,
    done: oneshot::Receiver<()>,
}

impl SinkThread {
    /// Resolves once the thread has drained its queue and written its last batch.
    pub async fn finished(self) {
        if self.done.await.is_err() {
            tracing::error!(sink = %self.name, "Sink thread ended without finishing its queue.");
        }
    }
}

impl SinkHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What this sink writes for each event.
    pub fn format(&self) -> EventFormat {
        self.format
    }

    /// Health flag shared with `/readyz`: false after a batch failed to be written.
    pub fn health(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    /// Queues one encoded event per the sink's `when_full` policy.
    /// Called from the audit worker thread, never from the async runtime.
    pub fn enqueue_blocking(&self, line: Record) {
        self.enqueue_inner(line);
        // Updated here too, so the gauge moves while the sink thread is stuck in a write.
        let depth = self.capacity.saturating_sub(self.tx.capacity());
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    fn enqueue_inner(&self, line: Record) {
        match self.when_full {
            WhenFull::Block => {
                if self.tx.blocking_send(line).is_err() {
                    self.dropped_shutdown.inc();
                }
            }
            WhenFull::DropNewest => match self.tx.try_send(line) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped_full.inc();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.dropped_shutdown.inc();
                }
            },
        }
    }

    pub fn count_encode_error(&self) {
        self.dropped_encode.inc();
    }
}

/// Builds the writer for `config` and starts its thread.
///
/// # Errors
/// [`SinkError::Open`] when the output cannot be opened (checked before the proxy accepts
/// anything, so a bad path stops startup).
pub fn start(
    config: &SinkConfig,
    metrics: &Metrics,
    reopen: ReopenSignal,
) -> Result<(SinkHandle, SinkThread), SinkError> {
    let writer: Box<dyn SinkWriter> = match &config.kind {
        SinkKind::Stdout => Box::new(StdoutWriter::new()),
        SinkKind::File(file) => Box::new(FileWriter::open(file)?),
        SinkKind::Syslog(syslog) => Box::new(SyslogWriter::new(
            syslog,
            metrics.sink_dropped.get_or_create_owned(&SinkReasonLabels {
                sink: config.name.clone(),
                reason: DropReason::too_large,
            }),
        )?),
    };
    let (tx, rx) = mpsc::channel(config.max_events);
    let sink = SinkLabels {
        sink: config.name.clone(),
    };
    let dropped = |reason| {
        metrics.sink_dropped.get_or_create_owned(&SinkReasonLabels {
            sink: config.name.clone(),
            reason,
        })
    };
    let healthy = Arc::new(AtomicBool::new(true));
    let (done_tx, done) = oneshot::channel();
    let worker = SinkWorker {
        name: config.name.clone(),
        writer,
        rx,
        reopen,
        written: metrics.sink_written.get_or_create_owned(&sink),
        write_errors: metrics.sink_write_errors.get_or_create_owned(&sink),
        dropped_write: dropped(DropReason::write_error),
        queue_depth: metrics.sink_queue_depth.get_or_create_owned(&sink),
        healthy: healthy.clone(),
    };
    std::thread::Builder::new()
        .name(format!("sink-{}", config.name))
        .spawn(move || {
            worker.run();
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
            dropped_full: dropped(DropReason::queue_full),
            dropped_shutdown: dropped(DropReason::shutdown),
            dropped_encode: dropped(DropReason::encode_error),
            queue_depth: metrics.sink_queue_depth.get_or_create_owned(&sink),
            capacity: config.max_events,
            healthy,
        },
        SinkThread {
            name: config.name.clone(),
            done,
        },
    ))
}

struct SinkWorker {
    name: String,
    writer: Box<dyn SinkWriter>,
    rx: mpsc::Receiver<Record>,
    reopen: ReopenSignal,
    written: Counter,
    write_errors: Counter,
    dropped_write: Counter,
    queue_depth: Gauge,
    healthy: Arc<AtomicBool>,
}

impl SinkWorker {
    fn run(mut self) {
        let mut seen_generation = self.reopen.generation();
        let mut batch: Vec<Record> = Vec::with_capacity(MAX_BATCH_EVENTS);
        while let Some(first) = self.rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH_EVENTS {
                match self.rx.try_recv() {
                    Ok(line) => batch.push(line),
                    Err(_) => break,
                }
            }
            self.queue_depth
                .set(i64::try_from(self.rx.len()).unwrap_or(i64::MAX));
            let generation = self.reopen.generation();
            if generation != seen_generation {
                seen_generation = generation;
                match self.writer.reopen() {
                    Ok(()) => tracing::info!(sink = %self.name, "Sink output reopened."),
                    Err(error) => {
                        tracing::error!(sink = %self.name, %error, "Cannot reopen sink output.")
                    }
                }
            }
            self.write_with_retries(&batch);
            batch.clear();
        }
        self.queue_depth.set(0);
        tracing::debug!(sink = %self.name, "Sink drained and closed.");
    }

    fn write_with_retries(&mut self, batch: &[Record]) {
        let mut rest = batch;
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=WRITE_ATTEMPTS {
            match self.writer.write_batch(rest) {
                Ok(()) => {
                    let skipped = self.writer.take_skipped();
                    self.written
                        .inc_by(rest.len().saturating_sub(skipped) as u64);
                    self.healthy.store(true, Ordering::Relaxed);
                    return;
                }
                Err(BatchError { written, error }) => {
                    let written = written.min(rest.len());
                    let skipped = self.writer.take_skipped().min(written);
                    self.written.inc_by((written - skipped) as u64);
                    rest = &rest[written..];
                    self.write_errors.inc();
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::error!(sink = %self.name, attempt, %error, "Sink write failed.");
                    if rest.is_empty() {
                        return;
                    }
                    if attempt < WRITE_ATTEMPTS {
                        std::thread::sleep(backoff);
                        backoff *= 2;
                        if let Err(error) = self.writer.reopen() {
                            tracing::error!(sink = %self.name, %error, "Cannot reopen sink output.");
                        }
                    }
                }
            }
        }
        self.writer.abandon();
        self.dropped_write.inc_by(rest.len() as u64);
        tracing::error!(
            sink = %self.name,
            count = rest.len(),
            reason = "write_error",
            "Audit events dropped."
        );
    }
}

/// Concatenates whole lines into `buf` (cleared first).
fn join_lines(buf: &mut Vec<u8>, lines: &[Record]) {
    buf.clear();
    for line in lines {
        buf.extend_from_slice(line);
    }
}
