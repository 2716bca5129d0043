//! Sinks: where encoded audit events go.
//!
//! Each sink owns a bounded queue and a dedicated thread: writes to files and pipes are
//! blocking system calls, and a stalled one (a full disk, a reader that stopped reading stdout,
//! a collector that does not answer) must stall only that thread, never the async runtime
//! serving requests. The thread runs its own single-threaded runtime (network sinks speak async
//! HTTP and Kafka), takes a batch of whole events (`batch.max_events`, `batch.max_bytes`,
//! waiting up to `batch.timeout_secs` for it to fill), sends it, retries what failed with
//! exponential backoff, jitter and the receiver's `Retry-After`, and accounts for every event:
//! written, or dropped with a reason.

mod file;
mod http;
mod kafka;
mod stdout;
mod syslog;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::{BatchConfig, EventFormat, RetryConfig, SinkConfig, SinkKind, WhenFull};
use crate::telemetry::{DropReason, Metrics, SinkLabels, SinkReasonLabels};

pub use crate::buffer::{BufferError, DiskBuffer, DiskReader, Position};
pub use file::FileWriter;
pub use http::HttpWriter;
pub use kafka::KafkaWriter;
pub use stdout::StdoutWriter;
pub use syslog::SyslogWriter;

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
    /// Set on a write-ahead intent record: fired once the record is on stable storage (a
    /// file sink after `fdatasync`, or a disk buffer after its append is synced).
    pub ack: Option<Arc<DurableAck>>,
    /// The event id: Elasticsearch `_id`, so a retried item is not indexed twice.
    pub event_id: String,
    /// The SCIM resource id the event is about (else the request id): the Kafka message key,
    /// so events about one identity stay in order on one partition.
    pub key: String,
    /// When the request arrived, milliseconds since the Unix epoch (HEC `time`).
    pub time_millis: i64,
}

/// "This record is durable": fired by the first sink that makes it so; a record dropped
/// undelivered drops its sender, which the waiting request sees as a failure.
#[derive(Debug)]
pub struct DurableAck(std::sync::Mutex<Option<oneshot::Sender<()>>>);

impl DurableAck {
    pub fn new() -> (Arc<DurableAck>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Arc::new(DurableAck(std::sync::Mutex::new(Some(tx)))), rx)
    }

    pub fn fire(&self) {
        let sender = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }
}

impl RecordMeta {
    pub fn of(event: &crate::event::AuditEvent<'_>) -> Arc<RecordMeta> {
        Arc::new(RecordMeta {
            ack: None,
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
    /// A network receiver failed or refused the batch (connection, status, protocol error).
    #[error("{0}")]
    Send(String),
    #[error("cannot set up the client: {0}")]
    Setup(String),
}

/// A batch that was not wholly delivered: which of its events are out, and when to try again.
#[derive(Debug)]
pub struct BatchError {
    pub delivered: Delivered,
    pub error: SinkError,
    /// How long the receiver asked to be left alone (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
}

/// Which events of a failed batch are out (whole) and need no retry.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// The first `n` (a stream: file, pipe, syslog over TCP).
    Leading(usize),
    /// All but these, by index into the batch (per-item results: Elasticsearch `_bulk`).
    AllBut(Vec<usize>),
}

impl BatchError {
    /// A failure after which the first `written` events are out and the rest are not.
    pub fn leading(written: usize, error: SinkError) -> BatchError {
        BatchError {
            delivered: Delivered::Leading(written),
            error,
            retry_after: None,
        }
    }
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
    tx: QueueTx,
    when_full: WhenFull,
    dropped_full: Counter,
    dropped_shutdown: Counter,
    dropped_encode: Counter,
    dropped_buffer: Counter,
    queue_depth: Gauge,
    capacity: usize,
    healthy: Arc<AtomicBool>,
    /// Set while this sink's queue or buffer has no room (read by `on_audit_failure`).
    saturated: Arc<AtomicBool>,
    /// A native-format file or stdout sink: the audit trail itself, which also gets the hash
    /// chain's own records (`integrity.*`). Network sinks get events only.
    trail: bool,
    /// A native-format sink that can make a write-ahead intent record durable: a file sink
    /// (fdatasync) or any sink with a disk buffer.
    durable: bool,
    bell: Arc<BatchBell>,
    /// `batch.max_events` and `batch.max_bytes`: a batch's worth rings the bell.
    batch_events: u64,
    batch_bytes: usize,
}

impl Drop for SinkHandle {
    /// Closing the queue tells the sink thread to finish: a channel closes by itself, a disk
    /// buffer is told.
    fn drop(&mut self) {
        if let QueueTx::Disk(buffer) = &self.tx {
            buffer.close();
        }
        self.bell.ring();
    }
}

/// The audit worker's end of a sink's queue.
enum QueueTx {
    Memory(mpsc::Sender<Record>),
    Disk(DiskBuffer),
}

/// The sink thread's end of its queue.
enum QueueRx {
    Memory(mpsc::Receiver<Record>),
    Disk(DiskReader),
}

/// How long [`QueueRx::next`] may wait.
#[derive(Clone, Copy)]
enum Wait {
    No,
    Forever,
}

/// Rings a sink thread that is lingering for a batch to fill (`batch.timeout_secs`) before its
/// time is up: when a batch's worth is queued, when a record is urgent (a write-ahead intent,
/// which a request waits on), or when the queue closes. Other enqueues wake nobody, so
/// collecting a batch costs the sink one wake-up per batch instead of one per event.
#[derive(Debug, Default)]
struct BatchBell {
    ring: Notify,
    /// Bytes of the events in a memory queue, and of the one a lingering sink thread has taken
    /// (a disk buffer is not counted).
    queued_bytes: AtomicUsize,
}

impl BatchBell {
    fn ring(&self) {
        self.ring.notify_one();
    }
}

/// What [`QueueRx::next`] found.
enum Next {
    /// An event, and for a disk buffer the position just after it.
    Event(Record, Option<Position>),
    /// Nothing within the wait.
    Empty,
    /// Closed and drained.
    Closed,
}

impl QueueRx {
    async fn next(&mut self, wait: Wait) -> Next {
        match self {
            QueueRx::Memory(rx) => {
                let got = match rx.try_recv() {
                    Ok(record) => return Next::Event(record, None),
                    Err(mpsc::error::TryRecvError::Disconnected) => return Next::Closed,
                    Err(mpsc::error::TryRecvError::Empty) => match wait {
                        Wait::No => return Next::Empty,
                        Wait::Forever => rx.recv().await,
                    },
                };
                match got {
                    Some(record) => Next::Event(record, None),
                    None => Next::Closed,
                }
            }
            QueueRx::Disk(reader) => loop {
                match reader.try_next() {
                    Ok(Some((record, position))) => return Next::Event(record, Some(position)),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(%error, "Cannot read the disk buffer; trying again.");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
                if reader.is_closed() {
                    return Next::Closed;
                }
                match wait {
                    Wait::No => return Next::Empty,
                    Wait::Forever => {
                        reader.wait().await;
                    }
                }
            },
        }
    }

    fn len(&self) -> u64 {
        match self {
            QueueRx::Memory(rx) => rx.len() as u64,
            QueueRx::Disk(reader) => reader.queued(),
        }
    }
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

    /// Whether the hash chain's own records go to this sink (see the field).
    pub fn is_trail(&self) -> bool {
        self.trail
    }

    /// Whether this sink can make an intent record durable (see the field).
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// True while the sink's queue or buffer is full: shared with the request path, which
    /// refuses SCIM writes then when `on_audit_failure = "reject"`.
    pub fn saturation(&self) -> Arc<AtomicBool> {
        self.saturated.clone()
    }

    /// Health flag shared with `/readyz`: false after a batch failed to be written.
    pub fn health(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    /// Queues one encoded event per the sink's `when_full` policy.
    /// Called from the audit worker thread, never from the async runtime.
    pub fn enqueue_blocking(&self, line: Record) {
        let urgent = line.meta.ack.is_some();
        // `next_batch`: what the sink's next batch would hold: the queue, plus (for a memory
        // queue) the one record a lingering sink thread has already taken (a disk buffer still
        // counts it).
        let (depth, next_batch, full) = match &self.tx {
            QueueTx::Memory(tx) => {
                self.enqueue_memory(tx, line);
                let depth = self.capacity.saturating_sub(tx.capacity()) as u64;
                (depth, depth + 1, tx.capacity() == 0)
            }
            QueueTx::Disk(buffer) => {
                match buffer.append(&line, self.when_full == WhenFull::Block) {
                    Ok(()) => {}
                    Err(BufferError::Full { .. }) => {
                        self.dropped_full.inc();
                    }
                    Err(BufferError::Closed) => {
                        self.dropped_shutdown.inc();
                    }
                    Err(error @ BufferError::Io { .. }) => {
                        tracing::error!(sink = %self.name, %error, "Cannot buffer an audit event.");
                        self.dropped_buffer.inc();
                        self.healthy.store(false, Ordering::Relaxed);
                    }
                }
                let depth = buffer.queued();
                (depth, depth, buffer.is_full())
            }
        };
        if urgent
            || full
            || next_batch >= self.batch_events
            || self.bell.queued_bytes.load(Ordering::Relaxed) >= self.batch_bytes
        {
            self.bell.ring();
        }
        self.saturated.store(full, Ordering::Relaxed);
        // Updated here too, so the gauge moves while the sink thread is stuck in a write.
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    fn enqueue_memory(&self, tx: &mpsc::Sender<Record>, line: Record) {
        // Counted before the send, so the sink thread never takes away more than was added.
        let len = line.line.len();
        self.bell.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let sent = match self.when_full {
            WhenFull::Block => {
                if tx.capacity() == 0 {
                    // The sink must make room now, not when its linger ends.
                    self.bell.ring();
                }
                let sent = tx.blocking_send(line).is_ok();
                if !sent {
                    self.dropped_shutdown.inc();
                }
                sent
            }
            WhenFull::DropNewest => match tx.try_send(line) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped_full.inc();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.dropped_shutdown.inc();
                    false
                }
            },
        };
        if !sent {
            self.bell.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        }
    }

    pub fn count_encode_error(&self) {
        self.dropped_encode.inc();
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
            dropped_full: dropped(DropReason::queue_full),
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
fn remaining(batch: Vec<Record>, delivered: Delivered) -> Vec<Record> {
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
fn backoff(retry: &RetryConfig, attempt: u32, retry_after: Option<Duration>) -> Duration {
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

/// Concatenates whole lines into `buf` (cleared first).
fn join_lines(buf: &mut Vec<u8>, lines: &[Record]) {
    buf.clear();
    for line in lines {
        buf.extend_from_slice(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record::from(Bytes::from(format!("{i}\n"))))
            .collect()
    }

    #[test]
    fn only_failed_events_are_sent_again() {
        let left = remaining(records(5), Delivered::Leading(2));
        assert_eq!(
            left.iter().map(|r| r.line.clone()).collect::<Vec<_>>(),
            [Bytes::from("2\n"), Bytes::from("3\n"), Bytes::from("4\n")]
        );
        let left = remaining(records(5), Delivered::AllBut(vec![1, 4]));
        assert_eq!(
            left.iter().map(|r| r.line.clone()).collect::<Vec<_>>(),
            [Bytes::from("1\n"), Bytes::from("4\n")]
        );
    }

    /// A file sink whose batches may wait 30 s to fill: only the bell can make it write sooner.
    fn lingering_file_sink(dir: &std::path::Path, max_events: usize) -> (SinkHandle, SinkThread) {
        let config = SinkConfig {
            name: "t".to_owned(),
            format: EventFormat::Native,
            when_full: WhenFull::Block,
            max_events: 64,
            disk_buffer: None,
            batch: BatchConfig {
                max_events,
                max_bytes: 1 << 20,
                timeout: Duration::from_secs(30),
            },
            retry: RetryConfig {
                max_attempts: 1,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(10),
            },
            kind: SinkKind::File(crate::config::FileSinkConfig {
                path: dir.join("audit.jsonl"),
                max_file_bytes: 1 << 30,
                keep_files: 1,
            }),
        };
        start(&config, &Metrics::new(), ReopenSignal::default()).expect("sink starts")
    }

    fn lines_within(path: &std::path::Path, want: usize, limit: Duration) -> usize {
        let until = Instant::now() + limit;
        loop {
            let n = std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
            if n >= want || Instant::now() >= until {
                return n;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_full_batch_is_written_without_waiting_out_the_linger() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (handle, _thread) = lingering_file_sink(dir.path(), 4);
        let mut three = records(3).into_iter();
        handle.enqueue_blocking(three.next().expect("a record"));
        // Once the sink thread holds the first record it lingers for the rest of its batch.
        let QueueTx::Memory(tx) = &handle.tx else {
            panic!("memory queue");
        };
        let until = Instant::now() + Duration::from_secs(5);
        while tx.capacity() < handle.capacity && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        for record in three {
            handle.enqueue_blocking(record);
        }
        let path = dir.path().join("audit.jsonl");
        assert_eq!(
            lines_within(&path, 1, Duration::from_millis(300)),
            0,
            "3 of 4: the batch is still filling"
        );
        handle.enqueue_blocking(Record::from(Bytes::from("3\n")));
        assert_eq!(lines_within(&path, 4, Duration::from_secs(5)), 4);
    }

    #[test]
    fn an_intent_is_made_durable_without_waiting_out_the_linger() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (handle, _thread) = lingering_file_sink(dir.path(), 512);
        handle.enqueue_blocking(Record::from(Bytes::from("0\n")));
        let (ack, mut fired) = DurableAck::new();
        handle.enqueue_blocking(Record {
            line: Bytes::from("{\"record\":\"audit.intent\"}\n"),
            meta: Arc::new(RecordMeta {
                ack: Some(ack),
                ..RecordMeta::default()
            }),
        });
        let until = Instant::now() + Duration::from_secs(5);
        while fired.try_recv().is_err() {
            assert!(Instant::now() < until, "intent not acknowledged within 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        let path = dir.path().join("audit.jsonl");
        assert_eq!(lines_within(&path, 2, Duration::from_secs(1)), 2);
    }

    #[test]
    fn closing_the_queue_ends_the_linger() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (handle, thread) = lingering_file_sink(dir.path(), 512);
        handle.enqueue_blocking(Record::from(Bytes::from("0\n")));
        drop(handle);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let finished = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), thread.finished()).await
        });
        assert!(
            finished.is_ok(),
            "the sink thread kept lingering after its queue closed"
        );
        assert_eq!(
            lines_within(&dir.path().join("audit.jsonl"), 1, Duration::ZERO),
            1
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after_up_to_the_cap() {
        let retry = RetryConfig {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        };
        for _ in 0..100 {
            let first = backoff(&retry, 1, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff(&retry, 3, None);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff(&retry, 30, None);
            assert!(late >= Duration::from_secs(1) && late <= Duration::from_secs(2));
        }
        assert_eq!(
            backoff(&retry, 1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            backoff(&retry, 1, Some(Duration::from_secs(3600))),
            Duration::from_secs(2)
        );
        let spread: std::collections::HashSet<_> =
            (0..20).map(|_| backoff(&retry, 5, None)).collect();
        assert!(spread.len() > 1, "jitter must vary the wait");
    }
}
