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

fn json(port: u16, path: &str) -> Value {
    serde_json::from_str(&http(port, "GET", path, "").1).unwrap_or_default()
}

#[test]
fn events_queued_on_a_follower_survive_its_sigkill_and_are_sequenced_once_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue_dir = dir.path().join("queue");
    let (pm, pf) = (free_port(), free_port());
    let peers = [(MASTER, pm), (FOLLOWER, pf)];
    let master = serve(MASTER, pm, &peers, None);
    let mut follower = serve(FOLLOWER, pf, &peers, Some(&queue_dir));
    wait_until("the follower to be ready", Duration::from_secs(20), || {
        http(pf, "GET", "/ready", "").0 == 200
    });

    // The master freezes: what the follower takes stays in its queue.
    let master_pid = master.proc.child.id();
    signal(master_pid, "-STOP");
    let resume = Resume(master_pid);
    for batch in 0..3 {
        std::thread::spawn(move || {
            let body: String = (0..5)
                .map(|k| {
                    format!(
                        "{{\"type\":\"deleteBucket\",\"bucket\":\"q{}\"}}\n",
                        batch * 5 + k
                    )
                })
                .collect();
            http(pf, "POST", "/diag/masterEvents", &body)
        });
    }
    wait_until(
        "the follower to queue 15 events",
        Duration::from_secs(20),
        || json(pf, "/cluster")["forwarding"]["queued"].as_u64() == Some(15),
    );
    follower.proc.kill9();
    drop(resume); // SIGCONT

    let restarted = serve(FOLLOWER, pf, &peers, Some(&queue_dir));
    wait_until(
        "the master's archive to hold the 15 events",
        Duration::from_secs(30),
        || {
            let (_, archive) = http(pm, "GET", "/diag/masterEvents?o=1", "");
            archive.matches("\"bucket\":\"q").count() >= 15
        },
    );
    let (_, archive) = http(pm, "GET", "/diag/masterEvents?o=1", "");
    let mut buckets: Vec<String> = archive
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["bucket"].as_str().map(str::to_owned))
        .filter(|b| b.starts_with('q'))
        .collect();
    assert_eq!(buckets.len(), 15, "each exactly once:\n{archive}");
    buckets.sort();
    buckets.dedup();
    assert_eq!(buckets.len(), 15, "{archive}");
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
