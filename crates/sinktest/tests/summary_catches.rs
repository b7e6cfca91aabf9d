//! The kit's summary checks fail summarising sinks that break their promises: one
//! that reports only when enough events came (its last totals never show), one that
//! makes no report on shutdown, one that forgets gaps, one that counts twice, one
//! that ignores its filter.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use master_events_events::Gap;
use master_events_router::{ConfigError, Sink, SinkBatch, SinkContext};
use master_events_sinktest::{Kit, SummaryTarget, Totals};

#[derive(Clone, Copy, PartialEq)]
enum Flaw {
    /// None: the sink keeps every promise.
    Sound,
    /// Reports every 64th event only, never on a timer.
    ReportsOnlyEvery64,
    /// Reports on its timer (every hour), not on shutdown.
    NoReportOnShutdown,
    ForgetsGaps,
    CountsTwice,
    IgnoresFilter,
}

#[derive(Default)]
struct State {
    /// Every report, in order.
    reports: Vec<Totals>,
    stalled: bool,
}

/// Where the flawed sink reports: a list of totals that can hang.
#[derive(Clone)]
struct Reports(Arc<(Mutex<State>, Condvar)>, Flaw);

impl Reports {
    fn new(flaw: Flaw) -> Reports {
        Reports(Arc::default(), flaw)
    }
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Blocks while stalled, like a write to a hung disk.
    fn wait_while_stalled(&self) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        while st.stalled {
            st = self.0 .1.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st
    }
    /// Adds a report (blocking while stalled).
    fn report(&self, totals: Totals) {
        self.wait_while_stalled().reports.push(totals);
    }
}

/// A summarising sink with a flaw.
struct Flawed {
    to: Reports,
    totals: Totals,
    events: u64,
}

impl Sink for Flawed {
    fn on_batch(&mut self, batch: &SinkBatch<'_>) {
        // It touches its target with every batch (a journal, say): a hung target
        // holds it at once, so the stall checks lap it for certain.
        drop(self.to.wait_while_stalled());
        let events: Vec<_> = match self.to.1 {
            Flaw::IgnoresFilter => batch.unfiltered().iter().collect(),
            _ => batch.iter().collect(),
        };
        for event in events {
            let n = if self.to.1 == Flaw::CountsTwice { 2 } else { 1 };
            *self
                .totals
                .counts
                .entry(event.meta.event_type.as_str().to_owned())
                .or_default() += n;
            self.events += 1;
            if self.to.1 == Flaw::ReportsOnlyEvery64 && self.events % 64 == 0 {
                self.to.report(self.totals.clone());
            }
        }
    }
    fn on_gap(&mut self, gap: &Gap) {
        if self.to.1 != Flaw::ForgetsGaps {
            self.totals.missed += gap.missed;
        }
    }
    fn tick_every(&self) -> Option<Duration> {
        match self.to.1 {
            Flaw::ReportsOnlyEvery64 => None,
            Flaw::NoReportOnShutdown => Some(Duration::from_secs(3600)),
            _ => Some(Duration::from_millis(20)),
        }
    }
    fn on_tick(&mut self) {
        self.to.report(self.totals.clone());
    }
    fn shutdown(&mut self) {
        if self.to.1 != Flaw::NoReportOnShutdown {
            self.to.report(self.totals.clone());
        }
    }
}

impl SummaryTarget for Reports {
    fn config(&self) -> String {
        "format = \"json\"".into()
    }
    fn totals(&self) -> Option<Totals> {
        self.lock().reports.last().cloned()
    }
    fn stall(&self) {
        self.lock().stalled = true;
    }
    fn resume(&self) {
        self.lock().stalled = false;
        self.0 .1.notify_all();
    }
    fn build(&self, _: toml::Value, _: &SinkContext) -> Option<Result<Box<dyn Sink>, ConfigError>> {
        Some(Ok(Box::new(Flawed {
            to: self.clone(),
            totals: Totals {
                counts: BTreeMap::new(),
                missed: 0,
            },
            events: 0,
        })))
    }
}

/// The kit, as for a `stdout` sink (its keys are what `config` gives), with short
/// deadlines: each flaw must fail, and fail soon.
fn kit() -> Kit {
    let mut kit = Kit::new("stdout");
    kit.deadline = Duration::from_secs(3);
    kit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "equal what was published")]
async fn a_sink_without_a_timer_fails_summary_counts_every_event() {
    kit()
        .summary_counts_every_event(&Reports::new(Flaw::ReportsOnlyEvery64))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "the report made on shutdown covers everything")]
async fn a_sink_without_a_last_report_fails_summary_is_final_at_shutdown() {
    kit()
        .summary_is_final_at_shutdown(&Reports::new(Flaw::NoReportOnShutdown))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "counted or reported missed")]
async fn a_sink_that_forgets_gaps_fails_summary_never_blocks_the_router() {
    kit()
        .summary_never_blocks_the_router(&Reports::new(Flaw::ForgetsGaps))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "equal what was published")]
async fn a_sink_that_counts_twice_fails_summary_counts_every_event() {
    kit()
        .summary_counts_every_event(&Reports::new(Flaw::CountsTwice))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "exactly the events passing")]
async fn a_sink_that_ignores_its_filter_fails_summary_honours_the_filter() {
    kit()
        .summary_honours_the_filter(&Reports::new(Flaw::IgnoresFilter))
        .await;
}

/// A sound summarising sink passes every check, so the failures above are the flaws'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sound_summarising_sink_passes_every_summary_check() {
    let kit = kit();
    kit.summary_counts_every_event(&Reports::new(Flaw::Sound))
        .await;
    kit.summary_honours_the_filter(&Reports::new(Flaw::Sound))
        .await;
    kit.summary_never_blocks_the_router(&Reports::new(Flaw::Sound))
        .await;
    kit.summary_is_final_at_shutdown(&Reports::new(Flaw::Sound))
        .await;
}
