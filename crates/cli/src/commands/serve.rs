//! `master-events serve`: runs a node — the router, its sinks and the HTTP API —
//! until SIGINT or SIGTERM.
//!
//! Promises: the first line on standard output is `listening on http://ADDR`
//! (`https://` with TLS; with the port actually bound, so `--listen 127.0.0.1:0` is
//! usable by scripts). With TLS, SIGHUP reloads the certificate and key (a bad file
//! keeps the old ones, with an ERROR naming it); SIGHUP is watched before that first
//! line is written. On a
//! signal, streams end within a second, then everything queued is archived and every
//! sink flushes before the process exits 0. If the node fails (its sequencer or its
//! HTTP server task panicked), the process exits [`EXIT_ROUTER_FAILED`] instead of
//! serving nothing.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use master_events_server::limits::LimitsSettings;

use super::node::{self, ClusterOptions, Discovery, NodeOptions, TlsOptions};

/// The exit code when the node can no longer serve (its router's sequencer or its
/// HTTP server task panicked): 70, EX_SOFTWARE.
pub const EXIT_ROUTER_FAILED: i32 = 70;

/// Arguments of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration: `[server]`, `[[users]]`, `[[sinks]]` (see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port. [default: 127.0.0.1:9898]
    #[arg(long, value_name = "ADDR", value_parser = node::parse_listen)]
    pub listen: Option<SocketAddr>,
    /// How many events the archive retains (default 4096; ns_server used up to 81920).
    #[arg(long, value_name = "N")]
    pub archive_size: Option<usize>,
    /// Idle heartbeat of streams in seconds, 0 = off (default 30; ?heartbeat= overrides).
    #[arg(long, value_name = "SECS")]
    pub heartbeat: Option<f64>,
    /// Most streams open at once (default 20000; the http sink's `max_streams`); one
    /// more gets 503. Each HTTP/1.1 stream holds a file descriptor; HTTP/2 streams
    /// share their connection's (up to 200 a connection).
    #[arg(long, value_name = "N")]
    pub max_streams: Option<usize>,
    /// This node's name, the `origin` of events it notes (default n_0@<hostname>).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Largest ingest body in bytes (default 16 MiB); larger bodies get 413.
    #[arg(long, value_name = "BYTES")]
    pub body_limit: Option<usize>,
    /// Serve a non-loopback address with no users configured (anyone can read and write).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Worker threads for requests, streams and sequencing [default: one per CPU].
    /// Fewer leave CPUs to other processes and ingest less at full speed; where the
    /// server shares few CPUs with busy clients, one worker gives lower latency at
    /// low event rates (on 2 CPUs at 10,000 events/s: p50 about 25 µs lower, and a
    /// quarter less ingest flat out; docs/benchmarks-history.md).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// How this node learns who the master is: `static` (--master names it; a lone
    /// node is its own master) or `etcd` (leader election; needs --etcd).
    #[arg(long, value_enum, default_value_t = Discovery::Static, help_heading = "Cluster")]
    pub discovery: Discovery,
    /// With static discovery: the master's node name (default: this node). Another
    /// node needs its URL in --peer NAME=URL (without it, serve exits 2).
    #[arg(long, value_name = "NAME", help_heading = "Cluster")]
    pub master: Option<String>,
    /// Another node of the cluster and its base URL, e.g. n_1@10.0.0.2=http://10.0.0.2:9898
    /// (repeat for each node; give every node the same list).
    #[arg(long = "peer", value_name = "NAME=URL", value_parser = node::parse_peer, help_heading = "Cluster")]
    pub peers: Vec<(String, String)>,
    /// An etcd endpoint for `--discovery etcd` (repeatable), e.g. http://127.0.0.1:2379.
    #[arg(long = "etcd", value_name = "URL", help_heading = "Cluster")]
    pub etcd: Vec<String>,
    /// A file holding the secret nodes present to each other (the same on every node).
    #[arg(long, value_name = "FILE", help_heading = "Cluster")]
    pub cluster_secret_file: Option<PathBuf>,
    /// etcd lease TTL in seconds: a master that loses contact stops acting as master
    /// within it, and another takes over (default 3).
    #[arg(long, value_name = "SECS", help_heading = "Cluster")]
    pub lease_ttl: Option<f64>,
    /// A directory where this node keeps the events it queued and the cluster has not
    /// committed yet, so that a crashed node (kill -9) sends them again when it
    /// restarts (an ingest's events are synced to disk before its reply). Without it
    /// the queue is memory: a node that dies loses the events it had not forwarded.
    #[arg(long, value_name = "DIR", help_heading = "Cluster")]
    pub queue_dir: Option<PathBuf>,
    /// A PEM file of the CA certificates that sign the peers' TLS certificates: with
    /// it, `https://` peers are trusted only if signed by one of them (else by the
    /// system's CAs).
    #[arg(long, value_name = "FILE", help_heading = "Cluster")]
    pub peer_ca: Option<PathBuf>,
    /// The client certificate (PEM) this node presents to its peers, for peers that
    /// require one (`--tls-client-ca`); with --peer-key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "peer_key",
        help_heading = "Cluster"
    )]
    pub peer_cert: Option<PathBuf>,
    /// The private key (PEM) of --peer-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "peer_cert",
        help_heading = "Cluster"
    )]
    pub peer_key: Option<PathBuf>,
    /// What one client may hold of the server.
    #[command(flatten)]
    pub limits: Box<LimitFlags>,
    /// HTTPS.
    #[command(flatten)]
    pub tls: TlsFlags,
}

/// The `serve` flags of TLS (docs/security.md, "TLS"); each overrides its `[server]`
/// key.
#[derive(Args, Debug, Default)]
pub struct TlsFlags {
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with this certificate chain (PEM,
    /// the server's certificate first); needs --tls-key. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1). Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate signed by a CA of this PEM file (mTLS): a
    /// client without one fails the handshake.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub tls_client_ca: Option<PathBuf>,
}

/// The `serve` flags of the limits (docs/configuration.md, "Limits"); each
/// overrides its `[server]` / `[server.limits]` key.
#[derive(Args, Debug, Default)]
pub struct LimitFlags {
    /// Seconds a connection has to deliver a complete request head, the first one
    /// whatever the protocol (counted from accept) [default: 10].
    #[arg(long, value_name = "SECS", help_heading = "Limits")]
    pub header_read_timeout: Option<f64>,
    /// Seconds a connection with no request in flight (HTTP/2: no open stream)
    /// stays open [default: 60].
    #[arg(long, value_name = "SECS", help_heading = "Limits")]
    pub idle_timeout: Option<f64>,
    /// Most connections open at once from one address (IPv6: one /64); more are
    /// closed at once [default: 256].
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds a request body may send nothing while the server waits for it
    /// (feeds too) before it is cut with 408 [default: 10].
    #[arg(long, value_name = "SECS", help_heading = "Limits")]
    pub body_stall_timeout: Option<f64>,
    /// Slowest average rate of a request body in bytes a second, 0 = none; not
    /// applied to feeds (?stream=1) [default: 1024].
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub body_min_rate: Option<u64>,
    /// Seconds a body may take before its average rate is checked [default: 10].
    #[arg(long, value_name = "SECS", help_heading = "Limits")]
    pub body_min_rate_after: Option<f64>,
    /// Most request body bytes buffered at once, all clients together; more get
    /// 503 with Retry-After [default: 67108864].
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub body_buffer_total: Option<usize>,
    /// Most request body bytes buffered at once for one user [default: 33554432].
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub body_buffer_per_user: Option<usize>,
    /// Failed authentications one address may make at once before its requests
    /// get 429 [default: 10].
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub auth_failure_burst: Option<u32>,
    /// Failed authentications a second one address may make after its burst
    /// [default: 1].
    #[arg(long, value_name = "PER_SEC", help_heading = "Limits")]
    pub auth_failure_rate: Option<f64>,
}

impl LimitFlags {
    fn settings(&self) -> LimitsSettings {
        LimitsSettings {
            idle_timeout: self.idle_timeout,
            max_connections_per_ip: self.max_connections_per_ip,
            body_stall_timeout: self.body_stall_timeout,
            body_min_rate: self.body_min_rate,
            body_min_rate_after: self.body_min_rate_after,
            body_buffer_total: self.body_buffer_total,
            body_buffer_per_user: self.body_buffer_per_user,
            auth_failure_burst: self.auth_failure_burst,
            auth_failure_rate: self.auth_failure_rate,
        }
    }
}

/// Runs the command; returns the process exit code.
pub fn run(args: &ServeArgs) -> Result<i32> {
    node::init_logging();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.workers {
        builder.worker_threads(usize::from(n));
    }
    let rt = builder.build()?;
    rt.block_on(async {
        let mut running = node::start(NodeOptions {
            config: args.config.clone(),
            listen: args.listen,
            archive_size: args.archive_size,
            heartbeat: args.heartbeat,
            max_streams: args.max_streams,
            node: args.node.clone(),
            body_limit: args.body_limit,
            insecure_no_auth: args.insecure_no_auth,
            header_read_timeout: args.limits.header_read_timeout,
            limits: args.limits.settings(),
            tls: TlsOptions {
                cert: args.tls.tls_cert.clone(),
                key: args.tls.tls_key.clone(),
                client_ca: args.tls.tls_client_ca.clone(),
            },
            default_archive_size: None,
            cluster: ClusterOptions {
                discovery: args.discovery,
                master: args.master.clone(),
                peers: args.peers.iter().cloned().collect(),
                etcd: args.etcd.clone(),
                secret_file: args.cluster_secret_file.clone(),
                lease_ttl: match args.lease_ttl {
                    Some(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => {
                        Some(std::time::Duration::from_secs_f64(s))
                    }
                    Some(s) => {
                        anyhow::bail!("--lease-ttl must be between 0 and 3600 seconds, not {s}")
                    }
                    None => None,
                },
                queue_dir: args.queue_dir.clone(),
                peer_ca: args.peer_ca.clone(),
                peer_cert: args.peer_cert.clone(),
                peer_key: args.peer_key.clone(),
            },
        })
        .await?;
        if let Some(reloader) = running.tls.clone() {
            reload_on_hangup(reloader)?;
        }
        {
            let scheme = if running.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {scheme}://{}", running.addr)?;
            out.flush()?;
        }
        tracing::info!(
            node = running.router.node(),
            archive = running.router.archive_capacity(),
            sinks = ?running.sink_names,
            "serving /diag/masterEvents"
        );
        // Crash-only: a router whose sequencer failed serves nothing useful; exit
        // non-zero so that a supervisor restarts the process (a warm restart
        // restores the archive from a file sink's log).
        let failure = tokio::select! {
            () = node::wait_for_signal() => None,
            why = running.failed() => Some(why),
        };
        if let Some(why) = failure {
            tracing::error!(error = %why, "this node can no longer serve; exiting");
            running.stop().await;
            return Ok(EXIT_ROUTER_FAILED);
        }
        tracing::info!("shutting down");
        running.stop().await;
        Ok(0)
    })
}

/// Reloads the TLS certificate and key on every SIGHUP, from now on (the handler is
/// installed before this returns). A failed reload is logged by the reloader and
/// changes nothing.
#[cfg(unix)]
fn reload_on_hangup(reloader: master_events_server::tls::TlsReloader) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("cannot watch SIGHUP (to reload the TLS files): {e}"))?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the TLS certificate and key");
            // The outcome is logged by the reloader (an ERROR naming the file).
            let _ = reloader.reload();
        }
    });
    Ok(())
}

/// Without SIGHUP there is nothing to watch: the files are read at start only.
#[cfg(not(unix))]
fn reload_on_hangup(_reloader: master_events_server::tls::TlsReloader) -> Result<()> {
    Ok(())
}
