//! Cutting the log back: a cluster took back events its deposed master sequenced
//! and never committed ([`master_events_router::Chunk::Truncated`]), and the log
//! must not keep them — a warm restart would restore them, and the events that
//! take their seqs next would make the log's seqs go backwards (a log a warm load
//! refuses). Also what a cluster node keeps beside the log (`<file_name>.epochs`).
//!
//! Owns: [`cut_files`] (the lines after a seq removed from the current file and,
//! when a whole file goes, from the rotated ones before it), and the cluster marks
//! kept beside the log ([`LogMarks`] in `<file_name>.epochs`: [`epochs_path`],
//! [`write_marks`], [`read_marks`]).
//!
//! Promises:
//! - Only lines whose seqs all lie after the cut go; a gap line that straddles it
//!   is replaced by the part before it. A `reset` line (another run) or a line that
//!   is not a stream line stops the cut: nothing before it is touched.
//! - Files are cut by truncation to a line boundary (synced when the sink syncs),
//!   so a crash during a cut leaves whole lines only; a cut that fails says so and
//!   leaves every line it did not reach.
//! - The marks file is replaced whole (a temporary file renamed over it), so a
//!   crash leaves the old table or the new one.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use master_events_events::{parse_line, Gap, StreamLine};
use master_events_router::EpochTable;

use crate::log::{file_path, is_regular, RevLines};

/// What a cut removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Cut {
    /// Lines removed (events and gap lines).
    pub lines: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// Files touched.
    pub files: Vec<PathBuf>,
}

/// The seqs a line of the log covers, for a cut.
enum Span {
    /// An event (`from == to`) or a gap line.
    Seqs {
        from: u64,
        to: u64,
        gap: Option<Gap>,
    },
    /// A `reset` line, a heartbeat or anything else: never cut across.
    Barrier,
}

fn span(line: &[u8]) -> Span {
    match parse_line(line) {
        Ok(StreamLine::Event(record)) => match record.envelope.seq {
            Some(seq) => Span::Seqs {
                from: seq,
                to: seq,
                gap: None,
            },
            None => Span::Barrier,
        },
        Ok(StreamLine::Gap(gap)) => Span::Seqs {
            from: gap.from_seq,
            to: gap.to_seq,
            gap: Some(gap),
        },
        _ => Span::Barrier,
    }
}

/// Removes from the log `dir/name` (with `keep` rotated files) every line whose
/// seqs lie after `after`: from the end of the current file, and on into the
/// rotated files while a whole file goes. Syncs what it changed when `sync`.
pub(crate) fn cut_files(
    dir: &Path,
    name: &str,
    keep: u32,
    after: u64,
    sync: bool,
) -> io::Result<Cut> {
    let mut cut = Cut::default();
    for index in 0..=keep {
        let path = file_path(dir, name, index);
        if !is_regular(&path) {
            if index == 0 && !path.exists() {
                continue;
            }
            // A FIFO (or nothing) where a rotated file would be: nothing older.
            break;
        }
        let mut lines = RevLines::open(&path)?;
        let len = lines.complete_len()?;
        let mut keep_len = len;
        let mut whole_file = true;
        let mut replacement: Option<Gap> = None;
        while let Some((start, line)) = lines.next_line_at()? {
            match span(&line) {
                Span::Seqs { from, .. } if from > after => {
                    keep_len = start;
                    cut.lines += 1;
                }
                Span::Seqs { to, gap, .. } if to > after => {
                    // A gap line across the cut: its part up to the cut stays.
                    keep_len = start;
                    cut.lines += 1;
                    replacement = gap.map(|mut g| {
                        g.to_seq = after;
                        g.missed = after - g.from_seq + 1;
                        g
                    });
                    whole_file = false;
                    break;
                }
                _ => {
                    whole_file = false;
                    break;
                }
            }
        }
        if keep_len < len || replacement.is_some() {
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(keep_len)?;
            cut.bytes += len - keep_len;
            if let Some(gap) = &replacement {
                let mut line = Vec::with_capacity(128);
                gap.encode_line(&mut line);
                let mut file = OpenOptions::new().append(true).open(&path)?;
                file.write_all(&line)?;
                cut.bytes = cut.bytes.saturating_sub(line.len() as u64);
            }
            if sync {
                file.sync_data()?;
            }
            cut.files.push(path);
        }
        if !whole_file {
            break;
        }
    }
    Ok(cut)
}

/// Where the cluster marks of the log `file_name` in `dir` are kept.
pub fn epochs_path(dir: &Path, file_name: &str) -> PathBuf {
    dir.join(format!("{file_name}.epochs"))
}

/// What a cluster node needs to know of its log beyond the events: which epoch
/// sequenced which seqs, and (for a log written before the cluster committed its
/// events, a commit-gate sink) up to where they were known committed.
///
/// Text form, one key per line: `epochs 3:1,7:40` (see [`EpochTable`]) and,
/// optionally, `committed 55`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogMarks {
    /// The epochs of the log's seqs.
    pub epochs: EpochTable,
    /// Every event of the log up to this seq was committed when it was written
    /// (a lower bound; `None`: the log holds committed events only).
    pub committed: Option<u64>,
}

impl LogMarks {
    fn encode(&self) -> String {
        let mut text = format!("epochs {}\n", self.epochs);
        if let Some(seq) = self.committed {
            text.push_str(&format!("committed {seq}\n"));
        }
        text
    }

    fn parse(text: &str) -> Result<LogMarks, String> {
        let mut marks = LogMarks::default();
        let mut epochs_seen = false;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "epochs" => {
                    marks.epochs =
                        EpochTable::parse(value).map_err(|e| format!("line {}: {e}", i + 1))?;
                    epochs_seen = true;
                }
                "committed" => {
                    marks.committed = Some(value.trim().parse().map_err(|_| {
                        format!("line {}: committed is not a seq: {value:?}", i + 1)
                    })?);
                }
                other => return Err(format!("line {}: unknown key {other:?}", i + 1)),
            }
        }
        if !epochs_seen {
            return Err("no epochs line".to_owned());
        }
        Ok(marks)
    }
}

/// Replaces the marks file at `path` with `marks`: written beside it, synced when
/// `sync`, renamed over it.
pub(crate) fn write_marks(path: &Path, marks: &LogMarks, sync: bool) -> io::Result<()> {
    let tmp = path.with_extension("epochs.tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(marks.encode().as_bytes())?;
    if sync {
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if sync {
        if let Some(dir) = path.parent() {
            fs::File::open(dir).and_then(|d| d.sync_all())?;
        }
    }
    Ok(())
}

/// Why the marks file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EpochsFileError {
    /// It is there but unreadable.
    #[error("cannot read the cluster marks in {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// It does not hold marks.
    #[error("{} does not hold cluster marks ({reason}); remove it only if this node never ran in a cluster", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Reads the marks kept at `path`: `None` when there are none.
pub(crate) fn read_marks(path: &Path) -> Result<Option<LogMarks>, EpochsFileError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(EpochsFileError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    LogMarks::parse(&text)
        .map(Some)
        .map_err(|reason| EpochsFileError::Invalid {
            path: path.to_owned(),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use master_events_events::catalog::DeleteBucket;
    use master_events_events::{Record, Reset};

    fn event(seq: u64) -> Vec<u8> {
        let mut r = Record::new(DeleteBucket {
            bucket: format!("b{seq}").into(),
        });
        r.envelope.seq = Some(seq);
        let mut line = Vec::new();
        r.encode_line(&mut line);
        line
    }

    fn gap(from: u64, to: u64) -> Vec<u8> {
        let mut line = Vec::new();
        Gap {
            from_seq: from,
            to_seq: to,
            missed: to - from + 1,
            reason: "test".into(),
        }
        .encode_line(&mut line);
        line
    }

    fn seqs(path: &Path) -> Vec<(u64, u64)> {
        fs::read(path)
            .expect("read")
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| match span(l) {
                Span::Seqs { from, to, .. } => (from, to),
                Span::Barrier => (0, 0),
            })
            .collect()
    }

    #[test]
    fn a_cut_removes_the_lines_after_it_across_a_rotated_file_and_shortens_a_straddling_gap() {
        let dir = tempfile::tempdir().expect("dir");
        let name = "master_events.log";
        // .1 holds 1..=4 and a gap 5..=7; the current file 8..=9.
        let mut older = Vec::new();
        for s in 1..=4 {
            older.extend(event(s));
        }
        older.extend(gap(5, 7));
        fs::write(file_path(dir.path(), name, 1), &older).expect("write");
        let mut current = Vec::new();
        for s in 8..=9 {
            current.extend(event(s));
        }
        fs::write(file_path(dir.path(), name, 0), &current).expect("write");

        let cut = cut_files(dir.path(), name, 5, 5, true).expect("cut");
        assert_eq!(cut.lines, 3, "8, 9 and the gap 5..=7");
        assert_eq!(cut.files.len(), 2);
        assert_eq!(seqs(&file_path(dir.path(), name, 0)), vec![]);
        assert_eq!(
            seqs(&file_path(dir.path(), name, 1)),
            vec![(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)],
            "the gap kept up to the cut"
        );
    }

    #[test]
    fn a_cut_never_crosses_a_reset_line_and_a_cut_beyond_the_end_changes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let name = "log";
        let mut bytes = Vec::new();
        for s in 1..=3 {
            bytes.extend(event(s));
        }
        Reset {
            history: "h1".into(),
            oldest_seq: 1,
            last_seq: 3,
            requested_history: None,
            requested_since: 0,
            reason: "test".into(),
        }
        .encode_line(&mut bytes);
        for s in 1..=2 {
            bytes.extend(event(s));
        }
        let path = file_path(dir.path(), name, 0);
        fs::write(&path, &bytes).expect("write");

        assert_eq!(
            cut_files(dir.path(), name, 0, 9, false).expect("cut"),
            Cut::default()
        );
        let cut = cut_files(dir.path(), name, 0, 0, false).expect("cut");
        assert_eq!(cut.lines, 2, "the new run's two events, not the old run's");
        assert_eq!(seqs(&path), vec![(1, 1), (2, 2), (3, 3), (0, 0)]);
    }

    #[test]
    fn the_marks_round_trip_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().expect("dir");
        let path = epochs_path(dir.path(), "log");
        assert!(read_marks(&path).expect("none").is_none());
        let epochs = EpochTable::from_entries(vec![(3, 1), (7, 40)]).expect("valid");
        for committed in [None, Some(55)] {
            let marks = LogMarks {
                epochs: epochs.clone(),
                committed,
            };
            write_marks(&path, &marks, true).expect("written");
            assert_eq!(read_marks(&path).expect("read"), Some(marks));
        }
        for bad in [
            "epochs 7:40,3:1\n",
            "committed 5\n",
            "epochs 3:1\ncommitted x\n",
            "term 4\n",
        ] {
            fs::write(&path, bad).expect("write");
            let e = read_marks(&path).expect_err("refused");
            assert!(e.to_string().contains("log.epochs"), "{bad:?}: {e}");
        }
    }
}
