//! The plugin sinks in the binary: `master-events sinks` lists them with their
//! config schemas, and the `file` sink survives `kill -9` of `serve` mid-stream —
//! after a restart with the same configuration, `?o=1` returns what it returned
//! before the kill and new events continue the seq, each event in the log once; and
//! a second `serve` on the same log exits 2 naming the lock file and the first's pid.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{host_port, http_to as http, listening_url, spawn, Proc};

fn serve(config: &Path) -> (Proc, String) {
    let config = config.display().to_string();
    let mut p = spawn(&["serve", "--listen", "127.0.0.1:0", "--config", &config]);
    let addr = host_port(&listening_url(&mut p));
    (p, addr)
}

/// The archive, once (`?o=1`): its lines, each with its `\n`.
fn archive(addr: &str) -> Vec<String> {
    let (status, body) = http(addr, "GET", "/diag/masterEvents?o=1&heartbeat=0", "");
    assert_eq!(status, 200);
    body.split_inclusive('\n').map(str::to_owned).collect()
}

fn seq_of(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line).ok()?["seq"].as_u64()
}

/// The seqs of the event lines of a log file (complete lines only).
fn log_seqs(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(seq_of)
        .collect()
}

fn events(from: u64, n: u64) -> String {
    (from..from + n)
        .map(|i| format!("{{\"type\":\"deleteBucket\",\"bucket\":\"b{i}\"}}\n"))
        .collect()
}

#[test]
fn sinks_lists_every_plugin_and_shows_its_config_schema() {
    let out = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .arg("sinks")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "archiver", "counts", "file", "http", "kafka", "nats", "stdout", "tsv", "webhook",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(name)),
            "{name} missing from\n{text}"
        );
    }
    for (name, keys) in [
        (
            "file",
            &["dir", "file_name", "max_bytes", "keep", "fsync", "restore"][..],
        ),
        (
            "webhook",
            &[
                "url",
                "headers",
                "queue_events",
                "retry_initial_ms",
                "linger_ms",
            ][..],
        ),
        (
            "nats",
            &["servers", "subject_prefix", "max_pending", "user", "token"][..],
        ),
        ("tsv", &["path"][..]),
        ("counts", &["path", "every_ms"][..]),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_master-events"))
            .args(["sinks", "--schema", name])
            .output()
            .expect("runs");
        assert!(out.status.success(), "sinks --schema {name}");
        let schema: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("the schema is JSON");
        for key in keys {
            let description = schema["properties"][key]["description"].as_str();
            assert!(
                description.is_some_and(|d| !d.is_empty()),
                "{name}.{key} has no description in {schema}"
            );
        }
    }
}

#[test]
fn the_file_log_survives_kill_9_mid_stream_and_the_restart_continues_the_seq() {
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
    let log = logs.join("master_events.log");

    let (mut first, addr) = serve(&config);
    // Mid-stream: a writer posts batches until the process dies.
    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, posted, addr) = (Arc::clone(&stop), Arc::clone(&posted), addr.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            // Bounded: at most 150 batches of 20 (under the archive's 4096).
            while !stop.load(Ordering::SeqCst) && i < 150 {
                let Ok(mut s) = TcpStream::connect(&addr) else {
                    return;
                };
                let body = events(i * 20, 20);
                let req = format!(
                    "POST /diag/masterEvents HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(req.as_bytes()).is_err() {
                    return;
                }
                let mut reply = Vec::new();
                let _ = s.read_to_end(&mut reply);
                if reply.starts_with(b"HTTP/1.1 200") {
                    posted.fetch_add(20, Ordering::SeqCst);
                }
                i += 1;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while posted.load(Ordering::SeqCst) < 400 {
        assert!(Instant::now() < deadline, "the writer posts");
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = archive(&addr);
    let last_before = before.last().and_then(|l| seq_of(l)).expect("events");
    assert!(last_before >= 400);
    // Once the log has it (fsync = "always": on disk), kill -9 while posting goes on.
    while log_seqs(&log).last().copied().unwrap_or(0) < last_before {
        assert!(Instant::now() < deadline, "the log catches up");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(first.child.id() as i32, libc::SIGKILL) },
        0
    );
    let _ = first.child.wait();
    stop.store(true, Ordering::SeqCst);
    let _ = writer.join();

    let (mut second, addr) = serve(&config);
    let after = archive(&addr);
    assert!(
        after.len() >= before.len() && after[..before.len()] == before[..],
        "?o=1 after the restart returns what it returned before the kill ({} lines before, {} after)",
        before.len(),
        after.len()
    );
    let after_seqs: Vec<u64> = after.iter().filter_map(|l| seq_of(l)).collect();
    let last = *after_seqs.last().expect("events");
    assert_eq!(
        after_seqs,
        (1..=last).collect::<Vec<_>>(),
        "contiguous from 1"
    );

    let (status, reply) = http(&addr, "POST", "/diag/masterEvents", &events(10_000, 5));
    assert_eq!(status, 200);
    assert!(
        reply.contains(&format!("\"seqs\":[{},{}]", last + 1, last + 5)),
        "the seq continues after {last}: {reply}"
    );
    let again = archive(&addr);
    assert_eq!(again[..after.len()], after[..]);
    assert_eq!(again.len(), after.len() + 5);

    // A clean stop; the log then has every event once, in order.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(second.child.id() as i32, libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Ok(Some(status)) = second.child.try_wait() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "serve stops on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    let _ = second.stdout.take();
    assert_eq!(log_seqs(&log), (1..=last + 5).collect::<Vec<_>>());
}

#[test]
fn a_second_serve_on_the_same_file_log_exits_2_naming_the_lock_file_and_the_first_ones_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    let config = dir.path().join("me.toml");
    std::fs::write(
        &config,
        format!("[[sinks]]\ntype = \"file\"\ndir = {logs:?}\n"),
    )
    .expect("write config");
    let (first, _addr) = serve(&config);
    let mut second = common::Proc::new(
        Command::new(env!("CARGO_BIN_EXE_master-events"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .env_remove("MASTER_EVENTS_USERS")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("binary starts"),
    );
    let code = second.wait_exit(Duration::from_secs(30));
    let mut stderr = String::new();
    if let Some(mut err) = second.child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    assert_eq!(
        code,
        Some(2),
        "the second server refuses to start: {stderr}"
    );
    let lock = logs.join("master_events.log.lock");
    assert!(
        stderr.contains(&lock.display().to_string()),
        "names the lock file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("locked by pid {}", first.child.id())),
        "names the first server's pid: {stderr}"
    );
}
