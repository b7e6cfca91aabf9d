//! The scenarios: a cluster, the load, one fault schedule, quiescence and the
//! checker.
//!
//! Owns: the list of scenarios ([`SCENARIOS`]), each one's fault schedule (drawn
//! from its seed), and one run of a scenario ([`run`]): start etcd and three nodes,
//! start the writers, the consumer (on a non-master node) and the monitor, inject
//! the faults, then resume or restart everything, stop the writers, wait until the
//! nodes agree (or a deadline passes) and the consumer has caught up, and check.
//!
//! Promises: a run is bounded in time (every wait has a deadline) and in events
//! (the writers' rate times the run's length, plus one burst); a step of a fault
//! schedule that fails (no new master in time, a node that does not come back) is
//! a failure of the scenario, reported with the others, and the run still
//! quiesces and checks; the processes are killed when the run ends, however it
//! ends (they are dropped).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::check::{check, Inputs, Verdict};
use crate::cluster::{Cluster, Discovery, Etcd, State, NODES};
use crate::load::{
    now, post, spawn_consumer, spawn_monitor, spawn_writers, Consumed, WriterConfig,
};
use crate::proc::Signal;

/// A scenario's name and the fault it injects.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// The fault, in a phrase.
    pub fault: &'static str,
}

/// Every scenario, in the order `all` runs them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "master-kill",
        fault: "master SIGKILL ×3 (restarted as a follower)",
    },
    Scenario {
        name: "master-stop",
        fault: "master SIGSTOP past the lease ×2",
    },
    Scenario {
        name: "double-fault",
        fault: "followers SIGSTOP, 30,000-event burst to the master, master SIGSTOP (once it has sequenced the burst) for 6 s, followers resumed after 0.3 s",
    },
    Scenario {
        name: "etcd-stop",
        fault: "etcd SIGSTOP past the lease",
    },
    Scenario {
        name: "etcd-kill",
        fault: "etcd SIGKILL, restarted 3 s later",
    },
    Scenario {
        name: "follower-kill",
        fault: "follower SIGKILL with queued events (master frozen 0.8 s)",
    },
    Scenario {
        name: "rolling-restart",
        fault: "rolling restart (SIGTERM, restart, catch up; each node)",
    },
    Scenario {
        name: "static-master-loss",
        fault: "static discovery: master SIGKILL, restarted 4 s later",
    },
];

/// Finds a scenario by name.
pub fn find(name: &str) -> Option<Scenario> {
    SCENARIOS.iter().copied().find(|s| s.name == name)
}

/// The seed of scenario `name` in a run with seed `seed` (the same whether it runs
/// alone or with `all`, so a failure replays with `--scenario NAME --seed SEED`).
pub fn scenario_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the run's seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `master-events` binary (built with the `etcd` feature).
    pub bin: PathBuf,
    /// The `etcd` binary.
    pub etcd: PathBuf,
    /// The lease TTL given to the nodes, seconds.
    pub lease_ttl: f64,
    /// The writers' load.
    pub writers: WriterConfig,
    /// Events in the double fault's burst.
    pub burst: usize,
    /// Where to keep the processes' logs (a temp dir, removed, when `None`).
    pub keep_logs: Option<PathBuf>,
}

/// One scenario's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The scenario.
    pub scenario: String,
    /// Its fault.
    pub fault: String,
    /// The run's seed (replay with `--scenario NAME --seed SEED`).
    pub seed: u64,
    /// Whether every invariant held and every fault step went as planned.
    pub passed: bool,
    /// Fault steps that did not go as planned (no master in time, ...).
    pub step_errors: Vec<String>,
    /// The fault schedule as it ran: `(seconds after the load began, what)`.
    pub schedule: Vec<(f64, String)>,
    /// The checker's figures and failed invariants.
    pub verdict: Verdict,
    /// How long the scenario took, seconds.
    pub secs: f64,
}

/// What the schedule shares with the run while faults happen.
struct Run<'a> {
    config: &'a Config,
    http: reqwest::Client,
    etcd: Option<Etcd>,
    cluster: Cluster,
    rng: StdRng,
    kills: Vec<(usize, f64)>,
    schedule: Vec<(f64, String)>,
    errors: Vec<String>,
    started: f64,
    bursts: Vec<tokio::task::JoinHandle<crate::load::Write>>,
}

impl Run<'_> {
    fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        let at = now() - self.started;
        eprintln!("  {at:7.2} s  {what}");
        self.schedule.push((at, what));
    }

    async fn pause(&mut self, lo: f64, hi: f64) {
        let secs = if hi > lo {
            self.rng.random_range(lo..hi)
        } else {
            lo
        };
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }

    async fn master(&mut self, not: Option<usize>) -> Result<usize> {
        self.cluster
            .wait_master(&self.http, not, Duration::from_secs(20))
            .await
    }

    fn kill(&mut self, i: usize) {
        self.cluster.signal(i, Signal::Kill);
        self.kills.push((i, now()));
        let name = self.cluster.names[i].clone();
        self.note(format!("SIGKILL {name}"));
    }

    fn signal(&mut self, i: usize, signal: Signal) {
        self.cluster.signal(i, signal);
        let name = self.cluster.names[i].clone();
        self.note(format!("{signal:?} {name}"));
    }

    async fn restart(&mut self, i: usize) -> Result<()> {
        let name = self.cluster.names[i].clone();
        self.note(format!("restart {name}"));
        self.cluster.restart(i, &self.http).await
    }

    /// Runs `step`; an error is recorded, not returned.
    fn record(&mut self, step: Result<()>) {
        if let Err(e) = step {
            let msg = format!("{e:#}");
            self.note(format!("step failed: {msg}"));
            self.errors.push(msg);
        }
    }

    fn lease(&self) -> f64 {
        self.config.lease_ttl
    }
}

/// Runs scenario `scenario` in a run with seed `run_seed` (its schedule and load
/// are drawn from [`scenario_seed`]).
pub async fn run(scenario: Scenario, run_seed: u64, config: &Config) -> Result<Outcome> {
    let t0 = Instant::now();
    let seed = scenario_seed(run_seed, scenario.name);
    let tmp = tempfile::Builder::new()
        .prefix(&format!("chaos-{}-", scenario.name))
        .tempdir()
        .context("a temp dir")?;
    let dir: PathBuf = match &config.keep_logs {
        Some(d) => {
            let d = log_dir(d, scenario.name, run_seed);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => tmp.path().to_owned(),
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .context("an HTTP client")?;
    let is_static = scenario.name == "static-master-loss";
    let etcd = if is_static {
        None
    } else {
        Some(Etcd::start(&config.etcd, &dir, &http).await?)
    };
    let discovery = match &etcd {
        Some(e) => Discovery::Etcd {
            url: e.url(),
            lease_ttl: config.lease_ttl,
        },
        None => Discovery::Static { master: 0 },
    };
    let cluster = Cluster::start(&config.bin, &dir, &discovery, &http).await?;
    let first_master = cluster
        .wait_master(&http, None, Duration::from_secs(20))
        .await
        .context("the first master")?;
    let bases = cluster.bases();

    let stop_writers = Arc::new(AtomicBool::new(false));
    let stop_readers = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Vec::new()));
    let consumed = Arc::new(Mutex::new(Consumed::default()));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let monitor = spawn_monitor(
        bases.clone(),
        http.clone(),
        stop_readers.clone(),
        samples.clone(),
    );
    let consumer_node = (first_master + 1) % NODES;
    let consumer = spawn_consumer(
        bases.clone(),
        consumer_node,
        http.clone(),
        stop_readers.clone(),
        consumed.clone(),
    );
    let load_start = now();
    let writers = spawn_writers(
        &config.writers,
        bases.clone(),
        seed,
        http.clone(),
        stop_writers.clone(),
        writes.clone(),
    );
    eprintln!(
        "{}: seed {run_seed}; master {}, consumer on {}; logs in {}",
        scenario.name,
        cluster.names[first_master],
        cluster.names[consumer_node],
        dir.display()
    );

    let mut run = Run {
        config,
        http: http.clone(),
        etcd,
        cluster,
        rng: StdRng::seed_from_u64(seed),
        kills: Vec::new(),
        schedule: Vec::new(),
        errors: Vec::new(),
        started: load_start,
        bursts: Vec::new(),
    };
    run.pause(2.0, 2.0).await; // the load settles before the first fault
    faults(scenario, &mut run).await;
    run.pause(2.0, 2.0).await; // the load goes on after the last fault

    // Quiesce: everything runs again, the writers stop, the nodes agree.
    quiesce_processes(&mut run).await;
    stop_writers.store(true, Ordering::Relaxed);
    let load_end = now();
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(20), w).await;
    }
    for b in std::mem::take(&mut run.bursts) {
        if let Ok(Ok(write)) = tokio::time::timeout(Duration::from_secs(30), b).await {
            if let Ok(mut l) = writes.lock() {
                l.push(write);
            }
        }
    }
    run.note("writers stopped");
    let settled = settle(&run).await;
    let reference = match run.cluster.master(&http).await {
        Some(m) => m,
        None => {
            run.errors.push("no master at the end".into());
            0
        }
    };
    let mut archives = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let body = run.cluster.archive(i, &http).await.unwrap_or_default();
        archives.push((run.cluster.names[i].clone(), body));
    }
    let last_seq = crate::check::parse_archive(&archives[reference].1)
        .0
        .last()
        .map(|l| l.seq)
        .unwrap_or(0);
    // The consumer catches up (or the deadline passes).
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && consumed.lock().map(|c| c.last_seq()).unwrap_or(0) < last_seq
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_readers.store(true, Ordering::Relaxed);
    consumer.abort();
    let _ = monitor.await;
    if !settled {
        run.errors.push(
            "the nodes' archives were still changing or different 30 s after the load stopped"
                .into(),
        );
    }
    run.note("checked");

    let inputs = Inputs {
        archives,
        reference,
        writes: writes.lock().map(|w| w.clone()).unwrap_or_default(),
        consumed: consumed.lock().map(|c| c.clone()).unwrap_or_default(),
        kills: run.kills.clone(),
        samples: samples.lock().map(|s| s.clone()).unwrap_or_default(),
        load: (load_start, load_end),
        journaled: true,
    };
    let verdict = check(&inputs);
    if !verdict.failures.is_empty() || !run.errors.is_empty() {
        for i in 0..NODES {
            eprintln!(
                "  log of {} ({}), last lines:\n{}",
                run.cluster.names[i],
                run.cluster.log(i).display(),
                indent(&crate::proc::log_tail(run.cluster.log(i), 8))
            );
        }
    }
    Ok(Outcome {
        scenario: scenario.name.into(),
        fault: scenario.fault.into(),
        seed: run_seed,
        passed: verdict.failures.is_empty() && run.errors.is_empty(),
        step_errors: run.errors,
        schedule: run.schedule,
        verdict,
        secs: t0.elapsed().as_secs_f64(),
    })
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every stopped process runs again, every killed one is restarted, and a master
/// is elected.
async fn quiesce_processes(run: &mut Run<'_>) {
    if let Some(etcd) = run.etcd.as_mut() {
        match etcd.state() {
            State::Stopped => etcd.signal(Signal::Cont),
            State::Down => {
                let r = etcd.restart(&run.http).await;
                run.record(r);
            }
            State::Up => {}
        }
    }
    for i in 0..NODES {
        match run.cluster.state(i) {
            State::Stopped => run.signal(i, Signal::Cont),
            State::Down => {
                let r = run.restart(i).await;
                run.record(r);
            }
            State::Up => {}
        }
    }
    let r = run.master(None).await.map(|_| ());
    run.record(r);
}

/// Waits until every node's `?o=1` is the same and has not changed for 2 s; false
/// if that does not happen within 30 s.
async fn settle(run: &Run<'_>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stable_since: Option<(Instant, Vec<u8>)> = None;
    while Instant::now() < deadline {
        let mut bodies = Vec::with_capacity(NODES);
        for i in 0..NODES {
            bodies.push(run.cluster.archive(i, &run.http).await.unwrap_or_default());
        }
        let same = bodies.windows(2).all(|w| w[0] == w[1]) && !bodies[0].is_empty();
        if same {
            match &stable_since {
                Some((since, body)) if *body == bodies[0] => {
                    if since.elapsed() >= Duration::from_secs(2) {
                        return true;
                    }
                }
                _ => stable_since = Some((Instant::now(), bodies.swap_remove(0))),
            }
        } else {
            stable_since = None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// The fault schedule of `scenario`.
async fn faults(scenario: Scenario, run: &mut Run<'_>) {
    let result = match scenario.name {
        "master-kill" => master_kill(run).await,
        "master-stop" => master_stop(run).await,
        "double-fault" => double_fault(run).await,
        "etcd-stop" => etcd_stop(run).await,
        "etcd-kill" => etcd_kill(run).await,
        "follower-kill" => follower_kill(run).await,
        "rolling-restart" => rolling_restart(run).await,
        "static-master-loss" => static_master_loss(run).await,
        other => Err(anyhow!("no scenario {other}")),
    };
    run.record(result);
}

async fn master_kill(run: &mut Run<'_>) -> Result<()> {
    for _ in 0..3 {
        run.pause(1.5, 3.5).await;
        let m = run.master(None).await?;
        run.kill(m);
        let new = run.master(Some(m)).await?;
        let name = run.cluster.names[new].clone();
        run.note(format!("{name} is master"));
        run.restart(m).await?;
    }
    Ok(())
}

async fn master_stop(run: &mut Run<'_>) -> Result<()> {
    for _ in 0..2 {
        run.pause(1.5, 3.0).await;
        let m = run.master(None).await?;
        run.signal(m, Signal::Stop);
        let lease = run.lease();
        run.pause(2.0 * lease, 2.0 * lease + 1.0).await;
        run.signal(m, Signal::Cont);
        run.master(None).await?;
    }
    Ok(())
}

async fn double_fault(run: &mut Run<'_>) -> Result<()> {
    run.pause(0.5, 1.5).await;
    let m = run.master(None).await?;
    let followers: Vec<usize> = (0..NODES).filter(|i| *i != m).collect();
    for f in &followers {
        run.signal(*f, Signal::Stop);
    }
    let markers: Vec<String> = (0..run.config.burst as u64)
        .map(|k| crate::load::marker("burst", k))
        .collect();
    run.note(format!(
        "burst of {} events to {}",
        markers.len(),
        run.cluster.names[m]
    ));
    let before = run
        .cluster
        .view(m, &run.http)
        .await
        .map(|v| v.last_seq)
        .unwrap_or(0);
    let burst = markers.len() as u64;
    let (http, base) = (run.http.clone(), run.cluster.base(m));
    run.bursts.push(tokio::spawn(async move {
        post(&http, &base, m, markers, Duration::from_secs(60)).await
    }));
    // The master is frozen once it has sequenced the burst (which its frozen
    // followers cannot have), and no sooner than 70 ms after the POST.
    let posted = Instant::now();
    let deadline = posted + Duration::from_secs(15);
    loop {
        let seq = run
            .cluster
            .view(m, &run.http)
            .await
            .map(|v| v.last_seq)
            .unwrap_or(0);
        if seq >= before + burst || Instant::now() >= deadline {
            run.note(format!(
                "{} at seq {seq} (was {before})",
                run.cluster.names[m]
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(rest) = Duration::from_millis(70).checked_sub(posted.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    run.signal(m, Signal::Stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for f in &followers {
        run.signal(*f, Signal::Cont);
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    run.signal(m, Signal::Cont);
    run.master(None).await?;
    Ok(())
}

async fn etcd_stop(run: &mut Run<'_>) -> Result<()> {
    run.pause(1.0, 3.0).await;
    let Some(etcd) = run.etcd.as_mut() else {
        return Err(anyhow!("no etcd in this scenario"));
    };
    etcd.signal(Signal::Stop);
    run.note("SIGSTOP etcd");
    let lease = run.lease();
    run.pause(2.0 * lease, 2.0 * lease + 1.0).await;
    if let Some(etcd) = run.etcd.as_mut() {
        etcd.signal(Signal::Cont);
    }
    run.note("SIGCONT etcd");
    run.master(None).await?;
    Ok(())
}

async fn etcd_kill(run: &mut Run<'_>) -> Result<()> {
    run.pause(1.0, 3.0).await;
    let Some(etcd) = run.etcd.as_mut() else {
        return Err(anyhow!("no etcd in this scenario"));
    };
    etcd.signal(Signal::Kill);
    run.note("SIGKILL etcd");
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.note("restart etcd");
    if let Some(etcd) = run.etcd.as_mut() {
        etcd.restart(&run.http).await?;
    }
    run.master(None).await?;
    Ok(())
}

async fn follower_kill(run: &mut Run<'_>) -> Result<()> {
    run.pause(1.0, 3.0).await;
    let m = run.master(None).await?;
    let followers: Vec<usize> = (0..NODES).filter(|i| *i != m).collect();
    let victim = followers[run.rng.random_range(0..followers.len())];
    // The master freezes for less than the lease: the followers queue what they
    // are sent meanwhile.
    run.signal(m, Signal::Stop);
    tokio::time::sleep(Duration::from_millis(800)).await;
    run.kill(victim);
    run.signal(m, Signal::Cont);
    run.pause(1.0, 2.0).await;
    run.restart(victim).await?;
    Ok(())
}

async fn rolling_restart(run: &mut Run<'_>) -> Result<()> {
    let mut order: Vec<usize> = (0..NODES).collect();
    for i in (1..order.len()).rev() {
        let j = run.rng.random_range(0..=i);
        order.swap(i, j);
    }
    for i in order {
        run.pause(1.0, 2.0).await;
        let name = run.cluster.names[i].clone();
        run.note(format!("SIGTERM {name}"));
        run.cluster.terminate(i, Duration::from_secs(10)).await;
        run.restart(i).await?;
        catch_up(run, i).await?;
    }
    Ok(())
}

/// Waits until node `i`'s replica reaches the master's last seq as it is now.
async fn catch_up(run: &mut Run<'_>, i: usize) -> Result<()> {
    let m = run.master(None).await?;
    let target = run
        .cluster
        .view(m, &run.http)
        .await
        .map(|v| v.last_seq)
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if run
            .cluster
            .view(i, &run.http)
            .await
            .is_some_and(|v| v.last_seq >= target)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "{} did not reach seq {target} within 20 s of its restart",
                run.cluster.names[i]
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn static_master_loss(run: &mut Run<'_>) -> Result<()> {
    run.pause(1.0, 3.0).await;
    run.kill(0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    run.restart(0).await?;
    run.master(None).await?;
    Ok(())
}

/// Where a run's logs go by default when kept: `DIR/NAME-SEED`.
pub fn log_dir(base: &Path, scenario: &str, seed: u64) -> PathBuf {
    base.join(format!("{scenario}-{seed}"))
}
