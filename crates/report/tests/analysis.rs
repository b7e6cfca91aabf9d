//! The analyzer against hand-written logs with known answers
//! (`tests/data/report/README.md` lists them).

mod common;

use std::time::Duration;

use common::{at, reader, secs};
use master_events_events::Record;
use master_events_report::{
    analyze, write_moves, Analysis, Analyzer, AnalyzerOptions, BadLineReason, MoveKind, MoveStatus,
    MovesFormat, MovesWriter, RebalanceReport, CSV_HEADER,
};

fn keep_moves() -> AnalyzerOptions {
    AnalyzerOptions {
        slowest: 3,
        keep_moves: true,
    }
}

fn analysis_of(name: &str) -> Analysis {
    analyze(reader(name), keep_moves()).expect("the log reads")
}

fn bucket<'a>(r: &'a RebalanceReport, name: &str) -> &'a master_events_report::BucketReport {
    r.buckets
        .iter()
        .find(|b| b.bucket == name)
        .unwrap_or_else(|| panic!("no bucket {name} in {r:?}"))
}

#[test]
fn a_rebalance_of_four_vbuckets_has_exact_durations_counts_and_percentiles() {
    let a = analysis_of("rebalance_normal.log");
    assert_eq!(a.rebalances.len(), 1);
    let r = &a.rebalances[0];
    assert_eq!(r.pid, "<0.900.0>");
    assert_eq!(r.start, at(0.0));
    assert_eq!(r.end, Some(at(10.0)));
    assert_eq!(r.duration, secs(10.0));
    assert_eq!(r.outcome, "normal");
    assert_eq!(r.keep_nodes.len(), 3);
    assert!(r.eject_nodes.is_empty() && r.failed_nodes.is_empty() && r.delta_nodes.is_empty());

    let d = bucket(r, "default");
    assert_eq!((d.moves, d.done, d.in_flight, d.aborted), (4, 4, 0, 0));
    assert_eq!(d.move_duration.count, 4);
    assert_eq!(d.move_duration.p50, secs(2.0));
    assert_eq!(d.move_duration.p90, secs(6.0));
    assert_eq!(d.move_duration.max, secs(6.0));
    assert_eq!(d.move_duration.total, secs(13.0));
    assert_eq!(d.backfill.count, 4);
    assert_eq!(
        (d.backfill.p50, d.backfill.p90, d.backfill.max),
        (secs(1.0), secs(4.0), secs(4.0))
    );
    assert_eq!(d.takeover.count, 2);
    assert_eq!(
        (d.takeover.p50, d.takeover.p90, d.takeover.max),
        (secs(0.25), secs(0.5), secs(0.5))
    );
}

#[test]
fn seqno_and_index_waits_are_summed_per_bucket() {
    let a = analysis_of("rebalance_normal.log");
    let d = bucket(&a.rebalances[0], "default");
    assert_eq!(d.seqno_wait, secs(1.25));
    assert_eq!(d.index_wait, secs(0.3));
    let t = bucket(&a.rebalances[0], "travel");
    assert_eq!(
        (t.seqno_wait, t.index_wait),
        (Duration::ZERO, Duration::ZERO)
    );
}

#[test]
fn active_and_replica_moves_are_told_apart_by_the_first_chain_entry() {
    let a = analysis_of("rebalance_normal.log");
    let d = bucket(&a.rebalances[0], "default");
    assert_eq!((d.active_moves, d.replica_moves), (2, 2));
    let kinds: Vec<(u16, MoveKind)> = a
        .moves
        .iter()
        .filter(|m| m.bucket == "default")
        .map(|m| (m.vbucket, m.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (0, MoveKind::Active),
            (1, MoveKind::Replica),
            (2, MoveKind::Active),
            (3, MoveKind::Replica)
        ]
    );
}

#[test]
fn the_same_vbucket_moving_in_two_buckets_at_once_is_two_moves() {
    let a = analysis_of("rebalance_normal.log");
    let t = bucket(&a.rebalances[0], "travel");
    assert_eq!((t.moves, t.done, t.replica_moves), (1, 1, 1));
    assert_eq!(t.move_duration.max, secs(0.5));
    let d = bucket(&a.rebalances[0], "default");
    assert_eq!(
        d.move_duration.count, 4,
        "travel's vb 0 did not end default's vb 0"
    );
    assert!(a.anomalies.is_empty(), "{:?}", a.anomalies);
}

#[test]
fn slowest_moves_are_listed_slowest_first_and_capped() {
    let a = analysis_of("rebalance_normal.log");
    let slowest: Vec<(String, u16, Duration)> = a.rebalances[0]
        .slowest_moves
        .iter()
        .map(|m| (m.bucket.to_string(), m.vbucket, m.duration))
        .collect();
    assert_eq!(
        slowest,
        vec![
            ("default".to_owned(), 2, secs(6.0)),
            ("default".to_owned(), 0, secs(4.0)),
            ("default".to_owned(), 1, secs(2.0)),
        ]
    );
    assert_eq!(a.rebalances[0].slowest_moves[0].node, "ns_2@10.0.0.2");
}

#[test]
fn move_rows_have_one_row_per_move_with_their_phases_in_start_order() {
    let a = analysis_of("rebalance_normal.log");
    let rows: Vec<(&str, u16)> = a
        .moves
        .iter()
        .map(|m| (m.bucket.as_str(), m.vbucket))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("default", 0),
            ("travel", 0),
            ("default", 1),
            ("default", 2),
            ("default", 3)
        ]
    );
    let vb0 = &a.moves[0];
    assert_eq!(vb0.start, at(1.0));
    assert_eq!(vb0.end, Some(at(5.0)));
    assert_eq!(vb0.duration, secs(4.0));
    assert_eq!(vb0.node, "ns_1@10.0.0.1");
    assert_eq!(vb0.chain_before, ["10.0.0.1:8091", "10.0.0.2:8091"]);
    assert_eq!(vb0.chain_after, ["10.0.0.3:8091", "10.0.0.2:8091"]);
    assert_eq!(vb0.status, MoveStatus::Done);
    assert_eq!(vb0.backfill, Some(secs(2.0)));
    assert_eq!(vb0.takeover, Some(secs(0.5)));
    assert_eq!(
        (vb0.takeover_start, vb0.takeover_end),
        (Some(at(4.0)), Some(at(4.5)))
    );
    let vb1 = &a.moves[2];
    assert_eq!((vb1.backfill, vb1.takeover), (Some(secs(1.0)), None));
    assert!(a.inflight.is_empty());
}

#[test]
fn a_stopped_rebalance_reports_its_reason_and_its_aborted_move() {
    let a = analysis_of("rebalance_stopped.log");
    assert_eq!(a.rebalances.len(), 2);
    let stopped = &a.rebalances[0];
    assert_eq!(stopped.outcome, "stopped");
    assert_eq!(stopped.duration, secs(3.0));
    assert_eq!(stopped.eject_nodes, ["10.0.0.3:8091"]);
    let d = bucket(stopped, "default");
    assert_eq!((d.moves, d.done, d.aborted, d.in_flight), (2, 1, 1, 0));
    assert_eq!(d.active_moves, 2);
    assert_eq!(d.move_duration.max, secs(1.0));

    let retry = &a.rebalances[1];
    assert_eq!(
        (retry.outcome.as_str(), retry.duration),
        ("normal", secs(4.0))
    );
    assert_eq!(bucket(retry, "default").move_duration.p50, secs(2.0));

    let per_rebalance: Vec<Option<usize>> = a.moves.iter().map(|m| m.rebalance).collect();
    assert_eq!(per_rebalance, vec![Some(0), Some(0), Some(1)]);
    let aborted: Vec<_> = a
        .moves
        .iter()
        .filter(|m| m.status == MoveStatus::Aborted)
        .collect();
    assert_eq!(aborted.len(), 1);
    assert_eq!(
        (aborted[0].vbucket, aborted[0].reason.as_deref()),
        (11, Some("shutdown"))
    );
    assert_eq!(aborted[0].end, Some(at(103.0)));
    assert!(a.inflight.is_empty());
}

#[test]
fn a_log_that_stops_mid_move_leaves_those_moves_in_flight_with_their_ages() {
    let a = analysis_of("rebalance_midmove.log");
    assert_eq!(a.inflight.now, Some(at(304.0)));
    assert_eq!(a.inflight.len(), 2);
    assert_eq!(a.inflight.buckets.len(), 1);
    let moves = &a.inflight.buckets[0].moves;
    let seen: Vec<(u16, Duration, &str)> = moves
        .iter()
        .map(|m| (m.vbucket, m.age, m.last_event))
        .collect();
    assert_eq!(
        seen,
        vec![
            (21, secs(2.5), "seqnoWaitingStarted"),
            (22, secs(1.0), "vbucketMoveStart")
        ]
    );
    assert_eq!(moves[0].kind, MoveKind::Replica);
    assert_eq!(moves[1].kind, MoveKind::Active);
    let in_flight_rows: Vec<u16> = a
        .moves
        .iter()
        .filter(|m| m.status == MoveStatus::InFlight && m.end.is_none())
        .map(|m| m.vbucket)
        .collect();
    assert_eq!(in_flight_rows, vec![21, 22]);
}

#[test]
fn inflight_ages_are_measured_against_a_given_now() {
    let mut analyzer = Analyzer::new(AnalyzerOptions::default());
    for rec in reader("rebalance_midmove.log") {
        analyzer.observe(&rec.expect("reads"));
    }
    let later = analyzer.inflight(Some(at(310.0)));
    let ages: Vec<Duration> = later.buckets[0].moves.iter().map(|m| m.age).collect();
    assert_eq!(ages, vec![secs(8.5), secs(7.0)]);
    assert_eq!(later.now, Some(at(310.0)));
}

#[test]
fn an_unfinished_rebalance_runs_to_the_last_timestamp() {
    let a = analysis_of("rebalance_midmove.log");
    let r = &a.rebalances[0];
    assert_eq!(r.outcome, RebalanceReport::UNFINISHED);
    assert_eq!(r.end, None);
    assert_eq!(r.duration, secs(4.0));
    let d = bucket(r, "default");
    assert_eq!((d.moves, d.done, d.in_flight), (3, 1, 2));
}

#[test]
fn bad_lines_are_counted_and_the_first_kept_without_aborting_the_report() {
    let a = analyze(
        reader("stream_with_bad_lines.ndjson").keep_bad_lines(3),
        keep_moves(),
    )
    .expect("bad lines are not errors");
    let input = &a.input;
    assert_eq!(input.lines, 14);
    assert_eq!(input.events, 4);
    assert_eq!(input.bad_lines, 6);
    assert_eq!(input.blank_lines, 1);
    let kept: Vec<u64> = input.first_bad_lines.iter().map(|b| b.line).collect();
    assert_eq!(kept, vec![3, 5, 6]);
    assert!(input
        .first_bad_lines
        .iter()
        .all(|b| matches!(b.reason, BadLineReason::Parse(_))));
    assert!(input.first_bad_lines[1]
        .reason
        .to_string()
        .contains("bogusEvent"));
    assert!(input.first_bad_lines[2]
        .reason
        .to_string()
        .contains("bucket"));
    // The events around the bad lines still make a whole rebalance.
    let r = &a.rebalances[0];
    assert_eq!(r.outcome, "normal");
    assert_eq!(bucket(r, "default").move_duration.max, secs(1.0));
    let text = a.to_string();
    assert!(text.contains("6 bad"), "{text}");
    assert!(text.contains("line 3: "), "{text}");
    assert!(text.contains("and 3 more bad lines"), "{text}");
}

#[test]
fn heartbeats_and_gaps_of_the_projects_stream_are_skipped_and_counted() {
    let a = analysis_of("stream_with_bad_lines.ndjson");
    assert_eq!(a.input.control_frames, 3);
    assert_eq!(a.input.gaps, 1);
    assert_eq!(a.input.first_bad_lines.len(), 6);
    assert!(a.to_string().contains("reported 1 gap"));
}

#[test]
fn an_event_without_ts_takes_the_last_timestamp_seen() {
    let lines = [
        r#"{"type":"deleteBucket","bucket":"x"}"#,
        r#"{"type":"rebalanceStart","ts":10.0,"pid":"<0.1.0>","keepNodes":[],"ejectNodes":[],"failedNodes":[],"deltaNodes":[]}"#,
        r#"{"type":"vbucketMoveStart","ts":11.0,"pid":"p","node":"n","bucket":"b","vbucket":1,"chainBefore":["a"],"chainAfter":["a"]}"#,
        r#"{"type":"vbucketMoveDone","bucket":"b","vbucket":1}"#,
        r#"{"type":"rebalanceEnd","ts":12.0,"pid":"<0.1.0>","reason":"normal"}"#,
    ];
    let mut analyzer = Analyzer::new(AnalyzerOptions::default());
    for line in lines {
        analyzer.observe(&Record::parse(line.as_bytes()).expect("valid"));
    }
    assert_eq!(analyzer.anomalies().untimed_events, 1);
    let r = &analyzer.rebalances()[0];
    assert_eq!(r.buckets[0].done, 1);
    assert_eq!(r.buckets[0].move_duration.max, Duration::ZERO);
}

#[test]
fn unmatched_ends_are_counted_as_anomalies() {
    let lines = [
        r#"{"type":"vbucketMoveDone","ts":1.0,"bucket":"b","vbucket":1}"#,
        r#"{"type":"rebalanceEnd","ts":2.0,"pid":"<0.1.0>","reason":"normal"}"#,
        r#"{"type":"vbucketMoveStart","ts":3.0,"pid":"p","node":"n","bucket":"b","vbucket":1,"chainBefore":["a"],"chainAfter":["a"]}"#,
        r#"{"type":"deleteBucket","ts":2.5,"bucket":"x"}"#,
    ];
    let mut analyzer = Analyzer::new(AnalyzerOptions::default());
    for line in lines {
        analyzer.observe(&Record::parse(line.as_bytes()).expect("valid"));
    }
    let a = analyzer.anomalies();
    assert_eq!(a.unmatched_move_dones, 1);
    assert_eq!(a.unmatched_rebalance_ends, 1);
    assert_eq!(a.moves_outside_rebalance, 1);
    assert_eq!(a.out_of_order_ts, 1);
    assert!(analyzer.rebalances().is_empty());
    assert_eq!(analyzer.inflight(None).len(), 1);
}

#[test]
fn drained_moves_are_handed_over_once_and_no_longer_kept() {
    let mut analyzer = Analyzer::new(keep_moves());
    let mut drained = Vec::new();
    for rec in reader("rebalance_normal.log") {
        analyzer.observe(&rec.expect("reads"));
        drained.extend(analyzer.drain_finished_moves());
    }
    assert_eq!(drained.len(), 5);
    assert!(analyzer.moves().is_empty());
    let order: Vec<(&str, u16)> = drained
        .iter()
        .map(|m| (m.bucket.as_str(), m.vbucket))
        .collect();
    assert_eq!(
        order,
        vec![
            ("travel", 0),
            ("default", 1),
            ("default", 0),
            ("default", 3),
            ("default", 2)
        ],
        "in the order they finished"
    );
}

#[test]
fn without_keep_moves_only_moves_in_flight_are_rows() {
    let a = analyze(reader("rebalance_midmove.log"), AnalyzerOptions::default()).expect("reads");
    let vbs: Vec<u16> = a.moves.iter().map(|m| m.vbucket).collect();
    assert_eq!(vbs, vec![21, 22]);
}

#[test]
fn moves_csv_has_a_header_and_one_record_per_move() {
    let a = analysis_of("rebalance_normal.log");
    let out = write_moves(&a.moves, MovesFormat::Csv, Vec::new()).expect("writes");
    let mut csv = csv::Reader::from_reader(&out[..]);
    let header: Vec<String> = csv
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, CSV_HEADER);
    let records: Vec<csv::StringRecord> = csv.records().collect::<Result<_, _>>().expect("records");
    assert_eq!(records.len(), 5);
    let first = &records[0];
    assert_eq!(&first[0], "default");
    assert_eq!(&first[1], "0");
    assert_eq!(&first[3], "1700000001.000000");
    assert_eq!(&first[4], "1700000005.000000");
    assert_eq!(&first[5], "4.000000");
    assert_eq!(&first[6], "active");
    assert_eq!(&first[7], "done");
    assert_eq!(&first[9], "2.000000");
    assert_eq!(&first[10], "0.500000");
    assert_eq!(&first[13], "10.0.0.1:8091 10.0.0.2:8091");
    assert_eq!(&records[2][10], "", "no takeover: empty cell");
}

#[test]
fn moves_json_lines_parse_back_with_seconds() {
    let a = analysis_of("rebalance_midmove.log");
    let out = write_moves(&a.moves, MovesFormat::JsonLines, Vec::new()).expect("writes");
    let text = String::from_utf8(out).expect("utf-8");
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["vbucket"], 20);
    assert_eq!(rows[0]["duration"], 1.0);
    assert_eq!(rows[0]["status"], "done");
    assert_eq!(rows[0]["chainBefore"][0], "10.0.0.1:8091");
    assert_eq!(rows[1]["status"], "inFlight");
    assert_eq!(rows[1]["end"], serde_json::Value::Null);
    assert_eq!(rows[1]["backfill"], 1.0);
    assert_eq!(rows[1]["kind"], "replica");
}

#[test]
fn moves_table_is_aligned_with_one_line_per_move() {
    let a = analysis_of("rebalance_normal.log");
    let mut w = MovesWriter::new(Vec::new(), MovesFormat::Table).expect("writer");
    for m in &a.moves {
        w.write(m).expect("row");
    }
    let text = String::from_utf8(w.finish().expect("finish")).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].starts_with("BUCKET"));
    let col = lines[0].find("NODE").expect("NODE column");
    for l in &lines[1..] {
        assert!(l[col..].starts_with("ns_"), "aligned: {l}");
    }
    assert!(lines[1].contains("2023-11-14T22:13:21.000Z"));
    assert!(lines[1].contains("10.0.0.1:8091 10.0.0.2:8091 -> 10.0.0.3:8091 10.0.0.2:8091"));
}

#[test]
fn moves_format_names_parse() {
    assert_eq!("csv".parse::<MovesFormat>().ok(), Some(MovesFormat::Csv));
    assert_eq!(
        "jsonl".parse::<MovesFormat>().ok(),
        Some(MovesFormat::JsonLines)
    );
    assert_eq!(
        "table".parse::<MovesFormat>().ok(),
        Some(MovesFormat::Table)
    );
    assert!("xml".parse::<MovesFormat>().is_err());
}

#[test]
fn text_report_names_outcome_buckets_percentiles_and_slowest_moves() {
    let a = analysis_of("rebalance_normal.log");
    let text = a.rebalances[0].to_string();
    assert!(text.starts_with("Rebalance <0.900.0>: normal\n"), "{text}");
    assert!(text.contains("duration      10.000s"), "{text}");
    assert!(text.contains("2.000/6.000/6.000"), "{text}");
    assert!(text.contains("1.000/4.000/4.000"), "{text}");
    assert!(text.contains("0.250/0.500/0.500"), "{text}");
    assert!(text.contains("Slowest moves:"), "{text}");
    assert!(
        text.lines().all(|l| !l.ends_with(' ')),
        "no trailing spaces:\n{text}"
    );
    let header = text
        .lines()
        .find(|l| l.contains("BUCKET"))
        .expect("bucket table");
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("default"))
        .expect("row");
    assert_eq!(
        header.find("MOVES").map(|i| i + 5),
        row.find(" 4 ").map(|i| i + 2)
    );

    let whole = a.to_string();
    assert!(whole.contains("No moves in flight."), "{whole}");
    let mid = analysis_of("rebalance_midmove.log").to_string();
    assert!(mid.contains("Rebalance <0.970.0>: unfinished"), "{mid}");
    assert!(mid.contains("2 move(s) in flight"), "{mid}");
    assert!(mid.contains("seqnoWaitingStarted"), "{mid}");
}

#[test]
fn the_analysis_serializes_as_json_for_other_tools() {
    let a = analysis_of("rebalance_normal.log");
    let v = serde_json::to_value(&a).expect("serializes");
    assert_eq!(v["rebalances"][0]["outcome"], "normal");
    assert_eq!(v["rebalances"][0]["duration"], 10.0);
    assert_eq!(v["rebalances"][0]["buckets"][0]["moveDuration"]["p90"], 6.0);
    assert_eq!(v["input"]["events"], 38);
}

#[test]
fn progress_reports_every_byte_of_the_file() {
    let size = std::fs::metadata(common::data("rebalance_normal.log"))
        .expect("exists")
        .len();
    let mut last = 0;
    let reader = reader("rebalance_normal.log").with_progress(|n| last = n);
    let a = analyze(reader, AnalyzerOptions::default()).expect("reads");
    assert_eq!(last, size);
    assert_eq!(a.input.bytes, size);
}

#[test]
fn durations_use_the_time_an_event_was_noted_at_its_origin_when_the_line_has_it() {
    // The same rebalance, as if every event had waited 100 s in a node's queue before
    // the master stamped its `ts`: `originTs` keeps when it happened.
    let text = std::fs::read_to_string(common::data("rebalance_normal.log")).expect("reads");
    let mut shifted = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut v: serde_json::Value = serde_json::from_str(line).expect("json");
        let ts = v["ts"].as_f64().expect("ts");
        v["originTs"] = serde_json::json!(ts);
        v["ts"] = serde_json::json!(ts + 100.0);
        shifted.push_str(&v.to_string());
        shifted.push('\n');
    }
    let a = analyze(
        master_events_report::LogReader::new(std::io::Cursor::new(shifted.into_bytes())),
        keep_moves(),
    )
    .expect("the log reads");
    let r = &a.rebalances[0];
    assert_eq!(r.start, at(0.0));
    assert_eq!(r.duration, secs(10.0));
    let d = bucket(r, "default");
    assert_eq!(d.move_duration.total, secs(13.0));
    assert_eq!(d.takeover.max, secs(0.5));
}
