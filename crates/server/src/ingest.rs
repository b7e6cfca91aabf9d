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

use bytes::Bytes;
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
                return Err(Refusal {
                    error: format!("line {}: {e}", i + 1),
                    line: Some(i + 1),
                    field: e.field().map(str::to_owned),
                })
            }
        }
    }
    Ok(records)
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
