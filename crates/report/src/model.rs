//! What an analysis yields: the rebalance reports, the in-flight moves and the
//! per-move rows, as plain data.
//!
//! Owns: the result types ([`RebalanceReport`], [`BucketReport`], [`SlowMove`],
//! [`Inflight`], [`MoveRow`], [`Anomalies`], [`Analysis`]) and their JSON shape.
//!
//! Promises: these are snapshots — building them never changes the analyzer; every
//! duration is non-negative (a span whose end is stamped before its start counts as
//! zero); in JSON, timestamps and durations are seconds (numbers, microsecond
//! precision) and field names are camelCase, as on the wire.

use std::time::Duration;

use master_events_events::{CompactString, Timestamp};
use serde::Serialize;

use crate::read::ReadSummary;
use crate::secs;
use crate::stats::DurationStats;

/// Whether a move changes which node holds the active copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MoveKind {
    /// The first host of the chain changes (`chainBefore[0] != chainAfter[0]`).
    Active,
    /// The active host stays; only replicas move.
    Replica,
}

impl MoveKind {
    /// The kind of a move from `before` to `after`: active when their first entries
    /// differ (an empty chain counts as an empty first entry).
    pub fn of(before: &[CompactString], after: &[CompactString]) -> MoveKind {
        if before.first().map(CompactString::as_str).unwrap_or("")
            != after.first().map(CompactString::as_str).unwrap_or("")
        {
            MoveKind::Active
        } else {
            MoveKind::Replica
        }
    }

    /// `"active"` or `"replica"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveKind::Active => "active",
            MoveKind::Replica => "replica",
        }
    }
}

/// Where a move stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MoveStatus {
    /// `vbucketMoveDone` was seen.
    Done,
    /// Started and neither done nor aborted when the input ended.
    InFlight,
    /// Ended without `vbucketMoveDone`: its mover terminated abnormally, or the same
    /// vbucket's move started again.
    Aborted,
}

impl MoveStatus {
    /// `"done"`, `"inFlight"` or `"aborted"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveStatus::Done => "done",
            MoveStatus::InFlight => "inFlight",
            MoveStatus::Aborted => "aborted",
        }
    }
}

/// One vbucket move: `vbucketMoveStart` to `vbucketMoveDone` for one bucket and
/// vbucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveRow {
    /// The bucket.
    pub bucket: CompactString,
    /// The vbucket.
    pub vbucket: u16,
    /// The node running the mover, from `vbucketMoveStart`.
    pub node: CompactString,
    /// The rebalance it belongs to: an index into the reports of
    /// [`crate::Analyzer::rebalances`] (and [`Analysis::rebalances`]); `None` for a
    /// move started outside any rebalance. Lets a caller draw one rebalance's moves.
    pub rebalance: Option<usize>,
    /// When the move started.
    pub start: Timestamp,
    /// When it was done or aborted; `None` while in flight.
    pub end: Option<Timestamp>,
    /// From start to end; for a move in flight, to the last timestamp seen.
    #[serde(serialize_with = "secs::serialize")]
    pub duration: Duration,
    /// The chain before the move (hosts, active first; `""` for an empty slot).
    pub chain_before: Vec<CompactString>,
    /// The chain after the move.
    pub chain_after: Vec<CompactString>,
    /// Active or replica move.
    pub kind: MoveKind,
    /// Done, in flight or aborted.
    pub status: MoveStatus,
    /// Why an aborted move was aborted (the mover's exit reason, or `restarted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When `backfillPhaseEnded` was seen for this move.
    pub backfill_end: Option<Timestamp>,
    /// When `takeoverStarted` was seen for this move.
    pub takeover_start: Option<Timestamp>,
    /// When `takeoverEnded` was seen for this move.
    pub takeover_end: Option<Timestamp>,
    /// Move start to `backfillPhaseEnded`, when that was seen.
    #[serde(serialize_with = "secs::serialize_opt")]
    pub backfill: Option<Duration>,
    /// `takeoverStarted` to `takeoverEnded`, when both were seen.
    #[serde(serialize_with = "secs::serialize_opt")]
    pub takeover: Option<Duration>,
}

/// A vbucket move among the slowest of a rebalance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlowMove {
    /// How long it took.
    #[serde(serialize_with = "secs::serialize")]
    pub duration: Duration,
    /// The bucket.
    pub bucket: CompactString,
    /// The vbucket.
    pub vbucket: u16,
    /// The node running the mover.
    pub node: CompactString,
    /// When it started.
    pub start: Timestamp,
    /// Active or replica move.
    pub kind: MoveKind,
}

/// One bucket's moves within one rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketReport {
    /// The bucket.
    pub bucket: CompactString,
    /// Moves started.
    pub moves: u64,
    /// Of those, active moves.
    pub active_moves: u64,
    /// Of those, replica moves.
    pub replica_moves: u64,
    /// Moves done.
    pub done: u64,
    /// Moves still in flight at the end of the input.
    pub in_flight: u64,
    /// Moves aborted.
    pub aborted: u64,
    /// Durations of the moves done (start to done).
    pub move_duration: DurationStats,
    /// Backfill durations (move start to `backfillPhaseEnded`) of the moves done.
    pub backfill: DurationStats,
    /// Takeover durations (`takeoverStarted` to `takeoverEnded`) of the moves done.
    pub takeover: DurationStats,
    /// Time spent waiting for seqnos (`seqnoWaitingStarted` to `seqnoWaitingEnded`),
    /// summed over every wait (concurrent waits on different nodes each count).
    #[serde(serialize_with = "secs::serialize")]
    pub seqno_wait: Duration,
    /// Time spent waiting for indexes (`waitIndexUpdatedStarted` to
    /// `waitIndexUpdatedEnded`), summed over every wait.
    #[serde(serialize_with = "secs::serialize")]
    pub index_wait: Duration,
}

/// One rebalance: `rebalanceStart` to `rebalanceEnd` with the same pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceReport {
    /// The rebalancer's pid.
    pub pid: CompactString,
    /// When it started.
    pub start: Timestamp,
    /// When it ended; `None` if no `rebalanceEnd` was seen.
    pub end: Option<Timestamp>,
    /// From start to end; unfinished, to the last timestamp seen.
    #[serde(serialize_with = "secs::serialize")]
    pub duration: Duration,
    /// The end's reason (`normal`, `stopped`, an error), or `unfinished`.
    pub outcome: String,
    /// Hosts that stay in the cluster.
    pub keep_nodes: Vec<CompactString>,
    /// Hosts being removed.
    pub eject_nodes: Vec<CompactString>,
    /// Failed-over hosts being removed.
    pub failed_nodes: Vec<CompactString>,
    /// Hosts being delta-recovered.
    pub delta_nodes: Vec<CompactString>,
    /// Per bucket, in name order.
    pub buckets: Vec<BucketReport>,
    /// The slowest moves done, slowest first.
    pub slowest_moves: Vec<SlowMove>,
}

impl RebalanceReport {
    /// The outcome of a rebalance with no `rebalanceEnd`.
    pub const UNFINISHED: &'static str = "unfinished";
}

/// A move started and not done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InflightMove {
    /// The vbucket.
    pub vbucket: u16,
    /// The node running the mover.
    pub node: CompactString,
    /// When it started.
    pub start: Timestamp,
    /// How long ago it started, relative to [`Inflight::now`].
    #[serde(serialize_with = "secs::serialize")]
    pub age: Duration,
    /// Active or replica move.
    pub kind: MoveKind,
    /// The last event seen for this move (`vbucketMoveStart` at first).
    pub last_event: &'static str,
    /// When that event was seen.
    pub last_event_ts: Timestamp,
}

/// The moves in flight in one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InflightBucket {
    /// The bucket.
    pub bucket: CompactString,
    /// Its moves in flight, by vbucket.
    pub moves: Vec<InflightMove>,
}

/// The moves in flight, per bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inflight {
    /// The time ages are measured against; `None` if no timestamp was ever seen.
    pub now: Option<Timestamp>,
    /// Buckets with moves in flight, in name order.
    pub buckets: Vec<InflightBucket>,
}

impl Inflight {
    /// How many moves are in flight in all.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.moves.len()).sum()
    }

    /// Whether no move is in flight.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(|b| b.moves.is_empty())
    }
}

/// Events that did not fit the expected pairing, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Anomalies {
    /// Events without `ts` seen before any timestamp (ignored).
    pub untimed_events: u64,
    /// `rebalanceEnd` with no open `rebalanceStart` of that pid.
    pub unmatched_rebalance_ends: u64,
    /// `vbucketMoveDone` with no move in flight for that bucket and vbucket.
    pub unmatched_move_dones: u64,
    /// Moves started while not inside any rebalance (they are in the move rows and
    /// the in-flight set, but in no rebalance report).
    pub moves_outside_rebalance: u64,
    /// Events whose `ts` is earlier than one seen before them.
    pub out_of_order_ts: u64,
}

impl Anomalies {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Anomalies::default()
    }
}

/// Everything one pass over a log yields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// What was read (lines, events, bad lines).
    pub input: ReadSummary,
    /// Every rebalance, in start order.
    pub rebalances: Vec<RebalanceReport>,
    /// Moves in flight at the end of the input, aged against the last timestamp.
    pub inflight: Inflight,
    /// One row per move, in start order; empty unless the analyzer kept them
    /// ([`crate::AnalyzerOptions::keep_moves`]), apart from the moves in flight.
    pub moves: Vec<MoveRow>,
    /// Pairing anomalies.
    pub anomalies: Anomalies,
    /// The first and last timestamps seen.
    pub time_range: Option<(Timestamp, Timestamp)>,
}
