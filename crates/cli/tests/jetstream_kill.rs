//! A server with a durable file log (`fsync = "always"`: a `200` means on disk) and
//! a nats sink in JetStream mode is killed with SIGKILL while writers post, and
//! restarted: the JetStream stream then holds every acknowledged event exactly once,
//! in seq order, each with its message id `HISTORY:SEQ` — the restarted sink
//! resumes after the last seq the stream holds, from the restored log.
//!
//! Needs `nats-server` (scripts/deps.sh installs it). The moment of the kill comes
//! from a seed, printed first (`JETSTREAM_KILL_SEED` replays one).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{host_port, listening_url, nats_server, spawn, wait_for_stream_seq, Proc};
use rand::{Rng, SeedableRng};

const STREAM: &str = "EVENTS";
const BATCH: u64 = 50;
const WRITERS: u64 = 2;
const MAX_BATCHES: u64 = 200;

fn serve(config: &Path) -> (Proc, String) {
    let config = config.display().to_string();
    let mut p = spawn(&["serve", "--listen", "127.0.0.1:0", "--config", &config]);
    let addr = host_port(&listening_url(&mut p));
    (p, addr)
}

/// Posts one batch; its seqs when acknowledged (`200`).
fn post(addr: &str, writer: u64, batch: u64) -> Option<(u64, u64)> {
    let body: String = (0..BATCH)
        .map(|i| format!("{{\"type\":\"deleteBucket\",\"bucket\":\"w{writer}-b{batch}-{i}\"}}\n"))
        .collect();
    common::post_acknowledged(addr, &body)
}

#[test]
fn every_acknowledged_event_is_in_jetstream_once_in_order_after_a_sigkill() {
    let seed: u64 = std::env::var("JETSTREAM_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("JETSTREAM_KILL_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = nats_server(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[sinks]]\ntype = \"file\"\ndir = \"{}\"\nfsync = \"always\"\n\n\
             [[sinks]]\ntype = \"nats\"\nservers = [\"{}\"]\njetstream = {{ stream = \"{STREAM}\", ack_window = 128 }}\n",
            dir.path().join("log").display(),
            nats.url
        ),
    )
    .expect("write the config");

    let (mut server, addr) = serve(&config);
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (addr, acked, stop) = (addr.clone(), Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                for b in 0..MAX_BATCHES {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match post(&addr, w, b) {
                        Some(range) => acked.lock().expect("lock").push(range),
                        None => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    // Kill it at a moment between 10 and 60 acknowledged batches.
    let kill_after = rng.random_range(10..60usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < kill_after {
        assert!(
            Instant::now() < deadline,
            "the writers are not acknowledged"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    let acked = acked.lock().expect("lock").clone();
    let last_acked = acked
        .iter()
        .map(|r| r.1)
        .max()
        .expect("acknowledged batches");

    let (mut server, addr) = serve(&config);
    // Something after the restart, so the new run has its own events too.
    let after = post(&addr, 9, 0).expect("posted after the restart");
    let expected_last = after.1;
    let messages = wait_for_stream_seq(&nats.url, STREAM, expected_last, &format!("seed {seed}"));
    server.kill9();

    let seqs: Vec<u64> = messages.iter().map(|m| m.0).collect();
    assert_eq!(
        seqs,
        (1..=expected_last).collect::<Vec<_>>(),
        "exactly once and in seq order (seed {seed})"
    );
    assert!(last_acked < expected_last);
    for (first, last) in &acked {
        assert!(*last <= expected_last && *first >= 1);
    }
    let history = &messages[0].2;
    assert!(!history.is_empty());
    for (seq, id, h) in &messages {
        assert_eq!(
            h, history,
            "one history across the restart (the log kept it)"
        );
        assert_eq!(id, &format!("{history}:{seq}"));
    }
}
