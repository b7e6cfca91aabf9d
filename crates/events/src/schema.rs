//! JSON Schema generation (draft 2020-12) from the catalog.
//!
//! Owns: the set of published schema files and their content, as produced from the
//! Rust types by schemars.
//!
//! Promises:
//! - [`generate`] is deterministic: the same catalog yields byte-identical files, so
//!   the committed `schemas/` directory can be checked against a fresh generation.
//! - Every file is self-contained (no reference leaves the file), so a consumer in
//!   any language can load one file and validate.
//! - Every property carries a `description`, taken from the field's doc comment.
//!
//! The files:
//! - `event/<type>.json`: one event type as it appears in a stream or a log
//!   (`ts` required; `seq`, `origin`, `originTs`, `originSeq` optional).
//! - `event.json`: any event (the union of the above).
//! - `control/heartbeat.json`, `control/gap.json`: the control frames.
//! - `stream-line.json`: any line of `GET /diag/masterEvents` (an event or a frame).
//! - `ingest-line.json`: a line accepted by `POST /diag/masterEvents` (any event;
//!   `ts`, `seq`, `origin` may be present and are replaced by the master's).
//! - `version.json`: the version of the set ([`crate::compat::SCHEMA_VERSION`]).

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::event::EventType;
use crate::line::{Envelope, Gap, Heartbeat, Reset};

/// The `$schema` URI of every generated file.
pub const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// One generated schema file.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaFile {
    /// Path relative to the schema directory, with `/` separators.
    pub path: String,
    /// The schema document.
    pub schema: Value,
}

impl SchemaFile {
    /// The file's bytes as written to disk: pretty JSON and a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = serde_json::to_string_pretty(&self.schema).unwrap_or_default();
        text.push('\n');
        text.into_bytes()
    }
}

fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
}

fn schema_of<T: JsonSchema>() -> Map<String, Value> {
    match generator().root_schema_for::<T>().to_value() {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn properties_mut(schema: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let props = schema
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if !props.is_object() {
        *props = Value::Object(Map::new());
    }
    match props {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

fn set_required(schema: &mut Map<String, Value>, first: &[&str]) {
    let mut required: Vec<Value> = first.iter().map(|s| json!(s)).collect();
    if let Some(Value::Array(existing)) = schema.get("required") {
        required.extend(existing.iter().cloned());
    }
    schema.insert("required".into(), Value::Array(required));
}

/// A self-contained schema object with `type` first, then the given extra
/// properties, then the struct's own.
fn tagged(
    name: &str,
    type_description: &str,
    mut body: Map<String, Value>,
    extra: &Map<String, Value>,
    required_first: &[&str],
) -> Map<String, Value> {
    body.remove("$schema");
    let own = std::mem::take(properties_mut(&mut body));
    let props = properties_mut(&mut body);
    props.insert(
        "type".into(),
        json!({ "const": name, "description": type_description }),
    );
    for (k, v) in extra {
        props.insert(k.clone(), v.clone());
    }
    for (k, v) in own {
        props.insert(k, v);
    }
    body.insert("type".into(), json!("object"));
    body.insert("additionalProperties".into(), json!(false));
    set_required(&mut body, required_first);
    let mut out = Map::new();
    out.insert("$schema".into(), json!(DRAFT));
    for (k, v) in body {
        out.insert(k, v);
    }
    out.insert("title".into(), json!(name));
    out
}

/// The envelope's properties. They are optional by absence, not nullable: the parser
/// refuses `"seq": null`, so the schema must too.
fn envelope_properties() -> Map<String, Value> {
    let mut env = schema_of::<Envelope>();
    let mut props = std::mem::take(properties_mut(&mut env));
    for prop in props.values_mut() {
        if let Some(Value::Array(types)) = prop.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types.remove(0);
                prop["type"] = only;
            }
        }
    }
    props
}

/// The schema of one event type; `ts_required` distinguishes a stream line from an
/// ingest line.
fn event_schema(ty: EventType, ts_required: bool) -> Map<String, Value> {
    let mut generator = generator();
    let body = match ty.fields_schema(&mut generator).to_value() {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let required: &[&str] = if ts_required {
        &["type", "ts"]
    } else {
        &["type"]
    };
    tagged(
        ty.as_str(),
        &format!("The event type: always `{}` for this schema.", ty.as_str()),
        body,
        &envelope_properties(),
        required,
    )
}

fn union(title: &str, description: &str, members: Vec<(String, Map<String, Value>)>) -> Value {
    let mut defs = Map::new();
    let mut one_of = Vec::new();
    for (name, mut schema) in members {
        schema.remove("$schema");
        one_of.push(json!({ "$ref": format!("#/$defs/{name}") }));
        defs.insert(name, Value::Object(schema));
    }
    json!({
        "$schema": DRAFT,
        "title": title,
        "description": description,
        "oneOf": one_of,
        "$defs": defs,
    })
}

fn heartbeat_schema() -> Map<String, Value> {
    tagged(
        "heartbeat",
        "The frame type: always `heartbeat`.",
        schema_of::<Heartbeat>(),
        &Map::new(),
        &["type"],
    )
}

fn gap_schema() -> Map<String, Value> {
    tagged(
        "gap",
        "The frame type: always `gap`.",
        schema_of::<Gap>(),
        &Map::new(),
        &["type"],
    )
}

fn reset_schema() -> Map<String, Value> {
    tagged(
        "reset",
        "The frame type: always `reset`.",
        schema_of::<Reset>(),
        &Map::new(),
        &["type"],
    )
}

/// Generates every published schema file, in a stable order.
pub fn generate() -> Vec<SchemaFile> {
    let mut files = Vec::new();
    let stream_events: Vec<(String, Map<String, Value>)> = EventType::ALL
        .iter()
        .map(|t| (t.as_str().to_owned(), event_schema(*t, true)))
        .collect();
    for (name, schema) in &stream_events {
        files.push(SchemaFile {
            path: format!("event/{name}.json"),
            schema: Value::Object(schema.clone()),
        });
    }
    files.push(SchemaFile {
        path: "control/heartbeat.json".into(),
        schema: Value::Object(heartbeat_schema()),
    });
    files.push(SchemaFile {
        path: "control/gap.json".into(),
        schema: Value::Object(gap_schema()),
    });
    files.push(SchemaFile {
        path: "control/reset.json".into(),
        schema: Value::Object(reset_schema()),
    });
    files.push(SchemaFile {
        path: "event.json".into(),
        schema: union(
            "event",
            "Any master activity event, as it appears in a stream or in master_events.log.",
            stream_events.clone(),
        ),
    });
    let mut stream_lines = stream_events;
    stream_lines.push(("heartbeat".into(), heartbeat_schema()));
    stream_lines.push(("gap".into(), gap_schema()));
    stream_lines.push(("reset".into(), reset_schema()));
    files.push(SchemaFile {
        path: "stream-line.json".into(),
        schema: union(
            "stream-line",
            "Any line of GET /diag/masterEvents: an event or a control frame.",
            stream_lines,
        ),
    });
    let ingest: Vec<(String, Map<String, Value>)> = EventType::ALL
        .iter()
        .map(|t| (t.as_str().to_owned(), event_schema(*t, false)))
        .collect();
    files.push(SchemaFile {
        path: "ingest-line.json".into(),
        schema: union(
            "ingest-line",
            "A line accepted by POST /diag/masterEvents: any event; a ts, seq, origin, originTs or originSeq it carries is replaced by the master's own.",
            ingest,
        ),
    });
    for file in &mut files {
        bound_integers(&mut file.schema);
    }
    files.push(SchemaFile {
        path: "version.json".into(),
        schema: json!({
            "description": "The version of this schema set (semver): its major version rises with any change that breaks a consumer of the set before (`master-events schemas --compat`).",
            "version": crate::compat::SCHEMA_VERSION,
        }),
    });
    files
}

/// Gives every integer of a fixed width (`format: uint64`, `int64`, `uint32`, ...)
/// the `minimum` and `maximum` of that width where it lacks them: `format` is only
/// an annotation to a validator, and without the bounds a schema would take
/// `1e42` where the parser refuses it (found by the `schemas` fuzz target).
fn bound_integers(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let bounds: Option<(Value, Value)> = match map.get("format").and_then(Value::as_str) {
                Some("uint64") => Some((0.into(), u64::MAX.into())),
                Some("uint32") => Some((0.into(), u32::MAX.into())),
                Some("uint16") => Some((0.into(), u16::MAX.into())),
                Some("uint8") => Some((0.into(), u8::MAX.into())),
                Some("int64") => Some((i64::MIN.into(), i64::MAX.into())),
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                _ => None,
            };
            if let Some((min, max)) = bounds {
                map.entry("minimum").or_insert(min);
                map.entry("maximum").or_insert(max);
            }
            for value in map.values_mut() {
                bound_integers(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// Every property in `schema` (at any depth) that lacks a `description`, as
/// JSON-pointer-like paths.
pub fn undescribed_properties(schema: &Value) -> Vec<String> {
    fn walk(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    for (name, prop) in props {
                        let here = format!("{path}/properties/{name}");
                        let described = prop
                            .get("description")
                            .and_then(Value::as_str)
                            .is_some_and(|d| !d.trim().is_empty());
                        if !described {
                            out.push(here.clone());
                        }
                        walk(prop, &here, out);
                    }
                }
                for (k, v) in map {
                    if k != "properties" {
                        walk(v, &format!("{path}/{k}"), out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(schema, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_type_plus_unions_and_frames() {
        let files = generate();
        // event/*, control/{heartbeat,gap,reset}, the unions event, stream-line
        // and ingest-line, and version.json.
        assert_eq!(files.len(), EventType::ALL.len() + 7);
        assert!(files.iter().any(|f| f.path == "version.json"));
        for t in EventType::ALL {
            assert!(files
                .iter()
                .any(|f| f.path == format!("event/{}.json", t.as_str())));
        }
    }

    #[test]
    fn every_property_has_a_description() {
        for file in generate() {
            let missing = undescribed_properties(&file.schema);
            assert!(missing.is_empty(), "{}: {missing:?}", file.path);
        }
    }

    #[test]
    fn the_undescribed_check_can_fail() {
        let schema = json!({"properties": {"a": {"type": "string"}, "b": {"description": "x"}}});
        assert_eq!(
            undescribed_properties(&schema),
            vec!["/properties/a".to_owned()]
        );
    }

    #[test]
    fn generation_is_deterministic() {
        let a: Vec<Vec<u8>> = generate().iter().map(SchemaFile::to_bytes).collect();
        let b: Vec<Vec<u8>> = generate().iter().map(SchemaFile::to_bytes).collect();
        assert_eq!(a, b);
    }
}
