//! A 100 MB single line is one clear error and does not make `validate` hold it in
//! memory. (Its own test binary, so the peak RSS of children measured is this one's.)

use std::io::Write;
use std::process::Command;

fn children_peak_rss_kib() -> i64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0);
    usage.ru_maxrss
}

#[test]
fn a_100_mb_line_is_reported_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("huge.ndjson");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        f.write_all(b"{\"type\":\"failoverEnded\",\"ts\":1}\n")
            .expect("write");
        f.write_all(b"{\"type\":\"createBucket\",\"ts\":1,\"bucket\":\"")
            .expect("write");
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..100 {
            f.write_all(&chunk).expect("write");
        }
        f.write_all(b"\"}\n{\"type\":\"failoverEnded\",\"ts\":2}\n")
            .expect("write");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(["validate", "--max-line-bytes", "1048576"])
        .arg(&path)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("line 2: type ?: line is 104857642 bytes, over the limit of 1048576"),
        "{stdout}"
    );
    assert!(stdout.contains("2 valid, 1 invalid"), "{stdout}");
    let peak = children_peak_rss_kib();
    assert!(
        peak < 64 * 1024,
        "validate peaked at {peak} KiB for a 100 MB line"
    );
}
