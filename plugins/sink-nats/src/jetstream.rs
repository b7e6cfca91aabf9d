//! The nats sink's JetStream mode: every event handed to a JetStream stream exactly
//! once, in seq order, resumed after a restart from what the stream holds.
//!
//! ```toml
//! [[sinks]]
//! type = "nats"
//! servers = ["nats://127.0.0.1:4222"]
//! subject_prefix = "master_events"
//! jetstream = { stream = "MASTER_EVENTS", replicas = 1, max_age_secs = 604800, duplicate_window_secs = 120, ack_window = 256 }
//! ```
//!
//! Owns: [`JetStreamConfig`] and [`run`].
//!
//! Promises:
//! - **Exactly once, in order.** Each event is published to `<prefix>.<type>` with
//!   the headers `Nats-Msg-Id: <history>:<seq>`, `Master-Events-History` and
//!   `Master-Events-Seq`, and counts as handed over only once JetStream acknowledged
//!   it. At most `ack_window` publishes wait for their acks; when one fails, every
//!   publish from it on is sent again, in order, with the same ids, so the server
//!   drops what it already stored (its duplicate window).
//! - **Resume from the stream, never from a guess.** On start, and after every
//!   failure, the sink reads the stream's last message of this archive's history:
//!   its `Master-Events-Seq` is the last event the stream holds, and the sink
//!   publishes from the next one. It reads the router from the oldest retained event
//!   (restored ones included: a `SIGKILL` between the durable log and JetStream loses
//!   nothing), skipping what the stream holds. What the archive no longer has is
//!   published as a gap message on `<prefix>.gap` with the exact range (its
//!   `Master-Events-Seq` header is the range's end, so a resume skips it too).
//! - **No poison message.** An event longer than the server's `max_payload` (less
//!   room for the headers) would fail every retry and stop the sink for good: it
//!   is not published; a gap message names its seq, it is counted (a publish error)
//!   and a WARN says so.
//! - **Bounded, never slowing the router.** While JetStream is unreachable the sink
//!   stops reading its subscription: the events wait in the router's archive (which
//!   a sink never holds back); what the archive evicts meanwhile comes back as a gap.
//! - **Says what is wrong.** The sink's health is `retrying` with the cause while
//!   the server is down, the stream cannot be created or used (e.g. an existing
//!   stream whose subjects do not cover `<prefix>.>`), or acks fail; each new cause
//!   is a WARN; `ok` again once a publish is acknowledged.
//! - **One stream for a fleet.** Clusters that share a stream each publish under a
//!   prefix of their own (`subject_prefix = "master_events.<cluster>"`), and the
//!   stream takes them all (`jetstream.subjects = ["master_events.>"]`, wildcards as
//!   NATS has them). A cluster's resume reads the newest message under its own
//!   prefix (`<prefix>.>`), so the others' messages, however many and however
//!   recent, change nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use master_events_events::Gap;
use master_events_router::{Chunk, Router, SinkHealth, SinkInput};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::{Counter, Counters};

/// The header naming the archive's history.
pub const HISTORY_HEADER: &str = "Master-Events-History";
/// The header carrying the event's seq (a gap message: the last seq of its range).
pub const SEQ_HEADER: &str = "Master-Events-Seq";

/// Bytes kept for a message's headers (message id, history, seq, CloudEvents
/// attributes) when checking an event against the server's `max_payload`.
const HEADER_ROOM: usize = 1024;

/// `jetstream = { ... }` of a nats sink: publish to a JetStream stream.
#[derive(Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JetStreamConfig {
    /// The stream's name (created when missing, with subjects `<prefix>.>`, or
    /// `subjects`).
    pub stream: String,
    /// The subjects of a stream the sink creates (default `["<prefix>.>"]`): for a
    /// stream several clusters share, a filter that takes every cluster's prefix
    /// (`["master_events.>"]`). Whatever they are, an existing stream must take
    /// `<prefix>.>`.
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    /// Replicas of a stream the sink creates (default 1).
    #[serde(default = "d_replicas")]
    pub replicas: usize,
    /// Discard messages older than this many seconds (default 0: kept until
    /// `max_bytes`).
    #[serde(default)]
    pub max_age_secs: u64,
    /// Keep at most this many bytes (default -1: no limit).
    #[serde(default = "d_max_bytes")]
    pub max_bytes: i64,
    /// The server's deduplication window by message id, in seconds (default 120):
    /// a re-send within it is dropped by the server.
    #[serde(default = "d_duplicate_window_secs")]
    pub duplicate_window_secs: u64,
    /// Publishes waiting for their acks at most (default 256, at least 1).
    #[serde(default = "d_ack_window")]
    pub ack_window: usize,
    /// How long an ack may take, in milliseconds (default 5000).
    #[serde(default = "d_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
}

fn d_replicas() -> usize {
    1
}
fn d_max_bytes() -> i64 {
    -1
}
fn d_duplicate_window_secs() -> u64 {
    120
}
fn d_ack_window() -> usize {
    256
}
fn d_ack_timeout_ms() -> u64 {
    5000
}

impl JetStreamConfig {
    /// Checks the values (the stream name as JetStream takes it).
    pub fn check(&self) -> Result<(), String> {
        let name_ok = !self.stream.is_empty()
            && self.stream.len() <= 255
            && self
                .stream
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b".*>/\\".contains(&b));
        if !name_ok {
            return Err(format!(
                "jetstream.stream: {:?} is not a stream name (1-255 visible characters, none of . * > / \\)",
                self.stream
            ));
        }
        if let Some(subjects) = &self.subjects {
            if subjects.is_empty() || subjects.iter().any(|s| !valid_filter(s)) {
                return Err(format!(
                    "jetstream.subjects: {subjects:?} must be NATS subjects or filters \
                     (dot-separated tokens, `*` for one token, `>` last for the rest)"
                ));
            }
        }
        if self.ack_window == 0 || self.replicas == 0 || self.ack_timeout_ms == 0 {
            return Err(
                "jetstream: ack_window, replicas and ack_timeout_ms must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// Whether `filter` is a NATS subject or filter: non-empty tokens without spaces,
/// `*` a whole token, `>` only as the last one.
fn valid_filter(filter: &str) -> bool {
    let tokens: Vec<&str> = filter.split('.').collect();
    tokens.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && !t.bytes().any(|b| b.is_ascii_whitespace())
            && match *t {
                ">" => i == tokens.len() - 1,
                "*" => true,
                t => !t.contains(['*', '>']),
            }
    })
}

/// Whether every subject `pattern` matches is also matched by the filter `filter`
/// (NATS wildcards: `*` one token, `>` one or more at the end).
pub fn covers(filter: &str, pattern: &str) -> bool {
    let f: Vec<&str> = filter.split('.').collect();
    let p: Vec<&str> = pattern.split('.').collect();
    for (i, ft) in f.iter().enumerate() {
        let Some(pt) = p.get(i) else {
            return false; // the pattern is shorter: it matches subjects the filter does not
        };
        match (*ft, *pt) {
            (">", _) => return true, // the rest, one token or more: the pattern has one
            ("*", ">") => return false,
            ("*", _) => {}
            (_, "*" | ">") => return false,
            (a, b) if a != b => return false,
            _ => {}
        }
    }
    f.len() == p.len()
}

/// One message the sink publishes or has published and awaits the ack of.
struct Outgoing {
    seq: u64,
    subject: String,
    payload: Bytes,
    id: String,
    is_event: bool,
    /// CloudEvents binary-mode headers (`format = "cloudevents"`).
    ce: Option<HeaderMap>,
}

/// What the sink needs to run.
pub(crate) struct JetStreamRun {
    pub(crate) client: async_nats::Client,
    pub(crate) config: JetStreamConfig,
    pub(crate) prefix: String,
    pub(crate) router: Option<Router>,
    /// `format = "cloudevents"`: the `dataschema` base (binary-mode headers).
    pub(crate) schema_base: Option<String>,
    pub(crate) health: Option<Arc<SinkHealth>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shutdown_timeout: Duration,
}

impl JetStreamRun {
    fn history(&self) -> String {
        self.router
            .as_ref()
            .map(|r| r.history().to_string())
            .unwrap_or_default()
    }

    fn ce_context(&self, history: &str) -> Option<master_events_events::cloudevents::Context> {
        self.schema_base
            .as_ref()
            .map(|base| master_events_events::cloudevents::Context {
                history: history.to_owned(),
                schema_base: base.clone(),
            })
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.config.stream.clone(),
            subjects: self
                .config
                .subjects
                .clone()
                .unwrap_or_else(|| vec![format!("{}.>", self.prefix)]),
            num_replicas: self.config.replicas,
            max_age: Duration::from_secs(self.config.max_age_secs),
            max_bytes: self.config.max_bytes,
            duplicate_window: Duration::from_secs(self.config.duplicate_window_secs),
            storage: stream::StorageType::File,
            ..Default::default()
        }
    }

    /// The stream, created when missing, and checked to take `<prefix>.>`.
    async fn stream(&self, js: &jetstream::Context) -> Result<stream::Stream, String> {
        let mut stream = js
            .get_or_create_stream(self.stream_config())
            .await
            .map_err(|e| format!("stream {}: {e}", self.config.stream))?;
        let info = stream
            .info()
            .await
            .map_err(|e| format!("stream {}: {e}", self.config.stream))?;
        let wanted = format!("{}.>", self.prefix);
        if !info.config.subjects.iter().any(|s| covers(s, &wanted)) {
            return Err(format!(
                "stream {} exists with subjects {:?}, which do not take {wanted}: \
                 add {wanted} to them, or name another stream",
                self.config.stream, info.config.subjects
            ));
        }
        Ok(stream)
    }

    /// The last seq of `history` the stream holds (0: none), read back from the
    /// newest message under this sink's prefix (others may share the stream).
    async fn last_held(&self, stream: &mut stream::Stream, history: &str) -> Result<u64, String> {
        let ours = format!("{}.>", self.prefix);
        let newest = match stream.get_last_raw_message_by_subject(&ours).await {
            Ok(m) => m,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => return Ok(0),
            Err(e) => {
                return Err(format!(
                    "stream {}: reading its last message on {ours}: {e}",
                    self.config.stream
                ))
            }
        };
        // Walk back past messages without our headers (published by someone else
        // on our subjects), a few.
        let mut message = newest;
        for _ in 0..64 {
            let under_ours = covers(&ours, message.subject.as_str());
            let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
            match (under_ours, header(HISTORY_HEADER), header(SEQ_HEADER)) {
                (true, Some(h), Some(seq)) if h == history => return Ok(seq.parse().unwrap_or(0)),
                // An earlier history's newest message: nothing of ours after it.
                (true, Some(_), Some(_)) => return Ok(0),
                _ => {}
            }
            let mut at = message.sequence;
            message = loop {
                if at <= 1 {
                    return Ok(0);
                }
                at -= 1;
                match stream.get_raw_message(at).await {
                    Ok(m) => break m,
                    // Deleted (interior) messages are skipped.
                    Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {}
                    Err(e) => {
                        return Err(format!(
                            "stream {}: reading message {at}: {e}",
                            self.config.stream
                        ))
                    }
                }
            };
        }
        Ok(0)
    }

    /// The message of a gap frame (its seq header: the range's end).
    fn gap_message(&self, history: &str, gap: Gap) -> Outgoing {
        let mut line = Vec::with_capacity(128);
        gap.encode_line(&mut line);
        line.pop();
        let ce = self.ce_context(history).map(|ctx| {
            crate::cloudevents_headers(
                &ctx,
                0,
                "gap",
                None,
                &line,
                Some((gap.from_seq, gap.to_seq)),
            )
        });
        Outgoing {
            ce,
            seq: gap.to_seq,
            subject: format!("{}.gap", self.prefix),
            payload: Bytes::from(line),
            id: format!("{history}:gap:{}-{}", gap.from_seq, gap.to_seq),
            is_event: false,
        }
    }

    async fn publish(
        &self,
        js: &jetstream::Context,
        history: &str,
        m: &Outgoing,
    ) -> Result<PublishAckFuture, String> {
        let mut headers = m.ce.clone().unwrap_or_default();
        headers.insert("Nats-Msg-Id", m.id.as_str());
        headers.insert(HISTORY_HEADER, history);
        headers.insert(SEQ_HEADER, m.seq.to_string().as_str());
        js.publish_with_headers(m.subject.clone(), headers, m.payload.clone())
            .await
            .map_err(|e| format!("publishing to {}: {e}", m.subject))
    }
}

/// Runs the JetStream mode until the input ends (see the module's promises).
pub(crate) async fn run(run: JetStreamRun, mut input: SinkInput) {
    let mut js = jetstream::new(run.client.clone());
    js.set_timeout(Duration::from_millis(run.config.ack_timeout_ms));
    // The sink's health (one of its own when built outside `serve`, so that its
    // causes are logged all the same).
    let health = run
        .health
        .clone()
        .unwrap_or_else(|| Arc::new(SinkHealth::new(crate::NAME, 0)));
    let window = run.config.ack_window;
    // Published, awaiting the ack, in seq order.
    let mut pending: VecDeque<(Outgoing, PublishAckFuture)> = VecDeque::new();
    // Read from the router, not yet published (after a failure: to send again).
    let mut queue: VecDeque<Outgoing> = VecDeque::new();
    // The last seq the stream is known to hold; `None`: to be read from it.
    let mut held: Option<u64> = None;
    let mut history = run.history();
    // The input ended (everything to publish was read).
    let mut input_done = false;
    // Set once stopping: past it, a sink that cannot publish gives up.
    let mut deadline: Option<Instant> = None;
    let mut delay = Duration::from_millis(100);
    'run: loop {
        let failure = 'step: {
            // Learn where the stream is (at start, and after any failure).
            if held.is_none() {
                history = run.history();
                let learned = async {
                    let mut stream = run.stream(&js).await?;
                    run.last_held(&mut stream, &history).await
                }
                .await;
                match learned {
                    Ok(seq) => {
                        tracing::info!(stream = %run.config.stream, last_held = seq, "the nats sink resumes JetStream after the last event the stream holds");
                        held = Some(seq);
                        // What the stream already has is not sent again.
                        queue.retain(|m| m.seq > seq);
                    }
                    Err(why) => break 'step Some(why),
                }
            }
            let last_held = held.unwrap_or(0);

            // Publish what is queued, within the window.
            while pending.len() < window {
                let Some(m) = queue.pop_front() else { break };
                match run.publish(&js, &history, &m).await {
                    Ok(ack) => pending.push_back((m, ack)),
                    Err(why) => {
                        queue.push_front(m);
                        break 'step Some(why);
                    }
                }
            }
            // Settle the oldest ack when the window is full, when there is nothing
            // more to read, or when the router has been quiet for a moment (do not
            // sit on unacknowledged publishes while the stream is idle).
            let mut must_settle = pending.len() >= window || (input_done && !pending.is_empty());
            let mut chunk = None;
            if !must_settle {
                if input_done {
                    if queue.is_empty() && pending.is_empty() {
                        break 'run;
                    }
                    break 'step None;
                }
                if pending.is_empty() {
                    chunk = Some(input.recv().await);
                } else {
                    tokio::select! {
                        c = input.recv() => chunk = Some(c),
                        () = tokio::time::sleep(Duration::from_millis(50)) => must_settle = true,
                    }
                }
            }
            if must_settle {
                if let Some((m, ack)) = pending.pop_front() {
                    match ack.await {
                        Ok(_) => {
                            health.ok();
                            delay = Duration::from_millis(100);
                            held = Some(m.seq.max(last_held));
                            if m.is_event {
                                run.counters.add(Counter::Published, 1);
                            }
                        }
                        Err(e) => {
                            queue.push_front(m);
                            break 'step Some(format!("no ack from JetStream: {e}"));
                        }
                    }
                }
                break 'step None;
            }
            let Some(chunk) = chunk else {
                break 'step None;
            };
            match chunk {
                None => {
                    input_done = true;
                    deadline.get_or_insert(Instant::now() + run.shutdown_timeout);
                }
                Some(Chunk::Truncated { .. }) => {}
                Some(Chunk::Gap(gap)) => {
                    run.counters.add(Counter::Missed, gap.missed);
                    if gap.to_seq > last_held {
                        let from = gap.from_seq.max(last_held + 1);
                        queue.push_back(
                            run.gap_message(
                                &history,
                                Gap::new(from, gap.to_seq, gap.reason.clone()),
                            ),
                        );
                    }
                }
                Some(Chunk::Events(batch)) => {
                    if let Some(selected) = input.select(&batch) {
                        let whole = selected.unfiltered().bytes();
                        for event in selected.iter() {
                            if event.seq <= last_held {
                                continue;
                            }
                            let line = event.line.strip_suffix(b"\n").unwrap_or(event.line);
                            // Over the server's max_payload the publish would fail
                            // at every retry and stop the sink for good: a gap
                            // message names the event instead (0: not known yet).
                            let max = run.client.server_info().max_payload;
                            if max > 0 && line.len() + HEADER_ROOM > max {
                                run.counters.add(Counter::PublishErrors, 1);
                                tracing::warn!(
                                    seq = event.seq,
                                    bytes = line.len(),
                                    max_payload = max,
                                    "the nats sink cannot publish an event over the server's max_payload to JetStream; a gap message names it"
                                );
                                queue.push_back(run.gap_message(
                                    &history,
                                    Gap::new(
                                        event.seq,
                                        event.seq,
                                        format!(
                                            "not published by the nats sink: {} bytes, over the NATS server's max_payload ({max})",
                                            line.len()
                                        ),
                                    ),
                                ));
                                continue;
                            }
                            let ce = run.ce_context(&history).map(|ctx| {
                                crate::cloudevents_headers(
                                    &ctx,
                                    event.seq,
                                    event.meta.event_type.as_str(),
                                    event.meta.origin,
                                    line,
                                    None,
                                )
                            });
                            queue.push_back(Outgoing {
                                ce,
                                seq: event.seq,
                                subject: format!(
                                    "{}.{}",
                                    run.prefix,
                                    event.meta.event_type.as_str()
                                ),
                                payload: whole.slice_ref(line),
                                id: format!("{history}:{}", event.seq),
                                is_event: true,
                            });
                        }
                    }
                }
            }
            None
        };
        if let Some(why) = failure {
            // Send everything unacknowledged again, in order, after re-learning
            // what the stream holds.
            health.retrying_because(&why, why.clone());
            let mut again: VecDeque<Outgoing> =
                VecDeque::with_capacity(queue.len() + pending.len());
            let unacked: Vec<Outgoing> = pending.drain(..).map(|(m, _)| m).collect();
            let mut rest: Vec<Outgoing> = queue.drain(..).collect();
            // A failed publish or ack was put back at the queue's front; the
            // unacknowledged ones after it are still in `pending`: keep seq order.
            let mut all: Vec<Outgoing> = unacked;
            all.append(&mut rest);
            all.sort_by_key(|m| m.seq);
            again.extend(all);
            queue = again;
            held = None;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            // Wait before trying again, but not past the shutdown deadline.
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = input.stopping(), if deadline.is_none() => {
                    deadline = Some(Instant::now() + run.shutdown_timeout);
                }
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
    let left = queue
        .iter()
        .chain(pending.iter().map(|(m, _)| m))
        .filter(|m| m.is_event)
        .count();
    if left > 0 {
        run.counters.add(Counter::DroppedAtShutdown, left as u64);
        tracing::warn!(left, "the nats sink stopped with events JetStream did not acknowledge; a restart resumes from what the stream holds");
    }
}
