//! Events as CloudEvents 1.0: the attributes of one stream line, in structured mode
//! (a JSON object with the line as `data`) or as binary-mode headers.
//!
//! Owns: the mapping, used by the stream's `?format=cloudevents` and by sinks with
//! `format = "cloudevents"` (docs/api.md, "CloudEvents"):
//!
//! | attribute | value |
//! |---|---|
//! | `specversion` | `1.0` |
//! | `id` | `<history>:<seq>`: unique within a cluster's archive ([`id`]) |
//! | `source` | `/clusters/<history>/nodes/<origin>` ([`source`]): the cluster (its archive's history id, shared by its nodes) and the node that noted the event |
//! | `type` | [`TYPE_PREFIX`] + the event type, e.g. `io.master-events.event.vbucketMoveStart` |
//! | `time` | `ts` in RFC 3339, UTC, to the microsecond |
//! | `datacontenttype` | `application/json` |
//! | `dataschema` | `<base>/schemas/event/<type>.json`, served by the server |
//! | `sequence` | the seq, zero-padded to 20 digits (the sequence extension wants a lexicographically ordered string) |
//! | `data` | the stream line itself (envelope included), unchanged |
//!
//! Control frames (`gap`, `heartbeat`, `reset`) map the same way with
//! [`CONTROL_TYPE_PREFIX`] (`io.master-events.control.gap`), `data` the frame, and
//! `dataschema` `<base>/schemas/control/<frame>.json`; they carry no `sequence`.
//!
//! Promises: every object written is valid JSON and a valid structured-mode
//! CloudEvent (the Python SDK reads each line in the test suite); `data` is the line's
//! bytes as streamed, never re-encoded.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::Timestamp;

/// The CloudEvents version written.
pub const SPEC_VERSION: &str = "1.0";

/// The prefix of an event's `type`: reverse DNS of the project, then `event.`.
/// The vocabulary is ns_server's, but the events are this service's rendering of it,
/// so they are not named as Couchbase's own.
pub const TYPE_PREFIX: &str = "io.master-events.event.";

/// The prefix of a control frame's `type` (`...control.gap`).
pub const CONTROL_TYPE_PREFIX: &str = "io.master-events.control.";

/// What every event of one stream shares.
#[derive(Clone, Debug)]
pub struct Context {
    /// The archive's history id (identifies the cluster's archive).
    pub history: String,
    /// Where the schemas are served, without a trailing `/`
    /// (`http://127.0.0.1:9898`): `dataschema` is this plus `/schemas/...`.
    pub schema_base: String,
}

/// The attributes of one CloudEvent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// `id`.
    pub id: String,
    /// `source`.
    pub source: String,
    /// `type`.
    pub ty: String,
    /// `time`, when known.
    pub time: Option<String>,
    /// `dataschema`.
    pub dataschema: String,
    /// `sequence`, for events.
    pub sequence: Option<String>,
}

/// `id` of the event `seq` in `history`.
pub fn id(history: &str, seq: u64) -> String {
    if history.is_empty() {
        seq.to_string()
    } else {
        format!("{history}:{seq}")
    }
}

/// `source` of events noted by `origin` in the cluster whose archive is `history`:
/// a URI reference, each part percent-encoded where RFC 3986 wants it.
pub fn source(history: &str, origin: Option<&str>) -> String {
    let mut s = String::from("/clusters/");
    s.push_str(&encode_segment(if history.is_empty() {
        "-"
    } else {
        history
    }));
    if let Some(origin) = origin {
        s.push_str("/nodes/");
        s.push_str(&encode_segment(origin));
    }
    s
}

/// The `sequence` extension's value for `seq`: 20 digits, so that string order is
/// seq order.
pub fn sequence(seq: u64) -> String {
    format!("{seq:020}")
}

/// `ts` in RFC 3339, UTC, with microseconds (`2012-04-04T21:47:32.926554Z`).
pub fn time(ts: Timestamp) -> Option<String> {
    let nanos = i128::from(ts.as_micros()) * 1000;
    let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    // Always six fraction digits: Rfc3339 drops trailing zeros, which is valid too,
    // but a fixed width reads and sorts better.
    let base = t.replace_nanosecond(0).ok()?.format(&Rfc3339).ok()?;
    let stem = base.strip_suffix('Z')?;
    Some(format!("{stem}.{:06}Z", t.microsecond()))
}

/// The attributes of the event `seq` of type `event_type`.
pub fn event_attributes(
    ctx: &Context,
    seq: u64,
    event_type: &str,
    ts: Option<Timestamp>,
    origin: Option<&str>,
) -> Attributes {
    Attributes {
        id: id(&ctx.history, seq),
        source: source(&ctx.history, origin),
        ty: format!("{TYPE_PREFIX}{event_type}"),
        time: ts.and_then(time),
        dataschema: format!("{}/schemas/event/{event_type}.json", ctx.schema_base),
        sequence: Some(sequence(seq)),
    }
}

/// The attributes of a control frame (`gap`, `heartbeat`, `reset`); `id_part` makes
/// its id unique (a gap's range, a heartbeat's position and time).
pub fn control_attributes(
    ctx: &Context,
    frame: &str,
    id_part: &str,
    ts: Option<Timestamp>,
) -> Attributes {
    Attributes {
        id: format!("{}:{frame}:{id_part}", ctx.history),
        source: source(&ctx.history, None),
        ty: format!("{CONTROL_TYPE_PREFIX}{frame}"),
        time: ts.and_then(time),
        dataschema: format!("{}/schemas/control/{frame}.json", ctx.schema_base),
        sequence: None,
    }
}

/// Appends the structured-mode CloudEvent of `line` (a JSON object, with or without
/// its newline) to `out`, as one line with `\n`.
pub fn write_structured(out: &mut Vec<u8>, attrs: &Attributes, line: &[u8]) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    out.extend_from_slice(b"{\"specversion\":\"");
    out.extend_from_slice(SPEC_VERSION.as_bytes());
    out.extend_from_slice(b"\",\"id\":");
    crate::json::write(out, &attrs.id);
    out.extend_from_slice(b",\"source\":");
    crate::json::write(out, &attrs.source);
    out.extend_from_slice(b",\"type\":");
    crate::json::write(out, &attrs.ty);
    if let Some(t) = &attrs.time {
        out.extend_from_slice(b",\"time\":");
        crate::json::write(out, t);
    }
    out.extend_from_slice(b",\"datacontenttype\":\"application/json\",\"dataschema\":");
    crate::json::write(out, &attrs.dataschema);
    if let Some(s) = &attrs.sequence {
        out.extend_from_slice(b",\"sequence\":");
        crate::json::write(out, s);
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(line);
    out.extend_from_slice(b"}\n");
}

/// The binary-mode HTTP/NATS/Kafka headers of `attrs` (`ce-id`, `ce-source`, ...);
/// the body is the line itself, with content type `application/json`.
pub fn binary_headers(attrs: &Attributes) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("ce-specversion", SPEC_VERSION.to_owned()),
        ("ce-id", attrs.id.clone()),
        ("ce-source", attrs.source.clone()),
        ("ce-type", attrs.ty.clone()),
    ];
    if let Some(t) = &attrs.time {
        h.push(("ce-time", t.clone()));
    }
    h.push(("ce-dataschema", attrs.dataschema.clone()));
    if let Some(s) = &attrs.sequence {
        h.push(("ce-sequence", s.clone()));
    }
    h.push(("content-type", "application/json".to_owned()));
    h
}

/// The `ts` of a line written by [`crate::Record::encode_line`] (the envelope comes
/// first: `{"type":..,"seq":..,"ts":..`), found without parsing the whole line;
/// `None` when it has none.
pub fn line_ts(line: &[u8]) -> Option<Timestamp> {
    let head = &line[..line.len().min(160)];
    let at = head.windows(6).position(|w| w == b",\"ts\":")? + 6;
    let rest = &head[at..];
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'.'))
        .unwrap_or(rest.len());
    // Through the same reading as any JSON `ts` (seconds and fraction apart).
    serde_json::from_slice::<Timestamp>(&rest[..end]).ok()
}

/// `s` as one path segment: unreserved characters, sub-delims, `:` and `@` as they
/// are, everything else percent-encoded.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            history: "h1".into(),
            schema_base: "http://127.0.0.1:9898".into(),
        }
    }

    #[test]
    fn an_event_maps_to_the_documented_attributes() {
        let line = br#"{"type":"vbucketMoveDone","seq":42,"ts":1333576052.926554,"origin":"n_0@10.17.2.163","vbucket":43,"bucket":"default"}"#;
        let ts = line_ts(line);
        let a = event_attributes(&ctx(), 42, "vbucketMoveDone", ts, Some("n_0@10.17.2.163"));
        assert_eq!(a.id, "h1:42");
        assert_eq!(a.source, "/clusters/h1/nodes/n_0@10.17.2.163");
        assert_eq!(a.ty, "io.master-events.event.vbucketMoveDone");
        assert_eq!(a.time.as_deref(), Some("2012-04-04T21:47:32.926554Z"));
        assert_eq!(
            a.dataschema,
            "http://127.0.0.1:9898/schemas/event/vbucketMoveDone.json"
        );
        assert_eq!(a.sequence.as_deref(), Some("00000000000000000042"));
        let mut out = Vec::new();
        write_structured(&mut out, &a, line);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["data"]["vbucket"], 43);
        assert_eq!(v["datacontenttype"], "application/json");
        assert!(out.ends_with(b"}\n"));
    }

    #[test]
    fn sequence_strings_sort_as_the_seqs_do() {
        let mut seqs = [10u64, 9, 100, 1, u64::MAX];
        let mut strings: Vec<String> = seqs.iter().map(|s| sequence(*s)).collect();
        seqs.sort_unstable();
        strings.sort();
        assert_eq!(
            strings,
            seqs.iter().map(|s| sequence(*s)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn times_have_six_fraction_digits_even_on_whole_seconds() {
        let ts = Timestamp::from_micros(1_700_000_000_000_000);
        assert_eq!(time(ts).as_deref(), Some("2023-11-14T22:13:20.000000Z"));
    }

    #[test]
    fn odd_characters_in_a_source_are_percent_encoded() {
        assert_eq!(source("h", Some("a b/c")), "/clusters/h/nodes/a%20b%2Fc");
        assert_eq!(source("", None), "/clusters/-");
    }

    #[test]
    fn a_line_without_ts_has_no_time() {
        assert_eq!(line_ts(br#"{"type":"x","seq":1}"#), None);
    }

    #[test]
    fn binary_headers_carry_every_attribute() {
        let a = event_attributes(&ctx(), 7, "failover", None, Some("n1"));
        let h = binary_headers(&a);
        let names: Vec<&str> = h.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "ce-specversion",
                "ce-id",
                "ce-source",
                "ce-type",
                "ce-dataschema",
                "ce-sequence",
                "content-type"
            ]
        );
    }
}
