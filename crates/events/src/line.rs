//! Wire lines: a [`Record`] (envelope + event) or a control frame, one JSON object a
//! line, and their strict parser.
//!
//! Owns: the envelope ([`Envelope`]: `seq`, `ts`, `origin`, `originSeq`), the control
//! frames ([`Heartbeat`], [`Gap`]), the encoding of a line and the parsing of one.
//!
//! Promises:
//! - Encoding writes the `type` first, then the envelope, then the event's fields,
//!   and ends the line with `\n`; it never fails and allocates nothing but the output.
//! - Parsing accepts exactly what the published schemas accept and says why it
//!   refuses anything else, naming the field: unknown types, missing or unknown
//!   fields, wrongly typed values, duplicate keys (which plain JSON parsers silently
//!   collapse), invalid UTF-8, truncated input, non-finite numbers (not JSON) and
//!   nesting deeper than 128 levels are all errors, never panics.
//! - parse → encode → parse is the identity.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::event::{Event, EventType};
use crate::time::Timestamp;

/// What the master adds to an event when it sequences it. All optional: lines written
/// by ns_server itself carry only `ts`, and lines sent for ingest may carry none.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// The cluster cursor: a positive integer, strictly increasing along the stream,
    /// assigned by the master. Absent from lines written by ns_server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub seq: Option<u64>,
    /// When the master sequenced the event: seconds since the Unix epoch with
    /// microsecond precision (e.g. 1333576052.926554).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Timestamp>,
    /// Name of the node that noted the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The event's position among the events noted by its origin (1, 2, 3, ...); the
    /// master uses it to drop duplicates when a node re-sends after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub origin_seq: Option<u64>,
}

/// One event line: the envelope and the event.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Sequence, timestamp and origin.
    pub envelope: Envelope,
    /// The event itself.
    pub event: Event,
}

/// Sent on an idle stream so a client can tell a quiet cluster from a dead connection.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Heartbeat {
    /// The `seq` of the last event sent on this stream (0 when none was).
    pub seq: u64,
    /// When the heartbeat was sent: seconds since the Unix epoch, microsecond precision.
    pub ts: Timestamp,
}

/// Says that events a reader asked for, or fell behind to, are no longer retained.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gap {
    /// The first `seq` that was missed.
    pub from_seq: u64,
    /// The last `seq` that was missed (inclusive).
    pub to_seq: u64,
    /// How many events were missed (`toSeq - fromSeq + 1`).
    pub missed: u64,
    /// Why they were missed, e.g. `evicted from the archive`.
    pub reason: String,
}

/// Any line of a stream: an event or a control frame.
// Events are nearly every line and control frames are rare: boxing the event to
// shrink the frames would cost an allocation on the common path.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum StreamLine {
    /// An event.
    Event(Record),
    /// An idle-stream heartbeat.
    Heartbeat(Heartbeat),
    /// Events were missed.
    Gap(Gap),
}

/// Why a line was refused. Each variant names what was wrong and, where there is one,
/// the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line is not valid UTF-8.
    #[error("not valid UTF-8 (first bad byte at offset {offset})")]
    Utf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// The line ends before the JSON value does.
    #[error("truncated JSON: the line ends inside a value")]
    Truncated,
    /// The line is not well-formed JSON (this includes `NaN` and `Infinity`, which
    /// JSON does not have, and nesting deeper than 128 levels).
    #[error("invalid JSON at column {column}: {message}")]
    Syntax {
        /// 1-based column (byte) where the error was found.
        column: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// The line is JSON but not an object.
    #[error("expected a JSON object, found {found}")]
    NotAnObject {
        /// What was found instead.
        found: String,
    },
    /// The object has no `type`.
    #[error("missing field \"type\"")]
    MissingType,
    /// The `type` is not in the catalog.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// A control frame (`heartbeat`, `gap`) where only events are accepted.
    #[error("a {0:?} control frame is not an event")]
    ControlFrame(String),
    /// A key appears twice in the object.
    #[error("duplicate field {0:?}")]
    DuplicateField(String),
    /// A field the type requires is absent.
    #[error("missing field {field:?} required by type {ty:?}")]
    MissingField {
        /// The event type.
        ty: String,
        /// The missing field.
        field: String,
    },
    /// A field the type does not have.
    #[error("unknown field {field:?} for type {ty:?}")]
    UnknownField {
        /// The event type.
        ty: String,
        /// The unexpected field.
        field: String,
    },
    /// A field's value has the wrong type or is out of range.
    #[error("field {field:?}: {reason}")]
    InvalidField {
        /// The field.
        field: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// The object has more fields than any event can have.
    #[error("too many fields (more than {MAX_FIELDS})")]
    TooManyFields,
}

impl ParseError {
    /// The field this error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ParseError::MissingType => Some("type"),
            ParseError::UnknownType(_) | ParseError::ControlFrame(_) => Some("type"),
            ParseError::DuplicateField(f) => Some(f),
            ParseError::MissingField { field, .. }
            | ParseError::UnknownField { field, .. }
            | ParseError::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// No catalog type has nearly this many fields; a line with more is refused before
/// its fields are looked at, which bounds the work a hostile line can cause.
pub const MAX_FIELDS: usize = 64;

impl Record {
    /// A record with an empty envelope.
    pub fn new(event: impl Into<Event>) -> Self {
        Record {
            envelope: Envelope::default(),
            event: event.into(),
        }
    }

    /// Parses one line (without or with its trailing newline) as an event.
    pub fn parse(line: &[u8]) -> Result<Record, ParseError> {
        match parse_line(line)? {
            StreamLine::Event(r) => Ok(r),
            StreamLine::Heartbeat(_) => Err(ParseError::ControlFrame("heartbeat".into())),
            StreamLine::Gap(_) => Err(ParseError::ControlFrame("gap".into())),
        }
    }

    /// Appends this record as one JSON line (with `\n`) to `buf`.
    pub fn encode_line(&self, buf: &mut Vec<u8>) {
        buf.reserve(256);
        buf.extend_from_slice(b"{\"type\":\"");
        buf.extend_from_slice(self.event.type_name().as_bytes());
        buf.push(b'"');
        let env = &self.envelope;
        if let Some(seq) = env.seq {
            buf.extend_from_slice(b",\"seq\":");
            write_json(buf, &seq);
        }
        if let Some(ts) = env.ts {
            buf.extend_from_slice(b",\"ts\":");
            write_json(buf, &ts);
        }
        if let Some(origin) = &env.origin {
            buf.extend_from_slice(b",\"origin\":");
            write_json(buf, origin);
        }
        if let Some(origin_seq) = env.origin_seq {
            buf.extend_from_slice(b",\"originSeq\":");
            write_json(buf, &origin_seq);
        }
        let start = buf.len();
        self.event.write_fields(buf);
        splice_fields(buf, start);
        buf.push(b'\n');
    }

    /// This record as one JSON line, with its `\n`.
    pub fn to_line(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(256);
        self.encode_line(&mut buf);
        buf
    }
}

/// Turns the `{...}` just written at `start` into the tail of an already open object.
fn splice_fields(buf: &mut Vec<u8>, start: usize) {
    if buf.len() - start <= 2 {
        // `{}`: no fields.
        buf.truncate(start);
        buf.push(b'}');
    } else {
        buf[start] = b',';
    }
}

fn write_json<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
    let result = serde_json::to_writer(&mut *buf, value);
    // Numbers and strings always serialize, and a Vec never refuses a write.
    debug_assert!(result.is_ok());
}

fn encode_frame<T: Serialize>(name: &str, frame: &T, buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'"');
    let start = buf.len();
    write_json(buf, frame);
    splice_fields(buf, start);
    buf.push(b'\n');
}

impl Heartbeat {
    /// Appends this frame as one JSON line (with `\n`) to `buf`.
    pub fn encode_line(&self, buf: &mut Vec<u8>) {
        encode_frame("heartbeat", self, buf)
    }
}

impl Gap {
    /// A gap covering `from_seq..=to_seq`.
    pub fn new(from_seq: u64, to_seq: u64, reason: impl Into<String>) -> Self {
        Gap {
            from_seq,
            to_seq,
            missed: to_seq.saturating_sub(from_seq).saturating_add(1),
            reason: reason.into(),
        }
    }

    /// Appends this frame as one JSON line (with `\n`) to `buf`.
    pub fn encode_line(&self, buf: &mut Vec<u8>) {
        encode_frame("gap", self, buf)
    }
}

impl StreamLine {
    /// Appends this line (with `\n`) to `buf`.
    pub fn encode_line(&self, buf: &mut Vec<u8>) {
        match self {
            StreamLine::Event(r) => r.encode_line(buf),
            StreamLine::Heartbeat(h) => h.encode_line(buf),
            StreamLine::Gap(g) => g.encode_line(buf),
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = self.to_line();
        f.write_str(String::from_utf8_lossy(&line).trim_end())
    }
}

/// Parses one line (without or with its trailing `\n` / `\r\n`): an event or a
/// control frame.
pub fn parse_line(line: &[u8]) -> Result<StreamLine, ParseError> {
    let text = std::str::from_utf8(line).map_err(|e| ParseError::Utf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.trim_end_matches(['\n', '\r']);
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = de.deserialize_map(RawFieldsVisitor).map_err(json_error)?;
    de.end().map_err(json_error)?;
    interpret(fields)
}

fn json_error(e: serde_json::Error) -> ParseError {
    use serde_json::error::Category;
    let message = strip_position(&e.to_string());
    match e.classify() {
        Category::Eof => ParseError::Truncated,
        Category::Data if message == TOO_MANY_FIELDS => ParseError::TooManyFields,
        Category::Data => ParseError::NotAnObject {
            found: message
                .strip_prefix("invalid type: ")
                .and_then(|m| m.split(", expected").next())
                .unwrap_or(&message)
                .to_owned(),
        },
        Category::Syntax | Category::Io => ParseError::Syntax {
            column: e.column(),
            message,
        },
    }
}

/// serde_json appends " at line L column C" to its messages; the caller reports
/// positions itself.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

const TOO_MANY_FIELDS: &str = "too many fields";

type RawFields<'de> = Vec<(Cow<'de, str>, &'de RawValue)>;

/// Collects the top-level fields of an object as raw JSON, unparsed: the type decides
/// how to read them, and it may come last.
struct RawFieldsVisitor;

impl<'de> Visitor<'de> for RawFieldsVisitor {
    type Value = RawFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(12).min(MAX_FIELDS));
        while let Some(Key(key)) = map.next_key()? {
            if fields.len() == MAX_FIELDS {
                return Err(de::Error::custom(TOO_MANY_FIELDS));
            }
            let value: &'de RawValue = map.next_value()?;
            fields.push((key, value));
        }
        Ok(fields)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

fn find_duplicate<'a>(fields: &'a RawFields<'_>) -> Option<&'a str> {
    // Events have a dozen fields at most: comparing pairs in place beats sorting a
    // copy (no allocation); larger objects (up to MAX_FIELDS) are sorted.
    if fields.len() <= 16 {
        for (i, (a, _)) in fields.iter().enumerate() {
            if fields[i + 1..].iter().any(|(b, _)| a == b) {
                return Some(a.as_ref());
            }
        }
        return None;
    }
    let mut keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_ref()).collect();
    keys.sort_unstable();
    keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

fn parse_value<'de, T: Deserialize<'de>>(field: &str, raw: &'de RawValue) -> Result<T, ParseError> {
    serde_json::from_str(raw.get()).map_err(|e| ParseError::InvalidField {
        field: field.to_owned(),
        reason: strip_position(&e.to_string()),
    })
}

fn interpret(mut fields: RawFields<'_>) -> Result<StreamLine, ParseError> {
    if let Some(dup) = find_duplicate(&fields) {
        return Err(ParseError::DuplicateField(dup.to_owned()));
    }
    let type_pos = fields
        .iter()
        .position(|(k, _)| k == "type")
        .ok_or(ParseError::MissingType)?;
    let (_, raw_type) = fields.swap_remove(type_pos);
    let ty: Cow<'_, str> = parse_value::<Key<'_>>("type", raw_type)?.0;
    match ty.as_ref() {
        "heartbeat" => {
            return Heartbeat::deserialize(FieldsDeserializer::new("heartbeat", &fields))
                .map(StreamLine::Heartbeat)
                .map_err(FieldError::into_parse_error);
        }
        "gap" => {
            return Gap::deserialize(FieldsDeserializer::new("gap", &fields))
                .map(StreamLine::Gap)
                .map_err(FieldError::into_parse_error);
        }
        _ => {}
    }
    let event_type =
        EventType::from_str(&ty).map_err(|_| ParseError::UnknownType(ty.clone().into_owned()))?;
    let mut envelope = Envelope::default();
    let mut bad: Option<ParseError> = None;
    // The envelope's fields are taken out in place; the rest are the event's.
    fields.retain(|(key, raw)| {
        let taken = match key.as_ref() {
            "seq" => parse_positive("seq", raw).map(|v| envelope.seq = Some(v)),
            "ts" => parse_value("ts", raw).map(|v| envelope.ts = Some(v)),
            "origin" => parse_value("origin", raw).map(|v| envelope.origin = Some(v)),
            "originSeq" => parse_positive("originSeq", raw).map(|v| envelope.origin_seq = Some(v)),
            _ => return true,
        };
        if let Err(e) = taken {
            bad.get_or_insert(e);
        }
        false
    });
    if let Some(e) = bad {
        return Err(e);
    }
    let event = Event::from_fields(
        event_type,
        FieldsDeserializer::new(event_type.as_str(), &fields),
    )
    .map_err(FieldError::into_parse_error)?;
    Ok(StreamLine::Event(Record { envelope, event }))
}

fn parse_positive(field: &str, raw: &RawValue) -> Result<u64, ParseError> {
    match parse_value::<u64>(field, raw)? {
        0 => Err(ParseError::InvalidField {
            field: field.to_owned(),
            reason: "must be a positive integer, found 0".to_owned(),
        }),
        n => Ok(n),
    }
}

/// The error of reading a struct from raw fields; turned into a [`ParseError`].
#[derive(Debug)]
enum FieldError {
    Missing(&'static str),
    Unknown(String),
    Duplicate(&'static str),
    Invalid { field: String, reason: String },
    Other(String),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for FieldError {}

impl de::Error for FieldError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        FieldError::Other(msg.to_string())
    }
    fn missing_field(field: &'static str) -> Self {
        FieldError::Missing(field)
    }
    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        FieldError::Unknown(field.to_owned())
    }
    fn duplicate_field(field: &'static str) -> Self {
        FieldError::Duplicate(field)
    }
}

/// Tags a [`FieldError`] with the type it was read for.
struct TypedFieldError {
    ty: &'static str,
    error: FieldError,
}

impl FieldError {
    fn into_parse_error(e: TypedFieldError) -> ParseError {
        let ty = e.ty.to_owned();
        match e.error {
            FieldError::Missing(field) => ParseError::MissingField {
                ty,
                field: field.to_owned(),
            },
            FieldError::Unknown(field) => ParseError::UnknownField { ty, field },
            FieldError::Duplicate(field) => ParseError::DuplicateField(field.to_owned()),
            FieldError::Invalid { field, reason } => ParseError::InvalidField { field, reason },
            FieldError::Other(reason) => ParseError::InvalidField {
                field: "type".to_owned(),
                reason: format!("{ty}: {reason}"),
            },
        }
    }
}

impl fmt::Debug for TypedFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?}", self.ty, self.error)
    }
}

impl fmt::Display for TypedFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for TypedFieldError {}

impl de::Error for TypedFieldError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        TypedFieldError {
            ty: "",
            error: FieldError::custom(msg),
        }
    }
}

/// A serde `Deserializer` over raw fields: a struct reads them as a map, each value
/// parsed from its raw JSON only when the struct asks for it.
struct FieldsDeserializer<'a, 'de> {
    ty: &'static str,
    fields: &'a [(Cow<'de, str>, &'de RawValue)],
}

impl<'a, 'de> FieldsDeserializer<'a, 'de> {
    fn new(ty: &'static str, fields: &'a [(Cow<'de, str>, &'de RawValue)]) -> Self {
        FieldsDeserializer { ty, fields }
    }
}

impl<'de> Deserializer<'de> for FieldsDeserializer<'_, 'de> {
    type Error = TypedFieldError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let mut access = FieldsAccess {
            iter: self.fields.iter(),
            current: None,
        };
        visitor
            .visit_map(&mut access)
            .map_err(|error| TypedFieldError { ty: self.ty, error })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct FieldsAccess<'a, 'de> {
    iter: std::slice::Iter<'a, (Cow<'de, str>, &'de RawValue)>,
    current: Option<&'a (Cow<'de, str>, &'de RawValue)>,
}

impl<'de> MapAccess<'de> for &mut FieldsAccess<'_, 'de> {
    type Error = FieldError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, FieldError> {
        match self.iter.next() {
            None => Ok(None),
            Some(entry) => {
                self.current = Some(entry);
                let key: de::value::StrDeserializer<'_, FieldError> =
                    entry.0.as_ref().into_deserializer();
                seed.deserialize(key).map(Some)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, FieldError> {
        let Some((key, raw)) = self.current.take() else {
            return Err(FieldError::Other("value requested before its key".into()));
        };
        let mut de = serde_json::Deserializer::from_str(raw.get());
        seed.deserialize(&mut de).map_err(|e| FieldError::Invalid {
            field: key.clone().into_owned(),
            reason: strip_position(&e.to_string()),
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

impl<'de> Deserialize<'de> for Record {
    /// Reads a record from a self-describing format that can lend raw JSON (use
    /// `serde_json::from_str` / `from_slice`; a reader cannot lend). Prefer
    /// [`Record::parse`], which keeps the typed [`ParseError`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fields = d.deserialize_map(RawFieldsVisitor)?;
        match interpret(fields) {
            Ok(StreamLine::Event(r)) => Ok(r),
            Ok(StreamLine::Heartbeat(_)) => Err(de::Error::custom(ParseError::ControlFrame(
                "heartbeat".into(),
            ))),
            Ok(StreamLine::Gap(_)) => {
                Err(de::Error::custom(ParseError::ControlFrame("gap".into())))
            }
            Err(e) => Err(de::Error::custom(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::*;

    fn err(line: &str) -> ParseError {
        match parse_line(line.as_bytes()) {
            Ok(ok) => panic!("accepted {line}: {ok:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn design_examples_parse_and_reencode_to_the_same_record() {
        let lines = [
            r#"{"type":"becameMaster","ts":1333576032.53991,"node":"n_0@10.17.2.163","host":"10.17.2.163:12000"}"#,
            r#"{"vbucket":0,"type":"vbucketStateChange","ts":1333576042.549572,"state":"active","host":"10.17.2.163:12000","bucket":"default"}"#,
            r#"{"type":"rebalanceStart","ts":1333576051.72607,"pid":"<0.533.0>","keepNodes":["10.17.2.163:12000","10.17.2.163:12002"],"ejectNodes":[],"failedNodes":[],"deltaNodes":[]}"#,
            r#"{"vbucket":43,"type":"updateMap","ts":1333576047.814047,"bucket":"default","chainBefore":["10.17.2.163:12002","10.17.2.163:12004"],"chainAfter":["10.17.2.163:12002",""]}"#,
            r#"{"vbucket":43,"type":"vbucketMoveDone","ts":1333576052.926554,"bucket":"default"}"#,
        ];
        for line in lines {
            let rec = Record::parse(line.as_bytes()).expect(line);
            let encoded = rec.to_line();
            let again = Record::parse(&encoded).expect("re-parses");
            assert_eq!(rec, again);
            let original: serde_json::Value = serde_json::from_str(line).expect("json");
            let reencoded: serde_json::Value = serde_json::from_slice(&encoded).expect("json");
            assert_eq!(original, reencoded, "same JSON value for {line}");
        }
    }

    #[test]
    fn encoding_puts_type_and_envelope_first() {
        let rec = Record {
            envelope: Envelope {
                seq: Some(7),
                ts: Some(Timestamp::from_micros(1_333_576_052_926_554)),
                origin: Some("n_1@h".into()),
                origin_seq: Some(3),
            },
            event: VbucketMoveDone {
                vbucket: 43,
                bucket: "default".into(),
            }
            .into(),
        };
        assert_eq!(
            String::from_utf8(rec.to_line()).ok().as_deref(),
            Some("{\"type\":\"vbucketMoveDone\",\"seq\":7,\"ts\":1333576052.926554,\"origin\":\"n_1@h\",\"originSeq\":3,\"vbucket\":43,\"bucket\":\"default\"}\n")
        );
    }

    #[test]
    fn an_event_without_fields_encodes_as_a_closed_object() {
        let rec = Record::new(FailoverEnded {});
        assert_eq!(rec.to_line(), b"{\"type\":\"failoverEnded\"}\n");
        assert_eq!(Record::parse(&rec.to_line()).ok(), Some(rec));
    }

    #[test]
    fn control_frames_round_trip() {
        let mut buf = Vec::new();
        Gap::new(5, 9, "evicted from the archive").encode_line(&mut buf);
        Heartbeat {
            seq: 9,
            ts: Timestamp::from_micros(1),
        }
        .encode_line(&mut buf);
        let mut lines = buf.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        let gap = parse_line(lines.next().unwrap_or_default()).expect("gap parses");
        assert_eq!(
            gap,
            StreamLine::Gap(Gap::new(5, 9, "evicted from the archive"))
        );
        if let StreamLine::Gap(g) = gap {
            assert_eq!(g.missed, 5);
        }
        let hb = parse_line(lines.next().unwrap_or_default()).expect("heartbeat parses");
        assert!(matches!(
            hb,
            StreamLine::Heartbeat(Heartbeat { seq: 9, .. })
        ));
        assert_eq!(
            Record::parse(
                b"{\"type\":\"gap\",\"fromSeq\":1,\"toSeq\":1,\"missed\":1,\"reason\":\"x\"}"
            ),
            Err(ParseError::ControlFrame("gap".into()))
        );
    }

    #[test]
    fn unknown_type_is_named() {
        assert_eq!(
            err(r#"{"type":"bogus"}"#),
            ParseError::UnknownType("bogus".into())
        );
        assert_eq!(err(r#"{"bucket":"x"}"#), ParseError::MissingType);
        assert!(
            matches!(err(r#"{"type":5}"#), ParseError::InvalidField { field, .. } if field == "type")
        );
    }

    #[test]
    fn missing_field_is_named() {
        assert_eq!(
            err(r#"{"type":"vbucketMoveDone","vbucket":1}"#),
            ParseError::MissingField {
                ty: "vbucketMoveDone".into(),
                field: "bucket".into()
            }
        );
    }

    #[test]
    fn wrongly_typed_value_is_named() {
        let e = err(r#"{"type":"vbucketMoveDone","vbucket":"x","bucket":"b"}"#);
        assert_eq!(e.field(), Some("vbucket"));
        assert!(e.to_string().contains("invalid type: string \"x\""), "{e}");
        let e = err(r#"{"type":"vbucketMoveDone","vbucket":70000,"bucket":"b"}"#);
        assert_eq!(e.field(), Some("vbucket"));
        let e = err(r#"{"type":"vbucketMoveDone","vbucket":1,"bucket":"b","ts":"soon"}"#);
        assert_eq!(e.field(), Some("ts"));
        let e = err(
            r#"{"type":"vbucketStateChange","vbucket":1,"bucket":"b","host":"h","state":"gone"}"#,
        );
        assert_eq!(e.field(), Some("state"));
    }

    #[test]
    fn unknown_field_is_named() {
        assert_eq!(
            err(r#"{"type":"deleteBucket","bucket":"b","buckt":"c"}"#),
            ParseError::UnknownField {
                ty: "deleteBucket".into(),
                field: "buckt".into()
            }
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert_eq!(
            err(r#"{"type":"deleteBucket","bucket":"a","bucket":"b"}"#),
            ParseError::DuplicateField("bucket".into())
        );
        assert_eq!(
            err(r#"{"type":"deleteBucket","type":"deleteBucket","bucket":"a"}"#),
            ParseError::DuplicateField("type".into())
        );
    }

    #[test]
    fn malformed_lines_are_clear_errors() {
        assert!(matches!(
            err(r#"{"type":"deleteBucket","bucket":"#),
            ParseError::Truncated
        ));
        assert!(matches!(err("[1,2]"), ParseError::NotAnObject { .. }));
        assert!(matches!(err("42"), ParseError::NotAnObject { .. }));
        assert!(matches!(
            err(r#"{"type":"x","v":NaN}"#),
            ParseError::Syntax { .. }
        ));
        assert!(matches!(
            err(r#"{"type":"x","v":Infinity}"#),
            ParseError::Syntax { .. }
        ));
        assert!(matches!(
            err(r#"{"a":1} {"b":2}"#),
            ParseError::Syntax { .. }
        ));
        assert!(matches!(
            parse_line(b"{\"type\":\"deleteBucket\",\"bucket\":\"\xff\"}"),
            Err(ParseError::Utf8 { offset: 33 })
        ));
        let deep = format!(
            "{{\"type\":\"createBucket\",\"bucket\":\"b\",\"bucketType\":\"m\",\"params\":{{\"a\":{}1{}}}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let e = err(&deep);
        assert_eq!(e.field(), Some("params"), "{e}");
        assert!(e.to_string().contains("recursion limit"), "{e}");
        let wide = format!(
            "{{{}\"type\":\"deleteBucket\"}}",
            (0..1000)
                .map(|i| format!("\"k{i}\":1,"))
                .collect::<String>()
        );
        assert_eq!(err(&wide), ParseError::TooManyFields);
    }

    #[test]
    fn zero_seq_is_refused() {
        let e = err(r#"{"type":"deleteBucket","bucket":"a","seq":0}"#);
        assert_eq!(e.field(), Some("seq"));
    }

    #[test]
    fn secrets_are_redacted_when_a_line_is_parsed() {
        let rec = Record::parse(
            br#"{"type":"createBucket","bucketType":"membase","bucket":"b","params":{"sasl_password":"hunter2","num_replicas":1}}"#,
        )
        .expect("parses");
        let line = String::from_utf8(rec.to_line()).unwrap_or_default();
        assert!(!line.contains("hunter2"), "{line}");
        assert!(line.contains("\"sasl_password\":\"*****\""), "{line}");
    }

    #[test]
    fn crlf_and_trailing_newline_are_accepted() {
        assert!(Record::parse(b"{\"type\":\"failoverEnded\"}\r\n").is_ok());
        assert!(Record::parse(b"{\"type\":\"failoverEnded\"}\n").is_ok());
    }

    #[test]
    fn serde_deserialize_of_a_record_works_from_a_str() {
        let rec: Record =
            serde_json::from_str(r#"{"type":"deleteBucket","bucket":"a","seq":3}"#).expect("ok");
        assert_eq!(rec.envelope.seq, Some(3));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        #[test]
        fn parse_encode_parse_is_the_identity(
            event in proptest::prelude::any::<Event>(),
            seq in proptest::option::of(1u64..u64::MAX),
            micros in proptest::option::of(0i64..4_000_000_000_000_000),
            origin in proptest::option::of(".{0,16}"),
            origin_seq in proptest::option::of(1u64..u64::MAX),
        ) {
            let rec = Record {
                envelope: Envelope { seq, ts: micros.map(Timestamp::from_micros), origin, origin_seq },
                event,
            };
            let line = rec.to_line();
            let parsed = Record::parse(&line);
            proptest::prop_assert_eq!(parsed.as_ref(), Ok(&rec), "line: {}", String::from_utf8_lossy(&line));
            let again = parsed.map(|r| r.to_line());
            proptest::prop_assert_eq!(again, Ok(line));
        }
    }
}
