//! A server with a durable file log (`fsync = "always"`: a `200` means on disk) and
//! a nats sink in JetStream mode is killed with SIGKILL while writers post, and
//! restarted: the JetStream stream then holds every acknowledged event exactly once,
//! in seq order, each with its message id `HISTORY:SEQ` — the restarted sink
//! resumes after the last seq the stream holds, from the restored log (the
//! scenario is `common::handoff::sigkill`, shared with the kafka sink).
//!
//! Needs `nats-server` (scripts/deps.sh installs it). The moment of the kill comes
//! from a seed, printed first (`JETSTREAM_KILL_SEED` replays one).

mod common;

use common::handoff;
use common::nats_server;

const STREAM: &str = "EVENTS";

#[test]
fn every_acknowledged_event_is_in_jetstream_once_in_order_after_a_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = nats_server(dir.path());
    let sink = format!(
        "[[sinks]]\ntype = \"nats\"\nservers = [\"{}\"]\njetstream = {{ stream = \"{STREAM}\", ack_window = 128 }}\n",
        nats.url
    );
    handoff::sigkill("JETSTREAM_KILL_SEED", dir.path(), &sink, &|last, what| {
        handoff::jetstream_records(&nats.url, STREAM, last, what)
    });
}
