//! Warm load: what a restarted node pre-fills its archive with, read back from the
//! log a `file` sink wrote, so that `?o=1` after a restart returns what it returned
//! before and `seq` continues.
//!
//! Owns: [`warm_load`] (one log: verify it, load its last events) and
//! [`warm_start`] (find the log in a sinks configuration, load it, say so in the
//! log).
//!
//! Promises:
//! - The whole log is verified before anything is restored, oldest file first
//!   (`.<keep>`, ..., `.1`, then the current file): every line is a valid stream
//!   line, and the seqs of its events and gap lines strictly increase across the
//!   files (a `reset` line starts a new run of seqs: what precedes it is another
//!   history and is not restored). A log that breaks this (a duplicated seq, seqs
//!   going backwards, a line that is not valid JSON, a torn line anywhere but at the
//!   very end of the current file, an event without a seq) is refused with an
//!   error naming the file and the line: the node does not start on a log it
//!   cannot trust, and nothing is dropped silently.
//! - A torn last line of the current file (a crash in the middle of a write) is
//!   the one repair: it is cut off, and [`warm_start`] logs a WARN saying how many
//!   bytes were cut from which file ([`WarmStart::torn_bytes`]).
//! - The archive gets the log's last contiguous run of seqs (a gap line or a hole
//!   ends a run), at most `capacity` events; `next_seq` is one past the last seq
//!   the log knows of (its last event, or the end of a gap written after it), so a
//!   restart never reuses a seq.
//! - The log's lock ([`crate::lock`]) is held while it is read and repaired: a log
//!   in use by another server is refused, never read half-written or cut.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use master_events_events::{parse_line, Record, StreamLine};
use master_events_router::Config;

use crate::lock::LogLock;
use crate::log::{check_slot, file_path, is_regular, repair_tail, MAX_LINE};
use crate::{check_dir, FileConfig, FileSinkError};

/// The shortest event line a log can hold (`{"seq":1,"type":"x"}` and a newline,
/// rounded down): bounds how many events a log of some size holds.
const MIN_LINE: u64 = 20;

/// What a restart pre-fills the archive with.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmStart {
    /// The events to pre-fill the archive with, oldest first: the log's last
    /// contiguous run of seqs, at most the archive capacity.
    pub records: Vec<Record>,
    /// The seq the router continues at (its `start_seq`): one past the last seq
    /// the log knows of, 1 for an empty log.
    pub next_seq: u64,
    /// Bytes of a torn last line cut off the current file (0 if none).
    pub torn_bytes: u64,
    /// The log's current file.
    pub path: PathBuf,
    /// The history id the log's events belong to (`<file_name>.history`, kept by the
    /// sink), when there is one: the restored archive continues that history, so a
    /// reader resuming across the restart is not reset. `None` for a log written
    /// before the id was kept, or an empty one (a new history starts).
    pub history: Option<String>,
    /// What a cluster node kept beside the log (`<file_name>.epochs`): the epochs
    /// of its seqs and, for a commit-gate log, up to where they were committed.
    /// `None` for a log of a node that never ran in a cluster, or an empty one.
    pub marks: Option<crate::LogMarks>,
}

/// Reads the history id kept beside the log: `None` when there is none; an error
/// naming the file when it is there but not an id (never guessed around).
fn read_history(config: &FileConfig) -> Result<Option<String>, FileSinkError> {
    let path = crate::history_path(&config.dir, &config.file_name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(FileSinkError::Config(format!(
                "cannot read the history id in {}: {e}",
                path.display()
            )))
        }
    };
    let id = text.trim();
    if !master_events_router::is_valid_history(id) {
        return Err(FileSinkError::Config(format!(
            "{} does not hold a history id (1 to 64 letters, digits, '-' or '_'); \
             remove it to start a new history",
            path.display()
        )));
    }
    Ok(Some(id.to_owned()))
}

/// Why a line makes the log untrustworthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLine {
    /// The line is not a valid stream line (not JSON, or not an event or frame).
    #[error("it is not a valid line of the stream ({0})")]
    Invalid(String),
    /// The line has no `\n` and is not the last line of the current file.
    #[error("it is torn (no end of line) and is not the last line of the current file")]
    Torn,
    /// The line is longer than any line of this log can be.
    #[error("it is longer than {MAX_LINE} bytes")]
    TooLong,
    /// An event without a `seq`.
    #[error("the event has no seq")]
    NoSeq,
    /// A seq not above the one before it.
    #[error("seq {seq} does not follow seq {previous} (seqs must strictly increase)")]
    NotIncreasing {
        /// The line's (first) seq.
        seq: u64,
        /// The last seq before it.
        previous: u64,
    },
}

/// A verified read of one log.
struct Reader {
    capacity: usize,
    records: VecDeque<Record>,
    /// The last seq of the run so far (event or gap end).
    last_seq: Option<u64>,
    /// The seq of the last record kept (to see holes).
    last_record: Option<u64>,
}

impl Reader {
    fn line(&mut self, line: &[u8]) -> Result<(), BadLine> {
        match parse_line(line).map_err(|e| BadLine::Invalid(e.to_string()))? {
            StreamLine::Event(record) => {
                let seq = record.envelope.seq.ok_or(BadLine::NoSeq)?;
                self.advance(seq)?;
                if self.last_record.is_some_and(|prev| prev + 1 != seq) {
                    // A hole: the archive holds one contiguous run.
                    self.records.clear();
                }
                self.last_record = Some(seq);
                if self.records.len() == self.capacity {
                    self.records.pop_front();
                }
                if self.capacity > 0 {
                    self.records.push_back(record);
                }
            }
            StreamLine::Gap(gap) => {
                self.advance(gap.from_seq)?;
                if gap.to_seq < gap.from_seq {
                    return Err(BadLine::NotIncreasing {
                        seq: gap.to_seq,
                        previous: gap.from_seq,
                    });
                }
                self.last_seq = Some(gap.to_seq);
                self.records.clear();
                self.last_record = None;
            }
            StreamLine::Reset(_) => {
                // Another history starts: its seqs start over.
                self.records.clear();
                self.last_seq = None;
                self.last_record = None;
            }
            StreamLine::Heartbeat(_) => {}
        }
        Ok(())
    }

    fn advance(&mut self, seq: u64) -> Result<(), BadLine> {
        match self.last_seq {
            Some(previous) if seq <= previous => Err(BadLine::NotIncreasing { seq, previous }),
            _ => {
                self.last_seq = Some(seq);
                Ok(())
            }
        }
    }

    /// Reads every line of the file at `path`.
    fn file(&mut self, path: &Path) -> Result<(), FileSinkError> {
        let read_error = |source| FileSinkError::Read {
            path: path.to_owned(),
            source,
        };
        let bad = |line: u64, reason: BadLine| FileSinkError::BadLog {
            path: path.to_owned(),
            line,
            reason,
        };
        let file = File::open(path).map_err(read_error)?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut buf = Vec::new();
        let mut number = 0u64;
        loop {
            buf.clear();
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(read_error)?;
            if n == 0 {
                return Ok(());
            }
            number += 1;
            if buf.last() != Some(&b'\n') {
                if buf.len() > MAX_LINE {
                    return Err(bad(number, BadLine::TooLong));
                }
                // Only the last line of the current file may be torn, and it was
                // cut off before reading: here it is always an error.
                return Err(bad(number, BadLine::Torn));
            }
            if buf.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            self.line(&buf).map_err(|reason| bad(number, reason))?;
        }
    }
}

/// Reads back the log of `config`: verifies every line of every file, oldest first
/// (a line that breaks the log's rules is [`FileSinkError::BadLog`], naming the
/// file and line; see [`BadLine`]), cuts off a torn last line of the current file,
/// and returns the last contiguous run of at most `capacity` events. Holds the
/// log's lock meanwhile.
pub fn warm_load(config: &FileConfig, capacity: usize) -> Result<WarmStart, FileSinkError> {
    let current = file_path(&config.dir, &config.file_name, 0);
    if !check_dir(&config.dir)? {
        // No directory yet: nothing to restore.
        return Ok(WarmStart {
            records: Vec::new(),
            next_seq: 1,
            torn_bytes: 0,
            path: current,
            history: None,
            marks: None,
        });
    }
    let _lock = LogLock::acquire(&config.dir, &config.file_name)?;
    for index in 0..=config.keep {
        let path = file_path(&config.dir, &config.file_name, index);
        check_slot(&path, index == 0).map_err(|source| FileSinkError::Foreign {
            path: path.clone(),
            source,
        })?;
    }
    let torn_bytes = repair_tail(&current).map_err(|source| FileSinkError::Repair {
        path: current.clone(),
        source,
    })?;
    // Room for every event the log can hold, up front: growing a deque of ~300-byte
    // records by doubling copied the whole archive over and over (most of a warm
    // restart's time went to memmove and page faults). Reserved, not touched: a
    // line is at least MIN_LINE bytes, so this is never more than the log allows.
    let log_bytes: u64 = (0..=config.keep)
        .map(|index| file_path(&config.dir, &config.file_name, index))
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|m| m.len())
        .sum();
    let most = usize::try_from(log_bytes / MIN_LINE).unwrap_or(usize::MAX);
    let mut reader = Reader {
        capacity,
        records: VecDeque::with_capacity(capacity.min(most)),
        last_seq: None,
        last_record: None,
    };
    for index in (0..=config.keep).rev() {
        let path = file_path(&config.dir, &config.file_name, index);
        if is_regular(&path) {
            reader.file(&path)?;
        }
    }
    let (history, marks) = match reader.records.is_empty() {
        true => (None, None),
        false => (
            read_history(config)?,
            crate::cut::read_marks(&crate::epochs_path(&config.dir, &config.file_name))
                .map_err(|e| FileSinkError::Config(e.to_string()))?,
        ),
    };
    Ok(WarmStart {
        next_seq: reader.last_seq.map_or(1, |s| s + 1),
        records: reader.records.into(),
        torn_bytes,
        path: current,
        history,
        marks,
    })
}

/// Finds the log to warm-load in a sinks configuration and loads it: the first
/// `file` sink with `restore = true` (the default) and no filter (a filtered log is
/// not the whole stream). `None` when there is none. Logs what it restored, and a
/// torn last line it cut off (WARN).
///
/// Call it before starting the router, then start the router with
/// [`Router::start_with_archive`](master_events_router::Router::start_with_archive)
/// and `start_seq = next_seq`.
pub fn warm_start(config: &Config, capacity: usize) -> Result<Option<WarmStart>, FileSinkError> {
    for entry in config.sinks.iter().filter(|e| e.kind == crate::NAME) {
        let file: FileConfig = toml::Value::Table(entry.settings.clone())
            .try_into()
            .map_err(|e: toml::de::Error| FileSinkError::Config(e.message().trim().to_owned()))?;
        if !file.restore {
            continue;
        }
        if entry.filter.is_some() {
            tracing::info!(at = %entry.at, "a filtered file log is not restored into the archive (it is not the whole stream)");
            continue;
        }
        let warm = warm_load(&file, capacity)?;
        if warm.torn_bytes > 0 {
            tracing::warn!(
                path = %warm.path.display(),
                bytes = warm.torn_bytes,
                "the file log ended with a torn line (the process stopped in the middle of a write); it was cut off"
            );
        }
        tracing::info!(
            path = %warm.path.display(),
            events = warm.records.len(),
            next_seq = warm.next_seq,
            "restored the archive from the file log"
        );
        return Ok(Some(warm));
    }
    Ok(None)
}
