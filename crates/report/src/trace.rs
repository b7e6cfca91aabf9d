//! Chrome trace-event JSON (`chrome://tracing`, Perfetto, speedscope) of an event log.
//!
//! Owns: where each span is drawn (process and lane), the instants,
//! and the streaming writer of the `{"traceEvents":[...],"displayTimeUnit":"ms"}`
//! document.
//!
//! The pairs of the crate's one pairing table (`pairs.rs`: start → end, matched by
//! a key) become complete events (`"ph":"X"`, `ts` and `dur` in microseconds), drawn:
//! - on the `cluster` process: rebalances, rebalance stages, bucket rebalances and
//!   bucket failovers;
//! - on one process per node (named after the `node` field, or the consumer node of a
//!   DCP replicator): vbucket moves, compaction uninhibits, volume mounts, DCP
//!   replicators and ebucketmigrators;
//! - the phases of a move (backfill, takeover, snapshot wait, download and keys
//!   import, seqno and index waits), on the lane of that move (so they nest under
//!   it), or on a lane of their own when no move of that vbucket is open.
//!   A `backfillPhaseEnded` without a `backfillPhaseStarted` closes a backfill span
//!   from the start of its move (`args.sinceMoveStart`), as the analyzer counts it.
//!
//! A `vbucketMoverTerminate` with a reason other than `normal` from the pid of an open
//! move ends that move (its `args.end` is the terminate event), as the analyzer
//! counts it. Every other event is an instant event (`"ph":"i"`) on its node's
//! process (or the cluster's), on the lane of its vbucket's move when one is open;
//! `failover`, `failoverEnded` and `becameMaster` are global instants (`"s":"g"`).
//!
//! Promises:
//! - Streaming: each span is written when it ends, each instant when it is seen; the
//!   writer holds only the open spans, and never the document.
//! - Lanes (`tid`): a span that is not a phase of an open move takes the lowest lane
//!   of its process that is free at its start, so the spans that take lanes never
//!   overlap on one (in particular, overlapping moves on one node are on different
//!   lanes); a phase of an open move shares the lane of its move and nests inside it. Each process is named by a `process_name`
//!   metadata event (`"ph":"M"`), each lane by a `thread_name` one, both written
//!   before the first event that uses them; `cluster` is process 1, sorted first.
//! - `args` hold the start event as on the wire (its fields and `type`), plus `end`
//!   (the end event), `kind` (`active`/`replica`, for moves) and `unfinished: true`
//!   for a span that never ended, which is closed at the last timestamp seen. An end
//!   with no open start becomes an instant with `unmatched: true`.
//! - An event without `ts` takes the last timestamp seen; before any, it is counted
//!   in [`TraceStats::untimed`] and skipped.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use master_events_events::{CompactString, Event, Record};
use serde::Serialize;

use crate::error::Error;
use crate::lanes::Lanes;
use crate::model::MoveKind;
use crate::pairs::{self, vbucket_id, Role, Span};
use crate::read::{LogReader, ReadSummary};

/// The name of the process that holds cluster-wide spans.
pub const CLUSTER_PROCESS: &str = "cluster";

/// What a [`TraceWriter`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceOptions {
    /// Write events that are not part of a span as instant events.
    pub point_events: bool,
}

impl Default for TraceOptions {
    /// Point events included.
    fn default() -> Self {
        TraceOptions { point_events: true }
    }
}

/// What a [`TraceWriter`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceStats {
    /// Complete events (`"X"`) written for pairs that ended.
    pub spans: u64,
    /// Complete events written for starts that never ended (`unfinished`).
    pub unfinished: u64,
    /// Instant events (`"i"`), including ends without a start.
    pub instants: u64,
    /// Ends with no open start.
    pub unmatched_ends: u64,
    /// Events skipped for having no `ts` before any timestamp was seen.
    pub untimed: u64,
    /// Processes (the cluster and one per node).
    pub processes: u64,
}

/// Where a span that starts with `event` is drawn: its name and the process it goes
/// on (for a phase of a move: when no move of its vbucket is open).
fn label(event: &Event) -> (String, &str) {
    const C: &str = CLUSTER_PROCESS;
    match event {
        Event::RebalanceStart(_) => ("rebalance".into(), C),
        Event::RebalanceStageStarted(e) => (format!("stage {}", e.stage.join("/")), C),
        Event::BucketRebalanceStarted(e) => (format!("rebalance {}", e.bucket), C),
        Event::BucketFailoverStarted(e) => (format!("failover {}", e.bucket), C),
        Event::VbucketMoveStart(e) => (format!("{}/{}", e.bucket, e.vbucket), &e.node),
        Event::CompactionUninhibitStarted(e) => {
            (format!("compaction uninhibit {}", e.bucket), &e.node)
        }
        Event::MountingVolumesStarted(e) => (format!("mounting volumes {}", e.bucket), &e.node),
        Event::DcpReplicatorStart(e) => (format!("dcp {}", e.connection_name), &e.consumer_node),
        Event::EbucketmigratorStart(e) => (format!("ebucketmigrator {}", e.name), &e.node),
        Event::BackfillPhaseStarted(_) => ("backfill".into(), C),
        Event::TakeoverStarted(e) => ("takeover".into(), &e.node),
        Event::SnapshotWaitingStarted(_) => ("snapshot wait".into(), C),
        Event::SnapshotDownloadStarted(_) => ("snapshot download".into(), C),
        Event::SnapshotDeksImportStarted(_) => ("snapshot keys import".into(), C),
        Event::SeqnoWaitingStarted(e) => (format!("seqno wait {}", e.node), &e.node),
        Event::WaitIndexUpdatedStarted(e) => (format!("index wait {}", e.node), &e.node),
        other => (other.type_name().into(), C),
    }
}

#[derive(Debug)]
struct Process {
    pid: u32,
    lanes: Lanes,
    named_lanes: u32,
}

#[derive(Debug)]
struct OpenSpan {
    name: String,
    start: i64,
    pid: u32,
    tid: u32,
    owns_lane: bool,
    /// The start event as a JSON object, `{...}`.
    args: Vec<u8>,
    /// For moves: active or replica.
    move_kind: Option<MoveKind>,
    /// For moves: the mover's pid.
    mover_pid: Option<CompactString>,
}

/// Writes a Chrome trace of the records it is given; see the module documentation.
///
/// ```
/// use master_events_report::TraceWriter;
/// use master_events_events::Record;
///
/// let mut trace = TraceWriter::new(Vec::new())?;
/// for line in [
///     r#"{"type":"rebalanceStart","ts":1.0,"pid":"<0.1.0>","keepNodes":[],"ejectNodes":[],"failedNodes":[],"deltaNodes":[]}"#,
///     r#"{"type":"rebalanceEnd","ts":3.5,"pid":"<0.1.0>","reason":"normal"}"#,
/// ] {
///     trace.observe(&Record::parse(line.as_bytes()).expect("valid"))?;
/// }
/// let (json, stats) = trace.finish()?;
/// assert_eq!(stats.spans, 1);
/// let doc: serde_json::Value = serde_json::from_slice(&json)?;
/// let span = doc["traceEvents"].as_array().and_then(|a| a.iter().find(|e| e["ph"] == "X")).cloned();
/// assert_eq!(span.map(|s| (s["ts"].clone(), s["dur"].clone())), Some((1_000_000.into(), 2_500_000.into())));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TraceWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    wrote_any: bool,
    options: TraceOptions,
    processes: HashMap<String, Process>,
    open: HashMap<(Span, String), OpenSpan>,
    last_ts: Option<i64>,
    stats: TraceStats,
}

impl<W: Write> std::fmt::Debug for TraceWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceWriter")
            .field("open_spans", &self.open.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<W: Write> TraceWriter<W> {
    /// A writer to `out` with the default options; writes the document's opening.
    /// Give it a buffered writer: it writes one event at a time.
    pub fn new(out: W) -> Result<Self, Error> {
        Self::with_options(out, TraceOptions::default())
    }

    /// A writer to `out` with `options`; writes the document's opening.
    pub fn with_options(mut out: W, options: TraceOptions) -> Result<Self, Error> {
        out.write_all(b"{\"traceEvents\":[\n")?;
        let mut w = TraceWriter {
            out,
            buf: Vec::with_capacity(1024),
            scratch: Vec::with_capacity(512),
            wrote_any: false,
            options,
            processes: HashMap::new(),
            open: HashMap::new(),
            last_ts: None,
            stats: TraceStats::default(),
        };
        w.process(CLUSTER_PROCESS)?;
        Ok(w)
    }

    /// What has been written so far.
    pub fn stats(&self) -> &TraceStats {
        &self.stats
    }

    /// Takes in one record, writing what it completes.
    pub fn observe(&mut self, rec: &Record) -> Result<(), Error> {
        // When it happened: at its origin when known, else when it was sequenced.
        let ts = match rec.envelope.origin_ts.or(rec.envelope.ts) {
            Some(ts) => {
                let us = ts.as_micros();
                self.last_ts = Some(self.last_ts.map_or(us, |l| l.max(us)));
                us
            }
            None => match self.last_ts {
                Some(l) => l,
                None => {
                    self.stats.untimed += 1;
                    return Ok(());
                }
            },
        };
        match pairs::edge(&rec.event) {
            Some(edge) => match edge.role {
                Role::Start => {
                    let (name, process) = label(&rec.event);
                    let owner = edge
                        .span
                        .is_move_phase()
                        .then(|| edge.key.vbucket())
                        .flatten()
                        .map(|(bucket, vbucket)| vbucket_id(bucket, vbucket));
                    self.start(rec, ts, edge.span, edge.key.id(), name, process, owner)
                }
                Role::End => self.end(rec, ts, edge.span, edge.key.id()),
                // A mover that dies ends its move, as the analyzer counts it.
                Role::Abort { pid, .. } => {
                    let key = edge.key.id();
                    let mover_of_open_move = self
                        .open
                        .get(&(edge.span, key.clone()))
                        .is_some_and(|m| m.mover_pid.as_deref() == Some(pid));
                    if mover_of_open_move {
                        self.end(rec, ts, edge.span, key)
                    } else {
                        self.point(rec, ts, false)
                    }
                }
            },
            None => self.point(rec, ts, false),
        }
    }

    /// The pid of `name`'s process, creating it (and writing its metadata) if new.
    fn process(&mut self, name: &str) -> Result<u32, Error> {
        if let Some(p) = self.processes.get(name) {
            return Ok(p.pid);
        }
        let pid = self.processes.len() as u32 + 1;
        self.processes.insert(
            name.to_owned(),
            Process {
                pid,
                lanes: Lanes::default(),
                named_lanes: 0,
            },
        );
        self.stats.processes += 1;
        self.buf.clear();
        self.buf
            .extend_from_slice(b"{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":");
        write_num(&mut self.buf, pid as i64);
        self.buf
            .extend_from_slice(b",\"tid\":0,\"args\":{\"name\":");
        serde_json::to_writer(&mut self.buf, name)?;
        self.buf.extend_from_slice(b"}}");
        self.emit()?;
        self.buf.clear();
        self.buf
            .extend_from_slice(b"{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":");
        write_num(&mut self.buf, pid as i64);
        self.buf
            .extend_from_slice(b",\"tid\":0,\"args\":{\"sort_index\":");
        write_num(&mut self.buf, pid as i64);
        self.buf.extend_from_slice(b"}}");
        self.emit()?;
        Ok(pid)
    }

    /// Takes a lane on `process` free at `start`, naming it if new.
    fn lane(&mut self, process: &str, start: i64) -> Result<(u32, u32), Error> {
        let pid = self.process(process)?;
        let (tid, unnamed) = match self.processes.get_mut(process) {
            Some(p) => {
                let tid = p.lanes.acquire(start);
                let from = p.named_lanes;
                p.named_lanes = p.named_lanes.max(tid + 1);
                (tid, from..p.named_lanes)
            }
            None => (0, 0..0),
        };
        for lane in unnamed {
            self.buf.clear();
            self.buf
                .extend_from_slice(b"{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":");
            write_num(&mut self.buf, pid as i64);
            self.buf.extend_from_slice(b",\"tid\":");
            write_num(&mut self.buf, lane as i64);
            self.buf.extend_from_slice(b",\"args\":{\"name\":\"lane ");
            write_num(&mut self.buf, lane as i64);
            self.buf.extend_from_slice(b"\"}}");
            self.emit()?;
        }
        Ok((pid, tid))
    }

    fn release(&mut self, pid: u32, tid: u32, end: i64) {
        if let Some(p) = self.processes.values_mut().find(|p| p.pid == pid) {
            p.lanes.release(tid, end);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        rec: &Record,
        ts: i64,
        kind: Span,
        key: String,
        name: String,
        process: &str,
        owner: Option<String>,
    ) -> Result<(), Error> {
        if let Some(old) = self.open.remove(&(kind, key.clone())) {
            // Started again before it ended: close the first one where the second begins.
            self.close(old, kind, ts, None)?;
        }
        let on_move = owner.and_then(|o| self.open.get(&(Span::Move, o)));
        let (pid, tid, owns_lane) = match on_move {
            Some(m) => (m.pid, m.tid, false),
            None => {
                let (pid, tid) = self.lane(process, ts)?;
                (pid, tid, true)
            }
        };
        let mut args = Vec::with_capacity(256);
        serde_json::to_writer(&mut args, &rec.event)?;
        let (move_kind, mover_pid) = match &rec.event {
            Event::VbucketMoveStart(e) => (
                Some(MoveKind::of(&e.chain_before, &e.chain_after)),
                Some(e.pid.clone()),
            ),
            _ => (None, None),
        };
        self.open.insert(
            (kind, key),
            OpenSpan {
                name,
                start: ts,
                pid,
                tid,
                owns_lane,
                args,
                move_kind,
                mover_pid,
            },
        );
        Ok(())
    }

    fn end(&mut self, rec: &Record, ts: i64, kind: Span, key: String) -> Result<(), Error> {
        let open_key = (kind, key);
        match self.open.remove(&open_key) {
            Some(span) => {
                self.scratch.clear();
                serde_json::to_writer(&mut self.scratch, &rec.event)?;
                let end = std::mem::take(&mut self.scratch);
                let result = self.close(span, kind, ts, Some(&end));
                self.scratch = end;
                result
            }
            None if kind == Span::Backfill => {
                // No backfillPhaseStarted: the backfill runs from the move's start,
                // as the analyzer counts it. Its key is its move's.
                let Some((pid, tid, start)) = self
                    .open
                    .get(&(Span::Move, open_key.1))
                    .map(|m| (m.pid, m.tid, m.start))
                else {
                    self.stats.unmatched_ends += 1;
                    return self.point(rec, ts, true);
                };
                let span = OpenSpan {
                    name: "backfill".to_owned(),
                    start,
                    pid,
                    tid,
                    owns_lane: false,
                    args: b"{\"sinceMoveStart\":true}".to_vec(),
                    move_kind: None,
                    mover_pid: None,
                };
                let mut end = Vec::with_capacity(128);
                serde_json::to_writer(&mut end, &rec.event)?;
                self.close(span, kind, ts, Some(&end))
            }
            None => {
                self.stats.unmatched_ends += 1;
                self.point(rec, ts, true)
            }
        }
    }

    /// Writes `span` as a complete event ending at `end_ts`; `end` is the end event's
    /// JSON, `None` for an unfinished span.
    fn close(
        &mut self,
        span: OpenSpan,
        kind: Span,
        end_ts: i64,
        end: Option<&[u8]>,
    ) -> Result<(), Error> {
        if span.owns_lane {
            self.release(span.pid, span.tid, end_ts.max(span.start));
        }
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(b"{\"name\":");
        serde_json::to_writer(&mut *buf, &span.name)?;
        buf.extend_from_slice(b",\"cat\":\"");
        buf.extend_from_slice(kind.name().as_bytes());
        buf.extend_from_slice(b"\",\"ph\":\"X\",\"ts\":");
        write_num(buf, span.start);
        buf.extend_from_slice(b",\"dur\":");
        write_num(buf, end_ts.saturating_sub(span.start).max(0));
        buf.extend_from_slice(b",\"pid\":");
        write_num(buf, span.pid as i64);
        buf.extend_from_slice(b",\"tid\":");
        write_num(buf, span.tid as i64);
        buf.extend_from_slice(b",\"args\":");
        // The start event's object, reopened to add the end, the kind, `unfinished`.
        let args = span.args.strip_suffix(b"}").unwrap_or(b"{");
        buf.extend_from_slice(args);
        let mut sep: &[u8] = if args.len() > 1 { b"," } else { b"" };
        if let Some(k) = span.move_kind {
            buf.extend_from_slice(sep);
            buf.extend_from_slice(b"\"kind\":\"");
            buf.extend_from_slice(k.as_str().as_bytes());
            buf.push(b'"');
            sep = b",";
        }
        match end {
            Some(end) => {
                buf.extend_from_slice(sep);
                buf.extend_from_slice(b"\"end\":");
                buf.extend_from_slice(end);
                self.stats.spans += 1;
            }
            None => {
                buf.extend_from_slice(sep);
                buf.extend_from_slice(b"\"unfinished\":true");
                self.stats.unfinished += 1;
            }
        }
        buf.extend_from_slice(b"}}");
        self.emit()
    }

    fn point(&mut self, rec: &Record, ts: i64, unmatched: bool) -> Result<(), Error> {
        if !self.options.point_events && !unmatched {
            return Ok(());
        }
        let ev = &rec.event;
        let global = matches!(
            ev,
            Event::Failover(_) | Event::FailoverEnded(_) | Event::BecameMaster(_)
        );
        let on_move = match (ev.bucket(), ev.vbucket()) {
            (Some(b), Some(vb)) => self
                .open
                .get(&(Span::Move, vbucket_id(b, vb)))
                .map(|m| (m.pid, m.tid)),
            _ => None,
        };
        let (pid, tid, scope) = match on_move {
            Some((pid, tid)) if !global => (pid, tid, "t"),
            _ => {
                let process = ev.node().or(ev.host()).unwrap_or(CLUSTER_PROCESS);
                let pid = self.process(process)?;
                (pid, 0, if global { "g" } else { "p" })
            }
        };
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(b"{\"name\":\"");
        buf.extend_from_slice(ev.type_name().as_bytes());
        buf.extend_from_slice(b"\",\"cat\":\"event\",\"ph\":\"i\",\"s\":\"");
        buf.extend_from_slice(scope.as_bytes());
        buf.extend_from_slice(b"\",\"ts\":");
        write_num(buf, ts);
        buf.extend_from_slice(b",\"pid\":");
        write_num(buf, pid as i64);
        buf.extend_from_slice(b",\"tid\":");
        write_num(buf, tid as i64);
        buf.extend_from_slice(b",\"args\":");
        let at = buf.len();
        serde_json::to_writer(&mut *buf, ev)?;
        if unmatched {
            buf.pop();
            if buf.len() > at + 1 {
                buf.push(b',');
            }
            buf.extend_from_slice(b"\"unmatched\":true}");
        }
        buf.push(b'}');
        self.stats.instants += 1;
        self.emit()
    }

    /// Writes the event in `buf`, with the separator it needs.
    fn emit(&mut self) -> Result<(), Error> {
        if self.wrote_any {
            self.out.write_all(b",\n")?;
        }
        self.wrote_any = true;
        self.out.write_all(&self.buf)?;
        Ok(())
    }

    /// Closes the spans still open at the last timestamp seen (in start order, marked
    /// `unfinished`), ends the document, flushes, and hands back the output.
    pub fn finish(mut self) -> Result<(W, TraceStats), Error> {
        let mut open: Vec<((Span, String), OpenSpan)> = self.open.drain().collect();
        open.sort_by_key(|(_, span)| (span.start, span.pid, span.tid));
        let last = self.last_ts.unwrap_or(0);
        for ((kind, _), span) in open {
            self.close(span, kind, last, None)?;
        }
        self.out.write_all(b"\n],\"displayTimeUnit\":\"ms\"}\n")?;
        self.out.flush()?;
        Ok((self.out, self.stats))
    }
}

fn write_num(buf: &mut Vec<u8>, n: i64) {
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "{n}");
}

/// Reads every record of `reader` and writes its trace to `out` (give it a buffered
/// writer). Returns what was read and what was written.
pub fn write_trace<R: BufRead, W: Write>(
    mut reader: LogReader<'_, R>,
    out: W,
    options: TraceOptions,
) -> Result<(ReadSummary, TraceStats), Error> {
    let mut trace = TraceWriter::with_options(out, options)?;
    while let Some(rec) = reader.next_record()? {
        trace.observe(&rec)?;
    }
    let (_, stats) = trace.finish()?;
    Ok((reader.into_summary(), stats))
}
