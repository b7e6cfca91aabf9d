//! The sequencer: the ring's single writer.
//!
//! Owns: the task that empties the ingress (`crate::ingress`) into the ring: it
//! stamps each record, encodes it into the block being built (`crate::block`) and
//! appends full blocks; and each origin's high-water `originSeq` (`HighWater`).
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
//! - Each event is encoded once, into the block it is appended with; the `ts`
//!   and `origin` of a run of events stamped alike are encoded once for the run
//!   and copied (`StampCache`). A block holds
//!   what was queued, up to [`MAX_BLOCK_EVENTS`](crate::block::MAX_BLOCK_EVENTS) events and no more than an eighth
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
//!
//! See docs/architecture.md for the path of an event.

use std::collections::HashMap;
use std::mem;
use std::sync::Arc;

use bytes::Bytes;
use master_events_events::{CompactString, Record, StampCache, Timestamp};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::block::{
    Block, BlockStrings, PackedMeta, BUCKET, HOST, MAX_BLOCK_BYTES, NODE, NO_STRING, ORIGIN,
};
use crate::buffers::{BlockBuffers, BLOCK_BUFFER_CAPACITY};
use crate::ingress::{Ingress, Item, Take};
use crate::ring::Ring;
use crate::RouterError;

/// After a small drain, the sequencer lets readers write before it answers
/// publishers only when there are at most this many (see `Sequencer::run`): at
/// K=100 the wait behind 100 writes raised the publishers' latency (docs/benchmarks-history.md).
const YIELD_MAX_READERS: usize = 16;
/// Under load, the clock is read once per this many events (see `Sequencer::push`).
const CLOCK_EVERY: u32 = 32;

/// The highest `originSeq` in the ring per origin, shared with the router's handles.
pub(crate) type HighWater = Arc<Mutex<HashMap<Arc<str>, u64>>>;

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
    node_name: CompactString,
    /// The `ts` and `origin` of the last line encoded, as written: the next line
    /// stamped alike copies them.
    stamps: StampCache,
    strings: BlockStrings,
    high_water: HighWater,
    /// Which epoch sequenced which seqs (shared with the router's handles).
    epochs: Arc<parking_lot::RwLock<crate::epochs::EpochTable>>,
    /// The commit gates, whose marks a cut takes back.
    gates: Arc<crate::commit::CommitGates>,
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
        gates: Arc<crate::commit::CommitGates>,
        done: watch::Sender<bool>,
    ) -> Sequencer {
        let start = ring.start_seq();
        let max_block_events = ring.max_block_events();
        Sequencer {
            ingress,
            next_seq: start,
            last_ts: Timestamp::from_micros(0),
            clock_age: 0,
            node_name: node.into(),
            stamps: StampCache::default(),
            strings: BlockStrings::default(),
            high_water,
            epochs,
            gates,
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
                    // Readers get a turn after each block when there are many
                    // of them, or when the drain is long enough to lap them (over
                    // a quarter of the ring). Otherwise the drain runs through and
                    // its publishers are answered sooner: a producer sending one
                    // request at a time to one or ten readers went 5-10% faster
                    // (docs/benchmarks-history.md). With many readers, answering first lets
                    // the producer outrun them, and they would get gaps instead.
                    let lap = events > self.ring.capacity() / 4
                        || self.ring.subscribers() > YIELD_MAX_READERS;
                    // Records are sequenced in place (they are large: moving them
                    // costs more than encoding some of them). With `lap`, after
                    // each block appended, readers (and other tasks) get to run, so
                    // that they can keep up with a small ring during a long drain.
                    for item in items.iter_mut() {
                        match item {
                            Item::One(record) => {
                                if self.is_duplicate(record) {
                                    continue;
                                }
                                if self.push(record, false) && lap {
                                    tokio::task::yield_now().await;
                                }
                            }
                            Item::Batch(parts, reply) => {
                                let first = self.next_seq;
                                for record in parts.iter_mut().flatten() {
                                    if self.is_duplicate(record) {
                                        continue;
                                    }
                                    if self.push(record, false) && lap {
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
                    // The records are dropped once their publishers are answered:
                    // freeing a batch's strings is not on its publisher's path.
                    items.clear();
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
                Take::Empty => ingress.woken().await,
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
        self.gates.cut(seq);
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
        record.encode_line_stamped(&mut self.scratch, &mut self.stamps);
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
