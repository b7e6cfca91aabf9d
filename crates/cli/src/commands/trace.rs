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
//! - Exit code 0 when the trace was written (also when standard output was closed
//!   early), 2 on usage and I/O errors.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use master_events_report::{TraceOptions, TraceWriter};

use super::source::{self, PipeWatch, SourceArgs};

/// Arguments of `trace`.
#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Write the trace into FILE (created or truncated) instead of standard output.
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
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            let stats = write(args, options, BufWriter::new(file))
                .with_context(|| format!("writing {}", path.display()))?;
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
            match write(args, options, &mut out) {
                Ok(_) => Ok(0),
                Err(_) if out.closed() => Ok(0),
                Err(e) => Err(e.context("writing standard output")),
            }
        }
    }
}

/// Reads the source and writes its trace to `out`, flushed.
fn write<W: Write>(
    args: &TraceArgs,
    options: TraceOptions,
    out: W,
) -> Result<master_events_report::TraceStats> {
    let opened = source::open(&args.source)?;
    let name = opened.name.clone();
    let (mut reader, bar) = source::log_reader(opened);
    let written = (|| -> Result<_> {
        let mut trace = TraceWriter::with_options(out, options)?;
        while let Some(rec) = reader
            .next_record()
            .with_context(|| format!("reading {name}"))?
        {
            trace.observe(&rec)?;
        }
        let (mut out, stats) = trace.finish()?;
        out.flush()?;
        Ok(stats)
    })();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let stats = written?;
    source::warn_unread("trace", &name, reader.summary());
    Ok(stats)
}
