//! The [`Sink`] trait: what consumes the router's events (loggers, files, webhooks, ...).
//!
//! Owns: the hooks a sink implements, the input a sink reads ([`SinkInput`]: its own
//! [`Subscription`] and filter) and the default runner ([`run_blocking`]).
//!
//! Promises:
//! - A sink cannot slow the sequencer or another sink: each runs on its own task,
//!   reading its own subscription (see [`crate::ring`] for what happens when it falls
//!   behind: it gets a gap, [`Sink::on_gap`]).
//! - A sink author writes only the hooks it needs: every hook has a no-op default.
//!   By default the hooks run on a blocking thread, so they may do blocking I/O.
//!   An async sink overrides [`Sink::run`] instead and reads [`SinkInput`] itself.
//! - Hooks see only the events that pass the sink's filter (a batch that has none is
//!   not delivered); gaps are always delivered.
//! - [`Sink::flush`] is called whenever the sink has caught up with the stream, and
//!   before [`Sink::shutdown`], which is called once, last.
//! - A sink that asks for a tick ([`Sink::tick_every`]) gets [`Sink::on_tick`] at
//!   that period whether events come or not (a busy stream does not starve it, a
//!   quiet one does not silence it): where a sink that summarises reports.
//! - A sink reads from [`Sink::start_cursor`] (by default the oldest retained
//!   event), so a sink that persists can resume after what it already has.
//! - A sink that panics is restarted (see [`crate::supervise`]): the panic reaches
//!   the supervisor from [`run_blocking`] as from an async sink's own task, and the
//!   input records how far the sink got ([`SinkInput::recv`] marks everything handed
//!   before as handled), so the restarted sink continues from there.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use master_events_events::Gap;
use tokio_util::sync::CancellationToken;

use crate::filter::Filter;
use crate::ring::{Chunk, Cursor, EventBatch, EventRef, Subscription};

/// The future a sink runs as.
pub type SinkFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A consumer of events.
pub trait Sink: Send + 'static {
    /// Called with each batch that has events passing the filter. The default calls
    /// [`Sink::on_event`] for each of them.
    fn on_batch(&mut self, batch: &SinkBatch<'_>) {
        for event in batch.iter() {
            self.on_event(&event);
        }
    }

    /// Called for each event passing the filter (by the default [`Sink::on_batch`]).
    fn on_event(&mut self, _event: &EventRef<'_>) {}

    /// Called when events were missed (the sink fell behind the archive's tail).
    fn on_gap(&mut self, _gap: &Gap) {}

    /// Called, only on a sink that is a commit gate (it reads events before they
    /// are committed), when the cluster took back the events after `after` that it
    /// had been given (a deposed master's events no majority held). The default
    /// logs an ERROR: a sink that kept them holds events no stream shows. A durable
    /// sink drops what it wrote past `after`.
    fn on_truncated(&mut self, after: u64) {
        tracing::error!(
            after,
            "the cluster took back events this sink was given before they were committed; it may still hold them"
        );
    }

    /// Called when the sink has caught up with the stream, and before shutdown.
    fn flush(&mut self) {}

    /// Called once, last, when the sink stops.
    fn shutdown(&mut self) {}

    /// How often [`Sink::on_tick`] is called while the sink runs, asked once when it
    /// starts; `None` (the default): never. Only the default runner
    /// ([`run_blocking`]) ticks; an async sink that overrides [`Sink::run`] keeps its
    /// own interval.
    fn tick_every(&self) -> Option<Duration> {
        None
    }

    /// Called every [`Sink::tick_every`] while the sink runs, between deliveries,
    /// whether events came since or not: a sink that counts or aggregates reports
    /// here (and once more in [`Sink::shutdown`], so the last report covers every
    /// event). A tick that comes while a hook is still busy is taken once that hook
    /// returns; ticks missed meanwhile are not made up.
    fn on_tick(&mut self) {}

    /// Where the sink starts reading the stream, asked once after it is built: by
    /// default [`Cursor::Oldest`] (the whole archive, then live events; after a warm
    /// start, the archive of this run: the restored events were delivered by the
    /// previous one). A sink that persists what it was given resumes after what it
    /// already has ([`Cursor::After`]), so that a restart does not deliver it twice.
    fn start_cursor(&self) -> Cursor {
        Cursor::Oldest
    }

    /// Runs the sink until its input ends. The default runs the hooks above on a
    /// blocking thread ([`run_blocking`]); an async sink overrides this and reads
    /// `input` itself (using [`SinkInput::deliver`] or its own loop).
    fn run(self: Box<Self>, input: SinkInput) -> SinkFuture {
        run_blocking(self, input)
    }
}

/// The events of one batch that pass a sink's filter.
pub struct SinkBatch<'a> {
    batch: &'a EventBatch,
    /// Indices in the block of the selected events; `None` when all are selected.
    selected: Option<&'a [u32]>,
}

impl<'a> SinkBatch<'a> {
    /// All the events of `batch`.
    pub fn all(batch: &'a EventBatch) -> SinkBatch<'a> {
        SinkBatch {
            batch,
            selected: None,
        }
    }

    /// The number of selected events.
    pub fn len(&self) -> usize {
        match self.selected {
            Some(s) => s.len(),
            None => self.batch.len(),
        }
    }

    /// Whether no event is selected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The selected events, in `seq` order.
    pub fn iter(&self) -> impl Iterator<Item = EventRef<'a>> + '_ {
        let batch = self.batch;
        let (all, some) = match self.selected {
            None => (Some(batch.start..batch.end), None),
            Some(s) => (None, Some(s.iter().map(|i| *i as usize))),
        };
        all.into_iter()
            .flatten()
            .chain(some.into_iter().flatten())
            .map(move |i| batch.event(i))
    }

    /// The lines of the selected events, back to back: zero-copy when they are
    /// consecutive.
    pub fn bytes(&self) -> Bytes {
        match self.selected {
            None => self.batch.bytes(),
            Some([]) => Bytes::new(),
            Some(s) => {
                let (first, last) = (s[0] as usize, s[s.len() - 1] as usize);
                if last - first + 1 == s.len() {
                    self.batch.slice(first, last + 1)
                } else {
                    let mut out = Vec::new();
                    for e in self.iter() {
                        out.extend_from_slice(e.line);
                    }
                    Bytes::from(out)
                }
            }
        }
    }

    /// The whole batch, before filtering.
    pub fn unfiltered(&self) -> &'a EventBatch {
        self.batch
    }
}

impl fmt::Debug for SinkBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkBatch")
            .field("batch", &self.batch)
            .field("selected", &self.len())
            .finish()
    }
}

/// What a sink reads: its subscription, its filter, and the signal to stop.
pub struct SinkInput {
    sub: Subscription,
    filter: Option<Filter>,
    cancel: CancellationToken,
    /// Once stopping: deliver up to this seq (what was sequenced when asked to stop).
    stop_at: Option<u64>,
    selected: Vec<u32>,
    name: String,
    progress: Arc<Progress>,
    /// A chunk to hand out before reading the subscription (a restart's gap).
    pending: Option<Chunk>,
}

/// How far a sink got: shared between its input and its supervisor.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Every event up to this seq was handled (the sink asked for more after it).
    pub(crate) handled: AtomicU64,
    /// The last seq handed to the sink.
    pub(crate) handed: AtomicU64,
}

impl SinkInput {
    /// The input of a sink named `name` reading `sub`, keeping the events that pass
    /// `filter` (all if `None`), until `cancel` is cancelled.
    pub fn new(
        name: impl Into<String>,
        sub: Subscription,
        filter: Option<Filter>,
        cancel: CancellationToken,
    ) -> SinkInput {
        let at = sub.position();
        SinkInput {
            sub,
            filter: filter.filter(|f| !f.is_all()),
            cancel,
            stop_at: None,
            selected: Vec::new(),
            name: name.into(),
            progress: Arc::new(Progress {
                handled: AtomicU64::new(at),
                handed: AtomicU64::new(at),
            }),
            pending: None,
        }
    }

    /// The shared record of how far the sink got, and a chunk to hand out first.
    pub(crate) fn supervised(mut self, pending: Option<Chunk>) -> (SinkInput, Arc<Progress>) {
        self.pending = pending;
        let progress = Arc::clone(&self.progress);
        (self, progress)
    }

    /// Asking for more means everything handed before was handled.
    fn mark_handled(&self) {
        let handed = self.progress.handed.load(Ordering::Relaxed);
        self.progress.handled.store(handed, Ordering::Relaxed);
    }

    fn mark_handed(&self, chunk: Option<Chunk>) -> Option<Chunk> {
        if chunk.is_some() {
            self.progress
                .handed
                .store(self.sub.position(), Ordering::Relaxed);
        }
        chunk
    }

    /// The sink's name (its `type`), for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The seq of the last event handed out or skipped (filtered-out events and gaps
    /// included): everything up to it has been offered to the sink. A commit gate
    /// marks it once what it was handed is durable.
    pub fn position(&self) -> u64 {
        self.sub.position()
    }

    /// Marks `gate` with everything this input has handed out ([`Self::position`]),
    /// safely against a cut of the archive made since (see
    /// [`CommitGate::mark_read`]): how a durable sink that is a commit gate says
    /// what it has on disk.
    pub fn mark(&self, gate: &crate::CommitGate) {
        gate.mark_read(&self.sub);
    }

    /// The sink's filter (`None`: every event).
    pub fn filter(&self) -> Option<&Filter> {
        self.filter.as_ref()
    }

    /// The next chunk (events are not filtered here: see [`SinkInput::select`]),
    /// waiting for one. `None` when the input has ended: the router shut down and
    /// everything was read, or the sink set is stopping and everything sequenced
    /// before that was read.
    ///
    /// Cancel-safe: dropped before it completes (in `tokio::select!` next to a
    /// timer), it loses no chunk.
    pub async fn recv(&mut self) -> Option<Chunk> {
        self.mark_handled();
        if let Some(chunk) = self.pending.take() {
            return Some(chunk);
        }
        if self.stop_at.is_none() {
            let cancelled = {
                let cancel = self.cancel.cancelled();
                tokio::select! {
                    biased;
                    () = cancel => None,
                    chunk = self.sub.recv() => Some(chunk),
                }
            };
            match cancelled {
                Some(chunk) => return self.mark_handed(chunk),
                None => self.stop_at = Some(self.sub.ring_last_seq()),
            }
        }
        self.try_recv()
    }

    /// Resolves once the sink set is stopping (the input then ends after what was
    /// sequenced before). A sink waiting on something else — a server that is down —
    /// can stop waiting and finish within its shutdown deadline.
    pub async fn stopping(&self) {
        self.cancel.cancelled().await;
    }

    /// The next chunk if one is ready, else `None`.
    pub fn try_recv(&mut self) -> Option<Chunk> {
        self.mark_handled();
        if let Some(chunk) = self.pending.take() {
            return Some(chunk);
        }
        if self.stop_at.is_none() && self.cancel.is_cancelled() {
            self.stop_at = Some(self.sub.ring_last_seq());
        }
        let chunk = match self.stop_at {
            Some(stop) if self.sub.position() >= stop => None,
            _ => self.sub.try_recv(),
        };
        self.mark_handed(chunk)
    }

    /// The events of `batch` that pass the filter; `None` if none does.
    pub fn select<'a>(&'a mut self, batch: &'a EventBatch) -> Option<SinkBatch<'a>> {
        let Some(filter) = &self.filter else {
            return Some(SinkBatch::all(batch));
        };
        self.selected.clear();
        for i in batch.start..batch.end {
            if filter.matches(&batch.event(i).meta) {
                self.selected.push(i as u32);
            }
        }
        if self.selected.is_empty() {
            None
        } else if self.selected.len() == batch.len() {
            Some(SinkBatch::all(batch))
        } else {
            Some(SinkBatch {
                batch,
                selected: Some(&self.selected),
            })
        }
    }

    /// Hands `chunk` to the sink's hooks: a gap to [`Sink::on_gap`], events that pass
    /// the filter to [`Sink::on_batch`].
    pub fn deliver<S: Sink + ?Sized>(&mut self, sink: &mut S, chunk: Chunk) {
        match chunk {
            Chunk::Gap(gap) => sink.on_gap(&gap),
            Chunk::Truncated { after } => sink.on_truncated(after),
            Chunk::Events(batch) => {
                if let Some(selected) = self.select(&batch) {
                    sink.on_batch(&selected);
                }
            }
        }
    }
}

impl fmt::Debug for SinkInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkInput")
            .field("name", &self.name)
            .field("position", &self.sub.position())
            .field("filter", &self.filter)
            .finish()
    }
}

/// Runs `work` on a thread of its own, named after the sink (`sink-<name>`), and
/// waits for it to end: a sink's loop lives as long as the sink, so it must not
/// hold one of tokio's blocking-pool threads (meant for short blocking calls) for
/// ever. The thread is inside the caller's tokio runtime context. Returns its
/// panic when it panicked, for the caller to pass on (the
/// supervisor restarts the sink). A thread that cannot be started is an ERROR.
pub async fn run_on_own_thread<F>(name: &str, work: F) -> std::thread::Result<()>
where
    F: FnOnce() + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The thread runs inside the caller's runtime context (timers, `Handle`), as a
    // blocking-pool thread would.
    let runtime = tokio::runtime::Handle::try_current().ok();
    // And inside the caller's span: what the sink logs says which sink it is.
    let span = tracing::Span::current();
    let spawned = std::thread::Builder::new()
        .name(format!("sink-{name}"))
        .spawn(move || {
            let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
            let result =
                span.in_scope(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        tracing::error!(sink = %name, error = %e, "cannot start the sink's thread: the sink does not run");
        return Ok(());
    }
    // The thread always sends (the work's panic is caught); a closed channel can
    // only mean it ended.
    rx.await.unwrap_or(Ok(()))
}

/// What waiting for the next chunk ended with.
enum Waited {
    /// A chunk, or the end of the input (`None`).
    Chunk(Option<Chunk>),
    /// The sink's tick came first.
    Tick,
}

/// Runs a sink's hooks on a thread of its own ([`run_on_own_thread`]) until its
/// input ends: delivers every chunk, flushes whenever it has caught up, then
/// flushes and shuts it down. A panic in a hook ends that sink only: it is passed on
/// to whoever awaits this future (the supervisor, which logs it and restarts the
/// sink).
pub fn run_blocking<S: Sink + ?Sized>(sink: Box<S>, input: SinkInput) -> SinkFuture {
    Box::pin(async move {
        let handle = tokio::runtime::Handle::current();
        let name = input.name.clone();
        let result = run_on_own_thread(&name, move || {
            let mut sink = sink;
            let mut input = input;
            let every = sink.tick_every().filter(|d| !d.is_zero());
            let mut next_tick = every.map(|d| Instant::now() + d);
            loop {
                if let (Some(every), Some(at)) = (every, next_tick) {
                    if Instant::now() >= at {
                        sink.on_tick();
                        next_tick = Some(Instant::now() + every);
                    }
                }
                let chunk = match input.try_recv() {
                    Some(chunk) => chunk,
                    None => {
                        sink.flush();
                        let waited = match next_tick {
                            None => Waited::Chunk(handle.block_on(input.recv())),
                            Some(at) => handle.block_on(async {
                                tokio::select! {
                                    // Cancel-safe: a tick loses no chunk.
                                    chunk = input.recv() => Waited::Chunk(chunk),
                                    () = tokio::time::sleep_until(at.into()) => Waited::Tick,
                                }
                            }),
                        };
                        match waited {
                            Waited::Chunk(Some(chunk)) => chunk,
                            Waited::Chunk(None) => break,
                            Waited::Tick => continue,
                        }
                    }
                };
                input.deliver(&mut *sink, chunk);
            }
            sink.flush();
            sink.shutdown();
        })
        .await;
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sinks_loop_runs_on_a_thread_of_its_own_inside_the_runtime_and_its_panic_comes_back()
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let ended = run_on_own_thread("probe", move || {
            let name = std::thread::current().name().map(str::to_owned);
            // Inside the runtime's context: a handle (and so timers) is there.
            let in_runtime = tokio::runtime::Handle::try_current().is_ok();
            let _ = tx.send((name, in_runtime));
        })
        .await;
        assert!(ended.is_ok());
        let (name, in_runtime) = rx.recv().expect("the work ran");
        assert_eq!(name.as_deref(), Some("sink-probe"));
        assert!(in_runtime, "the thread is in the runtime's context");

        let panicked = run_on_own_thread("boom", || panic!("a hook panicked")).await;
        let payload = panicked.expect_err("the panic comes back");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"a hook panicked"));
    }

    /// Counts what the runner calls: events seen, and ticks with the events seen
    /// at each.
    struct Ticking {
        events: u64,
        ticks: Arc<std::sync::Mutex<Vec<u64>>>,
        shut: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Sink for Ticking {
        fn on_batch(&mut self, batch: &SinkBatch<'_>) {
            self.events += batch.len() as u64;
        }
        fn tick_every(&self) -> Option<Duration> {
            Some(Duration::from_millis(10))
        }
        fn on_tick(&mut self) {
            self.ticks.lock().expect("ticks").push(self.events);
        }
        fn shutdown(&mut self) {
            self.shut.store(true, Ordering::SeqCst);
        }
    }

    /// Waits (up to 30 s) until `f` holds.
    async fn until(what: &str, f: impl Fn() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what}: not within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sink_that_asks_for_ticks_gets_them_on_a_quiet_stream_and_on_a_busy_one() {
        use master_events_events::catalog::DeleteBucket;
        use master_events_events::Record;

        let router = crate::Router::start(crate::RouterConfig {
            node: "n_0@tick".into(),
            ..crate::RouterConfig::default()
        });
        let ticks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let shut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sink = Box::new(Ticking {
            events: 0,
            ticks: ticks.clone(),
            shut: shut.clone(),
        });
        let cancel = CancellationToken::new();
        let input = SinkInput::new(
            "ticking".to_owned(),
            router.subscribe(Cursor::Oldest),
            None,
            cancel.clone(),
        );
        let task = tokio::spawn(sink.run(input));

        // Quiet: no event at all, and ticks come.
        until("ticks on a quiet stream", || {
            ticks.lock().expect("ticks").len() >= 3
        })
        .await;
        assert!(ticks.lock().expect("ticks").iter().all(|&n| n == 0));

        // Busy: a batch every millisecond (bounded: 30,000 batches or 30 s), ticks
        // still come, and a tick sees the events delivered before it.
        let before = ticks.lock().expect("ticks").len();
        let start = Instant::now();
        let mut published = 0u64;
        for _ in 0..30_000 {
            let records = (0..10)
                .map(|_| {
                    Record::new(master_events_events::Event::from(DeleteBucket {
                        bucket: "b".into(),
                    }))
                })
                .collect();
            router.publish_batch(records).await.expect("publish");
            published += 10;
            let seen = ticks.lock().expect("ticks").clone();
            if seen.len() >= before + 3 && seen.last().is_some_and(|&n| n > 0) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no tick while busy"
            );
            // Pacing the load, not synchronising: the loop ends on the condition.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let seen = ticks.lock().expect("ticks").clone();
        assert!(
            seen.len() >= before + 3 && seen.last().is_some_and(|&n| n > 0 && n <= published),
            "ticks while events flow, each seeing what was delivered: {seen:?}"
        );

        router.shutdown().await;
        cancel.cancel();
        task.await.expect("the sink ends");
        assert!(shut.load(Ordering::SeqCst), "shutdown was called last");
    }
}
