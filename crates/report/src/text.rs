//! Human-readable text: aligned tables and the `Display` of the reports.
//!
//! Owns: [`TextTable`] (column alignment) and how a [`RebalanceReport`], an
//! [`Inflight`] set and an [`Analysis`] read as text.
//!
//! Promises: columns are aligned by character count (not bytes), numbers are
//! right-aligned, lines carry no trailing spaces; durations are shown in seconds with
//! millisecond precision and times as UTC (`2023-11-14T22:13:20.000Z`, formatted by
//! the `time` crate; [`utc_micros`] gives microseconds); an empty list
//! is said in words rather than shown as an empty table.

use std::fmt;
use std::time::Duration;

use master_events_events::{CompactString, Timestamp};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::model::{Analysis, Inflight, RebalanceReport};
use crate::stats::DurationStats;

/// A table of text cells, rendered with aligned columns.
#[derive(Debug, Clone, Default)]
pub struct TextTable {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
    hide_header: bool,
}

impl TextTable {
    /// A table with these column headers; a header ending in `>` (the `>` is
    /// dropped) marks a right-aligned column.
    pub fn new<S: AsRef<str>>(header: &[S]) -> Self {
        let mut t = TextTable::default();
        for h in header {
            let h = h.as_ref();
            match h.strip_suffix('>') {
                Some(h) => {
                    t.header.push(h.to_owned());
                    t.right.push(true);
                }
                None => {
                    t.header.push(h.to_owned());
                    t.right.push(false);
                }
            }
        }
        t
    }

    /// The same table without its header line (for label/value lists).
    pub fn without_header(mut self) -> Self {
        self.hide_header = true;
        self
    }

    /// Adds a row; missing cells are blank and extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// How many rows (without the header).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Writes the header and rows, each line starting with `indent`.
    pub fn render(&self, out: &mut dyn fmt::Write, indent: &str) -> fmt::Result {
        let n = self.header.len();
        let mut widths: Vec<usize> = self
            .header
            .iter()
            .map(|h| {
                if self.hide_header {
                    0
                } else {
                    h.chars().count()
                }
            })
            .collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let empty = String::new();
        let mut line = String::new();
        let header = (!self.hide_header).then_some(&self.header);
        for row in header.into_iter().chain(&self.rows) {
            line.clear();
            line.push_str(indent);
            for (i, (width, right)) in widths.iter().zip(&self.right).enumerate() {
                let cell = row.get(i).unwrap_or(&empty);
                let pad = width.saturating_sub(cell.chars().count());
                if i > 0 {
                    line.push_str("  ");
                }
                if *right {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < n {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            out.write_str(line.trim_end())?;
            out.write_char('\n')?;
        }
        Ok(())
    }
}

impl fmt::Display for TextTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.render(f, "")
    }
}

/// Seconds with millisecond precision: `4.250`.
pub fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn stats3(s: &DurationStats) -> String {
    if s.count == 0 {
        "-".to_owned()
    } else {
        format!("{}/{}/{}", secs(s.p50), secs(s.p90), secs(s.max))
    }
}

/// A timestamp as UTC with milliseconds: `2023-11-14T22:13:20.000Z`.
pub fn utc(ts: Timestamp) -> String {
    format_utc(ts, UTC_MILLIS)
}

/// A timestamp as UTC with microseconds: `2012-04-04T21:47:32.926554Z`.
pub fn utc_micros(ts: Timestamp) -> String {
    format_utc(ts, UTC_MICROS)
}

const UTC_MILLIS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
const UTC_MICROS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// `ts` in `format`. Every [`Timestamp`] (0 to `MAX_MICROS`, the year 2223) is in
/// the range `time` formats; were one not, its seconds are written instead.
fn format_utc(ts: Timestamp, format: &[BorrowedFormatItem<'_>]) -> String {
    let nanos = i128::from(ts.as_micros()) * 1000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| ts.to_string())
}

fn list(items: &[CompactString]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

/// A chain as text: hosts separated by spaces, `-` for an empty slot.
pub fn chain(hosts: &[CompactString]) -> String {
    if hosts.is_empty() {
        return "-".to_owned();
    }
    let slots: Vec<&str> = hosts
        .iter()
        .map(|h| match h.as_str() {
            "" => "-",
            h => h,
        })
        .collect();
    slots.join(" ")
}

impl fmt::Display for RebalanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Rebalance {}: {}", self.pid, self.outcome)?;
        let mut head = TextTable::new(&["", ""]).without_header();
        head.row(vec![
            "started".into(),
            format!("{} ({})", utc(self.start), self.start),
        ]);
        match self.end {
            Some(end) => head.row(vec!["ended".into(), format!("{} ({end})", utc(end))]),
            None => head.row(vec!["ended".into(), "- (no rebalanceEnd seen)".into()]),
        }
        let took = match self.end {
            Some(_) => secs(self.duration) + "s",
            None => format!("{}s so far", secs(self.duration)),
        };
        head.row(vec!["duration".into(), took]);
        head.row(vec!["keep nodes".into(), list(&self.keep_nodes)]);
        head.row(vec!["eject nodes".into(), list(&self.eject_nodes)]);
        head.row(vec!["failed nodes".into(), list(&self.failed_nodes)]);
        head.row(vec!["delta nodes".into(), list(&self.delta_nodes)]);
        head.render(f, "  ")?;
        if self.buckets.is_empty() {
            return writeln!(f, "  No vbucket moves.");
        }
        writeln!(f)?;
        let mut t = TextTable::new(&[
            "BUCKET",
            "MOVES>",
            "ACTIVE>",
            "REPLICA>",
            "DONE>",
            "IN FLIGHT>",
            "ABORTED>",
            "MOVE p50/p90/max (s)>",
            "BACKFILL p50/p90/max (s)>",
            "TAKEOVER p50/p90/max (s)>",
            "SEQNO WAIT (s)>",
            "INDEX WAIT (s)>",
        ]);
        for b in &self.buckets {
            t.row(vec![
                b.bucket.to_string(),
                b.moves.to_string(),
                b.active_moves.to_string(),
                b.replica_moves.to_string(),
                b.done.to_string(),
                b.in_flight.to_string(),
                b.aborted.to_string(),
                stats3(&b.move_duration),
                stats3(&b.backfill),
                stats3(&b.takeover),
                secs(b.seqno_wait),
                secs(b.index_wait),
            ]);
        }
        t.render(f, "  ")?;
        if !self.slowest_moves.is_empty() {
            writeln!(f, "\n  Slowest moves:")?;
            let mut t = TextTable::new(&[
                "BUCKET",
                "VBUCKET>",
                "DURATION (s)>",
                "KIND",
                "NODE",
                "STARTED",
            ]);
            for m in &self.slowest_moves {
                t.row(vec![
                    m.bucket.to_string(),
                    m.vbucket.to_string(),
                    secs(m.duration),
                    m.kind.as_str().to_owned(),
                    m.node.to_string(),
                    utc(m.start),
                ]);
            }
            t.render(f, "  ")?;
        }
        Ok(())
    }
}

impl fmt::Display for Inflight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.len();
        if n == 0 {
            return writeln!(f, "No moves in flight.");
        }
        match self.now {
            Some(now) => writeln!(f, "{n} move(s) in flight at {}:", utc(now))?,
            None => writeln!(f, "{n} move(s) in flight:")?,
        }
        let mut t = TextTable::new(&[
            "BUCKET",
            "VBUCKET>",
            "AGE (s)>",
            "KIND",
            "NODE",
            "LAST EVENT",
            "LAST EVENT AGE (s)>",
        ]);
        for b in &self.buckets {
            for m in &b.moves {
                let since = self.now.map_or(Duration::ZERO, |now| {
                    let us = now.as_micros().saturating_sub(m.last_event_ts.as_micros());
                    Duration::from_micros(us.max(0) as u64)
                });
                t.row(vec![
                    b.bucket.to_string(),
                    m.vbucket.to_string(),
                    secs(m.age),
                    m.kind.as_str().to_owned(),
                    m.node.to_string(),
                    m.last_event.to_owned(),
                    secs(since),
                ]);
            }
        }
        t.render(f, "  ")
    }
}

impl fmt::Display for Analysis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.input)?;
        if let Some((first, last)) = self.time_range {
            writeln!(f, "events from {} to {}", utc(first), utc(last))?;
        }
        let a = &self.anomalies;
        if !a.is_empty() {
            writeln!(
                f,
                "anomalies: {} untimed events ignored, {} rebalanceEnd without start, \
                 {} vbucketMoveDone without start, {} moves outside a rebalance, \
                 {} timestamps out of order",
                a.untimed_events,
                a.unmatched_rebalance_ends,
                a.unmatched_move_dones,
                a.moves_outside_rebalance,
                a.out_of_order_ts
            )?;
        }
        writeln!(f)?;
        if self.rebalances.is_empty() {
            writeln!(f, "No rebalance.")?;
        }
        for r in &self.rebalances {
            writeln!(f, "{r}")?;
        }
        write!(f, "{}", self.inflight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_space() {
        let mut t = TextTable::new(&["NAME", "N>", "NOTE"]);
        t.row(vec!["a".into(), "10".into(), "".into()]);
        t.row(vec!["ééé".into(), "2".into(), "x".into()]);
        assert_eq!(t.to_string(), "NAME   N  NOTE\na     10\nééé    2  x\n");
    }

    #[test]
    fn utc_renders_known_instants() {
        assert_eq!(utc(Timestamp::from_micros(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            utc(Timestamp::from_micros(1_333_576_052_926_554)),
            "2012-04-04T21:47:32.926Z"
        );
        assert_eq!(
            utc(Timestamp::from_micros(1_709_210_096_000_000)),
            "2024-02-29T12:34:56.000Z"
        );
    }

    #[test]
    fn utc_micros_keeps_every_digit_and_the_calendar() {
        assert_eq!(
            utc_micros(Timestamp::from_micros(0)),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            utc_micros(Timestamp::from_micros(1_709_251_199_999_999)),
            "2024-02-29T23:59:59.999999Z"
        );
        assert_eq!(
            utc_micros(Timestamp::from_micros(951_868_800_000_000)),
            "2000-03-01T00:00:00.000000Z"
        );
        assert_eq!(
            utc_micros(Timestamp::from_micros(i64::MAX)), // clamped to the latest timestamp
            "2223-07-06T14:13:20.000000Z"
        );
    }

    #[test]
    fn chains_show_empty_slots_as_dashes() {
        assert_eq!(chain(&["a:1".into(), "".into()]), "a:1 -");
        assert_eq!(chain(&[]), "-");
    }
}
