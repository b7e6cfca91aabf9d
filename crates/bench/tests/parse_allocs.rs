//! What parsing an event line allocates, counted by a counting allocator over the
//! benchmark's event mix (the simulator's default scenario).
//!
//! Pins down: the catalog's text fields and an envelope's `origin` are kept inline
//! when short (node names, buckets, hosts, pids), so most lines of the mix parse
//! without a single allocation; what is left is a list's vector and the odd long
//! string. Before inline strings the mix took 4.6 allocations a line.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use master_events_events::{Envelope, Record, Timestamp};
use master_events_sim::{scenario, ScenarioConfig};

/// The system allocator, counting the allocations of each thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged; the count is
// a thread-local `Cell` without a destructor, which allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// The mix's lines as the benchmark sends them: with `seq`, `ts` and `origin`.
fn mix() -> Vec<Vec<u8>> {
    scenario(&ScenarioConfig::default())
        .map(|event| {
            Record::from_parts(
                Envelope {
                    seq: Some(1_000_000),
                    ts: Some(Timestamp::now()),
                    origin: Some("n_0@127.0.0.1".into()),
                    origin_ts: None,
                    origin_seq: None,
                },
                event,
            )
            .to_line()
        })
        .collect()
}

#[test]
fn lines_of_short_fields_parse_without_an_allocation_and_the_mix_with_under_one_a_line() {
    let lines = mix();
    assert!(lines.len() > 10_000, "the mix has {} lines", lines.len());
    // Allocations a line, by event type: (lines, allocations).
    let mut by_type: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let mut total = 0;
    for line in &lines {
        let before = allocations();
        let record = Record::parse(line).expect("a line of the mix parses");
        let used = allocations() - before;
        let entry = by_type.entry(record.event.type_name()).or_default();
        entry.0 += 1;
        entry.1 += used;
        total += used;
    }
    for (ty, (n, used)) in &by_type {
        println!(
            "{ty:30} {n:6} lines, {:.2} allocations a line",
            *used as f64 / *n as f64
        );
    }
    let mean = total as f64 / lines.len() as f64;
    println!(
        "the mix: {} lines, {mean:.2} allocations a line",
        lines.len()
    );
    // Events whose fields are numbers and short names only.
    for ty in [
        "vbucketMoveDone",
        "vbucketStateChange",
        "backfillPhaseStarted",
        "seqnoWaitingStarted",
        "takeoverStarted",
    ] {
        let (n, used) = by_type.get(ty).copied().unwrap_or_default();
        assert!(n > 0, "the mix has no {ty}");
        assert_eq!(used, 0, "{ty}: {used} allocations in {n} lines");
    }
    // A list is one vector (its short hosts inline): vbucketMoveStart has two.
    let (n, used) = by_type.get("vbucketMoveStart").copied().unwrap_or_default();
    assert_eq!(
        used,
        2 * n,
        "vbucketMoveStart: {used} allocations in {n} lines"
    );
    assert!(mean < 1.0, "{mean:.2} allocations a line over the mix");
}
