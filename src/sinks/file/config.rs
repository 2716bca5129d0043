//! `type = "file"` options: the path, and size-based rotation.

use std::path::PathBuf;

use crate::config::defaults;
use crate::sinks::config::{sink_options, SinkConfig, SinkKind, SinkTable};

sink_options! {
    /// `type = "file"`: events appended to a file, rotated by size.
    pub(crate) struct RawFileSink {
        /// File to append events to, one JSON object per line. Required.
        path: Option<PathBuf>,
        /// Rotate (rename to `<path>.1`, shift older ones) once the file reaches this size; 0 never.
        #[serde(default = "default_max_file_bytes")]
        max_file_bytes: u64,
        /// Rotated files kept (`<path>.1` .. `<path>.N`); older ones are deleted.
        #[serde(default = "default_keep_files")]
        keep_files: u32,
    }
}

defaults! {
    default_max_file_bytes: u64 = 100 * 1024 * 1024;
    default_keep_files: u32 = 10;
}

#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    pub path: PathBuf,
    pub max_file_bytes: u64,
    pub keep_files: u32,
}

impl RawFileSink {
    /// Checks and resolves the file sink's own options; `None` without a `path`.
    pub(crate) fn resolve(&self, t: &mut SinkTable<'_, '_>) -> Option<SinkKind> {
        let Some(path) = &self.path else {
            t.problem("path", "missing: a file sink needs a `path`");
            return None;
        };
        if self.keep_files == 0 && self.max_file_bytes > 0 {
            t.problem("keep_files", "must be at least 1 when rotating");
        }
        Some(SinkKind::File(FileSinkConfig {
            path: path.clone(),
            max_file_bytes: self.max_file_bytes,
            keep_files: self.keep_files,
        }))
    }
}

/// Two file sinks cannot write one file (`others`: the sinks before this one).
pub(crate) fn check_path_unique(
    t: &mut SinkTable<'_, '_>,
    file: &FileSinkConfig,
    others: &[SinkConfig],
) {
    let clash = others
        .iter()
        .any(|s| matches!(&s.kind, SinkKind::File(o) if o.path == file.path));
    if clash {
        t.problem(
            "path",
            format!("{} is already written by another sink", file.path.display()),
        );
    }
}
