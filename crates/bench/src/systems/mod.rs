//! The three systems under test, behind one interface.
//!
//! Owns: the [`Server`], [`Producer`] and [`Reader`] traits every system implements,
//! the [`Kind`] that names a system, and [`start`], which starts one on a free
//! loopback port in the run's temporary directory.
//!
//! Promises: each system is started as its own process (so its RSS can be read and
//! it competes for the same CPUs as the others do), listening on 127.0.0.1 only;
//! every connection the harness opens goes to 127.0.0.1; every wait is bounded by a
//! timeout. Each reader has its own connection.

pub mod master_events;
pub mod nats;
pub mod redis;
pub mod resp;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use futures_util::future::BoxFuture;
use tokio::net::TcpStream;

use crate::tally::{Clock, Tally};
use crate::workload::Mix;

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// This project: `master-events serve`, HTTP ingest and NDJSON streams.
    MasterEvents,
    /// Redis Streams: XADD with MAXLEN ~, XREAD BLOCK.
    Redis,
    /// NATS core publish/subscribe (JetStream for retention).
    Nats,
}

impl Kind {
    /// The name used in tables and flags.
    pub fn name(self) -> &'static str {
        match self {
            Kind::MasterEvents => "master-events",
            Kind::Redis => "redis",
            Kind::Nats => "nats",
        }
    }

    /// Every system, in report order.
    pub const ALL: [Kind; 3] = [Kind::MasterEvents, Kind::Redis, Kind::Nats];
}

/// Where the programs are and how the systems are set up.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The `master-events` binary.
    pub master_events_bin: PathBuf,
    /// A command `master-events` is run under (a profiler), empty for none.
    pub master_events_wrap: Vec<String>,
    /// Extra arguments for `master-events serve`, after the harness's own.
    pub master_events_args: Vec<String>,
    /// `redis-server`.
    pub redis_bin: PathBuf,
    /// `nats-server`.
    pub nats_bin: PathBuf,
    /// The run's temporary directory.
    pub dir: PathBuf,
    /// Events retained (this project's archive size, Redis's `MAXLEN ~`, the
    /// JetStream stream's `max_messages`).
    pub retain: usize,
    /// Events per ingest request / pipelined batch in throughput runs.
    pub batch: usize,
    /// Requests (this project) or batches (Redis) in flight at once.
    pub window: usize,
    /// How this project's producer sends: a request per batch, or `window` feeds.
    pub ingest: IngestMode,
    /// The mix.
    pub mix: Arc<Mix>,
    /// The run's clock.
    pub clock: Clock,
    /// Whether the server should be set up for retention measurements (NATS:
    /// JetStream on).
    pub retention: bool,
    /// The most client connections a scenario of the run opens at once (Redis's
    /// `--maxclients`; the watchers scenario's streams and a margin).
    pub max_connections: usize,
    /// The most streams a scenario of the run opens at once, passed as this
    /// project's `--max-streams` (0: not passed, the server's default).
    pub max_streams: usize,
}

/// How this project's producer sends its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestMode {
    /// `POST /diag/masterEvents`, one request per batch, each answered.
    Requests,
    /// `POST /diag/masterEvents?stream=1`: `--window` requests whose bodies take
    /// the batches in turn as they are produced, each answered when the producer
    /// is done.
    Feed,
}

impl IngestMode {
    /// How the report says it.
    pub fn describe(self) -> &'static str {
        match self {
            IngestMode::Requests => "a request per batch",
            IngestMode::Feed => "through feeds (`?stream=1`)",
        }
    }
}

/// A running system.
pub trait Server: Send + Sync {
    /// Which system.
    fn kind(&self) -> Kind;
    /// The server process's id.
    fn pid(&self) -> u32;
    /// The server process's RSS, bytes.
    fn rss_bytes(&self) -> Result<u64>;
    /// A reader, subscribed (live only) by the time the future resolves; with
    /// `latency`, it reads the stamp of every stamped event.
    fn reader(&self, latency: bool) -> BoxFuture<'static, Result<Box<dyn Reader>>>;
    /// The producer.
    fn producer(&self) -> BoxFuture<'static, Result<Box<dyn Producer>>>;
    /// Produces `total` events into the system's retained store and waits until they
    /// are stored.
    fn fill_retained(&self, total: u64) -> BoxFuture<'_, Result<()>>;
    /// How many events the system retains now.
    fn retained(&self) -> BoxFuture<'_, Result<u64>>;
    /// The size of the retained events by the system's own account (this project:
    /// the archive's bytes; Redis: `MEMORY USAGE` of the stream; NATS: the JetStream
    /// stream's bytes), when it says.
    fn store_bytes(&self) -> BoxFuture<'_, Result<Option<u64>>>;
    /// The address it serves on (127.0.0.1), where a scenario connects by itself
    /// (the watchers scenario, with readers of its own).
    fn addr(&self) -> std::net::SocketAddr;
    /// One idle stream connection (subscribed, nothing flowing), over a raw socket.
    fn idle_connection(&self) -> BoxFuture<'static, Result<TcpStream>>;
    /// Checks that `n` idle connections are registered as readers, where the system
    /// can tell.
    fn check_idle(&self, n: usize) -> BoxFuture<'_, Result<()>>;
    /// Fails if the server process has died.
    fn check_running(&mut self) -> Result<()>;
    /// Stops the server (kills it).
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// One stream reader.
pub trait Reader: Send {
    /// Waits for data and feeds what arrived to `tally`; `Ok(false)` when the stream
    /// ended. Cancel-safe: dropping the future loses nothing and leaves the reader
    /// usable.
    fn read<'a>(
        &'a mut self,
        tally: &'a mut Tally,
        clock: &'a Clock,
    ) -> BoxFuture<'a, Result<bool>>;
}

/// The one producer of a run.
pub trait Producer: Send {
    /// Sends the `n` events of the mix starting at position `start` (the `start`-th
    /// event produced in this run, counting from 0), stamped with `stamp_ns` when
    /// given. May return before the system acknowledged them (within its window).
    fn send(&mut self, start: u64, n: usize, stamp_ns: Option<u64>) -> BoxFuture<'_, Result<()>>;
    /// Waits until everything sent is acknowledged; returns the first and last
    /// sequence numbers readers will see for this run's events.
    fn finish(&mut self) -> BoxFuture<'_, Result<(u64, u64)>>;
}

/// Sends `total` events through `p` in batches of `batch` (at least 1), then waits
/// until all are acknowledged: how a store is filled for the memory rows.
pub async fn produce_all(p: &mut dyn Producer, total: u64, batch: usize) -> Result<()> {
    let batch = batch.max(1) as u64;
    let mut i = 0;
    while i < total {
        let n = batch.min(total - i);
        p.send(i, n as usize, None).await?;
        i += n;
    }
    p.finish().await?;
    Ok(())
}

/// Starts `kind`.
pub async fn start(kind: Kind, setup: &Setup) -> Result<Box<dyn Server>> {
    Ok(match kind {
        Kind::MasterEvents => Box::new(master_events::MasterEvents::start(setup).await?),
        Kind::Redis => Box::new(redis::Redis::start(setup).await?),
        Kind::Nats => Box::new(nats::Nats::start(setup).await?),
    })
}
