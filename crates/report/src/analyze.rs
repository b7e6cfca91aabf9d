//! The analyzer: a state machine fed one [`Record`] at a time that pairs the start
//! and end events of rebalances, vbucket moves and their phases, and accumulates the
//! figures of the reports.
//!
//! Owns: what the reports make of the pairs of [`crate::pairs`] (which events start
//! and end a span, keyed how, is that table's), and the per-rebalance accumulators.
//! - A rebalance is `rebalanceStart` → `rebalanceEnd` with the same `pid`; its outcome
//!   is the end's `reason`, or `unfinished`.
//! - A move is `vbucketMoveStart` → `vbucketMoveDone` for the same bucket and
//!   vbucket; it belongs to the rebalance open when it started (the latest started,
//!   if several are). A `vbucketMoverTerminate` of the move's pid with a reason other
//!   than `normal`, or a second start of the same vbucket, aborts it.
//! - Phases of a move: backfill is move start → `backfillPhaseEnded` (its
//!   `backfillPhaseStarted` is not waited for); takeover is `takeoverStarted` →
//!   `takeoverEnded`; seqno and index waits are `seqnoWaitingStarted` →
//!   `seqnoWaitingEnded` and `waitIndexUpdatedStarted` → `waitIndexUpdatedEnded`,
//!   paired by bucket, vbucket and node, and summed per bucket. The other spans of
//!   the table (stages, snapshot phases, replicators, ...) are not measured here.
//! - Time: an event's time is its `ts`. An event without `ts` takes the latest
//!   timestamp seen before it; before any timestamp it is counted and ignored.
//!
//! Promises:
//! - Memory is proportional to what is in flight (open rebalances, moves and waits),
//!   plus, per completed move, three durations for the exact percentiles (24 bytes)
//!   and a bounded list of the slowest — not to the number of events. Move rows are
//!   kept only when asked ([`AnalyzerOptions::keep_moves`]) and can be drained as
//!   they complete ([`Analyzer::drain_finished_moves`]).
//! - Observing never fails and never panics: events that do not pair up are counted
//!   in [`Anomalies`].
//! - Reports are snapshots: [`Analyzer::rebalances`], [`Analyzer::inflight`] and
//!   [`Analyzer::moves`] can be called at any time (e.g. by a live page) without
//!   disturbing the analysis.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::{self, BufRead};
use std::time::Duration;

use master_events_events::catalog::{RebalanceStart, VbucketMoveStart};
use master_events_events::{CompactString, Event, EventType, Record, Timestamp};

use crate::model::{
    Analysis, Anomalies, BucketReport, Inflight, InflightBucket, InflightMove, MoveKind, MoveRow,
    MoveStatus, RebalanceReport, SlowMove,
};
use crate::pairs::{self, Edge, Key, Role, Span};
use crate::read::LogReader;
use crate::stats::DurationStats;

/// How an [`Analyzer`] works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyzerOptions {
    /// How many of the slowest moves each rebalance report lists.
    pub slowest: usize,
    /// Keep a [`MoveRow`] for every finished move, for [`Analyzer::moves`] (memory
    /// grows with the number of moves until they are drained).
    pub keep_moves: bool,
}

impl Default for AnalyzerOptions {
    /// The 10 slowest moves; move rows not kept.
    fn default() -> Self {
        AnalyzerOptions {
            slowest: 10,
            keep_moves: false,
        }
    }
}

/// Pairs events into rebalances, moves and phases; see the module documentation.
///
/// ```
/// use master_events_report::{Analyzer, AnalyzerOptions};
/// use master_events_events::Record;
///
/// let log = [
///     r#"{"type":"rebalanceStart","ts":10.0,"pid":"<0.1.0>","keepNodes":["a:1","b:1"],"ejectNodes":[],"failedNodes":[],"deltaNodes":[]}"#,
///     r#"{"type":"vbucketMoveStart","ts":11.0,"pid":"<0.2.0>","node":"n_0@a","bucket":"default","vbucket":3,"chainBefore":["a:1","b:1"],"chainAfter":["b:1","a:1"]}"#,
///     r#"{"type":"vbucketMoveDone","ts":13.5,"bucket":"default","vbucket":3}"#,
///     r#"{"type":"rebalanceEnd","ts":14.0,"pid":"<0.1.0>","reason":"normal"}"#,
/// ];
/// let mut analyzer = Analyzer::new(AnalyzerOptions::default());
/// for line in log {
///     analyzer.observe(&Record::parse(line.as_bytes()).expect("valid line"));
/// }
/// let report = &analyzer.rebalances()[0];
/// assert_eq!(report.outcome, "normal");
/// assert_eq!(report.buckets[0].active_moves, 1);
/// assert_eq!(report.buckets[0].move_duration.max.as_secs_f64(), 2.5);
/// ```
#[derive(Debug, Clone)]
pub struct Analyzer {
    options: AnalyzerOptions,
    first_ts: Option<Timestamp>,
    last_ts: Option<Timestamp>,
    /// The latest master `ts` seen (its order is the stream's: a step back is an
    /// anomaly; `originTs` may step back between origins).
    last_master_ts: Option<Timestamp>,
    rebalances: Vec<RebalanceState>,
    /// Open rebalances, `(pid, index into rebalances)`, in start order.
    open: Vec<(CompactString, usize)>,
    /// Moves in flight: bucket → vbucket → move.
    inflight: HashMap<CompactString, HashMap<u16, MoveState>>,
    waits: HashMap<WaitKey, OpenWait>,
    finished: Vec<MoveRow>,
    anomalies: Anomalies,
}

#[derive(Debug, Clone)]
struct RebalanceState {
    pid: CompactString,
    start: Timestamp,
    end: Option<Timestamp>,
    reason: Option<String>,
    keep_nodes: Vec<CompactString>,
    eject_nodes: Vec<CompactString>,
    failed_nodes: Vec<CompactString>,
    delta_nodes: Vec<CompactString>,
    buckets: BTreeMap<CompactString, BucketAcc>,
    slowest: BinaryHeap<Reverse<SlowMove>>,
}

#[derive(Debug, Clone, Default)]
struct BucketAcc {
    moves: u64,
    active: u64,
    replica: u64,
    done: u64,
    aborted: u64,
    move_us: Vec<u64>,
    backfill_us: Vec<u64>,
    takeover_us: Vec<u64>,
    seqno_wait_us: u64,
    index_wait_us: u64,
}

#[derive(Debug, Clone)]
struct MoveState {
    rebalance: Option<usize>,
    pid: CompactString,
    node: CompactString,
    start: Timestamp,
    chain_before: Vec<CompactString>,
    chain_after: Vec<CompactString>,
    kind: MoveKind,
    backfill_end: Option<Timestamp>,
    takeover_start: Option<Timestamp>,
    takeover_end: Option<Timestamp>,
    last_event: EventType,
    last_event_ts: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum WaitKind {
    Seqno,
    Index,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WaitKey {
    kind: WaitKind,
    bucket: CompactString,
    vbucket: u16,
    node: CompactString,
}

#[derive(Debug, Clone, Copy)]
struct OpenWait {
    start: Timestamp,
    rebalance: Option<usize>,
}

/// Microseconds from `a` to `b`, zero if `b` is earlier.
fn micros_between(a: Timestamp, b: Timestamp) -> u64 {
    b.as_micros().saturating_sub(a.as_micros()).max(0) as u64
}

fn between(a: Timestamp, b: Timestamp) -> Duration {
    Duration::from_micros(micros_between(a, b))
}

impl Analyzer {
    /// An analyzer that has seen nothing.
    pub fn new(options: AnalyzerOptions) -> Self {
        Analyzer {
            options,
            first_ts: None,
            last_ts: None,
            last_master_ts: None,
            rebalances: Vec::new(),
            open: Vec::new(),
            inflight: HashMap::new(),
            waits: HashMap::new(),
            finished: Vec::new(),
            anomalies: Anomalies::default(),
        }
    }

    /// The latest timestamp seen so far.
    pub fn last_ts(&self) -> Option<Timestamp> {
        self.last_ts
    }

    /// The anomalies counted so far.
    pub fn anomalies(&self) -> &Anomalies {
        &self.anomalies
    }

    /// Takes in one event.
    pub fn observe(&mut self, rec: &Record) {
        if let Some(ts) = rec.envelope.ts {
            if self.last_master_ts.is_some_and(|last| ts < last) {
                self.anomalies.out_of_order_ts += 1;
            }
            self.last_master_ts = Some(self.last_master_ts.map_or(ts, |last| last.max(ts)));
        }
        // When it happened: at its origin when known (a follower's events may wait
        // in its queue before the master stamps `ts`), else when it was sequenced.
        let ts = match rec.envelope.origin_ts.or(rec.envelope.ts) {
            Some(ts) => {
                self.last_ts = Some(self.last_ts.map_or(ts, |last| last.max(ts)));
                self.first_ts = Some(self.first_ts.map_or(ts, |first| first.min(ts)));
                ts
            }
            None => match self.last_ts {
                Some(last) => last,
                None => {
                    self.anomalies.untimed_events += 1;
                    return;
                }
            },
        };
        if let Some(edge) = pairs::edge(&rec.event) {
            self.pair(&rec.event, edge, ts);
        }
        if let (Some(bucket), Some(vbucket)) = (rec.event.bucket(), rec.event.vbucket()) {
            let ty = rec.event.event_type();
            if let Some(m) = self.move_mut(bucket, vbucket) {
                m.last_event = ty;
                m.last_event_ts = ts;
            }
        }
    }

    /// Takes in an event's part in a pair (spans the reports do not measure are let
    /// by). The payloads of starts are read from `event`.
    fn pair(&mut self, event: &Event, edge: Edge<'_>, ts: Timestamp) {
        match (edge.span, edge.role, edge.key) {
            (Span::Rebalance, Role::Start, Key::Pid(_)) => {
                if let Event::RebalanceStart(e) = event {
                    self.rebalance_start(e, ts)
                }
            }
            (Span::Rebalance, Role::End, Key::Pid(pid)) => {
                if let Event::RebalanceEnd(e) = event {
                    self.rebalance_end(pid, &e.reason, ts)
                }
            }
            (Span::Move, Role::Start, Key::Vbucket(..)) => {
                if let Event::VbucketMoveStart(e) = event {
                    self.move_start(e, ts)
                }
            }
            (Span::Move, Role::End, Key::Vbucket(bucket, vbucket)) => {
                let found = self
                    .inflight
                    .get_mut(bucket)
                    .and_then(|m| m.remove(&vbucket));
                match found {
                    Some(m) => self.finish_move(bucket, vbucket, m, ts, MoveStatus::Done, None),
                    None => self.anomalies.unmatched_move_dones += 1,
                }
            }
            (Span::Move, Role::Abort { pid, reason }, Key::Vbucket(bucket, vbucket)) => {
                let found = self.inflight.get_mut(bucket).and_then(|m| {
                    if m.get(&vbucket).is_some_and(|s| s.pid == pid) {
                        m.remove(&vbucket)
                    } else {
                        None
                    }
                });
                if let Some(m) = found {
                    let reason = Some(reason.to_owned());
                    self.finish_move(bucket, vbucket, m, ts, MoveStatus::Aborted, reason);
                }
            }
            // The backfill is counted from the move's start to its end.
            (Span::Backfill, Role::End, Key::Vbucket(bucket, vbucket)) => {
                if let Some(m) = self.move_mut(bucket, vbucket) {
                    m.backfill_end.get_or_insert(ts);
                }
            }
            (Span::Takeover, Role::Start, Key::Vbucket(bucket, vbucket)) => {
                if let Some(m) = self.move_mut(bucket, vbucket) {
                    m.takeover_start = Some(ts);
                    m.takeover_end = None;
                }
            }
            (Span::Takeover, Role::End, Key::Vbucket(bucket, vbucket)) => {
                if let Some(m) = self.move_mut(bucket, vbucket) {
                    if m.takeover_start.is_some() {
                        m.takeover_end = Some(ts);
                    }
                }
            }
            (span @ (Span::SeqnoWaiting | Span::WaitIndexUpdated), role, key) => {
                let Key::VbucketNode(bucket, vbucket, node) = key else {
                    return;
                };
                let kind = match span {
                    Span::SeqnoWaiting => WaitKind::Seqno,
                    _ => WaitKind::Index,
                };
                match role {
                    Role::Start => self.wait_start(kind, bucket, vbucket, node, ts),
                    Role::End => self.wait_end(kind, bucket, vbucket, node, ts),
                    Role::Abort { .. } => {}
                }
            }
            _ => {}
        }
    }

    fn move_mut(&mut self, bucket: &str, vbucket: u16) -> Option<&mut MoveState> {
        self.inflight.get_mut(bucket)?.get_mut(&vbucket)
    }

    fn current_rebalance(&self) -> Option<usize> {
        self.open.last().map(|(_, i)| *i)
    }

    fn rebalance_start(&mut self, e: &RebalanceStart, ts: Timestamp) {
        let idx = self.rebalances.len();
        self.rebalances.push(RebalanceState {
            pid: e.pid.clone(),
            start: ts,
            end: None,
            reason: None,
            keep_nodes: e.keep_nodes.clone(),
            eject_nodes: e.eject_nodes.clone(),
            failed_nodes: e.failed_nodes.clone(),
            delta_nodes: e.delta_nodes.clone(),
            buckets: BTreeMap::new(),
            slowest: BinaryHeap::new(),
        });
        self.open.retain(|(pid, _)| *pid != e.pid);
        self.open.push((e.pid.clone(), idx));
    }

    fn rebalance_end(&mut self, pid: &str, reason: &str, ts: Timestamp) {
        match self.open.iter().position(|(open, _)| open == pid) {
            Some(pos) => {
                let (_, idx) = self.open.remove(pos);
                if let Some(r) = self.rebalances.get_mut(idx) {
                    r.end = Some(ts);
                    r.reason = Some(reason.to_owned());
                }
            }
            None => self.anomalies.unmatched_rebalance_ends += 1,
        }
    }

    fn bucket_acc(&mut self, rebalance: Option<usize>, bucket: &str) -> Option<&mut BucketAcc> {
        let r = self.rebalances.get_mut(rebalance?)?;
        if !r.buckets.contains_key(bucket) {
            r.buckets.insert(bucket.into(), BucketAcc::default());
        }
        r.buckets.get_mut(bucket)
    }

    fn move_start(&mut self, e: &VbucketMoveStart, ts: Timestamp) {
        let kind = MoveKind::of(&e.chain_before, &e.chain_after);
        let rebalance = self.current_rebalance();
        match self.bucket_acc(rebalance, &e.bucket) {
            Some(acc) => {
                acc.moves += 1;
                match kind {
                    MoveKind::Active => acc.active += 1,
                    MoveKind::Replica => acc.replica += 1,
                }
            }
            None => self.anomalies.moves_outside_rebalance += 1,
        }
        let state = MoveState {
            rebalance,
            pid: e.pid.clone(),
            node: e.node.clone(),
            start: ts,
            chain_before: e.chain_before.clone(),
            chain_after: e.chain_after.clone(),
            kind,
            backfill_end: None,
            takeover_start: None,
            takeover_end: None,
            last_event: EventType::VbucketMoveStart,
            last_event_ts: ts,
        };
        let per_bucket = match self.inflight.get_mut(&e.bucket) {
            Some(m) => m,
            None => self.inflight.entry(e.bucket.clone()).or_default(),
        };
        if let Some(old) = per_bucket.insert(e.vbucket, state) {
            let reason = Some("restarted".to_owned());
            self.finish_move(&e.bucket, e.vbucket, old, ts, MoveStatus::Aborted, reason);
        }
    }

    fn finish_move(
        &mut self,
        bucket: &str,
        vbucket: u16,
        m: MoveState,
        end: Timestamp,
        status: MoveStatus,
        reason: Option<String>,
    ) {
        let duration_us = micros_between(m.start, end);
        let backfill_us = m.backfill_end.map(|b| micros_between(m.start, b));
        let takeover_us = match (m.takeover_start, m.takeover_end) {
            (Some(s), Some(e)) => Some(micros_between(s, e)),
            _ => None,
        };
        let slowest = self.options.slowest;
        if let Some(acc) = self.bucket_acc(m.rebalance, bucket) {
            match status {
                MoveStatus::Done => {
                    acc.done += 1;
                    acc.move_us.push(duration_us);
                    acc.backfill_us.extend(backfill_us);
                    acc.takeover_us.extend(takeover_us);
                }
                MoveStatus::Aborted | MoveStatus::InFlight => acc.aborted += 1,
            }
        }
        if status == MoveStatus::Done && slowest > 0 {
            if let Some(r) = m.rebalance.and_then(|i| self.rebalances.get_mut(i)) {
                let duration = Duration::from_micros(duration_us);
                let qualifies = r.slowest.len() < slowest
                    || r.slowest
                        .peek()
                        .is_some_and(|Reverse(s)| duration > s.duration);
                if qualifies {
                    r.slowest.push(Reverse(SlowMove {
                        duration,
                        bucket: bucket.into(),
                        vbucket,
                        node: m.node.clone(),
                        start: m.start,
                        kind: m.kind,
                    }));
                    if r.slowest.len() > slowest {
                        r.slowest.pop();
                    }
                }
            }
        }
        if self.options.keep_moves {
            self.finished.push(MoveRow {
                bucket: bucket.into(),
                vbucket,
                node: m.node,
                rebalance: m.rebalance,
                start: m.start,
                end: Some(end),
                duration: Duration::from_micros(duration_us),
                chain_before: m.chain_before,
                chain_after: m.chain_after,
                kind: m.kind,
                status,
                reason,
                backfill_end: m.backfill_end,
                takeover_start: m.takeover_start,
                takeover_end: m.takeover_end,
                backfill: backfill_us.map(Duration::from_micros),
                takeover: takeover_us.map(Duration::from_micros),
            });
        }
    }

    fn wait_start(
        &mut self,
        kind: WaitKind,
        bucket: &str,
        vbucket: u16,
        node: &str,
        ts: Timestamp,
    ) {
        let rebalance = match self.move_mut(bucket, vbucket) {
            Some(m) => m.rebalance,
            None => self.current_rebalance(),
        };
        let key = WaitKey {
            kind,
            bucket: bucket.into(),
            vbucket,
            node: node.into(),
        };
        self.waits.insert(
            key,
            OpenWait {
                start: ts,
                rebalance,
            },
        );
    }

    fn wait_end(&mut self, kind: WaitKind, bucket: &str, vbucket: u16, node: &str, ts: Timestamp) {
        let key = WaitKey {
            kind,
            bucket: bucket.into(),
            vbucket,
            node: node.into(),
        };
        let Some(wait) = self.waits.remove(&key) else {
            return;
        };
        let us = micros_between(wait.start, ts);
        if let Some(acc) = self.bucket_acc(wait.rebalance, bucket) {
            match kind {
                WaitKind::Seqno => acc.seqno_wait_us = acc.seqno_wait_us.saturating_add(us),
                WaitKind::Index => acc.index_wait_us = acc.index_wait_us.saturating_add(us),
            }
        }
    }

    /// A report for every rebalance seen so far, in start order. A rebalance still
    /// open is reported as `unfinished`, its duration running to the last timestamp.
    pub fn rebalances(&self) -> Vec<RebalanceReport> {
        let mut in_flight: HashMap<(usize, &str), u64> = HashMap::new();
        for (bucket, moves) in &self.inflight {
            for m in moves.values() {
                if let Some(idx) = m.rebalance {
                    *in_flight.entry((idx, bucket.as_str())).or_default() += 1;
                }
            }
        }
        self.rebalances
            .iter()
            .enumerate()
            .map(|(idx, r)| {
                let until = r.end.or(self.last_ts).unwrap_or(r.start);
                let buckets = r
                    .buckets
                    .iter()
                    .map(|(name, acc)| BucketReport {
                        bucket: name.clone(),
                        moves: acc.moves,
                        active_moves: acc.active,
                        replica_moves: acc.replica,
                        done: acc.done,
                        in_flight: in_flight.get(&(idx, name.as_str())).copied().unwrap_or(0),
                        aborted: acc.aborted,
                        move_duration: DurationStats::from_micros(&mut acc.move_us.clone()),
                        backfill: DurationStats::from_micros(&mut acc.backfill_us.clone()),
                        takeover: DurationStats::from_micros(&mut acc.takeover_us.clone()),
                        seqno_wait: Duration::from_micros(acc.seqno_wait_us),
                        index_wait: Duration::from_micros(acc.index_wait_us),
                    })
                    .collect();
                let mut slowest: Vec<SlowMove> =
                    r.slowest.iter().map(|Reverse(s)| s.clone()).collect();
                slowest.sort_by(|a, b| b.cmp(a));
                RebalanceReport {
                    pid: r.pid.clone(),
                    start: r.start,
                    end: r.end,
                    duration: between(r.start, until),
                    outcome: r
                        .reason
                        .clone()
                        .unwrap_or_else(|| RebalanceReport::UNFINISHED.to_owned()),
                    keep_nodes: r.keep_nodes.clone(),
                    eject_nodes: r.eject_nodes.clone(),
                    failed_nodes: r.failed_nodes.clone(),
                    delta_nodes: r.delta_nodes.clone(),
                    buckets,
                    slowest_moves: slowest,
                }
            })
            .collect()
    }

    /// The moves started and not done, per bucket, aged against `now` (default: the
    /// last timestamp seen).
    pub fn inflight(&self, now: Option<Timestamp>) -> Inflight {
        let now = now.or(self.last_ts);
        let mut buckets: Vec<InflightBucket> = self
            .inflight
            .iter()
            .filter(|(_, moves)| !moves.is_empty())
            .map(|(bucket, moves)| {
                let mut moves: Vec<InflightMove> = moves
                    .iter()
                    .map(|(vb, m)| InflightMove {
                        vbucket: *vb,
                        node: m.node.clone(),
                        start: m.start,
                        age: now.map_or(Duration::ZERO, |now| between(m.start, now)),
                        kind: m.kind,
                        last_event: m.last_event.as_str(),
                        last_event_ts: m.last_event_ts,
                    })
                    .collect();
                moves.sort_by_key(|m| m.vbucket);
                InflightBucket {
                    bucket: bucket.clone(),
                    moves,
                }
            })
            .collect();
        buckets.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        Inflight { now, buckets }
    }

    /// One row per move, in start order: the finished moves kept (if
    /// [`AnalyzerOptions::keep_moves`], and not yet drained), then merged in, the moves
    /// in flight (status [`MoveStatus::InFlight`], duration up to the last timestamp).
    pub fn moves(&self) -> Vec<MoveRow> {
        let mut rows = self.finished.clone();
        rows.extend(self.inflight_rows());
        rows.sort_by(|a, b| (a.start, &a.bucket, a.vbucket).cmp(&(b.start, &b.bucket, b.vbucket)));
        rows
    }

    fn inflight_rows(&self) -> impl Iterator<Item = MoveRow> + '_ {
        self.inflight.iter().flat_map(move |(bucket, moves)| {
            moves.iter().map(move |(vb, m)| MoveRow {
                bucket: bucket.clone(),
                vbucket: *vb,
                node: m.node.clone(),
                rebalance: m.rebalance,
                start: m.start,
                end: None,
                duration: self
                    .last_ts
                    .map_or(Duration::ZERO, |now| between(m.start, now)),
                chain_before: m.chain_before.clone(),
                chain_after: m.chain_after.clone(),
                kind: m.kind,
                status: MoveStatus::InFlight,
                reason: None,
                backfill_end: m.backfill_end,
                takeover_start: m.takeover_start,
                takeover_end: m.takeover_end,
                backfill: m.backfill_end.map(|b| between(m.start, b)),
                takeover: match (m.takeover_start, m.takeover_end) {
                    (Some(s), Some(e)) => Some(between(s, e)),
                    _ => None,
                },
            })
        })
    }

    /// Hands over the rows of the moves finished (done or aborted) since the last
    /// call, in the order they finished; empty unless
    /// [`AnalyzerOptions::keep_moves`]. Lets a caller write rows as they complete
    /// instead of holding them all.
    pub fn drain_finished_moves(&mut self) -> Vec<MoveRow> {
        std::mem::take(&mut self.finished)
    }

    /// Everything this analyzer found, with the reader's summary.
    pub fn into_analysis(self, input: crate::read::ReadSummary) -> Analysis {
        Analysis {
            rebalances: self.rebalances(),
            inflight: self.inflight(None),
            moves: self.moves(),
            time_range: self.first_ts.zip(self.last_ts),
            anomalies: self.anomalies,
            input,
        }
    }
}

/// Reads every record of `reader` into an [`Analyzer`] and returns what it found.
/// Bad lines are counted in [`Analysis::input`]; only an I/O error fails.
///
/// ```
/// use master_events_report::{analyze, AnalyzerOptions, LogReader};
///
/// let log = "{\"type\":\"rebalanceStart\",\"ts\":1.0,\"pid\":\"<0.1.0>\",\"keepNodes\":[],\"ejectNodes\":[],\"failedNodes\":[],\"deltaNodes\":[]}\n\
///            garbage\n";
/// let analysis = analyze(LogReader::new(log.as_bytes()), AnalyzerOptions::default())?;
/// assert_eq!(analysis.rebalances[0].outcome, "unfinished");
/// assert_eq!(analysis.input.bad_lines, 1);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn analyze<R: BufRead>(
    mut reader: LogReader<'_, R>,
    options: AnalyzerOptions,
) -> io::Result<Analysis> {
    let mut analyzer = Analyzer::new(options);
    while let Some(rec) = reader.next_record()? {
        analyzer.observe(&rec);
    }
    Ok(analyzer.into_analysis(reader.into_summary()))
}
