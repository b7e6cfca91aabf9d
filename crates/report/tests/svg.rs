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

/// The `<rect>` elements of an SVG document: (x, width, fill) of each.
fn rects(svg: &str) -> Vec<(i64, i64, String)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        let len = tag[start..].find('"')?;
        Some(tag[start..start + len].to_owned())
    };
    svg.split("<rect")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            Some((
                attr(tag, "x")?.parse().ok()?,
                attr(tag, "width")?.parse().ok()?,
                attr(tag, "fill")?,
            ))
        })
        .collect()
}

#[test]
fn every_move_has_a_title_naming_bucket_vbucket_node_and_times() {
    let moves = moves_of("rebalance_normal.log");
    let svg = String::from_utf8(
        write_rebalance_svg(&moves, &SvgOptions::default(), Vec::new()).expect("draws"),
    )
    .expect("utf-8");
    let titles: Vec<&str> = svg
        .split("<title>")
        .skip(1)
        .filter_map(|t| t.split_once("</title>").map(|(t, _)| t))
        .collect();
    assert_eq!(titles.len(), moves.len(), "one title per move: {titles:?}");
    for m in &moves {
        let needle = format!("{} vbucket {} on {}", m.bucket, m.vbucket, m.node);
        let title = titles
            .iter()
            .find(|t| t.starts_with(&needle))
            .unwrap_or_else(|| panic!("no title for {needle}: {titles:?}"));
        assert!(title.contains("started 20"), "{title}");
        assert!(title.contains("ended 20"), "{title}");
    }
    assert!(
        titles
            .iter()
            .any(|t| t.contains("backfill") && t.contains("takeover")),
        "phases named: {titles:?}"
    );
}

#[test]
fn the_legend_stands_outside_the_plot_and_the_axis_ends_at_the_last_move() {
    let moves = moves_of("rebalance_normal.log");
    let options = SvgOptions::default();
    let svg = String::from_utf8(write_rebalance_svg(&moves, &options, Vec::new()).expect("draws"))
        .expect("utf-8");
    let rects = rects(&svg);
    let done: Vec<&(i64, i64, String)> = rects.iter().filter(|r| r.2 == "#4682B4").collect();
    // The last one drawn of a colour is its legend swatch.
    let (swatch, bars) = done.split_last().expect("bars and a swatch");
    let right_of_bars = bars.iter().map(|(x, w, _)| x + w).max().expect("bars");
    assert!(
        swatch.0 > right_of_bars,
        "the legend swatch at x={} is right of every bar (which end at {right_of_bars})",
        swatch.0
    );
    // The plot spans the picture but for the legend's column and the margin: the
    // longest move reaches its right edge (no headroom left for a legend inside).
    let plot_right = i64::from(options.width) - 160 - 10;
    assert!(
        (plot_right - right_of_bars).abs() <= 3,
        "the last move ends at x={right_of_bars}, the plot at {plot_right}"
    );
}

#[test]
fn a_log_with_two_rebalances_draws_one_panel_for_each() {
    let moves = moves_of("rebalance_stopped.log");
    let rebalances: std::collections::BTreeSet<_> = moves.iter().map(|m| m.rebalance).collect();
    assert_eq!(rebalances.len(), 2, "the log's moves span two rebalances");
    let svg = String::from_utf8(
        write_rebalance_svg(&moves, &SvgOptions::default(), Vec::new()).expect("draws"),
    )
    .expect("utf-8");
    assert!(
        svg.contains("vbucket moves: rebalance 1, from 2023-"),
        "first panel"
    );
    assert!(
        svg.contains("vbucket moves: rebalance 2, from 2023-"),
        "second panel"
    );
    assert_eq!(
        svg.matches("seconds since the first move started").count(),
        2,
        "an x axis per panel"
    );
    // One log, one rebalance: one panel, captioned as asked.
    let one = String::from_utf8(
        write_rebalance_svg(
            &moves_of("rebalance_normal.log"),
            &SvgOptions::default(),
            Vec::new(),
        )
        .expect("draws"),
    )
    .expect("utf-8");
    assert!(!one.contains("rebalance 1,"));
    assert_eq!(
        one.matches("seconds since the first move started").count(),
        1
    );
}
