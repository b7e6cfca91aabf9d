//! The `file` sink of master-events: the stream appended to an NDJSON log
//! (`master_events.log`, as ns_server's log collector names it), rotated by size,
//! synced to disk by policy, and read back on restart to pre-fill the archive.
//!
//! ```toml
//! [[sinks]]
//! type = "file"
//! dir = "/var/log/master-events"
//! file_name = "master_events.log"  # default
//! max_bytes = 104857600            # rotate past 100 MiB (default)
//! keep = 5                         # master_events.log.1 ... .5 (default)
//! fsync = "always"                 # or "never", or { every_ms = 1000 } (default)
//! restore = true                   # `serve` pre-fills its archive from this log (default)
//! backlog_bytes = 67108864         # held while writes fail, written once they work (default)
//! ```
//!
//! Owns: [`FileConfig`] (registered as `file`), the running [`FileSink`] (its
//! backlog of events not written yet, and its state: [`FileSinkStatus`]), and warm
//! load ([`warm_start`], [`warm_load`]); the files themselves are [`log`]'s, the
//! lock [`lock`]'s.
//!
//! Promises:
//! - One writer per log: the sink holds `<file_name>.lock` in `dir` (an OS advisory
//!   lock, [`lock`]) while it runs; a second sink on the same log, in this process
//!   or another, is refused at build with an error naming the lock file and the
//!   holder's pid.
//! - `dir` must be a directory (created if missing): a regular file, FIFO or device
//!   there is refused at build, as is a symlink or anything but a regular file in
//!   a slot of the log (`<file_name>`, `<file_name>.1` ... `.<keep>`; a FIFO in
//!   place of the current file is written to and never rotated).
//! - Every event the sink is given is appended as its exact wire line, in `seq`
//!   order, once; where events were missed (the sink fell behind the archive, or
//!   its backlog overflowed while the disk failed) a `gap` line says exactly which,
//!   so the log never loses events silently.
//! - A write error (disk full, I/O error) never stops the sink or the router: the
//!   events not written are held (up to `backlog_bytes`) and retried with backoff
//!   (100 ms doubling to 5 s); when writing works again they are written in order,
//!   so the log has a gap only for events that fell out of the full backlog. The
//!   state is logged once per change (WARN when writes start failing, ERROR when
//!   events are dropped and again when their gap line is written, INFO when it
//!   recovered) and reported by [`FileSink::status`] and [`stats`] (for metrics).
//! - `fsync = "always"`: each batch is on disk before the next one is taken, and
//!   the sink is the router's commit gate ([`FileSink::with_commit_gate`]): an
//!   event is acknowledged and streamed only once it is on disk;
//!   `{ every_ms = N }`: at most N ms of written lines are at risk from a power
//!   loss, even when the stream goes quiet; `"never"`: the OS decides. On shutdown,
//!   everything is written (held events are retried for up to 5 s, then what is
//!   left is reported at ERROR) and (unless `never`) synced.
//! - A restart does not append twice: when the router's archive holds this log's
//!   last event (it was warm-loaded from it), the sink resumes after the log's last
//!   seq ([`Sink::start_cursor`]); otherwise it starts from the oldest event, and
//!   if those seqs do not follow the log's (`restore = false`), a `reset` line
//!   first marks where the new run begins: between reset lines, the seqs of a log
//!   only ever increase (what a warm load checks).
//! - On a cluster node, the epochs of the log's seqs are on disk before its events
//!   (`<file_name>.epochs`, [`LogMarks`]), with, for a commit gate, a lower bound of
//!   the commit. Events the cluster takes back ([`Sink::on_truncated`]: a deposed
//!   master's, never committed) are cut off the log and dropped from the backlog
//!   (`cut.rs`), so a restart never restores them.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use master_events_events::{parse_line, Gap, Record, Reset, StreamLine};
use master_events_router::{
    Chunk, CommitGate, ConfigError, Cursor, Router, Sink, SinkBatch, SinkConfig, SinkContext,
    SinkFuture, SinkInput,
};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, MapAccess, Unexpected, Visitor};
use serde::Deserialize;

mod cut;
pub mod lock;
pub mod log;
mod status;
mod warm;

pub use cut::{epochs_path, EpochsFileError, LogMarks};
pub use master_events_router::{SinkHealth, SinkState};
pub use status::{stats, totals, FileSinkStats, FileSinkStatus, FileSinkTotals};
pub use warm::{warm_load, warm_start, BadLine, WarmStart};

use lock::{LockError, LogLock};
use log::{check_slot, file_path, is_regular, kind_of, repair_tail, FileWriter, LogFile, RevLines};

/// The sink's `type` name.
pub const NAME: &str = "file";
/// The default log file name (ns_server's).
pub const DEFAULT_FILE_NAME: &str = "master_events.log";
/// The default size past which the log rotates (100 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// The default number of rotated files kept.
pub const DEFAULT_KEEP: u32 = 5;
/// The default bound of the events held while writes fail (64 MiB).
pub const DEFAULT_BACKLOG_BYTES: u64 = 64 * 1024 * 1024;
/// The commit kept beside the log is rewritten at most this often.
const MARKS_INTERVAL: Duration = Duration::from_secs(1);
/// Sync errors are logged at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The first wait before writing held events again.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a stopping sink keeps retrying held events.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);
/// The reason of a gap line for events dropped from a full backlog.
pub const GAP_NOT_WRITTEN: &str =
    "not written to the file log (write errors, and the backlog of held events was full)";

/// Why the file sink could not start or warm-load.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    /// The configuration is wrong.
    #[error("file sink: {0}")]
    Config(String),
    /// The log directory exists but is not a directory.
    #[error("file sink: the log directory {path} is {what}, not a directory")]
    NotADirectory {
        /// The configured `dir`.
        path: PathBuf,
        /// What it is (`a regular file`, `a FIFO`, ...).
        what: &'static str,
    },
    /// The log directory could not be created.
    #[error("file sink: cannot create the log directory {path}: {source}")]
    CreateDir {
        /// The configured `dir`.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another server (or another sink of this one) writes this log.
    #[error("file sink: {0}")]
    Locked(#[from] LockError),
    /// A slot of the log holds something the log did not create.
    #[error("file sink: {source}")]
    Foreign {
        /// The slot.
        path: PathBuf,
        /// What is there.
        source: io::Error,
    },
    /// The log could not be created or opened.
    #[error("file sink: cannot open the log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The log could not be read back.
    #[error("file sink: cannot read the log {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The log cannot be trusted: a line of it breaks what the sink writes.
    #[error(
        "file sink: refusing to restore from {path}: line {line}: {reason}; \
         the log cannot be trusted (fix or move the file, or set restore = false)"
    )]
    BadLog {
        /// The file.
        path: PathBuf,
        /// The line's number in the file, from 1.
        line: u64,
        /// What is wrong with it.
        reason: BadLine,
    },
    /// A torn last line could not be cut off.
    #[error("file sink: cannot repair the torn last line of {path}: {source}")]
    Repair {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Whether the log directory `dir` exists (following a symlink); an error if
/// something that is not a directory is there.
pub(crate) fn check_dir(dir: &Path) -> Result<bool, FileSinkError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(true),
        Ok(meta) => Err(FileSinkError::NotADirectory {
            path: dir.to_owned(),
            what: kind_of(meta.file_type()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(FileSinkError::Open {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// When written lines are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every batch, before the next one is taken (`"always"`).
    Always,
    /// At most this many milliseconds after a write (`{ every_ms = N }`).
    EveryMs(u64),
    /// Never: the OS writes back when it wants (`"never"`).
    Never,
}

impl Default for Fsync {
    fn default() -> Self {
        Fsync::EveryMs(1000)
    }
}

impl<'de> Deserialize<'de> for Fsync {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FsyncVisitor;

        impl<'de> Visitor<'de> for FsyncVisitor {
            type Value = Fsync;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""always", "never" or { every_ms = N } with N >= 1"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Fsync, E> {
                match v {
                    "always" => Ok(Fsync::Always),
                    "never" => Ok(Fsync::Never),
                    other => Err(E::invalid_value(Unexpected::Str(other), &self)),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fsync, A::Error> {
                let mut every = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "every_ms" => every = Some(map.next_value::<u64>()?),
                        other => return Err(de::Error::unknown_field(other, &["every_ms"])),
                    }
                }
                match every {
                    None => Err(de::Error::missing_field("every_ms")),
                    Some(0) => Err(de::Error::invalid_value(Unexpected::Unsigned(0), &self)),
                    Some(ms) => Ok(Fsync::EveryMs(ms)),
                }
            }
        }

        deserializer.deserialize_any(FsyncVisitor)
    }
}

impl JsonSchema for Fsync {
    fn schema_name() -> Cow<'static, str> {
        "Fsync".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": "When written lines are forced to disk: \"always\" (each batch before the next is taken), \"never\" (the OS decides) or { every_ms = N } (at most N ms of lines at risk).",
            "oneOf": [
                { "type": "string", "enum": ["always", "never"] },
                {
                    "type": "object",
                    "properties": { "every_ms": { "type": "integer", "minimum": 1 } },
                    "required": ["every_ms"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

fn default_file_name() -> String {
    DEFAULT_FILE_NAME.to_owned()
}
fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}
fn default_keep() -> u32 {
    DEFAULT_KEEP
}
fn default_restore() -> bool {
    true
}
fn default_backlog_bytes() -> u64 {
    DEFAULT_BACKLOG_BYTES
}

/// Appends the stream to an NDJSON log file, rotated by size.
#[derive(Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The directory of the log (created if missing).
    pub dir: PathBuf,
    /// The log's file name in `dir` (default `master_events.log`); rotated files
    /// are `<file_name>.1` (the newest) to `<file_name>.<keep>`.
    #[serde(default = "default_file_name")]
    pub file_name: String,
    /// Rotate when the current file would grow past this many bytes (default
    /// 104857600, 100 MiB; at least 1024). Lines are never split across files.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// How many rotated files to keep (default 5); 0 drops a full file instead.
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// When written lines are forced to disk: "always", "never" or
    /// { every_ms = N } (default { every_ms = 1000 }).
    #[serde(default)]
    pub fsync: Fsync,
    /// Whether `serve` pre-fills its archive from this log at start (default true;
    /// only a file sink without a filter is restored).
    #[serde(default = "default_restore")]
    pub restore: bool,
    /// While writes fail, hold up to this many bytes of events not written yet,
    /// and write them once writing works again (default 67108864, 64 MiB). Past
    /// it, the oldest are dropped and recorded by a gap line; 0 holds nothing.
    #[serde(default = "default_backlog_bytes")]
    pub backlog_bytes: u64,
}

impl FileConfig {
    /// The config writing `dir/master_events.log` with every other key at its default.
    pub fn in_dir(dir: impl Into<PathBuf>) -> FileConfig {
        FileConfig {
            dir: dir.into(),
            file_name: default_file_name(),
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
            fsync: Fsync::default(),
            restore: true,
            backlog_bytes: DEFAULT_BACKLOG_BYTES,
        }
    }
}

impl SinkConfig for FileConfig {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str =
        "appends events to an NDJSON log file (rotated by size, fsync policy, restored on restart)";

    fn validate(&self) -> Result<(), String> {
        let name = self.file_name.as_str();
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
            return Err(format!("file_name must be a plain file name, not {name:?}"));
        }
        if self.max_bytes < 1024 {
            return Err(format!(
                "max_bytes must be at least 1024, not {}",
                self.max_bytes
            ));
        }
        Ok(())
    }

    fn build(self, ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError> {
        let mut sink = FileSink::open(&self, Some(ctx.router()))
            .map_err(|e| ConfigError::Invalid(e.to_string()))?
            .with_health(Arc::clone(ctx.health()));
        if self.fsync == Fsync::Always {
            // "always" promises each event is on disk: then it is acknowledged and
            // streamed only once it is (see FileSink::with_commit_gate).
            sink = sink.with_commit_gate(ctx.commit_gate());
        }
        Ok(Box::new(sink))
    }
}

master_events_router::register_sink!(FileConfig);

/// Events (or one gap line) given to the sink and not written yet.
struct Held {
    /// The lines not written (whole lines).
    bytes: Vec<u8>,
    /// The first and last seq they cover.
    first: u64,
    last: u64,
    /// How many events (0 for a gap line).
    events: u64,
}

/// The running `file` sink.
pub struct FileSink {
    log: LogFile,
    _lock: LogLock,
    fsync: Fsync,
    start: Cursor,
    /// Lines written since the last sync.
    dirty: bool,
    last_sync: Instant,
    last_sync_error_log: Option<Instant>,
    /// What was given and not written yet, oldest first.
    backlog: VecDeque<Held>,
    backlog_bytes: u64,
    backlog_events: u64,
    backlog_limit: u64,
    /// Seqs dropped from the full backlog, not yet recorded by a gap line.
    dropped: Option<(u64, u64)>,
    /// When held events are written again, and the wait after that.
    retry_at: Option<Instant>,
    backoff: Duration,
    status: Arc<FileSinkStatus>,
    /// Where the router's sink set shows this sink's state (`/cluster`, metrics).
    health: Option<Arc<SinkHealth>>,
    /// With `fsync = "always"`: the commit gate this sink marks once what it was
    /// handed is written and synced (see [`FileSink::with_commit_gate`]).
    gate: Option<CommitGate>,
    /// The gate no longer advances: events were dropped from the backlog.
    gate_stopped: bool,
    /// The router read, whose history id is kept beside the log.
    router: Option<Router>,
    /// `<file_name>.history`: the history id of the log's events.
    history_path: PathBuf,
    /// The history id last written there.
    history_written: Option<Arc<str>>,
    /// The log's directory, file name and rotated files kept (for a cut).
    dir: PathBuf,
    file_name: String,
    keep: u32,
    /// `<file_name>.epochs`: the cluster marks of the log ([`LogMarks`]).
    marks_path: PathBuf,
    /// The marks last written there, and when.
    marks_written: Option<(LogMarks, Instant)>,
    /// A failure to write them was logged (until they are written again).
    marks_failing: bool,
}

impl FileSink {
    /// Opens the log of `config`: checks the directory (creating it if missing),
    /// takes the log's lock, checks its slots, cuts off a torn last line (WARN).
    /// With the `router` it will read, it resumes after the log's last seq if the
    /// router's archive holds the log's last event (see the crate documentation).
    pub fn open(config: &FileConfig, router: Option<&Router>) -> Result<FileSink, FileSinkError> {
        if !check_dir(&config.dir)? {
            fs::create_dir_all(&config.dir).map_err(|source| FileSinkError::CreateDir {
                path: config.dir.clone(),
                source,
            })?;
        }
        let lock = LogLock::acquire(&config.dir, &config.file_name)?;
        for index in 0..=config.keep {
            let path = file_path(&config.dir, &config.file_name, index);
            check_slot(&path, index == 0).map_err(|source| FileSinkError::Foreign {
                path: path.clone(),
                source,
            })?;
        }
        let path = file_path(&config.dir, &config.file_name, 0);
        let torn = repair_tail(&path).map_err(|source| FileSinkError::Repair {
            path: path.clone(),
            source,
        })?;
        if torn > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = torn,
                "the file log ended with a torn line (the process stopped in the middle of a write); it was cut off"
            );
        }
        let mut log = LogFile::open(
            &config.dir,
            &config.file_name,
            config.max_bytes,
            config.keep,
            config.fsync != Fsync::Never,
        )
        .map_err(|source| FileSinkError::Open {
            path: path.clone(),
            source,
        })?;
        let start = match router {
            Some(router) => {
                let tail = tail(config)?;
                let start = resume_cursor(&tail, router);
                if start == Cursor::Oldest {
                    if let Some(reset) = new_run(&tail, router) {
                        let mut line = Vec::with_capacity(256);
                        reset.encode_line(&mut line);
                        log.append(&line).map_err(|e| FileSinkError::Open {
                            path: path.clone(),
                            source: e.source,
                        })?;
                        tracing::info!(
                            path = %path.display(),
                            log_last_seq = reset.requested_since,
                            next_seq = reset.oldest_seq,
                            "the router did not start from this log: a reset line marks where its new run of seqs begins"
                        );
                    }
                }
                start
            }
            None => Cursor::Oldest,
        };
        Ok(FileSink {
            log,
            _lock: lock,
            fsync: config.fsync,
            start,
            dirty: false,
            last_sync: Instant::now(),
            last_sync_error_log: None,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            backlog_events: 0,
            backlog_limit: config.backlog_bytes,
            dropped: None,
            retry_at: None,
            backoff: RETRY_FIRST,
            status: FileSinkStatus::register(&path),
            health: None,
            gate: None,
            gate_stopped: false,
            router: router.cloned(),
            history_path: history_path(&config.dir, &config.file_name),
            history_written: None,
            dir: config.dir.clone(),
            file_name: config.file_name.clone(),
            keep: config.keep,
            marks_path: epochs_path(&config.dir, &config.file_name),
            marks_written: None,
            marks_failing: false,
        }
        .with_history_kept())
    }

    /// Makes this sink the router's commit gate: an event is committed — streamed,
    /// acknowledged to its publisher — only once it is written to the log and synced
    /// (`fsync = "always"` sinks built from a configuration do this). One sync
    /// covers every event handed to the sink before it (group commit). If the sink
    /// had to drop events (its backlog overflowed while the disk failed), the gate
    /// stops for good: nothing after them is acknowledged as durable, and the sink
    /// says so (ERROR, state `failing`) until the process is restarted.
    pub fn with_commit_gate(mut self, gate: CommitGate) -> FileSink {
        self.gate = Some(gate);
        self
    }

    /// Writes the router's history id beside the log when it is not the one there
    /// (a warm restart reads it back: see [`warm::WarmStart::history`]). A failure is
    /// logged, not fatal: the log itself is intact, and a restart then starts a new
    /// history, which resuming readers are told about.
    fn with_history_kept(mut self) -> FileSink {
        self.keep_history();
        self
    }

    fn keep_history(&mut self) {
        let Some(router) = &self.router else {
            return;
        };
        let history = router.history();
        if self
            .history_written
            .as_ref()
            .is_some_and(|h| Arc::ptr_eq(h, &history) || **h == *history)
        {
            return;
        }
        match write_history(&self.history_path, &history, self.fsync != Fsync::Never) {
            Ok(()) => self.history_written = Some(history),
            Err(e) => {
                // Retried at the next batch.
                tracing::error!(
                    path = %self.history_path.display(),
                    error = %e,
                    "the file sink cannot keep the stream's history id beside its log; a restart would start a new history"
                );
            }
        }
    }

    /// Keeps the cluster marks beside the log ([`LogMarks`]): the router's epoch
    /// table whenever it changed (before the events of a new epoch are written:
    /// called ahead of each batch), and for a commit gate the commit, at most once
    /// a second (`force`: now, at shutdown). Only once the router has epochs (a
    /// cluster node). A failure is an ERROR once, retried at the next batch: a
    /// restart then knows fewer epochs, and takes back more of its log than needed
    /// (never less: a missing epoch only makes the log look older).
    fn keep_marks(&mut self, force: bool) {
        let Some(router) = &self.router else {
            return;
        };
        let epochs = router.epochs();
        let committed = self.gate.as_ref().map(CommitGate::committed);
        let due = match &self.marks_written {
            None => !epochs.entries().is_empty(),
            Some((written, at)) => {
                written.epochs != epochs
                    || (written.committed != committed && (force || at.elapsed() >= MARKS_INTERVAL))
            }
        };
        if !due {
            return;
        }
        let marks = LogMarks { epochs, committed };
        match cut::write_marks(&self.marks_path, &marks, self.fsync != Fsync::Never) {
            Ok(()) => {
                self.marks_written = Some((marks, Instant::now()));
                self.marks_failing = false;
            }
            Err(e) => {
                // Counted with the sink's write errors (its metrics).
                self.status.add_error();
                if !self.marks_failing {
                    self.marks_failing = true;
                    tracing::error!(
                        path = %self.marks_path.display(),
                        error = %e,
                        "the file sink cannot keep the cluster's epochs beside its log; a restart would take back more of the log than needed"
                    );
                }
            }
        }
    }

    /// After a chunk (or a quiet while, or at start): keeps the history id and the
    /// cluster marks, and marks the gate when everything `input` handed so far is
    /// written and synced.
    fn settle(&mut self, input: &SinkInput) {
        self.keep_history();
        self.keep_marks(false);
        let Some(gate) = &self.gate else {
            return;
        };
        if self.gate_stopped {
            return;
        }
        if let Some((from, to)) = self.dropped {
            self.gate_stopped = true;
            tracing::error!(
                path = %self.log.path().display(),
                from_seq = from,
                to_seq = to,
                "the file sink dropped events it could not write: nothing after them is acknowledged as durable until the process is restarted"
            );
            self.change(
                SinkState::Failing,
                "events were dropped from the full backlog; durable acknowledgement stopped",
            );
            return;
        }
        if self.backlog.is_empty() && !self.dirty {
            input.mark(gate);
        }
    }

    /// The cluster took back the events after `after` (see [`Sink::on_truncated`]):
    /// drops them from the backlog and cuts them off the log, so that a restart
    /// does not restore them. A cut that fails is an ERROR, and the sink stops
    /// being a commit gate (its log holds events the cluster does not).
    fn truncate(&mut self, after: u64) {
        let mut held_dropped = 0;
        let mut kept = VecDeque::with_capacity(self.backlog.len());
        for mut held in std::mem::take(&mut self.backlog) {
            if held.first > after {
                held_dropped += held.events;
                continue;
            }
            if held.last > after {
                held_dropped += held.keep_through(after);
            }
            kept.push_back(held);
        }
        self.backlog = kept;
        self.backlog_bytes = self.backlog.iter().map(|h| h.bytes.len() as u64).sum();
        self.backlog_events = self.backlog.iter().map(|h| h.events).sum();
        self.status
            .set_held(self.backlog_events, self.backlog_bytes);
        self.dropped = match self.dropped {
            Some((from, _)) if from > after => None,
            Some((from, to)) => Some((from, to.min(after))),
            None => None,
        };
        let sync = self.fsync != Fsync::Never;
        let result = cut::cut_files(&self.dir, &self.file_name, self.keep, after, sync)
            .and_then(|cut| self.log.reopen_current().map(|()| cut));
        match result {
            Ok(cut) => tracing::warn!(
                path = %self.log.path().display(),
                after_seq = after,
                lines = cut.lines,
                bytes = cut.bytes,
                files = cut.files.len(),
                held_events = held_dropped,
                "the cluster took back events this node had written before they were committed (a deposed master's): they were cut off the file log"
            ),
            Err(e) => {
                tracing::error!(
                    path = %self.log.path().display(),
                    after_seq = after,
                    error = %e,
                    "the cluster took back events this node had written, and the file sink cannot cut them off its log: a restart would restore events the cluster does not hold"
                );
                if self.gate.is_some() {
                    self.gate_stopped = true;
                }
                self.change(
                    SinkState::Failing,
                    &format!("cannot cut events the cluster took back off the log: {e}"),
                );
            }
        }
    }

    /// Replaces where the log's bytes are written (a test's failing disk).
    pub fn set_writer(&mut self, writer: Box<dyn FileWriter>) {
        self.log.set_writer(writer);
    }

    /// This sink's status (keep the handle before the sink is started).
    pub fn status(&self) -> Arc<FileSinkStatus> {
        Arc::clone(&self.status)
    }

    /// Reports this sink's state changes to `health` (the router's view of its
    /// sinks), which then also logs them; without it, the sink logs them itself.
    pub fn with_health(mut self, health: Arc<SinkHealth>) -> FileSink {
        self.health = Some(health);
        self
    }

    /// Enters `state` (with why), logging a change once: through the health the
    /// sink reports to, or itself (WARN retrying, ERROR failing, INFO recovered).
    fn change(&mut self, state: SinkState, reason: &str) {
        let before = self.status.set_state(state, reason);
        let path = self.log.path();
        if let Some(health) = &self.health {
            let reason = format!("{}: {reason}", path.display());
            match state {
                SinkState::Ok => health.ok(),
                SinkState::Retrying => health.retrying(reason),
                SinkState::Failing => health.failing(reason),
                SinkState::Standby => health.standby(reason),
            }
            return;
        }
        if before == state {
            return;
        }
        let path = path.display();
        let held = self.backlog_events;
        match state {
            SinkState::Ok => tracing::info!(
                %path,
                "the file sink recovered: its log is written again, with every event it held"
            ),
            SinkState::Retrying => tracing::warn!(
                %path,
                error = %reason,
                held_events = held,
                "the file sink cannot write its log: holding the events not written and retrying"
            ),
            SinkState::Failing => tracing::error!(
                %path,
                error = %reason,
                held_events = held,
                "the file sink cannot write its log and its backlog is full: dropping the oldest held events (a gap line will record them)"
            ),
            // The file sink never stands by: it runs on every node.
            SinkState::Standby => tracing::info!(%path, %reason, "the file sink stands by"),
        }
    }

    /// Appends lines covering seqs `first..=last` (`events` of them are events),
    /// or holds them when earlier ones are held or the write fails.
    fn submit(&mut self, bytes: &[u8], first: u64, last: u64, events: u64) {
        if bytes.is_empty() {
            return;
        }
        if self.backlog.is_empty() && self.dropped.is_none() {
            match self.log.append(bytes) {
                Ok(()) => {
                    self.status.add_written(events, bytes.len() as u64);
                    self.written();
                    return;
                }
                Err(e) => {
                    let mut held = Held {
                        bytes: bytes.to_vec(),
                        first,
                        last,
                        events,
                    };
                    let (n, b) = held.advance(e.written);
                    self.status.add_written(n, b);
                    self.push(held);
                    self.failed(&e.source);
                }
            }
        } else {
            self.push(Held {
                bytes: bytes.to_vec(),
                first,
                last,
                events,
            });
        }
        self.bound();
    }

    fn push(&mut self, held: Held) {
        self.backlog_bytes += held.bytes.len() as u64;
        self.backlog_events += held.events;
        self.backlog.push_back(held);
        self.status
            .set_held(self.backlog_events, self.backlog_bytes);
    }

    /// Drops the oldest held lines past the bound (they become a gap line): whole
    /// entries first, then whole lines of the oldest one left.
    fn bound(&mut self) {
        let mut dropped_now = 0;
        while self.backlog_bytes > self.backlog_limit {
            let excess = (self.backlog_bytes - self.backlog_limit) as usize;
            let Some(front) = self.backlog.front_mut() else {
                break;
            };
            let (first, last, events, bytes) = if front.events > 1 && excess < front.bytes.len() {
                // Only some of its lines: up to the end of the line holding the
                // excess byte.
                let cut = front.bytes[excess - 1..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(front.bytes.len(), |k| excess + k);
                let first = front.first;
                let last = last_seq(&front.bytes[..cut]).unwrap_or(first);
                let (events, bytes) = front.advance(cut);
                if front.bytes.is_empty() {
                    self.backlog.pop_front();
                }
                (first, last, events, bytes)
            } else {
                let Some(held) = self.backlog.pop_front() else {
                    break;
                };
                (held.first, held.last, held.events, held.bytes.len() as u64)
            };
            self.backlog_bytes -= bytes;
            self.backlog_events -= events;
            dropped_now += events;
            self.dropped = Some(match self.dropped {
                Some((from, to)) => (from.min(first), to.max(last)),
                None => (first, last),
            });
        }
        if self.dropped.is_none() {
            return;
        }
        self.status
            .set_held(self.backlog_events, self.backlog_bytes);
        self.status.add_dropped(dropped_now);
        if self.status.state() != SinkState::Failing {
            let reason = format!(
                "{}; the backlog of {} bytes is full: the oldest held events are dropped",
                self.status.snapshot().reason,
                self.backlog_limit
            );
            self.change(SinkState::Failing, &reason);
        }
    }

    /// A write failed: hold on and retry later (logged once per state change).
    fn failed(&mut self, e: &io::Error) {
        self.status.add_error();
        let reason = e.to_string();
        match self.status.state() {
            SinkState::Ok => {
                self.backoff = RETRY_FIRST;
                self.change(SinkState::Retrying, &reason);
            }
            state => {
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
                self.change(state, &reason);
            }
        }
        self.retry_at = Some(Instant::now() + self.backoff);
    }

    /// Writes what is held: the gap line of dropped events first, then the held
    /// lines in order. Back to ok once all are written.
    fn retry(&mut self) {
        self.retry_at = None;
        if let Some((from, to)) = self.dropped {
            let gap = Gap::new(from, to, GAP_NOT_WRITTEN);
            let mut line = Vec::with_capacity(160);
            gap.encode_line(&mut line);
            if let Err(e) = self.log.append(&line) {
                return self.failed(&e.source);
            }
            self.dropped = None;
            self.status.add_written(0, line.len() as u64);
            tracing::error!(
                path = %self.log.path().display(),
                from_seq = from,
                to_seq = to,
                missed = gap.missed,
                "events were lost from the file log (dropped from the full backlog while writes failed); a gap line records them"
            );
        }
        while let Some(held) = self.backlog.front_mut() {
            let result = self.log.append(&held.bytes);
            let done = match &result {
                Ok(()) => held.bytes.len(),
                Err(e) => e.written,
            };
            let (n, b) = held.advance(done);
            self.backlog_events -= n;
            self.backlog_bytes -= b;
            self.status.add_written(n, b);
            self.status
                .set_held(self.backlog_events, self.backlog_bytes);
            match result {
                Ok(()) => {
                    self.backlog.pop_front();
                }
                Err(e) => {
                    self.written();
                    return self.failed(&e.source);
                }
            }
        }
        self.written();
        self.change(SinkState::Ok, "");
    }

    /// After lines were written: sync by policy.
    fn written(&mut self) {
        self.dirty = true;
        match self.fsync {
            Fsync::Always => self.sync(),
            Fsync::EveryMs(ms) if self.last_sync.elapsed() >= Duration::from_millis(ms) => {
                self.sync()
            }
            _ => {}
        }
    }

    fn sync(&mut self) {
        if !self.dirty {
            return;
        }
        match self.log.sync() {
            Ok(()) => {
                self.dirty = false;
                self.last_sync = Instant::now();
            }
            Err(e) => {
                // Retried at the next sync; the error is what the operator needs.
                self.last_sync = Instant::now();
                let due = self
                    .last_sync_error_log
                    .is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL);
                if due {
                    self.last_sync_error_log = Some(Instant::now());
                    tracing::error!(
                        path = %self.log.path().display(),
                        error = %e,
                        "the file sink cannot sync its log to disk (written lines may be lost on a power loss)"
                    );
                }
            }
        }
    }

    /// How long until a pending `every_ms` sync or a retry is due, if one is.
    fn wake_in(&self) -> Option<Duration> {
        let sync = match self.fsync {
            Fsync::EveryMs(ms) if self.dirty => {
                Some(Duration::from_millis(ms).saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        };
        let retry = self
            .retry_at
            .map(|t| t.saturating_duration_since(Instant::now()));
        match (sync, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Does what is due: a retry, a sync.
    fn tick(&mut self) {
        if self.retry_at.is_some_and(|t| t <= Instant::now()) {
            self.retry();
        }
        if let Fsync::EveryMs(ms) = self.fsync {
            if self.last_sync.elapsed() >= Duration::from_millis(ms) {
                self.sync();
            }
        }
    }

    /// Reads `input` until it ends (on a blocking thread): delivers, retries held
    /// events and syncs by policy (also while the stream is quiet), then writes
    /// what is held (for a while) and syncs at the end.
    fn pump(&mut self, handle: &tokio::runtime::Handle, input: &mut SinkInput) {
        // What the log already holds (a warm restart's events) counts at once.
        self.settle(input);
        loop {
            if let Some(chunk) = input.try_recv() {
                input.deliver(self, chunk);
                self.tick();
                self.settle(input);
                continue;
            }
            let next = match self.wake_in() {
                Some(wait) => match handle.block_on(tokio::time::timeout(wait, input.recv())) {
                    Ok(next) => next,
                    Err(_) => {
                        self.tick();
                        self.settle(input);
                        continue;
                    }
                },
                None => handle.block_on(input.recv()),
            };
            match next {
                Some(chunk) => {
                    input.deliver(self, chunk);
                    self.tick();
                    self.settle(input);
                }
                None => break,
            }
        }
        let deadline = Instant::now() + SHUTDOWN_RETRY;
        while self.retry_at.is_some() && Instant::now() < deadline {
            let wait = self
                .wake_in()
                .unwrap_or_default()
                .min(deadline.saturating_duration_since(Instant::now()));
            std::thread::sleep(wait);
            self.retry();
        }
        if !self.backlog.is_empty() || self.dropped.is_some() {
            let from = self
                .dropped
                .map(|d| d.0)
                .or(self.backlog.front().map(|h| h.first));
            let to = self
                .backlog
                .back()
                .map(|h| h.last)
                .or(self.dropped.map(|d| d.1));
            tracing::error!(
                path = %self.log.path().display(),
                held_events = self.backlog_events,
                from_seq = from.unwrap_or_default(),
                to_seq = to.unwrap_or_default(),
                error = %self.status.snapshot().reason,
                "the file sink stopped with events it could not write to its log: they are not in it"
            );
        }
        if self.fsync != Fsync::Never {
            self.sync();
        }
        self.keep_marks(true);
    }
}

/// Where the history id of the log `file_name` in `dir` is kept.
pub fn history_path(dir: &Path, file_name: &str) -> PathBuf {
    dir.join(format!("{file_name}.history"))
}

/// Replaces the history file at `path` with `history` (and a newline): written to a
/// temporary file beside it, synced when `sync`, then renamed over it, so a crash
/// leaves the old id or the new one, never half of one.
fn write_history(path: &Path, history: &str, sync: bool) -> io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("history.tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(history.as_bytes())?;
    file.write_all(b"\n")?;
    if sync {
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if sync {
        if let Some(dir) = path.parent() {
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
    }
    Ok(())
}

/// The seq of the last line of `bytes` (whole lines), if it is an event.
fn last_seq(bytes: &[u8]) -> Option<u64> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |k| k + 1);
    match parse_line(&body[start..]) {
        Ok(StreamLine::Event(record)) => record.envelope.seq,
        _ => None,
    }
}

impl Held {
    /// Keeps the lines up to seq `after` only; returns how many events went. A gap
    /// line across `after` is kept whole (it names seqs no one has).
    fn keep_through(&mut self, after: u64) -> u64 {
        let mut keep = 0;
        let mut events = 0;
        let mut at = 0;
        for line in self.bytes.split_inclusive(|b| *b == b'\n') {
            let (from, is_event) = match parse_line(line.strip_suffix(b"\n").unwrap_or(line)) {
                Ok(StreamLine::Event(record)) => (record.envelope.seq.unwrap_or(0), true),
                Ok(StreamLine::Gap(gap)) => (gap.from_seq, false),
                _ => (0, false),
            };
            at += line.len();
            if from > after {
                break;
            }
            keep = at;
            events += u64::from(is_event);
        }
        let gone = self.events.saturating_sub(events);
        self.bytes.truncate(keep);
        self.events = events;
        self.last = after.min(self.last);
        gone
    }

    /// Drops the first `n` bytes (whole lines, written); returns how many events
    /// and bytes that was. The first seq is then the first remaining line's.
    fn advance(&mut self, n: usize) -> (u64, u64) {
        if n == 0 {
            return (0, 0);
        }
        let n = n.min(self.bytes.len());
        let lines = self.bytes[..n].iter().filter(|b| **b == b'\n').count() as u64;
        self.bytes.drain(..n);
        let events = if self.events == 0 {
            0
        } else {
            lines.min(self.events)
        };
        self.events -= events;
        let first_line = self.bytes.split(|b| *b == b'\n').next().unwrap_or(&[]);
        if let Ok(StreamLine::Event(record)) = parse_line(first_line) {
            if let Some(seq) = record.envelope.seq {
                self.first = seq;
            }
        }
        (events, n as u64)
    }
}

impl Sink for FileSink {
    fn on_batch(&mut self, batch: &SinkBatch<'_>) {
        let mut seqs = batch.iter().map(|e| e.seq);
        let first = seqs.next().unwrap_or(0);
        let last = seqs.last().unwrap_or(first);
        // The epochs of these events are on disk before they are.
        self.keep_marks(false);
        self.submit(&batch.bytes(), first, last, batch.len() as u64);
    }

    fn on_truncated(&mut self, after: u64) {
        self.truncate(after);
    }

    fn on_gap(&mut self, gap: &Gap) {
        let mut line = Vec::with_capacity(128);
        gap.encode_line(&mut line);
        self.submit(&line, gap.from_seq, gap.to_seq, 0);
    }

    fn start_cursor(&self) -> Cursor {
        self.start
    }

    fn run(self: Box<Self>, input: SinkInput) -> SinkFuture {
        Box::pin(async move {
            let handle = tokio::runtime::Handle::current();
            let name = input.name().to_owned();
            // A thread of its own for the sink's life (writes and syncs block).
            let result = master_events_router::run_on_own_thread(&name, move || {
                let mut sink = self;
                let mut input = input;
                sink.pump(&handle, &mut input);
            })
            .await;
            if let Err(panic) = result {
                // The supervisor logs it and restarts the sink, which resumes after
                // what its log holds.
                std::panic::resume_unwind(panic);
            }
        })
    }
}

impl fmt::Debug for FileSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSink")
            .field("path", &self.log.path())
            .field("fsync", &self.fsync)
            .field("start", &self.start)
            .finish()
    }
}

/// What the end of a log says: its last event, and the last seq it knows of.
struct Tail {
    last_event: Option<Record>,
    last_seq: u64,
}

/// Reads the log from its end up to its last event.
fn tail(config: &FileConfig) -> Result<Tail, FileSinkError> {
    let mut tail = Tail {
        last_event: None,
        last_seq: 0,
    };
    for index in 0..=config.keep {
        let path = file_path(&config.dir, &config.file_name, index);
        if !is_regular(&path) {
            continue;
        }
        let read_error = |source| FileSinkError::Read {
            path: path.clone(),
            source,
        };
        let mut lines = RevLines::open(&path).map_err(read_error)?;
        while let Some(line) = lines.next_line().map_err(read_error)? {
            match parse_line(&line) {
                Ok(StreamLine::Event(record)) => {
                    if let Some(seq) = record.envelope.seq {
                        tail.last_seq = tail.last_seq.max(seq);
                        tail.last_event = Some(record);
                        return Ok(tail);
                    }
                }
                Ok(StreamLine::Gap(gap)) => tail.last_seq = tail.last_seq.max(gap.to_seq),
                // What precedes a reset is another run's.
                Ok(StreamLine::Reset(_)) => return Ok(tail),
                _ => {}
            }
        }
    }
    Ok(tail)
}

/// Where the sink resumes: after the log's last seq if `router`'s archive holds
/// the log's last event (it was warm-loaded from this log), else from the oldest.
fn resume_cursor(tail: &Tail, router: &Router) -> Cursor {
    let Some(last) = &tail.last_event else {
        return Cursor::Oldest;
    };
    let Some(seq) = last.envelope.seq else {
        return Cursor::Oldest;
    };
    // Uncommitted too: a cluster node restores events it knows committed only up
    // to the mark kept beside the log.
    let mut sub = router.subscribe_uncommitted(Cursor::After(seq - 1));
    let same = match sub.try_recv() {
        Some(Chunk::Events(batch)) => batch
            .iter()
            .next()
            .is_some_and(|e| e.seq == seq && Record::parse(e.line).is_ok_and(|r| &r == last)),
        _ => false,
    };
    if same {
        Cursor::After(tail.last_seq)
    } else {
        Cursor::Oldest
    }
}

/// The `reset` line to write before a sink reading from the oldest event appends
/// seqs that do not follow the log's (the router did not start from this log:
/// `restore = false`, or a filtered log), so that the log's seqs only ever
/// increase between reset lines. `None` when they do follow.
fn new_run(tail: &Tail, router: &Router) -> Option<Reset> {
    let first = match router.restored_through() {
        Some(seq) => seq + 1,
        None => router.oldest_seq().unwrap_or(router.last_seq() + 1),
    };
    (tail.last_seq > 0 && first <= tail.last_seq).then(|| Reset {
        history: router.history().to_string(),
        oldest_seq: first,
        last_seq: router.last_seq(),
        requested_history: None,
        requested_since: tail.last_seq,
        reason: "the router did not start from this log: its seqs start over".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use master_events_events::catalog::DeleteBucket;

    fn held(seqs: std::ops::RangeInclusive<u64>) -> Held {
        let mut bytes = Vec::new();
        for seq in seqs.clone() {
            let mut r = Record::new(DeleteBucket {
                bucket: format!("b{seq}").into(),
            });
            r.envelope.seq = Some(seq);
            r.encode_line(&mut bytes);
        }
        Held {
            bytes,
            first: *seqs.start(),
            last: *seqs.end(),
            events: seqs.count() as u64,
        }
    }

    #[test]
    fn held_events_beyond_a_cut_are_dropped_and_the_ones_before_it_kept_whole() {
        let mut h = held(5..=9);
        assert_eq!(h.keep_through(7), 2, "8 and 9 go");
        assert_eq!((h.first, h.last, h.events), (5, 7, 3));
        let lines: Vec<u64> = h
            .bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| match parse_line(l) {
                Ok(StreamLine::Event(r)) => r.envelope.seq,
                _ => None,
            })
            .collect();
        assert_eq!(lines, vec![5, 6, 7]);
        assert!(h.bytes.ends_with(b"\n"), "whole lines");
        assert_eq!(held(5..=9).keep_through(4), 5, "a cut before them all");
    }
}
