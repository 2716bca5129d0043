//! scimtap's integration tests, as one test binary (one link instead of twenty).
//!
//! Each module is one suite; a test's full name is `<suite>::<test>`, so
//! `cargo test --test it transparency::` runs one suite and `cargo test <name>` one test.
//! Shared harness (the scimtap process, upstreams, peers, waits): [`support`].
//! Fixtures stay in `tests/fixtures` and the Python peers in `tests/peer`.

mod support;

mod alerts;
mod answers;

mod bad_input;
mod classify;
mod classify_fuzz;
mod cli;
mod config_reference;
mod delivery;
mod deploy;
mod formats;
mod hardening;
mod integrity;
mod pipeline;
mod reliability;
mod reload;
mod report;
mod routes;
mod schema;
mod scim_server;
mod secrets;
mod sink_http;
mod sink_kafka;
mod sink_syslog;
mod state;
mod state_pg;
mod transparency;
mod ui;
mod write_ahead;
