//! A sink's queue, both ends: a bounded channel in memory or a disk buffer, and the bell that
//! wakes a sink thread lingering for a batch to fill.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::{DiskBuffer, DiskReader, Position, Record};

/// The audit worker's end of a sink's queue.
pub(super) enum QueueTx {
    Memory(mpsc::Sender<Record>),
    Disk(DiskBuffer),
}

/// The sink thread's end of its queue.
pub(super) enum QueueRx {
    Memory(mpsc::Receiver<Record>),
    Disk(DiskReader),
}

/// How long [`QueueRx::next`] may wait.
#[derive(Clone, Copy)]
pub(super) enum Wait {
    No,
    Forever,
}

/// Rings a sink thread that is lingering for a batch to fill (`batch.timeout_secs`) before its
/// time is up: when a batch's worth is queued, when a record is urgent (a write-ahead intent,
/// which a request waits on), or when the queue closes. Other enqueues wake nobody, so
/// collecting a batch costs the sink one wake-up per batch instead of one per event.
#[derive(Debug, Default)]
pub(super) struct BatchBell {
    pub(super) ring: Notify,
    /// Bytes of the events in a memory queue, and of the one a lingering sink thread has taken
    /// (a disk buffer is not counted).
    pub(super) queued_bytes: AtomicUsize,
}

impl BatchBell {
    pub(super) fn ring(&self) {
        self.ring.notify_one();
    }
}

/// What [`QueueRx::next`] found.
pub(super) enum Next {
    /// An event, and for a disk buffer the position just after it.
    Event(Record, Option<Position>),
    /// Nothing within the wait.
    Empty,
    /// Closed and drained.
    Closed,
}

impl QueueRx {
    pub(super) async fn next(&mut self, wait: Wait) -> Next {
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

    pub(super) fn len(&self) -> u64 {
        match self {
            QueueRx::Memory(rx) => rx.len() as u64,
            QueueRx::Disk(reader) => reader.queued(),
        }
    }
}
