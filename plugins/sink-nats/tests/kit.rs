//! The sink test kit, run against the `nats` sink and a real `nats-server` (a stall
//! is the server frozen with SIGSTOP).

mod common;

// Links the crate, so that its registration is there.
use master_events_sink_nats as _;

master_events_sinktest::kit_tests!(sink = "nats", target = common::NatsTarget::start().await);
