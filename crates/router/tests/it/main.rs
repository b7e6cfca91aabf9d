//! Integration tests of the router, one binary (modules below).

mod config;
mod replica;
mod router;
mod sinks;
mod stress;
mod warm;

use std::future::Future;
use std::time::Duration;

use master_events_events::catalog::{DeleteBucket, VbucketMoveDone};
use master_events_events::{Gap, Record};
use master_events_router::{Chunk, Subscription};

/// A distinct event per `i` (its bucket names it).
pub fn event(i: u64) -> DeleteBucket {
    DeleteBucket {
        bucket: format!("b{i}").into(),
    }
}

/// A record with a bucket and vbucket.
pub fn move_done(bucket: &str, vbucket: u16) -> Record {
    Record::new(VbucketMoveDone {
        vbucket,
        bucket: bucket.into(),
    })
}

/// What a reader received, flattened.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    Seq(u64),
    Gap(u64, u64, u64),
}

pub fn flatten(chunk: &Chunk) -> Vec<Got> {
    match chunk {
        Chunk::Gap(Gap {
            from_seq,
            to_seq,
            missed,
            ..
        }) => vec![Got::Gap(*from_seq, *to_seq, *missed)],
        Chunk::Events(b) => b.iter().map(|e| Got::Seq(e.seq)).collect(),
        Chunk::Truncated { after } => panic!("no reader of these tests is cut (after {after})"),
    }
}

/// Everything ready now.
pub fn drain_ready(sub: &mut Subscription) -> Vec<Got> {
    let mut out = Vec::new();
    while let Some(c) = sub.try_recv() {
        out.extend(flatten(&c));
    }
    out
}

/// Everything until the subscription ends (router shut down), bounded in time.
pub async fn drain_to_end(sub: &mut Subscription) -> Vec<Got> {
    within(async {
        let mut out = Vec::new();
        while let Some(c) = sub.recv().await {
            out.extend(flatten(&c));
        }
        out
    })
    .await
}

/// Reads until the reader has delivered `seq`.
pub async fn read_until(sub: &mut Subscription, seq: u64) -> Vec<Got> {
    within(async {
        let mut out = Vec::new();
        while sub.position() < seq {
            match sub.recv().await {
                Some(c) => out.extend(flatten(&c)),
                None => break,
            }
        }
        out
    })
    .await
}

pub fn seqs(range: std::ops::RangeInclusive<u64>) -> Vec<Got> {
    range.map(Got::Seq).collect()
}

/// Fails the test if `f` takes longer than 20 s.
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out"),
    }
}
