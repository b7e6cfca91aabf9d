//! The sample lines under `tests/data/`: lines as ns_server writes them, which the
//! events crate must read and write back unchanged, and lines it must refuse.

use std::collections::BTreeSet;
use std::path::PathBuf;

use master_events_events::{parse_line, EventType, Record};
use serde_json::Value;

fn data(name: &str) -> String {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "tests",
        "data",
        name,
    ]
    .iter()
    .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn ns_server_samples_cover_every_catalog_type_exactly_once() {
    let text = data("ns_server_samples.ndjson");
    let types: Vec<String> = lines(&text)
        .iter()
        .map(|l| json(l)["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    let unique: BTreeSet<&str> = types.iter().map(String::as_str).collect();
    let catalog: BTreeSet<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(unique, catalog);
    assert_eq!(types.len(), EventType::ALL.len(), "one line per type");
}

#[test]
fn ns_server_samples_start_with_the_design_examples() {
    let text = data("ns_server_samples.ndjson");
    let first: Vec<&str> = lines(&text).into_iter().take(5).collect();
    assert_eq!(
        first,
        [
            r#"{"type":"becameMaster","ts":1333576032.53991,"node":"n_0@10.17.2.163","host":"10.17.2.163:12000"}"#,
            r#"{"vbucket":0,"type":"vbucketStateChange","ts":1333576042.549572,"state":"active","host":"10.17.2.163:12000","bucket":"default"}"#,
            r#"{"type":"rebalanceStart","ts":1333576051.72607,"pid":"<0.533.0>","keepNodes":["10.17.2.163:12000","10.17.2.163:12002"],"ejectNodes":[],"failedNodes":[],"deltaNodes":[]}"#,
            r#"{"vbucket":43,"type":"updateMap","ts":1333576047.814047,"bucket":"default","chainBefore":["10.17.2.163:12002","10.17.2.163:12004"],"chainAfter":["10.17.2.163:12002",""]}"#,
            r#"{"vbucket":43,"type":"vbucketMoveDone","ts":1333576052.926554,"bucket":"default"}"#,
        ]
    );
}

#[test]
fn ns_server_samples_parse_and_reencode_to_the_same_json() {
    let text = data("ns_server_samples.ndjson");
    for line in lines(&text) {
        let record = match Record::parse(line.as_bytes()) {
            Ok(r) => r,
            Err(e) => panic!("refused ({e}): {line}"),
        };
        assert_eq!(record.envelope.seq, None, "{line}");
        assert!(record.envelope.ts.is_some(), "{line}");
        let encoded = record.to_line();
        let back = json(&String::from_utf8_lossy(&encoded));
        assert_eq!(back, json(line), "{line}");
    }
}

#[test]
fn invalid_samples_are_refused_naming_the_expected_field() {
    let text = data("invalid_samples.ndjson");
    let expect = data("invalid_samples.expect");
    let (lines, expected) = (lines(&text), lines(&expect));
    assert_eq!(
        lines.len(),
        expected.len(),
        "one expectation per invalid line"
    );
    assert!(!lines.is_empty());
    for (line, field) in lines.iter().zip(expected) {
        let field = field.trim();
        let want = (field != "-").then_some(field);
        match parse_line(line.as_bytes()) {
            Ok(parsed) => panic!("accepted {parsed:?}: {line}"),
            Err(e) => assert_eq!(e.field(), want, "{e}: {line}"),
        }
    }
}
