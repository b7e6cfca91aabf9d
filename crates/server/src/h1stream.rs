//! Event streams over HTTP/1.1, served without hyper's per-connection buffers.
//!
//! Owns: [`serve`], which every accepted connection (after TLS) runs: it reads the
//! connection's first request head, answers a stream request here, hands an
//! HTTP/2 connection (its preface) to [`crate::h2serve`], and any other
//! connection to hyper, with the bytes already read.
//!
//! Why: an idle stream is an open connection waiting for events, and a server may
//! hold many thousands. hyper keeps two 8 KiB buffers for each HTTP/1 connection
//! (the read buffer and the buffer response heads are written into) for as long as
//! it is open, one page of each written: 8 of the ~10 KiB an idle stream cost
//! (docs/benchmarks-history.md). Here the head is read into a buffer dropped once it is
//! parsed, the response head is written from one dropped once it is sent, and the
//! stream's frames are written straight from the stream's own bytes.
//!
//! Promises:
//! - Only a first request `GET /diag/masterEvents[?query]` over HTTP/1.1, in
//!   origin form, with no body (no `transfer-encoding`, no `content-length` but
//!   0), no `expect`, no `upgrade`, whose head is complete within [`MAX_HEAD`]
//!   bytes and is all the client sent so far, is served here. Every other
//!   connection (other requests, HTTP/1.0, a head hyper would refuse) goes to
//!   hyper as before, byte for byte: what was read is replayed to it first; one
//!   that starts with the HTTP/2 preface goes to [`crate::h2serve`] the same way.
//! - The request goes through the same [`ConnService`] as through hyper (rate
//!   limits, activity and deadlines, authentication, the app's handler), and the
//!   response is written as hyper writes it: the status line, the response's
//!   headers, `date`, chunked framing unless the response has a `content-length`;
//!   and `connection: close`: the connection closes after this one response.
//! - While the response streams, the connection is read too: the client closing
//!   it (or an error) ends the response at once, dropping the stream and its
//!   subscription; bytes a client sends meanwhile are read and dropped.
//! - A failed write, or a body that fails, ends the connection without the final
//!   chunk, so the client sees the stream cut, not ended.
//! - At shutdown ([`Conn::close`]) a connection still waiting for its first head is
//!   closed; a response in progress goes on until its body ends (streams end at
//!   shutdown), as hyper's graceful shutdown does.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body as AxumBody;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, Uri, Version};
use bytes::Bytes;
use hyper::body::Body as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::conn::ConnService;

/// The longest first request head read here; a longer one goes to hyper (which
/// refuses it).
pub const MAX_HEAD: usize = 8 * 1024;

/// The most headers a stream request may have here (more go to hyper).
const MAX_HEADERS: usize = 32;

/// What an HTTP/2 connection starts with (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The path of the stream.
const STREAM_PATH: &str = "/diag/masterEvents";

/// How a connection ended badly (logged at DEBUG by the connection's driver).
pub type ConnError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// One connection's future, and how to ask it to close.
    pub struct Conn<F> {
        #[pin]
        fut: F,
        closing: CancellationToken,
    }
}

impl<F: Future<Output = Result<(), ConnError>>> Future for Conn<F> {
    type Output = Result<(), ConnError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().fut.poll(cx)
    }
}

impl<F> Conn<F> {
    /// Graceful shutdown: see the module's promises.
    pub fn close(self: Pin<&mut Self>) {
        self.closing.cancel();
    }
}

/// Serves the connection `io` (see the module's promises).
pub fn serve<IO>(
    io: IO,
    service: ConnService,
    builder: Arc<auto::Builder<TokioExecutor>>,
) -> Conn<impl Future<Output = Result<(), ConnError>> + Send>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let closing = CancellationToken::new();
    Conn {
        fut: run(io, service, builder, closing.clone()),
        closing,
    }
}

async fn run<IO>(
    mut io: IO,
    service: ConnService,
    builder: Arc<auto::Builder<TokioExecutor>>,
    closing: CancellationToken,
) -> Result<(), ConnError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut head = Vec::new();
    let request = loop {
        match first_request(&head) {
            Head::Stream(request) => break request,
            Head::Http2 => {
                let io = Replay {
                    read: Bytes::from(head),
                    io,
                };
                // Boxed: inline, its state (`h2`'s connection among it) made
                // every connection's future larger, an idle HTTP/1.1 stream's
                // too (4.3 → 6.1 KiB).
                return Box::pin(crate::h2serve::serve(io, service, closing)).await;
            }
            Head::Other => return with_hyper(io, head, service, builder, closing).await,
            Head::Partial => {}
        }
        // The head is looked at again only once a read brings a line end (or
        // the start of the request line, or more than a head may hold), so a head
        // that trickles in a byte at a time is parsed once a line, not once a byte.
        loop {
            head.reserve(if head.is_empty() { 512 } else { head.len() });
            let before = head.len();
            let read = tokio::select! {
                read = io.read_buf(&mut head) => read?,
                () = closing.cancelled() => return Ok(()),
            };
            if read == 0 {
                // Closed before a whole head: hyper would close it silently too.
                return Ok(());
            }
            if before < 4
                || head.len() > MAX_HEAD
                || memchr::memchr(b'\n', &head[before..]).is_some()
            {
                break;
            }
        }
    };
    drop(head);
    stream(io, service, *request).await
}

/// What the bytes read so far say about the first request.
enum Head {
    /// A stream request, to serve here.
    Stream(Box<Request<AxumBody>>),
    /// The HTTP/2 preface: the connection is [`crate::h2serve`]'s.
    Http2,
    /// Anything else: hyper's.
    Other,
    /// Not enough bytes yet to tell.
    Partial,
}

fn first_request(head: &[u8]) -> Head {
    const GET: &[u8] = b"GET ";
    if head.starts_with(H2_PREFACE) {
        return Head::Http2;
    }
    if H2_PREFACE.starts_with(head) {
        return Head::Partial;
    }
    let prefix = head.len().min(GET.len());
    if head[..prefix] != GET[..prefix] || head.len() > MAX_HEAD {
        return Head::Other;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            // Hand over as soon as the request line shows another path.
            return match parsed.path {
                Some(path) if !is_stream_path(path) => Head::Other,
                _ => Head::Partial,
            };
        }
        Err(_) => return Head::Other,
    };
    let (Some(path), Some(1)) = (parsed.path, parsed.version) else {
        return Head::Other;
    };
    // Bytes after the head (a pipelined request, a body): hyper's to handle.
    if len != head.len() || !is_stream_path(path) {
        return Head::Other;
    }
    let Ok(uri) = path.parse::<Uri>() else {
        return Head::Other;
    };
    let mut request = Request::new(AxumBody::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let map = request.headers_mut();
    for h in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Head::Other;
        };
        let refused = name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || name == header::UPGRADE
            || (name == header::CONTENT_LENGTH && value.as_bytes() != b"0");
        if refused {
            return Head::Other;
        }
        map.append(name, value);
    }
    Head::Stream(Box::new(request))
}

fn is_stream_path(path: &str) -> bool {
    path.strip_prefix(STREAM_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('?'))
}

/// Hands the connection to hyper, `read` replayed first.
async fn with_hyper<IO>(
    io: IO,
    read: Vec<u8>,
    service: ConnService,
    builder: Arc<auto::Builder<TokioExecutor>>,
    closing: CancellationToken,
) -> Result<(), ConnError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = Replay {
        read: Bytes::from(read),
        io,
    };
    let mut conn = Box::pin(
        builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned(),
    );
    if !closing.is_cancelled() {
        tokio::select! {
            biased;
            result = conn.as_mut() => return result,
            () = closing.cancelled() => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// Answers a stream request and closes the connection.
async fn stream<IO>(
    mut io: IO,
    service: ConnService,
    request: Request<AxumBody>,
) -> Result<(), ConnError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let response = match service.call_axum(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    let chunked = !parts.headers.contains_key(header::CONTENT_LENGTH);
    {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(parts.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(
            parts
                .status
                .canonical_reason()
                .unwrap_or("Unknown")
                .as_bytes(),
        );
        out.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if name == header::CONNECTION || name == header::TRANSFER_ENCODING {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"connection: close\r\n");
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        io.write_all(&out).await?;
        io.flush().await?;
    }
    drop(parts);
    let mut body = std::pin::pin!(body);
    let mut scratch = [0u8; 64];
    loop {
        let next = tokio::select! {
            biased;
            frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)) => Next::Frame(frame),
            read = io.read(&mut scratch) => Next::Read(read),
        };
        match next {
            Next::Frame(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers: none are sent
                };
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    write_chunk(&mut io, &data).await?;
                } else {
                    io.write_all(&data).await?;
                }
                io.flush().await?;
            }
            Next::Frame(Some(Err(e))) => return Err(e.into()),
            Next::Frame(None) => break,
            // The client closed the connection, or it failed: the stream goes.
            Next::Read(Ok(0)) => return Ok(()),
            Next::Read(Err(e)) => return Err(e.into()),
            Next::Read(Ok(_)) => {}
        }
    }
    if chunked {
        io.write_all(b"0\r\n\r\n").await?;
    }
    io.shutdown().await?;
    Ok(())
}

/// What the response loop waited for.
enum Next<F> {
    Frame(Option<F>),
    Read(io::Result<usize>),
}

/// Writes `data` as one chunk: its size in hex, the bytes, CRLF.
async fn write_chunk<IO: AsyncWrite + Unpin>(io: &mut IO, data: &[u8]) -> io::Result<()> {
    let mut size = [0u8; 18];
    let size_len = chunk_size_line(data.len(), &mut size);
    let parts: [&[u8]; 3] = [&size[..size_len], data, b"\r\n"];
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut written = 0;
    while written < total {
        let mut skip = written;
        let mut slices = Vec::with_capacity(3);
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices.push(IoSlice::new(&part[skip..]));
            skip = 0;
        }
        let n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    Ok(())
}

/// Writes `len` in hex and CRLF into `out`; returns how many bytes.
fn chunk_size_line(len: usize, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.max(1).leading_zeros()).div_ceil(4) as usize;
    for i in 0..digits {
        out[i] = HEX[(len >> (4 * (digits - 1 - i))) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

/// An IO whose reads return `read` first.
struct Replay<IO> {
    read: Bytes,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Replay<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            let replayed = self.read.split_to(n);
            buf.put_slice(&replayed);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Replay<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(head: &[u8]) -> &'static str {
        match first_request(head) {
            Head::Stream(_) => "stream",
            Head::Http2 => "http2",
            Head::Other => "other",
            Head::Partial => "partial",
        }
    }

    #[test]
    fn only_a_complete_bodiless_http11_stream_get_is_served_here() {
        let ok = b"GET /diag/masterEvents?since=3 HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n";
        assert_eq!(kind(ok), "stream");
        let Head::Stream(req) = first_request(ok) else {
            unreachable!()
        };
        assert_eq!(req.uri().query(), Some("since=3"));
        assert_eq!(req.headers()["accept"], "text/event-stream");
        assert_eq!(
            kind(b"GET /diag/masterEvents HTTP/1.1\r\ncontent-length: 0\r\n\r\n"),
            "stream"
        );
        // Not yet known.
        assert_eq!(kind(b""), "partial");
        assert_eq!(kind(b"GE"), "partial");
        assert_eq!(kind(b"GET /diag/masterEvents HTTP/1.1\r\nhost"), "partial");
        // Everything else is hyper's, as soon as it shows.
        for other in [
            &b"POST /diag/masterEvents HTTP/1.1\r\n\r\n"[..],
            b"PRI * HTTP/1.1\r\n\r\n",
            b"GET /cluster HTTP/1.1\r\n",
            b"GET /diag/masterEventsX HTTP/1.1\r\n\r\n",
            b"GET /diag/masterEvents HTTP/1.0\r\n\r\n",
            b"GET http://h/diag/masterEvents HTTP/1.1\r\n\r\n",
            b"GET /diag/masterEvents HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello",
            b"GET /diag/masterEvents HTTP/1.1\r\ncontent-length: 5\r\n\r\n",
            b"GET /diag/masterEvents HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET /diag/masterEvents HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            b"GET /diag/masterEvents HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            b"GET /diag/masterEvents HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET /diag/masterEvents HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert_eq!(kind(other), "other", "{}", String::from_utf8_lossy(other));
        }
        let mut long = b"GET /diag/masterEvents HTTP/1.1\r\nx: ".to_vec();
        long.resize(MAX_HEAD + 1, b'a');
        assert_eq!(kind(&long), "other");
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("h{i}: v\r\n"))
            .collect();
        let many = format!("GET /diag/masterEvents HTTP/1.1\r\n{many}\r\n");
        assert_eq!(kind(many.as_bytes()), "other");
    }

    #[tokio::test]
    async fn a_connections_future_is_no_larger_for_the_http2_it_may_become() {
        let router = master_events_router::Router::start(Default::default());
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()).http1_only());
        let conn = serve(
            tokio::io::duplex(64).0,
            ConnService::for_tests(axum::Router::new(), &router),
            builder,
        );
        let h2 = std::mem::size_of_val(&crate::h2serve::serve(
            tokio::io::duplex(64).0,
            ConnService::for_tests(axum::Router::new(), &router),
            CancellationToken::new(),
        ));
        // Every connection's task holds this future, an idle HTTP/1.1 stream's
        // too: the HTTP/2 serving is boxed, not held inline (4.3 against 6.1 KiB
        // an idle stream, docs/benchmarks-history.md).
        assert!(
            std::mem::size_of_val(&conn) < h2,
            "{} bytes a connection, {h2} for HTTP/2's state",
            std::mem::size_of_val(&conn)
        );
        router.shutdown().await;
    }

    #[test]
    fn the_http2_preface_is_told_once_whole_and_waited_for_until_then() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        for cut in 0..preface.len() {
            assert_eq!(kind(&preface[..cut]), "partial", "{cut} bytes");
        }
        assert_eq!(kind(preface), "http2");
        // With the client's first SETTINGS after it.
        let mut hello = preface.to_vec();
        hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(kind(&hello), "http2");
        assert_eq!(kind(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"), "other");
    }

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        let mut out = [0u8; 18];
        for (len, line) in [
            (0, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (65_535, "ffff\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let n = chunk_size_line(len, &mut out);
            assert_eq!(std::str::from_utf8(&out[..n]), Ok(line));
        }
    }

    #[tokio::test]
    async fn a_chunk_is_written_whole_however_short_the_writes() {
        // A writer that takes at most 3 bytes a call.
        struct Trickle(Vec<u8>);
        impl AsyncWrite for Trickle {
            fn poll_write(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let n = buf.len().min(3);
                self.0.extend_from_slice(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let mut w = Trickle(Vec::new());
        write_chunk(&mut w, b"{\"type\":\"x\"}\n")
            .await
            .expect("written");
        assert_eq!(w.0, b"d\r\n{\"type\":\"x\"}\n\r\n");
    }

    #[tokio::test]
    async fn what_was_read_is_replayed_before_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.expect("write");
        drop(client);
        let mut replay = Replay {
            read: Bytes::from_static(b"hello"),
            io: server,
        };
        let mut all = String::new();
        replay.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "hello world");
    }
}
