//! `type = "file"`: append events to a file a SIEM agent tails, with size-based rotation.
//!
//! Rotation renames (`audit.jsonl` → `audit.jsonl.1` → `.2` ...), never copies and truncates,
//! so a tailer that follows by name sees every line exactly once. External rotation
//! (logrotate without `copytruncate`) works too: rename the file, send SIGHUP, and scimtap
//! reopens `path`.

pub(crate) mod config;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use self::config::FileSinkConfig;
use crate::sinks::{BatchError, Record, SinkError, SinkWriter};

pub struct FileWriter {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    size: u64,
    max_file_bytes: u64,
    keep_files: u32,
    buf: Vec<u8>,
    /// Set when a rotation failed; cleared by a reopen.
    rotation_broken: bool,
}

impl FileWriter {
    /// Opens (creating if needed) `config.path` for appending.
    ///
    /// # Errors
    /// [`SinkError::Open`] with the path.
    pub fn open(config: &FileSinkConfig) -> Result<FileWriter, SinkError> {
        let (file, size) = open_append(&config.path)?;
        Ok(FileWriter {
            path: config.path.clone(),
            file,
            size,
            max_file_bytes: config.max_file_bytes,
            keep_files: config.keep_files,
            buf: Vec::with_capacity(64 * 1024),
            rotation_broken: false,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// `path` → `path.1`, `path.1` → `path.2`, ..., dropping the oldest beyond `keep_files`.
    fn rotate(&mut self) -> Result<(), SinkError> {
        self.file.flush().map_err(SinkError::Rotate)?;
        let oldest = self.rotated(self.keep_files);
        match std::fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SinkError::Rotate(e)),
        }
        for n in (1..self.keep_files).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1)).map_err(SinkError::Rotate)?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1)).map_err(SinkError::Rotate)?;
        self.reopen()?;
        tracing::info!(path = %self.path.display(), "Audit file rotated.");
        Ok(())
    }

    /// Writes `buf` (whole lines). On failure the file is cut back to the last
    /// whole line that made it, so a tailer never sees a torn event and a retry of the
    /// remaining lines duplicates nothing; returns how many lines are out.
    fn write_buf(&mut self) -> Result<(), (usize, SinkError)> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Our own count can be stale if someone truncated the file (copytruncate): ask.
        let start = self.file.metadata().map_or(self.size, |m| m.len());
        self.size = start;
        match self.file.write_all(&self.buf) {
            Ok(()) => {
                self.size += self.buf.len() as u64;
                self.buf.clear();
                Ok(())
            }
            Err(error) => {
                let now = self.file.metadata().map_or(start, |m| m.len());
                let landed = usize::try_from(now.saturating_sub(start)).unwrap_or(usize::MAX);
                let (keep, whole) = whole_lines_prefix(&self.buf, landed);
                // Only ever shorten: never extend the file with zeros.
                let cut_at = (start + keep as u64).min(now);
                if cut_at < now {
                    if let Err(cut) = self.file.set_len(cut_at) {
                        tracing::error!(path = %self.path.display(), error = %cut, "Cannot cut a torn line from the audit file.");
                    }
                }
                self.size = cut_at;
                self.buf.clear();
                Err((whole, SinkError::Write(error)))
            }
        }
    }
}

/// Of the first `landed` bytes of `buf`, the prefix that ends at a line boundary: its length
/// and the number of lines in it.
fn whole_lines_prefix(buf: &[u8], landed: usize) -> (usize, usize) {
    let landed = &buf[..landed.min(buf.len())];
    match landed.iter().rposition(|&b| b == b'\n') {
        Some(last) => (last + 1, landed.iter().filter(|&&b| b == b'\n').count()),
        None => (0, 0),
    }
}

impl SinkWriter for FileWriter {
    fn write_batch(&mut self, lines: &[Record]) -> Result<(), BatchError> {
        let mut done = 0;
        let mut in_buf = 0;
        // Write-ahead intent records in the batch: one fdatasync covers them all (group
        // commit), before the file rotates away and at the end.
        let mut needs_sync = false;
        self.buf.clear();
        for line in lines {
            let would_be = self.size + (self.buf.len() + line.len()) as u64;
            if self.max_file_bytes > 0
                && would_be > self.max_file_bytes
                && self.size + self.buf.len() as u64 > 0
            {
                self.write_buf()
                    .map_err(|(whole, error)| BatchError::leading(done + whole, error))?;
                done += in_buf;
                in_buf = 0;
                if needs_sync {
                    self.file
                        .sync_data()
                        .map_err(|e| BatchError::leading(done, SinkError::Write(e)))?;
                }
                if !self.rotation_broken {
                    if let Err(error) = self.rotate() {
                        // Events matter more than file sizes: keep appending to the current
                        // file, and stop trying until the output is reopened.
                        self.rotation_broken = true;
                        tracing::error!(path = %self.path.display(), %error, "Rotation failed; appending to the current file until the next reopen.");
                    }
                }
            }
            self.buf.extend_from_slice(line);
            in_buf += 1;
            needs_sync |= line.meta.ack.is_some();
        }
        self.write_buf()
            .map_err(|(whole, error)| BatchError::leading(done + whole, error))?;
        if needs_sync {
            // Written whole; only the promise of durability is missing if this fails, and
            // the waiting requests are then refused (their acks are never fired).
            self.file
                .sync_data()
                .map_err(|e| BatchError::leading(lines.len(), SinkError::Write(e)))?;
            for line in lines {
                if let Some(ack) = &line.meta.ack {
                    ack.fire();
                }
            }
        }
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        let (file, size) = open_append(&self.path)?;
        self.file = file;
        self.size = size;
        self.rotation_broken = false;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<(File, u64), SinkError> {
    let open_err = |source| SinkError::Open {
        path: path.display().to_string(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    Ok((file, size))
}

#[cfg(test)]
mod tests;
