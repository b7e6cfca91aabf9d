//! The in-process event router of master-events: ingress → sequencer → ring archive
//! (which is also the live bus) → readers and sinks.
//!
//! ```text
//!  Emitter::note()  ─┐ (never waits: drops, counts, warns when full)
//!  publish_batch()  ─┴─> ingress ─> sequencer ─> ring (last N events) ─┬─> Subscription (HTTP streams, ...)
//!                       (bounded)   (seq, ts,     one writer, readers   ├─> sink: stdout
//!                                    encode once)  walk it with cursors └─> sink: plugins ...
//! ```
//!
//! - [`Router::start`] spawns the sequencer; [`Router::emitter`] gives the cheap
//!   handle code notes events with; [`Router::publish_batch`] is the all-or-nothing,
//!   back-pressured path for ingest.
//! - [`Router::subscribe`] returns a [`Subscription`] from a [`Cursor`]; see
//!   [`ring`] for the lag semantics (a reader that falls behind gets an exact
//!   [`Chunk::Gap`], never a silent loss, and never slows the publisher).
//! - [`Filter`]s select events by type, bucket, vbucket and node;
//!   [`Sink`]s are registered at compile time ([`SinkRegistration`], with
//!   `inventory`) and configured from TOML ([`load_config`], [`start_sinks`]).
//!
//! ```
//! use master_events_events::catalog::VbucketMoveDone;
//! use master_events_router::{Chunk, Cursor, Router, RouterConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! # rt.block_on(async {
//! let router = Router::start(RouterConfig { node: "n_0@10.0.0.1".into(), ..Default::default() });
//! let mut sub = router.subscribe(Cursor::Oldest);
//! router.emitter().note(VbucketMoveDone { vbucket: 43, bucket: "default".into() });
//! let Some(Chunk::Events(batch)) = sub.recv().await else { panic!() };
//! let line = std::str::from_utf8(&batch.bytes())?.to_owned();
//! assert!(line.starts_with(r#"{"type":"vbucketMoveDone","seq":1,"ts":"#), "{line}");
//! assert!(line.ends_with("\"origin\":\"n_0@10.0.0.1\",\"vbucket\":43,\"bucket\":\"default\"}\n"), "{line}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use master_events_events::Record;
use tokio::sync::watch;

pub mod block;
mod buffers;
mod cold;
pub mod commit;
pub mod config;
mod emitter;
pub mod epochs;
pub mod error;
pub mod filter;
pub mod health;
mod ingress;
pub mod registry;
pub mod ring;
mod sequencer;
pub mod sink;
pub mod sinks;
pub mod supervise;
mod wakeup;

pub use commit::CommitGate;
pub use config::{load_config, start_sinks, start_sinks_on, Config, SinkEntry, SinkSet};
pub use emitter::{Emitter, Refused};
pub use epochs::{agreed_through, EpochTable, InvalidEpochs};
pub use error::ConfigError;
pub use filter::{Filter, FilterError, TypeSet};
pub use health::{SinkHealth, SinkState, SinkStatus};
pub use registry::{
    registered_filters, registered_sinks, FilterRegistration, RunOn, SinkBuildFn, SinkConfig,
    SinkContext, SinkRegistration,
};
pub use ring::{Chunk, Cursor, EventBatch, EventRef, Meta, Subscription};
pub use sink::{run_blocking, run_on_own_thread, Sink, SinkBatch, SinkFuture, SinkInput};
pub use wakeup::WaitGroup;

#[doc(hidden)]
pub use inventory;

use ingress::Ingress;
use ring::Ring;
use sequencer::Sequencer;

/// How a [`Router`] is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// This node's name: the `origin` of events noted without one.
    pub node: String,
    /// How many events the ring archive retains (default 4096, at least 1).
    pub archive_capacity: usize,
    /// How many records the ingress queue holds before `note` drops and
    /// `publish_batch` waits (default 65536, at least 1, at most `u32::MAX`).
    pub ingress_capacity: usize,
    /// The `seq` of the first event (default 1, at least 1). A new master continues
    /// the cluster cursor by starting after the last `seq` it knows of.
    pub start_seq: u64,
}

/// The default archive capacity (events).
pub const DEFAULT_ARCHIVE_CAPACITY: usize = 4096;
/// The default ingress capacity (records).
pub const DEFAULT_INGRESS_CAPACITY: usize = 65536;

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            node: "nonode@nohost".to_owned(),
            archive_capacity: DEFAULT_ARCHIVE_CAPACITY,
            ingress_capacity: DEFAULT_INGRESS_CAPACITY,
            start_seq: 1,
        }
    }
}

/// Why the router refused records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// The router is shut down (or shutting down): it takes no more records.
    #[error("the router is shut down")]
    Closed,
    /// The ingress queue is full (only for calls that do not wait).
    #[error("the ingress queue is full")]
    QueueFull,
    /// An encoded line is too long to be stored (over 4 GiB).
    #[error("the encoded line is too long")]
    LineTooLong,
    /// Replicated records do not continue the ring: `found` came where `expected`
    /// was due (skip to it first, see [`Router::skip_to`]).
    #[error("replicated seq {found} does not follow the archive (expected {expected})")]
    ReplicaGap {
        /// The seq the ring expected next.
        expected: u64,
        /// The seq that came.
        found: u64,
    },
    /// A cut of the archive would take back committed events.
    #[error("cannot cut the archive after seq {at}: seqs up to {committed} are committed")]
    CutCommitted {
        /// The seq the cut was asked after.
        at: u64,
        /// The last committed seq.
        committed: u64,
    },
    /// An epoch cannot begin: it is older than the last one begun.
    #[error("epoch {epoch} cannot begin after epoch {last}")]
    EpochBehind {
        /// The epoch asked for.
        epoch: u64,
        /// The last epoch begun.
        last: u64,
    },
}

/// A history id that is not 1 to 64 ASCII letters, digits, `-` or `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a history id is 1 to 64 ASCII letters, digits, '-' or '_'")]
pub struct InvalidHistory;

/// Whether `s` can be a history id: 1 to 64 ASCII letters, digits, `-` or `_`.
pub fn is_valid_history(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new history id: 16 random hexadecimal digits.
pub fn new_history() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Counters and sizes of a [`Router`], for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Events sequenced since start.
    pub published: u64,
    /// Events noted but dropped (ingress full or router shut down).
    pub dropped: u64,
    /// Records waiting in the ingress.
    pub ingress_queued: usize,
    /// The ingress capacity.
    pub ingress_capacity: usize,
    /// Events retained in the archive (never more than `archive_capacity`).
    pub archived: usize,
    /// The archive capacity.
    pub archive_capacity: usize,
    /// Bytes of the blocks that hold the retained events.
    pub archived_bytes: usize,
    /// What those lines take in memory: less than `archived_bytes` once older
    /// blocks are kept compressed.
    pub archived_stored_bytes: usize,
    /// Blocks kept compressed.
    pub archived_cold_blocks: usize,
    /// The lines of the compressed blocks kept decompressed for their readers, as
    /// of the freezer's last look (a copy is let go within half a second of its
    /// last read).
    pub archived_thawed_bytes: usize,
    /// Blocks in the ring.
    pub archived_blocks: usize,
    /// The `seq` of the oldest retained event, 0 if none.
    pub oldest_seq: u64,
    /// The `seq` of the last event, 0 if none.
    pub last_seq: u64,
    /// Live subscriptions (sinks and streams).
    pub subscribers: usize,
}

/// The freezer: every [`cold::FREEZE_TICK`], lets go of the thawed copies of cold
/// blocks not read since the last tick, and compresses the archive's blocks older
/// than [`cold::COLD_AFTER`] (but the newest [`cold::HOT_BLOCKS`]) on the blocking
/// pool, until the ring closes or is dropped.
async fn freeze_cold_blocks(ring: std::sync::Weak<Ring>) {
    let mut tick = tokio::time::interval(cold::FREEZE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(ring) = ring.upgrade() else { return };
        if ring.is_closed() {
            return;
        }
        // Thawed copies not read since the last tick are let go (`cold.rs`).
        ring.cool_thawed();
        let Some(older_than) = std::time::Instant::now().checked_sub(cold::COLD_AFTER) else {
            continue;
        };
        let candidates = ring.cold_candidates(older_than, cold::HOT_BLOCKS, cold::FREEZE_AT_MOST);
        if candidates.is_empty() {
            continue;
        }
        let froze = tokio::task::spawn_blocking(move || ring.freeze(candidates)).await;
        if froze.is_err() {
            // The runtime is shutting down (or the freeze panicked: the blocks
            // stay hot, which is only memory).
            return;
        }
    }
}

/// What every handle of a router shares; when the last handle goes, the ingress
/// closes and the sequencer finishes (as with [`Router::shutdown`]).
struct Shared {
    ingress: Arc<Ingress>,
    high_water: sequencer::HighWater,
    ring: Arc<Ring>,
    node: String,
    done: watch::Receiver<bool>,
    /// The seq before the first one this router sequences itself, when it was
    /// started with an archive (0 otherwise).
    restored_through: AtomicU64,
    /// The history the archive belongs to (see [`Router::history`]).
    history: parking_lot::RwLock<Arc<str>>,
    /// Why the sequencer stopped, when it stopped abnormally (see [`Router::failed`]).
    failure: watch::Receiver<Option<Arc<str>>>,
    /// What decides the commit (see [`crate::commit`]).
    gates: Arc<commit::CommitGates>,
    /// Which epoch sequenced which seqs (see [`Router::epochs`]).
    epochs: Arc<parking_lot::RwLock<EpochTable>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.ingress.close();
    }
}

/// The router: a handle to the ingress, the sequencer and the ring. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    shared: Arc<Shared>,
}

impl Router {
    /// Starts a router: spawns its sequencer on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn start(config: RouterConfig) -> Router {
        let ring = Arc::new(Ring::new(config.archive_capacity, config.start_seq));
        let ingress = Arc::new(Ingress::new(config.ingress_capacity));
        let (done_tx, done_rx) = watch::channel(false);
        let high_water = sequencer::HighWater::default();
        let epochs = Arc::new(parking_lot::RwLock::new(EpochTable::new()));
        let gates = Arc::new(commit::CommitGates::new(Arc::clone(&ring)));
        let sequencer = Sequencer::new(
            Arc::clone(&ingress),
            Arc::clone(&ring),
            &config.node,
            Arc::clone(&high_water),
            Arc::clone(&epochs),
            Arc::clone(&gates),
            done_tx,
        );
        let sequencing = tokio::spawn(sequencer.run());
        let (failure_tx, failure) = watch::channel(None);
        let (watched_ring, watched_ingress) = (Arc::clone(&ring), Arc::clone(&ingress));
        // Crash-only: a sequencer that panics must not leave readers and publishers
        // waiting for ever. The ring and the ingress close (readers get what was
        // sequenced, then their end; publishers get `Closed`), and the failure is
        // announced to whoever runs the router, which exits.
        tokio::spawn(async move {
            let Err(e) = sequencing.await else { return };
            let why: Arc<str> = if e.is_panic() {
                let message = supervise::panic_message(&*e.into_panic());
                format!("the sequencer panicked: {message}").into()
            } else {
                "the sequencer task was cancelled".into()
            };
            tracing::error!(error = %why, "the router stopped: no event can be sequenced any more");
            watched_ingress.close();
            watched_ring.close();
            let _ = failure_tx.send(Some(why));
        });
        tokio::spawn(freeze_cold_blocks(Arc::downgrade(&ring)));
        Router {
            shared: Arc::new(Shared {
                ingress,
                high_water,
                ring,
                node: config.node,
                done: done_rx,
                restored_through: AtomicU64::new(0),
                history: parking_lot::RwLock::new(new_history().into()),
                failure,
                gates,
                epochs,
            }),
        }
    }

    /// Starts a router whose archive is pre-filled with `records` sequenced before
    /// (a restart warm-loading what a persistent sink wrote): each keeps its `seq`,
    /// `ts`, `origin` and `originSeq` (so its line is the one it had, and the
    /// per-origin de-duplication knows what it already has), and new events continue
    /// after the last of them.
    ///
    /// Of `records` (in `seq` order), the archive keeps the last contiguous run of
    /// seqs, at most `archive_capacity` of them: the ring has no holes, so older
    /// records before a hole are left out, and a reader asking for them gets an
    /// exact gap. Records without a `seq`, or not above the previous one, are
    /// ignored. The first new event gets `seq = last + 1`, or `config.start_seq` if
    /// that is larger (then the archive is forgotten: readers get an exact gap, as
    /// for [`Router::skip_to`]). With no usable record this is [`Router::start`].
    ///
    /// The restored events are served to readers (`?o=1` returns them), but sinks
    /// started by [`start_sinks`] from [`Cursor::Oldest`] start after them
    /// ([`Router::restored_through`]): a previous run delivered them already.
    ///
    /// ```
    /// use master_events_events::{catalog::DeleteBucket, Record};
    /// use master_events_router::{Router, RouterConfig};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// # rt.block_on(async {
    /// let mut before = Record::new(DeleteBucket { bucket: "b".into() });
    /// before.envelope.seq = Some(41);
    /// let router = Router::start_with_archive(RouterConfig::default(), vec![before]).await?;
    /// assert_eq!((router.oldest_seq(), router.last_seq()), (Some(41), 41));
    /// let next = router.publish_batch(vec![Record::new(DeleteBucket { bucket: "c".into() })]).await?;
    /// assert_eq!(next, 42..=42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub async fn start_with_archive(
        config: RouterConfig,
        records: Vec<Record>,
    ) -> Result<Router, RouterError> {
        Router::restore(config, records, None).await
    }

    /// [`Router::start_with_archive`] for a router whose commit gates decide the
    /// commit (a cluster node): of the restored events, only those up to
    /// `committed` are committed; the rest wait for the gates (the cluster) like
    /// events just appended, and may be cut ([`Router::truncate_after`]) if the
    /// cluster never committed them. The router is gated from the start: the caller
    /// adds a gate ([`Router::add_commit_gate`]), or nothing after `committed` is
    /// ever shown.
    pub async fn start_with_archive_committed(
        config: RouterConfig,
        records: Vec<Record>,
        committed: u64,
    ) -> Result<Router, RouterError> {
        Router::restore(config, records, Some(committed)).await
    }

    async fn restore(
        mut config: RouterConfig,
        records: Vec<Record>,
        committed: Option<u64>,
    ) -> Result<Router, RouterError> {
        let capacity = config.archive_capacity.max(1);
        // The last contiguous run of seqs (ignoring records without one or out of
        // order), then its last `capacity` records. Records that already are one run
        // (a warm load's) are taken as they are: moving ~300-byte records into a new
        // vector cost a warm restart of a million events a copy of the archive.
        let contiguous = records.iter().all(|r| r.envelope.seq.is_some())
            && records
                .windows(2)
                .all(|w| w[0].envelope.seq.map(|s| s + 1) == w[1].envelope.seq);
        let mut run: Vec<Record> = if contiguous {
            records
        } else {
            contiguous_tail(records)
        };
        if run.len() > capacity {
            run.drain(..run.len() - capacity);
        }
        let (Some(first), Some(last)) = (
            run.first().and_then(|r| r.envelope.seq),
            run.last().and_then(|r| r.envelope.seq),
        ) else {
            return Ok(Router::start(config));
        };
        let next = config.start_seq.max(last + 1);
        config.start_seq = first;
        let router = Router::start(config);
        if committed.is_some() {
            router.shared.ring.set_gated();
        }
        router.replicate(run).await?;
        if let Some(seq) = committed {
            router.shared.ring.commit_through(seq.min(last));
        }
        if next > last + 1 {
            router.skip_to(next).await?;
        }
        router
            .shared
            .restored_through
            .store(next - 1, Ordering::Release);
        Ok(router)
    }

    /// For a router started with [`Router::start_with_archive`], the seq before the
    /// first one it sequences itself: events up to it came from a previous run
    /// (which delivered them to its sinks). `None` for a router started empty.
    pub fn restored_through(&self) -> Option<u64> {
        match self.shared.restored_through.load(Ordering::Acquire) {
            0 => None,
            seq => Some(seq),
        }
    }

    /// The id of the history this router's archive belongs to: an opaque token, new
    /// (random) when a router starts with an empty archive, and set with
    /// [`Router::set_history`] to the one it continues (a warm restart restores it, a
    /// follower takes its master's). A reader's `since=` is only meaningful within
    /// one history: seq 50 of one is not seq 50 of another.
    pub fn history(&self) -> Arc<str> {
        Arc::clone(&self.shared.history.read())
    }

    /// Makes this archive continue `history` (see [`Router::history`]). Refuses an id
    /// that [`is_valid_history`] refuses.
    pub fn set_history(&self, history: &str) -> Result<(), InvalidHistory> {
        if !is_valid_history(history) {
            return Err(InvalidHistory);
        }
        *self.shared.history.write() = history.into();
        Ok(())
    }

    /// A handle for noting events (never blocks).
    pub fn emitter(&self) -> Emitter {
        Emitter::new(Arc::clone(&self.shared))
    }

    /// Wakes every reader waiting in [`Subscription::recv`] or
    /// [`Subscription::poll_recv`], although nothing changed: for a reader that
    /// also waits for a condition of its own, set before this call (a server
    /// ending its streams at shutdown). [`Subscription::recv`] finds nothing new
    /// and waits again; a hand-written poll registers with
    /// [`Subscription::poll_recv`] and then looks at its condition, so that it is
    /// either woken by this call or sees the condition set.
    pub fn wake_readers(&self) {
        self.shared.ring.wake_readers();
    }

    /// A reader of the ring from `from`: it sees committed events only (see
    /// [`Router::add_commit_gate`]).
    pub fn subscribe(&self, from: Cursor) -> Subscription {
        self.shared.ring.subscribe(from, true)
    }

    /// A reader of every appended event, committed or not: for a commit gate (a
    /// durable sink must read what it makes durable).
    pub fn subscribe_uncommitted(&self, from: Cursor) -> Subscription {
        self.shared.ring.subscribe(from, false)
    }

    /// Adds a commit gate: from now on an event is committed — shown to readers and
    /// acknowledged to its publisher — only once every gate has marked it (see
    /// [`crate::commit`]). A durable sink takes one through
    /// [`crate::SinkContext::commit_gate`].
    pub fn add_commit_gate(&self) -> CommitGate {
        self.shared.gates.add()
    }

    /// Whether commit gates decide the commit.
    pub fn is_gated(&self) -> bool {
        self.shared.gates.any()
    }

    /// The `seq` of the last committed event, 0 if none (equal to
    /// [`Router::last_seq`] without commit gates).
    pub fn committed_seq(&self) -> u64 {
        let ring = &self.shared.ring;
        let committed = ring.committed();
        if committed < ring.start_seq() {
            0
        } else {
            committed
        }
    }

    /// Sequences `records` as one contiguous run of seqs, all or none, and returns
    /// that run once the records are committed (in the archive and, with commit
    /// gates, marked by every gate: see [`Router::add_commit_gate`]).
    ///
    /// Waits while the ingress has no room for the whole batch (back-pressure for
    /// ingest); a batch larger than the ingress capacity is let in once the ingress
    /// is empty. Each record's `seq` and `ts` are replaced; its `origin` is kept if
    /// set, else it becomes this router's node name. An empty batch sequences nothing
    /// and returns an empty range (`start > end`). Publishers waiting for room are
    /// served in the order they came. If the returned future is dropped while it
    /// waits for room, nothing is queued and no room is kept; dropped after the
    /// batch was queued, the batch is still sequenced.
    pub async fn publish_batch(
        &self,
        records: Vec<Record>,
    ) -> Result<RangeInclusive<u64>, RouterError> {
        self.publish_parts(vec![records]).await
    }

    /// [`Router::publish_batch`] of a batch held in parts: the records of every
    /// part, in order, are one batch, sequenced as one contiguous run of seqs, all
    /// or none. For a caller that has its records in parts (an ingest parsed on
    /// several threads), so that they are not copied into one vector first.
    pub async fn publish_parts(
        &self,
        parts: Vec<Vec<Record>>,
    ) -> Result<RangeInclusive<u64>, RouterError> {
        if parts.iter().all(Vec::is_empty) {
            let next = self.shared.ring.last_seq() + 1;
            #[allow(clippy::reversed_empty_ranges)]
            return Ok(next..=next - 1);
        }
        let range = self.shared.ingress.push_batch(parts).await?;
        self.shared.gates.wait(*range.end()).await;
        Ok(range)
    }

    /// Sequences `records` as [`Router::publish_batch`] does, but returns their seqs
    /// as soon as they are in the archive, committed or not: for a cluster master,
    /// which learns of the commit otherwise ([`Router::committed_seq`]).
    pub async fn sequence_batch(
        &self,
        records: Vec<Record>,
    ) -> Result<RangeInclusive<u64>, RouterError> {
        if records.is_empty() {
            let next = self.shared.ring.last_seq() + 1;
            #[allow(clippy::reversed_empty_ranges)]
            return Ok(next..=next - 1);
        }
        self.shared.ingress.push_batch(vec![records]).await
    }

    /// Waits until the commit is beyond `seq`, and returns it.
    pub async fn committed_beyond(&self, seq: u64) -> u64 {
        self.shared.gates.wait(seq.saturating_add(1)).await;
        self.committed_seq()
    }

    /// Which epoch (of the cluster's master discovery) sequenced which seqs of the
    /// archive (see [`epochs`]).
    pub fn epochs(&self) -> EpochTable {
        self.shared.epochs.read().clone()
    }

    /// Begins `epoch` at the next seq: every event this router sequences from now
    /// on is of that epoch. The same epoch as the last continues; an older one is
    /// refused ([`RouterError::EpochBehind`]). Returns the epoch's first seq.
    pub async fn begin_epoch(&self, epoch: u64) -> Result<u64, RouterError> {
        self.shared.ingress.push_begin_epoch(epoch).await
    }

    /// A replica takes its master's epochs for every seq from `from` on (see
    /// [`EpochTable::adopt_from`]).
    pub fn adopt_epochs(&self, master: &EpochTable, from: u64) {
        self.shared.epochs.write().adopt_from(master, from);
    }

    /// Cuts the archive after `seq`: the events after it (which the cluster never
    /// committed: a deposed master's own, or a replica's copy of them) are
    /// forgotten, with their epochs, and the next event gets `seq + 1`. Readers of
    /// committed events are unaffected; readers of uncommitted ones get a
    /// [`Chunk::Truncated`]. Each origin's high-water mark goes back, so its events
    /// that were cut are taken again when re-sent. Refused below the commit
    /// ([`RouterError::CutCommitted`]); nothing happens at or beyond the last seq.
    /// Returns the last seq once cut.
    pub async fn truncate_after(&self, seq: u64) -> Result<u64, RouterError> {
        self.shared.ingress.push_truncate(seq).await
    }

    /// Appends records sequenced elsewhere (each carries its `seq`; `ts`, `origin`
    /// and `originSeq` are kept): the replica of a master's archive. Records whose
    /// seq is already in the ring are skipped; a record beyond the next seq is
    /// refused with [`RouterError::ReplicaGap`] (and nothing after it is taken).
    /// Returns the ring's last seq once the records are in.
    pub async fn replicate(&self, records: Vec<Record>) -> Result<u64, RouterError> {
        if records.is_empty() {
            return Ok(self.last_seq());
        }
        self.shared.ingress.push_replicated(records).await
    }

    /// Forgets the archive and continues at `next_seq` (if it is beyond the next
    /// seq): readers get an exact gap for what they had not read. For a replica
    /// whose master no longer has the events it missed.
    pub async fn skip_to(&self, next_seq: u64) -> Result<(), RouterError> {
        self.shared.ingress.push_skip(next_seq).await
    }

    /// The highest `originSeq` of `origin` in the ring (0 if none): what the
    /// archive already has of that origin's events.
    pub fn high_water(&self, origin: &str) -> u64 {
        self.shared
            .high_water
            .lock()
            .get(origin)
            .copied()
            .unwrap_or(0)
    }

    /// The `seq` of the last sequenced event, 0 if none yet.
    pub fn last_seq(&self) -> u64 {
        let ring = &self.shared.ring;
        let last = ring.last_seq();
        if last < ring.start_seq() {
            0
        } else {
            last
        }
    }

    /// The `seq` of the oldest retained event, `None` if none yet.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.shared.ring.stats().oldest_seq
    }

    /// This router's node name.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// How many events the archive retains.
    pub fn archive_capacity(&self) -> usize {
        self.shared.ring.capacity()
    }

    /// Counters and sizes, for metrics.
    pub fn stats(&self) -> RouterStats {
        let ring = self.shared.ring.stats();
        let ingress = &self.shared.ingress;
        RouterStats {
            published: ring.next_seq - self.shared.ring.start_seq(),
            dropped: ingress.dropped(),
            ingress_queued: ingress.queued(),
            ingress_capacity: ingress.capacity(),
            archived: ring.retained,
            archive_capacity: self.shared.ring.capacity(),
            archived_bytes: ring.retained_bytes,
            archived_stored_bytes: ring.stored_bytes,
            archived_cold_blocks: ring.cold_blocks,
            archived_thawed_bytes: ring.thawed_bytes,
            archived_blocks: ring.blocks,
            oldest_seq: ring.oldest_seq.unwrap_or(0),
            last_seq: self.last_seq(),
            subscribers: self.shared.ring.subscribers(),
        }
    }

    /// Stops taking records, sequences everything already queued into the ring, then
    /// closes it: every subscription receives what it has not read yet, then `None`.
    /// Returns once the ring is closed. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.ingress.close();
        let mut done = self.shared.done.clone();
        // An error means the sequencer is gone, which is what we wait for anyway.
        let _ = done.wait_for(|d| *d).await;
    }

    /// Why the router stopped abnormally (its sequencer panicked), if it did.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.shared.failure.borrow().clone()
    }

    /// Resolves when the router stops abnormally (its sequencer panicked), with why;
    /// never, while it works. A process serving the router exits non-zero on it
    /// (crash-only: a supervisor restarts the process and a warm restart restores
    /// the archive) instead of hanging.
    pub async fn failed(&self) -> Arc<str> {
        let mut failure = self.shared.failure.clone();
        let why = match failure.wait_for(Option::is_some).await {
            Ok(why) => why.clone(),
            Err(_) => None,
        };
        match why {
            Some(why) => why,
            None => std::future::pending().await,
        }
    }

    /// Whether [`Router::shutdown`] has completed (the ring is closed).
    pub fn is_shut_down(&self) -> bool {
        self.shared.ring.is_closed()
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("node", &self.shared.node)
            .field("last_seq", &self.last_seq())
            .finish()
    }
}

/// The last contiguous run of seqs of `records`, ignoring records without a seq or
/// out of order.
fn contiguous_tail(records: Vec<Record>) -> Vec<Record> {
    let mut run: Vec<Record> = Vec::with_capacity(records.len());
    for record in records {
        let Some(seq) = record.envelope.seq else {
            continue;
        };
        match run.last().and_then(|r| r.envelope.seq) {
            Some(prev) if seq <= prev => continue,
            Some(prev) if seq != prev + 1 => run.clear(),
            _ => {}
        }
        run.push(record);
    }
    run
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use master_events_events::catalog::DeleteBucket;
    use master_events_events::Record;

    use super::*;

    #[tokio::test]
    async fn a_panicking_sequencer_closes_the_router_and_announces_why() {
        let router = Router::start(RouterConfig::default());
        let del = |b: &str| Record::new(DeleteBucket { bucket: b.into() });
        router
            .publish_batch(vec![del("a"), del("b"), del("c")])
            .await
            .expect("published");
        let mut reader = router.subscribe(Cursor::Oldest);
        assert_eq!(router.failure(), None);
        router.shared.ingress.inject_panic().await.expect("queued");
        let why = tokio::time::timeout(Duration::from_secs(10), router.failed())
            .await
            .expect("the failure is announced");
        assert!(why.contains("injected sequencer panic"), "{why}");
        assert_eq!(router.failure().as_deref(), Some(&*why));
        // Readers get what was sequenced, then their end: never a hang.
        let mut seqs = Vec::new();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), reader.recv())
            .await
            .expect("the reader is not left waiting")
        {
            if let Chunk::Events(batch) = chunk {
                seqs.extend(batch.iter().map(|e| e.seq));
            }
        }
        assert_eq!(seqs, vec![1, 2, 3]);
        // Publishers are refused, not left waiting.
        let refused = tokio::time::timeout(
            Duration::from_secs(10),
            router.publish_batch(vec![del("d")]),
        )
        .await
        .expect("answered");
        assert_eq!(refused, Err(RouterError::Closed));
    }
}
