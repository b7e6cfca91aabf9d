//! The committed API documents (`schemas/openapi.json`, `schemas/asyncapi.json`) are
//! exactly what the server generates and serves; `master-events schemas --out
//! schemas` rewrites them.

use std::path::PathBuf;

use master_events_server::{asyncapi, openapi};

fn committed(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .join(name);
    std::fs::read(&path).unwrap_or_default()
}

#[test]
fn the_committed_openapi_document_matches_a_fresh_generation() {
    assert!(
        committed("openapi.json") == openapi::to_bytes(&openapi::document()),
        "schemas/openapi.json drifted from the route table; run \
         `cargo run -p master-events-cli -- schemas --out schemas`"
    );
}

#[test]
fn the_committed_asyncapi_document_matches_a_fresh_generation() {
    assert!(
        committed("asyncapi.json") == openapi::to_bytes(&asyncapi::document()),
        "schemas/asyncapi.json drifted from the channels; run \
         `cargo run -p master-events-cli -- schemas --out schemas`"
    );
}
