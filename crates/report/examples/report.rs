//! Prints the analysis of an event log, and optionally writes its trace, its moves
//! and its SVG timeline; also measures throughput.
//!
//! `cargo run --release --example report -- LOG [--trace OUT.json] [--svg OUT.svg]
//! [--moves table|csv|jsonl]`

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

use master_events_report::{
    analyze, write_moves, write_rebalance_svg_file, write_trace, AnalyzerOptions, LogReader,
    MovesFormat, SvgOptions, TraceOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        return Err("usage: report LOG [--trace OUT] [--svg OUT] [--moves FORMAT]".into());
    };
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let keep_moves = opt("--svg").is_some() || opt("--moves").is_some();
    let started = Instant::now();
    let reader = LogReader::new(BufReader::with_capacity(1 << 16, File::open(path)?));
    let options = AnalyzerOptions {
        keep_moves,
        ..AnalyzerOptions::default()
    };
    let analysis = analyze(reader, options)?;
    let took = started.elapsed().as_secs_f64();
    print!("{analysis}");
    eprintln!(
        "analysed {} lines in {took:.3}s: {:.0} lines/s",
        analysis.input.lines,
        analysis.input.lines as f64 / took
    );
    if let Some(out) = opt("--trace") {
        let started = Instant::now();
        let reader = LogReader::new(BufReader::with_capacity(1 << 16, File::open(path)?));
        let (summary, stats) = write_trace(
            reader,
            BufWriter::new(File::create(&out)?),
            TraceOptions::default(),
        )?;
        let took = started.elapsed().as_secs_f64();
        eprintln!(
            "trace: {stats:?} in {took:.3}s: {:.0} lines/s",
            summary.lines as f64 / took
        );
    }
    if let Some(out) = opt("--svg") {
        write_rebalance_svg_file(&analysis.moves, &SvgOptions::default(), out)?;
    }
    if let Some(format) = opt("--moves") {
        let format: MovesFormat = format.parse()?;
        write_moves(&analysis.moves, format, std::io::stdout().lock())?.flush()?;
    }
    Ok(())
}
