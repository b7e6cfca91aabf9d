//! `master-events report` and `master-events trace` as processes: the known answers
//! of the hand-written logs of `tests/data/report/` (see its README.md), bad lines,
//! standard input, errors, and a log fetched from a running `demo` server.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/report")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn run(args: &[&str]) -> Output {
    run_as(None, args)
}

/// Runs `master-events ARGS` with `auth` as `MASTER_EVENTS_AUTH` (none: unset);
/// kills it and fails after 60 s.
fn run_as(auth: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_master-events"));
    command.env_remove("MASTER_EVENTS_AUTH").args(args);
    if let Some(auth) = auth {
        command.env("MASTER_EVENTS_AUTH", auth);
    }
    common::output_bounded(command, &format!("{args:?}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the command, asserts exit code 0, and returns stdout.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: stdout {} stderr {}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn json(args: &[&str]) -> Value {
    let text = ok(args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} is not JSON ({e}): {text}"))
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-6)
}

#[test]
fn report_rebalance_gives_the_known_answers_of_the_normal_log() {
    let log = data("rebalance_normal.log");
    let text = ok(&["report", "rebalance", &log]);
    assert!(text.contains("Rebalance <0.900.0>: normal"), "{text}");
    assert!(
        text.contains("2.000/6.000/6.000"),
        "move p50/p90/max: {text}"
    );

    let doc = json(&["report", "rebalance", &log, "--json", "--slowest", "2"]);
    let r = &doc["rebalances"][0];
    assert_eq!(doc["rebalances"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["outcome"], "normal");
    assert!(close(&r["duration"], 10.0), "{r}");
    assert_eq!(r["slowestMoves"].as_array().map(Vec::len), Some(2), "{r}");
    let default = &r["buckets"][0];
    assert_eq!(default["bucket"], "default");
    assert_eq!(default["moves"], 4);
    assert_eq!(default["done"], 4);
    assert_eq!(default["activeMoves"], 2);
    assert!(close(&default["moveDuration"]["p50"], 2.0), "{default}");
    assert!(close(&default["moveDuration"]["max"], 6.0), "{default}");
    assert!(close(&default["backfill"]["p90"], 4.0), "{default}");
    assert!(close(&default["takeover"]["max"], 0.5), "{default}");
    assert!(close(&default["seqnoWait"], 1.25), "{default}");
    assert!(close(&default["indexWait"], 0.3), "{default}");
    assert_eq!(r["buckets"][1]["bucket"], "travel");
    assert_eq!(doc["input"]["badLines"], 0);
}

#[test]
fn report_rebalance_tells_a_stopped_rebalance_and_its_aborted_move() {
    let doc = json(&[
        "report",
        "rebalance",
        &data("rebalance_stopped.log"),
        "--json",
    ]);
    let outcomes: Vec<&str> = doc["rebalances"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["outcome"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(outcomes, ["stopped", "normal"]);
    assert_eq!(doc["rebalances"][0]["buckets"][0]["aborted"], 1);
    assert!(close(
        &doc["rebalances"][1]["buckets"][0]["moveDuration"]["max"],
        2.0
    ));
}

#[test]
fn report_rebalance_draws_the_svg_timeline_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("moves.svg");
    let svg_arg = svg.to_string_lossy().into_owned();
    ok(&[
        "report",
        "rebalance",
        &data("rebalance_normal.log"),
        "--svg",
        &svg_arg,
    ]);
    let drawn = std::fs::read_to_string(&svg).expect("the SVG file was written");
    assert!(drawn.contains("<svg"), "{drawn}");
    assert!(drawn.contains("ns_1@10.0.0.1"), "nodes label the rows");
}

#[test]
fn report_inflight_lists_the_moves_left_in_flight_with_their_age() {
    let log = data("rebalance_midmove.log");
    let text = ok(&["report", "inflight", &log]);
    assert!(text.contains("2 move(s) in flight"), "{text}");
    assert!(text.contains("seqnoWaitingStarted"), "{text}");

    let doc = json(&["report", "inflight", &log, "--json"]);
    assert!(close(&doc["now"], 1_700_000_304.0), "{doc}");
    let moves = &doc["buckets"][0]["moves"];
    assert_eq!(moves[0]["vbucket"], 21);
    assert!(close(&moves[0]["age"], 2.5), "{moves}");
    assert_eq!(moves[0]["lastEvent"], "seqnoWaitingStarted");
    assert_eq!(moves[1]["vbucket"], 22);
    assert!(close(&moves[1]["age"], 1.0), "{moves}");

    let later = json(&["report", "inflight", &log, "--json", "--now", "1700000310"]);
    assert!(
        close(&later["buckets"][0]["moves"][0]["age"], 8.5),
        "{later}"
    );

    let none = ok(&["report", "inflight", &data("rebalance_normal.log")]);
    assert_eq!(none.trim(), "No moves in flight.");
}

#[test]
fn report_moves_csv_has_a_header_and_one_row_per_move() {
    let log = data("rebalance_normal.log");
    let csv = ok(&["report", "moves", &log, "--format", "csv"]);
    let mut lines = csv.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("bucket,vbucket,node,start,end,duration_s,kind,status"),
        "{header}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 5, "{csv}");
    let vb2 = rows
        .iter()
        .find(|r| r[0] == "default" && r[1] == "2")
        .unwrap_or_else(|| panic!("default vb 2 in {csv}"));
    assert_eq!(vb2[5], "6.000000");
    assert_eq!(vb2[6], "active");
    assert_eq!(vb2[7], "done");

    let travel = ok(&[
        "report", "moves", &log, "--format", "csv", "--bucket", "travel",
    ]);
    assert_eq!(travel.lines().count(), 2, "{travel}");
    assert!(travel
        .lines()
        .nth(1)
        .is_some_and(|l| l.starts_with("travel,0,")));

    let jsonl = ok(&[
        "report",
        "moves",
        &data("rebalance_stopped.log"),
        "--format",
        "jsonl",
    ]);
    let statuses: Vec<String> = jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["status"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(statuses.len(), 3, "{jsonl}");
    assert_eq!(statuses.iter().filter(|s| *s == "aborted").count(), 1);

    let table = ok(&["report", "moves", &log]);
    assert!(table.starts_with("BUCKET"), "{table}");
    assert_eq!(table.lines().count(), 6, "{table}");
}

#[test]
fn bad_lines_are_summed_up_on_stderr_and_the_report_still_comes() {
    let out = run(&["report", "rebalance", &data("stream_with_bad_lines.ndjson")]);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    let first = err.lines().next().unwrap_or_default();
    assert!(first.contains("skipped 6 bad line(s) of 14"), "{err}");
    assert!(
        first.contains("line 3:") && first.contains("line 5:"),
        "{err}"
    );
    assert!(first.contains("and 3 more"), "{err}");
    assert!(err.contains("1 gap(s)"), "{err}");
    assert!(
        stdout(&out).contains("Rebalance <0.980.0>: normal"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn report_reads_standard_input() {
    let log = std::fs::read(data("rebalance_normal.log")).expect("read the log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(["report", "moves", "-", "--format", "csv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&log).expect("write stdin");
    }
    let out = child.wait_with_output().expect("finishes");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 6, "{}", stdout(&out));
}

#[test]
fn a_missing_file_or_a_bad_option_exits_2() {
    let out = run(&["report", "rebalance", "/no/such/master_events.log"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/no/such/master_events.log"),
        "{}",
        stderr(&out)
    );
    let out = run(&[
        "report",
        "moves",
        &data("rebalance_normal.log"),
        "--format",
        "xml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&[
        "report",
        "inflight",
        &data("rebalance_normal.log"),
        "--now",
        "soon",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["trace", "http://127.0.0.1:1", "-o", "/dev/null"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}

#[test]
fn a_source_that_cannot_be_read_is_named_as_the_source_not_the_output() {
    // The source: named as what could not be opened, never as a write.
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("x.trace.json");
    let target = target.to_string_lossy();
    for args in [
        vec!["trace", "/no/such/master_events.log"],
        vec!["trace", "/no/such/master_events.log", "-o", &target],
    ] {
        let out = run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("cannot open /no/such/master_events.log"),
            "{err}"
        );
        assert!(!err.contains("writing"), "not an output error: {err}");
    }
    assert!(
        !dir.path().join("x.trace.json").exists(),
        "no file for a source that cannot be read"
    );
}

#[test]
fn every_report_takes_format_json_and_the_old_json_flag_still_works() {
    let log = data("rebalance_stopped.log");
    for report in ["rebalance", "inflight"] {
        let by_format = ok(&["report", report, &log, "--format", "json"]);
        let by_flag = ok(&["report", report, &log, "--json"]);
        assert_eq!(by_format, by_flag, "report {report}");
        assert!(
            serde_json::from_str::<Value>(&by_format).is_ok(),
            "report {report} --format json: {by_format}"
        );
        let text = ok(&["report", report, &log, "--format", "text"]);
        assert_eq!(text, ok(&["report", report, &log]), "report {report}");
        let help = ok(&["report", report, "--help"]);
        assert!(help.contains("--format <FORMAT>"), "{help}");
        assert!(!help.contains("--json"), "--json is hidden: {help}");
    }
    let lines = ok(&["report", "moves", &log, "--format", "json"]);
    assert_eq!(lines, ok(&["report", "moves", &log, "--format", "jsonl"]));
    assert_eq!(lines, ok(&["report", "moves", &log, "--json"]));
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert_eq!(
        ok(&["report", "moves", &log, "--format", "text"]),
        ok(&["report", "moves", &log, "--format", "table"])
    );
}

#[test]
fn a_format_a_report_does_not_support_is_refused_naming_the_ones_it_does() {
    let log = data("rebalance_normal.log");
    for (report, format, supported) in [
        ("rebalance", "csv", "[possible values: text, json]"),
        ("inflight", "csv", "[possible values: text, json]"),
        ("moves", "xml", "[possible values: text, csv, json]"),
    ] {
        let out = run(&["report", report, &log, "--format", format]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "report {report} --format {format}"
        );
        let err = stderr(&out);
        assert!(
            err.contains(&format!("invalid value '{format}' for '--format")),
            "{err}"
        );
        assert!(err.contains(supported), "report {report}: {err}");
        assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    }
    let out = run(&["report", "rebalance", &log, "--format", "text", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
}

fn trace_events(doc: &Value) -> &Vec<Value> {
    doc["traceEvents"]
        .as_array()
        .unwrap_or_else(|| panic!("no traceEvents array in {doc}"))
}

#[test]
fn trace_writes_a_chrome_trace_document_to_stdout_or_a_file() {
    let log = data("rebalance_normal.log");
    let doc = json(&["trace", &log]);
    let events = trace_events(&doc);
    let moves = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == "vbucketMove")
        .count();
    assert_eq!(moves, 5, "one span per move");
    assert!(events
        .iter()
        .any(|e| e["ph"] == "X" && e["cat"] == "rebalance"));

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("trace.json");
    let file_arg = file.to_string_lossy().into_owned();
    let out = run(&["trace", &log, "-o", &file_arg, "--spans-only"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "the document went to the file");
    assert!(stderr(&out).contains("wrote"), "{}", stderr(&out));
    let written: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("written")).expect("the file is JSON");
    assert!(
        trace_events(&written).iter().all(|e| e["ph"] != "i"),
        "--spans-only leaves out instants"
    );
}

/// A `demo` child process, killed (and reaped) on drop.
struct Demo {
    child: Child,
    url: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo(args: &[&str], users: Option<&str>) -> Demo {
    let mut command = Command::new(env!("CARGO_BIN_EXE_master-events"));
    command.env_remove("MASTER_EVENTS_USERS");
    if let Some(users) = users {
        command.env("MASTER_EVENTS_USERS", users);
    }
    let mut child = command
        .arg("demo")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the master-events binary starts");
    let out: ChildStdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = BufReader::new(out);
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut out, &mut std::io::sink());
    });
    let mut demo = Demo {
        child,
        url: String::new(),
    };
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("demo prints its address within 30 s");
    demo.url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("demo's first line is {line:?}"))
        .to_owned();
    demo
}

/// Follows the stream of `types` (plain HTTP/1.0, so the body is not chunked) until
/// a line containing `needle` arrives; panics after `within`.
fn wait_for_event(url: &str, types: &str, needle: &str, within: Duration) {
    let host = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("connect to the demo");
    stream
        .set_read_timeout(Some(within))
        .expect("set a read timeout");
    write!(
        stream,
        "GET /diag/masterEvents?type={types} HTTP/1.0\r\nHost: {host}\r\n\r\n"
    )
    .expect("send the request");
    let deadline = Instant::now() + within;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line.contains(needle) => return,
            Ok(_) => {}
            Err(e) => panic!("reading the stream while waiting for {needle}: {e}"),
        }
    }
    panic!("no {needle} event within {within:?}");
}

#[test]
fn report_on_a_demo_server_counts_every_move_of_its_rebalance() {
    let demo = start_demo(
        &[
            "--listen",
            "127.0.0.1:0",
            "--rate",
            "0",
            "--vbuckets",
            "64",
            "--cluster-nodes",
            "3",
        ],
        None,
    );
    // The scenario's last event: after it, the archive holds the whole story.
    wait_for_event(
        &demo.url,
        "autofailoverDone",
        "\"autofailoverDone\"",
        Duration::from_secs(60),
    );

    let doc = json(&["report", "rebalance", &demo.url, "--json"]);
    assert_eq!(doc["input"]["badLines"], 0, "{}", doc["input"]);
    let rebalances = doc["rebalances"].as_array().expect("rebalances");
    assert_eq!(rebalances.len(), 1, "{doc}");
    let r = &rebalances[0];
    assert_eq!(r["outcome"], "normal");
    let done: u64 = r["buckets"]
        .as_array()
        .map(|bs| bs.iter().filter_map(|b| b["done"].as_u64()).sum())
        .unwrap_or_default();
    assert_eq!(done, 64, "{r}");
    assert_eq!(r["buckets"][0]["moves"], 64, "{r}");

    let text = ok(&["report", "rebalance", &demo.url]);
    assert!(text.contains(": normal"), "{text}");
    let inflight = ok(&[
        "report",
        "inflight",
        &format!("{}/diag/masterEvents", demo.url),
    ]);
    assert_eq!(inflight.trim(), "No moves in flight.");
    let csv = ok(&["report", "moves", &demo.url, "--format", "csv"]);
    assert_eq!(csv.lines().count(), 65, "a header and 64 moves");

    let trace = json(&["trace", &demo.url]);
    let moves = trace_events(&trace)
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == "vbucketMove")
        .count();
    assert_eq!(moves, 64);
}

/// One plain HTTP/1.0 GET; returns the response head and body.
fn get(url: &str, path: &str, auth: Option<(&str, &str)>) -> (String, String) {
    use base64::Engine as _;
    use std::io::Read as _;
    let host = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set a read timeout");
    let authorization = auth
        .map(|(user, password)| {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Authorization: Basic {token}\r\n")
        })
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\n{authorization}\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

#[test]
fn a_protected_server_is_read_with_the_given_credentials_and_the_page_needs_them_too() {
    let demo = start_demo(
        &["--listen", "127.0.0.1:0", "--rate", "0", "--vbuckets", "8"],
        Some("ops:s3cret-pw:read"),
    );

    let out = run_as(None, &["report", "rebalance", &demo.url]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("authentication required"),
        "{}",
        stderr(&out)
    );

    let out = run_as(Some("ops:wrong-pw"), &["report", "rebalance", &demo.url]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused the credentials"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("wrong-pw"), "{}", stderr(&out));

    let out = run_as(Some("ops:s3cret-pw"), &["report", "rebalance", &demo.url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run_as(
        None,
        &[
            "trace",
            &demo.url,
            "--user",
            "ops:s3cret-pw",
            "-o",
            "/dev/null",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let (head, _) = get(&demo.url, "/ui", None);
    assert!(head.starts_with("HTTP/1.0 401"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{head}"
    );
    let (head, body) = get(&demo.url, "/ui/", Some(("ops", "s3cret-pw")));
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(head.contains("text/html"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy"),
        "{head}"
    );
    assert!(body.contains("id=\"event-count\""), "{body}");
}
