//! The audit worker's end of one sink ([`SinkHandle`]): enqueueing per the `when_full` policy,
//! saturation and health flags shared with the request path, and the handle to wait for the
//! sink thread ([`SinkThread`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot};

use super::queue::{BatchBell, QueueTx};
use super::{BufferError, Record};
use crate::config::{EventFormat, WhenFull};

/// The audit worker's end of one sink.
pub struct SinkHandle {
    pub(super) name: String,
    pub(super) format: EventFormat,
    pub(super) tx: QueueTx,
    pub(super) when_full: WhenFull,
    /// How long `block` waits for room before the sink is stalled.
    pub(super) block_timeout: Duration,
    /// Set once a `block` sink's queue stayed full for `block_timeout`; cleared when an event
    /// fits again. While set, what does not fit is dropped without waiting.
    pub(super) stalled: AtomicBool,
    pub(super) dropped_full: Counter,
    pub(super) dropped_stalled: Counter,
    pub(super) dropped_shutdown: Counter,
    pub(super) dropped_encode: Counter,
    pub(super) dropped_buffer: Counter,
    pub(super) queue_depth: Gauge,
    pub(super) capacity: usize,
    pub(super) healthy: Arc<AtomicBool>,
    /// Set while this sink's queue or buffer has no room (read by `on_audit_failure`).
    pub(super) saturated: Arc<AtomicBool>,
    /// A native-format file or stdout sink: the audit trail itself, which also gets the hash
    /// chain's own records (`integrity.*`). Network sinks get events only.
    pub(super) trail: bool,
    /// A native-format sink that can make a write-ahead intent record durable: a file sink
    /// (fdatasync) or any sink with a disk buffer.
    pub(super) durable: bool,
    pub(super) bell: Arc<BatchBell>,
    /// `batch.max_events` and `batch.max_bytes`: a batch's worth rings the bell.
    pub(super) batch_events: u64,
    pub(super) batch_bytes: usize,
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

/// Lets the owner wait for a sink thread to finish its last batch. Waiting is async and
/// bounded by the caller: a thread stuck in a write (a pipe nobody reads) must not hold up
/// shutdown past its deadline, so the thread is never joined.
pub struct SinkThread {
    pub name: String,
    pub(super) done: oneshot::Receiver<()>,
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
                match buffer.append(&line, self.wait_for_room()) {
                    Ok(()) => self.has_room(),
                    Err(BufferError::Full { .. }) if self.when_full == WhenFull::Block => {
                        self.stall();
                    }
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
            WhenFull::Block => self.send_within(tx, line),
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

    /// `block`: waits for room at most `block_timeout`, and not at all while the sink is
    /// stalled. Polls, because the queue is async and this is the audit worker's thread; it
    /// runs only while the queue is full.
    fn send_within(&self, tx: &mpsc::Sender<Record>, line: Record) -> bool {
        let mut line = match tx.try_send(line) {
            Ok(()) => {
                self.has_room();
                return true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.dropped_shutdown.inc();
                return false;
            }
            Err(mpsc::error::TrySendError::Full(line)) => line,
        };
        if self.stalled.load(Ordering::Relaxed) {
            self.dropped_stalled.inc();
            return false;
        }
        // The sink must make room now, not when its linger ends.
        self.bell.ring();
        let deadline = Instant::now() + self.block_timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            pause = (pause * 2).min(Duration::from_millis(5));
            line = match tx.try_send(line) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.dropped_shutdown.inc();
                    return false;
                }
                Err(mpsc::error::TrySendError::Full(line)) => line,
            };
            if Instant::now() >= deadline {
                self.stall();
                return false;
            }
        }
    }

    /// How long a disk buffer may wait for room (see [`Self::send_within`]).
    fn wait_for_room(&self) -> Option<Duration> {
        (self.when_full == WhenFull::Block && !self.stalled.load(Ordering::Relaxed))
            .then_some(self.block_timeout)
    }

    /// A `block` sink found no room: it is stalled from now on (said once), and this event is
    /// dropped for it.
    fn stall(&self) {
        self.dropped_stalled.inc();
        if !self.stalled.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                sink = %self.name,
                block_timeout_ms = self.block_timeout.as_millis(),
                "Sink stalled: its queue stayed full; it drops the events that do not fit (scimtap_sink_events_dropped_total{{reason=\"stalled\"}}) until it has room again, and no longer holds back the other sinks."
            );
        }
    }

    /// An event fitted: a stalled sink is writing again.
    fn has_room(&self) {
        if self.stalled.load(Ordering::Relaxed) {
            self.stalled.store(false, Ordering::Relaxed);
            tracing::info!(sink = %self.name, "Sink has room again: no longer stalled.");
        }
    }

    pub fn count_encode_error(&self) {
        self.dropped_encode.inc();
    }
}
