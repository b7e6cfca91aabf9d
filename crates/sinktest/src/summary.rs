//! The kit's checks for a sink that summarises: one whose output is not an item per
//! event but totals it reports from time to time (counts by type, aggregates), from
//! [`master_events_router::Sink::on_tick`] or its own timer.
//!
//! Owns: the [`SummaryTarget`] trait (how the kit reads the sink's latest totals),
//! [`Totals`], the `summary_*` checks of the [`Kit`], and [`summary_kit_tests!`].
//!
//! The checks, each on its own router and sink built from TOML as `serve` builds it:
//! - [`Kit::summary_counts_every_event`]: after a mix of batches and single notes,
//!   and with no event after them, the totals come to exactly what was published:
//!   the sink reports by itself (its timer), not only when the next event comes.
//! - [`Kit::summary_honours_the_filter`]: with a filter, exactly the matching events
//!   are counted.
//! - [`Kit::summary_never_blocks_the_router`]: while the target hangs, publishing
//!   thousands of events through a small archive completes; once it is back, every
//!   event published is either counted or reported missed (a gap), none twice.
//! - [`Kit::summary_is_final_at_shutdown`]: the last report, made on shutdown,
//!   covers everything sequenced before it.
//! - The unknown-key check of [`Kit::bad_config_is_a_clear_error`].
//!
//! Waiting is for a condition with a deadline ([`Kit::deadline`]); the target's
//! configuration should make the sink report often (tens of milliseconds).

use std::collections::BTreeMap;
use std::time::Instant;

use master_events_events::catalog::BecameMaster;
use master_events_events::Record;
use master_events_router::{ConfigError, Router, Sink, SinkContext};

use crate::{kit_event, Kit, FILTER_BUCKET, FILTER_TYPE};

/// What a summarising sink reported last, as the kit reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Events counted, by type.
    pub counts: BTreeMap<String, u64>,
    /// Events the sink reported it missed (the sum of its gaps).
    pub missed: u64,
}

impl Totals {
    /// Every event counted, whatever its type.
    pub fn counted(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Where a summarising sink under test reports, as the kit sees it.
pub trait SummaryTarget: Send + Sync {
    /// The sink's own TOML keys that make it report to this target, often (not
    /// `type` nor `filter`); one `key = value` a line.
    fn config(&self) -> String;

    /// The latest totals the sink reported; `None` before its first report.
    fn totals(&self) -> Option<Totals>;

    /// Makes the target hang: it takes nothing until [`SummaryTarget::resume`].
    fn stall(&self);

    /// Ends a stall.
    fn resume(&self);

    /// Builds the sink from its keys when it must be built otherwise than by its
    /// registration: `Some(result)`. The default, `None`, builds it with its
    /// registration, as `serve` does.
    fn build(
        &self,
        _settings: toml::Value,
        _ctx: &SinkContext,
    ) -> Option<Result<Box<dyn Sink>, ConfigError>> {
        None
    }
}

/// Publishes `n` kit events on `router` as batches of 100 with a single note after
/// each (the last thing published is a batch, so every note is sequenced); returns
/// how many of each type it published.
async fn publish_mix(kit: &Kit, router: &Router, n: usize) -> BTreeMap<String, u64> {
    let mut published = BTreeMap::new();
    let mut count = |i: usize| {
        *published
            .entry(kit_event(i).type_name().to_owned())
            .or_insert(0) += 1;
    };
    let emitter = router.emitter();
    let mut i = 0;
    while i < n {
        let size = 100.min(n - i);
        router
            .publish_batch((i..i + size).map(|i| Record::new(kit_event(i))).collect())
            .await
            .unwrap_or_else(|e| panic!("[{}] publish: {e}", kit.sink));
        (i..i + size).for_each(&mut count);
        i += size;
        if i + 1 < n {
            emitter.note(kit_event(i));
            count(i);
            i += 1;
        }
    }
    published
}

impl Kit {
    /// Waits until the target's totals satisfy `done`; fails with `what` and the
    /// last totals at the deadline.
    async fn wait_for_totals(
        &self,
        target: &dyn SummaryTarget,
        what: &str,
        done: impl Fn(&Totals) -> bool,
    ) -> Totals {
        let start = Instant::now();
        loop {
            let totals = target.totals();
            if let Some(t) = &totals {
                if done(t) {
                    return t.clone();
                }
            }
            if start.elapsed() > self.deadline {
                panic!(
                    "[{}] {what}: not the case within {:?}; the last totals reported: {totals:?}",
                    self.sink, self.deadline
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// After a mix of batches and notes, with nothing published after them, the
    /// totals come to exactly what was published, with nothing missed.
    pub async fn summary_counts_every_event(&self, target: &dyn SummaryTarget) {
        let running = self
            .start_with(&target.config(), &|s, c| target.build(s, c), None, 4096)
            .await;
        let published = publish_mix(self, &running.router, 1000).await;
        let expected = Totals {
            counts: published,
            missed: 0,
        };
        // Nothing more is published: only the sink's own timer can report the end.
        self.wait_for_totals(
            target,
            "the totals reported (by the sink's timer) equal what was published",
            |t| t == &expected,
        )
        .await;
        self.stop(running).await;
        assert_eq!(
            target.totals(),
            Some(expected),
            "[{}] the report made on shutdown changes nothing",
            self.sink
        );
    }

    /// With `filter = { type = ["vbucketMoveDone"], bucket = "kit-1" }`, exactly the
    /// matching events are counted.
    pub async fn summary_honours_the_filter(&self, target: &dyn SummaryTarget) {
        let filter = format!("{{ type = [{FILTER_TYPE:?}], bucket = {FILTER_BUCKET:?} }}");
        let running = self
            .start_with(
                &target.config(),
                &|s, c| target.build(s, c),
                Some(&filter),
                4096,
            )
            .await;
        let n = 600;
        running
            .router
            .publish_batch((0..n).map(|i| Record::new(kit_event(i))).collect())
            .await
            .unwrap_or_else(|e| panic!("[{}] publish: {e}", self.sink));
        let matching = (0..n)
            .map(kit_event)
            .filter(|e| e.type_name() == FILTER_TYPE && e.bucket() == Some(FILTER_BUCKET))
            .count() as u64;
        let expected = Totals {
            counts: BTreeMap::from([(FILTER_TYPE.to_owned(), matching)]),
            missed: 0,
        };
        self.wait_for_totals(
            target,
            &format!("exactly the events passing {filter} counted"),
            |t| t == &expected,
        )
        .await;
        self.stop(running).await;
        assert_eq!(
            target.totals(),
            Some(expected),
            "[{}] final totals",
            self.sink
        );
    }

    /// While the target hangs, publishing [`Kit::stall_events`] events through a
    /// small archive completes; once it is back, every event published is counted
    /// or reported missed, none twice.
    pub async fn summary_never_blocks_the_router(&self, target: &dyn SummaryTarget) {
        let running = self
            .start_with(
                &target.config(),
                &|s, c| target.build(s, c),
                None,
                self.stall_archive,
            )
            .await;
        target.stall();
        let n = self.stall_events;
        let published = match tokio::time::timeout(
            self.deadline,
            publish_mix(self, &running.router, n),
        )
        .await
        {
            Ok(published) => published,
            Err(_) => panic!(
                "[{}] publishing {n} events did not complete within {:?} while the sink's target hung: the sink blocks the router",
                self.sink, self.deadline
            ),
        };
        target.resume();
        running
            .router
            .publish_batch(vec![Record::new(BecameMaster {
                node: "n_9@kit-marker".into(),
                host: "127.0.0.1:9999".into(),
            })])
            .await
            .unwrap_or_else(|e| panic!("[{}] publish: {e}", self.sink));
        let total = published.values().sum::<u64>() + 1;
        let totals = self
            .wait_for_totals(
                target,
                &format!("all {total} events counted or reported missed"),
                |t| t.counted() + t.missed >= total,
            )
            .await;
        self.stop(running).await;
        assert_eq!(
            totals.counted() + totals.missed,
            total,
            "[{}] every event counted or missed exactly once: {totals:?}",
            self.sink
        );
        for (event_type, n) in &totals.counts {
            let sent = published.get(event_type).copied().unwrap_or(0)
                + u64::from(event_type == "becameMaster");
            assert!(
                *n <= sent,
                "[{}] {n} {event_type} counted, {sent} published: {totals:?}",
                self.sink
            );
        }
    }

    /// Events published just before shutdown, with no wait for a report, are in the
    /// last report, made on shutdown.
    pub async fn summary_is_final_at_shutdown(&self, target: &dyn SummaryTarget) {
        let running = self
            .start_with(&target.config(), &|s, c| target.build(s, c), None, 4096)
            .await;
        let published = publish_mix(self, &running.router, 1000).await;
        // No waiting for a report: shutdown itself must make it.
        self.stop(running).await;
        let expected = Totals {
            counts: published,
            missed: 0,
        };
        self.wait_for_totals(
            target,
            "the report made on shutdown covers everything sequenced before it",
            |t| t == &expected,
        )
        .await;
    }

    /// An unknown key next to the summarising sink's keys is refused, naming it.
    pub async fn summary_bad_config_is_a_clear_error(&self, target: &dyn SummaryTarget) {
        self.unknown_key_is_refused(&target.config());
    }
}

/// One `#[tokio::test]` per summary check of the [`Kit`], for the summarising sink
/// registered as `sink`, each with a fresh target from the `target` expression
/// (evaluated inside the async test, so it may `.await`).
///
/// ```no_run
/// # use master_events_sinktest::{SummaryTarget, Totals};
/// # struct MyTarget;
/// # impl SummaryTarget for MyTarget {
/// #     fn config(&self) -> String { String::new() }
/// #     fn totals(&self) -> Option<Totals> { None }
/// #     fn stall(&self) {}
/// #     fn resume(&self) {}
/// # }
/// master_events_sinktest::summary_kit_tests!(sink = "my_counts", target = MyTarget);
/// ```
#[macro_export]
macro_rules! summary_kit_tests {
    (sink = $sink:expr, target = $target:expr $(,)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kit_summary_counts_every_event_without_a_later_one() {
            let target = $target;
            $crate::Kit::new($sink)
                .summary_counts_every_event(&target)
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kit_summary_honours_the_filter() {
            let target = $target;
            $crate::Kit::new($sink)
                .summary_honours_the_filter(&target)
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kit_summary_never_blocks_the_router_when_the_target_hangs() {
            let target = $target;
            $crate::Kit::new($sink)
                .summary_never_blocks_the_router(&target)
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kit_summary_is_final_at_shutdown() {
            let target = $target;
            $crate::Kit::new($sink)
                .summary_is_final_at_shutdown(&target)
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kit_summary_an_unknown_key_is_an_error_naming_it() {
            let target = $target;
            $crate::Kit::new($sink)
                .summary_bad_config_is_a_clear_error(&target)
                .await;
        }
    };
}
