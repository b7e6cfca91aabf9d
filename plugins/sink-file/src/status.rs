//! What a running `file` sink reports about itself: its state (ok, retrying,
//! failing, and why), the events it holds because they could not be written yet,
//! and what it wrote and dropped.
//!
//! Owns: [`FileSinkStatus`] (one sink's, shared with its handle), [`FileSinkStats`]
//! (a snapshot), [`stats`] (every live file sink of this process) and [`totals`]
//! (counters over every file sink this process ran), for metrics.
//!
//! Promises: a snapshot is always the sink's latest word (updated as each write
//! succeeds or fails); a sink that stopped drops out of [`stats`], but its counts
//! stay in [`totals`], which never go down.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use master_events_router::SinkState;

/// A snapshot of a `file` sink's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSinkStats {
    /// The log's current file.
    pub path: PathBuf,
    /// Ok; retrying (writes fail, the events not written are held); failing (the
    /// backlog overflowed, the oldest held events were dropped).
    pub state: SinkState,
    /// Why it is not ok (the last write error); empty when ok.
    pub reason: String,
    /// Events given to the sink and not written yet (held for a retry).
    pub held_events: u64,
    /// Bytes of those events.
    pub held_bytes: u64,
    /// Events written to the log since start.
    pub events_written: u64,
    /// Bytes written to the log since start (events and gap lines).
    pub bytes_written: u64,
    /// Events dropped because the backlog was full (each recorded by a gap line).
    pub events_dropped: u64,
    /// Writes that failed since start.
    pub write_errors: u64,
}

#[derive(Debug)]
struct Inner {
    state: SinkState,
    reason: String,
}

/// One sink's status, shared between the sink and whoever watches it.
#[derive(Debug)]
pub struct FileSinkStatus {
    path: PathBuf,
    inner: Mutex<Inner>,
    held_events: AtomicU64,
    held_bytes: AtomicU64,
    events_written: AtomicU64,
    bytes_written: AtomicU64,
    events_dropped: AtomicU64,
    write_errors: AtomicU64,
}

static LIVE: Mutex<Vec<Weak<FileSinkStatus>>> = Mutex::new(Vec::new());

/// Counters over every `file` sink of this process, since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileSinkTotals {
    /// Events written to logs.
    pub events_written: u64,
    /// Bytes written to logs.
    pub bytes_written: u64,
    /// Events dropped from full backlogs (each recorded by a gap line).
    pub events_dropped: u64,
    /// Writes that failed.
    pub write_errors: u64,
}

static TOTAL_EVENTS: AtomicU64 = AtomicU64::new(0);
static TOTAL_BYTES: AtomicU64 = AtomicU64::new(0);
static TOTAL_DROPPED: AtomicU64 = AtomicU64::new(0);
static TOTAL_ERRORS: AtomicU64 = AtomicU64::new(0);

/// The counters of every `file` sink this process ran, added up.
pub fn totals() -> FileSinkTotals {
    FileSinkTotals {
        events_written: TOTAL_EVENTS.load(Ordering::Relaxed),
        bytes_written: TOTAL_BYTES.load(Ordering::Relaxed),
        events_dropped: TOTAL_DROPPED.load(Ordering::Relaxed),
        write_errors: TOTAL_ERRORS.load(Ordering::Relaxed),
    }
}

fn live() -> MutexGuard<'static, Vec<Weak<FileSinkStatus>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

impl FileSinkStatus {
    /// A new status (ok, all zero) for the log at `path`, listed by [`stats`]
    /// while it lives.
    pub(crate) fn register(path: &Path) -> Arc<FileSinkStatus> {
        let status = Arc::new(FileSinkStatus {
            path: path.to_owned(),
            inner: Mutex::new(Inner {
                state: SinkState::Ok,
                reason: String::new(),
            }),
            held_events: AtomicU64::new(0),
            held_bytes: AtomicU64::new(0),
            events_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        });
        let mut all = live();
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&status));
        status
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> SinkState {
        self.inner().state
    }

    /// Sets the state and its reason; returns the previous state.
    pub(crate) fn set_state(&self, state: SinkState, reason: &str) -> SinkState {
        let mut inner = self.inner();
        let before = inner.state;
        inner.state = state;
        inner.reason.clear();
        inner.reason.push_str(reason);
        before
    }

    pub(crate) fn set_held(&self, events: u64, bytes: u64) {
        self.held_events.store(events, Ordering::Relaxed);
        self.held_bytes.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_written(&self, events: u64, bytes: u64) {
        self.events_written.fetch_add(events, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        TOTAL_EVENTS.fetch_add(events, Ordering::Relaxed);
        TOTAL_BYTES.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_dropped(&self, events: u64) {
        self.events_dropped.fetch_add(events, Ordering::Relaxed);
        TOTAL_DROPPED.fetch_add(events, Ordering::Relaxed);
    }

    pub(crate) fn add_error(&self) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        TOTAL_ERRORS.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> FileSinkStats {
        let inner = self.inner();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FileSinkStats {
            path: self.path.clone(),
            state: inner.state,
            reason: inner.reason.clone(),
            held_events: get(&self.held_events),
            held_bytes: get(&self.held_bytes),
            events_written: get(&self.events_written),
            bytes_written: get(&self.bytes_written),
            events_dropped: get(&self.events_dropped),
            write_errors: get(&self.write_errors),
        }
    }
}

/// The status of every `file` sink of this process that is still running (or
/// built), for metrics.
pub fn stats() -> Vec<FileSinkStats> {
    let mut all = live();
    all.retain(|w| w.strong_count() > 0);
    all.iter()
        .filter_map(Weak::upgrade)
        .map(|s| s.snapshot())
        .collect()
}
