//! A deterministic simulator of cluster activity, as master events.
//!
//! Owns: a small model of a Couchbase-like cluster (nodes, buckets, a vbucket map with
//! one replica) and the story [`scenario`] tells about it, event by event: a node
//! becomes master, buckets are created and their vbuckets go active, a node is added
//! and a rebalance moves vbuckets onto it (several moves in flight at once, as
//! ns_server's mover runs them), and then a node is auto-failed over. `master-events
//! demo` streams it, and tests use it as realistic input.
//!
//! Promises:
//! - The same [`ScenarioConfig`] (seed included) gives the same events in the same
//!   order, for a given build (the generator is `rand`'s `StdRng`, whose stream the
//!   lock file pins).
//! - Every event it yields is a valid catalog event: encoded as a line it parses back
//!   equal.
//! - Each moving vbucket goes through exactly one move, whose events come in order:
//!   `vbucketMoveStart`, `dcpAddStream`, `dcpAddStreamResponse`,
//!   `backfillPhaseStarted`, `backfillPhaseEnded`, `seqnoWaitingStarted`,
//!   `seqnoWaitingEnded`, `takeoverStarted`, `takeoverEnded`, `vbucketStateChange`
//!   (active on its new host), `vbucketMoveDone`, `updateMap`; moves of different
//!   vbuckets interleave, at most [`ScenarioConfig::concurrent_moves`] at a time.
//!   [`vbucket_moves`] says how many moves a configuration makes.
//! - The bucket password it hands to `createBucket` ([`SIMULATED_PASSWORD`]) never
//!   appears in an event: the events crate redacts it when the event is built.
//!
//! The events carry no envelope and no time: the caller stamps and paces them (the
//! router's sequencer stamps `seq` and `ts`; [`timestamps`] spaces out `ts` values
//! for a caller that writes lines itself).
//!
//! ```
//! use master_events_sim::{scenario, vbucket_moves, ScenarioConfig};
//!
//! let config = ScenarioConfig { vbuckets: 64, ..ScenarioConfig::default() };
//! let events: Vec<_> = scenario(&config).collect();
//! assert_eq!(events[0].type_name(), "becameMaster");
//! let moves = events.iter().filter(|e| e.type_name() == "vbucketMoveDone").count();
//! assert_eq!(moves, vbucket_moves(&config));
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod pace;
mod scenario;

pub use config::{
    host, node_name, vbucket_moves, ConfigError, ScenarioConfig, MAX_NODES, SIMULATED_PASSWORD,
};
pub use pace::{timestamps, PaceError, Timestamps};
pub use scenario::{scenario, Scenario};
