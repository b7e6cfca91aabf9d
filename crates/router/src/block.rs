//! The block: the unit the sequencer writes and the ring stores.
//!
//! Owns: the block's limits ([`MAX_BLOCK_EVENTS`], [`MAX_BLOCK_BYTES`]), its layout
//! (`Block`: lines back to back in one [`Bytes`], a 16-byte `PackedMeta` per event,
//! the block's distinct strings once, `originSeq`s only when an event has one), the
//! reader's view of one event's meta ([`Meta`]), and the string table a block is
//! built with (`BlockStrings`, with the string cache blocks share).
//!
//! Promises:
//! - A block holds at most [`MAX_BLOCK_EVENTS`] events, and its lines stop growing
//!   once past [`MAX_BLOCK_BYTES`] (the line that crosses it is the last).
//! - Every string id in a block is `NO_STRING` or an index of its table, and a
//!   full block never runs out of ids (each event names at most four strings).
//! - A string lives exactly as long as a block that names it; the cache shared by
//!   the blocks being built is bounded (`STRING_CACHE_LIMIT`).
//! - Merging two consecutive blocks keeps every event's line, meta, strings and
//!   `originSeq`.
//!
//! The sequencer builds blocks (`crate::sequencer`), the ring keeps and serves them
//! (`crate::ring`), and full blocks' buffers are recycled (`crate::buffers`); this
//! module depends on none of them. See docs/architecture.md for the path of an event.

use std::collections::{HashMap, HashSet};
use std::mem;
use std::sync::Arc;

use bytes::Bytes;
use master_events_events::EventType;

/// The most events in one block.
pub const MAX_BLOCK_EVENTS: usize = 1024;
/// A block takes no more lines once it holds this many bytes. With the 1 KiB of
/// room for the line that fills it, a block's buffer is exactly 64 KiB, a size
/// allocators serve without rounding up.
pub const MAX_BLOCK_BYTES: usize = 63 * 1024;
/// The shared string cache of [`BlockStrings`] forgets everything past this many.
const STRING_CACHE_LIMIT: usize = 10_000;

/// What readers and filters know about an event without parsing its line: a view
/// that borrows its strings from the block that holds the event.
///
/// In the ring each event's meta is stored packed (16 bytes with the
/// line's end offset), its strings once per block and its `originSeq` (which only
/// forwarded events have) in a per-block column that blocks without one leave
/// empty, so the archive costs little more than its lines; this view is built on
/// the fly when a reader looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta<'a> {
    /// The event's type.
    pub event_type: EventType,
    /// The `vbucket` field, if the type has one.
    pub vbucket: Option<u16>,
    /// The `bucket` field, if the type has one.
    pub bucket: Option<&'a str>,
    /// The `node` field, if the type has one.
    pub node: Option<&'a str>,
    /// The `host` field, if the type has one.
    pub host: Option<&'a str>,
    /// The node that noted the event (always set on sequenced events).
    pub origin: Option<&'a str>,
    /// The event's position among its origin's events, if the origin gave one.
    pub origin_seq: Option<u64>,
}

impl Meta<'static> {
    /// The meta of an event that has only a type (every other field absent).
    pub fn of_type(event_type: EventType) -> Meta<'static> {
        Meta {
            event_type,
            vbucket: None,
            bucket: None,
            node: None,
            host: None,
            origin: None,
            origin_seq: None,
        }
    }
}

/// The index of a string in its block's table, or [`NO_STRING`].
pub(crate) type StringId = u16;

/// "No such field" in a [`PackedMeta`] string slot.
pub(crate) const NO_STRING: StringId = StringId::MAX;

/// The most distinct strings a block may hold (its ids stay below [`NO_STRING`]).
pub(crate) const MAX_BLOCK_STRINGS: usize = NO_STRING as usize;

/// Slots of [`PackedMeta::strings`].
pub(crate) const BUCKET: usize = 0;
pub(crate) const NODE: usize = 1;
pub(crate) const HOST: usize = 2;
pub(crate) const ORIGIN: usize = 3;

/// One event's [`Meta`] as the ring stores it, with where its line ends: 16 bytes
/// (its `originSeq` is kept in [`Block::origin_seqs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackedMeta {
    /// Ids in the block's string table of bucket, node, host and origin.
    pub(crate) strings: [StringId; 4],
    /// Offset in the block's bytes one past the line's `\n`.
    pub(crate) end: u32,
    /// The vbucket, meaningful when `has_vbucket`.
    pub(crate) vbucket: u16,
    pub(crate) event_type: EventType,
    pub(crate) has_vbucket: bool,
}

const _: () = assert!(std::mem::size_of::<PackedMeta>() == 16);

impl PackedMeta {
    /// The view of this meta, its strings looked up in `strings`, with `origin_seq`
    /// (0 when absent: a present one is at least 1).
    pub(crate) fn view<'a>(&self, strings: &'a [Arc<str>], origin_seq: u64) -> Meta<'a> {
        let s = |slot: usize| strings.get(usize::from(self.strings[slot])).map(|a| &**a);
        Meta {
            event_type: self.event_type,
            vbucket: self.has_vbucket.then_some(self.vbucket),
            bucket: s(BUCKET),
            node: s(NODE),
            host: s(HOST),
            origin: s(ORIGIN),
            origin_seq: (origin_seq != 0).then_some(origin_seq),
        }
    }
}

/// Consecutive events encoded by the sequencer in one go: their lines, back to back
/// in one allocation, each one's [`PackedMeta`] (with where its line ends), and the
/// distinct strings their metas name.
///
/// Invariants: `metas` is not empty; the `end`s are strictly increasing and the
/// last is `bytes.len()`; line `i` (seq `first_seq + i`) is
/// `bytes[metas[i-1].end..metas[i].end]` (from 0 for `i = 0`) and ends with `\n`;
/// every string id is [`NO_STRING`] or an index of `strings`; `origin_seqs` is
/// empty or as long as `metas`.
pub(crate) struct Block {
    pub(crate) first_seq: u64,
    pub(crate) bytes: Bytes,
    pub(crate) metas: Vec<PackedMeta>,
    pub(crate) strings: Vec<Arc<str>>,
    /// Each event's `originSeq` (0 when it has none); empty when no event of the
    /// block has one, as on a single node, where ingest clears them. So the 8 bytes
    /// an event are spent only where the cluster uses them.
    pub(crate) origin_seqs: Vec<u64>,
}

impl Block {
    pub(crate) fn len(&self) -> usize {
        self.metas.len()
    }

    /// One past the last seq of the block.
    pub(crate) fn end_seq(&self) -> u64 {
        self.first_seq + self.len() as u64
    }

    pub(crate) fn line_start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            _ => self.metas[i - 1].end as usize,
        }
    }

    pub(crate) fn line_end(&self, i: usize) -> usize {
        self.metas[i].end as usize
    }

    /// The `originSeq` of event `i`, 0 when it has none.
    pub(crate) fn origin_seq(&self, i: usize) -> u64 {
        self.origin_seqs.get(i).copied().unwrap_or(0)
    }

    /// This block, its lines and metas copied into allocations of their own.
    pub(crate) fn copied(&self) -> Block {
        Block {
            first_seq: self.first_seq,
            bytes: Bytes::copy_from_slice(&self.bytes),
            metas: self.metas.clone(),
            strings: self.strings.clone(),
            origin_seqs: self.origin_seqs.clone(),
        }
    }

    /// The first `n` events of this block (at least one), as a block of their own.
    pub(crate) fn prefix(&self, n: usize) -> Block {
        let n = n.clamp(1, self.len());
        Block {
            first_seq: self.first_seq,
            bytes: self.bytes.slice(..self.line_end(n - 1)),
            metas: self.metas[..n].to_vec(),
            strings: self.strings.clone(),
            origin_seqs: self.origin_seqs.iter().take(n).copied().collect(),
        }
    }

    /// The origin and `originSeq` of event `i`, when it has both.
    pub(crate) fn origin_of(&self, i: usize) -> Option<(&Arc<str>, u64)> {
        let id = self.metas.get(i)?.strings[ORIGIN];
        let origin = self.strings.get(usize::from(id))?;
        match self.origin_seq(i) {
            0 => None,
            n => Some((origin, n)),
        }
    }

    /// This block followed by `next` (whose `first_seq` must be this one's
    /// `end_seq`), as one block: the lines and metas copied, the string tables
    /// joined with each string once.
    pub(crate) fn merged(&self, next: &Block) -> Block {
        let mut bytes = Vec::with_capacity(self.bytes.len() + next.bytes.len());
        bytes.extend_from_slice(&self.bytes);
        bytes.extend_from_slice(&next.bytes);
        let mut strings = self.strings.clone();
        let mut index: HashMap<&str, StringId> = HashMap::new();
        for (i, s) in self.strings.iter().enumerate() {
            index.entry(&**s).or_insert(i as StringId);
        }
        // `next`'s ids, in the joined table.
        let remap: Vec<StringId> = next
            .strings
            .iter()
            .map(|s| {
                *index.entry(&**s).or_insert_with(|| {
                    strings.push(Arc::clone(s));
                    // Every string is named by an event of one of the two blocks, at
                    // most four an event: the ids stay below MAX_BLOCK_STRINGS.
                    (strings.len() - 1) as StringId
                })
            })
            .collect();
        let offset = self.bytes.len() as u32;
        let mut metas = Vec::with_capacity(self.metas.len() + next.metas.len());
        metas.extend_from_slice(&self.metas);
        metas.extend(next.metas.iter().map(|m| {
            PackedMeta {
                end: m.end + offset,
                strings: m
                    .strings
                    .map(|id| remap.get(usize::from(id)).copied().unwrap_or(NO_STRING)),
                ..*m
            }
        }));
        let origin_seqs = if self.origin_seqs.is_empty() && next.origin_seqs.is_empty() {
            Vec::new()
        } else {
            (0..self.len())
                .map(|i| self.origin_seq(i))
                .chain((0..next.len()).map(|i| next.origin_seq(i)))
                .collect()
        };
        Block {
            first_seq: self.first_seq,
            bytes: Bytes::from(bytes),
            metas,
            strings,
            origin_seqs,
        }
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
pub(crate) struct BlockStrings {
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
    pub(crate) fn id(&mut self, slot: usize, s: &str) -> StringId {
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
    pub(crate) fn get(&self, id: StringId) -> Option<&Arc<str>> {
        self.table.get(usize::from(id))
    }

    /// The table, for the block being appended; this one starts empty again.
    pub(crate) fn take(&mut self) -> Vec<Arc<str>> {
        self.ids.clear();
        self.last = [NO_STRING; 4];
        let mut table = mem::take(&mut self.table);
        table.shrink_to_fit();
        table
    }
}

#[cfg(test)]
impl Block {
    /// A block of `n` lines `{"seq":N}` from `first_seq`, without strings or
    /// `originSeq`s (for tests).
    pub(crate) fn plain(first_seq: u64, n: usize) -> Block {
        Block::marked(first_seq, n, None)
    }

    /// [`Block::plain`], with `"m":MARK` in each line when a mark is given.
    pub(crate) fn marked(first_seq: u64, n: usize, mark: Option<&str>) -> Block {
        let mut bytes = Vec::new();
        let mut metas = Vec::new();
        for i in 0..n {
            let seq = first_seq + i as u64;
            let line = match mark {
                None => format!("{{\"seq\":{seq}}}\n"),
                Some(mark) => format!("{{\"seq\":{seq},\"m\":\"{mark}\"}}\n"),
            };
            bytes.extend_from_slice(line.as_bytes());
            metas.push(PackedMeta {
                strings: [NO_STRING; 4],
                end: bytes.len() as u32,
                vbucket: 0,
                event_type: EventType::FailoverEnded,
                has_vbucket: false,
            });
        }
        Block {
            first_seq,
            bytes: Bytes::from(bytes),
            metas,
            strings: Vec::new(),
            origin_seqs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(first_seq: u64, n: usize) -> Block {
        Block::plain(first_seq, n)
    }

    #[test]
    fn origin_seqs_stay_with_their_events_when_blocks_with_and_without_them_merge() {
        let plain = block(1, 2);
        let mut forwarded = block(3, 3);
        forwarded.origin_seqs = vec![0, 41, 42];
        assert!(plain.merged(&block(3, 1)).origin_seqs.is_empty());
        let joined = plain.merged(&forwarded);
        assert_eq!(joined.origin_seqs, [0, 0, 0, 41, 42]);
        let seqs: Vec<Option<u64>> = (0..joined.len())
            .map(|i| {
                joined.metas[i]
                    .view(&joined.strings, joined.origin_seq(i))
                    .origin_seq
            })
            .collect();
        assert_eq!(seqs, [None, None, None, Some(41), Some(42)]);
        let back = forwarded.merged(&block(6, 2));
        assert_eq!(back.origin_seqs, [0, 41, 42, 0, 0]);
    }

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
