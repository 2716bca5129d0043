//! `type = "stdout"`: events to standard output, one JSON object per line. scimtap's own logs
//! go to stderr, so stdout carries nothing but events.

use std::io::Write;

use bytes::Bytes;

use super::{join_lines, BatchError, SinkError, SinkWriter};

pub struct StdoutWriter {
    buf: Vec<u8>,
}

impl StdoutWriter {
    pub fn new() -> Self {
        StdoutWriter {
            buf: Vec::with_capacity(64 * 1024),
        }
    }
}

impl Default for StdoutWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl SinkWriter for StdoutWriter {
    /// A failed write to a pipe cannot be taken back: the batch is reported unwritten (a
    /// reader that went away gets nothing more anyway).
    fn write_batch(&mut self, lines: &[Bytes]) -> Result<(), BatchError> {
        join_lines(&mut self.buf, lines);
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)
            .and_then(|()| out.flush())
            .map_err(|e| BatchError {
                written: 0,
                error: SinkError::Write(e),
            })
    }
}
