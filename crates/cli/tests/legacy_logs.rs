//! Logs of ns_server's 2012 form read by `validate --legacy`, `report` and `trace`
//! (docs/legacy-logs.md): the original description's example lines, and a whole
//! rebalance log rewritten in the old form giving the same report as in the new.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{Map, Value};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(args)
        .env_remove("MASTER_EVENTS_AUTH")
        .output()
        .expect("run master-events")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const EXAMPLES: &str = "crates/events/tests/data/ns_server-2012-examples.ndjson";

#[test]
fn validate_refuses_the_2012_lines_pointing_to_legacy_and_reads_them_with_it() {
    let file = repo(EXAMPLES);
    let file = file.to_str().expect("utf-8 path");
    let plain = run(&["validate", file]);
    assert_eq!(plain.status.code(), Some(1), "{}", text(&plain.stdout));
    assert!(
        text(&plain.stdout).contains("11 of the invalid lines are in ns_server's 2012 form"),
        "{}",
        text(&plain.stdout)
    );
    assert!(text(&plain.stdout).contains("--legacy"));

    let legacy = run(&["validate", "--legacy", file]);
    let out = text(&legacy.stdout);
    assert_eq!(legacy.status.code(), Some(0), "{out}");
    assert!(out.contains("11 valid, 0 invalid"), "{out}");
    assert!(
        out.contains("11 lines were in ns_server's 2012 form"),
        "{out}"
    );
}

#[test]
fn report_reads_the_2012_lines_and_says_how_many_it_rewrote() {
    let file = repo(EXAMPLES);
    let out = run(&[
        "report",
        "rebalance",
        file.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(doc["input"]["events"], 11, "{doc}");
    assert_eq!(doc["input"]["legacyLines"], 11, "{doc}");
    assert_eq!(doc["input"]["badLines"], 0, "{doc}");
    assert_eq!(doc["rebalances"][0]["pid"], "<0.533.0>", "{doc}");
    assert!(
        text(&out.stderr).contains("read 11 line(s) in ns_server's 2012 form"),
        "{}",
        text(&out.stderr)
    );
}

/// One current-form line written as the 2012 facility would have: numbers as
/// strings, node names as quoted atoms, createBucket parameters as strings, no
/// `deltaNodes`, a one-host failover as `host`.
fn old_form(line: &str) -> String {
    let mut obj: Map<String, Value> = serde_json::from_str(line).expect("a JSON object");
    let ty = obj["type"].as_str().unwrap_or_default().to_owned();
    let atom = |v: &Value| match v {
        Value::String(s) if s.contains('@') => Value::String(format!("'{s}'")),
        other => other.clone(),
    };
    for (key, value) in obj.iter_mut() {
        let new = match &*value {
            Value::Number(n) => Value::String(n.to_string()),
            Value::String(_) => atom(value),
            Value::Array(items) => Value::Array(items.iter().map(atom).collect()),
            Value::Object(params) if key.as_str() == "params" => Value::Object(
                params
                    .iter()
                    .map(|(k, v)| match v {
                        Value::Number(n) if n.is_u64() => (k.clone(), Value::String(n.to_string())),
                        other => (k.clone(), other.clone()),
                    })
                    .collect(),
            ),
            other => other.clone(),
        };
        *value = new;
    }
    if ty == "rebalanceStart" && obj.get("deltaNodes") == Some(&Value::Array(vec![])) {
        obj.remove("deltaNodes");
    }
    if ty == "failover" {
        if let Some(Value::Array(hosts)) = obj.get("hosts").cloned() {
            if hosts.len() == 1 {
                obj.remove("hosts");
                obj.insert("host".into(), hosts[0].clone());
            }
        }
    }
    serde_json::to_string(&obj).expect("encode")
}

#[test]
fn a_whole_rebalance_log_in_the_2012_form_gives_the_same_reports_as_in_the_current_form() {
    let new_path = repo("tests/data/report/rebalance_normal.log");
    let new_text = std::fs::read_to_string(&new_path).expect("the normal rebalance log");
    let dir = tempfile::tempdir().expect("temp dir");
    let old_path = dir.path().join("rebalance_2012.log");
    let old_text: String = new_text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| old_form(l) + "\n")
        .collect();
    std::fs::write(&old_path, &old_text).expect("write the old-form log");
    let lines = old_text.lines().count() as u64;
    // The old form is really refused as it stands.
    let refused = run(&["validate", old_path.to_str().unwrap()]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "the old-form log validated as is"
    );

    let (new, old) = (new_path.to_str().unwrap(), old_path.to_str().unwrap());
    for args in [
        &["report", "rebalance", "--format", "json"][..],
        &["report", "moves", "--format", "json"][..],
        &[
            "report",
            "inflight",
            "--format",
            "json",
            "--now",
            "1700000100",
        ][..],
    ] {
        let report = |file: &str| {
            let mut all = args.to_vec();
            all.insert(2, file);
            let out = run(&all);
            assert_eq!(out.status.code(), Some(0), "{all:?}: {}", text(&out.stderr));
            // One JSON document, or one per row (`moves`).
            let mut docs: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
                .into_iter::<Value>()
                .collect::<Result<_, _>>()
                .expect("json");
            assert!(!docs.is_empty(), "{all:?}: no output");
            let input = docs[0].as_object_mut().and_then(|o| o.remove("input"));
            (docs, input)
        };
        let (from_new, input_new) = report(new);
        let (from_old, input_old) = report(old);
        assert_eq!(from_new, from_old, "{args:?} differs between the two forms");
        if let (Some(a), Some(b)) = (input_new, input_old) {
            assert_eq!(a["events"], b["events"], "{args:?}");
            assert_eq!(b["legacyLines"], lines, "{args:?}: {b}");
            assert_eq!(b["badLines"], 0, "{args:?}: {b}");
        }
    }
    let trace = |file: &str| {
        let out = run(&["trace", file]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).expect("a trace document")
    };
    assert_eq!(
        trace(new),
        trace(old),
        "trace differs between the two forms"
    );
}

mod common;

#[test]
fn ingest_takes_2012_lines_with_legacy_1_and_streams_them_in_the_current_form() {
    let mut server = common::spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let url = common::listening_url(&mut server);
    let addr = common::host_port(&url);
    // The 2012 lines carry `ts`; ingest lines may (the server stamps its own).
    let body = std::fs::read_to_string(repo(EXAMPLES)).expect("the example lines");

    let (status, reply) = common::http_to(&addr, "POST", "/diag/masterEvents", &body);
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("line 1:"), "{reply}");
    assert!(
        reply.contains("?legacy=1"),
        "the refusal points to legacy=1: {reply}"
    );

    let (status, reply) = common::http_to(&addr, "POST", "/diag/masterEvents?legacy=1", &body);
    assert_eq!(status, 200, "{reply}");
    // A feed (stream=1) takes them too.
    let first_two: String = body.lines().take(2).map(|l| format!("{l}\n")).collect();
    let (status, reply) = common::http_to(
        &addr,
        "POST",
        "/diag/masterEvents?stream=1&legacy=1",
        &first_two,
    );
    assert_eq!(status, 200, "{reply}");

    let (status, dump) = common::http_to(&addr, "GET", "/diag/masterEvents?o=1", "");
    assert_eq!(status, 200, "{dump}");
    let events: Vec<Value> = dump
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("seq").is_some())
        .collect();
    assert_eq!(events.len(), 13, "{dump}");
    let update_map = events
        .iter()
        .find(|e| e["type"] == "updateMap")
        .expect("the updateMap event");
    assert_eq!(update_map["vbucket"], 43, "{update_map}");
    let failover = events
        .iter()
        .find(|e| e["type"] == "failover")
        .expect("failover");
    assert_eq!(failover["hosts"], serde_json::json!(["10.17.2.163:12004"]));
    let bucket = events
        .iter()
        .find(|e| e["type"] == "createBucket")
        .expect("createBucket");
    assert_eq!(bucket["params"]["ram_quota"], 104857600);
    // What the stream wrote is the current form: it validates without --legacy.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("stream.ndjson");
    std::fs::write(&file, &dump).expect("write the dump");
    let out = run(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("2012"), "{}", text(&out.stdout));

    let (status, reply) = common::http_to(&addr, "POST", "/diag/masterEvents?legacy=maybe", &body);
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("query parameter legacy"), "{reply}");
}
