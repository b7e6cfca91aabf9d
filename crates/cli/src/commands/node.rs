//! A running master-events node: the router, its sinks and the HTTP server, set up
//! from a TOML file and command-line flags (shared by `serve` and `demo`).
//!
//! Owns: the configuration file's top-level layout and the start/stop order.
//!
//! ```toml
//! [server]
//! node = "n_0@10.17.2.163"      # this node's name (the origin of what it notes)
//! listen = "127.0.0.1:9898"
//! body_limit = 16777216          # ingest body limit, bytes
//! header_read_timeout = 10       # seconds a client has to send its request head
//! insecure_no_auth = false       # allow a non-loopback address without users
//! tls_cert = "/etc/master-events/cert.pem"   # HTTPS (with tls_key); reloaded on SIGHUP
//! tls_key = "/etc/master-events/key.pem"
//! tls_client_ca = "/etc/master-events/clients-ca.pem"  # require client certificates (mTLS)
//!
//! [server.limits]                # what one client may hold (docs/configuration.md, "Limits")
//! max_connections_per_ip = 256
//!
//! [[users]]                      # or MASTER_EVENTS_USERS=name:password:role,...
//! name = "ops"
//! password = "change me"
//! role = "read"                  # read | write | admin
//!
//! [[tokens]]                     # bearer tokens: `master-events token create` prints these
//! name = "b1-dash"
//! role = "read"
//! digest = "sha256:…"            # of the token; the token itself is never in the file
//! filter = "bucket=b1"           # optional: all the token may read (stream query form)
//! expires = "2030-01-31T12:00:00Z"  # optional: RFC 3339
//!
//! [[sinks]]                      # see `master-events sinks`
//! type = "stdout"
//! format = "line"
//! filter = { type = ["rebalanceStart", "rebalanceEnd"] }
//! ```
//!
//! Promises: flags override the file; a bad file stops start-up with an error that
//! says where; stopping ends the streams first, then drains everything queued into
//! the archive, then lets every sink deliver and flush it — nothing accepted is lost
//! from a sink that persists.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use master_events_cluster::{ClusterConfig, ClusterNode, MasterDiscovery, Role, StaticDiscovery};
use master_events_router::config::{describe_toml_error, toml_error};
use master_events_router::{
    load_config, start_sinks_on, ConfigError, Router, RouterConfig, SinkSet,
};
use master_events_server::auth::{AuthConfigError, UserEntry, Users};
use master_events_server::limits::{LimitsSettings, SettingSource};
use master_events_server::tls::{TlsFiles, TlsReloader};
use master_events_server::tokens::{TokenEntry, Tokens};
use master_events_server::{ClusterView, HttpSinkConfig, Server, ServerConfig, ShutdownHandle};
use serde::Deserialize;
use tokio::task::JoinHandle;

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9898";

/// The `[server]` table.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    node: Option<String>,
    listen: Option<SocketAddr>,
    body_limit: Option<usize>,
    header_read_timeout: Option<f64>,
    insecure_no_auth: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    #[serde(default)]
    limits: LimitsSettings,
}

/// The file's top level. `sinks` is checked by the router's own loader.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    users: Vec<UserEntry>,
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    #[allow(dead_code)]
    sinks: Option<toml::Value>,
    /// `[redaction]`, checked by the router's loader too.
    #[serde(default)]
    #[allow(dead_code)]
    redaction: Option<toml::Value>,
}

/// What the command line says about the node (each overrides the file).
#[derive(Debug, Default, Clone)]
pub struct NodeOptions {
    /// The TOML configuration file.
    pub config: Option<PathBuf>,
    /// Listen address.
    pub listen: Option<SocketAddr>,
    /// Events the archive retains.
    pub archive_size: Option<usize>,
    /// Default stream heartbeat, seconds (0 = off).
    pub heartbeat: Option<f64>,
    /// Most streams open at once (the http sink's `max_streams`).
    pub max_streams: Option<usize>,
    /// This node's name.
    pub node: Option<String>,
    /// Ingest body limit, bytes.
    pub body_limit: Option<usize>,
    /// Allow a non-loopback address without users.
    pub insecure_no_auth: bool,
    /// Seconds a connection has to deliver a request head (the first whatever the
    /// protocol).
    pub header_read_timeout: Option<f64>,
    /// The limits set on the command line (each overrides `[server.limits]`).
    pub limits: LimitsSettings,
    /// The TLS files named on the command line (each overrides its `[server]` key).
    pub tls: TlsOptions,
    /// Default archive size when neither flag nor file sets one.
    pub default_archive_size: Option<usize>,
    /// How this node learns who the master is.
    pub cluster: ClusterOptions,
}

/// The TLS files of `serve` (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// The CA whose certificates clients must present (mTLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsOptions {
    /// The flags over the file's keys: TLS files when a certificate is named, with
    /// its key; an error when only one of the two, or only a client CA, is named.
    fn merge(&self, file: &ServerSection) -> Result<Option<TlsFiles>> {
        let cert = self.cert.clone().or_else(|| file.tls_cert.clone());
        let key = self.key.clone().or_else(|| file.tls_key.clone());
        let client_ca = self
            .client_ca
            .clone()
            .or_else(|| file.tls_client_ca.clone());
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert,
                key,
                client_ca,
            })),
            (Some(_), None) => bail!(
                "TLS needs a private key with the certificate: give --tls-key FILE (or \
                 server.tls_key)"
            ),
            (None, Some(_)) => bail!(
                "TLS needs a certificate with the private key: give --tls-cert FILE (or \
                 server.tls_cert)"
            ),
            (None, None) if client_ca.is_some() => bail!(
                "--tls-client-ca (server.tls_client_ca) needs TLS: give --tls-cert FILE and \
                 --tls-key FILE too"
            ),
            (None, None) => Ok(None),
        }
    }
}

/// How a node finds the master (see `serve --help`).
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `static` (default) or `etcd`.
    pub discovery: Discovery,
    /// With static discovery: the master's node name (default: this node).
    pub master: Option<String>,
    /// Every node's base URL by name.
    pub peers: BTreeMap<String, String>,
    /// etcd endpoints (with `etcd` discovery).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub etcd: Vec<String>,
    /// The file holding the cluster secret.
    pub secret_file: Option<PathBuf>,
    /// etcd lease TTL.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub lease_ttl: Option<Duration>,
    /// Where the node queue is kept across a crash (`--queue-dir`), if anywhere.
    pub queue_dir: Option<PathBuf>,
    /// The CA file trusted for `https://` peers (`--peer-ca`).
    pub peer_ca: Option<PathBuf>,
    /// The client certificate and key presented to peers (`--peer-cert`, `--peer-key`).
    pub peer_cert: Option<PathBuf>,
    /// See `peer_cert`.
    pub peer_key: Option<PathBuf>,
}

/// The discovery backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Discovery {
    /// The configuration names the master (a lone node is its own master).
    #[default]
    Static,
    /// Leader election on etcd (needs a binary built with the `etcd` feature).
    Etcd,
}

impl ClusterOptions {
    /// Whether this node is part of a cluster (else it is its own master, alone).
    fn is_cluster(&self, node: &str) -> bool {
        !self.peers.is_empty()
            || self.discovery == Discovery::Etcd
            || self.master.as_deref().is_some_and(|m| m != node)
    }
}

/// Parses `--listen`: an `IP:PORT`, or `HOST:PORT` with a host name this machine
/// resolves (`localhost:9898`; its IPv4 address first).
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let teach =
        || format!("{text:?} is not HOST:PORT (e.g. 127.0.0.1:9898, localhost:9898, [::1]:9898)");
    if !text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    {
        return Err(teach());
    }
    let addrs: Vec<std::net::SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {text:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(teach)
}

/// Parses `NAME=URL`.
pub fn parse_peer(text: &str) -> Result<(String, String), String> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=URL, found {text:?}"))?;
    if name.is_empty() {
        return Err(format!("the node name is empty in {text:?}"));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "the URL of {name} must start with http:// or https://, found {url:?}"
        ));
    }
    Ok((name.to_owned(), url.trim_end_matches('/').to_owned()))
}

fn read_secret(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the cluster secret file {}", path.display()))?;
    let secret = text.trim().to_owned();
    if secret.is_empty() {
        bail!("the cluster secret file {} is empty", path.display());
    }
    Ok(secret)
}

/// With static discovery, a follower must know where its master is.
fn check_static_master(opts: &ClusterOptions, node: &str) -> Result<()> {
    if opts.discovery != Discovery::Static {
        return Ok(());
    }
    match &opts.master {
        Some(master) if master != node && !opts.peers.contains_key(master) => bail!(
            "--master {master} names another node but no --peer gives its URL: \
             add --peer {master}=http://HOST:PORT (the same --peer list on every node)"
        ),
        _ => Ok(()),
    }
}

async fn start_discovery(opts: &ClusterOptions, node: &str) -> Result<Arc<dyn MasterDiscovery>> {
    match opts.discovery {
        Discovery::Static => Ok(Arc::new(StaticDiscovery::new(
            opts.master.clone().unwrap_or_else(|| node.to_owned()),
        ))),
        Discovery::Etcd => start_etcd(opts, node).await,
    }
}

#[cfg(feature = "etcd")]
async fn start_etcd(opts: &ClusterOptions, node: &str) -> Result<Arc<dyn MasterDiscovery>> {
    if opts.etcd.is_empty() {
        bail!("--discovery etcd needs at least one --etcd URL");
    }
    let d = master_events_cluster::etcd::EtcdDiscovery::start(
        opts.etcd.clone(),
        node.to_owned(),
        "master-events".to_owned(),
        opts.lease_ttl.unwrap_or(Duration::from_secs(3)),
    )
    .await
    .with_context(|| {
        format!(
            "cannot join the etcd election at {} (is etcd up and reachable from here? \
             the node does not wait for it at start)",
            opts.etcd.join(", ")
        )
    })?;
    Ok(Arc::new(d))
}

#[cfg(not(feature = "etcd"))]
async fn start_etcd(_opts: &ClusterOptions, _node: &str) -> Result<Arc<dyn MasterDiscovery>> {
    bail!("this binary was built without etcd support (cargo feature `etcd`)")
}

/// A started node.
pub struct RunningNode {
    /// The router.
    pub router: Router,
    /// The address the server listens on.
    pub addr: SocketAddr,
    /// The names of the running sinks.
    pub sink_names: Vec<String>,
    /// The cluster layer, when the node is part of a cluster.
    pub cluster: Option<ClusterNode>,
    /// What reloads the TLS certificate, when the server speaks TLS.
    pub tls: Option<TlsReloader>,
    server: JoinHandle<()>,
    /// The server task has ended (and was awaited).
    server_ended: bool,
    shutdown: ShutdownHandle,
    sinks: SinkSet,
    _cluster: tokio::sync::watch::Sender<ClusterView>,
}

fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    format!("n_0@{host}")
}

/// Reads the file, merges the flags and starts router, sinks and server.
pub async fn start(opts: NodeOptions) -> Result<RunningNode> {
    let text = match &opts.config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?,
        None => String::new(),
    };
    let where_ = opts
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the configuration".into());
    // No error shows the file's text: a value in it may be a password or a token.
    let config_error = |e: ConfigError| match e {
        ConfigError::Toml { line: Some(_), .. } => anyhow::anyhow!("{where_}:{e}"),
        e => anyhow::anyhow!("{where_}: {e}"),
    };
    let file: FileConfig =
        toml::from_str(&text).map_err(|e| config_error(toml_error(&text, &e)))?;
    let sinks_config = load_config(&text).map_err(config_error)?;

    let mut entries = file.users.clone();
    if let Ok(env) = std::env::var("MASTER_EVENTS_USERS") {
        entries.extend(Users::parse_env(&env).map_err(|e| match e {
            // What stands where the role belongs may be a misplaced password.
            AuthConfigError::UnknownRole(_) => anyhow::anyhow!(
                "MASTER_EVENTS_USERS: an entry's role is not read, write or admin \
                 (entries are name:password:role; the value is not shown)"
            ),
            e => e.into(),
        })?);
    }
    let mut users = Users::from_entries(&entries)?;
    // An error names the entry and the key; the digest is not a secret, and the
    // token is never in the file.
    users.set_tokens(
        Tokens::from_entries(&file.tokens).map_err(|e| anyhow::anyhow!("{where_}: {e}"))?,
    );
    let secret = match &opts.cluster.secret_file {
        Some(path) => Some(read_secret(path)?),
        None => None,
    };
    if let Some(secret) = &secret {
        users.set_cluster_secret(secret);
    }
    if users.token_is_cluster_secret() {
        bail!(
            "{where_}: a [[tokens]] entry is the cluster secret's digest: a token must never \
             pass for another node; make a new token (master-events token create)"
        );
    }

    let mut server = ServerConfig {
        listen: match opts.listen.or(file.server.listen) {
            Some(a) => a,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        },
        ..ServerConfig::default()
    };
    if let Some(limit) = opts.body_limit.or(file.server.body_limit) {
        if limit == 0 {
            bail!("the body limit must be at least 1 byte");
        }
        server.body_limit = limit;
    }
    if let Some(secs) = file.server.header_read_timeout {
        if !secs.is_finite() || secs <= 0.0 || secs > 3600.0 {
            bail!("{where_}: server.header_read_timeout must be between 0 and 3600 seconds");
        }
        server.header_read_timeout = Duration::from_secs_f64(secs);
    }
    if let Some(secs) = opts.header_read_timeout {
        if !secs.is_finite() || secs <= 0.0 || secs > 3600.0 {
            bail!("--header-read-timeout must be more than 0 and at most 3600 seconds, not {secs}");
        }
        server.header_read_timeout = Duration::from_secs_f64(secs);
    }
    file.server
        .limits
        .apply_to(&mut server.limits, SettingSource::File)
        .map_err(|e| anyhow::anyhow!("{where_}: {e}"))?;
    opts.limits
        .apply_to(&mut server.limits, SettingSource::Flag)?;
    server.insecure_no_auth =
        opts.insecure_no_auth || file.server.insecure_no_auth.unwrap_or(false);
    server.tls = opts.tls.merge(&file.server)?;
    if let Some(entry) = sinks_config.sinks.iter().find(|e| e.kind == "http") {
        let http: HttpSinkConfig = toml::Value::Table(entry.settings.clone())
            .try_into()
            .map_err(|e: toml::de::Error| {
                anyhow::anyhow!("{where_}: http sink: {}", describe_toml_error(&e))
            })?;
        http.apply_to(&mut server, entry.filter.clone());
    }
    if let Some(secs) = opts.heartbeat {
        if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
            bail!("--heartbeat must be 0 to 86400 seconds, not {secs}");
        }
        server.heartbeat = (secs > 0.0).then(|| Duration::from_secs_f64(secs));
    }
    if let Some(n) = opts.max_streams {
        if n == 0 {
            bail!("--max-streams must be at least 1");
        }
        server.max_streams = n;
    }
    server.check_exposure(&users)?;

    let mut router_config = RouterConfig {
        node: opts
            .node
            .clone()
            .or(file.server.node.clone())
            .unwrap_or_else(default_node_name),
        ..RouterConfig::default()
    };
    if let Some(n) = opts.default_archive_size {
        router_config.archive_capacity = n;
    }
    sinks_config.apply_to(&mut router_config);
    if let Some(n) = opts.archive_size {
        router_config.archive_capacity = n;
    }
    if router_config.archive_capacity == 0 {
        bail!("the archive size must be at least 1");
    }
    let node_name = router_config.node.clone();
    check_static_master(&opts.cluster, &node_name)?;
    let node_name_for_cluster = node_name.clone();
    // Warm load: a `file` sink's log pre-fills the archive and the seq continues
    // after it, so `?o=1` after a restart returns what it returned before.
    let warm = master_events_sink_file::warm_start(&sinks_config, router_config.archive_capacity)
        .map_err(|e| anyhow::anyhow!("{where_}: {e}"))?;
    let router = match warm {
        Some(warm) => {
            router_config.start_seq = router_config.start_seq.max(warm.next_seq);
            let first_restored = warm.records.first().and_then(|r| r.envelope.seq);
            let in_cluster = opts.cluster.is_cluster(&node_name_for_cluster);
            // A commit-gate log of a cluster node may hold events the cluster never
            // committed (it crashed as a deposed master): only those up to the
            // commit kept beside the log are restored as committed; the cluster
            // decides the rest (and cuts them if it never committed them).
            let committed = match &warm.marks {
                Some(marks) if in_cluster => marks.committed,
                _ => None,
            };
            let router = match committed {
                Some(seq) => {
                    Router::start_with_archive_committed(router_config, warm.records, seq).await
                }
                None => Router::start_with_archive(router_config, warm.records).await,
            }
            .context("restoring the archive from the file log")?;
            // The restored events keep the epochs that sequenced them, so that the
            // cluster can tell how much of them agrees with its master's log.
            if let (Some(marks), Some(first)) = (&warm.marks, first_restored) {
                let mut epochs = marks.epochs.clone();
                epochs.truncate_after(router.last_seq());
                router.adopt_epochs(&epochs, first);
                tracing::info!(
                    epochs = %epochs,
                    committed = ?committed,
                    "restored the cluster's epochs of the file log's events"
                );
            }
            // The restored archive continues its history: readers resume across
            // the restart without a reset.
            match &warm.history {
                Some(history) => router
                    .set_history(history)
                    .context("restoring the history id kept beside the file log")?,
                None if router.last_seq() > 0 => tracing::info!(
                    path = %warm.path.display(),
                    history = %router.history(),
                    "the file log keeps no history id (written by an older version): a new history starts, and readers resuming across this restart get a reset frame"
                ),
                None => {}
            }
            router
        }
        None => Router::start(router_config),
    };
    // A cluster node's commit gate exists before the sinks start: the marks of a
    // commit-gate file sink alone must not commit restored events the cluster may
    // not have committed.
    let cluster_gate = opts
        .cluster
        .is_cluster(&node_name_for_cluster)
        .then(|| router.add_commit_gate());
    // Whether this node is the master, for the sinks that run on the master only: a
    // node outside a cluster is; a cluster node is once its role says so.
    let (is_master_tx, is_master) = tokio::sync::watch::channel(cluster_gate.is_none());
    let sinks = start_sinks_on(&router, &sinks_config, is_master)
        .map_err(|e| anyhow::anyhow!("{where_}: {e}"))?;
    let (cluster_tx, cluster_rx) = tokio::sync::watch::channel(ClusterView {
        node: node_name.clone(),
        master: Some(node_name),
        is_master: true,
        epoch: 1,
        discovery: "static".into(),
    });
    let bound = Server::bind(server, router.clone(), users, cluster_rx).await?;
    let addr = bound.local_addr();
    let tls = bound.tls_reloader();
    let (bound, cluster) = if opts.cluster.is_cluster(&node_name_for_cluster) {
        let discovery = start_discovery(&opts.cluster, &node_name_for_cluster).await?;
        let config = ClusterConfig {
            node: node_name_for_cluster.clone(),
            host: addr.to_string(),
            peers: opts.cluster.peers.clone(),
            secret,
            queue_capacity: 100_000,
            http: Some(
                master_events_cluster::peer_tls::peer_client(
                    opts.cluster.peer_ca.as_deref(),
                    opts.cluster.peer_cert.as_deref(),
                    opts.cluster.peer_key.as_deref(),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            commit_gate: cluster_gate,
        };
        let node = match &opts.cluster.queue_dir {
            Some(dir) => ClusterNode::start_with_queue_dir(
                config,
                router.clone(),
                discovery,
                cluster_tx.clone(),
                dir,
            )
            .map_err(|e| anyhow::anyhow!("--queue-dir: {e}"))?,
            None => ClusterNode::start(config, router.clone(), discovery, cluster_tx.clone()),
        };
        let mut roles = node.watch_role();
        tokio::spawn(async move {
            loop {
                let master = matches!(*roles.borrow_and_update(), Role::Master { .. });
                is_master_tx.send_if_modified(|was| std::mem::replace(was, master) != master);
                if roles.changed().await.is_err() {
                    return;
                }
            }
        });
        (bound.with_ingest(Arc::new(node.clone())), Some(node))
    } else {
        (bound, None)
    };
    // The server takes one extra collector: the cluster's carries the sinks' along.
    let sink_metrics = master_events_plugins::SinkMetrics::collector_for(&sinks.names());
    bound.metrics().set_extra_collector(match &cluster {
        Some(node) => node.metrics(Some(sink_metrics)),
        None => sink_metrics,
    });
    bound.metrics().set_sinks(sinks.health());
    let shutdown = bound.shutdown_handle();
    let server = tokio::spawn(bound.run());
    Ok(RunningNode {
        router,
        addr,
        sink_names: sinks.names().into_iter().map(str::to_owned).collect(),
        server,
        server_ended: false,
        shutdown,
        sinks,
        cluster,
        tls,
        _cluster: cluster_tx,
    })
}

impl RunningNode {
    /// Resolves when the node can no longer serve, with why: its router failed (the
    /// sequencer panicked) or its HTTP server task ended without being asked to (a
    /// panic). Crash-only: the caller stops the node and exits non-zero, so that a
    /// supervisor restarts it, rather than leaving a process that answers nothing.
    pub async fn failed(&mut self) -> String {
        let router = self.router.clone();
        tokio::select! {
            why = router.failed() => why.to_string(),
            ended = &mut self.server, if !self.server_ended => {
                self.server_ended = true;
                match ended {
                    Ok(()) => "the HTTP server stopped".to_owned(),
                    Err(e) => format!("the HTTP server task failed: {e}"),
                }
            }
        }
    }

    /// Stops in order: streams and connections, then the router (everything queued
    /// is archived), then the sinks (each delivers and flushes what is left).
    pub async fn stop(self) {
        if let Some(cluster) = &self.cluster {
            cluster.stop().await;
        }
        self.shutdown.shutdown();
        if self.server_ended {
            // Already awaited by `failed`.
        } else if let Err(e) = self.server.await {
            tracing::error!(error = %e, "the server task failed");
        }
        self.router.shutdown().await;
        self.sinks.shutdown().await;
    }
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Logs to standard error, `RUST_LOG` style (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
