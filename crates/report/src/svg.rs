//! An SVG timeline of vbucket moves, drawn with plotters' SVG backend.
//!
//! Owns: the layout of the timeline — one row per lane of a node (moves that overlap
//! on one node take different lanes), time on the x axis in seconds since the first
//! move started — and its colours: the move's bar by status (done, in flight,
//! aborted), with its backfill (move start → `backfillPhaseEnded`) and takeover
//! (`takeoverStarted` → `takeoverEnded`) phases drawn inside it in their own colours.
//!
//! Promises: the output is one standalone `<svg>` document; bars on one row never
//! overlap; nodes are listed in name order, top to bottom; an empty set of moves
//! still gives a valid (empty) chart; a move in flight runs to its current duration.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;

use crate::error::Error;
use crate::lanes::assign_lanes;
use crate::model::{MoveRow, MoveStatus};
use crate::text::utc;

/// How the timeline is drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvgOptions {
    /// Width of the picture, in pixels.
    pub width: u32,
    /// Height of one lane, in pixels.
    pub row_height: u32,
    /// The caption above the chart.
    pub title: String,
}

impl Default for SvgOptions {
    /// 1200 pixels wide, 18 per lane, captioned "vbucket moves".
    fn default() -> Self {
        SvgOptions {
            width: 1200,
            row_height: 18,
            title: "vbucket moves".to_owned(),
        }
    }
}

const DONE: RGBColor = RGBColor(70, 130, 180);
const IN_FLIGHT: RGBColor = RGBColor(120, 190, 120);
const ABORTED: RGBColor = RGBColor(160, 160, 160);
const BACKFILL: RGBColor = RGBColor(255, 165, 0);
const TAKEOVER: RGBColor = RGBColor(200, 30, 60);

/// The y axis: `rows` lanes, one unit each, labelled at their centres.
struct RowAxis {
    rows: usize,
}

impl Ranged for RowAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let frac = value / self.rows.max(1) as f64;
        limit.0 + ((limit.1 - limit.0) as f64 * frac).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        (0..self.rows).map(|r| r as f64 + 0.5).collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.rows as f64
    }
}

fn svg_err(e: impl std::fmt::Display) -> Error {
    Error::Svg(e.to_string())
}

/// One bar: row, start and end in seconds since the origin.
struct Bar {
    row: usize,
    x0: f64,
    x1: f64,
    color: RGBColor,
}

/// The timeline of `moves` as an SVG document.
pub fn render_rebalance_svg(moves: &[MoveRow], options: &SvgOptions) -> Result<String, Error> {
    let origin = moves.iter().map(|m| m.start.as_micros()).min().unwrap_or(0);
    let secs = |us: i64| (us - origin) as f64 / 1e6;
    let end_us = |m: &MoveRow| m.start.as_micros() + m.duration.as_micros() as i64;

    // Lanes per node, nodes in name order.
    let mut by_node: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, m) in moves.iter().enumerate() {
        by_node.entry(m.node.as_str()).or_default().push(i);
    }
    let mut labels: Vec<String> = Vec::new();
    let mut row_of = vec![0usize; moves.len()];
    for (node, idxs) in &by_node {
        let intervals: Vec<(i64, i64)> = idxs
            .iter()
            .map(|&i| (moves[i].start.as_micros(), end_us(&moves[i])))
            .collect();
        let lanes = assign_lanes(&intervals);
        let n_lanes = lanes.iter().max().map_or(0, |l| *l as usize + 1);
        for (&i, lane) in idxs.iter().zip(&lanes) {
            row_of[i] = labels.len() + *lane as usize;
        }
        for lane in 0..n_lanes {
            labels.push(format!("{node} #{}", lane + 1));
        }
    }
    let rows = labels.len().max(1);

    let mut moves_bars = Vec::new();
    let mut backfill_bars = Vec::new();
    let mut takeover_bars = Vec::new();
    for (i, m) in moves.iter().enumerate() {
        // Row 0 at the top.
        let row = rows - 1 - row_of[i];
        let color = match m.status {
            MoveStatus::Done => DONE,
            MoveStatus::InFlight => IN_FLIGHT,
            MoveStatus::Aborted => ABORTED,
        };
        let start = m.start.as_micros();
        moves_bars.push(Bar {
            row,
            x0: secs(start),
            x1: secs(end_us(m)),
            color,
        });
        if let Some(b) = m.backfill_end {
            backfill_bars.push(Bar {
                row,
                x0: secs(start),
                x1: secs(b.as_micros().max(start)),
                color: BACKFILL,
            });
        }
        if let (Some(s), Some(e)) = (m.takeover_start, m.takeover_end) {
            takeover_bars.push(Bar {
                row,
                x0: secs(s.as_micros()),
                x1: secs(e.as_micros().max(s.as_micros())),
                color: TAKEOVER,
            });
        }
    }
    let x_max = moves_bars
        .iter()
        .map(|b| b.x1)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        // Headroom on the right for the legend.
        * 1.18;

    let label_px = labels.iter().map(|l| l.chars().count()).max().unwrap_or(4) as u32 * 7 + 16;
    // Tall enough for the legend however few the rows.
    let height = 110 + (options.row_height.max(4) * rows as u32).max(90);
    let x_desc = match moves.first() {
        Some(_) => format!(
            "seconds since the first move started ({})",
            utc(master_events_events::Timestamp::from_micros(origin))
        ),
        None => "seconds".to_owned(),
    };

    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (options.width.max(200), height)).into_drawing_area();
        root.fill(&WHITE).map_err(svg_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&options.title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(label_px.clamp(60, 400))
            .build_cartesian_2d(0f64..x_max, RowAxis { rows })
            .map_err(svg_err)?;
        let label_of = |y: &f64| {
            let from_top = rows as i64 - 1 - y.floor() as i64;
            usize::try_from(from_top)
                .ok()
                .and_then(|i| labels.get(i))
                .cloned()
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(x_desc)
            .y_desc("node lane")
            .x_label_formatter(&|x| format!("{x:.1}"))
            .y_label_formatter(&label_of)
            .draw()
            .map_err(svg_err)?;

        let rect = |b: &Bar, inset: u32| {
            let mut r = Rectangle::new(
                [(b.x0, b.row as f64), (b.x1, b.row as f64 + 1.0)],
                b.color.filled(),
            );
            r.set_margin(inset, inset, 0, 0);
            r
        };
        let legend = |c: RGBColor| {
            move |(x, y): (i32, i32)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled())
        };
        let statuses = [
            (MoveStatus::Done, DONE, "move (done)"),
            (MoveStatus::InFlight, IN_FLIGHT, "move (in flight)"),
            (MoveStatus::Aborted, ABORTED, "move (aborted)"),
        ];
        for (status, color, label) in statuses {
            if !moves.iter().any(|m| m.status == status) {
                continue;
            }
            chart
                .draw_series(
                    moves
                        .iter()
                        .zip(&moves_bars)
                        .filter(|(m, _)| m.status == status)
                        .map(|(_, b)| rect(b, 2)),
                )
                .map_err(svg_err)?
                .label(label)
                .legend(legend(color));
        }
        chart
            .draw_series(backfill_bars.iter().map(|b| rect(b, 5)))
            .map_err(svg_err)?
            .label("backfill")
            .legend(legend(BACKFILL));
        chart
            .draw_series(takeover_bars.iter().map(|b| rect(b, 5)))
            .map_err(svg_err)?
            .label("takeover")
            .legend(legend(TAKEOVER));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(svg_err)?;
        root.present().map_err(svg_err)?;
    }
    Ok(svg)
}

/// Writes the timeline of `moves` to `out` as an SVG document, and hands `out` back.
///
/// ```
/// use master_events_report::svg::{write_rebalance_svg, SvgOptions};
///
/// let out = write_rebalance_svg(&[], &SvgOptions::default(), Vec::new())?;
/// assert!(String::from_utf8_lossy(&out).contains("<svg"));
/// # Ok::<(), master_events_report::Error>(())
/// ```
pub fn write_rebalance_svg<W: Write>(
    moves: &[MoveRow],
    options: &SvgOptions,
    mut out: W,
) -> Result<W, Error> {
    let svg = render_rebalance_svg(moves, options)?;
    out.write_all(svg.as_bytes())?;
    out.flush()?;
    Ok(out)
}

/// Writes the timeline of `moves` to the file at `path` (created or truncated).
pub fn write_rebalance_svg_file(
    moves: &[MoveRow],
    options: &SvgOptions,
    path: impl AsRef<Path>,
) -> Result<(), Error> {
    let file = std::fs::File::create(path)?;
    write_rebalance_svg(moves, options, std::io::BufWriter::new(file))?;
    Ok(())
}
