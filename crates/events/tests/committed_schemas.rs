//! The committed `schemas/` directory is exactly what the catalog generates, and the
//! copies built into the crate are those files.

use std::path::PathBuf;

use master_events_events::{published, schema};

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

#[test]
fn committed_schemas_match_a_fresh_generation() {
    let dir = schema_dir();
    let mut drift = Vec::new();
    for file in schema::generate() {
        match std::fs::read(dir.join(&file.path)) {
            Ok(bytes) if bytes == file.to_bytes() => {}
            Ok(_) => drift.push(format!("changed: {}", file.path)),
            Err(_) => drift.push(format!("missing: {}", file.path)),
        }
    }
    assert!(
        drift.is_empty(),
        "schemas/ drifted from the catalog ({drift:?}); run `cargo run -p master-events-cli -- schemas --out schemas`"
    );
}

#[test]
fn no_stale_schema_file_is_committed() {
    let generated: Vec<String> = schema::generate().into_iter().map(|f| f.path).collect();
    for (path, _) in published::FILES {
        assert!(
            generated.iter().any(|g| g == path),
            "stale committed schema {path}"
        );
    }
    assert_eq!(published::FILES.len(), generated.len());
}

#[test]
fn built_in_copies_are_the_committed_files() {
    for (path, contents) in published::FILES {
        let on_disk = std::fs::read_to_string(schema_dir().join(path)).unwrap_or_default();
        assert_eq!(&on_disk, contents, "{path}");
    }
}

#[test]
fn every_committed_property_has_a_description() {
    for (path, contents) in published::FILES {
        let value: serde_json::Value = serde_json::from_str(contents).unwrap_or_default();
        let missing = schema::undescribed_properties(&value);
        assert!(missing.is_empty(), "{path}: {missing:?}");
    }
}
