//! The event catalog: one struct per master activity event type, named after it.
//!
//! Owns: the field names and value types of every event type (the vocabulary of
//! ns_server's "master activity events"), and their doc comments, which become the
//! `description` of each property in the published JSON Schemas.
//!
//! Promises: every struct rejects unknown fields when parsed (`deny_unknown_fields`),
//! so a typo in an emitter is an error rather than a silently dropped field; field
//! names on the wire are camelCase exactly as ns_server writes them; the `type` tag
//! and the envelope (`ts`, `seq`, `origin`, `originSeq`) are not part of these
//! structs but of [`crate::Record`].

use std::collections::BTreeMap;

use compact_str::CompactString;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::redact::BucketParams;

#[cfg(test)]
use proptest_derive::Arbitrary;

/// A vbucket number (0–65535).
pub type VBucket = u16;

/// A state a vbucket can be in on a node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "lowercase")]
pub enum VBucketState {
    /// The node serves reads and writes for the vbucket.
    Active,
    /// The node holds a replica of the vbucket.
    Replica,
    /// The vbucket is being taken over by this node.
    Pending,
    /// The vbucket is not served by this node.
    Dead,
}

/// Which end of a DCP connection an event was observed on.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "lowercase")]
pub enum DcpSide {
    /// The consuming side (the node that receives mutations).
    Consumer,
    /// The producing side (the node that sends mutations).
    Producer,
}

#[cfg(test)]
pub(crate) mod strategies {
    //! proptest strategies for the field types that have no `Arbitrary` of their own.
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// A JSON object of scalar or small nested values.
    pub fn json_object() -> impl Strategy<Value = Map<String, Value>> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1.0e12f64..1.0e12).prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map("[a-zA-Z_]{1,10}", value, 0..5)
            .prop_map(|m| m.into_iter().collect())
    }

    /// An optional JSON object.
    pub fn opt_json_object() -> impl Strategy<Value = Option<Map<String, Value>>> {
        prop::option::of(json_object())
    }
}

/// A node became the cluster's master.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BecameMaster {
    /// Name of the node that became master, e.g. `n_0@10.17.2.163`.
    pub node: CompactString,
    /// Host (`ip:port`, IPv6 in brackets) of the node that became master.
    pub host: CompactString,
}

/// An ebucketmigrator (TAP-era vbucket mover) process started.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EbucketmigratorStart {
    /// The vbuckets the migrator moves.
    pub vbuckets: Vec<VBucket>,
    /// Checkpoint id per vbucket, keyed by the vbucket number written as a string.
    #[serde(deserialize_with = "crate::strict::checkpoints")]
    pub checkpoints: BTreeMap<VBucket, u64>,
    /// The user the migrator authenticates as.
    pub username: CompactString,
    /// Whether this migration is a takeover (the source gives up the vbuckets).
    pub takeover: bool,
    /// Source host (`ip:port`).
    pub src: CompactString,
    /// Destination host (`ip:port`).
    pub dst: CompactString,
    /// Erlang pid of the migrator process, an opaque string such as `<0.533.0>`.
    pub pid: CompactString,
    /// Name of the node running the migrator.
    pub node: CompactString,
    /// Name of the TAP stream.
    pub name: CompactString,
    /// The bucket being migrated.
    pub bucket: CompactString,
}

/// Some vbuckets were not ready when a migrator started.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotReadyVBuckets {
    /// The vbuckets that were not ready.
    pub vbuckets: Vec<VBucket>,
    /// Erlang pid of the migrator process.
    pub pid: CompactString,
}

/// An ebucketmigrator process terminated.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EbucketmigratorTerminate {
    /// Why the process ended (an Erlang exit reason, as text).
    pub reason: CompactString,
    /// Erlang pid of the migrator process.
    pub pid: CompactString,
}

/// A vbucket changed state on a node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VbucketStateChange {
    /// The vbucket number (0–65535).
    pub vbucket: VBucket,
    /// The vbucket's new state on the host.
    pub state: VBucketState,
    /// Host (`ip:port`) where the state changed.
    pub host: CompactString,
    /// The bucket the vbucket belongs to.
    pub bucket: CompactString,
    /// Extra state metadata (e.g. the replication topology), when the node sent some.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::strict::meta"
    )]
    #[cfg_attr(test, proptest(strategy = "strategies::opt_json_object()"))]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A bucket was created.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBucket {
    /// The bucket type, e.g. `membase`, `memcached`, `couchbase`, `ephemeral`.
    pub bucket_type: CompactString,
    /// The new bucket's name.
    pub bucket: CompactString,
    /// The bucket's parameters; any parameter whose key names a password or secret is
    /// replaced by `"*****"` when the event is built or parsed.
    pub params: BucketParams,
}

/// A bucket was deleted.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteBucket {
    /// The deleted bucket's name.
    pub bucket: CompactString,
}

/// A rebalance started.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RebalanceStart {
    /// Erlang pid of the rebalancer; `rebalanceEnd` carries the same pid.
    pub pid: CompactString,
    /// Hosts (`ip:port`) that stay in the cluster.
    pub keep_nodes: Vec<CompactString>,
    /// Hosts (`ip:port`) being removed from the cluster.
    pub eject_nodes: Vec<CompactString>,
    /// Hosts (`ip:port`) that had failed over and are being removed.
    pub failed_nodes: Vec<CompactString>,
    /// Hosts (`ip:port`) being recovered by delta recovery.
    pub delta_nodes: Vec<CompactString>,
}

/// A rebalance ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RebalanceEnd {
    /// How it ended: `normal`, `stopped`, or an error reason as text.
    pub reason: CompactString,
    /// Erlang pid of the rebalancer, as in its `rebalanceStart`.
    pub pid: CompactString,
}

/// A bucket's fast-forward map was reset.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetFastForwardMap {
    /// The bucket whose fast-forward map was reset.
    pub bucket: CompactString,
}

/// One vbucket's replication chain changed in a bucket's vbucket map.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMap {
    /// The vbucket number (0–65535).
    pub vbucket: VBucket,
    /// The bucket whose map changed.
    pub bucket: CompactString,
    /// The chain (hosts, active first; `""` for an empty slot) before the change.
    pub chain_before: Vec<CompactString>,
    /// The chain (hosts, active first; `""` for an empty slot) after the change.
    pub chain_after: Vec<CompactString>,
}

/// One vbucket's chain changed in a bucket's fast-forward map (the target of a rebalance).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateFastForwardMap {
    /// The vbucket number (0–65535).
    pub vbucket: VBucket,
    /// The bucket whose fast-forward map changed.
    pub bucket: CompactString,
    /// The chain (hosts, active first; `""` for an empty slot) before the change.
    pub chain_before: Vec<CompactString>,
    /// The chain (hosts, active first; `""` for an empty slot) after the change.
    pub chain_after: Vec<CompactString>,
}

/// A vbucket move started.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VbucketMoveStart {
    /// The vbucket number (0–65535).
    pub vbucket: VBucket,
    /// Erlang pid of the mover process.
    pub pid: CompactString,
    /// Name of the node running the mover.
    pub node: CompactString,
    /// The bucket the vbucket belongs to.
    pub bucket: CompactString,
    /// The chain (hosts, active first; `""` for an empty slot) before the move.
    pub chain_before: Vec<CompactString>,
    /// The chain (hosts, active first; `""` for an empty slot) after the move.
    pub chain_after: Vec<CompactString>,
}

/// A vbucket move finished.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VbucketMoveDone {
    /// The vbucket number (0–65535).
    pub vbucket: VBucket,
    /// The bucket the vbucket belongs to.
    pub bucket: CompactString,
}

/// Nodes were failed over (ns_server also uses this type for the end of a failover;
/// here the end is [`FailoverEnded`]).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    /// Hosts (`ip:port`) being failed over.
    pub hosts: Vec<CompactString>,
}

/// A failover ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverEnded {}

/// A TAP name was deregistered.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeregisterTapName {
    /// Name of the node where the deregistering process runs.
    pub pid_node: CompactString,
    /// Erlang pid of the deregistering process.
    pub pid: CompactString,
    /// The TAP name.
    pub name: CompactString,
    /// Host (`ip:port`) the TAP name was registered on.
    pub host: CompactString,
    /// The bucket of the TAP stream.
    pub bucket: CompactString,
}

/// A replicator's vbucket filter change started.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VbucketFilterChangeStarted {
    /// Erlang pid of the replicator.
    pub pid: CompactString,
    /// Name of the node running the replicator.
    pub node: CompactString,
}

/// Failover of one bucket started.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketFailoverStarted {
    /// Erlang pid of the process failing the bucket over.
    pub pid: CompactString,
    /// Name of the node running that process.
    pub node: CompactString,
    /// Hosts (`ip:port`) being failed over.
    pub hosts: Vec<CompactString>,
    /// The bucket being failed over.
    pub bucket: CompactString,
}

/// Failover of one bucket ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketFailoverEnded {
    /// Erlang pid of the process failing the bucket over.
    pub pid: CompactString,
    /// Name of the node running that process.
    pub node: CompactString,
    /// Hosts (`ip:port`) that were failed over.
    pub hosts: Vec<CompactString>,
    /// The bucket that was failed over.
    pub bucket: CompactString,
}

/// Rebalance of one bucket started.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketRebalanceStarted {
    /// Erlang pid of the bucket rebalancer.
    pub pid: CompactString,
    /// Name of the node running the bucket rebalancer.
    pub node: CompactString,
    /// The bucket being rebalanced.
    pub bucket: CompactString,
}

/// Rebalance of one bucket ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketRebalanceEnded {
    /// Erlang pid of the bucket rebalancer.
    pub pid: CompactString,
    /// Name of the node running the bucket rebalancer.
    pub node: CompactString,
    /// The bucket that was rebalanced.
    pub bucket: CompactString,
}

/// A node was renamed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NameChanged {
    /// The node's new name.
    pub node: CompactString,
    /// The node's host (`ip:port`).
    pub host: CompactString,
}

/// A rebalance stage started.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RebalanceStageStarted {
    /// The stage path, outermost first (e.g. `["data", "default"]`).
    pub stage: Vec<CompactString>,
    /// Nodes taking part in the stage.
    pub nodes: Vec<CompactString>,
}

/// A rebalance stage completed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RebalanceStageCompleted {
    /// The stage path, outermost first.
    pub stage: Vec<CompactString>,
}

/// Something notable happened within a rebalance stage.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RebalanceStageEvent {
    /// The stage path, outermost first.
    pub stage: Vec<CompactString>,
    /// What happened, as text.
    pub event: CompactString,
}

/// The auto-failover state machine changed its view of a node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutofailoverNodeStateChange {
    /// The node's previous state (e.g. `up`, `half_down`, `nearly_down`, `failover`).
    pub prev_state: CompactString,
    /// Name of the node.
    pub node: CompactString,
    /// The node's new state.
    pub new_state: CompactString,
    /// The state machine's counter for the node after the change.
    pub new_counter: i64,
}

/// Auto-failover of a node finished.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutofailoverDone {
    /// The outcome, as text.
    pub reason: CompactString,
    /// Name of the node that was failed over.
    pub node: CompactString,
}

/// A vbucket mover process terminated.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VbucketMoverTerminate {
    /// The vbucket number (0–65535).
    pub vbucket: VBucket,
    /// Why the mover ended (an Erlang exit reason, as text).
    pub reason: CompactString,
    /// Erlang pid of the mover process.
    pub pid: CompactString,
    /// Name of the node running the mover.
    pub node: CompactString,
    /// The bucket the vbucket belongs to.
    pub bucket: CompactString,
}

macro_rules! vbucket_phase {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
        #[cfg_attr(test, derive(Arbitrary))]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// The vbucket number (0–65535).
            pub vbucket: VBucket,
            /// The bucket the vbucket belongs to.
            pub bucket: CompactString,
        }
    )*};
}

vbucket_phase! {
    /// The backfill phase of a vbucket move started.
    BackfillPhaseStarted;
    /// The backfill phase of a vbucket move ended.
    BackfillPhaseEnded;
    /// A vbucket move started waiting for a snapshot.
    SnapshotWaitingStarted;
    /// A vbucket move stopped waiting for a snapshot.
    SnapshotWaitingEnded;
    /// A vbucket move started downloading a snapshot.
    SnapshotDownloadStarted;
    /// A vbucket move finished downloading a snapshot.
    SnapshotDownloadEnded;
    /// A vbucket move started importing a snapshot's encryption keys.
    SnapshotDeksImportStarted;
    /// A vbucket move finished importing a snapshot's encryption keys.
    SnapshotDeksImportEnded;
}

macro_rules! seqno_waiting {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
        #[cfg_attr(test, derive(Arbitrary))]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// The vbucket number (0–65535).
            pub vbucket: VBucket,
            /// The sequence number waited for.
            pub seqno: u64,
            /// Host (`ip:port`) of the node that is waited on.
            pub node: CompactString,
            /// The bucket the vbucket belongs to.
            pub bucket: CompactString,
        }
    )*};
}

seqno_waiting! {
    /// A vbucket move started waiting for a replica to reach a sequence number.
    SeqnoWaitingStarted;
    /// A vbucket move finished waiting for a replica to reach a sequence number.
    SeqnoWaitingEnded;
}

macro_rules! takeover {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
        #[cfg_attr(test, derive(Arbitrary))]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// The vbucket number (0–65535).
            pub vbucket: VBucket,
            /// Host (`ip:port`) of the vbucket's active copy before the takeover.
            pub old_master: CompactString,
            /// Host (`ip:port`) of the node taking the vbucket over.
            pub node: CompactString,
            /// The bucket the vbucket belongs to.
            pub bucket: CompactString,
        }
    )*};
}

takeover! {
    /// The takeover phase of a vbucket move started.
    TakeoverStarted;
    /// The takeover phase of a vbucket move ended.
    TakeoverEnded;
}

macro_rules! index_wait {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
        #[cfg_attr(test, derive(Arbitrary))]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// The vbucket number (0–65535).
            pub vbucket: VBucket,
            /// Host (`ip:port`) of the node doing the indexing.
            pub node: CompactString,
            /// The bucket the vbucket belongs to.
            pub bucket: CompactString,
        }
    )*};
}

index_wait! {
    /// Indexing of a moved vbucket was initiated.
    IndexingInitiated;
    /// A vbucket move started waiting for the indexes to catch up.
    WaitIndexUpdatedStarted;
    /// A vbucket move finished waiting for the indexes to catch up.
    WaitIndexUpdatedEnded;
}

macro_rules! compaction {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
        #[cfg_attr(test, derive(Arbitrary))]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// Host (`ip:port`) of the node whose compaction is concerned.
            pub node: CompactString,
            /// The bucket whose compaction is concerned.
            pub bucket: CompactString,
        }
    )*};
}

compaction! {
    /// View compaction was inhibited on a node during a rebalance.
    CompactionInhibited;
    /// Lifting a compaction inhibition started.
    CompactionUninhibitStarted;
    /// Lifting a compaction inhibition finished.
    CompactionUninhibitDone;
    /// A view compaction that had been inhibited was forced.
    ForcedPreviouslyInhibitedViewCompaction;
}

/// A DCP replicator (the process that streams mutations between two nodes) started.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DcpReplicatorStart {
    /// Name of the producing node.
    pub producer_node: CompactString,
    /// The producer-side connection (an Erlang pid, as text).
    pub producer_conn: CompactString,
    /// Erlang pid of the replicator.
    pub pid: CompactString,
    /// Name of the consuming node.
    pub consumer_node: CompactString,
    /// The consumer-side connection (an Erlang pid, as text).
    pub consumer_conn: CompactString,
    /// The DCP connection name.
    pub connection_name: CompactString,
    /// The bucket being replicated.
    pub bucket: CompactString,
}

/// A DCP replicator terminated.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DcpReplicatorTerminate {
    /// Name of the producing node.
    pub producer_node: CompactString,
    /// The producer-side connection (an Erlang pid, as text).
    pub producer_conn: CompactString,
    /// Erlang pid of the replicator.
    pub pid: CompactString,
    /// Name of the consuming node.
    pub consumer_node: CompactString,
    /// The consumer-side connection (an Erlang pid, as text).
    pub consumer_conn: CompactString,
    /// The DCP connection name.
    pub connection_name: CompactString,
    /// The bucket being replicated.
    pub bucket: CompactString,
    /// Why the replicator ended (an Erlang exit reason, as text).
    pub reason: CompactString,
}

/// A DCP stream was requested.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DcpAddStream {
    /// The vbucket number (0–65535).
    pub vbucket: VBucket,
    /// The kind of stream requested (e.g. `add`, `takeover`).
    pub stream_type: CompactString,
    /// Which end of the connection observed it.
    pub side: DcpSide,
    /// Erlang pid of the connection process.
    pub pid: CompactString,
    /// The DCP opaque that pairs the request with its response.
    pub opaque: u64,
    /// Name of the node that observed it.
    pub node: CompactString,
    /// The DCP connection name.
    pub connection_name: CompactString,
    /// The bucket of the stream.
    pub bucket: CompactString,
}

/// A DCP stream close was requested.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DcpCloseStream {
    /// The vbucket number (0–65535).
    pub vbucket: VBucket,
    /// Which end of the connection observed it.
    pub side: DcpSide,
    /// Erlang pid of the connection process.
    pub pid: CompactString,
    /// The DCP opaque that pairs the request with its response.
    pub opaque: u64,
    /// Name of the node that observed it.
    pub node: CompactString,
    /// The DCP connection name.
    pub connection_name: CompactString,
    /// The bucket of the stream.
    pub bucket: CompactString,
}

macro_rules! dcp_response {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
        #[cfg_attr(test, derive(Arbitrary))]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// The vbucket number (0–65535).
            pub vbucket: VBucket,
            /// Whether the request succeeded.
            pub success: bool,
            /// The response status, as text (e.g. `success`, `not_my_vbucket`).
            pub status: CompactString,
            /// Which end of the connection observed it.
            pub side: DcpSide,
            /// The raw DCP status code.
            pub raw_status: u64,
            /// Erlang pid of the connection process.
            pub pid: CompactString,
            /// The DCP opaque of the request this answers.
            pub opaque: u64,
            /// Name of the node that observed it.
            pub node: CompactString,
            /// The DCP connection name.
            pub connection_name: CompactString,
            /// The bucket of the stream.
            pub bucket: CompactString,
        }
    )*};
}

dcp_response! {
    /// The response to a DCP add-stream request.
    DcpAddStreamResponse;
    /// The response to a DCP close-stream request.
    DcpCloseStreamResponse;
}

/// A DCP set-vbucket-state message was observed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DcpSetVbucketState {
    /// The vbucket number (0–65535).
    pub vbucket: VBucket,
    /// The vbucket state being set.
    pub state: VBucketState,
    /// Erlang pid of the connection process.
    pub pid: CompactString,
    /// Name of the node that observed it.
    pub node: CompactString,
    /// The DCP connection name.
    pub connection_name: CompactString,
    /// The bucket of the vbucket.
    pub bucket: CompactString,
}

/// The set of nodes running a service changed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetServiceMap {
    /// Names of the nodes that now run the service.
    pub nodes: Vec<CompactString>,
    /// The service (e.g. `index`, `n1ql`, `fts`).
    pub service: CompactString,
}

/// Mounting a bucket's volumes on nodes started.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountingVolumesStarted {
    /// The volumes to mount, per node name.
    #[serde(deserialize_with = "crate::strict::volumes")]
    pub volumes: BTreeMap<String, Vec<String>>,
    /// Erlang pid of the process mounting them.
    pub pid: CompactString,
    /// Name of the node running that process.
    pub node: CompactString,
    /// The bucket whose volumes are mounted.
    pub bucket: CompactString,
}

/// Mounting a bucket's volumes on nodes ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Arbitrary))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountingVolumesEnded {
    /// Erlang pid of the process that mounted them.
    pub pid: CompactString,
    /// Name of the node running that process.
    pub node: CompactString,
    /// The bucket whose volumes were mounted.
    pub bucket: CompactString,
}
