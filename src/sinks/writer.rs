//! The contract between the sink machinery and one sink's output: [`SinkWriter`] for blocking
//! writers, and the errors every output reports ([`SinkError`], [`BatchError`] with what was
//! [`Delivered`]), so the retry loop in one place decides what to send again.

use std::time::Duration;

use super::Record;

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

/// Concatenates whole lines into `buf` (cleared first).
pub(super) fn join_lines(buf: &mut Vec<u8>, lines: &[Record]) {
    buf.clear();
    for line in lines {
        buf.extend_from_slice(line);
    }
}
