//! The workload: the mix of catalog events every system is driven with, encoded once.
//!
//! Owns: turning `master-events-sim`'s default scenario into a cycle of JSON lines
//! (one [`Template`] per event), the latency stamp slot in those lines, and reading
//! a line back on the receiving side (its `seq`, its stamp).
//!
//! Promises:
//! - Every system gets the same bytes per event: the line as this project streams
//!   it (`type`, `seq`, `ts`, `origin`, then the event's fields). This project's
//!   ingest replaces `seq`, `ts` and `origin` with its own values of the same shape;
//!   Redis and NATS carry the line as it is, behind an 8-byte big-endian sequence
//!   number the producer writes (see [`framed_payload_len`]), since neither stamps
//!   one of its own that a reader could check for holes.
//! - Every event that has a `pid` field (an opaque string in the catalog) carries the
//!   latency stamp slot `<0.DDDDDDDDDDDDDDDDDD.0>` there: 18 decimal digits (31
//!   years of nanoseconds), zero when unstamped; 24 bytes, longer than the pids
//!   ns_server writes (`<0.533.0>`) and as long as a string the catalog keeps
//!   inline. A producer writes the send time (nanoseconds since the
//!   harness's clock base, never 0) into the digits in place ([`stamp`]); a reader
//!   finds it with [`read_stamp`]. The line stays a valid catalog line either way.
//! - Lines are encoded once, when the mix is built; producing is copying bytes.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use master_events_events::{Envelope, Record, Timestamp};
use master_events_sim::{scenario, ScenarioConfig};
use memchr::memmem;

/// The digits of a latency stamp slot.
pub const STAMP_DIGITS: usize = 18;
/// What precedes the stamp digits in a line.
const STAMP_PREFIX: &[u8] = b"\"pid\":\"<0.";
/// The node name the templates carry as `origin` (and this project's server is
/// started with, so its lines have the same length).
pub const ORIGIN: &str = "n_0@127.0.0.1";
/// The `seq` written into templates: as many digits as this project's seqs have
/// during a run.
const TEMPLATE_SEQ: u64 = 1_000_000;

/// One event of the mix, encoded.
#[derive(Clone, Debug)]
pub struct Template {
    /// The line, with its trailing `\n`.
    pub line: Bytes,
    /// Where the stamp digits start in `line`, if the event has a `pid`.
    pub stamp_at: Option<usize>,
}

/// The cycle of events every producer sends, in order.
#[derive(Debug)]
pub struct Mix {
    /// The events, in the simulator's order.
    pub templates: Vec<Template>,
}

/// What the mix is made of, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MixSummary {
    /// Events in one cycle.
    pub events: usize,
    /// Distinct event types in the cycle.
    pub types: usize,
    /// Mean line length in bytes (with `\n`).
    pub mean_line_bytes: f64,
    /// Shortest and longest line.
    pub min_line_bytes: usize,
    /// Longest line.
    pub max_line_bytes: usize,
    /// The fraction of events that carry a latency stamp slot.
    pub stamped_fraction: f64,
}

impl Mix {
    /// Builds the mix from the simulator's default scenario, cut to a multiple of
    /// `multiple_of` events (so that batches of that size cycle exactly).
    pub fn build(multiple_of: usize) -> Result<Mix> {
        let config = ScenarioConfig::default();
        let ts = Timestamp::now();
        let mut templates = Vec::new();
        for event in scenario(&config) {
            let record = Record::from_parts(
                Envelope {
                    seq: Some(TEMPLATE_SEQ),
                    ts: Some(ts),
                    origin: Some(ORIGIN.into()),
                    origin_ts: None,
                    origin_seq: None,
                },
                event,
            );
            templates.push(template_of(&record)?);
        }
        let multiple_of = multiple_of.max(1);
        let keep = templates.len() / multiple_of * multiple_of;
        if keep == 0 {
            bail!(
                "the simulator's scenario has {} events, fewer than one batch of {multiple_of}",
                templates.len()
            );
        }
        templates.truncate(keep);
        Ok(Mix { templates })
    }

    /// The summary of the mix.
    pub fn summary(&self) -> MixSummary {
        let lens: Vec<usize> = self.templates.iter().map(|t| t.line.len()).collect();
        let total: usize = lens.iter().sum();
        let mut types: Vec<&[u8]> = self
            .templates
            .iter()
            .map(|t| type_of(&t.line).unwrap_or_default())
            .collect();
        types.sort_unstable();
        types.dedup();
        let stamped = self
            .templates
            .iter()
            .filter(|t| t.stamp_at.is_some())
            .count();
        MixSummary {
            events: lens.len(),
            types: types.len(),
            mean_line_bytes: total as f64 / lens.len().max(1) as f64,
            min_line_bytes: lens.iter().copied().min().unwrap_or(0),
            max_line_bytes: lens.iter().copied().max().unwrap_or(0),
            stamped_fraction: stamped as f64 / lens.len().max(1) as f64,
        }
    }

    /// The mean line length, bytes.
    pub fn mean_line_bytes(&self) -> f64 {
        self.summary().mean_line_bytes
    }

    /// The template for the `i`-th event produced (the mix cycles).
    pub fn get(&self, i: u64) -> &Template {
        &self.templates[(i % self.templates.len() as u64) as usize]
    }

    /// `n` consecutive lines starting at the `i`-th event, as one NDJSON body.
    pub fn body(&self, i: u64, n: usize) -> Bytes {
        let mut out = Vec::with_capacity(n * 256);
        for k in 0..n as u64 {
            out.extend_from_slice(&self.get(i + k).line);
        }
        Bytes::from(out)
    }
}

/// Encodes `record` and gives its `pid` (if any) the stamp slot.
fn template_of(record: &Record) -> Result<Template> {
    let mut value: serde_json::Value =
        serde_json::from_slice(&record.to_line()).context("a simulated line is not JSON")?;
    let has_pid = match value.get_mut("pid") {
        Some(pid @ serde_json::Value::String(_)) => {
            *pid = serde_json::Value::String(format!("<0.{}.0>", "0".repeat(STAMP_DIGITS)));
            true
        }
        _ => false,
    };
    let line = if has_pid {
        // Re-encode through the catalog so that field order and shape stay the
        // project's own.
        let text = serde_json::to_vec(&value).context("re-encoding a line")?;
        let parsed = Record::parse(&text).context("a stamped line no longer parses")?;
        parsed.to_line()
    } else {
        record.to_line()
    };
    let stamp_at = if has_pid {
        match memmem::find(&line, STAMP_PREFIX) {
            Some(at) => Some(at + STAMP_PREFIX.len()),
            None => bail!("the stamp slot vanished from a line"),
        }
    } else {
        None
    };
    Ok(Template {
        line: Bytes::from(line),
        stamp_at,
    })
}

/// Writes `nanos` (must be non-zero) into the stamp digits at `at` of `line`.
pub fn stamp(line: &mut [u8], at: usize, nanos: u64) {
    let digits = &mut line[at..at + STAMP_DIGITS];
    let mut n = nanos;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Finds the stamp in a received line: `None` when the line has no slot, or an
/// unstamped (zero) one.
pub fn read_stamp(finder: &memmem::Finder<'_>, line: &[u8]) -> Option<u64> {
    let at = finder.find(line)? + STAMP_PREFIX.len();
    let digits = line.get(at..at + STAMP_DIGITS)?;
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (n != 0).then_some(n)
}

/// A finder for [`read_stamp`] (build it once per reader).
pub fn stamp_finder() -> memmem::Finder<'static> {
    memmem::Finder::new(STAMP_PREFIX)
}

/// The `type` of a line, if it starts the way this project writes lines.
fn type_of(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"{\"type\":\"")?;
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// The payload length Redis and NATS carry for a line: 8 bytes of sequence number,
/// then the line without its `\n`.
pub fn framed_payload_len(line: &[u8]) -> usize {
    8 + strip_newline(line).len()
}

/// Writes the framed payload (sequence number, then the line without `\n`) to `out`,
/// stamping it when `stamp_ns` is given and the template has a slot.
pub fn write_framed(out: &mut Vec<u8>, template: &Template, seq: u64, stamp_ns: Option<u64>) {
    out.extend_from_slice(&seq.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(strip_newline(&template.line));
    if let (Some(ns), Some(at)) = (stamp_ns, template.stamp_at) {
        stamp(&mut out[start..], at, ns);
    }
}

/// Reads a framed payload back: the sequence number and the line.
pub fn split_framed(payload: &[u8]) -> Option<(u64, &[u8])> {
    let (head, line) = payload.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), line))
}

/// Strips one trailing `\n`.
pub fn strip_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_valid_catalog_lines_of_realistic_size() {
        let mix = Mix::build(100).expect("mix");
        let s = mix.summary();
        assert_eq!(s.events % 100, 0);
        assert!(s.types >= 10, "{s:?}");
        assert!(
            (120.0..400.0).contains(&s.mean_line_bytes),
            "mean line length {}",
            s.mean_line_bytes
        );
        assert!(s.stamped_fraction > 0.1, "{s:?}");
        for t in &mix.templates {
            assert!(Record::parse(&t.line).is_ok());
        }
    }

    #[test]
    fn stamps_round_trip_and_keep_the_line_valid() {
        let mix = Mix::build(1).expect("mix");
        let finder = stamp_finder();
        let t = mix
            .templates
            .iter()
            .find(|t| t.stamp_at.is_some())
            .expect("a stamped event");
        assert_eq!(
            read_stamp(&finder, &t.line),
            None,
            "unstamped slot reads as none"
        );
        let mut line = t.line.to_vec();
        stamp(&mut line, t.stamp_at.expect("slot"), 1_234_567_890_123);
        assert_eq!(read_stamp(&finder, &line), Some(1_234_567_890_123));
        assert!(Record::parse(&line).is_ok());

        let mut framed = Vec::new();
        write_framed(&mut framed, t, 42, Some(7));
        assert_eq!(framed.len(), framed_payload_len(&t.line));
        let (seq, body) = split_framed(&framed).expect("framed");
        assert_eq!(seq, 42);
        assert_eq!(read_stamp(&finder, body), Some(7));
    }
}
