//! The system under test: one etcd and three `master-events serve` nodes on
//! loopback, each in a process group of its own.
//!
//! Owns: the command lines (free ports, a temporary data dir, the cluster secret,
//! etcd or static discovery), starting and restarting each process and waiting until
//! it answers, the signals faults send them, and the questions the suite asks a node
//! (`GET /cluster`, `GET /diag/masterEvents?o=1`).
//!
//! Promises: every wait has a deadline; a node that exits while the suite waits for
//! it is an error naming its log's last lines; a process is asked nothing while it
//! is stopped or down (the suite knows, since it sent the signal).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::proc::{free_port, log_tail, Child, Signal};

/// How many nodes a cluster has.
pub const NODES: usize = 3;
/// How long a process may take to answer after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether a process runs, is frozen, or is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Running.
    Up,
    /// Frozen by SIGSTOP.
    Stopped,
    /// Killed (not restarted yet).
    Down,
}

/// A process the suite can signal, stop and restart with the same command line.
#[derive(Debug)]
struct Managed {
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    state: State,
}

impl Managed {
    fn start(program: &Path, args: Vec<String>, log: PathBuf) -> Result<Managed> {
        let child = Child::spawn(program, &args, &log)?;
        Ok(Managed {
            program: program.to_owned(),
            args,
            log,
            child: Some(child),
            state: State::Up,
        })
    }

    fn signal(&mut self, signal: Signal) {
        let Some(child) = &self.child else { return };
        child.signal(signal);
        match signal {
            Signal::Stop => self.state = State::Stopped,
            Signal::Cont => self.state = State::Up,
            Signal::Kill => {
                self.child = None; // drop reaps it
                self.state = State::Down;
            }
            Signal::Term => {}
        }
    }

    fn restart(&mut self) -> Result<()> {
        self.child = None;
        self.child = Some(Child::spawn(&self.program, &self.args, &self.log)?);
        self.state = State::Up;
        Ok(())
    }

    fn check_running(&mut self, what: &str) -> Result<()> {
        let running = self.child.as_mut().is_some_and(|c| !c.exited());
        match running {
            true => Ok(()),
            false => bail!(
                "{what} exited; its log ends with:\n{}",
                log_tail(&self.log, 15)
            ),
        }
    }
}

/// etcd, single member, on free loopback ports with its data in the run's temp dir.
#[derive(Debug)]
pub struct Etcd {
    proc: Managed,
    client_port: u16,
}

impl Etcd {
    /// Starts etcd and waits until it answers `/health`.
    pub async fn start(bin: &Path, dir: &Path, http: &reqwest::Client) -> Result<Etcd> {
        let client_port = free_port().context("a port for etcd")?;
        let peer_port = free_port().context("a port for etcd")?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let args: Vec<String> = vec![
            "--name".into(),
            "chaos".into(),
            "--data-dir".into(),
            dir.join("etcd").display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("chaos={peer}"),
            "--heartbeat-interval=50".into(),
            "--election-timeout=500".into(),
        ];
        let proc = Managed::start(bin, args, dir.join("etcd.log"))
            .with_context(|| format!("starting etcd ({})", bin.display()))?;
        let mut etcd = Etcd { proc, client_port };
        etcd.wait_healthy(http).await?;
        Ok(etcd)
    }

    /// The client URL nodes are given.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Sends `signal` to etcd's process group.
    pub fn signal(&mut self, signal: Signal) {
        self.proc.signal(signal);
    }

    /// Whether etcd runs, is frozen or is gone.
    pub fn state(&self) -> State {
        self.proc.state
    }

    /// Starts etcd again (same ports, same data) and waits until it answers.
    pub async fn restart(&mut self, http: &reqwest::Client) -> Result<()> {
        self.proc.restart()?;
        self.wait_healthy(http).await
    }

    async fn wait_healthy(&mut self, http: &reqwest::Client) -> Result<()> {
        let url = format!("{}/health", self.url());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.proc.check_running("etcd")?;
            if let Ok(r) = http
                .get(&url)
                .timeout(Duration::from_millis(500))
                .send()
                .await
            {
                if r.text().await.is_ok_and(|t| t.contains("true")) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("etcd did not answer /health within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// How the nodes learn who the master is.
#[derive(Clone, Debug)]
pub enum Discovery {
    /// Leader election on etcd at this URL, with this lease TTL (seconds).
    Etcd {
        /// etcd's client URL.
        url: String,
        /// `--lease-ttl`.
        lease_ttl: f64,
    },
    /// `--master` names node `master` on every node.
    Static {
        /// The master's index.
        master: usize,
    },
}

/// What `GET /cluster` says.
#[derive(Clone, Debug, Deserialize)]
pub struct View {
    /// The master this node knows of.
    pub master: Option<String>,
    /// Whether this node is the master.
    pub is_master: bool,
    /// The master's term.
    pub epoch: u64,
    /// The last seq in this node's archive.
    pub last_seq: u64,
}

/// Three `serve` nodes.
#[derive(Debug)]
pub struct Cluster {
    /// Node names (`n_I@127.0.0.1`).
    pub names: Vec<String>,
    /// Their HTTP ports.
    pub ports: Vec<u16>,
    nodes: Vec<Managed>,
}

impl Cluster {
    /// Starts the nodes and waits until each answers `/health`.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        discovery: &Discovery,
        http: &reqwest::Client,
    ) -> Result<Cluster> {
        let secret = dir.join("secret");
        std::fs::write(&secret, "chaos-cluster-secret\n").context("writing the secret")?;
        let names: Vec<String> = (0..NODES).map(|i| format!("n_{i}@127.0.0.1")).collect();
        let ports = (0..NODES)
            .map(|_| free_port())
            .collect::<std::io::Result<Vec<u16>>>()
            .context("ports for the nodes")?;
        let mut nodes = Vec::with_capacity(NODES);
        for i in 0..NODES {
            let mut args: Vec<String> = vec![
                "serve".into(),
                "--listen".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--node".into(),
                names[i].clone(),
                "--archive-size".into(),
                "1000000".into(),
                "--heartbeat".into(),
                "1".into(),
                "--cluster-secret-file".into(),
                secret.display().to_string(),
                // Queued events survive a SIGKILL (the checker holds the nodes to it).
                "--queue-dir".into(),
                dir.join(format!("queue-{i}")).display().to_string(),
            ];
            match discovery {
                Discovery::Etcd { url, lease_ttl } => args.extend([
                    "--discovery".into(),
                    "etcd".into(),
                    "--etcd".into(),
                    url.clone(),
                    "--lease-ttl".into(),
                    lease_ttl.to_string(),
                ]),
                Discovery::Static { master } => {
                    args.extend(["--master".into(), names[*master].clone()])
                }
            }
            for (n, p) in names.iter().zip(&ports) {
                args.push("--peer".into());
                args.push(format!("{n}=http://127.0.0.1:{p}"));
            }
            let log = dir.join(format!("n_{i}.log"));
            nodes.push(
                Managed::start(bin, args, log)
                    .with_context(|| format!("starting {}", bin.display()))?,
            );
        }
        let mut cluster = Cluster {
            names,
            ports,
            nodes,
        };
        for i in 0..NODES {
            cluster.wait_healthy(i, http).await?;
        }
        Ok(cluster)
    }

    /// Node `i`'s base URL.
    pub fn base(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    /// Every node's base URL.
    pub fn bases(&self) -> Vec<String> {
        (0..NODES).map(|i| self.base(i)).collect()
    }

    /// Node `i`'s state as the suite left it.
    pub fn state(&self, i: usize) -> State {
        self.nodes[i].state
    }

    /// Node `i`'s log file.
    pub fn log(&self, i: usize) -> &Path {
        &self.nodes[i].log
    }

    /// Sends `signal` to node `i`'s process group.
    pub fn signal(&mut self, i: usize, signal: Signal) {
        self.nodes[i].signal(signal);
    }

    /// Stops node `i` cleanly (SIGTERM, SIGKILL after `grace`).
    pub async fn terminate(&mut self, i: usize, grace: Duration) {
        if let Some(child) = self.nodes[i].child.take() {
            child.terminate(grace).await;
        }
        self.nodes[i].state = State::Down;
    }

    /// Starts node `i` again with its command line and waits until it answers.
    pub async fn restart(&mut self, i: usize, http: &reqwest::Client) -> Result<()> {
        self.nodes[i].restart()?;
        self.wait_healthy(i, http).await
    }

    async fn wait_healthy(&mut self, i: usize, http: &reqwest::Client) -> Result<()> {
        let url = format!("{}/health", self.base(i));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let name = self.names[i].clone();
            self.nodes[i].check_running(&name)?;
            if let Ok(r) = http
                .get(&url)
                .timeout(Duration::from_millis(500))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("{name} did not answer /health within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `i`'s `GET /cluster`, or `None` when it is not up or does not answer
    /// within a second.
    pub async fn view(&self, i: usize, http: &reqwest::Client) -> Option<View> {
        if self.nodes[i].state != State::Up {
            return None;
        }
        view_of(http, &self.base(i), Duration::from_secs(1)).await
    }

    /// The running node that says it is master (the highest epoch if several do).
    pub async fn master(&self, http: &reqwest::Client) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for i in 0..NODES {
            if let Some(v) = self.view(i, http).await {
                if v.is_master && best.is_none_or(|(e, _)| v.epoch > e) {
                    best = Some((v.epoch, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Waits up to `timeout` for a running master other than `not`.
    pub async fn wait_master(
        &self,
        http: &reqwest::Client,
        not: Option<usize>,
        timeout: Duration,
    ) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.master(http).await {
                if Some(m) != not {
                    return Ok(m);
                }
            }
            if Instant::now() >= deadline {
                bail!("no master within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `i`'s archive as `GET /diag/masterEvents?o=1` returns it.
    pub async fn archive(&self, i: usize, http: &reqwest::Client) -> Result<Vec<u8>> {
        let url = format!("{}/diag/masterEvents?o=1", self.base(i));
        let r = http
            .get(&url)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !r.status().is_success() {
            bail!("GET {url}: {}", r.status());
        }
        Ok(r.bytes()
            .await
            .with_context(|| format!("GET {url}"))?
            .to_vec())
    }
}

/// `GET BASE/cluster` within `timeout`.
pub async fn view_of(http: &reqwest::Client, base: &str, timeout: Duration) -> Option<View> {
    let r = http
        .get(format!("{base}/cluster"))
        .timeout(timeout)
        .send()
        .await
        .ok()?;
    let body = r.bytes().await.ok()?;
    serde_json::from_slice(&body).ok()
}
