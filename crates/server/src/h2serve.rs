//! HTTP/2 connections, served with `h2` on one task a connection.
//!
//! Owns: [`serve`], which [`crate::h1stream`] hands a connection whose first bytes
//! are the HTTP/2 preface (h2c with prior knowledge, or TLS with ALPN `h2`).
//!
//! Why: hyper serves each HTTP/2 stream with a task of its own, which hands its
//! body's chunks to `h2`. At 100,000 event streams over 500 connections, one
//! event woke 100,000 tasks, spread over the worker threads, each locking its
//! connection's `h2` state (one mutex a connection) against the others and waking
//! the connection's task in turn: 2.4-3.3 µs of server CPU a delivery, p99
//! 176-275 ms for one event to reach them all. Here the connection's task polls
//! every response body of the connection itself: an event wakes it once, it
//! hands each of its streams' chunks to `h2` in one turn, without contention,
//! and then writes them: 1.3-2.1 µs a delivery, p99 133-236 ms
//! (docs/benchmarks-history.md, "100,000 streams over HTTP/2"). Its streams wait for the
//! ring as one group that this task hosts ([`WaitGroup::hosted`]): the ring's
//! writer wakes the task once an event, and the task wakes its streams itself,
//! on its own thread; and they read a small block from one copy of the group's
//! (0.88 µs of server CPU a delivery since, p99 85-97 ms at 1 and 10 events/s).
//!
//! Promises:
//! - HTTP/2 as hyper served it before: its settings (1 MiB stream and connection
//!   windows, 16 KiB frames, 16 KiB of request headers, 400 KiB of send buffer a
//!   stream, [`crate::H2_MAX_STREAMS_PER_CONNECTION`] concurrent streams), the same
//!   service ([`ConnService::call_axum`]: rate limits, activity and deadlines,
//!   authentication, the app's routes), response heads as hyper sends them
//!   (connection-specific headers dropped, `date` added, `content-length` from a
//!   body of known size).
//! - Each request's handler runs as a task of its own, as under hyper, so a slow
//!   handler (an ingest's parse) holds up no other stream; it is aborted when its
//!   stream is reset or the connection goes. Only the response bodies are polled
//!   by the connection's task.
//! - A request body is read with its flow-control window released as it is read;
//!   its size hint is its `content-length`.
//! - Back-pressure, as over HTTP/1.1: a chunk is handed to `h2` only once `h2`
//!   has let go of the stream's previous chunk (written it out; it holds it while
//!   the peer's window is closed or the socket takes nothing: [`Handed`]), and the
//!   body is not polled again until then, so a stream holds at most two chunks
//!   (one in `h2`, one here; a chunk of an event stream is at
//!   most a block of the archive, shared with it), whether its client reads
//!   slowly or not at all; an event stream left behind reads what it missed in
//!   larger chunks, or is told by its `gap` frame. (hyper let `h2` queue up to
//!   400 KiB a stream: at 100,000 streams behind a producer of 1,000 events/s,
//!   one frame of about 200 bytes an event each, that queue took 5 KB a stream,
//!   and could take ~400 MB a connection.) What `h2` writes is held in
//!   one buffer of at most 64 KiB a connection and written out at the end of the
//!   connection's turn (`crate::coalesce`): the frames of one event for all the
//!   connection's streams go out in as few writes as the socket takes.
//! - A stream reset by the client drops its handler or body at once (and so the
//!   stream's subscription); a body that fails resets its stream
//!   (`INTERNAL_ERROR`); a connection that fails or closes drops them all.
//! - A response that panics (its body, or its handler's task) resets its own
//!   stream and is logged at ERROR; the connection's other streams go on, as
//!   they did with a task each.
//! - Graceful shutdown ([`crate::h1stream::Conn::close`]): `GOAWAY`, then the
//!   streams in progress go on until they end (event streams end at shutdown).

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};

use axum::body::Body as AxumBody;
use axum::http::{header, HeaderMap, HeaderValue, Request, Response};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use futures_util::task::AtomicWaker;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use hyper::body::{Body, Frame, SizeHint};
use master_events_router::WaitGroup;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::coalesce::coalesce;
use crate::conn::{ConnService, TrackedBody};
use crate::h1stream::ConnError;
use crate::metrics::Metrics;

/// The stream and connection flow-control windows the server offers (hyper's).
const WINDOW: u32 = 1024 * 1024;
/// The largest frame the server accepts (hyper's, the protocol's least).
const MAX_FRAME: u32 = 16 * 1024;
/// The most bytes of request headers (hyper's).
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// The most bytes `h2` buffers for a stream (hyper's). Not what bounds a stream:
/// [`pipe`] hands `h2` one chunk at a time (hyper's 400 KiB, with a chunk handed
/// whenever `h2` had room, let each stream queue thousands of small frames).
const MAX_SEND_BUFFER: usize = 400 * 1024;
/// The most streams a connection may have reset locally for errors (hyper's).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// A connection's responses in progress, each polled by the connection's task.
type Responses = FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// Serves the HTTP/2 connection `io` until it ends (see the module's promises);
/// `closing` asks for a graceful shutdown.
pub async fn serve<IO>(
    io: IO,
    service: ConnService,
    closing: CancellationToken,
) -> Result<(), ConnError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_concurrent_streams(crate::H2_MAX_STREAMS_PER_CONNECTION);
    // `h2`'s writes are held and written out once a turn, below (`coalesce.rs`).
    let (io, flusher) = coalesce(io);
    let mut conn = tokio::select! {
        biased;
        () = closing.cancelled() => return Ok(()),
        conn = builder.handshake::<_, Handed>(io) => conn?,
    };
    let mut responses = Responses::new();
    let mut closed = pin!(closing.cancelled());
    let mut shutting_down = false;
    let nudge = Arc::new(Nudge::default());
    let nudge_waker = Waker::from(Arc::clone(&nudge));
    let metrics = Arc::clone(service.metrics());
    // One entry in the ring's wake-up list for all of the connection's streams
    // (`Subscription::join`), hosted by this task: the ring's writer wakes it
    // once, and it wakes its streams itself (`WaitGroup::host_poll`).
    let group = WaitGroup::hosted();
    poll_fn(|cx| {
        if !shutting_down && closed.as_mut().poll(cx).is_ready() {
            conn.graceful_shutdown();
            shutting_down = true;
        }
        // The streams the group wakes now wake the nudge, whose waker is let go
        // of first: this task is running, and would otherwise be polled again
        // for nothing (`poll_responses` below polls them in this turn).
        drop(nudge.task.take());
        group.host_poll(cx);
        nudge.task.register(cx.waker());
        loop {
            // The bodies first, so that the chunks they hand to `h2` are written
            // by the connection's poll below, in this same turn.
            poll_responses(&mut responses, &nudge, &nudge_waker, &metrics);
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((mut req, respond)))) => {
                    // The connection's streams wait for the ring together.
                    req.extensions_mut().insert(group.clone());
                    responses.push(Box::pin(respond_to(req, respond, service.clone())));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(ConnError::from(e))),
                // Closed (after a GOAWAY and its last stream, or by the peer).
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    // What the bodies and `h2` wrote this turn goes out now, in
                    // as few writes as the socket takes; if it takes no more,
                    // its readiness wakes this task.
                    return match flusher.poll_flush(cx) {
                        Poll::Ready(Err(e)) => Poll::Ready(Err(ConnError::from(e))),
                        _ => Poll::Pending,
                    };
                }
            }
        }
    })
    .await
}

/// The waker the connection's responses are polled with: it wakes the
/// connection's task, and notes that it did.
#[derive(Default)]
struct Nudge {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Nudge {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Polls the connection's responses until none is ready, so that the chunks of
/// one event for all of them are written together. `FuturesUnordered` hands back
/// after two of its futures woke themselves while polled (which a response does
/// when `h2` gives it the window it asked for), so it is polled again while
/// anything woke it, up to one round a response (each round polls at least one).
fn poll_responses(responses: &mut Responses, nudge: &Nudge, waker: &Waker, metrics: &Metrics) {
    let mut cx = Context::from_waker(waker);
    let mut rounds = responses.len() + 1;
    loop {
        nudge.woken.store(false, Ordering::Release);
        // A response that panics is dropped by `FuturesUnordered` as the panic
        // passes (its stream is reset); the others stay. Caught here, once a
        // round: caught around each response instead, it cost 9% of the
        // server's CPU at 100,000 streams.
        let polled =
            std::panic::catch_unwind(AssertUnwindSafe(|| responses.poll_next_unpin(&mut cx)));
        let Ok(polled) = polled else {
            metrics.response_panicked();
            tracing::error!(
                "an HTTP/2 response panicked: its stream was reset, the connection's \
                 other streams go on"
            );
            continue;
        };
        match polled {
            Poll::Ready(Some(())) => {}
            Poll::Ready(None) => return,
            Poll::Pending => {
                rounds -= 1;
                if rounds == 0 || !nudge.woken.load(Ordering::Acquire) {
                    return;
                }
            }
        }
    }
}

/// Answers one request: its handler on a task of its own, then its head, then its
/// body, chunk by chunk as the stream may send.
///
/// Each step is a function of its own, so that what it needs (the request's head,
/// the handler's task, the response's head) is freed before the body, which may
/// be a stream that lasts for hours, is sent. The first step is boxed before the
/// future is made: the arguments of an `async fn` stay in its future for its whole
/// life, which made it 552 bytes, where this one is `RESPONSE_FUTURE_BYTES` or
/// less (a test pins it).
fn respond_to(
    req: Request<RecvStream>,
    respond: SendResponse<Handed>,
    service: ConnService,
) -> impl Future<Output = ()> + Send {
    let answered = Box::pin(answer(req, respond, service));
    async move {
        let sent = match answered.await {
            Some((respond, response)) => send_head(respond, response),
            None => None,
        };
        if let Some((send, body)) = sent {
            pipe(body, send).await;
        }
    }
}

/// The most bytes the future of a response in progress may take (each stream of
/// each connection holds one for as long as it is open).
#[cfg(test)]
const RESPONSE_FUTURE_BYTES: usize = 256;

/// Runs the handler of `req` on a task of its own until it answers, or until the
/// stream is reset or the connection goes (which aborts it).
async fn answer(
    req: Request<RecvStream>,
    mut respond: SendResponse<Handed>,
    service: ConnService,
) -> Option<(SendResponse<Handed>, Response<TrackedBody>)> {
    let (parts, recv) = req.into_parts();
    let body = RequestBody::new(recv, &parts.headers);
    let req = Request::from_parts(parts, AxumBody::new(body));
    let mut handler = AbortOnDropHandle::new(tokio::spawn(service.call_axum(req)));
    let metrics = Arc::clone(service.metrics());
    drop(service);
    let answered = poll_fn(|cx| {
        if let Poll::Ready(done) = Pin::new(&mut handler).poll(cx) {
            return Poll::Ready(Some(done));
        }
        match respond.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    match answered? {
        Ok(Ok(response)) => Some((respond, response)),
        Ok(Err(never)) => match never {},
        Err(e) => {
            if e.is_panic() {
                metrics.response_panicked();
            }
            tracing::error!(error = %e, "an HTTP/2 request's handler failed: stream reset");
            respond.send_reset(Reason::INTERNAL_ERROR);
            None
        }
    }
}

/// Sends the head of `response`, as hyper does; the stream to send its body on,
/// unless it has none.
fn send_head(
    mut respond: SendResponse<Handed>,
    response: Response<TrackedBody>,
) -> Option<(SendStream<Handed>, TrackedBody)> {
    let (mut head, body) = response.into_parts();
    strip_connection_headers(&mut head.headers);
    if !head.headers.contains_key(header::DATE) {
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        if let Ok(date) = HeaderValue::from_str(&now) {
            head.headers.insert(header::DATE, date);
        }
    }
    let end = body.is_end_stream();
    if !end {
        if let Some(len) = body.size_hint().exact() {
            head.headers
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(len));
        }
    }
    match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(send) => (!end).then_some((send, body)),
        Err(e) => {
            tracing::debug!(error = %e, "an HTTP/2 response head was not sent");
            respond.send_reset(Reason::INTERNAL_ERROR);
            None
        }
    }
}

/// Headers HTTP/2 forbids in a response (RFC 9113, 8.2.2), dropped as hyper drops
/// them, with the headers `connection` names.
fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in [
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
    ] {
        headers.remove(name);
    }
    if let Some(named) = headers.remove(header::CONNECTION) {
        if let Ok(named) = named.to_str() {
            for name in named.split(',') {
                headers.remove(name.trim());
            }
        }
    }
}

/// A chunk handed to `h2`: it tells its stream when `h2` lets go of it (once it is
/// written into the connection's buffer, or dropped with the stream).
pub(crate) struct Handed {
    bytes: Bytes,
    slot: Option<Arc<HandedSlot>>,
}

/// What a stream and the chunk it handed to `h2` share.
#[derive(Default)]
struct HandedSlot {
    /// [`FREE`], [`OUT`] or [`WAITING`].
    state: AtomicU8,
    /// The stream's task, while it waits for `h2` to let go of the chunk.
    waker: AtomicWaker,
}

/// [`HandedSlot::state`]: `h2` holds no chunk of the stream.
const FREE: u8 = 0;
/// [`HandedSlot::state`]: `h2` holds the stream's chunk, and no one waits for it.
const OUT: u8 = 1;
/// [`HandedSlot::state`]: `h2` holds the stream's chunk, and the stream, which
/// holds the next one, waits for it to be let go of: its task is registered.
/// Only then is a wake-up due (one atomic operation when `h2` lets go of a chunk
/// no one waits for, the common case, once a delivery).
const WAITING: u8 = 2;

impl Handed {
    /// `bytes`, handed out for the stream of `slot` (marked held by `h2`).
    fn new(bytes: Bytes, slot: &Arc<HandedSlot>) -> Handed {
        slot.state.store(OUT, Ordering::Release);
        Handed {
            bytes,
            slot: Some(Arc::clone(slot)),
        }
    }

    /// `bytes` that no one waits for (an empty end of stream).
    fn untracked(bytes: Bytes) -> Handed {
        Handed { bytes, slot: None }
    }
}

impl Drop for Handed {
    fn drop(&mut self) {
        if let Some(slot) = &self.slot {
            // Wakes the stream only if it waits (it holds the next chunk).
            if slot.state.swap(FREE, Ordering::AcqRel) == WAITING {
                slot.waker.wake();
            }
        }
    }
}

impl bytes::Buf for Handed {
    fn remaining(&self) -> usize {
        self.bytes.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.bytes.chunk()
    }

    fn advance(&mut self, n: usize) {
        self.bytes.advance(n);
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        self.bytes.copy_to_bytes(len)
    }
}

/// Sends `body` on `send` until the body ends, fails, or the stream is reset: a
/// chunk is handed to `h2` only once `h2` has let go of the previous one (written
/// it into the connection's buffer: `h2` holds it while the peer's window is
/// closed or the socket takes nothing), so a stream holds at most one chunk in
/// `h2` and one here. Waiting needs no wake-up from `h2` when nothing waits: a
/// stream that has sent its chunk and has no next one is not polled again when
/// `h2` writes it (with `h2`'s own capacity as the signal, it was, once an event).
async fn pipe(body: TrackedBody, mut send: SendStream<Handed>) {
    let mut body = pin!(body);
    let mut held: Option<(Bytes, bool)> = None;
    let handed = Arc::new(HandedSlot::default());
    let ended = poll_fn(|cx| -> Poll<Result<(), h2::Error>> {
        loop {
            if let Some((data, end)) = held.take() {
                if handed.state.load(Ordering::Acquire) != FREE {
                    // Registered before it says it waits, so that the chunk's
                    // drop that sees it waiting finds its task.
                    handed.waker.register(cx.waker());
                    let waits = handed.state.compare_exchange(
                        OUT,
                        WAITING,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    if matches!(waits, Ok(_) | Err(WAITING)) {
                        held = Some((data, end));
                        // Waiting for `h2`.
                        return ended_by_reset(&mut send, cx);
                    }
                }
                send.send_data(Handed::new(data, &handed), end)?;
                if end {
                    return Poll::Ready(Ok(()));
                }
            }
            let frame = match body.as_mut().poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // Waiting for the body (dropped if the stream ends).
                    return ended_by_reset(&mut send, cx);
                }
            };
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => held = Some((data, body.is_end_stream())),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            send.send_trailers(trailers)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Some(Err(e)) => {
                    // The server's failure, not the client's: said at WARN.
                    tracing::warn!(error = %e, "an HTTP/2 response body failed: stream reset");
                    send.send_reset(Reason::INTERNAL_ERROR);
                    return Poll::Ready(Ok(()));
                }
                None => {
                    send.send_data(Handed::untracked(Bytes::new()), true)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    })
    .await;
    if let Err(e) = ended {
        tracing::debug!(error = %e, "an HTTP/2 response ended early");
    }
}

/// While a stream waits: pending until it is reset (or the connection goes),
/// which ends it with that error.
fn ended_by_reset(
    send: &mut SendStream<Handed>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), h2::Error>> {
    Poll::Ready(Err(match ready!(send.poll_reset(cx)) {
        Ok(reason) => reason.into(),
        Err(e) => e,
    }))
}

/// A request's body as `h2` receives it, its window released as it is read.
struct RequestBody {
    recv: RecvStream,
    len: Option<u64>,
    data_done: bool,
    done: bool,
}

impl RequestBody {
    fn new(recv: RecvStream, headers: &HeaderMap) -> RequestBody {
        // `h2` refuses a stream whose body and `content-length` disagree.
        let len = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| recv.is_end_stream().then_some(0));
        RequestBody {
            recv,
            len,
            data_done: false,
            done: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Fails only once the stream is gone, which the next read says.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(this.recv.poll_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(len) => SizeHint::with_exact(len),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_that_panics_resets_its_stream_and_the_connection_serves_on() {
        use axum::routing::get;
        let router = master_events_router::Router::start(Default::default());
        let app = axum::Router::new()
            .route(
                "/panics",
                get(|| async {
                    AxumBody::from_stream(futures_util::stream::poll_fn(
                        |_| -> Poll<Option<Result<Bytes, std::convert::Infallible>>> {
                            panic!("a body that panics")
                        },
                    ))
                }),
            )
            .route("/fine", get(|| async { "fine" }));
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let closing = CancellationToken::new();
        let service = ConnService::for_tests(app, &router);
        let metrics = Arc::clone(service.metrics());
        let server = tokio::spawn(serve(server_io, service, closing.clone()));
        let (client, conn) = h2::client::handshake(client_io).await.expect("handshake");
        let conn = tokio::spawn(conn);
        let mut client = client.ready().await.expect("ready");
        let get = |path: &str| {
            Request::get(format!("http://x{path}"))
                .body(())
                .expect("request")
        };
        let (response, _) = client.send_request(get("/panics"), true).expect("sent");
        let mut body = response.await.expect("a head").into_body();
        let cut = body.data().await;
        assert!(
            matches!(cut, Some(Err(_))),
            "the stream is reset, not ended: {cut:?}"
        );
        let text = metrics.render();
        assert!(
            text.contains("master_events_response_panics_total 1\n"),
            "the panic is counted: {text}"
        );
        let mut client = client.ready().await.expect("ready again");
        let (response, _) = client.send_request(get("/fine"), true).expect("sent");
        let response = response.await.expect("answered");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let data = body.data().await.expect("data").expect("no error");
        assert_eq!(&data[..], b"fine");
        assert!(!server.is_finished(), "the connection goes on");
        closing.cancel();
        drop(client);
        conn.abort();
        router.shutdown().await;
    }

    #[tokio::test]
    async fn a_response_in_progress_takes_at_most_its_bytes_a_stream() {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let router = master_events_router::Router::start(Default::default());
        let service = ConnService::for_tests(axum::Router::new(), &router);
        let client = tokio::spawn(async move {
            let (mut client, conn) = h2::client::handshake(client_io).await?;
            let conn = tokio::spawn(conn);
            let request = Request::get("http://x/nowhere").body(()).expect("request");
            let (response, _) = client.send_request(request, true)?;
            let status = response.await?.status();
            conn.abort();
            Ok::<_, h2::Error>(status)
        });
        let mut conn = h2::server::Builder::new()
            .handshake::<_, Handed>(server_io)
            .await
            .expect("handshake");
        let (req, respond) = conn.accept().await.expect("a request").expect("a good one");
        let response = respond_to(req, respond, service);
        assert!(
            std::mem::size_of_val(&response) <= RESPONSE_FUTURE_BYTES,
            "{} bytes",
            std::mem::size_of_val(&response)
        );
        // And it answers (the empty app: 404), the connection driven meanwhile.
        let driven = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| conn.poll_closed(cx)).await;
        });
        response.await;
        let status = client.await.expect("the client ran").expect("answered");
        assert_eq!(status, 404);
        driven.abort();
        router.shutdown().await;
    }

    #[tokio::test]
    async fn a_stream_whose_client_stops_reading_hands_h2_one_chunk_at_a_time() {
        use axum::routing::get;
        use std::sync::atomic::AtomicUsize;
        let router = master_events_router::Router::start(Default::default());
        let polled = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&polled);
        let app = axum::Router::new().route(
            "/endless",
            get(move || {
                let count = Arc::clone(&count);
                async move {
                    // Endless, but it hands back every 64th poll (waking itself
                    // at once), as a real body does: without that, a server that
                    // took every chunk at once would never return from its poll,
                    // and the test would hang instead of failing.
                    let mut polls = 0u32;
                    AxumBody::from_stream(futures_util::stream::poll_fn(move |cx| {
                        polls = polls.wrapping_add(1);
                        if polls % 64 == 0 {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                        let chunk = Bytes::from_static(&[b'x'; 100]);
                        Poll::Ready(Some(Ok::<_, std::convert::Infallible>(chunk)))
                    }))
                }
            }),
        );
        // A transport of 4 KiB, and windows wide open: only the server's own
        // back-pressure bounds what it takes of the body.
        let (client_io, server_io) = tokio::io::duplex(4 * 1024);
        let closing = CancellationToken::new();
        let service = ConnService::for_tests(app, &router);
        let server = tokio::spawn(serve(server_io, service, closing.clone()));
        let (client, mut conn) = h2::client::Builder::new()
            .initial_window_size(8 << 20)
            .initial_connection_window_size(8 << 20)
            .handshake::<_, Bytes>(client_io)
            .await
            .expect("handshake");
        let mut client = tokio::select! {
            ready = client.ready() => ready.expect("ready"),
            _ = &mut conn => panic!("the connection ended"),
        };
        let request = Request::get("http://x/endless").body(()).expect("request");
        let (response, _) = client.send_request(request, true).expect("sent");
        let response = tokio::select! {
            response = response => response.expect("a head"),
            _ = &mut conn => panic!("the connection ended"),
        };
        assert_eq!(response.status(), 200);
        // From here the client reads nothing (its connection is not polled). The
        // server takes what its write buffers hold (the transport's 4 KiB, 64 KiB
        // held by `coalesce`, 16 KiB of `h2`'s), about 850 chunks, and then one
        // chunk at a time as each is written out, which none is. With `h2`
        // queueing up to 400 KiB a stream (hyper's setting), it took 4,900.
        let taken_past = |bound: usize| {
            let polled = Arc::clone(&polled);
            async move {
                while polled.load(Ordering::Relaxed) <= bound {
                    tokio::task::yield_now().await;
                }
            }
        };
        let second = std::time::Duration::from_secs(1);
        tokio::time::timeout(20 * second, taken_past(500))
            .await
            .expect("the write buffers fill first");
        let took_more = tokio::time::timeout(second, taken_past(3_000)).await;
        let n = polled.load(Ordering::Relaxed);
        assert!(took_more.is_err(), "{n} chunks taken");
        assert!(!server.is_finished());
        closing.cancel();
        drop((client, conn, response));
        router.shutdown().await;
    }

    #[test]
    fn connection_specific_headers_and_the_ones_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_connection_headers(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"]);
    }
}
