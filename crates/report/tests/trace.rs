//! The Chrome trace writer against the hand-written logs.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::rc::Rc;

use common::{reader, T0};
use master_events_events::Record;
use master_events_report::{write_trace, TraceOptions, TraceStats, TraceWriter};
use serde_json::Value;

fn trace_of(name: &str) -> (Value, TraceStats) {
    let (_, out, stats) = trace_with(name, TraceOptions::default());
    (out, stats)
}

fn trace_with(
    name: &str,
    options: TraceOptions,
) -> (master_events_report::ReadSummary, Value, TraceStats) {
    let mut out = Vec::new();
    let (summary, stats) = write_trace(reader(name), &mut out, options).expect("writes");
    let doc: Value = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out)));
    (summary, doc, stats)
}

fn events(doc: &Value) -> &Vec<Value> {
    doc["traceEvents"]
        .as_array()
        .expect("traceEvents is an array")
}

fn spans<'a>(doc: &'a Value, cat: &str) -> Vec<&'a Value> {
    events(doc)
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == cat)
        .collect()
}

fn us(offset: f64) -> i64 {
    T0 * 1_000_000 + (offset * 1e6).round() as i64
}

/// pid → process name, from the metadata events.
fn process_names(doc: &Value) -> BTreeMap<i64, String> {
    events(doc)
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_i64().expect("pid"),
                e["args"]["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_trace_is_one_json_document_with_ms_display_unit() {
    let (doc, stats) = trace_of("rebalance_normal.log");
    assert_eq!(doc["displayTimeUnit"], "ms");
    assert!(!events(&doc).is_empty());
    assert_eq!(stats.unfinished, 0);
    assert_eq!(stats.unmatched_ends, 0, "{stats:?}");
}

#[test]
fn every_complete_event_has_name_cat_ts_dur_pid_tid_and_args() {
    for log in [
        "rebalance_normal.log",
        "rebalance_stopped.log",
        "rebalance_midmove.log",
    ] {
        let (doc, stats) = trace_of(log);
        let complete: Vec<&Value> = events(&doc).iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(complete.len() as u64, stats.spans + stats.unfinished);
        for e in complete {
            assert!(e["name"].is_string(), "{e}");
            assert!(e["cat"].is_string(), "{e}");
            assert!(e["ts"].is_i64(), "{e}");
            assert!(e["dur"].as_i64().is_some_and(|d| d >= 0), "{e}");
            assert!(e["pid"].is_i64() && e["tid"].is_i64(), "{e}");
            assert!(e["args"].is_object(), "{e}");
        }
    }
}

#[test]
fn moves_are_spans_with_exact_times_kind_and_end() {
    let (doc, _) = trace_of("rebalance_normal.log");
    let moves = spans(&doc, "vbucketMove");
    assert_eq!(moves.len(), 5);
    let vb2 = moves
        .iter()
        .find(|e| e["name"] == "default/2")
        .expect("default/2");
    assert_eq!(vb2["ts"], us(2.0));
    assert_eq!(vb2["dur"], 6_000_000);
    assert_eq!(vb2["args"]["kind"], "active");
    assert_eq!(vb2["args"]["chainAfter"][0], "10.0.0.3:8091");
    assert_eq!(vb2["args"]["end"]["type"], "vbucketMoveDone");
    let names = process_names(&doc);
    assert_eq!(names[&vb2["pid"].as_i64().expect("pid")], "ns_2@10.0.0.2");
}

#[test]
fn overlapping_moves_on_one_node_take_different_lanes_that_never_overlap() {
    for log in [
        "rebalance_normal.log",
        "rebalance_stopped.log",
        "rebalance_midmove.log",
    ] {
        let (doc, _) = trace_of(log);
        let mut lanes: BTreeMap<(i64, i64), Vec<(i64, i64)>> = BTreeMap::new();
        for e in spans(&doc, "vbucketMove") {
            let (ts, dur) = (
                e["ts"].as_i64().expect("ts"),
                e["dur"].as_i64().expect("dur"),
            );
            let lane = (
                e["pid"].as_i64().expect("pid"),
                e["tid"].as_i64().expect("tid"),
            );
            lanes.entry(lane).or_default().push((ts, ts + dur));
        }
        for (lane, mut spans) in lanes {
            spans.sort();
            for w in spans.windows(2) {
                assert!(w[0].1 <= w[1].0, "{log}: lane {lane:?} overlaps: {w:?}");
            }
        }
    }
    let (doc, _) = trace_of("rebalance_normal.log");
    let lane_of = |name: &str| {
        let e = spans(&doc, "vbucketMove")
            .into_iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name}"));
        (e["pid"].as_i64(), e["tid"].as_i64())
    };
    // On ns_1: vb 0 and vb 1 overlap; vb 3 starts as vb 0 ends and takes its lane back.
    assert_eq!(lane_of("default/0").0, lane_of("default/1").0);
    assert_ne!(lane_of("default/0").1, lane_of("default/1").1);
    assert_eq!(lane_of("default/0"), lane_of("default/3"));
}

#[test]
fn metadata_names_every_process_and_lane_used() {
    let (doc, _) = trace_of("rebalance_normal.log");
    let names = process_names(&doc);
    let expected: BTreeSet<&str> = ["cluster", "ns_1@10.0.0.1", "ns_2@10.0.0.2", "ns_3@10.0.0.3"]
        .into_iter()
        .collect();
    let got: BTreeSet<&str> = names.values().map(String::as_str).collect();
    assert!(expected.is_subset(&got), "{got:?}");
    assert_eq!(names.get(&1).map(String::as_str), Some("cluster"));
    let threads: BTreeSet<(i64, i64)> = events(&doc)
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| {
            (
                e["pid"].as_i64().unwrap_or(-1),
                e["tid"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    for e in events(&doc).iter().filter(|e| e["ph"] != "M") {
        let pid = e["pid"].as_i64().expect("pid");
        assert!(names.contains_key(&pid), "unnamed process in {e}");
        if e["ph"] == "X" {
            let lane = (pid, e["tid"].as_i64().expect("tid"));
            assert!(threads.contains(&lane), "unnamed lane in {e}");
        }
    }
}

#[test]
fn rebalance_stages_and_bucket_rebalances_are_parent_spans_on_the_cluster_process() {
    let (doc, _) = trace_of("rebalance_normal.log");
    let rebalance = spans(&doc, "rebalance");
    assert_eq!(rebalance.len(), 1);
    assert_eq!(rebalance[0]["pid"], 1);
    assert_eq!(rebalance[0]["ts"], us(0.0));
    assert_eq!(rebalance[0]["dur"], 10_000_000);
    assert_eq!(rebalance[0]["args"]["end"]["reason"], "normal");
    let stages = spans(&doc, "rebalanceStage");
    let names: BTreeSet<&str> = stages.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        names,
        ["stage data", "stage data/default"].into_iter().collect()
    );
    assert!(stages.iter().all(|s| s["pid"] == 1));
    let bucket = spans(&doc, "bucketRebalance");
    assert_eq!(bucket.len(), 1);
    assert_eq!(bucket[0]["dur"], 8_300_000);
    // Parent spans that overlap sit on different lanes of the cluster process.
    let mut cluster_lanes: Vec<i64> = rebalance
        .iter()
        .chain(&stages)
        .chain(&bucket)
        .filter_map(|s| s["tid"].as_i64())
        .collect();
    cluster_lanes.sort_unstable();
    cluster_lanes.dedup();
    assert_eq!(cluster_lanes.len(), 4);
}

#[test]
fn phases_nest_inside_their_move_on_its_lane() {
    let (doc, _) = trace_of("rebalance_normal.log");
    let mv = spans(&doc, "vbucketMove")
        .into_iter()
        .find(|e| e["name"] == "default/0")
        .expect("move");
    let (m0, m1) = (
        mv["ts"].as_i64().expect("ts"),
        mv["ts"].as_i64().expect("ts") + mv["dur"].as_i64().expect("dur"),
    );
    for cat in [
        "backfillPhase",
        "takeover",
        "seqnoWaiting",
        "waitIndexUpdated",
    ] {
        let phase = spans(&doc, cat)
            .into_iter()
            .find(|e| e["args"]["end"]["vbucket"] == 0 && e["args"]["end"]["bucket"] == "default")
            .unwrap_or_else(|| panic!("no {cat} span for default/0"));
        assert_eq!(
            (phase["pid"].clone(), phase["tid"].clone()),
            (mv["pid"].clone(), mv["tid"].clone()),
            "{cat}"
        );
        let (p0, p1) = (
            phase["ts"].as_i64().expect("ts"),
            phase["ts"].as_i64().expect("ts") + phase["dur"].as_i64().expect("dur"),
        );
        assert!(
            m0 <= p0 && p1 <= m1,
            "{cat} [{p0}, {p1}] outside the move [{m0}, {m1}]"
        );
    }
    let takeover = spans(&doc, "takeover");
    assert_eq!(takeover.len(), 2);
    let backfills = spans(&doc, "backfillPhase");
    assert_eq!(backfills.len(), 4);
    // vb 2 has no backfillPhaseStarted: its backfill runs from the move's start.
    let vb2 = backfills
        .iter()
        .find(|e| e["args"]["end"]["vbucket"] == 2)
        .expect("vb 2 backfill");
    assert_eq!(
        (vb2["ts"].as_i64(), vb2["dur"].as_i64()),
        (Some(us(2.0)), Some(4_000_000))
    );
    assert_eq!(vb2["args"]["sinceMoveStart"], true);
}

#[test]
fn unfinished_starts_are_closed_at_the_last_timestamp_and_marked() {
    let (doc, stats) = trace_of("rebalance_midmove.log");
    let last = us(304.0);
    let unfinished: Vec<&Value> = events(&doc)
        .iter()
        .filter(|e| e["ph"] == "X" && e["args"]["unfinished"] == true)
        .collect();
    let mut names: Vec<&str> = unfinished
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        vec![
            "default/21",
            "default/22",
            "rebalance",
            "seqno wait 10.0.0.3:8091"
        ]
    );
    assert_eq!(stats.unfinished, 4);
    for e in unfinished {
        let end = e["ts"].as_i64().expect("ts") + e["dur"].as_i64().expect("dur");
        assert_eq!(end, last, "{e}");
    }
    let done = spans(&doc, "vbucketMove")
        .into_iter()
        .find(|e| e["name"] == "default/20")
        .expect("vb 20");
    assert!(done["args"].get("unfinished").is_none());
}

#[test]
fn point_events_are_instants_and_failover_is_global() {
    let (doc, _) = trace_of("rebalance_normal.log");
    let instants: Vec<&Value> = events(&doc).iter().filter(|e| e["ph"] == "i").collect();
    let failover = instants
        .iter()
        .find(|e| e["name"] == "failover")
        .expect("failover");
    assert_eq!(failover["s"], "g");
    assert_eq!(failover["ts"], us(20.0));
    assert_eq!(failover["args"]["hosts"][0], "10.0.0.3:8091");
    let master = instants
        .iter()
        .find(|e| e["name"] == "becameMaster")
        .expect("becameMaster");
    assert_eq!(master["s"], "g");
    // An event of a vbucket whose move is open sits on the move's lane.
    let state = instants
        .iter()
        .find(|e| e["name"] == "vbucketStateChange")
        .expect("vbucketStateChange");
    let vb2 = spans(&doc, "vbucketMove")
        .into_iter()
        .find(|e| e["name"] == "default/2")
        .expect("vb 2");
    assert_eq!(
        (state["pid"].clone(), state["tid"].clone()),
        (vb2["pid"].clone(), vb2["tid"].clone())
    );
    for e in &instants {
        assert!(
            e["ts"].is_i64() && e["pid"].is_i64() && e["tid"].is_i64(),
            "{e}"
        );
    }
}

#[test]
fn point_events_can_be_left_out() {
    let (_, doc, stats) = trace_with(
        "rebalance_normal.log",
        TraceOptions {
            point_events: false,
        },
    );
    assert_eq!(stats.instants, 0);
    assert!(events(&doc).iter().all(|e| e["ph"] != "i"));
    assert_eq!(spans(&doc, "vbucketMove").len(), 5);
}

#[test]
fn a_move_whose_mover_dies_ends_there_and_its_retry_is_a_new_span() {
    let (doc, _) = trace_of("rebalance_stopped.log");
    let vb11: Vec<&Value> = spans(&doc, "vbucketMove")
        .into_iter()
        .filter(|e| e["name"] == "default/11")
        .collect();
    assert_eq!(vb11.len(), 2);
    assert!(vb11[0]["args"].get("unfinished").is_none());
    assert_eq!(vb11[0]["args"]["end"]["type"], "vbucketMoverTerminate");
    assert_eq!(vb11[0]["args"]["end"]["reason"], "shutdown");
    assert_eq!(vb11[0]["ts"], us(101.5));
    assert_eq!(vb11[0]["dur"], 1_500_000);
    assert_eq!(vb11[1]["dur"], 2_000_000);
    let rebalances = spans(&doc, "rebalance");
    assert_eq!(rebalances.len(), 2);
    assert_eq!(rebalances[0]["args"]["end"]["reason"], "stopped");
}

#[test]
fn an_end_without_a_start_is_an_unmatched_instant() {
    let mut trace = TraceWriter::new(Vec::new()).expect("writer");
    let rec =
        Record::parse(br#"{"type":"rebalanceEnd","ts":5.0,"pid":"<0.1.0>","reason":"normal"}"#)
            .expect("valid");
    trace.observe(&rec).expect("observe");
    let (out, stats) = trace.finish().expect("finish");
    assert_eq!(stats.unmatched_ends, 1);
    let doc: Value = serde_json::from_slice(&out).expect("JSON");
    let e = events(&doc)
        .iter()
        .find(|e| e["ph"] == "i")
        .expect("instant");
    assert_eq!(e["name"], "rebalanceEnd");
    assert_eq!(e["args"]["unmatched"], true);
    assert_eq!(e["args"]["reason"], "normal");
}

/// A writer whose bytes can be looked at while a `TraceWriter` owns it.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn spans_are_written_as_they_complete_not_at_the_end() {
    let out = Shared::default();
    let mut trace = TraceWriter::new(out.clone()).expect("writer");
    let mut saw_move_before_finish = false;
    for rec in reader("rebalance_normal.log") {
        trace.observe(&rec.expect("reads")).expect("observe");
        let text = String::from_utf8_lossy(&out.0.borrow()).into_owned();
        if text.contains("\"name\":\"travel/0\"") {
            saw_move_before_finish = true;
            assert!(
                !text.contains("\"cat\":\"rebalance\""),
                "the rebalance is still open"
            );
            break;
        }
    }
    assert!(saw_move_before_finish);
}

#[test]
fn bad_lines_do_not_break_the_trace() {
    let (summary, doc, stats) = trace_with("stream_with_bad_lines.ndjson", TraceOptions::default());
    assert_eq!(summary.bad_lines, 6);
    assert_eq!(spans(&doc, "vbucketMove").len(), 1);
    assert_eq!(spans(&doc, "rebalance").len(), 1);
    assert_eq!(stats.unfinished, 0);
}
