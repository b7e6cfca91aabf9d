//! `serve --queue-dir`: events a follower queued while its master was frozen
//! survive the follower's SIGKILL, and are sequenced exactly once after it
//! restarts.

mod common;

use std::time::Duration;

use common::{free_port, http, run_logged, wait_until, Logged};
use serde_json::Value;

const MASTER: &str = "n_0@127.0.0.1";
const FOLLOWER: &str = "n_1@127.0.0.1";

fn serve(
    name: &str,
    port: u16,
    peers: &[(&str, u16)],
    queue_dir: Option<&std::path::Path>,
) -> Logged {
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--node".into(),
        name.into(),
        "--master".into(),
        MASTER.into(),
    ];
    for (n, p) in peers {
        args.push("--peer".into());
        args.push(format!("{n}=http://127.0.0.1:{p}"));
    }
    if let Some(dir) = queue_dir {
        args.push("--queue-dir".into());
        args.push(dir.display().to_string());
    }
    run_logged(&args, true)
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// `n` events of buckets `q{from}` .. `q{from+n-1}`, as a request body.
fn events(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|k| format!("{{\"type\":\"deleteBucket\",\"bucket\":\"q{k}\"}}\n"))
        .collect()
}

/// POSTs `body` to the node on `port` from a thread (a queued request is
/// answered only after the node waited for its commit).
fn post_in_background(port: u16, body: String) -> std::thread::JoinHandle<(u16, String)> {
    std::thread::spawn(move || http(port, "POST", "/diag/masterEvents", &body))
}

/// Waits until the master's archive holds `n` events `q...`, then checks each of
/// `q0` .. `q{n-1}` is there exactly once.
fn assert_archived_once(master_port: u16, n: usize) {
    wait_until(
        "the master's archive to hold every queued event",
        Duration::from_secs(30),
        || archived_buckets(master_port).len() >= n,
    );
    let mut buckets = archived_buckets(master_port);
    assert_eq!(buckets.len(), n, "each exactly once: {buckets:?}");
    buckets.sort();
    buckets.dedup();
    let mut want: Vec<String> = (0..n).map(|k| format!("q{k}")).collect();
    want.sort();
    assert_eq!(buckets, want);
}

/// The buckets named `q...` in the master's archive, in archive order.
fn archived_buckets(master_port: u16) -> Vec<String> {
    let (_, archive) = http(master_port, "GET", "/diag/masterEvents?o=1", "");
    archive
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["bucket"].as_str().map(str::to_owned))
        .filter(|b| b.starts_with('q'))
        .collect()
}

/// A master and a follower journaling in `queue_dir`, the follower ready, then the
/// master frozen (SIGSTOP; SIGCONT when the `Resume` is dropped): what the follower
/// takes stays in its queue. Returns (master, follower, their ports, the resume).
fn frozen_master_and_follower(
    queue_dir: &std::path::Path,
) -> (Logged, Logged, [(&'static str, u16); 2], Resume) {
    let (pm, pf) = (free_port(), free_port());
    let peers = [(MASTER, pm), (FOLLOWER, pf)];
    let master = serve(MASTER, pm, &peers, None);
    let follower = serve(FOLLOWER, pf, &peers, Some(queue_dir));
    wait_until("the follower to be ready", Duration::from_secs(20), || {
        http(pf, "GET", "/ready", "").0 == 200
    });
    let master_pid = master.proc.child.id();
    signal(master_pid, "-STOP");
    (master, follower, peers, Resume(master_pid))
}

fn json(port: u16, path: &str) -> Value {
    serde_json::from_str(&http(port, "GET", path, "").1).unwrap_or_default()
}

#[test]
fn events_queued_on_a_follower_survive_its_sigkill_and_are_sequenced_once_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue_dir = dir.path().join("queue");
    let (master, mut follower, peers, resume) = frozen_master_and_follower(&queue_dir);
    let [(_, pm), (_, pf)] = peers;
    // Three requests at once: each is answered (202, queued) only once its lines
    // are in the journal, whatever order their writes happen in.
    let posts: Vec<_> = (0..3)
        .map(|batch| post_in_background(pf, events(batch * 5, 5)))
        .collect();
    for post in posts {
        let (status, body) = post.join().expect("poster");
        assert_eq!(status, 202, "queued while the master is frozen: {body}");
    }
    assert_eq!(
        json(pf, "/cluster")["forwarding"]["queued"].as_u64(),
        Some(15)
    );
    follower.proc.kill9();
    drop(resume); // SIGCONT

    let restarted = serve(FOLLOWER, pf, &peers, Some(&queue_dir));
    assert_archived_once(pm, 15);
    assert!(
        restarted.log().contains("are sent again"),
        "{}",
        restarted.log()
    );
    // Committed: the restarted follower's queue empties.
    wait_until(
        "the follower's queue to empty",
        Duration::from_secs(20),
        || json(pf, "/cluster")["forwarding"]["queued"].as_u64() == Some(0),
    );
    drop(master);
}

/// Sends SIGCONT when dropped (so a failing test never leaves a frozen process).
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

#[test]
fn events_queued_while_the_journal_disk_is_full_survive_a_sigkill_once_space_is_back() {
    let fs = match master_events_testpki::tmpfs::Tmpfs::mount("64k") {
        Ok(fs) => fs,
        Err(why) => {
            println!("SKIPPED events_queued_while_the_journal_disk_is_full_survive_a_sigkill_once_space_is_back: {why} (needs root)");
            return;
        }
    };
    let queue_dir = fs.path().join("queue");
    let (master, mut follower, peers, resume) = frozen_master_and_follower(&queue_dir);
    let [(_, pm), (_, pf)] = peers;

    // Five events reach the journal; then the disk fills up.
    let first = post_in_background(pf, events(0, 5));
    let journal = queue_dir.join("queue.ndjson");
    wait_until("5 lines in the journal", Duration::from_secs(20), || {
        std::fs::read(&journal).is_ok_and(|b| b.iter().filter(|&&c| c == b'\n').count() == 5)
    });
    let filler = fs.fill();
    // 60 events (more than a page) cannot all be written: the journal fails, maybe
    // with part of a line written. The node says so and keeps them in memory.
    let second = post_in_background(pf, events(5, 60));
    wait_until(
        "the follower to report its journal failing",
        Duration::from_secs(20),
        || json(pf, "/cluster")["forwarding"]["journalError"].is_string(),
    );
    let why = json(pf, "/cluster")["forwarding"]["journalError"].to_string();
    assert!(why.contains("No space left"), "{why}");
    let (_, metrics) = http(pf, "GET", "/metrics", "");
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("master_events_cluster_queue_journal_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "{metrics}");
    assert!(
        follower.log().contains("the queue journal cannot write"),
        "{}",
        follower.log()
    );

    // Space is back: the next request's write rewrites the journal whole.
    std::fs::remove_file(&filler).expect("free the space");
    let third = post_in_background(pf, events(65, 5));
    wait_until(
        "the follower's journal to work again",
        Duration::from_secs(20),
        || json(pf, "/cluster")["forwarding"]["journalError"].is_null(),
    );
    for post in [first, second, third] {
        let (status, body) = post.join().expect("poster");
        assert_eq!(status, 202, "queued while the master is frozen: {body}");
    }
    follower.proc.kill9();
    drop(resume); // SIGCONT

    let restarted = serve(FOLLOWER, pf, &peers, Some(&queue_dir));
    assert_archived_once(pm, 70);
    assert!(
        restarted.log().contains("are sent again"),
        "{}",
        restarted.log()
    );
    drop(restarted);
    drop(master);
}
