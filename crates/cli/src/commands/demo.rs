//! `master-events demo`: the first thing to run. Starts a node on loopback and a
//! simulated cluster that goes through a realistic sequence of operations — a
//! master elected, buckets created, a node added and every vbucket moved through
//! its phases (fast-forward map, move start, DCP streams, backfill, seqno wait,
//! takeover, move done, map update), the rebalance's end, then a failover — and
//! prints how to watch it.
//!
//! Promises: events go through the same ingest path as any client's (all or none,
//! back-pressured, never dropped); the first line on standard output is
//! `listening on http://ADDR`, as for `serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use master_events_events::Record;
use master_events_sim::{scenario, vbucket_moves, ScenarioConfig};

use super::node::{self, NodeOptions};

/// Arguments of `demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9898", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Events per second the simulated cluster emits (0 = as fast as possible).
    #[arg(long, default_value_t = 500.0, value_name = "N")]
    pub rate: f64,
    /// vbuckets per bucket.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub vbuckets: u16,
    /// Data nodes in the cluster before one is added.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub cluster_nodes: usize,
    /// Seed of the simulation (the same seed gives the same events).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run the scenario again (with the next seed) when it ends, forever.
    #[arg(long = "loop")]
    pub repeat: bool,
    /// How many events the archive retains.
    #[arg(long, default_value_t = 81_920, value_name = "N")]
    pub archive_size: usize,
    /// Exit once the scenario has been emitted (instead of serving until Ctrl-C).
    #[arg(long)]
    pub exit_when_done: bool,
}

/// Runs the command; returns the process exit code.
pub fn run(args: &DemoArgs) -> Result<i32> {
    if !args.rate.is_finite() || args.rate < 0.0 {
        bail!("--rate must be a number of events per second, 0 or more");
    }
    node::init_logging();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let running = node::start(NodeOptions {
            listen: Some(args.listen),
            archive_size: Some(args.archive_size),
            node: Some(master_events_sim::node_name(0)),
            ..NodeOptions::default()
        })
        .await?;
        let url = format!("http://{}", running.addr);
        let config = ScenarioConfig {
            nodes: args.cluster_nodes,
            vbuckets: args.vbuckets,
            seed: args.seed,
            ..ScenarioConfig::default()
        };
        config.validate()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {url}")?;
            writeln!(out)?;
            writeln!(
                out,
                "A simulated {}-node cluster is rebalancing {} vbuckets ({} moves), {}.",
                args.cluster_nodes + 1,
                args.vbuckets,
                vbucket_moves(&config),
                if args.rate > 0.0 {
                    format!("{} events/s", args.rate)
                } else {
                    "at full speed".into()
                }
            )?;
            writeln!(out, "Watch it:")?;
            writeln!(out, "  curl -sN {url}/diag/masterEvents")?;
            writeln!(out, "  master-events tail {url} --pretty")?;
            writeln!(
                out,
                "  master-events tail {url} --type rebalanceStart,rebalanceEnd,failover"
            )?;
            writeln!(
                out,
                "  curl -s '{url}/diag/masterEvents?o=1' | master-events validate -"
            )?;
            writeln!(out, "  curl -s {url}/metrics")?;
            writeln!(out, "Ctrl-C stops it.")?;
            out.flush()?;
        }
        let emit = async {
            let mut seed = args.seed;
            loop {
                let cfg = ScenarioConfig {
                    seed,
                    ..config.clone()
                };
                emit_scenario(&running.router, &cfg, args.rate).await?;
                tracing::info!(seed, last_seq = running.router.last_seq(), "scenario done");
                if !args.repeat {
                    break;
                }
                seed += 1;
            }
            anyhow::Ok(())
        };
        tokio::select! {
            result = emit => {
                result?;
                if !args.exit_when_done {
                    node::wait_for_signal().await;
                }
            }
            _ = node::wait_for_signal() => {}
        }
        running.stop().await;
        Ok(0)
    })
}

/// Publishes the scenario's events at `rate` per second (0 = unpaced), in small
/// batches through the router's back-pressured ingest path.
async fn emit_scenario(
    router: &master_events_router::Router,
    config: &ScenarioConfig,
    rate: f64,
) -> Result<()> {
    let started = Instant::now();
    let batch_size = if rate <= 0.0 {
        1024
    } else {
        (rate / 100.0).clamp(1.0, 1024.0) as usize
    };
    let mut events = scenario(config).peekable();
    let mut sent: u64 = 0;
    while events.peek().is_some() {
        let batch: Vec<Record> = events.by_ref().take(batch_size).map(Record::new).collect();
        sent += batch.len() as u64;
        router.publish_batch(batch).await?;
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    Ok(())
}
