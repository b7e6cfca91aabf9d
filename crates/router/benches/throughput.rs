//! Throughput of note → sequencer → archive, with 0, 1, 10 and 100 readers keeping up
//! (each on its own tokio task, reading batches and counting events), and the
//! publish rate with one stalled reader against none; then `publish_batch` (the
//! ingest path, which waits for ingress room) from two publishers at once, in
//! batches of 1,000, with one reader.
//!
//! Run: `cargo bench -p master-events-router --bench throughput`
//! (`-- --quick` for fewer events). Prints one line per case. `THROUGHPUT_READERS=N`
//! runs only the case with N readers (for profiling); `THROUGHPUT_VERBOSE=1` also
//! prints the ring's final block count.
//!
//! The publisher notes `VbucketMoveDone` events (building each one, with its bucket,
//! an inline string) through `Emitter::try_note_record`, yielding when the ingress is full so
//! that nothing is dropped, and every 256 events so that it does not monopolise a
//! worker; the runtime has 2 worker threads. A case ends when the
//! sequencer has archived every event and every reader has counted them all.

use std::time::Instant;

use master_events_events::catalog::VbucketMoveDone;
use master_events_events::Record;
use master_events_router::{Chunk, Cursor, Router, RouterConfig};

struct Outcome {
    /// Events through note → archive → every reader, per second.
    through: f64,
    /// Events noted per second (the publisher's own loop).
    publish: f64,
    /// Gaps the readers got (0 when they all kept up).
    gaps: u64,
}

enum Readers {
    KeepingUp(usize),
    Stalled,
}

/// How events enter the router.
#[derive(Clone, Copy)]
enum Publish {
    /// One publisher noting events one by one (`try_note_record`).
    Note,
    /// Two publishers, each calling `publish_batch` with batches of this many events
    /// (as two ingest requests in flight).
    Batches(usize),
}

async fn publish(router: &Router, total: u64) {
    let emitter = router.emitter();
    for i in 0..total {
        let mut record = Record::new(VbucketMoveDone {
            vbucket: (i % 1024) as u16,
            bucket: "default".into(),
        });
        while let Err(refused) = emitter.try_note_record(record) {
            record = *refused.record;
            tokio::task::yield_now().await;
        }
        // Like any well-behaved task (an ingest handler awaits its socket), let the
        // other tasks of this worker run now and then.
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
}

/// Publishes `total` events with two concurrent `publish_batch` callers, each
/// taking every other batch of `size`.
async fn publish_batches(router: &Router, total: u64, size: usize) {
    let mut publishers = Vec::new();
    for p in 0..2u64 {
        let router = router.clone();
        publishers.push(tokio::spawn(async move {
            let size = size as u64;
            let mut first = p * size;
            while first < total {
                let end = (first + size).min(total);
                let batch = (first..end)
                    .map(|i| {
                        Record::new(VbucketMoveDone {
                            vbucket: (i % 1024) as u16,
                            bucket: "default".into(),
                        })
                    })
                    .collect();
                router.publish_batch(batch).await.expect("published");
                first += 2 * size;
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher");
    }
}

fn run_case(readers: &Readers, how: Publish, total: u64) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let router = Router::start(RouterConfig::default());
        let mut tasks = Vec::new();
        let mut stalled = None;
        match readers {
            Readers::KeepingUp(n) => {
                for _ in 0..*n {
                    let mut sub = router.subscribe(Cursor::Oldest);
                    tasks.push(tokio::spawn(async move {
                        let (mut events, mut gaps) = (0u64, 0u64);
                        while events < total {
                            match sub.recv().await {
                                Some(Chunk::Events(b)) => events += b.len() as u64,
                                Some(Chunk::Gap(g)) => {
                                    gaps += 1;
                                    events += g.missed;
                                }
                                Some(Chunk::Truncated { .. }) | None => break,
                            }
                        }
                        gaps
                    }));
                }
            }
            Readers::Stalled => stalled = Some(router.subscribe(Cursor::Oldest)),
        }
        let start = Instant::now();
        let publisher = {
            let router = router.clone();
            tokio::spawn(async move {
                match how {
                    Publish::Note => publish(&router, total).await,
                    Publish::Batches(size) => publish_batches(&router, total, size).await,
                }
                start.elapsed()
            })
        };
        let published_in = publisher.await.expect("publisher");
        router.shutdown().await; // waits until everything is archived
        let mut gaps = 0;
        for t in tasks {
            gaps += t.await.expect("reader");
        }
        let elapsed = start.elapsed();
        assert_eq!(router.last_seq(), total);
        let stats = router.stats();
        assert_eq!(stats.dropped, 0);
        if std::env::var_os("THROUGHPUT_VERBOSE").is_some() {
            println!(
                "    final ring: {} events in {} blocks",
                stats.archived, stats.archived_blocks
            );
        }
        drop(stalled);
        Outcome {
            through: total as f64 / elapsed.as_secs_f64(),
            publish: total as f64 / published_in.as_secs_f64(),
            gaps,
        }
    })
}

fn best_of(runs: usize, readers: &Readers, how: Publish, total: u64) -> Outcome {
    let mut best: Option<Outcome> = None;
    for _ in 0..runs {
        let o = run_case(readers, how, total);
        if best.as_ref().is_none_or(|b| o.through > b.through) {
            best = Some(o);
        }
    }
    best.unwrap_or(Outcome {
        through: 0.0,
        publish: 0.0,
        gaps: 0,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `--quick` (and `cargo test --benches`, which passes no `--bench`) uses fewer events.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let (total, runs) = if quick { (100_000, 1) } else { (2_000_000, 3) };
    println!(
        "router throughput: {total} events, best of {runs}, 2 worker threads, archive 4096, ingress 65536"
    );
    // THROUGHPUT_READERS=N runs only that case (for profiling).
    if let Some(n) = std::env::var("THROUGHPUT_READERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let o = best_of(1, &Readers::KeepingUp(n), Publish::Note, total);
        println!(
            "  {n} readers: {:.2} M events/s, gaps {}",
            o.through / 1e6,
            o.gaps
        );
        return;
    }
    for n in [0, 1, 10, 100] {
        let o = best_of(runs, &Readers::KeepingUp(n), Publish::Note, total);
        println!(
            "  note -> sequencer -> archive, {n:>3} readers: {:>6.2} M events/s through ({:.2} M/s noted), reader gaps: {}",
            o.through / 1e6,
            o.publish / 1e6,
            o.gaps
        );
    }
    let none = best_of(runs, &Readers::KeepingUp(0), Publish::Note, total);
    let stalled = best_of(runs, &Readers::Stalled, Publish::Note, total);
    println!(
        "  publish rate, no reader: {:.2} M events/s; one stalled reader: {:.2} M events/s",
        none.publish / 1e6,
        stalled.publish / 1e6
    );
    let batches = best_of(runs, &Readers::KeepingUp(1), Publish::Batches(1000), total);
    println!(
        "  publish_batch x2 (1,000 a batch) -> sequencer -> archive, 1 reader: {:>6.2} M events/s through, reader gaps: {}",
        batches.through / 1e6,
        batches.gaps
    );
}
