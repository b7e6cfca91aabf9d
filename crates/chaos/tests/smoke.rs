//! The suite's short subset, run with the workspace's tests: the master-SIGKILL
//! scenario once (etcd and three nodes, the master killed three times), which must
//! pass, and the command line's refusal of an unknown scenario.
//!
//! The nodes are `master-events` from this build's target directory (or
//! `MASTER_EVENTS_BIN`); it needs the `etcd` feature, which `cargo test --workspace
//! --all-features` gives it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `master-events` next to this test's own target directory, or `MASTER_EVENTS_BIN`.
fn master_events_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MASTER_EVENTS_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/smoke-HASH -> target/debug/master-events
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the target directory");
    dir.join("master-events")
}

/// Runs the chaos binary with `args`; kills it after `limit` (its own time limit
/// should end it first). Returns (exit code, stdout, stderr).
fn chaos(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = dir.path().join("out");
    let err = dir.path().join("err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_master-events-chaos"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("the chaos binary starts");
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        code,
        std::fs::read_to_string(out).unwrap_or_default(),
        std::fs::read_to_string(err).unwrap_or_default(),
    )
}

#[test]
fn an_unknown_scenario_is_refused_with_the_list_of_names() {
    let (code, _, err) = chaos(&["--scenario", "no-such-fault"], Duration::from_secs(30));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no scenario \"no-such-fault\""), "{err}");
    assert!(err.contains("master-kill"), "{err}");
}

#[cfg(feature = "etcd")]
#[test]
fn killing_the_master_three_times_loses_no_acknowledged_event() {
    let bin = master_events_bin();
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p master-events-cli --features etcd` or set MASTER_EVENTS_BIN",
        bin.display()
    );
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(1)
        });
    eprintln!("seed {seed} (replay: CHAOS_SEED={seed})");
    let dir = tempfile::tempdir().expect("a temp dir");
    let json = dir.path().join("report.json");
    let etcd = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    let seed_arg = seed.to_string();
    let (code, out, err) = chaos(
        &[
            "--scenario",
            "master-kill",
            "--seed",
            &seed_arg,
            "--bin",
            &bin.display().to_string(),
            "--etcd",
            &etcd,
            "--time-limit",
            "110",
            "--out-json",
            &json.display().to_string(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(0), "seed {seed}\nstdout:\n{out}\nstderr:\n{err}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report"))
            .expect("the report is JSON");
    let s = &report["scenarios"][0];
    assert_eq!(s["scenario"], "master-kill");
    assert_eq!(s["passed"], true, "{s}");
    let v = &s["verdict"];
    assert!(
        v["acknowledged"].as_u64().unwrap_or(0) > 100,
        "the writers got acknowledgements: {v}"
    );
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicated"], 0, "{v}");
    assert_eq!(v["divergent"], false, "{v}");
    let kills = s["schedule"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e[1].as_str().is_some_and(|w| w.starts_with("SIGKILL")))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(
        kills, 3,
        "the master was killed three times: {}",
        s["schedule"]
    );
}
