//! Warm load: what a restarted node pre-fills its archive with, read back from the
//! log a `file` sink wrote, so that `?o=1` after a restart returns what it returned
//! before and `seq` continues.
//!
//! Owns: [`warm_load`] (one log) and [`warm_start`] (find the log in a sinks
//! configuration, load it, say so in the log).
//!
//! Promises:
//! - The log is read from its end (current file, then `.1`, `.2`, ...), only as far
//!   as needed: at most `capacity` events, stopping at the first hole (a gap line, a
//!   missing or corrupt event, or seqs that restart from an older run), since the
//!   archive holds one contiguous run.
//! - `next_seq` is one past the last seq the log knows of (its last event, or the
//!   end of a gap written after it), so a restart never reuses a seq.
//! - A torn last line (a crash in the middle of a write) is cut off the current file
//!   and reported ([`WarmStart::torn_bytes`]); lines that do not parse are skipped
//!   and counted ([`WarmStart::skipped_lines`]). Neither stops the load.

use std::io;
use std::path::PathBuf;

use master_events_events::{parse_line, Record, StreamLine};
use master_events_router::Config;

use crate::log::{file_path, is_regular, repair_tail, RevLines};
use crate::{FileConfig, FileSinkError};

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
    /// Lines read back that were not valid stream lines (skipped).
    pub skipped_lines: usize,
    /// The log's current file.
    pub path: PathBuf,
}

/// Reads back the log of `config`: the last `capacity` events (see the [module
/// documentation](self)).
pub fn warm_load(config: &FileConfig, capacity: usize) -> Result<WarmStart, FileSinkError> {
    let current = file_path(&config.dir, &config.file_name, 0);
    let torn_bytes = repair_tail(&current).map_err(|source| FileSinkError::Repair {
        path: current.clone(),
        source,
    })?;
    let mut rev_records: Vec<Record> = Vec::new();
    let mut next_seq: Option<u64> = None;
    let mut skipped_lines = 0;
    'files: for index in 0..=config.keep {
        let path = file_path(&config.dir, &config.file_name, index);
        if !is_regular(&path) {
            continue;
        }
        let read_error = |source| FileSinkError::Read {
            path: path.clone(),
            source,
        };
        let mut lines = RevLines::open(&path).map_err(read_error)?;
        loop {
            if rev_records.len() >= capacity {
                break 'files;
            }
            let line = match lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    tracing::warn!(path = %path.display(), error = %e, "master-events: the file log has a corrupt region; restoring only what follows it");
                    skipped_lines += 1;
                    break 'files;
                }
                Err(e) => return Err(read_error(e)),
            };
            match parse_line(&line) {
                Ok(StreamLine::Event(record)) => {
                    let Some(seq) = record.envelope.seq else {
                        skipped_lines += 1;
                        continue;
                    };
                    match rev_records.last().and_then(|r| r.envelope.seq) {
                        // The newest event: the log's last seq.
                        None => next_seq = Some(seq + 1),
                        // A hole (or an older run's seqs): the run ends here.
                        Some(newer) if newer.checked_sub(1) != Some(seq) => break 'files,
                        Some(_) => {}
                    }
                    rev_records.push(record);
                }
                Ok(StreamLine::Gap(gap)) => {
                    if next_seq.is_none() {
                        next_seq = Some(gap.to_seq + 1);
                    }
                    break 'files;
                }
                Ok(StreamLine::Heartbeat(_)) => {}
                Err(_) => skipped_lines += 1,
            }
        }
    }
    rev_records.reverse();
    Ok(WarmStart {
        records: rev_records,
        next_seq: next_seq.unwrap_or(1),
        torn_bytes,
        skipped_lines,
        path: current,
    })
}

/// Finds the log to warm-load in a sinks configuration and loads it: the first
/// `file` sink with `restore = true` (the default) and no filter (a filtered log is
/// not the whole stream). `None` when there is none. Logs what it restored and any
/// torn line or skipped lines it found.
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
            tracing::info!(at = %entry.at, "master-events: a filtered file log is not restored into the archive (it is not the whole stream)");
            continue;
        }
        let warm = warm_load(&file, capacity)?;
        if warm.torn_bytes > 0 {
            tracing::warn!(
                path = %warm.path.display(),
                bytes = warm.torn_bytes,
                "master-events: the file log ended with a torn line (the process stopped in the middle of a write); it was removed"
            );
        }
        if warm.skipped_lines > 0 {
            tracing::warn!(
                path = %warm.path.display(),
                lines = warm.skipped_lines,
                "master-events: lines of the file log that are not events were skipped"
            );
        }
        tracing::info!(
            path = %warm.path.display(),
            events = warm.records.len(),
            next_seq = warm.next_seq,
            "master-events: restored the archive from the file log"
        );
        return Ok(Some(warm));
    }
    Ok(None)
}
