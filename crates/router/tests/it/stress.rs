//! Many publishers and many readers at once, on a small archive (so readers fall
//! behind): every reader's view is contiguous, gaps are exact, and every reader saw
//! the same bytes for the same seq. And a stalled reader costs nothing.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use master_events_events::Record;
use master_events_router::{Chunk, Cursor, Router, RouterConfig};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::*;

const PUBLISHERS: u64 = 4;
const PER_PUBLISHER: u64 = 6_000;
const READERS: usize = 40;
const ARCHIVE: usize = 256;

/// Checks one reader's chunks as they come; returns the lines it got by seq.
fn check_chunk(next: &mut u64, chunk: &Chunk, lines: &mut Vec<(u64, Bytes)>, gaps: &mut u64) {
    match chunk {
        Chunk::Truncated { after } => panic!("committed readers are never cut (after {after})"),
        Chunk::Gap(g) => {
            assert_eq!(g.from_seq, *next, "a gap starts where the reader was");
            assert!(g.to_seq >= g.from_seq);
            assert_eq!(g.missed, g.to_seq - g.from_seq + 1, "exact count");
            *next = g.to_seq + 1;
            *gaps += 1;
        }
        Chunk::Events(b) => {
            assert!(!b.is_empty());
            assert_eq!(b.first_seq(), *next, "no gap and no duplicate");
            let mut total = 0;
            for e in b.iter() {
                assert_eq!(e.seq, *next);
                assert_eq!(e.line.last(), Some(&b'\n'));
                total += e.line.len();
                lines.push((e.seq, Bytes::copy_from_slice(e.line)));
                *next += 1;
            }
            assert_eq!(b.last_seq(), *next - 1);
            assert_eq!(b.bytes().len(), total, "bytes() is exactly the lines");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_readers_see_one_consistent_sequence() {
    let seed: u64 = std::env::var("STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("STRESS_SEED={seed}");
    let total = PUBLISHERS * PER_PUBLISHER;
    let router = Router::start(RouterConfig {
        archive_capacity: ARCHIVE,
        ..Default::default()
    });
    // seq -> line, as first seen by any reader; every other reader must agree.
    let seen: Arc<Mutex<HashMap<u64, Bytes>>> = Arc::default();

    // One reader paces the publishers (they wait until it has caught up before each
    // run of at most 64 events, so it never lags by more than the archive, 4 x 64): it must
    // see every event, with no gap. The others read at their own pace.
    let mut paced = router.subscribe(Cursor::Oldest);
    let (paced_tx, paced_rx) = tokio::sync::watch::channel(0u64);
    let paced_reader = tokio::spawn({
        let seen = Arc::clone(&seen);
        async move {
            let (mut next, mut lines, mut gaps) = (1, Vec::new(), 0);
            while let Some(chunk) = paced.recv().await {
                check_chunk(&mut next, &chunk, &mut lines, &mut gaps);
                paced_tx.send_replace(paced.position());
            }
            let mut seen = seen.lock();
            for (seq, line) in lines {
                let first = seen.entry(seq).or_insert_with(|| line.clone());
                assert_eq!(*first, line, "readers disagree on seq {seq}");
            }
            (next, gaps)
        }
    });

    within(async {
        let mut publishers = Vec::new();
        for p in 0..PUBLISHERS {
            let router = router.clone();
            let mut rng = StdRng::seed_from_u64(seed ^ (p + 1));
            let mut paced = paced_rx.clone();
            publishers.push(tokio::spawn(async move {
                let mut i = 0;
                while i < PER_PUBLISHER {
                    // Nothing queued nor unread by the paced reader: then at most one
                    // run per publisher (4 x 64 = the archive) is ahead of it.
                    paced
                        .wait_for(|pos| {
                            *pos >= router.last_seq() && router.stats().ingress_queued == 0
                        })
                        .await
                        .expect("the paced reader runs until shutdown");
                    let n = rng.random_range(1..=64).min(PER_PUBLISHER - i);
                    if rng.random_bool(0.5) {
                        let batch = (i..i + n)
                            .map(|k| Record::new(event(p * PER_PUBLISHER + k)))
                            .collect();
                        router.publish_batch(batch).await.expect("published");
                    } else {
                        let emitter = router.emitter();
                        for k in i..i + n {
                            let mut record = Record::new(event(p * PER_PUBLISHER + k));
                            // Retry rather than drop: this test counts every event.
                            while let Err(refused) = emitter.try_note_record(record) {
                                record = *refused.record;
                                tokio::task::yield_now().await;
                            }
                        }
                    }
                    i += n;
                    tokio::task::yield_now().await;
                }
            }));
        }

        let mut readers = Vec::new();
        let mut rng = StdRng::seed_from_u64(seed);
        for r in 0..READERS {
            // Subscribe at random moments while publishing goes on.
            for _ in 0..rng.random_range(0..40) {
                tokio::task::yield_now().await;
            }
            let last = router.last_seq();
            let cursor = match rng.random_range(0..4) {
                0 => Cursor::Oldest,
                1 => Cursor::Now,
                2 => Cursor::After(rng.random_range(0..=last)),
                _ => Cursor::After(last + rng.random_range(0..50)),
            };
            let mut sub = router.subscribe(cursor);
            let start = sub.position();
            match cursor {
                Cursor::After(s) => assert_eq!(start, s),
                Cursor::Now => assert!(start >= last),
                Cursor::Oldest => {}
            }
            // Some readers are slow: they yield a lot, and fall behind the tail.
            let slowness = if r % 3 == 0 {
                rng.random_range(1..20)
            } else {
                0
            };
            let seen = Arc::clone(&seen);
            readers.push(tokio::spawn(async move {
                let mut next = start + 1;
                let mut lines = Vec::new();
                let mut gaps = 0;
                while let Some(chunk) = sub.recv().await {
                    check_chunk(&mut next, &chunk, &mut lines, &mut gaps);
                    for _ in 0..slowness {
                        tokio::task::yield_now().await;
                    }
                }
                let mut seen = seen.lock();
                for (seq, line) in lines {
                    let first = seen.entry(seq).or_insert_with(|| line.clone());
                    assert_eq!(*first, line, "readers disagree on seq {seq}");
                }
                (start, next, gaps)
            }));
        }

        for p in publishers {
            p.await.expect("publisher");
        }
        router.shutdown().await;
        let mut gapped = 0;
        for r in readers {
            let (start, next, gaps) = r.await.expect("reader");
            // Every reader ends right after the last event (or where it asked to
            // start, if that was beyond).
            assert_eq!(next, (total + 1).max(start + 1), "reader from {start}");
            gapped += usize::from(gaps > 0);
        }
        println!("{gapped} of {READERS} readers fell behind and got a gap");
        let (next, gaps) = paced_reader.await.expect("paced reader");
        assert_eq!(
            (next, gaps),
            (total + 1, 0),
            "the paced reader saw everything"
        );
    })
    .await;

    assert_eq!(router.last_seq(), total);
    assert_eq!(router.stats().dropped, 0);
    // The archive agrees with what the readers saw, and every line is its own seq's.
    let seen = seen.lock();
    let mut archive = router.subscribe(Cursor::Oldest);
    let mut n = 0;
    while let Some(Chunk::Events(b)) = archive.try_recv() {
        for e in b.iter() {
            let rec = Record::parse(e.line).expect("a valid line");
            assert_eq!(rec.envelope.seq, Some(e.seq));
            if let Some(line) = seen.get(&e.seq) {
                assert_eq!(&line[..], e.line);
            }
            n += 1;
        }
    }
    assert_eq!(n, ARCHIVE);
    for (seq, line) in seen.iter() {
        let rec = Record::parse(line).expect("a valid line");
        assert_eq!(rec.envelope.seq, Some(*seq));
    }
    assert_eq!(seen.len() as u64, total, "the paced reader saw every seq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_does_not_slow_the_publisher_and_holds_bounded_memory() {
    let router = Router::start(RouterConfig {
        archive_capacity: ARCHIVE,
        ..Default::default()
    });
    let mut stalled = router.subscribe(Cursor::Oldest);
    let total = 50_000u64;
    let mut max_bytes = 0;
    within(async {
        let mut i = 0;
        while i < total {
            let batch = (i..i + 500).map(|k| Record::new(event(k))).collect();
            router.publish_batch(batch).await.expect("published");
            i += 500;
            let stats = router.stats();
            assert!(stats.archived <= ARCHIVE, "{stats:?}");
            // Blocks hold at most capacity / 8 events: the ring holds the retained
            // events in at most 8 full blocks and a partly evicted one.
            assert!(stats.archived_blocks <= 9, "{stats:?}");
            max_bytes = max_bytes.max(stats.archived_bytes);
        }
    })
    .await;
    // When it finally reads: one exact gap, then the oldest retained, to the end.
    let oldest = router.oldest_seq().expect("retained");
    assert_eq!(oldest, total - ARCHIVE as u64 + 1);
    let mut longest = 0;
    let mut got = Vec::new();
    while let Some(chunk) = stalled.try_recv() {
        if let Chunk::Events(b) = &chunk {
            longest = b
                .iter()
                .map(|e| e.line.len())
                .max()
                .unwrap_or(0)
                .max(longest);
        }
        got.extend(flatten(&chunk));
    }
    // Memory: the retained lines and the evicted part of one block (less than
    // capacity / 8 lines), whatever the stalled reader does.
    assert!(
        max_bytes <= (ARCHIVE + ARCHIVE / 8) * longest,
        "retained {max_bytes} bytes"
    );
    let mut expected = vec![Got::Gap(1, oldest - 1, oldest - 1)];
    expected.extend(seqs(oldest..=total));
    assert_eq!(got, expected);
}

/// Readers waiting at the tail are woken for every event: a lost wake-up leaves a
/// reader behind for good. Publishing in small runs of events, each run waited for
/// by every reader, puts them all back at the tail thousands of times, and the
/// run's events come while they wake and go back to waiting. Every tenth run, a
/// quarter of the readers, waiting, stop waiting and move to a new task: the
/// wake-up must reach the task that waits now, not the one that waited first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_waiting_at_the_tail_are_woken_for_every_event() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use master_events_router::Subscription;
    use tokio::sync::{mpsc, watch};

    const WAITING: usize = 64;
    const RUNS: u64 = 4_000;
    let router = Router::start(RouterConfig::default());
    let positions: Arc<Vec<AtomicU64>> =
        Arc::new((0..WAITING).map(|_| AtomicU64::new(0)).collect());
    let (move_tx, move_rx) = watch::channel(0u64);
    let (moved_tx, mut moved_rx) = mpsc::unbounded_channel::<(usize, Subscription)>();
    // Reads until the router shuts down or, for a mover, until told to move
    // (then hands its subscription over, in the middle of its wait).
    let read = |index: usize, mut sub: Subscription| {
        let positions = Arc::clone(&positions);
        let mut moving = move_rx.clone();
        moving.borrow_and_update();
        let moved = moved_tx.clone();
        tokio::spawn(async move {
            loop {
                let chunk = tokio::select! {
                    chunk = sub.recv() => chunk,
                    _ = moving.changed(), if index % 4 == 0 => {
                        let _ = moved.send((index, sub));
                        return;
                    }
                };
                let Some(chunk) = chunk else { return };
                let Chunk::Events(batch) = chunk else {
                    panic!("reader {index}: a gap in a ring that keeps everything");
                };
                let last = batch.first_seq() + batch.len() as u64 - 1;
                positions[index].store(last, Ordering::Release);
            }
        })
    };
    let mut tasks: Vec<_> = (0..WAITING)
        .map(|index| read(index, router.subscribe(Cursor::Now)))
        .collect();
    let mut seq = 0u64;
    for run in 0..RUNS {
        // A few events one by one, while the readers wake and go back to
        // waiting: the last one of each run finds them anywhere in between.
        for _ in 0..1 + run % 5 {
            let range = router
                .publish_batch(vec![Record::new(event(seq))])
                .await
                .expect("published");
            seq = *range.end();
        }
        let start = Instant::now();
        loop {
            let behind: Vec<(usize, u64)> = positions
                .iter()
                .enumerate()
                .map(|(i, p)| (i, p.load(Ordering::Acquire)))
                .filter(|(_, p)| *p < seq)
                .collect();
            if behind.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "run {run}: readers {behind:?} never got seq {seq} (a lost wake-up)"
            );
            tokio::task::yield_now().await;
        }
        if run % 10 == 9 {
            // Everyone has caught up and waits again (or is about to): move.
            move_tx.send_modify(|g| *g += 1);
            for _ in 0..WAITING / 4 {
                let (index, sub) = within(moved_rx.recv()).await.expect("a reader moves");
                tasks.push(read(index, sub));
            }
        }
    }
    router.shutdown().await;
    for task in tasks {
        within(task)
            .await
            .expect("a reader ends when the router shuts down");
    }
}
