//! Sinks: where encoded audit events go.
//!
//! Each sink owns a bounded queue and a dedicated thread: writes to files and pipes are
//! blocking system calls, and a stalled one (a full disk, a reader that stopped reading stdout,
//! a collector that does not answer) must stall only that thread, never the async runtime
//! serving requests. The thread runs its own single-threaded runtime (network sinks speak async
//! HTTP and Kafka), takes a batch of whole events (`batch.max_events`, `batch.max_bytes`,
//! waiting up to `batch.timeout_secs` for it to fill), sends it, retries what failed with
//! exponential backoff, jitter and the receiver's `Retry-After`, and accounts for every event:
//! written, or dropped with a reason.
//!
//! Layout (vector's): one folder per sink type, `<type>/mod.rs` its writer and
//! `<type>/config.rs` its options (raw, checked, resolved), unit tests in `<type>/tests.rs`.
//! The machinery every sink shares: `config.rs` (the options every sink takes and the pass that
//! resolves each `[[sinks]]` table), `record.rs` (what a queue carries), `writer.rs` (the
//! contract an output fulfils and its errors), `queue.rs` (both ends of a sink's queue),
//! `handle.rs` (the audit worker's end) and `worker.rs` (the sink thread: batches, retries,
//! accounting). The disk buffer lives in [`crate::buffer`].

pub(crate) mod config;
pub(crate) mod file;
mod handle;
pub(crate) mod http;
pub(crate) mod kafka;
mod queue;
mod record;
pub(crate) mod stdout;
pub(crate) mod syslog;
mod worker;
mod writer;

pub use crate::buffer::{BufferError, DiskBuffer, DiskReader, Position};
pub use file::FileWriter;
pub use handle::{SinkHandle, SinkThread};
pub use http::HttpWriter;
pub use kafka::KafkaWriter;
pub use record::{DurableAck, Record, RecordMeta, Severity};
pub use stdout::StdoutWriter;
pub use syslog::SyslogWriter;
pub use worker::{start, ReopenSignal};
use writer::join_lines;
pub use writer::{BatchError, Delivered, SinkError, SinkWriter};

#[cfg(test)]
mod tests;
