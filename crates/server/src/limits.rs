//! Limits that keep hostile or broken clients from exhausting the server.
//!
//! Owns: the limit settings ([`Limits`], filled from `[server.limits]` and the
//! `serve` flags through [`LimitsSettings`]), the per-address connection cap
//! ([`ConnCounter`]), the byte budget of request bodies buffered at once
//! ([`Budget`], [`Charge`]), the request body that cuts a stalled or trickling
//! upload ([`TimedBody`]), the client key every per-address limit uses
//! ([`ClientKey`]), the rate-limited WARN lines of refusals ([`Throttle`]), and
//! all of these together while the server runs ([`Guards`]). The failed
//! authentication limiter lives with the users, in [`crate::auth`].
//!
//! Promises:
//! - Memory is bounded whatever clients do: the connection counter holds one entry
//!   per address with a connection open, the budget one counter per configured user.
//! - A body is timed only while the server waits for it: a handler that stops
//!   reading (a feed whose batch is with the router) is never cut for it, and data
//!   already received is always handed over before a timeout is reported.
//! - A refusal is counted in a metric and logged at WARN, at most one line per
//!   reason every [`WARN_EVERY`] with the number of refusals it stands for.

use std::collections::HashMap;
use std::fmt;
use std::future::Future as _;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio::time::Sleep;

/// How often at most a WARN line of one kind of refusal is written.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The limits of the server, with their defaults (docs/configuration.md, "Limits").
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// An HTTP/2 connection with no open stream (and any connection with no request
    /// in flight) is closed after this long.
    pub idle_timeout: Duration,
    /// Most connections open at once from one client address (an IPv6 client is
    /// its /64); more are closed at once.
    pub max_connections_per_ip: usize,
    /// A request body that sends nothing for this long while the server waits for
    /// it is cut (408).
    pub body_stall_timeout: Duration,
    /// Slowest average rate of a request body, in bytes a second, checked once the
    /// body has taken [`Limits::body_min_rate_after`]; 0 = no rate rule. Feeds
    /// (`?stream=1`) have no rate rule.
    pub body_min_rate: u64,
    /// How long a body may take before its average rate is checked.
    pub body_min_rate_after: Duration,
    /// Most request body bytes buffered at once, all clients together (more: 503).
    pub body_buffer_total: usize,
    /// Most request body bytes buffered at once for one user (more: 503).
    pub body_buffer_per_user: usize,
    /// Failed authentications one client address may make in a burst before its
    /// requests are answered 429.
    pub auth_failure_burst: u32,
    /// Failed authentications a second one client address may make after its burst.
    pub auth_failure_rate: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_timeout: Duration::from_secs(60),
            max_connections_per_ip: 256,
            body_stall_timeout: Duration::from_secs(10),
            body_min_rate: 1024,
            body_min_rate_after: Duration::from_secs(10),
            body_buffer_total: 64 * 1024 * 1024,
            body_buffer_per_user: 32 * 1024 * 1024,
            auth_failure_burst: 10,
            auth_failure_rate: 1.0,
        }
    }
}

/// The limits as a configuration file (`[server.limits]`) or the command line
/// sets them: each one given replaces the default.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// Seconds ([`Limits::idle_timeout`]).
    pub idle_timeout: Option<f64>,
    /// [`Limits::max_connections_per_ip`].
    pub max_connections_per_ip: Option<usize>,
    /// Seconds ([`Limits::body_stall_timeout`]).
    pub body_stall_timeout: Option<f64>,
    /// Bytes a second ([`Limits::body_min_rate`]).
    pub body_min_rate: Option<u64>,
    /// Seconds ([`Limits::body_min_rate_after`]).
    pub body_min_rate_after: Option<f64>,
    /// Bytes ([`Limits::body_buffer_total`]).
    pub body_buffer_total: Option<usize>,
    /// Bytes ([`Limits::body_buffer_per_user`]).
    pub body_buffer_per_user: Option<usize>,
    /// [`Limits::auth_failure_burst`].
    pub auth_failure_burst: Option<u32>,
    /// Failures a second ([`Limits::auth_failure_rate`]).
    pub auth_failure_rate: Option<f64>,
}

/// Where a setting came from, to name it in an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingSource {
    /// The `[server.limits]` table of the configuration file.
    File,
    /// A `serve` flag.
    Flag,
}

impl SettingSource {
    fn name(self, key: &str) -> String {
        match self {
            SettingSource::File => format!("server.limits.{key}"),
            SettingSource::Flag => format!("--{}", key.replace('_', "-")),
        }
    }
}

/// A limit set to a value it cannot take.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{setting} must be {expected}, not {value}")]
pub struct LimitsError {
    /// The setting, as written (`server.limits.idle_timeout`, `--idle-timeout`).
    pub setting: String,
    /// What it may be.
    pub expected: &'static str,
    /// What it was.
    pub value: String,
}

fn seconds(
    source: SettingSource,
    key: &str,
    value: Option<f64>,
    max: f64,
    expected: &'static str,
) -> Result<Option<Duration>, LimitsError> {
    match value {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= max => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(LimitsError {
            setting: source.name(key),
            expected,
            value: s.to_string(),
        }),
    }
}

fn at_least_one<T: Copy + PartialOrd + From<u8> + fmt::Display>(
    source: SettingSource,
    key: &str,
    value: Option<T>,
) -> Result<Option<T>, LimitsError> {
    match value {
        Some(v) if v < T::from(1) => Err(LimitsError {
            setting: source.name(key),
            expected: "at least 1",
            value: v.to_string(),
        }),
        v => Ok(v),
    }
}

impl LimitsSettings {
    /// Sets every limit given here on `limits`, checking each; an error names the
    /// setting as `source` writes it.
    pub fn apply_to(&self, limits: &mut Limits, source: SettingSource) -> Result<(), LimitsError> {
        const DAY: f64 = 86_400.0;
        if let Some(d) = seconds(
            source,
            "idle_timeout",
            self.idle_timeout,
            DAY,
            "more than 0 and at most 86400 seconds",
        )? {
            limits.idle_timeout = d;
        }
        if let Some(n) = at_least_one(
            source,
            "max_connections_per_ip",
            self.max_connections_per_ip,
        )? {
            limits.max_connections_per_ip = n;
        }
        if let Some(d) = seconds(
            source,
            "body_stall_timeout",
            self.body_stall_timeout,
            DAY,
            "more than 0 and at most 86400 seconds",
        )? {
            limits.body_stall_timeout = d;
        }
        if let Some(n) = self.body_min_rate {
            limits.body_min_rate = n;
        }
        if let Some(d) = seconds(
            source,
            "body_min_rate_after",
            self.body_min_rate_after,
            DAY,
            "more than 0 and at most 86400 seconds",
        )? {
            limits.body_min_rate_after = d;
        }
        if let Some(n) = at_least_one(source, "body_buffer_total", self.body_buffer_total)? {
            limits.body_buffer_total = n;
        }
        if let Some(n) = at_least_one(source, "body_buffer_per_user", self.body_buffer_per_user)? {
            limits.body_buffer_per_user = n;
        }
        if let Some(n) = at_least_one(source, "auth_failure_burst", self.auth_failure_burst)? {
            limits.auth_failure_burst = n;
        }
        match self.auth_failure_rate {
            Some(r) if r.is_finite() && r > 0.0 && r <= 1e6 => limits.auth_failure_rate = r,
            Some(r) => {
                return Err(LimitsError {
                    setting: source.name("auth_failure_rate"),
                    expected: "more than 0 and at most 1000000 a second",
                    value: r.to_string(),
                })
            }
            None => {}
        }
        Ok(())
    }
}

/// The limits' state while the server runs, shared by its connections and
/// handlers.
#[derive(Debug)]
pub struct Guards {
    /// The settings.
    pub limits: Limits,
    /// Connections open per client address.
    pub conns: Arc<ConnCounter>,
    /// Request body bytes buffered.
    pub budget: Arc<Budget>,
    /// Failed authentications per client address.
    pub auth: crate::auth::FailedAuthLimiter,
    /// WARN lines of connections refused over the per-address cap.
    pub warn_per_ip: Throttle,
    /// WARN lines of connections closed at the first-request deadline.
    pub warn_first_request: Throttle,
    /// WARN lines of requests refused for failed authentications.
    pub warn_auth: Throttle,
    /// WARN lines of request bodies cut.
    pub warn_body: Throttle,
    /// WARN lines of streams refused over `max_streams`.
    pub warn_streams: Throttle,
}

impl Guards {
    /// The state of `limits`, reporting buffered bytes on `buffered`.
    pub fn new(limits: &Limits, buffered: Gauge) -> Arc<Guards> {
        Arc::new(Guards {
            limits: limits.clone(),
            conns: ConnCounter::new(limits.max_connections_per_ip),
            budget: Budget::new(limits, buffered),
            auth: crate::auth::FailedAuthLimiter::new(
                limits.auth_failure_burst,
                limits.auth_failure_rate,
            ),
            warn_per_ip: Throttle::default(),
            warn_first_request: Throttle::default(),
            warn_auth: Throttle::default(),
            warn_body: Throttle::default(),
            warn_streams: Throttle::default(),
        })
    }

    /// `inner` cut by `rules`, each data frame added to `charge` when given (the
    /// handler keeps a clone of it while it holds the bytes).
    pub fn body(
        &self,
        inner: axum::body::Body,
        rules: BodyRules,
        charge: Option<Arc<Charge>>,
    ) -> axum::body::Body {
        axum::body::Body::new(TimedBody::new(inner, rules, charge))
    }

    /// Counts and logs (rate limited) a body cut by `cut`, and marks `resp` (the
    /// reply that says so) to close its HTTP/1 connection, with `Retry-After` when
    /// the budget was full.
    pub fn body_cut(
        &self,
        metrics: &crate::metrics::Metrics,
        cut: &BodyLimitError,
        mut resp: axum::response::Response,
    ) -> axum::response::Response {
        metrics.request_limited(cut.reason());
        if let Some(n) = self.warn_body.note() {
            tracing::warn!(reason = cut.reason(), refused = n, error = %cut, "cut a request body");
        }
        if matches!(cut, BodyLimitError::OverBudget(_)) {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp.extensions_mut().insert(crate::conn::CloseConnection);
        resp
    }
}

impl BodyLimitError {
    /// The status of the reply to a request whose body was cut: 408 for a stalled
    /// or slow body, 503 when the budget is full.
    pub fn status(&self) -> axum::http::StatusCode {
        match self {
            BodyLimitError::OverBudget(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
            BodyLimitError::Read(_) => axum::http::StatusCode::BAD_REQUEST,
            _ => axum::http::StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (counters
/// only).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The key of a client for the per-address limits: an IPv4 address, or the /64 of
/// an IPv6 address (one host or site usually holds a whole /64).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key of a peer address.
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientKey(IpAddr::V6(Ipv6Addr::from(bits)))
                }
            },
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// One kind of refusal's WARN line, written at most once every [`WARN_EVERY`].
#[derive(Debug)]
pub struct Throttle {
    base: Instant,
    /// Milliseconds after `base` of the last line written, plus one (0 = none yet).
    last: AtomicU64,
    /// Refusals since the last line written.
    unlogged: AtomicU64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            base: Instant::now(),
            last: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }
}

impl Throttle {
    /// Notes one refusal; `Some(n)` when a line is due now, standing for `n`
    /// refusals (this one included).
    pub fn note(&self) -> Option<u64> {
        self.note_at(Instant::now())
    }

    fn note_at(&self, at: Instant) -> Option<u64> {
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let now = at.saturating_duration_since(self.base).as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now < last + WARN_EVERY.as_millis() as u64 {
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        Some(self.unlogged.swap(0, Ordering::Relaxed).max(1))
    }
}

/// Connections open per client address, each at most `max`.
#[derive(Debug)]
pub struct ConnCounter {
    max: usize,
    open: Mutex<HashMap<ClientKey, usize>>,
}

/// One open connection's place in a [`ConnCounter`], given back when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    counter: Arc<ConnCounter>,
    key: ClientKey,
}

impl ConnCounter {
    /// A counter allowing `max` connections per address.
    pub fn new(max: usize) -> Arc<ConnCounter> {
        Arc::new(ConnCounter {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `key`, or `None` when it has `max`.
    pub fn try_open(self: &Arc<Self>, key: ClientKey) -> Option<ConnSlot> {
        let mut open = lock(&self.open);
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            counter: Arc::clone(self),
            key,
        })
    }

    /// Connections open now from `key`.
    pub fn open(&self, key: ClientKey) -> usize {
        lock(&self.open).get(&key).copied().unwrap_or(0)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.counter.open);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Why a body could not be given more of the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    /// All clients together hold the most the server buffers.
    #[error("the server is buffering its most request body bytes ({cap} bytes); retry shortly")]
    Total {
        /// [`Limits::body_buffer_total`].
        cap: usize,
    },
    /// This user's other requests hold the most buffered for one user.
    #[error(
        "this user's requests are buffering their most body bytes ({cap} bytes); retry shortly"
    )]
    User {
        /// [`Limits::body_buffer_per_user`].
        cap: usize,
    },
}

/// The request body bytes buffered at once, in all and per user.
#[derive(Debug)]
pub struct Budget {
    total_cap: usize,
    user_cap: usize,
    used: AtomicUsize,
    /// One counter per user that has had a body read (configured users only: a
    /// body is read after its request is authenticated).
    users: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    gauge: Gauge,
}

/// Adds `n` to `counter` unless that passes `cap`.
fn reserve(counter: &AtomicUsize, n: usize, cap: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(n).filter(|total| *total <= cap)
        })
        .is_ok()
}

impl Budget {
    /// A budget of `limits`' caps, reporting the bytes held on `gauge`.
    pub fn new(limits: &Limits, gauge: Gauge) -> Arc<Budget> {
        Arc::new(Budget {
            total_cap: limits.body_buffer_total,
            user_cap: limits.body_buffer_per_user,
            used: AtomicUsize::new(0),
            users: Mutex::new(HashMap::new()),
            gauge,
        })
    }

    /// An empty charge for a body of `user` (`None`: no users are configured, all
    /// requests share one allowance).
    pub fn charge(self: &Arc<Self>, user: Option<&str>) -> Arc<Charge> {
        let key = user.unwrap_or("");
        let counter = {
            let mut users = lock(&self.users);
            match users.get(key) {
                Some(c) => Arc::clone(c),
                None => {
                    let c = Arc::new(AtomicUsize::new(0));
                    users.insert(key.to_owned(), Arc::clone(&c));
                    c
                }
            }
        };
        Arc::new(Charge {
            budget: Arc::clone(self),
            user: counter,
            held: AtomicUsize::new(0),
        })
    }

    /// Bytes held now, all clients together.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// What one request holds of the [`Budget`]; all of it is given back when the last
/// holder (the body and the handler) drops it.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    user: Arc<AtomicUsize>,
    held: AtomicUsize,
}

impl Charge {
    /// Takes `n` more bytes.
    pub fn add(&self, n: usize) -> Result<(), OverBudget> {
        if n == 0 {
            return Ok(());
        }
        let b = &self.budget;
        if !reserve(&b.used, n, b.total_cap) {
            return Err(OverBudget::Total { cap: b.total_cap });
        }
        if !reserve(&self.user, n, b.user_cap) {
            b.used.fetch_sub(n, Ordering::AcqRel);
            return Err(OverBudget::User { cap: b.user_cap });
        }
        self.held.fetch_add(n, Ordering::AcqRel);
        b.gauge.inc_by(n as i64);
        Ok(())
    }

    /// Holds exactly `level` bytes from now on (takes or gives back the difference).
    pub fn hold(&self, level: usize) -> Result<(), OverBudget> {
        let held = self.held.load(Ordering::Acquire);
        if level >= held {
            self.add(level - held)
        } else {
            self.release(held - level);
            Ok(())
        }
    }

    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.held.fetch_sub(n, Ordering::AcqRel);
        self.user.fetch_sub(n, Ordering::AcqRel);
        self.budget.used.fetch_sub(n, Ordering::AcqRel);
        self.budget.gauge.dec_by(n as i64);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release(self.held.load(Ordering::Acquire));
    }
}

/// Why a request body was cut.
#[derive(Debug, thiserror::Error)]
pub enum BodyLimitError {
    /// Nothing arrived for the stall timeout while the server waited.
    #[error("the body sent nothing for {}s ({received} bytes received)", after.as_secs_f64())]
    Stalled {
        /// [`Limits::body_stall_timeout`].
        after: Duration,
        /// Bytes received before.
        received: u64,
    },
    /// The body's average rate fell under the minimum.
    #[error("the body arrived at under {min_rate} bytes a second ({received} bytes in {}s)", elapsed.as_secs())]
    TooSlow {
        /// [`Limits::body_min_rate`].
        min_rate: u64,
        /// Bytes received.
        received: u64,
        /// Time since the body was first read.
        elapsed: Duration,
    },
    /// Buffering more would pass a cap of the [`Budget`].
    #[error(transparent)]
    OverBudget(OverBudget),
    /// The connection failed.
    #[error(transparent)]
    Read(Box<dyn std::error::Error + Send + Sync>),
}

impl BodyLimitError {
    /// The reason label of the metric and the log.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyLimitError::Stalled { .. } => "body_stalled",
            BodyLimitError::TooSlow { .. } => "body_too_slow",
            BodyLimitError::OverBudget(_) => "body_budget",
            BodyLimitError::Read(_) => "body_read",
        }
    }

    /// Finds the limit that cut a body in an error's chain (`None`: no limit did).
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyLimitError> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = next {
            if let Some(cut) = err.downcast_ref::<BodyLimitError>() {
                return match cut {
                    BodyLimitError::Read(_) => None,
                    cut => Some(cut),
                };
            }
            next = err.source();
        }
        None
    }
}

/// The rules a [`TimedBody`] applies.
#[derive(Clone, Copy, Debug)]
pub struct BodyRules {
    /// [`Limits::body_stall_timeout`].
    pub stall: Duration,
    /// [`Limits::body_min_rate`] (0 = none).
    pub min_rate: u64,
    /// [`Limits::body_min_rate_after`].
    pub rate_after: Duration,
}

impl BodyRules {
    /// The rules of a request body.
    pub fn request(limits: &Limits) -> BodyRules {
        BodyRules {
            stall: limits.body_stall_timeout,
            min_rate: limits.body_min_rate,
            rate_after: limits.body_min_rate_after,
        }
    }

    /// The rules of a feed (`?stream=1`): the stall timeout only. A feed carries
    /// events as they happen, so its rate is theirs, however low.
    pub fn feed(limits: &Limits) -> BodyRules {
        BodyRules {
            min_rate: 0,
            ..BodyRules::request(limits)
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body cut with [`BodyLimitError`] when it stalls, trickles under
    /// the minimum rate, or (with a [`Charge`]) would pass the buffering budget.
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        rules: BodyRules,
        charge: Option<Arc<Charge>>,
        started: Option<Instant>,
        received: u64,
        // Since when the server has waited for data with none arriving.
        waiting_since: Option<Instant>,
        // Allocated at the first wait: a body already received never needs it.
        timer: Option<Pin<Box<Sleep>>>,
        done: bool,
    }
}

impl<B> TimedBody<B> {
    /// Wraps `inner`; each data frame is added to `charge` when given.
    pub fn new(inner: B, rules: BodyRules, charge: Option<Arc<Charge>>) -> TimedBody<B> {
        TimedBody {
            inner,
            rules,
            charge,
            started: None,
            received: 0,
            waiting_since: None,
            timer: None,
            done: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyLimitError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyLimitError>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if this.started.is_none() {
            *this.started = Some(Instant::now());
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.waiting_since = None;
                if let Some(data) = frame.data_ref() {
                    *this.received += data.len() as u64;
                    if let Some(charge) = this.charge.as_ref() {
                        if let Err(over) = charge.add(data.len()) {
                            *this.done = true;
                            return Poll::Ready(Some(Err(BodyLimitError::OverBudget(over))));
                        }
                    }
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => {
                *this.done = true;
                return Poll::Ready(Some(Err(BodyLimitError::Read(e.into()))));
            }
            Poll::Ready(None) => {
                *this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let now = Instant::now();
        let since = *this.waiting_since.get_or_insert(now);
        let started = this.started.unwrap_or(now);
        let rules = *this.rules;
        let mut deadline = since + rules.stall;
        if now >= deadline {
            *this.done = true;
            return Poll::Ready(Some(Err(BodyLimitError::Stalled {
                after: rules.stall,
                received: *this.received,
            })));
        }
        if rules.min_rate > 0 {
            // The moment the average falls under the minimum if nothing more arrives.
            let owed = Duration::from_secs_f64(*this.received as f64 / rules.min_rate as f64);
            let check = started + rules.rate_after.max(owed);
            if now >= check {
                *this.done = true;
                return Poll::Ready(Some(Err(BodyLimitError::TooSlow {
                    min_rate: rules.min_rate,
                    received: *this.received,
                    elapsed: now - started,
                })));
            }
            deadline = deadline.min(check);
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        let timer = match this.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => this
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        if timer.as_mut().poll(cx).is_ready() {
            // The deadline passed between the checks and now: check again.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("addr");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("addr");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("addr");
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        assert_eq!(ClientKey::of(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("addr");
        assert_eq!(ClientKey::of(mapped).to_string(), "10.0.0.1");
    }

    #[test]
    fn the_connection_counter_refuses_past_its_max_and_forgets_closed_addresses() {
        let counter = ConnCounter::new(2);
        let key = ClientKey::of([10, 0, 0, 1].into());
        let one = counter.try_open(key).expect("first");
        let two = counter.try_open(key).expect("second");
        assert!(counter.try_open(key).is_none());
        assert!(counter
            .try_open(ClientKey::of([10, 0, 0, 2].into()))
            .is_some());
        drop(one);
        let three = counter.try_open(key).expect("a place was given back");
        drop((two, three));
        assert_eq!(counter.open(key), 0);
        assert!(lock(&counter.open).is_empty());
    }

    #[test]
    fn charges_are_capped_per_user_and_in_all_and_given_back_when_dropped() {
        let limits = Limits {
            body_buffer_total: 100,
            body_buffer_per_user: 60,
            ..Limits::default()
        };
        let budget = Budget::new(&limits, Gauge::default());
        let alice = budget.charge(Some("alice"));
        alice.add(50).expect("under both caps");
        assert_eq!(alice.add(20), Err(OverBudget::User { cap: 60 }));
        let bob = budget.charge(Some("bob"));
        bob.add(50).expect("under both caps");
        assert_eq!(bob.add(1), Err(OverBudget::Total { cap: 100 }));
        assert_eq!(budget.used(), 100);
        bob.hold(10).expect("shrinks");
        assert_eq!(budget.used(), 60);
        drop(alice);
        drop(bob);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn settings_are_checked_and_named_as_written() {
        let mut limits = Limits::default();
        let bad = LimitsSettings {
            idle_timeout: Some(0.0),
            ..LimitsSettings::default()
        };
        let e = bad.apply_to(&mut limits, SettingSource::File).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("server.limits.idle_timeout must be more than 0 and at most 86400 seconds, not 0")
        );
        let bad = LimitsSettings {
            max_connections_per_ip: Some(0),
            ..LimitsSettings::default()
        };
        let e = bad.apply_to(&mut limits, SettingSource::Flag).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("--max-connections-per-ip must be at least 1, not 0")
        );
        let good = LimitsSettings {
            body_stall_timeout: Some(2.5),
            body_min_rate: Some(0),
            ..LimitsSettings::default()
        };
        good.apply_to(&mut limits, SettingSource::File)
            .expect("valid");
        assert_eq!(limits.body_stall_timeout, Duration::from_millis(2500));
        assert_eq!(limits.body_min_rate, 0);
    }

    #[test]
    fn the_server_limits_table_reads_every_key_and_refuses_unknown_ones() {
        let text = "idle_timeout = 30\nmax_connections_per_ip = 8\nbody_stall_timeout = 5\n\
                    body_min_rate = 0\nbody_min_rate_after = 2\nbody_buffer_total = 1000\n\
                    body_buffer_per_user = 500\nauth_failure_burst = 3\nauth_failure_rate = 0.5\n";
        let settings: LimitsSettings = toml::from_str(text).expect("parses");
        let mut limits = Limits::default();
        settings
            .apply_to(&mut limits, SettingSource::File)
            .expect("valid");
        assert_eq!(
            limits,
            Limits {
                idle_timeout: Duration::from_secs(30),
                max_connections_per_ip: 8,
                body_stall_timeout: Duration::from_secs(5),
                body_min_rate: 0,
                body_min_rate_after: Duration::from_secs(2),
                body_buffer_total: 1000,
                body_buffer_per_user: 500,
                auth_failure_burst: 3,
                auth_failure_rate: 0.5,
            }
        );
        let unknown = toml::from_str::<LimitsSettings>("idle = 3\n").err();
        assert!(unknown.is_some_and(|e| e.to_string().contains("unknown field `idle`")));
    }

    #[test]
    fn the_throttle_writes_one_line_per_period_counting_the_rest() {
        let t = Throttle::default();
        let start = t.base;
        assert_eq!(t.note_at(start), Some(1));
        assert_eq!(t.note_at(start + Duration::from_secs(1)), None);
        assert_eq!(t.note_at(start + Duration::from_secs(9)), None);
        assert_eq!(t.note_at(start + WARN_EVERY), Some(3));
        assert_eq!(t.note_at(start + WARN_EVERY), None);
    }
}
