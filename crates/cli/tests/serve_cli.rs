//! `master-events serve` and `demo` as processes: the first stdout line, ingest and
//! streaming over TCP, configuration errors, and a clean stop on SIGTERM that leaves
//! nothing behind in the sinks.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{host_port, listening_url, spawn};

fn http(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    common::http_to(&host_port(url), method, path, body)
}

#[test]
fn serve_prints_its_address_ingests_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("me.toml");
    std::fs::write(
        &config,
        "[server]\nnode = \"n_7@127.0.0.1\"\n\n[[sinks]]\ntype = \"stdout\"\nformat = \"json\"\n",
    )
    .expect("write config");
    let mut p = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap_or_default(),
    ]);
    let url = listening_url(&mut p);
    let body: String = (0..500)
        .map(|i| {
            format!(
                "{{\"type\":\"vbucketMoveDone\",\"vbucket\":{},\"bucket\":\"default\"}}\n",
                i % 1024
            )
        })
        .collect();
    let (status, reply) = http(&url, "POST", "/diag/masterEvents", &body);
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("\"seqs\":[1,500]"), "{reply}");
    let (status, cluster) = http(&url, "GET", "/cluster", "");
    assert_eq!(status, 200);
    assert!(cluster.contains("n_7@127.0.0.1"), "{cluster}");
    p.sigterm();
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    let mut rest = String::new();
    if let Some(mut out) = p.stdout.take() {
        out.read_to_string(&mut rest).expect("read stdout");
    }
    let seqs: Vec<u64> = rest
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect();
    assert_eq!(
        seqs,
        (1..=500).collect::<Vec<_>>(),
        "the stdout sink delivered everything"
    );
}

#[test]
fn a_bad_configuration_stops_start_up_naming_the_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[[sinks]]\ntype = \"stdout\"\nfromat = \"line\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sinks[0]") && err.contains("fromat"), "{err}");
    std::fs::write(&config, "[[sinks]]\ntype = \"nosuch\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("nosuch") && err.contains("stdout") && err.contains("archiver"),
        "{err}"
    );
}

/// The names of the process's threads, from /proc.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list threads");
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn workers_sets_the_number_of_worker_threads_and_zero_is_refused() {
    let mut p = spawn(&["serve", "--listen", "127.0.0.1:0", "--workers", "1"]);
    let url = listening_url(&mut p);
    let (status, reply) = http(
        &url,
        "POST",
        "/diag/masterEvents",
        "{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n",
    );
    assert_eq!(status, 200, "{reply}");
    let workers = thread_names(p.child.id())
        .iter()
        .filter(|n| n.as_str() == "tokio-rt-worker")
        .count();
    assert_eq!(workers, 1);

    let out = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--workers") && err.contains("0"), "{err}");
}

#[test]
fn serve_refuses_a_public_address_without_users() {
    let out = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("MASTER_EVENTS_USERS")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-no-auth"));
}

#[test]
fn demo_streams_a_whole_simulated_rebalance() {
    let mut p = spawn(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--rate",
        "0",
        "--vbuckets",
        "64",
    ]);
    let url = listening_url(&mut p);
    let mut s = TcpStream::connect(host_port(&url)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(b"GET /diag/masterEvents?heartbeat=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut reader = BufReader::new(s);
    let mut types = std::collections::BTreeMap::<String, u64>::new();
    let mut last_seq = 0;
    let mut line = String::new();
    while !types.contains_key("autofailoverDone") {
        line.clear();
        let n = reader.read_line(&mut line).expect("reads");
        assert!(n > 0, "stream ended");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
            continue; // response head and chunk sizes
        };
        if !v.is_object() {
            continue; // a chunk size that happens to be all digits
        }
        let seq = v["seq"].as_u64().expect("seq");
        assert_eq!(seq, last_seq + 1, "contiguous");
        last_seq = seq;
        *types
            .entry(v["type"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    assert_eq!(types.get("vbucketMoveStart"), Some(&64));
    assert_eq!(types.get("vbucketMoveDone"), Some(&64));
    assert_eq!(types.get("rebalanceStart"), Some(&1));
    assert_eq!(types.get("rebalanceEnd"), Some(&1));
    assert_eq!(types.get("failover"), Some(&1));
}

#[test]
fn demo_with_three_nodes_serves_the_same_stream_from_a_follower() {
    let mut p = spawn(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--rate",
        "0",
        "--vbuckets",
        "64",
        "--nodes",
        "3",
    ]);
    let url = listening_url(&mut p);
    let mut rest = String::new();
    let follower = loop {
        rest.clear();
        let n = p
            .stdout
            .as_mut()
            .map(|o| o.read_line(&mut rest).unwrap_or(0))
            .unwrap_or(0);
        assert!(n > 0, "the demo printed no follower URL");
        if let Some(addr) = rest.trim().strip_prefix("node 1 listening on ") {
            break addr.split_whitespace().next().unwrap_or("").to_owned();
        }
    };
    let read_all = |base: &str| -> Vec<serde_json::Value> {
        let mut s = TcpStream::connect(host_port(base)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s.write_all(b"GET /diag/masterEvents?heartbeat=0 HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut reader = BufReader::new(s);
        let mut out = Vec::new();
        let mut line = String::new();
        while !out
            .iter()
            .any(|v: &serde_json::Value| v["type"] == "autofailoverDone")
        {
            line.clear();
            let n = reader.read_line(&mut line).expect("reads");
            assert!(n > 0, "stream ended");
            match serde_json::from_str::<serde_json::Value>(line.trim()) {
                Ok(v) if v.is_object() => out.push(v),
                _ => {}
            }
        }
        out
    };
    let from_master = read_all(&url);
    let from_follower = read_all(&follower);
    assert_eq!(from_master, from_follower);
    let origins: std::collections::BTreeSet<&str> = from_master
        .iter()
        .filter_map(|v| v["origin"].as_str())
        .collect();
    assert_eq!(origins.len(), 3, "events noted on every node: {origins:?}");
}

/// Opens `GET /diag/masterEvents?start=now` on a connection of its own and reads
/// the response head: the connection (kept open while the stream lasts) and the
/// head.
fn open_stream(url: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(host_port(url)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /diag/masterEvents?start=now&heartbeat=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("reading the head: {other:?} after {head:?}"),
        }
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

#[test]
fn max_streams_caps_the_streams_open_at_once_and_zero_is_refused() {
    let mut p = spawn(&["serve", "--listen", "127.0.0.1:0", "--max-streams", "2"]);
    let url = listening_url(&mut p);
    let (_a, head) = open_stream(&url);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_b, head) = open_stream(&url);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (status, reply) = http(&url, "GET", "/diag/masterEvents?start=now", "");
    assert_eq!(status, 503, "{reply}");
    assert!(reply.contains("too many open streams (limit 2)"), "{reply}");
    let (_, metrics) = http(&url, "GET", "/metrics", "");
    assert!(
        metrics.contains("master_events_requests_limited_total{reason=\"max_streams\"} 1"),
        "{metrics}"
    );
    p.sigterm();
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));

    let out = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(["serve", "--listen", "127.0.0.1:0", "--max-streams", "0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-streams must be at least 1"), "{err}");
}
