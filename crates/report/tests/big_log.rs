//! A generated log of many lines is analysed in one streaming pass with the right
//! counts.
//!
//! The line count is `REPORT_BIG_LINES` (default 200,000, which keeps a debug run
//! short). To measure a million lines in release:
//! `REPORT_BIG_LINES=1000000 cargo test --release -p master-events-report --test big_log -- --nocapture`

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::time::Instant;

use master_events_report::{
    analyze, write_trace, AnalyzerOptions, LogReader, MoveKind, RebalanceReport, TraceOptions,
};

/// Moves per rebalance: vbuckets 0..512 of two buckets.
const MOVES: u32 = 1024;
/// Moves in flight at once.
const CONCURRENT: u32 = 16;
/// Lines per move: start, backfill start/end, seqno wait start/end, takeover
/// start/end, index wait start/end, done.
const LINES_PER_MOVE: u64 = 10;
/// Lines per rebalance: start, moves, end, a heartbeat and a bad line.
const LINES_PER_REBALANCE: u64 = 2 + MOVES as u64 * LINES_PER_MOVE + 2;
/// Moves left in flight by the last, unfinished rebalance.
const TAIL_IN_FLIGHT: u32 = 5;

struct Expected {
    lines: u64,
    finished_rebalances: u64,
    active_per_rebalance: u64,
}

fn host(i: u32) -> String {
    format!("10.0.0.{}:8091", i % 4 + 1)
}

fn is_active(i: u32) -> bool {
    i % 3 == 0
}

/// Writes a log of exactly `target` lines (at least one rebalance's worth).
fn generate(out: &mut impl Write, target: u64) -> io::Result<Expected> {
    let mut ts: u64 = 1_700_000_000_000_000;
    let mut lines = 0u64;
    let mut tick = |lines: &mut u64| {
        ts += 1000;
        *lines += 1;
        format!("{}.{:06}", ts / 1_000_000, ts % 1_000_000)
    };
    let tail = 1 + TAIL_IN_FLIGHT as u64;
    let rebalances = target.saturating_sub(tail) / LINES_PER_REBALANCE;
    let rebalance_start = |out: &mut dyn Write, t: &str, r: u64| {
        writeln!(
            out,
            r#"{{"type":"rebalanceStart","ts":{t},"pid":"<0.{r}.0>","keepNodes":["10.0.0.1:8091","10.0.0.2:8091","10.0.0.3:8091","10.0.0.4:8091"],"ejectNodes":[],"failedNodes":[],"deltaNodes":[]}}"#
        )
    };
    let move_start = |out: &mut dyn Write, t: &str, i: u32| {
        let (bucket, vb) = (i % 2, i / 2);
        let (a, b, c) = (host(i), host(i + 1), host(i + 2));
        let after = if is_active(i) { [&c, &b] } else { [&a, &c] };
        writeln!(
            out,
            r#"{{"vbucket":{vb},"type":"vbucketMoveStart","ts":{t},"pid":"<0.{i}.1>","node":"ns_{}@10.0.0.{}","bucket":"b{bucket}","chainBefore":["{a}","{b}"],"chainAfter":["{}","{}"]}}"#,
            i % 4,
            i % 4 + 1,
            after[0],
            after[1]
        )
    };
    for r in 0..rebalances {
        let t = tick(&mut lines);
        rebalance_start(out, &t, r)?;
        for batch in (0..MOVES).step_by(CONCURRENT as usize) {
            let ids = batch..batch + CONCURRENT;
            for i in ids.clone() {
                let t = tick(&mut lines);
                move_start(out, &t, i)?;
            }
            for ty in [
                "backfillPhaseStarted",
                "backfillPhaseEnded",
                "seqnoWaitingStarted",
                "seqnoWaitingEnded",
                "takeoverStarted",
                "takeoverEnded",
                "waitIndexUpdatedStarted",
                "waitIndexUpdatedEnded",
                "vbucketMoveDone",
            ] {
                for i in ids.clone() {
                    let t = tick(&mut lines);
                    let (bucket, vb) = (i % 2, i / 2);
                    let extra = match ty {
                        "seqnoWaitingStarted" | "seqnoWaitingEnded" => {
                            format!(r#","seqno":{i},"node":"{}""#, host(i + 1))
                        }
                        "takeoverStarted" | "takeoverEnded" => {
                            format!(r#","oldMaster":"{}","node":"{}""#, host(i), host(i + 2))
                        }
                        "waitIndexUpdatedStarted" | "waitIndexUpdatedEnded" => {
                            format!(r#","node":"{}""#, host(i + 2))
                        }
                        _ => String::new(),
                    };
                    writeln!(
                        out,
                        r#"{{"vbucket":{vb},"type":"{ty}","ts":{t},"bucket":"b{bucket}"{extra}}}"#
                    )?;
                }
            }
        }
        let t = tick(&mut lines);
        writeln!(
            out,
            r#"{{"type":"rebalanceEnd","ts":{t},"pid":"<0.{r}.0>","reason":"normal"}}"#
        )?;
        let t = tick(&mut lines);
        writeln!(out, r#"{{"type":"heartbeat","seq":1,"ts":{t}}}"#)?;
        lines += 1;
        writeln!(out, "not an event")?;
    }
    // The last rebalance stops mid-move.
    let t = tick(&mut lines);
    rebalance_start(out, &t, rebalances)?;
    for i in 0..TAIL_IN_FLIGHT {
        let t = tick(&mut lines);
        move_start(out, &t, i)?;
    }
    while lines < target {
        let t = tick(&mut lines);
        writeln!(
            out,
            r#"{{"vbucket":1,"type":"vbucketStateChange","ts":{t},"state":"replica","host":"10.0.0.1:8091","bucket":"b0"}}"#
        )?;
    }
    out.flush()?;
    Ok(Expected {
        lines,
        finished_rebalances: rebalances,
        active_per_rebalance: (0..MOVES).filter(|i| is_active(*i)).count() as u64,
    })
}

fn big_lines() -> u64 {
    std::env::var("REPORT_BIG_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
        .max(LINES_PER_REBALANCE + 10)
}

#[test]
fn a_generated_log_is_analysed_in_one_streaming_pass_with_the_right_counts() {
    let target = big_lines();
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let expected = {
        let mut w = BufWriter::with_capacity(1 << 16, file.as_file());
        generate(&mut w, target).expect("generates")
    };
    assert_eq!(expected.lines, target);
    let size = file.as_file().metadata().expect("size").len();

    let started = Instant::now();
    let mut last_progress = 0u64;
    let mut widest_step = 0u64;
    let reader = LogReader::new(BufReader::with_capacity(
        1 << 16,
        File::open(file.path()).expect("open"),
    ))
    .with_progress(|n| {
        widest_step = widest_step.max(n - last_progress);
        last_progress = n;
    });
    let analysis = analyze(reader, AnalyzerOptions::default()).expect("reads");
    let took = started.elapsed().as_secs_f64();
    println!(
        "analysed {} lines ({size} bytes) in {took:.3} s: {:.0} lines/s",
        analysis.input.lines,
        analysis.input.lines as f64 / took
    );

    assert_eq!(analysis.input.lines, target);
    assert_eq!(analysis.input.bad_lines, expected.finished_rebalances);
    assert_eq!(analysis.input.control_frames, expected.finished_rebalances);
    assert_eq!(last_progress, size);
    // Called once per PROGRESS_EVERY_BYTES, give or take a line.
    assert!(
        widest_step < master_events_report::PROGRESS_EVERY_BYTES + 1024,
        "{widest_step}"
    );

    let reports = &analysis.rebalances;
    assert_eq!(reports.len() as u64, expected.finished_rebalances + 1);
    for r in &reports[..reports.len() - 1] {
        assert_eq!(r.outcome, "normal");
        let moves: u64 = r.buckets.iter().map(|b| b.moves).sum();
        let done: u64 = r.buckets.iter().map(|b| b.done).sum();
        let active: u64 = r.buckets.iter().map(|b| b.active_moves).sum();
        assert_eq!((moves, done), (MOVES as u64, MOVES as u64));
        assert_eq!(active, expected.active_per_rebalance);
        assert_eq!(
            r.buckets.iter().map(|b| b.takeover.count).sum::<u64>(),
            MOVES as u64
        );
        assert_eq!(r.slowest_moves.len(), 10);
    }
    let last = &reports[reports.len() - 1];
    assert_eq!(last.outcome, RebalanceReport::UNFINISHED);
    assert_eq!(analysis.inflight.len(), TAIL_IN_FLIGHT as usize);
    assert_eq!(
        analysis.moves.len(),
        TAIL_IN_FLIGHT as usize,
        "rows not kept: only in flight"
    );
    assert!(analysis.moves.iter().any(|m| m.kind == MoveKind::Active));
    assert!(analysis.anomalies.is_empty(), "{:?}", analysis.anomalies);
}

#[test]
fn a_generated_log_streams_into_a_trace_with_every_move_a_span() {
    // A smaller log: the trace writes about one event per line.
    let target = (big_lines() / 4).max(LINES_PER_REBALANCE + 10);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let expected = {
        let mut w = BufWriter::with_capacity(1 << 16, file.as_file());
        generate(&mut w, target).expect("generates")
    };
    let started = Instant::now();
    let reader = LogReader::new(BufReader::with_capacity(
        1 << 16,
        File::open(file.path()).expect("open"),
    ));
    let (summary, stats) =
        write_trace(reader, io::sink(), TraceOptions::default()).expect("writes");
    println!(
        "traced {} lines in {:.3} s ({stats:?})",
        summary.lines,
        started.elapsed().as_secs_f64()
    );
    let moves = expected.finished_rebalances * MOVES as u64;
    // Per move: the move, backfill, seqno wait, takeover and index wait; per
    // rebalance: the rebalance.
    assert_eq!(stats.spans, moves * 5 + expected.finished_rebalances);
    assert_eq!(stats.unfinished, 1 + TAIL_IN_FLIGHT as u64);
    assert_eq!(stats.unmatched_ends, 0);
}
