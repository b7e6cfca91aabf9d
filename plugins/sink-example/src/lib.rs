//! An example sink, complete in this one file: `tsv` appends one tab-separated
//! line per event (seq, type, bucket, vbucket, origin) to a file, for `awk`,
//! `sort` and spreadsheets. Where events were missed, a `#gap` line says which.
//! See docs/writing-a-sink.md, which shows this file in full.
//!
//! The crate's second example, [`counts`], is a sink that summarises (a report on a
//! timer instead of a line per event).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod counts;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use master_events_events::Gap;
use master_events_router::{ConfigError, Sink, SinkBatch, SinkConfig, SinkContext};

/// Appends one tab-separated line per event to a file.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TsvConfig {
    /// The file to append to (created if missing).
    pub path: PathBuf,
}

impl SinkConfig for TsvConfig {
    const NAME: &'static str = "tsv";
    const DESCRIPTION: &'static str =
        "appends one tab-separated line per event (seq, type, bucket, vbucket, origin) to a file";

    fn build(self, _ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| {
                ConfigError::Invalid(format!("cannot open {}: {e}", self.path.display()))
            })?;
        Ok(Box::new(TsvSink {
            out: BufWriter::new(file),
            failed: false,
        }))
    }
}

master_events_router::register_sink!(TsvConfig);

/// The running sink. Its hooks run on a thread of its own: plain file I/O is fine.
pub struct TsvSink {
    out: BufWriter<File>,
    failed: bool,
}

impl TsvSink {
    /// Logs the first write error (a sink must not panic, nor flood the log).
    fn check(&mut self, result: io::Result<()>) {
        if let (Err(e), false) = (result, self.failed) {
            self.failed = true;
            tracing::warn!(error = %e, "the tsv sink cannot write");
        }
    }
}

impl Sink for TsvSink {
    fn on_batch(&mut self, batch: &SinkBatch<'_>) {
        for event in batch.iter() {
            let m = event.meta;
            let vbucket = m.vbucket.map(|v| v.to_string()).unwrap_or_default();
            let result = writeln!(
                self.out,
                "{}\t{}\t{}\t{vbucket}\t{}",
                event.seq,
                m.event_type.as_str(),
                m.bucket.unwrap_or(""),
                m.origin.unwrap_or(""),
            );
            self.check(result);
        }
    }

    fn on_gap(&mut self, gap: &Gap) {
        let (from, to) = (gap.from_seq, gap.to_seq);
        let result = writeln!(self.out, "#gap\t{from}\t{to}\t{}", gap.reason);
        self.check(result);
    }

    fn flush(&mut self) {
        let result = self.out.flush();
        self.check(result);
    }
}
