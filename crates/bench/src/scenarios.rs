//! The scenarios: throughput, latency at a fixed offered load, and memory.
//!
//! Owns: how each scenario drives a system — readers first (all subscribed before
//! the first event is produced), then one producer on its own thread and runtime
//! (so that K busy readers do not starve it of a scheduler), then the drain — and
//! what each one measures ([`ThroughputRow`], [`LatencyRow`], [`RetainedRow`],
//! [`IdleRow`]).
//!
//! Promises:
//! - Every scenario starts a fresh server and stops it before returning, also on
//!   error; every wait is bounded (a reader stops when it has the producer's last
//!   event, after [`DRAIN_IDLE`] without progress once the producer is done, or at
//!   the row's hard deadline).
//! - Delivered events/s counts events received by all readers over the time from
//!   the producer's first send to the last receipt. Losses are split into
//!   announced (this project's `gap` frames), silent (holes nobody announced) and
//!   undelivered (missing at the end); none of these is hidden.
//! - While a row runs, the CPU time that other processes on the machine use (other
//!   engineers' builds) is measured and reported next to its figures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde::Serialize;

use crate::proc;
use crate::systems::{self, Kind, Producer, Reader, Server, Setup};
use crate::tally::{Clock, Tally, Totals};

/// Once the producer is done, a reader that has made no progress for this long
/// stops waiting.
pub const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// The longest a row's readers wait after the producer is done.
const DRAIN_MAX: Duration = Duration::from_secs(20);
/// Connections opened at once when opening idle connections.
const CONNECT_CONCURRENCY: usize = 128;

/// One throughput row.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    /// The system.
    pub system: Kind,
    /// Which round of `--repeat` (1-based).
    pub round: usize,
    /// Stream readers.
    pub readers: usize,
    /// How long the producer ran, seconds.
    pub produce_secs: f64,
    /// Events produced.
    pub produced: u64,
    /// Producer events/s.
    pub producer_eps: f64,
    /// What the readers got.
    pub totals: Totals,
    /// Events received summed over readers, per second.
    pub delivered_eps: f64,
    /// Events lost (announced + silent + undelivered), summed over readers.
    pub lost: u64,
    /// CPU cores busy with other processes while the row ran.
    pub other_cpu: f64,
    /// CPU seconds the server used during the row.
    pub server_cpu_secs: f64,
    /// CPU seconds the harness (producer and readers) used during the row.
    pub harness_cpu_secs: f64,
    /// The 1-minute load average when the row started.
    pub load1: f64,
}

/// One latency row.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    /// The system.
    pub system: Kind,
    /// Which round of `--repeat` (1-based).
    pub round: usize,
    /// Stream readers.
    pub readers: usize,
    /// Offered load, events/s.
    pub offered_eps: f64,
    /// What the producer managed, events/s.
    pub achieved_eps: f64,
    /// Latency samples (stamped events after warm-up, summed over readers).
    pub samples: u64,
    /// Median produce → receipt, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, microseconds.
    pub p999_us: f64,
    /// Maximum, microseconds.
    pub max_us: f64,
    /// What the readers got.
    pub totals: Totals,
    /// Events lost, summed over readers.
    pub lost: u64,
    /// CPU cores busy with other processes while the row ran.
    pub other_cpu: f64,
    /// CPU seconds the server used during the row.
    pub server_cpu_secs: f64,
    /// CPU seconds the harness (producer and readers) used during the row.
    pub harness_cpu_secs: f64,
    /// The 1-minute load average when the row started.
    pub load1: f64,
}

/// Server memory with the archive full.
#[derive(Debug, Clone, Serialize)]
pub struct RetainedRow {
    /// The system.
    pub system: Kind,
    /// Events produced (twice the retention, so the store is full and evicting).
    pub produced: u64,
    /// Events retained at the end.
    pub retained: u64,
    /// Bytes of the retained events' lines (as produced, mean line × retained).
    pub line_bytes: u64,
    /// RSS before producing, bytes.
    pub rss_empty: u64,
    /// RSS with the store full, bytes.
    pub rss_full: u64,
    /// `(rss_full - rss_empty) / line_bytes`.
    pub rss_ratio: f64,
    /// The store's size by the system's own account, bytes.
    pub store_bytes: Option<u64>,
    /// `store_bytes / line_bytes`.
    pub store_ratio: Option<f64>,
}

/// Server memory per idle stream connection.
#[derive(Debug, Clone, Serialize)]
pub struct IdleRow {
    /// The system.
    pub system: Kind,
    /// Connections asked for.
    pub requested: usize,
    /// Connections open and subscribed.
    pub opened: usize,
    /// RSS before, bytes.
    pub rss_before: u64,
    /// RSS with the connections open, bytes.
    pub rss_after: u64,
    /// `(rss_after - rss_before) / opened`.
    pub bytes_per_connection: f64,
    /// Why fewer than asked were opened, if so.
    pub note: Option<String>,
}

/// What the producer thread reports.
pub(crate) struct Produced {
    pub(crate) events: u64,
    pub(crate) first: u64,
    pub(crate) last: u64,
    started_ns: u64,
    ended_ns: u64,
}

/// Shared between a row's producer and readers.
struct RowState {
    done: AtomicBool,
    last: AtomicU64,
    hard_deadline_ns: AtomicU64,
}

/// How the producer paces itself.
#[derive(Clone, Copy)]
pub(crate) enum Pace {
    /// As fast as it can, in batches.
    Flood { batch: usize },
    /// This many events/s, sent every millisecond, stamped, the mix's events taken
    /// from its `from`th on.
    Rate { eps: f64, from: u64 },
}

/// Opens `k` readers, `CONNECT_CONCURRENCY` at a time.
async fn open_readers(
    server: &dyn Server,
    k: usize,
    latency: bool,
) -> Result<Vec<Box<dyn Reader>>> {
    let futs: Vec<BoxFuture<'static, Result<Box<dyn Reader>>>> =
        (0..k).map(|_| server.reader(latency)).collect();
    let opened: Vec<Result<Box<dyn Reader>>> = futures_util::stream::iter(futs)
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    opened.into_iter().collect()
}

/// Runs one reader until the row is over.
async fn run_reader(
    mut reader: Box<dyn Reader>,
    mut tally: Tally,
    clock: Clock,
    state: Arc<RowState>,
) -> Result<Tally> {
    let mut last_progress = clock.now_ns();
    let mut seen = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(200), reader.read(&mut tally, &clock))
            .await
        {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => break,
            Ok(Err(e)) => return Err(e),
            Err(_) => {}
        }
        let now = clock.now_ns();
        let progress = tally.received + tally.announced;
        if progress != seen {
            seen = progress;
            last_progress = now;
        }
        if state.done.load(Ordering::Acquire) {
            let target = state.last.load(Ordering::Acquire);
            if tally.last().is_some_and(|l| l >= target) {
                break;
            }
            if now.saturating_sub(last_progress) > DRAIN_IDLE.as_nanos() as u64 {
                break;
            }
        }
        if now > state.hard_deadline_ns.load(Ordering::Acquire) {
            break;
        }
    }
    Ok(tally)
}

/// Runs the producer on its own thread with its own runtime.
pub(crate) fn spawn_producer(
    make: BoxFuture<'static, Result<Box<dyn Producer>>>,
    pace: Pace,
    duration: Duration,
    clock: Clock,
) -> std::thread::JoinHandle<Result<Produced>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("producer runtime")?;
        rt.block_on(async move {
            let mut p = make.await?;
            let started = Instant::now();
            let started_ns = clock.now_ns();
            let mut sent: u64 = 0;
            match pace {
                Pace::Flood { batch } => {
                    while started.elapsed() < duration {
                        p.send(sent, batch, None).await?;
                        sent += batch as u64;
                    }
                }
                Pace::Rate { eps, from } => {
                    let mut tick = tokio::time::interval(Duration::from_millis(1));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    while started.elapsed() < duration {
                        tick.tick().await;
                        let due = (eps * started.elapsed().as_secs_f64()) as u64;
                        if due > sent {
                            let n = (due - sent).min(100_000) as usize;
                            p.send(from + sent, n, Some(clock.now_ns())).await?;
                            sent += n as u64;
                        }
                    }
                }
            }
            let (first, last) = p.finish().await?;
            Ok(Produced {
                events: sent,
                first,
                last,
                started_ns,
                ended_ns: clock.now_ns(),
            })
        })
    })
}

/// What a streaming row measured.
struct StreamRun {
    produced: Produced,
    totals: Totals,
    other_cpu: f64,
    server_cpu_secs: f64,
    harness_cpu_secs: f64,
}

/// Readers, producer, drain: the body of throughput and latency rows.
async fn stream_run(
    server: &mut dyn Server,
    setup: &Setup,
    k: usize,
    pace: Pace,
    duration: Duration,
    warmup: Duration,
) -> Result<StreamRun> {
    let clock = setup.clock;
    let latency = matches!(pace, Pace::Rate { .. });
    let server_cpu0 = proc::cpu_secs(server.pid());
    let harness_cpu0 = proc::cpu_secs(std::process::id());
    let warmup_ns = clock.now_ns() + warmup.as_nanos() as u64;
    let readers = open_readers(server, k, latency)
        .await
        .with_context(|| format!("opening {k} readers"))?;
    let state = Arc::new(RowState {
        done: AtomicBool::new(false),
        last: AtomicU64::new(u64::MAX),
        hard_deadline_ns: AtomicU64::new(u64::MAX),
    });
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|r| {
            tokio::spawn(run_reader(
                r,
                Tally::new(latency, warmup_ns),
                clock,
                Arc::clone(&state),
            ))
        })
        .collect();
    let server_pid = server.pid();
    let cpu_window = duration;
    let other_cpu =
        tokio::task::spawn_blocking(move || proc::other_cpu_load(cpu_window, &[server_pid]));
    let producer = spawn_producer(server.producer(), pace, duration, clock);
    let produced = tokio::task::spawn_blocking(move || producer.join())
        .await
        .context("joining the producer")
        .and_then(|joined| joined.map_err(|_| anyhow!("the producer thread panicked")))
        .and_then(|r| r);
    let produced = match produced {
        Ok(p) => p,
        Err(e) => {
            for t in &tasks {
                t.abort();
            }
            return Err(e.context("producing"));
        }
    };
    state.last.store(produced.last, Ordering::Release);
    state.hard_deadline_ns.store(
        clock.now_ns() + DRAIN_MAX.as_nanos() as u64,
        Ordering::Release,
    );
    state.done.store(true, Ordering::Release);
    let mut totals = Totals::default();
    for t in tasks {
        let tally = t.await.context("a reader task failed")??;
        totals.add(&tally, produced.first, produced.last);
    }
    let other_cpu = other_cpu.await.unwrap_or(0.0);
    server.check_running()?;
    Ok(StreamRun {
        produced,
        totals,
        other_cpu,
        server_cpu_secs: proc::cpu_secs(server.pid()) - server_cpu0,
        harness_cpu_secs: proc::cpu_secs(std::process::id()) - harness_cpu0,
    })
}

/// Throughput with `k` readers.
pub async fn throughput(
    kind: Kind,
    setup: &Setup,
    k: usize,
    duration: Duration,
) -> Result<ThroughputRow> {
    let load1 = proc::load().0;
    let mut server = systems::start(kind, setup).await?;
    let run = stream_run(
        server.as_mut(),
        setup,
        k,
        Pace::Flood { batch: setup.batch },
        duration,
        Duration::ZERO,
    )
    .await;
    server.stop().await;
    let run = run?;
    let p = &run.produced;
    let produce_secs = (p.ended_ns - p.started_ns) as f64 / 1e9;
    let window = run.totals.last_receipt_ns.saturating_sub(p.started_ns) as f64 / 1e9;
    Ok(ThroughputRow {
        system: kind,
        round: 1,
        readers: k,
        produce_secs,
        produced: p.events,
        producer_eps: p.events as f64 / produce_secs.max(1e-9),
        delivered_eps: run.totals.received as f64 / window.max(1e-9),
        lost: run.totals.lost(),
        totals: run.totals,
        other_cpu: run.other_cpu,
        server_cpu_secs: run.server_cpu_secs,
        harness_cpu_secs: run.harness_cpu_secs,
        load1,
    })
}

/// Latency at `eps` offered events/s with `k` readers.
pub async fn latency(
    kind: Kind,
    setup: &Setup,
    k: usize,
    eps: f64,
    duration: Duration,
    warmup: Duration,
) -> Result<LatencyRow> {
    let load1 = proc::load().0;
    let mut server = systems::start(kind, setup).await?;
    let run = stream_run(
        server.as_mut(),
        setup,
        k,
        Pace::Rate { eps, from: 0 },
        duration,
        warmup,
    )
    .await;
    server.stop().await;
    let run = run?;
    let p = &run.produced;
    let secs = (p.ended_ns - p.started_ns) as f64 / 1e9;
    let us = |q: f64| {
        run.totals
            .latency
            .as_ref()
            .map(|h| h.value_at_quantile(q) as f64 / 1e3)
            .unwrap_or(f64::NAN)
    };
    Ok(LatencyRow {
        system: kind,
        round: 1,
        readers: k,
        offered_eps: eps,
        achieved_eps: p.events as f64 / secs.max(1e-9),
        samples: run.totals.latency.as_ref().map(|h| h.len()).unwrap_or(0),
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: run
            .totals
            .latency
            .as_ref()
            .map(|h| h.max() as f64 / 1e3)
            .unwrap_or(f64::NAN),
        lost: run.totals.lost(),
        totals: run.totals,
        other_cpu: run.other_cpu,
        server_cpu_secs: run.server_cpu_secs,
        harness_cpu_secs: run.harness_cpu_secs,
        load1,
    })
}

/// Server RSS with `setup.retain` events retained.
pub async fn retained(kind: Kind, setup: &Setup) -> Result<RetainedRow> {
    let mut setup = setup.clone();
    setup.retention = true;
    let mut server = systems::start(kind, &setup).await?;
    let row = retained_on(server.as_mut(), &setup).await;
    server.stop().await;
    row
}

async fn retained_on(server: &mut dyn Server, setup: &Setup) -> Result<RetainedRow> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_empty = server.rss_bytes()?;
    let produced = 2 * setup.retain as u64;
    server
        .fill_retained(produced)
        .await
        .context("producing into the store")?;
    // The RSS once it settles: at least three seconds after the last write, then
    // until two looks a quarter second apart differ by less than 0.5% (at most 9 s
    // more), so that a server's deferred work (freeing memory, compacting,
    // compressing what it retains) counts the same for every system.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.check_running()?;
    let mut rss_full = server.rss_bytes()?;
    for _ in 0..36 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = server.rss_bytes()?;
        let settled = now.abs_diff(rss_full) * 200 < rss_full;
        rss_full = now;
        if settled {
            break;
        }
    }
    let retained = server
        .retained()
        .await
        .context("counting what is retained")?;
    let store_bytes = server.store_bytes().await.unwrap_or(None);
    let line_bytes = (retained as f64 * setup.mix.mean_line_bytes()) as u64;
    Ok(RetainedRow {
        system: server.kind(),
        produced,
        retained,
        line_bytes,
        rss_empty,
        rss_full,
        rss_ratio: rss_full.saturating_sub(rss_empty) as f64 / line_bytes.max(1) as f64,
        store_bytes,
        store_ratio: store_bytes.map(|b| b as f64 / line_bytes.max(1) as f64),
    })
}

/// Server RSS per idle stream connection, with `n` of them.
pub async fn idle(kind: Kind, setup: &Setup, n: usize) -> Result<IdleRow> {
    let mut server = systems::start(kind, setup).await?;
    let mut conns = Vec::new();
    let row = idle_on(server.as_mut(), n, &mut conns).await;
    // Stop the server before closing the client sockets: the server side then
    // closes first and the harness's ports are not left in TIME_WAIT.
    server.stop().await;
    drop(conns);
    row
}

async fn idle_on(
    server: &mut dyn Server,
    n: usize,
    conns: &mut Vec<tokio::net::TcpStream>,
) -> Result<IdleRow> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_bytes()?;
    let futs: Vec<_> = (0..n).map(|_| server.idle_connection()).collect();
    let results: Vec<Result<tokio::net::TcpStream>> = futures_util::stream::iter(futs)
        .map(|f| async move {
            tokio::time::timeout(Duration::from_secs(30), f)
                .await
                .unwrap_or_else(|_| Err(anyhow!("timed out")))
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut first_error = None;
    let mut failed = 0;
    for r in results {
        match r {
            Ok(s) => conns.push(s),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let opened = conns.len();
    let mut note = first_error.map(|e| format!("{failed} of {n} failed; first: {e}"));
    if let Err(e) = server.check_idle(opened).await {
        note = Some(format!("{e:#}"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.check_running()?;
    let rss_after = server.rss_bytes()?;
    Ok(IdleRow {
        system: server.kind(),
        requested: n,
        opened,
        rss_before,
        rss_after,
        bytes_per_connection: rss_after.saturating_sub(rss_before) as f64 / opened.max(1) as f64,
        note,
    })
}
