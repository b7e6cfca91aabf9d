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
//! ```
//!
//! Owns: [`FileConfig`] (registered as `file`), the running [`FileSink`], and warm
//! load ([`warm_start`], [`warm_load`]); the files themselves are [`log`]'s.
//!
//! Promises:
//! - Every event the sink is given is appended as its exact wire line, in `seq`
//!   order; where events were missed (the sink fell behind the archive, or lines
//!   could not be written) a `gap` line says exactly which, so the log never loses
//!   events silently.
//! - `fsync = "always"`: each batch is on disk before the next one is taken;
//!   `{ every_ms = N }`: at most N ms of written lines are at risk from a power
//!   loss, even when the stream goes quiet; `"never"`: the OS decides. On shutdown,
//!   everything is written and (unless `never`) synced.
//! - A restart does not append twice: when the router's archive holds this log's
//!   last event (it was warm-loaded from it), the sink resumes after the log's last
//!   seq ([`Sink::start_cursor`]); otherwise it starts from the oldest event.
//! - Write errors never stop the sink or the router: they are logged (at most once
//!   every 10 s, with a count) and the lost seqs become a gap line once writing
//!   works again.
#![warn(missing_docs)]

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use master_events_events::{parse_line, Gap, Record, StreamLine};
use master_events_router::{
    Chunk, ConfigError, Cursor, Router, Sink, SinkBatch, SinkConfig, SinkContext, SinkFuture,
    SinkInput,
};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, MapAccess, Unexpected, Visitor};
use serde::Deserialize;

pub mod log;
mod warm;

pub use warm::{warm_load, warm_start, WarmStart};

use log::{file_path, is_regular, LogFile, RevLines};

/// The sink's `type` name.
pub const NAME: &str = "file";
/// The default log file name (ns_server's).
pub const DEFAULT_FILE_NAME: &str = "master_events.log";
/// The default size past which the log rotates (100 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// The default number of rotated files kept.
pub const DEFAULT_KEEP: u32 = 5;
/// Write errors are logged at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The reason of a gap line for lines that could not be written.
pub const GAP_NOT_WRITTEN: &str = "not written to the file log (write errors)";

/// Why the file sink could not start or warm-load.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    /// The configuration is wrong.
    #[error("file sink: {0}")]
    Config(String),
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
    /// A torn last line could not be cut off.
    #[error("file sink: cannot repair the torn last line of {path}: {source}")]
    Repair {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
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
        let sink = FileSink::open(&self, Some(ctx.router()))
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(Box::new(sink))
    }
}

master_events_router::register_sink!(FileConfig);

/// The running `file` sink.
pub struct FileSink {
    log: LogFile,
    fsync: Fsync,
    start: Cursor,
    /// Lines written since the last sync.
    dirty: bool,
    last_sync: Instant,
    /// Seqs not written because of errors, reported as a gap line when possible.
    lost: Option<(u64, u64)>,
    errors: u64,
    last_error_log: Option<Instant>,
    scratch: Vec<u8>,
}

impl FileSink {
    /// Opens the log of `config` (creating it, cutting off a torn last line). With
    /// the `router` it will read, it resumes after the log's last seq if the
    /// router's archive holds the log's last event (see the crate documentation).
    pub fn open(config: &FileConfig, router: Option<&Router>) -> Result<FileSink, FileSinkError> {
        let path = file_path(&config.dir, &config.file_name, 0);
        let log = LogFile::open(
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
            Some(router) => resume_cursor(config, router)?,
            None => Cursor::Oldest,
        };
        Ok(FileSink {
            log,
            fsync: config.fsync,
            start,
            dirty: false,
            last_sync: Instant::now(),
            lost: None,
            errors: 0,
            last_error_log: None,
            scratch: Vec::new(),
        })
    }

    /// Appends lines covering seqs `first..=last`; on failure, counts them lost.
    fn write(&mut self, bytes: &[u8], first: u64, last: u64) {
        if let Some((from, to)) = self.lost {
            self.scratch.clear();
            Gap::new(from, to, GAP_NOT_WRITTEN).encode_line(&mut self.scratch);
            let gap = std::mem::take(&mut self.scratch);
            let result = self.log.append(&gap);
            self.scratch = gap;
            match result {
                Ok(()) => self.lost = None,
                Err(e) => {
                    self.lose(first, last, "write", &e);
                    return;
                }
            }
        }
        match self.log.append(bytes) {
            Ok(()) => {
                self.dirty = true;
                match self.fsync {
                    Fsync::Always => self.sync(),
                    Fsync::EveryMs(ms) if self.last_sync.elapsed() >= Duration::from_millis(ms) => {
                        self.sync()
                    }
                    _ => {}
                }
            }
            Err(e) => self.lose(first, last, "write", &e),
        }
    }

    fn lose(&mut self, first: u64, last: u64, what: &str, e: &io::Error) {
        self.lost = Some(match self.lost {
            Some((from, to)) => (from.min(first), to.max(last)),
            None => (first, last),
        });
        self.report(what, e);
    }

    fn report(&mut self, what: &str, e: &io::Error) {
        self.errors += 1;
        let due = self
            .last_error_log
            .is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL);
        if due {
            self.last_error_log = Some(Instant::now());
            tracing::error!(
                path = %self.log.path().display(),
                error = %e,
                errors_total = self.errors,
                "master-events: the file sink cannot {what} its log"
            );
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
                self.report("sync", &e);
            }
        }
    }

    /// How long until a pending `every_ms` sync is due, if one is pending.
    fn sync_due(&self) -> Option<Duration> {
        match self.fsync {
            Fsync::EveryMs(ms) if self.dirty => {
                Some(Duration::from_millis(ms).saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    /// Reads `input` until it ends (on a blocking thread): delivers, syncs by
    /// policy (also while the stream is quiet), and syncs at the end.
    fn pump(&mut self, handle: &tokio::runtime::Handle, input: &mut SinkInput) {
        loop {
            let chunk = match input.try_recv() {
                Some(chunk) => chunk,
                None => {
                    let next = match self.sync_due() {
                        Some(wait) => {
                            match handle.block_on(tokio::time::timeout(wait, input.recv())) {
                                Ok(next) => next,
                                Err(_) => {
                                    self.sync();
                                    continue;
                                }
                            }
                        }
                        None => handle.block_on(input.recv()),
                    };
                    match next {
                        Some(chunk) => chunk,
                        None => break,
                    }
                }
            };
            input.deliver(self, chunk);
        }
        if self.fsync != Fsync::Never {
            self.sync();
        }
    }
}

impl Sink for FileSink {
    fn on_batch(&mut self, batch: &SinkBatch<'_>) {
        let mut seqs = batch.iter().map(|e| e.seq);
        let first = seqs.next().unwrap_or(0);
        let last = seqs.last().unwrap_or(first);
        self.write(&batch.bytes(), first, last);
    }

    fn on_gap(&mut self, gap: &Gap) {
        let mut line = Vec::with_capacity(128);
        gap.encode_line(&mut line);
        self.write(&line, gap.from_seq, gap.to_seq);
    }

    fn start_cursor(&self) -> Cursor {
        self.start
    }

    fn run(self: Box<Self>, input: SinkInput) -> SinkFuture {
        Box::pin(async move {
            let handle = tokio::runtime::Handle::current();
            let name = input.name().to_owned();
            let result = tokio::task::spawn_blocking(move || {
                let mut sink = self;
                let mut input = input;
                sink.pump(&handle, &mut input);
            })
            .await;
            if let Err(e) = result {
                tracing::error!(sink = %name, error = %e, "master-events: the file sink stopped abnormally");
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
                _ => {}
            }
        }
    }
    Ok(tail)
}

/// Where the sink resumes: after the log's last seq if `router`'s archive holds
/// the log's last event (it was warm-loaded from this log), else from the oldest.
fn resume_cursor(config: &FileConfig, router: &Router) -> Result<Cursor, FileSinkError> {
    let tail = tail(config)?;
    let Some(last) = tail.last_event else {
        return Ok(Cursor::Oldest);
    };
    let Some(seq) = last.envelope.seq else {
        return Ok(Cursor::Oldest);
    };
    let mut sub = router.subscribe(Cursor::After(seq - 1));
    let same = match sub.try_recv() {
        Some(Chunk::Events(batch)) => batch
            .iter()
            .next()
            .is_some_and(|e| e.seq == seq && Record::parse(e.line).is_ok_and(|r| r == last)),
        _ => false,
    };
    Ok(if same {
        Cursor::After(tail.last_seq)
    } else {
        Cursor::Oldest
    })
}
