//! The sink test kit, run against the `webhook` sink and an in-test hyper receiver
//! (a stall is a receiver that holds requests unanswered).

mod common;

// Links the crate, so that its registration is there.
use master_events_sink_webhook as _;

master_events_sinktest::kit_tests!(sink = "webhook", target = common::Receiver::start().await);
