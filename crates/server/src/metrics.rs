//! Prometheus metrics of the server and its router, in the text exposition format.
//!
//! Owns: the metric registry and every metric the server updates: events ingested
//! and streamed per type, open streams, gap frames sent, ingest errors per reason,
//! authentication failures, request latencies per route, connections closed and
//! requests refused for a limit, body bytes buffered; and, read from the router
//! at each scrape, the sequencing counters (published, dropped, last seq, archive
//! fill, ingress queue) and every configured sink's health (state, panics).
//!
//! Promises: updating a metric never blocks on I/O; per-type counts of a stream are
//! accumulated per batch, not per event, so metrics do not slow the stream.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use master_events_events::EventType;
use master_events_router::{Router, SinkHealth, SinkState, SinkStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label: an event type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// The event type's wire name.
    pub r#type: &'static str,
}

/// Label: why an ingest request was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `bad_line`, `too_large`, `unsupported_media_type`, `body_read`, `closed`.
    pub reason: &'static str,
}

/// Labels of a request latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route (`/diag/masterEvents`, `/schemas`, ...).
    pub route: &'static str,
    /// The method.
    pub method: &'static str,
    /// The response status code.
    pub status: u16,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// A collector added after start (e.g. the plugin sinks' counters), encoded with
/// the rest at each scrape.
#[derive(Debug, Default, Clone)]
struct Extra(Arc<std::sync::Mutex<Option<Box<dyn Collector>>>>);

impl Collector for Extra {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match self.0.lock() {
            Ok(guard) => match guard.as_ref() {
                Some(c) => c.encode(encoder),
                None => Ok(()),
            },
            Err(_) => Ok(()),
        }
    }
}

/// The configured sinks' health, read at each scrape.
#[derive(Debug, Default, Clone)]
struct Sinks(Arc<std::sync::Mutex<Vec<Arc<SinkHealth>>>>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
    index: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkStateLabels {
    sink: String,
    index: String,
    state: &'static str,
}

impl Sinks {
    fn statuses(&self) -> Vec<SinkStatus> {
        match self.0.lock() {
            Ok(sinks) => sinks.iter().map(|s| s.snapshot()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Collector for Sinks {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses = self.statuses();
        if statuses.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "master_events_sink_state",
            "1 for the state each configured sink is in (ok, retrying, failing, standby: a master-only sink on a node that is not the master), 0 for the others.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for st in &statuses {
            for state in [
                SinkState::Ok,
                SinkState::Retrying,
                SinkState::Failing,
                SinkState::Standby,
            ] {
                let labels = SinkStateLabels {
                    sink: st.name.clone(),
                    index: st.index.to_string(),
                    state: state.as_str(),
                };
                ConstGauge::new(i64::from(st.state == state))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "master_events_sink_panics",
            "Times each configured sink panicked (and was restarted).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for st in &statuses {
            let labels = SinkLabels {
                sink: st.name.clone(),
                index: st.index.to_string(),
            };
            ConstCounter::new(st.panics).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Every metric of the server.
pub struct Metrics {
    registry: Registry,
    extra: Extra,
    sinks: Sinks,
    ingested: PerType,
    streamed: Streamed,
    open_streams: Gauge,
    gaps_sent: Counter,
    resets_sent: Counter,
    ingest_errors: Family<ReasonLabel, Counter>,
    auth_failures: Counter,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    connections_closed: Family<ReasonLabel, Counter>,
    requests_limited: Family<ReasonLabel, Counter>,
    body_bytes_buffered: Gauge,
    response_panics: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

#[derive(Debug)]
struct RouterCollector(Router);

impl Collector for RouterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let counters: [(&str, &str, u64); 2] = [
            (
                "master_events_published",
                "Events sequenced by this node's router.",
                s.published,
            ),
            (
                "master_events_dropped",
                "Events noted on this node but dropped because the ingress queue was full.",
                s.dropped,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let gauges: [(&str, &str, i64); 9] = [
            (
                "master_events_last_seq",
                "The seq of the last sequenced event.",
                s.last_seq as i64,
            ),
            (
                "master_events_oldest_seq",
                "The seq of the oldest retained event (0 if none).",
                s.oldest_seq as i64,
            ),
            (
                "master_events_archived_events",
                "Events retained in the archive.",
                s.archived as i64,
            ),
            (
                "master_events_archive_capacity",
                "Events the archive retains at most.",
                s.archive_capacity as i64,
            ),
            (
                "master_events_archived_bytes",
                "Bytes of the retained events' lines and blocks.",
                s.archived_bytes as i64,
            ),
            (
                "master_events_archive_stored_bytes",
                "What the retained events' lines take in memory: older blocks are kept LZ4-compressed.",
                s.archived_stored_bytes as i64,
            ),
            (
                "master_events_archive_cold_blocks",
                "Blocks of the archive kept compressed.",
                s.archived_cold_blocks as i64,
            ),
            (
                "master_events_archive_thawed_bytes",
                "Lines of compressed blocks kept decompressed for the readers that read them (each copy shared by its readers, let go within half a second of its last read); as of the freezer's last look.",
                s.archived_thawed_bytes as i64,
            ),
            (
                "master_events_ingress_queued",
                "Records waiting in the ingress queue.",
                s.ingress_queued as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// A registry with every metric, reading router figures from `router` at scrape.
    pub fn new(router: Router) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let ingested = Family::<TypeLabel, Counter>::default();
        let streamed = Streamed::default();
        let open_streams = Gauge::default();
        let gaps_sent = Counter::default();
        let resets_sent = Counter::default();
        let ingest_errors = Family::<ReasonLabel, Counter>::default();
        let auth_failures = Counter::default();
        let latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "master_events_ingested_events",
            "Events accepted by POST /diag/masterEvents, per type.",
            ingested.clone(),
        );
        registry.register_collector(Box::new(streamed.clone()));
        registry.register(
            "master_events_open_streams",
            "Stream connections open now.",
            open_streams.clone(),
        );
        registry.register(
            "master_events_gaps_sent",
            "Gap frames sent to stream clients (they asked for or fell behind to events no longer retained).",
            gaps_sent.clone(),
        );
        registry.register(
            "master_events_resets_sent",
            "Reset frames sent to stream clients (they resumed in another history, or after a seq never sequenced here).",
            resets_sent.clone(),
        );
        registry.register(
            "master_events_ingest_errors",
            "Ingest requests refused, per reason.",
            ingest_errors.clone(),
        );
        registry.register(
            "master_events_auth_failures",
            "Requests refused for missing or wrong credentials or an insufficient role.",
            auth_failures.clone(),
        );
        registry.register(
            "master_events_http_request_duration_seconds",
            "Time to answer a request (for streams: to send the response head).",
            latency.clone(),
        );
        let connections_closed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "master_events_connections_closed",
            "Connections the server closed for a limit, per reason (first_request_timeout, idle_timeout, per_ip_limit).",
            connections_closed.clone(),
        );
        let requests_limited = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "master_events_requests_limited",
            "Requests refused or cut for a limit, per reason (auth_rate_limit, body_stalled, body_too_slow, body_budget).",
            requests_limited.clone(),
        );
        let body_bytes_buffered = Gauge::default();
        registry.register(
            "master_events_body_bytes_buffered",
            "Request body bytes buffered now, all requests together.",
            body_bytes_buffered.clone(),
        );
        let response_panics = Counter::default();
        registry.register(
            "master_events_response_panics",
            "Requests whose handler or response body panicked (a bug): each was cut (its HTTP/2 stream reset, or its HTTP/1.1 connection closed) and logged at ERROR; the server serves on.",
            response_panics.clone(),
        );
        registry.register_collector(Box::new(RouterCollector(router)));
        let sinks = Sinks::default();
        registry.register_collector(Box::new(sinks.clone()));
        let extra = Extra::default();
        registry.register_collector(Box::new(extra.clone()));
        Arc::new(Metrics {
            registry,
            extra,
            sinks,
            ingested: PerType::new(ingested),
            streamed,
            open_streams,
            gaps_sent,
            resets_sent,
            ingest_errors,
            auth_failures,
            latency,
            connections_closed,
            requests_limited,
            body_bytes_buffered,
            response_panics,
        })
    }

    /// The configured sinks whose health `/metrics` and `/cluster` show (see
    /// [`master_events_router::SinkSet::health`]).
    pub fn set_sinks(&self, sinks: Vec<Arc<SinkHealth>>) {
        if let Ok(mut slot) = self.sinks.0.lock() {
            *slot = sinks;
        }
    }

    /// Every configured sink's health now.
    pub fn sink_statuses(&self) -> Vec<SinkStatus> {
        self.sinks.statuses()
    }

    /// Sets the collector encoded with every scrape from now on (one; a caller with
    /// several combines them), e.g. the plugin sinks' counters.
    pub fn set_extra_collector(&self, collector: Box<dyn Collector>) {
        if let Ok(mut slot) = self.extra.0.lock() {
            *slot = Some(collector);
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts events of one type ingested.
    pub fn ingested(&self, ty: EventType, n: u64) {
        self.ingested.counter(ty.index()).inc_by(n);
    }

    /// Adds the per-type counts of the events of one chunk streamed.
    pub fn streamed(&self, counts: &TypeCounts) {
        let mut touched = counts.touched;
        while touched != 0 {
            let i = touched.trailing_zeros() as usize;
            touched &= touched - 1;
            self.streamed.add(i, counts.counts[i]);
        }
    }

    /// Counts a request whose handler or response body panicked.
    pub fn response_panicked(&self) {
        self.response_panics.inc();
    }

    /// The open-streams gauge.
    pub fn open_streams(&self) -> &Gauge {
        &self.open_streams
    }

    /// Counts a gap frame sent.
    pub fn gap_sent(&self) {
        self.gaps_sent.inc();
    }

    /// Counts a reset frame sent.
    pub fn reset_sent(&self) {
        self.resets_sent.inc();
    }

    /// Counts a refused ingest request.
    pub fn ingest_error(&self, reason: &'static str) {
        self.ingest_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts an authentication or authorization failure.
    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// Counts a connection closed for a limit.
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a request refused or cut for a limit.
    pub fn request_limited(&self, reason: &'static str) {
        self.requests_limited
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The gauge of request body bytes buffered now.
    pub fn body_bytes_buffered(&self) -> &Gauge {
        &self.body_bytes_buffered
    }

    /// Records a request's latency.
    pub fn observe(&self, route: &'static str, method: &'static str, status: u16, took: Duration) {
        self.latency
            .get_or_create(&RouteLabels {
                route,
                method,
                status,
            })
            .observe(took.as_secs_f64());
    }
}

/// A counter family labelled by event type (the ingested events), each type's
/// counter looked up in the family once, when first counted, and kept:
/// `Family::get_or_create` takes the family's lock and hashes the label (for the
/// streamed events, counted by each stream for each chunk, it was 1.8% of the
/// server's CPU at 100,000 streams; those are [`Streamed`] now). A type never
/// counted is no series.
struct PerType {
    family: Family<TypeLabel, Counter>,
    counters: [OnceLock<Counter>; EventType::ALL.len()],
}

impl PerType {
    /// Counters of `family`, none looked up yet.
    fn new(family: Family<TypeLabel, Counter>) -> PerType {
        PerType {
            family,
            counters: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The counter of the type `EventType::ALL[index]`.
    fn counter(&self, index: usize) -> &Counter {
        self.counters[index].get_or_init(|| {
            self.family
                .get_or_create(&TypeLabel {
                    r#type: EventType::ALL[index].as_str(),
                })
                .clone()
        })
    }
}

/// The per-type counts of the events streamed, in shards a thread each (or a few
/// threads each): each stream adds its chunk's counts once a chunk, and at
/// 100,000 streams, one counter a type, written by every worker, passed its cache
/// line between them at each add (3.5% of the server's CPU). Summed at each
/// scrape, as `master_events_streamed_events`; a type never counted is no series.
#[derive(Debug, Default, Clone)]
struct Streamed {
    shards: Arc<[StreamedShard; STREAMED_SHARDS]>,
}

/// How many shards [`Streamed`] has (threads beyond it share them).
const STREAMED_SHARDS: usize = 16;

/// One shard of [`Streamed`]: a cache line (or more) of its own.
#[derive(Debug)]
#[repr(align(128))]
struct StreamedShard([AtomicU64; EventType::ALL.len()]);

impl Default for StreamedShard {
    fn default() -> StreamedShard {
        StreamedShard(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Streamed {
    /// Adds `n` events of the type `EventType::ALL[index]`, in this thread's shard.
    fn add(&self, index: usize, n: u64) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STREAMED_SHARDS;
        }
        // While the thread's locals are torn down, the first shard.
        let shard = SHARD.try_with(|s| *s).unwrap_or(0);
        self.shards[shard].0[index].fetch_add(n, Ordering::Relaxed);
    }

    /// The count of the type `EventType::ALL[index]`, all shards summed.
    fn total(&self, index: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0[index].load(Ordering::Relaxed))
            .sum()
    }
}

impl Collector for Streamed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "master_events_streamed_events",
            "Events sent to stream clients, per type (one count per client).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (index, ty) in EventType::ALL.iter().enumerate() {
            let total = self.total(index);
            if total > 0 {
                let labels = TypeLabel {
                    r#type: ty.as_str(),
                };
                ConstCounter::new(total).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Per-type counts of the events of one chunk, for [`Metrics::streamed`]: kept on
/// the stack of the chunk's rendering, not in each stream (at 100,000 streams,
/// reading a stream's whole array of counts for each event was a third of the
/// rendering's time), and only the types counted are read back.
pub struct TypeCounts {
    /// Bit `i` is set once `counts[i]` has been counted.
    touched: u64,
    counts: [u64; EventType::ALL.len()],
}

// Every event type has a bit in `TypeCounts::touched`.
const _: () = assert!(EventType::ALL.len() <= 64);

impl TypeCounts {
    /// No event counted.
    pub fn new() -> TypeCounts {
        TypeCounts {
            touched: 0,
            counts: [0; EventType::ALL.len()],
        }
    }

    /// Counts one event of type `event_type`.
    pub fn add(&mut self, event_type: EventType) {
        let i = event_type.index();
        self.touched |= 1 << i;
        self.counts[i] += 1;
    }
}

impl Default for TypeCounts {
    fn default() -> TypeCounts {
        TypeCounts::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use master_events_router::RouterConfig;

    #[tokio::test]
    async fn a_chunks_counts_are_added_to_the_streamed_counter_of_each_type_counted() {
        let metrics = Metrics::new(Router::start(RouterConfig::default()));
        let first = EventType::ALL[0];
        let last = EventType::ALL[EventType::ALL.len() - 1];
        let mut counts = TypeCounts::new();
        counts.add(first);
        counts.add(last);
        counts.add(last);
        metrics.streamed(&counts);
        metrics.streamed(&counts);
        let text = metrics.render();
        let line = |t: EventType, n: u64| {
            format!(
                "master_events_streamed_events_total{{type=\"{}\"}} {n}\n",
                t.as_str()
            )
        };
        assert!(text.contains(&line(first, 2)), "{text}");
        assert!(text.contains(&line(last, 4)), "{text}");
        // A type not counted is not a series at all.
        let other = EventType::ALL[1];
        assert!(
            !text.contains(&format!("type=\"{}\"", other.as_str())),
            "{text}"
        );
    }

    #[tokio::test]
    async fn counts_streamed_from_many_threads_are_summed_at_the_scrape() {
        let metrics = Metrics::new(Router::start(RouterConfig::default()));
        let ty = EventType::ALL[2];
        let threads: Vec<_> = (0..(STREAMED_SHARDS + 4))
            .map(|_| {
                let metrics = Arc::clone(&metrics);
                std::thread::spawn(move || {
                    let mut counts = TypeCounts::new();
                    counts.add(ty);
                    for _ in 0..1000 {
                        metrics.streamed(&counts);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a counting thread");
        }
        let want = format!(
            "master_events_streamed_events_total{{type=\"{}\"}} {}\n",
            ty.as_str(),
            1000 * (STREAMED_SHARDS + 4)
        );
        let text = metrics.render();
        assert!(text.contains(&want), "{text}");
        assert!(
            text.contains("# TYPE master_events_streamed_events counter\n"),
            "{text}"
        );
    }
}
