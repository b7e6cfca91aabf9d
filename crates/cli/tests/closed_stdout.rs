//! A reader that closes standard output early (`master-events sinks | head -1`,
//! `grep -q`) ends the command quietly: exit 0, no panic, nothing on stderr about a
//! broken pipe. The read end is closed before the command writes anything, so every
//! write it makes fails with EPIPE: the case is certain, not a race.
//!
//! Any other failure of standard output (a full disk: `/dev/full`, where every
//! write fails with ENOSPC) is an error: exit 2, and one line that says it was
//! `writing standard output` and gives the reason once.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long one command may take before the test kills it and fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `master-events ARGS` with its stdout a pipe nobody reads (closed at once);
/// returns its exit code and what it wrote to stderr.
fn run_with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    run_with_stdout(args, Stdio::piped())
}

/// Runs `master-events ARGS` with `stdout` as its standard output (a pipe is closed
/// at once); returns its exit code and what it wrote to stderr.
fn run_with_stdout(args: &[&str], stdout: Stdio) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(args)
        .env_remove("MASTER_EVENTS_AUTH")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the master-events binary runs");
    drop(child.stdout.take());
    let mut stderr = child.stderr.take().expect("piped stderr");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        let _ = tx.send((child.wait(), err));
    });
    match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok((status, err)) => (status.expect("wait for master-events").code(), err),
        Err(_) => {
            // Still unreaped (its waiter blocks on it), so the pid is still ours.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{args:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
    }
}

fn assert_quiet_success(args: &[&str]) {
    let (code, err) = run_with_closed_stdout(args);
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(
        !err.to_lowercase().contains("broken pipe"),
        "{args:?} reported the closed pipe as an error: {err}"
    );
    assert_eq!(code, Some(0), "{args:?} exit code; stderr: {err}");
}

#[test]
fn sinks_ends_quietly_when_its_reader_has_gone() {
    assert_quiet_success(&["sinks"]);
    assert_quiet_success(&["sinks", "--schema", "file"]);
}

#[test]
fn schemas_ends_quietly_when_its_reader_has_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("schemas");
    let out = out.to_str().expect("utf-8 temp path");
    assert_quiet_success(&["schemas", "--out", out]);
    // It still did its work: the files are written even though nobody read the note.
    let written = std::path::Path::new(out);
    assert!(
        written.join("event.json").is_file() && written.join("stream-line.json").is_file(),
        "schemas --out wrote its files"
    );
}

#[test]
fn token_create_ends_quietly_when_its_reader_has_gone() {
    assert_quiet_success(&["token", "create", "--name", "ci", "--role", "read"]);
}

#[test]
fn a_full_output_is_an_error_that_says_so_once() {
    let Ok(probe) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("no /dev/full here: nothing to check");
        return;
    };
    drop(probe);
    let data = |name: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/report")
            .join(name)
            .to_string_lossy()
            .into_owned()
    };
    let log = data("rebalance_normal.log");
    for args in [
        vec!["sinks"],
        vec!["validate", log.as_str(), "--legacy"],
        vec!["trace", log.as_str()],
        vec!["report", "moves", log.as_str(), "--format", "csv"],
        vec!["report", "rebalance", log.as_str(), "--format", "json"],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full opens");
        let (code, err) = run_with_stdout(&args, Stdio::from(full));
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert_eq!(code, Some(2), "{args:?} exit code; stderr: {err}");
        assert!(
            err.contains("error: writing standard output: "),
            "{args:?}: {err}"
        );
        assert_eq!(
            err.matches("No space left on device").count(),
            1,
            "{args:?}: the reason once: {err}"
        );
    }
}
