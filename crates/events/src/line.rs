//! Wire lines: a [`Record`] (envelope + event) or a control frame, one JSON object a
//! line, and their strict parser.
//!
//! Owns: the envelope ([`Envelope`]: `seq`, `ts`, `origin`, `originTs`, `originSeq`), the control
//! frames ([`Heartbeat`], [`Gap`], [`Reset`]), the encoding of a line and the parsing of one.
//!
//! Promises:
//! - Encoding writes the `type` first, then the envelope, then the event's fields,
//!   and ends the line with `\n`; it never fails and allocates nothing but the output.
//! - Parsing accepts exactly what the published schemas accept and says why it
//!   refuses anything else, naming the field: unknown types, missing or unknown
//!   fields, wrongly typed values, duplicate keys at any depth (which plain JSON
//!   parsers silently collapse; a nested one is named with its path, e.g.
//!   `field "meta": duplicate key "a" in meta.x[0]`), invalid UTF-8, truncated input, non-finite numbers (not JSON) and
//!   nesting deeper than 128 levels are all errors, never panics.
//! - parse → encode → parse is the identity.
//!
//! Parsing is a single pass over the line for nearly every line: fields before the
//! `type` are held as raw JSON, and from the `type` on, the type's struct reads the
//! rest straight from the JSON parser while the envelope's fields are taken out on the
//! way. A line the single pass declines (any line that may be wrong, and a few valid
//! ones, such as a value nested right at the depth limit) is read again the two-pass
//! way (collect the raw fields, then interpret them), which decides and words every
//! refusal; what the single pass accepts, the two-pass reading accepts the same. So
//! a valid line is read once, and a refused one up to twice.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use compact_str::CompactString;
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
    pub origin: Option<CompactString>,
    /// When the event was noted at its origin (seconds since the Unix epoch,
    /// microsecond precision), when that is not when the master sequenced it: a
    /// follower's events wait in its queue (seconds, during a change of master)
    /// before the master stamps `ts`. Durations measured between events use it when
    /// present. Absent when the event was noted on the master itself (`ts` is then
    /// the time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_ts: Option<Timestamp>,
    /// The event's position among the events noted by its origin (1, 2, 3, ...); the
    /// master uses it to drop duplicates when a node re-sends after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub origin_seq: Option<u64>,
}

/// One event line: the envelope and the event.
///
/// A record may also hold its event's fields already encoded
/// ([`Record::encode_fields_ahead`]), which [`Record::encode_line`] then copies
/// instead of encoding them again; it is not part of what the record is (equality,
/// `Debug`). Whoever changes `event` after encoding ahead must call
/// [`Record::forget_encoded_fields`] (debug builds check every use of the copy).
#[derive(Clone)]
pub struct Record {
    /// Sequence, timestamp and origin.
    pub envelope: Envelope,
    /// The event itself.
    pub event: Event,
    /// `event`'s fields as `encode_line` writes them after the envelope (from the
    /// first field's `,` to the closing `}`), if encoded ahead.
    fields: Option<Bytes>,
}

impl PartialEq for Record {
    fn eq(&self, other: &Record) -> bool {
        self.envelope == other.envelope && self.event == other.event
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("envelope", &self.envelope)
            .field("event", &self.event)
            .finish()
    }
}

/// The `ts` and `origin` of the last line [`Record::encode_line_stamped`] encoded,
/// as they were written (`,"ts":...` and `,"origin":"..."`), for the next line to
/// copy when they are the same. Starts empty; holds one timestamp and one origin.
#[derive(Debug, Default, Clone)]
pub struct StampCache {
    ts: Option<Timestamp>,
    ts_json: Vec<u8>,
    origin: Option<CompactString>,
    origin_json: Vec<u8>,
}

/// Sent on an idle stream so a client can tell a quiet cluster from a dead connection.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Heartbeat {
    /// The `seq` of the last event sent on this stream (0 when none was).
    pub seq: u64,
    /// When the heartbeat was sent: seconds since the Unix epoch, microsecond precision.
    pub ts: Timestamp,
    /// The history the stream belongs to (see [`Reset`]): a client resumes with
    /// `since=<seq>&history=<history>`. Absent in frames of older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
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

/// Says that the stream a reader asked to resume is not this server's: the history it
/// named is not the archive's (the server restarted without persistence, or it is
/// another cluster), or the `seq` it named is beyond the last one sequenced. The
/// stream then starts again from the oldest retained event of [`Reset::history`]; a
/// reader drops what it knew of the old history's seqs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reset {
    /// The history the stream continues in: an opaque id, new whenever an archive
    /// starts empty, kept across warm restarts and changes of master.
    pub history: String,
    /// The `seq` of the oldest retained event, which the stream sends next (0 when
    /// the archive is empty).
    pub oldest_seq: u64,
    /// The last `seq` sequenced in this history (0 when none was).
    pub last_seq: u64,
    /// The history the reader asked to resume, when it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_history: Option<String>,
    /// The `seq` the reader asked to resume after.
    pub requested_since: u64,
    /// Why, e.g. `history changed` or `since is beyond the last seq`.
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
    /// The stream restarts in another history (see [`Reset`]).
    Reset(Reset),
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
    /// A control frame (`heartbeat`, `gap`, `reset`) where only events are accepted.
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
        Record::from_parts(Envelope::default(), event)
    }

    /// A record of this envelope and event.
    pub fn from_parts(envelope: Envelope, event: impl Into<Event>) -> Self {
        Record {
            envelope,
            event: event.into(),
            fields: None,
        }
    }

    /// Encodes the events' fields of all `records` now, into one shared buffer, so
    /// that [`Record::encode_line`] only copies them: a request's records are
    /// encoded ahead on the threads that parse it, which takes that work off the
    /// sequencer (the one thread every event goes through). A record whose fields
    /// are already held (kept from its line: [`Record::parse_push_shared`]) keeps
    /// them.
    pub fn encode_fields_ahead(records: &mut [Record]) {
        let missing = records.iter().filter(|r| r.fields.is_none()).count();
        if missing == 0 {
            return;
        }
        let mut buf = Vec::with_capacity(missing * 160);
        let mut ends = Vec::with_capacity(missing);
        for record in records.iter().filter(|r| r.fields.is_none()) {
            let start = buf.len();
            record.event.write_fields(&mut buf);
            splice_fields(&mut buf, start);
            ends.push(buf.len());
        }
        let buf = Bytes::from(buf);
        let mut start = 0;
        let missing = records.iter_mut().filter(|r| r.fields.is_none());
        for (record, end) in missing.zip(ends) {
            record.fields = Some(buf.slice(start..end));
            start = end;
        }
    }

    /// Drops the fields encoded ahead (after a change to `event`).
    pub fn forget_encoded_fields(&mut self) {
        self.fields = None;
    }

    /// Parses one line (without or with its trailing newline) as an event.
    pub fn parse(line: &[u8]) -> Result<Record, ParseError> {
        // As `parse_line`, without moving the record through a `StreamLine` result.
        let text = line_text(line)?;
        let mut parsed = None;
        parse_single_pass(text, &mut parsed);
        match parsed {
            Some(StreamLine::Event(record)) => Ok(record),
            Some(frame) => into_record(frame),
            None => into_record(parse_two_pass(text)?),
        }
    }

    /// As [`Record::parse`], the same record or the same error, with the record
    /// pushed onto `records` (nothing is pushed on an error).
    ///
    /// Why: a record is a few hundred bytes, and [`Record::parse`] moves it out
    /// through an option and a result before the caller moves it into its vector;
    /// here the single pass pushes it. In a profile of the server taking requests
    /// of 1,000 lines those moves were 4–5% of its time; in a profile of the parse
    /// alone, pushing took them from 4.3% to 3.8% of its samples.
    pub fn parse_push(line: &[u8], records: &mut Vec<Record>) -> Result<(), ParseError> {
        Record::parse_push_text(line_text(line)?, records)
    }

    /// As [`Record::parse_push`], for a line already known to be UTF-8: a caller
    /// that checked a whole body at once (much faster than line by line) need
    /// not have each line checked again.
    pub fn parse_push_str(line: &str, records: &mut Vec<Record>) -> Result<(), ParseError> {
        Record::parse_push_text(line.trim_end_matches(['\n', '\r']), records)
    }

    /// As [`Record::parse_push_str`], for a line that is part of `source` (a
    /// request's body): when the line is canonical, written as
    /// [`Record::encode_line`] writes it (compact JSON, the type first, then the
    /// envelope, then every field in the catalog's order, no escape in a string,
    /// no object in a value), the record holds its fields as the line has them,
    /// shared with `source`, and they are not encoded again. Otherwise the same
    /// as [`Record::parse_push_str`].
    ///
    /// Why: most lines sent for ingest are canonical, and encoding the fields of
    /// a request of the mix again took about a sixth of its parse.
    pub fn parse_push_shared(
        line: &str,
        source: &Bytes,
        records: &mut Vec<Record>,
    ) -> Result<(), ParseError> {
        Record::parse_push_in(line.trim_end_matches(['\n', '\r']), Some(source), records)
    }

    /// [`Record::parse_push`] of a line's text, without its line end.
    fn parse_push_text(text: &str, records: &mut Vec<Record>) -> Result<(), ParseError> {
        Record::parse_push_in(text, None, records)
    }

    /// [`Record::parse_push_text`], the record of a canonical line keeping its
    /// fields shared with `source` when `text` is part of it.
    fn parse_push_in(
        text: &str,
        source: Option<&Bytes>,
        records: &mut Vec<Record>,
    ) -> Result<(), ParseError> {
        let Some((envelope, event, fields)) = crate::canonical::parse(text) else {
            // Declined: the strict parser reads it (not the canonical one again).
            return Record::parse_push_strict(text, records);
        };
        let mut record = Record::from_parts(envelope, event);
        if let Some(source) = source {
            // Where `text` is in `source`, if it is there at all.
            let at = (text.as_ptr() as usize)
                .checked_sub(source.as_ptr() as usize)
                .filter(|at| at + text.len() <= source.len());
            if let Some(at) = at {
                record.fields = Some(source.slice(at + fields.start..at + fields.end));
            }
        }
        records.push(record);
        Ok(())
    }

    /// [`Record::parse_push_text`] of a line the canonical reader declined: the
    /// strict parser's single pass, then its two-pass reading.
    fn parse_push_strict(text: &str, records: &mut Vec<Record>) -> Result<(), ParseError> {
        if parse_strict_single_pass_to(text, Landing::Records(&mut *records)) {
            return Ok(());
        }
        // Declined (or a control frame): the two-pass reading decides and words it.
        records.push(into_record(parse_two_pass(text)?)?);
        Ok(())
    }

    /// Appends this record as one JSON line (with `\n`) to `buf`.
    pub fn encode_line(&self, buf: &mut Vec<u8>) {
        self.encode_line_via(
            buf,
            |ts, buf| {
                buf.extend_from_slice(b",\"ts\":");
                ts.write_json(buf);
            },
            |origin, buf| {
                buf.extend_from_slice(b",\"origin\":");
                crate::json::write(buf, origin);
            },
        );
    }

    /// As [`Record::encode_line`], the same bytes, with the `ts` and the `origin`
    /// copied from `stamps` when they are those of the line it last encoded: a
    /// sequencer stamps runs of lines with the same `ts` and `origin`, and copying
    /// them costs a fraction of encoding them.
    pub fn encode_line_stamped(&self, buf: &mut Vec<u8>, stamps: &mut StampCache) {
        let StampCache {
            ts: last_ts,
            ts_json,
            origin: last_origin,
            origin_json,
        } = stamps;
        self.encode_line_via(
            buf,
            |ts, buf| {
                if *last_ts != Some(ts) {
                    ts_json.clear();
                    ts_json.extend_from_slice(b",\"ts\":");
                    ts.write_json(ts_json);
                    *last_ts = Some(ts);
                }
                buf.extend_from_slice(ts_json);
            },
            |origin, buf| {
                if last_origin.as_deref() != Some(origin.as_str()) {
                    origin_json.clear();
                    origin_json.extend_from_slice(b",\"origin\":");
                    crate::json::write(origin_json, origin);
                    *last_origin = Some(origin.clone());
                }
                buf.extend_from_slice(origin_json);
            },
        );
    }

    /// Appends this record as one JSON line, its `ts` and `origin` (when it has
    /// them) written by `write_ts` and `write_origin` (each writes its `,"key":`).
    #[inline(always)]
    fn encode_line_via(
        &self,
        buf: &mut Vec<u8>,
        write_ts: impl FnOnce(Timestamp, &mut Vec<u8>),
        write_origin: impl FnOnce(&CompactString, &mut Vec<u8>),
    ) {
        buf.reserve(256);
        buf.extend_from_slice(b"{\"type\":\"");
        buf.extend_from_slice(self.event.type_name().as_bytes());
        buf.push(b'"');
        let env = &self.envelope;
        if let Some(seq) = env.seq {
            buf.extend_from_slice(b",\"seq\":");
            buf.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        }
        if let Some(ts) = env.ts {
            write_ts(ts, buf);
        }
        if let Some(origin) = &env.origin {
            write_origin(origin, buf);
        }
        if let Some(origin_ts) = env.origin_ts {
            buf.extend_from_slice(b",\"originTs\":");
            origin_ts.write_json(buf);
        }
        if let Some(origin_seq) = env.origin_seq {
            buf.extend_from_slice(b",\"originSeq\":");
            buf.extend_from_slice(itoa::Buffer::new().format(origin_seq).as_bytes());
        }
        match &self.fields {
            Some(fields) => {
                debug_assert_eq!(
                    fields.as_ref(),
                    {
                        let mut fresh = Vec::new();
                        self.event.write_fields(&mut fresh);
                        splice_fields(&mut fresh, 0);
                        fresh
                    }
                    .as_slice(),
                    "the fields encoded ahead are those of the event"
                );
                buf.extend_from_slice(fields);
            }
            None => {
                let start = buf.len();
                self.event.write_fields(buf);
                splice_fields(buf, start);
            }
        }
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

fn encode_frame<T: Serialize>(name: &str, frame: &T, buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'"');
    let start = buf.len();
    crate::json::write(buf, frame);
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

impl Reset {
    /// Appends this frame as one JSON line (with `\n`) to `buf`.
    pub fn encode_line(&self, buf: &mut Vec<u8>) {
        encode_frame("reset", self, buf)
    }
}

impl StreamLine {
    /// Appends this line (with `\n`) to `buf`.
    pub fn encode_line(&self, buf: &mut Vec<u8>) {
        match self {
            StreamLine::Event(r) => r.encode_line(buf),
            StreamLine::Heartbeat(h) => h.encode_line(buf),
            StreamLine::Gap(g) => g.encode_line(buf),
            StreamLine::Reset(r) => r.encode_line(buf),
        }
    }

    /// The name of a control frame's `type` (`None` for an event).
    pub fn control_type(&self) -> Option<&'static str> {
        match self {
            StreamLine::Event(_) => None,
            StreamLine::Heartbeat(_) => Some("heartbeat"),
            StreamLine::Gap(_) => Some("gap"),
            StreamLine::Reset(_) => Some("reset"),
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
    let text = line_text(line)?;
    let mut parsed = None;
    parse_single_pass(text, &mut parsed);
    match parsed {
        Some(parsed) => Ok(parsed),
        // Refused, or declined: the two-pass reading decides, and says exactly why.
        None => parse_two_pass(text),
    }
}

/// The line as text, without its line ending.
fn line_text(line: &[u8]) -> Result<&str, ParseError> {
    let text = std::str::from_utf8(line).map_err(|e| ParseError::Utf8 {
        offset: e.valid_up_to(),
    })?;
    Ok(text.trim_end_matches(['\n', '\r']))
}

/// The event of a line, or why it is not one.
fn into_record(line: StreamLine) -> Result<Record, ParseError> {
    match line {
        StreamLine::Event(record) => Ok(record),
        StreamLine::Heartbeat(_) => Err(ParseError::ControlFrame("heartbeat".into())),
        StreamLine::Gap(_) => Err(ParseError::ControlFrame("gap".into())),
        StreamLine::Reset(_) => Err(ParseError::ControlFrame("reset".into())),
    }
}

/// A field of the [`Envelope`], by its wire key. Both readings of a line take the
/// envelope's rules from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EnvelopeField {
    Seq,
    Ts,
    Origin,
    OriginSeq,
    OriginTs,
}

/// Why an envelope value was refused.
pub(crate) enum EnvelopeError<E> {
    /// The value does not read as the field's type.
    Value(E),
    /// `seq` or `originSeq` is 0.
    Zero,
}

impl EnvelopeField {
    /// The envelope field named `key`, if it names one.
    pub(crate) fn of(key: &str) -> Option<EnvelopeField> {
        match key {
            "seq" => Some(EnvelopeField::Seq),
            "ts" => Some(EnvelopeField::Ts),
            "origin" => Some(EnvelopeField::Origin),
            "originSeq" => Some(EnvelopeField::OriginSeq),
            "originTs" => Some(EnvelopeField::OriginTs),
            _ => None,
        }
    }

    /// The wire key.
    fn name(self) -> &'static str {
        match self {
            EnvelopeField::Seq => "seq",
            EnvelopeField::Ts => "ts",
            EnvelopeField::Origin => "origin",
            EnvelopeField::OriginSeq => "originSeq",
            EnvelopeField::OriginTs => "originTs",
        }
    }

    /// The [`EnvelopeField::bit`]s of all five fields.
    const ALL: u8 = 0b1_1111;

    /// A distinct bit per field, to notice one given twice.
    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Reads this field's value from `d` into `envelope`: `seq` and `originSeq` must
    /// be positive integers, `ts` a [`Timestamp`], `origin` a string.
    pub(crate) fn read<'de, D: Deserializer<'de>>(
        self,
        d: D,
        envelope: &mut Envelope,
    ) -> Result<(), EnvelopeError<D::Error>> {
        let positive = |d: D| match u64::deserialize(d).map_err(EnvelopeError::Value)? {
            0 => Err(EnvelopeError::Zero),
            n => Ok(Some(n)),
        };
        match self {
            EnvelopeField::Seq => envelope.seq = positive(d)?,
            EnvelopeField::OriginSeq => envelope.origin_seq = positive(d)?,
            EnvelopeField::Ts => {
                envelope.ts = Some(Timestamp::deserialize(d).map_err(EnvelopeError::Value)?)
            }
            EnvelopeField::OriginTs => {
                envelope.origin_ts = Some(Timestamp::deserialize(d).map_err(EnvelopeError::Value)?)
            }
            EnvelopeField::Origin => {
                envelope.origin = Some(CompactString::deserialize(d).map_err(EnvelopeError::Value)?)
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The single pass: how nearly every line is read.

/// Reads a line in one pass, for the common case of a valid line, into `out`.
///
/// Fields before the `type` are held as raw JSON; the moment the `type` is read, the
/// type's struct reads the rest of the object straight from the parser, through
/// [`StreamedFields`], which replays the held fields first and takes the envelope's
/// fields out on the way.
///
/// Leaves `out` at `None` when it declines the line, which it does for anything the
/// two-pass reading ([`parse_two_pass`]) might refuse, and for a few valid lines too (a
/// value nested just under the depth limit: the parser, already inside the line's
/// object, counts one level more than a reading of the value alone); the caller then
/// reads the line with [`parse_two_pass`]. So the single pass never accepts a line the
/// two-pass reading refuses, what it accepts it reads the same, and every refusal is
/// worded by the two-pass reading.
fn parse_single_pass(text: &str, out: &mut Option<StreamLine>) {
    // A canonical line is read faster still, by a parser of that form alone.
    if let Some((envelope, event, _)) = crate::canonical::parse(text) {
        *out = Some(StreamLine::Event(Record::from_parts(envelope, event)));
        return;
    }
    parse_strict_single_pass_to(text, Landing::Line(out));
}

/// Where the single pass puts what it read.
enum Landing<'o> {
    /// Any line, into an option, left `None` when the line is declined.
    Line(&'o mut Option<StreamLine>),
    /// Events only, pushed onto a vector; nothing is pushed when the line is
    /// declined or is a control frame (which [`Record::parse`] refuses).
    Records(&'o mut Vec<Record>),
}

impl Landing<'_> {
    /// How much has landed so far, for [`Landing::undo_since`].
    fn mark(&self) -> usize {
        match self {
            Landing::Line(_) => 0,
            Landing::Records(records) => records.len(),
        }
    }

    /// Takes back what landed since `mark`: the line is declined.
    fn undo_since(&mut self, mark: usize) {
        match self {
            Landing::Line(out) => **out = None,
            Landing::Records(records) => records.truncate(mark),
        }
    }
}

/// `serde_json`'s single pass (see [`parse_single_pass`]) into `landing`; whether
/// the line was read (`false`: declined, and nothing landed).
fn parse_strict_single_pass_to(text: &str, mut landing: Landing<'_>) -> bool {
    let mark = landing.mark();
    let mut de = serde_json::Deserializer::from_str(text);
    let read = de
        .deserialize_map(SinglePass {
            landing: &mut landing,
        })
        .unwrap_or(false);
    if !read || de.end().is_err() {
        landing.undo_since(mark);
        return false;
    }
    true
}

/// The single pass gave up on a line; [`parse_two_pass`] says why, if it is wrong. It
/// carries nothing: the reason is worked out again there.
#[derive(Debug)]
struct Declined;

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("declined by the single pass")
    }
}

impl std::error::Error for Declined {}

impl de::Error for Declined {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Declined
    }
}

/// For `map_err`: any error declines the line.
fn declined<E>(_: E) -> Declined {
    Declined
}

/// Reads the top-level object into `landing` (see [`parse_single_pass`]); whether
/// it read it (`false`: declined).
struct SinglePass<'l, 'o> {
    landing: &'l mut Landing<'o>,
}

impl<'de> Visitor<'de> for SinglePass<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    /// Declining is `Ok(false)` (no error is made for it); the parser's own errors
    /// are passed on.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut buffered: RawFields<'de> = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            if key == "type" {
                let Key(ty) = map.next_value()?;
                let fields = StreamedFields {
                    count: buffered.len() + 1,
                    buffered: buffered.into_iter(),
                    map,
                    pending_raw: None,
                    done: false,
                    envelope: None,
                    seen: 0,
                };
                return Ok(read_typed(&ty, fields, self.landing).is_ok());
            }
            // Room is kept for the `type`.
            if buffered.len() + 1 >= MAX_FIELDS {
                return Ok(false);
            }
            let value: &'de RawValue = map.next_value()?;
            buffered.push((key, value));
        }
        // No `type`.
        Ok(false)
    }
}

/// Reads the fields after the `type` as the struct of `ty`, into `landing`.
fn read_typed<'de, A: MapAccess<'de>>(
    ty: &str,
    mut fields: StreamedFields<'de, A>,
    landing: &mut Landing<'_>,
) -> Result<(), Declined> {
    let out = match landing {
        Landing::Line(out) => out,
        Landing::Records(records) => {
            // Control frames are declined (`EventType` has no such names).
            let record = read_event(ty, &mut fields)?;
            fields.check_done()?;
            records.push(record);
            return Ok(());
        }
    };
    **out = Some(match ty {
        // Control frames have no envelope: their `seq` and `ts` are their own.
        "heartbeat" => StreamLine::Heartbeat(Heartbeat::deserialize(&mut fields)?),
        "gap" => StreamLine::Gap(Gap::deserialize(&mut fields)?),
        "reset" => StreamLine::Reset(Reset::deserialize(&mut fields)?),
        _ => StreamLine::Event(read_event(ty, &mut fields)?),
    });
    fields.check_done()
}

/// Reads the fields after the `type` as the event of type `ty`, its envelope taken
/// out of them.
fn read_event<'de, A: MapAccess<'de>>(
    ty: &str,
    fields: &mut StreamedFields<'de, A>,
) -> Result<Record, Declined> {
    let event_type = EventType::from_str(ty).map_err(declined)?;
    fields.envelope = Some(Envelope::default());
    let event = Event::from_fields(event_type, &mut *fields)?;
    Ok(Record::from_parts(
        fields.envelope.take().unwrap_or_default(),
        event,
    ))
}

/// The fields of a line after its `type`, as a map for the type's struct: first the
/// fields held before the `type` (parsed from their raw JSON), then the rest straight
/// from the parser. An event's envelope fields are taken out into `envelope` on the
/// way and never shown to the struct.
///
/// Declined here: a second `type` or envelope field, more than [`MAX_FIELDS`] fields.
/// Refused by the struct's own `Deserialize` (every struct denies unknown fields): a
/// missing, unknown or repeated field of the struct, and, once all five envelope
/// fields are in, any key that is not the struct's (a second `type` or envelope
/// field included, as no struct has such a field).
struct StreamedFields<'de, A> {
    buffered: std::vec::IntoIter<(Cow<'de, str>, &'de RawValue)>,
    map: A,
    /// The raw value of the held field whose key was just handed out.
    pending_raw: Option<&'de RawValue>,
    /// Fields read so far, `type` included.
    count: usize,
    /// The parser has reached the end of the object.
    done: bool,
    /// `Some` when reading an event, whose envelope is taken out of its fields.
    envelope: Option<Envelope>,
    /// [`EnvelopeField::bit`]s of the envelope fields read.
    seen: u8,
}

impl<'de, A: MapAccess<'de>> StreamedFields<'de, A> {
    /// A struct's `Deserialize` reads the whole map; declines the line if it did
    /// not.
    fn check_done(&self) -> Result<(), Declined> {
        if !self.done || self.buffered.len() != 0 {
            return Err(Declined);
        }
        Ok(())
    }

    /// Notes that the envelope field `field` was given; a second time is declined.
    fn note(&mut self, field: EnvelopeField) -> Result<(), Declined> {
        if self.seen & field.bit() != 0 {
            return Err(Declined);
        }
        self.seen |= field.bit();
        Ok(())
    }

    /// The next key among the fields held before the `type`, if any is left.
    #[cold]
    fn next_held_key<K: DeserializeSeed<'de>>(
        &mut self,
        mut seed: K,
    ) -> Result<Result<Option<K::Value>, K>, Declined> {
        while let Some((key, raw)) = self.buffered.next() {
            match sort_key(&key, seed, self.envelope.is_some())? {
                SortedKey::Field(key) => {
                    self.pending_raw = Some(raw);
                    return Ok(Ok(Some(key)));
                }
                SortedKey::Envelope(field, unused) => {
                    self.note(field)?;
                    if let Some(envelope) = &mut self.envelope {
                        let mut de = serde_json::Deserializer::from_str(raw.get());
                        field.read(&mut de, envelope).map_err(declined)?;
                    }
                    seed = unused;
                }
                SortedKey::Type => return Err(Declined),
            }
        }
        Ok(Err(seed))
    }

    /// Reads the value of the envelope field `field` from the parser.
    #[inline(never)]
    fn read_envelope(&mut self, field: EnvelopeField) -> Result<(), Declined> {
        self.note(field)?;
        if let Some(envelope) = &mut self.envelope {
            self.map
                .next_value_seed(EnvelopeSeed { field, envelope })
                .map_err(declined)??;
        }
        Ok(())
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for &mut StreamedFields<'de, A> {
    type Error = Declined;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Declined> {
        // The fields held before the `type` come first.
        let mut seed = if self.buffered.len() == 0 {
            seed
        } else {
            match self.next_held_key(seed)? {
                Ok(key) => return Ok(key),
                Err(seed) => seed,
            }
        };
        let takes_envelope = self.envelope.is_some();
        if !takes_envelope || self.seen == EnvelopeField::ALL {
            // Nothing is left to take out, so the struct reads the keys itself (the
            // common case: our encoder writes the envelope right after the `type`).
            let key = self.map.next_key_seed(FieldKey(seed)).map_err(declined)?;
            let key = key.transpose()?;
            self.count += 1;
            if key.is_none() {
                self.done = true;
            } else if self.count > MAX_FIELDS {
                return Err(Declined);
            }
            return Ok(key);
        }
        loop {
            let sorted = self
                .map
                .next_key_seed(KeySeed {
                    seed,
                    takes_envelope,
                })
                .map_err(declined)?;
            let Some(sorted) = sorted else {
                self.done = true;
                return Ok(None);
            };
            let sorted = sorted?;
            self.count += 1;
            if self.count > MAX_FIELDS {
                return Err(Declined);
            }
            match sorted {
                SortedKey::Field(key) => return Ok(Some(key)),
                SortedKey::Envelope(field, unused) => {
                    self.read_envelope(field)?;
                    seed = unused;
                }
                SortedKey::Type => return Err(Declined),
            }
        }
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Declined> {
        match self.pending_raw.take() {
            Some(raw) => {
                let mut de = serde_json::Deserializer::from_str(raw.get());
                seed.deserialize(&mut de).map_err(declined)
            }
            None => self.map.next_value_seed(seed).map_err(declined),
        }
    }
}

/// A key after the `type`, sorted: a field of the struct (read by the struct's key
/// seed), an envelope field (the seed is handed back unused), or a second `type`.
enum SortedKey<'de, K: DeserializeSeed<'de>> {
    Field(K::Value),
    Envelope(EnvelopeField, K),
    Type,
}

/// Sorts `key`: handed to `seed` unless it is the `type` or (when `takes_envelope`) an
/// envelope field.
fn sort_key<'de, K: DeserializeSeed<'de>>(
    key: &str,
    seed: K,
    takes_envelope: bool,
) -> Result<SortedKey<'de, K>, Declined> {
    if key == "type" {
        return Ok(SortedKey::Type);
    }
    if takes_envelope {
        if let Some(field) = EnvelopeField::of(key) {
            return Ok(SortedKey::Envelope(field, seed));
        }
    }
    let key: de::value::StrDeserializer<'_, Declined> = key.into_deserializer();
    seed.deserialize(key).map(SortedKey::Field)
}

/// Sorts a key as the parser reads it (see [`sort_key`]), without first making a
/// string of it.
struct KeySeed<K> {
    seed: K,
    takes_envelope: bool,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<K> {
    /// The struct's refusal of the key is returned as the value, so no parser error
    /// (with its message) is made for it.
    type Value = Result<SortedKey<'de, K>, Declined>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for KeySeed<K> {
    type Value = Result<SortedKey<'de, K>, Declined>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(sort_key(key, self.seed, self.takes_envelope))
    }
}

/// Hands a key to the struct's key seed as the parser reads it, with the struct's
/// refusal (an unknown field) returned as the value, so no parser error (with its
/// message listing the expected fields) is made for it.
struct FieldKey<K>(K);

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for FieldKey<K> {
    type Value = Result<K::Value, Declined>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for FieldKey<K> {
    type Value = Result<K::Value, Declined>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let key: de::value::StrDeserializer<'_, Declined> = key.into_deserializer();
        Ok(self.0.deserialize(key))
    }
}

/// Reads one envelope value straight from the parser. The envelope's own refusal (a
/// zero `seq`) is returned as the value, so the parser's error type need not carry it.
struct EnvelopeSeed<'e> {
    field: EnvelopeField,
    envelope: &'e mut Envelope,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Result<(), Declined>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.field.read(d, self.envelope) {
            Ok(()) => Ok(Ok(())),
            Err(EnvelopeError::Value(e)) => Err(e),
            Err(EnvelopeError::Zero) => Ok(Err(Declined)),
        }
    }
}

// The struct of a type reads `StreamedFields` as a map.
impl<'de, A: MapAccess<'de>> Deserializer<'de> for &mut StreamedFields<'de, A> {
    type Error = Declined;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

// ---------------------------------------------------------------------------------
// The two-pass reading: the reference for what is accepted, and the wording of every
// refusal.

/// Reads a line in two passes: every top-level field is collected as raw JSON, then
/// [`interpret`]ed.
/// The record the two-pass reading (the strict parser's reference) makes of
/// `text`, if it reads one.
#[cfg(test)]
pub(crate) fn parse_two_pass_record(text: &str) -> Option<Record> {
    parse_two_pass(text)
        .ok()
        .and_then(|line| into_record(line).ok())
}

fn parse_two_pass(text: &str) -> Result<StreamLine, ParseError> {
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
    serde_json::from_str(raw.get()).map_err(|e| invalid_field(field, &e))
}

fn invalid_field(field: &str, e: &serde_json::Error) -> ParseError {
    ParseError::InvalidField {
        field: field.to_owned(),
        reason: strip_position(&e.to_string()),
    }
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
        "reset" => {
            return Reset::deserialize(FieldsDeserializer::new("reset", &fields))
                .map(StreamLine::Reset)
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
        let Some(field) = EnvelopeField::of(key) else {
            return true;
        };
        let mut de = serde_json::Deserializer::from_str(raw.get());
        if let Err(e) = field.read(&mut de, &mut envelope) {
            bad.get_or_insert(match e {
                EnvelopeError::Value(e) => invalid_field(field.name(), &e),
                EnvelopeError::Zero => ParseError::InvalidField {
                    field: field.name().to_owned(),
                    reason: "must be a positive integer, found 0".to_owned(),
                },
            });
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
    Ok(StreamLine::Event(Record::from_parts(envelope, event)))
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
    /// `serde_json::from_str` / `from_slice`; a reader cannot lend), in two passes.
    /// Prefer [`Record::parse`], which is faster and keeps the typed [`ParseError`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fields = d.deserialize_map(RawFieldsVisitor)?;
        interpret(fields)
            .and_then(into_record)
            .map_err(de::Error::custom)
    }
}

/// Records for property tests.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;

    use super::{Envelope, Record};
    use crate::event::Event;
    use crate::time::Timestamp;

    /// Any record: any event, and an envelope with each field there or not, its
    /// `origin` drawn from the regex `origin`.
    pub(crate) fn any_record(origin: &'static str) -> impl Strategy<Value = Record> {
        let micros = || proptest::option::of(0i64..4_000_000_000_000_000);
        let positive = || proptest::option::of(1u64..u64::MAX);
        (
            any::<Event>(),
            positive(),
            micros(),
            proptest::option::of(origin),
            micros(),
            positive(),
        )
            .prop_map(|(event, seq, ts, origin, origin_ts, origin_seq)| {
                Record::from_parts(
                    Envelope {
                        seq,
                        ts: ts.map(Timestamp::from_micros),
                        origin: origin.map(Into::into),
                        origin_ts: origin_ts.map(Timestamp::from_micros),
                        origin_seq,
                    },
                    event,
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::any_record;
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
        let rec = Record::from_parts(
            Envelope {
                seq: Some(7),
                ts: Some(Timestamp::from_micros(1_333_576_052_926_554)),
                origin: Some("n_1@h".into()),
                origin_ts: Some(Timestamp::from_micros(1_333_576_050_000_001)),
                origin_seq: Some(3),
            },
            VbucketMoveDone {
                vbucket: 43,
                bucket: "default".into(),
            },
        );
        assert_eq!(
            String::from_utf8(rec.to_line()).ok().as_deref(),
            Some("{\"type\":\"vbucketMoveDone\",\"seq\":7,\"ts\":1333576052.926554,\"origin\":\"n_1@h\",\"originTs\":1333576050.000001,\"originSeq\":3,\"vbucket\":43,\"bucket\":\"default\"}\n")
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
            history: None,
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
    fn duplicate_keys_nested_at_any_depth_are_refused_with_their_path() {
        let state = r#""vbucket":1,"state":"active","host":"h:1","bucket":"b""#;
        for (meta, field, reason) in [
            (r#"{"a":1,"a":2}"#, "meta", r#"duplicate key "a" in meta"#),
            (
                r#"{"x":{"a":1,"a":2}}"#,
                "meta",
                r#"duplicate key "a" in meta.x"#,
            ),
            (
                r#"{"x":{"y":{"b":[],"b":{}}}}"#,
                "meta",
                r#"duplicate key "b" in meta.x.y"#,
            ),
            (
                r#"{"x":[{"a":1},{"a":1,"c":0,"a":1}]}"#,
                "meta",
                r#"duplicate key "a" in meta.x[1]"#,
            ),
            (
                r#"{"x":[[{"k.y":{"z":1,"z":1}}]]}"#,
                "meta",
                r#"duplicate key "z" in meta.x[0][0]["k.y"]"#,
            ),
        ] {
            let expected = ParseError::InvalidField {
                field: field.into(),
                reason: reason.into(),
            };
            // The `type` first (read in one pass) and last (fields held back first).
            let first = format!(r#"{{"type":"vbucketStateChange",{state},"meta":{meta}}}"#);
            let last = format!(r#"{{"meta":{meta},{state},"type":"vbucketStateChange"}}"#);
            assert_eq!(err(&first), expected, "{first}");
            assert_eq!(err(&last), expected, "{last}");
        }
        assert_eq!(
            err(
                r#"{"type":"createBucket","bucketType":"membase","bucket":"b","params":{"o":[{"pwd":"1","pwd":"2"}]}}"#
            ),
            ParseError::InvalidField {
                field: "params".into(),
                reason: r#"duplicate key "pwd" in params.o[0]"#.into(),
            }
        );
        let line = r#"{"type":"ebucketmigratorStart","vbuckets":[1],"checkpoints":{"1":5,"1":6},"username":"u","takeover":false,"src":"a:1","dst":"b:1","pid":"<0.1.0>","node":"n","name":"t","bucket":"b"}"#;
        assert_eq!(
            err(line),
            ParseError::InvalidField {
                field: "checkpoints".into(),
                reason: "duplicate key 1 in checkpoints".into(),
            }
        );
        let line = r#"{"type":"mountingVolumesStarted","volumes":{"n1":[],"n1":["v"]},"pid":"<0.1.0>","node":"n","bucket":"b"}"#;
        assert_eq!(
            err(line),
            ParseError::InvalidField {
                field: "volumes".into(),
                reason: r#"duplicate key "n1" in volumes"#.into(),
            }
        );
        // Repeated keys in different objects are not duplicates.
        let ok = format!(
            r#"{{"type":"vbucketStateChange",{state},"meta":{{"a":{{"a":1}},"b":[{{"a":1}},{{"a":2}}]}}}}"#
        );
        assert!(parse_line(ok.as_bytes()).is_ok(), "{ok}");
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

    /// What the single pass alone makes of `line` (`None`: declined).
    fn single_pass(line: &str) -> Option<StreamLine> {
        let mut out = None;
        parse_single_pass(line, &mut out);
        out
    }

    /// `line` rebuilt from `fields` (key, raw JSON value), in that order.
    fn object(fields: &[(String, String)]) -> String {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    /// The top-level fields of `line`, in order.
    fn fields_of(line: &[u8]) -> Vec<(String, String)> {
        let mut de = serde_json::Deserializer::from_slice(line);
        match de.deserialize_map(RawFieldsVisitor) {
            Ok(fields) => fields
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.get().to_owned()))
                .collect(),
            Err(e) => panic!("not an object: {e}"),
        }
    }

    fn sample_record() -> Record {
        Record::from_parts(
            Envelope {
                seq: Some(7),
                ts: Some(Timestamp::from_micros(1_333_576_052_926_554)),
                origin: Some("n_0@h".into()),
                origin_ts: None,
                origin_seq: Some(3),
            },
            VbucketStateChange {
                vbucket: 43,
                state: VBucketState::Active,
                host: "h:1".into(),
                bucket: "default".into(),
                meta: None,
            },
        )
    }

    #[test]
    fn type_not_first_parses_the_same_as_type_first() {
        let rec = sample_record();
        let fields = fields_of(&rec.to_line());
        assert_eq!(fields[0].0, "type");
        // The `type` at every position, the rest in encoder order and reversed.
        for reversed in [false, true] {
            let mut rest = fields[1..].to_vec();
            if reversed {
                rest.reverse();
            }
            for at in 0..=rest.len() {
                let mut shuffled = rest.clone();
                shuffled.insert(at, fields[0].clone());
                let line = object(&shuffled);
                assert_eq!(Record::parse(line.as_bytes()).as_ref(), Ok(&rec), "{line}");
                assert_eq!(
                    single_pass(&line),
                    Some(StreamLine::Event(rec.clone())),
                    "the single pass declined {line}"
                );
            }
        }
    }

    #[test]
    fn the_single_pass_reads_encoded_and_ns_server_lines() {
        let lines = [
            r#"{"type":"becameMaster","ts":1333576032.53991,"node":"n_0@10.17.2.163","host":"10.17.2.163:12000"}"#,
            r#"{"vbucket":0,"type":"vbucketStateChange","ts":1333576042.549572,"state":"active","host":"10.17.2.163:12000","bucket":"default"}"#,
            r#"{"vbucket":43,"type":"vbucketMoveDone","ts":1333576052.926554,"bucket":"default"}"#,
            r#"{"type":"deleteBucket","bucket":"b\u0065","ts":1}"#,
            r#"{"type":"failoverEnded"}"#,
            r#"{"type":"heartbeat","seq":9,"ts":1.5}"#,
            r#"{"fromSeq":1,"type":"gap","toSeq":1,"missed":1,"reason":"x"}"#,
        ];
        for line in lines {
            let parsed = single_pass(line);
            assert!(parsed.is_some(), "the single pass declined {line}");
            assert_eq!(
                parsed.ok_or(()),
                parse_two_pass(line).map_err(drop),
                "{line}"
            );
        }
        let encoded = sample_record().to_line();
        let text = String::from_utf8(encoded).unwrap_or_default();
        assert!(single_pass(text.trim_end()).is_some(), "{text}");
    }

    #[test]
    fn duplicate_key_across_buffered_and_streamed_fields_is_refused() {
        for (line, field) in [
            (
                r#"{"bucket":"a","type":"deleteBucket","bucket":"b"}"#,
                "bucket",
            ),
            (
                r#"{"bucket":"a","type":"deleteBucket","bucket":"a"}"#,
                "bucket",
            ),
            (
                r#"{"seq":1,"type":"deleteBucket","bucket":"a","seq":2}"#,
                "seq",
            ),
            (
                r#"{"ts":1,"bucket":"a","type":"deleteBucket","ts":1}"#,
                "ts",
            ),
            (
                r#"{"bucket":"a","bucket":"b","type":"deleteBucket"}"#,
                "bucket",
            ),
        ] {
            assert_eq!(
                err(line),
                ParseError::DuplicateField(field.into()),
                "{line}"
            );
        }
    }

    #[test]
    fn duplicate_envelope_key_is_refused() {
        let full = r#""seq":1,"ts":2,"origin":"o","originSeq":3"#;
        for (extra, field) in [
            (r#""seq":1"#, "seq"),
            (r#""ts":2"#, "ts"),
            (r#""origin":"p""#, "origin"),
            (r#""originSeq":4"#, "originSeq"),
            (r#""type":"deleteBucket""#, "type"),
        ] {
            // After a partial envelope, and after a complete one (when the struct reads
            // the remaining keys itself).
            for envelope in [full, r#""seq":1,"ts":2"#] {
                let line = format!(r#"{{"type":"deleteBucket",{envelope},"bucket":"a",{extra}}}"#);
                if !envelope.contains(&format!("\"{field}\"")) && field != "type" {
                    continue;
                }
                assert_eq!(
                    err(&line),
                    ParseError::DuplicateField(field.into()),
                    "{line}"
                );
            }
        }
        let line = r#"{"type":"heartbeat","seq":1,"ts":2,"type":"heartbeat"}"#;
        assert_eq!(err(line), ParseError::DuplicateField("type".into()));
        let line = r#"{"type":"heartbeat","seq":1,"ts":2,"seq":1}"#;
        assert_eq!(err(line), ParseError::DuplicateField("seq".into()));
    }

    #[test]
    fn syntax_error_after_type_is_reported_as_syntax_not_field() {
        for line in [
            r#"{"type":"deleteBucket","bucket":"a",}"#,
            r#"{"type":"deleteBucket","bucket":tru}"#,
            r#"{"type":"deleteBucket","bucket":"a" "ts":1}"#,
            r#"{"type":"deleteBucket","seq":01,"bucket":"a"}"#,
            r#"{"type":"deleteBucket","ts":NaN,"bucket":"a"}"#,
            r#"{"type":"deleteBucket","bucket":"a"}}"#,
            r#"{"type":"deleteBucket","bucket":"a"} x"#,
            "{\"type\":\"deleteBucket\",\"bucket\":\"a\tb\"}",
        ] {
            let e = err(line);
            assert!(matches!(e, ParseError::Syntax { .. }), "{line}: {e:?}");
            assert_eq!(Err(e), parse_two_pass(line), "{line}");
        }
        assert!(matches!(
            err(r#"{"type":"deleteBucket","bucket":"a",}"#),
            ParseError::Syntax { column: 37, .. }
        ));
    }

    #[test]
    fn truncated_line_after_type_is_truncated() {
        let line = String::from_utf8(sample_record().to_line()).unwrap_or_default();
        let line = line.trim_end();
        let type_end = line.find(',').unwrap_or(1);
        for end in type_end..line.len() {
            let cut = &line[..end];
            let e = err(cut);
            // serde_json calls a number cut right after its `.` invalid, not truncated.
            if !cut.ends_with('.') {
                assert_eq!(e, ParseError::Truncated, "{cut}");
            }
            assert_eq!(Err(e), parse_two_pass(cut), "{cut}");
        }
    }

    #[test]
    fn a_value_nested_just_under_the_depth_limit_is_accepted_as_before() {
        let nested = |depth: usize| {
            format!(
                r#"{{"type":"createBucket","bucketType":"m","bucket":"b","params":{{"a":{}1{}}}}}"#,
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        // `params` and its 126 arrays: 127 levels in the value, 128 in the line.
        let line = nested(127);
        assert!(Record::parse(line.as_bytes()).is_ok());
        assert_eq!(single_pass(&line), None, "declined by the single pass");
        let e = err(&nested(128));
        assert_eq!(e.field(), Some("params"), "{e}");
        assert!(e.to_string().contains("recursion limit"), "{e}");
    }

    #[test]
    fn too_many_fields_after_type_are_refused() {
        let fields = |n: usize| -> String { (0..n).map(|i| format!(",\"k{i}\":1")).collect() };
        let line = format!(r#"{{"type":"deleteBucket"{}}}"#, fields(MAX_FIELDS));
        assert_eq!(err(&line), ParseError::TooManyFields);
        let line = format!(r#"{{"type":"deleteBucket"{}}}"#, fields(MAX_FIELDS - 1));
        assert!(matches!(err(&line), ParseError::UnknownField { .. }));
    }

    #[test]
    fn no_struct_has_a_type_or_envelope_field_and_all_refuse_unknown_fields() {
        // The single pass lets a struct read the keys after a complete envelope itself,
        // counting on it to refuse a second `type` or envelope field as unknown.
        let mut generator = schemars::SchemaGenerator::default();
        let mut schemas: Vec<(String, serde_json::Value)> = EventType::ALL
            .iter()
            .map(|t| (t.to_string(), t.fields_schema(&mut generator).to_value()))
            .collect();
        schemas.push((
            "heartbeat".into(),
            schemars::schema_for!(Heartbeat).to_value(),
        ));
        schemas.push(("gap".into(), schemars::schema_for!(Gap).to_value()));
        for (name, schema) in schemas {
            assert_eq!(schema["additionalProperties"], false, "{name}");
            let keys = ["type", "seq", "ts", "origin", "originSeq"];
            let own = keys
                .iter()
                .filter(|k| schema["properties"].get(**k).is_some());
            let own: Vec<_> = own.collect();
            match name.as_str() {
                "heartbeat" => assert_eq!(own, [&"seq", &"ts"]),
                _ => assert!(own.is_empty(), "{name}: {own:?}"),
            }
        }
    }

    #[test]
    fn control_frames_are_not_events() {
        let line = br#"{"type":"heartbeat","seq":9,"ts":1.5}"#;
        assert!(matches!(
            parse_line(line),
            Ok(StreamLine::Heartbeat(Heartbeat { seq: 9, .. }))
        ));
        assert_eq!(
            Record::parse(line),
            Err(ParseError::ControlFrame("heartbeat".into()))
        );
        let mut records = Vec::new();
        assert_eq!(
            Record::parse_push(line, &mut records),
            Err(ParseError::ControlFrame("heartbeat".into()))
        );
        assert!(records.is_empty());
    }

    /// A way to spoil a valid line.
    #[derive(Debug, Clone)]
    enum Mutation {
        /// The fields in another order.
        Shuffle(Vec<proptest::sample::Index>),
        /// Field `0` repeated at position `1`.
        Repeat(proptest::sample::Index, proptest::sample::Index),
        /// Field `0` repeated at position `1`, with another value.
        RepeatOther(
            proptest::sample::Index,
            proptest::sample::Index,
            &'static str,
        ),
        /// Field `0` dropped.
        Drop(proptest::sample::Index),
        /// An unknown field at position `0`.
        Unknown(proptest::sample::Index),
        /// The value of field `0` replaced.
        Replace(proptest::sample::Index, &'static str),
        /// The line cut at byte `0`.
        Truncate(proptest::sample::Index),
        /// Byte `0` replaced by `1`.
        Byte(proptest::sample::Index, u8),
    }

    const VALUES: &[&str] = &[
        "0",
        "1",
        "-1",
        "1.5",
        "1e400",
        "70000",
        "\"x\"",
        "\"\"",
        "null",
        "true",
        "[]",
        "[\"a\"]",
        "{}",
        "{\"a\":1}",
        "[[[[1]]]]",
        "\"heartbeat\"",
        "\"gap\"",
        "\"deleteBucket\"",
    ];

    fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
        use proptest::prelude::*;
        use proptest::sample::{select, Index};
        prop_oneof![
            proptest::collection::vec(any::<Index>(), 0..16).prop_map(Mutation::Shuffle),
            (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Repeat(a, b)),
            (any::<Index>(), any::<Index>(), select(VALUES))
                .prop_map(|(a, b, v)| Mutation::RepeatOther(a, b, v)),
            any::<Index>().prop_map(Mutation::Drop),
            any::<Index>().prop_map(Mutation::Unknown),
            (any::<Index>(), select(VALUES)).prop_map(|(a, v)| Mutation::Replace(a, v)),
            any::<Index>().prop_map(Mutation::Truncate),
            (
                any::<Index>(),
                select(b"{}[]:,\"\\ 0aeE.-+nt\x01\xff".to_vec())
            )
                .prop_map(|(a, b)| Mutation::Byte(a, b)),
        ]
    }

    fn mutate(line: &[u8], mutation: &Mutation) -> Vec<u8> {
        let mut fields = fields_of(line);
        let n = fields.len();
        match mutation {
            Mutation::Shuffle(swaps) => {
                for (i, j) in swaps.iter().enumerate() {
                    fields.swap(i % n, j.index(n));
                }
            }
            Mutation::Repeat(a, b) => {
                let f = fields[a.index(n)].clone();
                fields.insert(b.index(n + 1), f);
            }
            Mutation::RepeatOther(a, b, v) => {
                let (k, _) = fields[a.index(n)].clone();
                fields.insert(b.index(n + 1), (k, (*v).to_owned()));
            }
            Mutation::Drop(a) => {
                fields.remove(a.index(n));
            }
            Mutation::Unknown(a) => fields.insert(a.index(n + 1), ("zz".into(), "1".into())),
            Mutation::Replace(a, v) => fields[a.index(n)].1 = (*v).to_owned(),
            Mutation::Truncate(a) => {
                let text = object(&fields).into_bytes();
                return text[..a.index(text.len())].to_vec();
            }
            Mutation::Byte(a, b) => {
                let mut text = object(&fields).into_bytes();
                let i = a.index(text.len());
                text[i] = *b;
                return text;
            }
        }
        object(&fields).into_bytes()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The single pass accepts exactly what the two-pass reading accepts (bar deep
        /// nesting, which these lines do not have), reads it the same, and leaves
        /// every refusal to the two-pass reading's words.
        #[test]
        fn the_single_pass_agrees_with_the_two_pass_reading(
            event in proptest::prelude::any::<Event>(),
            seq in proptest::option::of(1u64..u64::MAX),
            micros in proptest::option::of(0i64..4_000_000_000_000_000),
            origin in proptest::option::of(".{0,8}"),
            origin_micros in proptest::option::of(0i64..4_000_000_000_000_000),
            origin_seq in proptest::option::of(1u64..u64::MAX),
            mutation in mutation(),
        ) {
            // (Not `any_record`: with it, this test overflowed a test thread's
            // stack in debug builds.)
            let rec = Record::from_parts(
                Envelope {
                    seq,
                    ts: micros.map(Timestamp::from_micros),
                    origin: origin.map(Into::into),
                    origin_ts: origin_micros.map(Timestamp::from_micros),
                    origin_seq,
                },
                event,
            );
            let line = mutate(&rec.to_line(), &mutation);
            let reference = std::str::from_utf8(&line)
                .map_err(|e| ParseError::Utf8 { offset: e.valid_up_to() })
                .and_then(parse_two_pass);
            let shown = String::from_utf8_lossy(&line).into_owned();
            proptest::prop_assert_eq!(&parse_line(&line), &reference, "line: {}", shown);
            proptest::prop_assert_eq!(
                Record::parse(&line),
                reference.clone().and_then(into_record),
                "line: {}", shown
            );
            // Pushed onto what is there, or nothing pushed and the same error; from
            // the bytes, and from the text when the line is UTF-8.
            let before = Record::from_parts(Envelope::default(), FailoverEnded {});
            let mut pushes = Vec::new();
            let mut pushed = vec![before.clone()];
            pushes.push((Record::parse_push(&line, &mut pushed), pushed));
            if let Ok(text) = std::str::from_utf8(&line) {
                let mut pushed = vec![before.clone()];
                pushes.push((Record::parse_push_str(text, &mut pushed), pushed));
            }
            // From a body the line is part of: the same, and the fields the record
            // keeps from the line (a canonical one) are those the encoder writes.
            let body = bytes::Bytes::from([b"{}\n".as_slice(), &line].concat());
            if let Ok(text) = std::str::from_utf8(&body[3..]) {
                let mut pushed = vec![before.clone()];
                let outcome = Record::parse_push_shared(text, &body, &mut pushed);
                if let Some(fields) = pushed.get(1).and_then(|r| r.fields.as_ref()) {
                    let mut fresh = Vec::new();
                    pushed[1].event.write_fields(&mut fresh);
                    splice_fields(&mut fresh, 0);
                    proptest::prop_assert_eq!(fields.as_ref(), fresh.as_slice(), "line: {}", shown);
                }
                pushes.push((outcome, pushed));
            }
            for (outcome, pushed) in pushes {
                match reference.clone().and_then(into_record) {
                    Ok(expected) => {
                        proptest::prop_assert_eq!(outcome, Ok(()), "line: {}", shown);
                        proptest::prop_assert_eq!(pushed, vec![before.clone(), expected], "line: {}", shown);
                    }
                    Err(e) => {
                        proptest::prop_assert_eq!(outcome, Err(e), "line: {}", shown);
                        proptest::prop_assert_eq!(pushed, vec![before.clone()], "line: {}", shown);
                    }
                }
            }
            if let Ok(expected) = reference {
                let text = std::str::from_utf8(&line).unwrap_or_default();
                proptest::prop_assert_eq!(single_pass(text), Some(expected), "line: {}", shown);
            }
            if let Mutation::Shuffle(_) = mutation {
                proptest::prop_assert_eq!(parse_line(&line), Ok(StreamLine::Event(rec)));
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        #[test]
        fn parse_encode_parse_is_the_identity(
            rec in any_record(".{0,16}"),
        ) {
            let line = rec.to_line();
            let parsed = Record::parse(&line);
            proptest::prop_assert_eq!(parsed.as_ref(), Ok(&rec), "line: {}", String::from_utf8_lossy(&line));
            let again = parsed.map(|r| r.to_line());
            proptest::prop_assert_eq!(again, Ok(line));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// A line encoded with a stamp cache is byte for byte the line encoded
        /// afresh, along runs of records whose `ts` and `origin` repeat, change,
        /// come back, or are absent (the cache never writes a stale stamp).
        #[test]
        fn lines_encoded_with_a_stamp_cache_are_the_lines_encoded_afresh(
            records in proptest::collection::vec(
                (
                    proptest::prelude::any::<Event>(),
                    proptest::option::of(0i64..3),
                    proptest::option::of(0usize..3),
                    proptest::option::of(0i64..2),
                ),
                0..24,
            ),
            base in 0i64..4_000_000_000_000_000,
        ) {
            let origins = ["n_0@127.0.0.1", "n_1@127.0.0.1", "a \"quoted\"\nname"];
            let mut stamps = StampCache::default();
            let mut run = Vec::new();
            for (event, ts, origin, origin_ts) in records {
                let rec = Record::from_parts(
                    Envelope {
                        seq: Some(7),
                        ts: ts.map(|t| Timestamp::from_micros(base + t * 1_000_000)),
                        origin: origin.map(|o| origins[o].into()),
                        origin_ts: origin_ts.map(|t| Timestamp::from_micros(base + t)),
                        origin_seq: None,
                    },
                    event,
                );
                let mut stamped = b"before:".to_vec();
                rec.encode_line_stamped(&mut stamped, &mut stamps);
                let mut fresh = b"before:".to_vec();
                rec.encode_line(&mut fresh);
                proptest::prop_assert_eq!(
                    String::from_utf8_lossy(&stamped),
                    String::from_utf8_lossy(&fresh)
                );
                run.extend_from_slice(&stamped[7..]);
            }
            for line in run.split_inclusive(|b| *b == b'\n') {
                proptest::prop_assert!(parse_line(line).is_ok());
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// Fields encoded ahead are copied into exactly the line encoding them
        /// afresh would write, whatever the envelope is given afterwards (the
        /// sequencer stamps it later); they change neither equality nor `Debug`.
        #[test]
        fn fields_encoded_ahead_give_the_line_encoded_afresh(
            events in proptest::collection::vec(proptest::prelude::any::<Event>(), 0..8),
            seq in 1u64..u64::MAX,
            micros in 0i64..4_000_000_000_000_000,
            origin in ".{0,16}",
            origin_seq in proptest::option::of(1u64..u64::MAX),
        ) {
            let fresh: Vec<Record> = events.into_iter().map(Record::new).collect();
            let mut ahead = fresh.clone();
            Record::encode_fields_ahead(&mut ahead);
            for (mut a, mut f) in ahead.into_iter().zip(fresh) {
                proptest::prop_assert!(a.fields.is_some());
                proptest::prop_assert_eq!(&a, &f);
                proptest::prop_assert_eq!(format!("{a:?}"), format!("{f:?}"));
                for rec in [&mut a, &mut f] {
                    rec.envelope = Envelope {
                        seq: Some(seq),
                        ts: Some(Timestamp::from_micros(micros)),
                        origin: Some(origin.as_str().into()),
                        origin_ts: None,
                        origin_seq,
                    };
                }
                proptest::prop_assert_eq!(a.to_line(), f.to_line());
            }
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "the fields encoded ahead are those of the event")]
    fn a_change_to_the_event_after_encoding_ahead_is_caught_in_debug_builds() {
        let mut records = vec![Record::new(crate::catalog::VbucketMoveDone {
            vbucket: 1,
            bucket: "a".into(),
        })];
        Record::encode_fields_ahead(&mut records);
        records[0].event = crate::catalog::VbucketMoveDone {
            vbucket: 2,
            bucket: "a".into(),
        }
        .into();
        let _ = records[0].to_line();
    }

    #[test]
    fn forgetting_the_fields_encoded_ahead_encodes_the_changed_event() {
        let mut records = vec![Record::new(crate::catalog::VbucketMoveDone {
            vbucket: 1,
            bucket: "a".into(),
        })];
        Record::encode_fields_ahead(&mut records);
        let changed = crate::catalog::VbucketMoveDone {
            vbucket: 2,
            bucket: "a".into(),
        };
        records[0].event = changed.clone().into();
        records[0].forget_encoded_fields();
        assert_eq!(records[0].to_line(), Record::new(changed).to_line());
    }
}
