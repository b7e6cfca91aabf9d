//! Replication and de-duplication: a follower's archive is the master's, byte for
//! byte; re-sent events are sequenced once.

use master_events_events::{Envelope, Record};
use master_events_router::{Chunk, Cursor, Router, RouterConfig, RouterError};

use crate::*;

fn router(node: &str, archive: usize) -> Router {
    Router::start(RouterConfig {
        node: node.into(),
        archive_capacity: archive,
        ..Default::default()
    })
}

fn from_origin(origin: &str, n: u64) -> Record {
    Record::from_parts(
        Envelope {
            origin: Some(origin.into()),
            origin_ts: None,
            origin_seq: Some(n),
            ..Envelope::default()
        },
        event(n),
    )
}

/// Everything the router retains, as parsed records.
async fn archive(router: &Router) -> (Vec<Record>, Vec<u8>) {
    let mut sub = router.subscribe(Cursor::Oldest);
    let mut bytes = Vec::new();
    while let Some(chunk) = sub.try_recv() {
        if let Chunk::Events(b) = chunk {
            bytes.extend_from_slice(&b.bytes());
        }
    }
    let records = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Record::parse(l).expect("the ring holds valid lines"))
        .collect();
    (records, bytes)
}

#[tokio::test]
async fn a_replica_holds_the_masters_lines_byte_for_byte() {
    let master = router("n_0@m", 4096);
    let replica = router("n_1@r", 4096);
    for i in 0..50 {
        master.emitter().note(event(i));
    }
    master
        .publish_batch(vec![Record::new(event(99))])
        .await
        .expect("published");
    let (records, bytes) = archive(&master).await;
    assert_eq!(records.len(), 51);
    let last = replica
        .replicate(records[..20].to_vec())
        .await
        .expect("replicated");
    assert_eq!(last, 20);
    // Overlap is skipped: a follower may receive again what it has.
    let last = replica
        .replicate(records[10..].to_vec())
        .await
        .expect("replicated");
    assert_eq!(last, 51);
    let (_, replica_bytes) = archive(&replica).await;
    assert_eq!(replica_bytes, bytes);
}

#[tokio::test]
async fn a_replicated_record_beyond_the_next_seq_is_refused() {
    let master = router("m", 4096);
    master
        .publish_batch((0..5).map(|i| Record::new(event(i))).collect())
        .await
        .expect("ok");
    let (records, _) = archive(&master).await;
    let replica = router("r", 4096);
    let err = replica.replicate(records[2..].to_vec()).await;
    assert_eq!(
        err,
        Err(RouterError::ReplicaGap {
            expected: 1,
            found: 3
        })
    );
    assert_eq!(replica.last_seq(), 0);
}

#[tokio::test]
async fn skip_to_gives_readers_an_exact_gap() {
    let replica = router("r", 4096);
    let master = router("m", 4096);
    master
        .publish_batch((0..10).map(|i| Record::new(event(i))).collect())
        .await
        .expect("ok");
    let (records, _) = archive(&master).await;
    replica.replicate(records[..4].to_vec()).await.expect("ok");
    let mut reader = replica.subscribe(Cursor::Oldest);
    assert_eq!(drain_ready(&mut reader), seqs(1..=4));
    replica.skip_to(8).await.expect("skipped");
    replica.replicate(records[7..].to_vec()).await.expect("ok");
    assert_eq!(
        drain_ready(&mut reader),
        vec![Got::Gap(5, 7, 3), Got::Seq(8), Got::Seq(9), Got::Seq(10)]
    );
}

#[tokio::test]
async fn a_re_sent_event_is_sequenced_once() {
    let master = router("m", 4096);
    let first = master
        .publish_batch((1..=5).map(|n| from_origin("n_1@a", n)).collect())
        .await
        .expect("ok");
    assert_eq!(first, 1..=5);
    assert_eq!(master.high_water("n_1@a"), 5);
    // The origin re-sends 3..=7 after a failure: only 6 and 7 are new.
    let again = master
        .publish_batch((3..=7).map(|n| from_origin("n_1@a", n)).collect())
        .await
        .expect("ok");
    assert_eq!(again, 6..=7);
    master.emitter().note_record(from_origin("n_1@a", 7));
    master.emitter().note_record(from_origin("n_2@b", 1));
    master.shutdown().await; // everything noted is in the ring
    let (records, _) = archive(&master).await;
    let keys: Vec<(String, u64)> = records
        .iter()
        .map(|r| {
            (
                r.envelope.origin.clone().unwrap_or_default().to_string(),
                r.envelope.origin_seq.unwrap_or(0),
            )
        })
        .collect();
    let mut expected: Vec<(String, u64)> = (1..=7).map(|n| ("n_1@a".to_owned(), n)).collect();
    expected.push(("n_2@b".to_owned(), 1));
    assert_eq!(keys, expected);
    assert_eq!(master.high_water("n_2@b"), 1);
    assert_eq!(master.high_water("nobody"), 0);
}

#[tokio::test]
async fn a_replica_learns_the_high_water_marks_of_what_it_replicates() {
    let master = router("m", 4096);
    master
        .publish_batch((1..=3).map(|n| from_origin("n_1@a", n)).collect())
        .await
        .expect("ok");
    let (records, _) = archive(&master).await;
    let replica = router("r", 4096);
    replica.replicate(records).await.expect("ok");
    assert_eq!(replica.high_water("n_1@a"), 3);
    // Promoted, it refuses the duplicates a re-sending origin would send it.
    let range = replica
        .publish_batch((2..=4).map(|n| from_origin("n_1@a", n)).collect())
        .await
        .expect("ok");
    assert_eq!(range, 4..=4);
}
