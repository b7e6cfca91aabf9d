//! The catalog, checked where it lives: every type has a sample line in
//! `tests/data/ns_server_samples.ndjson` (the lines ns_server writes, which the
//! parser must take), and the README states the catalog's real size. A new type
//! without a sample, or a README left behind, fails here.

use std::collections::BTreeSet;
use std::path::Path;

use master_events_events::{parse_line, EventType, StreamLine};

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{} is readable: {e}", full.display()))
}

#[test]
fn every_event_type_has_a_sample_line_that_parses() {
    let mut seen = BTreeSet::new();
    for (i, line) in repo_file("tests/data/ns_server_samples.ndjson")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match parse_line(line.as_bytes()) {
            Ok(StreamLine::Event(record)) => {
                seen.insert(record.event.event_type().as_str());
            }
            other => panic!("sample line {} is not an event: {other:?}", i + 1),
        }
    }
    let missing: Vec<&str> = EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .filter(|t| !seen.contains(t))
        .collect();
    assert!(
        missing.is_empty(),
        "types without a sample in tests/data/ns_server_samples.ndjson: {missing:?}"
    );
}

#[test]
fn the_readme_states_the_size_of_the_catalog() {
    let readme = repo_file("README.md");
    let stated = format!("({} event types)", EventType::ALL.len());
    assert!(
        readme.contains(&stated),
        "README.md should say {stated:?} in its crate table"
    );
}
