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
#![forbid(unsafe_code)]

// Built in: `archiver` and `stdout` (the router), `http` (the server's streams).
use master_events_router as _;
use master_events_server as _;
// Plugin crates (plugins/): `tsv` and `counts` (the examples of
// docs/writing-a-sink.md), `file`, `kafka`, `nats`, `webhook`.
use master_events_sink_example as _;
use master_events_sink_file as _;
use master_events_sink_kafka as _;
use master_events_sink_nats as _;
use master_events_sink_webhook as _;

pub use master_events_router::{registered_filters, registered_sinks};

/// The names of every registered sink, sorted.
pub fn sink_names() -> Vec<&'static str> {
    registered_sinks().iter().map(|r| r.name).collect()
}

/// The plugin sinks' counters, for `/metrics`: delivered, dropped (per reason) and
/// missed events of the `webhook`, `nats`, `kafka` and `file` sinks, summed over their
/// instances; and each running `file` sink's state and held events, by log path.
/// Only the sink types that are configured have series: a scrape shows no `nats`
/// counters on a server without a `nats` sink.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// The configured sink types (`None`: every plugin sink).
    configured: Option<Vec<String>>,
}

impl SinkMetrics {
    /// The collector of every plugin sink's series, to hand to the server's metrics.
    pub fn collector() -> Box<dyn prometheus_client::collector::Collector> {
        Box::new(SinkMetrics::default())
    }

    /// The collector of the series of the sink types in `configured` only (the
    /// `type`s of the running sinks, e.g. `SinkSet::names`).
    pub fn collector_for(configured: &[&str]) -> Box<dyn prometheus_client::collector::Collector> {
        Box::new(SinkMetrics {
            configured: Some(configured.iter().map(|s| (*s).to_owned()).collect()),
        })
    }

    fn shows(&self, sink: &str) -> bool {
        self.configured
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n == sink))
    }
}

impl prometheus_client::collector::Collector for SinkMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let web = master_events_sink_webhook::stats();
        let nats = master_events_sink_nats::stats();
        let file = master_events_sink_file::totals();
        let kafka = master_events_sink_kafka::stats();
        let delivered = [
            ("webhook", web.delivered),
            ("nats", nats.published),
            ("kafka", kafka.published),
            ("file", file.events_written),
        ];
        let dropped = [
            ("webhook", "queue_full", web.dropped_queue_full),
            ("webhook", "rejected", web.dropped_rejected),
            ("webhook", "shutdown", web.dropped_at_shutdown),
            ("nats", "queue_full", nats.dropped_queue_full),
            ("nats", "shutdown", nats.dropped_at_shutdown),
            ("nats", "publish_error", nats.publish_errors),
            ("kafka", "shutdown", kafka.dropped_at_shutdown),
            ("kafka", "too_large", kafka.dropped_too_large),
            ("file", "write_error", file.events_dropped),
        ];
        let missed = [
            ("webhook", web.missed),
            ("nats", nats.missed),
            ("kafka", kafka.missed),
        ];
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "master_events_sink_delivered",
            "Events a plugin sink delivered to its target.",
            None,
            counter.metric_type(),
        )?;
        for (sink, v) in delivered.into_iter().filter(|(s, _)| self.shows(s)) {
            ConstCounter::new(v).encode(family.encode_family(&[("sink", sink)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "master_events_sink_dropped",
            "Events a plugin sink had to drop, per reason.",
            None,
            counter.metric_type(),
        )?;
        for (sink, reason, v) in dropped.into_iter().filter(|(s, ..)| self.shows(s)) {
            ConstCounter::new(v)
                .encode(family.encode_family(&[("sink", sink), ("reason", reason)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "master_events_sink_missed",
            "Events a plugin sink's reader missed (it fell behind the archive; sent on as a gap).",
            None,
            counter.metric_type(),
        )?;
        for (sink, v) in missed.into_iter().filter(|(s, _)| self.shows(s)) {
            ConstCounter::new(v).encode(family.encode_family(&[("sink", sink)])?)?;
        }
        let files = master_events_sink_file::stats();
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "master_events_file_sink_state",
            "Each file sink's state by log path: 1 for the one it is in (ok; retrying: writes fail, events held; failing: the backlog overflowed, events dropped).",
            None,
            gauge.metric_type(),
        )?;
        for f in &files {
            let path = f.path.display().to_string();
            use master_events_sink_file::SinkState;
            for state in [SinkState::Ok, SinkState::Retrying, SinkState::Failing] {
                ConstGauge::new(i64::from(f.state == state)).encode(
                    family.encode_family(&[("path", path.as_str()), ("state", state.as_str())])?,
                )?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "master_events_file_sink_held_events",
            "Events a file sink holds because writing its log failed (written once it works).",
            None,
            gauge.metric_type(),
        )?;
        for f in &files {
            let path = f.path.display().to_string();
            ConstGauge::new(i64::try_from(f.held_events).unwrap_or(i64::MAX))
                .encode(family.encode_family(&[("path", path.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "master_events_file_sink_written_bytes",
            "Bytes the file sinks wrote to their logs (events and gap lines).",
            None,
            counter.metric_type(),
        )?;
        if self.shows("file") {
            ConstCounter::new(file.bytes_written)
                .encode(family.encode_family(&[("sink", "file")])?)?;
        }
        if self.shows("kafka") {
            let mut family = encoder.encode_descriptor(
                "master_events_kafka_sink_transactions",
                "Transactions of the kafka sinks, by outcome (committed; abandoned: a failure, sent again after a resume).",
                None,
                counter.metric_type(),
            )?;
            for (outcome, v) in [
                ("committed", kafka.transactions),
                ("abandoned", kafka.aborted),
            ] {
                ConstCounter::new(v).encode(family.encode_family(&[("outcome", outcome)])?)?;
            }
            let mut family = encoder.encode_descriptor(
                "master_events_kafka_sink_fenced",
                "Times a kafka sink's producer was fenced by another of the same transactional.id (a new master).",
                None,
                counter.metric_type(),
            )?;
            ConstCounter::new(kafka.fenced).encode(family.encode_family(&[("sink", "kafka")])?)?;
        }
        Ok(())
    }
}
