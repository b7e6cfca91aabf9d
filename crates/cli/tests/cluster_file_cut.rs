//! A deposed master's uncommitted events do not come back from its file log: three
//! `serve` nodes on a real etcd (lease TTL 1 s), each with a commit-gate file sink
//! (`fsync = "always"`). Both followers are SIGKILLed, then the master takes
//! events: it writes them to its log but no majority holds them. The master is
//! SIGKILLed, the followers restart from their logs, one becomes master and
//! sequences other events at the same seqs. The old master restarts from its log: it must cut the events
//! the cluster never committed — from its archive and from its file log — and end
//! with exactly the new master's archive.
#![cfg(feature = "etcd")]

mod common;

use std::time::Duration;

use common::{free_port, http, run_logged, start_etcd, wait_until, Logged};

use serde_json::Value;

const NODES: usize = 3;

fn cluster_view(port: u16) -> Value {
    serde_json::from_str(&http(port, "GET", "/cluster", "").1).unwrap_or_default()
}

/// `(seq, bucket)` of the archive's `deleteBucket` events, and every seq in it.
fn archive(port: u16) -> (Vec<(u64, String)>, Vec<u64>) {
    let (_, body) = http(port, "GET", "/diag/masterEvents?o=1", "");
    let lines: Vec<Value> = body
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["seq"].is_u64())
        .collect();
    let buckets = lines
        .iter()
        .filter(|v| v["type"] == "deleteBucket")
        .map(|v| {
            (
                v["seq"].as_u64().unwrap_or(0),
                v["bucket"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    (
        buckets,
        lines.iter().filter_map(|v| v["seq"].as_u64()).collect(),
    )
}

fn post(port: u16, buckets: &[String]) -> u16 {
    let body: String = buckets
        .iter()
        .map(|b| format!("{{\"type\":\"deleteBucket\",\"bucket\":\"{b}\"}}\n"))
        .collect();
    http(port, "POST", "/diag/masterEvents", &body).0
}

/// The file log's lines (every file of it).
fn log_text(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for name in ["master_events.log.1", "master_events.log"] {
        text.push_str(&std::fs::read_to_string(dir.join(name)).unwrap_or_default());
    }
    text
}

#[test]
fn a_deposed_master_restarted_from_its_file_log_cuts_the_events_the_cluster_never_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, etcd_port) = start_etcd(dir.path());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "cut-test-secret").expect("secret");
    let names: Vec<String> = (0..NODES).map(|i| format!("n_{i}@127.0.0.1")).collect();
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let logs: Vec<_> = (0..NODES)
        .map(|i| dir.path().join(format!("logs{i}")))
        .collect();
    let serve = |i: usize| -> Logged {
        let config = dir.path().join(format!("node{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[[sinks]]\ntype = \"file\"\ndir = {:?}\nfsync = \"always\"\n",
                logs[i].display().to_string()
            ),
        )
        .expect("config");
        let mut a: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", ports[i]),
            "--node".into(),
            names[i].clone(),
            "--config".into(),
            config.display().to_string(),
            "--discovery".into(),
            "etcd".into(),
            "--etcd".into(),
            format!("http://127.0.0.1:{etcd_port}"),
            "--lease-ttl".into(),
            "1".into(),
            "--heartbeat".into(),
            "1".into(),
            "--cluster-secret-file".into(),
            secret.display().to_string(),
        ];
        for (n, p) in names.iter().zip(&ports) {
            a.push("--peer".into());
            a.push(format!("{n}=http://127.0.0.1:{p}"));
        }
        run_logged(&a, true)
    };
    let mut nodes: Vec<Option<Logged>> = (0..NODES).map(|i| Some(serve(i))).collect();

    let mut master = None;
    wait_until("a master to be elected", Duration::from_secs(30), || {
        master = cluster_view(ports[0])["master"]
            .as_str()
            .and_then(|m| names.iter().position(|n| n == m));
        master.is_some()
    });
    let master = master.unwrap_or(0);
    let followers: Vec<usize> = (0..NODES).filter(|i| *i != master).collect();
    for &i in &followers {
        wait_until("the followers to be ready", Duration::from_secs(20), || {
            http(ports[i], "GET", "/ready", "").0 == 200
        });
    }

    // Committed everywhere.
    let kept: Vec<String> = (0..5).map(|k| format!("kept-{k}")).collect();
    assert_eq!(
        post(ports[master], &kept),
        200,
        "the first events are committed"
    );
    for &i in &followers {
        wait_until(
            "the followers to hold them",
            Duration::from_secs(10),
            || archive(ports[i]).0.len() == kept.len(),
        );
    }

    // The followers die (SIGKILL): the master writes what it takes to its log (it
    // is a commit gate) but cannot commit it. (Frozen followers would not do: what
    // the master sent reaches their sockets, and they hold it once resumed.)
    for &i in &followers {
        if let Some(mut node) = nodes[i].take() {
            node.proc.kill9();
        }
    }
    let lost: Vec<String> = (0..5).map(|k| format!("lost-{k}")).collect();
    let master_port = ports[master];
    let to_post = lost.clone();
    let poster = std::thread::spawn(move || post(master_port, &to_post));
    wait_until(
        "the master to write the uncommitted events to its log",
        Duration::from_secs(10),
        || {
            lost.iter()
                .all(|b| log_text(&logs[master]).contains(b.as_str()))
        },
    );
    nodes[master].as_mut().expect("running").proc.kill9();
    let old_master_log = nodes[master].take().map(|n| n.log()).unwrap_or_default();
    assert_ne!(poster.join().ok(), Some(200), "never acknowledged");
    // The followers come back from their logs.
    for &i in &followers {
        nodes[i] = Some(serve(i));
    }

    // A survivor becomes master and sequences other events at those seqs.
    let mut new_master = None;
    wait_until("a new master", Duration::from_secs(30), || {
        new_master = followers
            .iter()
            .copied()
            .find(|&i| cluster_view(ports[i])["is_master"] == true);
        new_master.is_some()
    });
    let new_master = new_master.unwrap_or(followers[0]);
    let fresh: Vec<String> = (0..8).map(|k| format!("new-{k}")).collect();
    let mut status = 0;
    wait_until("the new master to commit", Duration::from_secs(30), || {
        status = post(ports[new_master], &fresh);
        status == 200
    });

    // The old master restarts from its log and follows.
    let restarted = serve(master);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let expected = loop {
        let expected = archive(ports[new_master]);
        let got = archive(ports[master]);
        if got == expected {
            break expected;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted node does not hold the new master's archive:\n  it has {got:?}\n  the master {expected:?}\n--- its log:\n{}",
            restarted.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        expected.0.iter().all(|(_, b)| !b.starts_with("lost-")),
        "the cluster never had the lost events: {expected:?}"
    );
    assert!(
        fresh.iter().all(|b| expected.0.iter().any(|(_, e)| e == b)),
        "the new master's events are there: {expected:?}"
    );
    let log = log_text(&logs[master]);
    assert!(
        !log.contains("lost-"),
        "the file log no longer holds the events the cluster took back:\n{log}"
    );
    for b in fresh.iter().chain(&kept) {
        assert!(log.contains(b.as_str()), "the file log has {b}:\n{log}");
    }
    let stderr = restarted.log();
    assert!(
        stderr.contains("cut off the file log"),
        "the cut is logged:\n{stderr}"
    );
    assert!(
        !stderr.contains("cut-test-secret") && !old_master_log.contains("cut-test-secret"),
        "no secret in the log"
    );
}
