//! Analysis of master event logs for the people who read them.
//!
//! Everything here streams over any [`std::io::BufRead`] of NDJSON lines — this
//! project's stream (whose `heartbeat` and `gap` frames are skipped) or an ns_server
//! `master_events.log` (lines with `ts` but no `seq`) — holding what is in flight, not
//! the file:
//! - [`LogReader`] turns lines into [`Record`](master_events_events::Record)s,
//!   counting bad lines (and keeping the first few) instead of failing on them, and
//!   reports bytes read to a progress hook;
//! - [`Analyzer`] pairs rebalances, vbucket moves and their phases and yields a
//!   [`RebalanceReport`] per rebalance, the moves in flight ([`Analyzer::inflight`]),
//!   and one [`MoveRow`] per move ([`Analyzer::moves`]), written by [`MovesWriter`]
//!   as an aligned table, CSV or JSON lines; [`analyze`] runs a whole log through it;
//! - [`trace`] writes a Chrome trace-event JSON document, one span per start/end
//!   pair, vbucket moves in lanes per node;
//! - [`svg`] draws the moves as an SVG timeline.
//!
//! ```
//! use master_events_report::{analyze, AnalyzerOptions, LogReader};
//!
//! let log = br#"{"type":"rebalanceStart","ts":100.0,"pid":"<0.1.0>","keepNodes":["a:1","b:1"],"ejectNodes":[],"failedNodes":[],"deltaNodes":[]}
//! {"vbucket":7,"type":"vbucketMoveStart","ts":101.0,"pid":"<0.2.0>","node":"n_0@a","bucket":"default","chainBefore":["a:1","b:1"],"chainAfter":["a:1","c:1"]}
//! {"type":"heartbeat","seq":2,"ts":102.0}
//! "#;
//! let mut bytes_seen = 0;
//! let reader = LogReader::new(&log[..]).with_progress(|n| bytes_seen = n);
//! let analysis = analyze(reader, AnalyzerOptions::default())?;
//! assert_eq!(bytes_seen, log.len() as u64);
//! assert_eq!(analysis.rebalances[0].outcome, "unfinished");
//! assert_eq!(analysis.inflight.len(), 1);
//! assert_eq!(analysis.input.control_frames, 1);
//! println!("{analysis}");
//! # Ok::<(), std::io::Error>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod analyze;
mod error;
mod lanes;
mod model;
mod output;
mod pairs;
mod read;
mod secs;
mod stats;
pub mod svg;
mod text;
pub mod trace;

pub use analyze::{analyze, Analyzer, AnalyzerOptions};
pub use error::Error;
pub use model::{
    Analysis, Anomalies, BucketReport, Inflight, InflightBucket, InflightMove, MoveKind, MoveRow,
    MoveStatus, RebalanceReport, SlowMove,
};
pub use output::{write_moves, MovesFormat, MovesWriter, CSV_HEADER};
pub use read::{
    BadLine, BadLineReason, LogReader, ReadSummary, DEFAULT_KEPT_BAD_LINES, MAX_LINE_BYTES,
    PROGRESS_EVERY_BYTES,
};
pub use stats::DurationStats;
pub use svg::{write_rebalance_svg, write_rebalance_svg_file, SvgOptions};
pub use text::{utc, utc_micros, TextTable};
pub use trace::{write_trace, TraceOptions, TraceStats, TraceWriter};
