//! `master-events schemas`: writes the JSON Schemas generated from the catalog, or
//! checks that a directory holds exactly them.
//!
//! Promises: `--check` compares bytes, so any drift between the Rust types and the
//! committed files (a changed field, a new type, a stale file) is reported by path;
//! a directory that does not exist (or is not a directory) is said so in one line,
//! not as every file missing, and exits 2. `--compat BASELINE` lists every change
//! from a baseline set to the directory's, breaking or compatible for a consumer
//! (`master_events_events::compat`), and exits 1 on a breaking one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use master_events_events::compat::{compare, Impact};
use master_events_events::schema::{generate, SchemaFile};

/// Arguments of `schemas`.
#[derive(Args, Debug)]
pub struct SchemasArgs {
    /// Directory to write the schema files into (or to check).
    #[arg(long, default_value = "schemas")]
    pub out: PathBuf,
    /// Do not write: compare the directory with a fresh generation and exit 1 on any
    /// difference (missing, changed or extra files).
    #[arg(long, conflicts_with = "compat")]
    pub check: bool,
    /// Do not write: list every change from the schema set in BASELINE (e.g. the
    /// last released one, `schemas-released`) to the one in --out, each breaking or
    /// compatible for a consumer; exit 1 on a breaking change (a type or property
    /// removed, a type narrowed, a property newly required), else 0.
    #[arg(long, value_name = "BASELINE")]
    pub compat: Option<PathBuf>,
    /// Instead of the schema files, write the catalog's reference page (every type:
    /// what it means, its fields, an example line), generated from the schemas built
    /// into this binary, to this file (`docs/events.md`); with --check, compare it.
    #[arg(long, value_name = "FILE", conflicts_with = "compat")]
    pub events_doc: Option<PathBuf>,
}

/// The API documents `schemas` writes beside the event schemas (the server
/// generates them from its route table and channels).
const API_DOCUMENTS: &[&str] = &["openapi.json", "asyncapi.json"];

/// The API documents, generated: (file name, bytes).
fn api_documents() -> Vec<(&'static str, Vec<u8>)> {
    use master_events_server::{asyncapi, openapi};
    vec![
        ("openapi.json", openapi::to_bytes(&openapi::document())),
        ("asyncapi.json", openapi::to_bytes(&asyncapi::document())),
    ]
}

/// A difference between a directory and a fresh generation.
#[derive(Debug, PartialEq, Eq)]
pub enum Drift {
    /// A generated file is absent from the directory.
    Missing(String),
    /// A file differs from its generation.
    Changed(String),
    /// A `.json` file in the directory is not generated any more.
    Extra(String),
}

fn existing_json_files(dir: &Path) -> Result<BTreeSet<String>> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeSet<String>) -> Result<()> {
        if !dir.exists() {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, base, out)?;
            } else if path.extension().is_some_and(|e| e == "json") {
                if let Ok(rel) = path.strip_prefix(base) {
                    out.insert(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out)?;
    // The API documents written beside the event schemas are compared on their own.
    for doc in API_DOCUMENTS {
        out.remove(*doc);
    }
    Ok(out)
}

/// Compares `dir` with `files`.
pub fn check(dir: &Path, files: &[SchemaFile]) -> Result<Vec<Drift>> {
    let mut drift = Vec::new();
    let mut existing = existing_json_files(dir)?;
    for file in files {
        let path = dir.join(&file.path);
        match std::fs::read(&path) {
            Ok(bytes) if bytes == file.to_bytes() => {}
            Ok(_) => drift.push(Drift::Changed(file.path.clone())),
            Err(_) => drift.push(Drift::Missing(file.path.clone())),
        }
        existing.remove(&file.path);
    }
    drift.extend(existing.into_iter().map(Drift::Extra));
    for (name, bytes) in api_documents() {
        match std::fs::read(dir.join(name)) {
            Ok(on_disk) if on_disk == bytes => {}
            Ok(_) => drift.push(Drift::Changed(name.to_owned())),
            Err(_) => drift.push(Drift::Missing(name.to_owned())),
        }
    }
    Ok(drift)
}

/// Writes `files` under `dir`, removing `.json` files that are no longer generated.
pub fn write(dir: &Path, files: &[SchemaFile]) -> Result<usize> {
    let stale = existing_json_files(dir)?;
    for file in files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, file.to_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for path in stale {
        if !files.iter().any(|f| f.path == path) {
            let full = dir.join(&path);
            std::fs::remove_file(&full).with_context(|| format!("removing {}", full.display()))?;
        }
    }
    for (name, bytes) in api_documents() {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files.len() + API_DOCUMENTS.len())
}

/// The schema files of `dir` by relative path, and its set's version.
fn read_set(
    dir: &Path,
    what: &str,
) -> Result<(
    std::collections::BTreeMap<String, serde_json::Value>,
    String,
)> {
    if !dir.is_dir() {
        bail!(
            "no directory {} ({what}): give a directory of schema files",
            dir.display()
        );
    }
    let mut set = std::collections::BTreeMap::new();
    for rel in existing_json_files(dir)? {
        let path = dir.join(&rel);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        set.insert(rel, value);
    }
    let version = set
        .get("version.json")
        .and_then(|v| v.get("version"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("(none)")
        .to_owned();
    Ok((set, version))
}

fn compat(current_dir: &Path, baseline_dir: &Path) -> Result<i32> {
    let (baseline, from) = read_set(baseline_dir, "the baseline")?;
    let (current, to) = read_set(current_dir, "--out")?;
    let changes = compare(&baseline, &current);
    for c in &changes {
        outln!("{c}");
    }
    let breaking = changes
        .iter()
        .filter(|c| c.impact == Impact::Breaking)
        .count();
    outln!(
        "{} ({from}) -> {} ({to}): {breaking} breaking, {} compatible change(s)",
        baseline_dir.display(),
        current_dir.display(),
        changes.len() - breaking
    );
    Ok(i32::from(breaking > 0))
}

/// Runs the command; returns the process exit code.
pub fn run(args: &SchemasArgs) -> Result<i32> {
    if let Some(baseline) = &args.compat {
        return compat(&args.out, baseline);
    }
    if let Some(doc) = &args.events_doc {
        let page = master_events_events::docs::events_markdown();
        if args.check {
            let on_disk = std::fs::read_to_string(doc)
                .with_context(|| format!("cannot read {}", doc.display()))?;
            if on_disk == page {
                outln!("{}: up to date", doc.display());
                return Ok(0);
            }
            outln!(
                "{}: differs from the schemas; run `master-events schemas --events-doc {}`",
                doc.display(),
                doc.display()
            );
            return Ok(1);
        }
        std::fs::write(doc, &page).with_context(|| format!("writing {}", doc.display()))?;
        outln!("{}: written", doc.display());
        return Ok(0);
    }
    let files = generate();
    if args.check {
        match std::fs::metadata(&args.out) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "{} is not a directory; --check compares a directory of schema files \
                 (--out DIR, default `schemas`)",
                args.out.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no directory {} to check; give the one that holds the schema files with \
                 --out DIR, or write them there with `master-events schemas --out {}`",
                args.out.display(),
                args.out.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", args.out.display())),
        }
        let drift = check(&args.out, &files)?;
        if drift.is_empty() {
            outln!(
                "{}: {} schema files up to date",
                args.out.display(),
                files.len()
            );
            return Ok(0);
        }
        for d in &drift {
            match d {
                Drift::Missing(p) => outln!("missing: {p}"),
                Drift::Changed(p) => outln!("changed: {p}"),
                Drift::Extra(p) => outln!("not generated any more: {p}"),
            }
        }
        outln!(
            "{}: {} file(s) differ from the catalog; run `master-events schemas --out {}`",
            args.out.display(),
            drift.len(),
            args.out.display()
        );
        return Ok(1);
    }
    let n = write(&args.out, &files)?;
    outln!("wrote {n} schema files to {}", args.out.display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_reports_missing_changed_and_extra_files() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let files = generate();
        write(dir.path(), &files)?;
        assert!(check(dir.path(), &files)?.is_empty());
        std::fs::remove_file(dir.path().join("event/becameMaster.json"))?;
        std::fs::write(dir.path().join("event.json"), b"{}")?;
        std::fs::write(dir.path().join("event/old.json"), b"{}")?;
        let drift = check(dir.path(), &files)?;
        assert_eq!(
            drift,
            vec![
                Drift::Missing("event/becameMaster.json".into()),
                Drift::Changed("event.json".into()),
                Drift::Extra("event/old.json".into()),
            ]
        );
        write(dir.path(), &files)?;
        assert!(
            check(dir.path(), &files)?.is_empty(),
            "write removes stale files"
        );
        Ok(())
    }
}
