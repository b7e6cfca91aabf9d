//! The kafka sink's loop: a transactional producer fed from the router, and the
//! resume that reads back from the topic what it already holds.
//!
//! Owns: [`Run`] and [`run`]. Every failure (a broker down, a refused commit, being
//! fenced) ends with the producer dropped and the last held seq forgotten: the next
//! attempt starts a new producer — whose `init_transactions` aborts whatever the
//! previous one with the same `transactional.id` left open — and reads the topic
//! again, so what it publishes next is exactly what the topic lacks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use master_events_events::Gap;
use master_events_router::{Chunk, Router, SinkHealth, SinkInput};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as Rd, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::{
    Counter, Counters, CreateTopic, KafkaConfig, KeyBy, CLUSTER_HEADER, HISTORY_HEADER, SEQ_HEADER,
    TYPE_HEADER,
};

/// How long to wait after being fenced by another producer of the same
/// `transactional.id` before taking over again: the other is a new master, and this
/// node's sink is about to be stopped (it runs on the master only).
const FENCED_BACKOFF: Duration = Duration::from_secs(2);

/// The first window of records read back per partition when resuming; doubled
/// until a record of this cluster is found or the partition's start is reached.
const FIRST_WINDOW: i64 = 256;

/// How long the topic's configuration may take to read (the compaction check).
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the loop needs.
pub(crate) struct Run {
    pub(crate) client: ClientConfig,
    pub(crate) config: KafkaConfig,
    pub(crate) transactional_id: String,
    pub(crate) timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) router: Option<Router>,
    pub(crate) health: Option<Arc<SinkHealth>>,
    pub(crate) counters: Arc<Counters>,
}

/// The client context: remembers librdkafka's last error (why brokers cannot be
/// reached, why authentication failed) to name the cause of a timeout, and sends
/// librdkafka's own log lines to `tracing` at debug level.
#[derive(Clone, Default)]
struct Ctx {
    last_error: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(?level, facility = fac, "librdkafka: {message}");
    }

    fn error(&self, error: Rd, reason: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(format!("{error} ({reason})"));
        }
    }
}

impl ConsumerContext for Ctx {}

impl Ctx {
    /// `what` failed: with librdkafka's last error, which usually says why.
    fn cause(&self, what: String) -> String {
        match self.last_error.lock().ok().and_then(|mut l| l.take()) {
            Some(last) => format!("{what}; librdkafka says: {last}"),
            None => what,
        }
    }
}

/// One record to hand over, in seq order.
struct Out {
    seq: u64,
    key: Option<String>,
    value: bytes::Bytes,
    event_type: &'static str,
    is_event: bool,
}

/// Why a step failed, and whether it was a fencing.
struct Failure {
    why: String,
    fenced: bool,
}

impl From<String> for Failure {
    fn from(why: String) -> Failure {
        Failure { why, fenced: false }
    }
}

/// The cause of a failure, for the health's one WARN per cause: the failing step,
/// without librdkafka's own words on it (which vary from one try to the next, e.g.
/// how many brokers are down now).
fn cause_of(why: &str) -> &str {
    why.split("; librdkafka says").next().unwrap_or(why)
}

/// Runs `f` on the blocking pool (librdkafka's transactional calls block).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("a blocking Kafka call did not finish: {e}"))?
}

/// Drops a producer off the async threads: dropping one purges and flushes (up to
/// 500 ms) and then waits for librdkafka's threads to end.
fn dispose(producer: FutureProducer<Ctx>) {
    drop(tokio::task::spawn_blocking(move || drop(producer)));
}

fn is_fenced(e: &Rd) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    )
}

impl Run {
    fn history(&self) -> String {
        self.router
            .as_ref()
            .map(|r| r.history().to_string())
            .unwrap_or_default()
    }

    /// A producer of this cluster's `transactional.id`, its transactions
    /// initialised (which fences every earlier producer of that id and aborts what
    /// it left open).
    async fn start_producer(&self, ctx: &Ctx) -> Result<FutureProducer<Ctx>, Failure> {
        let mut c = self.client.clone();
        let timeout_ms = self.timeout.as_millis().to_string();
        c.set("transactional.id", &self.transactional_id)
            .set("enable.idempotence", "true")
            .set("transaction.timeout.ms", &timeout_ms)
            .set("message.timeout.ms", &timeout_ms)
            .set("linger.ms", "2");
        let producer: FutureProducer<Ctx> = c
            .create_with_context(ctx.clone())
            .map_err(|e| format!("cannot create the Kafka producer: {e}"))?;
        let p = producer.clone();
        let timeout = self.timeout;
        let id = self.transactional_id.clone();
        let brokers = self.config.brokers.clone();
        let ctx2 = ctx.clone();
        blocking(move || {
            p.init_transactions(timeout).map_err(|e| {
                ctx2.cause(format!(
                    "brokers {brokers}: initialising the transactions of {id}: {e}"
                ))
            })
        })
        .await?;
        Ok(producer)
    }

    /// The topic exists (created when missing) and is not compacted; then the last
    /// seq of `history` it holds for this cluster (0: none).
    async fn learn(&self, ctx: &Ctx, history: &str, checked: &mut bool) -> Result<u64, String> {
        if !*checked {
            self.ensure_topic(ctx).await?;
            *checked = true;
        }
        let client = self.client.clone();
        let topic = self.config.topic.clone();
        let cluster = self.config.cluster.clone();
        let history = history.to_owned();
        let timeout = self.timeout;
        let ctx = ctx.clone();
        let held =
            blocking(move || last_held(&client, &ctx, &topic, &cluster, &history, timeout)).await?;
        match held {
            Some(seq) => Ok(seq),
            None => {
                // Deleted while the sink ran: made again at the next try.
                *checked = false;
                Err(format!(
                    "topic {} does not exist (deleted?); the sink creates it again and publishes what the archive holds",
                    self.config.topic
                ))
            }
        }
    }

    async fn ensure_topic(&self, ctx: &Ctx) -> Result<(), String> {
        let topic = &self.config.topic;
        let admin: AdminClient<DefaultClientContext> = self
            .client
            .create()
            .map_err(|e| format!("cannot create the Kafka admin client: {e}"))?;
        let exists = {
            let (client, ctx, topic, timeout) = (
                self.client.clone(),
                ctx.clone(),
                topic.clone(),
                self.timeout,
            );
            blocking(move || partitions(&client, &ctx, &topic, timeout)).await?
        };
        if exists.is_none() {
            let create = self.config.create_topic.clone().unwrap_or(CreateTopic {
                partitions: 1,
                replication: 1,
            });
            let new = NewTopic::new(
                topic,
                create.partitions,
                TopicReplication::Fixed(create.replication),
            );
            let options = AdminOptions::new().operation_timeout(Some(self.timeout));
            let results = admin
                .create_topics([&new], &options)
                .await
                .map_err(|e| ctx.cause(format!("creating topic {topic}: {e}")))?;
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => return Err(format!("creating topic {topic}: {code}")),
                }
            }
            tracing::info!(topic = %topic, partitions = create.partitions, replication = create.replication, "the kafka sink created its topic");
        }
        // A compacted topic keeps only the newest record of each key: events would
        // vanish. A broker that cannot describe configurations in time (librdkafka's
        // mock cluster cannot at all) is not asked again while the sink runs.
        let options = AdminOptions::new().request_timeout(Some(self.timeout.min(DESCRIBE_TIMEOUT)));
        let described = tokio::time::timeout(
            self.timeout.min(DESCRIBE_TIMEOUT) + Duration::from_millis(500),
            admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options),
        )
        .await;
        let results = match described {
            Ok(Ok(results)) => results,
            Ok(Err(e)) => {
                tracing::warn!(topic = %topic, error = %e, "the kafka sink cannot read its topic's configuration: a compacted topic (which would drop events) goes unnoticed");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(topic = %topic, "the kafka sink could not read its topic's configuration in time: a compacted topic (which would drop events) goes unnoticed");
                Vec::new()
            }
        };
        for resource in results.into_iter().flatten() {
            let policy = resource
                .get("cleanup.policy")
                .and_then(|e| e.value.clone())
                .unwrap_or_default();
            if policy.contains("compact") {
                return Err(format!(
                    "topic {topic} has cleanup.policy={policy}: compaction keeps only the newest record of each key and would drop events; use a topic with cleanup.policy=delete"
                ));
            }
        }
        Ok(())
    }

    /// Hands `batch` over in one transaction; `Ok` once it committed.
    async fn commit(
        &self,
        ctx: &Ctx,
        producer: &FutureProducer<Ctx>,
        batch: &[Out],
        history: &str,
    ) -> Result<(), Failure> {
        let fail = |what: &str, e: Rd| Failure {
            fenced: is_fenced(&e),
            why: ctx.cause(format!("{what}: {e}")),
        };
        producer
            .begin_transaction()
            .map_err(|e| fail("beginning a transaction", e))?;
        let cluster = self.config.cluster.as_str();
        let mut deliveries = Vec::with_capacity(batch.len());
        for m in batch {
            let seq = m.seq.to_string();
            let headers = OwnedHeaders::new_with_capacity(4)
                .insert(Header {
                    key: CLUSTER_HEADER,
                    value: Some(cluster),
                })
                .insert(Header {
                    key: HISTORY_HEADER,
                    value: Some(history),
                })
                .insert(Header {
                    key: SEQ_HEADER,
                    value: Some(seq.as_str()),
                })
                .insert(Header {
                    key: TYPE_HEADER,
                    value: Some(m.event_type),
                });
            let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.config.topic)
                .payload(&m.value[..])
                .headers(headers);
            if let Some(key) = &m.key {
                record = record.key(key.as_str());
            }
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => return Err(fail("producing a record", e)),
            }
        }
        let p = producer.clone();
        let timeout = self.timeout;
        let committed = tokio::task::spawn_blocking(move || p.commit_transaction(timeout))
            .await
            .map_err(|e| format!("a blocking Kafka call did not finish: {e}"))?;
        committed.map_err(|e| fail("committing a transaction", e))?;
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(fail("a record of a committed transaction", e)),
                Err(_) => return Err("a record's delivery report was lost".to_owned().into()),
            }
        }
        Ok(())
    }

    /// The record of a gap frame (its seq: the range's end).
    fn gap_record(&self, gap: Gap) -> Out {
        let mut line = Vec::with_capacity(128);
        gap.encode_line(&mut line);
        line.pop();
        Out {
            seq: gap.to_seq,
            key: None,
            value: bytes::Bytes::from(line),
            event_type: "gap",
            is_event: false,
        }
    }

    /// The records of `chunk` after `held`, appended to `queue`.
    fn take(&self, chunk: Chunk, input: &mut SinkInput, queue: &mut VecDeque<Out>, held: u64) {
        match chunk {
            Chunk::Truncated { .. } => {}
            Chunk::Gap(gap) => {
                self.counters.add(Counter::Missed, gap.missed);
                if gap.to_seq > held {
                    let gap = Gap::new(gap.from_seq.max(held + 1), gap.to_seq, gap.reason.clone());
                    queue.push_back(self.gap_record(gap));
                }
            }
            Chunk::Events(batch) => {
                let Some(selected) = input.select(&batch) else {
                    return;
                };
                let whole = selected.unfiltered().bytes();
                for event in selected.iter() {
                    if event.seq <= held {
                        continue;
                    }
                    let line = event.line.strip_suffix(b"\n").unwrap_or(event.line);
                    if line.len() > self.config.max_event_bytes {
                        self.counters.add(Counter::DroppedTooLarge, 1);
                        tracing::warn!(
                            seq = event.seq,
                            bytes = line.len(),
                            max_event_bytes = self.config.max_event_bytes,
                            "the kafka sink does not send an event longer than max_event_bytes; a gap record names it"
                        );
                        queue.push_back(self.gap_record(Gap::new(
                            event.seq,
                            event.seq,
                            format!(
                                "not sent by the kafka sink: {} bytes, over its max_event_bytes ({})",
                                line.len(),
                                self.config.max_event_bytes
                            ),
                        )));
                        continue;
                    }
                    let event_type = event.meta.event_type.as_str();
                    let key = match self.config.key {
                        KeyBy::Bucket => event.meta.bucket.map(str::to_owned),
                        KeyBy::Type => Some(event_type.to_owned()),
                        KeyBy::None => None,
                    };
                    queue.push_back(Out {
                        seq: event.seq,
                        key,
                        value: whole.slice_ref(line),
                        event_type,
                        is_event: true,
                    });
                }
            }
        }
    }
}

/// The topic's partitions, `None` if it does not exist.
fn partitions(
    client: &ClientConfig,
    ctx: &Ctx,
    topic: &str,
    timeout: Duration,
) -> Result<Option<Vec<i32>>, String> {
    let consumer = reader(client, ctx, "metadata")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| ctx.cause(format!("reading the metadata of topic {topic}: {e}")))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match t.error() {
        None => {}
        Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            return Ok(None)
        }
        Some(e) => return Err(format!("topic {topic}: {}", RDKafkaErrorCode::from(e))),
    }
    if t.partitions().is_empty() {
        return Ok(None);
    }
    Ok(Some(t.partitions().iter().map(|p| p.id()).collect()))
}

/// A consumer that reads committed records only, assigned by hand, never
/// committing offsets.
fn reader(client: &ClientConfig, ctx: &Ctx, what: &str) -> Result<BaseConsumer<Ctx>, String> {
    reader_at(client, ctx, what, "read_committed")
}

/// A consumer at `isolation` (`read_committed` or `read_uncommitted`), assigned by
/// hand, never committing offsets.
fn reader_at(
    client: &ClientConfig,
    ctx: &Ctx,
    what: &str,
    isolation: &str,
) -> Result<BaseConsumer<Ctx>, String> {
    let mut c = client.clone();
    c.set("group.id", "master-events-resume")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false");
    c.create_with_context(ctx.clone())
        .map_err(|e| format!("cannot create the Kafka reader ({what}): {e}"))
}

/// The last seq of `history` the topic holds for `cluster` (0: none): the highest
/// among the newest record of `cluster` in each partition. `None`: the topic does
/// not exist.
fn last_held(
    client: &ClientConfig,
    ctx: &Ctx,
    topic: &str,
    cluster: &str,
    history: &str,
    timeout: Duration,
) -> Result<Option<u64>, String> {
    let Some(partitions) = partitions(client, ctx, topic, timeout)? else {
        return Ok(None);
    };
    let consumer = reader(client, ctx, "resume")?;
    let uncommitted = reader_at(client, ctx, "resume", "read_uncommitted")?;
    let mut held = 0;
    for p in partitions {
        let end = stable_end(&consumer, &uncommitted, ctx, topic, p, timeout)?;
        if let Some((h, seq)) = newest_of(&consumer, ctx, topic, p, end, cluster, timeout)? {
            if h == history {
                held = held.max(seq);
            }
        }
    }
    Ok(Some(held))
}

/// The partition's low watermark and its last stable offset, once every record
/// written to it before the call is decided: a transaction another producer left
/// open holds the stable offset back, and records of ours committed after it would
/// be out of sight, so this waits (at most `timeout`: the broker aborts a
/// transaction after its timeout) until the stable offset reaches the high
/// watermark the partition had.
fn stable_end(
    committed: &BaseConsumer<Ctx>,
    uncommitted: &BaseConsumer<Ctx>,
    ctx: &Ctx,
    topic: &str,
    p: i32,
    timeout: Duration,
) -> Result<(i64, i64), String> {
    let offsets = |c: &BaseConsumer<Ctx>, what: &str| {
        c.fetch_watermarks(topic, p, timeout).map_err(|e| {
            ctx.cause(format!(
                "topic {topic} partition {p}: its {what} offsets: {e}"
            ))
        })
    };
    let (_, high) = offsets(uncommitted, "high")?;
    let deadline = Instant::now() + timeout;
    loop {
        let (low, stable) = offsets(committed, "stable")?;
        if stable >= high {
            return Ok((low, stable));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "topic {topic} partition {p}: a transaction left open (offsets {stable}..{high}) holds back what is committed after it; it ends within its producer's transaction timeout"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The newest record of `cluster` in partition `p` below `end` (its stable offset),
/// as (history, seq): read back in windows that double from the end, down to `low`.
fn newest_of(
    consumer: &BaseConsumer<Ctx>,
    ctx: &Ctx,
    topic: &str,
    p: i32,
    (low, high): (i64, i64),
    cluster: &str,
    timeout: Duration,
) -> Result<Option<(String, u64)>, String> {
    let mut end = high;
    let mut window = FIRST_WINDOW;
    while end > low {
        let start = (end - window).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(start))
            .map_err(|e| format!("topic {topic} partition {p}: {e}"))?;
        consumer
            .assign(&tpl)
            .map_err(|e| format!("topic {topic} partition {p}: {e}"))?;
        let deadline = Instant::now() + timeout;
        let mut newest = None;
        loop {
            if Instant::now() >= deadline {
                return Err(ctx.cause(format!(
                    "topic {topic} partition {p}: reading back offsets {start}..{end} took over {timeout:?}"
                )));
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                // The end of what is committed (everything below `end` was decided
                // before this read began).
                Some(Err(Rd::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    return Err(ctx.cause(format!("topic {topic} partition {p}: reading: {e}")))
                }
                Some(Ok(m)) => {
                    if m.offset() >= end {
                        break;
                    }
                    let Some(headers) = m.headers() else { continue };
                    let mut ours = false;
                    let (mut h, mut seq) = (None, None);
                    for header in headers.iter() {
                        let value = header.value.and_then(|v| std::str::from_utf8(v).ok());
                        match header.key {
                            CLUSTER_HEADER => ours = value == Some(cluster),
                            HISTORY_HEADER => h = value.map(str::to_owned),
                            SEQ_HEADER => seq = value.and_then(|v| v.parse::<u64>().ok()),
                            _ => {}
                        }
                    }
                    if let (true, Some(h), Some(seq)) = (ours, h, seq) {
                        newest = Some((h, seq));
                    }
                }
            }
        }
        if newest.is_some() {
            return Ok(newest);
        }
        end = start;
        window = window.saturating_mul(2);
    }
    Ok(None)
}

/// Runs the sink until its input ends (see the crate's promises).
pub(crate) async fn run(run: Run, mut input: SinkInput) {
    let ctx = Ctx::default();
    // The sink's health (a sink built outside `serve` gets one of its own, so that
    // its causes are logged all the same).
    let health = run
        .health
        .clone()
        .unwrap_or_else(|| Arc::new(SinkHealth::new(crate::NAME, 0)));
    let batch_max = run.config.batch_max;
    let mut producer: Option<FutureProducer<Ctx>> = None;
    // The last seq the topic is known to hold; `None`: to be read from it.
    let mut held: Option<u64> = None;
    // Read from the router, not yet committed, in seq order.
    let mut queue: VecDeque<Out> = VecDeque::new();
    let mut history = run.history();
    // The topic was found (or made) and its configuration checked, once a run.
    let mut topic_checked = false;
    let mut input_done = false;
    // Set once stopping: past it, a sink that cannot commit gives up.
    let mut deadline: Option<Instant> = None;
    let mut delay = Duration::from_millis(100);
    loop {
        let failure: Option<Failure> = 'step: {
            if producer.is_none() {
                match run.start_producer(&ctx).await {
                    Ok(p) => producer = Some(p),
                    Err(f) => break 'step Some(f),
                }
            }
            if held.is_none() {
                history = run.history();
                match run.learn(&ctx, &history, &mut topic_checked).await {
                    Ok(seq) => {
                        tracing::info!(topic = %run.config.topic, last_held = seq, "the kafka sink resumes after the last event the topic holds");
                        held = Some(seq);
                        queue.retain(|m| m.seq > seq);
                    }
                    Err(why) => break 'step Some(why.into()),
                }
            }
            let last_held = held.unwrap_or(0);
            if queue.is_empty() {
                if input_done {
                    health.ok();
                    break 'step None;
                }
                match input.recv().await {
                    Some(chunk) => run.take(chunk, &mut input, &mut queue, last_held),
                    None => {
                        input_done = true;
                        deadline.get_or_insert(Instant::now() + run.shutdown_timeout);
                    }
                }
                // Whatever else is ready joins the same transaction.
                while queue.len() < batch_max {
                    match input.try_recv() {
                        Some(chunk) => run.take(chunk, &mut input, &mut queue, last_held),
                        None => break,
                    }
                }
                break 'step None;
            }
            let Some(p) = producer.as_ref() else {
                break 'step None;
            };
            let n = queue.len().min(batch_max);
            let batch: Vec<Out> = queue.drain(..n).collect();
            match run.commit(&ctx, p, &batch, &history).await {
                Ok(()) => {
                    let events = batch.iter().filter(|m| m.is_event).count() as u64;
                    run.counters.add(Counter::Published, events);
                    run.counters.add(Counter::Transactions, 1);
                    if let Some(last) = batch.last() {
                        held = Some(last.seq.max(last_held));
                    }
                    health.ok();
                    delay = Duration::from_millis(100);
                    None
                }
                Err(f) => {
                    // Back in front, in order: sent again after the resume, which
                    // drops what the topic turns out to hold.
                    for m in batch.into_iter().rev() {
                        queue.push_front(m);
                    }
                    Some(f)
                }
            }
        };
        let Some(failure) = failure else {
            if input_done && queue.is_empty() && held.is_some() {
                break;
            }
            continue;
        };
        // Start again from a new producer and what the topic holds.
        if let Some(p) = producer.take() {
            run.counters.add(Counter::Aborted, 1);
            dispose(p);
        }
        held = None;
        let wait = if failure.fenced {
            run.counters.add(Counter::Fenced, 1);
            FENCED_BACKOFF
        } else {
            delay
        };
        health.retrying_because(cause_of(&failure.why), failure.why.clone());
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = input.stopping(), if deadline.is_none() => {
                deadline = Some(Instant::now() + run.shutdown_timeout);
            }
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    if let Some(p) = producer.take() {
        dispose(p);
    }
    let left = queue.iter().filter(|m| m.is_event).count();
    if left > 0 {
        run.counters.add(Counter::DroppedAtShutdown, left as u64);
        tracing::warn!(left, "the kafka sink stopped with events not committed to Kafka; a restart resumes from what the topic holds");
    }
}
