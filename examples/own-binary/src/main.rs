//! A team's own `master-events` binary: the whole command line of
//! `master_events_cli`, plus the `type-count` sink below, which lives in this
//! repository and not in master-events'.
//!
//! The sink registers itself with `register_sink!` (compile-time, through
//! `inventory`); being in the binary's own crate is enough to link it. A sink kept
//! in a crate of its own needs a `use that_crate as _;` here, or the linker drops
//! the crate and its registration with it.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use master_events_router::{ConfigError, Sink, SinkBatch, SinkConfig, SinkContext};

/// Keeps a count of events per type and rewrites them to a file, one
/// `TYPE<TAB>COUNT` line each, after every batch.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TypeCountConfig {
    /// The file the counts are written to (replaced after every batch).
    pub path: PathBuf,
}

impl SinkConfig for TypeCountConfig {
    const NAME: &'static str = "type-count";
    const DESCRIPTION: &'static str =
        "counts events per type and rewrites the counts to a file after every batch";

    fn build(self, _ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("path must not be empty".into()));
        }
        Ok(Box::new(TypeCount {
            path: self.path,
            counts: BTreeMap::new(),
            failed: false,
        }))
    }
}

master_events_router::register_sink!(TypeCountConfig);

/// The running `type-count` sink.
pub struct TypeCount {
    path: PathBuf,
    counts: BTreeMap<String, u64>,
    failed: bool,
}

impl Sink for TypeCount {
    fn on_batch(&mut self, batch: &SinkBatch<'_>) {
        for event in batch.iter() {
            *self
                .counts
                .entry(event.meta.event_type.as_str().to_owned())
                .or_default() += 1;
        }
        let text: String = self
            .counts
            .iter()
            .map(|(t, n)| format!("{t}\t{n}\n"))
            .collect();
        // Write aside, then rename: a reader never sees a half-written file.
        let tmp = self.path.with_extension("tmp");
        let result = fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, &self.path));
        match (result, self.failed) {
            (Err(e), false) => {
                self.failed = true;
                tracing::warn!(path = %self.path.display(), error = %e, "the type-count sink cannot write");
            }
            (Ok(()), true) => self.failed = false,
            _ => {}
        }
    }
}

fn main() -> ExitCode {
    master_events_cli::run()
}
