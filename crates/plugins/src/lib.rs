//! The one crate that links every sink into the `master-events` binary.
//!
//! Sinks register themselves at compile time with `inventory`, but a crate that
//! nothing references is not linked, and its registration silently vanishes. This
//! crate names each sink crate once (`use some_plugin as _;`), the binary depends on
//! this crate, and `tests/registered.rs` asserts the exact list of registered names,
//! so a plugin that falls out of the build fails a test instead of disappearing.
//!
//! To add a plugin: add its crate to this crate's `Cargo.toml`, add a
//! `use <crate> as _;` line below, and add its name to the test.
#![warn(missing_docs)]

// Built in: `archiver` and `stdout` (the router), `http` (the server's streams).
use master_events_router as _;
use master_events_server as _;
// Plugin crates (plugins/): `tsv` (the example of docs/writing-a-sink.md), `file`,
// `nats`, `webhook`.
use master_events_sink_example as _;
use master_events_sink_file as _;
use master_events_sink_nats as _;
use master_events_sink_webhook as _;

pub use master_events_router::{registered_filters, registered_sinks};

/// The names of every registered sink, sorted.
pub fn sink_names() -> Vec<&'static str> {
    registered_sinks().iter().map(|r| r.name).collect()
}
