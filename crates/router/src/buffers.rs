//! Block buffers: the memory the sequencer encodes lines into, recycled.
//!
//! Owns: a small bounded free list of line buffers of one size
//! ([`BLOCK_BUFFER_CAPACITY`]).
//!
//! Promises:
//! - A full block (one whose lines reached `MAX_BLOCK_BYTES`) takes the buffer it was
//!   encoded into as its bytes, without a copy; when the last reader lets go of the
//!   block (it was evicted and no batch of it is held), the buffer comes back here
//!   and the next block is encoded into it. Under steady load the archive's line
//!   memory is so reused in place: no allocation, no copy, no fresh pages, and no
//!   holes left in the heap between retained blocks by freed ones.
//! - At most [`MAX_FREE`] buffers wait here; any more are freed. Buffers that grew
//!   past [`BLOCK_BUFFER_CAPACITY`] (a line of more than `BLOCK_SLACK` bytes at the
//!   end of a block) are not kept.

use std::mem;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::block::MAX_BLOCK_BYTES;

/// Room past `MAX_BLOCK_BYTES` for the line that fills a block.
pub(crate) const BLOCK_SLACK: usize = 1024;

/// The capacity of every pooled buffer.
pub(crate) const BLOCK_BUFFER_CAPACITY: usize = MAX_BLOCK_BYTES + BLOCK_SLACK;

/// The most buffers kept for reuse.
pub(crate) const MAX_FREE: usize = 4;

/// The pool. Shared by the sequencer (which takes) and the blocks (which give back).
#[derive(Default)]
pub(crate) struct BlockBuffers {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BlockBuffers {
    /// An empty buffer of [`BLOCK_BUFFER_CAPACITY`], reused if one is free.
    pub(crate) fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK_BUFFER_CAPACITY))
    }

    /// Whether `buf` is one this pool can take back.
    pub(crate) fn fits(buf: &Vec<u8>) -> bool {
        buf.capacity() == BLOCK_BUFFER_CAPACITY
    }

    /// `buf`'s contents as [`Bytes`] that give the buffer back to the pool when the
    /// last of them is dropped.
    pub(crate) fn freeze(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::clone(self),
        })
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        if !Self::fits(&buf) {
            return;
        }
        buf.clear();
        let mut free = self.free.lock();
        if free.len() < MAX_FREE {
            free.push(buf);
        }
    }

    #[cfg(test)]
    fn free_count(&self) -> usize {
        self.free.lock().len()
    }
}

/// The owner of a frozen buffer.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BlockBuffers>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_buffer_comes_back_when_its_last_slice_is_dropped() {
        let pool = Arc::new(BlockBuffers::default());
        let mut buf = pool.take();
        buf.extend_from_slice(b"{\"type\":\"x\"}\n");
        let ptr = buf.as_ptr();
        let bytes = pool.freeze(buf);
        let slice = bytes.slice(1..5);
        drop(bytes);
        assert_eq!(pool.free_count(), 0, "a slice still holds it");
        assert_eq!(&slice[..], b"\"typ");
        drop(slice);
        assert_eq!(pool.free_count(), 1);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the same memory is reused");
    }

    #[test]
    fn the_pool_keeps_at_most_max_free_and_never_a_grown_buffer() {
        let pool = Arc::new(BlockBuffers::default());
        let frozen: Vec<Bytes> = (0..MAX_FREE + 3)
            .map(|_| pool.freeze(pool.take()))
            .collect();
        drop(frozen);
        assert_eq!(pool.free_count(), MAX_FREE);
        let mut grown = Vec::with_capacity(BLOCK_BUFFER_CAPACITY);
        grown.resize(BLOCK_BUFFER_CAPACITY + 1, b'x');
        for _ in 0..MAX_FREE {
            drop(pool.take());
        }
        assert_eq!(pool.free_count(), 0);
        drop(pool.freeze(grown));
        assert_eq!(pool.free_count(), 0, "a grown buffer is freed, not kept");
    }
}
