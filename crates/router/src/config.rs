//! The sinks configuration (TOML) and running the configured sinks.
//!
//! Owns: [`load_config`] (the `[[sinks]]` entries of a TOML document), [`Config`],
//! and [`start_sinks`] / [`SinkSet`]. Its errors, [`ConfigError`] and the text of
//! TOML errors, are [`crate::error`]'s (re-exported here).
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
//!   entry (`sinks[2] (type "stdout", line 9): unknown field ...`), and one about a
//!   key of it gives that key's line too (`filter (line 11): ...`,
//!   `(key format, line 10)`); an unknown or missing type lists the registered ones.
//! - Top-level keys other than `sinks` and `redaction` are left to the application
//!   (they are not errors here). `[redaction] secret_words = ["salt", ...]` adds words
//!   to the ones that mark a `createBucket` parameter as a secret (see
//!   `master_events_events::redact`); it can only add, never remove a default.
//! - No error quotes the configuration's text or any value in it: a value can be a
//!   secret (a password, a token, an `Authorization` header). A TOML error says
//!   `line:column: message (key users.password)` with the parser's message stripped
//!   of the value it found ([`toml_error`], [`describe_toml_error`], in
//!   [`crate::error`]).
//! - The archive always exists (it is the router's ring): without an `archiver`
//!   entry it keeps `RouterConfig::archive_capacity` events (default 4096).
//! - [`start_sinks`] builds every sink before starting any, so a failure starts
//!   nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::error::{describe_toml_error, toml_error, ConfigError, Location};
use crate::filter::Filter;
use crate::health::SinkHealth;
use crate::registry::{find_sink, registered_sinks, RunOn, SinkContext, SinkRegistration};
use crate::ring::Cursor;
use crate::sink::Sink;
use crate::sinks::archiver::ArchiverConfig;
use crate::supervise::Supervisor;
use crate::{Router, RouterConfig};

/// One `[[sinks]]` entry, checked.
#[derive(Clone)]
pub struct SinkEntry {
    /// Where it is.
    pub at: Location,
    /// Its `type`.
    pub kind: String,
    /// Its filter, if any.
    pub filter: Option<Filter>,
    /// Its own keys (without `type`, `filter` and `run_on`).
    pub settings: toml::Table,
    /// Where it runs in a cluster: its `run_on`, or its type's default.
    pub run_on: RunOn,
    registration: &'static SinkRegistration,
    /// The line (from 1) of each of its keys, for an error about one to name it.
    key_lines: KeyLines,
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
            .field("run_on", &self.run_on)
            .field("settings", &self.settings)
            .finish()
    }
}

/// A checked sinks configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The `[[sinks]]` entries, in order.
    pub sinks: Vec<SinkEntry>,
    /// Words from `[redaction] secret_words`, added to the default secret words by
    /// [`Config::apply_to`].
    pub secret_words: Vec<String>,
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

    /// Applies what the configuration says about the router (the archive capacity),
    /// and adds its `[redaction] secret_words` to the process's secret words.
    pub fn apply_to(&self, router: &mut RouterConfig) {
        if let Some(capacity) = self.archive_capacity() {
            router.archive_capacity = capacity;
        }
        if !self.secret_words.is_empty() {
            master_events_events::redact::add_secret_words(&self.secret_words);
        }
    }
}

/// The line (from 1) where each key of a `[[sinks]]` entry is written.
type KeyLines = BTreeMap<String, usize>;

/// Where each key of each `[[sinks]]` entry is written: a second reading of a
/// document [`RawDocument`] has read, for errors to give the line of the key they
/// are about (`(key format, line 3)`).
#[derive(Deserialize)]
struct KeySpans {
    #[serde(default)]
    sinks: Vec<BTreeMap<String, toml::Spanned<serde::de::IgnoredAny>>>,
}

/// The line of every key of every `[[sinks]]` entry of `text` (none when the text
/// cannot be read so; then errors go without these lines).
fn key_lines(text: &str) -> Vec<KeyLines> {
    let line_at = |offset: usize| text.get(..offset).map(|b| b.matches('\n').count() + 1);
    toml::from_str::<KeySpans>(text)
        .map(|doc| {
            doc.sinks
                .into_iter()
                .map(|keys| {
                    keys.into_iter()
                        .filter_map(|(key, value)| Some((key, line_at(value.span().start)?)))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct RawDocument {
    #[serde(default)]
    sinks: Vec<toml::Spanned<toml::Table>>,
    #[serde(default)]
    redaction: Redaction,
}

/// The `[redaction]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Redaction {
    /// Words that mark a `createBucket` parameter as a secret, besides the defaults.
    #[serde(default)]
    secret_words: Vec<String>,
}

fn registered_names() -> Vec<&'static str> {
    registered_sinks().iter().map(|r| r.name).collect()
}

/// Parses and checks the `[[sinks]]` of a TOML document (see the
/// [module documentation](self)).
pub fn load_config(text: &str) -> Result<Config, ConfigError> {
    let doc: RawDocument = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    if let Some(i) = doc
        .redaction
        .secret_words
        .iter()
        .position(|w| w.trim().is_empty())
    {
        return Err(ConfigError::Invalid(format!(
            "redaction.secret_words[{i}] is empty: it would match every key"
        )));
    }
    let mut sinks = Vec::with_capacity(doc.sinks.len());
    let mut archiver: Option<usize> = None;
    let mut lines = key_lines(text).into_iter();
    for (index, spanned) in doc.sinks.into_iter().enumerate() {
        let key_lines = lines.next().unwrap_or_default();
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
                    "\"type\" must be a string naming a sink, not a {} (registered sink types: {})",
                    other.type_str(),
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
                message: match key_lines.get("filter") {
                    Some(line) => format!("filter (line {line}): {}", describe_toml_error(&e)),
                    None => format!("filter: {}", describe_toml_error(&e)),
                },
            })?),
        };
        let run_on = match table.remove("run_on") {
            None => registration.run_on,
            Some(value) => value.try_into::<RunOn>().map_err(|_| ConfigError::Entry {
                at: at.clone(),
                message: "run_on must be \"master\" (one copy per cluster, from the master) \
                          or \"every-node\" (each node from its own archive)"
                    .into(),
            })?,
        };
        (registration.check)(toml::Value::Table(table.clone()))
            .map_err(|e| entry_error(&at, &key_lines, e))?;
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
            if run_on != RunOn::EveryNode {
                return Err(ConfigError::Entry {
                    at,
                    message: "the archiver is every node's archive: it runs on every node".into(),
                });
            }
            archiver = Some(index);
        }
        sinks.push(SinkEntry {
            at,
            kind,
            filter,
            settings: table,
            run_on,
            registration,
            key_lines,
        });
    }
    Ok(Config {
        sinks,
        secret_words: doc.redaction.secret_words,
    })
}

/// A sink's own error about its entry, as [`ConfigError::Entry`]. A message ending
/// in `(key PATH)` ([`describe_toml_error`]'s form) gets the line of the entry's key
/// that `PATH` starts with: `(key format, line 3)`.
fn entry_error(at: &Location, key_lines: &KeyLines, e: ConfigError) -> ConfigError {
    let mut message = match e {
        ConfigError::Invalid(message) => message,
        other => other.to_string(),
    };
    let line = message
        .strip_suffix(')')
        .and_then(|m| m.rsplit_once(" (key "))
        .and_then(|(_, path)| key_lines.get(path.split(['.', '[']).next()?));
    if let Some(line) = line {
        message.pop();
        message.push_str(&format!(", line {line})"));
    }
    ConfigError::Entry {
        at: at.clone(),
        message,
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
    // Outside a cluster the node is its own master, for good.
    let (_, master) = watch::channel(true);
    start_sinks_on(router, config, master)
}

/// [`start_sinks`] on a node of a cluster: `master` says whether this node is the
/// master now. A sink that runs on the master only ([`RunOn::Master`]) waits, in
/// state `standby`, until it is; it is stopped (delivering what was committed up to
/// then) when the node stops being master, and built again and started from where
/// it says it resumes ([`Sink::start_cursor`]) when it is master again. Every other
/// sink runs from the start, as [`start_sinks`] runs it.
pub fn start_sinks_on(
    router: &Router,
    config: &Config,
    master: watch::Receiver<bool>,
) -> Result<SinkSet, ConfigError> {
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
            .map_err(|e| entry_error(&entry.at, &entry.key_lines, e))?;
        built.push((entry, ctx, sink));
    }
    let cancel = CancellationToken::new();
    let mut health = Vec::with_capacity(built.len());
    let tasks = built
        .into_iter()
        .map(|(entry, ctx, sink)| {
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
            let task = match entry.run_on {
                RunOn::EveryNode => {
                    let from = start_cursor(&*sink, router);
                    tokio::spawn(supervisor.run(sink, from))
                }
                RunOn::Master => tokio::spawn(run_on_master(supervisor, sink, master.clone())),
            };
            (entry.kind.clone(), task)
        })
        .collect();
    Ok(SinkSet {
        cancel,
        tasks,
        health,
    })
}

/// Where `sink` starts reading: where it asks, except that after a warm start "the
/// oldest" is the oldest of this run (the restored events were delivered by the
/// previous one).
fn start_cursor(sink: &dyn Sink, router: &Router) -> Cursor {
    match (sink.start_cursor(), router.restored_through()) {
        (Cursor::Oldest, Some(restored)) => Cursor::After(restored),
        (from, _) => from,
    }
}

/// Runs a master-only sink: waits (in state `standby`) while this node is not the
/// master, runs it under `supervisor` while it is, stops it when it is not any
/// more, and builds it again for the next time. Ends when the sink set stops or
/// the router shuts down.
async fn run_on_master(
    supervisor: Supervisor,
    first: Box<dyn Sink>,
    mut master: watch::Receiver<bool>,
) {
    let mut built = Some(first);
    let stop = supervisor.cancel.clone();
    loop {
        // Wait to be master.
        loop {
            if *master.borrow_and_update() {
                break;
            }
            supervisor.health.standby(
                "runs on the master only (run_on = \"master\"); this node is not the master",
            );
            tokio::select! {
                () = stop.cancelled() => return,
                changed = master.changed() => if changed.is_err() { return },
            }
        }
        let sink = match built.take() {
            Some(sink) => sink,
            None => match supervisor
                .rebuild(Duration::ZERO, "this node became master")
                .await
            {
                Some(sink) => sink,
                None => return,
            },
        };
        supervisor.health.ok();
        tracing::info!(sink = %supervisor.kind, "this node is the master: the sink starts");
        let from = start_cursor(&*sink, &supervisor.router);
        let term = stop.child_token();
        let mut run = supervisor.clone();
        run.cancel = term.clone();
        let mut task = tokio::spawn(run.run(sink, from));
        // Nobody left to say otherwise (a node outside a cluster): master for good.
        let deposed = async {
            loop {
                if !*master.borrow_and_update() {
                    return;
                }
                if master.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            ended = &mut task => {
                // The input ended: the router shut down, or the set stopped.
                if let Err(e) = ended {
                    tracing::error!(sink = %supervisor.kind, error = %e, "sink task failed");
                }
                return;
            }
            () = deposed => {
                term.cancel();
                if let Err(e) = task.await {
                    tracing::error!(sink = %supervisor.kind, error = %e, "sink task failed");
                }
                if stop.is_cancelled() {
                    return;
                }
                tracing::info!(
                    sink = %supervisor.kind,
                    "this node is not the master any more: the sink stopped after what was committed"
                );
            }
        }
    }
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
                    bucket: format!("b{i}").into(),
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

    /// Waits (up to 30 s) until `f` holds.
    async fn until(what: &str, f: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what}: not within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_master_only_sink_runs_while_the_node_is_master_and_resumes_where_it_says() {
        let router = Router::start(RouterConfig::default());
        let config = load_config(
            "[[sinks]]\ntype = \"probe\"\nid = 4\nrun_on = \"master\"\n\n\
             [[sinks]]\ntype = \"probe\"\nid = 5\n",
        )
        .expect("loads");
        assert_eq!(config.sinks[0].run_on, RunOn::Master);
        assert_eq!(
            config.sinks[1].run_on,
            RunOn::EveryNode,
            "the type's default"
        );
        let (master, is_master) = watch::channel(false);
        let sinks = start_sinks_on(&router, &config, is_master).expect("starts");
        let health = sinks.health();
        router
            .publish_batch(records(0, 3, false))
            .await
            .expect("published");

        // A follower: the every-node sink reads, the master-only one waits.
        until("the every-node sink reads", || seen_by(5).len() == 3).await;
        until("standby", || health[0].state() == crate::SinkState::Standby).await;
        assert_eq!(seen_by(4), Vec::<u64>::new());

        // Master: it starts from where it asks (the oldest), and follows.
        master.send_replace(true);
        until("the master-only sink reads", || seen_by(4) == vec![1, 2, 3]).await;
        assert_eq!(health[0].state(), crate::SinkState::Ok);
        router
            .publish_batch(records(3, 1, false))
            .await
            .expect("published");
        until("it follows", || seen_by(4) == vec![1, 2, 3, 4]).await;

        // Deposed: it stops; what comes next is not its to deliver.
        master.send_replace(false);
        until("standby again", || {
            health[0].state() == crate::SinkState::Standby
        })
        .await;
        router
            .publish_batch(records(4, 2, false))
            .await
            .expect("published");
        until("the every-node sink reads on", || seen_by(5).len() == 6).await;
        assert_eq!(seen_by(4), vec![1, 2, 3, 4]);

        // Master again: built anew, from where it asks (the probe keeps nothing, so
        // the oldest again; a sink that persists says After(what it holds)).
        master.send_replace(true);
        until("built again and started", || seen_by(4).len() == 10).await;
        assert_eq!(seen_by(4), vec![1, 2, 3, 4, 1, 2, 3, 4, 5, 6]);

        router.shutdown().await;
        sinks.shutdown().await;
    }

    #[test]
    fn run_on_takes_master_or_every_node_and_the_archiver_runs_on_every_node() {
        let e = load_config("[[sinks]]\ntype = \"probe\"\nid = 1\nrun_on = \"leader\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("run_on must be \"master\""), "{e}");
        let e = load_config("[[sinks]]\ntype = \"archiver\"\nrun_on = \"master\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("runs on every node"), "{e}");
        let config = load_config("[[sinks]]\ntype = \"probe\"\nid = 1\nrun_on = \"every-node\"\n")
            .expect("loads");
        assert_eq!(config.sinks[0].run_on, RunOn::EveryNode);
    }
}

#[cfg(test)]
mod error_text_tests {
    use super::*;

    fn refused(text: &str) -> ConfigError {
        match load_config(text) {
            Ok(_) => panic!("accepted {text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_toml_error_names_line_column_and_key_and_quotes_no_value() {
        for (text, expected) in [
            (
                "# users\n[redaction]\nsecret_words = \"hunter2\"\n",
                "3:16: invalid type: string (value not shown), expected a sequence (key redaction.secret_words)",
            ),
            (
                "[redaction]\nsecret_words = [\"a\", \"hunter2\n",
                "2:30: unclosed array, expected `]`",
            ),
            (
                "[redaction]\nsecret_word = [\"hunter2\"]\n",
                "2:1: unknown field `secret_word`, expected `secret_words` (key redaction)",
            ),
            (
                "[[sinks]]\ntype = \"stdout\"\nformat = \"hunter2\"\n",
                "sinks[0] (type \"stdout\", line 1): unknown variant (value not shown), expected `json` or `line` (key format, line 3)",
            ),
        ] {
            let e = refused(text);
            assert_eq!(e.to_string(), expected, "{text}");
            assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        }
    }

    #[test]
    fn a_type_that_is_not_a_string_is_named_by_its_kind() {
        let e = refused("[[sinks]]\ntype = { token = \"hunter2\" }\n").to_string();
        assert!(e.contains("not a table"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn configured_secret_words_redact_bucket_params_once_applied() {
        let line = br#"{"type":"createBucket","bucketType":"membase","bucket":"b","params":{"signingQuux":"k1","ramQuota":1}}"#;
        let params = |line: &[u8]| match master_events_events::Record::parse(line) {
            Ok(r) => match r.event {
                master_events_events::Event::CreateBucket(c) => c.params,
                other => panic!("not createBucket: {other:?}"),
            },
            Err(e) => panic!("refused: {e}"),
        };
        assert_eq!(params(line).as_map()["signingQuux"], "k1");
        let config = load_config("[redaction]\nsecret_words = [\"QUUX\"]\n").expect("loads");
        config.apply_to(&mut RouterConfig::default());
        assert_eq!(params(line).as_map()["signingQuux"], "*****");
        assert_eq!(params(line).as_map()["ramQuota"], 1);
    }

    #[test]
    fn redaction_words_are_loaded_and_an_empty_one_is_refused() {
        let config = load_config("[redaction]\nsecret_words = [\"salt\"]\n").expect("loads");
        assert_eq!(config.secret_words, vec!["salt".to_owned()]);
        let e = refused("[redaction]\nsecret_words = [\"a\", \" \"]\n").to_string();
        assert!(e.contains("secret_words[1] is empty"), "{e}");
    }
}
