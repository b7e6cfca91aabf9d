//! The `archiver` sink: the archive of recent events, which is the router's ring
//! itself (see [`crate::ring`]), not a copy of it.
//!
//! Its `capacity` sizes the ring, so it is applied when the router is created
//! ([`crate::Config::archive_capacity`] → [`crate::RouterConfig::archive_capacity`]);
//! building the sink checks that the running router got it. The sink itself does
//! nothing while running, and takes no filter (the archive keeps every event).

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::ConfigError;
use crate::registry::{SinkConfig, SinkContext};
use crate::sink::Sink;
use crate::DEFAULT_ARCHIVE_CAPACITY;

/// The largest archive capacity accepted (events).
pub const MAX_ARCHIVE_CAPACITY: usize = 10_000_000;

/// Keeps the last `capacity` events for replay (`GET /diag/masterEvents` from a
/// cursor, `?o=1`). It is the router's ring itself: its capacity is fixed when the
/// router starts.
#[derive(Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ArchiverConfig {
    /// How many events to retain (default 4096; ns_server grew it to 81920).
    #[serde(default = "default_capacity")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub capacity: usize,
}

fn default_capacity() -> usize {
    DEFAULT_ARCHIVE_CAPACITY
}

impl Default for ArchiverConfig {
    fn default() -> Self {
        ArchiverConfig {
            capacity: DEFAULT_ARCHIVE_CAPACITY,
        }
    }
}

/// The running archiver: the ring does the work, this only marks its place.
#[derive(Debug)]
pub struct ArchiverSink;

impl Sink for ArchiverSink {
    /// Nothing to run: the ring archives every event as it is sequenced.
    fn run(self: Box<Self>, _input: crate::SinkInput) -> crate::SinkFuture {
        Box::pin(async {})
    }
}

impl SinkConfig for ArchiverConfig {
    const NAME: &'static str = "archiver";
    const DESCRIPTION: &'static str =
        "keeps the last `capacity` events for replay (it is the router's ring itself)";

    fn validate(&self) -> Result<(), String> {
        if (1..=MAX_ARCHIVE_CAPACITY).contains(&self.capacity) {
            Ok(())
        } else {
            Err(format!(
                "capacity must be from 1 to {MAX_ARCHIVE_CAPACITY}, not {}",
                self.capacity
            ))
        }
    }

    fn build(self, ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError> {
        if ctx.archive_capacity() != self.capacity {
            return Err(ConfigError::Invalid(format!(
                "capacity {} is not the running archive's ({}): the archive is the router's \
                 ring, so start the router with RouterConfig::archive_capacity set from \
                 Config::archive_capacity()",
                self.capacity,
                ctx.archive_capacity()
            )));
        }
        Ok(Box::new(ArchiverSink))
    }
}

crate::register_sink!(ArchiverConfig);
