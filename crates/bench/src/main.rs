//! `master-events-bench`: master-events side by side with Redis Streams and NATS.
//!
//! Owns: the command line, the order of the run (throughput, latency, memory; for
//! each, every chosen system), and writing the results (markdown and JSON) after
//! every row, so a run cut short still leaves what it measured; a failed row is
//! recorded, the run goes on, and the exit status says it was incomplete.
//!
//! Promises: the harness starts every server itself on free loopback ports in a
//! temporary directory and stops it; all traffic goes to 127.0.0.1; the whole run
//! is bounded by `--time-limit` (a watchdog kills every server and exits); a full
//! run takes about 3 minutes, `--quick` under one.
//!
//! ```text
//! master-events-bench [--quick] [--scenarios throughput,latency,memory]
//!                     [--systems master-events,redis,nats] [--readers 1,10,100]
//! ```

mod h2raw;
mod proc;
mod report;
mod scenarios;
mod systems;
mod tally;
mod watchers;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

use report::{Results, RowError, Settings};
use systems::{IngestMode, Kind, Setup};
use tally::Clock;
use workload::Mix;

/// A scenario of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// One producer, K readers, as fast as it goes.
    Throughput,
    /// A fixed offered load, produce → receipt latency.
    Latency,
    /// Server RSS with the store full, and per idle stream connection.
    Memory,
    /// Very many streams open at once (`--watchers`, default 100,000) and a slow
    /// producer: every stream must get every event (each system in `--systems`;
    /// not run unless asked for).
    Watchers,
}

/// Benchmarks master-events side by side with Redis Streams and NATS, on loopback.
///
/// Starts each server itself (this project's `master-events serve`, `redis-server`,
/// `nats-server`) on a free 127.0.0.1 port in a temporary directory, drives it with
/// the same realistic mix of catalog events, and writes a markdown table and JSON.
/// A row that fails is reported and listed under `errors` in the JSON; the other
/// rows still run, and the exit status is then 1.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// A short smoke run (about a minute): readers 1 and 10, 1 s rows, 20,000 events
    /// retained, 1,000 idle connections.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::Throughput, Scenario::Latency, Scenario::Memory])]
    scenarios: Vec<Scenario>,
    /// Systems to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Kind::ALL)]
    systems: Vec<Kind>,
    /// Reader counts (default 1,10,100; quick: 1,10).
    #[arg(long, value_delimiter = ',')]
    readers: Option<Vec<usize>>,
    /// Producer seconds per throughput row (default 8; quick: 1).
    #[arg(long)]
    duration: Option<f64>,
    /// Producer seconds per latency row (default 8; quick: 1.5).
    #[arg(long)]
    latency_duration: Option<f64>,
    /// Offered load of the latency rows, events/s.
    #[arg(long, default_value_t = 10_000.0)]
    latency_rate: f64,
    /// Events retained: this project's archive size, Redis's MAXLEN ~, JetStream's
    /// max_messages (default 100000; quick: 20000).
    #[arg(long)]
    retain: Option<usize>,
    /// Idle stream connections for the per-connection memory row (default 10000;
    /// quick: 1000).
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Streams of the watchers scenario, from 127.0.0.2, 127.0.0.3, ... (10,000 per
    /// address); the open-file limit is raised for them, which needs root past the
    /// hard limit (default 100000; quick: 2000).
    #[arg(long)]
    watchers: Option<usize>,
    /// Events/s the watchers scenario's producer offers: every one goes to every
    /// stream, so 100,000 streams at 10 events/s is a million deliveries a second.
    #[arg(long, default_value_t = 10.0)]
    watchers_rate: f64,
    /// Streams of the watchers scenario on each connection: 1 (default) gives each
    /// stream a connection of its own; more share them, as HTTP/2 streams (h2c) for
    /// master-events (at most 200, the server's limit a connection) and as that
    /// many `SUB`s a connection for NATS; Redis cannot (one blocked `XREAD` a
    /// connection) and is skipped. This is how 100,000 streams fit a process
    /// limited to 20,000 descriptors.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=200))]
    watchers_per_connection: u16,
    /// Producer seconds of the watchers scenario (default 10; quick: 2).
    #[arg(long)]
    watchers_duration: Option<f64>,
    /// Events per ingest request (this project) and per XADD pipeline batch (Redis).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Ingest requests or feeds (this project) or XADD batches (Redis) in flight at
    /// once.
    #[arg(long, default_value_t = 2)]
    window: usize,
    /// How this project's producer sends: `requests` (a `POST /diag/masterEvents`
    /// per batch, `--window` of them in flight, each answered) or `feed` (`--window`
    /// `POST /diag/masterEvents?stream=1` requests whose bodies take the batches in
    /// turn, each answered at the end).
    #[arg(long, value_enum, default_value_t = IngestMode::Requests)]
    master_events_ingest: IngestMode,
    /// Measure every throughput and latency row this many times, the systems taking
    /// turns within each round. The report then leads with each system's median row
    /// and the range over the rounds (the figures of one row move a lot on a shared
    /// VM); every round's row is listed below it and kept in the JSON. Memory rows
    /// run once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// The markdown report.
    #[arg(long, default_value = "target/bench/results.md")]
    out_md: PathBuf,
    /// The JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    out_json: PathBuf,
    /// The `master-events` binary (default: next to this one).
    #[arg(long)]
    master_events_bin: Option<PathBuf>,
    /// Run `master-events` under this command (e.g. "valgrind --tool=callgrind" or
    /// "perf stat -o FILE"), split on spaces. The command and the server are stopped
    /// together with SIGINT, as Ctrl-C would, so that a profiler writes its data
    /// (SIGKILL after 120 s).
    #[arg(long)]
    wrap_master_events: Option<String>,
    /// An extra argument for `master-events serve`, after the harness's own (repeat
    /// for several), e.g. `--serve-arg=--workers --serve-arg=1` or
    /// `--serve-arg=--workers=1`.
    #[arg(long = "serve-arg", value_name = "ARG", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// `redis-server` (default: from PATH).
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// `nats-server` (default: from PATH).
    #[arg(long, default_value = "nats-server")]
    nats_server: PathBuf,
    /// The whole run stops after this many seconds, whatever it is doing.
    #[arg(long, default_value_t = 900)]
    time_limit: u64,
}

/// Finds `program` on PATH unless it is a path already.
fn which(program: &Path) -> Result<PathBuf> {
    if program.components().count() > 1 {
        return Ok(program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin")]) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{} not found on PATH (scripts/bench.sh installs it)",
        program.display()
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    proc::Watchdog::arm(Duration::from_secs(args.time_limit));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    // The servers lead process groups of their own (see `proc`), so Ctrl-C reaches
    // only the harness: it stops them before it goes.
    rt.spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("master-events-bench: interrupted; stopping the servers");
            proc::kill_children();
            std::process::exit(130);
        }
    });
    let result = rt.block_on(run(args));
    proc::kill_children();
    result
}

async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let quick = args.quick;
    let readers =
        args.readers
            .clone()
            .unwrap_or_else(|| if quick { vec![1, 10] } else { vec![1, 10, 100] });
    let throughput_secs = args.duration.unwrap_or(if quick { 1.0 } else { 8.0 });
    let latency_secs = args
        .latency_duration
        .unwrap_or(if quick { 1.5 } else { 8.0 });
    let warmup_secs = if quick { 0.2 } else { 0.5 };
    let retain = args.retain.unwrap_or(if quick { 20_000 } else { 100_000 });
    let idle_connections = args
        .idle_connections
        .unwrap_or(if quick { 1_000 } else { 10_000 });
    let watchers = args.watchers.unwrap_or(if quick { 2_000 } else { 100_000 });
    let watchers_secs = args
        .watchers_duration
        .unwrap_or(if quick { 2.0 } else { 10.0 });
    if args.batch == 0 || retain == 0 || args.latency_rate <= 0.0 || args.watchers_rate <= 0.0 {
        bail!("--batch, --retain, --latency-rate and --watchers-rate must be positive");
    }

    let want_watchers = args.scenarios.contains(&Scenario::Watchers);
    // Every stream is a descriptor in the harness and one in the server, which
    // inherits the limit; room is left for everything else.
    let per_connection = usize::from(args.watchers_per_connection);
    let nofile_wanted = if want_watchers {
        watchers.div_ceil(per_connection) as u64 + 500
    } else {
        0
    };
    let nofile = proc::raise_nofile(nofile_wanted).unwrap_or(0);
    if want_watchers && nofile < nofile_wanted {
        bail!(
            "--watchers {watchers} needs an open-file limit of {nofile_wanted}, and it could \
             only be raised to {nofile} (run as root, or raise the hard limit with ulimit -Hn)"
        );
    }
    let master_events_bin = match &args.master_events_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("master-events"),
    };
    let needs = |k: Kind| args.systems.contains(&k);
    if needs(Kind::MasterEvents) && !master_events_bin.is_file() {
        bail!(
            "{} not found: build it (cargo build --release -p master-events-cli) or pass --master-events-bin",
            master_events_bin.display()
        );
    }
    // Servers run in the temporary directory: a relative path must not be read
    // from there.
    let master_events_bin = std::fs::canonicalize(&master_events_bin).unwrap_or(master_events_bin);
    let redis_bin = if needs(Kind::Redis) {
        which(&args.redis_server)?
    } else {
        args.redis_server.clone()
    };
    let nats_bin = if needs(Kind::Nats) {
        which(&args.nats_server)?
    } else {
        args.nats_server.clone()
    };
    let dir = tempfile::Builder::new()
        .prefix("master-events-bench")
        .tempdir()
        .context("creating the temporary directory")?;
    let mix = Arc::new(Mix::build(args.batch)?);
    let setup = Setup {
        master_events_bin,
        master_events_wrap: args
            .wrap_master_events
            .as_deref()
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        master_events_args: args.serve_args.clone(),
        redis_bin: redis_bin.clone(),
        nats_bin: nats_bin.clone(),
        dir: dir.path().to_path_buf(),
        retain,
        batch: args.batch,
        window: args.window.max(1),
        ingest: args.master_events_ingest,
        mix: Arc::clone(&mix),
        clock: Clock::new(),
        retention: false,
        max_connections: if want_watchers {
            watchers.div_ceil(per_connection) + 100
        } else {
            0
        },
        max_streams: if want_watchers { watchers + 100 } else { 0 },
    };
    let mut results = Results {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix,
        elapsed_secs: 0.0,
        machine: proc::Machine::describe(&redis_bin, &nats_bin),
        loadavg_start: proc::load().1,
        loadavg_end: String::new(),
        mix: mix.summary(),
        settings: Settings {
            quick,
            throughput_secs,
            latency_secs,
            warmup_secs,
            readers: readers.clone(),
            latency_eps: args.latency_rate,
            retain,
            idle_connections,
            batch: args.batch,
            window: setup.window,
            master_events_ingest: setup.ingest,
            repeat: args.repeat as usize,
            nofile,
        },
        throughput: Vec::new(),
        latency: Vec::new(),
        retained: Vec::new(),
        idle: Vec::new(),
        watchers: Vec::new(),
        errors: Vec::new(),
    };
    eprintln!(
        "master-events-bench: {} events in the mix ({:.0} bytes a line), temp dir {}, load {}",
        results.mix.events,
        results.mix.mean_line_bytes,
        dir.path().display(),
        results.loadavg_start
    );

    let out = |results: &mut Results| -> Result<()> {
        results.elapsed_secs = started.elapsed().as_secs_f64();
        results.loadavg_end = proc::load().1;
        write_results(results, &args.out_md, &args.out_json)
    };
    let fail =
        |results: &mut Results, scenario: &str, kind: Kind, k: Option<usize>, e: anyhow::Error| {
            eprintln!("  FAILED: {e:#}");
            results.errors.push(RowError {
                scenario: scenario.to_owned(),
                system: kind,
                readers: k,
                error: format!("{e:#}"),
            });
        };
    let pause = Duration::from_millis(500);
    let repeat = args.repeat as usize;
    // (K, round, system): each K's rounds together, the systems taking turns.
    let mut plan: Vec<(usize, usize, Kind)> = Vec::new();
    for &k in &readers {
        for round in 1..=repeat {
            plan.extend(args.systems.iter().map(|&kind| (k, round, kind)));
        }
    }
    let of_rounds = |round: usize| {
        if repeat > 1 {
            format!(" (round {round} of {repeat})")
        } else {
            String::new()
        }
    };

    if args.scenarios.contains(&Scenario::Throughput) {
        for &(k, round, kind) in &plan {
            eprintln!(
                "throughput: {} with {k} readers{}",
                kind.name(),
                of_rounds(round)
            );
            match scenarios::throughput(kind, &setup, k, Duration::from_secs_f64(throughput_secs))
                .await
            {
                Ok(mut row) => {
                    eprintln!(
                        "  producer {:.0} ev/s, delivered {:.0} ev/s, lost {}, other CPU {:.2}",
                        row.producer_eps, row.delivered_eps, row.lost, row.other_cpu
                    );
                    row.round = round;
                    results.throughput.push(row);
                }
                Err(e) => fail(&mut results, "throughput", kind, Some(k), e),
            }
            out(&mut results)?;
            tokio::time::sleep(pause).await;
        }
    }
    if args.scenarios.contains(&Scenario::Latency) {
        for &(k, round, kind) in &plan {
            eprintln!(
                "latency: {} with {k} readers at {} ev/s{}",
                kind.name(),
                args.latency_rate,
                of_rounds(round)
            );
            match scenarios::latency(
                kind,
                &setup,
                k,
                args.latency_rate,
                Duration::from_secs_f64(latency_secs),
                Duration::from_secs_f64(warmup_secs),
            )
            .await
            {
                Ok(mut row) => {
                    eprintln!(
                        "  p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs, lost {}, other CPU {:.2}",
                        row.p50_us, row.p99_us, row.max_us, row.lost, row.other_cpu
                    );
                    row.round = round;
                    results.latency.push(row);
                }
                Err(e) => fail(&mut results, "latency", kind, Some(k), e),
            }
            out(&mut results)?;
            tokio::time::sleep(pause).await;
        }
    }
    if args.scenarios.contains(&Scenario::Memory) {
        for &kind in &args.systems {
            eprintln!("memory: {} with {retain} events retained", kind.name());
            match scenarios::retained(kind, &setup).await {
                Ok(row) => {
                    eprintln!(
                        "  retained {}, RSS {} → {} bytes ({:.2}× line bytes)",
                        row.retained, row.rss_empty, row.rss_full, row.rss_ratio
                    );
                    results.retained.push(row);
                }
                Err(e) => fail(&mut results, "memory-retained", kind, None, e),
            }
            out(&mut results)?;
            tokio::time::sleep(pause).await;
        }
        for &kind in &args.systems {
            eprintln!(
                "memory: {} with {idle_connections} idle stream connections",
                kind.name()
            );
            match scenarios::idle(kind, &setup, idle_connections).await {
                Ok(row) => {
                    eprintln!(
                        "  {} open, {:.0} bytes per connection{}",
                        row.opened,
                        row.bytes_per_connection,
                        row.note
                            .as_deref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    );
                    results.idle.push(row);
                }
                Err(e) => fail(&mut results, "memory-idle", kind, None, e),
            }
            out(&mut results)?;
            tokio::time::sleep(pause).await;
        }
    }
    if want_watchers {
        for &kind in &args.systems {
            if kind == Kind::Redis && per_connection > 1 {
                eprintln!(
                    "watchers: redis skipped: a Redis connection carries one blocked XREAD, \
                     so its streams cannot share connections (--watchers-per-connection {per_connection})"
                );
                continue;
            }
            eprintln!(
                "watchers: {} with {watchers} streams ({per_connection} a connection) at {} ev/s",
                kind.name(),
                args.watchers_rate
            );
            match watchers::watchers(
                kind,
                &setup,
                watchers,
                per_connection,
                args.watchers_rate,
                Duration::from_secs_f64(watchers_secs),
            )
            .await
            {
                Ok(row) => {
                    eprintln!(
                        "  {} of {} streams got every one of {} events; p99 {:.1} ms, max {:.1} ms; \
                         {:.0} bytes per idle stream{}",
                        row.complete,
                        row.streams,
                        row.produced,
                        row.p99_us / 1e3,
                        row.max_us / 1e3,
                        row.bytes_per_stream,
                        row.first_error
                            .as_deref()
                            .map(|e| format!("; first fault: {e}"))
                            .unwrap_or_default()
                    );
                    let complete = row.complete == row.streams;
                    results.watchers.push(row);
                    if !complete {
                        let e = anyhow::anyhow!("not every stream got every event");
                        fail(&mut results, "watchers", kind, None, e);
                    }
                }
                Err(e) => fail(&mut results, "watchers", kind, None, e),
            }
            out(&mut results)?;
        }
    }
    out(&mut results)?;
    eprintln!(
        "master-events-bench: done in {:.0} s; wrote {} and {}",
        started.elapsed().as_secs_f64(),
        args.out_md.display(),
        args.out_json.display()
    );
    if !results.errors.is_empty() {
        // The other rows were measured and written; the exit status says the run
        // is incomplete.
        bail!(
            "{} row(s) failed (listed under errors in {})",
            results.errors.len(),
            args.out_json.display()
        );
    }
    Ok(())
}

fn write_results(results: &Results, md: &Path, json: &Path) -> Result<()> {
    for path in [md, json] {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
    }
    std::fs::write(md, results.markdown()).with_context(|| format!("writing {}", md.display()))?;
    let text = serde_json::to_string_pretty(results).context("encoding the results")?;
    std::fs::write(json, text).with_context(|| format!("writing {}", json.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_args_are_passed_in_order_hyphens_and_all() {
        let args = Args::try_parse_from([
            "master-events-bench",
            "--serve-arg=--workers",
            "--serve-arg",
            "1",
            "--serve-arg",
            "--insecure-no-auth",
        ])
        .expect("parses");
        assert_eq!(args.serve_args, ["--workers", "1", "--insecure-no-auth"]);
        let none = Args::try_parse_from(["master-events-bench"]).expect("parses");
        assert!(none.serve_args.is_empty());
    }
}
