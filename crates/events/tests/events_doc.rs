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
        assert!(
            page.contains(&format!("\n### {frame}\n")),
            "no section for {frame}"
        );
    }
}
