//! Sink supervision: a sink that panics is logged, counted and restarted with
//! backoff; the router and the other sinks never notice.
//!
//! Owns: the task every configured sink runs under ([`Supervisor::run`]).
//!
//! Promises:
//! - A panic in a sink (in a hook run by [`crate::run_blocking`] or in an async
//!   sink's own `run`) ends that sink's task only. It is logged at ERROR with the
//!   panic's message, counted ([`SinkHealth::panics`]), and the sink's state is
//!   `failing` until it runs again.
//! - The sink is built again from its configuration and continues after the last
//!   event it had handled (the chunk it was handling is handed to it again), or,
//!   when it says where it resumes ([`Sink::start_cursor`] `After`), from there: a
//!   persistent sink knows what it holds, so events it had taken but not written
//!   are handed to it again. Only a skip (below) overrides it. Restarts back off from 100 ms, doubling up to 30 s while the sink keeps
//!   panicking at the same place.
//! - A batch the sink panicked on [`PANICS_BEFORE_SKIP`] times in a row is skipped,
//!   and the sink is told with a `gap` ([`Sink::on_gap`]) naming the skipped seqs:
//!   one poisonous event stops nothing for ever, and its loss is announced.
//! - Shutdown ([`crate::SinkSet::shutdown`]) is never delayed by a restart: a sink
//!   waiting to be restarted stops at once.

use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use master_events_events::Gap;
use tokio_util::sync::CancellationToken;

use crate::filter::Filter;
use crate::health::SinkHealth;
use crate::registry::{SinkBuildFn, SinkContext};
use crate::ring::{Chunk, Cursor};
use crate::sink::{Sink, SinkInput};
use crate::Router;

/// Panics on the same batch before it is skipped (with a gap).
pub const PANICS_BEFORE_SKIP: u32 = 3;

/// The longest wait before a restart.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Everything needed to run, and build again, one configured sink.
#[derive(Clone)]
pub(crate) struct Supervisor {
    pub(crate) kind: String,
    pub(crate) build: SinkBuildFn,
    pub(crate) settings: toml::Table,
    pub(crate) ctx: SinkContext,
    pub(crate) filter: Option<Filter>,
    pub(crate) router: Router,
    pub(crate) cancel: CancellationToken,
    pub(crate) health: Arc<SinkHealth>,
}

fn backoff(attempt: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    Duration::from_millis(ms).min(RESTART_BACKOFF_MAX)
}

/// The text a panic was raised with.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

impl Supervisor {
    /// Runs `sink` from `from`, restarting it after each panic, until its input ends.
    pub(crate) async fn run(self, mut sink: Box<dyn Sink>, mut from: Cursor) {
        let mut pending: Option<Chunk> = None;
        let mut same_spot = 0u32;
        let mut last_spot: Option<u64> = None;
        loop {
            // A commit gate reads what it makes committed; every other sink, only
            // committed events.
            let sub = if self.ctx.is_commit_gate() {
                self.router.subscribe_uncommitted(from)
            } else {
                self.router.subscribe(from)
            };
            let input = SinkInput::new(
                self.kind.clone(),
                sub,
                self.filter.clone(),
                self.cancel.child_token(),
            );
            let (input, progress) = input.supervised(pending.take());
            // Everything the sink logs carries its kind.
            let span = tracing::info_span!("sink", kind = %self.kind);
            let error =
                match tokio::spawn(tracing::Instrument::instrument(sink.run(input), span)).await {
                    Ok(()) => return,
                    Err(e) => e,
                };
            if !error.is_panic() {
                // Cancelled: the runtime is going away.
                self.health.failing("its task was cancelled");
                return;
            }
            let message = panic_message(&*error.into_panic());
            let panics = self.health.panicked();
            let handled = progress.handled.load(Ordering::Relaxed);
            let handed = progress.handed.load(Ordering::Relaxed);
            if last_spot == Some(handled) {
                same_spot += 1;
            } else {
                same_spot = 1;
                last_spot = Some(handled);
            }
            let mut resume_after = handled;
            if same_spot >= PANICS_BEFORE_SKIP && handed > handled {
                let reason = format!(
                    "skipped: the sink panicked {same_spot} times in a row on these events"
                );
                tracing::error!(
                    sink = %self.kind,
                    from_seq = handled + 1,
                    to_seq = handed,
                    "sink panicked {same_spot} times on the same events; skipping them (the sink gets a gap)"
                );
                pending = Some(Chunk::Gap(Gap::new(handled + 1, handed, reason)));
                resume_after = handed;
                last_spot = None;
            }
            let delay = backoff(same_spot);
            tracing::error!(
                sink = %self.kind,
                panics,
                panic = %message,
                resume_after,
                restart_in_ms = delay.as_millis() as u64,
                "sink panicked; restarting it"
            );
            self.health
                .failing(format!("panicked ({message}); restarting"));
            sink = match self.rebuild(delay, "its panic").await {
                Some(sink) => sink,
                None => return,
            };
            // A sink that says where it resumes knows what it holds (a file sink
            // restarts after its log's last line, so events it held unwritten when
            // it panicked are handed to it again); only a skip overrides it.
            let skipping = pending.is_some();
            from = match sink.start_cursor() {
                Cursor::After(own) if !skipping || own > resume_after => Cursor::After(own),
                _ => Cursor::After(resume_after),
            };
            self.health.ok();
        }
    }

    /// Waits `delay`, then builds the sink again (retrying, with backoff, while its
    /// build fails). `None` when asked to stop meanwhile.
    /// Builds the sink again from its configuration after `delay` (and, while that
    /// fails, again with a doubling delay); `after` says why, for the log: `"its
    /// panic"`, `"this node became master"`. `None` once the sink set stops.
    pub(crate) async fn rebuild(&self, mut delay: Duration, after: &str) -> Option<Box<dyn Sink>> {
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            match (self.build)(toml::Value::Table(self.settings.clone()), &self.ctx) {
                Ok(sink) => return Some(sink),
                Err(e) => {
                    tracing::error!(sink = %self.kind, error = %e, "cannot build the sink again after {after}; retrying");
                    self.health
                        .failing(format!("cannot be built again after {after}: {e}"));
                    delay = (delay.max(Duration::from_millis(100)) * 2).min(RESTART_BACKOFF_MAX);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use master_events_events::catalog::DeleteBucket;
    use master_events_events::Record;
    use parking_lot::Mutex;
    use serde::Deserialize;

    use super::*;
    use crate::config::{load_config, start_sinks, ConfigError};
    use crate::registry::SinkConfig;
    use crate::sink::SinkBatch;
    use crate::{RouterConfig, SinkState};

    /// What each panicky sink saw: `(id, Some(seq))` per event, `(id, None)` per gap
    /// start, with the gap's range.
    static SEEN: Mutex<Vec<(u32, u64)>> = Mutex::new(Vec::new());
    static GAPS: Mutex<Vec<(u32, u64, u64)>> = Mutex::new(Vec::new());
    static PANICS: Mutex<Vec<(u32, u64)>> = Mutex::new(Vec::new());

    /// A sink that panics on the event with seq `at`, `times` times.
    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct PanickyConfig {
        id: u32,
        at: u64,
        times: u32,
        /// Where it says it resumes (as a persistent sink would).
        resume: Option<u64>,
    }

    struct Panicky(PanickyConfig);

    impl Sink for Panicky {
        fn on_batch(&mut self, batch: &SinkBatch<'_>) {
            for e in batch.iter() {
                if e.seq == self.0.at {
                    let mut panics = PANICS.lock();
                    let so_far = panics.iter().filter(|(id, _)| *id == self.0.id).count();
                    if so_far < self.0.times as usize {
                        panics.push((self.0.id, e.seq));
                        drop(panics);
                        panic!("panicky sink {} on seq {}", self.0.id, e.seq);
                    }
                }
                SEEN.lock().push((self.0.id, e.seq));
            }
        }
        fn on_gap(&mut self, gap: &Gap) {
            GAPS.lock().push((self.0.id, gap.from_seq, gap.to_seq));
        }
        fn start_cursor(&self) -> Cursor {
            self.0.resume.map_or(Cursor::Oldest, Cursor::After)
        }
    }

    impl SinkConfig for PanickyConfig {
        const NAME: &'static str = "panicky";
        const DESCRIPTION: &'static str = "test only";
        fn build(self, _ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError> {
            Ok(Box::new(Panicky(self)))
        }
    }

    crate::register_sink!(PanickyConfig);

    fn deletes(n: u64) -> Vec<Record> {
        (0..n)
            .map(|i| {
                Record::new(DeleteBucket {
                    bucket: format!("b{i}").into(),
                })
            })
            .collect()
    }

    fn seen_by(id: u32) -> Vec<u64> {
        SEEN.lock()
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, s)| *s)
            .collect()
    }

    /// Waits (up to 20 s) until `done` holds.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_sink_that_panics_is_restarted_and_gets_the_events_again() {
        let router = Router::start(RouterConfig::default());
        let config = load_config("[[sinks]]\ntype = \"panicky\"\nid = 1\nat = 5\ntimes = 1\n")
            .expect("loads");
        let sinks = start_sinks(&router, &config).expect("starts");
        let health = sinks.health();
        router.publish_batch(deletes(10)).await.expect("published");
        until("the restarted sink saw seq 10", || seen_by(1).contains(&10)).await;
        let seen = seen_by(1);
        let after_restart = &seen[seen.iter().rposition(|s| *s == 1).unwrap_or(0)..];
        assert_eq!(after_restart, (1..=10).collect::<Vec<u64>>(), "{seen:?}");
        assert_eq!(health[0].panics(), 1);
        assert_eq!(health[0].state(), SinkState::Ok);
        // Other work goes on: the router still sequences.
        assert_eq!(router.publish_batch(deletes(1)).await, Ok(11..=11));
        router.shutdown().await;
        sinks.shutdown().await;
    }

    #[tokio::test]
    async fn a_restarted_sink_resumes_where_it_says_it_holds_events_to() {
        // It starts after seq 2, handles 3 and 4 (in memory, say), and panics on 5
        // while saying it holds only up to 2: the restart hands it 3 onwards again
        // rather than losing 3 and 4.
        let router = Router::start(RouterConfig::default());
        let config =
            load_config("[[sinks]]\ntype = \"panicky\"\nid = 3\nat = 5\ntimes = 1\nresume = 2\n")
                .expect("loads");
        let sinks = start_sinks(&router, &config).expect("starts");
        router.publish_batch(deletes(4)).await.expect("published");
        until("the sink saw seq 4", || seen_by(3).contains(&4)).await;
        router.publish_batch(deletes(4)).await.expect("published");
        until("the restarted sink saw seq 8", || seen_by(3).contains(&8)).await;
        let seen = seen_by(3);
        assert_eq!(seen, vec![3, 4, 3, 4, 5, 6, 7, 8], "{seen:?}");
        router.shutdown().await;
        sinks.shutdown().await;
    }

    #[tokio::test]
    async fn a_sink_that_keeps_panicking_on_one_event_skips_it_with_a_gap() {
        let router = Router::start(RouterConfig::default());
        let config = load_config("[[sinks]]\ntype = \"panicky\"\nid = 2\nat = 3\ntimes = 1000\n")
            .expect("loads");
        let sinks = start_sinks(&router, &config).expect("starts");
        let health = sinks.health();
        router.publish_batch(deletes(4)).await.expect("published");
        until("the poisonous batch was skipped", || {
            GAPS.lock().iter().any(|(id, ..)| *id == 2)
        })
        .await;
        let gap = GAPS.lock().iter().find(|(id, ..)| *id == 2).copied();
        let Some((_, from, to)) = gap else {
            panic!("no gap");
        };
        assert!(
            from <= 3 && 3 <= to,
            "the gap covers the poisonous seq: {from}..={to}"
        );
        assert_eq!(health[0].panics(), u64::from(PANICS_BEFORE_SKIP));
        router.publish_batch(deletes(2)).await.expect("published");
        until("the sink saw the events after the skipped batch", || {
            seen_by(2).contains(&6)
        })
        .await;
        router.shutdown().await;
        sinks.shutdown().await;
    }

    #[test]
    fn restarts_back_off_from_100_ms_to_30_s() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(40), RESTART_BACKOFF_MAX);
    }

    #[test]
    fn the_panic_message_is_found_in_either_payload() {
        let s: Box<dyn Any + Send> = Box::new("boom");
        assert_eq!(panic_message(&*s), "boom");
        let s: Box<dyn Any + Send> = Box::new(String::from("bang"));
        assert_eq!(panic_message(&*s), "bang");
        let s: Box<dyn Any + Send> = Box::new(7u8);
        assert_eq!(panic_message(&*s), "a panic without a message");
    }
}
