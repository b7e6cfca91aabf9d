//! Errors that say what to do: `validate` on hand-written lines, `tail --type` with an
//! unknown type, `schemas --check` on a missing directory, and `trace -o FILE` from a
//! source that cannot be read (which must leave FILE alone).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

/// How long one command may take before the test kills it and fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `master-events ARGS` in `dir`; kills it and fails after 60 s.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_master-events"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("MASTER_EVENTS_AUTH");
    common::output_bounded(command, &format!("{args:?}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the temp dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn validate_points_hand_written_lines_without_ts_to_ingest_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("hand.ndjson"),
        "{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n\
         {\"type\":\"vbucketMoveDone\",\"bucket\":\"a\",\"vbucket\":3}\n",
    )
    .expect("write the lines");
    let out = run_in(dir.path(), &["validate", "hand.ndjson"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("--ingest").count(), 1, "{stdout}");
    assert!(
        stdout.contains("2 of the invalid lines have no \"ts\" and are valid ingest lines"),
        "{stdout}"
    );

    let out = run_in(dir.path(), &["validate", "--ingest", "hand.ndjson"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("--ingest"));
}

#[test]
fn validate_help_lists_every_event_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_in(dir.path(), &["validate", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for ty in ["becameMaster", "vbucketMoveStart", "mountingVolumesEnded"] {
        assert!(help.split_whitespace().any(|w| w == ty), "{ty}: {help}");
    }
    assert!(help.contains("GET /schemas/"), "{help}");
}

#[test]
fn tail_with_an_unknown_type_points_to_the_type_list_not_to_the_schema_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_in(
        dir.path(),
        &["tail", "http://127.0.0.1:1", "--type", "nope"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("not an event type"), "{err}");
    assert!(err.contains("`master-events validate --help`"), "{err}");
    assert!(err.contains("GET /schemas/"), "{err}");
    assert!(!err.contains("`master-events schemas`"), "{err}");

    let out = run_in(
        dir.path(),
        &["tail", "http://127.0.0.1:1", "--type", "rebalancestart"],
    );
    assert!(
        text(&out.stderr).contains("did you mean rebalanceStart?"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn schemas_check_on_a_missing_directory_says_so_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_in(dir.path(), &["schemas", "--out", "no-such-dir", "--check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no directory no-such-dir to check"), "{err}");
    assert!(
        !dir.path().join("no-such-dir").exists(),
        "--check writes nothing"
    );

    std::fs::write(dir.path().join("a-file"), b"").expect("write a file");
    let out = run_in(dir.path(), &["schemas", "--out", "a-file", "--check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("a-file is not a directory"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn trace_to_a_file_from_a_source_that_cannot_be_read_leaves_no_file_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_in(
        dir.path(),
        &["trace", "http://127.0.0.1:1", "-o", "trace.json"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot reach"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        names_in(dir.path()),
        Vec::<String>::new(),
        "nothing written"
    );

    std::fs::write(dir.path().join("trace.json"), b"the older trace").expect("write");
    let out = run_in(dir.path(), &["trace", "missing.log", "-o", "trace.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(dir.path().join("trace.json")).expect("still there"),
        b"the older trace"
    );
    assert_eq!(
        names_in(dir.path()),
        ["trace.json"],
        "no temporary file left"
    );
}

#[test]
fn trace_to_a_file_replaces_it_whole_with_the_usual_permissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.log");
    std::fs::write(
        &log,
        "{\"type\":\"rebalanceStart\",\"ts\":1.0,\"pid\":\"<0.1.0>\",\"keepNodes\":[],\"ejectNodes\":[],\"failedNodes\":[],\"deltaNodes\":[]}\n\
         {\"type\":\"rebalanceEnd\",\"ts\":2.0,\"pid\":\"<0.1.0>\",\"reason\":\"normal\"}\n",
    )
    .expect("write the log");
    std::fs::write(dir.path().join("trace.json"), b"the older trace").expect("write");
    let out = run_in(dir.path(), &["trace", "events.log", "-o", "trace.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("trace.json")).expect("read"))
            .expect("the new trace is JSON");
    assert!(doc["traceEvents"].is_array(), "{doc}");
    assert_eq!(names_in(dir.path()), ["events.log", "trace.json"]);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let out = run_in(dir.path(), &["trace", "events.log", "-o", "fresh.json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let reference = dir.path().join("reference");
        std::fs::File::create(&reference).expect("create a reference file");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(
            mode(&dir.path().join("fresh.json")),
            mode(&reference),
            "as File::create would make it"
        );
    }
}

#[test]
fn counts_on_the_command_line_are_refused_in_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["report", "rebalance", "events.log", "--slowest", "many"][..],
        &["validate", "--max-line-bytes", "1k", "events.log"][..],
        &["validate", "--max-errors", "some", "events.log"][..],
    ] {
        let out = run_in(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("not a whole number of 0 or more (digits only, e.g. 10)"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("invalid digit"), "{args:?}: {err}");
    }
}

#[test]
fn validate_points_an_unknown_type_to_the_list_of_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("typo.ndjson"),
        "{\"type\":\"nope\",\"ts\":1}\n",
    )
    .expect("write the line");
    let out = run_in(dir.path(), &["validate", "typo.ndjson"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "unknown event type \"nope\"; `master-events validate --help` lists the event types"
        ),
        "{stdout}"
    );
}

#[test]
fn emit_with_an_unknown_type_points_to_the_type_list_not_to_the_schema_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_in(dir.path(), &["emit", "http://127.0.0.1:1", "nope", "a=b"]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("neither a file nor an event type"), "{err}");
    assert!(err.contains("`master-events validate --help`"), "{err}");
    assert!(!err.contains("`master-events schemas`"), "{err}");
}

#[test]
fn a_port_in_use_is_said_once_with_a_free_port_to_try() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run_in(dir.path(), &["serve", "--listen", &addr]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on {addr}: another process listens there"
        )),
        "{err}"
    );
    assert!(err.contains("--listen 127.0.0.1:0"), "{err}");
    assert_eq!(
        err.matches("in use").count() + err.matches("listens there").count(),
        1,
        "{err}"
    );
}

#[test]
fn listen_takes_a_host_name_and_refuses_what_is_not_host_port_in_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_in(dir.path(), &["serve", "--listen", "nonsense"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("is not HOST:PORT"), "{err}");
    assert!(err.contains("localhost:9898"), "{err}");
    // A host name resolves: the server listens on its address.
    let mut child = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(["serve", "--listen", "localhost:0"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(COMMAND_TIMEOUT).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("listening on http://127.0.0.1:"),
        "{line:?}"
    );
}
