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

/// Parses every non-blank line of `body` into records with empty envelopes, or
/// says which line is wrong.
pub fn parse_body(body: &Bytes) -> Result<Vec<Record>, Refusal> {
    let mut records = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
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
    let mut records = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
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
