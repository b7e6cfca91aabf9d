//! `master-events schemas --compat BASELINE`: the changes from a baseline set to the
//! committed one, classified; exit 1 on a breaking change. Run on copies of the
//! committed `schemas/` with one change each.

use std::path::Path;
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("readable") {
        let path = entry.expect("entry").path();
        let dest = to.join(path.file_name().expect("a name"));
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).expect("copy");
        }
    }
}

/// `schemas --out CURRENT --compat BASELINE`: (exit code, stdout).
fn compat(current: &Path, baseline: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .arg("schemas")
        .arg("--out")
        .arg(current)
        .arg("--compat")
        .arg(baseline)
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn edit(dir: &Path, file: &str, change: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(file);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
    change(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).expect("JSON")).expect("write");
}

#[test]
fn a_removed_property_is_breaking_and_an_added_optional_one_is_not() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let dir = tempfile::tempdir().expect("temp dir");

    // The released set against itself: nothing.
    let (code, out) = compat(&committed, &committed);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 breaking, 0 compatible"), "{out}");

    // A property removed from deleteBucket: breaking, exit 1.
    let removed = dir.path().join("removed");
    copy_dir(&committed, &removed);
    edit(&removed, "event/deleteBucket.json", |v| {
        v["properties"].as_object_mut().map(|p| p.remove("bucket"));
        v["required"] = serde_json::json!(["type", "ts"]);
    });
    let (code, out) = compat(&removed, &committed);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("breaking: event/deleteBucket.json/properties/bucket: property removed"),
        "{out}"
    );

    // An optional property added: compatible, exit 0.
    let added = dir.path().join("added");
    copy_dir(&committed, &added);
    edit(&added, "event/deleteBucket.json", |v| {
        v["properties"]["reason"] = serde_json::json!({"type": "string", "description": "why"});
    });
    let (code, out) = compat(&added, &committed);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "compatible: event/deleteBucket.json/properties/reason: new optional property"
        ),
        "{out}"
    );

    // A baseline that is not there is said so.
    let (code, _) = compat(&committed, &dir.path().join("nope"));
    assert_eq!(code, Some(2));
}
