//! The simulated scenario, checked as a specification of its story.

use std::collections::{BTreeMap, BTreeSet};

use master_events_events::catalog::VBucketState;
use master_events_events::{Envelope, Event, Record, Timestamp};
use master_events_sim::{
    host, node_name, scenario, vbucket_moves, ScenarioConfig, SIMULATED_PASSWORD,
};

/// The events of one move, in the order they must come.
const MOVE_STEPS: [&str; 12] = [
    "vbucketMoveStart",
    "dcpAddStream",
    "dcpAddStreamResponse",
    "backfillPhaseStarted",
    "backfillPhaseEnded",
    "seqnoWaitingStarted",
    "seqnoWaitingEnded",
    "takeoverStarted",
    "takeoverEnded",
    "vbucketStateChange",
    "vbucketMoveDone",
    "updateMap",
];

fn events(config: &ScenarioConfig) -> Vec<Event> {
    scenario(config).collect()
}

fn position(events: &[Event], ty: &str) -> usize {
    events
        .iter()
        .position(|e| e.type_name() == ty)
        .unwrap_or_else(|| panic!("no {ty} event"))
}

/// The events between `rebalanceStart` and `rebalanceEnd`.
fn rebalance(events: &[Event]) -> &[Event] {
    &events[position(events, "rebalanceStart")..=position(events, "rebalanceEnd")]
}

/// The events after `rebalanceEnd` (the failover, if any).
fn after_rebalance(events: &[Event]) -> &[Event] {
    &events[position(events, "rebalanceEnd") + 1..]
}

/// Per (bucket, vbucket), the events of its move within the rebalance.
fn moves(events: &[Event]) -> BTreeMap<(String, u16), Vec<&Event>> {
    let mut moves: BTreeMap<(String, u16), Vec<&Event>> = BTreeMap::new();
    for e in rebalance(events) {
        if let (Some(bucket), Some(vb)) = (e.bucket(), e.vbucket()) {
            if e.type_name() != "updateFastForwardMap" {
                moves.entry((bucket.to_owned(), vb)).or_default().push(e);
            }
        }
    }
    moves
}

#[test]
fn each_move_is_noted_by_the_vbuckets_old_active_node_so_moves_come_from_several() {
    let config = ScenarioConfig::default();
    let events = events(&config);
    let host_of: BTreeMap<String, String> = (0..=config.nodes)
        .map(|i| (node_name(i), host(i)))
        .collect();
    let mut from = BTreeSet::new();
    for (key, steps) in &moves(&events) {
        let Some(Event::VbucketMoveStart(start)) = steps.first() else {
            panic!("{key:?} does not start with vbucketMoveStart");
        };
        assert_eq!(
            host_of.get(start.node.as_str()).map(String::as_str),
            Some(start.chain_before[0].as_str()),
            "{key:?}: noted by {}, the old chain's head is {}",
            start.node,
            start.chain_before[0]
        );
        from.insert(start.node.clone());
    }
    assert_eq!(
        from.len(),
        config.nodes,
        "every old node gives up vbuckets to the new one: {from:?}"
    );
}

fn two_buckets_a_quarter_moving() -> ScenarioConfig {
    ScenarioConfig {
        buckets: vec!["default".into(), "beer-sample".into()],
        move_fraction: 0.25,
        seed: 7,
        ..ScenarioConfig::default()
    }
}

#[test]
fn every_event_round_trips_through_a_record_line() {
    for (i, event) in scenario(&ScenarioConfig::default()).enumerate() {
        let n = i as u64 + 1;
        let record = Record::from_parts(
            Envelope {
                seq: Some(n),
                ts: Some(Timestamp::from_micros(
                    1_333_576_032_539_910 + 1_234 * n as i64,
                )),
                origin: Some("n_0@10.17.2.163".into()),
                origin_ts: None,
                origin_seq: Some(n),
            },
            event,
        );
        let line = record.to_line();
        assert_eq!(
            Record::parse(&line),
            Ok(record),
            "{}",
            String::from_utf8_lossy(&line)
        );
    }
}

#[test]
fn each_moving_vbucket_moves_exactly_once_through_every_phase_in_order() {
    for config in [ScenarioConfig::default(), two_buckets_a_quarter_moving()] {
        let events = events(&config);
        let moves = moves(&events);
        assert_eq!(moves.len(), vbucket_moves(&config));
        for ((bucket, vb), steps) in &moves {
            let names: Vec<&str> = steps.iter().map(|e| e.type_name()).collect();
            assert_eq!(names, MOVE_STEPS, "bucket {bucket} vbucket {vb}");
        }
    }
}

#[test]
fn every_vbucket_moves_by_default() {
    let config = ScenarioConfig::default();
    let events = events(&config);
    let moved: BTreeSet<u16> = moves(&events).keys().map(|(_, vb)| *vb).collect();
    assert_eq!(moved, (0..config.vbuckets).collect());
}

#[test]
fn a_move_tells_one_consistent_story_of_chains_and_hosts() {
    let events = events(&two_buckets_a_quarter_moving());
    let mut ff_after: BTreeMap<(String, u16), Vec<master_events_events::CompactString>> =
        BTreeMap::new();
    for e in rebalance(&events) {
        if let Event::UpdateFastForwardMap(u) = e {
            ff_after.insert((u.bucket.to_string(), u.vbucket), u.chain_after.clone());
        }
    }
    let moves = moves(&events);
    assert_eq!(
        ff_after.keys().collect::<Vec<_>>(),
        moves.keys().collect::<Vec<_>>(),
        "a fast-forward map update for each move, and only those"
    );
    for (key, steps) in &moves {
        let Some(Event::VbucketMoveStart(start)) = steps.first() else {
            panic!("{key:?} does not start with vbucketMoveStart");
        };
        let (before, after) = (&start.chain_before, &start.chain_after);
        assert_eq!(Some(after), ff_after.get(key), "{key:?}");
        assert_ne!(before[0], after[0], "{key:?}: the active copy moves");
        for e in steps {
            match e {
                Event::TakeoverStarted(t) => {
                    assert_eq!((&t.old_master, &t.node), (&before[0], &after[0]))
                }
                Event::SeqnoWaitingStarted(s) => assert_eq!(&s.node, &after[0]),
                Event::VbucketStateChange(s) => {
                    assert_eq!((&s.host, s.state), (&after[0], VBucketState::Active))
                }
                Event::UpdateMap(u) => {
                    assert_eq!((&u.chain_before, &u.chain_after), (before, after))
                }
                Event::DcpAddStreamResponse(r) => assert!(r.success),
                _ => {}
            }
        }
    }
}

#[test]
fn moves_interleave_but_never_beyond_the_concurrency_limit() {
    for concurrent_moves in [1, 4] {
        let config = ScenarioConfig {
            concurrent_moves,
            ..ScenarioConfig::default()
        };
        let mut in_flight = BTreeSet::new();
        let mut most = 0;
        for e in rebalance(&events(&config)) {
            match e {
                Event::VbucketMoveStart(m) => {
                    assert!(in_flight.insert(m.vbucket));
                }
                Event::UpdateMap(m) => {
                    assert!(in_flight.remove(&m.vbucket));
                }
                _ => {}
            }
            most = most.max(in_flight.len());
        }
        assert_eq!(most, concurrent_moves);
        assert!(in_flight.is_empty());
    }
}

#[test]
fn the_same_seed_gives_the_same_events() {
    let config = two_buckets_a_quarter_moving();
    assert_eq!(events(&config), events(&config));
}

#[test]
fn another_seed_moves_other_vbuckets() {
    let config = two_buckets_a_quarter_moving();
    let other = ScenarioConfig {
        seed: config.seed + 1,
        ..config.clone()
    };
    let (a, b) = (events(&config), events(&other));
    assert_ne!(
        moves(&a).keys().collect::<Vec<_>>(),
        moves(&b).keys().collect::<Vec<_>>()
    );
}

#[test]
fn the_added_node_receives_its_share_first() {
    // A quarter of the vbuckets is the new node's fair share of four nodes: all go there.
    let config = ScenarioConfig {
        move_fraction: 0.25,
        ..ScenarioConfig::default()
    };
    let added = host(config.nodes);
    for steps in moves(&events(&config)).values() {
        let Some(Event::VbucketMoveStart(start)) = steps.first() else {
            panic!("a move starts with vbucketMoveStart");
        };
        assert_eq!(start.chain_after[0], added);
    }
}

#[test]
fn the_story_follows_the_outline() {
    let config = ScenarioConfig::default();
    let events = events(&config);
    let milestones: Vec<&str> = events
        .iter()
        .filter(|e| e.vbucket().is_none())
        .map(|e| e.type_name())
        .collect();
    assert_eq!(
        milestones,
        [
            "becameMaster",
            "setServiceMap",
            "createBucket",
            "rebalanceStart",
            "rebalanceStageStarted",
            "bucketRebalanceStarted",
            "resetFastForwardMap",
            "bucketRebalanceEnded",
            "rebalanceStageCompleted",
            "rebalanceEnd",
            "autofailoverNodeStateChange",
            "autofailoverNodeStateChange",
            "autofailoverNodeStateChange",
            "failover",
            "bucketFailoverStarted",
            "bucketFailoverEnded",
            "failoverEnded",
            "autofailoverDone",
        ]
    );
    let Some(Event::BecameMaster(m)) = events.first() else {
        panic!("the story starts with becameMaster");
    };
    assert_eq!(m.node, "n_0@10.17.2.163");
    let before_rebalance = &events[..position(&events, "rebalanceStart")];
    let initial: BTreeSet<u16> = before_rebalance
        .iter()
        .filter_map(|e| match e {
            Event::VbucketStateChange(s) if s.state == VBucketState::Active => Some(s.vbucket),
            _ => None,
        })
        .collect();
    assert_eq!(initial, (0..config.vbuckets).collect());
    let Some(Event::RebalanceStart(start)) = events.get(position(&events, "rebalanceStart")) else {
        panic!("a rebalanceStart");
    };
    let all_hosts: Vec<String> = (0..=config.nodes).map(host).collect();
    assert_eq!(start.keep_nodes, all_hosts);
}

#[test]
fn rebalance_end_carries_the_pid_of_its_start_and_ends_normally() {
    let events = events(&ScenarioConfig::default());
    let start = events.iter().find_map(|e| match e {
        Event::RebalanceStart(s) => Some(s),
        _ => None,
    });
    let end = events.iter().find_map(|e| match e {
        Event::RebalanceEnd(e) => Some(e),
        _ => None,
    });
    let (Some(start), Some(end)) = (start, end) else {
        panic!("a rebalanceStart and a rebalanceEnd");
    };
    assert_eq!(start.pid, end.pid);
    assert_eq!(start.pid, "<0.533.0>");
    assert_eq!(end.reason, "normal");
}

#[test]
fn no_line_carries_the_bucket_password() {
    let mut create_buckets = 0;
    for event in scenario(&two_buckets_a_quarter_moving()) {
        let line = String::from_utf8_lossy(&Record::new(event.clone()).to_line()).into_owned();
        assert!(!line.contains(SIMULATED_PASSWORD), "{line}");
        if let Event::CreateBucket(_) = event {
            create_buckets += 1;
            assert!(line.contains(r#""sasl_password":"*****""#), "{line}");
        }
    }
    assert_eq!(create_buckets, 2);
}

#[test]
fn failover_promotes_replicas_and_empties_the_failed_slots() {
    let events = events(&two_buckets_a_quarter_moving());
    let Some(Event::Failover(failover)) = events.iter().find(|e| e.type_name() == "failover")
    else {
        panic!("a failover");
    };
    let failed = &failover.hosts[0];
    assert_ne!(failed, &host(0), "the master is not failed over");
    let mut updates = 0;
    for e in after_rebalance(&events) {
        match e {
            Event::UpdateMap(u) => {
                updates += 1;
                assert!(u.chain_before.contains(failed), "{u:?}");
                assert!(!u.chain_after.contains(failed), "{u:?}");
                assert_eq!(u.chain_after[1], "", "{u:?}");
            }
            Event::VbucketStateChange(s) => assert_ne!(&s.host, failed),
            _ => {}
        }
    }
    assert!(updates > 0);
}

#[test]
fn without_failover_the_story_ends_with_the_rebalance() {
    let config = ScenarioConfig {
        with_failover: false,
        vbuckets: 64,
        ..ScenarioConfig::default()
    };
    let events = events(&config);
    assert_eq!(events.last().map(Event::type_name), Some("rebalanceEnd"));
}

#[test]
fn a_single_node_cluster_moves_onto_the_added_node() {
    let config = ScenarioConfig {
        nodes: 1,
        vbuckets: 16,
        ..ScenarioConfig::default()
    };
    let events = events(&config);
    let moves = moves(&events);
    assert_eq!(moves.len(), 16);
    for steps in moves.values() {
        let Some(Event::VbucketMoveStart(start)) = steps.first() else {
            panic!("a move starts with vbucketMoveStart");
        };
        assert_eq!(start.chain_before, [host(0), String::new()]);
        assert_eq!(start.chain_after, [host(1), host(0)]);
    }
}
