//! The allocator setting of the long-running commands (`serve`, `demo`).
//!
//! Owns: one glibc `mallopt` call, made before any thread starts.
//!
//! Promises: with glibc, allocations of 64 KiB and more (the archive's blocks, whose
//! lines fill 64 KiB, and large ingest bodies) are mapped on their own and given back
//! to the system when freed, instead of coming from the heap where they interleave
//! with the short-lived allocations of request handling. A freed hole between two
//! retained blocks then no longer stays resident: with 100,000 events retained the
//! server's RSS growth fell from 1.39–1.46× to 1.25–1.27× the bytes of the lines
//! (docs/benchmarks.md). The cost, one `mmap`/`munmap` pair per block (some
//! hundreds of events), is not measurable in the throughput figures. Elsewhere
//! (musl, other systems) this does nothing.

/// The size from which glibc maps an allocation on its own.
pub const MMAP_THRESHOLD: usize = 64 * 1024;

/// Applies the setting, unless `MALLOC_MMAP_THRESHOLD_` (glibc's own variable) is
/// set, which then wins. Call it first thing in `main`, before any thread starts.
pub fn keep_large_blocks_apart() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: `mallopt` only changes glibc's allocation policy; it is called
        // before any other thread exists, with a parameter and a value glibc
        // documents (M_MMAP_THRESHOLD accepts 0..=32 MiB on 64-bit). Its return
        // value (1 on success, 0 on error) is not needed: on error the default
        // policy stays, which is only less frugal.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        }
    }
}
