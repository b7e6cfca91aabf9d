//! The health of a node's link to the master: whether the master answers, whether
//! it takes this node's events, how long events wait — for `GET /cluster`,
//! `GET /ready`, `/metrics` and the log.
//!
//! Owns: [`Health`], the state the follower stream and the forwarder report into,
//! the wording of their failures ([`transport_cause`], [`refusal_of`]), and
//! [`ClusterMetrics`], the Prometheus collector of these figures.
//!
//! Promises:
//! - A change of state is logged once, not per retry: WARN when the master becomes
//!   unreachable or refuses this node (naming the cause, e.g. "cluster secret
//!   refused by the master", "connection refused"), INFO when it recovers.
//! - Causes never carry the cluster secret (they are built from statuses and
//!   transport errors, never from requests).
//! - Every event answered `202` (queued) is either sequenced later (counted, and
//!   logged at INFO) or reported as never sequenced (counted, WARN).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use master_events_server::ForwardingState;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What the follower and the forwarder last saw of the master.
#[derive(Debug)]
pub(crate) struct HealthState {
    /// The follower's stream of the master is open.
    pub connected: bool,
    /// Why the stream is not open (set once the first attempt failed).
    pub reach_error: Option<String>,
    /// The last time the master answered this node.
    pub last_contact: Option<Instant>,
    /// The master's last seq when this replica connected (or at its first
    /// heartbeat): the replica has caught up once it holds that seq.
    pub catch_up_target: Option<u64>,
    /// How forwarding goes.
    pub forward: ForwardingState,
    /// The last forwarding failure, while `forward` is not ok.
    pub forward_error: Option<String>,
}

/// Counters of the node's link to the master.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Forward (and replication report) attempts that failed.
    pub forward_failures: AtomicU64,
    /// Events answered 202 (queued, not yet sequenced).
    pub queued_replies: AtomicU64,
    /// Events answered 202 and sequenced afterwards.
    pub late_sequenced: AtomicU64,
    /// Events queued on this node and never sequenced (given up at shutdown).
    pub unsequenced: AtomicU64,
    /// Events this node's archive held that the cluster never committed, taken
    /// back when it followed a new master (a deposed master's own sequencing).
    pub taken_back: AtomicU64,
    /// Peer requests refused for naming a stale or impossible epoch.
    pub stale_peers: AtomicU64,
}

/// The shared health of one node (see the module documentation).
#[derive(Debug)]
pub(crate) struct Health {
    state: Mutex<HealthState>,
    /// The counters.
    pub counters: Counters,
}

impl Health {
    pub fn new() -> Health {
        Health {
            state: Mutex::new(HealthState {
                connected: false,
                reach_error: None,
                last_contact: None,
                catch_up_target: None,
                forward: ForwardingState::Ok,
                forward_error: None,
            }),
            counters: Counters::default(),
        }
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> HealthState {
        let st = self.state.lock();
        HealthState {
            connected: st.connected,
            reach_error: st.reach_error.clone(),
            last_contact: st.last_contact,
            catch_up_target: st.catch_up_target,
            forward: st.forward,
            forward_error: st.forward_error.clone(),
        }
    }

    /// A new master to follow (or none): forget what was seen of the previous one.
    pub fn reset_link(&self) {
        let mut st = self.state.lock();
        st.connected = false;
        st.reach_error = None;
        st.last_contact = None;
        st.catch_up_target = None;
    }

    /// This node became master: its events go to its own router.
    pub fn became_master(&self) {
        self.reset_link();
        let mut st = self.state.lock();
        st.forward = ForwardingState::Ok;
        st.forward_error = None;
    }

    /// The master answered.
    pub fn contact(&self) {
        self.state.lock().last_contact = Some(Instant::now());
    }

    /// The master's stream is open; `target` is the master's last seq, if known.
    pub fn stream_up(&self, master: &str, target: Option<u64>) {
        let mut st = self.state.lock();
        st.connected = true;
        st.last_contact = Some(Instant::now());
        st.catch_up_target = target;
        if st.reach_error.take().is_some() {
            tracing::info!(%master, "the master is reachable again");
        }
    }

    /// A heartbeat of the master: it has sent everything up to `seq`.
    pub fn heartbeat(&self, seq: u64) {
        let mut st = self.state.lock();
        st.last_contact = Some(Instant::now());
        if st.catch_up_target.is_none() {
            st.catch_up_target = Some(seq);
        }
    }

    /// The master's stream failed or could not be opened.
    pub fn stream_down(&self, master: &str, cause: String) {
        let mut st = self.state.lock();
        st.connected = false;
        st.catch_up_target = None;
        if st.reach_error.is_none() {
            tracing::warn!(%master, cause = %cause, "master unreachable: {cause}");
        }
        st.reach_error = Some(cause);
    }

    /// A forward went through.
    pub fn forward_ok(&self, master: &str) {
        let mut st = self.state.lock();
        st.last_contact = Some(Instant::now());
        if st.forward != ForwardingState::Ok {
            tracing::info!(%master, "forwarding to the master works again");
            st.forward = ForwardingState::Ok;
            st.forward_error = None;
        }
    }

    /// Nothing waits to be forwarded: a `retrying` state is over (there is nothing
    /// left to fail). A refusal stays until the master takes something again.
    pub fn nothing_to_forward(&self, master: &str) {
        let mut st = self.state.lock();
        if st.forward == ForwardingState::Retrying {
            tracing::info!(%master, "nothing left to forward to the master");
            st.forward = ForwardingState::Ok;
            st.forward_error = None;
        }
    }

    /// A forward failed: `Retrying` (unreachable, failed) or `Refused`.
    pub fn forward_failed(&self, master: &str, state: ForwardingState, cause: String) {
        self.counters
            .forward_failures
            .fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock();
        if st.forward != state {
            match state {
                ForwardingState::Refused => tracing::warn!(
                    %master,
                    cause = %cause,
                    "the master refuses this node: {cause}; events stay queued"
                ),
                _ => tracing::warn!(
                    %master,
                    cause = %cause,
                    "cannot forward events to the master: {cause}; retrying with backoff"
                ),
            }
            st.forward = state;
        }
        st.forward_error = Some(cause);
    }
}

/// A transport error in a few words: "connection refused", "timed out", ...
pub(crate) fn transport_cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    let mut source = std::error::Error::source(error);
    let mut innermost = None;
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            let text = match io.kind() {
                K::ConnectionRefused => "connection refused",
                K::ConnectionReset => "connection reset",
                K::ConnectionAborted => "connection aborted",
                K::TimedOut => "timed out",
                K::UnexpectedEof => "connection closed",
                K::BrokenPipe => "connection closed",
                _ => return io.to_string(),
            };
            return text.to_owned();
        }
        innermost = Some(cause.to_string());
        source = cause.source();
    }
    innermost.unwrap_or_else(|| error.to_string())
}

/// What a refusing status means: `Refused` for 401/403 (the cluster secret),
/// `Retrying` for anything else.
pub(crate) fn refusal_of(
    status: reqwest::StatusCode,
    has_secret: bool,
) -> (ForwardingState, String) {
    match status.as_u16() {
        401 | 403 if has_secret => (
            ForwardingState::Refused,
            format!("cluster secret refused by the master ({status})"),
        ),
        401 | 403 => (
            ForwardingState::Refused,
            format!(
                "the master wants a cluster secret and this node has none ({status}): \
                 give every node the same --cluster-secret-file"
            ),
        ),
        409 => (
            ForwardingState::Retrying,
            "the master says it is not the master of this epoch (409)".to_owned(),
        ),
        _ => (
            ForwardingState::Retrying,
            format!("the master answered {status}"),
        ),
    }
}

/// What [`ClusterMetrics`] reads at each scrape.
pub(crate) trait MetricsSource: Send + Sync + std::fmt::Debug + 'static {
    /// The live health.
    fn current(&self) -> master_events_server::ClusterHealth;
    /// The counters.
    fn counters(&self) -> &Counters;
    /// Events refused by a full queue.
    fn queue_refused(&self) -> u64;
    /// Writes of the queue journal that failed.
    fn journal_failures(&self) -> u64;
}

/// The node's cluster metrics, read at each scrape, then those of `next` (the
/// server takes one extra collector; this one carries the rest along).
#[derive(Debug)]
pub struct ClusterMetrics {
    pub(crate) source: Arc<dyn MetricsSource>,
    pub(crate) next: Option<Box<dyn Collector>>,
}

impl Collector for ClusterMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let h = self.source.current();
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: f64| {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            &mut encoder,
            "master_events_cluster_master_reachable",
            "1 when the master answers this node (always on the master), else 0.",
            if h.master_reachable { 1.0 } else { 0.0 },
        )?;
        if let Some(age) = h.last_contact_secs_ago {
            gauge(
                &mut encoder,
                "master_events_cluster_last_contact_age_seconds",
                "Seconds since the master last answered this node (absent on the master and before the first contact).",
                age,
            )?;
        }
        gauge(
            &mut encoder,
            "master_events_cluster_queued_events",
            "Events queued on this node, not yet sequenced by the master.",
            h.forwarding.queued as f64,
        )?;
        gauge(
            &mut encoder,
            "master_events_cluster_oldest_queued_seconds",
            "How long the oldest event queued on this node has waited (0 when none waits).",
            h.forwarding.oldest_queued_secs.unwrap_or(0.0),
        )?;
        {
            let g = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(
                "master_events_cluster_forwarding_state",
                "1 for the state forwarding to the master is in (ok, retrying, refused).",
                None,
                g.metric_type(),
            )?;
            for (name, state) in [
                ("ok", ForwardingState::Ok),
                ("retrying", ForwardingState::Retrying),
                ("refused", ForwardingState::Refused),
            ] {
                ConstGauge::new(i64::from(h.forwarding.state == state))
                    .encode(family.encode_family(&[("state", name)])?)?;
            }
        }
        let c = self.source.counters();
        let counters: [(&str, &str, u64); 8] = [
            (
                "master_events_cluster_forward_failures",
                "Attempts to send events or replication reports to the master that failed (each is retried).",
                c.forward_failures.load(Ordering::Relaxed),
            ),
            (
                "master_events_cluster_queued_replies",
                "Events answered 202 (queued on this node, not yet sequenced).",
                c.queued_replies.load(Ordering::Relaxed),
            ),
            (
                "master_events_cluster_late_sequenced",
                "Events answered 202 that were sequenced afterwards.",
                c.late_sequenced.load(Ordering::Relaxed),
            ),
            (
                "master_events_cluster_unsequenced_events",
                "Events queued on this node that were never sequenced (still queued at shutdown).",
                c.unsequenced.load(Ordering::Relaxed),
            ),
            (
                "master_events_cluster_taken_back_events",
                "Events of this node's archive the cluster never committed, taken back when it followed a new master.",
                c.taken_back.load(Ordering::Relaxed),
            ),
            (
                "master_events_cluster_stale_peer_requests",
                "Peer requests refused because they named an older epoch than this node promised, or a newer one than it knows.",
                c.stale_peers.load(Ordering::Relaxed),
            ),
            (
                "master_events_cluster_queue_refused",
                "Events refused because the node queue was full.",
                self.source.queue_refused(),
            ),
            (
                "master_events_cluster_queue_journal_failures",
                "Writes of the queue journal (serve --queue-dir) that failed; its events were kept in memory only until a write worked again.",
                self.source.journal_failures(),
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        match &self.next {
            Some(next) => next.encode(encoder),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_secret_is_named_and_other_statuses_are_retried() {
        let (state, cause) = refusal_of(reqwest::StatusCode::UNAUTHORIZED, true);
        assert_eq!(state, ForwardingState::Refused);
        assert!(
            cause.contains("cluster secret refused by the master"),
            "{cause}"
        );
        let (state, cause) = refusal_of(reqwest::StatusCode::FORBIDDEN, false);
        assert_eq!(state, ForwardingState::Refused);
        assert!(cause.contains("--cluster-secret-file"), "{cause}");
        let (state, _) = refusal_of(reqwest::StatusCode::CONFLICT, true);
        assert_eq!(state, ForwardingState::Retrying);
        let (state, cause) = refusal_of(reqwest::StatusCode::SERVICE_UNAVAILABLE, true);
        assert_eq!(state, ForwardingState::Retrying);
        assert!(cause.contains("503"), "{cause}");
    }

    #[test]
    fn the_link_state_changes_once_per_transition() {
        let h = Health::new();
        h.forward_failed("m", ForwardingState::Refused, "secret".into());
        h.forward_failed("m", ForwardingState::Refused, "secret".into());
        let st = h.snapshot();
        assert_eq!(st.forward, ForwardingState::Refused);
        assert_eq!(st.forward_error.as_deref(), Some("secret"));
        assert_eq!(h.counters.forward_failures.load(Ordering::Relaxed), 2);
        h.forward_ok("m");
        let st = h.snapshot();
        assert_eq!(st.forward, ForwardingState::Ok);
        assert_eq!(st.forward_error, None);
        assert!(st.last_contact.is_some());

        h.forward_failed("m", ForwardingState::Retrying, "down".into());
        h.nothing_to_forward("m");
        assert_eq!(h.snapshot().forward, ForwardingState::Ok);
        h.forward_failed("m", ForwardingState::Refused, "secret".into());
        h.nothing_to_forward("m");
        assert_eq!(h.snapshot().forward, ForwardingState::Refused, "kept");
        h.forward_ok("m");

        h.stream_down("m", "connection refused".into());
        assert!(!h.snapshot().connected);
        h.stream_up("m", Some(7));
        let st = h.snapshot();
        assert!(st.connected && st.reach_error.is_none());
        assert_eq!(st.catch_up_target, Some(7));
        h.heartbeat(9);
        assert_eq!(
            h.snapshot().catch_up_target,
            Some(7),
            "kept from the connect"
        );
    }
}
