//! The ring archive: the retained window of recent events and the live bus, as one
//! structure.
//!
//! Owns: the sequenced events once the sequencer has encoded them, stored as blocks
//! (many lines in one contiguous [`Bytes`], a 16-byte packed [`Meta`] per event,
//! the block's distinct strings once, and `originSeq`s only in blocks that have
//! them; a reader takes the lock once per block and
//! gets a zero-copy slice of many lines), and every reader's view of them
//! ([`Subscription`]).
//!
//! Readers that wait together in a [`WaitGroup`] of 8 (`GROUP_COPY_MIN_MEMBERS`) or
//! more (the streams of one HTTP/2 connection) read a small, wholly committed
//! block from one copy the group keeps, made by the first of them to read it:
//! without the ring's lock, and with reference counts that only the group's task
//! changes. (At 100,000 streams, the lock and the block's reference counts, which
//! every stream changed from both workers, each change a cache line passed
//! between them, cost a seventh of the server's CPU.) The copy changes nothing a
//! reader receives: it is read only for retained seqs, and a cut never reaches
//! a committed event.
//!
//! Like tokio's `broadcast` channel or Nomad's event buffer, there is no per-reader
//! queue: a reader is only a cursor (the next `seq` it wants) into the shared ring,
//! so "replay the archive, then follow live" has no gap and no duplicate by
//! construction, and a reader costs no memory however far behind it is.
//!
//! # Lag semantics
//!
//! - The ring retains exactly the last `capacity` events (counted in events, not
//!   blocks): when an append pushes the count over `capacity`, the oldest events are
//!   evicted, a block at a time once none of its events is retained (a block may be
//!   partly evicted; its evicted lines are never delivered).
//! - The writer (the sequencer) never waits for a reader. A reader that is not
//!   reading holds nothing but its cursor (and, at most, the one batch it was last
//!   given).
//! - A reader asks for events from a [`Cursor`]: [`Cursor::Oldest`] (the oldest event
//!   retained when it subscribes), [`Cursor::After`]`(seq)` (exclusive) or
//!   [`Cursor::Now`] (only events sequenced after it subscribed). `After(seq)` with
//!   `seq` at or beyond the last sequenced event means "wait for `seq + 1`": events up
//!   to `seq` are skipped as they arrive.
//! - Events are delivered in `seq` order, each exactly once, in [`EventBatch`]es of
//!   consecutive events.
//! - When the next event a reader wants is no longer retained (it asked for an old
//!   cursor, or fell behind the tail while not reading), the reader first receives
//!   one [`Chunk::Gap`] naming the exact range it missed (`fromSeq..=toSeq`, `missed`
//!   = their count) and then continues from the oldest retained event. Nothing is
//!   ever skipped silently: for every reader, the events and gaps it receives cover
//!   its range of `seq`s contiguously.
//! - After the ring is closed (router shutdown), a reader still receives everything
//!   it had not read yet; then [`Subscription::recv`] returns `None`.
//!
//! # Commit
//!
//! - An appended event is *committed* once every commit gate has it (a durable sink
//!   that wrote it to disk; see [`crate::commit`]); with no gate, as soon as it is
//!   appended. Readers see only committed events: the commit is the horizon of
//!   [`Subscription::recv`], so no reader ever sees an event that a crash could take
//!   back. The commit never goes backwards.
//! - The gates themselves read the uncommitted events
//!   ([`crate::Router::subscribe_uncommitted`]): they are how events get committed.
//!
//! ```
//! use master_events_events::catalog::DeleteBucket;
//! use master_events_router::{Chunk, Cursor, Router, RouterConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! # rt.block_on(async {
//! let router = Router::start(RouterConfig { archive_capacity: 4, ..Default::default() });
//! let mut early = router.subscribe(Cursor::Oldest); // wants seq 1, then reads nothing
//! let emitter = router.emitter();
//! for i in 0..10 {
//!     emitter.note(DeleteBucket { bucket: format!("b{i}").into() });
//! }
//! router.shutdown().await; // everything noted is now in the ring
//!
//! // Only seqs 7..=10 are retained: the early reader learns exactly what it missed...
//! match early.recv().await {
//!     Some(Chunk::Gap(gap)) => assert_eq!((gap.from_seq, gap.to_seq, gap.missed), (1, 6, 6)),
//!     other => panic!("expected a gap, got {other:?}"),
//! }
//! // ...then reads the oldest retained events, with no further gap.
//! let mut seqs = Vec::new();
//! while let Some(Chunk::Events(batch)) = early.recv().await {
//!     seqs.extend(batch.iter().map(|e| e.seq));
//! }
//! assert_eq!(seqs, vec![7, 8, 9, 10]);
//! # });
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use master_events_events::{EventType, Gap};
use parking_lot::RwLock;

pub use crate::block::Meta;
use crate::block::{Block, MAX_BLOCK_BYTES, MAX_BLOCK_EVENTS};
use crate::cold::ColdBlock;
use crate::wakeup::{Group, WaitGroup, Waiter, Wakeup};

/// The reason carried by a [`Gap`] for events evicted from the ring.
pub const GAP_EVICTED: &str = "evicted from the archive";
/// The reason carried by a [`Gap`] for `seq`s older than this router's first event
/// (`RouterConfig::start_seq`): they were sequenced elsewhere, or never.
pub const GAP_BEFORE_START: &str = "sequenced before this archive started";

/// Where a [`Subscription`] starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// The oldest event retained at the moment of subscribing.
    Oldest,
    /// The events after this `seq` (exclusive). If they are no longer retained, a
    /// [`Chunk::Gap`] comes first; if `seq` is at or beyond the last sequenced event,
    /// the reader waits for `seq + 1`.
    After(u64),
    /// Only events sequenced after subscribing.
    Now,
}

/// What a [`Subscription`] delivers.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Consecutive events.
    Events(EventBatch),
    /// Events this reader wanted are no longer retained; the next events delivered
    /// start at `gap.to_seq + 1`.
    Gap(Gap),
    /// Only for a reader of uncommitted events ([`crate::Router::subscribe_uncommitted`]):
    /// the archive was cut after this seq ([`crate::Router::truncate_after`]: events
    /// a deposed master sequenced that the cluster never committed). Events this
    /// reader got beyond it are taken back; the next events delivered start at
    /// `after + 1`. Readers of committed events never get it: a cut never reaches
    /// a committed event.
    Truncated {
        /// The last seq that stays.
        after: u64,
    },
}

/// A run of consecutive events from one block: a zero-copy view of their lines.
///
/// Never empty when delivered by a [`Subscription`].
#[derive(Clone)]
pub struct EventBatch {
    pub(crate) block: Arc<Block>,
    /// Index in the block of the first event of the batch.
    pub(crate) start: usize,
    /// Index in the block one past the last event of the batch.
    pub(crate) end: usize,
}

impl EventBatch {
    /// All the lines of the batch, each `\n`-terminated, back to back (zero-copy).
    pub fn bytes(&self) -> Bytes {
        self.block
            .bytes
            .slice(self.block.line_start(self.start)..self.block.line_end(self.end - 1))
    }

    /// The number of events in the batch.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the batch has no event (never true for a delivered batch).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The `seq` of the first event.
    pub fn first_seq(&self) -> u64 {
        self.block.first_seq + self.start as u64
    }

    /// The `seq` of the last event.
    pub fn last_seq(&self) -> u64 {
        self.block.first_seq + self.end as u64 - 1
    }

    /// The events, in `seq` order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EventRef<'_>> + '_ {
        (self.start..self.end).map(move |i| self.event(i))
    }

    /// The events of `block` from seq `want` (which it holds, at most `horizon`)
    /// up to its last, but never past `horizon` (a block may hold events not
    /// committed yet): what a read from `want` gets of the block.
    fn from_seq(block: Arc<Block>, want: u64, horizon: u64) -> EventBatch {
        let start = (want - block.first_seq) as usize;
        let end = block.len().min((horizon + 1 - block.first_seq) as usize);
        EventBatch { block, start, end }
    }

    /// The type of each event, in order: [`EventBatch::iter`]'s `meta.event_type`,
    /// without the rest of each event's view (for a reader that only counts them).
    pub fn event_types(&self) -> impl ExactSizeIterator<Item = EventType> + '_ {
        self.block.metas[self.start..self.end]
            .iter()
            .map(|m| m.event_type)
    }

    /// The event at index `i` of the block (crate-internal: callers stay in range).
    pub(crate) fn event(&self, i: usize) -> EventRef<'_> {
        let block = &*self.block;
        EventRef {
            seq: block.first_seq + i as u64,
            line: &block.bytes[block.line_start(i)..block.line_end(i)],
            meta: block.metas[i].view(&block.strings, block.origin_seq(i)),
        }
    }

    /// The lines of the events at block indices `from..to` (zero-copy).
    pub(crate) fn slice(&self, from: usize, to: usize) -> Bytes {
        self.block
            .bytes
            .slice(self.block.line_start(from)..self.block.line_end(to - 1))
    }
}

impl fmt::Debug for EventBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBatch")
            .field("first_seq", &self.first_seq())
            .field("last_seq", &self.last_seq())
            .field("len", &self.len())
            .finish()
    }
}

/// One event of an [`EventBatch`].
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    /// The event's `seq`.
    pub seq: u64,
    /// The event's JSON line, with its `\n`.
    pub line: &'a [u8],
    /// What filters look at.
    pub meta: Meta<'a>,
}

/// The numbers [`crate::RouterStats`] reports about the ring.
pub(crate) struct RingStats {
    pub(crate) retained: usize,
    pub(crate) blocks: usize,
    pub(crate) retained_bytes: usize,
    /// What the retained lines take in memory (compressed for cold blocks).
    pub(crate) stored_bytes: usize,
    pub(crate) cold_blocks: usize,
    /// The lines of the thawed copies the cold blocks keep (as of the freezer's
    /// last look).
    pub(crate) thawed_bytes: usize,
    pub(crate) oldest_seq: Option<u64>,
    pub(crate) next_seq: u64,
}

/// A block of the ring: as the sequencer wrote it, or frozen ([`crate::cold`]).
#[derive(Clone)]
enum Slot {
    /// Lines uncompressed, and since when it is in the ring (`None`: it was
    /// tried and does not compress; it stays hot).
    Hot(Arc<Block>, Option<Instant>),
    /// Lines compressed.
    Cold(Arc<ColdBlock>),
}

impl Slot {
    fn hot(block: Block) -> Slot {
        Slot::Hot(Arc::new(block), Some(Instant::now()))
    }

    /// The block's seqs, metas, strings and `originSeq`s (its lines only if hot).
    fn index(&self) -> &Block {
        match self {
            Slot::Hot(b, _) => b,
            Slot::Cold(c) => &c.index,
        }
    }

    fn end_seq(&self) -> u64 {
        self.index().end_seq()
    }

    /// The length of its lines, uncompressed.
    fn line_bytes(&self) -> usize {
        match self {
            Slot::Hot(b, _) => b.bytes.len(),
            Slot::Cold(c) => c.raw_len(),
        }
    }

    /// The block with its lines (thawed if cold); `None` if a cold block cannot
    /// be thawed (never expected: see [`ColdBlock::freeze`]).
    fn block(&self) -> Option<Arc<Block>> {
        match self {
            Slot::Hot(b, _) => Some(Arc::clone(b)),
            Slot::Cold(c) => c.thaw(),
        }
    }
}

/// The reason of a gap over a cold block that could not be thawed.
const GAP_UNREADABLE: &str = "an archived block could not be decompressed";

struct State {
    blocks: VecDeque<Slot>,
    /// The first retained seq; `== next_seq` when nothing is retained.
    oldest_seq: u64,
    /// The seq the next appended event will have.
    next_seq: u64,
    /// Sum of the byte lengths of `blocks` (including evicted lines of the front one).
    retained_bytes: usize,
    /// Of those, the bytes of the frozen blocks' lines, and what they take compressed.
    cold_bytes: usize,
    cold_packed_bytes: usize,
    cold_blocks: usize,
}

impl State {
    /// Takes `slot`'s bytes out of the counts (it leaves the ring).
    fn forget(&mut self, slot: &Slot) {
        self.retained_bytes -= slot.line_bytes();
        if let Slot::Cold(c) = slot {
            self.cold_bytes -= c.raw_len();
            self.cold_packed_bytes -= c.packed_len();
            self.cold_blocks -= 1;
        }
    }
}

/// The ring itself: one writer ([`Ring::append`]), any number of readers.
pub(crate) struct Ring {
    state: RwLock<State>,
    /// The readers waiting, woken (all of them) after every append, commit, cut
    /// or skip, and on close.
    wakeup: Wakeup,
    /// `next_seq - 1`, readable without the lock.
    last_seq: AtomicU64,
    /// `oldest_seq`, readable without the lock (stored under the write lock each
    /// time it changes): a reader that finds its next seq in its group's copy
    /// ([`Ring::read_group_copy`]) checks that it is still retained.
    oldest: AtomicU64,
    /// The last committed seq (see "Commit" above): `last_seq` while no gate holds
    /// it back.
    committed: AtomicU64,
    /// Whether commit gates decide the commit (else every append commits).
    gated: AtomicBool,
    /// Set once, after the last append.
    closed: AtomicBool,
    capacity: u64,
    /// The most events in a block: [`MAX_BLOCK_EVENTS`], at most an eighth of the
    /// capacity (so that a partly evicted block keeps few dead lines alive).
    max_block_events: usize,
    start_seq: u64,
    subscribers: AtomicUsize,
    /// The lines of the thawed copies the cold blocks keep, as of the freezer's
    /// last look ([`Ring::cool_thawed`]).
    thawed_bytes: AtomicUsize,
    /// How many cuts ([`Ring::truncate_after`]) there were.
    cut_count: AtomicU64,
    /// The last cuts: (their count when made, the last seq kept).
    cuts: parking_lot::Mutex<VecDeque<(u64, u64)>>,
}

/// Cuts remembered for readers that have not looked since (older ones count as the
/// lowest remembered).
const CUTS_KEPT: usize = 64;

/// The most line bytes of a block a [`WaitGroup`] copies for its members
/// ([`Ring::copy_for_group`]): the blocks of a live tail (a block an append, an
/// event or a few), not those a reader catches up with. A group holds one copy
/// at most.
const GROUP_COPY_MAX_BYTES: usize = 4096;

/// The fewest members of a [`WaitGroup`] for which a block is copied: at most
/// [`GROUP_COPY_MAX_BYTES`] / 8 = 512 bytes of copy a member, and a copy read by
/// several.
const GROUP_COPY_MIN_MEMBERS: usize = 8;

/// The outcome of one non-blocking read attempt.
enum Step {
    Chunk(Chunk),
    Empty,
    Closed,
}

impl Ring {
    /// An empty ring whose first event will have `start_seq` (at least 1), retaining
    /// the last `capacity` events (at least 1).
    pub(crate) fn new(capacity: usize, start_seq: u64) -> Ring {
        let start_seq = start_seq.max(1);
        Ring {
            state: RwLock::new(State {
                blocks: VecDeque::new(),
                oldest_seq: start_seq,
                next_seq: start_seq,
                retained_bytes: 0,
                cold_bytes: 0,
                cold_packed_bytes: 0,
                cold_blocks: 0,
            }),
            wakeup: Wakeup::new(),
            last_seq: AtomicU64::new(start_seq - 1),
            oldest: AtomicU64::new(start_seq),
            committed: AtomicU64::new(start_seq - 1),
            gated: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            capacity: capacity.max(1) as u64,
            max_block_events: MAX_BLOCK_EVENTS.min(capacity / 8).max(1),
            start_seq,
            subscribers: AtomicUsize::new(0),
            thawed_bytes: AtomicUsize::new(0),
            cut_count: AtomicU64::new(0),
            cuts: parking_lot::Mutex::new(VecDeque::new()),
        }
    }

    /// Cuts the archive after `seq` (at or above the commit, below the next seq):
    /// the events after it are forgotten, the next append gets `seq + 1`, and
    /// readers of uncommitted events that were past it get a [`Chunk::Truncated`].
    /// Returns the `(origin, originSeq)` of the events removed. A cut at or below
    /// the commit, or at or beyond the last event, does nothing.
    pub(crate) fn truncate_after(&self, seq: u64) -> Vec<(Arc<str>, u64)> {
        let mut removed = Vec::new();
        {
            let mut st = self.state.write();
            if seq < self.committed() || seq + 1 >= st.next_seq || seq + 1 < st.oldest_seq {
                return removed;
            }
            while let Some(slot) = st.blocks.back().cloned() {
                if slot.end_seq() <= seq + 1 {
                    break;
                }
                st.blocks.pop_back();
                st.forget(&slot);
                let last = slot.index();
                let keep = (seq + 1).saturating_sub(last.first_seq) as usize;
                let from = keep.max((st.oldest_seq.saturating_sub(last.first_seq)) as usize);
                for i in from..last.len() {
                    if let Some((origin, n)) = last.origin_of(i) {
                        removed.push((Arc::clone(origin), n));
                    }
                }
                if keep > 0 {
                    // A cut reaches a cold block only past HOT_BLOCKS blocks of
                    // uncommitted events: thawed here, under the lock (rare).
                    let Some(whole) = slot.block() else {
                        // Never expected (checked when frozen). The ring keeps no
                        // hole: everything up to the cut is forgotten, and readers
                        // that wanted it get an exact gap.
                        tracing::error!(
                            first_seq = last.first_seq,
                            "{GAP_UNREADABLE}: every event up to the cut is forgotten"
                        );
                        st.blocks.clear();
                        st.retained_bytes = 0;
                        st.cold_bytes = 0;
                        st.cold_packed_bytes = 0;
                        st.cold_blocks = 0;
                        st.oldest_seq = seq + 1;
                        break;
                    };
                    let kept = whole.prefix(keep);
                    st.retained_bytes += kept.bytes.len();
                    st.blocks.push_back(Slot::hot(kept));
                }
            }
            st.next_seq = seq + 1;
            if st.oldest_seq > st.next_seq {
                st.oldest_seq = st.next_seq;
            }
            self.oldest.store(st.oldest_seq, Ordering::Release);
            self.last_seq.store(seq, Ordering::Release);
            let count = self.cut_count.load(Ordering::Acquire) + 1;
            let mut cuts = self.cuts.lock();
            cuts.push_back((count, seq));
            if cuts.len() > CUTS_KEPT {
                cuts.pop_front();
            }
            self.cut_count.store(count, Ordering::Release);
        }
        self.wakeup.wake_all();
        removed
    }

    /// The highest `originSeq` of `origin` among the retained events, if any.
    pub(crate) fn highest_origin_seq(&self, origin: &str) -> Option<u64> {
        let st = self.state.read();
        for slot in st.blocks.iter().rev() {
            let block = slot.index();
            for i in (0..block.len()).rev() {
                if block.first_seq + (i as u64) < st.oldest_seq {
                    break;
                }
                if let Some((o, n)) = block.origin_of(i) {
                    if &**o == origin {
                        return Some(n);
                    }
                }
            }
        }
        None
    }

    /// The lowest seq kept by the cuts made after a reader saw `seen` of them,
    /// and how many there are now.
    pub(crate) fn cut_since(&self, seen: u64) -> (Option<u64>, u64) {
        let count = self.cut_count.load(Ordering::Acquire);
        if count == seen {
            return (None, count);
        }
        let cuts = self.cuts.lock();
        let lowest = cuts
            .iter()
            .filter(|(n, _)| *n > seen)
            .map(|(_, after)| *after)
            .min();
        let oldest_kept = cuts.front().map_or(count, |(n, _)| *n);
        // Cuts older than those remembered: the lowest remembered stands for them.
        let lowest = if seen + 1 < oldest_kept {
            cuts.iter().map(|(_, a)| *a).min().or(lowest)
        } else {
            lowest
        };
        (lowest, count)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The most events in one block.
    pub(crate) fn max_block_events(&self) -> usize {
        self.max_block_events
    }

    pub(crate) fn start_seq(&self) -> u64 {
        self.start_seq
    }

    /// The seq of the last appended event, `start_seq - 1` if none.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// The seq of the last committed event (see "Commit" above).
    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// From now on, commit gates decide the commit ([`Ring::commit_through`]).
    pub(crate) fn set_gated(&self) {
        self.gated.store(true, Ordering::Release);
    }

    /// Commits every event up to `seq` (never past the last appended one, never
    /// backwards) and wakes the readers. Returns the new commit.
    pub(crate) fn commit_through(&self, seq: u64) -> u64 {
        let seq = seq.min(self.last_seq());
        let before = self.committed.fetch_max(seq, Ordering::AcqRel);
        if seq > before {
            self.wakeup.wake_all();
        }
        before.max(seq)
    }

    /// The horizon of a reader: what it may read up to.
    fn horizon(&self, committed_only: bool) -> u64 {
        if committed_only {
            self.committed()
        } else {
            self.last_seq()
        }
    }

    pub(crate) fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Appends a block (its `first_seq` must be the ring's next seq), evicts what no
    /// longer fits and wakes every waiting reader. Small blocks at the tail are not
    /// merged here: the writer calls [`Ring::merge_tail`] once the woken readers
    /// have had their turn (see `Sequencer::run`).
    pub(crate) fn append(&self, block: Block) {
        let n = block.len() as u64;
        if n == 0 {
            return;
        }
        {
            let mut st = self.state.write();
            debug_assert_eq!(block.first_seq, st.next_seq, "blocks must be contiguous");
            st.next_seq += n;
            st.retained_bytes += block.bytes.len();
            st.blocks.push_back(Slot::hot(block));
            if st.next_seq - st.oldest_seq > self.capacity {
                st.oldest_seq = st.next_seq - self.capacity;
                while st
                    .blocks
                    .front()
                    .is_some_and(|b| b.end_seq() <= st.oldest_seq)
                {
                    if let Some(b) = st.blocks.pop_front() {
                        st.forget(&b);
                    }
                }
                self.oldest.store(st.oldest_seq, Ordering::Release);
            }
            self.last_seq.store(st.next_seq - 1, Ordering::Release);
            if !self.gated.load(Ordering::Acquire) {
                self.committed.store(st.next_seq - 1, Ordering::Release);
            }
        }
        self.wakeup.wake_all();
    }

    /// Merges small blocks at the tail like the digits of a binary counter: while
    /// the block before the last (merged) one is no longer than it, is wholly
    /// retained, and the two fit in one block ([`MAX_BLOCK_EVENTS`], at most an
    /// eighth of the capacity, and [`MAX_BLOCK_BYTES`]), they become one. A quiet
    /// cluster, which appends a block per event, so keeps a few blocks of many
    /// events rather than one block (and its allocations) per event, and each line
    /// is copied about log2(events per block) times. Readers are unaffected: they
    /// find events by `seq`, and a batch they hold keeps its old block alive.
    ///
    /// Called by the single writer after appends, not inside [`Ring::append`]:
    /// on a cooperative scheduler a reader woken by the append runs on the writer's
    /// worker only once the writer yields, and the copy (into freshly allocated
    /// memory, so page faults while the archive grows) would come before its write.
    pub(crate) fn merge_tail(&self) {
        // Only the single writer (this call, from `append`) changes the blocks, so
        // the tail looked at under the read lock is still there under the write
        // lock; the copying happens under the read lock, while readers read.
        let (merged, replaced) = {
            let st = self.state.read();
            let mut tail = st.blocks.iter().rev().map_while(|slot| match slot {
                Slot::Hot(b, _) => Some(b),
                Slot::Cold(_) => None,
            });
            let Some(last) = tail.next() else {
                return;
            };
            let mut merged: Option<Block> = None;
            let mut replaced = 1;
            for back in tail {
                let current = merged.as_ref().unwrap_or(last);
                let fits = back.len() + current.len() <= self.max_block_events
                    && back.bytes.len() + current.bytes.len() <= MAX_BLOCK_BYTES;
                if back.first_seq < st.oldest_seq || back.len() > current.len() || !fits {
                    break;
                }
                merged = Some(back.merged(current));
                replaced += 1;
            }
            match merged {
                Some(m) => (m, replaced),
                None => return,
            }
        };
        let mut st = self.state.write();
        for _ in 0..replaced {
            if let Some(b) = st.blocks.pop_back() {
                st.forget(&b);
            }
        }
        st.retained_bytes += merged.bytes.len();
        st.blocks.push_back(Slot::hot(merged));
    }

    /// [`Ring::cold_candidates`], then [`Ring::freeze`] (for tests).
    #[cfg(test)]
    pub(crate) fn freeze_cold(
        &self,
        older_than: Instant,
        keep_hot: usize,
        at_most: usize,
    ) -> usize {
        self.freeze(self.cold_candidates(older_than, keep_hot, at_most))
    }

    /// Up to `at_most` blocks to freeze: in the ring since before `older_than`,
    /// wholly retained and not among the newest `keep_hot` (a look under the read
    /// lock; [`Ring::freeze`] does the work).
    pub(crate) fn cold_candidates(
        &self,
        older_than: Instant,
        keep_hot: usize,
        at_most: usize,
    ) -> Vec<Arc<Block>> {
        let st = self.state.read();
        let n = st.blocks.len().saturating_sub(keep_hot);
        st.blocks
            .iter()
            .take(n)
            .filter_map(|slot| match slot {
                Slot::Hot(b, Some(since))
                    if *since <= older_than && b.first_seq >= st.oldest_seq =>
                {
                    Some(Arc::clone(b))
                }
                _ => None,
            })
            .take(at_most)
            .collect()
    }

    /// Freezes ([`crate::cold`]) those of `candidates` still in the ring as they
    /// were; returns how many. Compresses outside the lock; a block evicted,
    /// merged or cut meanwhile is left as it is. Readers are unaffected: a batch
    /// they hold keeps its hot block alive, and the next read of a cold block
    /// thaws it. Yields the core before each block (see [`crate::cold`]).
    pub(crate) fn freeze(&self, candidates: Vec<Arc<Block>>) -> usize {
        let mut frozen = 0;
        for block in candidates {
            // A thread woken meanwhile runs first, instead of waiting for the
            // rest of this thread's time slice (the `cold` module's docs).
            std::thread::yield_now();
            let cold = ColdBlock::freeze(&block);
            let mut st = self.state.write();
            let i = st
                .blocks
                .partition_point(|s| s.end_seq() <= block.first_seq);
            let same = matches!(st.blocks.get(i), Some(Slot::Hot(b, _)) if Arc::ptr_eq(b, &block));
            if !same {
                continue;
            }
            match cold {
                Some(cold) => {
                    st.cold_bytes += cold.raw_len();
                    st.cold_packed_bytes += cold.packed_len();
                    st.cold_blocks += 1;
                    st.blocks[i] = Slot::Cold(Arc::new(cold));
                    frozen += 1;
                }
                None => st.blocks[i] = Slot::Hot(block, None),
            }
        }
        frozen
    }

    /// The freezer's look at the cold blocks' thawed copies ([`ColdBlock::cool`]):
    /// those not read since the last look are let go. Returns how many are kept
    /// (their lines are [`RingStats::thawed_bytes`] until the next look).
    pub(crate) fn cool_thawed(&self) -> usize {
        let st = self.state.read();
        let (mut kept, mut bytes) = (0, 0);
        for slot in &st.blocks {
            if let Slot::Cold(c) = slot {
                if c.cool() {
                    kept += 1;
                    bytes += c.raw_len();
                }
            }
        }
        self.thawed_bytes.store(bytes, Ordering::Relaxed);
        kept
    }

    /// Forgets every retained event and continues at `seq` (greater than the next
    /// seq): readers that wanted anything before it get an exact gap. Used by a
    /// replica that missed events it can no longer get.
    pub(crate) fn skip_to(&self, seq: u64) {
        {
            let mut st = self.state.write();
            if seq <= st.next_seq {
                return;
            }
            st.blocks.clear();
            st.retained_bytes = 0;
            st.cold_bytes = 0;
            st.cold_packed_bytes = 0;
            st.cold_blocks = 0;
            st.oldest_seq = seq;
            st.next_seq = seq;
            self.oldest.store(seq, Ordering::Release);
            self.last_seq.store(seq - 1, Ordering::Release);
            // Nothing before `seq` can be read any more: the skip itself is committed.
            self.committed.fetch_max(seq - 1, Ordering::AcqRel);
        }
        self.wakeup.wake_all();
    }

    /// Wakes every waiting reader although nothing changed (see
    /// [`crate::Router::wake_readers`]).
    pub(crate) fn wake_readers(&self) {
        self.wakeup.wake_all();
    }

    /// Marks the ring as complete (no append follows) and wakes every reader.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wakeup.wake_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn stats(&self) -> RingStats {
        let st = self.state.read();
        let retained = (st.next_seq - st.oldest_seq) as usize;
        RingStats {
            retained,
            blocks: st.blocks.len(),
            retained_bytes: st.retained_bytes,
            stored_bytes: st.retained_bytes - st.cold_bytes + st.cold_packed_bytes,
            cold_blocks: st.cold_blocks,
            thawed_bytes: self.thawed_bytes.load(Ordering::Relaxed),
            oldest_seq: (retained > 0).then_some(st.oldest_seq),
            next_seq: st.next_seq,
        }
    }

    /// A reader starting at `from`, of committed events only, or of every appended
    /// event (`committed_only = false`: a commit gate).
    pub(crate) fn subscribe(self: &Arc<Self>, from: Cursor, committed_only: bool) -> Subscription {
        let next = {
            let st = self.state.read();
            match from {
                Cursor::Oldest => st.oldest_seq,
                Cursor::Now => st.next_seq,
                Cursor::After(seq) => seq.saturating_add(1),
            }
        };
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            ring: Arc::clone(self),
            waiter: self.wakeup.waiter(),
            next,
            committed_only,
            cuts_seen: self.cut_count.load(Ordering::Acquire),
            group: None,
        }
    }

    /// The events from `want` (retained, at most `horizon`) in the copy of a block
    /// that `group`'s readers share, if it holds `want`.
    fn read_group_copy(&self, group: &Group, want: u64, horizon: u64) -> Option<EventBatch> {
        if want < self.oldest.load(Ordering::Acquire) {
            // Evicted: the lock's path tells of the gap.
            return None;
        }
        let block = {
            let copy = group.copy.lock();
            let block = copy
                .as_ref()
                .filter(|b| b.first_seq <= want && want < b.end_seq())?;
            Arc::clone(block)
        };
        Some(EventBatch::from_seq(block, want, horizon))
    }

    /// `block`, just read by a member of `group`, or the group's copy of it made
    /// now, for the group's other members to read without the ring's lock: made
    /// when the group has [`GROUP_COPY_MIN_MEMBERS`] members or more and the block
    /// is small ([`GROUP_COPY_MAX_BYTES`]) and wholly committed (so no cut can
    /// change its events, `truncate_after`). The copy has reference counts of its
    /// own, which only the group's task changes; the block's are changed by every
    /// reader on every worker, each a cache line passed between them.
    fn copy_for_group(&self, group: &Group, block: Arc<Block>, horizon: u64) -> Arc<Block> {
        if block.bytes.len() > GROUP_COPY_MAX_BYTES
            || block.end_seq() > horizon + 1
            || group.members() < GROUP_COPY_MIN_MEMBERS
        {
            return block;
        }
        let copy = Arc::new(block.copied());
        *group.copy.lock() = Some(Arc::clone(&copy));
        copy
    }

    /// One non-blocking read for a reader that wants `*next`; advances `*next` past
    /// what it returns. A reader of committed events in `group` reads from the
    /// group's copy when it holds `*next` (a reader of uncommitted events, which a
    /// cut may change, never does).
    fn step(
        &self,
        next: &mut u64,
        committed_only: bool,
        cuts_seen: &mut u64,
        group: Option<&Group>,
    ) -> Step {
        if !committed_only {
            let (cut, count) = self.cut_since(*cuts_seen);
            *cuts_seen = count;
            if let Some(after) = cut {
                if *next > after + 1 {
                    *next = after + 1;
                    return Step::Chunk(Chunk::Truncated { after });
                }
            }
        }
        // `closed` is stored after the last append's `last_seq`: read it first, so
        // that when it is seen set, `last_seq` is final.
        let closed = self.is_closed();
        let horizon = self.horizon(committed_only);
        if *next > horizon {
            // Closed, a reader of committed events ends once it has read them all.
            return if closed { Step::Closed } else { Step::Empty };
        }
        let group = group.filter(|_| committed_only);
        if let Some(batch) = group.and_then(|g| self.read_group_copy(g, *next, horizon)) {
            *next = batch.block.first_seq + batch.end as u64;
            return Step::Chunk(Chunk::Events(batch));
        }
        let st = self.state.read();
        if *next < st.oldest_seq {
            let reason = if st.oldest_seq <= self.start_seq {
                GAP_BEFORE_START
            } else {
                GAP_EVICTED
            };
            let gap = Gap::new(*next, st.oldest_seq - 1, reason);
            *next = st.oldest_seq;
            return Step::Chunk(Chunk::Gap(gap));
        }
        if *next >= st.next_seq {
            return if closed { Step::Closed } else { Step::Empty };
        }
        let want = *next;
        // A reader at the tail wants the last block: found without a search
        // (which touches a block's cache lines at each step).
        let idx = match st.blocks.back() {
            Some(last) if last.index().first_seq <= want => st.blocks.len() - 1,
            _ => st.blocks.partition_point(|b| b.end_seq() <= want),
        };
        // One reference taken under the lock: the hot block's, or the cold one's
        // (many readers take it at once, from every worker).
        let found = match st.blocks.get(idx) {
            Some(Slot::Hot(block, _)) => Ok(Arc::clone(block)),
            Some(Slot::Cold(cold)) => Err(Arc::clone(cold)),
            // Unreachable by the invariants (oldest <= want < next_seq is covered by
            // the retained blocks); treat as "nothing yet" rather than panic.
            None => return Step::Empty,
        };
        drop(st);
        // A cold block is thawed outside the lock (the writer does not wait).
        let block = match found {
            Ok(block) => match group {
                Some(group) => self.copy_for_group(group, block, horizon),
                None => block,
            },
            Err(cold) => match cold.thaw() {
                Some(block) => block,
                None => {
                    let to = cold.index.end_seq().min(horizon + 1) - 1;
                    tracing::error!(from_seq = want, to_seq = to, "{GAP_UNREADABLE}");
                    *next = to + 1;
                    return Step::Chunk(Chunk::Gap(Gap::new(want, to, GAP_UNREADABLE)));
                }
            },
        };
        let batch = EventBatch::from_seq(block, want, horizon);
        *next = batch.block.first_seq + batch.end as u64;
        Step::Chunk(Chunk::Events(batch))
    }
}

/// A reader of the ring: a cursor that walks the retained events, then the live ones.
///
/// See the [module documentation](self) for what it delivers. Dropping it is enough to
/// unsubscribe; a subscription that is never read costs nothing but itself.
pub struct Subscription {
    ring: Arc<Ring>,
    /// Its registration for the ring's wake-ups.
    waiter: Arc<Waiter>,
    /// The next seq this reader wants.
    next: u64,
    /// Whether it reads committed events only (every reader but a commit gate).
    committed_only: bool,
    /// How many cuts of the ring this reader has taken into account.
    cuts_seen: u64,
    /// The readers it waits with, if it joined some ([`Subscription::join`]).
    group: Option<Arc<Group>>,
}

impl Subscription {
    /// Waits with `group` from now on: a member of it until dropped, it registers
    /// only its task to wait, and the group is listed once in the ring's wake-up
    /// list for all of its members (the streams of one HTTP/2 connection, which
    /// its task polls together). False, and nothing changes, if the group belongs
    /// to another router's ring.
    pub fn join(&mut self, group: &WaitGroup) -> bool {
        if !group.inner.belongs_to(Arc::as_ptr(&self.ring) as usize) {
            return false;
        }
        group.inner.join(&self.waiter);
        self.group = Some(Arc::clone(&group.inner));
        true
    }

    /// The next chunk, waiting for one if none is ready. `None` only after the router
    /// has shut down and everything was delivered.
    ///
    /// Cancel-safe: if the future is dropped before it completes, nothing is lost
    /// (use it in `tokio::select!` freely).
    pub async fn recv(&mut self) -> Option<Chunk> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Subscription::recv`] as a poll: `Ready(Some(chunk))` when one is ready,
    /// `Ready(None)` once the router has shut down and everything was delivered,
    /// else `Pending`, and the task of `cx` is woken when the ring changes (for a
    /// hand-written future or stream that reads a subscription).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        for look in 0..2 {
            match self.ring.step(
                &mut self.next,
                self.committed_only,
                &mut self.cuts_seen,
                self.group.as_deref(),
            ) {
                Step::Chunk(c) => return Poll::Ready(Some(c)),
                Step::Closed => return Poll::Ready(None),
                // Register for a wake-up before looking again, so that a change
                // between the look and the wait is not missed.
                Step::Empty if look == 0 => match &self.group {
                    None => self.ring.wakeup.register(&self.waiter, cx.waker()),
                    Some(group) => self
                        .ring
                        .wakeup
                        .register_in(group, &self.waiter, cx.waker()),
                },
                Step::Empty => {}
            }
        }
        Poll::Pending
    }

    /// The next chunk if one is ready now; `None` if this reader has caught up (or
    /// the router is shut down and everything was delivered).
    pub fn try_recv(&mut self) -> Option<Chunk> {
        match self.ring.step(
            &mut self.next,
            self.committed_only,
            &mut self.cuts_seen,
            self.group.as_deref(),
        ) {
            Step::Chunk(c) => Some(c),
            Step::Empty | Step::Closed => None,
        }
    }

    /// The `seq` of the last event delivered or skipped (by a gap, or by the cursor):
    /// the next event delivered will be `position() + 1`.
    pub fn position(&self) -> u64 {
        self.next - 1
    }

    /// How many cuts of the archive this reader has taken into account (its
    /// [`Subscription::position`] is below each of them): for
    /// [`crate::CommitGate::mark_read`].
    pub(crate) fn cuts_seen(&self) -> u64 {
        self.cuts_seen
    }

    /// Whether the ring is closed and this reader has received everything it may.
    pub fn is_finished(&self) -> bool {
        self.ring.is_closed() && self.next > self.ring.horizon(self.committed_only)
    }

    /// Whether nothing is ready for this reader right now (it has caught up).
    pub fn is_caught_up(&self) -> bool {
        self.next > self.ring.horizon(self.committed_only)
    }

    /// The seq of the last event in the ring this reader may read (`start_seq - 1`
    /// if none).
    pub(crate) fn ring_last_seq(&self) -> u64 {
        self.ring.horizon(self.committed_only)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.ring.wakeup.forget(&self.waiter);
        self.ring.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("position", &self.position())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wakeup::test_wakers::counted;

    fn block(first_seq: u64, n: usize) -> Block {
        Block::plain(first_seq, n)
    }

    fn drain(sub: &mut Subscription) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(chunk) = sub.try_recv() {
            match chunk {
                Chunk::Gap(g) => {
                    out.push(format!("gap {}..={} ({})", g.from_seq, g.to_seq, g.missed))
                }
                Chunk::Events(b) => out.extend(b.iter().map(|e| e.seq.to_string())),
                Chunk::Truncated { after } => out.push(format!("cut after {after}")),
            }
        }
        out
    }

    #[test]
    fn a_batchs_event_types_are_those_of_its_events_in_order() {
        let ring = Arc::new(Ring::new(100, 1));
        let mut b = block(1, 4);
        for (i, meta) in b.metas.iter_mut().enumerate() {
            meta.event_type = EventType::ALL[i * 3];
        }
        ring.append(b);
        let mut sub = ring.subscribe(Cursor::After(1), true);
        let batch = next_batch(&mut sub);
        let types: Vec<EventType> = batch.event_types().collect();
        let viewed: Vec<EventType> = batch.iter().map(|e| e.meta.event_type).collect();
        assert_eq!(types, viewed);
        assert_eq!(
            types,
            [EventType::ALL[3], EventType::ALL[6], EventType::ALL[9]]
        );
    }

    #[test]
    fn a_partly_evicted_block_delivers_only_its_retained_lines() {
        let ring = Arc::new(Ring::new(5, 1));
        let mut sub = ring.subscribe(Cursor::Oldest, true);
        ring.append(block(1, 4));
        ring.append(block(5, 3));
        // seqs 3..=7 retained; block 1..=4 is kept for its lines 3 and 4.
        assert_eq!(drain(&mut sub), ["gap 1..=2 (2)", "3", "4", "5", "6", "7"]);
        let st = ring.stats();
        assert_eq!((st.retained, st.blocks, st.oldest_seq), (5, 2, Some(3)));
    }

    fn lines(sub: &mut Subscription) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = sub.try_recv() {
            match chunk {
                Chunk::Events(b) => out.extend_from_slice(&b.bytes()),
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }

    fn plain_lines(from: u64, to: u64) -> Vec<u8> {
        (from..=to)
            .flat_map(|n| format!("{{\"seq\":{n}}}\n").into_bytes())
            .collect()
    }

    #[test]
    fn readers_get_the_same_lines_from_frozen_blocks_and_the_newest_stay_hot() {
        let ring = Arc::new(Ring::new(10_000, 1));
        for k in 0..10 {
            ring.append(block(1 + k * 300, 300));
        }
        let before = ring.stats();
        assert_eq!(ring.freeze_cold(Instant::now(), 2, 100), 8);
        let st = ring.stats();
        assert_eq!((st.cold_blocks, st.blocks, st.retained), (8, 10, 3000));
        assert_eq!(st.retained_bytes, before.retained_bytes);
        assert!(
            st.stored_bytes * 2 < st.retained_bytes,
            "{} of {}",
            st.stored_bytes,
            st.retained_bytes
        );
        assert_eq!(ring.freeze_cold(Instant::now(), 2, 100), 0, "nothing left");
        let mut sub = ring.subscribe(Cursor::Oldest, true);
        assert_eq!(lines(&mut sub), plain_lines(1, 3000));
        let mut from_middle = ring.subscribe(Cursor::After(1234), true);
        assert_eq!(lines(&mut from_middle), plain_lines(1235, 3000));
    }

    #[test]
    fn lagging_readers_share_the_thawed_copies_until_the_freezer_lets_them_go() {
        let ring = Arc::new(Ring::new(10_000, 1));
        for k in 0..10 {
            ring.append(block(1 + k * 300, 300));
        }
        assert_eq!(ring.freeze_cold(Instant::now(), 2, 100), 8);
        let thaws = |ring: &Ring| -> u64 {
            let st = ring.state.read();
            st.blocks
                .iter()
                .map(|s| match s {
                    Slot::Cold(c) => c.thaws(),
                    Slot::Hot(..) => 0,
                })
                .sum()
        };
        // Readers one after another, each reading the whole archive and letting
        // go: the eight cold blocks are decompressed once, not once a reader.
        for _ in 0..50 {
            let mut sub = ring.subscribe(Cursor::Oldest, true);
            assert_eq!(lines(&mut sub), plain_lines(1, 3000));
        }
        assert_eq!(thaws(&ring), 8);
        assert_eq!(
            ring.stats().thawed_bytes,
            0,
            "counted at the freezer's look"
        );
        assert_eq!(ring.cool_thawed(), 8, "read since the last look: kept");
        let raw: usize = (1..=8)
            .map(|k| plain_lines(1 + (k - 1) * 300, k * 300).len())
            .sum();
        assert_eq!(ring.stats().thawed_bytes, raw);
        assert_eq!(ring.cool_thawed(), 0, "not read since: let go");
        assert_eq!(ring.stats().thawed_bytes, 0);
        let mut sub = ring.subscribe(Cursor::Oldest, true);
        assert_eq!(lines(&mut sub), plain_lines(1, 3000));
        assert_eq!(thaws(&ring), 16, "thawed anew once let go");
    }

    #[test]
    fn readers_see_every_line_while_blocks_are_frozen_merged_and_evicted() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("RING_STRESS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        println!("RING_STRESS_SEED={seed}");
        let ring = Arc::new(Ring::new(3_000, 1));
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut sub = ring.subscribe(Cursor::Oldest, true);
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    let (mut want, mut events) = (1u64, 0u64);
                    loop {
                        match sub.try_recv() {
                            Some(Chunk::Events(batch)) => {
                                for e in batch.iter() {
                                    assert_eq!(e.seq, want, "seed {seed}");
                                    assert_eq!(
                                        e.line,
                                        format!("{{\"seq\":{}}}\n", e.seq).as_bytes(),
                                        "seed {seed}"
                                    );
                                    want += 1;
                                    events += 1;
                                }
                            }
                            Some(Chunk::Gap(g)) => {
                                assert_eq!(g.from_seq, want, "seed {seed}");
                                want = g.to_seq + 1;
                            }
                            Some(other) => panic!("seed {seed}: {other:?}"),
                            None if sub.is_finished() => return (want, events),
                            None => {
                                assert!(
                                    Instant::now() < deadline,
                                    "seed {seed}: stalled at {want}"
                                );
                                std::thread::yield_now();
                            }
                        }
                        let _ = &ring;
                    }
                })
            })
            .collect();
        let freezing = Arc::new(AtomicBool::new(true));
        let freezer = {
            let (ring, freezing) = (Arc::clone(&ring), Arc::clone(&freezing));
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 1);
                let mut frozen = 0;
                while freezing.load(Ordering::Acquire) {
                    frozen += ring.freeze_cold(Instant::now(), rng.random_range(0..3), 4);
                }
                frozen
            })
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut seq = 1;
        for _ in 0..3_000 {
            let n = rng.random_range(1..=60);
            ring.append(block(seq, n));
            seq += n as u64;
            if rng.random_bool(0.5) {
                ring.merge_tail();
            }
            if rng.random_bool(0.1) {
                std::thread::yield_now();
            }
        }
        ring.close();
        for r in readers {
            let (next, events) = r.join().expect("reader");
            assert_eq!(next, seq, "seed {seed}: every seq delivered or announced");
            assert!(events > 0, "seed {seed}");
        }
        freezing.store(false, Ordering::Release);
        let concurrently = freezer.join().expect("freezer");
        println!("{concurrently} blocks frozen while the readers read");
        let frozen = concurrently + ring.freeze_cold(Instant::now(), 0, 10_000);
        assert!(frozen > 0, "seed {seed}: nothing was frozen");
        let mut after = ring.subscribe(Cursor::Oldest, true);
        let mut want = ring.stats().oldest_seq.expect("retained");
        while let Some(chunk) = after.try_recv() {
            let Chunk::Events(batch) = chunk else {
                panic!("seed {seed}: {chunk:?}")
            };
            for e in batch.iter() {
                assert_eq!(
                    (e.seq, e.line),
                    (want, format!("{{\"seq\":{want}}}\n").as_bytes())
                );
                want += 1;
            }
        }
        assert_eq!(want, seq, "seed {seed}");
    }

    #[test]
    fn blocks_newer_than_the_cutoff_stay_hot() {
        let ring = Arc::new(Ring::new(10_000, 1));
        let cutoff = Instant::now();
        ring.append(block(1, 300));
        ring.append(block(301, 300));
        assert_eq!(ring.freeze_cold(cutoff, 0, 100), 0);
        assert_eq!(ring.stats().cold_blocks, 0);
    }

    #[test]
    fn evicting_frozen_blocks_takes_them_out_of_the_counts() {
        let ring = Arc::new(Ring::new(600, 1));
        ring.append(block(1, 300));
        ring.append(block(301, 300));
        assert_eq!(ring.freeze_cold(Instant::now(), 0, 100), 2);
        ring.append(block(601, 300));
        ring.append(block(901, 300));
        let st = ring.stats();
        assert_eq!(
            (st.cold_blocks, st.blocks, st.oldest_seq),
            (0, 2, Some(601))
        );
        assert_eq!(st.stored_bytes, st.retained_bytes);
        let mut sub = ring.subscribe(Cursor::Oldest, true);
        assert_eq!(lines(&mut sub), plain_lines(601, 1200));
    }

    #[test]
    fn a_cut_into_a_frozen_block_keeps_its_events_before_the_cut() {
        let ring = Arc::new(Ring::new(10_000, 1));
        ring.set_gated();
        let mut gate = ring.subscribe(Cursor::Oldest, false);
        ring.append(block(1, 300));
        ring.append(block(301, 300));
        assert_eq!(ring.freeze_cold(Instant::now(), 0, 100), 2);
        ring.truncate_after(150);
        let st = ring.stats();
        assert_eq!((st.retained, st.blocks, st.cold_blocks), (150, 1, 0));
        assert_eq!(lines(&mut gate), plain_lines(1, 150));
        ring.append(block(151, 10));
        assert_eq!(lines(&mut gate), plain_lines(151, 160));
    }

    #[test]
    fn the_tail_merge_stops_at_a_frozen_block() {
        let ring = Arc::new(Ring::new(10_000, 1));
        ring.append(block(1, 300));
        assert_eq!(ring.freeze_cold(Instant::now(), 0, 100), 1);
        ring.append(block(301, 2));
        ring.merge_tail();
        assert_eq!(ring.stats().blocks, 2);
        let mut sub = ring.subscribe(Cursor::Oldest, true);
        assert_eq!(lines(&mut sub), plain_lines(1, 302));
    }

    #[test]
    fn append_leaves_small_blocks_to_merge_tail() {
        let ring = Arc::new(Ring::new(100, 1));
        ring.append(block(1, 2));
        ring.append(block(3, 2));
        assert_eq!(ring.stats().blocks, 2, "append does not merge");
        ring.merge_tail();
        let st = ring.stats();
        assert_eq!((st.blocks, st.retained), (1, 4));
        let mut sub = ring.subscribe(Cursor::Oldest, true);
        assert_eq!(drain(&mut sub), ["1", "2", "3", "4"]);
    }

    #[test]
    fn retained_count_never_exceeds_capacity() {
        let ring = Ring::new(7, 1);
        let mut seq = 1;
        for n in [1, 3, 9, 2, 7, 1, 1, 5] {
            ring.append(block(seq, n));
            seq += n as u64;
            let st = ring.stats();
            assert_eq!(st.retained as u64, (seq - 1).min(7));
            assert_eq!(st.oldest_seq, Some(seq - st.retained as u64));
        }
    }

    #[test]
    fn batch_lines_are_zero_copy_slices_of_the_block() {
        let ring = Arc::new(Ring::new(10, 1));
        ring.append(block(1, 3));
        let mut sub = ring.subscribe(Cursor::After(1), true);
        let Some(Chunk::Events(b)) = sub.try_recv() else {
            panic!("expected events");
        };
        assert_eq!((b.first_seq(), b.last_seq(), b.len()), (2, 3, 2));
        assert_eq!(&b.bytes()[..], b"{\"seq\":2}\n{\"seq\":3}\n");
        let lines: Vec<&[u8]> = b.iter().map(|e| e.line).collect();
        assert_eq!(lines, [&b"{\"seq\":2}\n"[..], b"{\"seq\":3}\n"]);
        assert_eq!(sub.position(), 3);
    }

    #[test]
    fn cursor_before_start_seq_gets_a_gap_naming_the_start() {
        let ring = Arc::new(Ring::new(10, 100));
        let mut sub = ring.subscribe(Cursor::After(0), true);
        assert_eq!(sub.position(), 0);
        ring.append(block(100, 1));
        let Some(Chunk::Gap(g)) = sub.try_recv() else {
            panic!("expected a gap");
        };
        assert_eq!((g.from_seq, g.to_seq, g.missed), (1, 99, 99));
        assert_eq!(g.reason, GAP_BEFORE_START);
        assert_eq!(drain(&mut sub), ["100"]);
    }

    #[test]
    fn after_a_future_seq_waits_for_the_next_one() {
        let ring = Arc::new(Ring::new(10, 1));
        let mut sub = ring.subscribe(Cursor::After(3), true);
        ring.append(block(1, 2));
        assert!(sub.try_recv().is_none());
        ring.append(block(3, 3));
        assert_eq!(drain(&mut sub), ["4", "5"]);
    }

    #[test]
    fn closed_ring_ends_readers_after_the_last_event() {
        let ring = Arc::new(Ring::new(10, 1));
        let mut sub = ring.subscribe(Cursor::Oldest, true);
        ring.append(block(1, 2));
        ring.close();
        assert!(!sub.is_finished());
        assert_eq!(drain(&mut sub), ["1", "2"]);
        assert!(sub.is_finished());
    }

    #[test]
    fn readers_in_a_group_take_one_entry_in_the_wake_up_list_and_each_gets_the_append() {
        let ring = Arc::new(Ring::new(100, 1));
        let group = WaitGroup::new();
        let mut subs: Vec<Subscription> = (0..3)
            .map(|_| {
                let mut sub = ring.subscribe(Cursor::Now, true);
                assert!(sub.join(&group));
                sub
            })
            .collect();
        let mut alone = ring.subscribe(Cursor::Now, true);
        let wakers: Vec<_> = (0..4).map(|_| counted()).collect();
        for (sub, (_, waker)) in subs.iter_mut().chain([&mut alone]).zip(&wakers) {
            let mut cx = Context::from_waker(waker);
            assert!(sub.poll_recv(&mut cx).is_pending());
        }
        assert_eq!(
            ring.wakeup.listed(),
            2,
            "the group once, and the reader alone"
        );
        ring.append(block(1, 2));
        for (count, _) in &wakers {
            assert_eq!(count.get(), 1);
        }
        for sub in subs.iter_mut().chain([&mut alone]) {
            assert_eq!(drain(sub), ["1", "2"]);
        }
        // A member that goes is forgotten by its group; the others go on.
        drop(subs.pop());
        for (sub, (_, waker)) in subs.iter_mut().zip(&wakers) {
            assert!(sub.poll_recv(&mut Context::from_waker(waker)).is_pending());
        }
        ring.append(block(3, 1));
        assert_eq!(wakers[0].0.get(), 2);
        assert_eq!(drain(&mut subs[1]), ["3"]);
    }

    #[test]
    fn a_group_belongs_to_the_ring_of_its_first_member() {
        let ring = Arc::new(Ring::new(100, 1));
        let other = Arc::new(Ring::new(100, 1));
        let group = WaitGroup::new();
        let mut sub = ring.subscribe(Cursor::Now, true);
        assert!(sub.join(&group));
        let mut stranger = other.subscribe(Cursor::Now, true);
        assert!(!stranger.join(&group), "another ring's reader is refused");
        // And it still waits, alone, in its own ring.
        let (count, waker) = counted();
        assert!(stranger
            .poll_recv(&mut Context::from_waker(&waker))
            .is_pending());
        other.append(block(1, 1));
        assert_eq!(count.get(), 1);
        assert_eq!(drain(&mut stranger), ["1"]);
    }

    /// `n` readers of `ring` from `cursor`, members of `group`.
    fn members(ring: &Arc<Ring>, group: &WaitGroup, n: usize, cursor: Cursor) -> Vec<Subscription> {
        (0..n)
            .map(|_| {
                let mut sub = ring.subscribe(cursor, true);
                assert!(sub.join(group));
                sub
            })
            .collect()
    }

    /// The next chunk of `sub`, which must be events.
    fn next_batch(sub: &mut Subscription) -> EventBatch {
        match sub.try_recv() {
            Some(Chunk::Events(batch)) => batch,
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[test]
    fn a_large_groups_members_read_a_small_tail_block_from_one_copy_and_others_from_the_ring() {
        let ring = Arc::new(Ring::new(1000, 1));
        let large = WaitGroup::hosted();
        let mut large_members = members(&ring, &large, GROUP_COPY_MIN_MEMBERS, Cursor::Now);
        let small = WaitGroup::hosted();
        let mut small_members = members(&ring, &small, GROUP_COPY_MIN_MEMBERS - 1, Cursor::Now);
        let mut alone = ring.subscribe(Cursor::Now, true);
        ring.append(block(1, 2));
        let from_ring = next_batch(&mut alone);
        let copied: Vec<EventBatch> = large_members.iter_mut().map(next_batch).collect();
        for batch in &copied {
            assert_eq!((batch.first_seq(), batch.last_seq()), (1, 2));
            assert_eq!(batch.bytes(), from_ring.bytes());
            assert!(Arc::ptr_eq(&batch.block, &copied[0].block), "one copy");
            assert!(
                !Arc::ptr_eq(&batch.block, &from_ring.block),
                "not the ring's"
            );
        }
        for sub in &mut small_members {
            let batch = next_batch(sub);
            assert!(
                Arc::ptr_eq(&batch.block, &from_ring.block),
                "a small group's: the ring's"
            );
        }
        // A block larger than a copy's most is read from the ring, by all.
        let n = GROUP_COPY_MAX_BYTES / 10;
        ring.append(block(3, n));
        let from_ring = next_batch(&mut alone);
        assert!(from_ring.bytes().len() > GROUP_COPY_MAX_BYTES);
        for sub in &mut large_members {
            let batch = next_batch(sub);
            assert_eq!((batch.first_seq(), batch.last_seq()), (3, 2 + n as u64));
            assert!(Arc::ptr_eq(&batch.block, &from_ring.block));
        }
    }

    #[test]
    fn a_group_member_behind_gets_a_gap_not_the_groups_copy_of_evicted_events() {
        let ring = Arc::new(Ring::new(4, 1));
        let group = WaitGroup::hosted();
        let mut subs = members(&ring, &group, GROUP_COPY_MIN_MEMBERS, Cursor::Oldest);
        ring.append(block(1, 2));
        assert_eq!(drain(&mut subs[0]), ["1", "2"]);
        // Seqs 1 and 2 are evicted; the group's copy still holds them.
        ring.append(block(3, 4));
        assert_eq!(drain(&mut subs[1]), ["gap 1..=2 (2)", "3", "4", "5", "6"]);
        assert_eq!(drain(&mut subs[0]), ["3", "4", "5", "6"]);
    }

    #[test]
    fn a_groups_copy_holds_only_committed_events_so_a_cut_never_reaches_it() {
        let ring = Arc::new(Ring::new(100, 1));
        ring.set_gated();
        let group = WaitGroup::hosted();
        let mut subs = members(&ring, &group, GROUP_COPY_MIN_MEMBERS, Cursor::Now);
        ring.append(block(1, 3));
        ring.commit_through(1);
        assert_eq!(drain(&mut subs[0]), ["1"]);
        // Seqs 2 and 3, never committed, are cut and sequenced again.
        ring.truncate_after(1);
        ring.append(Block::marked(2, 2, Some("again")));
        ring.commit_through(3);
        let lines = |sub: &mut Subscription| {
            let mut out = Vec::new();
            while let Some(chunk) = sub.try_recv() {
                match chunk {
                    Chunk::Events(b) => out.extend(
                        b.iter()
                            .map(|e| String::from_utf8_lossy(e.line).trim_end().to_owned()),
                    ),
                    other => panic!("{other:?}"),
                }
            }
            out
        };
        let again = [r#"{"seq":2,"m":"again"}"#, r#"{"seq":3,"m":"again"}"#];
        assert_eq!(lines(&mut subs[0]), again);
        for sub in &mut subs[1..] {
            let mut want = vec![r#"{"seq":1}"#];
            want.extend(again);
            assert_eq!(lines(sub), want);
        }
    }

    /// A reader's waker: marks it woken and unparks its thread.
    struct Woken {
        set: AtomicBool,
        thread: std::thread::Thread,
    }

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.set.store(true, Ordering::Release);
            self.thread.unpark();
        }
    }

    #[test]
    fn readers_in_groups_on_parked_threads_miss_no_wake_up_while_a_writer_appends() {
        // Each reader thread polls only the subscriptions whose waker was woken
        // (as a connection's task polls only its woken streams), then parks
        // until woken (no timeout: a lost wake-up leaves it parked, and the test
        // fails at its deadline). Three threads read with a group of 8
        // subscriptions each (one group woken by the ring's writer, two by their
        // thread, their host), one with a subscription alone; the writer
        // appends 20,000 one-event blocks.
        const EVENTS: u64 = 20_000;
        let ring = Arc::new(Ring::new(EVENTS as usize, 1));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let threads = [(8, false), (8, true), (8, true), (1, false)];
        // The writer starts once every reader has looked and waits, so that
        // every event reaches them by a wake-up.
        let waiting = Arc::new(std::sync::Barrier::new(threads.len() + 1));
        for (readers, hosted) in threads {
            let group = if hosted {
                WaitGroup::hosted()
            } else {
                WaitGroup::new()
            };
            let subs: Vec<Subscription> = (0..readers)
                .map(|_| {
                    let mut sub = ring.subscribe(Cursor::Oldest, true);
                    if readers > 1 {
                        assert!(sub.join(&group));
                    }
                    sub
                })
                .collect();
            let done = done_tx.clone();
            let mut waiting = Some(Arc::clone(&waiting));
            std::thread::spawn(move || {
                let waker = |set| {
                    let woken = Arc::new(Woken {
                        set: AtomicBool::new(set),
                        thread: std::thread::current(),
                    });
                    (Arc::clone(&woken), std::task::Waker::from(woken))
                };
                let (_, host) = waker(false);
                let host = Context::from_waker(&host);
                // Each subscription, its waker (woken at first), its last seq.
                let mut subs: Vec<_> = subs.into_iter().map(|s| (s, waker(true), 0)).collect();
                loop {
                    group.host_poll(&host);
                    for (sub, (woken, waker), last) in subs.iter_mut() {
                        if !woken.set.swap(false, Ordering::AcqRel) {
                            continue;
                        }
                        let mut cx = Context::from_waker(waker);
                        while let Poll::Ready(Some(chunk)) = sub.poll_recv(&mut cx) {
                            match chunk {
                                Chunk::Events(batch) => {
                                    for e in batch.iter() {
                                        assert_eq!(e.seq, *last + 1);
                                        *last = e.seq;
                                    }
                                }
                                other => panic!("{other:?}"),
                            }
                        }
                    }
                    if subs.iter().all(|(_, _, last)| *last == EVENTS) {
                        let _ = done.send(readers);
                        return;
                    }
                    if let Some(waiting) = waiting.take() {
                        waiting.wait();
                    }
                    std::thread::park();
                }
            });
        }
        waiting.wait();
        for seq in 1..=EVENTS {
            ring.append(block(seq, 1));
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let mut finished = Vec::new();
        while finished.len() < threads.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match done_rx.recv_timeout(left) {
                Ok(readers) => finished.push(readers),
                Err(_) => panic!("a reader thread is still parked (finished: {finished:?})"),
            }
        }
    }

    #[test]
    fn a_reader_gets_the_rest_of_the_block_holding_its_next_seq_whichever_block_it_is() {
        let ring = Arc::new(Ring::new(100, 1));
        // Blocks 1..=3, 4..=4, 5..=9, 10..=11: the last one found without a
        // search, the others by it.
        for (first, n) in [(1, 3), (4, 1), (5, 5), (10, 2)] {
            ring.append(block(first, n));
        }
        let ends = [3, 3, 3, 4, 9, 9, 9, 9, 9, 11, 11];
        for (after, end) in (0u64..).zip(ends) {
            let mut sub = ring.subscribe(Cursor::After(after), true);
            match sub.try_recv() {
                Some(Chunk::Events(batch)) => {
                    assert_eq!((batch.first_seq(), batch.last_seq()), (after + 1, end));
                }
                other => panic!("after {after}: {other:?}"),
            }
        }
        let mut caught_up = ring.subscribe(Cursor::After(11), true);
        assert!(caught_up.try_recv().is_none());
    }
}
