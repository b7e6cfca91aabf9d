//! The watchers scenario: very many streams open on one server at once, a slow
//! producer, and whether every stream gets every event, how late, and at what memory.
//!
//! Owns: opening `n` streams of a system from several loopback source addresses
//! (one address has only about 28,000 ephemeral ports towards one server), raising
//! the harness's open-file limit for them (the server it starts inherits it),
//! reading each stream with a small decoder of its own protocol (a full client per
//! stream would cost the harness more memory than the server), and
//! [`WatchersRow`]. A stream is, for this project, `GET
//! /diag/masterEvents?start=now&heartbeat=0` (a chunked body of NDJSON lines); for
//! Redis, a connection looping on `XREAD BLOCK 0 STREAMS bench <last id>`; for
//! NATS, a connection with one `SUB` on the producer's subject.
//!
//! With `per_connection` above 1, streams share connections: this project's are
//! HTTP/2 streams (h2c, `per_connection` of them on each connection, up to the
//! server's 200 a connection), NATS's are `per_connection` `SUB`s on each
//! connection (each message comes once per subscription), and Redis is not run
//! (a connection carries one blocked `XREAD`). That is how a process limited to
//! 20,000 descriptors holds 100,000 streams.
//!
//! Promises:
//! - Every stream is checked: the events it got must be the producer's, from its
//!   first to its last, each once, in order; a stream that got fewer, a hole, a
//!   `gap` frame or an error is counted and reported, never dropped from the
//!   figures.
//! - Latency is produce → receipt of the stamped events (about one in five) over
//!   all streams; every wait is bounded by the row's deadline.
//! - Every system's streams are opened, registered (this project's `/cluster`
//!   count, Redis's `blocked_clients`, a NATS `PING` answered after the `SUB`) and
//!   read the same way, on the same harness.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use memchr::memmem;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::h2raw;
use crate::proc;
use crate::scenarios::{spawn_producer, Pace};
use crate::systems::{self, redis, resp, Kind, Server, Setup};
use crate::tally::new_histogram;
use crate::workload;

/// Streams opened from one source address (of the ~28,000 ephemeral ports one
/// address has towards one server port).
pub const STREAMS_PER_SOURCE: usize = 10_000;
/// Streams being opened at once.
const OPEN_CONCURRENCY: usize = 256;
/// A stream's read buffer.
const READ_BUF: usize = 2048;
/// An HTTP/2 connection's read buffer (its streams' events come together).
const H2_READ_BUF: usize = 64 * 1024;
/// How long after the producer's last event the streams may take to get it.
const DRAIN_MAX: Duration = Duration::from_secs(30);

/// One watchers row.
#[derive(Debug, Clone, Serialize)]
pub struct WatchersRow {
    /// The system.
    pub system: Kind,
    /// Streams asked for.
    pub streams: usize,
    /// Streams open once opening was over.
    pub opened: usize,
    /// Connections they shared (as many as streams over HTTP/1.1).
    pub connections: usize,
    /// Streams on each connection (1: one connection a stream).
    pub per_connection: usize,
    /// Source addresses they came from.
    pub sources: usize,
    /// Seconds it took to open them.
    pub open_secs: f64,
    /// Offered events/s.
    pub rate_eps: f64,
    /// Events produced.
    pub produced: u64,
    /// Streams that got every event, in order, each once.
    pub complete: usize,
    /// Streams that did not (fewer events, a hole, a gap frame, or an error).
    pub incomplete: usize,
    /// Events delivered, summed over streams.
    pub delivered: u64,
    /// Events the streams should have got and did not, summed.
    pub missing: u64,
    /// The first error a stream met, if any.
    pub first_error: Option<String>,
    /// Stamped events received.
    pub samples: u64,
    /// Produce → receipt, microseconds.
    pub p50_us: f64,
    /// Produce → receipt, microseconds.
    pub p99_us: f64,
    /// Produce → receipt, microseconds.
    pub max_us: f64,
    /// Server RSS before the streams were opened.
    pub rss_before: u64,
    /// Server RSS with every stream open and idle.
    pub rss_idle: u64,
    /// Server RSS after the events were delivered.
    pub rss_after: u64,
    /// `(rss_idle - rss_before) / opened`.
    pub bytes_per_stream: f64,
    /// Server CPU seconds while the producer ran and the streams drained.
    pub server_cpu_secs: f64,
    /// Harness CPU seconds in the same time.
    pub harness_cpu_secs: f64,
}

/// The source address of connection `i`: 127.0.0.2, 127.0.0.3, ... a new one every
/// [`STREAMS_PER_SOURCE`].
fn source_of(i: usize) -> Ipv4Addr {
    let k = (i / STREAMS_PER_SOURCE) as u32 + 2;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + k)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT`: the port of a socket bound to a source address
/// is then chosen at `connect`, unique for its four-tuple only. Without it every
/// bound socket takes an ephemeral port for good, and with tens of thousands of
/// streams open (or just closed) the harness's other connections find none left
/// ("Cannot assign requested address").
fn no_port_at_bind(socket: &TcpSocket) -> Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        bail!(
            "IP_BIND_ADDRESS_NO_PORT: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// One connection's streams, opened and waiting for events.
enum Opened {
    /// One stream on its own connection (this project's HTTP/1.1 stream, a Redis
    /// `XREAD` loop, a NATS connection with one `SUB`).
    Alone(TcpStream),
    /// HTTP/2 streams of this project sharing a connection (stream ids 1, 3, 5,
    /// ...), each answered `200`, and the bytes read past the answers.
    H2(TcpStream, Vec<u8>, usize),
    /// A NATS connection with this many `SUB`s (sids 1, 2, ...).
    NatsSubs(TcpStream, usize),
}

impl Opened {
    /// How many streams it holds.
    fn streams(&self) -> usize {
        match self {
            Opened::Alone(_) => 1,
            Opened::H2(_, _, streams) => *streams,
            Opened::NatsSubs(_, subs) => *subs,
        }
    }
}

/// Opens one connection of `kind` from `from` with `streams` streams on it:
/// each subscribed, or at least asked to be, when it returns (see
/// [`Server::check_idle`]).
async fn open_connection(
    kind: Kind,
    addr: SocketAddr,
    from: Ipv4Addr,
    streams: usize,
    shared: bool,
) -> Result<Opened> {
    let socket = TcpSocket::new_v4().context("socket")?;
    no_port_at_bind(&socket)?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(from), 0))
        .with_context(|| format!("bind {from}"))?;
    let mut s = tokio::time::timeout(Duration::from_secs(30), socket.connect(addr))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connect from {from}"))?;
    match (kind, shared) {
        (Kind::MasterEvents, false) => Ok(Opened::Alone(
            crate::systems::master_events::start_stream(s, addr).await?,
        )),
        (Kind::MasterEvents, true) => open_h2_streams(s, addr, streams).await,
        (Kind::Redis, false) => {
            s.write_all(&xread(b"$")).await.context("writing XREAD")?;
            Ok(Opened::Alone(s))
        }
        (Kind::Redis, true) => {
            bail!("a Redis connection carries one blocked XREAD: streams cannot share connections")
        }
        (Kind::Nats, _) => {
            nats_subscribe(&mut s, streams).await?;
            Ok(if shared {
                Opened::NatsSubs(s, streams)
            } else {
                Opened::Alone(s)
            })
        }
    }
}

/// The stream each HTTP/2 stream asks for.
const H2_PATH: &str = "/diag/masterEvents?start=now&heartbeat=0";

/// Which of a connection's `streams` the HTTP/2 stream id `id` is (ids 1, 3, 5,
/// ... in the order asked).
fn h2_index(id: u32, streams: usize) -> Result<usize> {
    let k = (id as usize).wrapping_sub(1) / 2;
    if id % 2 == 1 && k < streams {
        Ok(k)
    } else {
        bail!("a frame for stream {id}, which was not asked for")
    }
}

/// Opens `streams` HTTP/2 streams of events from now on over the fresh
/// connection `s` (h2c, prior knowledge): asked all at once, and each answered
/// `200` when it returns.
async fn open_h2_streams(mut s: TcpStream, addr: SocketAddr, streams: usize) -> Result<Opened> {
    let mut out = Vec::new();
    h2raw::client_preface(&mut out);
    let authority = addr.to_string();
    for k in 0..streams {
        h2raw::get(&mut out, 1 + 2 * k as u32, &authority, H2_PATH);
    }
    s.write_all(&out)
        .await
        .context("writing the HTTP/2 requests")?;
    let mut answered = vec![false; streams];
    let mut left = streams;
    let mut pending = Vec::new();
    let mut reply = Vec::new();
    let mut buf = vec![0u8; H2_READ_BUF];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while left > 0 {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .with_context(|| format!("{left} of {streams} HTTP/2 streams not answered in 30 s"))?
            .context("reading the HTTP/2 answers")?;
        if n == 0 {
            bail!("the server closed the connection before answering every stream");
        }
        pending.extend_from_slice(&buf[..n]);
        let taken = h2raw::take_frames(&pending, |frame| {
            match frame {
                h2raw::Frame::Headers { stream, block, .. } => {
                    let k = h2_index(stream, streams)?;
                    if !h2raw::is_status_200(block) {
                        bail!(
                            "stream refused (its answer is not 200; header block {:02x?})",
                            &block[..block.len().min(16)]
                        );
                    }
                    if !std::mem::replace(&mut answered[k], true) {
                        left -= 1;
                    }
                }
                h2raw::Frame::Data { stream, .. } => {
                    bail!("events on stream {stream} before every stream was answered")
                }
                frame => h2_control(frame, &mut reply)?,
            }
            Ok(())
        })?;
        pending.drain(..taken);
        flush_reply(&mut s, &mut reply).await?;
    }
    Ok(Opened::H2(s, pending, streams))
}

/// Reads what the server sent within half a second (`None`: nothing came, and
/// the caller looks at the row again); the server closing the connection is an
/// error.
async fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> Result<Option<usize>> {
    match tokio::time::timeout(Duration::from_millis(500), s.read(buf)).await {
        Err(_) => Ok(None),
        Ok(Ok(0)) => bail!("the server closed the connection"),
        Ok(Ok(n)) => Ok(Some(n)),
        Ok(Err(e)) => bail!("read: {e}"),
    }
}

/// Writes what the protocol asked of the client since the last time, if anything.
async fn flush_reply(s: &mut TcpStream, reply: &mut Vec<u8>) -> Result<()> {
    if !reply.is_empty() {
        s.write_all(reply).await.context("writing to the server")?;
        reply.clear();
    }
    Ok(())
}

/// Answers what the protocol asks of the client: `SETTINGS` and `PING`; a
/// `GOAWAY` or a reset stream is an error.
fn h2_control(frame: h2raw::Frame<'_>, reply: &mut Vec<u8>) -> Result<()> {
    match frame {
        h2raw::Frame::Settings { ack: false } => h2raw::settings_ack(reply),
        h2raw::Frame::Ping {
            ack: false,
            payload,
        } => h2raw::ping_ack(reply, payload),
        h2raw::Frame::GoAway { code, debug } => bail!(
            "the server closed the connection (GOAWAY, error code {code}: {})",
            String::from_utf8_lossy(debug)
        ),
        h2raw::Frame::Reset { stream, code } => {
            bail!("the server reset stream {stream} (error code {code})")
        }
        _ => {}
    }
    Ok(())
}

/// `XREAD BLOCK 0 STREAMS <key> <after>`: the entries after `after` (`$`: after
/// the last one there is), waiting for as long as it takes.
fn xread(after: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    resp::command(
        &mut out,
        &[b"XREAD", b"BLOCK", b"0", b"STREAMS", redis::KEY, after],
    );
    out
}

/// Subscribes a fresh NATS connection `subs` times to the producer's subject
/// (sids 1 to `subs`): reads the server's `INFO`, sends `CONNECT`, the `SUB`s and
/// `PING`, and waits for the `PONG` (the server handles a connection's operations
/// in order, so the `SUB`s are then in place).
async fn nats_subscribe(s: &mut TcpStream, subs: usize) -> Result<()> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut greeted = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .context("NATS did not answer the subscription in 30 s")?
            .context("reading from NATS")?;
        if n == 0 {
            bail!("NATS closed the connection while subscribing");
        }
        seen.extend_from_slice(&buf[..n]);
        while let Some(i) = memmem::find(&seen, b"\r\n") {
            let line = seen[..i].to_vec();
            seen.drain(..i + 2);
            if line.starts_with(b"INFO ") && !greeted {
                greeted = true;
                let mut hello = String::from("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
                for sid in 1..=subs.max(1) {
                    hello.push_str(&format!("SUB {} {sid}\r\n", crate::systems::nats::SUBJECT));
                }
                hello.push_str("PING\r\n");
                s.write_all(hello.as_bytes()).await.context("writing SUB")?;
            } else if line == b"PONG" {
                return Ok(());
            } else if line.starts_with(b"-ERR") {
                bail!("NATS: {}", String::from_utf8_lossy(&line));
            }
        }
        if seen.len() > 64 * 1024 {
            bail!("NATS sent a line over 64 KiB while subscribing");
        }
    }
}

/// Decodes a chunked HTTP/1.1 body (RFC 9112 §7.1) into its bytes.
#[derive(Debug, Default)]
struct Chunked {
    /// The chunk-size line read so far.
    size_line: Vec<u8>,
    /// Data bytes left in the current chunk.
    data_left: usize,
    /// Line-end bytes left after the current chunk's data.
    crlf_left: usize,
    /// The last chunk (size 0) was read.
    ended: bool,
}

impl Chunked {
    /// Appends the body bytes in `input` to `out`.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        while !input.is_empty() && !self.ended {
            if self.data_left > 0 {
                let n = self.data_left.min(input.len());
                out.extend_from_slice(&input[..n]);
                self.data_left -= n;
                input = &input[n..];
                if self.data_left == 0 {
                    self.crlf_left = 2;
                }
            } else if self.crlf_left > 0 {
                let n = self.crlf_left.min(input.len());
                self.crlf_left -= n;
                input = &input[n..];
            } else {
                match memchr::memchr(b'\n', input) {
                    None => {
                        self.size_line.extend_from_slice(input);
                        input = &[];
                    }
                    Some(i) => {
                        self.size_line.extend_from_slice(&input[..i]);
                        input = &input[i + 1..];
                        let text = std::str::from_utf8(&self.size_line).unwrap_or("");
                        let hex = text.split([';', '\r']).next().unwrap_or("").trim();
                        let size = usize::from_str_radix(hex, 16)
                            .with_context(|| format!("bad chunk size line {text:?}"))?;
                        self.size_line.clear();
                        if size == 0 {
                            self.ended = true;
                        } else {
                            self.data_left = size;
                        }
                    }
                }
            }
            if self.size_line.len() > 1024 {
                bail!("chunk size line too long");
            }
        }
        Ok(())
    }
}

/// What one stream got.
#[derive(Debug, Default)]
struct StreamTally {
    events: u64,
    /// The first seq received (0: none yet).
    first: u64,
    /// The last seq received (0: none yet).
    last: u64,
    /// Seqs skipped or repeated, and gap frames.
    faults: u64,
    /// Produce → receipt of stamped events, ns.
    latencies: Vec<u32>,
    error: Option<String>,
}

impl StreamTally {
    /// Counts the event `seq`, whose line is `line`, received at `now`.
    fn event(&mut self, seq: u64, line: &[u8], now: u64, stamp: &memmem::Finder<'_>) {
        if self.events == 0 {
            self.first = seq;
        } else if seq != self.last + 1 {
            self.faults += 1;
        }
        self.last = seq;
        self.events += 1;
        if let Some(sent) = workload::read_stamp(stamp, line) {
            let ns = now.saturating_sub(sent).min(u64::from(u32::MAX));
            self.latencies.push(ns as u32);
        }
    }
}

/// Shared by the streams and the producer.
struct Row {
    /// The producer's last seq, once it is done (`u64::MAX` until then).
    last: AtomicU64,
    /// Set when the streams must stop whatever they have.
    stop: AtomicBool,
}

/// Reads the streams of one connection until each has seq `row.last`, or is told
/// to stop: what each stream got, in the order of its subscriptions (sids).
async fn watch(
    kind: Kind,
    s: TcpStream,
    streams: usize,
    row: Arc<Row>,
    clock: crate::tally::Clock,
) -> Vec<StreamTally> {
    let mut tallies: Vec<StreamTally> = (0..streams.max(1))
        .map(|_| StreamTally::default())
        .collect();
    let mut decoder = match kind {
        Kind::MasterEvents => Decoder::Http(Chunked::default()),
        Kind::Redis => Decoder::Redis,
        Kind::Nats => Decoder::Nats,
    };
    if let Err(e) = read_stream(&mut decoder, s, &row, clock, &mut tallies).await {
        for t in &mut tallies {
            t.error = Some(format!("{e:#}"));
        }
    }
    tallies
}

/// Reads the HTTP/2 streams of one connection (`pending`: bytes read past their
/// answers) until each has seq `row.last`, or is told to stop: what each got.
async fn watch_h2(
    s: TcpStream,
    pending: Vec<u8>,
    streams: usize,
    row: Arc<Row>,
    clock: crate::tally::Clock,
) -> Vec<StreamTally> {
    let mut tallies: Vec<StreamTally> = (0..streams).map(|_| StreamTally::default()).collect();
    if let Err(e) = read_h2(s, pending, &row, clock, &mut tallies).await {
        for t in &mut tallies {
            t.error.get_or_insert_with(|| format!("{e:#}"));
        }
    }
    tallies
}

/// Flow-control credit given back once this much of a window is used.
const H2_CREDIT_AT: usize = 1 << 30;

async fn read_h2(
    mut s: TcpStream,
    mut pending: Vec<u8>,
    row: &Row,
    clock: crate::tally::Clock,
    tallies: &mut [StreamTally],
) -> Result<()> {
    let streams = tallies.len();
    let mut bodies: Vec<Vec<u8>> = vec![Vec::new(); streams];
    let mut used = vec![0usize; streams];
    let mut conn_used = 0usize;
    let seq_finder = memmem::Finder::new(b"\"seq\":");
    let stamp = workload::stamp_finder();
    let mut reply = Vec::new();
    let mut buf = vec![0u8; H2_READ_BUF];
    loop {
        let now = clock.now_ns();
        let taken = h2raw::take_frames(&pending, |frame| {
            match frame {
                h2raw::Frame::Data {
                    stream,
                    data,
                    end,
                    flow,
                } => {
                    let k = h2_index(stream, streams)?;
                    let body = &mut bodies[k];
                    body.extend_from_slice(data);
                    let took = take_lines(body, now, &seq_finder, &stamp, &mut tallies[k]);
                    body.drain(..took);
                    if end {
                        tallies[k].error = Some("the server ended the stream".into());
                    }
                    used[k] += flow;
                    conn_used += flow;
                    if used[k] >= H2_CREDIT_AT {
                        h2raw::window_update(
                            &mut reply,
                            stream,
                            std::mem::take(&mut used[k]) as u32,
                        );
                    }
                    if conn_used >= H2_CREDIT_AT {
                        h2raw::window_update(&mut reply, 0, std::mem::take(&mut conn_used) as u32);
                    }
                }
                h2raw::Frame::Reset { stream, code } => {
                    let k = h2_index(stream, streams)?;
                    tallies[k].error =
                        Some(format!("the server reset the stream (error code {code})"));
                }
                frame => h2_control(frame, &mut reply)?,
            }
            Ok(())
        })?;
        pending.drain(..taken);
        flush_reply(&mut s, &mut reply).await?;
        let last = row.last.load(Ordering::Acquire);
        if tallies.iter().all(|t| t.last >= last || t.error.is_some())
            || row.stop.load(Ordering::Acquire)
        {
            return Ok(());
        }
        let Some(n) = read_some(&mut s, &mut buf).await? else {
            continue;
        };
        pending.extend_from_slice(&buf[..n]);
    }
}

/// How a stream's bytes are read.
enum Decoder {
    /// This project's chunked NDJSON body.
    Http(Chunked),
    /// Redis XREAD replies, each answered by the next XREAD.
    Redis,
    /// NATS `MSG`s (and the server's `PING`s, answered).
    Nats,
}

/// Reads a connection's streams into `tallies` (one, but for NATS's several
/// subscriptions, `tallies[sid - 1]`).
async fn read_stream(
    decoder: &mut Decoder,
    mut s: TcpStream,
    row: &Row,
    clock: crate::tally::Clock,
    tallies: &mut [StreamTally],
) -> Result<()> {
    let mut buf = vec![0u8; READ_BUF];
    // Bytes received and not yet taken (for HTTP: the decoded body).
    let mut pending = Vec::new();
    let seq_finder = memmem::Finder::new(b"\"seq\":");
    let stamp = workload::stamp_finder();
    let mut reply = Vec::new();
    loop {
        let last = row.last.load(Ordering::Acquire);
        if tallies.iter().all(|t| t.last >= last) || row.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(n) = read_some(&mut s, &mut buf).await? else {
            continue;
        };
        match decoder {
            Decoder::Http(chunked) => chunked.feed(&buf[..n], &mut pending)?,
            Decoder::Redis | Decoder::Nats => pending.extend_from_slice(&buf[..n]),
        }
        let now = clock.now_ns();
        let taken = match decoder {
            Decoder::Http(_) => take_lines(&pending, now, &seq_finder, &stamp, &mut tallies[0]),
            Decoder::Redis => {
                take_xread_replies(&pending, now, &stamp, &mut tallies[0], &mut reply)?
            }
            Decoder::Nats => take_nats_messages(&pending, now, &stamp, tallies, &mut reply)?,
        };
        pending.drain(..taken);
        flush_reply(&mut s, &mut reply).await?;
    }
}

/// Takes the whole NDJSON lines of `body`; returns how many bytes it took.
fn take_lines(
    body: &[u8],
    now: u64,
    seq_finder: &memmem::Finder<'_>,
    stamp: &memmem::Finder<'_>,
    t: &mut StreamTally,
) -> usize {
    let mut start = 0;
    while let Some(i) = memchr::memchr(b'\n', &body[start..]) {
        let line = &body[start..start + i];
        start += i + 1;
        if line.starts_with(b"{\"type\":\"gap\"") {
            t.faults += 1;
            continue;
        }
        let Some(at) = seq_finder.find(line) else {
            continue;
        };
        let digits = &line[at + 6..];
        let end = digits
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(digits.len());
        let seq: u64 = std::str::from_utf8(&digits[..end])
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        t.event(seq, line, now, stamp);
    }
    start
}

/// Takes the complete XREAD replies at the start of `input` (`[[key, [[id,
/// [field, value, ...]], ...]]]`); after each, the next XREAD (after the last id)
/// goes into `out`. Returns how many bytes it took.
fn take_xread_replies(
    input: &[u8],
    now: u64,
    stamp: &memmem::Finder<'_>,
    t: &mut StreamTally,
    out: &mut Vec<u8>,
) -> Result<usize> {
    let mut at = 0;
    while let Some(end) = resp::value_end(input, at)? {
        let mut last_id = None;
        redis::for_each_entry(&input[at..end], |id, seq, line| {
            last_id = Some(id);
            t.event(seq, line, now, stamp);
        })?;
        match last_id {
            Some(id) => out.extend_from_slice(&xread(id)),
            None => bail!("an XREAD reply without entries"),
        }
        at = end;
    }
    Ok(at)
}

/// Takes the complete NATS operations at the start of `input`: each `MSG`'s
/// payload is an event of the subscription its sid names (`tallies[sid - 1]`); a
/// `PING` is answered with a `PONG` in `out`; `-ERR` is an error. Returns how many
/// bytes it took.
fn take_nats_messages(
    input: &[u8],
    now: u64,
    stamp: &memmem::Finder<'_>,
    tallies: &mut [StreamTally],
    out: &mut Vec<u8>,
) -> Result<usize> {
    let mut at = 0;
    while let Some(i) = memmem::find(&input[at..], b"\r\n") {
        let line = &input[at..at + i];
        let body = at + i + 2;
        if let Some(args) = line.strip_prefix(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let bad = || format!("bad MSG line {:?}", String::from_utf8_lossy(line));
            let number = |field: Option<&[u8]>| -> Option<usize> {
                std::str::from_utf8(field?).ok()?.parse().ok()
            };
            let len = number(args.rsplit(|&b| b == b' ').next()).with_context(bad)?;
            let sid = number(args.split(|&b| b == b' ').nth(1)).with_context(bad)?;
            let t = sid
                .checked_sub(1)
                .and_then(|k| tallies.get_mut(k))
                .with_context(|| format!("a MSG for sid {sid}, which was not subscribed"))?;
            if input.len() < body + len + 2 {
                break;
            }
            let Some((seq, event)) = workload::split_framed(&input[body..body + len]) else {
                bail!("a NATS message without a sequence number");
            };
            t.event(seq, event, now, stamp);
            at = body + len + 2;
            continue;
        }
        if line == b"PING" {
            out.extend_from_slice(b"PONG\r\n");
        } else if line.starts_with(b"-ERR") {
            bail!("NATS: {}", String::from_utf8_lossy(line));
        }
        at = body;
    }
    Ok(at)
}

/// Opens `n` streams on a fresh server, `per_connection` on each connection,
/// produces at `rate` events/s for `duration`, and checks what every stream got.
pub async fn watchers(
    kind: Kind,
    setup: &Setup,
    n: usize,
    per_connection: usize,
    rate: f64,
    duration: Duration,
) -> Result<WatchersRow> {
    if per_connection > 1 && kind == Kind::Redis {
        bail!(
            "a Redis connection carries one blocked XREAD: streams cannot share \
             connections (--watchers-per-connection 1 for Redis)"
        );
    }
    let mut server = systems::start(kind, setup).await?;
    let row = watchers_on(
        server.as_mut(),
        setup,
        n,
        per_connection.max(1),
        rate,
        duration,
    )
    .await;
    server.stop().await;
    row
}

async fn watchers_on(
    server: &mut dyn Server,
    setup: &Setup,
    n: usize,
    per_connection: usize,
    rate: f64,
    duration: Duration,
) -> Result<WatchersRow> {
    let addr = server.addr();
    let clock = setup.clock;
    let kind = server.kind();
    let shared = per_connection > 1;
    let connections = n.div_ceil(per_connection);
    let rss_before = server.rss_bytes()?;
    let opening = std::time::Instant::now();
    let opened: Vec<Result<Opened>> = futures_util::stream::iter(0..connections)
        .map(|c| {
            let streams = per_connection.min(n - c * per_connection);
            open_connection(kind, addr, source_of(c), streams, shared)
        })
        .buffer_unordered(if shared { 16 } else { OPEN_CONCURRENCY })
        .collect()
        .await;
    let open_secs = opening.elapsed().as_secs_f64();
    let mut conns = Vec::with_capacity(connections);
    let mut first_error = None;
    for c in opened {
        match c {
            Ok(c) => conns.push(c),
            Err(e) => {
                first_error.get_or_insert_with(|| format!("opening a stream: {e:#}"));
            }
        }
    }
    let opened: usize = conns.iter().map(Opened::streams).sum();
    server
        .check_idle(opened)
        .await
        .context("the server's count of open streams")?;
    let rss_idle = server.rss_bytes()?;
    let sources = (connections.max(1) - 1) / STREAMS_PER_SOURCE + 1;
    eprintln!(
        "  {opened} of {n} streams open on {} connections in {open_secs:.1} s from {sources} \
         source addresses, RSS {rss_before} → {rss_idle} bytes",
        conns.len()
    );

    let row = Arc::new(Row {
        last: AtomicU64::new(u64::MAX),
        stop: AtomicBool::new(false),
    });
    let server_cpu0 = proc::cpu_secs(server.pid());
    let harness_cpu0 = proc::cpu_secs(std::process::id());
    let mut tasks = Vec::with_capacity(opened);
    for c in conns {
        match c {
            Opened::Alone(s) => {
                tasks.push(tokio::spawn(watch(kind, s, 1, Arc::clone(&row), clock)));
            }
            Opened::NatsSubs(s, subs) => {
                tasks.push(tokio::spawn(watch(kind, s, subs, Arc::clone(&row), clock)));
            }
            Opened::H2(s, pending, streams) => {
                tasks.push(tokio::spawn(watch_h2(
                    s,
                    pending,
                    streams,
                    Arc::clone(&row),
                    clock,
                )));
            }
        }
    }
    // The mix opens with events that carry no stamp (bucket creation); the
    // producer starts at the first that does, so that a slow row has samples.
    let from = setup
        .mix
        .templates
        .iter()
        .position(|t| t.stamp_at.is_some())
        .unwrap_or(0) as u64;
    let pace = Pace::Rate { eps: rate, from };
    let producer = spawn_producer(server.producer(), pace, duration, clock);
    let produced = tokio::task::spawn_blocking(move || producer.join())
        .await
        .context("joining the producer")?
        .map_err(|_| anyhow::anyhow!("the producer panicked"))??;
    row.last.store(produced.last, Ordering::Release);
    let stopper = {
        let row = Arc::clone(&row);
        tokio::spawn(async move {
            tokio::time::sleep(DRAIN_MAX).await;
            row.stop.store(true, Ordering::Release);
        })
    };
    let mut complete = 0;
    let mut delivered = 0;
    let mut missing = 0;
    let mut hist = new_histogram();
    for task in tasks {
        for t in task.await.context("a stream task")? {
            delivered += t.events;
            // The producer's events are one run of seqs ending at its last.
            let expected = produced.events;
            let first = (produced.last + 1).saturating_sub(expected);
            missing += expected.saturating_sub(t.events);
            if t.faults == 0
                && t.error.is_none()
                && t.events == expected
                && t.first == first
                && t.last == produced.last
            {
                complete += 1;
            } else if first_error.is_none() {
                first_error = Some(match &t.error {
                    Some(e) => e.clone(),
                    None => format!(
                        "a stream got {} of {expected} events (seqs {} to {}, {} holes or gaps; \
                     the producer's: {first} to {})",
                        t.events, t.first, t.last, t.faults, produced.last
                    ),
                });
            }
            for ns in t.latencies {
                let _ = hist.record(u64::from(ns).max(1));
            }
        }
    }
    stopper.abort();
    let server_cpu_secs = proc::cpu_secs(server.pid()) - server_cpu0;
    let harness_cpu_secs = proc::cpu_secs(std::process::id()) - harness_cpu0;
    server.check_running()?;
    let rss_after = server.rss_bytes()?;
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    Ok(WatchersRow {
        system: server.kind(),
        streams: n,
        opened,
        connections,
        per_connection,
        sources,
        open_secs,
        rate_eps: rate,
        produced: produced.events,
        complete,
        incomplete: n.saturating_sub(complete),
        delivered,
        missing,
        first_error,
        samples: hist.len(),
        p50_us: us(0.5),
        p99_us: us(0.99),
        max_us: hist.max() as f64 / 1e3,
        rss_before,
        rss_idle,
        rss_after,
        bytes_per_stream: rss_idle.saturating_sub(rss_before) as f64 / opened.max(1) as f64,
        server_cpu_secs,
        harness_cpu_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_split_anywhere_decodes_to_its_bytes() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n1\r\n\n\r\n0\r\n\r\n";
        for cut in 0..wire.len() {
            let mut c = Chunked::default();
            let mut out = Vec::new();
            c.feed(&wire[..cut], &mut out).expect("valid");
            c.feed(&wire[cut..], &mut out).expect("valid");
            assert_eq!(out, b"hello, world\n", "cut at {cut}");
            assert!(c.ended);
        }
    }

    #[test]
    fn a_bad_chunk_size_is_an_error_naming_it() {
        let mut c = Chunked::default();
        let e = c.feed(b"zz\r\n", &mut Vec::new()).expect_err("not hex");
        assert!(format!("{e:#}").contains("\"zz\\r\""), "{e:#}");
    }

    /// Two framed events (seqs 7 and 8), the second's seq bytes holding `\r\n`.
    fn two_events() -> Vec<(u64, Vec<u8>)> {
        let seq2 = u64::from_be_bytes([0, 0, 0, 0, 0, 0, 0x0d, 0x0a]);
        [
            (7, b"{\"type\":\"failoverEnded\"}".to_vec()),
            (seq2, b"{\"x\":1}".to_vec()),
        ]
        .into_iter()
        .map(|(seq, line)| {
            let mut framed = seq.to_be_bytes().to_vec();
            framed.extend_from_slice(&line);
            (seq, framed)
        })
        .collect()
    }

    /// A decoder's `take_*` function.
    type Take =
        fn(&[u8], u64, &memmem::Finder<'_>, &mut StreamTally, &mut Vec<u8>) -> Result<usize>;

    /// Feeds `wire` cut at `cut` to `take` as a stream reader would (keeping what
    /// was not taken), and returns the tally and what it wrote back.
    fn feed_cut(wire: &[u8], cut: usize, take: Take) -> (StreamTally, Vec<u8>) {
        let stamp = workload::stamp_finder();
        let mut t = StreamTally::default();
        let mut out = Vec::new();
        let mut pending = wire[..cut].to_vec();
        let taken = take(&pending, 1, &stamp, &mut t, &mut out).expect("valid");
        pending.drain(..taken);
        pending.extend_from_slice(&wire[cut..]);
        let taken = take(&pending, 1, &stamp, &mut t, &mut out).expect("valid");
        assert_eq!(taken, pending.len(), "cut at {cut}: everything taken");
        (t, out)
    }

    #[test]
    fn xread_replies_split_anywhere_give_their_events_and_ask_after_the_last_id() {
        let events = two_events();
        let mut wire = Vec::new();
        for (i, (_, framed)) in events.iter().enumerate() {
            let id = format!("{}-0", 100 + i);
            wire.extend_from_slice(b"*1\r\n*2\r\n$5\r\nbench\r\n*1\r\n*2\r\n");
            wire.extend_from_slice(format!("${}\r\n{id}\r\n", id.len()).as_bytes());
            wire.extend_from_slice(format!("*2\r\n$1\r\ne\r\n${}\r\n", framed.len()).as_bytes());
            wire.extend_from_slice(framed);
            wire.extend_from_slice(b"\r\n");
        }
        for cut in 0..=wire.len() {
            let (t, out) = feed_cut(&wire, cut, take_xread_replies);
            assert_eq!(t.events, 2, "cut at {cut}");
            assert_eq!(
                (t.first, t.last),
                (events[0].0, events[1].0),
                "cut at {cut}"
            );
            let mut asked = xread(b"100-0");
            asked.extend_from_slice(&xread(b"101-0"));
            assert_eq!(out, asked, "cut at {cut}");
        }
    }

    #[test]
    fn nats_messages_split_anywhere_give_their_events_and_pings_are_answered() {
        let events = two_events();
        let mut wire = b"PING\r\n".to_vec();
        for (_, framed) in &events {
            wire.extend_from_slice(format!("MSG bench.events 1 {}\r\n", framed.len()).as_bytes());
            wire.extend_from_slice(framed);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"+OK\r\n");
        for cut in 0..=wire.len() {
            let (t, out) = feed_cut(&wire, cut, |input, now, stamp, t, out| {
                take_nats_messages(input, now, stamp, std::slice::from_mut(t), out)
            });
            assert_eq!(t.events, 2, "cut at {cut}");
            assert_eq!(t.faults, 1, "cut at {cut}: 7 then 3338 is a hole");
            assert_eq!(
                (t.first, t.last),
                (events[0].0, events[1].0),
                "cut at {cut}"
            );
            assert_eq!(out, b"PONG\r\n", "cut at {cut}");
        }
        let stamp = workload::stamp_finder();
        let e = take_nats_messages(
            b"-ERR 'Slow Consumer'\r\n",
            1,
            &stamp,
            &mut [StreamTally::default()],
            &mut Vec::new(),
        )
        .expect_err("an error");
        assert!(format!("{e:#}").contains("Slow Consumer"), "{e:#}");
    }

    #[test]
    fn nats_messages_go_to_the_subscription_their_sid_names() {
        let events = two_events();
        let mut wire = Vec::new();
        // sid 2 gets both events, sid 1 only the second.
        for (sid, (_, framed)) in [(2, &events[0]), (2, &events[1]), (1, &events[1])] {
            wire.extend_from_slice(
                format!("MSG bench.events {sid} {}\r\n", framed.len()).as_bytes(),
            );
            wire.extend_from_slice(framed);
            wire.extend_from_slice(b"\r\n");
        }
        let stamp = workload::stamp_finder();
        let mut tallies = [StreamTally::default(), StreamTally::default()];
        let taken =
            take_nats_messages(&wire, 1, &stamp, &mut tallies, &mut Vec::new()).expect("valid");
        assert_eq!(taken, wire.len());
        assert_eq!(tallies[0].events, 1);
        assert_eq!(tallies[0].first, events[1].0);
        assert_eq!(tallies[1].events, 2);
        assert_eq!(
            (tallies[1].first, tallies[1].last),
            (events[0].0, events[1].0)
        );
        // A sid never subscribed is an error, not an event counted elsewhere.
        let e = take_nats_messages(&wire, 1, &stamp, &mut tallies[..1], &mut Vec::new())
            .expect_err("sid 2 is not subscribed");
        assert!(format!("{e:#}").contains("sid 2"), "{e:#}");
    }

    #[test]
    fn sources_change_every_streams_per_source() {
        assert_eq!(source_of(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(
            source_of(STREAMS_PER_SOURCE - 1),
            Ipv4Addr::new(127, 0, 0, 2)
        );
        assert_eq!(source_of(STREAMS_PER_SOURCE), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(
            source_of(5 * STREAMS_PER_SOURCE),
            Ipv4Addr::new(127, 0, 0, 7)
        );
    }
}
