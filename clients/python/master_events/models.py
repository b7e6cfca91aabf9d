"""Typed models of every master activity event and stream control frame.

Generated from schemas/ (schema set 1.0.0) by clients/python/generate.py;
do not edit: tests/test_models.py fails when this file differs from a fresh
generation."""

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

SCHEMA_VERSION = "1.0.0"


@dataclass(frozen=True, kw_only=True)
class Event:
    """Any event: the envelope every event line carries."""

    TYPE: ClassVar[str] = ""
    WIRE: ClassVar[dict[str, str]] = {}
    ENVELOPE: ClassVar[dict[str, str]] = {
        "origin": "origin",
        "origin_seq": "originSeq",
        "origin_ts": "originTs",
        "seq": "seq",
        "ts": "ts",
    }
    # Name of the node that noted the event.
    origin: Optional[str] = None
    # The event's position among the events noted by its origin (1, 2, 3, ...); the master uses it to drop duplicates when a node re-sends after a failure.
    origin_seq: Optional[int] = None
    # When the event was noted at its origin (seconds since the Unix epoch, microsecond precision), when that is not when the master sequenced it: a follower's events wait in its queue (seconds, during a change of master) before the master stamps `ts`. Durations measured between events use it when present. Absent when the event was noted on the master itself (`ts` is then the time).
    origin_ts: Optional[float] = None
    # The cluster cursor: a positive integer, strictly increasing along the stream, assigned by the master. Absent from lines written by ns_server.
    seq: Optional[int] = None
    # When the master sequenced the event: seconds since the Unix epoch with microsecond precision (e.g. 1333576052.926554).
    ts: Optional[float] = None
    # The line as received (every field, unknown ones included).
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class AutofailoverDone(Event):
    """Auto-failover of a node finished."""

    TYPE: ClassVar[str] = "autofailoverDone"
    WIRE: ClassVar[dict[str, str]] = {'node': 'node', 'reason': 'reason'}
    # Name of the node that was failed over.
    node: str
    # The outcome, as text.
    reason: str


@dataclass(frozen=True, kw_only=True)
class AutofailoverNodeStateChange(Event):
    """The auto-failover state machine changed its view of a node."""

    TYPE: ClassVar[str] = "autofailoverNodeStateChange"
    WIRE: ClassVar[dict[str, str]] = {'new_counter': 'newCounter', 'new_state': 'newState', 'node': 'node', 'prev_state': 'prevState'}
    # The state machine's counter for the node after the change.
    new_counter: int
    # The node's new state.
    new_state: str
    # Name of the node.
    node: str
    # The node's previous state (e.g. `up`, `half_down`, `nearly_down`, `failover`).
    prev_state: str


@dataclass(frozen=True, kw_only=True)
class BackfillPhaseEnded(Event):
    """The backfill phase of a vbucket move ended."""

    TYPE: ClassVar[str] = "backfillPhaseEnded"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class BackfillPhaseStarted(Event):
    """The backfill phase of a vbucket move started."""

    TYPE: ClassVar[str] = "backfillPhaseStarted"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class BecameMaster(Event):
    """A node became the cluster's master."""

    TYPE: ClassVar[str] = "becameMaster"
    WIRE: ClassVar[dict[str, str]] = {'host': 'host', 'node': 'node'}
    # Host (`ip:port`, IPv6 in brackets) of the node that became master.
    host: str
    # Name of the node that became master, e.g. `n_0@10.17.2.163`.
    node: str


@dataclass(frozen=True, kw_only=True)
class BucketFailoverEnded(Event):
    """Failover of one bucket ended."""

    TYPE: ClassVar[str] = "bucketFailoverEnded"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'hosts': 'hosts', 'node': 'node', 'pid': 'pid'}
    # The bucket that was failed over.
    bucket: str
    # Hosts (`ip:port`) that were failed over.
    hosts: list[str]
    # Name of the node running that process.
    node: str
    # Erlang pid of the process failing the bucket over.
    pid: str


@dataclass(frozen=True, kw_only=True)
class BucketFailoverStarted(Event):
    """Failover of one bucket started."""

    TYPE: ClassVar[str] = "bucketFailoverStarted"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'hosts': 'hosts', 'node': 'node', 'pid': 'pid'}
    # The bucket being failed over.
    bucket: str
    # Hosts (`ip:port`) being failed over.
    hosts: list[str]
    # Name of the node running that process.
    node: str
    # Erlang pid of the process failing the bucket over.
    pid: str


@dataclass(frozen=True, kw_only=True)
class BucketRebalanceEnded(Event):
    """Rebalance of one bucket ended."""

    TYPE: ClassVar[str] = "bucketRebalanceEnded"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node', 'pid': 'pid'}
    # The bucket that was rebalanced.
    bucket: str
    # Name of the node running the bucket rebalancer.
    node: str
    # Erlang pid of the bucket rebalancer.
    pid: str


@dataclass(frozen=True, kw_only=True)
class BucketRebalanceStarted(Event):
    """Rebalance of one bucket started."""

    TYPE: ClassVar[str] = "bucketRebalanceStarted"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node', 'pid': 'pid'}
    # The bucket being rebalanced.
    bucket: str
    # Name of the node running the bucket rebalancer.
    node: str
    # Erlang pid of the bucket rebalancer.
    pid: str


@dataclass(frozen=True, kw_only=True)
class CompactionInhibited(Event):
    """View compaction was inhibited on a node during a rebalance."""

    TYPE: ClassVar[str] = "compactionInhibited"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node'}
    # The bucket whose compaction is concerned.
    bucket: str
    # Host (`ip:port`) of the node whose compaction is concerned.
    node: str


@dataclass(frozen=True, kw_only=True)
class CompactionUninhibitDone(Event):
    """Lifting a compaction inhibition finished."""

    TYPE: ClassVar[str] = "compactionUninhibitDone"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node'}
    # The bucket whose compaction is concerned.
    bucket: str
    # Host (`ip:port`) of the node whose compaction is concerned.
    node: str


@dataclass(frozen=True, kw_only=True)
class CompactionUninhibitStarted(Event):
    """Lifting a compaction inhibition started."""

    TYPE: ClassVar[str] = "compactionUninhibitStarted"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node'}
    # The bucket whose compaction is concerned.
    bucket: str
    # Host (`ip:port`) of the node whose compaction is concerned.
    node: str


@dataclass(frozen=True, kw_only=True)
class CreateBucket(Event):
    """A bucket was created."""

    TYPE: ClassVar[str] = "createBucket"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'bucket_type': 'bucketType', 'params': 'params'}
    # The new bucket's name.
    bucket: str
    # The bucket type, e.g. `membase`, `memcached`, `couchbase`, `ephemeral`.
    bucket_type: str
    # The bucket's parameters; any parameter whose key names a password or secret is replaced by `"*****"` when the event is built or parsed.
    params: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class DcpAddStream(Event):
    """A DCP stream was requested."""

    TYPE: ClassVar[str] = "dcpAddStream"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'connection_name': 'connectionName', 'node': 'node', 'opaque': 'opaque', 'pid': 'pid', 'side': 'side', 'stream_type': 'streamType', 'vbucket': 'vbucket'}
    # The bucket of the stream.
    bucket: str
    # The DCP connection name.
    connection_name: str
    # Name of the node that observed it.
    node: str
    # The DCP opaque that pairs the request with its response.
    opaque: int
    # Erlang pid of the connection process.
    pid: str
    # Which end of the connection observed it.
    side: str
    # The kind of stream requested (e.g. `add`, `takeover`).
    stream_type: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class DcpAddStreamResponse(Event):
    """The response to a DCP add-stream request."""

    TYPE: ClassVar[str] = "dcpAddStreamResponse"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'connection_name': 'connectionName', 'node': 'node', 'opaque': 'opaque', 'pid': 'pid', 'raw_status': 'rawStatus', 'side': 'side', 'status': 'status', 'success': 'success', 'vbucket': 'vbucket'}
    # The bucket of the stream.
    bucket: str
    # The DCP connection name.
    connection_name: str
    # Name of the node that observed it.
    node: str
    # The DCP opaque of the request this answers.
    opaque: int
    # Erlang pid of the connection process.
    pid: str
    # The raw DCP status code.
    raw_status: int
    # Which end of the connection observed it.
    side: str
    # The response status, as text (e.g. `success`, `not_my_vbucket`).
    status: str
    # Whether the request succeeded.
    success: bool
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class DcpCloseStream(Event):
    """A DCP stream close was requested."""

    TYPE: ClassVar[str] = "dcpCloseStream"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'connection_name': 'connectionName', 'node': 'node', 'opaque': 'opaque', 'pid': 'pid', 'side': 'side', 'vbucket': 'vbucket'}
    # The bucket of the stream.
    bucket: str
    # The DCP connection name.
    connection_name: str
    # Name of the node that observed it.
    node: str
    # The DCP opaque that pairs the request with its response.
    opaque: int
    # Erlang pid of the connection process.
    pid: str
    # Which end of the connection observed it.
    side: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class DcpCloseStreamResponse(Event):
    """The response to a DCP close-stream request."""

    TYPE: ClassVar[str] = "dcpCloseStreamResponse"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'connection_name': 'connectionName', 'node': 'node', 'opaque': 'opaque', 'pid': 'pid', 'raw_status': 'rawStatus', 'side': 'side', 'status': 'status', 'success': 'success', 'vbucket': 'vbucket'}
    # The bucket of the stream.
    bucket: str
    # The DCP connection name.
    connection_name: str
    # Name of the node that observed it.
    node: str
    # The DCP opaque of the request this answers.
    opaque: int
    # Erlang pid of the connection process.
    pid: str
    # The raw DCP status code.
    raw_status: int
    # Which end of the connection observed it.
    side: str
    # The response status, as text (e.g. `success`, `not_my_vbucket`).
    status: str
    # Whether the request succeeded.
    success: bool
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class DcpReplicatorStart(Event):
    """A DCP replicator (the process that streams mutations between two nodes) started."""

    TYPE: ClassVar[str] = "dcpReplicatorStart"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'connection_name': 'connectionName', 'consumer_conn': 'consumerConn', 'consumer_node': 'consumerNode', 'pid': 'pid', 'producer_conn': 'producerConn', 'producer_node': 'producerNode'}
    # The bucket being replicated.
    bucket: str
    # The DCP connection name.
    connection_name: str
    # The consumer-side connection (an Erlang pid, as text).
    consumer_conn: str
    # Name of the consuming node.
    consumer_node: str
    # Erlang pid of the replicator.
    pid: str
    # The producer-side connection (an Erlang pid, as text).
    producer_conn: str
    # Name of the producing node.
    producer_node: str


@dataclass(frozen=True, kw_only=True)
class DcpReplicatorTerminate(Event):
    """A DCP replicator terminated."""

    TYPE: ClassVar[str] = "dcpReplicatorTerminate"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'connection_name': 'connectionName', 'consumer_conn': 'consumerConn', 'consumer_node': 'consumerNode', 'pid': 'pid', 'producer_conn': 'producerConn', 'producer_node': 'producerNode', 'reason': 'reason'}
    # The bucket being replicated.
    bucket: str
    # The DCP connection name.
    connection_name: str
    # The consumer-side connection (an Erlang pid, as text).
    consumer_conn: str
    # Name of the consuming node.
    consumer_node: str
    # Erlang pid of the replicator.
    pid: str
    # The producer-side connection (an Erlang pid, as text).
    producer_conn: str
    # Name of the producing node.
    producer_node: str
    # Why the replicator ended (an Erlang exit reason, as text).
    reason: str


@dataclass(frozen=True, kw_only=True)
class DcpSetVbucketState(Event):
    """A DCP set-vbucket-state message was observed."""

    TYPE: ClassVar[str] = "dcpSetVbucketState"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'connection_name': 'connectionName', 'node': 'node', 'pid': 'pid', 'state': 'state', 'vbucket': 'vbucket'}
    # The bucket of the vbucket.
    bucket: str
    # The DCP connection name.
    connection_name: str
    # Name of the node that observed it.
    node: str
    # Erlang pid of the connection process.
    pid: str
    # The vbucket state being set.
    state: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class DeleteBucket(Event):
    """A bucket was deleted."""

    TYPE: ClassVar[str] = "deleteBucket"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket'}
    # The deleted bucket's name.
    bucket: str


@dataclass(frozen=True, kw_only=True)
class DeregisterTapName(Event):
    """A TAP name was deregistered."""

    TYPE: ClassVar[str] = "deregisterTapName"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'host': 'host', 'name': 'name', 'pid': 'pid', 'pid_node': 'pidNode'}
    # The bucket of the TAP stream.
    bucket: str
    # Host (`ip:port`) the TAP name was registered on.
    host: str
    # The TAP name.
    name: str
    # Erlang pid of the deregistering process.
    pid: str
    # Name of the node where the deregistering process runs.
    pid_node: str


@dataclass(frozen=True, kw_only=True)
class EbucketmigratorStart(Event):
    """An ebucketmigrator (TAP-era vbucket mover) process started."""

    TYPE: ClassVar[str] = "ebucketmigratorStart"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'checkpoints': 'checkpoints', 'dst': 'dst', 'name': 'name', 'node': 'node', 'pid': 'pid', 'src': 'src', 'takeover': 'takeover', 'username': 'username', 'vbuckets': 'vbuckets'}
    # The bucket being migrated.
    bucket: str
    # Checkpoint id per vbucket, keyed by the vbucket number written as a string.
    checkpoints: dict[str, Any]
    # Destination host (`ip:port`).
    dst: str
    # Name of the TAP stream.
    name: str
    # Name of the node running the migrator.
    node: str
    # Erlang pid of the migrator process, an opaque string such as `<0.533.0>`.
    pid: str
    # Source host (`ip:port`).
    src: str
    # Whether this migration is a takeover (the source gives up the vbuckets).
    takeover: bool
    # The user the migrator authenticates as.
    username: str
    # The vbuckets the migrator moves.
    vbuckets: list[int]


@dataclass(frozen=True, kw_only=True)
class EbucketmigratorTerminate(Event):
    """An ebucketmigrator process terminated."""

    TYPE: ClassVar[str] = "ebucketmigratorTerminate"
    WIRE: ClassVar[dict[str, str]] = {'pid': 'pid', 'reason': 'reason'}
    # Erlang pid of the migrator process.
    pid: str
    # Why the process ended (an Erlang exit reason, as text).
    reason: str


@dataclass(frozen=True, kw_only=True)
class Failover(Event):
    """Nodes were failed over (ns_server also uses this type for the end of a failover; here the end is [`FailoverEnded`])."""

    TYPE: ClassVar[str] = "failover"
    WIRE: ClassVar[dict[str, str]] = {'hosts': 'hosts'}
    # Hosts (`ip:port`) being failed over.
    hosts: list[str]


@dataclass(frozen=True, kw_only=True)
class FailoverEnded(Event):
    """A failover ended."""

    TYPE: ClassVar[str] = "failoverEnded"
    WIRE: ClassVar[dict[str, str]] = {}


@dataclass(frozen=True, kw_only=True)
class ForcedPreviouslyInhibitedViewCompaction(Event):
    """A view compaction that had been inhibited was forced."""

    TYPE: ClassVar[str] = "forcedPreviouslyInhibitedViewCompaction"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node'}
    # The bucket whose compaction is concerned.
    bucket: str
    # Host (`ip:port`) of the node whose compaction is concerned.
    node: str


@dataclass(frozen=True, kw_only=True)
class IndexingInitiated(Event):
    """Indexing of a moved vbucket was initiated."""

    TYPE: ClassVar[str] = "indexingInitiated"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # Host (`ip:port`) of the node doing the indexing.
    node: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class MountingVolumesEnded(Event):
    """Mounting a bucket's volumes on nodes ended."""

    TYPE: ClassVar[str] = "mountingVolumesEnded"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node', 'pid': 'pid'}
    # The bucket whose volumes were mounted.
    bucket: str
    # Name of the node running that process.
    node: str
    # Erlang pid of the process that mounted them.
    pid: str


@dataclass(frozen=True, kw_only=True)
class MountingVolumesStarted(Event):
    """Mounting a bucket's volumes on nodes started."""

    TYPE: ClassVar[str] = "mountingVolumesStarted"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node', 'pid': 'pid', 'volumes': 'volumes'}
    # The bucket whose volumes are mounted.
    bucket: str
    # Name of the node running that process.
    node: str
    # Erlang pid of the process mounting them.
    pid: str
    # The volumes to mount, per node name.
    volumes: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class NameChanged(Event):
    """A node was renamed."""

    TYPE: ClassVar[str] = "nameChanged"
    WIRE: ClassVar[dict[str, str]] = {'host': 'host', 'node': 'node'}
    # The node's host (`ip:port`).
    host: str
    # The node's new name.
    node: str


@dataclass(frozen=True, kw_only=True)
class NotReadyVBuckets(Event):
    """Some vbuckets were not ready when a migrator started."""

    TYPE: ClassVar[str] = "notReadyVBuckets"
    WIRE: ClassVar[dict[str, str]] = {'pid': 'pid', 'vbuckets': 'vbuckets'}
    # Erlang pid of the migrator process.
    pid: str
    # The vbuckets that were not ready.
    vbuckets: list[int]


@dataclass(frozen=True, kw_only=True)
class RebalanceEnd(Event):
    """A rebalance ended."""

    TYPE: ClassVar[str] = "rebalanceEnd"
    WIRE: ClassVar[dict[str, str]] = {'pid': 'pid', 'reason': 'reason'}
    # Erlang pid of the rebalancer, as in its `rebalanceStart`.
    pid: str
    # How it ended: `normal`, `stopped`, or an error reason as text.
    reason: str


@dataclass(frozen=True, kw_only=True)
class RebalanceStageCompleted(Event):
    """A rebalance stage completed."""

    TYPE: ClassVar[str] = "rebalanceStageCompleted"
    WIRE: ClassVar[dict[str, str]] = {'stage': 'stage'}
    # The stage path, outermost first.
    stage: list[str]


@dataclass(frozen=True, kw_only=True)
class RebalanceStageEvent(Event):
    """Something notable happened within a rebalance stage."""

    TYPE: ClassVar[str] = "rebalanceStageEvent"
    WIRE: ClassVar[dict[str, str]] = {'event': 'event', 'stage': 'stage'}
    # What happened, as text.
    event: str
    # The stage path, outermost first.
    stage: list[str]


@dataclass(frozen=True, kw_only=True)
class RebalanceStageStarted(Event):
    """A rebalance stage started."""

    TYPE: ClassVar[str] = "rebalanceStageStarted"
    WIRE: ClassVar[dict[str, str]] = {'nodes': 'nodes', 'stage': 'stage'}
    # Nodes taking part in the stage.
    nodes: list[str]
    # The stage path, outermost first (e.g. `["data", "default"]`).
    stage: list[str]


@dataclass(frozen=True, kw_only=True)
class RebalanceStart(Event):
    """A rebalance started."""

    TYPE: ClassVar[str] = "rebalanceStart"
    WIRE: ClassVar[dict[str, str]] = {'delta_nodes': 'deltaNodes', 'eject_nodes': 'ejectNodes', 'failed_nodes': 'failedNodes', 'keep_nodes': 'keepNodes', 'pid': 'pid'}
    # Hosts (`ip:port`) being recovered by delta recovery.
    delta_nodes: list[str]
    # Hosts (`ip:port`) being removed from the cluster.
    eject_nodes: list[str]
    # Hosts (`ip:port`) that had failed over and are being removed.
    failed_nodes: list[str]
    # Hosts (`ip:port`) that stay in the cluster.
    keep_nodes: list[str]
    # Erlang pid of the rebalancer; `rebalanceEnd` carries the same pid.
    pid: str


@dataclass(frozen=True, kw_only=True)
class ResetFastForwardMap(Event):
    """A bucket's fast-forward map was reset."""

    TYPE: ClassVar[str] = "resetFastForwardMap"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket'}
    # The bucket whose fast-forward map was reset.
    bucket: str


@dataclass(frozen=True, kw_only=True)
class SeqnoWaitingEnded(Event):
    """A vbucket move finished waiting for a replica to reach a sequence number."""

    TYPE: ClassVar[str] = "seqnoWaitingEnded"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node', 'seqno': 'seqno', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # Host (`ip:port`) of the node that is waited on.
    node: str
    # The sequence number waited for.
    seqno: int
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class SeqnoWaitingStarted(Event):
    """A vbucket move started waiting for a replica to reach a sequence number."""

    TYPE: ClassVar[str] = "seqnoWaitingStarted"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node', 'seqno': 'seqno', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # Host (`ip:port`) of the node that is waited on.
    node: str
    # The sequence number waited for.
    seqno: int
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class SetServiceMap(Event):
    """The set of nodes running a service changed."""

    TYPE: ClassVar[str] = "setServiceMap"
    WIRE: ClassVar[dict[str, str]] = {'nodes': 'nodes', 'service': 'service'}
    # Names of the nodes that now run the service.
    nodes: list[str]
    # The service (e.g. `index`, `n1ql`, `fts`).
    service: str


@dataclass(frozen=True, kw_only=True)
class SnapshotDeksImportEnded(Event):
    """A vbucket move finished importing a snapshot's encryption keys."""

    TYPE: ClassVar[str] = "snapshotDeksImportEnded"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class SnapshotDeksImportStarted(Event):
    """A vbucket move started importing a snapshot's encryption keys."""

    TYPE: ClassVar[str] = "snapshotDeksImportStarted"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class SnapshotDownloadEnded(Event):
    """A vbucket move finished downloading a snapshot."""

    TYPE: ClassVar[str] = "snapshotDownloadEnded"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class SnapshotDownloadStarted(Event):
    """A vbucket move started downloading a snapshot."""

    TYPE: ClassVar[str] = "snapshotDownloadStarted"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class SnapshotWaitingEnded(Event):
    """A vbucket move stopped waiting for a snapshot."""

    TYPE: ClassVar[str] = "snapshotWaitingEnded"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class SnapshotWaitingStarted(Event):
    """A vbucket move started waiting for a snapshot."""

    TYPE: ClassVar[str] = "snapshotWaitingStarted"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class TakeoverEnded(Event):
    """The takeover phase of a vbucket move ended."""

    TYPE: ClassVar[str] = "takeoverEnded"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node', 'old_master': 'oldMaster', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # Host (`ip:port`) of the node taking the vbucket over.
    node: str
    # Host (`ip:port`) of the vbucket's active copy before the takeover.
    old_master: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class TakeoverStarted(Event):
    """The takeover phase of a vbucket move started."""

    TYPE: ClassVar[str] = "takeoverStarted"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node', 'old_master': 'oldMaster', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # Host (`ip:port`) of the node taking the vbucket over.
    node: str
    # Host (`ip:port`) of the vbucket's active copy before the takeover.
    old_master: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class UpdateFastForwardMap(Event):
    """One vbucket's chain changed in a bucket's fast-forward map (the target of a rebalance)."""

    TYPE: ClassVar[str] = "updateFastForwardMap"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'chain_after': 'chainAfter', 'chain_before': 'chainBefore', 'vbucket': 'vbucket'}
    # The bucket whose fast-forward map changed.
    bucket: str
    # The chain (hosts, active first; `""` for an empty slot) after the change.
    chain_after: list[str]
    # The chain (hosts, active first; `""` for an empty slot) before the change.
    chain_before: list[str]
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class UpdateMap(Event):
    """One vbucket's replication chain changed in a bucket's vbucket map."""

    TYPE: ClassVar[str] = "updateMap"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'chain_after': 'chainAfter', 'chain_before': 'chainBefore', 'vbucket': 'vbucket'}
    # The bucket whose map changed.
    bucket: str
    # The chain (hosts, active first; `""` for an empty slot) after the change.
    chain_after: list[str]
    # The chain (hosts, active first; `""` for an empty slot) before the change.
    chain_before: list[str]
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class VbucketFilterChangeStarted(Event):
    """A replicator's vbucket filter change started."""

    TYPE: ClassVar[str] = "vbucketFilterChangeStarted"
    WIRE: ClassVar[dict[str, str]] = {'node': 'node', 'pid': 'pid'}
    # Name of the node running the replicator.
    node: str
    # Erlang pid of the replicator.
    pid: str


@dataclass(frozen=True, kw_only=True)
class VbucketMoveDone(Event):
    """A vbucket move finished."""

    TYPE: ClassVar[str] = "vbucketMoveDone"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class VbucketMoveStart(Event):
    """A vbucket move started."""

    TYPE: ClassVar[str] = "vbucketMoveStart"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'chain_after': 'chainAfter', 'chain_before': 'chainBefore', 'node': 'node', 'pid': 'pid', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # The chain (hosts, active first; `""` for an empty slot) after the move.
    chain_after: list[str]
    # The chain (hosts, active first; `""` for an empty slot) before the move.
    chain_before: list[str]
    # Name of the node running the mover.
    node: str
    # Erlang pid of the mover process.
    pid: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class VbucketMoverTerminate(Event):
    """A vbucket mover process terminated."""

    TYPE: ClassVar[str] = "vbucketMoverTerminate"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node', 'pid': 'pid', 'reason': 'reason', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # Name of the node running the mover.
    node: str
    # Erlang pid of the mover process.
    pid: str
    # Why the mover ended (an Erlang exit reason, as text).
    reason: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class VbucketStateChange(Event):
    """A vbucket changed state on a node."""

    TYPE: ClassVar[str] = "vbucketStateChange"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'host': 'host', 'meta': 'meta', 'state': 'state', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # Host (`ip:port`) where the state changed.
    host: str
    # Extra state metadata (e.g. the replication topology), when the node sent some.
    meta: Optional[dict[str, Any]] = None
    # The vbucket's new state on the host.
    state: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class WaitIndexUpdatedEnded(Event):
    """A vbucket move finished waiting for the indexes to catch up."""

    TYPE: ClassVar[str] = "waitIndexUpdatedEnded"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # Host (`ip:port`) of the node doing the indexing.
    node: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class WaitIndexUpdatedStarted(Event):
    """A vbucket move started waiting for the indexes to catch up."""

    TYPE: ClassVar[str] = "waitIndexUpdatedStarted"
    WIRE: ClassVar[dict[str, str]] = {'bucket': 'bucket', 'node': 'node', 'vbucket': 'vbucket'}
    # The bucket the vbucket belongs to.
    bucket: str
    # Host (`ip:port`) of the node doing the indexing.
    node: str
    # The vbucket number (0–65535).
    vbucket: int


@dataclass(frozen=True, kw_only=True)
class Control:
    """A stream control frame (not an event)."""

    TYPE: ClassVar[str] = ""
    WIRE: ClassVar[dict[str, str]] = {}
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class Gap(Control):
    """Says that events a reader asked for, or fell behind to, are no longer retained."""

    TYPE: ClassVar[str] = "gap"
    WIRE: ClassVar[dict[str, str]] = {'from_seq': 'fromSeq', 'missed': 'missed', 'reason': 'reason', 'to_seq': 'toSeq'}
    # The first `seq` that was missed.
    from_seq: int
    # How many events were missed (`toSeq - fromSeq + 1`).
    missed: int
    # Why they were missed, e.g. `evicted from the archive`.
    reason: str
    # The last `seq` that was missed (inclusive).
    to_seq: int


@dataclass(frozen=True, kw_only=True)
class Heartbeat(Control):
    """Sent on an idle stream so a client can tell a quiet cluster from a dead connection."""

    TYPE: ClassVar[str] = "heartbeat"
    WIRE: ClassVar[dict[str, str]] = {'history': 'history', 'seq': 'seq', 'ts': 'ts'}
    # The history the stream belongs to (see [`Reset`]): a client resumes with `since=<seq>&history=<history>`. Absent in frames of older servers.
    history: Optional[str] = None
    # The `seq` of the last event sent on this stream (0 when none was).
    seq: int
    # When the heartbeat was sent: seconds since the Unix epoch, microsecond precision.
    ts: float


@dataclass(frozen=True, kw_only=True)
class Reset(Control):
    """Says that the stream a reader asked to resume is not this server's: the history it named is not the archive's (the server restarted without persistence, or it is another cluster), or the `seq` it named is beyond the last one sequenced. The stream then starts again from the oldest retained event of [`Reset::history`]; a reader drops what it knew of the old history's seqs."""

    TYPE: ClassVar[str] = "reset"
    WIRE: ClassVar[dict[str, str]] = {'history': 'history', 'last_seq': 'lastSeq', 'oldest_seq': 'oldestSeq', 'reason': 'reason', 'requested_history': 'requestedHistory', 'requested_since': 'requestedSince'}
    # The history the stream continues in: an opaque id, new whenever an archive starts empty, kept across warm restarts and changes of master.
    history: str
    # The last `seq` sequenced in this history (0 when none was).
    last_seq: int
    # The `seq` of the oldest retained event, which the stream sends next (0 when the archive is empty).
    oldest_seq: int
    # Why, e.g. `history changed` or `since is beyond the last seq`.
    reason: str
    # The history the reader asked to resume, when it named one.
    requested_history: Optional[str] = None
    # The `seq` the reader asked to resume after.
    requested_since: int


# Every event type's model, by its wire name.
EVENT_TYPES: dict[str, type[Event]] = {
    "autofailoverDone": AutofailoverDone,
    "autofailoverNodeStateChange": AutofailoverNodeStateChange,
    "backfillPhaseEnded": BackfillPhaseEnded,
    "backfillPhaseStarted": BackfillPhaseStarted,
    "becameMaster": BecameMaster,
    "bucketFailoverEnded": BucketFailoverEnded,
    "bucketFailoverStarted": BucketFailoverStarted,
    "bucketRebalanceEnded": BucketRebalanceEnded,
    "bucketRebalanceStarted": BucketRebalanceStarted,
    "compactionInhibited": CompactionInhibited,
    "compactionUninhibitDone": CompactionUninhibitDone,
    "compactionUninhibitStarted": CompactionUninhibitStarted,
    "createBucket": CreateBucket,
    "dcpAddStream": DcpAddStream,
    "dcpAddStreamResponse": DcpAddStreamResponse,
    "dcpCloseStream": DcpCloseStream,
    "dcpCloseStreamResponse": DcpCloseStreamResponse,
    "dcpReplicatorStart": DcpReplicatorStart,
    "dcpReplicatorTerminate": DcpReplicatorTerminate,
    "dcpSetVbucketState": DcpSetVbucketState,
    "deleteBucket": DeleteBucket,
    "deregisterTapName": DeregisterTapName,
    "ebucketmigratorStart": EbucketmigratorStart,
    "ebucketmigratorTerminate": EbucketmigratorTerminate,
    "failover": Failover,
    "failoverEnded": FailoverEnded,
    "forcedPreviouslyInhibitedViewCompaction": ForcedPreviouslyInhibitedViewCompaction,
    "indexingInitiated": IndexingInitiated,
    "mountingVolumesEnded": MountingVolumesEnded,
    "mountingVolumesStarted": MountingVolumesStarted,
    "nameChanged": NameChanged,
    "notReadyVBuckets": NotReadyVBuckets,
    "rebalanceEnd": RebalanceEnd,
    "rebalanceStageCompleted": RebalanceStageCompleted,
    "rebalanceStageEvent": RebalanceStageEvent,
    "rebalanceStageStarted": RebalanceStageStarted,
    "rebalanceStart": RebalanceStart,
    "resetFastForwardMap": ResetFastForwardMap,
    "seqnoWaitingEnded": SeqnoWaitingEnded,
    "seqnoWaitingStarted": SeqnoWaitingStarted,
    "setServiceMap": SetServiceMap,
    "snapshotDeksImportEnded": SnapshotDeksImportEnded,
    "snapshotDeksImportStarted": SnapshotDeksImportStarted,
    "snapshotDownloadEnded": SnapshotDownloadEnded,
    "snapshotDownloadStarted": SnapshotDownloadStarted,
    "snapshotWaitingEnded": SnapshotWaitingEnded,
    "snapshotWaitingStarted": SnapshotWaitingStarted,
    "takeoverEnded": TakeoverEnded,
    "takeoverStarted": TakeoverStarted,
    "updateFastForwardMap": UpdateFastForwardMap,
    "updateMap": UpdateMap,
    "vbucketFilterChangeStarted": VbucketFilterChangeStarted,
    "vbucketMoveDone": VbucketMoveDone,
    "vbucketMoveStart": VbucketMoveStart,
    "vbucketMoverTerminate": VbucketMoverTerminate,
    "vbucketStateChange": VbucketStateChange,
    "waitIndexUpdatedEnded": WaitIndexUpdatedEnded,
    "waitIndexUpdatedStarted": WaitIndexUpdatedStarted,
}

# Every control frame's model, by its wire name.
CONTROL_TYPES: dict[str, type[Control]] = {
    "gap": Gap,
    "heartbeat": Heartbeat,
    "reset": Reset,
}
