//! `master-events trace`: writes the Chrome trace-event JSON of an event log (a file,
//! standard input or a server's archive), to open in Perfetto (ui.perfetto.dev),
//! `chrome://tracing` or speedscope.
//!
//! Owns: the command's options and where the document goes (standard output, or
//! `-o FILE`). The spans themselves (rebalances, stages, vbucket moves in lanes per
//! node, their phases) are the `master-events-report` crate's
//! [`master_events_report::trace`].
//!
//! Promises:
//! - Streaming: the log is read once and each span written when it ends; neither the
//!   log nor the document is held.
//! - The output is one JSON document (`{"traceEvents":[...],...}`); standard output
//!   holds nothing else. Bad lines are skipped and summed up on standard error in one
//!   line; with `-o`, what was written is also told there.
//! - `-o FILE` is written whole or not at all: the trace goes to a temporary file
//!   beside FILE, renamed over it once complete, so a source that cannot be read (a
//!   server that cannot be reached, a missing file) leaves no empty or truncated FILE
//!   and an older FILE as it was. A FILE that is not a regular file (`/dev/null`, a
//!   FIFO) is written in place.
//! - Exit code 0 when the trace was written (also when standard output was closed
//!   early), 2 on usage and I/O errors.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use master_events_report::{TraceOptions, TraceWriter};

use super::source::{self, PipeWatch, SourceArgs};

/// Arguments of `trace`.
#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Write the trace into FILE (created, or replaced once the trace is complete)
    /// instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Only the spans (start/end pairs): leave out the events that are not part of
    /// one, which otherwise appear as instant markers.
    #[arg(long)]
    pub spans_only: bool,
}

/// Runs the command; returns the process exit code.
pub fn run(args: &TraceArgs) -> Result<i32> {
    let options = TraceOptions {
        point_events: !args.spans_only,
    };
    match &args.output {
        Some(path) => {
            let stats = write_file(args, options, path)?;
            eprintln!(
                "master-events trace: wrote {} ({} spans, {} unfinished, {} instants, {} \
                 processes)",
                path.display(),
                stats.spans,
                stats.unfinished,
                stats.instants,
                stats.processes
            );
            Ok(0)
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = PipeWatch::new(BufWriter::new(stdout.lock()));
            match write(args, options, &mut out, "standard output") {
                Ok(_) => Ok(0),
                Err(_) if out.closed() => Ok(0),
                Err(e) => Err(e),
            }
        }
    }
}

/// Writes the trace into `path`: through a temporary file in the same directory,
/// renamed over `path` when complete (dropped, and so removed, on any error); in
/// place when `path` exists and is not a regular file.
fn write_file(
    args: &TraceArgs,
    options: TraceOptions,
    path: &Path,
) -> Result<master_events_report::TraceStats> {
    // A symbolic link keeps pointing where it did: the file it names is replaced.
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)
            .with_context(|| format!("cannot follow the link {}", path.display()))?,
        _ => path.to_path_buf(),
    };
    let special = std::fs::metadata(&target).is_ok_and(|m| !m.is_file());
    if special {
        let file = OpenOptions::new()
            .write(true)
            .open(&target)
            .with_context(|| format!("cannot open {}", path.display()))?;
        return write(
            args,
            options,
            BufWriter::new(file),
            &path.display().to_string(),
        );
    }
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".trace-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // As `File::create` would: 0666 less the umask, not the temporary file's 0600.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create {} (in {})", path.display(), dir.display()))?;
    let file: &File = tmp.as_file();
    let stats = write(
        args,
        options,
        BufWriter::new(file),
        &path.display().to_string(),
    )?;
    tmp.persist(&target)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(stats)
}

/// Reads the source and writes its trace to `out` (named `dest` in errors), flushed.
/// An error says which side failed: the source's own (`cannot open ...`,
/// `reading ...`), or `writing DEST: ...`.
fn write<W: Write>(
    args: &TraceArgs,
    options: TraceOptions,
    out: W,
    dest: &str,
) -> Result<master_events_report::TraceStats> {
    let opened = source::open(&args.source)?;
    let name = opened.name.clone();
    let (mut reader, bar) = source::log_reader(opened);
    let written = (|| -> Result<_> {
        let writing = || format!("writing {dest}");
        let mut trace = TraceWriter::with_options(out, options).with_context(writing)?;
        while let Some(rec) = reader
            .next_record()
            .with_context(|| format!("reading {name}"))?
        {
            trace.observe(&rec).with_context(writing)?;
        }
        let (mut out, stats) = trace.finish().with_context(writing)?;
        out.flush().with_context(writing)?;
        Ok(stats)
    })();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let stats = written?;
    source::warn_unread("trace", &name, reader.summary());
    Ok(stats)
}
