//! The archive as a cluster's replicated log: epochs, and cutting back what a
//! deposed master sequenced that was never committed.

use std::time::Duration;

use master_events_events::catalog::DeleteBucket;
use master_events_events::Record;
use master_events_router::{Chunk, Cursor, EpochTable, Router, RouterConfig, RouterError};

const T: Duration = Duration::from_secs(10);

fn from(origin: &str, origin_seqs: std::ops::RangeInclusive<u64>) -> Vec<Record> {
    origin_seqs
        .map(|n| {
            let mut r = Record::new(DeleteBucket {
                bucket: format!("{origin}-{n}").into(),
            });
            r.envelope.origin = Some(origin.into());
            r.envelope.origin_seq = Some(n);
            r
        })
        .collect()
}

fn seqs_and_buckets(chunk: Option<Chunk>) -> Vec<(u64, String)> {
    match chunk {
        Some(Chunk::Events(b)) => b
            .iter()
            .map(|e| (e.seq, e.meta.bucket.unwrap_or("").to_owned()))
            .collect(),
        other => panic!("expected events, got {other:?}"),
    }
}

#[tokio::test]
async fn a_cut_takes_back_uncommitted_events_and_lets_their_origin_send_them_again() {
    let router = Router::start(RouterConfig::default());
    let gate = router.add_commit_gate();
    router.begin_epoch(4).await.expect("epoch 4");
    let range = tokio::time::timeout(T, router.sequence_batch(from("n_1", 1..=5)))
        .await
        .expect("sequenced without waiting for the commit")
        .expect("in");
    assert_eq!(range, 1..=5);
    let mut uncommitted = router.subscribe_uncommitted(Cursor::Oldest);
    let mut committed = router.subscribe(Cursor::Oldest);
    assert_eq!(seqs_and_buckets(uncommitted.try_recv()).len(), 5);
    gate.mark(2);
    assert_eq!(
        seqs_and_buckets(committed.try_recv()),
        vec![(1, "n_1-1".to_owned()), (2, "n_1-2".to_owned())]
    );

    // Never below the commit.
    assert_eq!(
        router.truncate_after(1).await,
        Err(RouterError::CutCommitted {
            at: 1,
            committed: 2
        })
    );
    assert_eq!(router.truncate_after(3).await, Ok(3));
    assert_eq!(router.last_seq(), 3);
    assert_eq!(router.high_water("n_1"), 3, "n_1's 4 and 5 were cut");
    assert!(matches!(
        uncommitted.try_recv(),
        Some(Chunk::Truncated { after: 3 })
    ));
    assert!(
        committed.try_recv().is_none(),
        "committed readers see no cut"
    );

    // A new epoch; the origin re-sends 4 and 5 (and a duplicate 3, dropped).
    router.begin_epoch(6).await.expect("epoch 6");
    assert_eq!(
        router.epochs(),
        EpochTable::from_entries(vec![(4, 1), (6, 4)]).expect("valid")
    );
    let again = router.sequence_batch(from("n_1", 3..=5)).await.expect("in");
    assert_eq!(again, 4..=5);
    assert_eq!(
        seqs_and_buckets(uncommitted.try_recv()),
        vec![(4, "n_1-4".to_owned()), (5, "n_1-5".to_owned())]
    );
    gate.mark(5);
    let mut got = seqs_and_buckets(committed.try_recv());
    got.extend(seqs_and_buckets(committed.try_recv()));
    assert_eq!(
        got,
        vec![
            (3, "n_1-3".to_owned()),
            (4, "n_1-4".to_owned()),
            (5, "n_1-5".to_owned())
        ]
    );
    assert_eq!(
        router.begin_epoch(5).await,
        Err(RouterError::EpochBehind { epoch: 5, last: 6 })
    );
}

#[tokio::test]
async fn a_cut_inside_a_block_keeps_its_head_and_the_epochs_before_it() {
    let router = Router::start(RouterConfig::default());
    let _gate = router.add_commit_gate();
    router.begin_epoch(2).await.expect("epoch 2");
    router.sequence_batch(from("a", 1..=3)).await.expect("in");
    router.begin_epoch(3).await.expect("epoch 3");
    router.sequence_batch(from("b", 1..=3)).await.expect("in");
    assert_eq!(router.epochs().to_string(), "2:1,3:4");
    router.truncate_after(2).await.expect("cut");
    assert_eq!(router.epochs().to_string(), "2:1");
    assert_eq!((router.high_water("a"), router.high_water("b")), (2, 0));
    let mut all = router.subscribe_uncommitted(Cursor::Oldest);
    assert_eq!(
        seqs_and_buckets(all.try_recv()),
        vec![(1, "a-1".to_owned()), (2, "a-2".to_owned())]
    );
    assert!(all.try_recv().is_none());
}

/// A durable sink's gate (a reader of uncommitted events) and a cluster's gate: the
/// deposed master's events 4..=6 were written by the sink, then cut. The events
/// that take seqs 4..=6 next are committed only once the sink has read them and
/// marked them itself — not by its mark from before the cut, whether that mark came
/// before the cut or raced it (a position read before the cut, marked after).
#[tokio::test]
async fn a_gates_mark_from_before_a_cut_never_commits_the_events_that_replace_the_cut_ones() {
    let router = Router::start(RouterConfig::default());
    let cluster = router.add_commit_gate();
    let durable = router.add_commit_gate();
    let mut sink = router.subscribe_uncommitted(Cursor::Oldest);
    router.begin_epoch(1).await.expect("epoch 1");
    router
        .sequence_batch(from("old", 1..=6))
        .await
        .expect("sequenced");
    assert_eq!(seqs_and_buckets(sink.try_recv()).len(), 6);
    durable.mark_read(&sink);
    cluster.mark(3);
    assert_eq!(router.committed_seq(), 3);

    // The cut, and the new master's events for 4..=6.
    assert_eq!(router.truncate_after(3).await, Ok(3));
    // The sink marks with the position it read before the cut (the race).
    durable.mark_read(&sink);
    router.begin_epoch(2).await.expect("epoch 2");
    router
        .replicate(
            (4..=6)
                .map(|seq| {
                    let mut r = from("new", seq..=seq).remove(0);
                    r.envelope.seq = Some(seq);
                    r
                })
                .collect(),
        )
        .await
        .expect("replicated");
    cluster.mark(6);
    assert_eq!(
        router.committed_seq(),
        3,
        "4..=6 are new to the durable sink: not committed by its old mark"
    );

    // The sink reads the cut and the new events, writes them, marks: committed.
    assert!(matches!(
        sink.try_recv(),
        Some(Chunk::Truncated { after: 3 })
    ));
    assert_eq!(
        seqs_and_buckets(sink.try_recv()),
        vec![
            (4, "new-4".to_owned()),
            (5, "new-5".to_owned()),
            (6, "new-6".to_owned())
        ]
    );
    durable.mark_read(&sink);
    assert_eq!(router.committed_seq(), 6);
}
