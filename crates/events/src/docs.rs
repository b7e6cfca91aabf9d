//! The catalog's reference page, `docs/events.md`, generated from the published
//! schemas.
//!
//! Owns: [`events_markdown`]. Promises: the page says only what the committed
//! schemas say (each type's description and its fields: JSON type, required or
//! not, description) plus one example line per type, taken from the sample lines
//! of ns_server's log that the catalog's tests read (`tests/data/ns_server_samples.ndjson`).
//! `crates/events/tests/events_doc.rs` fails when the committed page differs from a
//! fresh generation; `master-events schemas --events-doc docs/events.md` rewrites it.

use std::fmt::Write as _;

use serde_json::Value;

use crate::{published, EventType};

/// The sample lines of ns_server's log, one or more per event type.
const SAMPLES: &str = include_str!("../../../tests/data/ns_server_samples.ndjson");

/// Envelope fields: described once at the top, not in every type's table.
const ENVELOPE: &[&str] = &["type", "seq", "ts", "origin", "originSeq", "originTs"];

/// The whole page, as committed in `docs/events.md`.
pub fn events_markdown() -> String {
    let mut out = String::new();
    let version = published::get("version.json")
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|v| v.get("version").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let _ = writeln!(
        out,
        "# Event types\n\n\
         <!-- Generated from schemas/ by `master-events schemas --events-doc docs/events.md`; \
         do not edit (crates/events/tests/events_doc.rs fails on drift). -->\n\n\
         The {} event types of the catalog (schema set {version}), one line of NDJSON each. \
         Every line's JSON Schema is served at `GET /schemas/event/TYPE.json` and committed \
         under `schemas/event/`; `schemas/stream-line.json` is any line of a stream, \
         `schemas/ingest-line.json` any line a client may send.\n",
        EventType::ALL.len()
    );
    envelope_section(&mut out);
    let _ = writeln!(out, "## Types\n");
    let mut names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    names.sort_unstable();
    for name in &names {
        let _ = writeln!(out, "- [`{name}`](#{})", name.to_lowercase());
    }
    out.push('\n');
    for name in names {
        type_section(&mut out, name, &format!("event/{name}.json"), sample(name));
    }
    let _ = writeln!(
        out,
        "## Control frames\n\n\
         A stream also carries these lines, which are not events (no `seq` of their own).\n"
    );
    for name in ["heartbeat", "gap", "reset"] {
        let example = control_example(name);
        type_section(
            &mut out,
            name,
            &format!("control/{name}.json"),
            Some(&example),
        );
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn schema(path: &str) -> Value {
    published::get(path)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

fn envelope_section(out: &mut String) {
    let any = schema("event/becameMaster.json");
    let _ = writeln!(
        out,
        "## Envelope\n\n\
         Every event line has these fields besides its own; `type` names the event.\n\n\
         | field | type | description |\n|---|---|---|"
    );
    for field in ENVELOPE.iter().filter(|f| **f != "type") {
        let prop = &any["properties"][field];
        let _ = writeln!(
            out,
            "| `{field}` | {} | {} |",
            json_type(prop),
            cell(prop["description"].as_str().unwrap_or(""))
        );
    }
    out.push('\n');
}

fn type_section(out: &mut String, name: &str, path: &str, example: Option<&str>) {
    let schema = schema(path);
    let _ = writeln!(out, "### {name}\n");
    if let Some(d) = schema["description"].as_str() {
        let _ = writeln!(out, "{}\n", d.trim());
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let fields: Vec<(&String, &Value)> = schema["properties"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !ENVELOPE.contains(&k.as_str()))
                .collect()
        })
        .unwrap_or_default();
    if fields.is_empty() {
        let _ = writeln!(out, "No fields of its own.\n");
    } else {
        let _ = writeln!(
            out,
            "| field | type | required | description |\n|---|---|---|---|"
        );
        for (field, prop) in fields {
            let _ = writeln!(
                out,
                "| `{field}` | {} | {} | {} |",
                json_type(prop),
                if required.contains(&field.as_str()) {
                    "yes"
                } else {
                    "no"
                },
                cell(prop["description"].as_str().unwrap_or(""))
            );
        }
        out.push('\n');
    }
    if let Some(line) = example {
        let _ = writeln!(out, "```json\n{line}\n```\n");
    }
    let _ = writeln!(out, "Schema: `schemas/{path}`.\n");
}

/// An example line of a control frame, written by its own encoder.
fn control_example(name: &str) -> String {
    use crate::line::{Gap, Heartbeat, Reset};
    let history = "4e2ff39def9df61a";
    let mut line = Vec::new();
    match name {
        "heartbeat" => Heartbeat {
            seq: 1042,
            ts: crate::Timestamp::from_micros(1_333_576_052_926_554),
            history: Some(history.to_owned()),
        }
        .encode_line(&mut line),
        "gap" => Gap::new(5, 104, "evicted from the archive").encode_line(&mut line),
        _ => Reset {
            history: history.to_owned(),
            oldest_seq: 1,
            last_seq: 1042,
            requested_history: Some("d5c44e62882c17ee".to_owned()),
            requested_since: 980,
            reason: "history changed".to_owned(),
        }
        .encode_line(&mut line),
    }
    String::from_utf8_lossy(&line).trim_end().to_owned()
}

/// The first sample line of a type.
fn sample(name: &str) -> Option<&'static str> {
    SAMPLES.lines().find(|line| {
        serde_json::from_str::<Value>(line)
            .ok()
            .is_some_and(|v| v["type"] == name)
    })
}

/// A property's JSON type, as a reader says it: `integer (0–65535)`, `array of string`.
fn json_type(prop: &Value) -> String {
    if let Some(c) = prop.get("const") {
        return format!("`{c}`");
    }
    if let Some(options) = prop.get("oneOf").and_then(Value::as_array) {
        let consts: Vec<String> = options
            .iter()
            .filter_map(|o| o.get("const"))
            .map(|c| format!("`{c}`"))
            .collect();
        if consts.len() == options.len() {
            return format!("one of {}", consts.join(", "));
        }
    }
    if let Some(values) = prop.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        return format!("one of {}", names.join(", "));
    }
    let base = match &prop["type"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ if prop.get("$ref").is_some() || prop.get("anyOf").is_some() => "see schema".into(),
        _ => "any".into(),
    };
    match base.as_str() {
        "array" => format!("array of {}", json_type(&prop["items"])),
        "integer" => match (prop["minimum"].as_u64(), prop["maximum"].as_u64()) {
            (Some(lo), Some(hi)) if hi <= u64::from(u32::MAX) => format!("integer ({lo}–{hi})"),
            (Some(lo), _) if lo > 0 => format!("integer (≥ {lo})"),
            _ => "integer".into(),
        },
        _ => base,
    }
}

/// Text fit for one table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}
