//! The memory allocator of the binary: jemalloc, set up for a long-running server.
//!
//! Owns: the global allocator and its options.
//!
//! Promises:
//! - Every allocation of the binary goes through jemalloc (tikv-jemallocator).
//!   Measured against glibc malloc with `scripts/bench.sh` (one producer, one
//!   reader, docs/benchmarks-history.md): the server spends about 1.5 µs of CPU an event
//!   instead of 2.4 (glibc lost its time to page faults, heap trimming and
//!   cross-thread frees of the parsed events), and an idle stream connection costs
//!   10.4 KiB instead of 14.5.
//! - Freed memory goes back to the system about half a second later, from one
//!   background thread, even while the server is idle (`background_thread`,
//!   `dirty_decay_ms:500`; jemalloc's default keeps it ten seconds): with 100,000
//!   events retained the server's RSS grows by about 1.3 times the bytes of the
//!   lines, where jemalloc's defaults gave 1.55 times.
//! - A thread caches freed blocks of at most 4 KiB for its next allocations
//!   (`tcache_max:4096`; jemalloc's default is 32 KiB). A long request body is
//!   parsed in 16 KiB chunks on two threads, whose transient buffers of 8–32 KiB
//!   had stayed in the threads' caches: with the default, RSS with 100,000 events
//!   retained grew 3 MB more (1.47 times the line bytes instead of 1.3); the K=1
//!   throughput is the same within the noise of interleaved rows.
//! - `_RJEM_MALLOC_CONF` in the environment overrides these options (jemalloc
//!   reads it after them).

use std::ffi::c_char;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The options jemalloc reads when it starts, as the C string it expects.
pub const OPTIONS: &[u8] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:500,tcache_max:4096\0";

/// A pointer to a static C string, which jemalloc only reads.
#[repr(transparent)]
pub struct ConfString(*const c_char);

// SAFETY: the pointer is to a `'static` byte string that nothing ever writes.
unsafe impl Sync for ConfString {}

/// jemalloc's `malloc_conf` (prefixed as tikv-jemallocator builds it).
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: ConfString = ConfString(OPTIONS.as_ptr().cast());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_are_one_nul_terminated_c_string() {
        let s = std::ffi::CStr::from_bytes_with_nul(OPTIONS).expect("one NUL, at the end");
        let s = s.to_str().expect("ASCII");
        assert!(s.split(',').all(|kv| kv.split_once(':').is_some()), "{s}");
    }
}
