//! An example sink that summarises: `counts` keeps the number of events of each type
//! and, every `every_ms` when something changed, appends one JSON line with the
//! totals so far to a file — the last line is the current summary:
//!
//! ```text
//! {"last_seq":1042,"missed":0,"counts":{"rebalanceStart":1,"vbucketMoveDone":1024}}
//! ```
//!
//! `missed` is the number of events the sink fell behind on (the sum of its gaps,
//! whatever their type): without a filter, counted and missed together are every
//! event sequenced. It reports from the
//! `on_tick` hook (so a quiet stream still gets its last report), and once more on
//! shutdown. See docs/writing-a-sink.md, which shows this file in full.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use master_events_events::Gap;
use master_events_router::{ConfigError, Sink, SinkBatch, SinkConfig, SinkContext, SinkHealth};

/// Appends the counts of events by type to a file, one JSON line per report.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountsConfig {
    /// The file to append the reports to (created if missing).
    pub path: PathBuf,
    /// How often to report, in milliseconds, when something changed (default 10000).
    #[serde(default = "default_every_ms")]
    pub every_ms: u64,
}

fn default_every_ms() -> u64 {
    10_000
}

impl SinkConfig for CountsConfig {
    const NAME: &'static str = "counts";
    const DESCRIPTION: &'static str =
        "appends the count of events by type (and of events missed) to a file, one JSON line every every_ms";

    fn build(self, ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError> {
        if self.every_ms == 0 {
            return Err(ConfigError::Invalid(
                "every_ms must be at least 1 (milliseconds between reports)".into(),
            ));
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| {
                ConfigError::Invalid(format!("cannot open {}: {e}", self.path.display()))
            })?;
        Ok(Box::new(CountsSink {
            out: BufWriter::new(file),
            every: Duration::from_millis(self.every_ms),
            counts: BTreeMap::new(),
            missed: 0,
            last_seq: 0,
            changed: false,
            health: Arc::clone(ctx.health()),
        }))
    }
}

master_events_router::register_sink!(CountsConfig);

/// The running sink: counts in `on_batch` and `on_gap`, reports in `on_tick`.
pub struct CountsSink {
    out: BufWriter<File>,
    every: Duration,
    counts: BTreeMap<String, u64>,
    missed: u64,
    last_seq: u64,
    changed: bool,
    /// What `/cluster` and `/metrics` show of this sink (a state change is logged
    /// once: `retrying` at WARN, back to `ok` at INFO).
    health: Arc<SinkHealth>,
}

impl CountsSink {
    /// Appends one report line, if anything changed since the last one.
    fn report(&mut self) {
        if !self.changed {
            return;
        }
        let line = serde_json::json!({
            "last_seq": self.last_seq,
            "missed": self.missed,
            "counts": self.counts,
        });
        match writeln!(self.out, "{line}").and_then(|()| self.out.flush()) {
            Ok(()) => {
                self.changed = false;
                self.health.ok();
            }
            // Kept `changed`: the next tick writes the totals again.
            Err(e) => self
                .health
                .retrying(format!("cannot write its report: {e}")),
        }
    }
}

impl Sink for CountsSink {
    fn on_batch(&mut self, batch: &SinkBatch<'_>) {
        for event in batch.iter() {
            let event_type = event.meta.event_type.as_str();
            match self.counts.get_mut(event_type) {
                Some(n) => *n += 1,
                None => {
                    self.counts.insert(event_type.to_owned(), 1);
                }
            }
            self.last_seq = event.seq;
        }
        self.changed = true;
    }

    fn on_gap(&mut self, gap: &Gap) {
        self.missed += gap.missed;
        self.last_seq = self.last_seq.max(gap.to_seq);
        self.changed = true;
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(self.every)
    }

    fn on_tick(&mut self) {
        self.report();
    }

    fn shutdown(&mut self) {
        self.report();
    }
}
