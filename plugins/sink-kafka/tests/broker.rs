//! The kafka sink against a real Kafka broker, at `KAFKA_BROKERS`: what
//! librdkafka's mock cluster cannot show (see mock.rs). `scripts/kafka-broker.sh`
//! runs these with `--ignored`; they are ignored otherwise, so that `cargo test`
//! without a broker lists them as skipped, not passed.
//!
//! - the topic is created when missing;
//! - a second producer of the same `transactional.id` (a new master while the old
//!   one still runs) fences the first, whose next commit fails, and still every
//!   event is in the topic once, in order;
//! - a transaction a producer left open is aborted when the next one starts, and a
//!   `read_committed` reader never sees its records.

mod common;

use std::time::Duration;

use common::{config, publish, seqs, wait_for, wait_for_count, SinkRun};
use master_events_router::{Router, RouterConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

/// The broker list; a clear failure when the tests are run without one.
fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!("KAFKA_BROKERS is not set: scripts/kafka-broker.sh says how to run these")
    })
}

/// A topic no earlier run used.
fn fresh_topic(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000_007)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker at KAFKA_BROKERS (scripts/kafka-broker.sh)"]
async fn a_missing_topic_is_created_and_holds_every_event_once_in_order() {
    let brokers = brokers();
    let topic = fresh_topic("created");
    let router = Router::start(RouterConfig::default());
    let sink = SinkRun::start(&router, config(&brokers, &topic));
    publish(&router, 0, 500).await;
    let records = wait_for_count(&brokers, &topic, 500).await;
    sink.stop().await;
    router.shutdown().await;
    assert_eq!(seqs(&records), (1..=500).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker at KAFKA_BROKERS (scripts/kafka-broker.sh)"]
async fn a_second_producer_of_the_same_id_fences_the_first_and_nothing_is_doubled() {
    let brokers = brokers();
    let topic = fresh_topic("fenced");
    let router = Router::start(RouterConfig::default());
    let a = SinkRun::start(&router, config(&brokers, &topic));
    publish(&router, 0, 200).await;
    wait_for_count(&brokers, &topic, 200).await;
    // A second sink of the same cluster, as a new master's while the old one still
    // runs: its producer fences the first one's.
    let b = SinkRun::start(&router, config(&brokers, &topic));
    let fenced =
        |a: &SinkRun, b: &SinkRun| a.counters.snapshot().fenced + b.counters.snapshot().fenced;
    // Events in rounds until one producer was fenced (bounded: 100 rounds).
    let mut published = 200;
    for _ in 0..100 {
        if fenced(&a, &b) > 0 {
            break;
        }
        publish(&router, published, 50).await;
        published += 50;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fenced(&a, &b) > 0,
        "neither producer was fenced: a {:?}, b {:?}",
        a.counters.snapshot(),
        b.counters.snapshot()
    );
    publish(&router, published, 50).await;
    published += 50;
    let records = wait_for_count(&brokers, &topic, published as usize).await;
    a.stop().await;
    b.stop().await;
    let after = wait_for_count(&brokers, &topic, published as usize).await;
    router.shutdown().await;
    assert_eq!(records.len(), after.len(), "a late duplicate");
    assert_eq!(
        seqs(&after),
        (1..=published).collect::<Vec<_>>(),
        "each event once, in order, though two producers raced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker at KAFKA_BROKERS (scripts/kafka-broker.sh)"]
async fn a_transaction_left_open_is_aborted_and_never_read() {
    let brokers = brokers();
    let topic = fresh_topic("open");
    let base = config(&brokers, &topic);
    // The topic first (a broker need not create topics a producer names).
    {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .expect("admin");
        let made = admin
            .create_topics(
                [&NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .expect("create topic");
        assert!(made.iter().all(Result::is_ok), "{made:?}");
    }
    // A producer of the sink's transactional.id (a master that died mid-transaction)
    // leaves records of seqs 1..=100 in an open transaction.
    {
        let b = brokers.clone();
        let t = topic.clone();
        let id = base.transactional_id();
        tokio::task::spawn_blocking(move || {
            let p: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &b)
                .set("transactional.id", &id)
                .create()
                .expect("producer");
            p.init_transactions(Duration::from_secs(10)).expect("init");
            p.begin_transaction().expect("begin");
            for seq in 1..=100u64 {
                let s = seq.to_string();
                let headers = rdkafka::message::OwnedHeaders::new()
                    .insert(rdkafka::message::Header {
                        key: master_events_sink_kafka::CLUSTER_HEADER,
                        value: Some("test"),
                    })
                    .insert(rdkafka::message::Header {
                        key: master_events_sink_kafka::SEQ_HEADER,
                        value: Some(s.as_str()),
                    });
                p.send(
                    BaseRecord::<str, str>::to(&t)
                        .payload("left open")
                        .headers(headers),
                )
                .expect("send");
            }
            p.flush(Duration::from_secs(10)).expect("flush");
            // Dropped without committing: the transaction stays open.
            std::mem::forget(p);
        })
        .await
        .expect("the open transaction");
    }
    let router = Router::start(RouterConfig::default());
    let sink = SinkRun::start(&router, base);
    publish(&router, 0, 150).await;
    let records = wait_for_count(&brokers, &topic, 150).await;
    wait_for("the sink to commit", || {
        sink.counters.snapshot().published >= 150
    })
    .await;
    sink.stop().await;
    router.shutdown().await;
    assert!(
        records.iter().all(|r| r.value != "left open"),
        "a record of the aborted transaction was read"
    );
    assert_eq!(seqs(&records), (1..=150).collect::<Vec<_>>());
}
