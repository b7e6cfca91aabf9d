//! An SVG timeline of vbucket moves, drawn with plotters' SVG backend.
//!
//! Owns: the layout of the timeline — one panel per rebalance (moves outside any
//! rebalance in a last panel of their own), in each one row per lane of a node
//! (moves that overlap on one node take different lanes), time on the x axis in
//! seconds since the panel's first move started — its colours: the move's bar by
//! status (done, in flight, aborted), with its backfill (move start →
//! `backfillPhaseEnded`) and takeover (`takeoverStarted` → `takeoverEnded`) phases
//! drawn inside it in their own colours — and the legend, in a column of its own to
//! the right of the panels.
//!
//! Promises: the output is one standalone `<svg>` document; bars on one row never
//! overlap; nodes are listed in name order, top to bottom; each x axis ends where the
//! panel's last move ends; every move carries a `<title>` (bucket, vbucket, node,
//! kind, status, times and phases: a browser shows it on hover, and a text search
//! of the file finds a move); an empty set of moves still gives a valid (empty)
//! chart; a move in flight runs to its current duration.

use std::collections::BTreeMap;
use std::fmt::Write as _;
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
    /// Width of the picture, in pixels (the legend column included).
    pub width: u32,
    /// Height of one lane, in pixels.
    pub row_height: u32,
    /// The caption above the chart (above each panel, with the rebalance's number
    /// and start, when there are several).
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

/// Width of the legend column, in pixels.
const LEGEND_WIDTH: u32 = 160;

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

/// One bar: row, start and end in seconds since the panel's origin.
struct Bar {
    row: usize,
    x0: f64,
    x1: f64,
    color: RGBColor,
}

/// The moves of one panel (one rebalance, or those outside any), laid out.
struct Panel<'a> {
    caption: String,
    moves: Vec<&'a MoveRow>,
    /// Row labels, top to bottom.
    labels: Vec<String>,
    /// Each move's row, counted from the bottom (plotters' y grows upwards).
    rows_of: Vec<usize>,
    origin: i64,
}

impl Panel<'_> {
    fn rows(&self) -> usize {
        self.labels.len().max(1)
    }

    fn height(&self, row_height: u32) -> u32 {
        // Caption, axis and its description, and room for a few rows at least.
        90 + (row_height.max(4) * self.rows() as u32).max(72)
    }
}

/// When a move ended (for one in flight: start plus its current duration).
fn end_us(m: &MoveRow) -> i64 {
    m.start.as_micros() + m.duration.as_micros() as i64
}

/// Lays out `moves` (one panel's): lanes per node, nodes in name order.
fn panel<'a>(caption: String, moves: Vec<&'a MoveRow>) -> Panel<'a> {
    let origin = moves.iter().map(|m| m.start.as_micros()).min().unwrap_or(0);
    let mut by_node: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, m) in moves.iter().enumerate() {
        by_node.entry(m.node.as_str()).or_default().push(i);
    }
    let mut labels: Vec<String> = Vec::new();
    let mut from_top = vec![0usize; moves.len()];
    for (node, idxs) in &by_node {
        let intervals: Vec<(i64, i64)> = idxs
            .iter()
            .map(|&i| (moves[i].start.as_micros(), end_us(moves[i])))
            .collect();
        let lanes = assign_lanes(&intervals);
        let n_lanes = lanes.iter().max().map_or(0, |l| *l as usize + 1);
        for (&i, lane) in idxs.iter().zip(&lanes) {
            from_top[i] = labels.len() + *lane as usize;
        }
        for lane in 0..n_lanes {
            labels.push(format!("{node} #{}", lane + 1));
        }
    }
    let rows = labels.len().max(1);
    let rows_of = from_top.iter().map(|r| rows - 1 - r).collect();
    Panel {
        caption,
        moves,
        labels,
        rows_of,
        origin,
    }
}

/// The panels of `moves`: one per rebalance in order, then the moves outside any.
fn panels<'a>(moves: &'a [MoveRow], title: &str) -> Vec<Panel<'a>> {
    let mut groups: BTreeMap<(bool, usize), Vec<&MoveRow>> = BTreeMap::new();
    for m in moves {
        let key = match m.rebalance {
            Some(r) => (false, r),
            None => (true, 0),
        };
        groups.entry(key).or_default().push(m);
    }
    if groups.len() <= 1 {
        let only = groups.into_values().next().unwrap_or_default();
        return vec![panel(title.to_owned(), only)];
    }
    groups
        .into_iter()
        .map(|((outside, r), moves)| {
            let start = moves.iter().map(|m| m.start).min();
            let when = start
                .map(|t| format!(", from {}", utc(t)))
                .unwrap_or_default();
            let caption = if outside {
                format!("{title}: outside any rebalance{when}")
            } else {
                format!("{title}: rebalance {}{when}", r + 1)
            };
            panel(caption, moves)
        })
        .collect()
}

/// Escapes text for an SVG element's content.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// What a move's `<title>` says: enough to find it and to read it.
fn move_title(m: &MoveRow) -> String {
    let mut t = format!(
        "{} vbucket {} on {} ({} move, {}): started {}",
        m.bucket,
        m.vbucket,
        m.node,
        m.kind.as_str(),
        match m.status {
            MoveStatus::Done => "done",
            MoveStatus::InFlight => "in flight",
            MoveStatus::Aborted => "aborted",
        },
        utc(m.start)
    );
    match m.end {
        Some(end) => {
            let _ = write!(t, ", ended {}", utc(end));
        }
        None => t.push_str(", still running"),
    }
    let _ = write!(t, "; {:.3} s", m.duration.as_secs_f64());
    if let Some(b) = m.backfill {
        let _ = write!(t, "; backfill {:.3} s", b.as_secs_f64());
    }
    if let Some(k) = m.takeover {
        let _ = write!(t, "; takeover {:.3} s", k.as_secs_f64());
    }
    if let Some(reason) = &m.reason {
        let _ = write!(t, "; {reason}");
    }
    t
}

/// The timeline of `moves` as an SVG document.
pub fn render_rebalance_svg(moves: &[MoveRow], options: &SvgOptions) -> Result<String, Error> {
    let panels = panels(moves, &options.title);
    let label_px = panels
        .iter()
        .flat_map(|p| &p.labels)
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(4) as u32
        * 7
        + 16;
    let heights: Vec<u32> = panels
        .iter()
        .map(|p| p.height(options.row_height))
        .collect();
    let width = options.width.max(LEGEND_WIDTH + 240);
    let height = heights.iter().sum::<u32>().max(160);

    // The legend: what is drawn, once for the whole picture.
    let statuses = [
        (MoveStatus::Done, DONE, "move (done)"),
        (MoveStatus::InFlight, IN_FLIGHT, "move (in flight)"),
        (MoveStatus::Aborted, ABORTED, "move (aborted)"),
    ];
    let mut legend: Vec<(RGBColor, &str)> = statuses
        .iter()
        .filter(|(status, _, _)| moves.iter().any(|m| m.status == *status))
        .map(|(_, color, label)| (*color, *label))
        .collect();
    if moves.iter().any(|m| m.backfill_end.is_some()) {
        legend.push((BACKFILL, "backfill"));
    }
    if moves
        .iter()
        .any(|m| m.takeover_start.is_some() && m.takeover_end.is_some())
    {
        legend.push((TAKEOVER, "takeover"));
    }

    let mut svg = String::new();
    // Invisible boxes over the bars, each with the move's <title>.
    let mut hover = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(svg_err)?;
        let (plots, key) = root.split_horizontally(width - LEGEND_WIDTH);
        let mut area = plots;
        for (panel, h) in panels.iter().zip(&heights) {
            let (this, rest) = area.split_vertically(*h);
            area = rest;
            draw_panel(&this, panel, label_px, &mut hover)?;
        }
        for (i, (color, label)) in legend.iter().enumerate() {
            let y = 40 + 22 * i as i32;
            key.draw(&Rectangle::new([(12, y - 6), (26, y + 6)], color.filled()))
                .map_err(svg_err)?;
            key.draw(&Text::new(
                label.to_string(),
                (34, y - 7),
                ("sans-serif", 13).into_font(),
            ))
            .map_err(svg_err)?;
        }
        root.present().map_err(svg_err)?;
    }
    if let Some(at) = svg.rfind("</svg>") {
        svg.insert_str(at, &hover);
    }
    Ok(svg)
}

/// Draws one panel into `area`, and adds a hover box with a `<title>` per move to
/// `hover`.
fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: &Panel<'_>,
    label_px: u32,
    hover: &mut String,
) -> Result<(), Error> {
    let secs = |us: i64| (us - panel.origin) as f64 / 1e6;
    let rows = panel.rows();
    let mut moves_bars = Vec::new();
    let mut backfill_bars = Vec::new();
    let mut takeover_bars = Vec::new();
    for (m, &row) in panel.moves.iter().zip(&panel.rows_of) {
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
    // The axis ends where the last move ends.
    let x_max = moves_bars
        .iter()
        .map(|b| b.x1)
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let x_desc = match panel.moves.first() {
        Some(_) => format!(
            "seconds since the first move started ({})",
            utc(master_events_events::Timestamp::from_micros(panel.origin))
        ),
        None => "seconds".to_owned(),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(label_px.clamp(60, 400))
        .build_cartesian_2d(0f64..x_max, RowAxis { rows })
        .map_err(svg_err)?;
    let label_of = |y: &f64| {
        let from_top = rows as i64 - 1 - y.floor() as i64;
        usize::try_from(from_top)
            .ok()
            .and_then(|i| panel.labels.get(i))
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
    chart
        .draw_series(moves_bars.iter().map(|b| rect(b, 2)))
        .map_err(svg_err)?;
    chart
        .draw_series(backfill_bars.iter().map(|b| rect(b, 5)))
        .map_err(svg_err)?;
    chart
        .draw_series(takeover_bars.iter().map(|b| rect(b, 5)))
        .map_err(svg_err)?;
    for (m, b) in panel.moves.iter().zip(&moves_bars) {
        let (x0, y0) = chart.backend_coord(&(b.x0, b.row as f64 + 1.0));
        let (x1, y1) = chart.backend_coord(&(b.x1, b.row as f64));
        let _ = writeln!(
            hover,
            "<rect x=\"{x0}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#000\" fill-opacity=\"0\"><title>{}</title></rect>",
            y0.min(y1),
            (x1 - x0).max(2),
            (y1 - y0).abs().max(2),
            xml_escape(&move_title(m))
        );
    }
    Ok(())
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
