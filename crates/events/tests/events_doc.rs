//! `docs/events.md` is exactly what the published schemas generate
//! (`master_events_events::docs`), and it covers every type with an example line.

use std::path::PathBuf;

use master_events_events::{docs, EventType};

#[test]
fn the_committed_events_page_matches_a_fresh_generation() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/events.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == docs::events_markdown(),
        "docs/events.md drifted from the schemas; run \
         `cargo run -p master-events-cli -- schemas --events-doc docs/events.md`"
    );
}

#[test]
fn every_type_has_a_section_with_an_example_line() {
    let page = docs::events_markdown();
    for t in EventType::ALL {
        let name = t.as_str();
        let section = page
            .split(&format!("\n### {name}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no section for {name}"));
        let section = section.split("\n### ").next().unwrap_or_default();
        assert!(
            section.contains(&format!("{{\"type\":\"{name}\""))
                || section.contains(&format!("\"type\":\"{name}\"")),
            "no example line for {name}"
        );
    }
    for frame in ["heartbeat", "gap", "reset"] {
        let section = page
            .split(&format!("\n### {frame}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no section for {frame}"));
        assert!(
            section.contains(&format!("{{\"type\":\"{frame}\"")),
            "no example line for {frame}"
        );
    }
}

#[test]
fn every_example_line_reads_as_what_its_section_names() {
    let page = docs::events_markdown();
    let mut read = 0;
    for section in page.split("\n### ").skip(1) {
        let name = section.lines().next().unwrap_or_default().trim();
        for block in section.split("```json\n").skip(1) {
            let line = block.split("\n```").next().unwrap_or_default();
            let parsed = master_events_events::parse_line(line.as_bytes())
                .unwrap_or_else(|e| panic!("the example of {name} does not read: {e}\n{line}"));
            let read_as = match parsed {
                master_events_events::StreamLine::Event(r) => r.event.type_name().to_owned(),
                master_events_events::StreamLine::Heartbeat(_) => "heartbeat".into(),
                master_events_events::StreamLine::Gap(_) => "gap".into(),
                master_events_events::StreamLine::Reset(_) => "reset".into(),
            };
            assert_eq!(read_as, name, "the example in the section of {name}");
            read += 1;
        }
    }
    assert!(read > EventType::ALL.len(), "{read} examples read");
}
