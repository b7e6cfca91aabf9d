//! The [`Event`] enum: one variant per catalog type, and [`EventType`], its tag.
//!
//! Owns: the mapping between a wire `type` string and its struct in
//! [`crate::catalog`], and the per-variant plumbing generated from one list
//! (`catalog!` below): `From<Struct> for Event`, the tag, field dispatch for parsing
//! and encoding, and the accessors filters use (`bucket`, `vbucket`, `node`, `host`).
//!
//! Promises: the list is the single source of truth — adding a row adds the type to
//! parsing, encoding, schemas and [`EventType::ALL`] at once; the tag strings are
//! exactly ns_server's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::catalog::*;

/// Per-struct access to the fields filters look at. Each catalog struct implements
/// it; a method returns `None` when the type has no such field.
pub trait EventFields {
    /// The `bucket` field, if the type has one.
    fn bucket(&self) -> Option<&str> {
        None
    }
    /// The `vbucket` field, if the type has one.
    fn vbucket(&self) -> Option<VBucket> {
        None
    }
    /// The `node` field, if the type has one (a node name or a host, per the type).
    fn node(&self) -> Option<&str> {
        None
    }
    /// The `host` field, if the type has one.
    fn host(&self) -> Option<&str> {
        None
    }
}

macro_rules! accessor {
    (bucket) => {
        fn bucket(&self) -> Option<&str> {
            Some(&self.bucket)
        }
    };
    (vbucket) => {
        fn vbucket(&self) -> Option<VBucket> {
            Some(self.vbucket)
        }
    };
    (node) => {
        fn node(&self) -> Option<&str> {
            Some(&self.node)
        }
    };
    (host) => {
        fn host(&self) -> Option<&str> {
            Some(&self.host)
        }
    };
}

macro_rules! catalog {
    ($( $variant:ident = $name:literal [$($acc:ident)*] ),* $(,)?) => {
        /// A master activity event: one variant per catalog type.
        ///
        /// Serializes internally tagged by `"type"`, as on the wire (without the
        /// envelope; see [`crate::Record`] for a full line).
        #[derive(Serialize, Clone, Debug, PartialEq)]
        #[cfg_attr(test, derive(proptest_derive::Arbitrary))]
        #[serde(tag = "type")]
        pub enum Event {
            $(
                #[doc = concat!("`", $name, "`: see [`", stringify!($variant), "`].")]
                #[serde(rename = $name)]
                $variant($variant),
            )*
        }

        /// The type tag of an [`Event`], without its fields.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl EventType {
            /// Every event type, in catalog order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),*];

            /// The wire name (`"becameMaster"`, ...).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }

            /// The position of this type in [`EventType::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }

            /// The JSON Schema of this type's struct (fields only, no envelope).
            pub(crate) fn fields_schema(self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                match self {
                    $(EventType::$variant => generator.root_schema_for::<$variant>(),)*
                }
            }
        }

        impl FromStr for EventType {
            type Err = UnknownEventType;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(EventType::$variant),)*
                    _ => Err(UnknownEventType(s.to_owned())),
                }
            }
        }

        impl Event {
            /// This event's type tag.
            pub fn event_type(&self) -> EventType {
                match self {
                    $(Event::$variant(_) => EventType::$variant,)*
                }
            }

            fn fields(&self) -> &dyn EventFields {
                match self {
                    $(Event::$variant(v) => v,)*
                }
            }

            /// Writes the variant's fields as a JSON object (`{...}`), without the tag.
            pub(crate) fn write_fields(&self, buf: &mut Vec<u8>) {
                match self {
                    $(Event::$variant(v) => crate::json::write(buf, v),)*
                }
            }

            /// Serializes the variant's fields with `serializer` (the reference the
            /// JSON writer is tested against).
            #[cfg(test)]
            pub(crate) fn serialize_fields<S: serde::Serializer>(
                &self,
                serializer: S,
            ) -> Result<S::Ok, S::Error> {
                match self {
                    $(Event::$variant(v) => serde::Serialize::serialize(v, serializer),)*
                }
            }

            /// Builds the event of type `ty` from its fields.
            #[inline]
            pub(crate) fn from_fields<'de, D>(ty: EventType, fields: D) -> Result<Event, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                Ok(match ty {
                    $(EventType::$variant => Event::$variant($variant::deserialize(fields)?),)*
                })
            }
        }

        $(
            impl From<$variant> for Event {
                fn from(v: $variant) -> Event {
                    Event::$variant(v)
                }
            }

            impl EventFields for $variant {
                $(accessor!($acc);)*
            }
        )*
    };
}

catalog! {
    BecameMaster = "becameMaster" [node host],
    EbucketmigratorStart = "ebucketmigratorStart" [node bucket],
    NotReadyVBuckets = "notReadyVBuckets" [],
    EbucketmigratorTerminate = "ebucketmigratorTerminate" [],
    VbucketStateChange = "vbucketStateChange" [vbucket host bucket],
    CreateBucket = "createBucket" [bucket],
    DeleteBucket = "deleteBucket" [bucket],
    RebalanceStart = "rebalanceStart" [],
    RebalanceEnd = "rebalanceEnd" [],
    ResetFastForwardMap = "resetFastForwardMap" [bucket],
    UpdateMap = "updateMap" [vbucket bucket],
    UpdateFastForwardMap = "updateFastForwardMap" [vbucket bucket],
    VbucketMoveStart = "vbucketMoveStart" [vbucket node bucket],
    VbucketMoveDone = "vbucketMoveDone" [vbucket bucket],
    Failover = "failover" [],
    FailoverEnded = "failoverEnded" [],
    DeregisterTapName = "deregisterTapName" [host bucket],
    VbucketFilterChangeStarted = "vbucketFilterChangeStarted" [node],
    BucketFailoverStarted = "bucketFailoverStarted" [node bucket],
    BucketFailoverEnded = "bucketFailoverEnded" [node bucket],
    BucketRebalanceStarted = "bucketRebalanceStarted" [node bucket],
    BucketRebalanceEnded = "bucketRebalanceEnded" [node bucket],
    NameChanged = "nameChanged" [node host],
    RebalanceStageStarted = "rebalanceStageStarted" [],
    RebalanceStageCompleted = "rebalanceStageCompleted" [],
    RebalanceStageEvent = "rebalanceStageEvent" [],
    AutofailoverNodeStateChange = "autofailoverNodeStateChange" [node],
    AutofailoverDone = "autofailoverDone" [node],
    VbucketMoverTerminate = "vbucketMoverTerminate" [vbucket node bucket],
    BackfillPhaseStarted = "backfillPhaseStarted" [vbucket bucket],
    BackfillPhaseEnded = "backfillPhaseEnded" [vbucket bucket],
    SnapshotWaitingStarted = "snapshotWaitingStarted" [vbucket bucket],
    SnapshotWaitingEnded = "snapshotWaitingEnded" [vbucket bucket],
    SnapshotDownloadStarted = "snapshotDownloadStarted" [vbucket bucket],
    SnapshotDownloadEnded = "snapshotDownloadEnded" [vbucket bucket],
    SnapshotDeksImportStarted = "snapshotDeksImportStarted" [vbucket bucket],
    SnapshotDeksImportEnded = "snapshotDeksImportEnded" [vbucket bucket],
    SeqnoWaitingStarted = "seqnoWaitingStarted" [vbucket node bucket],
    SeqnoWaitingEnded = "seqnoWaitingEnded" [vbucket node bucket],
    TakeoverStarted = "takeoverStarted" [vbucket node bucket],
    TakeoverEnded = "takeoverEnded" [vbucket node bucket],
    IndexingInitiated = "indexingInitiated" [vbucket node bucket],
    WaitIndexUpdatedStarted = "waitIndexUpdatedStarted" [vbucket node bucket],
    WaitIndexUpdatedEnded = "waitIndexUpdatedEnded" [vbucket node bucket],
    CompactionInhibited = "compactionInhibited" [node bucket],
    CompactionUninhibitStarted = "compactionUninhibitStarted" [node bucket],
    CompactionUninhibitDone = "compactionUninhibitDone" [node bucket],
    ForcedPreviouslyInhibitedViewCompaction = "forcedPreviouslyInhibitedViewCompaction" [node bucket],
    DcpReplicatorStart = "dcpReplicatorStart" [bucket],
    DcpReplicatorTerminate = "dcpReplicatorTerminate" [bucket],
    DcpAddStream = "dcpAddStream" [vbucket node bucket],
    DcpCloseStream = "dcpCloseStream" [vbucket node bucket],
    DcpAddStreamResponse = "dcpAddStreamResponse" [vbucket node bucket],
    DcpCloseStreamResponse = "dcpCloseStreamResponse" [vbucket node bucket],
    DcpSetVbucketState = "dcpSetVbucketState" [vbucket node bucket],
    SetServiceMap = "setServiceMap" [],
    MountingVolumesStarted = "mountingVolumesStarted" [node bucket],
    MountingVolumesEnded = "mountingVolumesEnded" [node bucket],
}

impl Event {
    /// The wire name of this event's type.
    pub fn type_name(&self) -> &'static str {
        self.event_type().as_str()
    }

    /// The `bucket` field, if this type has one.
    pub fn bucket(&self) -> Option<&str> {
        self.fields().bucket()
    }

    /// The `vbucket` field, if this type has one.
    pub fn vbucket(&self) -> Option<VBucket> {
        self.fields().vbucket()
    }

    /// The `node` field, if this type has one (a node name or a host, per the type).
    pub fn node(&self) -> Option<&str> {
        self.fields().node()
    }

    /// The `host` field, if this type has one.
    pub fn host(&self) -> Option<&str> {
        self.fields().host()
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an [`EventType`] from a name not in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?}")]
pub struct UnknownEventType(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_of_the_catalog_has_a_unique_name_and_its_own_index() {
        let mut names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventType::ALL.len(), "no name twice");
        for (i, t) in EventType::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
            assert_eq!(t.as_str().parse::<EventType>(), Ok(*t));
        }
    }

    #[test]
    fn event_serializes_with_its_type_tag() {
        let e = Event::from(BecameMaster {
            node: "n_0@10.17.2.163".into(),
            host: "10.17.2.163:12000".into(),
        });
        assert_eq!(
            serde_json::to_string(&e).ok().as_deref(),
            Some(r#"{"type":"becameMaster","node":"n_0@10.17.2.163","host":"10.17.2.163:12000"}"#)
        );
        assert_eq!(e.node(), Some("n_0@10.17.2.163"));
        assert_eq!(e.bucket(), None);
    }
}
