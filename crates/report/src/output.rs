//! Writing move rows: an aligned text table, CSV, or JSON lines.
//!
//! Owns: [`MovesFormat`], the columns of each format, and [`MovesWriter`].
//!
//! Promises:
//! - CSV and JSON lines stream: each row is written when it is given, so a caller
//!   draining [`crate::Analyzer::drain_finished_moves`] holds no more than a batch.
//!   The text table needs every row to size its columns and holds them until
//!   [`MovesWriter::finish`].
//! - CSV has a header row and one record per move with the columns of
//!   [`CSV_HEADER`]; times are seconds since the epoch and durations seconds, both
//!   with microsecond precision; an absent value is an empty cell.
//! - JSON lines are one [`MoveRow`] object a line, as serde serializes it (camelCase,
//!   seconds).

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use master_events_events::Timestamp;

use crate::error::Error;
use crate::model::MoveRow;
use crate::text::{chain, secs, utc, TextTable};

/// How move rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MovesFormat {
    /// An aligned text table for people.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl FromStr for MovesFormat {
    type Err = Error;

    /// `table`/`text`, `csv`, or `jsonl`/`json`/`ndjson`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "table" | "text" => Ok(MovesFormat::Table),
            "csv" => Ok(MovesFormat::Csv),
            "jsonl" | "json" | "ndjson" => Ok(MovesFormat::JsonLines),
            other => Err(Error::UnknownFormat(other.to_owned())),
        }
    }
}

impl fmt::Display for MovesFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MovesFormat::Table => "table",
            MovesFormat::Csv => "csv",
            MovesFormat::JsonLines => "jsonl",
        })
    }
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 15] = [
    "bucket",
    "vbucket",
    "node",
    "start",
    "end",
    "duration_s",
    "kind",
    "status",
    "reason",
    "backfill_s",
    "takeover_s",
    "takeover_start",
    "takeover_end",
    "chain_before",
    "chain_after",
];

const TABLE_HEADER: [&str; 11] = [
    "BUCKET",
    "VBUCKET>",
    "NODE",
    "START",
    "END",
    "DURATION (s)>",
    "KIND",
    "STATUS",
    "BACKFILL (s)>",
    "TAKEOVER (s)>",
    "CHAIN BEFORE -> AFTER",
];

enum Sink<W: Write> {
    Table(W, TextTable),
    Csv(Box<csv::Writer<W>>),
    Json(W, Vec<u8>),
}

/// Writes [`MoveRow`]s in one [`MovesFormat`].
///
/// ```
/// use master_events_report::{MovesFormat, MovesWriter};
///
/// let mut out = Vec::new();
/// let writer = MovesWriter::new(&mut out, MovesFormat::Csv)?;
/// writer.finish()?;
/// assert!(String::from_utf8_lossy(&out).starts_with("bucket,vbucket,node,start,end,duration_s"));
/// # Ok::<(), master_events_report::Error>(())
/// ```
pub struct MovesWriter<W: Write> {
    sink: Sink<W>,
}

impl<W: Write> MovesWriter<W> {
    /// A writer of `format` to `out`; for CSV, writes the header row.
    pub fn new(out: W, format: MovesFormat) -> Result<Self, Error> {
        let sink = match format {
            MovesFormat::Table => Sink::Table(out, TextTable::new(&TABLE_HEADER)),
            MovesFormat::Csv => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record(CSV_HEADER)?;
                Sink::Csv(Box::new(w))
            }
            MovesFormat::JsonLines => Sink::Json(out, Vec::with_capacity(512)),
        };
        Ok(MovesWriter { sink })
    }

    /// Writes (or, for the table, holds) one row.
    pub fn write(&mut self, row: &MoveRow) -> Result<(), Error> {
        match &mut self.sink {
            Sink::Table(_, table) => table.row(table_row(row)),
            Sink::Csv(w) => w.write_record(csv_row(row))?,
            Sink::Json(w, buf) => {
                buf.clear();
                serde_json::to_writer(&mut *buf, row)?;
                buf.push(b'\n');
                w.write_all(buf)?;
            }
        }
        Ok(())
    }

    /// Writes what is held, flushes and hands back the output.
    pub fn finish(self) -> Result<W, Error> {
        match self.sink {
            Sink::Table(mut w, table) => {
                let mut text = String::new();
                if table.is_empty() {
                    text.push_str("No vbucket moves.\n");
                } else {
                    table.render(&mut text, "")?;
                }
                w.write_all(text.as_bytes())?;
                w.flush()?;
                Ok(w)
            }
            Sink::Csv(w) => w.into_inner().map_err(|e| Error::Io(e.into_error())),
            Sink::Json(mut w, _) => {
                w.flush()?;
                Ok(w)
            }
        }
    }
}

/// Writes `rows` to `out` in `format`.
pub fn write_moves<W: Write>(rows: &[MoveRow], format: MovesFormat, out: W) -> Result<W, Error> {
    let mut w = MovesWriter::new(out, format)?;
    for row in rows {
        w.write(row)?;
    }
    w.finish()
}

fn opt_utc(ts: Option<Timestamp>) -> String {
    ts.map(utc).unwrap_or_else(|| "-".to_owned())
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map(secs).unwrap_or_else(|| "-".to_owned())
}

fn table_row(r: &MoveRow) -> Vec<String> {
    let status = match &r.reason {
        Some(reason) => format!("{} ({reason})", r.status.as_str()),
        None => r.status.as_str().to_owned(),
    };
    vec![
        r.bucket.to_string(),
        r.vbucket.to_string(),
        r.node.to_string(),
        utc(r.start),
        opt_utc(r.end),
        secs(r.duration),
        r.kind.as_str().to_owned(),
        status,
        opt_secs(r.backfill),
        opt_secs(r.takeover),
        format!("{} -> {}", chain(&r.chain_before), chain(&r.chain_after)),
    ]
}

fn micros_secs(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64())
}

fn csv_row(r: &MoveRow) -> [String; 15] {
    let ts = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
    let dur = |d: Option<Duration>| d.map(micros_secs).unwrap_or_default();
    [
        r.bucket.to_string(),
        r.vbucket.to_string(),
        r.node.to_string(),
        r.start.to_string(),
        ts(r.end),
        micros_secs(r.duration),
        r.kind.as_str().to_owned(),
        r.status.as_str().to_owned(),
        r.reason.clone().unwrap_or_default(),
        dur(r.backfill),
        dur(r.takeover),
        ts(r.takeover_start),
        ts(r.takeover_end),
        chain(&r.chain_before),
        chain(&r.chain_after),
    ]
}
