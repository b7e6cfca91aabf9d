//! `GET /diag/masterEvents`: the event stream, as NDJSON or Server-Sent Events.
//!
//! Owns: the query (`o=1`, `since=`, `start=now`, filters, `heartbeat=`,
//! `format=cloudevents`), the choice of format (`Accept: text/event-stream` → SSE;
//! `Last-Event-ID` resumes), and the body that walks the router's ring for one
//! client.
//!
//! CloudEvents (`format=cloudevents`): each line becomes one structured-mode
//! CloudEvent (`master_events_events::cloudevents`: `id` = `HISTORY:SEQ`, the line
//! as `data`), in NDJSON or SSE alike; control frames become CloudEvents of their own
//! type (`io.master-events.control.gap`, ...), so a consumer still learns of every gap
//! and reset. The default format is untouched by this (its lines are never
//! re-encoded); the CloudEvents one writes each line anew.
//!
//! How a slow consumer is read (the promise of this module):
//! - The body is pulled by the connection: the next chunk is taken from the ring only
//!   when hyper has written the previous one. A client that stops reading therefore
//!   holds at most one chunk (a block of at most ~64 KiB of lines) plus the socket's
//!   buffers: its memory is bounded, and the sequencer, the archive and every other
//!   client go on unaffected.
//! - When that client reads again and the ring has moved past its position, it gets
//!   a `gap` frame with the exact range and count it missed, then continues from the
//!   oldest retained event; it can also reconnect with `since=` (the `seq` of the
//!   last event it got, or of a heartbeat).
//! - Lines are sent as they are in the ring: with no filter, a chunk is one
//!   zero-copy slice of many lines (many lines per write); they are never re-encoded.
//! - A `heartbeat` frame (`seq` = the position the stream has reached, filtered-out
//!   events included) is sent after each idle interval.
//! - On server shutdown every stream ends promptly (its body finishes cleanly).
//!
//! Histories (the promise that a resume never silently skips): every archive belongs
//! to a history ([`master_events_router::Router::history`]), sent in the
//! `Master-Events-History` response header, in every heartbeat and in SSE ids
//! (`id: HISTORY:SEQ`). A reader resumes with `since=SEQ&history=HISTORY` (or SSE
//! `Last-Event-ID: HISTORY:SEQ`). When the history it names is not the archive's, or
//! the seq is beyond the last one sequenced (and the history does not vouch for it
//! on a follower that is still catching up), the stream starts with a `reset` frame
//! and then sends the retained archive from its start: never silence, never events of
//! one history read as the continuation of another ([`resolve_resume`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use master_events_events::{cloudevents, Gap, Heartbeat, Reset, Timestamp};
use master_events_router::{Chunk, Cursor, EventBatch, Filter, Router, Subscription};

use crate::metrics::{Metrics, TypeCounts};

/// The wire format of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line (`application/x-ndjson`).
    Ndjson,
    /// Server-Sent Events (`text/event-stream`): `id:` = seq, `data:` = the line.
    Sse,
}

/// A parsed stream request.
#[derive(Debug)]
pub struct StreamQuery {
    /// Where to start.
    pub cursor: Cursor,
    /// Send the archive once, then end (`o=1`).
    pub once: bool,
    /// The filter of the query (`None` when it matches everything).
    pub filter: Option<Filter>,
    /// Idle heartbeat interval (`None` = off).
    pub heartbeat: Option<Duration>,
    /// The history the reader resumes in (`history=`, or the `HISTORY:` part of an
    /// SSE `Last-Event-ID`).
    pub history: Option<String>,
    /// `format=cloudevents`: every line as a structured-mode CloudEvent.
    pub cloudevents: bool,
}

/// Why a stream query was refused (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter has a value that does not parse.
    #[error("query parameter {name}: {reason}")]
    Invalid {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A parameter this endpoint does not know.
    #[error("unknown query parameter {0:?} (known: o, since, history, start, type, bucket, vbucket, node, heartbeat, format)")]
    Unknown(String),
    /// Parameters that contradict each other.
    #[error("{0}")]
    Conflict(&'static str),
}

/// Splits a raw query string into (key, values), percent-decoded.
pub fn parse_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl StreamQuery {
    /// Parses the query string; `last_event_id` is the SSE `Last-Event-ID` header,
    /// which resumes like `since=` (it wins over `since=` and `start=now`, as a reconnecting EventSource needs); `default_heartbeat`
    /// applies when the query has no `heartbeat=`.
    pub fn parse(
        query: Option<&str>,
        last_event_id: Option<&str>,
        default_heartbeat: Option<Duration>,
    ) -> Result<StreamQuery, QueryError> {
        let mut values: HashMap<&'static str, Vec<String>> = HashMap::new();
        for (k, v) in parse_pairs(query) {
            let key: &'static str = match k.as_str() {
                "o" => "o",
                "since" => "since",
                "history" => "history",
                "start" => "start",
                "type" => "type",
                "bucket" => "bucket",
                "vbucket" => "vbucket",
                "node" => "node",
                "heartbeat" => "heartbeat",
                "format" => "format",
                _ => return Err(QueryError::Unknown(k)),
            };
            values.entry(key).or_default().push(v);
        }
        let single = |name: &'static str| -> Option<&str> {
            values.get(name).and_then(|v| v.last()).map(String::as_str)
        };
        let once = match single("o") {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") | Some("") => true,
            Some(other) => {
                return Err(QueryError::Invalid {
                    name: "o",
                    reason: format!("expected 1 or 0, found {other:?}"),
                })
            }
        };
        // A browser's EventSource reconnects to the same URL with Last-Event-ID: it
        // wins over `since=` and `start=now`, so the resumed stream continues exactly.
        // It is `HISTORY:SEQ` as this server sends it (a bare `SEQ` is taken too).
        let (id_history, last_event_seq) = match last_event_id.map(str::trim) {
            Some(id) => match id.rsplit_once(':') {
                Some((h, s)) => (Some(h), Some(s)),
                None => (None, Some(id)),
            },
            None => (None, None),
        };
        let history = match id_history.or(single("history")) {
            None => None,
            Some(h) if master_events_router::is_valid_history(h) => Some(h.to_owned()),
            Some(h) => {
                return Err(QueryError::Invalid {
                    name: "history",
                    reason: format!(
                        "expected a history id as this server sends it (1 to 64 letters, digits, '-' or '_'), found {:?}",
                        h.chars().take(80).collect::<String>()
                    ),
                })
            }
        };
        let since = match last_event_seq.or(single("since")) {
            None => None,
            Some(s) => Some(s.trim().parse::<u64>().map_err(|_| QueryError::Invalid {
                name: "since",
                reason: format!("expected a seq (a non-negative integer), found {s:?}"),
            })?),
        };
        let start_now = match single("start") {
            None => false,
            Some("now") => last_event_id.is_none(),
            Some(other) => {
                return Err(QueryError::Invalid {
                    name: "start",
                    reason: format!("the only value is \"now\", found {other:?}"),
                })
            }
        };
        if start_now && since.is_some() {
            return Err(QueryError::Conflict(
                "start=now and since= (or Last-Event-ID) cannot be combined",
            ));
        }
        if start_now && once {
            return Err(QueryError::Conflict(
                "start=now and o=1 cannot be combined: o=1 sends the archive",
            ));
        }
        let cursor = match (since, start_now) {
            (Some(s), _) => Cursor::After(s),
            (None, true) => Cursor::Now,
            (None, false) => Cursor::Oldest,
        };
        let empty = Vec::new();
        let get = |name: &'static str| values.get(name).unwrap_or(&empty);
        let filter = Filter::from_query(get("type"), get("bucket"), get("vbucket"), get("node"))
            .map_err(|e| QueryError::Invalid {
                name: e.key(),
                reason: e.to_string(),
            })?;
        let heartbeat = match single("heartbeat") {
            None => default_heartbeat,
            Some(s) => {
                let secs: f64 = s.trim().parse().map_err(|_| QueryError::Invalid {
                    name: "heartbeat",
                    reason: format!("expected seconds (0 = off), found {s:?}"),
                })?;
                if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
                    return Err(QueryError::Invalid {
                        name: "heartbeat",
                        reason: format!("expected 0 to 86400 seconds, found {s}"),
                    });
                }
                (secs > 0.0).then(|| Duration::from_secs_f64(secs.max(0.01)))
            }
        };
        if history.is_some() && since.is_none() {
            return Err(QueryError::Conflict(
                "history= names where since= resumes: give since= with it",
            ));
        }
        let cloudevents = match single("format") {
            None | Some("") | Some("json") => false,
            Some("cloudevents") => true,
            Some(other) => {
                return Err(QueryError::Invalid {
                    name: "format",
                    reason: format!(
                        "expected json (the default) or cloudevents, found {:?}",
                        other.chars().take(40).collect::<String>()
                    ),
                })
            }
        };
        Ok(StreamQuery {
            cursor,
            once,
            filter: (!filter.is_all()).then_some(filter),
            heartbeat,
            history,
            cloudevents,
        })
    }
}

/// Where a stream really starts: the query's cursor, or — when the reader resumes in
/// a history that is not `history`, or after a seq beyond `last_seq` — the oldest
/// retained event, announced by the returned [`Reset`] frame.
///
/// A seq beyond `last_seq` is believed on a node that is not the master (it is
/// still catching up with the master, which issued that seq: the reader waits for
/// it), unless the reader names another history while this node holds events (an
/// empty follower has not taken its master's history yet). On the master (or a node alone)
/// the seq was never issued here (the server restarted without its archive, or the
/// reader came from elsewhere).
pub fn resolve_resume(
    query: &StreamQuery,
    history: &str,
    last_seq: u64,
    oldest_seq: Option<u64>,
    is_master: bool,
) -> (Cursor, Option<Reset>) {
    let Cursor::After(since) = query.cursor else {
        return (query.cursor, None);
    };
    let named = query.history.as_deref();
    let reason = match named {
        // A follower that holds nothing yet (it just started) has not taken its
        // master's history yet: the reader waits for it to catch up.
        Some(h) if h != history && (is_master || last_seq > 0) => {
            "history changed: this archive is not the one the reader resumes"
        }
        Some(_) if since > last_seq && is_master => {
            "since is beyond the last seq this history sequenced"
        }
        None if since > last_seq && is_master => "since is beyond the last seq sequenced here",
        _ => return (query.cursor, None),
    };
    let reset = Reset {
        history: history.to_owned(),
        oldest_seq: oldest_seq.unwrap_or(0),
        last_seq,
        requested_history: named.map(str::to_owned),
        requested_since: since,
        reason: reason.to_owned(),
    };
    (Cursor::Oldest, Some(reset))
}

/// What ends every stream of a server at shutdown: a flag, set once, and the
/// router whose readers are then woken to see it.
///
/// Why not a cancellation token each stream polls: a stream polled for each
/// event then took the token's lock (and registered with its own wake-up list)
/// every time; at 100,000 streams that was 3% of the server's CPU. A stream
/// reads this flag with one atomic load, and is woken for it through the ring's
/// wake-up list it waits in anyway.
#[derive(Clone)]
pub struct StreamsStop {
    stopped: Arc<AtomicBool>,
    router: Router,
}

impl StreamsStop {
    /// Not stopped; `router` is the one the streams read.
    pub fn new(router: Router) -> StreamsStop {
        StreamsStop {
            stopped: Arc::new(AtomicBool::new(false)),
            router,
        }
    }

    /// Ends every stream: each ends at its next poll, and a waiting one is woken.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.router.wake_readers();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// One client's stream: pulls chunks from its subscription and renders them.
///
/// It is a [`futures_util::Stream`] written by hand (once [`StreamBody::into_stream`]
/// is called): one poll looks at the shutdown flag, the subscription and the
/// heartbeat's timer, with no future built or dropped per chunk.
pub struct StreamBody {
    sub: Subscription,
    filter: Option<Filter>,
    format: Format,
    heartbeat: Option<Duration>,
    /// The heartbeat's timer, once the stream has waited (reset after each chunk).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// With `o=1`: stop once the position reaches this seq.
    once_until: Option<u64>,
    stop: StreamsStop,
    /// Counts the stream in the open-streams gauge while it lives (set by
    /// [`StreamBody::into_stream`]).
    open: Option<OpenStream>,
    metrics: Arc<Metrics>,
    finished: bool,
    /// The history of the archive (in heartbeats and SSE ids).
    history: Arc<str>,
    /// A `reset` frame to send before anything else. Boxed, as the CloudEvents
    /// context: rare, they would take 128 of the body's bytes in every stream
    /// (100,000 streams read theirs once an event each).
    reset: Option<Box<Reset>>,
    /// With `format=cloudevents`: what every CloudEvent of this stream shares.
    cloudevents: Option<Box<cloudevents::Context>>,
}

/// Keeps the open-streams gauge right however the stream ends.
struct OpenStream(Arc<Metrics>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams().dec();
    }
}

impl StreamBody {
    /// A stream over `sub`. With `once_until`, ends after that seq (or as soon as it
    /// has caught up).
    pub fn new(
        sub: Subscription,
        query: &StreamQuery,
        format: Format,
        once_until: Option<u64>,
        stop: StreamsStop,
        metrics: Arc<Metrics>,
    ) -> StreamBody {
        StreamBody {
            history: Arc::from(""),
            reset: None,
            sub,
            filter: query.filter.clone(),
            format,
            heartbeat: query.heartbeat,
            timer: None,
            once_until,
            stop,
            open: None,
            metrics,
            finished: false,
            cloudevents: None,
        }
    }

    /// Writes every line as a structured-mode CloudEvent whose `dataschema` is under
    /// `schema_base` (`http://HOST:PORT`); call after [`StreamBody::with_history`].
    pub fn with_cloudevents(mut self, schema_base: String) -> StreamBody {
        self.cloudevents = Some(Box::new(cloudevents::Context {
            history: self.history.to_string(),
            schema_base,
        }));
        self
    }

    /// Sets the history of the archive `sub` reads (sent in heartbeats and SSE ids),
    /// and a `reset` frame to send first (see [`resolve_resume`]).
    pub fn with_history(mut self, history: Arc<str>, reset: Option<Reset>) -> StreamBody {
        self.history = history;
        self.reset = reset.map(Box::new);
        self
    }

    /// The body as a stream of byte chunks, for a response.
    pub fn into_stream(
        mut self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static
    {
        self.metrics.open_streams().inc();
        self.open = Some(OpenStream(Arc::clone(&self.metrics)));
        self
    }

    /// The next chunk, if one is ready (see the `Stream` impl).
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(reset) = self.reset.take() {
            let mut line = Vec::with_capacity(192);
            reset.encode_line(&mut line);
            self.metrics.reset_sent();
            let id = format!("{}-{}", reset.requested_since, reset.last_seq);
            return Poll::Ready(Some(self.frame("reset", line, &id)));
        }
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            if let Some(until) = self.once_until {
                if self.sub.position() >= until {
                    return Poll::Ready(None);
                }
                match self.sub.try_recv() {
                    Some(chunk) => match self.render(chunk) {
                        Some(bytes) => return Poll::Ready(Some(bytes)),
                        None => continue,
                    },
                    None => return Poll::Ready(None),
                }
            }
            if self.stop.is_stopped() {
                self.finished = true;
                return Poll::Ready(None);
            }
            match self.sub.poll_recv(cx) {
                Poll::Ready(None) => {
                    self.finished = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(chunk)) => {
                    if let Some(bytes) = self.render(chunk) {
                        self.rewind_heartbeat();
                        return Poll::Ready(Some(bytes));
                    }
                    continue;
                }
                Poll::Pending => {}
            }
            // Registered with the ring by `poll_recv`: a shutdown from now on
            // wakes this task, and one before it is seen here.
            if self.stop.is_stopped() {
                self.finished = true;
                return Poll::Ready(None);
            }
            let Some(every) = self.heartbeat else {
                return Poll::Pending;
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.rewind_heartbeat();
            return Poll::Ready(Some(self.render_heartbeat()));
        }
    }

    /// A heartbeat is due `heartbeat` after the last chunk.
    fn rewind_heartbeat(&mut self) {
        if let (Some(timer), Some(every)) = (self.timer.as_mut(), self.heartbeat) {
            timer.as_mut().reset(tokio::time::Instant::now() + every);
        }
    }

    fn render(&mut self, chunk: Chunk) -> Option<Bytes> {
        match chunk {
            Chunk::Gap(gap) => {
                self.metrics.gap_sent();
                Some(self.render_gap(&gap))
            }
            // Streams read committed events, which are never cut.
            Chunk::Truncated { .. } => None,
            Chunk::Events(batch) => {
                let mut counts = TypeCounts::new();
                let out = self.render_batch(&batch, &mut counts);
                self.metrics.streamed(&counts);
                (!out.is_empty()).then_some(out)
            }
        }
    }

    fn render_batch(&self, batch: &EventBatch, counts: &mut TypeCounts) -> Bytes {
        if let Some(ctx) = &self.cloudevents {
            let mut out = Vec::with_capacity(batch.bytes().len() * 2 + batch.len() * 300);
            let mut ce = Vec::with_capacity(1024);
            for e in batch.iter() {
                if self.filter.as_ref().is_some_and(|f| !f.matches(&e.meta)) {
                    continue;
                }
                counts.add(e.meta.event_type);
                let attrs = cloudevents::event_attributes(
                    ctx,
                    e.seq,
                    e.meta.event_type.as_str(),
                    cloudevents::line_ts(e.line),
                    e.meta.origin,
                );
                ce.clear();
                cloudevents::write_structured(&mut ce, &attrs, e.line);
                match self.format {
                    Format::Ndjson => out.extend_from_slice(&ce),
                    Format::Sse => {
                        out.extend_from_slice(b"id: ");
                        out.extend_from_slice(attrs.id.as_bytes());
                        out.extend_from_slice(b"\ndata: ");
                        out.extend_from_slice(strip_newline(&ce));
                        out.extend_from_slice(b"\n\n");
                    }
                }
            }
            return Bytes::from(out);
        }
        match (self.format, &self.filter) {
            (Format::Ndjson, None) => {
                for event_type in batch.event_types() {
                    counts.add(event_type);
                }
                batch.bytes()
            }
            (Format::Ndjson, Some(filter)) => {
                batch.select_each(filter, |e| counts.add(e.meta.event_type))
            }
            (Format::Sse, filter) => {
                let mut out = BytesMut::with_capacity(batch.bytes().len() + batch.len() * 24);
                for e in batch.iter() {
                    if filter.as_ref().is_some_and(|f| !f.matches(&e.meta)) {
                        continue;
                    }
                    counts.add(e.meta.event_type);
                    out.extend_from_slice(b"id: ");
                    if !self.history.is_empty() {
                        out.extend_from_slice(self.history.as_bytes());
                        out.extend_from_slice(b":");
                    }
                    out.extend_from_slice(itoa_u64(e.seq).as_bytes());
                    out.extend_from_slice(b"\ndata: ");
                    out.extend_from_slice(strip_newline(e.line));
                    out.extend_from_slice(b"\n\n");
                }
                out.freeze()
            }
        }
    }

    /// A control frame: as it is, or (CloudEvents) wrapped with an id made unique by
    /// `id_part`.
    fn frame(&self, name: &str, line: Vec<u8>, id_part: &str) -> Bytes {
        let line = match &self.cloudevents {
            Some(ctx) => {
                let attrs =
                    cloudevents::control_attributes(ctx, name, id_part, Some(Timestamp::now()));
                let mut ce = Vec::with_capacity(line.len() + 300);
                cloudevents::write_structured(&mut ce, &attrs, &line);
                ce
            }
            None => line,
        };
        match self.format {
            Format::Ndjson => Bytes::from(line),
            Format::Sse => {
                let mut out = Vec::with_capacity(line.len() + 24);
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\ndata: ");
                out.extend_from_slice(strip_newline(&line));
                out.extend_from_slice(b"\n\n");
                Bytes::from(out)
            }
        }
    }

    fn render_gap(&self, gap: &Gap) -> Bytes {
        let mut line = Vec::with_capacity(128);
        gap.encode_line(&mut line);
        let id = format!("{}-{}", gap.from_seq, gap.to_seq);
        self.frame("gap", line, &id)
    }

    fn render_heartbeat(&self) -> Bytes {
        let mut line = Vec::with_capacity(64);
        let ts = Timestamp::now();
        Heartbeat {
            seq: self.sub.position(),
            ts,
            history: (!self.history.is_empty()).then(|| self.history.to_string()),
        }
        .encode_line(&mut line);
        let id = format!("{}-{}", self.sub.position(), ts.as_micros());
        self.frame("heartbeat", line, &id)
    }
}

impl futures_util::Stream for StreamBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_chunk(cx).map(|chunk| chunk.map(Ok))
    }
}

fn strip_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

fn itoa_u64(n: u64) -> String {
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_body(router: &Router, query: &str, stop: &StreamsStop) -> StreamBody {
        let query = StreamQuery::parse(Some(query), None, None).expect("a valid query");
        StreamBody::new(
            router.subscribe(query.cursor),
            &query,
            Format::Ndjson,
            None,
            stop.clone(),
            Metrics::new(router.clone()),
        )
    }

    #[test]
    fn a_stream_body_keeps_its_rare_parts_out_of_line() {
        // Each of 100,000 streams holds one, and reads it once an event: the
        // `reset` frame and the CloudEvents context are boxed.
        let size = std::mem::size_of::<StreamBody>();
        assert!(size <= 192, "{size} bytes");
    }

    #[tokio::test]
    async fn a_waiting_stream_is_woken_by_the_stop_and_ends() {
        let router = Router::start(master_events_router::RouterConfig::default());
        let stop = StreamsStop::new(router.clone());
        let mut body = live_body(&router, "start=now&heartbeat=0", &stop);
        let (count, waker) = crate::testwake::counting();
        let mut cx = Context::from_waker(&waker);
        assert!(body.poll_chunk(&mut cx).is_pending(), "nothing to send yet");
        stop.stop();
        assert_eq!(count.get(), 1, "woken by the stop");
        assert_eq!(body.poll_chunk(&mut cx), Poll::Ready(None), "and ends");
        // A stream that starts after the stop ends at once.
        let mut late = live_body(&router, "", &stop);
        assert_eq!(late.poll_chunk(&mut cx), Poll::Ready(None));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_sends_a_heartbeat_each_interval_after_its_last_chunk() {
        use futures_util::StreamExt as _;
        let router = Router::start(master_events_router::RouterConfig::default());
        let stop = StreamsStop::new(router.clone());
        let mut body = live_body(&router, "start=now&heartbeat=5", &stop).into_stream();
        let started = tokio::time::Instant::now();
        let first = body.next().await.expect("a chunk").expect("bytes");
        assert!(first.starts_with(b"{\"type\":\"heartbeat\""), "{first:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // An event two seconds later; the next heartbeat is five seconds after it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        router
            .publish_batch(vec![master_events_events::Record::new(
                master_events_events::catalog::DeleteBucket { bucket: "b".into() },
            )])
            .await
            .expect("published");
        let event = body.next().await.expect("a chunk").expect("bytes");
        assert!(
            event.starts_with(b"{\"type\":\"deleteBucket\""),
            "{event:?}"
        );
        let sent = tokio::time::Instant::now();
        let second = body.next().await.expect("a chunk").expect("bytes");
        assert!(second.starts_with(b"{\"type\":\"heartbeat\""), "{second:?}");
        assert_eq!(sent.elapsed(), Duration::from_secs(5));
        stop.stop();
        assert!(body.next().await.is_none(), "the stop ends it");
    }

    fn q(s: &str) -> Result<StreamQuery, QueryError> {
        StreamQuery::parse(Some(s), None, Some(Duration::from_secs(30)))
    }

    #[test]
    fn default_query_replays_the_archive_then_follows() {
        let sq = q("").expect("ok");
        assert_eq!(sq.cursor, Cursor::Oldest);
        assert!(!sq.once && sq.filter.is_none());
        assert_eq!(sq.heartbeat, Some(Duration::from_secs(30)));
    }

    #[test]
    fn since_start_and_last_event_id_set_the_cursor() {
        assert_eq!(
            q("since=42").map(|s| s.cursor).ok(),
            Some(Cursor::After(42))
        );
        assert_eq!(q("start=now").map(|s| s.cursor).ok(), Some(Cursor::Now));
        let sse = StreamQuery::parse(None, Some("17"), None).expect("ok");
        assert_eq!(sse.cursor, Cursor::After(17));
        let both = StreamQuery::parse(Some("since=3"), Some("17"), None).expect("ok");
        assert_eq!(
            both.cursor,
            Cursor::After(17),
            "a reconnecting EventSource resumes"
        );
        let live = StreamQuery::parse(Some("start=now"), Some("17"), None).expect("ok");
        assert_eq!(live.cursor, Cursor::After(17), "even from a start=now URL");
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = q("since=abc")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("since"), "{e}");
        let e = q("vbucket=70000")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("70000"), "{e}");
        assert!(e.starts_with("query parameter vbucket: "), "{e}");
        let e = q("type=nope")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("nope"), "{e}");
        assert!(e.starts_with("query parameter type: "), "{e}");
        assert!(matches!(q("frobnicate=1"), Err(QueryError::Unknown(_))));
        assert!(matches!(
            q("start=now&since=1"),
            Err(QueryError::Conflict(_))
        ));
        assert!(matches!(q("heartbeat=-1"), Err(QueryError::Invalid { .. })));
    }

    #[test]
    fn heartbeat_zero_turns_heartbeats_off() {
        assert_eq!(q("heartbeat=0").ok().and_then(|s| s.heartbeat), None);
        assert_eq!(
            q("heartbeat=0.5").ok().and_then(|s| s.heartbeat),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn percent_encoded_values_are_decoded() {
        assert_eq!(
            parse_pairs(Some("node=n_0%4010.0.0.1&bucket=a+b")),
            vec![
                ("node".to_owned(), "n_0@10.0.0.1".to_owned()),
                ("bucket".to_owned(), "a b".to_owned())
            ]
        );
        assert_eq!(
            parse_pairs(Some("x=%zz%")),
            vec![("x".to_owned(), "%zz%".to_owned())]
        );
    }
}
