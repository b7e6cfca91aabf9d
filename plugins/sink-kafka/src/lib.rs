//! The `kafka` sink of master-events: every event handed to a Kafka topic exactly
//! once, in seq order, by a transactional producer that a new master fences.
//!
//! ```toml
//! [[sinks]]
//! type = "kafka"
//! brokers = "kafka-1:9092,kafka-2:9092"  # bootstrap servers
//! topic = "master-events"                # default
//! cluster = "prod-east"                  # names this cluster's records (default "master-events")
//! key = "bucket"                         # bucket (default) | type | none
//! batch_max = 1000                       # events per transaction at most (default)
//! create_topic = { partitions = 1, replication = 3 }  # when the topic is missing
//! tls = { ca_file = "/etc/master-events/kafka-ca.pem" }
//! sasl = { mechanism = "SCRAM-SHA-512", username = "events", password_file = "/etc/master-events/kafka-password" }
//! ```
//!
//! Owns: [`KafkaConfig`] (registered as `kafka`), the running [`KafkaSink`], its
//! counters ([`KafkaStats`], per sink and process-wide with [`stats`]) and the
//! record headers ([`HISTORY_HEADER`], [`SEQ_HEADER`], [`CLUSTER_HEADER`],
//! [`TYPE_HEADER`]).
//!
//! Promises:
//! - **Exactly once, in order.** Events go out in transactions of at most
//!   `batch_max` events, in seq order, each a record whose value is the event's
//!   wire line and whose headers carry the cluster, the archive's history, the seq
//!   and the type; an event counts as handed over once its transaction committed.
//!   A transaction that fails is aborted (its records are never visible to a
//!   `read_committed` consumer) and sent again.
//! - **One producer per cluster.** The producer's `transactional.id` is
//!   `master-events.<cluster>` (or `transactional_id`): when a new master's sink
//!   starts, the broker fences the old master's producer, whose next commit fails.
//!   The sink runs on the master only by default (`run_on = "master"`).
//! - **Resume from the topic, never from a guess.** On start and after every
//!   failure, the sink reads the newest record of its cluster in each partition
//!   (`read_committed`, after fencing: what any earlier producer committed is
//!   visible, what it left open is aborted; a transaction another producer left
//!   open is waited out, up to the transaction timeout, since what was committed
//!   after it is out of sight until it ends); the highest seq of this archive's
//!   history among them is the last event the topic holds, and the sink publishes
//!   from the next one. Transactions commit in seq order, so every seq below it is
//!   held too. What the archive no longer has is published as a `gap` record with
//!   the exact range (its seq header is the range's end).
//! - **Bounded, never slowing the router.** While Kafka is unreachable the sink
//!   stops reading its subscription: events wait in the router's archive (which a
//!   sink never holds back); what the archive evicts meanwhile comes back as a gap.
//! - **Says what is wrong.** The health is `retrying` with the cause (brokers down,
//!   credentials refused, the topic missing or compacted, fenced by another
//!   producer) and each new cause is a WARN; `ok` once a transaction commits.
//! - **Secrets stay secret.** The SASL password and TLS key are never logged, shown
//!   in errors or in `Debug` output; `properties` values are hidden too.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod run;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use master_events_router::{
    ConfigError, Cursor, RunOn, Sink, SinkConfig, SinkContext, SinkFuture, SinkHealth, SinkInput,
};
use rdkafka::ClientConfig;
use schemars::JsonSchema;
use serde::Deserialize;

/// The sink's `type` name.
pub const NAME: &str = "kafka";
/// The header naming the cluster a record comes from.
pub const CLUSTER_HEADER: &str = "master-events-cluster";
/// The header naming the archive's history.
pub const HISTORY_HEADER: &str = "master-events-history";
/// The header carrying the event's seq (a gap record: the last seq of its range).
pub const SEQ_HEADER: &str = "master-events-seq";
/// The header carrying the event's type (`gap` for a gap record).
pub const TYPE_HEADER: &str = "master-events-type";

/// Why a Kafka configuration is refused (never quoting a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaError {
    /// A value is missing, malformed or out of range; the message names the key.
    #[error("{0}")]
    Invalid(String),
    /// A file named by the configuration cannot be used (the message names the
    /// key and the path, never what the file holds).
    #[error("{0}")]
    File(String),
}

/// What a record's key is.
#[derive(Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyBy {
    /// The event's `bucket` (events without one: no key). A bucket's events stay in
    /// one partition, in order.
    #[default]
    Bucket,
    /// The event's type.
    Type,
    /// No key: the producer's partitioner spreads records.
    None,
}

/// `create_topic = { ... }`: how the sink creates the topic when it is missing.
#[derive(Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// Partitions (default 1: one partition keeps the cluster's total order).
    #[serde(default = "d_one")]
    pub partitions: i32,
    /// Replicas of each partition (default 1).
    #[serde(default = "d_one")]
    pub replication: i32,
}

fn d_one() -> i32 {
    1
}

/// `tls = { ... }`: TLS to the brokers.
#[derive(Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KafkaTls {
    /// A PEM file of the CA certificates to verify the brokers with (default: the
    /// system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A PEM file of the client certificate, for brokers that verify clients; with
    /// `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// A PEM file of the client certificate's private key. Never logged.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// The SASL mechanisms the sink speaks.
#[derive(Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN` (use it with `tls`: the password crosses the wire as it is).
    #[serde(rename = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-256`.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `sasl = { ... }`: SASL authentication.
#[derive(Deserialize, JsonSchema, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password; never logged. Prefer `password_file`.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password (trailing newline ignored); never logged.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl fmt::Debug for KafkaSasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

fn d_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}
fn d_topic() -> String {
    "master-events".to_owned()
}
fn d_cluster() -> String {
    "master-events".to_owned()
}
fn d_batch_max() -> usize {
    1000
}
fn d_timeout_ms() -> u64 {
    10_000
}
fn d_shutdown_timeout_ms() -> u64 {
    5_000
}
fn d_max_event_bytes() -> usize {
    999_000
}

/// Hands every event to a Kafka topic, exactly once, with a transactional producer.
#[derive(Deserialize, JsonSchema, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// The bootstrap brokers, `host:port[,host:port...]` (default `127.0.0.1:9092`).
    #[serde(default = "d_brokers")]
    pub brokers: String,
    /// The topic (default `master-events`). Clusters may share one: each finds its
    /// own records by the cluster header.
    #[serde(default = "d_topic")]
    pub topic: String,
    /// This cluster's name (default `master-events`): the cluster header of its
    /// records, and its producer's `transactional.id` (`master-events.<cluster>`).
    /// Clusters sharing a topic need names of their own.
    #[serde(default = "d_cluster")]
    pub cluster: String,
    /// The producer's `transactional.id` (default `master-events.<cluster>`): every
    /// node of a cluster must use the same, so that a new master fences the old.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// What a record's key is: `bucket` (default), `type` or `none`.
    #[serde(default)]
    pub key: KeyBy,
    /// Events per transaction at most (default 1000, at least 1).
    #[serde(default = "d_batch_max")]
    pub batch_max: usize,
    /// How long a transaction may stay open before the broker aborts it, and how
    /// long a commit, an abort or the resume may take, in milliseconds (default
    /// 10000).
    #[serde(default = "d_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// On shutdown, how long to keep handing over what was read, in milliseconds
    /// (default 5000).
    #[serde(default = "d_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// Create the topic when it is missing, with these partitions and replicas
    /// (default: `{ partitions = 1, replication = 1 }`).
    #[serde(default)]
    pub create_topic: Option<CreateTopic>,
    /// TLS to the brokers.
    #[serde(default)]
    pub tls: Option<KafkaTls>,
    /// SASL authentication.
    #[serde(default)]
    pub sasl: Option<KafkaSasl>,
    /// The largest event line handed over, in bytes (default 1000000: librdkafka's
    /// and the brokers' default limits, less room for the headers). A longer event
    /// is not sent: a gap record names its seq, it is counted (dropped, `too_large`)
    /// and a WARN says so — a record the broker refuses would otherwise stop the
    /// sink for good. Raise it with the brokers' `max.message.bytes` and
    /// `properties = { "message.max.bytes" = "..." }`.
    #[serde(default = "d_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Further librdkafka properties (e.g. `"message.max.bytes" = "2000000"`); the
    /// ones this sink sets itself are refused. Values are never logged.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden: BTreeMap<&str, &str> = self
            .properties
            .keys()
            .map(|k| (k.as_str(), "***"))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("cluster", &self.cluster)
            .field("transactional_id", &self.transactional_id)
            .field("key", &self.key)
            .field("batch_max", &self.batch_max)
            .field("transaction_timeout_ms", &self.transaction_timeout_ms)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .field("create_topic", &self.create_topic)
            .field("tls", &self.tls)
            .field("sasl", &self.sasl)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("properties", &hidden)
            .finish()
    }
}

/// The librdkafka properties the sink sets itself (refused in `properties`).
const OWN_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "transactional.id",
    "enable.idempotence",
    "transaction.timeout.ms",
    "isolation.level",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "group.id",
    "enable.auto.commit",
    "enable.partition.eof",
];

impl KafkaConfig {
    /// The config for `brokers` with every other key at its default (serde's).
    pub fn to_brokers(brokers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            topic: d_topic(),
            cluster: d_cluster(),
            transactional_id: None,
            key: KeyBy::default(),
            batch_max: d_batch_max(),
            transaction_timeout_ms: d_timeout_ms(),
            shutdown_timeout_ms: d_shutdown_timeout_ms(),
            create_topic: None,
            tls: None,
            sasl: None,
            max_event_bytes: d_max_event_bytes(),
            properties: BTreeMap::new(),
        }
    }

    /// The producer's `transactional.id`.
    pub fn transactional_id(&self) -> String {
        self.transactional_id
            .clone()
            .unwrap_or_else(|| format!("master-events.{}", self.cluster))
    }

    /// Checks the values (files are read by [`KafkaSink::new`]).
    pub fn check(&self) -> Result<(), KafkaError> {
        let invalid = |m: String| Err(KafkaError::Invalid(m));
        let brokers: Vec<&str> = self.brokers.split(',').map(str::trim).collect();
        for (i, b) in brokers.iter().enumerate() {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok || b.contains('@') || b.contains("://") {
                return invalid(format!(
                    "brokers: entry {i} is not host:port (a list is comma-separated, without a scheme or credentials)"
                ));
            }
        }
        let topic_ok = !self.topic.is_empty()
            && self.topic.len() <= 249
            && self.topic != "."
            && self.topic != ".."
            && self
                .topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !topic_ok {
            return invalid(format!(
                "topic: {:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)",
                self.topic
            ));
        }
        if self.cluster.is_empty() || self.cluster.contains(char::is_whitespace) {
            return invalid(format!(
                "cluster: {:?} must be a non-empty name without spaces",
                self.cluster
            ));
        }
        if self.transactional_id.as_deref() == Some("") {
            return invalid("transactional_id: must not be empty".into());
        }
        if self.batch_max == 0 || self.transaction_timeout_ms == 0 || self.max_event_bytes == 0 {
            return invalid(
                "batch_max, transaction_timeout_ms and max_event_bytes must be at least 1".into(),
            );
        }
        if let Some(c) = &self.create_topic {
            if c.partitions < 1 || c.replication < 1 {
                return invalid(
                    "create_topic: partitions and replication must be at least 1".into(),
                );
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return invalid(
                    "tls: cert_file and key_file go together: set both or neither".into(),
                );
            }
        }
        if let Some(sasl) = &self.sasl {
            if sasl.username.is_empty() {
                return invalid("sasl.username: must not be empty".into());
            }
            if sasl.password.is_some() == sasl.password_file.is_some() {
                return invalid("sasl: give one of password or password_file".into());
            }
        }
        for key in self.properties.keys() {
            if OWN_PROPERTIES.contains(&key.as_str()) {
                return invalid(format!(
                    "properties: {key:?} is set by the sink itself (see its own keys: brokers, tls, sasl, transactional_id, ...)"
                ));
            }
        }
        Ok(())
    }

    /// The librdkafka settings shared by the producer and the resume reader (the
    /// password read from its file).
    fn client_config(&self, password: Option<&str>) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        // librdkafka's own log lines would not go through tracing: the sink reports
        // errors itself, by cause.
        c.set("log_level", "3");
        let tls = self.tls.is_some();
        let protocol = match (tls, self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if let Some(t) = &self.tls {
            if let Some(ca) = &t.ca_file {
                c.set("ssl.ca.location", ca.display().to_string());
            }
            if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
                c.set("ssl.certificate.location", cert.display().to_string());
                c.set("ssl.key.location", key.display().to_string());
            }
        }
        if let Some(s) = &self.sasl {
            c.set("sasl.mechanism", s.mechanism.as_str());
            c.set("sasl.username", &s.username);
            if let Some(p) = password {
                c.set("sasl.password", p);
            }
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Reads the password file and checks the TLS files are readable.
    fn read_files(&self) -> Result<Option<String>, KafkaError> {
        // Each TLS file must be readable and hold what its key says (the error
        // names the key and the path, never what the file holds).
        let pem = |key: &str, path: &Path, marker: &str, what: &str| {
            let text = std::fs::read(path).map_err(|e| {
                KafkaError::File(format!("{key}: cannot read {}: {e}", path.display()))
            })?;
            let holds = text.windows(marker.len()).any(|w| w == marker.as_bytes());
            if holds {
                Ok(())
            } else {
                Err(KafkaError::File(format!(
                    "{key}: {} holds no {what} (PEM, {marker})",
                    path.display()
                )))
            }
        };
        if let Some(t) = &self.tls {
            let cert = "-----BEGIN CERTIFICATE-----";
            if let Some(path) = &t.ca_file {
                pem("tls.ca_file", path, cert, "certificate")?;
            }
            if let Some(path) = &t.cert_file {
                pem("tls.cert_file", path, cert, "certificate")?;
            }
            if let Some(path) = &t.key_file {
                pem("tls.key_file", path, "PRIVATE KEY-----", "private key")?;
            }
        }
        let Some(sasl) = &self.sasl else {
            return Ok(None);
        };
        if let Some(p) = &sasl.password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &sasl.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            KafkaError::File(format!(
                "sasl.password_file: cannot read {}: {e}",
                path.display()
            ))
        })?;
        let password = text.trim_end_matches(['\n', '\r']).to_owned();
        if password.is_empty() {
            return Err(KafkaError::File(format!(
                "sasl.password_file: {} is empty",
                path.display()
            )));
        }
        Ok(Some(password))
    }
}

impl SinkConfig for KafkaConfig {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str =
        "hands every event to a Kafka topic exactly once (transactional producer, resumes from the topic)";
    /// One producer per cluster: the master's (a new master fences the old one).
    const RUN_ON: RunOn = RunOn::Master;

    fn validate(&self) -> Result<(), String> {
        self.check().map_err(|e| e.to_string())
    }

    fn build(self, ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError> {
        let sink = KafkaSink::new(self)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?
            .with_health(Arc::clone(ctx.health()))
            .with_router(ctx.router().clone());
        Ok(Box::new(sink))
    }
}

master_events_router::register_sink!(KafkaConfig);

/// The counters of a Kafka sink.
#[derive(Debug, Default)]
pub struct Counters {
    published: AtomicU64,
    transactions: AtomicU64,
    aborted: AtomicU64,
    fenced: AtomicU64,
    missed: AtomicU64,
    dropped_at_shutdown: AtomicU64,
    dropped_too_large: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KafkaStats {
    /// Events in committed transactions.
    pub published: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Transactions aborted (their events were sent again).
    pub aborted: u64,
    /// Times the producer was fenced by another with the same `transactional.id`.
    pub fenced: u64,
    /// Events the sink missed in the stream itself (it fell behind the archive);
    /// published as gap records.
    pub missed: u64,
    /// Events read but not committed when the shutdown deadline passed (a restart
    /// resumes from what the topic holds).
    pub dropped_at_shutdown: u64,
    /// Events longer than `max_event_bytes`, not sent (a gap record names each).
    pub dropped_too_large: u64,
}

#[derive(Clone, Copy)]
pub(crate) enum Counter {
    Published,
    Transactions,
    Aborted,
    Fenced,
    Missed,
    DroppedAtShutdown,
    DroppedTooLarge,
}

impl Counters {
    fn cell(&self, c: Counter) -> &AtomicU64 {
        match c {
            Counter::Published => &self.published,
            Counter::Transactions => &self.transactions,
            Counter::Aborted => &self.aborted,
            Counter::Fenced => &self.fenced,
            Counter::Missed => &self.missed,
            Counter::DroppedAtShutdown => &self.dropped_at_shutdown,
            Counter::DroppedTooLarge => &self.dropped_too_large,
        }
    }

    pub(crate) fn add(&self, c: Counter, n: u64) {
        TOTALS.cell(c).fetch_add(n, Ordering::Relaxed);
        self.cell(c).fetch_add(n, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> KafkaStats {
        let get = |c| self.cell(c).load(Ordering::Relaxed);
        KafkaStats {
            published: get(Counter::Published),
            transactions: get(Counter::Transactions),
            aborted: get(Counter::Aborted),
            fenced: get(Counter::Fenced),
            missed: get(Counter::Missed),
            dropped_at_shutdown: get(Counter::DroppedAtShutdown),
            dropped_too_large: get(Counter::DroppedTooLarge),
        }
    }
}

static TOTALS: Counters = Counters {
    published: AtomicU64::new(0),
    transactions: AtomicU64::new(0),
    aborted: AtomicU64::new(0),
    fenced: AtomicU64::new(0),
    missed: AtomicU64::new(0),
    dropped_at_shutdown: AtomicU64::new(0),
    dropped_too_large: AtomicU64::new(0),
};

/// The counters of every Kafka sink of this process, added up (for metrics).
pub fn stats() -> KafkaStats {
    TOTALS.snapshot()
}

/// The running `kafka` sink.
pub struct KafkaSink {
    config: KafkaConfig,
    password: Option<String>,
    counters: Arc<Counters>,
    health: Option<Arc<SinkHealth>>,
    router: Option<master_events_router::Router>,
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("config", &self.config)
            .finish()
    }
}

impl KafkaSink {
    /// Builds the sink: checks the configuration and reads its files (connecting
    /// happens when it runs).
    pub fn new(config: KafkaConfig) -> Result<KafkaSink, KafkaError> {
        config.check()?;
        let password = config.read_files()?;
        Ok(KafkaSink {
            config,
            password,
            counters: Arc::new(Counters::default()),
            health: None,
            router: None,
        })
    }

    /// The router whose history the records name (read when the sink resumes: a
    /// follower takes its master's history).
    pub fn with_router(mut self, router: master_events_router::Router) -> KafkaSink {
        self.router = Some(router);
        self
    }

    /// Reports the sink's state to `health` (`/cluster`, `/metrics`).
    pub fn with_health(mut self, health: Arc<SinkHealth>) -> KafkaSink {
        self.health = Some(health);
        self
    }

    /// This sink's counters (keep the handle before the sink is started).
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }
}

impl Sink for KafkaSink {
    fn start_cursor(&self) -> Cursor {
        // Every retained event, restored ones included; what the topic already holds
        // is skipped by seq.
        Cursor::After(0)
    }

    fn run(self: Box<Self>, input: SinkInput) -> SinkFuture {
        Box::pin(async move {
            let client = self.config.client_config(self.password.as_deref());
            run::run(
                run::Run {
                    client,
                    transactional_id: self.config.transactional_id(),
                    timeout: Duration::from_millis(self.config.transaction_timeout_ms),
                    shutdown_timeout: Duration::from_millis(self.config.shutdown_timeout_ms),
                    config: self.config,
                    router: self.router,
                    health: self.health,
                    counters: self.counters,
                },
                input,
            )
            .await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KafkaConfig, String> {
        let c: KafkaConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.check().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn the_defaults_are_one_topic_keyed_by_bucket_with_a_transactional_id_per_cluster() {
        let c = parse("cluster = \"east\"").expect("valid");
        assert_eq!(c.brokers, "127.0.0.1:9092");
        assert_eq!(c.topic, "master-events");
        assert_eq!(c.key, KeyBy::Bucket);
        assert_eq!(c.transactional_id(), "master-events.east");
        assert_eq!(<KafkaConfig as SinkConfig>::RUN_ON, RunOn::Master);
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        for (text, names) in [
            ("brokers = \"kafka\"", "brokers"),
            ("brokers = \"user:pw@kafka:9092\"", "brokers"),
            ("brokers = \"kafka://k:9092\"", "brokers"),
            ("topic = \"a topic\"", "topic"),
            ("cluster = \"\"", "cluster"),
            ("batch_max = 0", "batch_max"),
            ("create_topic = { partitions = 0 }", "create_topic"),
            ("tls = { cert_file = \"c.pem\" }", "cert_file"),
            (
                "sasl = { mechanism = \"PLAIN\", username = \"u\" }",
                "password",
            ),
            (
                "properties = { \"transactional.id\" = \"x\" }",
                "transactional.id",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(names), "{text}: {err}");
        }
        let err = parse("sasl = { mechanism = \"GSSAPI\", username = \"u\", password = \"p\" }")
            .expect_err("GSSAPI");
        assert!(err.contains("PLAIN"), "{err}");
    }

    #[test]
    fn secrets_are_not_in_debug_output_or_errors() {
        let c = parse(
            "sasl = { mechanism = \"SCRAM-SHA-512\", username = \"u\", password = \"hunter2-secret\" }\n\
             properties = { \"ssl.key.password\" = \"other-secret\" }",
        )
        .expect("valid");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2-secret") && !shown.contains("other-secret"),
            "{shown}"
        );
        let missing = parse(
            "sasl = { mechanism = \"PLAIN\", username = \"u\", password_file = \"/nonexistent/pw\" }",
        )
        .expect("valid");
        let err = KafkaSink::new(missing).expect_err("unreadable").to_string();
        assert!(
            err.contains("sasl.password_file") && err.contains("/nonexistent/pw"),
            "{err}"
        );
    }

    #[test]
    fn a_tls_file_that_holds_no_certificate_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").expect("write");
        let c = parse(&format!(
            "tls = {{ ca_file = {:?} }}",
            path.display().to_string()
        ))
        .expect("valid");
        let err = KafkaSink::new(c).expect_err("no certificate").to_string();
        assert!(
            err.contains("tls.ca_file") && err.contains("no certificate"),
            "{err}"
        );
        assert!(
            !err.contains("not a certificate"),
            "the file's text is not shown: {err}"
        );
    }

    #[test]
    fn a_password_file_is_read_without_its_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").expect("write");
        let c = parse(&format!(
            "sasl = {{ mechanism = \"PLAIN\", username = \"u\", password_file = {:?} }}",
            path.display().to_string()
        ))
        .expect("valid");
        assert_eq!(c.read_files().expect("read").as_deref(), Some("s3cret"));
    }
}
