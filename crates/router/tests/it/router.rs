//! The router's contract: cursors, replay then live, gaps, shutdown, drops, batches.

use std::collections::HashMap;

use master_events_events::{Envelope, Record};
use master_events_router::{Chunk, Cursor, Router, RouterConfig, RouterError};

use crate::*;

fn router(archive: usize) -> Router {
    Router::start(RouterConfig {
        node: "n_0@127.0.0.1".into(),
        archive_capacity: archive,
        ..Default::default()
    })
}

async fn publish(router: &Router, from: u64, n: u64) {
    let records = (from..from + n).map(|i| Record::new(event(i))).collect();
    let range = router.publish_batch(records).await.expect("published");
    assert_eq!(range.clone().count() as u64, n, "{range:?}");
}

#[tokio::test]
async fn replay_then_live_has_no_gap() {
    let router = router(4096);
    publish(&router, 0, 50).await;
    let mut sub = router.subscribe(Cursor::Oldest);
    assert_eq!(sub.position(), 0);
    let r = router.clone();
    let live = tokio::spawn(async move {
        for i in 50..100 {
            r.emitter().note(event(i));
            tokio::task::yield_now().await;
        }
    });
    let got = read_until(&mut sub, 100).await;
    live.await.expect("publisher");
    assert_eq!(got, seqs(1..=100));
}

#[tokio::test]
async fn since_resumes_exactly() {
    let router = router(4096);
    publish(&router, 0, 100).await;
    let mut sub = router.subscribe(Cursor::After(37));
    assert_eq!(sub.position(), 37);
    assert_eq!(drain_ready(&mut sub), seqs(38..=100));
    assert_eq!(sub.position(), 100);
    publish(&router, 100, 3).await;
    assert_eq!(drain_ready(&mut sub), seqs(101..=103));
}

#[tokio::test]
async fn too_old_cursor_gets_gap_first() {
    let router = router(16);
    publish(&router, 0, 100).await;
    assert_eq!(router.oldest_seq(), Some(85));
    let mut sub = router.subscribe(Cursor::After(10));
    let mut expected = vec![Got::Gap(11, 84, 74)];
    expected.extend(seqs(85..=100));
    assert_eq!(drain_ready(&mut sub), expected);
    // From the oldest retained: no gap.
    let mut oldest = router.subscribe(Cursor::Oldest);
    assert_eq!(drain_ready(&mut oldest), seqs(85..=100));
    // since=0 means "everything": what is gone is reported.
    let mut zero = router.subscribe(Cursor::After(0));
    assert_eq!(drain_ready(&mut zero).first(), Some(&Got::Gap(1, 84, 84)));
}

#[tokio::test]
async fn gap_frame_says_why_and_encodes_as_a_stream_line() {
    let router = router(4);
    publish(&router, 0, 10).await;
    let mut sub = router.subscribe(Cursor::After(2));
    let Some(Chunk::Gap(gap)) = sub.try_recv() else {
        panic!("expected a gap");
    };
    let mut line = Vec::new();
    gap.encode_line(&mut line);
    assert_eq!(
        String::from_utf8_lossy(&line),
        "{\"type\":\"gap\",\"fromSeq\":3,\"toSeq\":6,\"missed\":4,\"reason\":\"evicted from the archive\"}\n"
    );
}

#[tokio::test]
async fn now_cursor_sees_only_live() {
    let router = router(4096);
    publish(&router, 0, 10).await;
    let mut sub = router.subscribe(Cursor::Now);
    assert_eq!(sub.position(), 10);
    assert!(sub.try_recv().is_none());
    publish(&router, 10, 5).await;
    assert_eq!(drain_ready(&mut sub), seqs(11..=15));
}

#[tokio::test]
async fn after_a_future_seq_waits_for_the_next_one() {
    let router = router(4096);
    publish(&router, 0, 10).await;
    let mut sub = router.subscribe(Cursor::After(12));
    publish(&router, 10, 2).await;
    assert!(sub.try_recv().is_none(), "seqs up to 12 are skipped");
    publish(&router, 12, 2).await;
    assert_eq!(drain_ready(&mut sub), seqs(13..=14));
}

#[tokio::test]
async fn a_waiting_reader_is_woken_by_a_new_event() {
    let router = router(4096);
    let mut sub = router.subscribe(Cursor::Now);
    let reader = tokio::spawn(async move { sub.recv().await.map(|c| flatten(&c)) });
    tokio::task::yield_now().await;
    router.emitter().note(event(1));
    let got = within(reader).await.expect("reader");
    assert_eq!(got, Some(seqs(1..=1)));
}

#[tokio::test]
async fn shutdown_drains_everything() {
    let router = router(4096);
    let mut early = router.subscribe(Cursor::Oldest);
    let emitter = router.emitter();
    for i in 0..3000 {
        emitter.note(event(i));
    }
    let waiting = tokio::spawn({
        let mut sub = router.subscribe(Cursor::Oldest);
        async move { drain_to_end(&mut sub).await }
    });
    router.shutdown().await;
    assert_eq!(router.last_seq(), 3000);
    assert_eq!(drain_to_end(&mut early).await, seqs(1..=3000));
    assert!(early.is_finished());
    assert_eq!(waiting.await.expect("reader"), seqs(1..=3000));
    // A reader that subscribes after shutdown still replays the archive, then ends.
    let mut late = router.subscribe(Cursor::After(2990));
    assert_eq!(drain_to_end(&mut late).await, seqs(2991..=3000));
    // Nothing is taken any more, and nothing is lost silently.
    assert_eq!(
        router.publish_batch(vec![Record::new(event(0))]).await,
        Err(RouterError::Closed)
    );
    emitter.note(event(0));
    assert_eq!(router.stats().dropped, 1);
    router.shutdown().await; // idempotent
}

#[tokio::test]
async fn dropping_every_handle_finishes_the_readers() {
    let router = router(4096);
    let mut sub = router.subscribe(Cursor::Oldest);
    router.emitter().note(event(1));
    drop(router);
    assert_eq!(drain_to_end(&mut sub).await, seqs(1..=1));
}

#[test]
fn emitter_drops_are_counted_when_queue_full() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let router = Router::start(RouterConfig {
            ingress_capacity: 4,
            ..Default::default()
        });
        let emitter = router.emitter();
        // The sequencer cannot run until we await: the queue fills up.
        for i in 0..10 {
            emitter.note(event(i));
        }
        assert_eq!(emitter.dropped(), 6);
        let refused = emitter
            .try_note_record(Record::new(event(99)))
            .expect_err("full");
        assert_eq!(refused.error, RouterError::QueueFull);
        assert_eq!(emitter.dropped(), 6, "try_note_record counts nothing");
        router.shutdown().await;
        let stats = router.stats();
        assert_eq!((stats.published, stats.dropped, stats.last_seq), (4, 6, 4));
    });
}

#[test]
fn publish_batch_waits_for_room_instead_of_dropping() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let router = Router::start(RouterConfig {
            ingress_capacity: 10,
            ..Default::default()
        });
        for i in 0..8 {
            router.emitter().note(event(i));
        }
        let batch = (0..5).map(|i| Record::new(event(i))).collect();
        assert_eq!(router.publish_batch(batch).await, Ok(9..=13));
        // Larger than the whole ingress: let in once it is empty.
        let big = (0..25).map(|i| Record::new(event(i))).collect();
        assert_eq!(router.publish_batch(big).await, Ok(14..=38));
        assert_eq!(router.stats().dropped, 0);
        let empty = router.publish_batch(Vec::new()).await.expect("empty");
        assert!(empty.is_empty());
        assert_eq!(*empty.start(), 39);
        let parts = router.publish_parts(vec![Vec::new(), Vec::new()]).await;
        let empty = parts.expect("empty parts");
        assert!(empty.is_empty());
        assert_eq!(*empty.start(), 39);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whole_or_in_parts_gets_consecutive_seqs_in_order() {
    let router = router(100_000);
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let router = router.clone();
        tasks.push(tokio::spawn(async move {
            let mut ranges = Vec::new();
            for b in 0..50u64 {
                let n = 1 + (t * 7 + b * 13) % 40;
                let names: Vec<String> = (0..n).map(|k| format!("t{t}-b{b}-{k}")).collect();
                let mut records: Vec<Record> = names
                    .iter()
                    .map(|name| {
                        Record::new(master_events_events::catalog::DeleteBucket {
                            bucket: name.as_str().into(),
                        })
                    })
                    .collect();
                // Notes from the same task interleave with batches elsewhere.
                router.emitter().note(event(t));
                let range = if b % 2 == 0 {
                    router.publish_batch(records).await
                } else {
                    // Every other batch in parts, an empty one among them: one
                    // batch all the same.
                    let tail = records.split_off(records.len() / 2);
                    let cut = tail.len() / 3;
                    let mut tail = tail;
                    let last = tail.split_off(cut);
                    router
                        .publish_parts(vec![records, Vec::new(), tail, last])
                        .await
                }
                .expect("published");
                ranges.push((range, names));
            }
            ranges
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(within(t).await.expect("task"));
    }
    router.shutdown().await;
    let mut by_seq = HashMap::new();
    let mut sub = router.subscribe(Cursor::Oldest);
    while let Some(Chunk::Events(b)) = sub.recv().await {
        for e in b.iter() {
            let rec = Record::parse(e.line).expect("valid line");
            assert_eq!(rec.envelope.seq, Some(e.seq));
            by_seq.insert(e.seq, rec.event.bucket().unwrap_or_default().to_owned());
        }
    }
    for (range, names) in all {
        assert_eq!(range.clone().count(), names.len());
        let got: Vec<&String> = range.map(|s| &by_seq[&s]).collect();
        let want: Vec<&String> = names.iter().collect();
        assert_eq!(
            got, want,
            "a batch's records get consecutive seqs, in order"
        );
    }
}

#[tokio::test]
async fn sequencer_stamps_seq_ts_and_origin() {
    let router = Router::start(RouterConfig {
        node: "n_0@10.0.0.1".into(),
        start_seq: 500,
        ..Default::default()
    });
    assert_eq!(router.last_seq(), 0);
    assert_eq!(router.oldest_seq(), None);
    let foreign = Record::from_parts(
        Envelope {
            seq: Some(3),
            ts: Some(master_events_events::Timestamp::from_micros(1)),
            origin: Some("n_1@10.0.0.2".into()),
            origin_ts: None,
            origin_seq: Some(77),
        },
        move_done("default", 3).event,
    );
    let range = router
        .publish_batch(vec![
            move_done("default", 1),
            foreign,
            move_done("default", 2),
        ])
        .await
        .expect("published");
    assert_eq!(range, 500..=502);
    assert_eq!((router.oldest_seq(), router.last_seq()), (Some(500), 502));
    let mut sub = router.subscribe(Cursor::Oldest);
    let Some(Chunk::Events(batch)) = sub.try_recv() else {
        panic!("events expected");
    };
    let recs: Vec<Record> = batch
        .iter()
        .map(|e| Record::parse(e.line).expect("valid"))
        .collect();
    let seqs: Vec<_> = recs.iter().map(|r| r.envelope.seq).collect();
    assert_eq!(seqs, [Some(500), Some(501), Some(502)]);
    let origins: Vec<_> = recs.iter().map(|r| r.envelope.origin.as_deref()).collect();
    assert_eq!(
        origins,
        [
            Some("n_0@10.0.0.1"),
            Some("n_1@10.0.0.2"),
            Some("n_0@10.0.0.1")
        ]
    );
    assert_eq!(recs[1].envelope.origin_seq, Some(77));
    let ts: Vec<_> = recs.iter().map(|r| r.envelope.ts.expect("ts")).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
    assert!(ts[1].as_micros() > 1, "the record's own ts is replaced");
    let metas: Vec<_> = batch
        .iter()
        .map(|e| (e.meta.vbucket, e.meta.origin, e.meta.origin_seq))
        .collect();
    assert_eq!(metas[1], (Some(3), Some("n_1@10.0.0.2"), Some(77)));
    assert_eq!(metas[0].1, Some("n_0@10.0.0.1"));
    assert_eq!(
        &batch.bytes()[..],
        &recs.iter().flat_map(|r| r.to_line()).collect::<Vec<u8>>()[..]
    );
}

#[tokio::test]
async fn batches_never_exceed_a_block() {
    let router = router(100_000);
    let records: Vec<Record> = (0..5000).map(|i| Record::new(event(i))).collect();
    router.publish_batch(records).await.expect("published");
    let mut sub = router.subscribe(Cursor::Oldest);
    let mut total = 0;
    while let Some(Chunk::Events(b)) = sub.try_recv() {
        assert!(b.len() <= master_events_router::block::MAX_BLOCK_EVENTS);
        assert!(b.bytes().len() < master_events_router::block::MAX_BLOCK_BYTES + 1024);
        total += b.len();
    }
    assert_eq!(total, 5000);
}

#[tokio::test]
async fn stats_report_the_archive() {
    let router = router(10);
    let _reader = router.subscribe(Cursor::Now);
    publish(&router, 0, 25).await;
    let s = router.stats();
    assert_eq!(
        (
            s.published,
            s.archived,
            s.archive_capacity,
            s.oldest_seq,
            s.last_seq,
            s.subscribers
        ),
        (25, 10, 10, 16, 25, 1)
    );
    assert!(s.archived_bytes > 0 && s.archived_blocks >= 1);
}

#[tokio::test]
async fn meta_strings_are_stored_once_per_block() {
    let router = router(4096);
    router
        .publish_batch(vec![
            move_done("default", 1),
            move_done("other", 2),
            move_done("default", 3),
        ])
        .await
        .expect("published");
    let mut sub = router.subscribe(Cursor::Oldest);
    let Some(Chunk::Events(batch)) = sub.try_recv() else {
        panic!("events expected");
    };
    let buckets: Vec<_> = batch
        .iter()
        .map(|e| e.meta.bucket.expect("bucket"))
        .collect();
    assert_eq!(buckets, ["default", "other", "default"]);
    assert!(
        std::ptr::eq(buckets[0], buckets[2]),
        "one copy per distinct string"
    );
    let origins: Vec<_> = batch
        .iter()
        .map(|e| e.meta.origin.expect("origin"))
        .collect();
    assert!(std::ptr::eq(origins[0], origins[1]));
}

/// On one thread, a reader woken by an append runs only when the sequencer yields:
/// it must get its events before the sequencer copies the tail's small blocks
/// (a copy into new memory, with page faults while the archive grows).
#[tokio::test(flavor = "current_thread")]
async fn a_reader_gets_its_events_before_the_tail_is_merged() {
    let router = router(100_000);
    let mut sub = router.subscribe(Cursor::Now);
    let stats = router.clone();
    let reader = tokio::spawn(async move {
        // (seq, blocks in the archive when the reader got it)
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match sub.recv().await {
                Some(Chunk::Events(b)) => {
                    let blocks = stats.stats().archived_blocks;
                    seen.extend(b.iter().map(|e| (e.seq, blocks)));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        seen
    });
    router
        .publish_batch(vec![move_done("default", 0)])
        .await
        .expect("published");
    router
        .publish_batch(vec![move_done("default", 1)])
        .await
        .expect("published");
    let seen = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the reader got both events")
        .expect("reader task");
    assert_eq!(seen, [(1, 1), (2, 2)], "read before the merge");
    // The two one-event blocks are merged once the reader has had its turn.
    let merged = async {
        while router.stats().archived_blocks != 1 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), merged)
        .await
        .expect("the tail was merged");
    assert_eq!(router.stats().archived, 2);
}

#[tokio::test]
async fn a_quiet_router_merges_its_one_event_blocks() {
    let router = router(100_000);
    // A reader that holds on to batches of the small blocks while they are merged.
    let mut early = router.subscribe(Cursor::Oldest);
    let mut early_seqs = Vec::new();
    let mut expected = Vec::new();
    for i in 0..1000u16 {
        // One event per drain: the sequencer appends a block per event.
        let rec = move_done(["default", "beer-sample", "travel"][usize::from(i % 3)], i);
        let range = router.publish_batch(vec![rec]).await.expect("published");
        assert_eq!(range.clone().count(), 1);
        if i % 7 == 0 {
            while let Some(Chunk::Events(b)) = early.try_recv() {
                early_seqs.extend(b.iter().map(|e| e.seq));
            }
        }
    }
    let stats = router.stats();
    assert_eq!(stats.archived, 1000);
    // Like a binary counter: full blocks plus one small block per power of two.
    assert!(
        stats.archived_blocks <= 12,
        "{} blocks for 1000 events appended one by one",
        stats.archived_blocks
    );
    // Everything reads back in order, with its meta, from a fresh reader...
    let mut sub = router.subscribe(Cursor::Oldest);
    let mut bytes = Vec::new();
    while let Some(chunk) = sub.try_recv() {
        let Chunk::Events(batch) = chunk else {
            panic!("unexpected {chunk:?}");
        };
        for e in batch.iter() {
            let i = (e.seq - 1) as u16;
            assert_eq!(e.meta.vbucket, Some(i));
            assert_eq!(
                e.meta.bucket,
                Some(["default", "beer-sample", "travel"][usize::from(i % 3)])
            );
            assert_eq!(e.meta.origin, Some("n_0@127.0.0.1"));
            expected.push(e.seq);
        }
        bytes.extend_from_slice(&batch.bytes());
    }
    assert_eq!(expected, (1..=1000).collect::<Vec<u64>>());
    let lines: Vec<Record> = bytes
        .split_inclusive(|b| *b == b'\n')
        .map(|l| Record::parse(l).expect("a line"))
        .collect();
    assert_eq!(lines.len(), 1000);
    assert!(lines
        .iter()
        .enumerate()
        .all(|(i, r)| r.envelope.seq == Some(i as u64 + 1)));
    // ...and from the reader that was reading while blocks were merged: no gap, no
    // repeat.
    while let Some(Chunk::Events(b)) = early.try_recv() {
        early_seqs.extend(b.iter().map(|e| e.seq));
    }
    assert_eq!(early_seqs, (1..=1000).collect::<Vec<u64>>());
}
