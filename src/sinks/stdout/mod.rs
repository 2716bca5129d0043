//! `type = "stdout"`: events to standard output, one JSON object per line. scimtap's own logs
//! go to stderr, so stdout carries nothing but events.

pub(crate) mod config;

use std::io::Write;

use crate::sinks::{join_lines, BatchError, Record, SinkError, SinkWriter};

pub struct StdoutWriter {
    buf: Vec<u8>,
    /// Bytes of the first line of the next batch already written by a failed attempt: a
    /// pipe cannot be taken back, so the retry resumes mid-line instead of repeating it.
    torn: usize,
}

impl StdoutWriter {
    pub fn new() -> Self {
        StdoutWriter {
            buf: Vec::with_capacity(64 * 1024),
            torn: 0,
        }
    }
}

impl Default for StdoutWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl SinkWriter for StdoutWriter {
    fn write_batch(&mut self, lines: &[Record]) -> Result<(), BatchError> {
        join_lines(&mut self.buf, lines);
        let skip = self.torn.min(self.buf.len());
        let mut out = std::io::stdout().lock();
        let mut written = skip;
        let result = loop {
            if written == self.buf.len() {
                break out.flush();
            }
            match out.write(&self.buf[written..]) {
                Ok(0) => break Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => {
                self.torn = 0;
                Ok(())
            }
            Err(error) => {
                // Lines wholly out, and how much of the next one is.
                let done = &self.buf[..written];
                let whole = done.iter().filter(|&&b| b == b'\n').count();
                let last_line_start = done.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                self.torn = written - last_line_start;
                Err(BatchError::leading(whole, SinkError::Write(error)))
            }
        }
    }

    /// Ends a torn line with a newline so the next event starts on its own line (the torn
    /// one is lost, and is counted as dropped).
    fn abandon(&mut self) {
        if self.torn > 0 {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"\n").and_then(|()| out.flush());
            self.torn = 0;
        }
    }
}
