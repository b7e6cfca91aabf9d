//! The kafka sink against librdkafka's mock cluster (brokers on loopback inside this
//! test process; no real Kafka broker can be installed from the registries this
//! project builds from): every event in the topic exactly once and in seq order,
//! with its headers, across brokers going down mid-stream and a restart of the
//! sink; a gap record for what the archive no longer had.
//!
//! What the mock cannot show (librdkafka 2.12's `rdkafka_mock_handlers.c`): it
//! gives every producer of a `transactional.id` a new producer id instead of
//! bumping the epoch, so a new producer does not fence the old one; it neither
//! hides aborted transactions from `read_committed` readers; and it answers
//! neither `CreateTopics` nor `DescribeConfigs` (so the topic is made here, and the
//! compaction check is not exercised).

mod common;

use common::{config, publish, seqs, wait_for, SinkRun};
use master_events_router::{Router, RouterConfig, SinkState};
use rdkafka::mocking::MockCluster;

const TOPIC: &str = "events";

fn mock() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, 1, 1).expect("topic");
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_in_the_topic_once_in_order_across_brokers_down_and_a_sink_restart() {
    let (cluster, brokers) = mock();
    let router = Router::start(RouterConfig::default());
    let history = router.history().to_string();
    let first = SinkRun::start(&router, config(&brokers, TOPIC));
    publish(&router, 0, 300).await;
    common::wait_for_count(&brokers, TOPIC, 100).await;
    // The broker goes away mid-stream: the sink says so, and holds on.
    cluster.broker_down(1).expect("down");
    publish(&router, 300, 200).await;
    wait_for("the sink to report the brokers down", || {
        first.health.state() == SinkState::Retrying
    })
    .await;
    cluster.broker_up(1).expect("up");
    common::wait_for_count(&brokers, TOPIC, 500).await;
    wait_for("the sink to be ok again", || {
        first.health.state() == SinkState::Ok
    })
    .await;
    first.stop().await;
    // A restart reads the router from its oldest event and must send only what the
    // topic lacks.
    publish(&router, 500, 100).await;
    let second = SinkRun::start(&router, config(&brokers, TOPIC));
    wait_for("the second run to publish", || {
        second.counters.snapshot().published >= 100
    })
    .await;
    second.stop().await;
    let records = common::wait_for_count(&brokers, TOPIC, 600).await;
    router.shutdown().await;
    assert_eq!(
        seqs(&records),
        (1..=600).collect::<Vec<_>>(),
        "exactly once, in seq order"
    );
    for r in &records {
        assert_eq!(r.history, history);
        assert_eq!(r.cluster, "test");
        let (ty, key) = if (r.seq - 1) % 2 == 0 {
            ("deleteBucket", format!("b{}", r.seq - 1))
        } else {
            ("vbucketMoveDone", "default".to_owned())
        };
        assert_eq!(r.event_type, ty);
        assert_eq!(r.key.as_deref(), Some(key.as_str()), "keyed by bucket");
        assert!(r.value.starts_with('{') && r.value.contains(&format!("\"seq\":{}", r.seq)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_archive_no_longer_had_is_one_gap_record_with_the_exact_range() {
    let (cluster, brokers) = mock();
    let router = Router::start(RouterConfig {
        archive_capacity: 100,
        ..RouterConfig::default()
    });
    cluster.broker_down(1).expect("down");
    let sink = SinkRun::start(&router, config(&brokers, TOPIC));
    // While Kafka is down the archive moves on past what the sink read.
    publish(&router, 0, 400).await;
    wait_for("the sink to report the brokers down", || {
        sink.health.state() == SinkState::Retrying
    })
    .await;
    let oldest = 301;
    cluster.broker_up(1).expect("up");
    let records = common::wait_for_count(&brokers, TOPIC, 101).await;
    sink.stop().await;
    router.shutdown().await;
    let gap = records
        .iter()
        .find(|r| r.event_type == "gap")
        .expect("a gap record");
    assert!(gap.value.contains("\"gap\""), "{gap:?}");
    assert_eq!(gap.seq, oldest - 1, "the gap ends where the archive begins");
    let events: Vec<u64> = records
        .iter()
        .filter(|r| r.event_type != "gap")
        .map(|r| r.seq)
        .collect();
    assert_eq!(events, (oldest..=400).collect::<Vec<_>>());
    assert_eq!(records.iter().filter(|r| r.event_type == "gap").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_sharing_a_topic_each_resume_from_their_own_records() {
    let (_cluster, brokers) = mock();
    let routers = [
        Router::start(RouterConfig::default()),
        Router::start(RouterConfig::default()),
    ];
    let named = |name: &str| {
        let mut c = config(&brokers, TOPIC);
        c.cluster = name.into();
        c
    };
    let east = SinkRun::start(&routers[0], named("east"));
    let west = SinkRun::start(&routers[1], named("west"));
    publish(&routers[0], 0, 300).await;
    publish(&routers[1], 0, 100).await;
    common::wait_for_count(&brokers, TOPIC, 400).await;
    // West stops; east goes on, so the topic's newest records are east's; west
    // restarts with more events and must find its own last record behind them.
    west.stop().await;
    publish(&routers[0], 300, 600).await;
    common::wait_for_count(&brokers, TOPIC, 1000).await;
    publish(&routers[1], 100, 50).await;
    let west = SinkRun::start(&routers[1], named("west"));
    let records = common::wait_for_count(&brokers, TOPIC, 1050).await;
    east.stop().await;
    west.stop().await;
    for r in &routers {
        r.shutdown().await;
    }
    let of = |name: &str| -> Vec<u64> {
        records
            .iter()
            .filter(|r| r.cluster == name)
            .map(|r| r.seq)
            .collect()
    };
    assert_eq!(of("east"), (1..=900).collect::<Vec<_>>());
    assert_eq!(
        of("west"),
        (1..=150).collect::<Vec<_>>(),
        "west resumed after its own 100th"
    );
    assert_eq!(records.len(), 1050);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_max_event_bytes_becomes_a_gap_record_and_the_rest_flows() {
    let (_cluster, brokers) = mock();
    let router = Router::start(RouterConfig::default());
    let mut c = config(&brokers, TOPIC);
    // deleteBucket lines (~95 bytes) pass, vbucketMoveDone lines (~115) do not.
    c.max_event_bytes = 105;
    let sink = SinkRun::start(&router, c);
    publish(&router, 0, 100).await;
    let records = common::wait_for_count(&brokers, TOPIC, 100).await;
    let counters = sink.counters.snapshot();
    sink.stop().await;
    router.shutdown().await;
    assert_eq!(
        seqs(&records),
        (1..=100).collect::<Vec<_>>(),
        "one record a seq"
    );
    for r in &records {
        if r.seq % 2 == 1 {
            assert_eq!(r.event_type, "deleteBucket");
        } else {
            assert_eq!(r.event_type, "gap", "seq {} was too large", r.seq);
            assert!(r.value.contains("max_event_bytes"), "{}", r.value);
        }
    }
    assert_eq!(counters.dropped_too_large, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_to_a_broker_that_does_not_speak_it_is_reported_without_the_password() {
    let (_cluster, brokers) = mock();
    let router = Router::start(RouterConfig::default());
    let mut c = config(&brokers, TOPIC);
    c.transaction_timeout_ms = 2000;
    c.sasl = Some(
        toml::from_str(
            "mechanism = \"SCRAM-SHA-512\"\nusername = \"events\"\npassword = \"hunter2-kafka-secret\"",
        )
        .expect("sasl"),
    );
    let sink = SinkRun::start(&router, c);
    publish(&router, 0, 10).await;
    wait_for("the sink to say it cannot hand over", || {
        sink.health.state() == SinkState::Retrying
    })
    .await;
    let status = sink.health.snapshot();
    sink.stop().await;
    router.shutdown().await;
    let reason = status.reason.unwrap_or_default();
    assert!(!reason.is_empty());
    assert!(
        !reason.contains("hunter2"),
        "the password is not shown: {reason}"
    );
    assert_eq!(
        common::records(&brokers, TOPIC).len(),
        0,
        "nothing was handed over"
    );
}
