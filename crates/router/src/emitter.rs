//! [`Emitter`]: the handle code notes events with.
//!
//! Promises: noting never blocks and never fails loudly at the call site; an event
//! that cannot be queued (ingress full, or its free room promised to publishers
//! waiting in line; router shut down) is counted
//! ([`Emitter::dropped`], `RouterStats::dropped`) and reported with a `tracing`
//! warning at most once a second — never lost silently.

use std::fmt;
use std::sync::Arc;

use master_events_events::catalog::{
    BecameMaster, CreateBucket, DeleteBucket, Failover, FailoverEnded, RebalanceEnd,
    RebalanceStart, UpdateMap, VBucket, VBucketState, VbucketMoveDone, VbucketMoveStart,
    VbucketStateChange,
};
use master_events_events::redact::BucketParams;
use master_events_events::{CompactString, Event, Record};

use crate::{RouterError, Shared};

/// A cheap, cloneable handle for noting events.
#[derive(Clone)]
pub struct Emitter {
    shared: Arc<Shared>,
}

/// A record that [`Emitter::try_note_record`] could not queue, given back.
#[derive(Debug, thiserror::Error)]
#[error("event not queued: {error}")]
pub struct Refused {
    /// The record, untouched.
    pub record: Box<Record>,
    /// Why it was not queued ([`RouterError::QueueFull`] or [`RouterError::Closed`]).
    pub error: RouterError,
}

impl Emitter {
    pub(crate) fn new(shared: Arc<Shared>) -> Emitter {
        Emitter { shared }
    }

    /// Notes an event. Never blocks: if the ingress is full (or its free room is
    /// promised to publishers waiting for it), the event is dropped, counted and
    /// warned about.
    pub fn note(&self, event: impl Into<Event>) {
        self.note_record(Record::new(event));
    }

    /// Notes a record (its `origin` and `originSeq` are kept; `seq` and `ts` are
    /// replaced by the sequencer). Never blocks, as [`Emitter::note`].
    pub fn note_record(&self, record: Record) {
        if let Err(refused) = self.shared.ingress.try_push(record) {
            self.shared.ingress.count_drop(refused.error);
        }
    }

    /// Queues a record if there is room, else gives it back (and counts nothing):
    /// for callers that have their own way to wait or retry.
    pub fn try_note_record(&self, record: Record) -> Result<(), Refused> {
        self.shared.ingress.try_push(record)
    }

    /// How many events were dropped since the router started (by every emitter).
    pub fn dropped(&self) -> u64 {
        self.shared.ingress.dropped()
    }

    /// `becameMaster`: `node` became the cluster's master.
    pub fn note_became_master(
        &self,
        node: impl Into<CompactString>,
        host: impl Into<CompactString>,
    ) {
        self.note(BecameMaster {
            node: node.into(),
            host: host.into(),
        });
    }

    /// `createBucket` (secrets in `params` are redacted by [`BucketParams`]).
    pub fn note_create_bucket(
        &self,
        bucket: impl Into<CompactString>,
        bucket_type: impl Into<CompactString>,
        params: BucketParams,
    ) {
        self.note(CreateBucket {
            bucket_type: bucket_type.into(),
            bucket: bucket.into(),
            params,
        });
    }

    /// `deleteBucket`.
    pub fn note_delete_bucket(&self, bucket: impl Into<CompactString>) {
        self.note(DeleteBucket {
            bucket: bucket.into(),
        });
    }

    /// `rebalanceStart`, with the hosts kept, ejected, failed over and delta-recovered.
    pub fn note_rebalance_start(
        &self,
        pid: impl Into<CompactString>,
        keep_nodes: Vec<CompactString>,
        eject_nodes: Vec<CompactString>,
        failed_nodes: Vec<CompactString>,
        delta_nodes: Vec<CompactString>,
    ) {
        self.note(RebalanceStart {
            pid: pid.into(),
            keep_nodes,
            eject_nodes,
            failed_nodes,
            delta_nodes,
        });
    }

    /// `rebalanceEnd`.
    pub fn note_rebalance_end(
        &self,
        pid: impl Into<CompactString>,
        reason: impl Into<CompactString>,
    ) {
        self.note(RebalanceEnd {
            reason: reason.into(),
            pid: pid.into(),
        });
    }

    /// `vbucketStateChange`.
    pub fn note_vbucket_state_change(
        &self,
        bucket: impl Into<CompactString>,
        vbucket: VBucket,
        state: VBucketState,
        host: impl Into<CompactString>,
    ) {
        self.note(VbucketStateChange {
            vbucket,
            state,
            host: host.into(),
            bucket: bucket.into(),
            meta: None,
        });
    }

    /// `updateMap`: one vbucket's chain changed.
    pub fn note_update_map(
        &self,
        bucket: impl Into<CompactString>,
        vbucket: VBucket,
        chain_before: Vec<CompactString>,
        chain_after: Vec<CompactString>,
    ) {
        self.note(UpdateMap {
            vbucket,
            bucket: bucket.into(),
            chain_before,
            chain_after,
        });
    }

    /// `vbucketMoveStart`.
    pub fn note_vbucket_move_start(
        &self,
        bucket: impl Into<CompactString>,
        vbucket: VBucket,
        node: impl Into<CompactString>,
        pid: impl Into<CompactString>,
        chain_before: Vec<CompactString>,
        chain_after: Vec<CompactString>,
    ) {
        self.note(VbucketMoveStart {
            vbucket,
            pid: pid.into(),
            node: node.into(),
            bucket: bucket.into(),
            chain_before,
            chain_after,
        });
    }

    /// `vbucketMoveDone`.
    pub fn note_vbucket_move_done(&self, bucket: impl Into<CompactString>, vbucket: VBucket) {
        self.note(VbucketMoveDone {
            vbucket,
            bucket: bucket.into(),
        });
    }

    /// `failover` of these hosts.
    pub fn note_failover(&self, hosts: Vec<CompactString>) {
        self.note(Failover { hosts });
    }

    /// `failoverEnded`.
    pub fn note_failover_ended(&self) {
        self.note(FailoverEnded {});
    }
}

impl fmt::Debug for Emitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter")
            .field("node", &self.shared.node)
            .field("dropped", &self.dropped())
            .finish()
    }
}
