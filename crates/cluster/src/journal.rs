//! The node queue's journal (`serve --queue-dir DIR`): the events queued on this
//! node and not yet committed, kept on disk so that a node that crashes (kill -9,
//! an OOM kill) sends them again when it restarts.
//!
//! Owns: the directory's files — `queue.ndjson` (every queued event, one line each,
//! with its `origin`, `originSeq` and `originTs`, appended as it is queued),
//! `committed` (the highest `originSeq` known committed, rewritten by rename), and
//! `lock` (held for the life of the process, so two nodes cannot share a journal).
//!
//! Promises:
//! - An event is in the journal before its request is answered: an ingest's lines
//!   are written and synced (`fdatasync`) before the node replies, even `202`; an
//!   event the node notes itself is written (not synced: a process crash keeps it,
//!   an OS crash may not).
//! - Lines are appended in `originSeq` order (the queue holds the journal while it
//!   gives `originSeq`s), so a crash leaves every answered request's lines behind.
//! - [`Journal::open`] gives back exactly the events after the committed mark, in
//!   order (gaps included: none is dropped for a missing neighbour); a torn last
//!   line (a crash mid-write) is dropped with a WARN; any other line that does not
//!   parse stops start-up naming the file and line.
//! - Bounded: once the file passes [`COMPACT_BYTES`] it is rewritten with only the
//!   pending events.
//! - A write that fails is an ERROR (once per failure streak), a count and a state
//!   ([`JournalStatus`], shown in `/cluster` and `/metrics`), and the queue goes on
//!   in memory: events are never refused for a journal that cannot write. The next
//!   write after a failed one rewrites the file whole ([`Journal::next_write`]), so a
//!   partial line left by the failure (a full disk) never stays mid-file. While the
//!   disk stays full, such a rewrite (which copies every pending event) is tried at
//!   most once every [`REWRITE_EVERY`]: by the next request after that, or by the
//!   queue's delivery task when none comes ([`crate::queue::NodeQueue::retry_journal`]).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use master_events_events::Record;

/// The journal is rewritten once it is larger than this.
pub const COMPACT_BYTES: u64 = 8 * 1024 * 1024;

/// While the journal cannot write, a whole rewrite is tried at most this often.
pub const REWRITE_EVERY: Duration = Duration::from_secs(1);

/// What the next write of queued events must be ([`Journal::next_write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextWrite {
    /// Append the new events' lines.
    Append,
    /// A write failed before: rewrite the file with every pending event
    /// ([`Journal::compact`]).
    Rewrite,
    /// A rewrite failed less than [`REWRITE_EVERY`] ago: write nothing now (the
    /// events are in memory, and in the next rewrite).
    Skip,
}

/// Why a queue directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The directory cannot be created or a file in it cannot be opened.
    #[error("queue dir {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Another process holds the directory.
    #[error("queue dir {path}: another process uses it (its lock is held)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A line of the journal (not the last) does not parse.
    #[error("{path}, line {line}: not a queued event ({why}); move the file away to start with an empty queue")]
    BadLine {
        /// The journal file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// Why.
        why: String,
    },
    /// The committed mark does not parse.
    #[error("{path}: not a number; move the file away to send every journaled event again")]
    BadMark {
        /// The mark's file.
        path: PathBuf,
    },
}

/// An open journal (see the module documentation).
pub struct Journal {
    dir: PathBuf,
    file: File,
    bytes: u64,
    failing: bool,
    /// A write of the queue file failed: it may end in a partial line and lacks
    /// what was queued since, so the next write rewrites it whole.
    torn: bool,
    /// When a rewrite last failed.
    rewrite_failed_at: Option<Instant>,
    status: Arc<JournalStatus>,
    _lock: File,
}

/// Whether a journal writes, readable without waiting for a write in progress.
#[derive(Debug, Default)]
pub struct JournalStatus {
    failures: AtomicU64,
    error: parking_lot::Mutex<Option<String>>,
}

impl JournalStatus {
    /// Writes (appends, commit marks, rewrites) that failed since start-up.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Why the journal cannot write, while it cannot (`None` once it works).
    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Journal {
    /// Opens (or creates) the journal in `dir`; returns it with the events queued
    /// and not committed before, in order: those of `origin` whose `originSeq` is
    /// above both the committed mark and `archived` (what this node's archive
    /// already holds of it).
    pub fn open(
        dir: &Path,
        origin: &str,
        archived: u64,
    ) -> Result<(Journal, Vec<Record>), JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match fs4::FileExt::try_lock(&lock) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(JournalError::Locked {
                    path: dir.to_owned(),
                })
            }
            Err(fs4::TryLockError::Error(source)) => {
                return Err(JournalError::Io {
                    path: lock_path,
                    source,
                })
            }
        }
        let mark_path = dir.join("committed");
        let mark = match std::fs::read_to_string(&mark_path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| JournalError::BadMark { path: mark_path })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(JournalError::Io {
                    path: mark_path,
                    source,
                })
            }
        };
        let path = dir.join("queue.ndjson");
        let mut pending = Vec::new();
        match File::open(&path) {
            Ok(f) => {
                let mut reader = BufReader::new(f);
                let mut line = Vec::new();
                let mut n = 0;
                loop {
                    line.clear();
                    let read = reader.read_until(b'\n', &mut line).map_err(io(&path))?;
                    if read == 0 {
                        break;
                    }
                    n += 1;
                    let complete = line.ends_with(b"\n");
                    let text = line.strip_suffix(b"\n").unwrap_or(&line);
                    if text.is_empty() {
                        continue;
                    }
                    match Record::parse(text) {
                        Ok(rec) if rec.envelope.origin.as_deref() == Some(origin) => {
                            let os = rec.envelope.origin_seq.unwrap_or(0);
                            if os > mark.max(archived) {
                                pending.push(rec);
                            }
                        }
                        Ok(_) => {
                            return Err(JournalError::BadLine {
                                path,
                                line: n,
                                why: format!("not an event of this node ({origin})"),
                            })
                        }
                        Err(_) if !complete => {
                            tracing::warn!(file = %path.display(), line = n, "the queue journal's last line was cut by a crash; dropped");
                        }
                        Err(e) => {
                            return Err(JournalError::BadLine {
                                path,
                                line: n,
                                why: e.to_string(),
                            })
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(JournalError::Io { path, source }),
        }
        // Every event after the mark goes out again, in originSeq order. A gap (an
        // append that failed, its events kept in memory only) drops nothing around
        // it: the master tells a re-sent duplicate by its originSeq.
        pending.sort_by_key(|r| r.envelope.origin_seq);
        pending.dedup_by_key(|r| r.envelope.origin_seq);
        let missing: u64 = pending
            .windows(2)
            .filter_map(|w| Some(w[1].envelope.origin_seq? - w[0].envelope.origin_seq? - 1))
            .sum();
        if missing > 0 {
            tracing::warn!(
                file = %path.display(),
                missing,
                kept = pending.len(),
                "the queue journal lacks events between those it keeps (a write failed before the crash); those it keeps are sent again"
            );
        }
        let mut journal = Journal {
            dir: dir.to_owned(),
            file: File::create(dir.join("queue.tmp")).map_err(io(dir))?,
            bytes: 0,
            failing: false,
            torn: false,
            rewrite_failed_at: None,
            status: Arc::default(),
            _lock: lock,
        };
        journal.rewrite(&pending).map_err(io(&path))?;
        Ok((journal, pending))
    }

    /// Rewrites the journal with only `pending` (through a temporary file).
    fn rewrite(&mut self, pending: &[Record]) -> std::io::Result<()> {
        let tmp = self.dir.join("queue.tmp");
        let path = self.dir.join("queue.ndjson");
        let mut buf = Vec::new();
        for rec in pending {
            rec.encode_line(&mut buf);
        }
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &path)?;
        self.file = OpenOptions::new().append(true).open(&path)?;
        self.bytes = buf.len() as u64;
        Ok(())
    }

    fn failed(&mut self, what: &str, e: &std::io::Error) {
        self.status.failures.fetch_add(1, Ordering::Relaxed);
        *self.status.error.lock() = Some(format!("cannot {what} in {}: {e}", self.dir.display()));
        if !self.failing {
            tracing::error!(
                dir = %self.dir.display(),
                error = %e,
                "the queue journal cannot {what}: queued events are kept in memory only until it works again"
            );
            self.failing = true;
        }
    }

    fn ok(&mut self) {
        if self.failing {
            tracing::info!(dir = %self.dir.display(), "the queue journal works again");
            self.failing = false;
            *self.status.error.lock() = None;
        }
    }

    /// Whether the journal writes, shared with whoever reports it.
    pub fn status(&self) -> Arc<JournalStatus> {
        Arc::clone(&self.status)
    }

    /// What the next write of queued events must be, at `now`.
    pub fn next_write(&self, now: Instant) -> NextWrite {
        if !self.torn {
            NextWrite::Append
        } else if self
            .rewrite_failed_at
            .is_some_and(|at| now.saturating_duration_since(at) < REWRITE_EVERY)
        {
            NextWrite::Skip
        } else {
            NextWrite::Rewrite
        }
    }

    /// Every write of the queue file fails from now on, as on a full disk (for
    /// tests of the queue).
    #[cfg(test)]
    pub(crate) fn fail_writes(&mut self) {
        if let Ok(full) = OpenOptions::new().append(true).open("/dev/full") {
            self.file = full;
        }
    }

    /// Appends queued events, encoded as lines; with `sync`, waits until they are
    /// on disk.
    pub fn append(&mut self, lines: &[u8], sync: bool) {
        let written =
            self.file
                .write_all(lines)
                .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.bytes += lines.len() as u64;
                self.ok();
            }
            Err(e) => {
                self.torn = true;
                self.failed("write", &e);
            }
        }
    }

    /// Records that every event up to `origin_seq` is committed. Returns whether
    /// the journal has grown past [`COMPACT_BYTES`] (then [`Journal::compact`] it).
    pub fn committed(&mut self, origin_seq: u64) -> bool {
        let tmp = self.dir.join("committed.tmp");
        let marked = std::fs::write(&tmp, format!("{origin_seq}\n"))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("committed")));
        if let Err(e) = marked {
            self.failed("record the commit", &e);
            return false;
        }
        self.bytes > COMPACT_BYTES
    }

    /// Rewrites the journal with only the `pending` events (synced).
    pub fn compact(&mut self, pending: &[Record]) {
        match self.rewrite(pending) {
            Ok(()) => {
                self.torn = false;
                self.rewrite_failed_at = None;
                self.ok();
            }
            Err(e) => {
                self.torn = true;
                self.rewrite_failed_at = Some(Instant::now());
                self.failed("rewrite", &e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use master_events_events::catalog::DeleteBucket;

    fn queued(origin: &str, n: u64) -> Record {
        let mut r = Record::new(DeleteBucket {
            bucket: format!("b{n}").into(),
        });
        r.envelope.origin = Some(origin.into());
        r.envelope.origin_seq = Some(n);
        r
    }

    fn seqs(records: &[Record]) -> Vec<u64> {
        records
            .iter()
            .filter_map(|r| r.envelope.origin_seq)
            .collect()
    }

    #[test]
    fn a_reopened_journal_gives_back_what_was_queued_after_the_committed_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut j, pending) = Journal::open(dir.path(), "n1", 0).expect("open");
            assert!(pending.is_empty());
            let mut lines = Vec::new();
            for n in 1..=5 {
                queued("n1", n).encode_line(&mut lines);
            }
            j.append(&lines, true);
            assert!(!j.committed(2));
        }
        let (_j, pending) = Journal::open(dir.path(), "n1", 0).expect("reopen");
        assert_eq!(seqs(&pending), vec![3, 4, 5]);
        drop(_j);
        // What the archive already holds is not sent again.
        let (_j, pending) = Journal::open(dir.path(), "n1", 4).expect("reopen");
        assert_eq!(seqs(&pending), vec![5]);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_a_bad_line_before_it_stops_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = Vec::new();
        queued("n1", 1).encode_line(&mut text);
        queued("n1", 2).encode_line(&mut text);
        text.extend_from_slice(b"{\"type\":\"deleteBu");
        std::fs::write(dir.path().join("queue.ndjson"), &text).expect("write");
        let (_j, pending) = Journal::open(dir.path(), "n1", 0).expect("open");
        assert_eq!(seqs(&pending), vec![1, 2]);
        drop(_j);
        std::fs::write(dir.path().join("queue.ndjson"), b"garbage\n{}\n").expect("write");
        let err = Journal::open(dir.path(), "n1", 0).err().expect("refused");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn a_gap_in_the_journal_drops_none_of_the_events_around_it() {
        // 6..=10 missing: their write failed, the node crashed before it could
        // write them again. 1..=5 were answered as much as 11..=15 were.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = Vec::new();
        for n in (11..=15).chain(1..=5) {
            queued("n1", n).encode_line(&mut text);
        }
        std::fs::write(dir.path().join("queue.ndjson"), &text).expect("write");
        let (_j, pending) = Journal::open(dir.path(), "n1", 0).expect("open");
        let want: Vec<u64> = (1..=5).chain(11..=15).collect();
        assert_eq!(seqs(&pending), want);
    }

    #[test]
    fn a_failed_write_is_reported_and_the_next_write_rewrites_the_file_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = Journal::open(dir.path(), "n1", 0).expect("open");
        let status = j.status();
        let mut lines = Vec::new();
        queued("n1", 1).encode_line(&mut lines);
        j.append(&lines, true);
        // /dev/full: every write fails with ENOSPC, as on a full disk.
        let file = std::mem::replace(
            &mut j.file,
            OpenOptions::new()
                .append(true)
                .open("/dev/full")
                .expect("/dev/full"),
        );
        let mut more = Vec::new();
        queued("n1", 2).encode_line(&mut more);
        j.append(&more, true);
        assert_eq!(j.next_write(Instant::now()), NextWrite::Rewrite);
        assert_eq!(status.failures(), 1);
        let why = status.error().expect("failing");
        assert!(why.contains("No space left"), "{why}");
        j.file = file;
        j.compact(&[queued("n1", 1), queued("n1", 2)]);
        assert_eq!(j.next_write(Instant::now()), NextWrite::Append);
        assert_eq!(status.error(), None);
        drop(j);
        let (_j, pending) = Journal::open(dir.path(), "n1", 0).expect("reopen");
        assert_eq!(seqs(&pending), vec![1, 2]);
    }

    #[test]
    fn while_rewrites_fail_one_is_tried_at_most_every_rewrite_every() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = Journal::open(dir.path(), "n1", 0).expect("open");
        let t0 = Instant::now();
        j.torn = true;
        assert_eq!(j.next_write(t0), NextWrite::Rewrite);
        j.rewrite_failed_at = Some(t0);
        assert_eq!(j.next_write(t0 + REWRITE_EVERY / 2), NextWrite::Skip);
        assert_eq!(j.next_write(t0 + REWRITE_EVERY), NextWrite::Rewrite);
        j.compact(&[queued("n1", 1)]);
        assert_eq!(j.next_write(t0 + REWRITE_EVERY / 2), NextWrite::Append);
    }

    #[test]
    fn two_processes_cannot_share_a_queue_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_first, _) = Journal::open(dir.path(), "n1", 0).expect("open");
        let err = Journal::open(dir.path(), "n1", 0).err().expect("refused");
        assert!(matches!(err, JournalError::Locked { .. }), "{err}");
    }
}
