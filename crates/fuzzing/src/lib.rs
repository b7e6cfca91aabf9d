//! The fuzz targets of master-events, as plain functions of the input bytes: each
//! feeds them to one parser that takes input from outside (a client, a file, an
//! operator) and checks what that parser promises, panicking when a promise breaks.
//!
//! Owns: the targets ([`line`], [`ingest`], [`query`], [`config`], [`warm`],
//! [`report`], [`schemas`]), listed in [`TARGETS`] by the names the cargo-fuzz
//! project (`fuzz/`) and the corpora (`fuzz/corpus/<name>/`) use.
//!
//! Promises: a target never panics on any input unless a parser broke a promise;
//! each is deterministic (the same bytes, the same outcome), so a crash found by
//! the coverage-guided runs (`scripts/fuzz.sh`) replays in `cargo test` once its
//! input is added to the corpus. What each checks is said on it.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use bytes::Bytes;
use master_events_events::{parse_line, Record, StreamLine};
use master_events_server::ingest::{parse_body, LineBatcher};
use serde_json::Value;

/// A fuzz target: its name (the cargo-fuzz target and corpus directory) and its
/// function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("line", line),
    ("ingest", ingest),
    ("query", query),
    ("config", config),
    ("warm", warm),
    ("report", report),
    ("schemas", schemas),
];

/// The line parser (`parse_line`, `Record::parse`): never panics, and an event it
/// accepts encodes to a line that parses back to the same event.
pub fn line(data: &[u8]) {
    let _ = Record::parse(data);
    if let Ok(StreamLine::Event(record)) = parse_line(data) {
        let mut encoded = Vec::new();
        record.encode_line(&mut encoded);
        let trimmed = encoded.strip_suffix(b"\n").unwrap_or(&encoded);
        match parse_line(trimmed) {
            Ok(StreamLine::Event(again)) => assert!(
                again == record,
                "an accepted event does not survive its own encoding: {}",
                String::from_utf8_lossy(trimmed)
            ),
            other => panic!(
                "an accepted event encodes to a line that does not parse as one ({other:?}): {}",
                String::from_utf8_lossy(trimmed)
            ),
        }
    }
}

/// The ingest body: the first byte sets the size of the pieces the rest arrives in.
/// The line batcher hands out every byte of the body once, in order, in whole lines
/// numbered without a gap (whatever the pieces), `parse_body` never panics, and
/// the fields a record keeps from a canonical line are those the encoder writes.
pub fn ingest(data: &[u8]) {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    if let Ok(records) = parse_body(&Bytes::copy_from_slice(body)) {
        for mut record in records {
            let kept = record.to_line();
            record.forget_encoded_fields();
            assert!(
                kept == record.to_line(),
                "the fields a record kept from its line differ from the encoder's: {}",
                String::from_utf8_lossy(&kept)
            );
        }
    }
    let mut batcher = LineBatcher::new();
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut next_line = 1;
    let mut take = |n: usize, bytes: Bytes, out: &mut Vec<u8>| {
        assert_eq!(n, next_line, "line numbers run on without a gap");
        next_line += bytes.iter().filter(|b| **b == b'\n').count();
        out.extend_from_slice(&bytes);
    };
    for piece in body.chunks(usize::from(step.max(1))) {
        batcher.push(piece);
        while let Some((n, bytes)) = batcher.take() {
            assert!(bytes.ends_with(b"\n"), "take hands out whole lines only");
            take(n, bytes, &mut out);
        }
    }
    if let Some((n, bytes)) = batcher.finish() {
        take(n, bytes, &mut out);
    }
    assert!(
        out == body,
        "the batcher handed out every byte once, in order"
    );
}

/// The stream's query string and `Last-Event-ID` (split at the first newline):
/// `StreamQuery::parse` never panics, whatever the bytes.
pub fn query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (query, last_event_id) = match text.split_once('\n') {
        Some((q, id)) => (q, Some(id)),
        None => (text.as_ref(), None),
    };
    let _ = master_events_server::stream::StreamQuery::parse(Some(query), last_event_id, None);
    let _ = master_events_server::stream::StreamQuery::parse(None, Some(query), None);
}

/// The configuration file (`[[sinks]]`, filters, every linked sink's keys):
/// `load_config` never panics, and its error never quotes a value given to a key
/// that holds a secret (`password`, `token`, `secret`, `authorization`).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Every sink's keys are checked: the registrations must be linked in.
    static LINKED: OnceLock<usize> = OnceLock::new();
    LINKED.get_or_init(|| master_events_plugins::sink_names().len());
    let load = |text: &str| {
        master_events_router::load_config(text)
            .err()
            .map(|e| e.to_string())
    };
    if let Some((secret, shown)) = shown_secret(text, load) {
        panic!("a configuration error shows the secret {secret:?}: {shown}");
    }
}

/// The first secret value of `text` (see [`secret_values`]) that an error of
/// `load` quotes, with that error.
///
/// The test is differential: the value is swapped in the text for a marker of the
/// same length that occurs nowhere else, and it is a leak when the marker shows in
/// the error of the changed text. A value that merely occurs in what an error lists
/// anyway (a secret `"loseStream"` inside the catalog's `dcpCloseStream`) is not
/// one: the marker does not show there.
fn shown_secret(text: &str, load: impl Fn(&str) -> Option<String>) -> Option<(String, String)> {
    load(text)?;
    secret_values(text).into_iter().find_map(|secret| {
        let marker = marker_for(text, secret.len())?;
        let shown = load(&text.replacen(&secret, &marker, 1))?;
        shown.contains(&marker).then_some((secret, shown))
    })
}

/// A string of `len` ASCII letters that occurs nowhere in `text` (nor, being an
/// unlikely pattern, in any fixed text an error holds), or `None` when none of
/// the few tried is free.
fn marker_for(text: &str, len: usize) -> Option<String> {
    (0..4u8).find_map(|shift| {
        let marker: String = "QjXzVkWq"
            .bytes()
            .cycle()
            .skip(usize::from(shift))
            .take(len)
            .map(char::from)
            .collect();
        (!text.contains(&marker)).then_some(marker)
    })
}

/// The string values of keys naming a secret, at any depth, that occur once in the
/// text and are long enough to be told apart from the rest of an error.
fn secret_values(text: &str) -> Vec<String> {
    fn walk(value: &toml::Value, key: &str, out: &mut Vec<String>) {
        match value {
            toml::Value::String(s) => {
                let key = key.to_ascii_lowercase();
                if ["password", "token", "secret", "authorization"]
                    .iter()
                    .any(|k| key.contains(k))
                {
                    out.push(s.clone());
                }
            }
            toml::Value::Array(items) => items.iter().for_each(|v| walk(v, key, out)),
            toml::Value::Table(table) => table.iter().for_each(|(k, v)| walk(v, k, out)),
            _ => {}
        }
    }
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    doc.iter().for_each(|(k, v)| walk(v, k, &mut out));
    // Swapping the value in the text must swap the value and nothing else: it is
    // written once, verbatim (no escapes), and long enough not to be a mere word.
    out.retain(|s| s.len() >= 8 && text.matches(s.as_str()).count() == 1);
    out
}

/// The file log's warm restart reader: `warm_load` of a log holding these bytes
/// never panics, and what it restores is a run of strictly increasing seqs.
pub fn warm(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let config = master_events_sink_file::FileConfig::in_dir(dir.path());
    if std::fs::write(dir.path().join(&config.file_name), data).is_err() {
        return;
    }
    if let Ok(warm) = master_events_sink_file::warm_load(&config, 1000) {
        let seqs: Vec<u64> = warm.records.iter().filter_map(|r| r.envelope.seq).collect();
        assert_eq!(
            seqs.len(),
            warm.records.len(),
            "every restored event has a seq"
        );
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "the restored events are one contiguous run: {seqs:?}"
        );
        if let Some(last) = seqs.last() {
            assert!(
                warm.next_seq > *last,
                "the next seq follows the restored ones"
            );
        }
    }
}

/// The report reader: `LogReader` reads a log of these bytes to its end (an error or
/// the end, after at most one record per line) without panicking, and counts what
/// it skipped.
pub fn report(data: &[u8]) {
    let mut reader = master_events_report::LogReader::new(data);
    let most = data.iter().filter(|b| **b == b'\n').count() + 1;
    let mut read = 0;
    while let Ok(Some(_)) = reader.next_record() {
        read += 1;
        assert!(read <= most, "more records than lines");
    }
    let _ = reader.summary();
}

/// The published JSON Schemas and the typed parser agree, as a consumer validating
/// against the schemas must agree with the server: a line the parser takes is valid
/// against the schema of its type, and a JSON object valid against the schema of
/// its `type` is taken by the parser. A line with a `ts`, and a control frame, is
/// held to the stream schemas (`event/<type>.json`, `control/<frame>.json`); an
/// event without one, to the ingest schema of its type (`ingest-line.json`: what a
/// client posts). What JSON Schema cannot see, working on values and not on the
/// text, is left out: duplicate keys (the parser refuses them) and an integer
/// written as a float (`1E8`, `7.0`: a schema's `integer` takes it, the parser
/// wants integer notation).
pub fn schemas(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Some(ty) = value.get("type").and_then(Value::as_str) else {
        return;
    };
    let (stream, ingest) = validators();
    let set = if value.get("ts").is_some() {
        stream
    } else {
        ingest
    };
    let Some(validator) = set
        .iter()
        .chain(
            stream
                .iter()
                .filter(|(t, _)| ["heartbeat", "gap", "reset"].contains(&t.as_str())),
        )
        .find(|(t, _)| t == ty)
        .map(|(_, v)| v)
    else {
        return;
    };
    let schema_ok = validator.is_valid(&value);
    let typed = parse_line(data);
    if typed.is_ok() {
        assert!(
            schema_ok,
            "the parser takes a line its type's schema refuses: {}",
            String::from_utf8_lossy(data)
        );
    } else if schema_ok && !has_duplicate_keys(data) && !integral_floats_only(&value) {
        panic!(
            "the schema of {ty} takes a line the parser refuses ({:?}): {}",
            typed.err(),
            String::from_utf8_lossy(data)
        );
    }
}

/// Whether `value` parses once its integral floats (`1E8`, `7.0`) are written as
/// integers: then only their notation stood between it and the parser.
fn integral_floats_only(value: &Value) -> bool {
    fn integers(value: &mut Value) -> bool {
        match value {
            Value::Number(n) if n.is_f64() => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    *value = if f < 0.0 {
                        Value::from(f as i64)
                    } else {
                        Value::from(f as u64)
                    };
                    true
                }
                _ => false,
            },
            Value::Array(items) => items.iter_mut().fold(false, |c, v| integers(v) | c),
            Value::Object(map) => map.values_mut().fold(false, |c, v| integers(v) | c),
            _ => false,
        }
    }
    let mut rewritten = value.clone();
    if !integers(&mut rewritten) {
        return false;
    }
    serde_json::to_vec(&rewritten).is_ok_and(|text| parse_line(&text).is_ok())
}

/// Validators by line type.
type Validators = Vec<(String, jsonschema::Validator)>;

/// The validators of the published schemas: the stream's (events and frames) and
/// the ingest line's (events), per line type.
fn validators() -> &'static (Validators, Validators) {
    static VALIDATORS: OnceLock<(Validators, Validators)> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let compile = |path: &str, schema: &Value| {
            jsonschema::validator_for(schema)
                .unwrap_or_else(|e| panic!("the published schema {path} compiles: {e}"))
        };
        let files = master_events_events::schema::generate();
        let mut stream = Vec::new();
        let mut ingest = Vec::new();
        for file in &files {
            let name = file
                .path
                .strip_prefix("event/")
                .or_else(|| file.path.strip_prefix("control/"))
                .and_then(|n| n.strip_suffix(".json"));
            if let Some(name) = name {
                stream.push((name.to_owned(), compile(&file.path, &file.schema)));
            }
            if file.path == "ingest-line.json" {
                let defs = file.schema.get("$defs").and_then(Value::as_object);
                for (name, def) in defs.into_iter().flatten() {
                    let mut def = def.clone();
                    if let (Some(obj), Some(dialect)) =
                        (def.as_object_mut(), file.schema.get("$schema"))
                    {
                        obj.insert("$schema".into(), dialect.clone());
                    }
                    ingest.push((name.clone(), compile(&file.path, &def)));
                }
            }
        }
        assert!(
            !ingest.is_empty(),
            "ingest-line.json has per-type definitions"
        );
        (stream, ingest)
    })
}

/// Whether the JSON text has an object with a key twice, at any depth.
fn has_duplicate_keys(data: &[u8]) -> bool {
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Check(bool);
    impl<'de> Deserialize<'de> for Check {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Check, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Check;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("JSON")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Check, A::Error> {
                    let mut keys = std::collections::HashSet::new();
                    let mut dup = false;
                    while let Some(key) = map.next_key::<String>()? {
                        dup |= !keys.insert(key);
                        dup |= map.next_value::<Check>()?.0;
                    }
                    Ok(Check(dup))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Check, A::Error> {
                    let mut dup = false;
                    while let Some(item) = seq.next_element::<Check>()? {
                        dup |= item.0;
                    }
                    Ok(Check(dup))
                }
                fn visit_bool<E>(self, _: bool) -> Result<Check, E> {
                    Ok(Check(false))
                }
                fn visit_i64<E>(self, _: i64) -> Result<Check, E> {
                    Ok(Check(false))
                }
                fn visit_u64<E>(self, _: u64) -> Result<Check, E> {
                    Ok(Check(false))
                }
                fn visit_f64<E>(self, _: f64) -> Result<Check, E> {
                    Ok(Check(false))
                }
                fn visit_str<E>(self, _: &str) -> Result<Check, E> {
                    Ok(Check(false))
                }
                fn visit_unit<E>(self) -> Result<Check, E> {
                    Ok(Check(false))
                }
            }
            d.deserialize_any(V)
        }
    }
    serde_json::from_slice::<Check>(data).is_ok_and(|c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_CONFIG: &str = "[[sinks]]\ntype = \"webhook\"\ntoken = \"hunter2-hunter2\"\n";

    #[test]
    fn an_error_quoting_a_secret_value_is_caught_whatever_the_value() {
        let quoting = |text: &str| {
            let doc = text.parse::<toml::Table>().ok()?;
            let token = doc["sinks"][0]["token"].as_str()?.to_owned();
            Some(format!("sinks[0]: bad token {token}"))
        };
        let (secret, shown) = shown_secret(SECRET_CONFIG, quoting).expect("the leak is caught");
        assert_eq!(secret, "hunter2-hunter2");
        assert!(shown.contains("bad token"), "{shown}");
    }

    #[test]
    fn a_secret_that_is_part_of_a_listed_vocabulary_word_is_not_a_leak() {
        let text = "[[sinks]]\ntype = \"stdout\"\ntypetoken = \"loseStream\"\n";
        let listing = |_: &str| Some("expected one of: dcpAddStream, dcpCloseStream".to_owned());
        assert_eq!(shown_secret(text, listing), None);
    }

    #[test]
    fn an_error_that_hides_the_value_is_not_a_leak() {
        let hiding = |_: &str| Some("sinks[0]: bad token (value not shown)".to_owned());
        assert_eq!(shown_secret(SECRET_CONFIG, hiding), None);
    }

    #[test]
    fn no_error_means_nothing_to_show() {
        assert_eq!(shown_secret(SECRET_CONFIG, |_| None), None);
    }
}
