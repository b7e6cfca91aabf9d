//! Reading an event log: NDJSON lines in, [`Record`]s out, one at a time.
//!
//! Owns: splitting any [`BufRead`] into lines, parsing each with the events crate's
//! strict parser, and the bookkeeping of what was read ([`ReadSummary`]): lines,
//! bytes, events, control frames skipped, bad lines.
//!
//! Promises:
//! - Streaming: one line is held at a time (in a reused buffer), so memory does not
//!   grow with the file. A line longer than [`MAX_LINE_BYTES`] is not buffered past
//!   that limit: the rest of it is skipped and the line counted as bad.
//! - Both formats read the same way: this project's stream (with `seq`/`origin`, and
//!   `heartbeat`/`gap` control frames, which are counted and skipped) and
//!   ns_server's `master_events.log` (lines with `ts` but no `seq`), of every era: a
//!   line that only reads once rewritten from ns_server's 2012 form (numbers as
//!   strings, quoted node names, ...; `master_events_events::legacy`) is read so and
//!   counted in [`ReadSummary::legacy_lines`].
//! - A bad line never ends the read: it is counted, and the first few (line number
//!   and reason, see [`LogReader::keep_bad_lines`]) are kept. Blank lines are counted
//!   apart and are not bad. Only an I/O error ends the read early.
//! - The progress hook is called with the total number of bytes consumed so far,
//!   never decreasing: after the first line that brings the count
//!   [`PROGRESS_EVERY_BYTES`] or more past the last call (so the steps are that size
//!   plus at most one line), and once at the end of the input with the total — so a
//!   caller can drive a progress bar against the file's size.

use std::fmt;
use std::io::{self, BufRead};

use master_events_events::{parse_line, ParseError, Record, StreamLine};
use serde::Serialize;

/// Lines longer than this (in bytes, without the newline) are refused without being
/// buffered whole.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// The progress hook is called once this many more bytes have been read (at the end
/// of the line that crosses the mark).
pub const PROGRESS_EVERY_BYTES: u64 = 64 * 1024;

/// How many bad lines a reader keeps by default (it counts them all).
pub const DEFAULT_KEPT_BAD_LINES: usize = 10;

/// Why a line was not read as an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLineReason {
    /// The line did not parse: not JSON, not a catalog event, a wrong field...
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The line was longer than [`MAX_LINE_BYTES`].
    #[error("line too long ({bytes} bytes; at most {MAX_LINE_BYTES} are read)")]
    TooLong {
        /// The line's length in bytes, without the newline.
        bytes: u64,
    },
}

impl Serialize for BadLineReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One line that was not read as an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadLine {
    /// The line's number in the input, from 1.
    pub line: u64,
    /// Why it was refused.
    pub reason: BadLineReason,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// What a [`LogReader`] has read so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadSummary {
    /// Lines read (the last one counts even without a trailing newline).
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Lines read as events.
    pub events: u64,
    /// `heartbeat` and `gap` control frames, skipped.
    pub control_frames: u64,
    /// Of those, `gap` frames: events the stream said were missed.
    pub gaps: u64,
    /// Empty or whitespace-only lines, skipped.
    pub blank_lines: u64,
    /// Of the events, lines read as rewritten from ns_server's 2012 form.
    pub legacy_lines: u64,
    /// Lines that were neither events, control frames nor blank.
    pub bad_lines: u64,
    /// The first bad lines (as many as the reader was told to keep), in input order.
    pub first_bad_lines: Vec<BadLine>,
}

impl fmt::Display for ReadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read {} lines ({} bytes): {} events, {} control frames, {} blank, {} bad",
            self.lines,
            self.bytes,
            self.events,
            self.control_frames,
            self.blank_lines,
            self.bad_lines
        )?;
        if self.gaps > 0 {
            write!(f, "; the stream reported {} gap(s)", self.gaps)?;
        }
        if self.legacy_lines > 0 {
            write!(
                f,
                "; {} lines in ns_server's 2012 form, read as rewritten in the current form",
                self.legacy_lines
            )?;
        }
        for bad in &self.first_bad_lines {
            write!(f, "\n  {bad}")?;
        }
        if self.bad_lines > self.first_bad_lines.len() as u64 {
            write!(
                f,
                "\n  ... and {} more bad lines",
                self.bad_lines - self.first_bad_lines.len() as u64
            )?;
        }
        Ok(())
    }
}

type ProgressHook<'a> = Box<dyn FnMut(u64) + 'a>;

/// Reads [`Record`]s from NDJSON lines, skipping control frames and counting (not
/// failing on) bad lines. Iterate it, or call [`LogReader::next_record`]; then read
/// [`LogReader::summary`].
///
/// ```
/// use master_events_report::LogReader;
///
/// let log = "{\"type\":\"deleteBucket\",\"ts\":1.5,\"bucket\":\"b\"}\nnot json\n";
/// let mut reader = LogReader::new(log.as_bytes());
/// let records: Vec<_> = reader.by_ref().collect::<Result<_, _>>()?;
/// assert_eq!(records.len(), 1);
/// assert_eq!(reader.summary().bad_lines, 1);
/// assert_eq!(reader.summary().first_bad_lines[0].line, 2);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct LogReader<'a, R> {
    input: R,
    buf: Vec<u8>,
    summary: ReadSummary,
    keep_bad: usize,
    progress: Option<ProgressHook<'a>>,
    reported: u64,
    finished: bool,
}

impl<'a, R: BufRead> LogReader<'a, R> {
    /// A reader of `input` that keeps the first [`DEFAULT_KEPT_BAD_LINES`] bad lines
    /// and reports no progress.
    pub fn new(input: R) -> Self {
        LogReader {
            input,
            buf: Vec::with_capacity(1024),
            summary: ReadSummary::default(),
            keep_bad: DEFAULT_KEPT_BAD_LINES,
            progress: None,
            reported: 0,
            finished: false,
        }
    }

    /// Calls `hook` with the total number of bytes read so far, each time
    /// [`PROGRESS_EVERY_BYTES`] more have been read (at the end of a line), and once at
    /// the end of the input.
    pub fn with_progress(mut self, hook: impl FnMut(u64) + 'a) -> Self {
        self.progress = Some(Box::new(hook));
        self
    }

    /// Keeps the first `n` bad lines (all are counted).
    pub fn keep_bad_lines(mut self, n: usize) -> Self {
        self.keep_bad = n;
        self
    }

    /// What has been read so far.
    pub fn summary(&self) -> &ReadSummary {
        &self.summary
    }

    /// The summary, giving up the reader.
    pub fn into_summary(self) -> ReadSummary {
        self.summary
    }

    /// The next event, `None` at the end of the input. Control frames, blank lines
    /// and bad lines are counted and skipped.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let line_bytes = match self.read_line()? {
                None => {
                    self.finished = true;
                    self.report(true);
                    return Ok(None);
                }
                Some(n) => n,
            };
            self.summary.lines += 1;
            self.report(false);
            if line_bytes > MAX_LINE_BYTES as u64 {
                self.bad(BadLineReason::TooLong { bytes: line_bytes });
                continue;
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                self.summary.blank_lines += 1;
                continue;
            }
            let parsed = match parse_line(&self.buf) {
                Err(e) => match master_events_events::legacy::normalize_line(&self.buf) {
                    Ok(Some(rewritten)) => match parse_line(&rewritten) {
                        Ok(StreamLine::Event(rec)) => {
                            self.summary.legacy_lines += 1;
                            Ok(StreamLine::Event(rec))
                        }
                        _ => Err(e),
                    },
                    _ => Err(e),
                },
                ok => ok,
            };
            match parsed {
                Ok(StreamLine::Event(rec)) => {
                    self.summary.events += 1;
                    return Ok(Some(rec));
                }
                Ok(StreamLine::Heartbeat(_)) | Ok(StreamLine::Reset(_)) => {
                    self.summary.control_frames += 1
                }
                Ok(StreamLine::Gap(_)) => {
                    self.summary.control_frames += 1;
                    self.summary.gaps += 1;
                }
                Err(e) => self.bad(BadLineReason::Parse(e)),
            }
        }
    }

    fn bad(&mut self, reason: BadLineReason) {
        self.summary.bad_lines += 1;
        if self.summary.first_bad_lines.len() < self.keep_bad {
            self.summary.first_bad_lines.push(BadLine {
                line: self.summary.lines,
                reason,
            });
        }
    }

    fn report(&mut self, at_end: bool) {
        let bytes = self.summary.bytes;
        if at_end || bytes - self.reported >= PROGRESS_EVERY_BYTES {
            self.reported = bytes;
            if let Some(hook) = self.progress.as_mut() {
                hook(bytes);
            }
        }
    }

    /// Reads one line into `buf` (without its `\n`, at most [`MAX_LINE_BYTES`] + 1 of
    /// it), returning its full length, or `None` at the end of the input.
    fn read_line(&mut self) -> io::Result<Option<u64>> {
        self.buf.clear();
        let mut len: u64 = 0;
        let mut saw_any = false;
        loop {
            let chunk = match self.input.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Ok(saw_any.then_some(len));
            }
            saw_any = true;
            let (part, consumed, done) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            let room = (MAX_LINE_BYTES + 1).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&part[..part.len().min(room)]);
            len += part.len() as u64;
            self.input.consume(consumed);
            self.summary.bytes += consumed as u64;
            if done {
                return Ok(Some(len));
            }
        }
    }
}

impl<R: BufRead> Iterator for LogReader<'_, R> {
    type Item = io::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_record() {
            Ok(Some(rec)) => Some(Ok(rec)),
            Ok(None) => None,
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}

impl<R> fmt::Debug for LogReader<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader")
            .field("summary", &self.summary)
            .field("keep_bad", &self.keep_bad)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> (Vec<Record>, ReadSummary) {
        let mut reader = LogReader::new(input);
        let records = reader
            .by_ref()
            .collect::<io::Result<Vec<_>>>()
            .unwrap_or_default();
        (records, reader.into_summary())
    }

    #[test]
    fn last_line_without_newline_is_read() {
        let (records, summary) =
            read_all(b"{\"type\":\"failoverEnded\"}\n{\"type\":\"failoverEnded\"}");
        assert_eq!(records.len(), 2);
        assert_eq!(summary.lines, 2);
        assert_eq!(summary.bytes, 49);
    }

    #[test]
    fn overlong_line_is_bad_and_the_next_line_still_reads() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\n{\"type\":\"failoverEnded\"}\n");
        let (records, summary) = read_all(&input);
        assert_eq!(records.len(), 1);
        assert_eq!(summary.bad_lines, 1);
        assert_eq!(
            summary.first_bad_lines[0].reason,
            BadLineReason::TooLong {
                bytes: MAX_LINE_BYTES as u64 + 10
            }
        );
    }

    #[test]
    fn crlf_lines_and_blank_lines_are_not_bad() {
        let (records, summary) = read_all(b"{\"type\":\"failoverEnded\"}\r\n\r\n  \n");
        assert_eq!(records.len(), 1);
        assert_eq!(summary.blank_lines, 2);
        assert_eq!(summary.bad_lines, 0);
    }

    #[test]
    fn progress_is_monotonic_and_ends_at_the_total() {
        let line = b"{\"type\":\"failoverEnded\"}\n";
        let input: Vec<u8> = line
            .iter()
            .copied()
            .cycle()
            .take(line.len() * 10_000)
            .collect();
        let mut seen = Vec::new();
        let mut reader = LogReader::new(&input[..]).with_progress(|n| seen.push(n));
        let count = reader.by_ref().count();
        drop(reader);
        assert_eq!(count, 10_000);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(seen.last().copied(), Some(input.len() as u64));
        let widest = seen.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        assert!(
            widest < PROGRESS_EVERY_BYTES + line.len() as u64,
            "{widest}"
        );
        assert!(seen.len() >= 3, "{seen:?}");
    }
}
