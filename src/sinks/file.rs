//! `type = "file"`: append events to a file a SIEM agent tails, with size-based rotation.
//!
//! Rotation renames (`audit.jsonl` → `audit.jsonl.1` → `.2` ...), never copies and truncates,
//! so a tailer that follows by name sees every line exactly once. External rotation
//! (logrotate without `copytruncate`) works too: rename the file, send SIGHUP, and scimtap
//! reopens `path`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{join_lines, SinkError, SinkWriter};
use crate::config::FileSinkConfig;

pub struct FileWriter {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    size: u64,
    max_file_bytes: u64,
    keep_files: u32,
    buf: Vec<u8>,
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

    fn write_buf(&mut self) -> Result<(), SinkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buf).map_err(SinkError::Write)?;
        self.size += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

impl SinkWriter for FileWriter {
    fn write_batch(&mut self, lines: &[Bytes]) -> Result<(), SinkError> {
        if self.max_file_bytes == 0 {
            join_lines(&mut self.buf, lines);
            return self.write_buf();
        }
        self.buf.clear();
        for line in lines {
            let would_be = self.size + (self.buf.len() + line.len()) as u64;
            if would_be > self.max_file_bytes && self.size + self.buf.len() as u64 > 0 {
                self.write_buf()?;
                self.rotate()?;
            }
            self.buf.extend_from_slice(line);
        }
        self.write_buf()
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        let (file, size) = open_append(&self.path)?;
        self.file = file;
        self.size = size;
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
mod tests {
    use super::*;

    fn line(n: usize) -> Bytes {
        Bytes::from(format!("{{\"n\":{n:04}}}\n"))
    }

    #[test]
    fn rotates_by_rename_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let line_len = line(0).len() as u64;
        let mut w = FileWriter::open(&FileSinkConfig {
            path: path.clone(),
            max_file_bytes: line_len * 3,
            keep_files: 2,
        })
        .unwrap();
        let lines: Vec<Bytes> = (0..10).map(line).collect();
        w.write_batch(&lines[..4]).unwrap();
        w.write_batch(&lines[4..]).unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        // 10 lines, 3 per file: current holds 9, .1 holds 6-8, .2 holds 3-5, 0-2 deleted.
        assert_eq!(read(&path), "{\"n\":0009}\n");
        assert_eq!(
            read(&w.rotated(1)),
            "{\"n\":0006}\n{\"n\":0007}\n{\"n\":0008}\n"
        );
        assert_eq!(
            read(&w.rotated(2)),
            "{\"n\":0003}\n{\"n\":0004}\n{\"n\":0005}\n"
        );
        assert!(!w.rotated(3).exists());
    }

    #[test]
    fn reopen_follows_an_external_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut w = FileWriter::open(&FileSinkConfig {
            path: path.clone(),
            max_file_bytes: 0,
            keep_files: 1,
        })
        .unwrap();
        w.write_batch(&[line(1)]).unwrap();
        std::fs::rename(&path, dir.path().join("moved")).unwrap();
        w.reopen().unwrap();
        w.write_batch(&[line(2)]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":0002}\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("moved")).unwrap(),
            "{\"n\":0001}\n"
        );
    }
}
