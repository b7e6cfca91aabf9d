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

/// The compatibility gate: against the last released set (`schemas-released/`), the
/// committed one may change compatibly under the same major version; a change that
/// breaks a consumer of the released set needs a higher major version
/// (`compat::SCHEMA_VERSION`), and then a new released set.
#[test]
fn a_change_that_breaks_consumers_of_the_released_set_raises_the_major_version() {
    use master_events_events::compat::{compare, major, Impact, SCHEMA_VERSION};
    use std::collections::BTreeMap;
    let released_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas-released");
    let read = |dir: &PathBuf| -> BTreeMap<String, serde_json::Value> {
        let mut set = BTreeMap::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("a readable directory") {
                let path = entry.expect("an entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "json") {
                    let rel = path
                        .strip_prefix(dir)
                        .expect("under the directory")
                        .to_string_lossy()
                        .replace('\\', "/");
                    let text = std::fs::read_to_string(&path).expect("readable");
                    set.insert(rel, serde_json::from_str(&text).expect("JSON"));
                }
            }
        }
        set
    };
    let released = read(&released_dir);
    let released_version = released["version.json"]["version"]
        .as_str()
        .expect("the released set has a version")
        .to_owned();
    let breaking: Vec<String> = compare(&released, &read(&schema_dir()))
        .into_iter()
        .filter(|c| c.impact == Impact::Breaking)
        .map(|c| c.to_string())
        .collect();
    if major(SCHEMA_VERSION) <= major(&released_version) {
        assert!(
            breaking.is_empty(),
            "breaking changes since the released set {released_version} under version \
             {SCHEMA_VERSION}: raise the major version or make them compatible:\n{}",
            breaking.join("\n")
        );
    }
}
