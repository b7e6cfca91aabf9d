//! The scenario: the simulated cluster's story, told one event at a time.
//!
//! Owns: the state of the simulated cluster (each bucket's vbucket map), the order of
//! the story's phases and the mover that interleaves vbucket moves.
//!
//! Promises (see the crate docs for the whole list): events come lazily, a phase at a
//! time (memory is bounded by one bucket's vbucket count, not by the length of the
//! story); the map a later phase sees is the one the earlier `updateMap` events left;
//! `rebalanceEnd` carries the pid of its `rebalanceStart`.
//!
//! The story, for nodes `0..n` and one added node `n`:
//! 1. `becameMaster` (node 0), `setServiceMap`;
//! 2. per bucket: `createBucket`, then `vbucketStateChange` (active) for each vbucket
//!    on its initial host (vbucket `v` is active on node `v % n`, replica on
//!    `(v + 1) % n`);
//! 3. `rebalanceStart` (keepNodes: all hosts), `rebalanceStageStarted` (`["data"]`);
//! 4. per bucket: `bucketRebalanceStarted`, `resetFastForwardMap`, an
//!    `updateFastForwardMap` per moving vbucket, the moves themselves (interleaved;
//!    each `vbucketMoveStart` noted by the vbucket's old active node, as ns_server does),
//!    `bucketRebalanceEnded`. The new node first receives its fair share of active
//!    vbuckets (`vbuckets / (n + 1)`, rounded up); any further moving vbucket goes to
//!    one of the other old nodes, in turn. The replica goes to the next host after the
//!    new active one;
//! 5. `rebalanceStageCompleted`, `rebalanceEnd` (reason `normal`);
//! 6. with failover: `autofailoverNodeStateChange` (up → half_down → nearly_down →
//!    failover) for a node other than the master, `failover`, per bucket
//!    `bucketFailoverStarted`, the promotion of replicas (`vbucketStateChange` and
//!    `updateMap`, with `""` for the lost slot) and `bucketFailoverEnded`, then
//!    `failoverEnded` and `autofailoverDone`.

use std::collections::{BTreeMap, VecDeque};
use std::iter::FusedIterator;

use master_events_events::catalog::*;
use master_events_events::redact::BucketParams;
use master_events_events::{CompactString, Event};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

use crate::config::{host, node_name, ScenarioConfig, SIMULATED_PASSWORD};

/// The node that becomes master and runs the rebalance and the failover.
const MASTER: usize = 0;

/// The first Erlang pid number handed out (the rebalancer gets `<0.533.0>`, as in
/// the design's example).
const FIRST_PID: u64 = 533;

/// How many events one vbucket move makes (see [`move_event`]).
const MOVE_STEPS: u8 = 12;

/// A vbucket's replication chain: the active node, then its replica; `None` is an
/// empty slot (`""` on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chain([Option<usize>; 2]);

impl Chain {
    fn active(self) -> Option<usize> {
        self.0[0]
    }

    fn replica(self) -> Option<usize> {
        self.0[1]
    }
}

/// Where the story is. Each phase emits a batch of events and names the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Setup,
    CreateBucket(usize),
    RebalanceStart,
    BucketRebalanceStart(usize),
    Moving(usize),
    RebalanceEnd,
    FailoverStart,
    BucketFailover(usize),
    FailoverEnd,
    Done,
}

/// A vbucket move the rebalance has planned.
#[derive(Clone, Debug)]
struct PlannedMove {
    vbucket: VBucket,
    before: Chain,
    after: Chain,
    from: usize,
    to: usize,
}

/// A vbucket move in flight: what it has told so far and what it tells with.
#[derive(Clone, Debug)]
struct Move {
    plan: PlannedMove,
    step: u8,
    pid: CompactString,
    dcp_pid: CompactString,
    connection_name: CompactString,
    opaque: u64,
    seqno: u64,
}

/// A simulated scenario: an iterator over its events, deterministic for a
/// configuration (seed included). Build one with [`scenario`].
///
/// The events carry no time; the caller stamps and paces them.
#[derive(Clone, Debug)]
pub struct Scenario {
    config: ScenarioConfig,
    rng: StdRng,
    nodes: Vec<CompactString>,
    hosts: Vec<CompactString>,
    /// Per bucket, per vbucket: the current chain.
    maps: Vec<Vec<Chain>>,
    phase: Phase,
    queue: VecDeque<Event>,
    next_pid: u64,
    next_opaque: u64,
    rebalance_pid: CompactString,
    bucket_pid: CompactString,
    pending: VecDeque<PlannedMove>,
    in_flight: Vec<Move>,
    /// Consumer-side DCP connection pid per (producer, consumer) of the bucket being
    /// rebalanced.
    dcp_conns: BTreeMap<(usize, usize), CompactString>,
    failed: usize,
}

/// The scenario for `config`, brought within its limits first
/// ([`ScenarioConfig::sanitized`]; use [`ScenarioConfig::validate`] to report bad
/// values instead).
pub fn scenario(config: &ScenarioConfig) -> Scenario {
    let config = config.sanitized();
    let old = config.nodes;
    let total = old + 1;
    let initial: Vec<Chain> = (0..usize::from(config.vbuckets))
        .map(|v| Chain([Some(v % old), (old >= 2).then(|| (v + 1) % old)]))
        .collect();
    Scenario {
        rng: StdRng::seed_from_u64(config.seed),
        nodes: (0..total).map(|i| node_name(i).into()).collect(),
        hosts: (0..total).map(|i| host(i).into()).collect(),
        maps: vec![initial; config.buckets.len()],
        phase: Phase::Setup,
        queue: VecDeque::new(),
        next_pid: FIRST_PID,
        next_opaque: 1,
        rebalance_pid: CompactString::default(),
        bucket_pid: CompactString::default(),
        pending: VecDeque::new(),
        in_flight: Vec::new(),
        dcp_conns: BTreeMap::new(),
        failed: MASTER,
        config,
    }
}

impl Scenario {
    /// The configuration this scenario runs (after [`ScenarioConfig::sanitized`]).
    pub fn config(&self) -> &ScenarioConfig {
        &self.config
    }

    /// The names of every node, the one the rebalance adds last.
    pub fn nodes(&self) -> &[CompactString] {
        &self.nodes
    }

    /// The hosts (`ip:port`) of every node, in the order of [`Scenario::nodes`].
    pub fn hosts(&self) -> &[CompactString] {
        &self.hosts
    }

    fn new_pid(&mut self) -> CompactString {
        let pid = format!("<0.{}.0>", self.next_pid);
        self.next_pid += self.rng.random_range(1..=24);
        pid.into()
    }

    fn chain_hosts(&self, chain: Chain) -> Vec<CompactString> {
        chain
            .0
            .iter()
            .map(|slot| slot.map(|i| self.hosts[i].clone()).unwrap_or_default())
            .collect()
    }

    fn bucket(&self, b: usize) -> CompactString {
        self.config.buckets[b].as_str().into()
    }

    fn push(&mut self, event: impl Into<Event>) {
        self.queue.push_back(event.into());
    }

    /// The phase after the last one of a bucket loop.
    fn after_buckets(&self, b: usize, each: fn(usize) -> Phase, then: Phase) -> Phase {
        if b + 1 < self.config.buckets.len() {
            each(b + 1)
        } else {
            then
        }
    }

    /// The first phase of a bucket loop, or `then` when there are no buckets.
    fn first_bucket(&self, each: fn(usize) -> Phase, then: Phase) -> Phase {
        if self.config.buckets.is_empty() {
            then
        } else {
            each(0)
        }
    }

    /// Emits the next batch of events; `false` when the story is over.
    fn advance(&mut self) -> bool {
        self.phase = match self.phase {
            Phase::Setup => self.setup(),
            Phase::CreateBucket(b) => self.create_bucket(b),
            Phase::RebalanceStart => self.rebalance_start(),
            Phase::BucketRebalanceStart(b) => self.bucket_rebalance_start(b),
            Phase::Moving(b) => self.moving(b),
            Phase::RebalanceEnd => self.rebalance_end(),
            Phase::FailoverStart => self.failover_start(),
            Phase::BucketFailover(b) => self.bucket_failover(b),
            Phase::FailoverEnd => self.failover_end(),
            Phase::Done => return false,
        };
        true
    }

    fn setup(&mut self) -> Phase {
        self.push(BecameMaster {
            node: self.nodes[MASTER].clone(),
            host: self.hosts[MASTER].clone(),
        });
        self.push(SetServiceMap {
            nodes: vec![self.nodes[MASTER].clone()],
            service: "index".into(),
        });
        self.first_bucket(Phase::CreateBucket, Phase::RebalanceStart)
    }

    fn create_bucket(&mut self, b: usize) -> Phase {
        let bucket = self.bucket(b);
        let mut params = Map::new();
        params.insert("num_replicas".into(), Value::from(1));
        params.insert("replica_index".into(), Value::from(false));
        params.insert("ram_quota".into(), Value::from(209_715_200u64));
        params.insert("auth_type".into(), Value::from("sasl"));
        params.insert("sasl_password".into(), Value::from(SIMULATED_PASSWORD));
        params.insert("num_vbuckets".into(), Value::from(self.config.vbuckets));
        params.insert("flush_enabled".into(), Value::from(false));
        params.insert("eviction_policy".into(), Value::from("value_only"));
        self.push(CreateBucket {
            bucket_type: "membase".into(),
            bucket: bucket.clone(),
            params: BucketParams::new(params),
        });
        for v in 0..self.config.vbuckets {
            if let Some(active) = self.maps[b][usize::from(v)].active() {
                self.push(VbucketStateChange {
                    vbucket: v,
                    state: VBucketState::Active,
                    host: self.hosts[active].clone(),
                    bucket: bucket.clone(),
                    meta: None,
                });
            }
        }
        self.after_buckets(b, Phase::CreateBucket, Phase::RebalanceStart)
    }

    fn rebalance_start(&mut self) -> Phase {
        self.rebalance_pid = self.new_pid();
        self.push(RebalanceStart {
            pid: self.rebalance_pid.clone(),
            keep_nodes: self.hosts.clone(),
            eject_nodes: Vec::new(),
            failed_nodes: Vec::new(),
            delta_nodes: Vec::new(),
        });
        self.push(RebalanceStageStarted {
            stage: vec!["data".into()],
            nodes: self.nodes.clone(),
        });
        self.first_bucket(Phase::BucketRebalanceStart, Phase::RebalanceEnd)
    }

    /// Plans the moves of bucket `b` (see the module docs for the target chains).
    fn plan_moves(&mut self, b: usize) -> Vec<PlannedMove> {
        let vbuckets = usize::from(self.config.vbuckets);
        let old = self.config.nodes;
        let added = old;
        let total = old + 1;
        let share = vbuckets.div_ceil(total);
        let mut moving =
            rand::seq::index::sample(&mut self.rng, vbuckets, self.config.moves_per_bucket())
                .into_vec();
        moving.sort_unstable();
        let mut plans = Vec::with_capacity(moving.len());
        for (i, v) in moving.into_iter().enumerate() {
            let before = self.maps[b][v];
            let from = before.active().unwrap_or(MASTER);
            let to = if i < share || old < 2 {
                added
            } else {
                // The (i - share)-th of the old nodes other than `from`, in turn.
                let j = (i - share) % (old - 1);
                if j < from {
                    j
                } else {
                    j + 1
                }
            };
            plans.push(PlannedMove {
                // `v < vbuckets <= u16::MAX`, so this never saturates.
                vbucket: VBucket::try_from(v).unwrap_or(VBucket::MAX),
                before,
                after: Chain([Some(to), Some((to + 1) % total)]),
                from,
                to,
            });
        }
        plans
    }

    fn bucket_rebalance_start(&mut self, b: usize) -> Phase {
        let bucket = self.bucket(b);
        self.bucket_pid = self.new_pid();
        self.dcp_conns.clear();
        self.push(BucketRebalanceStarted {
            pid: self.bucket_pid.clone(),
            node: self.nodes[MASTER].clone(),
            bucket: bucket.clone(),
        });
        self.push(ResetFastForwardMap {
            bucket: bucket.clone(),
        });
        let plans = self.plan_moves(b);
        for plan in &plans {
            self.push(UpdateFastForwardMap {
                vbucket: plan.vbucket,
                bucket: bucket.clone(),
                chain_before: self.chain_hosts(plan.before),
                chain_after: self.chain_hosts(plan.after),
            });
        }
        self.pending = plans.into();
        Phase::Moving(b)
    }

    /// One step of the mover: start a move when a slot is free, else advance a move
    /// in flight chosen at random; when all are done, end the bucket's rebalance.
    fn moving(&mut self, b: usize) -> Phase {
        if self.in_flight.len() < self.config.concurrent_moves {
            if let Some(plan) = self.pending.pop_front() {
                let started = self.start_move(plan, b);
                self.in_flight.push(started);
                self.step_move(self.in_flight.len() - 1, b);
                return Phase::Moving(b);
            }
        }
        if !self.in_flight.is_empty() {
            let i = self.rng.random_range(0..self.in_flight.len());
            self.step_move(i, b);
            return Phase::Moving(b);
        }
        self.push(BucketRebalanceEnded {
            pid: self.bucket_pid.clone(),
            node: self.nodes[MASTER].clone(),
            bucket: self.bucket(b),
        });
        self.after_buckets(b, Phase::BucketRebalanceStart, Phase::RebalanceEnd)
    }

    fn start_move(&mut self, plan: PlannedMove, b: usize) -> Move {
        let pid = self.new_pid();
        let key = (plan.from, plan.to);
        let dcp_pid = match self.dcp_conns.get(&key) {
            Some(p) => p.clone(),
            None => {
                let p = self.new_pid();
                self.dcp_conns.insert(key, p.clone());
                p
            }
        };
        let connection_name = format!(
            "replication:{}->{}:{}",
            self.nodes[plan.from], self.nodes[plan.to], self.config.buckets[b]
        );
        let opaque = self.next_opaque;
        self.next_opaque += 1;
        let seqno = self.rng.random_range(1..=50_000);
        Move {
            plan,
            step: 0,
            pid,
            dcp_pid,
            connection_name: connection_name.into(),
            opaque,
            seqno,
        }
    }

    /// Emits the next event of in-flight move `i`, and retires it after its last.
    fn step_move(&mut self, i: usize, b: usize) {
        let event = self.move_event(&self.in_flight[i], b);
        let m = &mut self.in_flight[i];
        m.step += 1;
        if m.step == MOVE_STEPS {
            let done = self.in_flight.swap_remove(i);
            self.maps[b][usize::from(done.plan.vbucket)] = done.plan.after;
        }
        self.queue.push_back(event);
    }

    /// The event of move `m` at its current step.
    fn move_event(&self, m: &Move, b: usize) -> Event {
        let vbucket = m.plan.vbucket;
        let bucket = self.bucket(b);
        let (from, to) = (m.plan.from, m.plan.to);
        match m.step {
            // As ns_server notes it: the node is the old chain's head, the vbucket's
            // active node before the move (so the moves of a rebalance come from
            // several nodes, and per-node views have a row each).
            0 => VbucketMoveStart {
                vbucket,
                pid: m.pid.clone(),
                node: self.nodes[from].clone(),
                bucket,
                chain_before: self.chain_hosts(m.plan.before),
                chain_after: self.chain_hosts(m.plan.after),
            }
            .into(),
            1 => DcpAddStream {
                vbucket,
                stream_type: "add".into(),
                side: DcpSide::Consumer,
                pid: m.dcp_pid.clone(),
                opaque: m.opaque,
                node: self.nodes[to].clone(),
                connection_name: m.connection_name.clone(),
                bucket,
            }
            .into(),
            2 => DcpAddStreamResponse {
                vbucket,
                success: true,
                status: "success".into(),
                side: DcpSide::Consumer,
                raw_status: 0,
                pid: m.dcp_pid.clone(),
                opaque: m.opaque,
                node: self.nodes[to].clone(),
                connection_name: m.connection_name.clone(),
                bucket,
            }
            .into(),
            3 => BackfillPhaseStarted { vbucket, bucket }.into(),
            4 => BackfillPhaseEnded { vbucket, bucket }.into(),
            5 => SeqnoWaitingStarted {
                vbucket,
                seqno: m.seqno,
                node: self.hosts[to].clone(),
                bucket,
            }
            .into(),
            6 => SeqnoWaitingEnded {
                vbucket,
                seqno: m.seqno,
                node: self.hosts[to].clone(),
                bucket,
            }
            .into(),
            7 => TakeoverStarted {
                vbucket,
                old_master: self.hosts[from].clone(),
                node: self.hosts[to].clone(),
                bucket,
            }
            .into(),
            8 => TakeoverEnded {
                vbucket,
                old_master: self.hosts[from].clone(),
                node: self.hosts[to].clone(),
                bucket,
            }
            .into(),
            9 => VbucketStateChange {
                vbucket,
                state: VBucketState::Active,
                host: self.hosts[to].clone(),
                bucket,
                meta: None,
            }
            .into(),
            10 => VbucketMoveDone { vbucket, bucket }.into(),
            _ => UpdateMap {
                vbucket,
                bucket,
                chain_before: self.chain_hosts(m.plan.before),
                chain_after: self.chain_hosts(m.plan.after),
            }
            .into(),
        }
    }

    fn rebalance_end(&mut self) -> Phase {
        self.push(RebalanceStageCompleted {
            stage: vec!["data".into()],
        });
        self.push(RebalanceEnd {
            reason: "normal".into(),
            pid: self.rebalance_pid.clone(),
        });
        if self.config.with_failover {
            Phase::FailoverStart
        } else {
            Phase::Done
        }
    }

    fn failover_start(&mut self) -> Phase {
        // Any node but the master (there are always at least two).
        self.failed = self.rng.random_range(1..self.nodes.len());
        let node = self.nodes[self.failed].clone();
        for (prev, new) in [
            ("up", "half_down"),
            ("half_down", "nearly_down"),
            ("nearly_down", "failover"),
        ] {
            self.push(AutofailoverNodeStateChange {
                prev_state: prev.into(),
                node: node.clone(),
                new_state: new.into(),
                new_counter: 0,
            });
        }
        self.push(Failover {
            hosts: vec![self.hosts[self.failed].clone()],
        });
        self.bucket_pid = self.new_pid();
        self.first_bucket(Phase::BucketFailover, Phase::FailoverEnd)
    }

    /// Fails bucket `b` over: replicas on other nodes are promoted where the failed
    /// node was active, and the failed node's slots are emptied.
    fn bucket_failover(&mut self, b: usize) -> Phase {
        let bucket = self.bucket(b);
        let failed = Some(self.failed);
        let hosts = vec![self.hosts[self.failed].clone()];
        self.push(BucketFailoverStarted {
            pid: self.bucket_pid.clone(),
            node: self.nodes[MASTER].clone(),
            hosts: hosts.clone(),
            bucket: bucket.clone(),
        });
        for v in 0..self.config.vbuckets {
            let before = self.maps[b][usize::from(v)];
            let after = if before.active() == failed {
                Chain([before.replica(), None])
            } else if before.replica() == failed {
                Chain([before.active(), None])
            } else {
                continue;
            };
            if before.active() == failed {
                if let Some(promoted) = after.active() {
                    self.push(VbucketStateChange {
                        vbucket: v,
                        state: VBucketState::Active,
                        host: self.hosts[promoted].clone(),
                        bucket: bucket.clone(),
                        meta: None,
                    });
                }
            }
            self.push(UpdateMap {
                vbucket: v,
                bucket: bucket.clone(),
                chain_before: self.chain_hosts(before),
                chain_after: self.chain_hosts(after),
            });
            self.maps[b][usize::from(v)] = after;
        }
        self.push(BucketFailoverEnded {
            pid: self.bucket_pid.clone(),
            node: self.nodes[MASTER].clone(),
            hosts,
            bucket,
        });
        self.after_buckets(b, Phase::BucketFailover, Phase::FailoverEnd)
    }

    fn failover_end(&mut self) -> Phase {
        self.push(FailoverEnded {});
        self.push(AutofailoverDone {
            reason: "ok".into(),
            node: self.nodes[self.failed].clone(),
        });
        Phase::Done
    }
}

impl Iterator for Scenario {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if !self.advance() {
                return None;
            }
        }
    }
}

impl FusedIterator for Scenario {}
