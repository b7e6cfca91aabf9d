//! `POST /diag/masterEvents`: ingest NDJSON events.
//!
//! Owns: reading the body within the size limit, parsing every line, and handing
//! the batch to the router.
//!
//! Promises:
//! - All lines valid or none taken: the whole body is parsed before anything is
//!   published, and the batch is sequenced as one contiguous run of seqs.
//! - A line's `ts`, `seq`, `origin` and `originSeq` are replaced by this node's own,
//!   so lines copied from a stream or a log can be sent back as they are.
//! - 400 names the first bad line (1-based), its field and why; 413 when the body is
//!   over the limit (checked against `Content-Length` before reading, and while
//!   reading for bodies that do not say or lie); 415 for a content type other than
//!   NDJSON/JSON, a `charset` other than `utf-8` (the body is read as UTF-8, so a
//!   UTF-16 body would be misread), or a `Content-Encoding` other than `identity` (a
//!   gzip body is not inflated, so it would be misread) ([`check_headers`]); nothing
//!   already archived is touched by a refused request.
//!
//! With `?stream=1` a request is a feed instead: a body of any length whose lines
//! are taken as they arrive, a run of whole lines at a time ([`LineBatcher`]), each
//! run all-or-nothing like a request. A producer that sends events continuously
//! gets no reply per batch (the reply comes when the body ends), which is what a
//! reply per batch costs at low rates: see docs/benchmarks-history.md. A bad line ends the
//! feed: every line before it is taken, it and the rest are not, and the refusal
//! says so (`accepted`); one line longer than the size limit ends it with 413.

use axum::http::{header, HeaderMap};
use bytes::{Bytes, BytesMut};
use master_events_events::{legacy, Envelope, Record};
use serde::Serialize;

/// The content types accepted for ingest.
pub const ACCEPTED_TYPES: &[&str] = &[
    "application/x-ndjson",
    "application/jsonl",
    "application/json",
    "application/json-seq",
    "text/plain",
];

/// Whether a `Content-Type` header value is acceptable (parameters ignored; an
/// absent header is accepted).
pub fn content_type_ok(value: Option<&str>) -> bool {
    match value {
        None => true,
        Some(v) => {
            let essence = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            ACCEPTED_TYPES.contains(&essence.as_str())
        }
    }
}

/// Why a request's headers say its body cannot be read (answered 415).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// A `Content-Type` that is not NDJSON or JSON.
    #[error("unsupported Content-Type {0:?}: send NDJSON as application/x-ndjson")]
    ContentType(String),
    /// A `charset` parameter other than `utf-8`.
    #[error("unsupported charset {0:?}: the body must be UTF-8 (charset=utf-8, or none)")]
    Charset(String),
    /// A `Content-Encoding` other than `identity`.
    #[error(
        "unsupported Content-Encoding {0:?}: send the body uncompressed (no Content-Encoding, or identity)"
    )]
    ContentEncoding(String),
}

/// The longest header value quoted back in a [`MediaError`].
const SHOWN_VALUE: usize = 64;

/// A header value as a [`MediaError`] quotes it: at most [`SHOWN_VALUE`] characters
/// (its `Debug` form escapes what is not printable).
fn shown(value: &str) -> String {
    value.chars().take(SHOWN_VALUE).collect()
}

/// Checks the headers that say how to read the body: `Content-Type` (as
/// [`content_type_ok`]) and its `charset` (`utf-8`, any case, quoted or not, or
/// none), and `Content-Encoding` (none, or only `identity`).
pub fn check_headers(headers: &HeaderMap) -> Result<(), MediaError> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Err(MediaError::ContentEncoding("(not text)".into()));
        };
        let coding = text
            .split(',')
            .map(str::trim)
            .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
        if let Some(coding) = coding {
            return Err(MediaError::ContentEncoding(shown(coding)));
        }
    }
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let Ok(text) = value.to_str() else {
        return Err(MediaError::ContentType("(not text)".into()));
    };
    if !content_type_ok(Some(text)) {
        return Err(MediaError::ContentType(shown(text)));
    }
    for param in text.split(';').skip(1) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if !name.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        let value = value.trim();
        let charset = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if !charset.eq_ignore_ascii_case("utf-8") {
            return Err(MediaError::Charset(shown(charset)));
        }
    }
    Ok(())
}

/// The reply to a successful ingest.
#[derive(Debug, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Accepted {
    /// How many events were taken.
    pub accepted: usize,
    /// The first and last seq assigned (empty when the body had no events).
    pub seqs: Vec<u64>,
    /// With a client origin ([`ORIGIN_HEADER`]): events the cluster already had
    /// (a retry), not sequenced again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<usize>,
}

/// The request header that names a client's own origin: with it, every line
/// carries its `originSeq` (growing within the origin), and the cluster
/// sequences each `(origin, originSeq)` once — a client that retries a request
/// (after a timeout, a 503, a lost connection) never creates a duplicate.
pub const ORIGIN_HEADER: &str = "master-events-origin";

/// Whether `origin` can name a client origin: 1 to 128 visible ASCII characters.
pub fn is_valid_origin(origin: &str) -> bool {
    (1..=128).contains(&origin.len()) && origin.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses every non-blank line of `body` for the client origin `origin`: each
/// line keeps its `originSeq`, which must be there and grow from line to line;
/// the rest of the envelope is cleared. Says which line is wrong.
pub fn parse_body_of(body: &Bytes, origin: &str) -> Result<Vec<Record>, Refusal> {
    let mut records = parse_lines_keeping_origin_seq(body)?;
    let mut previous = 0;
    for (i, rec) in records.iter_mut() {
        let n = rec.envelope.origin_seq.unwrap_or(0);
        let refuse = |error: String| Refusal {
            error,
            line: Some(*i),
            field: Some("originSeq".to_owned()),
        };
        if n == 0 {
            return Err(refuse(format!(
                "line {i}: with {ORIGIN_HEADER}, every line needs an originSeq (a positive integer)"
            )));
        }
        if n <= previous {
            return Err(refuse(format!(
                "line {i}: originSeq {n} does not grow (the line before has {previous})"
            )));
        }
        previous = n;
        rec.envelope = Envelope {
            origin: Some(origin.into()),
            origin_seq: Some(n),
            ..Envelope::default()
        };
    }
    Ok(records.into_iter().map(|(_, r)| r).collect())
}

fn parse_lines_keeping_origin_seq(body: &[u8]) -> Result<Vec<(usize, Record)>, Refusal> {
    let mut records = Vec::with_capacity(presize(body));
    for (i, line) in lines(body) {
        let n = i + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match Record::parse(line) {
            Ok(rec) => records.push((n, rec)),
            Err(e) => {
                return Err(Refusal {
                    error: format!("line {n}: {e}{}", legacy_hint(line)),
                    line: Some(n),
                    field: e.field().map(str::to_owned),
                })
            }
        }
    }
    Ok(records)
}

/// The body of a refused ingest.
#[derive(Debug, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Refusal {
    /// What is wrong.
    pub error: String,
    /// The 1-based number of the bad line, when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The field of that line, when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The most records a batch is sized for up front (a body of blank lines must not
/// make it reserve gigabytes; larger batches grow as they parse).
const PRESIZE_MAX: usize = 8192;

/// The lines of `body` (split at `\n`, which is not included), each with its
/// 0-based index. The search is `memchr`'s vectorised one: with it, splitting is a
/// negligible part of parsing a body, where a byte-at-a-time split was about a
/// seventh of it.
fn lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> + '_ {
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
    ends.enumerate().map(move |(i, end)| {
        let line = &body[start..end];
        start = end + 1;
        (i, line)
    })
}

/// How many records to size a batch for: the lines of `body` (an upper bound on
/// its records), at most [`PRESIZE_MAX`], so that a usual batch is allocated once
/// instead of being copied at each doubling.
fn presize(body: &[u8]) -> usize {
    (memchr::memchr_iter(b'\n', body).count() + 1).min(PRESIZE_MAX)
}

/// `body` with every line of ns_server's 2012 form rewritten in the current form
/// (`?legacy=1`; `master_events_events::legacy`). Other lines, blank ones and line
/// ends are kept as they are, so line numbers in a refusal stay those of the
/// request. The body itself when no line needed it.
pub fn rewrite_legacy(body: &Bytes) -> Bytes {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut start = 0;
    for (_, line) in lines(body) {
        let end = start + line.len();
        if let Ok(Some(rewritten)) = legacy::normalize_line(line) {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(body.len() + 64));
            buf.extend_from_slice(&body[copied..start]);
            buf.extend_from_slice(&rewritten);
            copied = end;
        }
        start = end + 1;
    }
    match out {
        None => body.clone(),
        Some(mut buf) => {
            buf.extend_from_slice(&body[copied.min(body.len())..]);
            Bytes::from(buf)
        }
    }
}

/// A refusal's hint when the refused line is in ns_server's 2012 form.
fn legacy_hint(line: &[u8]) -> &'static str {
    let readable = matches!(
        legacy::normalize_line(line),
        Ok(Some(rewritten)) if Record::parse(&rewritten).is_ok()
    );
    if readable {
        " (this line is in ns_server's 2012 form: send it with ?legacy=1)"
    } else {
        ""
    }
}

/// Parses every non-blank line of `body` into records with empty envelopes, or
/// says which line is wrong.
///
/// A record whose line writes its fields as the encoder would (a line written by
/// this project's encoder, or any compact one in the catalog's order) holds them,
/// shared with `body` ([`Record::parse_push_shared`]), so the sequencer copies them
/// instead of encoding them.
pub fn parse_body(body: &Bytes) -> Result<Vec<Record>, Refusal> {
    match parse_lines_in(body, 1, usize::MAX, Some(body)) {
        (records, None) => Ok(records),
        (_, Some(Stop::BadLine(refusal) | Stop::TooLong(refusal))) => Err(refusal),
    }
}

/// Parses a chunk of a body ([`parse_lines_until`] from its line 1) and, when all
/// of it is valid, gives every record its fields encoded ahead
/// ([`Record::encode_fields_ahead`]): kept from its line when the line already
/// writes them so ([`Record::parse_push_shared`]), encoded otherwise.
pub fn parse_chunk(chunk: &Bytes) -> (Vec<Record>, Option<Stop>) {
    // The records keep slices of the chunk, a reference count each. The chunks of
    // one body share one count, which threads parsing them side by side would
    // contend for; a count of this chunk's own is touched by this thread alone.
    let chunk = Bytes::from_owner(chunk.clone());
    let (mut records, stop) = parse_lines_in(&chunk, 1, usize::MAX, Some(&chunk));
    if stop.is_none() {
        Record::encode_fields_ahead(&mut records);
    }
    (records, stop)
}

/// The bytes of body a thread parses: a body is parsed on one thread for each
/// (up to the CPUs), so on several from twice this ([`parse_body_in_parts`]):
/// such a body takes a few hundred microseconds to parse, far more than handing
/// part of it to another thread costs.
pub const PART_BYTES: usize = 64 * 1024;

/// As [`parse_body`], the same records or the same refusal, with a long body (of
/// [`PART_BYTES`] a thread: from twice that) parsed by this task and up to
/// [`std::thread::available_parallelism`]` - 1` helper threads (kept off this
/// task's core while they help: see `parse_helpers`): the body is cut at line ends
/// into chunks, which each thread takes in turn until none is left, so that a
/// helper that starts late, or shares its core, takes fewer ([`BodyParse`]). Each
/// chunk's records get their fields encoded on the thread that parsed them
/// ([`Record::encode_fields_ahead`]), so the sequencer only copies them.
///
/// Why: a producer that sends one request at a time waits for each reply, so the
/// request's parse is on its critical path while the other core idles (see
/// docs/benchmarks-history.md). The refusal named is that of the first bad line of the
/// body, whichever thread found it. A body still being read is parsed so too, as
/// it comes ([`BodyParse::push`]).
///
/// The records come in the parts they were parsed in, in order (joined, they are
/// [`parse_body`]'s): the router takes them so ([`Router::publish_parts`]), which
/// spares a copy of every record.
///
/// [`Router::publish_parts`]: master_events_router::Router::publish_parts
/// [`BodyParse`]: crate::body_parse::BodyParse
/// [`BodyParse::push`]: crate::body_parse::BodyParse::push
pub async fn parse_body_in_parts(body: &Bytes) -> Result<Vec<Vec<Record>>, Refusal> {
    parse_body_in(body, parts_wanted(body.len())).await
}

/// [`parse_body_in_parts`] with at most `threads` threads.
async fn parse_body_in(body: &Bytes, threads: usize) -> Result<Vec<Vec<Record>>, Refusal> {
    if threads < 2 {
        return parse_body(body).map(|records| vec![records]);
    }
    let mut parse = crate::body_parse::BodyParse::new(threads);
    parse.push_whole(body);
    parse.finish().await
}

/// How many threads a body of a declared length `len` is parsed on as it is read
/// (see [`crate::body_parse`]); 1: read it whole first, then parse it.
pub(crate) fn parts_while_read(len: u64) -> usize {
    parts_wanted(usize::try_from(len).unwrap_or(usize::MAX))
}

/// How many threads [`parse_body_in_parts`] parses a body of `len` bytes on.
fn parts_wanted(len: usize) -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let threads = *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(std::num::NonZeroUsize::get)
            .unwrap_or(1)
    });
    (len / PART_BYTES).clamp(1, threads)
}

/// Why [`parse_lines_until`] stopped before the end of its input.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// A line is not a valid event (a 400).
    BadLine(Refusal),
    /// A line is longer than the limit (a 413).
    TooLong(Refusal),
}

/// The refusal of line `line` (1-based) for being longer than `limit` bytes.
pub fn too_long(line: usize, limit: usize) -> Refusal {
    Refusal {
        error: format!("line {line} is longer than the limit of {limit} bytes"),
        line: Some(line),
        field: None,
    }
}

/// Parses the lines of `body` into records with empty envelopes, up to the first
/// that is bad or longer than `max_line` bytes (its line end not counted): the
/// records of every line before it, and why it stopped. The first line of `body`
/// is line `first_line` (1-based) of a longer input, and a refusal names that
/// number.
pub fn parse_lines_until(
    body: &[u8],
    first_line: usize,
    max_line: usize,
) -> (Vec<Record>, Option<Stop>) {
    parse_lines_in(body, first_line, max_line, None)
}

/// [`parse_lines_until`]; when `body` is `source`'s bytes, a record of a canonical
/// line holds its fields shared with `source` ([`Record::parse_push_shared`]).
fn parse_lines_in(
    body: &[u8],
    first_line: usize,
    max_line: usize,
    source: Option<&Bytes>,
) -> (Vec<Record>, Option<Stop>) {
    let mut records = Vec::with_capacity(presize(body));
    // A body that is UTF-8 as a whole is checked once, SIMD-fast; its lines, cut
    // at the ASCII `\n`, are then UTF-8 too. One that is not is checked line by
    // line, which names the bad line and the offset in it.
    let text = simdutf8::basic::from_utf8(body).ok();
    let mut at = 0;
    for (i, line) in lines(body) {
        let n = first_line + i;
        let start = at;
        at += line.len() + 1;
        if line.len() > max_line {
            return (records, Some(Stop::TooLong(too_long(n, max_line))));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = match (
            text.and_then(|text| text.get(start..start + line.len())),
            source,
        ) {
            (Some(line), Some(source)) => Record::parse_push_shared(line, source, &mut records),
            (Some(line), None) => Record::parse_push_str(line, &mut records),
            (None, _) => Record::parse_push(line, &mut records),
        };
        match parsed {
            Ok(()) => {
                if let Some(rec) = records.last_mut() {
                    rec.envelope = Envelope::default();
                }
            }
            Err(e) => {
                let refusal = Refusal {
                    error: format!("line {n}: {e}{}", legacy_hint(line)),
                    line: Some(n),
                    field: e.field().map(str::to_owned),
                };
                return (records, Some(Stop::BadLine(refusal)));
            }
        }
    }
    (records, None)
}

/// Cuts a byte stream into runs of whole lines, for an ingest that takes lines as
/// they arrive (`POST /diag/masterEvents?stream=1`).
///
/// Holds at most the unfinished last line plus what was pushed since the last
/// [`LineBatcher::take`]; the caller bounds both (see [`LineBatcher::unfinished`]).
/// Each pushed byte is searched for line ends once, when it is pushed.
#[derive(Debug, Default)]
pub struct LineBatcher {
    pending: BytesMut,
    /// Bytes of `pending` up to and including its last `\n`: its whole lines.
    whole: usize,
    /// Line ends in those whole lines.
    whole_lines: usize,
    /// Lines handed out so far (the next run starts at line `taken + 1`).
    taken: usize,
}

impl LineBatcher {
    /// An empty batcher.
    pub fn new() -> LineBatcher {
        LineBatcher::default()
    }

    /// Appends bytes as they arrived.
    pub fn push(&mut self, data: &[u8]) {
        let mut last = None;
        for end in memchr::memchr_iter(b'\n', data) {
            last = Some(end);
            self.whole_lines += 1;
        }
        if let Some(end) = last {
            self.whole = self.pending.len() + end + 1;
        }
        self.pending.extend_from_slice(data);
    }

    /// Bytes of whole lines not yet taken.
    pub fn waiting(&self) -> usize {
        self.whole
    }

    /// The length of the unfinished last line (the bytes after the last `\n`).
    pub fn unfinished(&self) -> usize {
        self.pending.len() - self.whole
    }

    /// The line number (1-based) the next run starts at.
    pub fn next_line(&self) -> usize {
        self.taken + 1
    }

    /// The whole lines pushed so far, with the number of the first; `None` when no
    /// line is complete yet.
    pub fn take(&mut self) -> Option<(usize, Bytes)> {
        if self.whole == 0 {
            return None;
        }
        let run = self.pending.split_to(self.whole).freeze();
        Some(self.hand_out(run, self.whole_lines))
    }

    /// Everything left at the end of the input (the last line needs no `\n`);
    /// `None` when nothing is.
    pub fn finish(&mut self) -> Option<(usize, Bytes)> {
        if self.pending.is_empty() {
            return None;
        }
        let lines = self.whole_lines + usize::from(self.unfinished() > 0);
        let run = self.pending.split().freeze();
        Some(self.hand_out(run, lines))
    }

    fn hand_out(&mut self, run: Bytes, lines: usize) -> (usize, Bytes) {
        let first = self.taken + 1;
        self.taken += lines;
        self.whole = 0;
        self.whole_lines = 0;
        (first, run)
    }
}

/// Parses a forwarded body: every line must carry `origin` and `originSeq` (kept);
/// `seq` and `ts` are cleared for the master to stamp.
pub fn parse_forwarded(body: &Bytes) -> Result<Vec<Record>, Refusal> {
    let mut records = Vec::with_capacity(presize(body));
    for (i, line) in lines(body) {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let refuse = |error: String, field: Option<&str>| Refusal {
            error: format!("line {}: {error}", i + 1),
            line: Some(i + 1),
            field: field.map(str::to_owned),
        };
        let mut rec = Record::parse(line).map_err(|e| refuse(e.to_string(), e.field()))?;
        if rec.envelope.origin.is_none() || rec.envelope.origin_seq.is_none() {
            return Err(refuse(
                "a forwarded event needs origin and originSeq".into(),
                Some("originSeq"),
            ));
        }
        rec.envelope.seq = None;
        rec.envelope.ts = None;
        records.push(rec);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_batcher_hands_out_whole_lines_numbered_across_runs() {
        let mut b = LineBatcher::new();
        b.push(b"a\nb");
        assert_eq!((b.waiting(), b.unfinished()), (2, 1));
        assert_eq!(b.take(), Some((1, Bytes::from_static(b"a\n"))));
        assert_eq!(b.take(), None, "b is not whole yet");
        b.push(b"b\n\ncc\nd");
        assert_eq!((b.waiting(), b.unfinished()), (7, 1));
        assert_eq!(b.take(), Some((2, Bytes::from_static(b"bb\n\ncc\n"))));
        assert_eq!(b.next_line(), 5);
        b.push(b"d\ne");
        assert_eq!(b.finish(), Some((5, Bytes::from_static(b"dd\ne"))));
        assert_eq!(b.finish(), None);
        assert_eq!(b.next_line(), 7);
    }

    #[test]
    fn canonical_and_other_lines_of_one_body_give_the_lines_the_encoder_writes() {
        // The same events, written canonically (their fields kept from the body)
        // and not (spaces, another order, an escape: their fields encoded), with
        // CRLF and without a final line end.
        let body = Bytes::from_static(
            b"{\"type\":\"vbucketMoveDone\",\"seq\":4,\"vbucket\":3,\"bucket\":\"b\"}\r\n\
              { \"type\": \"vbucketMoveDone\", \"vbucket\": 3, \"bucket\": \"b\" }\n\
              {\"type\":\"vbucketMoveDone\",\"bucket\":\"b\",\"vbucket\":3}\n\
              {\"type\":\"vbucketMoveDone\",\"vbucket\":3,\"bucket\":\"\\u0062\"}\n\
              {\"type\":\"vbucketMoveDone\",\"vbucket\":3,\"bucket\":\"b\"}",
        );
        let expected = b"{\"type\":\"vbucketMoveDone\",\"vbucket\":3,\"bucket\":\"b\"}\n";
        for records in [
            parse_body(&body).expect("valid"),
            parse_chunk(&body).0,
            parse_lines_until(&body, 1, usize::MAX).0,
        ] {
            assert_eq!(records.len(), 5);
            for record in records {
                assert_eq!(record.to_line(), expected);
            }
        }
    }

    #[test]
    fn parsing_stops_at_a_bad_or_long_line_with_the_lines_before_it() {
        let ok = "{\"type\":\"failoverEnded\"}";
        let body = format!("{ok}\n\n{{\"type\":\"nope\"}}\n{ok}\n");
        let (records, stop) = parse_lines_until(body.as_bytes(), 41, 1000);
        assert_eq!(records.len(), 1);
        let Some(Stop::BadLine(bad)) = stop else {
            panic!("{stop:?}")
        };
        assert_eq!(bad.line, Some(43));
        assert!(bad.error.starts_with("line 43: "), "{}", bad.error);

        let long = "{\"type\":\"deleteBucket\",\"bucket\":\"a-bucket-with-a-long-name\"}";
        let body = format!("{ok}\n{long}\n{ok}");
        let (records, stop) = parse_lines_until(body.as_bytes(), 1, ok.len());
        assert_eq!(records.len(), 1);
        assert_eq!(stop, Some(Stop::TooLong(too_long(2, ok.len()))));
        let (records, stop) = parse_lines_until(body.as_bytes(), 1, long.len());
        assert_eq!((records.len(), stop), (3, None));
    }

    #[test]
    fn a_body_checked_as_utf8_whole_parses_as_its_lines_checked_one_by_one() {
        let lines: [&[u8]; 5] = [
            "{\"type\":\"deleteBucket\",\"bucket\":\"caf\u{e9}-\u{1f600}\"}".as_bytes(),
            b"{\"type\":\"failoverEnded\"}\r",
            b"   ",
            "{\"type\":\"deleteBucket\",\"bucket\":\"\u{4e2d}\"}".as_bytes(),
            b"{\"type\":\"deleteBucket\",\"bucket\":\"z\"}",
        ];
        // Each line parsed alone (its bytes checked alone) is what the body gives.
        let one_by_one = |lines: &[&[u8]]| -> (Vec<Record>, Option<String>) {
            let mut records = Vec::new();
            for (i, line) in lines.iter().enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if let Err(e) = Record::parse_push(line, &mut records) {
                    return (records, Some(format!("line {}: {e}", i + 1)));
                }
            }
            (records, None)
        };
        for bad in [None, Some(0), Some(3), Some(4)] {
            let mut owned: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
            if let Some(k) = bad {
                // A byte that is never UTF-8, inside the bucket's string.
                let at = owned[k].len() - 3;
                owned[k][at] = 0xff;
            }
            let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            let body = refs.join(&b'\n');
            let (records, stop) = parse_lines_until(&body, 1, usize::MAX);
            let (expected, refusal) = one_by_one(&refs);
            assert_eq!(records, expected, "bad line {bad:?}");
            match (stop, refusal) {
                (None, None) => assert_eq!(records.len(), 3 + usize::from(bad.is_none())),
                (Some(Stop::BadLine(r)), Some(error)) => {
                    assert_eq!(r.error, error);
                    assert!(r.error.contains("UTF-8"), "{}", r.error);
                }
                (stop, refusal) => panic!("bad line {bad:?}: {stop:?} against {refusal:?}"),
            }
        }
    }

    #[test]
    fn lines_split_like_the_slice_split_they_replace() {
        for body in [&b""[..], b"\n", b"a", b"a\n", b"a\nbb\n\nccc", b"\n\nx\n"] {
            let ours: Vec<(usize, &[u8])> = lines(body).collect();
            let std: Vec<(usize, &[u8])> = body.split(|b| *b == b'\n').enumerate().collect();
            assert_eq!(ours, std, "{:?}", String::from_utf8_lossy(body));
            assert!(presize(body) >= ours.len());
        }
    }

    #[test]
    fn a_body_of_blank_lines_reserves_little() {
        let body = Bytes::from(vec![b'\n'; 1 << 20]);
        assert_eq!(presize(&body), PRESIZE_MAX);
        let recs = parse_body(&body).expect("blank lines are skipped");
        assert!(recs.is_empty() && recs.capacity() <= PRESIZE_MAX);
    }

    #[test]
    fn a_client_origin_keeps_each_lines_origin_seq_and_refuses_one_that_does_not_grow() {
        let body = Bytes::from_static(
            b"{\"type\":\"deleteBucket\",\"bucket\":\"a\",\"originSeq\":7,\"seq\":99}\n\n{\"type\":\"deleteBucket\",\"bucket\":\"b\",\"originSeq\":9}\n",
        );
        let recs = parse_body_of(&body, "loader-1").expect("parsed");
        assert_eq!(
            recs.iter()
                .map(|r| (
                    r.envelope.origin.as_deref(),
                    r.envelope.origin_seq,
                    r.envelope.seq
                ))
                .collect::<Vec<_>>(),
            vec![
                (Some("loader-1"), Some(7), None),
                (Some("loader-1"), Some(9), None)
            ]
        );
        let stale = Bytes::from_static(
            b"{\"type\":\"deleteBucket\",\"bucket\":\"a\",\"originSeq\":7}\n{\"type\":\"deleteBucket\",\"bucket\":\"b\",\"originSeq\":7}\n",
        );
        let refusal = parse_body_of(&stale, "loader-1").unwrap_err();
        assert_eq!(
            (refusal.line, refusal.field.as_deref()),
            (Some(2), Some("originSeq"))
        );
        assert!(refusal.error.contains("does not grow"), "{}", refusal.error);
        let missing = Bytes::from_static(b"{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n");
        let refusal = parse_body_of(&missing, "loader-1").unwrap_err();
        assert!(
            refusal.error.contains("needs an originSeq"),
            "{}",
            refusal.error
        );
        assert!(is_valid_origin("loader-1"));
        assert!(!is_valid_origin("has space"));
        assert!(!is_valid_origin(""));
    }

    #[test]
    fn envelopes_are_cleared_so_the_master_stamps_its_own() {
        let body = Bytes::from_static(
            b"{\"type\":\"deleteBucket\",\"seq\":99,\"ts\":5,\"origin\":\"x\",\"originSeq\":3,\"bucket\":\"a\"}\n\n",
        );
        let recs = parse_body(&body).expect("valid");
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].envelope, Envelope::default());
    }

    #[test]
    fn the_first_bad_line_is_named_with_its_field() {
        let body = Bytes::from_static(
            b"{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n{\"type\":\"vbucketMoveDone\",\"vbucket\":\"x\",\"bucket\":\"b\"}\n{\"type\":\"bogus\"}\n",
        );
        let r = parse_body(&body).expect_err("line 2 is bad");
        assert_eq!(r.line, Some(2));
        assert_eq!(r.field.as_deref(), Some("vbucket"));
        assert!(
            r.error.starts_with("line 2: field \"vbucket\""),
            "{}",
            r.error
        );
    }

    use crate::body_parse::tests::body as long_body;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_parsed_in_parts_gives_the_records_and_refusals_of_one_parse() {
        let n = 20_000; // about 700 KB: forty chunks
        assert!(long_body(n, &[]).len() > 40 * crate::body_parse::CHUNK_BYTES);
        for parts in [2, 3, 7] {
            let body = long_body(n, &[]);
            let whole = parse_body(&body).expect("valid");
            let split = parse_body_in(&body, parts).await.expect("valid");
            assert!(split.len() > 1, "{parts} threads: the body stays in parts");
            let in_parts: Vec<Record> = split.into_iter().flatten().collect();
            assert_eq!(in_parts, whole, "{parts} parts");
            // The fields were encoded ahead, and the lines are the same.
            let lines =
                |records: &[Record]| records.iter().map(Record::to_line).collect::<Vec<_>>();
            assert_eq!(lines(&in_parts), lines(&whole), "{parts} parts");
            assert_eq!(whole.len(), n - n / 97);
            // A bad line in the first part, in a middle one, in the last, and two
            // bad lines in different parts: the first is named, with its number in
            // the whole body.
            for bad in [
                vec![1],
                vec![2_500],
                vec![n / 2],
                vec![n - 1],
                vec![n],
                vec![n / 2, n],
            ] {
                let body = long_body(n, &bad);
                let one = parse_body(&body).expect_err("a bad line");
                let split = parse_body_in(&body, parts).await.expect_err("a bad line");
                assert_eq!(split, one, "{parts} parts, lines {bad:?} bad");
                assert_eq!(split.line, Some(bad[0]));
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_body_or_one_without_line_ends_is_parsed_whole() {
        let body = long_body(3, &[]);
        assert!(body.len() < PART_BYTES);
        assert_eq!(parts_wanted(body.len()), 1);
        assert_eq!(
            parse_body_in_parts(&body).await,
            parse_body(&body).map(|records| vec![records])
        );
        // One long line with no line end to cut at: one part, its own refusal.
        let line = Bytes::from(format!(
            "{{\"type\":\"x\",\"pad\":\"{}\"}}",
            "p".repeat(3 * PART_BYTES)
        ));
        let r = parse_body_in(&line, 4).await.expect_err("not an event");
        assert_eq!(r.line, Some(1));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let value = axum::http::HeaderValue::from_str(value).expect("header value");
            map.append(*name, value);
        }
        map
    }

    #[test]
    fn a_charset_other_than_utf8_or_an_encoding_other_than_identity_is_refused() {
        for ok in [
            &[][..],
            &[("content-type", "application/x-ndjson; charset=UTF-8")],
            &[("content-type", "application/json;charset=\"utf-8\"")],
            &[("content-type", "text/plain; format=x; Charset = utf-8")],
            &[("content-encoding", "identity")],
            &[("content-encoding", "Identity, identity")],
        ] {
            assert_eq!(check_headers(&headers(ok)), Ok(()), "{ok:?}");
        }
        for (bad, expected) in [
            (
                &[("content-type", "application/x-ndjson; charset=utf-16")][..],
                MediaError::Charset("utf-16".into()),
            ),
            (
                &[("content-type", "application/json; charset=\"UTF-16LE\"")],
                MediaError::Charset("UTF-16LE".into()),
            ),
            (
                &[("content-type", "text/plain; charset=latin1")],
                MediaError::Charset("latin1".into()),
            ),
            (
                &[("content-encoding", "gzip")],
                MediaError::ContentEncoding("gzip".into()),
            ),
            (
                &[("content-encoding", "identity"), ("content-encoding", "br")],
                MediaError::ContentEncoding("br".into()),
            ),
            (
                &[("content-encoding", "identity, deflate")],
                MediaError::ContentEncoding("deflate".into()),
            ),
            (
                &[("content-type", "image/png")],
                MediaError::ContentType("image/png".into()),
            ),
        ] {
            assert_eq!(check_headers(&headers(bad)), Err(expected), "{bad:?}");
        }
    }

    #[test]
    fn content_types() {
        assert!(content_type_ok(Some("application/x-ndjson")));
        assert!(content_type_ok(Some("application/json; charset=utf-8")));
        assert!(content_type_ok(None));
        assert!(!content_type_ok(Some("application/x-www-form-urlencoded")));
        assert!(!content_type_ok(Some("image/png")));
    }
}
