//! docs/writing-a-sink.md shows this crate's files verbatim: each code block that
//! follows a `<!-- file: PATH -->` marker must equal that file, so the guide cannot
//! drift from code that compiles and passes the kit.

use std::path::Path;

#[test]
fn the_guide_shows_the_example_crate_verbatim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let guide_path = root.join("docs/writing-a-sink.md");
    let guide = std::fs::read_to_string(&guide_path).expect("docs/writing-a-sink.md");
    let mut shown = Vec::new();
    let mut rest = guide.as_str();
    while let Some(at) = rest.find("<!-- file: ") {
        let after = &rest[at + "<!-- file: ".len()..];
        let (path, after) = after.split_once(" -->").expect("a closed marker");
        let fence = after.find("```").expect("a code block after the marker");
        let body_start = after[fence..].find('\n').expect("a fence line") + fence + 1;
        let body_len = after[body_start..].find("\n```").expect("a closing fence") + 1;
        let block = &after[body_start..body_start + body_len];
        let file = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|e| panic!("{path} (shown in the guide): {e}"));
        assert!(
            block == file,
            "docs/writing-a-sink.md shows {path} differently from the file: update the guide's block to the file"
        );
        shown.push(path.to_owned());
        rest = &after[body_start + body_len..];
    }
    assert_eq!(
        shown,
        [
            "plugins/sink-example/Cargo.toml",
            "plugins/sink-example/src/lib.rs",
            "plugins/sink-example/tests/kit.rs",
            "plugins/sink-example/src/counts.rs",
            "plugins/sink-example/tests/counts_kit.rs",
        ]
    );
}
