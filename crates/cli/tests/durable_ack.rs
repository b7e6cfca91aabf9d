//! Durable acknowledgement: with a `file` sink at `fsync = "always"`, a `200` means the
//! events are on disk. `serve` is killed with SIGKILL at random moments while a
//! writer posts; after each restart every acknowledged event is there with the seq
//! it was acknowledged with, and the archive continues the same history (a reader
//! resuming across the restart is not reset).
//!
//! The moments come from a seed, printed first (set `DURABLE_ACK_SEED` to replay
//! one); every loop is bounded in count and time.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{host_port, http_to as http, listening_url, spawn, Proc};
use rand::{Rng, SeedableRng};

const ROUNDS: u32 = 4;
const BATCH: u64 = 200;
/// Writers posting at once (the sink lags behind several of them).
const WRITERS: u64 = 4;
/// Batches a writer posts in one round at most.
const MAX_BATCHES: u64 = 100;

/// The archive holds every event the rounds can acknowledge (each check looks for
/// all of them in it).
const ARCHIVE: u64 = (ROUNDS as u64 + 1) * WRITERS * MAX_BATCHES * BATCH;
/// An acknowledged batch: writer, batch, first seq, last seq.
type Ack = (u64, u64, u64, u64);

fn serve(config: &Path) -> (Proc, String) {
    let config = config.display().to_string();
    let mut p = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        &config,
        "--archive-size",
        &ARCHIVE.to_string(),
    ]);
    let addr = host_port(&listening_url(&mut p));
    (p, addr)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

/// The archive, once: `bucket` → `seq` of every event.
fn archive(addr: &str) -> BTreeMap<String, u64> {
    let (status, body) = http(addr, "GET", "/diag/masterEvents?o=1&heartbeat=0", "");
    assert_eq!(status, 200);
    body.lines()
        .map(json)
        .filter_map(|v| Some((v["bucket"].as_str()?.to_owned(), v["seq"].as_u64()?)))
        .collect()
}

fn history(addr: &str) -> String {
    let (status, body) = http(addr, "GET", "/cluster", "");
    assert_eq!(status, 200);
    json(&body)["history"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The bucket name that marks event `i` of a writer's batch.
fn marker(round: u32, writer: u64, batch: u64, i: u64) -> String {
    format!("r{round}-w{writer}-b{batch}-{i}")
}

/// Posts one batch; its seqs when it was acknowledged (`200`).
fn post(addr: &str, round: u32, writer: u64, batch: u64) -> Option<(u64, u64)> {
    let body: String = (0..BATCH)
        .map(|i| {
            format!(
                "{{\"type\":\"deleteBucket\",\"bucket\":\"{}\"}}\n",
                marker(round, writer, batch, i)
            )
        })
        .collect();
    common::post_acknowledged(addr, &body)
}

#[test]
fn acknowledged_events_survive_kill_9_at_random_moments_with_fsync_always() {
    let seed = std::env::var("DURABLE_ACK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("seed {seed} (replay with DURABLE_ACK_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    let config = dir.path().join("me.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nnode = \"n_0@127.0.0.1\"\n\n[[sinks]]\ntype = \"file\"\ndir = {logs:?}\nfsync = \"always\"\n"
        ),
    )
    .expect("write config");

    // bucket name → the seq its 200 gave it.
    let mut acknowledged: BTreeMap<String, u64> = BTreeMap::new();
    let mut history_before: Option<String> = None;
    let mut last_before = 0;
    for round in 0..ROUNDS {
        let (mut server, addr) = serve(&config);
        let history_now = history(&addr);
        if let Some(before) = &history_before {
            assert_eq!(
                &history_now, before,
                "seed {seed}, round {round}: a warm restart keeps the history"
            );
            // A reader resuming across the restart continues; it is not reset.
            let (status, body) = http(
                &addr,
                "GET",
                &format!("/diag/masterEvents?o=1&heartbeat=0&since={last_before}&history={before}"),
                "",
            );
            assert_eq!(status, 200);
            assert!(
                !body.contains("\"type\":\"reset\""),
                "seed {seed}, round {round}: {body}"
            );
        }
        let archived = archive(&addr);
        for (bucket, seq) in &acknowledged {
            assert_eq!(
                archived.get(bucket),
                Some(seq),
                "seed {seed}, round {round}: acknowledged event {bucket} (seq {seq}) lost or moved"
            );
        }

        // Writers post until the process dies; the kill comes at a random moment
        // after the first acknowledgement.
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (acks, stop, addr) = (Arc::clone(&acks), Arc::clone(&stop), addr.clone());
                std::thread::spawn(move || {
                    for batch in 0..MAX_BATCHES {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        match post(&addr, round, writer, batch) {
                            Some((first, last)) => acks
                                .lock()
                                .expect("not poisoned")
                                .push((writer, batch, first, last)),
                            None => return,
                        }
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while acks.lock().expect("not poisoned").is_empty() {
            assert!(
                Instant::now() < deadline,
                "seed {seed}: the writer gets a 200"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let delay = Duration::from_millis(rng.random_range(0..300));
        std::thread::sleep(delay);
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        for writer in writers {
            let _ = writer.join();
        }
        let acks = acks.lock().expect("not poisoned").clone();
        for (writer, batch, first, last) in acks {
            assert_eq!(last - first + 1, BATCH);
            for (i, seq) in (first..=last).enumerate() {
                acknowledged.insert(marker(round, writer, batch, i as u64), seq);
            }
        }
        last_before = acknowledged.values().copied().max().unwrap_or(0);
        history_before = Some(history_now);
        println!(
            "round {round}: killed {} ms after the first 200; {} events acknowledged so far",
            delay.as_millis(),
            acknowledged.len()
        );
    }
    let (_server, addr) = serve(&config);
    let archived = archive(&addr);
    for (bucket, seq) in &acknowledged {
        assert_eq!(
            archived.get(bucket),
            Some(seq),
            "seed {seed}: acknowledged event {bucket} (seq {seq}) lost or moved"
        );
    }
    assert!(acknowledged.len() as u64 >= u64::from(ROUNDS) * BATCH);
}
