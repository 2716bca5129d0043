//! `type = "stdout"`: events to standard output, one JSON object per line. scimtap's own logs
//! go to stderr, so stdout carries nothing but events.

use std::io::Write;

use bytes::Bytes;

use super::{join_lines, SinkError, SinkWriter};

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
    fn write_batch(&mut self, lines: &[Bytes]) -> Result<(), SinkError> {
        join_lines(&mut self.buf, lines);
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf).map_err(SinkError::Write)?;
        out.flush().map_err(SinkError::Write)
    }
}
