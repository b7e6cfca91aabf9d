//! The SVG timeline of moves.

mod common;

use common::reader;
use master_events_report::{
    analyze, write_rebalance_svg, write_rebalance_svg_file, AnalyzerOptions, MoveRow, SvgOptions,
};

fn moves_of(name: &str) -> Vec<MoveRow> {
    let options = AnalyzerOptions {
        keep_moves: true,
        ..AnalyzerOptions::default()
    };
    analyze(reader(name), options).expect("reads").moves
}

#[test]
fn the_timeline_file_is_an_svg_document_with_labelled_axes_and_a_row_per_node_lane() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("timeline.svg");
    let moves = moves_of("rebalance_normal.log");
    write_rebalance_svg_file(&moves, &SvgOptions::default(), &path).expect("draws");
    let svg = std::fs::read_to_string(&path).expect("written");
    assert!(
        svg.trim_start().starts_with("<svg"),
        "{}",
        &svg[..svg.len().min(200)]
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("seconds since the first move started"));
    for lane in [
        "ns_1@10.0.0.1 #1",
        "ns_1@10.0.0.1 #2",
        "ns_2@10.0.0.2 #1",
        "ns_3@10.0.0.3 #1",
    ] {
        assert!(svg.contains(lane), "no row {lane}");
    }
    assert!(
        !svg.contains("ns_2@10.0.0.2 #2"),
        "one move on ns_2: one lane"
    );
}

#[test]
fn backfill_and_takeover_phases_are_drawn_in_their_own_colours() {
    let moves = moves_of("rebalance_normal.log");
    let svg = String::from_utf8(
        write_rebalance_svg(&moves, &SvgOptions::default(), Vec::new()).expect("draws"),
    )
    .expect("utf-8");
    let fills = |colour: &str| svg.matches(&format!("fill=\"{colour}\"")).count();
    // One bar per move, per backfill and per takeover, plus one legend swatch each.
    assert_eq!(fills("#4682B4"), 5 + 1, "moves");
    assert_eq!(fills("#FFA500"), 4 + 1, "backfills");
    assert_eq!(fills("#C81E3C"), 2 + 1, "takeovers");
    for label in ["move (done)", "backfill", "takeover"] {
        assert!(svg.contains(label), "legend {label}");
    }
}

#[test]
fn moves_in_flight_and_aborted_are_coloured_by_status() {
    let mid = moves_of("rebalance_midmove.log");
    let svg = String::from_utf8(
        write_rebalance_svg(&mid, &SvgOptions::default(), Vec::new()).expect("draws"),
    )
    .expect("utf-8");
    assert!(svg.contains("move (in flight)"));
    assert_eq!(svg.matches("fill=\"#78BE78\"").count(), 2 + 1);
    let stopped = moves_of("rebalance_stopped.log");
    let svg = String::from_utf8(
        write_rebalance_svg(&stopped, &SvgOptions::default(), Vec::new()).expect("draws"),
    )
    .expect("utf-8");
    assert!(svg.contains("move (aborted)"));
}

#[test]
fn no_moves_still_give_a_valid_empty_chart() {
    let out = write_rebalance_svg(&[], &SvgOptions::default(), Vec::new()).expect("draws");
    let svg = String::from_utf8(out).expect("utf-8");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}
