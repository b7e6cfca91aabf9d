//! ns_server's 2012 log lines (the 11 example lines of the original facility's
//! description, `data/ns_server-2012-examples.ndjson`): each is refused as it stands,
//! and each reads once normalized (crate::legacy, docs/legacy-logs.md).

use master_events_events::legacy::normalize_line;
use master_events_events::{parse_line, StreamLine};

const EXAMPLES: &str = include_str!("data/ns_server-2012-examples.ndjson");

#[test]
fn every_2012_example_line_is_refused_as_is_and_read_once_normalized() {
    let lines: Vec<&str> = EXAMPLES.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        11,
        "the original description has 11 example lines"
    );
    for (i, line) in lines.iter().enumerate() {
        assert!(
            parse_line(line.as_bytes()).is_err(),
            "line {}: read without normalizing: {line}",
            i + 1
        );
        let normalized = normalize_line(line.as_bytes())
            .unwrap_or_else(|e| panic!("line {}: {e}", i + 1))
            .unwrap_or_else(|| panic!("line {}: nothing to normalize in {line}", i + 1));
        match parse_line(&normalized) {
            Ok(StreamLine::Event(record)) => {
                // The timestamp keeps its digits (to the microsecond).
                let ts_text = line
                    .split("\"ts\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .expect("a string ts");
                let secs: f64 = ts_text.parse().expect("a number");
                let micros = record.envelope.ts.map(|t| t.as_micros());
                assert_eq!(micros, Some((secs * 1e6).round() as i64), "line {}", i + 1);
            }
            other => panic!(
                "line {}: normalized {} does not read as an event: {other:?}",
                i + 1,
                String::from_utf8_lossy(&normalized)
            ),
        }
        // Normalizing is done once: the result is the current form.
        assert_eq!(normalize_line(&normalized), Ok(None), "line {}", i + 1);
    }
}

#[test]
fn the_2012_values_survive_normalization() {
    let vbucket = EXAMPLES
        .lines()
        .find(|l| l.contains("\"updateMap\""))
        .expect("an updateMap line");
    let out = String::from_utf8(normalize_line(vbucket.as_bytes()).unwrap().unwrap()).unwrap();
    assert!(out.contains("\"vbucket\":43"), "{out}");
    assert!(
        out.contains(r#""chainAfter":["10.17.2.163:12002",""]"#),
        "{out}"
    );
    let bucket = EXAMPLES
        .lines()
        .find(|l| l.contains("\"createBucket\""))
        .expect("a createBucket line");
    let out = String::from_utf8(normalize_line(bucket.as_bytes()).unwrap().unwrap()).unwrap();
    assert!(out.contains("\"ram_quota\":104857600"), "{out}");
}
