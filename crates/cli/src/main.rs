//! The `master-events` binary: the command line of `master_events_cli`, with the
//! sinks this repository builds in (crates/plugins). A team's own binary is the same
//! one line plus a `use their_sink as _;` (docs/writing-a-sink.md).

use std::process::ExitCode;

fn main() -> ExitCode {
    master_events_cli::run()
}
