//! Which events start and end which span, and how an end finds its start: the one
//! table of pairing rules, read by the analyzer ([`crate::Analyzer`]) and the trace
//! ([`crate::trace`]).
//!
//! Owns: [`PAIRS`] and [`edge`], which says what part an event plays in a pair.
//!
//! | span | start → end | keyed by |
//! |---|---|---|
//! | rebalance | `rebalanceStart` → `rebalanceEnd` | pid |
//! | rebalance stage | `rebalanceStageStarted` → `rebalanceStageCompleted` | stage path |
//! | bucket rebalance | `bucketRebalanceStarted` → `bucketRebalanceEnded` | pid, bucket |
//! | bucket failover | `bucketFailoverStarted` → `bucketFailoverEnded` | pid, bucket |
//! | vbucket move | `vbucketMoveStart` → `vbucketMoveDone` | bucket, vbucket |
//! | compaction uninhibit | `compactionUninhibitStarted` → `compactionUninhibitDone` | node, bucket |
//! | mounting volumes | `mountingVolumesStarted` → `mountingVolumesEnded` | pid, bucket |
//! | DCP replicator | `dcpReplicatorStart` → `dcpReplicatorTerminate` | pid |
//! | ebucketmigrator | `ebucketmigratorStart` → `ebucketmigratorTerminate` | pid |
//! | backfill (a move's phase) | `backfillPhaseStarted` → `backfillPhaseEnded` | bucket, vbucket |
//! | takeover (phase) | `takeoverStarted` → `takeoverEnded` | bucket, vbucket |
//! | snapshot wait (phase) | `snapshotWaitingStarted` → `snapshotWaitingEnded` | bucket, vbucket |
//! | snapshot download (phase) | `snapshotDownloadStarted` → `snapshotDownloadEnded` | bucket, vbucket |
//! | snapshot keys import (phase) | `snapshotDeksImportStarted` → `snapshotDeksImportEnded` | bucket, vbucket |
//! | seqno wait (phase) | `seqnoWaitingStarted` → `seqnoWaitingEnded` | bucket, vbucket, node |
//! | index wait (phase) | `waitIndexUpdatedStarted` → `waitIndexUpdatedEnded` | bucket, vbucket, node |
//!
//! Besides its end, a move is ended by a `vbucketMoverTerminate` of the same bucket
//! and vbucket whose `reason` is not `normal` ([`Role::Abort`]), if its `pid` is the
//! move's mover.
//!
//! Promises: [`edge`] gives a start or an end for exactly the event types of
//! [`PAIRS`], with the key its row names; what each reader does with a pair (a
//! restart, an end without a start, which spans it measures) is the reader's.

use master_events_events::{CompactString, Event, EventType};

/// A kind of span: something that starts with one event and ends with another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Span {
    Rebalance,
    Stage,
    BucketRebalance,
    BucketFailover,
    Move,
    Backfill,
    Takeover,
    SeqnoWaiting,
    SnapshotWaiting,
    SnapshotDownload,
    SnapshotDeksImport,
    WaitIndexUpdated,
    CompactionUninhibit,
    MountingVolumes,
    DcpReplicator,
    Ebucketmigrator,
}

/// The fields by which an end finds its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyBy {
    Pid,
    StagePath,
    PidBucket,
    NodeBucket,
    Vbucket,
    VbucketNode,
}

/// One row of the table: `start` → `end`, matched by `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pair {
    pub span: Span,
    pub start: EventType,
    pub end: EventType,
    pub key: KeyBy,
    /// The span's name in a trace (its `cat`).
    pub name: &'static str,
}

const fn pair(
    span: Span,
    start: EventType,
    end: EventType,
    key: KeyBy,
    name: &'static str,
) -> Pair {
    Pair {
        span,
        start,
        end,
        key,
        name,
    }
}

/// The pairing rules; see the module documentation.
pub(crate) const PAIRS: [Pair; 16] = {
    use EventType as T;
    use KeyBy as By;
    use Span as S;
    [
        pair(
            S::Rebalance,
            T::RebalanceStart,
            T::RebalanceEnd,
            By::Pid,
            "rebalance",
        ),
        pair(
            S::Stage,
            T::RebalanceStageStarted,
            T::RebalanceStageCompleted,
            By::StagePath,
            "rebalanceStage",
        ),
        pair(
            S::BucketRebalance,
            T::BucketRebalanceStarted,
            T::BucketRebalanceEnded,
            By::PidBucket,
            "bucketRebalance",
        ),
        pair(
            S::BucketFailover,
            T::BucketFailoverStarted,
            T::BucketFailoverEnded,
            By::PidBucket,
            "bucketFailover",
        ),
        pair(
            S::Move,
            T::VbucketMoveStart,
            T::VbucketMoveDone,
            By::Vbucket,
            "vbucketMove",
        ),
        pair(
            S::CompactionUninhibit,
            T::CompactionUninhibitStarted,
            T::CompactionUninhibitDone,
            By::NodeBucket,
            "compactionUninhibit",
        ),
        pair(
            S::MountingVolumes,
            T::MountingVolumesStarted,
            T::MountingVolumesEnded,
            By::PidBucket,
            "mountingVolumes",
        ),
        pair(
            S::DcpReplicator,
            T::DcpReplicatorStart,
            T::DcpReplicatorTerminate,
            By::Pid,
            "dcpReplicator",
        ),
        pair(
            S::Ebucketmigrator,
            T::EbucketmigratorStart,
            T::EbucketmigratorTerminate,
            By::Pid,
            "ebucketmigrator",
        ),
        pair(
            S::Backfill,
            T::BackfillPhaseStarted,
            T::BackfillPhaseEnded,
            By::Vbucket,
            "backfillPhase",
        ),
        pair(
            S::Takeover,
            T::TakeoverStarted,
            T::TakeoverEnded,
            By::Vbucket,
            "takeover",
        ),
        pair(
            S::SnapshotWaiting,
            T::SnapshotWaitingStarted,
            T::SnapshotWaitingEnded,
            By::Vbucket,
            "snapshotWaiting",
        ),
        pair(
            S::SnapshotDownload,
            T::SnapshotDownloadStarted,
            T::SnapshotDownloadEnded,
            By::Vbucket,
            "snapshotDownload",
        ),
        pair(
            S::SnapshotDeksImport,
            T::SnapshotDeksImportStarted,
            T::SnapshotDeksImportEnded,
            By::Vbucket,
            "snapshotDeksImport",
        ),
        pair(
            S::SeqnoWaiting,
            T::SeqnoWaitingStarted,
            T::SeqnoWaitingEnded,
            By::VbucketNode,
            "seqnoWaiting",
        ),
        pair(
            S::WaitIndexUpdated,
            T::WaitIndexUpdatedStarted,
            T::WaitIndexUpdatedEnded,
            By::VbucketNode,
            "waitIndexUpdated",
        ),
    ]
};

impl Span {
    /// This span's row of [`PAIRS`].
    pub(crate) fn pair(self) -> &'static Pair {
        PAIRS.iter().find(|p| p.span == self).unwrap_or(&PAIRS[0])
    }

    /// The span's name in a trace.
    pub(crate) fn name(self) -> &'static str {
        self.pair().name
    }

    /// A phase of a vbucket move (drawn inside its move when one is open).
    pub(crate) fn is_move_phase(self) -> bool {
        matches!(
            self,
            Span::Backfill
                | Span::Takeover
                | Span::SnapshotWaiting
                | Span::SnapshotDownload
                | Span::SnapshotDeksImport
                | Span::SeqnoWaiting
                | Span::WaitIndexUpdated
        )
    }
}

/// The values an end is matched to its start by, borrowed from the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    Pid(&'a str),
    StagePath(&'a [CompactString]),
    PidBucket(&'a str, &'a str),
    NodeBucket(&'a str, &'a str),
    Vbucket(&'a str, u16),
    VbucketNode(&'a str, u16, &'a str),
}

impl<'a> Key<'a> {
    /// Which fields these are.
    pub(crate) fn by(&self) -> KeyBy {
        match self {
            Key::Pid(_) => KeyBy::Pid,
            Key::StagePath(_) => KeyBy::StagePath,
            Key::PidBucket(..) => KeyBy::PidBucket,
            Key::NodeBucket(..) => KeyBy::NodeBucket,
            Key::Vbucket(..) => KeyBy::Vbucket,
            Key::VbucketNode(..) => KeyBy::VbucketNode,
        }
    }

    /// The bucket and vbucket, for a move or a phase of one.
    pub(crate) fn vbucket(&self) -> Option<(&'a str, u16)> {
        match *self {
            Key::Vbucket(bucket, vbucket) | Key::VbucketNode(bucket, vbucket, _) => {
                Some((bucket, vbucket))
            }
            _ => None,
        }
    }

    /// The key as one owned string (its fields joined by NUL), to keep in a map.
    pub(crate) fn id(&self) -> String {
        match self {
            Key::Pid(pid) => (*pid).to_owned(),
            Key::StagePath(path) => path.join("\u{0}"),
            Key::PidBucket(a, b) | Key::NodeBucket(a, b) => format!("{a}\u{0}{b}"),
            Key::Vbucket(bucket, vbucket) => vbucket_id(bucket, *vbucket),
            Key::VbucketNode(bucket, vbucket, node) => format!("{bucket}\u{0}{vbucket}\u{0}{node}"),
        }
    }
}

/// [`Key::id`] of a move of `bucket`'s `vbucket`.
pub(crate) fn vbucket_id(bucket: &str, vbucket: u16) -> String {
    format!("{bucket}\u{0}{vbucket}")
}

/// What an event does to its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role<'a> {
    Start,
    End,
    /// Ends the open move of its key if `pid` is that move's mover (a
    /// `vbucketMoverTerminate` whose `reason` is not `normal`).
    Abort {
        pid: &'a str,
        reason: &'a str,
    },
}

/// An event's part in a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edge<'a> {
    pub span: Span,
    pub role: Role<'a>,
    pub key: Key<'a>,
}

/// The part `event` plays in a pair, if any; see the module documentation.
pub(crate) fn edge(event: &Event) -> Option<Edge<'_>> {
    if let Event::VbucketMoverTerminate(e) = event {
        return (e.reason != "normal").then_some(Edge {
            span: Span::Move,
            role: Role::Abort {
                pid: &e.pid,
                reason: &e.reason,
            },
            key: Key::Vbucket(&e.bucket, e.vbucket),
        });
    }
    let ty = event.event_type();
    let pair = PAIRS.iter().find(|p| p.start == ty || p.end == ty)?;
    let key = key_of(event).filter(|k| k.by() == pair.key)?;
    let role = if pair.start == ty {
        Role::Start
    } else {
        Role::End
    };
    Some(Edge {
        span: pair.span,
        role,
        key,
    })
}

/// The key fields of an event that starts or ends a span.
fn key_of(event: &Event) -> Option<Key<'_>> {
    use Event as E;
    Some(match event {
        E::RebalanceStart(e) => Key::Pid(&e.pid),
        E::RebalanceEnd(e) => Key::Pid(&e.pid),
        E::RebalanceStageStarted(e) => Key::StagePath(&e.stage),
        E::RebalanceStageCompleted(e) => Key::StagePath(&e.stage),
        E::BucketRebalanceStarted(e) => Key::PidBucket(&e.pid, &e.bucket),
        E::BucketRebalanceEnded(e) => Key::PidBucket(&e.pid, &e.bucket),
        E::BucketFailoverStarted(e) => Key::PidBucket(&e.pid, &e.bucket),
        E::BucketFailoverEnded(e) => Key::PidBucket(&e.pid, &e.bucket),
        E::VbucketMoveStart(e) => Key::Vbucket(&e.bucket, e.vbucket),
        E::VbucketMoveDone(e) => Key::Vbucket(&e.bucket, e.vbucket),
        E::CompactionUninhibitStarted(e) => Key::NodeBucket(&e.node, &e.bucket),
        E::CompactionUninhibitDone(e) => Key::NodeBucket(&e.node, &e.bucket),
        E::MountingVolumesStarted(e) => Key::PidBucket(&e.pid, &e.bucket),
        E::MountingVolumesEnded(e) => Key::PidBucket(&e.pid, &e.bucket),
        E::DcpReplicatorStart(e) => Key::Pid(&e.pid),
        E::DcpReplicatorTerminate(e) => Key::Pid(&e.pid),
        E::EbucketmigratorStart(e) => Key::Pid(&e.pid),
        E::EbucketmigratorTerminate(e) => Key::Pid(&e.pid),
        E::BackfillPhaseStarted(e) => Key::Vbucket(&e.bucket, e.vbucket),
        E::BackfillPhaseEnded(e) => Key::Vbucket(&e.bucket, e.vbucket),
        E::TakeoverStarted(e) => Key::Vbucket(&e.bucket, e.vbucket),
        E::TakeoverEnded(e) => Key::Vbucket(&e.bucket, e.vbucket),
        E::SnapshotWaitingStarted(e) => Key::Vbucket(&e.bucket, e.vbucket),
        E::SnapshotWaitingEnded(e) => Key::Vbucket(&e.bucket, e.vbucket),
        E::SnapshotDownloadStarted(e) => Key::Vbucket(&e.bucket, e.vbucket),
        E::SnapshotDownloadEnded(e) => Key::Vbucket(&e.bucket, e.vbucket),
        E::SnapshotDeksImportStarted(e) => Key::Vbucket(&e.bucket, e.vbucket),
        E::SnapshotDeksImportEnded(e) => Key::Vbucket(&e.bucket, e.vbucket),
        E::SeqnoWaitingStarted(e) => Key::VbucketNode(&e.bucket, e.vbucket, &e.node),
        E::SeqnoWaitingEnded(e) => Key::VbucketNode(&e.bucket, e.vbucket, &e.node),
        E::WaitIndexUpdatedStarted(e) => Key::VbucketNode(&e.bucket, e.vbucket, &e.node),
        E::WaitIndexUpdatedEnded(e) => Key::VbucketNode(&e.bucket, e.vbucket, &e.node),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use master_events_events::Record;
    use serde_json::{json, Map, Value};

    /// A valid event of type `ty` whose key fields are `pid` `<0.7.0>`, node `n_0@a`,
    /// bucket `b`, vbucket 7 and stage `["data", "b"]`; `reason` as given.
    fn sample(ty: EventType, reason: &str) -> Record {
        let fields: &[&str] = match ty.as_str() {
            "rebalanceStart" => &[
                "pid",
                "keepNodes",
                "ejectNodes",
                "failedNodes",
                "deltaNodes",
            ],
            "rebalanceEnd" | "ebucketmigratorTerminate" => &["pid", "reason"],
            "rebalanceStageStarted" => &["stage", "nodes"],
            "rebalanceStageCompleted" => &["stage"],
            "bucketRebalanceStarted" | "bucketRebalanceEnded" | "mountingVolumesEnded" => {
                &["pid", "node", "bucket"]
            }
            "bucketFailoverStarted" | "bucketFailoverEnded" => &["pid", "node", "hosts", "bucket"],
            "vbucketMoveStart" => &[
                "pid",
                "node",
                "bucket",
                "vbucket",
                "chainBefore",
                "chainAfter",
            ],
            "compactionUninhibitStarted" | "compactionUninhibitDone" => &["node", "bucket"],
            "mountingVolumesStarted" => &["pid", "node", "bucket", "volumes"],
            "dcpReplicatorStart" | "dcpReplicatorTerminate" => &[
                "pid",
                "bucket",
                "producerNode",
                "producerConn",
                "consumerNode",
                "consumerConn",
                "connectionName",
                "reason",
            ],
            "ebucketmigratorStart" => &[
                "pid",
                "node",
                "bucket",
                "name",
                "vbuckets",
                "checkpoints",
                "username",
                "takeover",
                "src",
                "dst",
            ],
            "takeoverStarted" | "takeoverEnded" => &["bucket", "vbucket", "node", "oldMaster"],
            "seqnoWaitingStarted" | "seqnoWaitingEnded" => &["bucket", "vbucket", "node", "seqno"],
            "waitIndexUpdatedStarted" | "waitIndexUpdatedEnded" => &["bucket", "vbucket", "node"],
            "vbucketMoverTerminate" => &["pid", "node", "bucket", "vbucket", "reason"],
            _ => &["bucket", "vbucket"],
        };
        let mut obj = Map::new();
        obj.insert("type".into(), json!(ty.as_str()));
        obj.insert("ts".into(), json!(1.0));
        for f in fields {
            let value = match *f {
                "pid" => json!("<0.7.0>"),
                "node" => json!("n_0@a"),
                "bucket" => json!("b"),
                "vbucket" => json!(7),
                "stage" => json!(["data", "b"]),
                "reason" => json!(reason),
                "seqno" => json!(1),
                "takeover" => json!(false),
                "volumes" | "checkpoints" => json!({}),
                "keepNodes" | "ejectNodes" | "failedNodes" | "deltaNodes" | "nodes" | "hosts"
                | "chainBefore" | "chainAfter" | "vbuckets" => json!([]),
                _ => json!("x"),
            };
            obj.insert((*f).into(), value);
        }
        // The start has no reason; the list is shared with the terminate.
        if ty == EventType::DcpReplicatorStart {
            obj.remove("reason");
        }
        let line = Value::Object(obj).to_string();
        Record::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    const STAGE: &[CompactString] = &[];

    /// The key `sample` gives for `by` (the stage path is checked on its own).
    fn expected_key(by: KeyBy) -> Key<'static> {
        match by {
            KeyBy::Pid => Key::Pid("<0.7.0>"),
            KeyBy::StagePath => Key::StagePath(STAGE),
            KeyBy::PidBucket => Key::PidBucket("<0.7.0>", "b"),
            KeyBy::NodeBucket => Key::NodeBucket("n_0@a", "b"),
            KeyBy::Vbucket => Key::Vbucket("b", 7),
            KeyBy::VbucketNode => Key::VbucketNode("b", 7, "n_0@a"),
        }
    }

    #[test]
    fn every_row_starts_and_ends_its_span_keyed_by_the_fields_it_names() {
        for p in PAIRS {
            for (ty, role) in [(p.start, Role::Start), (p.end, Role::End)] {
                let rec = sample(ty, "normal");
                let edge = edge(&rec.event).unwrap_or_else(|| panic!("{ty}: no edge"));
                assert_eq!((edge.span, edge.role), (p.span, role), "{ty}");
                match (edge.key, p.key) {
                    (Key::StagePath(path), KeyBy::StagePath) => {
                        assert_eq!(path, ["data", "b"], "{ty}")
                    }
                    (key, by) => assert_eq!(key, expected_key(by), "{ty}"),
                }
            }
        }
    }

    #[test]
    fn each_event_type_has_at_most_one_place_in_the_table() {
        for ty in EventType::ALL {
            let rows = PAIRS
                .iter()
                .filter(|p| p.start == *ty || p.end == *ty)
                .count();
            assert!(rows <= 1, "{ty} is in {rows} rows");
        }
        for p in PAIRS {
            assert_eq!(p.span.pair(), &p, "{:?} has one row", p.span);
        }
    }

    #[test]
    fn a_mover_that_dies_aborts_its_move_and_a_normal_exit_does_not() {
        let died = sample(EventType::VbucketMoverTerminate, "shutdown");
        assert_eq!(
            edge(&died.event),
            Some(Edge {
                span: Span::Move,
                role: Role::Abort {
                    pid: "<0.7.0>",
                    reason: "shutdown"
                },
                key: Key::Vbucket("b", 7),
            })
        );
        let normal = sample(EventType::VbucketMoverTerminate, "normal");
        assert_eq!(edge(&normal.event), None);
    }
}
