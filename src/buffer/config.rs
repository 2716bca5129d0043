//! `buffer = { ... }`: where a sink's queue is kept, in memory (the default) or on disk.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::defaults;
use crate::sinks::config::SinkTable;

/// `buffer = { type = "memory", max_events = N }` (default) or
/// `buffer = { type = "disk", path = "...", max_bytes = N }`: the sink's own queue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuffer {
    #[serde(rename = "type", default)]
    kind: BufferKind,
    /// Memory: events held. Disk: events read ahead into memory (a small number is enough).
    #[serde(default = "default_buffer_max_events")]
    max_events: u64,
    /// Disk: the directory of segment files (one per sink). Required for `type = "disk"`.
    path: Option<PathBuf>,
    /// Disk: most bytes kept on disk; past it `when_full` applies.
    max_bytes: Option<u64>,
}

impl Default for RawBuffer {
    fn default() -> Self {
        RawBuffer {
            kind: BufferKind::Memory,
            max_events: default_buffer_max_events(),
            path: None,
            max_bytes: None,
        }
    }
}

defaults! {
    default_buffer_max_events: u64 = 4096;
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum BufferKind {
    #[default]
    Memory,
    Disk,
}

#[derive(Debug, Clone)]
pub struct DiskBufferConfig {
    pub path: PathBuf,
    pub max_bytes: u64,
}

const DEFAULT_DISK_BUFFER_BYTES: u64 = 256 * 1024 * 1024;

/// Resolves a sink's `buffer`: the disk buffer's settings (`None` for memory) and the queue's
/// length in events. `taken` are the disk buffers of the sinks before this one: two sinks
/// cannot share a directory.
pub(crate) fn validate_buffer<'a>(
    t: &mut SinkTable<'_, '_>,
    buffer: &RawBuffer,
    mut taken: impl Iterator<Item = &'a DiskBufferConfig>,
) -> (Option<DiskBufferConfig>, usize) {
    let disk_buffer = match buffer.kind {
        BufferKind::Memory => {
            if buffer.path.is_some() || buffer.max_bytes.is_some() {
                t.problem(
                    "buffer.type",
                    "path and max_bytes are for buffer type = \"disk\"",
                );
            }
            None
        }
        BufferKind::Disk => {
            let max_bytes = buffer.max_bytes.unwrap_or(DEFAULT_DISK_BUFFER_BYTES);
            if max_bytes < 1024 * 1024 {
                t.problem("buffer.max_bytes", "must be at least 1048576 (1 MiB)");
            }
            match &buffer.path {
                Some(path) => Some(DiskBufferConfig {
                    path: path.clone(),
                    max_bytes,
                }),
                None => {
                    t.problem(
                        "buffer.path",
                        "missing: a disk buffer needs a `path` (a directory of its own)",
                    );
                    None
                }
            }
        }
    };
    if let Some(disk) = &disk_buffer {
        if taken.any(|other| other.path == disk.path) {
            t.problem(
                "buffer.path",
                format!("{} is already another sink's buffer", disk.path.display()),
            );
        }
    }
    if buffer.max_events == 0 || buffer.max_events > 10_000_000 {
        t.problem("buffer.max_events", "must be between 1 and 10000000");
    }
    (disk_buffer, buffer.max_events.clamp(1, 10_000_000) as usize)
}
