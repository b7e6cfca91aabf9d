//! Fault injection for a master-events cluster.
//!
//! A run starts real processes on loopback — etcd and three `master-events serve`
//! nodes — puts a steady load on them (writers recording every reply, a consumer
//! streaming from a non-master node), injects one scenario's faults with signals to
//! the processes' groups, lets everything settle, and checks what the cluster
//! promises: identical archives on every node, every acknowledged event exactly
//! once, every `202`'d event sequenced (or lost with a killed node), per-origin
//! order, and a consumer that saw no duplicate and no silent hole. It reports the
//! longest sequencing stall and the time without a master.
//!
//! Modules: [`proc`] (children and signals; the only `unsafe`), [`cluster`] (etcd
//! and the nodes), [`load`] (writers, consumer, master monitor), [`check`] (the
//! invariants, pure), [`scenario`] (fault schedules and one run), [`report`] (the
//! table and the JSON file).
#![deny(unsafe_code)]

pub mod check;
pub mod cluster;
pub mod load;
pub mod proc;
pub mod report;
pub mod scenario;
