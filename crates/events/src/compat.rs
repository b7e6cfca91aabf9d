//! Compatibility of two sets of published schemas: what changed for a consumer that
//! validates the stream with the older set.
//!
//! Owns: [`compare`] (every change between a baseline set and the current one,
//! classified), [`Change`], [`Impact`], the version of the schema set
//! ([`SCHEMA_VERSION`], published as `version.json`) and [`major`].
//!
//! Promises:
//! - Breaking for consumers: an event type (or control frame) removed; a property
//!   removed (a rename is a removal and an addition); a type narrowed (a JSON type
//!   dropped, `number` to `integer`, a bound added or tightened, an enum value
//!   removed, a `const` changed, extra properties newly refused); a property newly
//!   required, an alternative of `anyOf`/`oneOf` removed, a reference changed.
//! - Compatible: a new event type, a new optional property, a widened type (the
//!   reverse of each narrowing), a property no longer required. A `description`
//!   change is not a change.
//! - Only the per-type files (`event/*.json`, `control/*.json`) are compared: the
//!   unions are made of them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// The version of the published schema set (semver). Raise the major version with
/// any breaking change ([`compare`]): the test suite compares the committed set with
/// the last released one (`schemas-released/`) and refuses a breaking change under
/// the same major version.
pub const SCHEMA_VERSION: &str = "1.0.0";

/// The major version of a semver string (`None` if it is not one).
pub fn major(version: &str) -> Option<u64> {
    version.split('.').next()?.parse().ok()
}

/// What a change does to a consumer of the older set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Impact {
    /// A line valid before may be refused, or a field a consumer reads may be gone.
    Breaking,
    /// Every consumer of the older set keeps working.
    Compatible,
}

impl fmt::Display for Impact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Impact::Breaking => "breaking",
            Impact::Compatible => "compatible",
        })
    }
}

/// One change between the baseline and the current set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// Breaking or compatible.
    pub impact: Impact,
    /// The schema file (`event/deleteBucket.json`).
    pub file: String,
    /// Where in it (`/properties/bucket`; empty for the file itself).
    pub at: String,
    /// What changed, in words.
    pub what: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}{}: {}",
            self.impact, self.file, self.at, self.what
        )
    }
}

/// Every change from `baseline` to `current` (schema files by path), sorted,
/// breaking ones first.
pub fn compare(
    baseline: &BTreeMap<String, Value>,
    current: &BTreeMap<String, Value>,
) -> Vec<Change> {
    let per_type = |path: &String| path.starts_with("event/") || path.starts_with("control/");
    let mut out = Vec::new();
    for (file, base) in baseline.iter().filter(|(p, _)| per_type(p)) {
        match current.get(file) {
            None => out.push(change(
                Impact::Breaking,
                file,
                "",
                "removed (the type is gone)",
            )),
            Some(cur) => Walk {
                file,
                out: &mut out,
            }
            .schema("", base, cur),
        }
    }
    for file in current
        .keys()
        .filter(|p| per_type(p) && !baseline.contains_key(*p))
    {
        out.push(change(Impact::Compatible, file, "", "added (a new type)"));
    }
    out.sort();
    out
}

fn change(impact: Impact, file: &str, at: &str, what: impl Into<String>) -> Change {
    Change {
        impact,
        file: file.to_owned(),
        at: at.to_owned(),
        what: what.into(),
    }
}

struct Walk<'a> {
    file: &'a str,
    out: &'a mut Vec<Change>,
}

impl Walk<'_> {
    fn push(&mut self, impact: Impact, at: &str, what: impl Into<String>) {
        self.out.push(change(impact, self.file, at, what));
    }

    fn schema(&mut self, at: &str, base: &Value, cur: &Value) {
        let (Some(b), Some(c)) = (base.as_object(), cur.as_object()) else {
            if base != cur {
                self.push(Impact::Breaking, at, "changed");
            }
            return;
        };
        self.types(at, b, c);
        self.enums(at, b, c);
        self.bounds(at, b, c);
        self.properties(at, b, c);
        if b.get("$ref") != c.get("$ref") {
            self.push(
                Impact::Breaking,
                at,
                format!(
                    "reference changed from {:?} to {:?}",
                    b.get("$ref"),
                    c.get("$ref")
                ),
            );
        }
        for key in ["items", "additionalProperties"] {
            match (b.get(key), c.get(key)) {
                (Some(bv @ Value::Object(_)), Some(cv @ Value::Object(_))) => {
                    self.schema(&format!("{at}/{key}"), bv, cv)
                }
                (None | Some(Value::Bool(true)), Some(Value::Bool(false)))
                    if key == "additionalProperties" =>
                {
                    self.push(Impact::Breaking, at, "extra properties now refused")
                }
                (Some(Value::Bool(false)), None | Some(Value::Bool(true)))
                    if key == "additionalProperties" =>
                {
                    self.push(Impact::Compatible, at, "extra properties now allowed")
                }
                _ => {}
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let (Some(Value::Array(bv)), Some(Value::Array(cv))) = (b.get(key), c.get(key)) {
                for (i, (x, y)) in bv.iter().zip(cv).enumerate() {
                    self.schema(&format!("{at}/{key}/{i}"), x, y);
                }
                if cv.len() < bv.len() {
                    self.push(
                        Impact::Breaking,
                        at,
                        format!("{key}: an alternative removed"),
                    );
                } else if cv.len() > bv.len() {
                    self.push(
                        Impact::Compatible,
                        at,
                        format!("{key}: an alternative added"),
                    );
                }
            }
        }
        if let (Some(Value::Object(bd)), Some(Value::Object(cd))) = (b.get("$defs"), c.get("$defs"))
        {
            for (name, bv) in bd {
                match cd.get(name) {
                    Some(cv) => self.schema(&format!("{at}/$defs/{name}"), bv, cv),
                    None => self.push(Impact::Breaking, at, format!("definition {name} removed")),
                }
            }
        }
    }

    fn types(&mut self, at: &str, b: &Map<String, Value>, c: &Map<String, Value>) {
        let (Some(bt), Some(ct)) = (type_set(b), type_set(c)) else {
            return;
        };
        // `number` takes every `integer`.
        let covers = |set: &BTreeSet<String>, t: &str| {
            set.contains(t) || (t == "integer" && set.contains("number"))
        };
        let lost: Vec<&String> = bt.iter().filter(|t| !covers(&ct, t)).collect();
        let gained: Vec<&String> = ct.iter().filter(|t| !covers(&bt, t)).collect();
        if !lost.is_empty() {
            self.push(
                Impact::Breaking,
                at,
                format!("type narrowed: {lost:?} no longer taken"),
            );
        }
        if !gained.is_empty() {
            self.push(
                Impact::Compatible,
                at,
                format!("type widened: {gained:?} now taken"),
            );
        }
    }

    fn enums(&mut self, at: &str, b: &Map<String, Value>, c: &Map<String, Value>) {
        if let (Some(Value::Array(bv)), Some(Value::Array(cv))) = (b.get("enum"), c.get("enum")) {
            let removed: Vec<&Value> = bv.iter().filter(|v| !cv.contains(v)).collect();
            let added: Vec<&Value> = cv.iter().filter(|v| !bv.contains(v)).collect();
            if !removed.is_empty() {
                self.push(
                    Impact::Breaking,
                    at,
                    format!("enum values removed: {removed:?}"),
                );
            }
            if !added.is_empty() {
                self.push(
                    Impact::Compatible,
                    at,
                    format!("enum values added: {added:?}"),
                );
            }
        }
        match (b.get("const"), c.get("const")) {
            (Some(x), Some(y)) if x != y => self.push(
                Impact::Breaking,
                at,
                format!("const changed from {x} to {y}"),
            ),
            (None, Some(y)) => self.push(Impact::Breaking, at, format!("now const {y}")),
            (Some(_), None) => self.push(Impact::Compatible, at, "no longer const"),
            _ => {}
        }
    }

    fn bounds(&mut self, at: &str, b: &Map<String, Value>, c: &Map<String, Value>) {
        // (key, whether a larger value is tighter)
        for (key, larger_is_tighter) in [
            ("minimum", true),
            ("exclusiveMinimum", true),
            ("minLength", true),
            ("minItems", true),
            ("maximum", false),
            ("exclusiveMaximum", false),
            ("maxLength", false),
            ("maxItems", false),
        ] {
            let (bj, cj) = (b.get(key), c.get(key));
            let (bv, cv) = (bj.and_then(number), cj.and_then(number));
            let tighter = match (bv, cv) {
                (None, Some(_)) => Some(true),
                (Some(_), None) => Some(false),
                (Some(x), Some(y)) if x != y => Some((y > x) == larger_is_tighter),
                _ => None,
            };
            match tighter {
                Some(true) => self.push(
                    Impact::Breaking,
                    at,
                    format!("{key} tightened ({} to {})", show(bj), show(cj)),
                ),
                Some(false) => self.push(
                    Impact::Compatible,
                    at,
                    format!("{key} loosened ({} to {})", show(bj), show(cj)),
                ),
                None => {}
            }
        }
    }

    fn properties(&mut self, at: &str, b: &Map<String, Value>, c: &Map<String, Value>) {
        let empty = Map::new();
        let bp = b
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let cp = c
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let br = required(b);
        let cr = required(c);
        for (name, bv) in bp {
            let here = format!("{at}/properties/{name}");
            match cp.get(name) {
                None => self.push(Impact::Breaking, &here, "property removed"),
                Some(cv) => {
                    self.schema(&here, bv, cv);
                    match (br.contains(name.as_str()), cr.contains(name.as_str())) {
                        (false, true) => self.push(Impact::Breaking, &here, "now required"),
                        (true, false) => self.push(Impact::Compatible, &here, "no longer required"),
                        _ => {}
                    }
                }
            }
        }
        for name in cp.keys().filter(|n| !bp.contains_key(*n)) {
            let here = format!("{at}/properties/{name}");
            if cr.contains(name.as_str()) {
                self.push(Impact::Breaking, &here, "new required property");
            } else {
                self.push(Impact::Compatible, &here, "new optional property");
            }
        }
    }
}

fn type_set(schema: &Map<String, Value>) -> Option<BTreeSet<String>> {
    match schema.get("type")? {
        Value::String(t) => Some(BTreeSet::from([t.clone()])),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

fn required(schema: &Map<String, Value>) -> BTreeSet<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "none".to_owned(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(files: &[(&str, Value)]) -> BTreeMap<String, Value> {
        files
            .iter()
            .map(|(p, v)| ((*p).to_owned(), v.clone()))
            .collect()
    }

    fn base() -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "type": {"const": "deleteBucket"},
                "bucket": {"type": "string", "description": "the bucket"},
                "vbucket": {"type": "integer", "minimum": 0, "maximum": 1023},
                "state": {"enum": ["active", "replica"]}
            },
            "required": ["type", "bucket"]
        })
    }

    fn changes(cur: Value) -> Vec<String> {
        compare(
            &set(&[("event/x.json", base())]),
            &set(&[("event/x.json", cur)]),
        )
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    #[test]
    fn the_same_set_and_a_new_description_are_no_change() {
        assert!(changes(base()).is_empty());
        let mut cur = base();
        cur["properties"]["bucket"]["description"] = json!("another text");
        assert!(changes(cur).is_empty());
    }

    #[test]
    fn a_removed_property_or_type_is_breaking_and_a_new_optional_one_is_not() {
        let mut cur = base();
        cur["properties"]
            .as_object_mut()
            .map(|p| p.remove("vbucket"));
        assert_eq!(
            changes(cur),
            ["breaking: event/x.json/properties/vbucket: property removed"]
        );
        let mut cur = base();
        cur["properties"]["node"] = json!({"type": "string"});
        assert_eq!(
            changes(cur),
            ["compatible: event/x.json/properties/node: new optional property"]
        );
        let gone = compare(
            &set(&[("event/x.json", base())]),
            &set(&[("event/y.json", base())]),
        );
        assert_eq!(gone[0].impact, Impact::Breaking);
        assert_eq!(
            gone[1].to_string(),
            "compatible: event/y.json: added (a new type)"
        );
    }

    #[test]
    fn narrowing_is_breaking_and_widening_compatible() {
        let mut cur = base();
        cur["properties"]["vbucket"]["maximum"] = json!(511);
        cur["properties"]["state"]["enum"] = json!(["active"]);
        cur["required"] = json!(["type", "bucket", "vbucket"]);
        let found = changes(cur);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().all(|c| c.starts_with("breaking")), "{found:?}");
        let mut cur = base();
        cur["properties"]["vbucket"]["type"] = json!("number");
        cur["properties"]["state"]["enum"] = json!(["active", "replica", "dead"]);
        cur["additionalProperties"] = json!(true);
        let found = changes(cur);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found.iter().all(|c| c.starts_with("compatible")),
            "{found:?}"
        );
    }

    #[test]
    fn the_major_version_is_read_from_semver() {
        assert_eq!(major(SCHEMA_VERSION), Some(1));
        assert_eq!(major("2.3.4"), Some(2));
        assert_eq!(major("x"), None);
    }
}
