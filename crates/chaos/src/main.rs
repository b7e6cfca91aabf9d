//! `master-events-chaos`: runs the fault-injection scenarios against real etcd and
//! `master-events serve` processes, prints a table and the failed invariants, and
//! writes a JSON report. Exit 0 when every scenario passed, 1 when one failed, 2
//! when the suite itself could not run, 3 when the time limit was reached, 130 on
//! Ctrl-C. Every child is killed on each of these paths.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use master_events_chaos::load::WriterConfig;
use master_events_chaos::proc::{kill_all, kill_children_on_panic};
use master_events_chaos::report::Report;
use master_events_chaos::scenario::{self, Config, SCENARIOS};

/// Fault injection for a master-events cluster (etcd and three nodes on loopback).
#[derive(Parser, Debug)]
#[command(name = "master-events-chaos", version, about)]
struct Args {
    /// The scenario to run, or `all`: master-kill, master-stop, double-fault,
    /// etcd-stop, etcd-kill, follower-kill, rolling-restart, static-master-loss.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// The seed of the fault schedules and the load [default: random, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// The master-events binary, built with `--features etcd`.
    #[arg(long, default_value = "target/debug/master-events")]
    bin: PathBuf,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Stop everything and exit 3 after this many seconds.
    #[arg(long, default_value_t = 1200.0)]
    time_limit: f64,
    /// Write the JSON report here.
    #[arg(long)]
    out_json: Option<PathBuf>,
    /// The nodes' etcd lease TTL, seconds.
    #[arg(long, default_value_t = 2.0)]
    lease_ttl: f64,
    /// Events per second over all writers.
    #[arg(long, default_value_t = 150.0)]
    rate: f64,
    /// Writers running at once.
    #[arg(long, default_value_t = 6)]
    writers: usize,
    /// Events in the double fault's burst.
    #[arg(long, default_value_t = 30_000)]
    burst: usize,
    /// Keep the processes' logs under this directory (DIR/SCENARIO-SEED).
    #[arg(long)]
    keep_logs: Option<PathBuf>,
}

fn main() {
    let code = match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("master-events-chaos: {e:#}");
            2
        }
    };
    kill_all();
    std::process::exit(code);
}

fn real_main() -> Result<i32> {
    let args = Args::parse();
    if !(args.time_limit.is_finite() && args.time_limit > 0.0) {
        bail!("--time-limit must be a positive number of seconds");
    }
    if !(args.lease_ttl.is_finite() && args.lease_ttl > 0.0 && args.lease_ttl <= 60.0) {
        bail!("--lease-ttl must be between 0 and 60 seconds");
    }
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 100_000.0) {
        bail!("--rate must be between 0 and 100000 events per second");
    }
    if args.writers == 0 || args.writers > 64 {
        bail!("--writers must be between 1 and 64");
    }
    let scenarios: Vec<scenario::Scenario> = if args.scenario == "all" {
        SCENARIOS.to_vec()
    } else {
        args.scenario
            .split(',')
            .map(|name| {
                scenario::find(name.trim()).with_context(|| {
                    let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                    format!("no scenario {name:?}; there are: all, {}", names.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    if !args.bin.is_file() {
        bail!(
            "{} is not a file; build it with `cargo build -p master-events-cli --features etcd`",
            args.bin.display()
        );
    }
    let seed = args.seed.unwrap_or_else(rand::random::<u64>);
    let command = format!(
        "master-events-chaos --scenario {} --seed {seed} --lease-ttl {} --rate {} --writers {} --burst {}",
        args.scenario, args.lease_ttl, args.rate, args.writers, args.burst
    );
    println!("seed {seed} (replay: {command})");

    kill_children_on_panic();
    let limit = Duration::from_secs_f64(args.time_limit);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("master-events-chaos: the time limit ({limit:?}) is up; stopping (seed {seed})");
        kill_all();
        std::process::exit(3);
    });

    let config = Config {
        bin: args.bin.clone(),
        etcd: args.etcd.clone(),
        lease_ttl: args.lease_ttl,
        writers: WriterConfig {
            writers: args.writers,
            batch: 5,
            rate: args.rate,
        },
        burst: args.burst,
        keep_logs: args.keep_logs.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("the async runtime")?;
    // The scenarios run on this thread (block_on), so the children they start
    // share its life (their parent-death signal follows the forking thread).
    let outcomes = runtime.block_on(async {
        let all = async {
            let mut outcomes = Vec::new();
            for s in &scenarios {
                eprintln!("== {} ({})", s.name, s.fault);
                let outcome = scenario::run(*s, seed, &config).await?;
                eprintln!(
                    "== {}: {} ({:.0} s)",
                    s.name,
                    if outcome.passed { "pass" } else { "FAIL" },
                    outcome.secs
                );
                outcomes.push(outcome);
            }
            Ok::<_, anyhow::Error>(outcomes)
        };
        tokio::select! {
            r = all => r.map(Some),
            _ = tokio::signal::ctrl_c() => Ok(None),
        }
    });
    let Some(outcomes) = outcomes? else {
        kill_all();
        eprintln!("master-events-chaos: interrupted (seed {seed})");
        return Ok(130);
    };
    runtime.shutdown_timeout(Duration::from_secs(1));

    let report = Report {
        seed,
        command,
        bin: args.bin.display().to_string(),
        lease_ttl: args.lease_ttl,
        rate: args.rate,
        scenarios: outcomes,
    };
    println!("{}", report.table());
    if let Some(path) = &args.out_json {
        let json = serde_json::to_string_pretty(&report).context("the JSON report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        println!("report: {}", path.display());
    }
    if report.passed() {
        println!("every scenario passed (seed {seed})");
        Ok(0)
    } else {
        print!("{}", report.failures());
        println!("invariants failed (seed {seed})");
        Ok(1)
    }
}
