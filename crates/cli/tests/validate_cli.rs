//! `master-events validate` and `schemas` as a user runs them: exit codes and output.

use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_master-events"))
}

fn validate_stdin(input: &[u8]) -> (i32, String) {
    let mut child = bin()
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).expect("write stdin");
    }
    let out = child.wait_with_output().expect("binary ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn all_valid_lines_exit_zero_with_a_summary() {
    let (code, out) = validate_stdin(
        br#"{"type":"becameMaster","ts":1333576032.53991,"node":"n_0@10.17.2.163","host":"10.17.2.163:12000"}
{"vbucket":43,"type":"vbucketMoveDone","ts":1333576052.926554,"bucket":"default"}
"#,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("<stdin>: 2 valid, 0 invalid"), "{out}");
    assert!(out.contains("becameMaster"), "{out}");
}

#[test]
fn an_invalid_line_exits_one_and_is_named() {
    let (code, out) = validate_stdin(
        b"{\"type\":\"failoverEnded\",\"ts\":1}\n{\"vbucket\":\"x\",\"type\":\"vbucketMoveDone\",\"ts\":1,\"bucket\":\"default\"}\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("line 2: type vbucketMoveDone: field \"vbucket\""),
        "{out}"
    );
    assert!(out.contains("1 valid, 1 invalid"), "{out}");
}

#[test]
fn a_missing_file_exits_two() {
    let out = bin()
        .args(["validate", "/nonexistent/master_events.log"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}

#[test]
fn a_bad_flag_exits_two() {
    let out = bin()
        .args(["validate", "--frobnicate"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schemas_check_passes_on_the_committed_directory() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    let out = bin()
        .args(["schemas", "--check", "--out", dir])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
