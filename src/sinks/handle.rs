//! The audit worker's end of one sink ([`SinkHandle`]): enqueueing per the `when_full` policy,
//! saturation and health flags shared with the request path, and the handle to wait for the
//! sink thread ([`SinkThread`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    pub(super) dropped_full: Counter,
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
