//! A cluster node: routes this node's events to the master, follows the master's
//! archive, and takes over when discovery makes it the master.
//!
//! Owns: the node's role (master of an epoch, follower of a master, or waiting), and
//! the tasks that act on it:
//! - the **role manager** watches [`MasterDiscovery`]; on becoming master it takes
//!   over by the rules of [`crate::replication`] (promise the epoch, a quorum of
//!   votes, catch up from the most up-to-date voter, begin the epoch), then notes
//!   `becameMaster`;
//! - the **delivery** task empties the [`NodeQueue`]: on the master straight into the
//!   local router (no extra hop: a cause noted on the master is sequenced before its
//!   effects elsewhere), on a follower as batches POSTed to the master's
//!   `/cluster/forward` with the cluster secret and the master's epoch, retried with
//!   backoff across master changes;
//! - the **follower** reads the master's `GET /cluster/log` into its router as a
//!   replica (same seqs, same bytes): cuts what it holds beyond where the archives
//!   agree, appends, applies the master's commit, and reports what it holds;
//! - the **committer** hands this node's events back to their publishers (and out of
//!   the queue) once they are committed;
//! - the peer routes `/cluster/vote`, `/cluster/log`, `/cluster/replicated` (through
//!   the server's [`Ingest::peer`] hook).
//!
//! Promises:
//! - An event answered `200` is committed: a majority of the cluster holds it, and no
//!   later master lacks it (see [`crate::replication`] and docs/cluster.md).
//! - Events noted on a node reach the master in order and are sequenced once: each
//!   carries `origin` and `originSeq`, stays queued until committed, is re-sent after
//!   a change of master or a cut, and the master's sequencer drops what it already
//!   has. A client's own origin gets the same, without a queue.
//! - A deposed master stops sequencing as soon as discovery says so or it promises a
//!   newer epoch; what it sequenced alone is cut when it follows the new master.
//! - A client reading from a surviving node sees committed events only, and the
//!   archive continue across a change of master with no duplicate and no gap (or an
//!   explicit `gap` frame when events truly are gone: its node had fallen behind the
//!   master's archive).

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use master_events_events::catalog::BecameMaster;
use master_events_events::{parse_line, Record, StreamLine};
use master_events_router::{agreed_through, CommitGate, Cursor, EpochTable, Router};
use master_events_server::hooks::{
    Ingest, IngestError, IngestFuture, IngestOutcome, PeerFuture, PeerReply,
};
use master_events_server::{ClusterHealth, ClusterView, ForwardingHealth, ForwardingState};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::discovery::{MasterDiscovery, MasterView};
use crate::health::{refusal_of, transport_cause, ClusterMetrics, Counters, Health, MetricsSource};
use crate::queue::NodeQueue;
use crate::replication::{is_quorum, majority_seq, Control, Replication, Vote};

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
    /// The HTTP client of the links to the peers (`None`: plain defaults; see
    /// [`crate::peer_tls::peer_client`] for `https://` peers).
    pub http: Option<reqwest::Client>,
    /// The router's commit gate this node marks with the cluster's commit, when the
    /// caller added it before (`None`: the node adds one as it starts). A node
    /// restored with events it does not know committed adds it before its durable
    /// sinks start: otherwise their marks alone would commit those events.
    pub commit_gate: Option<master_events_router::CommitGate>,
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
    /// The link to the master, for `/cluster`, `/ready` and `/metrics`.
    health: Health,
    /// Promises, trust, and the followers' matches (see [`crate::replication`]).
    repl: Replication,
    /// The cluster's commit gate on this node's router: on the master, the seq a
    /// majority holds; on a follower, the master's commit.
    gate: CommitGate,
    /// This node's events seen in its archive, not yet committed: (originSeq, seq).
    seen: Mutex<VecDeque<(u64, u64)>>,
    /// Woken when the archive grew (the follower's report to the master).
    appended: Notify,
    /// How many nodes the cluster has (this one and its peers).
    size: usize,
    /// While a takeover waits for its quorum: what it has and what it lacks.
    takeover: Mutex<Option<String>>,
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

    fn journal_failures(&self) -> u64 {
        self.0.queue.journal_failures()
    }
}

/// A running cluster node (cheap to clone).
#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    discovery: Arc<dyn MasterDiscovery>,
}

/// The `originSeq` of this node's next event. It only has to grow: starting from
/// the clock keeps it growing across a restart that lost the queue (the archive may
/// not remember this node).
fn start_origin_seq(config: &ClusterConfig, router: &Router) -> u64 {
    let now_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    (router.high_water(&config.node) + 1).max(now_micros)
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
        let start = start_origin_seq(&config, &router);
        let queue = NodeQueue::new(&config.node, config.queue_capacity, start);
        ClusterNode::start_with_queue(config, router, discovery, view, queue)
    }

    /// [`ClusterNode::start`] with the node queue kept in `queue_dir` (see
    /// [`crate::journal`]): the events a previous run queued and did not see
    /// committed are sent again (those this node's archive already holds are not).
    pub fn start_with_queue_dir(
        config: ClusterConfig,
        router: Router,
        discovery: Arc<dyn MasterDiscovery>,
        view: watch::Sender<ClusterView>,
        queue_dir: &std::path::Path,
    ) -> Result<ClusterNode, crate::journal::JournalError> {
        let archived = router.high_water(&config.node);
        let (journal, restored) = crate::journal::Journal::open(queue_dir, &config.node, archived)?;
        if !restored.is_empty() {
            tracing::info!(
                events = restored.len(),
                dir = %queue_dir.display(),
                "events queued before a restart and not committed are sent again"
            );
        }
        let start = start_origin_seq(&config, &router);
        let queue = NodeQueue::with_journal(
            &config.node,
            config.queue_capacity,
            start,
            journal,
            restored,
        );
        Ok(ClusterNode::start_with_queue(
            config, router, discovery, view, queue,
        ))
    }

    fn start_with_queue(
        config: ClusterConfig,
        router: Router,
        discovery: Arc<dyn MasterDiscovery>,
        view: watch::Sender<ClusterView>,
        queue: NodeQueue,
    ) -> ClusterNode {
        let (role, _) = watch::channel(Role::Waiting { epoch: 0 });
        let size = config.peers.keys().filter(|p| **p != config.node).count() + 1;
        let gate = config
            .commit_gate
            .clone()
            .unwrap_or_else(|| router.add_commit_gate());
        let repl = Replication::new(router.restored_through().is_some());
        let http = match &config.http {
            Some(client) => client.clone(),
            None => crate::peer_tls::peer_client(None, None, None).unwrap_or_default(),
        };
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
                health: Health::new(),
                repl,
                gate,
                seen: Mutex::new(VecDeque::new()),
                appended: Notify::new(),
                size,
                takeover: Mutex::new(None),
            }),
            tasks: Arc::new(Mutex::new(Vec::new())),
            discovery,
        };
        // Everything the node's tasks log carries the node and the task.
        let node_name = node.inner.config.node.clone();
        let span = |task: &'static str| tracing::info_span!("cluster", node = %node_name, task);
        let manager = tokio::spawn(tracing::Instrument::instrument(
            role_manager(Arc::clone(&node.inner), node.discovery.watch()),
            span("roles"),
        ));
        let delivery = tokio::spawn(tracing::Instrument::instrument(
            delivery(Arc::clone(&node.inner)),
            span("delivery"),
        ));
        let committer = tokio::spawn(tracing::Instrument::instrument(
            committer(Arc::clone(&node.inner)),
            span("commit"),
        ));
        node.tasks.lock().extend([manager, delivery, committer]);
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
        let waiting = match &role {
            Role::Waiting { .. } => Some(self.takeover.lock().clone().unwrap_or_else(|| {
                "no master to follow: an election or a takeover is in progress".to_owned()
            })),
            _ => None,
        };
        let (reachable, last_contact, not_ready) = match &role {
            Role::Master { .. } => (true, None, None),
            Role::Waiting { .. } => (false, last_contact, waiting.clone()),
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
                let reason = if st.forward == ForwardingState::Refused {
                    Some(format!(
                        "forwarding to the master {master} fails: {}",
                        st.forward_error.as_deref().unwrap_or("refused")
                    ))
                } else if !st.connected {
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
                journal_error: self.queue.journal_error(),
            },
            waiting,
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
        self.seen.lock().extend(mine);
        self.commit_seen(self.router.committed_seq());
        self.appended.notify_one();
        Ok(())
    }

    /// This node's own events committed up to `committed` leave its queue (their
    /// publishers get their seqs).
    fn commit_seen(&self, committed: u64) {
        let mut seen = self.seen.lock();
        while let Some(&(origin_seq, seq)) = seen.front() {
            if seq > committed {
                break;
            }
            seen.pop_front();
            self.queue.commit(origin_seq, seq);
        }
    }

    /// On the master of `epoch`: commits what a majority holds, once it reaches
    /// this epoch's events (an older epoch's are committed through them).
    fn advance_commit(&self, epoch: u64) {
        if *self.role.borrow() != (Role::Master { epoch }) || self.repl.promised() != epoch {
            return;
        }
        let held = majority_seq(self.router.last_seq(), &self.repl.matches(epoch), self.size);
        let first = self.router.epochs().first_seq_of(epoch);
        if first.is_some_and(|f| held >= f) {
            self.gate.mark(held);
        }
    }

    /// This node's answer to a vote for `epoch`: what its archive holds.
    fn own_vote(&self) -> Vote {
        let last = self.router.last_seq();
        Vote {
            node: self.config.node.clone(),
            last_seq: last,
            last_epoch: self.router.epochs().epoch_of(last),
            committed: self.router.committed_seq(),
            trusted: self.repl.is_trusted(),
        }
    }
}

/// Hands this node's committed events back to their publishers as the commit
/// advances.
async fn committer(inner: Arc<Inner>) {
    let mut handled = inner.router.committed_seq();
    inner.commit_seen(handled);
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            committed = inner.router.committed_beyond(handled) => {
                handled = committed;
                inner.commit_seen(committed);
            }
        }
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
                let took_over = take_over(&inner, &view, &views).await;
                *inner.takeover.lock() = None;
                if !took_over {
                    if *views.borrow() != view {
                        continue; // the view changed while taking over
                    }
                    // Refused for good (an older epoch than promised): wait for
                    // discovery to move on.
                    tokio::select! {
                        _ = inner.cancel.cancelled() => break,
                        changed = views.changed() => if changed.is_err() { break },
                    }
                    continue;
                }
                tracing::info!(
                    epoch = view.epoch,
                    last_seq = inner.router.last_seq(),
                    "this node is the master"
                );
                // becameMaster opens the epoch, before any event queued meanwhile.
                let mut became = Record::new(BecameMaster {
                    node: inner.config.node.as_str().into(),
                    host: inner.config.host.as_str().into(),
                });
                became.envelope.origin = Some(inner.config.node.as_str().into());
                became.envelope.origin_ts = Some(master_events_events::Timestamp::now());
                if let Err(e) = inner.router.sequence_batch(vec![became]).await {
                    tracing::warn!(error = %e, "cannot note becameMaster");
                }
                inner.set_role(Role::Master { epoch: view.epoch }, &view);
                inner.appended.notify_one();
                inner.advance_commit(view.epoch);
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
                    // What following logs carries the master (the peer) and its epoch.
                    let span = tracing::info_span!("peer", master = %m, epoch = view.epoch);
                    let task = tokio::spawn(tracing::Instrument::instrument(
                        follow(
                            Arc::clone(&inner),
                            m.clone(),
                            url,
                            view.epoch,
                            token.clone(),
                        ),
                        span,
                    ));
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

/// Before sequencing as master of `view.epoch`: promises the epoch, gathers the
/// votes of a quorum (every peer asked at once, [`CATCH_UP_ASK`] each), fetches
/// from the most up-to-date voter what this node lacks (cutting what it holds that
/// the voter does not agree with), and begins the epoch in its archive. Retried
/// until it works or the view changes; false when the view changed or the epoch
/// is older than one this node promised.
async fn take_over(
    inner: &Arc<Inner>,
    view: &MasterView,
    views: &watch::Receiver<MasterView>,
) -> bool {
    let epoch = view.epoch;
    let mut warned = false;
    loop {
        if *views.borrow() != *view || inner.cancel.is_cancelled() {
            return false;
        }
        if !inner.repl.promise(epoch) {
            tracing::error!(
                epoch,
                promised = inner.repl.promised(),
                "discovery made this node master of an epoch older than one it already promised to another master; not taking over"
            );
            return false;
        }
        let mut votes = vec![inner.own_vote()];
        let asks = inner
            .config
            .peers
            .iter()
            .filter(|(name, _)| **name != inner.config.node)
            .map(|(name, url)| ask_vote(inner, name, url, epoch));
        let mut urls = BTreeMap::new();
        for (name, url, vote) in futures_util::future::join_all(asks).await {
            if let Some(v) = vote {
                urls.insert(name, url);
                votes.push(v);
            }
        }
        if !is_quorum(&votes, inner.size) {
            let trusted = votes.iter().filter(|v| v.trusted).count();
            let untrusted: Vec<&str> = votes
                .iter()
                .filter(|v| !v.trusted)
                .map(|v| v.node.as_str())
                .collect();
            *inner.takeover.lock() = Some(format!(
                "taking over as master of epoch {epoch}: {} of {} nodes answered, {trusted} \
                 with a trusted archive; a majority ({}) of trusted nodes, or every node, \
                 must answer{}",
                votes.len(),
                inner.size,
                crate::replication::majority(inner.size),
                if untrusted.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (not trusted, as they have not caught up with a master since they \
                         started: {})",
                        untrusted.join(", ")
                    )
                }
            ));
            if !warned {
                tracing::warn!(
                    epoch,
                    answered = votes.len(),
                    trusted = votes.iter().filter(|v| v.trusted).count(),
                    cluster = inner.size,
                    "cannot take over yet: a majority of nodes holding the whole archive must answer; asking again"
                );
                warned = true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        let mine = inner.own_vote();
        let best = votes.iter().max_by_key(|v| v.rank()).cloned();
        if let Some(best) = best.filter(|b| b.rank() > mine.rank()) {
            let Some(url) = urls.get(&best.node) else {
                continue;
            };
            tracing::info!(
                from = %best.node,
                mine = mine.last_seq,
                theirs = best.last_seq,
                "catching up before taking over"
            );
            if let Err(e) = fetch_log(inner, url, None).await {
                tracing::warn!(from = %best.node, error = %e, "catch-up failed; asking again");
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            if inner.own_vote().rank() < best.rank() {
                continue; // the peer's answer ended early: ask again
            }
        }
        match inner.router.begin_epoch(epoch).await {
            Ok(first) => {
                inner.repl.lead(epoch);
                inner.repl.trust();
                tracing::debug!(epoch, first_seq = first, "epoch begun");
                return true;
            }
            Err(e) => {
                tracing::error!(epoch, error = %e, "cannot begin the epoch; not taking over");
                return false;
            }
        }
    }
}

/// Asks a peer to vote for `epoch` (it promises it and says what its archive
/// holds); `None` when it does not answer in time, refuses or answers garbage.
async fn ask_vote(
    inner: &Inner,
    name: &str,
    url: &str,
    epoch: u64,
) -> (String, String, Option<Vote>) {
    let url = url.trim_end_matches('/').to_owned();
    let req = inner
        .secret_header(inner.http.get(format!(
            "{url}/cluster/vote?epoch={epoch}&node={}",
            percent_encode(&inner.config.node)
        )))
        .timeout(CATCH_UP_ASK);
    let vote = async {
        let resp = req.send().await.ok()?;
        let status = resp.status();
        let body = resp.bytes().await.ok()?;
        if !status.is_success() {
            tracing::debug!(peer = %name, %status, "vote refused");
            return None;
        }
        match serde_json::from_slice::<Vote>(&body) {
            Ok(v) if v.node == name => Some(v),
            Ok(v) => {
                tracing::warn!(peer = %name, answered_as = %v.node, "a peer answered a vote under another name; ignored");
                None
            }
            Err(e) => {
                tracing::warn!(peer = %name, error = %e, "a peer's vote does not parse; ignored");
                None
            }
        }
    }
    .await;
    (name.to_owned(), url, vote)
}

/// Fetches a peer's archive beyond the part this node's agrees with: its whole
/// archive once (`follow: None`, a catch-up) or, from the master of an epoch,
/// for as long as it lasts (`Some(epoch)`). Cuts what this node holds beyond the
/// agreement (never what it knows committed), takes the peer's epochs, applies
/// the events and the commit. Returns why it ended.
async fn fetch_log(
    inner: &Arc<Inner>,
    url: &str,
    follow: Option<(u64, &str)>,
) -> Result<(), String> {
    let since = inner.router.last_seq();
    let epochs = inner.router.epochs();
    let follow_q = match follow {
        Some((epoch, _)) => format!("&follow={epoch}"),
        None => String::new(),
    };
    let req = inner.secret_header(inner.http.get(format!(
        "{url}/cluster/log?last={since}&epochs={epochs}&node={}&run={}{follow_q}",
        percent_encode(&inner.config.node),
        inner.repl.run()
    )));
    let resp = req.send().await.map_err(|e| transport_cause(&e))?;
    if !resp.status().is_success() {
        let status = resp.status();
        if status == reqwest::StatusCode::CONFLICT && follow.is_some() {
            // Not the master of this epoch yet (taking over) or any more: the next
            // view or try settles it; the master is not unreachable.
            return Err(format!(
                "{REFUSED}the master is not (yet) the master of this epoch"
            ));
        }
        if let Some((_, master)) = follow {
            let (state, cause) = refusal_of(status, inner.config.secret.is_some());
            if state == ForwardingState::Refused {
                // Shown (and logged once) as a refused link, not as unreachable.
                inner.health.forward_failed(master, state, cause.clone());
                return Err(format!("{REFUSED}{cause}"));
            }
            return Err(cause);
        }
        return Err(format!("the peer answered {status}"));
    }
    let mut stream = resp.bytes_stream();
    let mut lines = LineSplitter::default();
    let mut started: Option<(u64, u64)> = None; // (kept, the peer's last)
    let mut reporter: Option<AbortOnDrop> = None;
    // The peer's last commit: it may come before the events it covers (another
    // follower made the majority), so it is applied again as they arrive.
    let mut peer_commit = 0;
    loop {
        let next = tokio::time::timeout(STREAM_SILENCE, stream.next()).await;
        let chunk = match next {
            Err(_) => {
                return Err(format!(
                    "nothing from the peer for {} s",
                    STREAM_SILENCE.as_secs()
                ))
            }
            Ok(None) if follow.is_none() && started.is_some() => return Ok(()),
            Ok(None) => return Err("the peer ended the stream".to_owned()),
            Ok(Some(Err(e))) => return Err(transport_cause(&e)),
            Ok(Some(Ok(chunk))) => chunk,
        };
        inner.health.contact();
        if let Some((epoch, _)) = follow {
            if inner.repl.promised() > epoch {
                return Err(format!(
                    "this node promised a newer epoch ({}) than the master's ({epoch})",
                    inner.repl.promised()
                ));
            }
        }
        let mut batch = Vec::new();
        for line in lines.feed(&chunk) {
            if line.is_empty() {
                continue;
            }
            if Control::is_control(&line) {
                let control = Control::parse(&line)?;
                inner
                    .replicate(std::mem::take(&mut batch))
                    .await
                    .map_err(|e| e.to_string())?;
                match control {
                    Control::Start {
                        agreed,
                        last,
                        committed,
                        epochs,
                        history,
                    } => {
                        if started.is_some() {
                            return Err("a second start frame".to_owned());
                        }
                        let kept = begin_log(inner, since, agreed, &epochs, &history).await?;
                        started = Some((kept, last));
                        inner
                            .gate
                            .mark(committed.min(inner.router.last_seq()).min(kept));
                        peer_commit = committed;
                        if let Some((epoch, master)) = follow {
                            inner.health.stream_up(master, Some(last));
                            reporter = Some(AbortOnDrop(tokio::spawn(report_replicated(
                                Arc::clone(inner),
                                master.to_owned(),
                                url.to_owned(),
                                epoch,
                            ))));
                        }
                    }
                    Control::Commit { seq } => {
                        let Some((_, target)) = started else {
                            return Err("a frame before the start frame".to_owned());
                        };
                        let last = inner.router.last_seq();
                        peer_commit = peer_commit.max(seq);
                        inner.gate.mark(seq.min(last));
                        inner.health.heartbeat(seq);
                        if last >= target.min(seq) && follow.is_some() {
                            inner.repl.trust();
                        }
                    }
                    Control::Gap { from_seq, to_seq } => {
                        if started.is_none() {
                            return Err("a frame before the start frame".to_owned());
                        }
                        tracing::warn!(
                            from = from_seq,
                            to = to_seq,
                            "the peer no longer has events this replica missed"
                        );
                        inner
                            .router
                            .skip_to(to_seq + 1)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                continue;
            }
            if started.is_none() {
                return Err("an event before the start frame".to_owned());
            }
            match parse_line(&line) {
                Ok(StreamLine::Event(rec)) => batch.push(rec),
                Ok(_) => {}
                Err(e) => {
                    return Err(format!("the peer sent a line that does not parse: {e}"));
                }
            }
        }
        inner.replicate(batch).await.map_err(|e| e.to_string())?;
        inner.gate.mark(peer_commit.min(inner.router.last_seq()));
        if follow.is_none() {
            if let Some((_, target)) = started {
                if inner.router.last_seq() >= target {
                    return Ok(());
                }
            }
        }
        let _ = &reporter;
    }
}

/// The start of a peer's log: keeps this archive up to where it agrees with the
/// peer's (or up to what it knows committed), cuts the rest — this node's own
/// events among them go out again — and takes the peer's history and epochs.
/// Returns the last seq kept.
async fn begin_log(
    inner: &Inner,
    since: u64,
    agreed: u64,
    epochs: &str,
    history: &str,
) -> Result<u64, String> {
    let theirs = EpochTable::parse(epochs).map_err(|e| format!("the peer sent an {e}"))?;
    if !master_events_router::is_valid_history(history) {
        return Err("the peer sent an invalid history id".to_owned());
    }
    let committed = inner.router.committed_seq();
    let same_history = *inner.router.history() == *history;
    let agreed = if same_history { agreed } else { 0 };
    let kept = agreed.max(committed).min(since);
    if !same_history && kept > 0 {
        tracing::error!(
            replica_last_seq = since,
            committed,
            "the peer's archive is of another history than this node's committed events; not following it"
        );
        return Err("another history".to_owned());
    }
    if kept < since {
        inner
            .router
            .truncate_after(kept)
            .await
            .map_err(|e| e.to_string())?;
        inner.seen.lock().retain(|(_, seq)| *seq <= kept);
        inner.queue.resend_all();
        inner
            .health
            .counters
            .taken_back
            .fetch_add(since - kept, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            first_seq = kept + 1,
            last_seq = since,
            events = since - kept,
            "took back events the cluster never committed (a deposed master's); this node's own among them are sent again"
        );
    }
    if kept == 0 {
        inner
            .router
            .set_history(history)
            .map_err(|_| "the peer sent an invalid history id".to_owned())?;
    }
    inner.router.adopt_epochs(&theirs, kept + 1);
    Ok(kept)
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

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Tells the master of `epoch` how far this replica holds its archive, whenever
/// it grew (and every second): the master commits what a majority holds. Stops
/// reporting once this node promised a newer epoch. A failed report is retried
/// with backoff (up to 2 s), and a refusal (401/403) shows as a refused
/// forwarding state.
async fn report_replicated(inner: Arc<Inner>, master: String, url: String, epoch: u64) {
    let mut reported = 0;
    let mut attempt = 0u32;
    loop {
        let last = inner.router.last_seq();
        if inner.repl.promised() > epoch {
            return;
        }
        if last > reported || attempt > 0 {
            let req = inner
                .secret_header(inner.http.post(format!(
                    "{url}/cluster/replicated?node={}&run={}&epoch={epoch}&seq={last}",
                    percent_encode(&inner.config.node),
                    inner.repl.run()
                )))
                .timeout(Duration::from_secs(2));
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    reported = last;
                    attempt = 0;
                }
                Ok(r) => {
                    let (state, cause) = refusal_of(r.status(), inner.config.secret.is_some());
                    tracing::debug!(%master, cause = %cause, "replication report refused; will retry");
                    if state == ForwardingState::Refused {
                        inner.health.forward_failed(&master, state, cause);
                    }
                    attempt += 1;
                }
                Err(e) => {
                    // The stream notices an unreachable master; this only backs off.
                    tracing::debug!(%master, cause = %transport_cause(&e), "replication report failed; will retry");
                    attempt += 1;
                }
            }
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
        }
        tokio::select! {
            _ = inner.appended.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => { reported = 0; }
        }
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

/// Follows the master of `epoch` (its `GET /cluster/log`) until cancelled; keeps
/// the link's health (reachable or not, and why; caught up or not).
async fn follow(
    inner: Arc<Inner>,
    master: String,
    url: String,
    epoch: u64,
    token: CancellationToken,
) {
    let mut attempt = 0u32;
    loop {
        let outcome = if inner.repl.promise(epoch) {
            tokio::select! {
                _ = token.cancelled() => return,
                r = fetch_log(&inner, &url, Some((epoch, &master))) => r,
            }
        } else {
            Err(format!(
                "this node promised a newer epoch ({}) than the master's ({epoch})",
                inner.repl.promised()
            ))
        };
        if let Err(cause) = outcome {
            if inner.health.snapshot().connected {
                attempt = 0;
            }
            tracing::debug!(%master, cause = %cause, "following the master: reconnecting");
            if !cause.starts_with(REFUSED) {
                inner.health.stream_down(&master, cause);
            }
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
                Role::Master { epoch } => deliver_locally(&inner, *epoch, batch).await,
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
            // A journal that cannot write is retried even when no request comes.
            let journal_failing = inner.queue.retry_journal();
            tokio::select! {
                _ = inner.cancel.cancelled() => return,
                _ = inner.queue.wake.notified() => {}
                _ = roles.changed() => {}
                () = tokio::time::sleep(crate::journal::REWRITE_EVERY), if journal_failing => {}
            }
        } else {
            attempt += 1;
            inner.queue.retry_journal();
            tokio::select! {
                _ = inner.cancel.cancelled() => return,
                _ = roles.changed() => {}
                _ = tokio::time::sleep(backoff(attempt)) => {}
            }
        }
    }
}

/// On the master of `epoch`: the node's own events go straight into its router
/// (committed later, once a majority holds them).
async fn deliver_locally(inner: &Inner, epoch: u64, batch: Vec<Record>) -> bool {
    if inner.repl.promised() != epoch {
        return false; // deposed: another node won a newer epoch
    }
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
    match inner.router.sequence_batch(batch).await {
        Ok(range) => {
            let mut last_seq = inner.router.last_seq();
            {
                let mut seen = inner.seen.lock();
                for (origin_seq, seq) in fresh.iter().zip(range) {
                    seen.push_back((*origin_seq, seq));
                    last_seq = seq;
                }
                seen.push_back((last_os, last_seq));
            }
            // The commit may have passed them already (a fast follower).
            inner.commit_seen(inner.router.committed_seq());
            inner.queue.mark_sent(last_os);
            inner.appended.notify_one();
            inner.advance_commit(epoch);
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

/// The pairs of a query string, percent-decoded.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    master_events_server::stream::parse_pairs(query)
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn param_u64(pairs: &[(String, String)], key: &str) -> Result<Option<u64>, PeerReply> {
    match param(pairs, key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| PeerReply::text(400, format!("{key}= must be a non-negative integer"))),
    }
}

/// How [`fetch_log`] marks a refusal it already reported.
const REFUSED: &str = "refused: ";

/// How often the log stream sends the commit when nothing else happens (the
/// follower's heartbeat).
const COMMIT_HEARTBEAT: Duration = Duration::from_millis(500);

impl ClusterNode {
    fn stale(&self, peer: &str, what: String) -> PeerReply {
        use std::sync::atomic::Ordering;
        self.inner
            .health
            .counters
            .stale_peers
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, "refused a peer's request: {what}");
        PeerReply::json(
            409,
            &serde_json::json!({
                "error": what,
                "promised": self.inner.repl.promised(),
            }),
        )
    }

    /// `GET /cluster/vote?epoch=E&node=N`: promises `E` (refused when a newer
    /// epoch was promised) and says what this node's archive holds.
    fn answer_vote(&self, pairs: &[(String, String)]) -> PeerReply {
        let peer = param(pairs, "node").unwrap_or("?").to_owned();
        let epoch = match param_u64(pairs, "epoch") {
            Ok(Some(e)) => e,
            Ok(None) => return PeerReply::text(400, "epoch= is required".to_owned()),
            Err(r) => return r,
        };
        if !self.inner.repl.promise(epoch) {
            return self.stale(
                &peer,
                format!(
                    "a vote for epoch {epoch}, older than the epoch {} this node promised",
                    self.inner.repl.promised()
                ),
            );
        }
        let vote = self.inner.own_vote();
        PeerReply::json(200, &serde_json::to_value(&vote).unwrap_or_default())
    }

    /// `POST /cluster/replicated?node=N&run=R&epoch=E&seq=S`: a follower holds this
    /// master's archive up to `S` (refused unless this node is the master of `E`).
    fn take_report(&self, pairs: &[(String, String)]) -> PeerReply {
        let peer = param(pairs, "node").unwrap_or("").to_owned();
        let (run, epoch, seq) = match (
            param_u64(pairs, "run"),
            param_u64(pairs, "epoch"),
            param_u64(pairs, "seq"),
        ) {
            (Ok(Some(r)), Ok(Some(e)), Ok(Some(s))) => (r, e, s),
            (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
            _ => {
                return PeerReply::text(400, "node=, run=, epoch= and seq= are required".to_owned())
            }
        };
        if peer.is_empty() || !self.inner.config.peers.contains_key(&peer) {
            return PeerReply::text(400, "node= must name a peer of this cluster".to_owned());
        }
        let role = self.inner.role.borrow().clone();
        if role != (Role::Master { epoch }) || self.inner.repl.promised() != epoch {
            return self.stale(
                &peer,
                format!("a replication report for epoch {epoch}; this node is {role:?}"),
            );
        }
        if seq > self.inner.router.last_seq() {
            return self.stale(
                &peer,
                format!(
                    "a replica claims seq {seq}, beyond this master's last ({})",
                    self.inner.router.last_seq()
                ),
            );
        }
        self.inner.repl.matched(epoch, &peer, run, seq);
        self.inner.advance_commit(epoch);
        PeerReply::text(204, String::new())
    }

    /// `GET /cluster/log?last=L&epochs=T&node=N[&follow=E]`: where the asker's
    /// archive (last seq `L`, epochs `T`) agrees with this node's, then this node's
    /// events after it, committed or not, with the commit; once (a catch-up) or,
    /// with `follow`, for as long as this node is the master of `E`.
    fn serve_log(&self, pairs: &[(String, String)]) -> PeerReply {
        let peer = param(pairs, "node").unwrap_or("?").to_owned();
        let their_last = match param_u64(pairs, "last") {
            Ok(v) => v.unwrap_or(0),
            Err(r) => return r,
        };
        let theirs = match EpochTable::parse(param(pairs, "epochs").unwrap_or("")) {
            Ok(t) => t,
            Err(e) => return PeerReply::text(400, format!("epochs=: {e}")),
        };
        let follow = match param_u64(pairs, "follow") {
            Ok(v) => v,
            Err(r) => return r,
        };
        let inner = Arc::clone(&self.inner);
        let promised = inner.repl.promised();
        if theirs.last_epoch() > promised.max(inner.router.epochs().last_epoch()) {
            return self.stale(
                &peer,
                format!(
                    "a replica claims epoch {}, newer than any this node knows ({promised})",
                    theirs.last_epoch()
                ),
            );
        }
        if let Some(epoch) = follow {
            let role = inner.role.borrow().clone();
            if role == (Role::Waiting { epoch }) && promised == epoch {
                // Taking over this very epoch: the follower asks again soon.
                return PeerReply::json(
                    409,
                    &serde_json::json!({"error": "taking over: not the master yet", "promised": promised}),
                );
            }
            if role != (Role::Master { epoch }) || promised != epoch {
                return self.stale(
                    &peer,
                    format!("a follower of epoch {epoch}; this node is {role:?}"),
                );
            }
        }
        let mine = inner.router.epochs();
        let my_last = inner.router.last_seq();
        let agreed = agreed_through(&theirs, their_last, &mine, my_last);
        let start = Control::Start {
            agreed,
            last: my_last,
            committed: inner.router.committed_seq(),
            epochs: mine.to_string(),
            history: inner.router.history().to_string(),
        };
        let mut sub = inner.router.subscribe_uncommitted(Cursor::After(agreed));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        let _ = tx.try_send(Ok(start.line()));
        let end = if follow.is_none() {
            Some(my_last)
        } else {
            None
        };
        let task = async move {
            let mut committed_sent = 0;
            if end == Some(agreed) {
                return;
            }
            loop {
                let heartbeat = tokio::time::sleep(COMMIT_HEARTBEAT);
                let out = tokio::select! {
                    _ = tx.closed() => return,
                    _ = inner.cancel.cancelled() => return,
                    chunk = sub.recv() => match chunk {
                        None | Some(master_events_router::Chunk::Truncated { .. }) => return,
                        Some(master_events_router::Chunk::Gap(g)) => Control::Gap {
                            from_seq: g.from_seq,
                            to_seq: g.to_seq,
                        }
                        .line(),
                        Some(master_events_router::Chunk::Events(batch)) => match end {
                            Some(end) if batch.last_seq() > end => {
                                let mut out = Vec::new();
                                for e in batch.iter().filter(|e| e.seq <= end) {
                                    out.extend_from_slice(e.line);
                                }
                                let _ = tx.send(Ok(out.into())).await;
                                return;
                            }
                            _ => batch.bytes(),
                        },
                    },
                    committed = inner.router.committed_beyond(committed_sent) => {
                        committed_sent = committed;
                        Control::Commit { seq: committed }.line()
                    }
                    _ = heartbeat => {
                        if let Some(epoch) = follow {
                            if *inner.role.borrow() != (Role::Master { epoch }) {
                                return; // deposed: the follower finds the new master
                            }
                        }
                        Control::Commit { seq: inner.router.committed_seq() }.line()
                    }
                };
                if tx.send(Ok(out)).await.is_err() {
                    return;
                }
                if end.is_some_and(|end| sub.position() >= end) {
                    return;
                }
            }
        };
        tokio::spawn(task);
        PeerReply {
            status: 200,
            content_type: "application/x-ndjson",
            body: Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            })),
        }
    }
}

impl ClusterNode {
    /// Whether `name` is a node of this cluster.
    fn is_node(&self, name: &str) -> bool {
        name == self.inner.config.node || self.inner.config.peers.contains_key(name)
    }

    /// Events of a client's own origin (each with its `originSeq`): sequenced by
    /// the master — this node, or the master reached directly — and answered once
    /// committed. The master drops what it already has of that origin, so a retry
    /// is safe; that is why nothing is queued here: without a master, or without a
    /// commit in time, the answer is a 503 to retry, never a 202.
    async fn ingest_keyed(
        &self,
        origin: &str,
        records: Vec<Record>,
    ) -> Result<IngestOutcome, IngestError> {
        if self.is_node(origin) {
            return Err(IngestError::BadRequest(format!(
                "the client origin {origin:?} is the name of a node of this cluster: choose another"
            )));
        }
        let role = self.inner.role.borrow().clone();
        match role {
            Role::Master { epoch } => self.sequence_committed(epoch, records).await,
            Role::Follower {
                master,
                url: Some(url),
                epoch,
            } => {
                let mut body = Vec::with_capacity(records.len() * 256);
                for rec in &records {
                    rec.encode_line(&mut body);
                }
                let req = self
                    .inner
                    .secret_header(self.inner.http.post(format!("{url}/cluster/forward")))
                    .header("content-type", "application/x-ndjson")
                    .header("x-master-events-epoch", epoch.to_string())
                    .timeout(INGEST_WAIT)
                    .body(body);
                let retry = |why: String| {
                    IngestError::Unavailable(format!(
                        "{why}; nothing is queued: retry with the same originSeq values (safe)"
                    ))
                };
                let resp = req.send().await.map_err(|e| {
                    retry(format!(
                        "the master {master} did not answer: {}",
                        transport_cause(&e)
                    ))
                })?;
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if !status.is_success() {
                    return Err(retry(format!("the master {master} answered {status}")));
                }
                let reply: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let seqs: Vec<u64> = reply["seqs"]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
                    .unwrap_or_default();
                Ok(IngestOutcome::Sequenced(match seqs.as_slice() {
                    [first, last] => *first..=*last,
                    _ => empty_range(self.inner.router.last_seq()),
                }))
            }
            _ => Err(IngestError::Unavailable(
                "no master now (an election or a takeover is in progress); nothing is queued: retry with the same originSeq values (safe)".to_owned(),
            )),
        }
    }

    /// On the master of `epoch`: sequences `records` (dropping what their origin
    /// already has) and answers once the archive is committed up to them — and up
    /// to any earlier copy of a dropped one.
    async fn sequence_committed(
        &self,
        epoch: u64,
        records: Vec<Record>,
    ) -> Result<IngestOutcome, IngestError> {
        if self.inner.repl.promised() != epoch {
            return Err(IngestError::Unavailable(
                "this node is no longer the master; retry with the same originSeq values (safe)"
                    .to_owned(),
            ));
        }
        let range = self
            .inner
            .router
            .sequence_batch(records)
            .await
            .map_err(|e| IngestError::Unavailable(e.to_string()))?;
        let through = if range.is_empty() {
            self.inner.router.last_seq()
        } else {
            *range.end()
        };
        self.inner.appended.notify_one();
        self.inner.advance_commit(epoch);
        let committed = tokio::time::timeout(INGEST_WAIT, async {
            while self.inner.router.committed_seq() < through {
                self.inner
                    .router
                    .committed_beyond(self.inner.router.committed_seq())
                    .await;
            }
        })
        .await;
        // Committed, and still what this master sequenced there (a deposed master's
        // events are cut, and their seqs go to a later epoch's).
        let ours = range.is_empty() || self.inner.router.epochs().epoch_of(through) == epoch;
        match committed {
            Ok(()) if ours => Ok(IngestOutcome::Sequenced(range)),
            Ok(()) => Err(IngestError::Unavailable(
                "this node was deposed before its events were committed; retry with the same originSeq values (safe)".to_owned(),
            )),
            Err(_) => Err(IngestError::Unavailable(format!(
                "sequenced but not committed within {} s (no majority holds it yet); retry with the same originSeq values (safe)",
                INGEST_WAIT.as_secs()
            ))),
        }
    }
}

impl Ingest for ClusterNode {
    fn ingest(&self, records: Vec<Record>) -> IngestFuture<'_> {
        Box::pin(async move {
            if let Some(origin) = records.first().and_then(|r| r.envelope.origin.clone()) {
                return self.ingest_keyed(&origin, records).await;
            }
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
            Ok(IngestOutcome::Sequenced(range))
        })
    }

    fn health(&self) -> Option<ClusterHealth> {
        Some(self.inner.current_health())
    }

    fn peer(&self, route: &str, query: Option<&str>) -> PeerFuture<'_> {
        let pairs = query_pairs(query);
        let route = route.to_owned();
        Box::pin(async move {
            match route.as_str() {
                "vote" => self.answer_vote(&pairs),
                "log" => self.serve_log(&pairs),
                "replicated" => self.take_report(&pairs),
                other => PeerReply::text(404, format!("no cluster route /cluster/{other}")),
            }
        })
    }

    fn forwarded(&self, epoch: u64, records: Vec<Record>) -> IngestFuture<'_> {
        Box::pin(async move {
            let role = self.inner.role.borrow().clone();
            // A client's own origin (not a node's): its request waits for the
            // commit, as it has no queue on the node that took it.
            let keyed = records
                .first()
                .and_then(|r| r.envelope.origin.as_deref())
                .is_some_and(|o| !self.is_node(o));
            match role {
                Role::Master { epoch: mine }
                    if mine == epoch && self.inner.repl.promised() == epoch =>
                {
                    if keyed {
                        return self.sequence_committed(epoch, records).await;
                    }
                    let range = self
                        .inner
                        .router
                        .sequence_batch(records)
                        .await
                        .map_err(|e| IngestError::Unavailable(e.to_string()))?;
                    self.inner.appended.notify_one();
                    self.inner.advance_commit(epoch);
                    Ok(IngestOutcome::Sequenced(range))
                }
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
