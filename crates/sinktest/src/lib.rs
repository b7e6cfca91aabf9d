//! The sink test kit of master-events: the checks every sink passes, whatever it
//! delivers to.
//!
//! Owns: the [`Target`] trait (how the kit configures a sink to deliver somewhere,
//! observes what arrived there, and makes that place hang), the [`Kit`] and its
//! checks, and [`kit_tests!`], which turns them into one `#[tokio::test]` each.
//!
//! The checks (each runs its own router and sink, built from TOML as `serve` builds
//! it):
//! - [`Kit::order_is_kept`]: events published as batches and as single notes arrive
//!   exactly once each, in `seq` order, with their types, while the sink runs.
//! - [`Kit::filter_is_honoured`]: with a `filter`, exactly the matching events
//!   arrive.
//! - [`Kit::never_blocks_the_router`]: while the target hangs, publishing thousands
//!   of events through a small archive completes (bounded by a generous timeout,
//!   never by a speed); once the target is back, the sink delivers again, in order,
//!   and every event it did not deliver is covered by a gap it reported: nothing is
//!   lost silently.
//! - [`Kit::shutdown_flushes`]: everything sequenced before the sink set is shut
//!   down is delivered by the time shutdown returns (or, for a target that
//!   receives asynchronously, shortly after).
//! - [`Kit::bad_config_is_a_clear_error`]: an unknown key is refused when the
//!   configuration is loaded, with an error that names it.
//!
//! Waiting is always for a condition, with a deadline ([`Kit::deadline`]); nothing
//! sleeps to synchronise. For a sink that writes a file, [`fifo::Fifo`] stands in
//! for the file: it reads what is written as it comes, and can stop reading.
//!
//! ```no_run
//! // tests/kit.rs of a sink crate (see docs/writing-a-sink.md):
//! use master_events_sinktest::{Observed, Target};
//! # struct MyTarget;
//! # impl Target for MyTarget {
//! #     fn config(&self) -> String { String::new() }
//! #     fn observed(&self) -> Vec<Observed> { Vec::new() }
//! #     fn stall(&self) {}
//! #     fn resume(&self) {}
//! # }
//! # impl MyTarget { async fn new() -> MyTarget { MyTarget } }
//! master_events_sinktest::kit_tests!(sink = "my_sink", target = MyTarget::new().await);
//! ```
#![warn(missing_docs)]

use std::fmt;
use std::time::{Duration, Instant};

use master_events_events::catalog::{BecameMaster, DeleteBucket, FailoverEnded, VbucketMoveDone};
use master_events_events::{parse_line, Event, Record, StreamLine};
use master_events_router::{
    load_config, ConfigError, Router, RouterConfig, Sink, SinkContext, SinkInput,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use tokio;

#[cfg(unix)]
pub mod fifo;
mod summary;

pub use summary::{SummaryTarget, Totals};

/// Where a sink under test delivers, as the kit sees it.
pub trait Target: Send + Sync {
    /// The sink's own TOML keys that make it deliver to this target (not `type`
    /// nor `filter`), e.g. `dir = "/tmp/x"`; one `key = value` a line.
    fn config(&self) -> String;

    /// What arrived so far, in arrival order (events and gap frames).
    fn observed(&self) -> Vec<Observed>;

    /// Makes the target hang: from now on it takes nothing (writes block, requests
    /// get no answer) until [`Target::resume`].
    fn stall(&self);

    /// Ends a stall: what was held is taken.
    fn resume(&self);

    /// Builds the sink from its keys when it must be built otherwise than by its
    /// registration (e.g. `stdout` writing into a capture): `Some(result)`. The
    /// default, `None`, builds it with its registration, as `serve` does.
    fn build(
        &self,
        _settings: toml::Value,
        _ctx: &SinkContext,
    ) -> Option<Result<Box<dyn Sink>, ConfigError>> {
        None
    }
}

/// One thing a target received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// An event.
    Event {
        /// Its `seq`.
        seq: u64,
        /// Its `type`.
        event_type: String,
    },
    /// A gap frame: events `from_seq..=to_seq` were not delivered.
    Gap {
        /// The first seq missed.
        from_seq: u64,
        /// The last seq missed.
        to_seq: u64,
    },
}

impl Observed {
    /// What a stream line says: an event with a `seq`, or a gap. `None` for
    /// anything else (heartbeats, lines that do not parse).
    pub fn from_line(line: &[u8]) -> Option<Observed> {
        match parse_line(line).ok()? {
            StreamLine::Event(record) => Some(Observed::Event {
                seq: record.envelope.seq?,
                event_type: record.event.type_name().to_owned(),
            }),
            StreamLine::Gap(gap) => Some(Observed::Gap {
                from_seq: gap.from_seq,
                to_seq: gap.to_seq,
            }),
            StreamLine::Heartbeat(_) | StreamLine::Reset(_) => None,
        }
    }

    /// The seqs it covers.
    fn range(&self) -> (u64, u64) {
        match self {
            Observed::Event { seq, .. } => (*seq, *seq),
            Observed::Gap { from_seq, to_seq } => (*from_seq, *to_seq),
        }
    }
}

/// Every line of an NDJSON text, observed ([`Observed::from_line`]); lines that are
/// not events nor gaps are left out.
pub fn observe_ndjson(bytes: &[u8]) -> Vec<Observed> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(Observed::from_line)
        .collect()
}

/// The kit for one registered sink type.
#[derive(Clone, Debug)]
pub struct Kit {
    sink: String,
    /// How long any wait may take before the check fails (default 60 s).
    pub deadline: Duration,
    /// How many events [`Kit::never_blocks_the_router`] publishes while the
    /// target hangs (default 5000).
    pub stall_events: usize,
    /// The archive capacity during [`Kit::never_blocks_the_router`] (default 256,
    /// so that a hung sink is lapped and must report a gap).
    pub stall_archive: usize,
}

/// The type [`Kit::filter_is_honoured`] selects.
const FILTER_TYPE: &str = "vbucketMoveDone";
/// The bucket [`Kit::filter_is_honoured`] selects.
const FILTER_BUCKET: &str = "kit-1";
/// The key [`Kit::bad_config_is_a_clear_error`] adds.
const UNKNOWN_KEY: &str = "kit_unknown_key";

/// The `i`-th event the kit publishes: a mix of types, buckets and vbuckets.
pub fn kit_event(i: usize) -> Event {
    let bucket = format!("kit-{}", i % 3);
    match i % 4 {
        0 => VbucketMoveDone {
            vbucket: (i % 1024) as u16,
            bucket: bucket.into(),
        }
        .into(),
        1 => DeleteBucket {
            bucket: bucket.into(),
        }
        .into(),
        2 => FailoverEnded {}.into(),
        _ => BecameMaster {
            node: format!("n_{}@kit", i % 5).into(),
            host: "127.0.0.1:9000".into(),
        }
        .into(),
    }
}

/// How a target builds its sink when not by its registration ([`Target::build`]).
type Builder<'a> =
    dyn Fn(toml::Value, &SinkContext) -> Option<Result<Box<dyn Sink>, ConfigError>> + 'a;

/// A sink started by the kit, with its own router.
struct Running {
    router: Router,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Kit {
    /// The kit for the sink registered as `sink`.
    pub fn new(sink: impl Into<String>) -> Kit {
        Kit {
            sink: sink.into(),
            deadline: Duration::from_secs(60),
            stall_events: 5000,
            stall_archive: 256,
        }
    }

    /// The `[[sinks]]` entry with the sink's own keys `config`, an optional filter
    /// and extra keys.
    fn toml(&self, config: &str, filter: Option<&str>, extra: &str) -> String {
        let mut text = format!("[[sinks]]\ntype = {:?}\n", self.sink);
        text.push_str(config);
        text.push('\n');
        if let Some(filter) = filter {
            text.push_str(&format!("filter = {filter}\n"));
        }
        text.push_str(extra);
        text
    }

    /// A hint when the sink is not registered in the test binary.
    fn link_hint(&self, e: &ConfigError) -> &'static str {
        match e {
            ConfigError::UnknownSinkType { .. } => {
                " (is the sink's crate linked into this test? add `use your_sink_crate as _;`)"
            }
            _ => "",
        }
    }

    /// Loads the configuration, starts a router and the sink on it.
    async fn start(&self, target: &dyn Target, filter: Option<&str>, archive: usize) -> Running {
        self.start_with(
            &target.config(),
            &|s, c| target.build(s, c),
            filter,
            archive,
        )
        .await
    }

    /// Loads the configuration with the sink's keys `config`, starts a router and
    /// the sink on it (built by `build` when it returns `Some`, else by its
    /// registration).
    async fn start_with(
        &self,
        config: &str,
        build: &Builder<'_>,
        filter: Option<&str>,
        archive: usize,
    ) -> Running {
        let text = self.toml(config, filter, "");
        let config = load_config(&text).unwrap_or_else(|e| {
            panic!(
                "[{}] the kit's configuration is refused: {e}{}\n{text}",
                self.sink,
                self.link_hint(&e)
            )
        });
        let Some(entry) = config.sinks.first() else {
            panic!("[{}] no sink entry in\n{text}", self.sink);
        };
        let router = Router::start(RouterConfig {
            node: "n_0@kit".into(),
            archive_capacity: archive,
            ..RouterConfig::default()
        });
        let ctx = SinkContext::new(&router, 0);
        let settings = toml::Value::Table(entry.settings.clone());
        let built = match build(settings.clone(), &ctx) {
            Some(result) => result,
            None => (entry.registration().build)(settings, &ctx),
        };
        let sink = built.unwrap_or_else(|e| panic!("[{}] the sink does not build: {e}", self.sink));
        let cancel = CancellationToken::new();
        let input = SinkInput::new(
            self.sink.clone(),
            router.subscribe(sink.start_cursor()),
            entry.filter.clone(),
            cancel.clone(),
        );
        let task = tokio::spawn(sink.run(input));
        Running {
            router,
            cancel,
            task,
        }
    }

    /// Shuts down the router, then the sink (as `serve` stops), within the deadline.
    async fn stop(&self, running: Running) {
        running.router.shutdown().await;
        running.cancel.cancel();
        match tokio::time::timeout(self.deadline, running.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("[{}] the sink's task failed: {e}", self.sink),
            Err(_) => panic!(
                "[{}] the sink did not stop within {:?} of shutdown",
                self.sink, self.deadline
            ),
        }
    }

    /// Waits until what `target` observed satisfies `done`; fails the check with
    /// `what` and the observation at the deadline.
    async fn wait_for(
        &self,
        target: &dyn Target,
        what: &str,
        done: impl Fn(&[Observed]) -> bool,
    ) -> Vec<Observed> {
        let start = Instant::now();
        loop {
            let seen = target.observed();
            if done(&seen) {
                return seen;
            }
            if start.elapsed() > self.deadline {
                panic!(
                    "[{}] {what}: not the case within {:?}; observed {}",
                    self.sink,
                    self.deadline,
                    Summary(&seen)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Events published as batches and as single notes arrive exactly once each,
    /// in `seq` order, with their types, while the sink runs.
    pub async fn order_is_kept(&self, target: &dyn Target) {
        let running = self.start(target, None, 4096).await;
        let mut expected = Vec::new();
        let mut i = 0;
        for size in [100, 1, 250] {
            let records: Vec<Record> = (i..i + size).map(|i| Record::new(kit_event(i))).collect();
            let range = running
                .router
                .publish_batch(records)
                .await
                .unwrap_or_else(|e| panic!("[{}] publish: {e}", self.sink));
            expected.extend(range.zip(i..i + size));
            i += size;
            let emitter = running.router.emitter();
            for _ in 0..20 {
                emitter.note(kit_event(i));
                i += 1;
            }
            // Everything noted is sequenced once a later batch is.
            let next = running
                .router
                .publish_batch(vec![Record::new(kit_event(i))])
                .await
                .unwrap_or_else(|e| panic!("[{}] publish: {e}", self.sink));
            let first_noted = *next.start() - 20;
            expected.extend((first_noted..=*next.end()).zip(i - 20..=i));
            i += 1;
        }
        let expected: Vec<Observed> = expected
            .into_iter()
            .map(|(seq, i)| Observed::Event {
                seq,
                event_type: kit_event(i).type_name().to_owned(),
            })
            .collect();
        let last = expected.len();
        let seen = self
            .wait_for(target, "every event delivered while running", |seen| {
                seen.len() >= last
            })
            .await;
        assert_eq!(
            seen, expected,
            "[{}] events must arrive once each, in seq order, with their types",
            self.sink
        );
        self.stop(running).await;
        assert_eq!(
            target.observed(),
            expected,
            "[{}] nothing more after shutdown",
            self.sink
        );
    }

    /// With `filter = { type = ["vbucketMoveDone"], bucket = "kit-1" }`, exactly the
    /// matching events arrive.
    pub async fn filter_is_honoured(&self, target: &dyn Target) {
        let filter = format!("{{ type = [{FILTER_TYPE:?}], bucket = {FILTER_BUCKET:?} }}");
        let running = self.start(target, Some(&filter), 4096).await;
        let n = 600;
        let range = running
            .router
            .publish_batch((0..n).map(|i| Record::new(kit_event(i))).collect())
            .await
            .unwrap_or_else(|e| panic!("[{}] publish: {e}", self.sink));
        let expected: Vec<Observed> = range
            .zip(0..n)
            .filter(|(_, i)| {
                let event = kit_event(*i);
                event.type_name() == FILTER_TYPE && event.bucket() == Some(FILTER_BUCKET)
            })
            .map(|(seq, i)| Observed::Event {
                seq,
                event_type: kit_event(i).type_name().to_owned(),
            })
            .collect();
        self.stop(running).await;
        let count = expected.len();
        let seen = self
            .wait_for(target, "the matching events delivered", |seen| {
                seen.len() >= count
            })
            .await;
        assert_eq!(
            seen, expected,
            "[{}] exactly the events passing {filter} must arrive",
            self.sink
        );
    }

    /// While the target hangs, publishing [`Kit::stall_events`] events through a
    /// small archive completes; after it is back the sink delivers again, in
    /// order, and reports a gap for anything it did not deliver.
    pub async fn never_blocks_the_router(&self, target: &dyn Target) {
        let running = self.start(target, None, self.stall_archive).await;
        target.stall();
        let router = running.router.clone();
        let n = self.stall_events;
        let publish = async {
            let emitter = router.emitter();
            let mut i = 0;
            while i < n {
                let size = 100.min(n - i);
                router
                    .publish_batch((i..i + size).map(|i| Record::new(kit_event(i))).collect())
                    .await?;
                i += size;
                if i < n {
                    emitter.note(kit_event(i));
                    i += 1;
                }
            }
            Ok::<(), master_events_router::RouterError>(())
        };
        match tokio::time::timeout(self.deadline, publish).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("[{}] publish: {e}", self.sink),
            Err(_) => panic!(
                "[{}] publishing {n} events did not complete within {:?} while the sink's target hung: the sink blocks the router",
                self.sink, self.deadline
            ),
        }
        target.resume();
        let marker = router
            .publish_batch(vec![Record::new(BecameMaster {
                node: "n_9@kit-marker".into(),
                host: "127.0.0.1:9999".into(),
            })])
            .await
            .unwrap_or_else(|e| panic!("[{}] publish: {e}", self.sink));
        let marker = *marker.end();
        let seen = self
            .wait_for(
                target,
                "the event published after the target came back is delivered",
                |seen| {
                    seen.iter()
                        .any(|o| matches!(o, Observed::Event { seq, .. } if *seq == marker))
                },
            )
            .await;
        self.stop(running).await;
        // In order, nothing twice, and every seq up to the marker delivered or in a gap.
        let mut next = 1;
        for o in &seen {
            let (from, to) = o.range();
            assert!(
                from >= next,
                "[{}] out of order or twice: {o:?} after seq {}; observed {}",
                self.sink,
                next - 1,
                Summary(&seen)
            );
            assert!(
                from == next,
                "[{}] seqs {next}..={} were neither delivered nor reported in a gap; observed {}",
                self.sink,
                from - 1,
                Summary(&seen)
            );
            next = to + 1;
        }
        assert!(
            next > marker,
            "[{}] the stream ends at {} before the marker {marker}",
            self.sink,
            next - 1
        );
    }

    /// Everything sequenced before the sink set is shut down is delivered.
    pub async fn shutdown_flushes(&self, target: &dyn Target) {
        let running = self.start(target, None, 4096).await;
        let n = 1000;
        let range = running
            .router
            .publish_batch((0..n).map(|i| Record::new(kit_event(i))).collect())
            .await
            .unwrap_or_else(|e| panic!("[{}] publish: {e}", self.sink));
        // No waiting for delivery: shutdown itself must deliver.
        self.stop(running).await;
        let expected: Vec<u64> = range.collect();
        let seen = self
            .wait_for(
                target,
                "everything sequenced before shutdown delivered",
                |seen| seen.len() >= n,
            )
            .await;
        let seqs: Vec<u64> = seen
            .iter()
            .map(|o| match o {
                Observed::Event { seq, .. } => *seq,
                Observed::Gap { .. } => 0,
            })
            .collect();
        assert_eq!(
            seqs, expected,
            "[{}] shutdown must deliver everything sequenced before it, once, in order",
            self.sink
        );
    }

    /// An unknown key is refused when the configuration is loaded, naming the key.
    pub async fn bad_config_is_a_clear_error(&self, target: &dyn Target) {
        self.unknown_key_is_refused(&target.config());
    }

    /// An unknown key next to the sink's keys `config` is refused, naming the key.
    fn unknown_key_is_refused(&self, config: &str) {
        let text = self.toml(config, None, &format!("{UNKNOWN_KEY} = 1\n"));
        match load_config(&text) {
            Ok(_) => panic!(
                "[{}] a configuration with an unknown key must be refused:\n{text}",
                self.sink
            ),
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains(UNKNOWN_KEY),
                    "[{}] the error must name the unknown key {UNKNOWN_KEY:?}: {message}{}",
                    self.sink,
                    self.link_hint(&e)
                );
            }
        }
    }
}

/// A short description of an observation for failure messages.
struct Summary<'a>(&'a [Observed]);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let events = self
            .0
            .iter()
            .filter(|o| matches!(o, Observed::Event { .. }))
            .count();
        write!(f, "{} items ({events} events)", self.0.len())?;
        let show = |f: &mut fmt::Formatter<'_>, o: &Observed| match o {
            Observed::Event { seq, .. } => write!(f, " {seq}"),
            Observed::Gap { from_seq, to_seq } => write!(f, " gap({from_seq}..={to_seq})"),
        };
        f.write_str(":")?;
        if self.0.len() <= 40 {
            for o in self.0 {
                show(f, o)?;
            }
        } else {
            for o in &self.0[..20] {
                show(f, o)?;
            }
            f.write_str(" ...")?;
            for o in &self.0[self.0.len() - 20..] {
                show(f, o)?;
            }
        }
        Ok(())
    }
}

/// One `#[tokio::test]` per check of the [`Kit`], for the sink registered as
/// `sink`, each with a fresh target from the `target` expression (evaluated inside
/// the async test, so it may `.await`). The calling crate needs `tokio` (with the
/// `macros` and `rt-multi-thread` features) as a dev-dependency.
///
/// ```no_run
/// # use master_events_sinktest::{Observed, Target};
/// # struct MyTarget;
/// # impl Target for MyTarget {
/// #     fn config(&self) -> String { String::new() }
/// #     fn observed(&self) -> Vec<Observed> { Vec::new() }
/// #     fn stall(&self) {}
/// #     fn resume(&self) {}
/// # }
/// master_events_sinktest::kit_tests!(sink = "my_sink", target = MyTarget);
/// ```
#[macro_export]
macro_rules! kit_tests {
    (sink = $sink:expr, target = $target:expr $(,)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kit_order_is_kept() {
            let target = $target;
            $crate::Kit::new($sink).order_is_kept(&target).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kit_filter_is_honoured() {
            let target = $target;
            $crate::Kit::new($sink).filter_is_honoured(&target).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kit_never_blocks_the_router_when_the_target_hangs() {
            let target = $target;
            $crate::Kit::new($sink)
                .never_blocks_the_router(&target)
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kit_shutdown_flushes_everything_sequenced_before_it() {
            let target = $target;
            $crate::Kit::new($sink).shutdown_flushes(&target).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kit_an_unknown_key_is_an_error_naming_it() {
            let target = $target;
            $crate::Kit::new($sink)
                .bad_config_is_a_clear_error(&target)
                .await;
        }
    };
}
