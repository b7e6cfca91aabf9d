//! The webhook sink's delivery loop: batches from the queue, POSTs them, retries.
//!
//! Owns: batching (count, bytes, linger), the POST and the classification of its
//! outcome, the retry delays, and the shutdown deadline.
//!
//! Promises: one batch is in flight at a time, so batches arrive in order; a
//! batch is retried until it is delivered, refused for good, or the shutdown
//! deadline passes. Nothing here logs a header value or a URL password (errors are
//! logged without their URL, the URL is redacted).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};

use master_events_events::{cloudevents, Timestamp};

use crate::queue::{Item, Queue};
use crate::{redacted_url, Counter, Counters, WebhookConfig};

/// The CloudEvents attributes of one queued line: an event (`seq`, `type`, `origin`,
/// `ts` read from it) or a `gap` line (a control event).
fn attributes(ctx: &cloudevents::Context, line: &[u8]) -> cloudevents::Attributes {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head<'a> {
        #[serde(rename = "type", borrow)]
        ty: std::borrow::Cow<'a, str>,
        seq: Option<u64>,
        #[serde(borrow)]
        origin: Option<std::borrow::Cow<'a, str>>,
        from_seq: Option<u64>,
        to_seq: Option<u64>,
    }
    let head: Option<Head<'_>> = serde_json::from_slice(line).ok();
    let ts = cloudevents::line_ts(line);
    match head {
        Some(h) if h.ty == "gap" => {
            let id = format!("{}-{}", h.from_seq.unwrap_or(0), h.to_seq.unwrap_or(0));
            cloudevents::control_attributes(ctx, "gap", &id, Some(Timestamp::now()))
        }
        Some(h) => {
            cloudevents::event_attributes(ctx, h.seq.unwrap_or(0), &h.ty, ts, h.origin.as_deref())
        }
        // Every queued line was written by this server; were one not JSON, it still
        // goes out, as a control event of its own.
        None => cloudevents::control_attributes(ctx, "line", "unreadable", None),
    }
}

/// Failures are logged at most this often.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Says whether a rate-limited log line is due.
pub(crate) struct RateLimited {
    last: Option<Instant>,
}

impl RateLimited {
    pub(crate) fn new() -> Self {
        RateLimited { last: None }
    }

    /// True at most once per [`LOG_INTERVAL`].
    pub(crate) fn due(&mut self) -> bool {
        let due = self.last.is_none_or(|t| t.elapsed() >= LOG_INTERVAL);
        if due {
            self.last = Some(Instant::now());
        }
        due
    }
}

/// What the sender needs.
pub(crate) struct Sender {
    client: reqwest::Client,
    url: Url,
    shown_url: String,
    max_events: usize,
    max_bytes: usize,
    linger: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    shutdown_timeout: Duration,
    counters: Arc<Counters>,
    failures: RateLimited,
    /// Where the sink's state is shown (`/cluster`, `/metrics`).
    health: Option<Arc<master_events_router::SinkHealth>>,
    /// `format = "cloudevents"`: the `dataschema` base.
    schema_base: Option<String>,
    /// Where CloudEvents ids take their history from.
    router: Option<master_events_router::Router>,
}

/// The outcome of one POST.
enum Outcome {
    Delivered,
    /// Worth retrying; the reason for the log.
    Retry(String),
    /// Refused for good.
    Rejected(StatusCode),
}

impl Sender {
    pub(crate) fn new(
        client: reqwest::Client,
        url: Url,
        config: &WebhookConfig,
        counters: Arc<Counters>,
    ) -> Sender {
        Sender {
            client,
            shown_url: redacted_url(url.as_str()),
            url,
            max_events: config.batch_max_events,
            max_bytes: config.batch_max_bytes,
            linger: Duration::from_millis(config.linger_ms),
            retry_initial: Duration::from_millis(config.retry_initial_ms),
            retry_max: Duration::from_millis(config.retry_max_ms),
            shutdown_timeout: Duration::from_millis(config.shutdown_timeout_ms),
            counters,
            failures: RateLimited::new(),
            health: None,
            // Checked when the config was: an error here leaves the NDJSON format.
            schema_base: config.schema_base().ok().flatten(),
            router: None,
        }
    }

    /// The router whose history CloudEvents ids name.
    pub(crate) fn with_router(mut self, router: Option<master_events_router::Router>) -> Sender {
        self.router = router;
        self
    }

    /// The body of one batch, and its content type.
    fn body(&self, batch: &[Item]) -> (Bytes, &'static str) {
        let Some(base) = &self.schema_base else {
            let mut body = Vec::with_capacity(batch.iter().map(|i| i.line.len()).sum());
            for item in batch {
                body.extend_from_slice(&item.line);
            }
            return (Bytes::from(body), "application/x-ndjson");
        };
        let ctx = cloudevents::Context {
            history: self
                .router
                .as_ref()
                .map(|r| r.history().to_string())
                .unwrap_or_default(),
            schema_base: base.clone(),
        };
        let mut body = Vec::with_capacity(batch.iter().map(|i| i.line.len() + 320).sum());
        body.push(b'[');
        for (i, item) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            let attrs = attributes(&ctx, &item.line);
            cloudevents::write_structured(&mut body, &attrs, &item.line);
            body.pop(); // its newline
        }
        body.push(b']');
        (Bytes::from(body), "application/cloudevents-batch+json")
    }

    /// Reports the sink's state to `health`.
    pub(crate) fn with_health(
        mut self,
        health: Option<Arc<master_events_router::SinkHealth>>,
    ) -> Sender {
        self.health = health;
        self
    }

    /// One POST of `body` (a future that borrows nothing, so that the sender
    /// can act while it is on its way).
    fn post(
        &self,
        body: Bytes,
        content_type: &'static str,
    ) -> impl std::future::Future<Output = Outcome> + 'static {
        let request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, content_type)
            .body(body);
        async move {
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        Outcome::Delivered
                    } else if status.is_server_error()
                        || status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::REQUEST_TIMEOUT
                    {
                        Outcome::Retry(format!("answered {status}"))
                    } else {
                        Outcome::Rejected(status)
                    }
                }
                Err(e) => Outcome::Retry(e.without_url().to_string()),
            }
        }
    }

    /// The delay before retry number `attempt` (from 0): uniform below
    /// `min(max, initial * 2^attempt)` (full jitter).
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .retry_initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.retry_max);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }

    /// Delivers one batch: retries until delivered, refused, or `deadline` (set
    /// once the queue closes) passes. Returns false if it gave up at the deadline.
    async fn deliver(
        &mut self,
        queue: &Queue,
        batch: &[Item],
        deadline: &mut Option<Instant>,
    ) -> bool {
        let events = batch.iter().filter(|i| i.is_event).count() as u64;
        let (body, content_type) = self.body(batch);
        let mut attempt = 0;
        loop {
            if deadline.is_none() && queue.is_closed() {
                *deadline = Some(Instant::now() + self.shutdown_timeout);
            }
            let post = self.post(body.clone(), content_type);
            tokio::pin!(post);
            if deadline.is_none() {
                // A close while the POST is on its way starts the shutdown deadline.
                tokio::select! {
                    biased;
                    outcome = &mut post => {
                        if let Some(done) = self.settle(outcome, events, &mut attempt, queue, deadline).await {
                            return done;
                        }
                        continue;
                    }
                    () = queue.closed() => {
                        *deadline = Some(Instant::now() + self.shutdown_timeout);
                    }
                }
            }
            let Some(d) = *deadline else {
                continue;
            };
            let outcome = match tokio::time::timeout_at(d.into(), &mut post).await {
                Ok(outcome) => outcome,
                Err(_) => return false,
            };
            if let Some(done) = self
                .settle(outcome, events, &mut attempt, queue, deadline)
                .await
            {
                return done;
            }
        }
    }

    /// Acts on a POST's outcome: `Some(delivered_or_refused)` when the batch is
    /// done (`Some(false)`: given up at the deadline), `None` to retry (after the
    /// backoff wait, done here).
    async fn settle(
        &mut self,
        outcome: Outcome,
        events: u64,
        attempt: &mut u32,
        queue: &Queue,
        deadline: &mut Option<Instant>,
    ) -> Option<bool> {
        match outcome {
            Outcome::Delivered => {
                self.counters.add(Counter::Delivered, events);
                self.counters.add(Counter::Batches, 1);
                if let Some(health) = &self.health {
                    health.ok();
                }
                Some(true)
            }
            Outcome::Rejected(status) => {
                if let Some(health) = &self.health {
                    health.failing(format!(
                        "{} refused a batch ({status}); it was dropped",
                        self.shown_url
                    ));
                }
                let total = self.counters.add(Counter::DroppedRejected, events);
                tracing::error!(
                    url = %self.shown_url,
                    %status,
                    events,
                    dropped_total = total,
                    "the webhook receiver refused a batch; it is dropped (retrying would not help)"
                );
                Some(true)
            }
            Outcome::Retry(reason) => {
                if let Some(health) = &self.health {
                    health.retrying(format!("{}: {reason}", self.shown_url));
                }
                let failed = self.counters.add(Counter::FailedAttempts, 1);
                let wait = self.backoff(*attempt);
                *attempt = attempt.saturating_add(1);
                if self.failures.due() {
                    tracing::warn!(
                        url = %self.shown_url,
                        reason = %reason,
                        failed_attempts_total = failed,
                        retry_in_ms = wait.as_millis() as u64,
                        "the webhook sink cannot deliver; retrying"
                    );
                }
                match deadline {
                    Some(d) => {
                        // Once more at the deadline at the latest.
                        let now = Instant::now();
                        if now >= *d {
                            return Some(false);
                        }
                        tokio::time::sleep(wait.min(*d - now)).await;
                    }
                    None => {
                        // A close during the wait starts the shutdown deadline.
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = queue.closed() => {
                                *deadline = Some(Instant::now() + self.shutdown_timeout);
                            }
                        }
                    }
                }
                None
            }
        }
    }
}

/// Runs until the queue is closed and empty, or the shutdown deadline passes.
pub(crate) async fn run(mut sender: Sender, queue: Arc<Queue>) {
    let mut deadline: Option<Instant> = None;
    loop {
        // Wait for something to send.
        while queue.is_empty() {
            if queue.is_closed() {
                return;
            }
            queue.pushed().await;
        }
        // Linger until the batch is full, the linger time is up, or closing.
        let linger_end = tokio::time::Instant::now() + sender.linger;
        loop {
            let (events, bytes) = queue.queued();
            if events >= sender.max_events || bytes >= sender.max_bytes || queue.is_closed() {
                break;
            }
            if tokio::time::timeout_at(linger_end, queue.pushed())
                .await
                .is_err()
            {
                break;
            }
        }
        let batch = queue.take(sender.max_events, sender.max_bytes);
        let events = batch.iter().filter(|i| i.is_event).count();
        let delivered = sender.deliver(&queue, &batch, &mut deadline).await;
        queue.release(events);
        if !delivered {
            give_up(&sender, &queue, events);
            return;
        }
    }
}

/// The shutdown deadline passed: counts and logs what will not be delivered.
fn give_up(sender: &Sender, queue: &Queue, in_flight: usize) {
    let (queued, _) = queue.queued();
    let lost = (in_flight + queued) as u64;
    let total = sender.counters.add(Counter::DroppedAtShutdown, lost);
    tracing::error!(
        url = %sender.shown_url,
        events = lost,
        dropped_total = total,
        shutdown_timeout_ms = sender.shutdown_timeout.as_millis() as u64,
        "the webhook sink could not deliver everything before its shutdown deadline; the rest is dropped"
    );
}
