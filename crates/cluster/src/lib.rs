//! The cluster layer of master-events: master discovery, the node queue and its
//! forwarder, and follow-the-master replication.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod discovery;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod health;
pub mod journal;
pub mod node;
pub mod peer_tls;
pub mod queue;
pub mod replication;

pub use discovery::{DiscoveryFuture, MasterDiscovery, MasterView, StaticDiscovery};
pub use health::ClusterMetrics;
pub use node::{ClusterConfig, ClusterNode, Role};
pub use queue::{NodeQueue, QueueFull};
