//! The ingress queue and the sequencer, the ring's single writer.
//!
//! Owns: the bounded ingress (`Ingress`) that every publisher writes to, and the
//! sequencer task that empties it into the ring.
//!
//! Promises:
//! - `seq` is assigned here and only here, strictly increasing by one from
//!   `RouterConfig::start_seq`, in ingress order; the records of one
//!   `publish_batch` get consecutive seqs (nothing is interleaved with them).
//! - `ts` is stamped here with the wall clock, never smaller than the previous `ts`
//!   (if the clock steps back, the previous value is repeated). The clock is read
//!   for the first event of each block and then once every 32 events, so under load
//!   consecutive events share a `ts` for a few microseconds.
//! - `origin` is the record's own if it has one, else the router's node name.
//! - Each event is encoded once, into the block it is appended with. A block holds
//!   what was queued, up to [`MAX_BLOCK_EVENTS`] events and no more than an eighth
//!   of the ring's capacity (so a partly evicted block keeps at most capacity / 8
//!   dead lines alive, and a reader has several blocks of slack before it lags), and
//!   stops growing once past [`MAX_BLOCK_BYTES`].
//! - Publishers never wait for readers: the ingress is the only thing they wait for,
//!   and only `publish_batch` waits (the emitter's `note` drops, counts and warns
//!   when the ingress is full). After a drain that filled no block, with few
//!   readers, the sequencer yields once between waking readers and answering
//!   publishers, so that on a quiet server the readers' writes go out first, on the
//!   same worker. The small blocks at the ring's tail are merged at the end of each
//!   drain, after that yield and the replies: on a quiet server, after the readers'
//!   writes.
//! - On close, everything already queued is sequenced before the ring is closed.
//! - Duplicates from a re-sending origin are dropped here: a record that carries
//!   `origin` and `originSeq` is sequenced only if its `originSeq` is above the
//!   highest one already in the ring for that origin (origins send in order, and
//!   re-send after a failure whatever they have not seen come back).
//! - Replication (a node following the master): `Item::Replicated` records keep
//!   the master's `seq`, `ts` and `origin`; one whose `seq` is already in the ring
//!   is skipped, one beyond the next `seq` is refused (the caller must `SkipTo`
//!   first, which empties the ring so its readers get an exact gap).

use std::collections::{HashMap, HashSet};
use std::mem;
use std::ops::RangeInclusive;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use master_events_events::{Record, Timestamp};
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch, Notify};

use crate::buffers::{BlockBuffers, BLOCK_BUFFER_CAPACITY};
use crate::ring::{
    Block, PackedMeta, Ring, StringId, BUCKET, HOST, MAX_BLOCK_STRINGS, NODE, NO_STRING, ORIGIN,
};
use crate::{Refused, RouterError};

/// The most events in one block.
pub const MAX_BLOCK_EVENTS: usize = 1024;
/// A block takes no more lines once it holds this many bytes. With the 1 KiB of
/// room for the line that fills it, a block's buffer is exactly 64 KiB, a size
/// allocators serve without rounding up.
pub const MAX_BLOCK_BYTES: usize = 63 * 1024;
/// After a small drain, the sequencer lets readers write before it answers
/// publishers only when there are at most this many (see `Sequencer::run`): at
/// K=100 the wait behind 100 writes raised the publishers' latency (docs/benchmarks.md).
const YIELD_MAX_READERS: usize = 16;
/// Under load, the clock is read once per this many events (see `Sequencer::push`).
const CLOCK_EVERY: u32 = 32;
/// The shared string cache of [`BlockStrings`] forgets everything past this many.
const STRING_CACHE_LIMIT: usize = 10_000;
/// Drop warnings are logged at most this often.
const DROP_WARN_INTERVAL_MS: u64 = 1_000;

/// One entry of the ingress queue.
// Records are stored inline on purpose: boxing them would cost an allocation per
// event, and the sequencer works on them in place.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Item {
    One(Record),
    /// The reply is taken (`None`) once sent.
    Batch(Vec<Record>, Option<oneshot::Sender<RangeInclusive<u64>>>),
    /// Records sequenced elsewhere (they carry their seq), appended as they are.
    Replicated(
        Vec<Record>,
        Option<oneshot::Sender<Result<u64, RouterError>>>,
    ),
    /// Forget everything and continue at this seq (a replica that missed events).
    SkipTo(u64, Option<oneshot::Sender<()>>),
    /// Cut the archive after this seq (see `Router::truncate_after`).
    Truncate(u64, Option<oneshot::Sender<Result<u64, RouterError>>>),
    /// Begin this epoch at the next seq (see `Router::begin_epoch`).
    BeginEpoch(u64, Option<oneshot::Sender<Result<u64, RouterError>>>),
    /// Makes the sequencer panic (tests of its supervision).
    #[cfg(test)]
    Panic,
}

/// The highest `originSeq` in the ring per origin, shared with the router's handles.
pub(crate) type HighWater = Arc<Mutex<HashMap<Arc<str>, u64>>>;

struct Queue {
    items: Vec<Item>,
    /// Records queued (a batch counts each of its records).
    events: usize,
    closed: bool,
}

/// The bounded queue between publishers and the sequencer, counted in records.
pub(crate) struct Ingress {
    queue: Mutex<Queue>,
    /// Wakes the sequencer when the queue stops being empty, and on close.
    wake: Notify,
    /// Wakes `push_batch` callers when the sequencer has emptied the queue.
    space: Notify,
    capacity: usize,
    dropped: AtomicU64,
    created: Instant,
    /// Milliseconds after `created` of the last drop warning; `u64::MAX` for never.
    last_warn_ms: AtomicU64,
}

/// What the sequencer found in the ingress.
enum Take {
    Items,
    Empty,
    Closed,
}

impl Ingress {
    pub(crate) fn new(capacity: usize) -> Ingress {
        Ingress {
            queue: Mutex::new(Queue {
                items: Vec::new(),
                events: 0,
                closed: false,
            }),
            wake: Notify::new(),
            space: Notify::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            created: Instant::now(),
            last_warn_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// Queues one record without waiting; gives it back if the queue is full or
    /// closed.
    pub(crate) fn try_push(&self, record: Record) -> Result<(), Refused> {
        let refuse = |record, error| {
            Err(Refused {
                record: Box::new(record),
                error,
            })
        };
        let was_empty = {
            let mut q = self.queue.lock();
            if q.closed {
                return refuse(record, RouterError::Closed);
            }
            if q.events >= self.capacity {
                return refuse(record, RouterError::QueueFull);
            }
            q.items.push(Item::One(record));
            q.events += 1;
            q.items.len() == 1
        };
        if was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Queues all the records at once, waiting for room (a batch larger than the
    /// whole queue is let in when the queue is empty), then waits for their seqs.
    pub(crate) async fn push_batch(
        &self,
        records: Vec<Record>,
    ) -> Result<RangeInclusive<u64>, RouterError> {
        let (tx, rx) = oneshot::channel();
        let n = records.len();
        self.push_item(Item::Batch(records, Some(tx)), n).await?;
        rx.await.map_err(|_| RouterError::Closed)
    }

    /// Queues replicated records; returns the ring's last seq once they are in.
    pub(crate) async fn push_replicated(&self, records: Vec<Record>) -> Result<u64, RouterError> {
        let (tx, rx) = oneshot::channel();
        let n = records.len();
        self.push_item(Item::Replicated(records, Some(tx)), n)
            .await?;
        rx.await.map_err(|_| RouterError::Closed)?
    }

    /// Queues a cut after `seq`; returns the ring's last seq once it is cut.
    pub(crate) async fn push_truncate(&self, seq: u64) -> Result<u64, RouterError> {
        let (tx, rx) = oneshot::channel();
        self.push_item(Item::Truncate(seq, Some(tx)), 1).await?;
        rx.await.map_err(|_| RouterError::Closed)?
    }

    /// Queues the beginning of `epoch`; returns its first seq once it is recorded.
    pub(crate) async fn push_begin_epoch(&self, epoch: u64) -> Result<u64, RouterError> {
        let (tx, rx) = oneshot::channel();
        self.push_item(Item::BeginEpoch(epoch, Some(tx)), 1).await?;
        rx.await.map_err(|_| RouterError::Closed)?
    }

    /// Queues a skip to `seq`; returns once the ring has skipped.
    pub(crate) async fn push_skip(&self, seq: u64) -> Result<(), RouterError> {
        let (tx, rx) = oneshot::channel();
        self.push_item(Item::SkipTo(seq, Some(tx)), 1).await?;
        rx.await.map_err(|_| RouterError::Closed)
    }

    /// Queues one item counting `n` records, waiting for room.
    /// Queues an item that makes the sequencer panic.
    #[cfg(test)]
    pub(crate) async fn inject_panic(&self) -> Result<(), RouterError> {
        self.push_item(Item::Panic, 1).await
    }

    async fn push_item(&self, item: Item, n: usize) -> Result<(), RouterError> {
        let mut item = Some(item);
        loop {
            let mut space = pin!(self.space.notified());
            space.as_mut().enable();
            let was_empty = {
                let mut q = self.queue.lock();
                if q.closed {
                    return Err(RouterError::Closed);
                }
                if q.events == 0 || q.events + n <= self.capacity {
                    if let Some(item) = item.take() {
                        q.items.push(item);
                    }
                    q.events += n;
                    Some(q.items.len() == 1)
                } else {
                    None
                }
            };
            match was_empty {
                Some(was_empty) => {
                    if was_empty {
                        self.wake.notify_one();
                    }
                    break;
                }
                None => space.await,
            }
        }
        Ok(())
    }

    /// Counts a record that could not be queued and warns, at most once a second.
    pub(crate) fn count_drop(&self, why: RouterError) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.created.elapsed().as_millis() as u64;
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if (last == u64::MAX || now >= last.saturating_add(DROP_WARN_INTERVAL_MS))
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = total,
                reason = %why,
                "an event was dropped ({why}); {total} dropped so far"
            );
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().events
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stops accepting records; what is queued will still be sequenced.
    pub(crate) fn close(&self) {
        self.queue.lock().closed = true;
        self.wake.notify_one();
        self.space.notify_waiters();
    }

    /// Swaps the queued items into `out` (which must be empty).
    fn take(&self, out: &mut Vec<Item>) -> (Take, usize) {
        let taken = {
            let mut q = self.queue.lock();
            if !q.items.is_empty() {
                mem::swap(&mut q.items, out);
                (Take::Items, mem::take(&mut q.events))
            } else if q.closed {
                (Take::Closed, 0)
            } else {
                (Take::Empty, 0)
            }
        };
        if let (Take::Items, _) = taken {
            self.space.notify_waiters();
        }
        taken
    }
}

/// The string table of the block being built: each distinct bucket, node, host and
/// origin once, found through the last id of each slot (events in a row usually name
/// the same bucket and node) or else a map. It goes with the block, so strings live
/// exactly as long as an event that names them, whatever the input.
///
/// A string new to the block is taken from a cache shared by all blocks, so that
/// small blocks (a quiet cluster appends one per event) share one allocation per
/// string rather than one each; the cache forgets everything once it holds
/// [`STRING_CACHE_LIMIT`] strings, so it stays bounded whatever the input.
///
/// Its maps hash with foldhash (seeded per process, so input cannot aim at its
/// collisions; and both maps are bounded): SipHash, the std default, was over a
/// third of the time spent here.
struct BlockStrings {
    table: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, StringId, foldhash::fast::RandomState>,
    last: [StringId; 4],
    cache: HashSet<Arc<str>, foldhash::fast::RandomState>,
}

// Every event adds at most four strings: a full block never runs out of ids.
const _: () = assert!(MAX_BLOCK_EVENTS * 4 < MAX_BLOCK_STRINGS);

impl Default for BlockStrings {
    fn default() -> Self {
        BlockStrings {
            table: Vec::new(),
            ids: HashMap::default(),
            last: [NO_STRING; 4],
            cache: HashSet::default(),
        }
    }
}

impl BlockStrings {
    /// The id of `s` in this block's table (added if new), remembered for `slot`.
    fn id(&mut self, slot: usize, s: &str) -> StringId {
        let last = self.last[slot];
        if let Some(known) = self.table.get(usize::from(last)) {
            if **known == *s {
                return last;
            }
        }
        let id = match self.ids.get(s) {
            Some(id) => *id,
            None => {
                // Below MAX_BLOCK_STRINGS by the assertion above.
                let id = self.table.len() as StringId;
                let a = match self.cache.get(s) {
                    Some(a) => Arc::clone(a),
                    None => {
                        if self.cache.len() >= STRING_CACHE_LIMIT {
                            self.cache.clear();
                        }
                        let a: Arc<str> = Arc::from(s);
                        self.cache.insert(Arc::clone(&a));
                        a
                    }
                };
                self.table.push(Arc::clone(&a));
                self.ids.insert(a, id);
                id
            }
        };
        self.last[slot] = id;
        id
    }

    /// The string of an id this table gave.
    fn get(&self, id: StringId) -> Option<&Arc<str>> {
        self.table.get(usize::from(id))
    }

    /// The table, for the block being appended; this one starts empty again.
    fn take(&mut self) -> Vec<Arc<str>> {
        self.ids.clear();
        self.last = [NO_STRING; 4];
        let mut table = mem::take(&mut self.table);
        table.shrink_to_fit();
        table
    }
}

/// The single writer of the ring.
pub(crate) struct Sequencer {
    ingress: Arc<Ingress>,
    ring: Arc<Ring>,
    next_seq: u64,
    last_ts: Timestamp,
    /// Events stamped with `last_ts` since the clock was last read.
    clock_age: u32,
    /// The router's node name, lent to records that have no origin while they are
    /// encoded (so that stamping it costs no allocation).
    node_name: String,
    strings: BlockStrings,
    high_water: HighWater,
    /// Which epoch sequenced which seqs (shared with the router's handles).
    epochs: Arc<parking_lot::RwLock<crate::epochs::EpochTable>>,
    max_block_events: usize,
    // The block being built.
    scratch: Vec<u8>,
    buffers: Arc<BlockBuffers>,
    metas: Vec<PackedMeta>,
    /// The block's `originSeq`s: empty until an event of it has one (see
    /// `Block::origin_seqs`).
    origin_seqs: Vec<u64>,
    /// Mean line length of the last block appended (sizes the next one's metas).
    mean_line_bytes: usize,
    first_seq: u64,
    /// Records left in the current drain (sizes the next block's vectors).
    remaining: usize,
    /// Blocks appended so far (tells a drain that filled no block from one that did).
    blocks_appended: u64,
    done: watch::Sender<bool>,
}

impl Sequencer {
    pub(crate) fn new(
        ingress: Arc<Ingress>,
        ring: Arc<Ring>,
        node: &str,
        high_water: HighWater,
        epochs: Arc<parking_lot::RwLock<crate::epochs::EpochTable>>,
        done: watch::Sender<bool>,
    ) -> Sequencer {
        let start = ring.start_seq();
        let max_block_events = ring.max_block_events();
        Sequencer {
            ingress,
            next_seq: start,
            last_ts: Timestamp::from_micros(0),
            clock_age: 0,
            node_name: node.to_owned(),
            strings: BlockStrings::default(),
            high_water,
            epochs,
            max_block_events,
            scratch: Vec::with_capacity(BLOCK_BUFFER_CAPACITY),
            buffers: Arc::new(BlockBuffers::default()),
            metas: Vec::new(),
            origin_seqs: Vec::new(),
            mean_line_bytes: 200,
            first_seq: start,
            remaining: 0,
            blocks_appended: 0,
            ring,
            done,
        }
    }

    /// Runs until the ingress is closed and empty, then closes the ring.
    pub(crate) async fn run(mut self) {
        let ingress = Arc::clone(&self.ingress);
        let mut items = Vec::new();
        let mut replies = Vec::new();
        loop {
            let (taken, events) = ingress.take(&mut items);
            match taken {
                Take::Items => {
                    let drain_start = self.blocks_appended;
                    self.remaining = events;
                    // Records are sequenced in place (they are large: moving them
                    // costs more than encoding some of them). After each block
                    // appended, readers (and other tasks) get to run, so that they
                    // can keep up with a small ring during a long drain.
                    for item in items.iter_mut() {
                        match item {
                            Item::One(record) => {
                                if self.is_duplicate(record) {
                                    continue;
                                }
                                if self.push(record, false) {
                                    tokio::task::yield_now().await;
                                }
                            }
                            Item::Batch(records, reply) => {
                                let first = self.next_seq;
                                for record in records.iter_mut() {
                                    if self.is_duplicate(record) {
                                        continue;
                                    }
                                    if self.push(record, false) {
                                        tokio::task::yield_now().await;
                                    }
                                }
                                if let Some(reply) = reply.take() {
                                    replies.push((reply, first..=self.next_seq - 1));
                                }
                            }
                            Item::Replicated(records, reply) => {
                                let mut outcome = Ok(());
                                for record in records.iter_mut() {
                                    let seq = record.envelope.seq.unwrap_or(0);
                                    if seq < self.next_seq {
                                        continue; // already in the ring
                                    }
                                    if seq > self.next_seq {
                                        outcome = Err(RouterError::ReplicaGap {
                                            expected: self.next_seq,
                                            found: seq,
                                        });
                                        break;
                                    }
                                    if self.push(record, true) {
                                        tokio::task::yield_now().await;
                                    }
                                }
                                self.flush();
                                self.ring.merge_tail();
                                if let Some(reply) = reply.take() {
                                    let _ = reply.send(outcome.map(|()| self.next_seq - 1));
                                }
                            }
                            Item::SkipTo(seq, reply) => {
                                self.flush();
                                self.ring.merge_tail();
                                if *seq > self.next_seq {
                                    self.ring.skip_to(*seq);
                                    self.next_seq = *seq;
                                }
                                if let Some(reply) = reply.take() {
                                    let _ = reply.send(());
                                }
                            }
                            Item::Truncate(seq, reply) => {
                                self.flush();
                                let outcome = self.truncate(*seq);
                                if let Some(reply) = reply.take() {
                                    let _ = reply.send(outcome);
                                }
                            }
                            Item::BeginEpoch(epoch, reply) => {
                                self.flush();
                                let first = self.next_seq;
                                let mut epochs = self.epochs.write();
                                let last = epochs.last_epoch();
                                let outcome =
                                    epochs.begin(*epoch, first).map(|()| first).map_err(|_| {
                                        RouterError::EpochBehind {
                                            epoch: *epoch,
                                            last,
                                        }
                                    });
                                drop(epochs);
                                if let Some(reply) = reply.take() {
                                    let _ = reply.send(outcome);
                                }
                            }
                            #[cfg(test)]
                            Item::Panic => panic!("injected sequencer panic"),
                        }
                    }
                    let filled_a_block = self.blocks_appended != drain_start;
                    self.flush();
                    items.clear();
                    // A small drain (a quiet moment, the case where latency shows):
                    // readers were just woken; let them run before the publishers
                    // are answered and the tail is merged. Woken together, the
                    // reader and the publisher would not both fit the worker's
                    // next-task slot, and tokio would wake a parked worker on
                    // another CPU to take one of them, which in a VM costs tens of
                    // microseconds of the CPU the reader's client needs. A drain
                    // that filled blocks has yielded already; with many readers, the
                    // publishers would wait behind all of their writes, so they are
                    // answered first.
                    let readers = self.ring.subscribers();
                    if !filled_a_block && (1..=YIELD_MAX_READERS).contains(&readers) {
                        tokio::task::yield_now().await;
                    }
                    for (reply, range) in replies.drain(..) {
                        // The publisher may have given up waiting: nothing to do.
                        let _ = reply.send(range);
                    }
                    // Last, once the readers have written (after a small drain) or
                    // were at least woken: merging copies the small blocks at the
                    // tail, and while the archive grows that copy touches new pages.
                    // Done inside the append, it ran between a reader's wake-up and
                    // its turn on this worker, and raised the K=1 latency tail
                    // (docs/benchmarks-history.md, "The tail merge").
                    self.ring.merge_tail();
                }
                // `notify_one` leaves a permit when no one waits, so a push between
                // `take` and here still wakes us.
                Take::Empty => ingress.wake.notified().await,
                Take::Closed => break,
            }
        }
        self.ring.close();
        self.done.send_replace(true);
    }

    /// Cuts the ring after `seq` (never below the commit): the epochs of the seqs
    /// cut are forgotten, and each origin's high-water mark goes back to what the
    /// archive still holds of it, so that its events cut away are taken again
    /// when re-sent.
    fn truncate(&mut self, seq: u64) -> Result<u64, RouterError> {
        let committed = self.ring.committed();
        if seq < committed {
            return Err(RouterError::CutCommitted { at: seq, committed });
        }
        if seq >= self.next_seq.saturating_sub(1) {
            return Ok(self.next_seq - 1);
        }
        let removed = self.ring.truncate_after(seq);
        self.next_seq = seq + 1;
        self.epochs.write().truncate_after(seq);
        let mut lowest: HashMap<Arc<str>, u64> = HashMap::new();
        for (origin, n) in removed {
            let low = lowest.entry(origin).or_insert(n);
            *low = (*low).min(n);
        }
        for (origin, low) in lowest {
            let kept = self.ring.highest_origin_seq(&origin);
            let mark = kept
                .unwrap_or(low.saturating_sub(1))
                .min(low.saturating_sub(1));
            self.high_water.lock().insert(origin, mark);
        }
        Ok(seq)
    }

    /// Whether the record repeats an `originSeq` its origin already has in the ring.
    fn is_duplicate(&mut self, record: &Record) -> bool {
        let (Some(origin), Some(n)) = (&record.envelope.origin, record.envelope.origin_seq) else {
            return false;
        };
        let hw = self.high_water.lock();
        hw.get(origin.as_str()).is_some_and(|high| n <= *high)
    }

    /// Sequences and encodes one record into the current block; returns whether
    /// that completed a block (appended to the ring). A `replicated` record keeps
    /// its own seq (equal to the next one) and ts.
    fn push(&mut self, record: &mut Record, replicated: bool) -> bool {
        self.remaining = self.remaining.saturating_sub(1);
        if self.metas.is_empty() {
            self.first_seq = self.next_seq;
            // Sized for what the block will likely hold, so that it is not
            // reallocated while it fills nor shrunk (copied) when appended.
            let by_bytes = MAX_BLOCK_BYTES / self.mean_line_bytes.max(1) + 2;
            let expected = (self.remaining + 1)
                .min(self.max_block_events)
                .min(by_bytes);
            self.metas.reserve_exact(expected);
        }
        let seq = self.next_seq;
        // Reading the clock costs as much as encoding a small event: under load it
        // is read for the first event of a block and then every CLOCK_EVERY events
        // (a few microseconds of sequencing apart).
        if self.metas.is_empty() || self.clock_age >= CLOCK_EVERY {
            self.last_ts = Timestamp::now().max(self.last_ts);
            self.clock_age = 0;
        }
        self.clock_age += 1;
        let ts = match (replicated, record.envelope.ts) {
            (true, Some(theirs)) => {
                self.last_ts = self.last_ts.max(theirs);
                theirs
            }
            _ => self.last_ts,
        };
        record.envelope.seq = Some(seq);
        record.envelope.ts = Some(ts);
        let lent = record.envelope.origin.is_none();
        if lent {
            record.envelope.origin = Some(mem::take(&mut self.node_name));
        }
        let strings = &mut self.strings;
        let origin = match &record.envelope.origin {
            Some(o) => strings.id(ORIGIN, o),
            None => NO_STRING,
        };
        let event = &record.event;
        let vbucket = event.vbucket();
        let meta = PackedMeta {
            strings: [
                event.bucket().map_or(NO_STRING, |s| strings.id(BUCKET, s)),
                event.node().map_or(NO_STRING, |s| strings.id(NODE, s)),
                event.host().map_or(NO_STRING, |s| strings.id(HOST, s)),
                origin,
            ],
            end: 0,
            vbucket: vbucket.unwrap_or(0),
            event_type: event.event_type(),
            has_vbucket: vbucket.is_some(),
        };
        if let (Some(n), Some(o)) = (record.envelope.origin_seq, strings.get(origin)) {
            let mut hw = self.high_water.lock();
            match hw.get_mut(o) {
                Some(high) => *high = (*high).max(n),
                None => {
                    hw.insert(Arc::clone(o), n);
                }
            }
        }
        let start = self.scratch.len();
        record.encode_line(&mut self.scratch);
        if lent {
            self.node_name = record.envelope.origin.take().unwrap_or_default();
        }
        let Ok(end) = u32::try_from(self.scratch.len()) else {
            // Only a line of gigabytes gets here: refuse it rather than corrupt
            // the block's offsets.
            self.scratch.truncate(start);
            self.ingress.count_drop(RouterError::LineTooLong);
            return false;
        };
        if let Some(n) = record.envelope.origin_seq {
            // Zeros for the events before it that had none.
            self.origin_seqs.resize(self.metas.len(), 0);
            self.origin_seqs.push(n);
        }
        self.metas.push(PackedMeta { end, ..meta });
        self.next_seq += 1;
        let full =
            self.metas.len() >= self.max_block_events || self.scratch.len() >= MAX_BLOCK_BYTES;
        if full {
            self.flush();
        }
        full
    }

    /// Appends the current block, if it has any event, to the ring.
    fn flush(&mut self) {
        if self.metas.is_empty() {
            return;
        }
        let bytes = if self.scratch.len() >= MAX_BLOCK_BYTES && BlockBuffers::fits(&self.scratch) {
            // A full block keeps the buffer it was encoded into (see buffers.rs).
            let full = mem::replace(&mut self.scratch, self.buffers.take());
            self.buffers.freeze(full)
        } else {
            // A part-filled block (the end of a drain) gets a copy of its exact size.
            let bytes = Bytes::copy_from_slice(&self.scratch);
            if BlockBuffers::fits(&self.scratch) {
                self.scratch.clear();
            } else {
                // It grew for a long line: back to a buffer of the usual size.
                self.scratch = self.buffers.take();
            }
            bytes
        };
        let mut metas = mem::take(&mut self.metas);
        let mut origin_seqs = mem::take(&mut self.origin_seqs);
        if !origin_seqs.is_empty() {
            origin_seqs.resize(metas.len(), 0);
        }
        self.mean_line_bytes = bytes.len() / metas.len();
        if metas.capacity() > metas.len() + metas.len() / 4 + 4 {
            metas.shrink_to_fit();
        }
        self.blocks_appended += 1;
        self.ring.append(Block {
            first_seq: self.first_seq,
            bytes,
            metas,
            strings: self.strings.take(),
            origin_seqs,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_strings_are_stored_once_per_block_and_start_empty_for_the_next() {
        let mut strings = BlockStrings::default();
        let a = strings.id(BUCKET, "default");
        let b = strings.id(NODE, "n_0@a");
        assert_eq!(strings.id(BUCKET, "default"), a);
        assert_eq!(strings.id(HOST, "default"), a, "shared across fields");
        assert_eq!(strings.id(ORIGIN, "n_0@a"), b);
        assert_eq!(strings.id(BUCKET, "other"), 2);
        assert_eq!(
            strings.id(BUCKET, "default"),
            a,
            "found again after another"
        );
        assert_eq!(strings.get(a).map(|s| &**s), Some("default"));
        assert_eq!(strings.get(NO_STRING), None);
        let table = strings.take();
        assert_eq!(
            table.iter().map(|s| &**s).collect::<Vec<_>>(),
            ["default", "n_0@a", "other"]
        );
        assert_eq!(strings.id(NODE, "n_1@b"), 0, "the next block starts empty");
        assert_eq!(strings.id(BUCKET, "default"), 1);
        let next = strings.take();
        assert!(
            Arc::ptr_eq(&table[0], &next[1]),
            "blocks share one allocation per string"
        );
    }

    #[test]
    fn the_shared_string_cache_stays_bounded() {
        let mut strings = BlockStrings::default();
        for i in 0..3 * STRING_CACHE_LIMIT {
            strings.id(BUCKET, &format!("bucket-{i}"));
            if i % 1000 == 999 {
                strings.take();
            }
            assert!(strings.cache.len() <= STRING_CACHE_LIMIT);
        }
    }
}
