//! Helpers of the kafka sink's tests: the sink run as `serve` runs it, events to
//! publish, and a `read_committed` reader of the topic.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use master_events_events::catalog::{DeleteBucket, VbucketMoveDone};
use master_events_events::{Event, Record};
use master_events_router::{Router, Sink, SinkHealth, SinkInput};
use master_events_sink_kafka::{
    Counters, KafkaConfig, KafkaSink, CLUSTER_HEADER, HISTORY_HEADER, SEQ_HEADER, TYPE_HEADER,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn event(i: u64) -> Event {
    if i % 2 == 0 {
        DeleteBucket {
            bucket: format!("b{i}").into(),
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

pub async fn publish(router: &Router, from: u64, n: u64) {
    router
        .publish_batch((from..from + n).map(|i| Record::new(event(i))).collect())
        .await
        .expect("published");
}

pub fn config(brokers: &str, topic: &str) -> KafkaConfig {
    let mut c = KafkaConfig::to_brokers(brokers);
    c.topic = topic.into();
    c.cluster = "test".into();
    c.batch_max = 64;
    c.transaction_timeout_ms = 5000;
    c.shutdown_timeout_ms = 2000;
    c
}

/// One run of the sink on `router`, as `serve` starts it.
pub struct SinkRun {
    pub health: Arc<SinkHealth>,
    pub counters: Arc<Counters>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl SinkRun {
    pub fn start(router: &Router, config: KafkaConfig) -> SinkRun {
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

    pub async fn stop(self) {
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
pub struct Read {
    pub seq: u64,
    pub event_type: String,
    pub history: String,
    pub cluster: String,
    pub key: Option<String>,
    pub value: String,
}

/// Every record of partition 0 of `topic`.
pub fn records(brokers: &str, topic: &str) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
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

pub async fn wait_for_count(brokers: &str, topic: &str, n: usize) -> Vec<Read> {
    let start = Instant::now();
    loop {
        let (b, t) = (brokers.to_owned(), topic.to_owned());
        let got = tokio::task::spawn_blocking(move || records(&b, &t))
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

pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seq headers of `records`, in order.
pub fn seqs(records: &[Read]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}
