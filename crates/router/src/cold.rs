//! Cold blocks: the archive's older blocks, their lines kept LZ4-compressed.
//!
//! Owns: [`ColdBlock`] (a block whose lines are compressed, with its metas,
//! strings and `originSeq`s as they were), freezing a block into one and thawing
//! it back, and the policy constants the ring's freezer uses ([`COLD_AFTER`],
//! [`HOT_BLOCKS`], [`FREEZE_TICK`], [`FREEZE_AT_MOST`]).
//!
//! Promises:
//! - A thawed block is byte for byte the block that was frozen: [`ColdBlock::freeze`]
//!   decompresses what it compressed and compares before it gives a cold block, and
//!   gives none when the lines do not shrink (or do not come back equal).
//! - Readers of one cold block share one thawed copy: the cold block keeps it
//!   while it is read, and lets it go at the freezer's second look without a read
//!   ([`ColdBlock::cool`], 250-500 ms), or as soon as the block leaves the ring; a
//!   reader still holding it then keeps it alone (a weak reference still shares
//!   it). So readers that lag by more than [`COLD_AFTER`] decompress a block once,
//!   not once each: 100,000 HTTP/2 streams behind a producer of 1,000 events/s
//!   each decompressed their own copy of every block, 8.6 GB of RSS. The copies
//!   kept are those of the blocks read in the last half second: at most the
//!   archive's lines uncompressed, what it takes without cold blocks.
//! - What filters and the ring look at (`first_seq`, metas, strings, `originSeq`s)
//!   stays uncompressed: only a reader that wants the lines thaws.
//! - The freezer gives its core away before each block it compresses
//!   (`Ring::freeze` yields), so a thread woken meanwhile (a request's, the
//!   sequencer's, a stream's) waits for at most one block's compression, not for
//!   the whole look's. Without it the scheduler let the freezer finish its time
//!   slice first: woken threads waited 1.3–1.6 ms every 250 ms (`perf record -e
//!   sched:sched_switch,sched:sched_wakeup`), and the slowest event at K=1 and
//!   10,000 events/s took 1.1–1.9 ms; with it, at most 0.33 ms and 0.49–0.70 ms
//!   (in eight rows of nine; docs/benchmarks-history.md).
//!
//! Why: an archive of JSON lines of a few event types compresses several times
//! over, and the events most readers want (the live tail) stay uncompressed, so
//! retention costs less memory with no cost to the live fan-out. Followers and
//! readers that replay the archive pay the decompression (LZ4, a few GB/s).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::block::Block;

/// A block is frozen once it has stayed this long in the ring (so a fast producer,
/// whose blocks leave the archive sooner, pays no compression).
pub(crate) const COLD_AFTER: Duration = Duration::from_secs(1);
/// The newest blocks are never frozen, however old: the tail that live readers and
/// a catching-up follower read is there.
pub(crate) const HOT_BLOCKS: usize = 16;
/// How often the freezer looks for blocks to freeze.
pub(crate) const FREEZE_TICK: Duration = Duration::from_millis(250);
/// The most blocks the freezer compresses in one look (about 16 MiB of lines).
pub(crate) const FREEZE_AT_MOST: usize = 256;

/// A block whose lines are compressed (see the module documentation).
pub(crate) struct ColdBlock {
    /// The block with its lines taken out (`bytes` empty): what the ring and
    /// filters need without thawing.
    pub(crate) index: Block,
    /// The lines, LZ4 block format.
    packed: Box<[u8]>,
    /// The lines' length once thawed.
    raw_len: usize,
    /// The copy readers share (see [`Thawed`]).
    thawed: Mutex<Thawed>,
    /// How many times the lines were decompressed for readers.
    thaws: AtomicU64,
}

/// A cold block's thawed copy: kept while it is read, then only while a reader
/// holds it.
#[derive(Default)]
struct Thawed {
    /// The copy, kept by the cold block until [`ColdBlock::cool`] lets it go.
    kept: Option<Arc<Block>>,
    /// Whether it was read since the last [`ColdBlock::cool`].
    read: bool,
    /// The copy, for as long as any reader holds it.
    held: Weak<Block>,
}

impl ColdBlock {
    /// `block` with its lines compressed; `None` when that saves nothing.
    pub(crate) fn freeze(block: &Block) -> Option<ColdBlock> {
        let packed = lz4_flex::block::compress(&block.bytes);
        if packed.len() >= block.bytes.len() {
            return None;
        }
        let same = lz4_flex::block::decompress(&packed, block.bytes.len())
            .is_ok_and(|back| back[..] == block.bytes[..]);
        if !same {
            // Never expected: the block stays uncompressed, and an operator hears of it.
            tracing::error!(
                first_seq = block.first_seq,
                bytes = block.bytes.len(),
                "an archive block did not decompress to its own lines; it is kept uncompressed"
            );
            return None;
        }
        Some(ColdBlock {
            index: Block {
                first_seq: block.first_seq,
                bytes: Bytes::new(),
                metas: block.metas.clone(),
                strings: block.strings.clone(),
                origin_seqs: block.origin_seqs.clone(),
            },
            packed: packed.into_boxed_slice(),
            raw_len: block.bytes.len(),
            thawed: Mutex::new(Thawed::default()),
            thaws: AtomicU64::new(0),
        })
    }

    /// The block with its lines, shared with the other readers (see the module's
    /// promises). `None` only if the compressed lines no longer decompress (never
    /// expected: they were checked when frozen).
    pub(crate) fn thaw(&self) -> Option<Arc<Block>> {
        let mut thawed = self.thawed.lock();
        thawed.read = true;
        if let Some(block) = &thawed.kept {
            return Some(Arc::clone(block));
        }
        if let Some(block) = thawed.held.upgrade() {
            thawed.kept = Some(Arc::clone(&block));
            return Some(block);
        }
        let bytes = lz4_flex::block::decompress(&self.packed, self.raw_len).ok()?;
        self.thaws.fetch_add(1, Ordering::Relaxed);
        let block = Arc::new(Block {
            first_seq: self.index.first_seq,
            bytes: Bytes::from(bytes),
            metas: self.index.metas.clone(),
            strings: self.index.strings.clone(),
            origin_seqs: self.index.origin_seqs.clone(),
        });
        thawed.held = Arc::downgrade(&block);
        thawed.kept = Some(Arc::clone(&block));
        Some(block)
    }

    /// The freezer's look: lets the thawed copy go if it was not read since the
    /// last look (readers that hold it keep it). Returns whether a copy is still
    /// kept.
    pub(crate) fn cool(&self) -> bool {
        let mut thawed = self.thawed.lock();
        if !thawed.read {
            thawed.kept = None;
        }
        thawed.read = false;
        thawed.kept.is_some()
    }

    /// How many times the lines were decompressed for readers.
    #[cfg(test)]
    pub(crate) fn thaws(&self) -> u64 {
        self.thaws.load(Ordering::Relaxed)
    }

    /// The lines' length uncompressed.
    pub(crate) fn raw_len(&self) -> usize {
        self.raw_len
    }

    /// The lines' length compressed.
    pub(crate) fn packed_len(&self) -> usize {
        self.packed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thawed_block_is_the_block_that_was_frozen_and_readers_share_it() {
        let block = Block::plain(7, 300);
        let cold = ColdBlock::freeze(&block).expect("JSON lines shrink");
        assert!(
            cold.packed_len() * 2 < cold.raw_len(),
            "{} of {}",
            cold.packed_len(),
            cold.raw_len()
        );
        assert_eq!((cold.index.first_seq, cold.index.len()), (7, 300));
        let a = cold.thaw().expect("thaws");
        let b = cold.thaw().expect("thaws");
        assert!(Arc::ptr_eq(&a, &b), "one copy while a reader holds it");
        assert_eq!(a.bytes, block.bytes);
        assert_eq!((a.first_seq, a.len()), (7, 300));
        assert!((0..300).all(|i| a.line_end(i) == block.line_end(i)));
        drop((a, b));
        assert!(cold.cool(), "read since the last look: kept");
        assert!(!cold.cool(), "let go of at the first look without a read");
        assert!(
            cold.thawed.lock().held.upgrade().is_none(),
            "freed with its last reader"
        );
        assert_eq!(cold.thaw().expect("thaws again").bytes, block.bytes);
        assert_eq!(cold.thaws(), 2);
    }

    #[test]
    fn readers_one_after_another_decompress_a_cold_block_once_until_it_cools() {
        let block = Block::plain(1, 300);
        let cold = ColdBlock::freeze(&block).expect("JSON lines shrink");
        // Each reader takes the block and lets go before the next comes, as
        // streams lagging behind the producer do.
        for _ in 0..1000 {
            assert_eq!(cold.thaw().expect("thaws").bytes, block.bytes);
        }
        assert_eq!(cold.thaws(), 1, "one copy for all of them");
        assert!(cold.cool(), "read since the last look: kept");
        assert_eq!(cold.thaw().expect("thaws").len(), 300);
        assert!(cold.cool(), "read again: kept");
        assert!(!cold.cool(), "not read since: let go");
        let held = cold.thaw().expect("thaws");
        assert_eq!(cold.thaws(), 2, "thawed anew once let go");
        assert!(cold.cool());
        assert!(!cold.cool());
        // Let go by the cold block, but a reader still holds it: shared, not
        // thawed a third time.
        let again = cold.thaw().expect("thaws");
        assert!(Arc::ptr_eq(&held, &again));
        assert_eq!(cold.thaws(), 2);
    }

    #[test]
    fn lines_that_do_not_shrink_stay_hot() {
        assert!(ColdBlock::freeze(&Block::plain(1, 1)).is_none());
    }
}
