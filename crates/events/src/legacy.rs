//! ns_server's older log lines, rewritten in the current form.
//!
//! Owns: [`normalize_line`], the rules that turn one line of the original facility
//! (ns_server 2.0, 2012) into the line this catalog reads, and [`LegacyError`].
//!
//! The 2012 facility wrote the same events with these differences (docs/legacy-logs.md
//! lists them with an example each):
//!
//! 1. **Numbers as strings.** `"ts":"1333576047.859331"`, `"vbucket":"43"`: any
//!    top-level field that the type's published schema declares a number or an
//!    integer, given as a JSON string holding such a number, becomes that number —
//!    its digits kept exactly as written.
//! 2. **Node names as quoted Erlang atoms.** `"node":"'n_0@10.17.2.163'"`: a string
//!    (top-level, or an element of a top-level array of strings) that is a single-quoted
//!    atom holding an `@` loses its quotes (`n_0@10.17.2.163`).
//! 3. **`createBucket` parameters as strings.** `"ram_quota":"104857600"`: a parameter
//!    whose value is a string of decimal digits (an optional `-`, no leading zero)
//!    becomes that integer. Other parameters are left as they are.
//! 4. **`rebalanceStart` without `deltaNodes`** (delta recovery came later): an empty
//!    `deltaNodes` list is added.
//! 5. **`failover` of one `host`**: `"host":"h"` without `hosts` becomes
//!    `"hosts":["h"]`.
//!
//! Promises:
//! - A line already in the current form comes back unchanged (`Ok(None)`): the rules
//!   only fire on what the current form never writes.
//! - Only the form changes: every value keeps its text (numbers their exact digits),
//!   fields keep their order, nothing is dropped or redacted here (the typed parser
//!   still redacts secret `createBucket` parameters, and still refuses a duplicated or
//!   unknown field).
//! - A normalized line is not checked here: the caller parses it as any other line.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::{published, EventType};

/// Why a line cannot be read as a (legacy or current) event line at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    /// The line is not a JSON object.
    #[error("not a JSON object: {0}")]
    NotAnObject(String),
    /// The object has no string `type`.
    #[error("no \"type\" string")]
    NoType,
    /// The `type` names no event of the catalog.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
}

/// What a field's published schema says it holds, as far as the rules need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Integer,
    Number,
    String,
    Strings,
    Other,
}

/// The kind of every top-level property of every event type, read once from the
/// published schemas (`event/<type>.json`) built into the binary.
fn kinds() -> &'static HashMap<&'static str, HashMap<String, Kind>> {
    static KINDS: OnceLock<HashMap<&'static str, HashMap<String, Kind>>> = OnceLock::new();
    KINDS.get_or_init(|| {
        let mut all = HashMap::new();
        for t in EventType::ALL {
            let name = t.as_str();
            let mut props = HashMap::new();
            let schema = published::get(&format!("event/{name}.json"))
                .and_then(|text| serde_json::from_str::<Value>(text).ok());
            if let Some(Value::Object(map)) =
                schema.as_ref().and_then(|s| s.get("properties")).cloned()
            {
                for (key, prop) in map {
                    props.insert(key, kind_of(&prop));
                }
            }
            all.insert(name, props);
        }
        all
    })
}

fn kind_of(prop: &Value) -> Kind {
    let types: Vec<&str> = match prop.get("type") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"integer") {
        Kind::Integer
    } else if types.contains(&"number") {
        Kind::Number
    } else if types.contains(&"string") {
        Kind::String
    } else if types.contains(&"array")
        && prop.pointer("/items/type").and_then(Value::as_str) == Some("string")
    {
        Kind::Strings
    } else {
        Kind::Other
    }
}

/// An object's members in their order, duplicates kept (the typed parser refuses
/// those; collapsing them here would hide the error).
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Members {
    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // A key re-encoded from its decoded text: the same JSON string.
            out.extend_from_slice(
                serde_json::to_string(k)
                    .unwrap_or_else(|_| String::from("\"\""))
                    .as_bytes(),
            );
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
        out
    }
}

fn raw(text: String) -> Option<Box<RawValue>> {
    RawValue::from_string(text).ok()
}

/// The string a raw JSON value holds, if it is a string.
fn as_str(v: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(v.get()).ok()
}

/// `s` as the text of a JSON number of the given kind, if it is one.
fn number_text(s: &str, kind: Kind) -> Option<&str> {
    let t = s.trim();
    match kind {
        Kind::Integer => is_integer_text(t).then_some(t),
        Kind::Number => {
            let n: serde_json::Number = t.parse().ok()?;
            // Only finite JSON numbers: `t` parsed as one exactly as written.
            (n.as_f64().is_some_and(f64::is_finite)).then_some(t)
        }
        _ => None,
    }
}

/// A decimal integer as JSON writes it: optional `-`, no leading zero.
fn is_integer_text(t: &str) -> bool {
    let digits = t.strip_prefix('-').unwrap_or(t);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && t != "-0"
}

/// `'name@host'` without its quotes.
fn unquote_atom(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('\'')?.strip_suffix('\'')?;
    (inner.contains('@') && !inner.contains('\'')).then_some(inner)
}

/// Rewrites one line from ns_server's 2012 form into the current form.
///
/// `Ok(None)`: nothing to rewrite (already the current form, or differences the rules
/// do not cover: the typed parser will say what is wrong). `Ok(Some(line))`: the
/// rewritten line, without a newline. Errors only when the line is not an object with
/// a known `type`, which no rule can help.
pub fn normalize_line(line: &[u8]) -> Result<Option<Vec<u8>>, LegacyError> {
    let mut members: Members = serde_json::from_slice(trim_ascii(line))
        .map_err(|e| LegacyError::NotAnObject(e.to_string()))?;
    let ty = members
        .get("type")
        .and_then(as_str)
        .ok_or(LegacyError::NoType)?;
    let event_type: EventType = ty
        .parse()
        .map_err(|_| LegacyError::UnknownType(ty.clone()))?;
    let empty = HashMap::new();
    let props = kinds().get(event_type.as_str()).unwrap_or(&empty);
    let mut changed = false;

    for (key, value) in members.0.iter_mut() {
        let kind = props.get(key.as_str()).copied().unwrap_or(Kind::Other);
        let replacement = match kind {
            // Rule 1: numbers as strings.
            Kind::Integer | Kind::Number => {
                as_str(value).and_then(|s| number_text(&s, kind).map(str::to_owned))
            }
            // Rule 2: quoted Erlang atoms.
            Kind::String => as_str(value)
                .and_then(|s| unquote_atom(&s).map(str::to_owned))
                .and_then(|s| serde_json::to_string(&s).ok()),
            Kind::Strings => serde_json::from_str::<Vec<String>>(value.get())
                .ok()
                .filter(|items| items.iter().any(|s| unquote_atom(s).is_some()))
                .and_then(|items| {
                    let items: Vec<&str> =
                        items.iter().map(|s| unquote_atom(s).unwrap_or(s)).collect();
                    serde_json::to_string(&items).ok()
                }),
            Kind::Other => None,
        };
        // Rule 3: createBucket parameters as strings.
        let replacement = match (replacement, event_type, key.as_str()) {
            (None, EventType::CreateBucket, "params") => params_as_numbers(value),
            (r, _, _) => r,
        };
        if let Some(new) = replacement.and_then(raw) {
            *value = new;
            changed = true;
        }
    }

    match event_type {
        // Rule 4: rebalanceStart without deltaNodes.
        EventType::RebalanceStart if members.get("deltaNodes").is_none() => {
            if let Some(v) = raw("[]".into()) {
                members.0.push(("deltaNodes".into(), v));
                changed = true;
            }
        }
        // Rule 5: failover of one host.
        EventType::Failover if members.get("hosts").is_none() => {
            if let Some(i) = members.0.iter().position(|(k, _)| k == "host") {
                let host = as_str(&members.0[i].1);
                let list = host
                    .map(|h| serde_json::to_string(&[h]))
                    .and_then(Result::ok)
                    .and_then(raw);
                if let Some(list) = list {
                    members.0[i] = ("hosts".into(), list);
                    changed = true;
                }
            }
        }
        _ => {}
    }

    Ok(changed.then(|| members.to_line()))
}

/// `params` with digit-string values as integers; `None` when none is.
fn params_as_numbers(value: &RawValue) -> Option<String> {
    let params: Members = serde_json::from_str(value.get()).ok()?;
    let mut changed = false;
    let mut out = Members(Vec::with_capacity(params.0.len()));
    for (k, v) in params.0 {
        let number = as_str(&v).filter(|s| is_integer_text(s));
        match number.and_then(raw) {
            Some(n) => {
                out.0.push((k, n));
                changed = true;
            }
            None => out.0.push((k, v)),
        }
    }
    changed.then(|| String::from_utf8_lossy(&out.to_line()).into_owned())
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(line: &str) -> String {
        let out = normalize_line(line.as_bytes())
            .expect("an event line")
            .expect("something to rewrite");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn string_numbers_become_numbers_with_their_digits_kept() {
        assert_eq!(
            norm(
                r#"{"vbucket":"43","type":"vbucketMoveDone","ts":"1333576052.926554","bucket":"default"}"#
            ),
            r#"{"vbucket":43,"type":"vbucketMoveDone","ts":1333576052.926554,"bucket":"default"}"#
        );
    }

    #[test]
    fn quoted_atoms_lose_their_quotes_in_strings_and_lists() {
        let out = norm(r#"{"type":"becameMaster","ts":1,"node":"'n_0@10.17.2.163'"}"#);
        assert!(out.contains(r#""node":"n_0@10.17.2.163""#), "{out}");
    }

    #[test]
    fn a_current_line_is_left_alone() {
        let line =
            br#"{"type":"vbucketMoveDone","ts":1333576052.926554,"vbucket":43,"bucket":"default"}"#;
        assert_eq!(normalize_line(line), Ok(None));
    }

    #[test]
    fn what_is_not_a_number_stays_a_string_for_the_parser_to_refuse() {
        let line = br#"{"type":"vbucketMoveDone","ts":"yesterday","vbucket":"043","bucket":"b"}"#;
        assert_eq!(normalize_line(line), Ok(None));
    }

    #[test]
    fn params_digits_become_integers_and_other_params_stay() {
        let out = norm(
            r#"{"type":"createBucket","ts":"1.5","bucketType":"memcached","bucket":"mcd","params":{"sasl_password":"","ram_quota":"104857600","auth_type":"sasl"}}"#,
        );
        assert!(
            out.contains(
                r#""params":{"sasl_password":"","ram_quota":104857600,"auth_type":"sasl"}"#
            ),
            "{out}"
        );
    }

    #[test]
    fn rebalance_start_gets_an_empty_delta_list_and_failover_a_host_list() {
        assert!(norm(r#"{"type":"rebalanceStart","ts":1,"pid":"<0.1.0>","keepNodes":[],"ejectNodes":[],"failedNodes":[]}"#)
            .ends_with(r#","deltaNodes":[]}"#));
        assert_eq!(
            norm(r#"{"type":"failover","ts":"1.5","host":"10.17.2.163:12004"}"#),
            r#"{"type":"failover","ts":1.5,"hosts":["10.17.2.163:12004"]}"#
        );
    }

    #[test]
    fn what_is_not_an_event_line_is_an_error_naming_why() {
        assert!(matches!(
            normalize_line(b"[1]"),
            Err(LegacyError::NotAnObject(_))
        ));
        assert_eq!(normalize_line(br#"{"ts":"1"}"#), Err(LegacyError::NoType));
        assert_eq!(
            normalize_line(br#"{"type":"nope"}"#),
            Err(LegacyError::UnknownType("nope".into()))
        );
    }

    #[test]
    fn duplicated_fields_are_kept_for_the_parser_to_refuse() {
        let out =
            norm(r#"{"type":"vbucketMoveDone","ts":"1","vbucket":1,"vbucket":2,"bucket":"b"}"#);
        assert_eq!(out.matches("\"vbucket\"").count(), 2, "{out}");
    }
}
