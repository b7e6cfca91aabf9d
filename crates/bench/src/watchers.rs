//! The watchers scenario: very many streams open on one server at once, a slow
//! producer, and whether every stream gets every event, how late, and at what memory.
//!
//! Owns: opening `n` streams of this project (`GET
//! /diag/masterEvents?start=now&heartbeat=0`) from several loopback source
//! addresses (one address has only about 28,000 ephemeral ports towards one
//! server), raising the harness's open-file limit for them (the server it starts
//! inherits it), reading each stream with a small chunked-body and line decoder
//! of its own (a full HTTP client per stream would cost the harness more memory
//! than the server), and [`WatchersRow`].
//!
//! Promises:
//! - Every stream is checked: the events it got must be the producer's, seq 1 to
//!   the last, each once, in order; a stream that got fewer, a hole, a `gap` frame
//!   or an error is counted and reported, never dropped from the figures.
//! - Latency is produce → receipt of the stamped events (about one in five) over
//!   all streams; every wait is bounded by the row's deadline.
//! - Only this project is measured here (Redis and NATS rows would need readers of
//!   their own protocols at this scale; not built).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use memchr::memmem;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::proc;
use crate::scenarios::{spawn_producer, Pace};
use crate::systems::{self, Kind, Server, Setup};
use crate::tally::new_histogram;
use crate::workload;

/// Streams opened from one source address (of the ~28,000 ephemeral ports one
/// address has towards one server port).
pub const STREAMS_PER_SOURCE: usize = 10_000;
/// Streams being opened at once.
const OPEN_CONCURRENCY: usize = 256;
/// A stream's read buffer.
const READ_BUF: usize = 2048;
/// How long after the producer's last event the streams may take to get it.
const DRAIN_MAX: Duration = Duration::from_secs(30);

/// One watchers row.
#[derive(Debug, Clone, Serialize)]
pub struct WatchersRow {
    /// The system (this project).
    pub system: Kind,
    /// Streams asked for.
    pub streams: usize,
    /// Streams open once opening was over.
    pub opened: usize,
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

/// The source address of stream `i`: 127.0.0.2, 127.0.0.3, ... a new one every
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

/// Opens one stream from `from`, its response head read.
async fn open_stream(addr: SocketAddr, from: Ipv4Addr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4().context("socket")?;
    no_port_at_bind(&socket)?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(from), 0))
        .with_context(|| format!("bind {from}"))?;
    let s = tokio::time::timeout(Duration::from_secs(30), socket.connect(addr))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connect from {from}"))?;
    crate::systems::master_events::start_stream(s, addr).await
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
    /// The last seq received (0: none yet).
    last: u64,
    /// Seqs skipped or repeated, and gap frames.
    faults: u64,
    /// Produce → receipt of stamped events, ns.
    latencies: Vec<u32>,
    error: Option<String>,
}

/// Shared by the streams and the producer.
struct Row {
    /// The producer's last seq, once it is done (`u64::MAX` until then).
    last: AtomicU64,
    /// Set when the streams must stop whatever they have.
    stop: AtomicBool,
}

/// Reads one stream until it has seq `row.last`, or is told to stop.
async fn watch(mut s: TcpStream, row: Arc<Row>, clock: crate::tally::Clock) -> StreamTally {
    let mut t = StreamTally::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut body = Vec::new();
    let mut chunked = Chunked::default();
    let seq_finder = memmem::Finder::new(b"\"seq\":");
    let stamp = workload::stamp_finder();
    loop {
        if t.last >= row.last.load(Ordering::Acquire) || row.stop.load(Ordering::Acquire) {
            break;
        }
        let n = match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) => {
                t.error = Some("the server closed the stream".to_owned());
                break;
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                t.error = Some(format!("read: {e}"));
                break;
            }
        };
        if let Err(e) = chunked.feed(&buf[..n], &mut body) {
            t.error = Some(format!("{e:#}"));
            break;
        }
        let now = clock.now_ns();
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
            if seq != t.last + 1 {
                t.faults += 1;
            }
            t.last = seq;
            t.events += 1;
            if let Some(sent) = workload::read_stamp(&stamp, line) {
                let ns = now.saturating_sub(sent).min(u64::from(u32::MAX));
                t.latencies.push(ns as u32);
            }
        }
        body.drain(..start);
    }
    t
}

/// Opens `n` streams on a fresh server, produces at `rate` events/s for
/// `duration`, and checks what every stream got.
pub async fn watchers(
    kind: Kind,
    setup: &Setup,
    n: usize,
    rate: f64,
    duration: Duration,
) -> Result<WatchersRow> {
    if kind != Kind::MasterEvents {
        bail!("the watchers scenario reads this project's streams only");
    }
    let mut server = systems::start(kind, setup).await?;
    let row = watchers_on(server.as_mut(), setup, n, rate, duration).await;
    server.stop().await;
    row
}

async fn watchers_on(
    server: &mut dyn Server,
    setup: &Setup,
    n: usize,
    rate: f64,
    duration: Duration,
) -> Result<WatchersRow> {
    let addr = server.addr().context("the server's address")?;
    let clock = setup.clock;
    let rss_before = server.rss_bytes()?;
    let opening = std::time::Instant::now();
    let opened: Vec<Result<TcpStream>> = futures_util::stream::iter(0..n)
        .map(|i| open_stream(addr, source_of(i)))
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await;
    let open_secs = opening.elapsed().as_secs_f64();
    let mut streams = Vec::with_capacity(n);
    let mut first_error = None;
    for s in opened {
        match s {
            Ok(s) => streams.push(s),
            Err(e) => {
                first_error.get_or_insert_with(|| format!("opening a stream: {e:#}"));
            }
        }
    }
    let opened = streams.len();
    server
        .check_idle(opened)
        .await
        .context("the server's count of open streams")?;
    let rss_idle = server.rss_bytes()?;
    eprintln!(
        "  {opened} of {n} streams open in {open_secs:.1} s from {} source addresses, \
         RSS {rss_before} → {rss_idle} bytes",
        (n.max(1) - 1) / STREAMS_PER_SOURCE + 1
    );

    let row = Arc::new(Row {
        last: AtomicU64::new(u64::MAX),
        stop: AtomicBool::new(false),
    });
    let server_cpu0 = proc::cpu_secs(server.pid());
    let harness_cpu0 = proc::cpu_secs(std::process::id());
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(watch(s, Arc::clone(&row), clock)))
        .collect();
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
        let t = task.await.context("a stream task")?;
        delivered += t.events;
        let expected = produced.last.saturating_sub(produced.first) + 1;
        missing += expected.saturating_sub(t.events);
        if t.faults == 0 && t.error.is_none() && t.events == expected && t.last == produced.last {
            complete += 1;
        } else if first_error.is_none() {
            first_error = Some(match &t.error {
                Some(e) => e.clone(),
                None => format!(
                    "a stream got {} of {expected} events (last seq {}, {} holes or gaps)",
                    t.events, t.last, t.faults
                ),
            });
        }
        for ns in t.latencies {
            let _ = hist.record(u64::from(ns).max(1));
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
        sources: (n.max(1) - 1) / STREAMS_PER_SOURCE + 1,
        open_secs,
        rate_eps: rate,
        produced: produced.events,
        complete,
        incomplete: n - complete,
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
