//! The sinks configuration (TOML) and running the configured sinks.
//!
//! Owns: [`load_config`] (the `[[sinks]]` entries of a TOML document), [`Config`],
//! [`ConfigError`], and [`start_sinks`] / [`SinkSet`].
//!
//! ```toml
//! [[sinks]]
//! type = "archiver"
//! capacity = 81920
//!
//! [[sinks]]
//! type = "stdout"
//! format = "line"
//! filter = { type = ["vbucketMoveStart", "vbucketMoveDone"], bucket = "default" }
//! ```
//!
//! Promises:
//! - Loading checks everything it can before anything runs: each entry's `type` must
//!   be a registered sink, its own keys must fit that sink's typed configuration
//!   (unknown keys are errors), its `filter` must be valid. Every error names the
//!   entry (`sinks[2] (type "stdout", line 9): unknown field ...`); an unknown or
//!   missing type lists the registered ones.
//! - Top-level keys other than `sinks` are left to the application (they are not
//!   errors here).
//! - The archive always exists (it is the router's ring): without an `archiver`
//!   entry it keeps `RouterConfig::archive_capacity` events (default 4096).
//! - [`start_sinks`] builds every sink before starting any, so a failure starts
//!   nothing.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::filter::Filter;
use crate::health::SinkHealth;
use crate::registry::{find_sink, registered_sinks, SinkContext, SinkRegistration};
use crate::ring::Cursor;
use crate::sink::Sink;
use crate::sinks::archiver::ArchiverConfig;
use crate::supervise::Supervisor;
use crate::{Router, RouterConfig};

/// Where in the configuration an error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The entry's index in `[[sinks]]`, from 0.
    pub index: usize,
    /// The entry's `type`, if it has a string one.
    pub kind: Option<String>,
    /// The line (from 1) where the entry starts, when known.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sinks[{}]", self.index)?;
        match (&self.kind, self.line) {
            (Some(kind), Some(line)) => write!(f, " (type {kind:?}, line {line})"),
            (Some(kind), None) => write!(f, " (type {kind:?})"),
            (None, Some(line)) => write!(f, " (line {line})"),
            (None, None) => Ok(()),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The document is not valid TOML, or `sinks` is not an array of tables.
    #[error("invalid configuration: {0}")]
    Toml(String),
    /// An entry without a `type`.
    #[error("{at}: missing \"type\"; registered sink types: {}", .registered.join(", "))]
    MissingType {
        /// The entry.
        at: Location,
        /// The registered sink names.
        registered: Vec<&'static str>,
    },
    /// An entry whose `type` is not a registered sink.
    #[error("{at}: unknown sink type {kind:?}; registered sink types: {}", .registered.join(", "))]
    UnknownSinkType {
        /// The entry.
        at: Location,
        /// The type given.
        kind: String,
        /// The registered sink names.
        registered: Vec<&'static str>,
    },
    /// An entry whose keys, values or filter are wrong, or whose sink failed to build.
    #[error("{at}: {message}")]
    Entry {
        /// The entry.
        at: Location,
        /// What is wrong.
        message: String,
    },
    /// A sink's own configuration is wrong (returned by check and build functions;
    /// [`load_config`] and [`start_sinks`] turn it into [`ConfigError::Entry`]).
    #[error("{0}")]
    Invalid(String),
}

/// One `[[sinks]]` entry, checked.
#[derive(Clone)]
pub struct SinkEntry {
    /// Where it is.
    pub at: Location,
    /// Its `type`.
    pub kind: String,
    /// Its filter, if any.
    pub filter: Option<Filter>,
    /// Its own keys (without `type` and `filter`).
    pub settings: toml::Table,
    registration: &'static SinkRegistration,
}

impl SinkEntry {
    /// The registration of its type.
    pub fn registration(&self) -> &'static SinkRegistration {
        self.registration
    }
}

impl fmt::Debug for SinkEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkEntry")
            .field("at", &self.at)
            .field("filter", &self.filter)
            .field("settings", &self.settings)
            .finish()
    }
}

/// A checked sinks configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The `[[sinks]]` entries, in order.
    pub sinks: Vec<SinkEntry>,
}

impl Config {
    /// The capacity of the configured `archiver`, if there is one: set
    /// [`RouterConfig::archive_capacity`] from it before starting the router.
    pub fn archive_capacity(&self) -> Option<usize> {
        self.sinks
            .iter()
            .find(|e| e.kind == "archiver")
            .and_then(|e| toml::Value::Table(e.settings.clone()).try_into().ok())
            .map(|c: ArchiverConfig| c.capacity)
    }

    /// Applies what the configuration says about the router (the archive capacity).
    pub fn apply_to(&self, router: &mut RouterConfig) {
        if let Some(capacity) = self.archive_capacity() {
            router.archive_capacity = capacity;
        }
    }
}

#[derive(Deserialize)]
struct RawDocument {
    #[serde(default)]
    sinks: Vec<toml::Spanned<toml::Table>>,
}

fn registered_names() -> Vec<&'static str> {
    registered_sinks().iter().map(|r| r.name).collect()
}

/// Parses and checks the `[[sinks]]` of a TOML document (see the
/// [module documentation](self)).
pub fn load_config(text: &str) -> Result<Config, ConfigError> {
    let doc: RawDocument = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
    let mut sinks = Vec::with_capacity(doc.sinks.len());
    let mut archiver: Option<usize> = None;
    for (index, spanned) in doc.sinks.into_iter().enumerate() {
        let line = text
            .get(..spanned.span().start)
            .map(|before| before.matches('\n').count() + 1);
        let mut table = spanned.into_inner();
        let mut at = Location {
            index,
            kind: None,
            line,
        };
        let kind = match table.remove("type") {
            None => {
                return Err(ConfigError::MissingType {
                    at,
                    registered: registered_names(),
                })
            }
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(ConfigError::Entry {
                    at,
                    message: format!(
                    "\"type\" must be a string naming a sink, not {} (registered sink types: {})",
                    other,
                    registered_names().join(", ")
                ),
                })
            }
        };
        at.kind = Some(kind.clone());
        let Some(registration) = find_sink(&kind) else {
            return Err(ConfigError::UnknownSinkType {
                at,
                kind,
                registered: registered_names(),
            });
        };
        let filter = match table.remove("filter") {
            None => None,
            Some(value) => Some(value.try_into::<Filter>().map_err(|e| ConfigError::Entry {
                at: at.clone(),
                message: format!("filter: {}", e.message().trim()),
            })?),
        };
        (registration.check)(toml::Value::Table(table.clone())).map_err(|e| entry_error(&at, e))?;
        if kind == "archiver" {
            if filter.is_some() {
                return Err(ConfigError::Entry {
                    at,
                    message: "the archiver keeps every event: it takes no filter".into(),
                });
            }
            if let Some(first) = archiver {
                return Err(ConfigError::Entry {
                    at,
                    message: format!(
                        "there is one archive: an archiver is already configured at sinks[{first}]"
                    ),
                });
            }
            archiver = Some(index);
        }
        sinks.push(SinkEntry {
            at,
            kind,
            filter,
            settings: table,
            registration,
        });
    }
    Ok(Config { sinks })
}

fn entry_error(at: &Location, e: ConfigError) -> ConfigError {
    match e {
        ConfigError::Invalid(message) => ConfigError::Entry {
            at: at.clone(),
            message,
        },
        other => ConfigError::Entry {
            at: at.clone(),
            message: other.to_string(),
        },
    }
}

/// The running sinks of a configuration. Dropping it stops them (as
/// [`SinkSet::shutdown`] does, without waiting).
#[must_use = "dropping a SinkSet stops its sinks"]
pub struct SinkSet {
    cancel: CancellationToken,
    tasks: Vec<(String, JoinHandle<()>)>,
    health: Vec<Arc<SinkHealth>>,
}

impl SinkSet {
    /// Every running sink's health (ok, retrying, failing, panics), in
    /// configuration order.
    pub fn health(&self) -> Vec<Arc<SinkHealth>> {
        self.health.clone()
    }

    /// The names (types) of the running sinks, in configuration order.
    pub fn names(&self) -> Vec<&str> {
        self.tasks.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// How many sinks run.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no sink runs.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Stops the sinks: each delivers what was sequenced up to now (everything, if
    /// the router was shut down first), flushes and shuts down. Returns when all
    /// have.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for (name, task) in self.tasks.drain(..) {
            if let Err(e) = task.await {
                tracing::error!(sink = %name, error = %e, "sink task failed");
            }
        }
    }
}

impl Drop for SinkSet {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl fmt::Debug for SinkSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkSet")
            .field("sinks", &self.names())
            .finish()
    }
}

/// Builds every configured sink, then starts each on its own task reading its own
/// subscription from where it asks ([`Sink::start_cursor`]: by default the oldest
/// retained event; after a warm start, [`Router::start_with_archive`], the oldest
/// event of this run, as the restored ones were delivered by the previous run),
/// through its filter. Must be called
/// inside a tokio runtime.
pub fn start_sinks(router: &Router, config: &Config) -> Result<SinkSet, ConfigError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ConfigError::Invalid(
            "start_sinks must be called inside a tokio runtime".into(),
        ));
    }
    let mut built: Vec<(&SinkEntry, SinkContext, Box<dyn Sink>)> =
        Vec::with_capacity(config.sinks.len());
    for entry in &config.sinks {
        let ctx = SinkContext::named(router, entry.at.index, entry.kind.clone());
        let sink = (entry.registration.build)(toml::Value::Table(entry.settings.clone()), &ctx)
            .map_err(|e| entry_error(&entry.at, e))?;
        built.push((entry, ctx, sink));
    }
    let cancel = CancellationToken::new();
    let mut health = Vec::with_capacity(built.len());
    let tasks = built
        .into_iter()
        .map(|(entry, ctx, sink)| {
            // After a warm start, "the oldest" is the oldest of this run: the
            // restored events were delivered by the previous one.
            let from = match (sink.start_cursor(), router.restored_through()) {
                (Cursor::Oldest, Some(restored)) => Cursor::After(restored),
                (from, _) => from,
            };
            health.push(Arc::clone(ctx.health()));
            let supervisor = Supervisor {
                kind: entry.kind.clone(),
                build: entry.registration.build,
                settings: entry.settings.clone(),
                health: Arc::clone(ctx.health()),
                ctx,
                filter: entry.filter.clone(),
                router: router.clone(),
                cancel: cancel.child_token(),
            };
            (entry.kind.clone(), tokio::spawn(supervisor.run(sink, from)))
        })
        .collect();
    Ok(SinkSet {
        cancel,
        tasks,
        health,
    })
}

#[cfg(test)]
mod tests {
    use master_events_events::catalog::DeleteBucket;
    use master_events_events::Record;
    use parking_lot::Mutex;

    use super::*;
    use crate::registry::SinkConfig;
    use crate::sink::SinkBatch;
    use crate::RouterConfig;

    /// What each probe was given: `(probe id, seq)`.
    static SEEN: Mutex<Vec<(u32, u64)>> = Mutex::new(Vec::new());

    /// A sink that records what it reads, from `after` if set (else the default).
    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct ProbeConfig {
        id: u32,
        after: Option<u64>,
    }

    struct Probe(ProbeConfig);

    impl Sink for Probe {
        fn on_batch(&mut self, batch: &SinkBatch<'_>) {
            SEEN.lock().extend(batch.iter().map(|e| (self.0.id, e.seq)));
        }
        fn start_cursor(&self) -> Cursor {
            self.0.after.map_or(Cursor::Oldest, Cursor::After)
        }
    }

    impl SinkConfig for ProbeConfig {
        const NAME: &'static str = "probe";
        const DESCRIPTION: &'static str = "test only";
        fn build(self, _ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError> {
            Ok(Box::new(Probe(self)))
        }
    }

    crate::register_sink!(ProbeConfig);

    fn records(from: u64, n: u64, with_seq: bool) -> Vec<Record> {
        (from..from + n)
            .map(|i| {
                let mut r = Record::new(DeleteBucket {
                    bucket: format!("b{i}"),
                });
                r.envelope.seq = with_seq.then_some(i);
                r
            })
            .collect()
    }

    async fn run(router: &Router, toml: &str, then: Vec<Record>) {
        let config = load_config(toml).expect("loads");
        let sinks = start_sinks(router, &config).expect("starts");
        router.publish_batch(then).await.expect("published");
        router.shutdown().await;
        sinks.shutdown().await;
    }

    fn seen_by(id: u32) -> Vec<u64> {
        SEEN.lock()
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, s)| *s)
            .collect()
    }

    #[tokio::test]
    async fn a_sink_reads_from_the_cursor_it_asks_for() {
        let router = Router::start(RouterConfig::default());
        router
            .publish_batch(records(0, 5, false))
            .await
            .expect("published");
        run(
            &router,
            "[[sinks]]\ntype = \"probe\"\nid = 1\nafter = 3\n",
            Vec::new(),
        )
        .await;
        assert_eq!(seen_by(1), vec![4, 5]);
    }

    #[tokio::test]
    async fn after_a_warm_start_the_oldest_is_the_oldest_of_this_run() {
        let router = Router::start_with_archive(RouterConfig::default(), records(1, 5, true))
            .await
            .expect("started");
        assert_eq!(router.restored_through(), Some(5));
        let toml = "[[sinks]]\ntype = \"probe\"\nid = 2\n\n[[sinks]]\ntype = \"probe\"\nid = 3\nafter = 2\n";
        run(&router, toml, records(6, 2, false)).await;
        assert_eq!(seen_by(2), vec![6, 7], "not the restored events");
        assert_eq!(
            seen_by(3),
            vec![3, 4, 5, 6, 7],
            "an explicit cursor is kept"
        );
        assert_eq!(
            Router::start(RouterConfig::default()).restored_through(),
            None
        );
    }
}
