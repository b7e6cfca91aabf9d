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

use std::sync::Arc;
use std::time::{Duration, Instant};

use master_events_events::catalog::{DeleteBucket, VbucketMoveDone};
use master_events_events::{Event, Record};
use master_events_router::{Router, RouterConfig, Sink, SinkHealth, SinkInput, SinkState};
use master_events_sink_kafka::{
    Counters, KafkaConfig, KafkaSink, CLUSTER_HEADER, HISTORY_HEADER, SEQ_HEADER, TYPE_HEADER,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "events";
const WAIT: Duration = Duration::from_secs(30);

fn event(i: u64) -> Event {
    if i % 2 == 0 {
        DeleteBucket {
            bucket: format!("b{i}"),
        }
        .into()
    } else {
        VbucketMoveDone {
            vbucket: (i % 1024) as u16,
            bucket: "default".into(),
        }
        .into()
    }
}

async fn publish(router: &Router, from: u64, n: u64) {
    router
        .publish_batch((from..from + n).map(|i| Record::new(event(i))).collect())
        .await
        .expect("published");
}

fn config(brokers: &str) -> KafkaConfig {
    let mut c = KafkaConfig::to_brokers(brokers);
    c.topic = TOPIC.into();
    c.cluster = "test".into();
    c.batch_max = 64;
    c.transaction_timeout_ms = 5000;
    c.shutdown_timeout_ms = 2000;
    c
}

/// One run of the sink on `router`, as `serve` starts it.
struct SinkRun {
    health: Arc<SinkHealth>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl SinkRun {
    fn start(router: &Router, config: KafkaConfig) -> SinkRun {
        let health = Arc::new(SinkHealth::new("kafka", 0));
        let sink = KafkaSink::new(config)
            .expect("valid config")
            .with_health(Arc::clone(&health))
            .with_router(router.clone());
        let counters = sink.counters();
        let cancel = CancellationToken::new();
        let input = SinkInput::new(
            "kafka",
            router.subscribe(sink.start_cursor()),
            None,
            cancel.clone(),
        );
        let task = tokio::spawn(Box::new(sink).run(input));
        SinkRun {
            health,
            counters,
            cancel,
            task,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the sink stops in time")
            .expect("the sink ends normally");
    }
}

/// One record as read back: (seq header, type header, history header, cluster
/// header, key, value).
#[derive(Debug, Clone)]
struct Read {
    seq: u64,
    event_type: String,
    history: String,
    cluster: String,
    key: Option<String>,
    value: String,
}

/// Every record of partition 0 of the topic.
fn records(brokers: &str) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let start = Instant::now();
    while start.elapsed() < WAIT {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => panic!("reading the topic: {e}"),
            Some(Ok(m)) => {
                let header = |name: &str| {
                    m.headers()
                        .and_then(|h| {
                            h.iter()
                                .find(|x| x.key == name)
                                .and_then(|x| x.value)
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                        })
                        .unwrap_or_default()
                };
                out.push(Read {
                    seq: header(SEQ_HEADER).parse().unwrap_or(0),
                    event_type: header(TYPE_HEADER),
                    history: header(HISTORY_HEADER),
                    cluster: header(CLUSTER_HEADER),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                });
            }
        }
    }
    out
}

async fn wait_for_count(brokers: &str, n: usize) -> Vec<Read> {
    let start = Instant::now();
    loop {
        let b = brokers.to_owned();
        let got = tokio::task::spawn_blocking(move || records(&b))
            .await
            .expect("reader");
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < WAIT,
            "the topic holds {} records, not {n}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mock() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(TOPIC, 1, 1).expect("topic");
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

fn seqs(records: &[Read]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_in_the_topic_once_in_order_across_brokers_down_and_a_sink_restart() {
    let (cluster, brokers) = mock();
    let router = Router::start(RouterConfig::default());
    let history = router.history().to_string();
    let first = SinkRun::start(&router, config(&brokers));
    publish(&router, 0, 300).await;
    wait_for_count(&brokers, 100).await;
    // The broker goes away mid-stream: the sink says so, and holds on.
    cluster.broker_down(1).expect("down");
    publish(&router, 300, 200).await;
    wait_for("the sink to report the brokers down", || {
        first.health.state() == SinkState::Retrying
    })
    .await;
    cluster.broker_up(1).expect("up");
    wait_for_count(&brokers, 500).await;
    wait_for("the sink to be ok again", || {
        first.health.state() == SinkState::Ok
    })
    .await;
    first.stop().await;
    // A restart reads the router from its oldest event and must send only what the
    // topic lacks.
    publish(&router, 500, 100).await;
    let second = SinkRun::start(&router, config(&brokers));
    wait_for("the second run to publish", || {
        second.counters.snapshot().published >= 100
    })
    .await;
    second.stop().await;
    let records = wait_for_count(&brokers, 600).await;
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
    let sink = SinkRun::start(&router, config(&brokers));
    // While Kafka is down the archive moves on past what the sink read.
    publish(&router, 0, 400).await;
    wait_for("the sink to report the brokers down", || {
        sink.health.state() == SinkState::Retrying
    })
    .await;
    let oldest = 301;
    cluster.broker_up(1).expect("up");
    let records = wait_for_count(&brokers, 101).await;
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
