//! The harness's exit status: a run with a failed row still writes its results,
//! lists the failure, and exits 1.

use std::process::Command;

#[test]
fn a_failed_row_is_listed_and_makes_the_exit_status_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let md = dir.path().join("results.md");
    let json = dir.path().join("results.json");
    // A "server" that exits at once: its row fails to start.
    let out = Command::new(env!("CARGO_BIN_EXE_master-events-bench"))
        .args(["--systems", "master-events", "--scenarios", "latency"])
        .args(["--readers", "1", "--latency-duration", "0.5"])
        .args(["--master-events-bin", "/bin/false", "--time-limit", "60"])
        .arg("--out-md")
        .arg(&md)
        .arg("--out-json")
        .arg(&json)
        .output()
        .expect("the harness runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1 row(s) failed"), "{stderr}");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON was written"))
            .expect("valid JSON");
    let errors = results["errors"].as_array().expect("an errors list");
    assert_eq!(errors.len(), 1, "{results}");
    assert_eq!(errors[0]["scenario"], "latency");
    assert!(md.exists(), "the markdown was written");
}
