//! The `webhook` sink of master-events: events POSTed to a URL in batches, as
//! NDJSON (`Content-Type: application/x-ndjson`), one wire line per event.
//!
//! ```toml
//! [[sinks]]
//! type = "webhook"
//! url = "https://collector.example:8443/events"
//! ca_file = "/etc/master-events/collector-ca.pem"  # trust this CA for https:// (default: the system's)
//! headers = { Authorization = "Bearer s3cret", X-Source = "master-events" }
//! batch_max_events = 500       # send when a batch has this many events (default)
//! batch_max_bytes = 1048576    # ... or this many bytes (default)
//! linger_ms = 100              # ... or when its first event has waited this long (default)
//! queue_events = 10000         # events held for delivery; past it, new ones are dropped (default)
//! retry_initial_ms = 100       # first retry delay; doubles, with full jitter (default)
//! retry_max_ms = 10000         # longest retry delay (default)
//! timeout_ms = 10000           # per request (default)
//! shutdown_timeout_ms = 5000   # on shutdown, how long to keep delivering what is queued (default)
//! filter = { type = ["rebalanceStart", "rebalanceEnd"] }
//! ```
//!
//! Owns: [`WebhookConfig`] (registered as `webhook`), the running [`WebhookSink`],
//! its counters ([`WebhookStats`], per sink and process-wide with [`stats`]); the
//! queue is [`queue`]'s, the delivery loop `sender`'s.
//!
//! Promises:
//! - It never blocks the router, nor waits on the network where the router could
//!   feel it: a reader task follows the stream and only ever pushes into a bounded
//!   queue; a sender task batches and delivers. When the queue holds
//!   `queue_events` events (counting the batch being sent), new events are dropped,
//!   counted ([`WebhookStats::dropped_queue_full`]), logged at most every 10 s,
//!   and sent on as one `gap` line so the receiver knows exactly what it missed. A
//!   gap in the stream itself (the reader fell behind the archive) is sent on too.
//! - Batches are delivered in order, each event once per successful POST; a
//!   failed POST (connection error, timeout, 408, 429, 5xx) is retried with
//!   exponential backoff and full jitter, forever while running; a POST refused
//!   with another status is dropped and counted (retrying would not help).
//! - Only events passing the sink's filter are sent.
//! - On shutdown, what is queued is delivered for up to `shutdown_timeout_ms`;
//!   what is still undelivered then is counted and logged as dropped.
//! - An `https://` URL is verified against `ca_file` when it is set (only its CA
//!   certificates are trusted), else against the system's trust store; a receiver
//!   that fails verification is never sent a batch (the POST fails and is retried,
//!   the sink's state is `retrying`).
//! - Secrets stay secret: header values (an `Authorization` above all) and a
//!   password in the URL never appear in logs, errors or `Debug` output.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use master_events_router::{
    Chunk, ConfigError, RunOn, Sink, SinkConfig, SinkContext, SinkFuture, SinkInput,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use schemars::JsonSchema;
use serde::Deserialize;

pub mod queue;
mod sender;

use queue::{Pushed, Queue};

/// The sink's `type` name.
pub const NAME: &str = "webhook";

/// Why a webhook configuration is refused (never quoting a header value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The URL does not parse, or is not `http` or `https`.
    #[error("url: {0}")]
    Url(String),
    /// A header name or value is not valid in HTTP (the value is not shown).
    #[error("headers: {0}")]
    Header(String),
    /// A number is out of range.
    #[error("{0}")]
    Range(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The `ca_file` cannot be used (the message names the file).
    #[error("ca_file: {0}")]
    CaFile(String),
    /// The `format` cannot be used as configured.
    #[error("format: {0}")]
    Format(String),
}

fn d_batch_max_events() -> usize {
    500
}
fn d_batch_max_bytes() -> usize {
    1024 * 1024
}
fn d_linger_ms() -> u64 {
    100
}
fn d_queue_events() -> usize {
    10_000
}
fn d_retry_initial_ms() -> u64 {
    100
}
fn d_retry_max_ms() -> u64 {
    10_000
}
fn d_timeout_ms() -> u64 {
    10_000
}
fn d_shutdown_timeout_ms() -> u64 {
    5_000
}

/// POSTs batches of events as NDJSON to a URL.
#[derive(Deserialize, JsonSchema, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where batches are POSTed: `http://host:port/path` or `https://...`.
    pub url: String,
    /// For an `https://` URL: a PEM file of the CA certificates to trust (the CA
    /// that signed the receiver's certificate) instead of the system's trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Extra request headers, e.g. `{ Authorization = "Bearer ..." }`. Their
    /// values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A batch is sent once it has this many events (default 500, at least 1).
    #[serde(default = "d_batch_max_events")]
    pub batch_max_events: usize,
    /// ... or this many bytes (default 1048576, at least 1; a single larger line
    /// is sent alone).
    #[serde(default = "d_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// ... or once its first event has waited this many milliseconds (default 100).
    #[serde(default = "d_linger_ms")]
    pub linger_ms: u64,
    /// How many events the sink holds for delivery, the batch being sent included
    /// (default 10000, at least 1); past it, new events are dropped and counted.
    #[serde(default = "d_queue_events")]
    pub queue_events: usize,
    /// The first retry delay in milliseconds (default 100, at least 1); it doubles
    /// with each failure up to `retry_max_ms`, and each wait is drawn uniformly
    /// below it (full jitter).
    #[serde(default = "d_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// The longest retry delay in milliseconds (default 10000).
    #[serde(default = "d_retry_max_ms")]
    pub retry_max_ms: u64,
    /// How long one POST may take, in milliseconds (default 10000, at least 1).
    #[serde(default = "d_timeout_ms")]
    pub timeout_ms: u64,
    /// On shutdown, how long to keep delivering what is queued, in milliseconds
    /// (default 5000).
    #[serde(default = "d_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// `ndjson` (default: the lines as streamed, `application/x-ndjson`) or
    /// `cloudevents` (a CloudEvents 1.0 batch, `application/cloudevents-batch+json`:
    /// a JSON array of structured-mode events, mapped as the stream's
    /// `format=cloudevents`, docs/api.md).
    #[serde(default)]
    pub format: WebhookFormat,
    /// With `format = "cloudevents"`, required: the URL receivers reach this server
    /// at (`https://events.example:9443`); each event's `dataschema` is the type's
    /// schema under it (`/schemas/event/TYPE.json`).
    #[serde(default)]
    pub schema_base_url: Option<String>,
}

/// The body of a webhook POST.
#[derive(serde::Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The lines as streamed, one a line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// A CloudEvents 1.0 batch (`application/cloudevents-batch+json`).
    Cloudevents,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redacted_url(&self.url))
            .field("ca_file", &self.ca_file)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("batch_max_events", &self.batch_max_events)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("linger_ms", &self.linger_ms)
            .field("queue_events", &self.queue_events)
            .field("retry_initial_ms", &self.retry_initial_ms)
            .field("retry_max_ms", &self.retry_max_ms)
            .field("timeout_ms", &self.timeout_ms)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .field("format", &self.format)
            .field(
                "schema_base_url",
                &self.schema_base_url.as_deref().map(redacted_url),
            )
            .finish()
    }
}

/// The URL with any password replaced by `***` (for logs); an unparsable URL is
/// not shown.
pub fn redacted_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

impl WebhookConfig {
    /// The config POSTing to `url` with every other key at its default.
    pub fn to_url(url: impl Into<String>) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            ca_file: None,
            headers: BTreeMap::new(),
            batch_max_events: d_batch_max_events(),
            batch_max_bytes: d_batch_max_bytes(),
            linger_ms: d_linger_ms(),
            queue_events: d_queue_events(),
            retry_initial_ms: d_retry_initial_ms(),
            retry_max_ms: d_retry_max_ms(),
            timeout_ms: d_timeout_ms(),
            shutdown_timeout_ms: d_shutdown_timeout_ms(),
            format: WebhookFormat::Ndjson,
            schema_base_url: None,
        }
    }

    /// The `schema_base_url` to write `dataschema`s under, without a trailing `/`
    /// (`None` in the `ndjson` format).
    pub fn schema_base(&self) -> Result<Option<String>, WebhookError> {
        if self.format != WebhookFormat::Cloudevents {
            return Ok(None);
        }
        let Some(base) = &self.schema_base_url else {
            return Err(WebhookError::Format(
                "format = \"cloudevents\" needs schema_base_url: the URL receivers reach this \
                 server at (each event's dataschema is under it), e.g. \
                 \"https://events.example:9443\""
                    .into(),
            ));
        };
        let url = Url::parse(base).map_err(|e| {
            WebhookError::Format(format!("schema_base_url: {e} ({})", redacted_url(base)))
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(WebhookError::Format(format!(
                "schema_base_url: an http:// or https:// URL, not {}://",
                url.scheme()
            )));
        }
        Ok(Some(base.trim_end_matches('/').to_owned()))
    }

    /// Checks the URL, headers and numbers.
    pub fn check(&self) -> Result<(Url, HeaderMap), WebhookError> {
        let url = Url::parse(&self.url)
            .map_err(|e| WebhookError::Url(format!("{e} ({})", redacted_url(&self.url))))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(WebhookError::Url(format!(
                "only http:// and https:// URLs are supported, not {}://",
                url.scheme()
            )));
        }
        if let (Some(path), "http") = (&self.ca_file, url.scheme()) {
            return Err(WebhookError::CaFile(format!(
                "{} is set for an http:// url, which has no certificate to verify: \
                 use https:// or remove ca_file",
                path.display()
            )));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                WebhookError::Header(format!("{name:?} is not a valid header name"))
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                WebhookError::Header(format!("the value of {name:?} is not a valid header value"))
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        for (key, v) in [
            ("batch_max_events", self.batch_max_events as u64),
            ("batch_max_bytes", self.batch_max_bytes as u64),
            ("queue_events", self.queue_events as u64),
            ("retry_initial_ms", self.retry_initial_ms),
            ("timeout_ms", self.timeout_ms),
        ] {
            if v == 0 {
                return Err(WebhookError::Range(format!("{key} must be at least 1")));
            }
        }
        self.schema_base()?;
        if self.retry_max_ms < self.retry_initial_ms {
            return Err(WebhookError::Range(format!(
                "retry_max_ms ({}) must be at least retry_initial_ms ({})",
                self.retry_max_ms, self.retry_initial_ms
            )));
        }
        Ok((url, headers))
    }
}

impl SinkConfig for WebhookConfig {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str =
        "POSTs batches of events as NDJSON to a URL (bounded queue, retries with backoff)";
    /// One copy per cluster: the master posts.
    const RUN_ON: RunOn = RunOn::Master;

    fn validate(&self) -> Result<(), String> {
        self.check().map(drop).map_err(|e| e.to_string())
    }

    fn build(self, ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError> {
        let sink = WebhookSink::new(self)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?
            .with_health(Arc::clone(ctx.health()))
            .with_router(ctx.router().clone());
        Ok(Box::new(sink))
    }
}

master_events_router::register_sink!(WebhookConfig);

/// The counters of a webhook sink.
#[derive(Debug, Default)]
pub struct Counters {
    delivered: AtomicU64,
    batches: AtomicU64,
    failed_attempts: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_rejected: AtomicU64,
    dropped_at_shutdown: AtomicU64,
    missed: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Events delivered (in a POST answered 2xx).
    pub delivered: u64,
    /// POSTs answered 2xx.
    pub batches: u64,
    /// POST attempts that failed and were retried (or given up at shutdown).
    pub failed_attempts: u64,
    /// Events dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Events dropped because the receiver refused them (a 4xx other than 408/429).
    pub dropped_rejected: u64,
    /// Events still undelivered when the shutdown deadline passed.
    pub dropped_at_shutdown: u64,
    /// Events the sink's reader missed in the stream itself (it fell behind the
    /// archive); sent on as gap lines.
    pub missed: u64,
}

impl WebhookStats {
    /// Every event dropped, for whatever reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_rejected + self.dropped_at_shutdown
    }
}

/// Which counter.
#[derive(Clone, Copy)]
pub(crate) enum Counter {
    Delivered,
    Batches,
    FailedAttempts,
    DroppedQueueFull,
    DroppedRejected,
    DroppedAtShutdown,
    Missed,
}

impl Counters {
    fn cell(&self, c: Counter) -> &AtomicU64 {
        match c {
            Counter::Delivered => &self.delivered,
            Counter::Batches => &self.batches,
            Counter::FailedAttempts => &self.failed_attempts,
            Counter::DroppedQueueFull => &self.dropped_queue_full,
            Counter::DroppedRejected => &self.dropped_rejected,
            Counter::DroppedAtShutdown => &self.dropped_at_shutdown,
            Counter::Missed => &self.missed,
        }
    }

    /// Adds `n` to a counter of this sink and to the process-wide total; returns
    /// the sink's new value.
    pub(crate) fn add(&self, c: Counter, n: u64) -> u64 {
        TOTALS.cell(c).fetch_add(n, Ordering::Relaxed);
        self.cell(c).fetch_add(n, Ordering::Relaxed) + n
    }

    /// The current values.
    pub fn snapshot(&self) -> WebhookStats {
        let get = |c| self.cell(c).load(Ordering::Relaxed);
        WebhookStats {
            delivered: get(Counter::Delivered),
            batches: get(Counter::Batches),
            failed_attempts: get(Counter::FailedAttempts),
            dropped_queue_full: get(Counter::DroppedQueueFull),
            dropped_rejected: get(Counter::DroppedRejected),
            dropped_at_shutdown: get(Counter::DroppedAtShutdown),
            missed: get(Counter::Missed),
        }
    }
}

static TOTALS: Counters = Counters {
    delivered: AtomicU64::new(0),
    batches: AtomicU64::new(0),
    failed_attempts: AtomicU64::new(0),
    dropped_queue_full: AtomicU64::new(0),
    dropped_rejected: AtomicU64::new(0),
    dropped_at_shutdown: AtomicU64::new(0),
    missed: AtomicU64::new(0),
};

/// The counters of every webhook sink of this process, added up (for metrics).
pub fn stats() -> WebhookStats {
    TOTALS.snapshot()
}

/// The certificates of `ca_file` (PEM, one or more).
fn read_ca_file(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, WebhookError> {
    let pem = std::fs::read(path)
        .map_err(|e| WebhookError::CaFile(format!("cannot read {}: {e}", path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
        WebhookError::CaFile(format!(
            "{} is not a PEM file of certificates",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(WebhookError::CaFile(format!(
            "{} holds no certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The running `webhook` sink.
pub struct WebhookSink {
    config: WebhookConfig,
    client: reqwest::Client,
    url: Url,
    counters: Arc<Counters>,
    health: Option<Arc<master_events_router::SinkHealth>>,
    /// Where CloudEvents ids take their history from.
    router: Option<master_events_router::Router>,
}

impl WebhookSink {
    /// Builds the sink (checks the configuration and builds its HTTP client).
    pub fn new(config: WebhookConfig) -> Result<WebhookSink, WebhookError> {
        let (url, headers) = config.check()?;
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_millis(config.timeout_ms));
        if let Some(path) = &config.ca_file {
            builder = builder.tls_built_in_root_certs(false);
            for cert in read_ca_file(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| WebhookError::Client(e.without_url().to_string()))?;
        Ok(WebhookSink {
            config,
            client,
            url,
            counters: Arc::new(Counters::default()),
            health: None,
            router: None,
        })
    }

    /// The router whose history the CloudEvents format names in ids and sources
    /// (read for each batch: a follower takes its master's history).
    pub fn with_router(mut self, router: master_events_router::Router) -> WebhookSink {
        self.router = Some(router);
        self
    }

    /// Reports delivery trouble to `health` (shown in `/cluster` and `/metrics`):
    /// `retrying` while POSTs fail, `failing` when the receiver refuses a batch for
    /// good, `ok` once a batch is delivered.
    pub fn with_health(mut self, health: Arc<master_events_router::SinkHealth>) -> WebhookSink {
        self.health = Some(health);
        self
    }

    /// This sink's counters (keep the handle before the sink is started).
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("config", &self.config)
            .finish()
    }
}

impl Sink for WebhookSink {
    fn run(self: Box<Self>, mut input: SinkInput) -> SinkFuture {
        Box::pin(async move {
            let WebhookSink {
                config,
                client,
                url,
                counters,
                health,
                router,
            } = *self;
            let queue = Arc::new(Queue::new(config.queue_events));
            let sender = tokio::spawn(sender::run(
                sender::Sender::new(client, url, &config, Arc::clone(&counters))
                    .with_health(health)
                    .with_router(router),
                Arc::clone(&queue),
            ));
            let mut drops = sender::RateLimited::new();
            while let Some(chunk) = input.recv().await {
                match chunk {
                    Chunk::Gap(gap) => {
                        counters.add(Counter::Missed, gap.missed);
                        queue.push_gap(&gap);
                    }
                    // This sink reads committed events, which are never cut.
                    Chunk::Truncated { .. } => {}
                    Chunk::Events(batch) => {
                        let Some(selected) = input.select(&batch) else {
                            continue;
                        };
                        let whole = selected.unfiltered().bytes();
                        let mut dropped = 0;
                        for event in selected.iter() {
                            let line = whole.slice_ref(event.line);
                            if queue.push_event(event.seq, line) == Pushed::Dropped {
                                dropped += 1;
                            }
                        }
                        if dropped > 0 {
                            let total = counters.add(Counter::DroppedQueueFull, dropped);
                            if drops.due() {
                                tracing::warn!(
                                    url = %redacted_url(&config.url),
                                    queue_events = config.queue_events,
                                    dropped_total = total,
                                    "the webhook sink's queue is full (its receiver is slow or down); events are dropped and sent on as a gap"
                                );
                            }
                        }
                    }
                }
            }
            queue.close();
            if let Err(e) = sender.await {
                tracing::error!(error = %e, "the webhook sink's sender failed");
            }
        })
    }
}
