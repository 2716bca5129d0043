//! Buffers: where a sink's queue is kept between the audit worker and the sink thread.
//!
//! A sink's queue lives in memory by default (a bounded channel, see `crate::sinks`); with
//! `buffer = { type = "disk", ... }` it lives in append-only segment files (`disk.rs`), so events
//! survive a receiver outage longer than memory allows, and a crash or a restart. Buffers are
//! kept apart from the sinks (as vector keeps `vector-buffers` apart): a buffer knows records,
//! not receivers, and any sink can sit behind one.

pub(crate) mod config;
mod disk;

pub use disk::{BufferError, DiskBuffer, DiskReader, Position};
