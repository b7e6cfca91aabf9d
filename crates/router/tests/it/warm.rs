//! Starting with a pre-filled archive (a restart warm-loading a persistent log): the
//! same lines, the seq continues, holes and capacity give exact gaps.

use master_events_events::Record;
use master_events_router::{Chunk, Cursor, Router, RouterConfig};

use crate::*;

/// Every line the router retains, back to back.
fn archived_bytes(router: &Router) -> Vec<u8> {
    let mut sub = router.subscribe(Cursor::Oldest);
    let mut bytes = Vec::new();
    while let Some(chunk) = sub.try_recv() {
        if let Chunk::Events(b) = chunk {
            bytes.extend_from_slice(&b.bytes());
        }
    }
    bytes
}

fn parse_all(bytes: &[u8]) -> Vec<Record> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Record::parse(l).expect("the ring holds valid lines"))
        .collect()
}

fn with_seq(seq: u64) -> Record {
    let mut r = Record::new(event(seq));
    r.envelope.seq = Some(seq);
    r
}

#[tokio::test]
async fn a_restarted_router_serves_the_same_lines_and_continues_the_seq() {
    let before = Router::start(RouterConfig {
        node: "n_0@a".into(),
        ..Default::default()
    });
    before
        .publish_batch((0..10).map(|i| Record::new(event(i))).collect())
        .await
        .expect("published");
    let lines = archived_bytes(&before);
    before.shutdown().await;

    let after = Router::start_with_archive(
        RouterConfig {
            node: "n_0@b".into(),
            ..Default::default()
        },
        parse_all(&lines),
    )
    .await
    .expect("started");
    assert_eq!(archived_bytes(&after), lines, "byte for byte, origin kept");
    assert_eq!((after.oldest_seq(), after.last_seq()), (Some(1), 10));
    let next = after
        .publish_batch(vec![Record::new(event(10))])
        .await
        .expect("published");
    assert_eq!(next, 11..=11);
    let all = parse_all(&archived_bytes(&after));
    assert!(
        all[10].envelope.ts >= all[9].envelope.ts,
        "ts never goes back"
    );
    assert_eq!(all[10].envelope.origin.as_deref(), Some("n_0@b"));
}

#[tokio::test]
async fn only_the_last_contiguous_run_within_capacity_is_preloaded() {
    let records: Vec<Record> = (1..=5).chain(8..=12).map(with_seq).collect();
    let router = Router::start_with_archive(
        RouterConfig {
            archive_capacity: 3,
            ..Default::default()
        },
        records,
    )
    .await
    .expect("started");
    let mut reader = router.subscribe(Cursor::After(0));
    assert_eq!(
        drain_ready(&mut reader),
        vec![Got::Gap(1, 9, 9), Got::Seq(10), Got::Seq(11), Got::Seq(12)]
    );
}

#[tokio::test]
async fn records_without_a_seq_or_out_of_order_are_ignored() {
    let records = vec![with_seq(4), Record::new(event(0)), with_seq(3), with_seq(5)];
    let router = Router::start_with_archive(RouterConfig::default(), records)
        .await
        .expect("started");
    let mut reader = router.subscribe(Cursor::Oldest);
    assert_eq!(drain_ready(&mut reader), seqs(4..=5));
}

#[tokio::test]
async fn a_start_seq_beyond_the_archive_continues_there_with_an_exact_gap() {
    let router = Router::start_with_archive(
        RouterConfig {
            start_seq: 9,
            ..Default::default()
        },
        (1..=5).map(with_seq).collect(),
    )
    .await
    .expect("started");
    let mut reader = router.subscribe(Cursor::After(0));
    let range = router
        .publish_batch(vec![Record::new(event(9))])
        .await
        .expect("published");
    assert_eq!(range, 9..=9);
    assert_eq!(
        drain_ready(&mut reader),
        vec![Got::Gap(1, 8, 8), Got::Seq(9)]
    );
}

#[tokio::test]
async fn no_usable_record_is_a_plain_start() {
    let router = Router::start_with_archive(
        RouterConfig {
            start_seq: 7,
            ..Default::default()
        },
        vec![Record::new(event(0))],
    )
    .await
    .expect("started");
    assert_eq!((router.oldest_seq(), router.last_seq()), (None, 0));
    let range = router
        .publish_batch(vec![Record::new(event(1))])
        .await
        .expect("published");
    assert_eq!(range, 7..=7);
}
