//! The `nats` sink of master-events: each event published to the subject
//! `<prefix>.<type>` (e.g. `master_events.vbucketMoveDone`) on a NATS server, its
//! payload the event's wire line (without the `\n`).
//!
//! ```toml
//! [[sinks]]
//! type = "nats"
//! servers = ["nats://127.0.0.1:4222"]  # default; several for a cluster
//! subject_prefix = "master_events"     # default
//! max_pending = 10000                  # events held for publishing; past it, new ones are dropped (default)
//! user = "events"                      # optional, with password; or token = "..."
//! password = "s3cret"
//! connect_timeout_ms = 5000            # default
//! shutdown_timeout_ms = 5000           # on shutdown, how long to keep publishing what is held (default)
//! tls_required = true                  # TLS even for nats:// URLs (default false; tls:// URLs imply it)
//! tls_ca_file = "/etc/master-events/nats-ca.pem"  # CAs to trust instead of the system's (optional)
//! tls_cert_file = "/etc/master-events/nats-client.pem"     # client certificate, with tls_key_file,
//! tls_key_file = "/etc/master-events/nats-client-key.pem"  # for a server that verifies clients
//! filter = { bucket = "default" }
//! ```
//!
//! Owns: [`NatsConfig`] (registered as `nats`), the running [`NatsSink`], its
//! counters ([`NatsStats`], per sink and process-wide with [`stats`]), and its TLS
//! options (trusted CAs, client certificate, TLS required).
//!
//! Promises:
//! - It never blocks the router: a reader task follows the stream and only
//!   `try_send`s into a bounded queue of `max_pending` events; a publisher task
//!   publishes them in order. When the queue is full, events are dropped, counted
//!   ([`NatsStats::dropped_queue_full`]), logged at most every 10 s, and one gap
//!   message (subject `<prefix>.gap`, a `gap` frame as payload) says which seqs
//!   were dropped, as soon as there is room for it. A gap in the stream itself (the
//!   reader fell behind the archive) is published there too.
//! - Events are published in `seq` order, only those passing the sink's filter.
//! - The connection is async-nats's: it connects in the background (a server that
//!   is down at start-up does not stop `serve`), and reconnects on its own, without
//!   limit; what is published while disconnected is buffered by the client, up to
//!   its capacity (at most `max_pending` messages as well). Core NATS is
//!   at-most-once: what the client wrote in the moment before it noticed a lost
//!   connection (a server killed mid-stream) is lost without an error.
//! - On shutdown, what is held is published and the connection flushed, for up to
//!   `shutdown_timeout_ms`; what is left then is counted and logged as dropped.
//! - Credentials stay secret: a password or token never appears in logs, errors
//!   or `Debug` output, and a server URL that carries credentials is refused (use
//!   `user`/`password` or `token`).
//! - TLS: the connection is TLS when the URL is `tls://`, `tls_required` is set, or
//!   the server requires it; the server's certificate is verified against
//!   `tls_ca_file` (only those CAs) or else the system's trust store, and
//!   `tls_cert_file`/`tls_key_file` are presented to a server that verifies
//!   clients. The files are read when the sink is built: one that is missing,
//!   unreadable or holds no certificate (or key) is refused, the error naming the
//!   key and the path, never what the file holds. A connection the server or the
//!   handshake refuses is retried like a server that is down; the sink's health
//!   says `retrying`, with why.
//!
//! With `jetstream = { stream = "NAME", ... }` the sink publishes to a JetStream
//! stream instead, exactly once and in order, resuming from what the stream holds
//! (the [`jetstream`] module).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod jetstream;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::ServerAddr;
use bytes::Bytes;
use master_events_events::Gap;
use master_events_router::{
    Chunk, ConfigError, RunOn, Sink, SinkConfig, SinkContext, SinkFuture, SinkInput,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::mpsc;

/// The sink's `type` name.
pub const NAME: &str = "nats";
/// The reason of gap messages for events the queue had no room for.
pub const GAP_QUEUE_FULL: &str = "dropped by the nats sink: its queue was full";
/// Drops are logged at most this often.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a NATS configuration is refused (never quoting a credential).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatsError {
    /// A server address does not parse, or carries credentials.
    #[error("servers: {0}")]
    Server(String),
    /// The subject prefix is not a valid subject.
    #[error("subject_prefix: {0}")]
    Prefix(String),
    /// Credentials given in an unusable way.
    #[error("credentials: {0}")]
    Credentials(String),
    /// A number is out of range.
    #[error("{0}")]
    Range(String),
    /// The TLS options are unusable: a file cannot be read or does not hold what
    /// it should, or a client certificate is without its key (the message names
    /// the key and the path, never what the file holds).
    #[error("{0}")]
    Tls(String),
}

fn d_servers() -> Vec<String> {
    vec!["nats://127.0.0.1:4222".to_owned()]
}
fn d_prefix() -> String {
    "master_events".to_owned()
}
fn d_max_pending() -> usize {
    10_000
}
fn d_connect_timeout_ms() -> u64 {
    5_000
}
fn d_shutdown_timeout_ms() -> u64 {
    5_000
}

/// Publishes each event to `<subject_prefix>.<type>` on a NATS server.
#[derive(Deserialize, JsonSchema, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// The servers to connect to (default `["nats://127.0.0.1:4222"]`); without
    /// credentials in them (use `user`/`password` or `token`).
    #[serde(default = "d_servers")]
    pub servers: Vec<String>,
    /// The subject prefix (default `master_events`): events go to
    /// `<prefix>.<type>`, gaps to `<prefix>.gap`.
    #[serde(default = "d_prefix")]
    pub subject_prefix: String,
    /// How many events the sink holds for publishing (default 10000, at least 1);
    /// past it, new events are dropped and counted.
    #[serde(default = "d_max_pending")]
    pub max_pending: usize,
    /// User name (with `password`).
    #[serde(default)]
    pub user: Option<String>,
    /// Password (with `user`); never logged.
    #[serde(default)]
    pub password: Option<String>,
    /// Authentication token (instead of `user`/`password`); never logged.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the user's nkey seed (`SU...`), for a server that
    /// authenticates nkeys; never logged (only the path is ever shown).
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// A NATS credentials file (`.creds`: a user JWT and its nkey seed), for a
    /// server in operator mode; never logged (only the path is ever shown).
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// How long one connection attempt may take, in milliseconds (default 5000).
    #[serde(default = "d_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// On shutdown, how long to keep publishing what is held, in milliseconds
    /// (default 5000).
    #[serde(default = "d_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// Require TLS even for `nats://` URLs (default false): the connection is
    /// never plain text, even when the server does not ask for TLS. `tls://` URLs
    /// imply it; otherwise TLS is used when the server requires it.
    #[serde(default)]
    pub tls_required: bool,
    /// A PEM file of the CA certificates to verify the server's certificate with,
    /// instead of the system's trust store.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// A PEM file of the client certificate (chain) presented to a server that
    /// verifies clients; with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// A PEM file of the private key of `tls_cert_file`; with `tls_cert_file`.
    /// Never logged.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Publish to this JetStream stream (exactly once, in order, resumed from what
    /// the stream holds) instead of core NATS: `{ stream = "NAME", replicas,
    /// max_age_secs, max_bytes, duplicate_window_secs, ack_window, ack_timeout_ms }`.
    #[serde(default)]
    pub jetstream: Option<jetstream::JetStreamConfig>,
    /// `json` (default: the payload is the event line) or `cloudevents` (CloudEvents
    /// 1.0 binary mode: the payload is still the line, and `ce-id`, `ce-source`,
    /// `ce-type`, `ce-time`, `ce-dataschema`, `ce-sequence` headers carry the
    /// attributes, mapped as the stream's `format=cloudevents`, docs/api.md).
    #[serde(default)]
    pub format: NatsFormat,
    /// With `format = "cloudevents"`, required: the URL consumers reach this server
    /// at; each event's `dataschema` is its type's schema under it.
    #[serde(default)]
    pub schema_base_url: Option<String>,
}

/// What a message carries besides the event line.
#[derive(Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NatsFormat {
    /// The event line as the payload.
    #[default]
    Json,
    /// The event line as the payload, with CloudEvents binary-mode headers.
    Cloudevents,
}

/// The CloudEvents binary-mode headers of one message: an event (its line) or, with
/// `gap`, a gap frame (its range as the id).
pub(crate) fn cloudevents_headers(
    ctx: &master_events_events::cloudevents::Context,
    seq: u64,
    event_type: &str,
    origin: Option<&str>,
    line: &[u8],
    gap: Option<(u64, u64)>,
) -> async_nats::HeaderMap {
    use master_events_events::cloudevents as ce;
    let attrs = match gap {
        Some((from, to)) => ce::control_attributes(
            ctx,
            "gap",
            &format!("{from}-{to}"),
            Some(master_events_events::Timestamp::now()),
        ),
        None => ce::event_attributes(ctx, seq, event_type, ce::line_ts(line), origin),
    };
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in ce::binary_headers(&attrs) {
        headers.insert(name, value.as_str());
    }
    headers
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |o: &Option<String>| o.as_ref().map(|_| "***");
        f.debug_struct("NatsConfig")
            .field("servers", &self.servers)
            .field("subject_prefix", &self.subject_prefix)
            .field("max_pending", &self.max_pending)
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .field("tls_required", &self.tls_required)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("creds_file", &self.creds_file)
            .field("jetstream", &self.jetstream)
            .field("format", &self.format)
            .field("schema_base_url", &self.schema_base_url)
            .finish()
    }
}

impl NatsConfig {
    /// The config publishing to `server` with every other key at its default: the
    /// defaults are the ones a configuration file gets (serde's), not a second list.
    pub fn to_server(server: impl Into<String>) -> NatsConfig {
        let mut keys = toml::Table::new();
        keys.insert(
            "servers".into(),
            toml::Value::Array(vec![toml::Value::String(server.into())]),
        );
        toml::Value::Table(keys)
            .try_into()
            .expect("`servers` alone is a whole nats config: every other key has a default")
    }

    /// Checks the servers, prefix, credentials, numbers and that a client
    /// certificate comes with its key (the TLS files are read by [`NatsSink::new`]).
    pub fn check(&self) -> Result<Vec<ServerAddr>, NatsError> {
        if self.servers.is_empty() {
            return Err(NatsError::Server("at least one server is needed".into()));
        }
        let mut addrs = Vec::with_capacity(self.servers.len());
        for (i, server) in self.servers.iter().enumerate() {
            // The error does not quote the URL: it may hold a password.
            let addr: ServerAddr = server
                .parse()
                .map_err(|e| NatsError::Server(format!("servers[{i}]: {e}")))?;
            if addr.has_user_pass() {
                return Err(NatsError::Server(
                    "a server URL must not carry credentials (use user/password or token, which are never logged)"
                        .into(),
                ));
            }
            addrs.push(addr);
        }
        let prefix = &self.subject_prefix;
        if prefix.is_empty()
            || prefix.split('.').any(str::is_empty)
            || prefix.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
        {
            return Err(NatsError::Prefix(format!(
                "{prefix:?} is not a subject of plain tokens (like master_events or ops.events)"
            )));
        }
        match (&self.user, &self.password, &self.token) {
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(NatsError::Credentials(
                    "user and password go together".into(),
                ))
            }
            (Some(_), Some(_), Some(_)) => {
                return Err(NatsError::Credentials(
                    "either user/password or token, not both".into(),
                ))
            }
            _ => {}
        }
        let kinds = [
            self.user.is_some(),
            self.token.is_some(),
            self.nkey_seed_file.is_some(),
            self.creds_file.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(NatsError::Credentials(
                "give one of user/password, token, nkey_seed_file or creds_file".into(),
            ));
        }
        if self.max_pending == 0 {
            return Err(NatsError::Range("max_pending must be at least 1".into()));
        }
        if self.connect_timeout_ms == 0 {
            return Err(NatsError::Range(
                "connect_timeout_ms must be at least 1".into(),
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(NatsError::Tls(
                "tls_cert_file and tls_key_file go together: set both (the client certificate and its private key) or neither"
                    .into(),
            ));
        }
        if let Some(js) = &self.jetstream {
            js.check().map_err(NatsError::Range)?;
        }
        self.schema_base()?;
        Ok(addrs)
    }

    /// The `dataschema` base of the CloudEvents format, without a trailing `/`
    /// (`None` in the `json` format).
    pub fn schema_base(&self) -> Result<Option<String>, NatsError> {
        if self.format != NatsFormat::Cloudevents {
            return Ok(None);
        }
        let base = self.schema_base_url.as_deref().unwrap_or("");
        let ok = (base.starts_with("http://") || base.starts_with("https://"))
            && base.len() > "https://".len()
            && !base.contains(char::is_whitespace);
        if !ok {
            return Err(NatsError::Range(
                "format = \"cloudevents\" needs schema_base_url: the http:// or https:// URL \
                 consumers reach this server at (each event's dataschema is under it)"
                    .into(),
            ));
        }
        Ok(Some(base.trim_end_matches('/').to_owned()))
    }

    /// Reads the nkey seed or credentials file, if one is configured: it must be
    /// readable and hold what its key says. The error names the key and the path,
    /// never what the file holds.
    fn read_auth_files(&self) -> Result<AuthFiles, NatsError> {
        let read = |key: &str, path: &Path| {
            std::fs::read_to_string(path).map_err(|e| {
                NatsError::Credentials(format!("{key}: cannot read {}: {e}", path.display()))
            })
        };
        let nkey_seed = match &self.nkey_seed_file {
            Some(path) => {
                let seed = read("nkey_seed_file", path)?.trim().to_owned();
                if !seed.starts_with("SU") || seed.len() < 50 {
                    return Err(NatsError::Credentials(format!(
                        "nkey_seed_file: {} does not hold a user nkey seed (SU...)",
                        path.display()
                    )));
                }
                Some(seed)
            }
            None => None,
        };
        let creds = match &self.creds_file {
            Some(path) => {
                let text = read("creds_file", path)?;
                if async_nats::ConnectOptions::new()
                    .credentials(&text)
                    .is_err()
                {
                    return Err(NatsError::Credentials(format!(
                        "creds_file: {} is not a NATS credentials file (a user JWT and its nkey seed)",
                        path.display()
                    )));
                }
                Some(text)
            }
            None => None,
        };
        Ok(AuthFiles { nkey_seed, creds })
    }

    /// Reads the TLS files: each must be readable and hold what its key says.
    fn check_tls_files(&self) -> Result<(), NatsError> {
        use async_nats::rustls::pki_types::pem::{self, PemObject};
        use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};

        fn read(key: &str, path: &Path) -> Result<Vec<u8>, NatsError> {
            std::fs::read(path)
                .map_err(|e| NatsError::Tls(format!("{key}: cannot read {}: {e}", path.display())))
        }
        // The PEM parser's own errors may quote a line of the file: not shown.
        fn certificates(key: &str, path: &Path) -> Result<(), NatsError> {
            let pem = read(key, path)?;
            match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
                Ok(certs) if !certs.is_empty() => Ok(()),
                Ok(_) => Err(NatsError::Tls(format!(
                    "{key}: {} holds no certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ))),
                Err(_) => Err(NatsError::Tls(format!(
                    "{key}: {} is not a PEM file of certificates",
                    path.display()
                ))),
            }
        }

        if let Some(path) = &self.tls_ca_file {
            certificates("tls_ca_file", path)?;
        }
        if let Some(path) = &self.tls_cert_file {
            certificates("tls_cert_file", path)?;
        }
        if let Some(path) = &self.tls_key_file {
            let pem = read("tls_key_file", path)?;
            match PrivateKeyDer::from_pem_slice(&pem) {
                Ok(_) => {}
                Err(pem::Error::NoItemsFound) => {
                    return Err(NatsError::Tls(format!(
                        "tls_key_file: {} holds no private key (-----BEGIN PRIVATE KEY-----)",
                        path.display()
                    )))
                }
                Err(_) => {
                    return Err(NatsError::Tls(format!(
                        "tls_key_file: {} is not a PEM file of a private key",
                        path.display()
                    )))
                }
            }
        }
        Ok(())
    }
}

impl SinkConfig for NatsConfig {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str =
        "publishes each event to <prefix>.<type> on a NATS server (bounded queue, reconnects)";
    /// One copy per cluster: the master publishes (and a new master resumes from what
    /// the JetStream stream holds).
    const RUN_ON: RunOn = RunOn::Master;

    fn validate(&self) -> Result<(), String> {
        self.check().map(drop).map_err(|e| e.to_string())
    }

    fn build(self, ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError> {
        let sink = NatsSink::new(self)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?
            .with_health(Arc::clone(ctx.health()))
            .with_router(ctx.router().clone());
        Ok(Box::new(sink))
    }
}

master_events_router::register_sink!(NatsConfig);

/// The counters of a NATS sink.
#[derive(Debug, Default)]
pub struct Counters {
    published: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_at_shutdown: AtomicU64,
    publish_errors: AtomicU64,
    missed: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatsStats {
    /// Messages handed to the NATS client (events and gap messages).
    pub published: u64,
    /// Events dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Events still held when the shutdown deadline passed.
    pub dropped_at_shutdown: u64,
    /// Messages the client refused (e.g. larger than the server's max payload).
    pub publish_errors: u64,
    /// Events the sink's reader missed in the stream itself (it fell behind the
    /// archive); published as gap messages.
    pub missed: u64,
}

#[derive(Clone, Copy)]
enum Counter {
    Published,
    DroppedQueueFull,
    DroppedAtShutdown,
    PublishErrors,
    Missed,
}

impl Counters {
    fn cell(&self, c: Counter) -> &AtomicU64 {
        match c {
            Counter::Published => &self.published,
            Counter::DroppedQueueFull => &self.dropped_queue_full,
            Counter::DroppedAtShutdown => &self.dropped_at_shutdown,
            Counter::PublishErrors => &self.publish_errors,
            Counter::Missed => &self.missed,
        }
    }

    /// Adds `n` here and to the process-wide total; returns this sink's new value.
    fn add(&self, c: Counter, n: u64) -> u64 {
        TOTALS.cell(c).fetch_add(n, Ordering::Relaxed);
        self.cell(c).fetch_add(n, Ordering::Relaxed) + n
    }

    /// The current values.
    pub fn snapshot(&self) -> NatsStats {
        let get = |c| self.cell(c).load(Ordering::Relaxed);
        NatsStats {
            published: get(Counter::Published),
            dropped_queue_full: get(Counter::DroppedQueueFull),
            dropped_at_shutdown: get(Counter::DroppedAtShutdown),
            publish_errors: get(Counter::PublishErrors),
            missed: get(Counter::Missed),
        }
    }
}

static TOTALS: Counters = Counters {
    published: AtomicU64::new(0),
    dropped_queue_full: AtomicU64::new(0),
    dropped_at_shutdown: AtomicU64::new(0),
    publish_errors: AtomicU64::new(0),
    missed: AtomicU64::new(0),
};

/// The counters of every NATS sink of this process, added up (for metrics).
pub fn stats() -> NatsStats {
    TOTALS.snapshot()
}

/// One message to publish.
struct Message {
    subject: String,
    payload: Bytes,
    /// CloudEvents binary-mode headers (`format = "cloudevents"`).
    headers: Option<async_nats::HeaderMap>,
    /// Whether it is an event (gaps are not counted as dropped at shutdown).
    is_event: bool,
}

/// The secrets read from `nkey_seed_file` / `creds_file` (never logged).
#[derive(Default)]
struct AuthFiles {
    nkey_seed: Option<String>,
    creds: Option<String>,
}

/// The running `nats` sink.
pub struct NatsSink {
    config: NatsConfig,
    servers: Vec<ServerAddr>,
    counters: Arc<Counters>,
    health: Option<Arc<master_events_router::SinkHealth>>,
    /// The router whose history JetStream message ids name.
    router: Option<master_events_router::Router>,
    /// Secrets read from the configured files.
    auth: AuthFiles,
}

impl fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSink")
            .field("config", &self.config)
            .finish()
    }
}

impl NatsSink {
    /// Builds the sink: checks the configuration and reads its TLS files
    /// (connecting happens when it runs).
    pub fn new(config: NatsConfig) -> Result<NatsSink, NatsError> {
        let servers = config.check()?;
        config.check_tls_files()?;
        let auth = config.read_auth_files()?;
        Ok(NatsSink {
            config,
            servers,
            counters: Arc::new(Counters::default()),
            health: None,
            router: None,
            auth,
        })
    }

    /// The router whose history the JetStream mode names in message ids (read when
    /// it resumes: a follower takes its master's history).
    pub fn with_router(mut self, router: master_events_router::Router) -> NatsSink {
        self.router = Some(router);
        self
    }

    /// Reports the sink's state to `health` (shown in `/cluster` and `/metrics`):
    /// `retrying` while disconnected from the NATS server or unable to connect (the
    /// reason names the server and why, e.g. a refused TLS handshake), `failing`
    /// when its client cannot start or an event cannot be published, `ok` when
    /// connected and publishing.
    pub fn with_health(mut self, health: Arc<master_events_router::SinkHealth>) -> NatsSink {
        self.health = Some(health);
        self
    }

    /// This sink's counters (keep the handle before the sink is started).
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    fn options(&self) -> async_nats::ConnectOptions {
        let mut options = async_nats::ConnectOptions::new()
            .name("master-events")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_millis(self.config.connect_timeout_ms))
            .client_capacity(self.config.max_pending.clamp(64, 4096))
            .event_callback({
                let health = self.health.clone();
                move |event| {
                    let health = health.clone();
                    async move {
                        match event {
                            async_nats::Event::Connected => match &health {
                                Some(h) => h.ok(),
                                None => tracing::info!("the nats sink is connected"),
                            },
                            async_nats::Event::Disconnected => match &health {
                                Some(h) => {
                                    h.retrying("disconnected from the NATS server; reconnecting")
                                }
                                None => {
                                    tracing::warn!("the nats sink is disconnected; reconnecting")
                                }
                            },
                            // The sink closes its client when it stops: not a fault.
                            async_nats::Event::Closed => {
                                tracing::info!("the nats sink's connection is closed")
                            }
                            other => tracing::warn!(event = %other, "nats sink"),
                        }
                    }
                }
            });
        if let (Some(user), Some(password)) = (&self.config.user, &self.config.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.config.token {
            options = options.token(token.clone());
        }
        if let Some(seed) = &self.auth.nkey_seed {
            options = options.nkey(seed.clone());
        }
        if let Some(creds) = &self.auth.creds {
            // Checked when the sink was built.
            if let Ok(with) = options.credentials(creds) {
                options = with;
            } else {
                return async_nats::ConnectOptions::new();
            }
        }
        if let Some(health) = &self.health {
            // Called before each connection attempt while not connected: the last
            // error of a server says why the previous attempt failed. Returning
            // `None` keeps the client's own choice of server.
            let health = Arc::clone(health);
            options = options.reconnect_to_server_callback(move |servers, _info| {
                if let Some(why) = connect_errors(&servers) {
                    health.retrying(format!("cannot connect to the NATS server: {why}"));
                }
                std::future::ready(None)
            });
        }
        if self.config.tls_required {
            options = options.require_tls(true);
        }
        if let Some(ca) = &self.config.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.config.tls_cert_file, &self.config.tls_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options
    }
}

/// Why the servers could not be connected to, as `host:port: error; ...` (none if
/// no attempt failed yet). A URL carries no credentials (see [`NatsConfig::check`]).
fn connect_errors(servers: &[async_nats::Server]) -> Option<String> {
    let errors: Vec<String> = servers
        .iter()
        .filter_map(|s| {
            let error = s.last_error.as_ref()?;
            Some(format!("{}:{}: {error}", s.addr.host(), s.addr.port()))
        })
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// The reader's side of the queue: never waits, counts and merges drops.
struct Feeder {
    tx: mpsc::Sender<Message>,
    prefix: String,
    /// Seqs dropped and not yet reported by a gap message.
    dropped: Option<(u64, u64)>,
    counters: Arc<Counters>,
    last_log: Option<Instant>,
    /// `format = "cloudevents"`: the mapping's base (`dataschema`) and where the
    /// history is read.
    cloudevents: Option<(String, Option<master_events_router::Router>)>,
}

impl Feeder {
    fn ce_context(&self) -> Option<master_events_events::cloudevents::Context> {
        self.cloudevents.as_ref().map(
            |(base, router)| master_events_events::cloudevents::Context {
                history: router
                    .as_ref()
                    .map(|r| r.history().to_string())
                    .unwrap_or_default(),
                schema_base: base.clone(),
            },
        )
    }

    fn gap_message(&self, gap: &Gap) -> Message {
        let mut line = Vec::with_capacity(128);
        gap.encode_line(&mut line);
        line.pop();
        let headers = self.ce_context().map(|ctx| {
            cloudevents_headers(
                &ctx,
                0,
                "gap",
                None,
                &line,
                Some((gap.from_seq, gap.to_seq)),
            )
        });
        Message {
            subject: format!("{}.gap", self.prefix),
            payload: Bytes::from(line),
            headers,
            is_event: false,
        }
    }

    /// Queues a pending drop report; false if there is still no room.
    fn flush_dropped(&mut self) -> bool {
        let Some((from, to)) = self.dropped else {
            return true;
        };
        let message = self.gap_message(&Gap::new(from, to, GAP_QUEUE_FULL));
        match self.tx.try_send(message) {
            Ok(()) => {
                self.dropped = None;
                true
            }
            Err(_) => false,
        }
    }

    fn event(&mut self, seq: u64, event_type: &str, origin: Option<&str>, payload: Bytes) {
        let headers = self
            .ce_context()
            .map(|ctx| cloudevents_headers(&ctx, seq, event_type, origin, &payload, None));
        let message = Message {
            subject: format!("{}.{event_type}", self.prefix),
            payload,
            headers,
            is_event: true,
        };
        if self.flush_dropped() && self.tx.try_send(message).is_ok() {
            return;
        }
        self.dropped = Some(match self.dropped {
            Some((from, _)) => (from, seq),
            None => (seq, seq),
        });
        let total = self.counters.add(Counter::DroppedQueueFull, 1);
        if self.last_log.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
            self.last_log = Some(Instant::now());
            tracing::warn!(
                dropped_total = total,
                "the nats sink's queue is full (the server is slow or unreachable); events are dropped and reported on the gap subject"
            );
        }
    }

    fn gap(&mut self, gap: &Gap) {
        self.counters.add(Counter::Missed, gap.missed);
        let message = self.gap_message(gap);
        if !(self.flush_dropped() && self.tx.try_send(message).is_ok()) {
            // No room: it joins the pending drop report.
            self.dropped = Some(match self.dropped {
                Some((from, _)) => (from, gap.to_seq),
                None => (gap.from_seq, gap.to_seq),
            });
        }
    }
}

impl Sink for NatsSink {
    fn start_cursor(&self) -> master_events_router::Cursor {
        // JetStream: every retained event, restored ones included; what the stream
        // already holds is skipped by seq.
        if self.config.jetstream.is_some() {
            master_events_router::Cursor::After(0)
        } else {
            master_events_router::Cursor::Oldest
        }
    }

    fn run(self: Box<Self>, mut input: SinkInput) -> SinkFuture {
        Box::pin(async move {
            let options = self.options();
            let shutdown_timeout = Duration::from_millis(self.config.shutdown_timeout_ms);
            if let Some(config) = self.config.jetstream.clone() {
                let client = match options.connect(self.servers.clone()).await {
                    Ok(client) => client,
                    Err(e) => {
                        tracing::error!(error = %e, "the nats sink cannot start its client; it delivers nothing");
                        if let Some(h) = &self.health {
                            h.failing(format!("cannot start its client: {e}"));
                        }
                        return;
                    }
                };
                jetstream::run(
                    jetstream::JetStreamRun {
                        client,
                        config,
                        prefix: self.config.subject_prefix.clone(),
                        router: self.router.clone(),
                        schema_base: self.config.schema_base().ok().flatten(),
                        health: self.health.clone(),
                        counters: Arc::clone(&self.counters),
                        shutdown_timeout,
                    },
                    input,
                )
                .await;
                return;
            }
            let (tx, rx) = mpsc::channel(self.config.max_pending);
            let client = match options.connect(self.servers.clone()).await {
                Ok(client) => client,
                Err(e) => {
                    tracing::error!(error = %e, "the nats sink cannot start its client; it delivers nothing");
                    if let Some(h) = &self.health {
                        h.failing(format!("cannot start its client: {e}"));
                    }
                    return;
                }
            };
            let closing = deadline::Closing::new();
            let publisher = tokio::spawn(publish(
                client,
                rx,
                Arc::clone(&self.counters),
                closing.clone(),
                self.health.clone(),
            ));
            let mut feeder = Feeder {
                tx,
                prefix: self.config.subject_prefix.clone(),
                dropped: None,
                counters: Arc::clone(&self.counters),
                last_log: None,
                cloudevents: self
                    .config
                    .schema_base()
                    .ok()
                    .flatten()
                    .map(|base| (base, self.router.clone())),
            };
            while let Some(chunk) = input.recv().await {
                match chunk {
                    Chunk::Gap(gap) => feeder.gap(&gap),
                    // This sink reads committed events, which are never cut.
                    Chunk::Truncated { .. } => {}
                    Chunk::Events(batch) => {
                        let Some(selected) = input.select(&batch) else {
                            continue;
                        };
                        let whole = selected.unfiltered().bytes();
                        for event in selected.iter() {
                            let line = event.line.strip_suffix(b"\n").unwrap_or(event.line);
                            feeder.event(
                                event.seq,
                                event.meta.event_type.as_str(),
                                event.meta.origin,
                                whole.slice_ref(line),
                            );
                        }
                    }
                }
            }
            // Shutting down: report a pending drop (waiting for room until the
            // deadline), then let the publisher finish.
            closing.close(shutdown_timeout);
            if let Some((from, to)) = feeder.dropped.take() {
                let message = feeder.gap_message(&Gap::new(from, to, GAP_QUEUE_FULL));
                let _ = tokio::time::timeout(shutdown_timeout, feeder.tx.send(message)).await;
            }
            drop(feeder);
            if let Err(e) = publisher.await {
                tracing::error!(error = %e, "the nats sink's publisher failed");
            }
        })
    }
}

/// What one step of the publisher came to.
enum Step {
    /// A message was handed to the client (or refused by it).
    Published(Result<(), async_nats::PublishError>),
    /// The queue is closed and empty.
    Done,
    /// The shutdown deadline passed.
    Deadline,
}

/// Publishes what the reader queued, in order, until the queue closes, then
/// flushes; once closing, all of it within the shutdown deadline.
async fn publish(
    client: async_nats::Client,
    mut rx: mpsc::Receiver<Message>,
    counters: Arc<Counters>,
    closing: deadline::Closing,
    health: Option<Arc<master_events_router::SinkHealth>>,
) {
    let mut errors_logged: Option<Instant> = None;
    // The last publish failed (the state is `failing` until one succeeds).
    let mut failed = false;
    // Whether an event was taken from the queue and not yet handed to the client.
    let holding = AtomicBool::new(false);
    loop {
        let step = async {
            let Some(message) = rx.recv().await else {
                return Step::Done;
            };
            holding.store(message.is_event, Ordering::Relaxed);
            let result = match message.headers {
                Some(headers) => {
                    client
                        .publish_with_headers(message.subject, headers, message.payload)
                        .await
                }
                None => client.publish(message.subject, message.payload).await,
            };
            holding.store(false, Ordering::Relaxed);
            Step::Published(result)
        };
        let step = tokio::select! {
            step = step => step,
            () = closing.passed() => Step::Deadline,
        };
        match step {
            Step::Published(Ok(())) => {
                counters.add(Counter::Published, 1);
                if failed {
                    failed = false;
                    if let Some(h) = &health {
                        h.ok();
                    }
                }
            }
            Step::Published(Err(e)) => {
                failed = true;
                if let Some(h) = &health {
                    h.failing(format!("an event could not be published: {e}"));
                }
                let total = counters.add(Counter::PublishErrors, 1);
                if errors_logged.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
                    errors_logged = Some(Instant::now());
                    tracing::error!(error = %e, errors_total = total, "the nats sink could not publish an event");
                }
            }
            Step::Done => {
                tokio::select! {
                    result = client.flush() => if let Err(e) = result {
                        tracing::error!(error = %e, "the nats sink could not flush on shutdown");
                    },
                    () = closing.passed() => tracing::error!(
                        "the nats sink could not flush before its shutdown deadline; what the client still buffered may be lost"
                    ),
                }
                return;
            }
            Step::Deadline => {
                let mut left = u64::from(holding.load(Ordering::Relaxed));
                while let Ok(message) = rx.try_recv() {
                    left += u64::from(message.is_event);
                }
                let total = counters.add(Counter::DroppedAtShutdown, left);
                tracing::error!(
                    events = left,
                    dropped_total = total,
                    "the nats sink could not publish everything before its shutdown deadline; the rest is dropped"
                );
                return;
            }
        }
    }
}

/// The shutdown signal, carrying its deadline.
mod deadline {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::sync::watch;

    /// Set once, with the shutdown deadline.
    #[derive(Clone)]
    pub(crate) struct Closing(Arc<watch::Sender<Option<Instant>>>);

    impl Closing {
        pub(crate) fn new() -> Closing {
            Closing(Arc::new(watch::channel(None).0))
        }

        /// Starts closing, with a deadline `timeout` from now.
        pub(crate) fn close(&self, timeout: Duration) {
            self.0.send_replace(Some(Instant::now() + timeout));
        }

        /// Resolves once closing and past the deadline (never before closing).
        pub(crate) async fn passed(&self) {
            let mut rx = self.0.subscribe();
            let deadline = loop {
                if let Some(deadline) = *rx.borrow_and_update() {
                    break deadline;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feeder(capacity: usize) -> (Feeder, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(capacity);
        let feeder = Feeder {
            tx,
            prefix: "p".into(),
            dropped: None,
            counters: Arc::new(Counters::default()),
            last_log: None,
            cloudevents: None,
        };
        (feeder, rx)
    }

    fn text(m: &Message) -> String {
        format!("{} {}", m.subject, String::from_utf8_lossy(&m.payload))
    }

    #[test]
    fn a_full_queue_drops_counts_and_reports_the_run_as_one_gap_when_room_comes() {
        let (mut f, mut rx) = feeder(2);
        for seq in 1..=5 {
            f.event(seq, "deleteBucket", None, Bytes::from(format!("e{seq}")));
        }
        assert_eq!(f.counters.snapshot().dropped_queue_full, 3);
        assert_eq!(
            rx.try_recv().map(|m| text(&m)).ok(),
            Some("p.deleteBucket e1".into())
        );
        f.event(6, "deleteBucket", None, Bytes::from("e6"));
        assert_eq!(
            rx.try_recv().map(|m| text(&m)).ok(),
            Some("p.deleteBucket e2".into())
        );
        let gap = rx.try_recv().map(|m| text(&m)).unwrap_or_default();
        assert!(
            gap.starts_with("p.gap {\"type\":\"gap\",\"fromSeq\":3,\"toSeq\":5,\"missed\":3"),
            "{gap}"
        );
        assert!(rx.try_recv().is_err(), "6 found no room after the gap");
        assert_eq!(f.dropped, Some((6, 6)));
    }
}
