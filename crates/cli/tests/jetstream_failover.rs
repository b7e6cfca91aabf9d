//! The JetStream hand-off across a failover: three `serve` nodes on a real etcd
//! (lease 1 s), each configured with the same nats sink in JetStream mode, which runs
//! on the master only (`run_on = "master"`, the nats sink's default). Writers post to
//! every node; the master is killed with SIGKILL (at a moment from a printed seed)
//! and later restarted as a follower. The stream must then hold every event the
//! cluster committed exactly once, in seq order, with one history and message ids
//! `HISTORY:SEQ`: the new master's sink resumed after the last seq the stream held,
//! and the followers never published (their sink is `standby` in `/cluster`). The
//! scenario is `common::handoff::failover`, shared with the kafka sink.
//!
//! Needs `etcd` and `nats-server` (scripts/deps.sh installs both).
//! `JETSTREAM_FAILOVER_SEED` replays a run.
#![cfg(feature = "etcd")]

mod common;

use common::handoff;
use common::{nats_server, start_etcd};

const STREAM: &str = "FAILOVER";

/// The failover scenario with `fault`, on a fresh etcd and nats-server.
fn run(fault: handoff::Fault, seed_var: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, etcd_port) = start_etcd(dir.path());
    let nats = nats_server(dir.path());
    let sink = format!(
        "[[sinks]]\ntype = \"nats\"\nservers = [\"{}\"]\n\
         jetstream = {{ stream = \"{STREAM}\", ack_window = 128 }}\n",
        nats.url
    );
    handoff::failover(
        fault,
        seed_var,
        dir.path(),
        etcd_port,
        &sink,
        "nats",
        &|last, what| handoff::jetstream_records(&nats.url, STREAM, last, what),
    );
}

#[test]
fn the_stream_holds_every_committed_event_once_in_order_across_a_master_kill() {
    run(handoff::Fault::Kill, "JETSTREAM_FAILOVER_SEED");
}

#[test]
fn the_stream_holds_every_committed_event_once_in_order_across_a_master_paused_past_its_lease() {
    run(handoff::Fault::Pause, "JETSTREAM_PAUSE_SEED");
}
