//! `master-events report`: reports for people on an event log — a file, standard
//! input or a server's archive — built by the `master-events-report` crate.
//!
//! Owns: the three reports' options and output choices:
//! - `rebalance`: one report per rebalance (outcome, duration, nodes, per-bucket move
//!   counts and p50/p90/max of move, backfill and takeover times, the slowest
//!   moves), as text or JSON, and optionally the SVG timeline of the moves;
//! - `inflight`: the moves started and not done at the end of the log, with their
//!   age, as text or JSON;
//! - `moves`: one row per move, as an aligned text table, CSV or JSON lines.
//!
//! Every report takes `--format text|json|csv` with the values it supports (a value
//! it does not support is refused, naming the ones it does); `--json` is kept,
//! hidden, as another way to say `--format json`.
//!
//! Promises:
//! - Streaming: the log is read once, line by line; memory follows what is in
//!   flight, not the log's length (except the rows `rebalance --svg` and the `moves`
//!   table must hold; `moves --format csv|json` writes each row as its move
//!   finishes).
//! - Standard output holds only the report. Bad lines never stop a report: they are
//!   summed up on standard error in one line (count, the first few with their line
//!   numbers), as are the gaps a stream reported. A progress bar is drawn on standard
//!   error when it is a terminal and the source is a file.
//! - Exit code 0 when the report was written (also when standard output was closed
//!   early, as by `| head`), 2 on usage and I/O errors (unreadable source, server
//!   refusal, unwritable output).

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use master_events_events::Timestamp;
use master_events_report::{
    utc, Analyzer, AnalyzerOptions, Anomalies, MoveRow, MovesFormat, MovesWriter, ReadSummary,
    RebalanceReport, SvgOptions,
};
use serde::Serialize;

use super::source::{self, PipeWatch, SourceArgs};

/// How many records are read between two drains of finished move rows.
const DRAIN_EVERY: u64 = 4096;

/// Arguments of `report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Which report.
    #[command(subcommand)]
    pub report: ReportCommand,
}

/// The reports.
#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Each rebalance: outcome, duration, nodes, and per bucket the moves (active,
    /// replica, done, in flight, aborted) with p50/p90/max of move, backfill and
    /// takeover times, seqno and index waits, and the slowest moves.
    ///
    /// Examples:
    ///   master-events report rebalance master_events.log
    ///   master-events report rebalance http://127.0.0.1:9898 --svg moves.svg
    ///   master-events report rebalance events.ndjson --format json | jq '.rebalances[0].outcome'
    #[command(verbatim_doc_comment)]
    Rebalance(RebalanceArgs),
    /// The vbucket moves started and not done at the end of the log, per bucket, with
    /// their age and the last event seen for each.
    ///
    /// Examples:
    ///   master-events report inflight http://127.0.0.1:9898 --now now
    ///   master-events report inflight master_events.log --format json
    #[command(verbatim_doc_comment)]
    Inflight(InflightArgs),
    /// One row per vbucket move: bucket, vbucket, node, start, end, duration, kind,
    /// status, backfill and takeover times, chains.
    ///
    /// The table lists the moves in start order. CSV and JSON lines are written as
    /// the moves finish (done or aborted), then the moves still in flight.
    ///
    /// Examples:
    ///   master-events report moves master_events.log
    ///   master-events report moves master_events.log --format csv > moves.csv
    ///   master-events report moves http://127.0.0.1:9898 --format json --bucket default
    #[command(verbatim_doc_comment)]
    Moves(MovesArgs),
}

/// Arguments of `report rebalance`.
#[derive(Args, Debug)]
pub struct RebalanceArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// `text`, or `json` (`{"input", "timeRange", "anomalies", "rebalances"}`; times
    /// and durations in seconds).
    #[arg(long, value_name = "FORMAT", default_value = "text",
          value_parser = format_parser(&[Format::Text, Format::Json]))]
    pub format: Format,
    /// The same as `--format json` (kept for scripts).
    #[arg(long, hide = true, conflicts_with = "format")]
    pub json: bool,
    /// Also draw the moves as an SVG timeline into FILE: a panel per rebalance, a row
    /// per lane of a node, each move's details in its tooltip (`<title>`).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// How many of the slowest moves each rebalance lists.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = super::validate::parse_count::<usize>)]
    pub slowest: usize,
}

/// Arguments of `report inflight`.
#[derive(Args, Debug)]
pub struct InflightArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// `text`, or `json` (`{"now", "buckets": [{"bucket", "moves": [...]}]}`).
    #[arg(long, value_name = "FORMAT", default_value = "text",
          value_parser = format_parser(&[Format::Text, Format::Json]))]
    pub format: Format,
    /// The same as `--format json` (kept for scripts).
    #[arg(long, hide = true, conflicts_with = "format")]
    pub json: bool,
    /// Measure ages against this time: seconds since the Unix epoch (as in `ts`), or
    /// `now` for the clock of this machine. Default: the last timestamp of the log.
    #[arg(long, value_name = "TS", value_parser = parse_now)]
    pub now: Option<Timestamp>,
}

/// Arguments of `report moves`.
#[derive(Args, Debug)]
pub struct MovesArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// `text` (an aligned table; also `table`), `csv` (with a header row), or `json`
    /// (one JSON object a line; also `jsonl`, `ndjson`).
    #[arg(long, value_name = "FORMAT", default_value = "text",
          value_parser = format_parser(&[Format::Text, Format::Csv, Format::Json]))]
    pub format: Format,
    /// The same as `--format json` (kept for scripts).
    #[arg(long, hide = true, conflicts_with = "format")]
    pub json: bool,
    /// Only the moves of this bucket.
    #[arg(long, value_name = "BUCKET")]
    pub bucket: Option<String>,
}

/// The output formats of the reports; each report takes the ones it supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Text for people (for `moves`, an aligned table).
    Text,
    /// JSON (for `moves`, one object a line).
    Json,
    /// Comma-separated values with a header row.
    Csv,
}

impl Format {
    /// The value as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }

    /// The command-line value, with the older names it also answers to.
    fn possible_value(self) -> PossibleValue {
        let value = PossibleValue::new(self.as_str());
        match self {
            Format::Text => value.alias("table"),
            Format::Json => value.aliases(["jsonl", "ndjson"]),
            Format::Csv => value,
        }
    }

    /// `--format`, or `json` when the hidden `--json` was given.
    fn or_json(self, json: bool) -> Format {
        if json {
            Format::Json
        } else {
            self
        }
    }
}

/// The parser of a report's `--format`: takes only `supported` (and their older
/// names); anything else is refused with the supported values listed.
fn format_parser(supported: &'static [Format]) -> impl TypedValueParser<Value = Format> {
    PossibleValuesParser::new(supported.iter().map(|f| f.possible_value())).map(move |s| {
        supported
            .iter()
            .copied()
            .find(|f| f.possible_value().matches(&s, false))
            .unwrap_or(Format::Text)
    })
}

impl From<Format> for MovesFormat {
    fn from(f: Format) -> MovesFormat {
        match f {
            Format::Text => MovesFormat::Table,
            Format::Csv => MovesFormat::Csv,
            Format::Json => MovesFormat::JsonLines,
        }
    }
}

/// `--now`: seconds since the epoch, or `now`.
fn parse_now(s: &str) -> Result<Timestamp, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(Timestamp::now());
    }
    s.parse::<f64>()
        .ok()
        .and_then(Timestamp::from_secs_f64)
        .ok_or_else(|| {
            "expected seconds since the Unix epoch (e.g. 1700000000.5) or `now`".to_owned()
        })
}

/// Runs the command; returns the process exit code.
pub fn run(args: &ReportArgs) -> Result<i32> {
    let stdout = std::io::stdout();
    let mut out = PipeWatch::new(BufWriter::new(stdout.lock()));
    let result = match &args.report {
        ReportCommand::Rebalance(a) => rebalance(a, &mut out),
        ReportCommand::Inflight(a) => inflight(a, &mut out),
        ReportCommand::Moves(a) => moves(a, &mut out),
    }
    .and_then(|()| out.flush().context("writing standard output"));
    match result {
        Ok(()) => Ok(0),
        Err(_) if out.closed() => Ok(0),
        Err(e) => Err(e),
    }
}

/// Reads the whole source into an analyzer, calling `each` after every record (with
/// the analyzer and the count so far); tells what could not be read.
fn read_source(
    command: &str,
    args: &SourceArgs,
    options: AnalyzerOptions,
    mut each: impl FnMut(&mut Analyzer, u64) -> Result<()>,
) -> Result<(Analyzer, ReadSummary)> {
    let opened = source::open(args)?;
    let name = opened.name.clone();
    let (mut reader, bar) = source::log_reader(opened);
    let mut analyzer = Analyzer::new(options);
    let mut records: u64 = 0;
    let read = loop {
        match reader.next_record() {
            Ok(Some(rec)) => {
                analyzer.observe(&rec);
                records += 1;
                if let Err(e) = each(&mut analyzer, records) {
                    break Err(e);
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(anyhow::Error::new(e).context(format!("reading {name}"))),
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    read?;
    let summary = reader.into_summary();
    source::warn_unread(command, &name, &summary);
    Ok((analyzer, summary))
}

/// The JSON document of `report rebalance --format json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RebalanceDoc<'a> {
    input: &'a ReadSummary,
    time_range: Option<(Timestamp, Timestamp)>,
    anomalies: &'a Anomalies,
    rebalances: &'a [RebalanceReport],
}

fn rebalance(args: &RebalanceArgs, out: &mut impl Write) -> Result<()> {
    let options = AnalyzerOptions {
        slowest: args.slowest,
        keep_moves: args.svg.is_some(),
    };
    let (analyzer, summary) =
        read_source("report rebalance", &args.source, options, |_, _| Ok(()))?;
    let analysis = analyzer.into_analysis(summary);
    if let Some(path) = &args.svg {
        let title = match analysis.rebalances.len() {
            1 => format!("vbucket moves of rebalance {}", analysis.rebalances[0].pid),
            // Several: each panel says which rebalance it is, and from when.
            _ => "vbucket moves".to_owned(),
        };
        let options = SvgOptions {
            title,
            ..SvgOptions::default()
        };
        master_events_report::write_rebalance_svg_file(&analysis.moves, &options, path)
            .with_context(|| format!("writing the SVG timeline to {}", path.display()))?;
    }
    if args.format.or_json(args.json) == Format::Json {
        let doc = RebalanceDoc {
            input: &analysis.input,
            time_range: analysis.time_range,
            anomalies: &analysis.anomalies,
            rebalances: &analysis.rebalances,
        };
        serde_json::to_writer_pretty(&mut *out, &doc).context("writing standard output")?;
        writeln!(out).context("writing standard output")?;
        return Ok(());
    }
    let mut text = String::new();
    match analysis.time_range {
        Some((first, last)) => text.push_str(&format!(
            "{} events from {} to {}\n\n",
            analysis.input.events,
            utc(first),
            utc(last)
        )),
        None => text.push_str(&format!("{} events\n\n", analysis.input.events)),
    }
    if analysis.rebalances.is_empty() {
        text.push_str("No rebalance in this log.\n");
    }
    for (i, report) in analysis.rebalances.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&report.to_string());
    }
    let a = &analysis.anomalies;
    if !a.is_empty() {
        text.push_str(&format!(
            "\nNote: {} untimed events ignored, {} rebalanceEnd without a start, {} \
             vbucketMoveDone without a start, {} moves outside a rebalance, {} timestamps \
             out of order.\n",
            a.untimed_events,
            a.unmatched_rebalance_ends,
            a.unmatched_move_dones,
            a.moves_outside_rebalance,
            a.out_of_order_ts
        ));
    }
    out.write_all(text.as_bytes())
        .context("writing standard output")
}

fn inflight(args: &InflightArgs, out: &mut impl Write) -> Result<()> {
    let (analyzer, _) = read_source(
        "report inflight",
        &args.source,
        AnalyzerOptions::default(),
        |_, _| Ok(()),
    )?;
    let inflight = analyzer.inflight(args.now);
    if args.format.or_json(args.json) == Format::Json {
        serde_json::to_writer_pretty(&mut *out, &inflight).context("writing standard output")?;
        writeln!(out).context("writing standard output")
    } else {
        write!(out, "{inflight}").context("writing standard output")
    }
}

fn moves(args: &MovesArgs, out: &mut impl Write) -> Result<()> {
    let format = MovesFormat::from(args.format.or_json(args.json));
    let options = AnalyzerOptions {
        keep_moves: true,
        ..AnalyzerOptions::default()
    };
    let wanted = |row: &MoveRow| args.bucket.as_ref().is_none_or(|b| *b == row.bucket);
    let mut writer = MovesWriter::new(&mut *out, format).context("writing standard output")?;
    let streaming = format != MovesFormat::Table;
    let (mut analyzer, _) = read_source("report moves", &args.source, options, |analyzer, n| {
        if streaming && n % DRAIN_EVERY == 0 {
            for row in analyzer.drain_finished_moves().iter().filter(|r| wanted(r)) {
                writer.write(row).context("writing standard output")?;
            }
        }
        Ok(())
    })?;
    if streaming {
        for row in analyzer.drain_finished_moves().iter().filter(|r| wanted(r)) {
            writer.write(row).context("writing standard output")?;
        }
    }
    // Without draining: every move in start order; after it, the moves in flight.
    for row in analyzer.moves().iter().filter(|r| wanted(r)) {
        writer.write(row).context("writing standard output")?;
    }
    writer.finish().context("writing standard output")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_takes_epoch_seconds_or_the_word_now() {
        assert_eq!(
            parse_now("1700000000.5"),
            Ok(Timestamp::from_micros(1_700_000_000_500_000))
        );
        assert!(parse_now("now").is_ok_and(|t| t.as_micros() > 1_700_000_000_000_000));
        assert!(parse_now("yesterday").is_err());
        assert!(parse_now("-5").is_err());
    }
}
