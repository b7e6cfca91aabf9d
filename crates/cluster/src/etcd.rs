//! Master discovery by leader election on etcd (cargo feature `etcd`).
//!
//! Owns: [`EtcdDiscovery`], this node's part in one etcd election: a lease, a
//! campaign with the node name as the value, an observer of the election's leader,
//! and the [`MasterView`]s published from what it observes. Only etcd's election API
//! (`Campaign`, `Observe`, `Resign`) and leases are used: etcd decides who leads (the
//! candidate key with the lowest create revision), never this code.
//!
//! Promises (on top of those of [`MasterDiscovery`]):
//! - Every node campaigns; the winner is master. All nodes publish the leader etcd
//!   reports through `Observe`, so they agree on one master and one epoch.
//! - `epoch` is the leader key's `create_revision`. etcd's leader is the lowest
//!   create revision among live candidate keys and a new key is always created
//!   after every live one, so each new leader has a strictly greater epoch: a
//!   fencing token. (Epochs come from etcd's revision counter: wiping etcd's data
//!   restarts them.)
//! - A node names itself master only while its lease is provably alive on the
//!   server: a key of its own under an older lease (left over from before an
//!   outage) is published as `master: None`.
//! - Fail safe: a node that cannot keep its lease alive publishes a view without
//!   itself *before* etcd can expire that lease, so two nodes never both believe
//!   they are master (a new master needs the old lease gone on the server).
//! - After an outage it revokes its old lease (best effort), grants a new one and
//!   campaigns again, with an exponential backoff (100 ms up to the TTL).
//! - [`MasterDiscovery::shutdown`] resigns and revokes the lease, so the next
//!   candidate takes over at once instead of after the TTL. Dropping an
//!   `EtcdDiscovery` without `shutdown` does the same in the background (while
//!   the tokio runtime runs).
//!
//! Failure timeline, for a lease TTL of `T` (default 3 s; etcd counts whole
//! seconds and may raise a short TTL to its minimum, `1.5 × election timeout`
//! rounded up; the TTL etcd granted is what counts, see
//! [`EtcdDiscovery::lease_ttl`]):
//! - a keep-alive is sent every `T/3`; etcd then keeps the lease until at least
//!   `T` after the moment that keep-alive was *sent*;
//! - when no keep-alive sent in the last `2T/3` has been answered (etcd unreachable,
//!   partitioned, or answering TTL 0 = lease gone), the node publishes
//!   `master: None` at once: that is at least `T/3` before etcd could expire the
//!   lease. A closed stream or an error ends the session the same way, sooner;
//! - etcd expires the lease at `T` after the last renewal (its expiry scan runs
//!   every 500 ms, so up to `T + 0.5 s`) and deletes the master's candidate key;
//!   `Observe` then reports the next candidate to every connected node, which
//!   publish it with its greater epoch. Failover after a crash or partition of
//!   the master therefore takes about `T` to `T + 0.5 s` (1.1 s to 1.4 s measured
//!   with `T` = 1 s; the deposed master stepped down after 0.45 s to 0.6 s); after a `shutdown` (resign) it takes milliseconds;
//! - a follower cut off from etcd also publishes `master: None` after `2T/3`: it
//!   no longer knows who the master is.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, LeaderKey, LeaseKeepAliveStream, LeaseKeeper, ObserveStream,
    ResignOptions,
};
use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::discovery::{DiscoveryFuture, MasterDiscovery, MasterView};

/// The default lease TTL: a crashed or partitioned master is replaced after
/// about this long.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3);

/// The first pause before reconnecting to etcd after a lost session.
const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Why the etcd backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint to connect to.
    #[error("no etcd endpoints given")]
    NoEndpoints,
    /// The node name is empty (it is the campaign value others see as master).
    #[error("the node name is empty")]
    EmptyNode,
    /// The election name is empty (it is the key prefix all candidates share).
    #[error("the election name is empty")]
    EmptyElection,
    /// The lease TTL is zero or too large (etcd leases count whole seconds).
    #[error("invalid lease TTL {0:?}: etcd leases count whole seconds, at least 1 s")]
    InvalidTtl(Duration),
    /// etcd answered an operation with an error.
    #[error("etcd {op} failed: {error}")]
    Etcd {
        /// The operation (`connect`, `lease grant`, ...).
        op: &'static str,
        /// The client's error. Shown in the message, and so not also a `source`:
        /// an error chain (`{:#}`) would say it twice.
        error: etcd_client::Error,
    },
    /// etcd did not answer an operation in time.
    #[error("etcd {op} did not answer within {after:?}")]
    Timeout {
        /// The operation (`connect`, `lease grant`, ...).
        op: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// etcd granted a lease with a TTL of 0 or less.
    #[error("etcd granted a lease with TTL {0} s")]
    LeaseRefused(i64),
}

/// Master discovery by leader election on etcd: see the [module docs](self).
pub struct EtcdDiscovery {
    node: String,
    election: String,
    lease_ttl: Duration,
    view: watch::Sender<MasterView>,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl EtcdDiscovery {
    /// Connects to etcd at `endpoints` (`http://host:2379`, ...), grants a lease of
    /// `ttl` (rounded up to whole seconds) and campaigns in `election` (a key prefix
    /// shared by all nodes, e.g. `master-events`) with `node` as the value; then
    /// keeps doing so in the background, across etcd outages, until
    /// [`MasterDiscovery::shutdown`].
    ///
    /// Fails when the arguments are invalid or etcd does not grant a first lease
    /// within `ttl`; later outages are retried, not reported.
    pub async fn start(
        endpoints: Vec<String>,
        node: String,
        election: String,
        ttl: Duration,
    ) -> Result<EtcdDiscovery, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        if node.is_empty() {
            return Err(EtcdError::EmptyNode);
        }
        if election.is_empty() {
            return Err(EtcdError::EmptyElection);
        }
        let ttl_secs = ttl_seconds(ttl)?;
        let cfg = Config {
            endpoints,
            node,
            election,
            ttl_secs,
        };
        let first = open_session(&cfg, None).await?;
        let lease_ttl = first.timing.ttl;
        if lease_ttl != Duration::from_secs(ttl_secs.unsigned_abs()) {
            warn!(
                requested = ?ttl,
                granted = ?lease_ttl,
                "etcd granted another lease TTL than requested"
            );
        }
        info!(node = %cfg.node, election = %cfg.election, ttl = ?lease_ttl, "joined the etcd election");
        let (view, _) = watch::channel(MasterView {
            master: None,
            epoch: 0,
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(cfg.clone(), first, view.clone(), cancel.clone()));
        Ok(EtcdDiscovery {
            node: cfg.node,
            election: cfg.election,
            lease_ttl,
            view,
            cancel,
            task: Mutex::new(Some(task)),
        })
    }

    /// This node's name: the campaign value, as other nodes see it when it leads.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The election name (the etcd key prefix of the candidates).
    pub fn election(&self) -> &str {
        &self.election
    }

    /// The lease TTL etcd granted at start (it may be longer than requested).
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }
}

impl MasterDiscovery for EtcdDiscovery {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn watch(&self) -> watch::Receiver<MasterView> {
        self.view.subscribe()
    }

    fn shutdown(&self) -> DiscoveryFuture<'_> {
        Box::pin(async move {
            self.cancel.cancel();
            let task = match self.task.lock() {
                Ok(mut task) => task.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            if let Some(task) = task {
                if let Err(e) = task.await {
                    warn!("the etcd election task failed: {e}");
                }
            }
            step_down(&self.view);
        })
    }
}

impl Drop for EtcdDiscovery {
    fn drop(&mut self) {
        // The task resigns and revokes its lease on its own, if the runtime lives on.
        self.cancel.cancel();
    }
}

#[derive(Clone)]
struct Config {
    endpoints: Vec<String>,
    node: String,
    election: String,
    ttl_secs: i64,
}

/// The deadlines that follow from a lease TTL (see the failure timeline).
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// The lease TTL.
    ttl: Duration,
    /// How often a keep-alive is sent.
    keepalive_every: Duration,
    /// Give up the lease when no keep-alive sent this long ago has been answered.
    give_up_after: Duration,
    /// How long a single request (connect, grant, revoke, ...) may take.
    op_timeout: Duration,
}

impl Timing {
    fn for_ttl(ttl: Duration) -> Timing {
        Timing {
            ttl,
            keepalive_every: ttl / 3,
            give_up_after: ttl * 2 / 3,
            op_timeout: ttl,
        }
    }
}

/// etcd leases count whole seconds: rounds up, refuses zero.
fn ttl_seconds(ttl: Duration) -> Result<i64, EtcdError> {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    match i64::try_from(secs) {
        Ok(secs) if secs > 0 => Ok(secs),
        _ => Err(EtcdError::InvalidTtl(ttl)),
    }
}

/// Runs an etcd request with a deadline.
async fn call<T>(
    op: &'static str,
    after: Duration,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match timeout(after, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(EtcdError::Etcd { op, error }),
        Err(_) => Err(EtcdError::Timeout { op, after }),
    }
}

/// One connection's worth of taking part: a fresh client (so a hung connection is
/// never reused) and a lease with its keep-alive stream.
struct Session {
    client: Client,
    lease: i64,
    timing: Timing,
    keeper: LeaseKeeper,
    keepalives: LeaseKeepAliveStream,
    /// When the last answered keep-alive (or the grant) was sent: etcd keeps the
    /// lease until at least `ttl` after it.
    last_ack_sent: Instant,
}

async fn open_session(cfg: &Config, stale_lease: Option<i64>) -> Result<Session, EtcdError> {
    let requested = Timing::for_ttl(Duration::from_secs(cfg.ttl_secs.unsigned_abs()));
    let op = requested.op_timeout;
    let options = ConnectOptions::new().with_connect_timeout(op);
    let client = call(
        "connect",
        op,
        Client::connect(&cfg.endpoints, Some(options)),
    )
    .await?;
    if let Some(old) = stale_lease {
        // Our candidate key under the old lease would otherwise linger (and lead,
        // if it still does) until etcd expires it.
        match call("lease revoke", op, client.lease_client().revoke(old)).await {
            Ok(_) => debug!(lease = old, "revoked the lease of the lost session"),
            Err(e) => debug!(
                lease = old,
                "could not revoke the old lease (likely expired): {e}"
            ),
        }
    }
    let granted_at = Instant::now();
    let grant = call(
        "lease grant",
        op,
        client.lease_client().grant(cfg.ttl_secs, None),
    )
    .await?;
    if grant.ttl() <= 0 {
        return Err(EtcdError::LeaseRefused(grant.ttl()));
    }
    let lease = grant.id();
    let timing = Timing::for_ttl(Duration::from_secs(grant.ttl().unsigned_abs()));
    let ka_sent = Instant::now();
    match call(
        "lease keep-alive",
        op,
        client.lease_client().keep_alive(lease),
    )
    .await
    {
        Ok((keeper, keepalives)) => Ok(Session {
            client,
            lease,
            timing,
            keeper,
            keepalives,
            last_ack_sent: ka_sent.max(granted_at),
        }),
        Err(e) => {
            // No candidate key is attached yet; revoking just tidies up.
            let _ = call("lease revoke", op, client.lease_client().revoke(lease)).await;
            Err(e)
        }
    }
}

/// How a session ended.
enum SessionEnd {
    /// Shut down: resigned and revoked.
    Shutdown,
    /// The lease can no longer be trusted; revoke it when etcd is back.
    Lost { lease: i64, reason: String },
}

/// The background task: sessions one after another until shut down.
async fn run(
    cfg: Config,
    first: Session,
    view: watch::Sender<MasterView>,
    cancel: CancellationToken,
) {
    let mut next = Some(first);
    let mut stale_lease = None;
    let mut backoff = BACKOFF_MIN;
    let max_backoff = Duration::from_secs(cfg.ttl_secs.unsigned_abs());
    loop {
        let session = match next.take() {
            Some(session) => session,
            None => {
                let opened = tokio::select! {
                    _ = cancel.cancelled() => break,
                    opened = open_session(&cfg, stale_lease) => opened,
                };
                match opened {
                    Ok(session) => {
                        info!(node = %cfg.node, lease = session.lease, "reconnected to etcd, campaigning again");
                        session
                    }
                    Err(e) => {
                        warn!(node = %cfg.node, "etcd unavailable, retrying in {backoff:?}: {e}");
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(max_backoff);
                        continue;
                    }
                }
            }
        };
        let began = Instant::now();
        let ttl = session.timing.ttl;
        match run_session(&cfg, session, &view, &cancel).await {
            SessionEnd::Shutdown => break,
            SessionEnd::Lost { lease, reason } => {
                // No await between detecting the loss and this: fail safe at once.
                step_down(&view);
                warn!(node = %cfg.node, lease, "lost the etcd lease, no longer claiming mastership: {reason}");
                stale_lease = Some(lease);
                if began.elapsed() >= ttl {
                    backoff = BACKOFF_MIN;
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
    step_down(&view);
}

/// Keeps the lease alive, campaigns and publishes the observed leader until the
/// lease can no longer be trusted or the node shuts down.
async fn run_session(
    cfg: &Config,
    session: Session,
    view: &watch::Sender<MasterView>,
    cancel: &CancellationToken,
) -> SessionEnd {
    let Session {
        client,
        lease,
        timing,
        mut keeper,
        mut keepalives,
        mut last_ack_sent,
    } = session;
    let lost = |reason: String| SessionEnd::Lost { lease, reason };

    let mut election = client.election_client();
    let campaign = election.campaign(cfg.election.clone(), cfg.node.clone(), lease);
    tokio::pin!(campaign);
    // etcd answers an Observe only once there is a leader: it is opened alongside
    // the campaign, not before it.
    let mut observing = client.election_client();
    let open_observer = observing.observe(cfg.election.clone());
    tokio::pin!(open_observer);
    let mut observer: Option<ObserveStream> = None;
    let mut leader_key: Option<LeaderKey> = None;
    // Send times of the keep-alives not answered yet, oldest first.
    let mut unanswered: VecDeque<Instant> = VecDeque::new();
    let mut next_keepalive = Instant::now() + timing.keepalive_every;

    loop {
        let give_up_at = last_ack_sent + timing.give_up_after;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                step_down(view);
                leave(&client, lease, leader_key, timing).await;
                return SessionEnd::Shutdown;
            }
            _ = sleep_until(give_up_at) => {
                return lost(format!(
                    "no keep-alive answered within {:?} (lease TTL {:?})",
                    timing.give_up_after, timing.ttl
                ));
            }
            answer = keepalives.message() => match answer {
                Ok(Some(answer)) if answer.ttl() > 0 => {
                    if let Some(sent) = unanswered.pop_front() {
                        last_ack_sent = last_ack_sent.max(sent);
                    }
                }
                Ok(Some(_)) => return lost("etcd says the lease expired (keep-alive TTL 0)".into()),
                Ok(None) => return lost("the keep-alive stream ended".into()),
                Err(e) => return lost(format!("keep-alive failed: {e}")),
            },
            _ = sleep_until(next_keepalive) => {
                let now = Instant::now();
                next_keepalive = (next_keepalive + timing.keepalive_every).max(now);
                match keeper.keep_alive().now_or_never() {
                    Some(Ok(())) => unanswered.push_back(now),
                    Some(Err(e)) => return lost(format!("keep-alive failed: {e}")),
                    // The request queue is full (etcd stopped reading): the
                    // give-up deadline decides.
                    None => {}
                }
            }
            won = &mut campaign, if leader_key.is_none() => match won {
                Ok(mut won) => match won.take_leader() {
                    Some(key) => {
                        debug!(node = %cfg.node, epoch = key.rev(), "won the etcd election");
                        leader_key = Some(key);
                    }
                    None => return lost("the campaign answered without a leader key".into()),
                },
                Err(e) => return lost(format!("campaign failed: {e}")),
            },
            opened = &mut open_observer, if observer.is_none() => match opened {
                Ok(opened) => observer = Some(opened),
                Err(e) => return lost(format!("observing the election failed: {e}")),
            },
            observed = async {
                match observer.as_mut() {
                    Some(observer) => observer.message().await,
                    None => std::future::pending().await,
                }
            } => match observed {
                Ok(Some(observed)) => {
                    let Some(kv) = observed.kv() else { continue };
                    let seen = view_of(kv.value(), kv.create_revision(), kv.lease(), &cfg.node, lease);
                    if seen.master.as_deref() == Some(cfg.node.as_str())
                        && Instant::now() >= last_ack_sent + timing.give_up_after
                    {
                        return lost("the lease deadline passed".into());
                    }
                    publish(view, seen);
                }
                Ok(None) => return lost("the election observer ended".into()),
                Err(e) => return lost(format!("observing the election failed: {e}")),
            },
        }
    }
}

/// Resigns (if leading) and revokes the lease, so the next candidate leads at once.
async fn leave(client: &Client, lease: i64, leader_key: Option<LeaderKey>, timing: Timing) {
    if let Some(key) = leader_key {
        let mut election = client.election_client();
        let resign = election.resign(Some(ResignOptions::new().with_leader(key)));
        if let Err(e) = call("election resign", timing.op_timeout, resign).await {
            warn!("could not resign (revoking the lease instead): {e}");
        }
    }
    match call(
        "lease revoke",
        timing.op_timeout,
        client.lease_client().revoke(lease),
    )
    .await
    {
        Ok(_) => info!(lease, "left the etcd election"),
        Err(e) => warn!(
            lease,
            "could not revoke the lease (it expires on its own): {e}"
        ),
    }
}

/// The view for an observed leader key: its value names the master, its create
/// revision is the epoch. A key with our name under another lease than ours is a
/// leftover of an earlier session of this node: not a master (it expires or is
/// revoked shortly).
fn view_of(
    value: &[u8],
    create_revision: i64,
    key_lease: i64,
    me: &str,
    my_lease: i64,
) -> MasterView {
    let master = String::from_utf8_lossy(value).into_owned();
    let epoch = u64::try_from(create_revision).unwrap_or(0);
    if master == me && key_lease != my_lease {
        return MasterView {
            master: None,
            epoch,
        };
    }
    MasterView {
        master: Some(master),
        epoch,
    }
}

/// Publishes `seen` if it differs from the current view.
fn publish(view: &watch::Sender<MasterView>, seen: MasterView) {
    view.send_if_modified(|current| {
        if *current == seen {
            return false;
        }
        if seen.epoch < current.epoch {
            warn!(
                current = current.epoch,
                observed = seen.epoch,
                "etcd reports an older epoch (was its data wiped?)"
            );
        }
        debug!(master = ?seen.master, epoch = seen.epoch, "master view");
        *current = seen;
        true
    });
}

/// Publishes "no master known", keeping the epoch.
fn step_down(view: &watch::Sender<MasterView>) {
    view.send_if_modified(|current| current.master.take().is_some());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_rounded_up_to_whole_seconds_and_zero_is_refused() {
        assert_eq!(ttl_seconds(Duration::from_secs(3)).ok(), Some(3));
        assert_eq!(ttl_seconds(Duration::from_millis(1500)).ok(), Some(2));
        assert_eq!(ttl_seconds(Duration::from_millis(1)).ok(), Some(1));
        assert!(matches!(
            ttl_seconds(Duration::ZERO),
            Err(EtcdError::InvalidTtl(_))
        ));
    }

    #[test]
    fn the_deposed_master_gives_up_a_third_of_the_ttl_before_etcd_can_expire_it() {
        let t = Timing::for_ttl(Duration::from_secs(3));
        assert_eq!(t.keepalive_every, Duration::from_secs(1));
        assert_eq!(t.give_up_after, Duration::from_secs(2));
        assert!(t.give_up_after + t.ttl / 3 <= t.ttl);
    }

    #[test]
    fn the_observed_leader_key_names_the_master_and_its_create_revision_is_the_epoch() {
        assert_eq!(
            view_of(b"node-b", 42, 7, "node-a", 9),
            MasterView {
                master: Some("node-b".into()),
                epoch: 42
            }
        );
        assert_eq!(
            view_of(b"node-a", 43, 9, "node-a", 9),
            MasterView {
                master: Some("node-a".into()),
                epoch: 43
            }
        );
    }

    #[test]
    fn a_leftover_key_of_this_node_under_an_old_lease_is_not_a_master() {
        assert_eq!(
            view_of(b"node-a", 42, 7, "node-a", 9),
            MasterView {
                master: None,
                epoch: 42
            }
        );
    }

    #[test]
    fn stepping_down_keeps_the_epoch_and_notifies_once() {
        let (tx, mut rx) = watch::channel(MasterView {
            master: Some("node-a".into()),
            epoch: 5,
        });
        rx.mark_unchanged();
        step_down(&tx);
        assert!(rx.has_changed().unwrap_or(false));
        assert_eq!(
            *rx.borrow_and_update(),
            MasterView {
                master: None,
                epoch: 5
            }
        );
        step_down(&tx);
        assert!(!rx.has_changed().unwrap_or(true));
    }
}
