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
//!   NDJSON/JSON; nothing already archived is touched by a refused request.
//!
//! With `?stream=1` a request is a feed instead: a body of any length whose lines
//! are taken as they arrive, a run of whole lines at a time ([`LineBatcher`]), each
//! run all-or-nothing like a request. A producer that sends events continuously
//! gets no reply per batch (the reply comes when the body ends), which is what a
//! reply per batch costs at low rates: see docs/benchmarks.md. A bad line ends the
//! feed: every line before it is taken, it and the rest are not, and the refusal
//! says so (`accepted`); one line longer than the size limit ends it with 413.

use bytes::{Bytes, BytesMut};
use master_events_events::{Envelope, Record};
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

/// The reply to a successful ingest.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Accepted {
    /// How many events were taken.
    pub accepted: usize,
    /// The first and last seq assigned (empty when the body had no events).
    pub seqs: Vec<u64>,
}

/// The body of a refused ingest.
#[derive(Debug, Serialize, PartialEq, Eq)]
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

/// Parses every non-blank line of `body` into records with empty envelopes, or
/// says which line is wrong.
pub fn parse_body(body: &Bytes) -> Result<Vec<Record>, Refusal> {
    parse_lines(body, 1)
}

/// As [`parse_body`], for lines that continue a longer input: the first line of
/// `body` is line `first_line` (1-based) of it, and a refusal names that number.
pub fn parse_lines(body: &[u8], first_line: usize) -> Result<Vec<Record>, Refusal> {
    let mut records = Vec::with_capacity(presize(body));
    for (i, line) in lines(body) {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match Record::parse(line) {
            Ok(mut rec) => {
                rec.envelope = Envelope::default();
                records.push(rec);
            }
            Err(e) => {
                let n = first_line + i;
                return Err(Refusal {
                    error: format!("line {n}: {e}"),
                    line: Some(n),
                    field: e.field().map(str::to_owned),
                });
            }
        }
    }
    Ok(records)
}

/// The first `n` lines of `body`, with their line ends (all of it when it has
/// fewer).
pub fn first_lines(body: &[u8], n: usize) -> &[u8] {
    match n.checked_sub(1) {
        None => &body[..0],
        Some(last) => match memchr::memchr_iter(b'\n', body).nth(last) {
            Some(end) => &body[..=end],
            None => body,
        },
    }
}

/// The 0-based index of the first line of `body` longer than `limit` bytes (its
/// line end not counted), if any.
pub fn first_long_line(body: &[u8], limit: usize) -> Option<usize> {
    lines(body)
        .find(|(_, line)| line.len() > limit)
        .map(|(i, _)| i)
}

/// Cuts a byte stream into runs of whole lines, for an ingest that takes lines as
/// they arrive (`POST /diag/masterEvents?stream=1`).
///
/// Holds at most the unfinished last line plus what was pushed since the last
/// [`LineBatcher::take`]; the caller bounds both (see [`LineBatcher::unfinished`]).
#[derive(Debug, Default)]
pub struct LineBatcher {
    pending: BytesMut,
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
        self.pending.extend_from_slice(data);
    }

    /// Bytes held: whole lines not yet taken, and the unfinished one.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// The length of the unfinished last line (the bytes after the last `\n`).
    pub fn unfinished(&self) -> usize {
        match memchr::memrchr(b'\n', &self.pending) {
            Some(end) => self.pending.len() - end - 1,
            None => self.pending.len(),
        }
    }

    /// The line number (1-based) the next run starts at.
    pub fn next_line(&self) -> usize {
        self.taken + 1
    }

    /// The whole lines pushed so far, with the number of the first; `None` when no
    /// line is complete yet.
    pub fn take(&mut self) -> Option<(usize, Bytes)> {
        let end = memchr::memrchr(b'\n', &self.pending)?;
        let run = self.pending.split_to(end + 1).freeze();
        Some(self.hand_out(run))
    }

    /// Everything left at the end of the input (the last line needs no `\n`);
    /// `None` when nothing is.
    pub fn finish(&mut self) -> Option<(usize, Bytes)> {
        if self.pending.is_empty() {
            return None;
        }
        let run = self.pending.split().freeze();
        Some(self.hand_out(run))
    }

    fn hand_out(&mut self, run: Bytes) -> (usize, Bytes) {
        let first = self.taken + 1;
        let ends = memchr::memchr_iter(b'\n', &run).count();
        // A run without a final `\n` (only at the end) still holds one more line.
        self.taken += ends + usize::from(!run.ends_with(b"\n"));
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
        assert_eq!(b.unfinished(), 1);
        assert_eq!(b.take(), Some((1, Bytes::from_static(b"a\n"))));
        assert_eq!(b.take(), None, "b is not whole yet");
        b.push(b"b\n\ncc\nd");
        assert_eq!(b.held(), 8);
        assert_eq!(b.take(), Some((2, Bytes::from_static(b"bb\n\ncc\n"))));
        assert_eq!(b.next_line(), 5);
        assert_eq!(b.finish(), Some((5, Bytes::from_static(b"d"))));
        assert_eq!(b.finish(), None);
        assert_eq!(b.next_line(), 6);
    }

    #[test]
    fn refusals_in_a_later_run_name_the_line_of_the_whole_input() {
        let bad = parse_lines(b"{\"type\":\"failoverEnded\"}\n\n{\"type\":\"nope\"}\n", 41)
            .expect_err("an unknown type");
        assert_eq!(bad.line, Some(43));
        assert!(bad.error.starts_with("line 43: "), "{}", bad.error);
    }

    #[test]
    fn first_lines_and_first_long_line_cut_where_they_say() {
        let body = b"ab\ncdef\ng";
        assert_eq!(first_lines(body, 0), b"");
        assert_eq!(first_lines(body, 1), b"ab\n");
        assert_eq!(first_lines(body, 2), b"ab\ncdef\n");
        assert_eq!(first_lines(body, 3), body);
        assert_eq!(first_lines(body, 9), body);
        assert_eq!(first_long_line(body, 3), Some(1));
        assert_eq!(first_long_line(body, 4), None);
        assert_eq!(first_long_line(b"abcd", 3), Some(0));
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

    #[test]
    fn content_types() {
        assert!(content_type_ok(Some("application/x-ndjson")));
        assert!(content_type_ok(Some("application/json; charset=utf-8")));
        assert!(content_type_ok(None));
        assert!(!content_type_ok(Some("application/x-www-form-urlencoded")));
        assert!(!content_type_ok(Some("image/png")));
    }
}
