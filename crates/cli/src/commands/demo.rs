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
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use master_events_events::Record;
use master_events_server::hooks::{Ingest, RouterIngest};
use master_events_sim::{scenario, vbucket_moves, ScenarioConfig};

use super::node::{self, ClusterOptions, Discovery, NodeOptions};

/// Arguments of `demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9898", value_name = "ADDR", value_parser = crate::commands::node::parse_listen)]
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
    /// Run this many master-events nodes on loopback as one cluster, all in this one
    /// process (static discovery, the first is master: no failover); the simulator
    /// notes events on each in turn. To see a failover, run separate processes on
    /// etcd: docs/cluster.md, "See a failover on one machine".
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub nodes: usize,
    /// A configuration file for every node of the demo, as `serve --config` reads
    /// it: its `[[sinks]]` run too (e.g. a nats sink handing the demo's events to
    /// JetStream; scripts/fleet.py runs several demo clusters into one stream).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// Runs the command; returns the process exit code.
pub fn run(args: &DemoArgs) -> Result<i32> {
    if !args.rate.is_finite() || args.rate < 0.0 {
        bail!("--rate must be a number of events per second, 0 or more");
    }
    node::init_logging();
    let rt = tokio::runtime::Runtime::new()?;
    if args.nodes == 0 || args.nodes > 16 {
        bail!("--nodes must be between 1 and 16");
    }
    rt.block_on(async {
        let running = start_nodes(args).await?;
        let url = format!("http://{}", running[0].addr);
        let ingests: Vec<Arc<dyn Ingest>> = running
            .iter()
            .map(|r| match &r.cluster {
                Some(c) => Arc::new(c.clone()) as Arc<dyn Ingest>,
                None => Arc::new(RouterIngest(r.router.clone())) as Arc<dyn Ingest>,
            })
            .collect();
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
            for (i, r) in running.iter().enumerate().skip(1) {
                writeln!(
                    out,
                    "node {i} listening on http://{} (a follower: same stream)",
                    r.addr
                )?;
            }
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
                emit_scenario(&ingests, &cfg, args.rate).await?;
                tracing::info!(
                    seed,
                    last_seq = running[0].router.last_seq(),
                    "scenario done"
                );
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
        for r in running.into_iter().rev() {
            r.stop().await;
        }
        Ok(0)
    })
}

/// Starts one node, or `--nodes` nodes on loopback as one static cluster.
async fn start_nodes(args: &DemoArgs) -> Result<Vec<node::RunningNode>> {
    if args.nodes == 1 {
        let one = node::start(NodeOptions {
            config: args.config.clone(),
            listen: Some(args.listen),
            archive_size: Some(args.archive_size),
            node: Some(master_events_sim::node_name(0)),
            ..NodeOptions::default()
        })
        .await?;
        return Ok(vec![one]);
    }
    let names: Vec<String> = (0..args.nodes).map(master_events_sim::node_name).collect();
    let mut addrs = vec![args.listen];
    for _ in 1..args.nodes {
        addrs.push(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    // Peers need every URL up front: pick the free ports first.
    for addr in addrs.iter_mut() {
        if addr.port() == 0 {
            let probe = std::net::TcpListener::bind(*addr)?;
            *addr = probe.local_addr()?;
        }
    }
    let peers: std::collections::BTreeMap<String, String> = names
        .iter()
        .zip(&addrs)
        .map(|(n, a)| (n.clone(), format!("http://{a}")))
        .collect();
    let mut running = Vec::new();
    for (name, addr) in names.iter().zip(&addrs) {
        running.push(
            node::start(NodeOptions {
                config: args.config.clone(),
                listen: Some(*addr),
                archive_size: Some(args.archive_size),
                node: Some(name.clone()),
                cluster: ClusterOptions {
                    discovery: Discovery::Static,
                    master: Some(names[0].clone()),
                    peers: peers.clone(),
                    ..ClusterOptions::default()
                },
                ..NodeOptions::default()
            })
            .await?,
        );
    }
    Ok(running)
}

/// Publishes the scenario's events at `rate` per second (0 = unpaced), in batches
/// through the nodes' ingest path in turn (all or none, back-pressured: each batch is
/// sequenced before the next goes, so the story keeps its order across nodes).
async fn emit_scenario(
    ingests: &[Arc<dyn Ingest>],
    config: &ScenarioConfig,
    rate: f64,
) -> Result<()> {
    let started = Instant::now();
    let per_second_batches = if ingests.len() > 1 { 10.0 } else { 100.0 };
    let batch_size = if rate <= 0.0 {
        if ingests.len() > 1 {
            256
        } else {
            1024
        }
    } else {
        (rate / per_second_batches).clamp(1.0, 1024.0) as usize
    };
    let mut events = scenario(config).peekable();
    let mut sent: u64 = 0;
    let mut turn = 0;
    while events.peek().is_some() {
        let batch: Vec<Record> = events.by_ref().take(batch_size).map(Record::new).collect();
        sent += batch.len() as u64;
        ingests[turn % ingests.len()]
            .ingest(batch)
            .await
            .map_err(|e| anyhow::anyhow!("the demo's events were refused: {e}"))?;
        turn += 1;
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    Ok(())
}
