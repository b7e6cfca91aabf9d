//! A cluster node: routes this node's events to the master, follows the master's
//! archive, and takes over when discovery makes it the master.
//!
//! Owns: the node's role (master of an epoch, follower of a master, or waiting), and
//! the three tasks that act on it:
//! - the **role manager** watches [`MasterDiscovery`]; on becoming master it first
//!   catches up from the most advanced peer it can reach (so `seq` continues from
//!   the most advanced replica), then notes `becameMaster`;
//! - the **delivery** task empties the [`NodeQueue`]: on the master straight into the
//!   local router (no extra hop: a cause noted on the master is sequenced before its
//!   effects elsewhere), on a follower as batches POSTed to the master's
//!   `/cluster/forward` with the cluster secret and the master's epoch, retried with
//!   backoff across master changes;
//! - the **follower** streams the master's `/diag/masterEvents` from its own last
//!   `seq` into its router as a replica (same seqs, same bytes), so any node serves
//!   the stream, and commits this node's events as they come back.
//!
//! Promises:
//! - Events noted on a node reach the master in order and are sequenced once: each
//!   carries `origin` and `originSeq`, stays queued until seen in the archive, is
//!   re-sent after a change of master, and the master's sequencer drops what it
//!   already has.
//! - A deposed master stops sequencing as soon as discovery says so: it no longer
//!   empties its queue into its router nor accepts forwarded events (they name the
//!   epoch they are for; another epoch gets 409).
//! - A client reading from a surviving node sees the archive continue across a change
//!   of master with no duplicate and no gap (or an explicit `gap` frame when events
//!   truly are gone: its node had fallen behind the master's archive).
//!
//! Not handled: a replica that is ahead of a new master (it held events the new
//! master could not reach during its catch-up) is reported in the log, not rolled
//! back.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use master_events_events::catalog::BecameMaster;
use master_events_events::{parse_line, Record, StreamLine};
use master_events_router::Router;
use master_events_server::hooks::{Ingest, IngestError, IngestFuture, IngestOutcome};
use master_events_server::{ClusterHealth, ClusterView, ForwardingHealth, ForwardingState};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::discovery::{MasterDiscovery, MasterView};
use crate::health::{refusal_of, transport_cause, ClusterMetrics, Counters, Health, MetricsSource};
use crate::queue::NodeQueue;

/// The most events sent in one forward.
pub const FORWARD_BATCH: usize = 2048;
/// How long an ingest request waits for its events to be sequenced before it is
/// answered `202 Accepted` (they stay queued).
pub const INGEST_WAIT: Duration = Duration::from_secs(10);
/// A follower's stream of the master that brings nothing (not even a heartbeat,
/// asked for every second) for this long is given up: the master is unreachable.
pub const STREAM_SILENCE: Duration = Duration::from_secs(3);
/// How long a forward POST may take (a change of master aborts it at once).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new master waits for each peer (all asked at once) to say how far
/// its replica is, before it takes over: a peer that cannot answer a small GET in
/// this time (e.g. the frozen old master) is not caught up from.
pub const CATCH_UP_ASK: Duration = Duration::from_millis(400);

/// How a cluster node is set up.
#[derive(Clone)]
pub struct ClusterConfig {
    /// This node's name (the `origin` of its events).
    pub node: String,
    /// This node's `ip:port`, for its `becameMaster` event.
    pub host: String,
    /// Every node's base URL by name (this node's own entry is not needed).
    pub peers: BTreeMap<String, String>,
    /// The secret nodes present to each other (never logged).
    pub secret: Option<String>,
    /// Events the node queue holds at most.
    pub queue_capacity: usize,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node", &self.node)
            .field("host", &self.host)
            .field("peers", &self.peers)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("queue_capacity", &self.queue_capacity)
            .finish()
    }
}

/// What this node is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// No master known, or taking over: nothing is delivered.
    Waiting {
        /// The epoch of the last view.
        epoch: u64,
    },
    /// This node sequences the cluster's events.
    Master {
        /// Its term.
        epoch: u64,
    },
    /// Another node is master.
    Follower {
        /// Its name.
        master: String,
        /// Its base URL (`None` when no `--peer` names it).
        url: Option<String>,
        /// Its term.
        epoch: u64,
    },
}

struct Inner {
    config: ClusterConfig,
    router: Router,
    queue: NodeQueue,
    role: watch::Sender<Role>,
    view: watch::Sender<ClusterView>,
    backend: &'static str,
    http: reqwest::Client,
    cancel: CancellationToken,
    /// The highest seq a follower reported its replica holds (on the master).
    replicated: watch::Sender<u64>,
    /// The link to the master, for `/cluster`, `/ready` and `/metrics`.
    health: Health,
}

/// What the metrics collector reads.
struct Source(Arc<Inner>);

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterNode")
    }
}

impl MetricsSource for Source {
    fn current(&self) -> ClusterHealth {
        self.0.current_health()
    }

    fn counters(&self) -> &Counters {
        &self.0.health.counters
    }

    fn queue_refused(&self) -> u64 {
        self.0.queue.refused()
    }
}

/// A running cluster node (cheap to clone).
#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    discovery: Arc<dyn MasterDiscovery>,
}

fn backoff(attempt: u32) -> Duration {
    let base = 50u64.saturating_mul(1 << attempt.min(6));
    let capped = base.min(2_000);
    Duration::from_millis(capped / 2 + rand::random::<u64>() % (capped / 2 + 1))
}

impl ClusterNode {
    /// Starts the node's tasks. `view` is what `GET /cluster` shows; the node keeps
    /// it current.
    pub fn start(
        config: ClusterConfig,
        router: Router,
        discovery: Arc<dyn MasterDiscovery>,
        view: watch::Sender<ClusterView>,
    ) -> ClusterNode {
        // originSeq only has to grow: starting from the clock keeps it growing across
        // a restart that lost the queue (the archive may not remember this node).
        let now_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let start_origin_seq = (router.high_water(&config.node) + 1).max(now_micros);
        let queue = NodeQueue::new(&config.node, config.queue_capacity, start_origin_seq);
        let (role, _) = watch::channel(Role::Waiting { epoch: 0 });
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let node = ClusterNode {
            inner: Arc::new(Inner {
                config,
                router,
                queue,
                role,
                view,
                backend: discovery.backend(),
                http,
                cancel: CancellationToken::new(),
                replicated: watch::channel(0).0,
                health: Health::new(),
            }),
            tasks: Arc::new(Mutex::new(Vec::new())),
            discovery,
        };
        let manager = tokio::spawn(role_manager(
            Arc::clone(&node.inner),
            node.discovery.watch(),
        ));
        let delivery = tokio::spawn(delivery(Arc::clone(&node.inner)));
        node.tasks.lock().extend([manager, delivery]);
        node
    }

    /// Notes events on this node (never blocks; refused and counted when the
    /// queue is full).
    pub fn note(&self, records: Vec<Record>) -> bool {
        match self.inner.queue.push(records, false) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "events refused by the node queue");
                false
            }
        }
    }

    /// The node's role now.
    pub fn role(&self) -> Role {
        self.inner.role.borrow().clone()
    }

    /// A watch of the node's role.
    pub fn watch_role(&self) -> watch::Receiver<Role> {
        self.inner.role.subscribe()
    }

    /// Events waiting in the node queue.
    pub fn queued(&self) -> usize {
        self.inner.queue.len()
    }

    /// How this node's link to the master is doing now (what `GET /cluster` shows).
    pub fn health(&self) -> ClusterHealth {
        self.inner.current_health()
    }

    /// The node's cluster metrics (reachability, forwarding state, queue, 202s),
    /// encoded at each scrape, followed by those of `next`: hand the result to the
    /// server's `set_extra_collector`.
    pub fn metrics(
        &self,
        next: Option<Box<dyn prometheus_client::collector::Collector>>,
    ) -> Box<dyn prometheus_client::collector::Collector> {
        Box::new(ClusterMetrics {
            source: Arc::new(Source(Arc::clone(&self.inner))),
            next,
        })
    }

    /// Stops the node's tasks and leaves the election. Events still queued then
    /// were never sequenced: they are counted and reported at WARN.
    pub async fn stop(&self) {
        self.inner.cancel.cancel();
        let tasks: Vec<_> = self.tasks.lock().drain(..).collect();
        for t in tasks {
            let _ = t.await;
        }
        let left = self.inner.queue.len();
        if left > 0 {
            self.inner
                .health
                .counters
                .unsequenced
                .fetch_add(left as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                events = left,
                "events queued on this node were never sequenced: the node stops before a master took them"
            );
        }
        self.discovery.shutdown().await;
    }
}

impl Inner {
    fn secret_header(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.secret {
            Some(s) => req.bearer_auth(s),
            None => req,
        }
    }

    fn url_of(&self, node: &str) -> Option<String> {
        self.config
            .peers
            .get(node)
            .map(|u| u.trim_end_matches('/').to_owned())
    }

    fn set_role(&self, role: Role, view: &MasterView) {
        let is_master = matches!(role, Role::Master { .. });
        if is_master {
            self.health.became_master();
        } else {
            self.health.reset_link();
        }
        self.role.send_replace(role);
        self.view.send_replace(ClusterView {
            node: self.config.node.clone(),
            master: view.master.clone(),
            is_master,
            epoch: view.epoch,
            discovery: self.backend.to_owned(),
        });
        self.queue.resend_all();
    }

    /// The link to the master now (see [`ClusterHealth`]).
    fn current_health(&self) -> ClusterHealth {
        let role = self.role.borrow().clone();
        let st = self.health.snapshot();
        let last_contact = st.last_contact.map(|t| t.elapsed().as_secs_f64());
        let (reachable, last_contact, not_ready) = match &role {
            Role::Master { .. } => (true, None, None),
            Role::Waiting { .. } => (
                false,
                last_contact,
                Some("no master to follow: an election or a takeover is in progress".to_owned()),
            ),
            Role::Follower {
                master, url: None, ..
            } => (
                false,
                None,
                Some(format!("no --peer gives the URL of the master {master}")),
            ),
            Role::Follower { master, .. } => {
                let caught_up = st
                    .catch_up_target
                    .is_some_and(|t| self.router.last_seq() >= t);
                let reason = if !st.connected {
                    Some(match &st.reach_error {
                        Some(e) => format!("master {master} unreachable: {e}"),
                        None => format!("connecting to the master {master}"),
                    })
                } else if st.forward != ForwardingState::Ok {
                    Some(format!(
                        "forwarding to the master {master} fails: {}",
                        st.forward_error.as_deref().unwrap_or("unknown error")
                    ))
                } else if !caught_up {
                    Some(format!(
                        "catching up with the archive of the master {master}"
                    ))
                } else {
                    None
                };
                (st.connected, last_contact, reason)
            }
        };
        ClusterHealth {
            master_reachable: reachable,
            last_contact_secs_ago: last_contact,
            forwarding: ForwardingHealth {
                state: st.forward,
                last_error: st.forward_error,
                queued: self.queue.len() as u64,
                oldest_queued_secs: self.queue.oldest_age().map(|d| d.as_secs_f64()),
            },
            not_ready,
        }
    }

    /// Appends a master's lines to the local archive; commits this node's events.
    async fn replicate(
        &self,
        records: Vec<Record>,
    ) -> Result<(), master_events_router::RouterError> {
        if records.is_empty() {
            return Ok(());
        }
        let mine: Vec<(u64, u64)> = records
            .iter()
            .filter(|r| r.envelope.origin.as_deref() == Some(self.config.node.as_str()))
            .filter_map(|r| Some((r.envelope.origin_seq?, r.envelope.seq?)))
            .collect();
        self.router.replicate(records).await?;
        for (origin_seq, seq) in mine {
            self.queue.commit(origin_seq, seq);
        }
        Ok(())
    }
}

/// Follows discovery: becomes master (after catching up), follower, or waits.
async fn role_manager(inner: Arc<Inner>, mut views: watch::Receiver<MasterView>) {
    let mut follower: Option<(CancellationToken, JoinHandle<()>)> = None;
    loop {
        let view = views.borrow_and_update().clone();
        if let Some((token, task)) = follower.take() {
            token.cancel();
            let _ = task.await;
        }
        match &view.master {
            Some(m) if *m == inner.config.node => {
                inner.set_role(Role::Waiting { epoch: view.epoch }, &view);
                catch_up(&inner).await;
                if *views.borrow() != view {
                    continue; // the view changed while catching up
                }
                tracing::info!(
                    epoch = view.epoch,
                    last_seq = inner.router.last_seq(),
                    "this node is the master"
                );
                inner.set_role(Role::Master { epoch: view.epoch }, &view);
                let became = Record::new(BecameMaster {
                    node: inner.config.node.clone(),
                    host: inner.config.host.clone(),
                });
                if let Err(e) = inner.queue.push(vec![became], false) {
                    tracing::warn!(error = %e, "cannot note becameMaster");
                }
            }
            Some(m) => {
                let url = inner.url_of(m);
                if url.is_none() {
                    tracing::error!(master = %m, "no --peer gives the master's URL: cannot follow it");
                }
                inner.set_role(
                    Role::Follower {
                        master: m.clone(),
                        url: url.clone(),
                        epoch: view.epoch,
                    },
                    &view,
                );
                if let Some(url) = url {
                    let token = inner.cancel.child_token();
                    let task =
                        tokio::spawn(follow(Arc::clone(&inner), m.clone(), url, token.clone()));
                    follower = Some((token, task));
                }
            }
            None => inner.set_role(Role::Waiting { epoch: view.epoch }, &view),
        }
        tokio::select! {
            _ = inner.cancel.cancelled() => break,
            changed = views.changed() => if changed.is_err() { break },
        }
    }
    if let Some((token, task)) = follower.take() {
        token.cancel();
        let _ = task.await;
    }
}

/// Before sequencing, a new master fetches what the most advanced reachable peer
/// has beyond its own archive, so `seq` continues from there.
async fn catch_up(inner: &Inner) {
    let mine = inner.router.last_seq();
    // Every peer at once: a frozen one costs its timeout once, not once per peer.
    let asks = inner
        .config
        .peers
        .iter()
        .filter(|(name, _)| **name != inner.config.node)
        .map(|(_, url)| {
            let url = url.trim_end_matches('/').to_owned();
            async move {
                let last = last_seq_of(inner, &url, CATCH_UP_ASK).await;
                (last.unwrap_or(0), url)
            }
        });
    let mut best: Option<(u64, String)> = None;
    for (last, url) in futures_util::future::join_all(asks).await {
        if last > mine && best.as_ref().is_none_or(|(b, _)| last > *b) {
            best = Some((last, url));
        }
    }
    let Some((last, url)) = best else { return };
    tracing::info!(from = %url, mine, theirs = last, "catching up before taking over");
    let req = inner
        .secret_header(inner.http.get(format!(
            "{url}/diag/masterEvents?o=1&since={mine}&heartbeat=0"
        )))
        .timeout(Duration::from_secs(5));
    match req.send().await {
        Ok(resp) if resp.status().is_success() => {
            if mine == 0 {
                // An empty archive continues the history of the peer it catches up from.
                let peer_history = resp
                    .headers()
                    .get(master_events_server::HISTORY_HEADER)
                    .and_then(|v| v.to_str().ok());
                if let Some(h) = peer_history {
                    if inner.router.set_history(h).is_err() {
                        tracing::warn!(from = %url, "catch-up: the peer sent an invalid history id");
                        return;
                    }
                }
            }
            let mut stream = resp.bytes_stream();
            let mut lines = LineSplitter::default();
            while let Some(Ok(chunk)) = stream.next().await {
                if apply_chunk(inner, &mut lines, &chunk).await.is_err() {
                    break;
                }
            }
        }
        Ok(resp) => tracing::warn!(status = %resp.status(), "catch-up refused"),
        Err(e) => tracing::warn!(error = %e, "catch-up failed"),
    }
}

/// A peer's last seq, from its `GET /cluster` (`None` when it does not answer in
/// time).
async fn last_seq_of(inner: &Inner, url: &str, within: Duration) -> Option<u64> {
    let req = inner
        .secret_header(inner.http.get(format!("{url}/cluster")))
        .timeout(within);
    let resp = req.send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let text = resp.text().await.ok()?;
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()?
        .get("last_seq")?
        .as_u64()
}

/// Splits a byte stream into lines.
#[derive(Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn feed(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..i]);
            out.push(line);
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        out
    }
}

/// Applies the complete lines of one chunk of a master's stream.
async fn apply_chunk(
    inner: &Inner,
    lines: &mut LineSplitter,
    chunk: &Bytes,
) -> Result<(), master_events_router::RouterError> {
    let mut batch = Vec::new();
    for line in lines.feed(chunk) {
        if line.is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(StreamLine::Event(rec)) => batch.push(rec),
            Ok(StreamLine::Heartbeat(hb)) => inner.health.heartbeat(hb.seq),
            Ok(StreamLine::Reset(reset)) => {
                // The master's archive does not continue this replica's: another
                // history, or this replica is ahead of it. Replicating on would mix
                // two histories, so the rest of this chunk is not applied.
                inner.replicate(std::mem::take(&mut batch)).await?;
                tracing::error!(
                    master_history = %reset.history,
                    master_last_seq = reset.last_seq,
                    replica_last_seq = reset.requested_since,
                    reason = %reset.reason,
                    "the master's archive does not continue this replica's; not following it"
                );
                return Err(master_events_router::RouterError::ReplicaGap {
                    expected: reset.requested_since + 1,
                    found: reset.oldest_seq,
                });
            }
            Ok(StreamLine::Gap(gap)) => {
                inner.replicate(std::mem::take(&mut batch)).await?;
                tracing::warn!(
                    from = gap.from_seq,
                    to = gap.to_seq,
                    "the master no longer has events this replica missed"
                );
                inner.router.skip_to(gap.to_seq + 1).await?;
            }
            Err(e) => tracing::warn!(error = %e, "a line from the master does not parse; skipped"),
        }
    }
    inner.replicate(batch).await
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Tells the master how far this replica is, whenever it advanced (every 20 ms at
/// most): the master acknowledges its own events once a replica holds them. A
/// failed report is retried with backoff (up to 2 s), and a refusal (401/403)
/// shows as a refused forwarding state.
async fn report_replicated(inner: Arc<Inner>, master: String, url: String) {
    let mut reported = 0;
    let mut attempt = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let last = inner.router.last_seq();
        if last <= reported {
            continue;
        }
        let req = inner
            .secret_header(inner.http.post(format!(
                "{url}/cluster/replicated?node={}&seq={last}",
                percent_encode(&inner.config.node)
            )))
            .timeout(Duration::from_secs(2));
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                reported = last;
                attempt = 0;
                inner.health.forward_ok(&master);
                continue;
            }
            Ok(r) => {
                let (state, cause) = refusal_of(r.status(), inner.config.secret.is_some());
                tracing::debug!(%master, cause = %cause, "replication report refused; will retry");
                if state == ForwardingState::Refused {
                    inner.health.forward_failed(&master, state, cause);
                }
            }
            Err(e) => {
                // The stream notices an unreachable master; this only backs off.
                tracing::debug!(%master, cause = %transport_cause(&e), "replication report failed; will retry");
            }
        }
        attempt += 1;
        tokio::time::sleep(backoff(attempt)).await;
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Streams the master's archive into the local router until cancelled; keeps the
/// link's health (reachable or not, and why; caught up or not).
async fn follow(inner: Arc<Inner>, master: String, url: String, token: CancellationToken) {
    let _reporter = AbortOnDrop(tokio::spawn(report_replicated(
        Arc::clone(&inner),
        master.clone(),
        url.clone(),
    )));
    let mut attempt = 0u32;
    loop {
        let since = inner.router.last_seq();
        // A replica that holds events resumes in its history: if the master's is
        // another, the master answers with a `reset` frame instead of silence. An
        // empty replica takes the master's history.
        let history = match since {
            0 => String::new(),
            _ => format!("&history={}", inner.router.history()),
        };
        let req = inner.secret_header(inner.http.get(format!(
            "{url}/diag/masterEvents?since={since}{history}&heartbeat=1"
        )));
        let mut opened = false;
        let run = async {
            let resp = req.send().await.map_err(|e| transport_cause(&e))?;
            if !resp.status().is_success() {
                let (state, cause) = refusal_of(resp.status(), inner.config.secret.is_some());
                if state == ForwardingState::Refused {
                    inner.health.forward_failed(&master, state, cause.clone());
                }
                return Err::<(), String>(cause);
            }
            if since == 0 {
                let master_history = resp
                    .headers()
                    .get(master_events_server::HISTORY_HEADER)
                    .and_then(|v| v.to_str().ok());
                if let Some(h) = master_history {
                    if inner.router.set_history(h).is_err() {
                        return Err("the master sent an invalid history id".to_owned());
                    }
                }
            }
            // Where the master is now: the replica is caught up once it holds that.
            let target = last_seq_of(&inner, &url, Duration::from_secs(1)).await;
            inner.health.stream_up(&master, target);
            opened = true;
            let mut stream = resp.bytes_stream();
            let mut lines = LineSplitter::default();
            loop {
                let next = tokio::time::timeout(STREAM_SILENCE, stream.next()).await;
                match next {
                    Err(_) => {
                        return Err(format!(
                            "no heartbeat from the master for {} s",
                            STREAM_SILENCE.as_secs()
                        ))
                    }
                    Ok(None) => return Err("the master ended the stream".to_owned()),
                    Ok(Some(Err(e))) => return Err(transport_cause(&e)),
                    Ok(Some(Ok(chunk))) => {
                        inner.health.contact();
                        if let Err(e) = apply_chunk(&inner, &mut lines, &chunk).await {
                            return Err(e.to_string());
                        }
                    }
                }
            }
        };
        let outcome = tokio::select! {
            _ = token.cancelled() => return,
            r = run => r,
        };
        if opened {
            attempt = 0;
        }
        if let Err(cause) = outcome {
            tracing::debug!(%master, cause = %cause, "following the master: reconnecting");
            inner.health.stream_down(&master, cause);
        }
        attempt += 1;
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(backoff(attempt)) => {}
        }
    }
}

/// Empties the node queue towards the master. A change of role aborts a forward
/// in flight at once (the POST is dropped, the batch goes out again to whoever is
/// master now), so a frozen master holds nobody's events beyond its lease.
async fn delivery(inner: Arc<Inner>) {
    let mut roles = inner.role.subscribe();
    let mut attempt = 0u32;
    loop {
        let role = roles.borrow_and_update().clone();
        let batch = inner.queue.unsent(FORWARD_BATCH);
        let wait_for_more = batch.is_empty();
        if let (true, Role::Follower { master, .. }) = (inner.queue.is_empty(), &role) {
            inner.health.nothing_to_forward(master);
        }
        let delivered = if batch.is_empty() {
            true
        } else {
            match &role {
                Role::Master { .. } => deliver_locally(&inner, batch).await,
                Role::Follower {
                    master,
                    url: Some(url),
                    epoch,
                } => tokio::select! {
                    _ = inner.cancel.cancelled() => return,
                    changed = roles.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        tracing::debug!(%master, "a change of master: the forward in flight is abandoned");
                        attempt = 0;
                        continue;
                    }
                    sent = forward(&inner, master, url, *epoch, batch) => match sent {
                        Forwarded::Yes => true,
                        Forwarded::No => false,
                        Forwarded::NotYetMaster => {
                            // The new master is still catching up: ask again soon.
                            attempt = 0;
                            false
                        }
                    },
                },
                _ => false,
            }
        };
        if delivered {
            attempt = 0;
            if !wait_for_more {
                continue;
            }
            tokio::select! {
                _ = inner.cancel.cancelled() => return,
                _ = inner.queue.wake.notified() => {}
                _ = roles.changed() => {}
            }
        } else {
            attempt += 1;
            tokio::select! {
                _ = inner.cancel.cancelled() => return,
                _ = roles.changed() => {}
                _ = tokio::time::sleep(backoff(attempt)) => {}
            }
        }
    }
}

/// On the master: the node's own events go straight into its router.
async fn deliver_locally(inner: &Inner, batch: Vec<Record>) -> bool {
    let before = inner.router.high_water(&inner.config.node);
    let fresh: Vec<u64> = batch
        .iter()
        .filter_map(|r| r.envelope.origin_seq)
        .filter(|n| *n > before)
        .collect();
    let last_os = batch
        .last()
        .and_then(|r| r.envelope.origin_seq)
        .unwrap_or(0);
    match inner.router.publish_batch(batch).await {
        Ok(range) => {
            let mut last_seq = inner.router.last_seq();
            for (origin_seq, seq) in fresh.iter().zip(range) {
                inner.queue.commit(*origin_seq, seq);
                last_seq = seq;
            }
            inner.queue.commit(last_os, last_seq);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "the local router refused events");
            false
        }
    }
}

/// What became of one forward.
enum Forwarded {
    /// The master took the batch.
    Yes,
    /// It failed (unreachable, refused): retried with backoff.
    No,
    /// The master is not (yet) master of this epoch (409): it is taking over.
    NotYetMaster,
}

/// On a follower: POST a batch to the master; commits come back through the stream.
async fn forward(
    inner: &Inner,
    master: &str,
    url: &str,
    epoch: u64,
    batch: Vec<Record>,
) -> Forwarded {
    let last_os = batch
        .last()
        .and_then(|r| r.envelope.origin_seq)
        .unwrap_or(0);
    let mut body = Vec::with_capacity(batch.len() * 256);
    for rec in &batch {
        rec.encode_line(&mut body);
    }
    let req = inner
        .secret_header(inner.http.post(format!("{url}/cluster/forward")))
        .header("content-type", "application/x-ndjson")
        .header("x-master-events-epoch", epoch.to_string())
        .timeout(FORWARD_TIMEOUT)
        .body(body);
    match req.send().await {
        Ok(resp) if resp.status().is_success() => {
            inner.queue.mark_sent(last_os);
            inner.health.forward_ok(master);
            Forwarded::Yes
        }
        Ok(resp) => {
            let status = resp.status();
            let (state, cause) = refusal_of(status, inner.config.secret.is_some());
            tracing::debug!(%master, cause = %cause, "the master refused forwarded events; will retry");
            inner.health.forward_failed(master, state, cause);
            if status == reqwest::StatusCode::CONFLICT {
                Forwarded::NotYetMaster
            } else {
                Forwarded::No
            }
        }
        Err(e) => {
            let cause = format!("master unreachable: {}", transport_cause(&e));
            tracing::debug!(%master, cause = %cause, "cannot forward to the master; will retry");
            inner
                .health
                .forward_failed(master, ForwardingState::Retrying, cause);
            Forwarded::No
        }
    }
}

impl ClusterNode {
    /// Events answered 202: counted, and followed until they are sequenced (INFO)
    /// or the node gives them up (WARN), so none is lost without a word.
    fn watch_queued(&self, n: usize, rx: tokio::sync::oneshot::Receiver<RangeInclusive<u64>>) {
        use std::sync::atomic::Ordering;
        let inner = Arc::clone(&self.inner);
        let counters = &inner.health.counters;
        counters
            .queued_replies
            .fetch_add(n as u64, Ordering::Relaxed);
        let health = inner.current_health();
        tracing::warn!(
            events = n,
            master_reachable = health.master_reachable,
            forwarding = ?health.forwarding.state,
            cause = health.forwarding.last_error.as_deref().unwrap_or(""),
            "events answered 202: queued on this node, not yet sequenced"
        );
        let task = tokio::spawn(async move {
            tokio::select! {
                got = rx => match got {
                    Ok(range) => {
                        inner.health.counters.late_sequenced.fetch_add(n as u64, Ordering::Relaxed);
                        tracing::info!(
                            events = n,
                            first_seq = *range.start(),
                            last_seq = *range.end(),
                            "events answered 202 earlier are now sequenced"
                        );
                    }
                    Err(_) => {
                        // The queue let go of them: only when the node stops (and
                        // `stop` counts what is left).
                        tracing::warn!(events = n, "events answered 202 were never sequenced");
                    }
                },
                _ = inner.cancel.cancelled() => {}
            }
        });
        let mut tasks = self.tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

impl Ingest for ClusterNode {
    fn ingest(&self, records: Vec<Record>) -> IngestFuture<'_> {
        Box::pin(async move {
            let n = records.len();
            let rx = self
                .inner
                .queue
                .push(records, true)
                .map_err(|e| IngestError::Unavailable(e.to_string()))?;
            let Some(mut rx) = rx else {
                return Ok(IngestOutcome::Sequenced(empty_range(
                    self.inner.router.last_seq(),
                )));
            };
            let deadline = tokio::time::Instant::now() + INGEST_WAIT;
            let range = match tokio::time::timeout_at(deadline, &mut rx).await {
                Ok(Ok(range)) => range,
                Ok(Err(_)) => {
                    return Err(IngestError::Unavailable(
                        "the node is shutting down: the events were not sequenced".to_owned(),
                    ))
                }
                Err(_) => {
                    self.watch_queued(n, rx);
                    return Ok(IngestOutcome::Queued { accepted: n });
                }
            };
            // Sequenced by this node as master: acknowledge once a replica holds
            // them too, so that losing this node cannot lose what it acknowledged.
            let has_peers = self
                .inner
                .config
                .peers
                .keys()
                .any(|p| *p != self.inner.config.node);
            if has_peers && matches!(self.role(), Role::Master { .. }) && !range.is_empty() {
                let end = *range.end();
                let mut replicated = self.inner.replicated.subscribe();
                let confirmed =
                    tokio::time::timeout_at(deadline, replicated.wait_for(|r| *r >= end)).await;
                if !matches!(confirmed, Ok(Ok(_))) {
                    return Ok(IngestOutcome::Queued { accepted: n });
                }
            }
            Ok(IngestOutcome::Sequenced(range))
        })
    }

    fn health(&self) -> Option<ClusterHealth> {
        Some(self.inner.current_health())
    }

    fn replicated(&self, _node: &str, seq: u64) {
        self.inner.replicated.send_if_modified(|r| {
            if seq > *r {
                *r = seq;
                true
            } else {
                false
            }
        });
    }

    fn forwarded(&self, epoch: u64, records: Vec<Record>) -> IngestFuture<'_> {
        Box::pin(async move {
            let role = self.inner.role.borrow().clone();
            match role {
                Role::Master { epoch: mine } if mine == epoch => self
                    .inner
                    .router
                    .publish_batch(records)
                    .await
                    .map(IngestOutcome::Sequenced)
                    .map_err(|e| IngestError::Unavailable(e.to_string())),
                other => {
                    let view = self.inner.view.borrow().clone();
                    let _ = other;
                    Err(IngestError::NotMaster {
                        master: view.master,
                        epoch: view.epoch,
                    })
                }
            }
        })
    }
}

#[allow(clippy::reversed_empty_ranges)]
fn empty_range(last: u64) -> RangeInclusive<u64> {
    last + 1..=last
}
