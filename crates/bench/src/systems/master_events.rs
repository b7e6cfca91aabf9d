//! This project under test: the `master-events serve` binary as a child process.
//!
//! Owns: starting it (`--listen 127.0.0.1:0 --archive-size N --heartbeat 0`, the
//! address read from its first line of output), the HTTP/1.1 producer (batched
//! `POST /diag/masterEvents`, up to `window` requests in flight, each on its own
//! connection), the NDJSON readers (`GET /diag/masterEvents?start=now&heartbeat=0`,
//! one connection each) and idle stream connections.
//!
//! Promises: readers count `gap` frames as announced losses and check every line's
//! `seq` for holes; a line split across body frames is reassembled.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use master_events_events::{parse_line, StreamLine};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::{IngestMode, Kind, Producer, Reader, Server, Setup};
use crate::proc::{self, Child};
use crate::tally::{Clock, Tally};
use crate::workload::{self, Mix, ORIGIN};

/// How long a single request may take before the run gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `master-events serve`.
pub struct MasterEvents {
    child: Child,
    addr: SocketAddr,
    setup: Setup,
}

impl MasterEvents {
    /// Starts the binary and waits for its address.
    pub async fn start(setup: &Setup) -> Result<MasterEvents> {
        let serve: Vec<String> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--archive-size",
            &setup.retain.to_string(),
            "--heartbeat",
            "0",
            "--node",
            ORIGIN,
            // Every reader and idle stream of the harness comes from 127.0.0.1: the
            // per-address limit (256 by default) would cap the idle row.
            "--max-connections-per-ip",
            "1000000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(
            // The watchers scenario may open more streams than the default limit.
            (setup.max_streams > 0)
                .then(|| ["--max-streams".to_owned(), setup.max_streams.to_string()])
                .into_iter()
                .flatten(),
        )
        .chain(setup.master_events_args.iter().cloned())
        .collect();
        let (program, args) = match setup.master_events_wrap.split_first() {
            None => (setup.master_events_bin.clone(), serve),
            Some((wrapper, wrapper_args)) => {
                let mut args = wrapper_args.to_vec();
                args.push(setup.master_events_bin.display().to_string());
                args.extend(serve);
                (std::path::PathBuf::from(wrapper), args)
            }
        };
        let (mut child, stdout) = Child::spawn("master-events", &program, &args, &setup.dir, true)?;
        if !setup.master_events_wrap.is_empty() {
            child.grace = Duration::from_secs(120);
        }
        let stdout = stdout.context("no stdout pipe")?;
        let (line, mut rest) = match proc::first_line(stdout, Duration::from_secs(60)).await {
            Ok(ok) => ok,
            Err(e) => {
                child.check_running()?;
                return Err(e.context("master-events did not say where it listens"));
            }
        };
        // Keep draining its standard output so that it never blocks on a full pipe.
        tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut rest, &mut sink).await;
        });
        let addr: SocketAddr = line
            .strip_prefix("listening on http://")
            .ok_or_else(|| anyhow!("unexpected first line {line:?}"))?
            .parse()
            .with_context(|| format!("bad address in {line:?}"))?;
        if !addr.ip().is_loopback() {
            bail!("master-events listens on {addr}, not on loopback");
        }
        proc::wait_until("master-events", Duration::from_secs(10), || async move {
            let (status, _) = get(addr, "/health").await?;
            if status != StatusCode::OK {
                bail!("/health answered {status}");
            }
            Ok(())
        })
        .await?;
        Ok(MasterEvents {
            child,
            addr,
            setup: setup.clone(),
        })
    }
}

/// Opens an HTTP/1.1 connection to `addr`.
async fn connect<B>(addr: SocketAddr) -> Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("connect timed out")?
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One GET; the status and the whole body.
async fn get(addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes)> {
    let mut sender = connect::<Empty<Bytes>>(addr).await?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .body(Empty::new())
        .context("building a request")?;
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
        .await
        .context("request timed out")?
        .with_context(|| format!("GET {path}"))?;
    let status = resp.status();
    let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
        .await
        .context("body timed out")?
        .context("reading the body")?
        .to_bytes();
    Ok((status, body))
}

/// The value of one unlabelled metric in `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> Result<Option<f64>> {
    let (status, body) = get(addr, "/metrics").await?;
    if status != StatusCode::OK {
        bail!("/metrics answered {status}");
    }
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .find(|rest| rest.starts_with(' '))
        .and_then(|rest| rest.trim().parse::<f64>().ok()))
}

impl Server for MasterEvents {
    fn kind(&self) -> Kind {
        Kind::MasterEvents
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn rss_bytes(&self) -> Result<u64> {
        self.child.rss_bytes()
    }

    fn reader(&self, latency: bool) -> BoxFuture<'static, Result<Box<dyn Reader>>> {
        let addr = self.addr;
        async move {
            let mut sender = connect::<Empty<Bytes>>(addr).await?;
            let req = Request::builder()
                .method(Method::GET)
                .uri("/diag/masterEvents?start=now&heartbeat=0")
                .header(header::HOST, addr.to_string())
                .body(Empty::new())
                .context("building a request")?;
            let resp = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
                .await
                .context("stream request timed out")?
                .context("GET /diag/masterEvents")?;
            if resp.status() != StatusCode::OK {
                bail!("the stream answered {}", resp.status());
            }
            Ok(Box::new(NdjsonReader {
                body: resp.into_body(),
                carry: Vec::new(),
                seq: memmem::Finder::new(b",\"seq\":").into_owned(),
                stamp: workload::stamp_finder(),
                latency,
                _sender: sender,
            }) as Box<dyn Reader>)
        }
        .boxed()
    }

    fn producer(&self) -> BoxFuture<'static, Result<Box<dyn Producer>>> {
        let addr = self.addr;
        let setup = self.setup.clone();
        async move {
            Ok(match setup.ingest {
                IngestMode::Requests => {
                    Box::new(HttpProducer::new(addr, &setup).await?) as Box<dyn Producer>
                }
                IngestMode::Feed => Box::new(FeedProducer::new(addr, &setup).await?),
            })
        }
        .boxed()
    }

    fn fill_retained(&self, total: u64) -> BoxFuture<'_, Result<()>> {
        async move {
            let mut p = HttpProducer::new(self.addr, &self.setup).await?;
            super::produce_all(&mut p, total, self.setup.batch).await
        }
        .boxed()
    }

    fn retained(&self) -> BoxFuture<'_, Result<u64>> {
        async move {
            let (status, body) = get(self.addr, "/cluster").await?;
            if status != StatusCode::OK {
                bail!("/cluster answered {status}");
            }
            let v: serde_json::Value = serde_json::from_slice(&body).context("/cluster JSON")?;
            let last = v["last_seq"].as_u64().unwrap_or(0);
            Ok(match v["oldest_seq"].as_u64() {
                Some(oldest) => last + 1 - oldest,
                None => 0,
            })
        }
        .boxed()
    }

    fn store_bytes(&self) -> BoxFuture<'_, Result<Option<u64>>> {
        async move {
            // What the archive's lines take in memory (older blocks compressed);
            // a build from before that metric: the lines' bytes.
            let stored = metric(self.addr, "master_events_archive_stored_bytes").await?;
            let stored = match stored {
                Some(v) => Some(v),
                None => metric(self.addr, "master_events_archived_bytes").await?,
            };
            Ok(stored.map(|v| v as u64))
        }
        .boxed()
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn idle_connection(&self) -> BoxFuture<'static, Result<TcpStream>> {
        let addr = self.addr;
        async move {
            let s = TcpStream::connect(addr).await.context("connect")?;
            start_stream(s, addr).await
        }
        .boxed()
    }

    fn check_idle(&self, n: usize) -> BoxFuture<'_, Result<()>> {
        async move {
            match metric(self.addr, "master_events_open_streams").await? {
                Some(open) if open as usize >= n => Ok(()),
                Some(open) => bail!("only {open} streams open, expected {n}"),
                None => bail!("no master_events_open_streams in /metrics"),
            }
        }
        .boxed()
    }

    fn check_running(&mut self) -> Result<()> {
        self.child.check_running()
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move { self.child.stop().await }.boxed()
    }
}

/// Asks for a stream of events from now on over the raw connection `s` to `addr`
/// and reads the response head; the connection is then at the start of the body,
/// nothing of which has come yet.
pub(crate) async fn start_stream(mut s: TcpStream, addr: SocketAddr) -> Result<TcpStream> {
    let req =
        format!("GET /diag/masterEvents?start=now&heartbeat=0 HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.context("write")?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while memmem::find(&head, b"\r\n\r\n").is_none() {
        let n = tokio::time::timeout(REQUEST_TIMEOUT, s.read(&mut buf))
            .await
            .context("response head timed out")?
            .context("read")?;
        if n == 0 {
            bail!("closed before the response head");
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 8192 {
            bail!("response head too long");
        }
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        let first = head.split(|b| *b == b'\r').next().unwrap_or_default();
        bail!("stream refused: {}", String::from_utf8_lossy(first));
    }
    if memmem::find(&head, b"\r\n\r\n").map(|i| i + 4) != Some(head.len()) {
        bail!("body bytes arrived with the head of a stream that starts now");
    }
    Ok(s)
}

/// Reads an NDJSON stream.
struct NdjsonReader {
    body: Incoming,
    /// The start of a line whose end has not arrived yet.
    carry: Vec<u8>,
    seq: memmem::Finder<'static>,
    stamp: memmem::Finder<'static>,
    latency: bool,
    _sender: SendRequest<Empty<Bytes>>,
}

impl NdjsonReader {
    fn line(&self, line: &[u8], tally: &mut Tally, now: u64) -> Result<()> {
        if line.starts_with(b"{\"type\":\"gap\"") || line.starts_with(b"{\"type\":\"heartbeat\"") {
            match parse_line(line) {
                Ok(StreamLine::Gap(g)) => tally.gap(g.from_seq, g.to_seq, g.missed),
                Ok(_) => {}
                Err(e) => bail!("bad control frame: {e}"),
            }
            return Ok(());
        }
        // `,"seq":` comes right after the type, within the first ~60 bytes.
        let head = &line[..line.len().min(96)];
        let at = self
            .seq
            .find(head)
            .ok_or_else(|| anyhow!("a line without seq: {}", String::from_utf8_lossy(line)))?
            + 7;
        let mut seq: u64 = 0;
        for &d in &line[at..] {
            if !d.is_ascii_digit() {
                break;
            }
            seq = seq * 10 + u64::from(d - b'0');
        }
        let stamp = if self.latency {
            workload::read_stamp(&self.stamp, line)
        } else {
            None
        };
        tally.event(seq, stamp, now);
        Ok(())
    }

    fn data(&mut self, data: &[u8], tally: &mut Tally, now: u64) -> Result<()> {
        let mut start = 0;
        if !self.carry.is_empty() {
            match memchr::memchr(b'\n', data) {
                None => {
                    self.carry.extend_from_slice(data);
                    return Ok(());
                }
                Some(end) => {
                    let mut line = std::mem::take(&mut self.carry);
                    line.extend_from_slice(&data[..end]);
                    self.line(&line, tally, now)?;
                    line.clear();
                    self.carry = line;
                    start = end + 1;
                }
            }
        }
        let rest = &data[start..];
        let mut from = 0;
        for end in memchr::memchr_iter(b'\n', rest) {
            self.line(&rest[from..end], tally, now)?;
            from = end + 1;
        }
        self.carry.extend_from_slice(&rest[from..]);
        Ok(())
    }
}

impl Reader for NdjsonReader {
    fn read<'a>(
        &'a mut self,
        tally: &'a mut Tally,
        clock: &'a Clock,
    ) -> BoxFuture<'a, Result<bool>> {
        async move {
            match self.body.frame().await {
                None => Ok(false),
                Some(Err(e)) => Err(anyhow!(e).context("reading the stream")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let now = clock.now_ns();
                        self.data(&data, tally, now)?;
                    }
                    Ok(true)
                }
            }
        }
        .boxed()
    }
}

/// A request in flight on one connection; gives the connection back with the seqs.
type InFlight = JoinHandle<Result<(SendRequest<Full<Bytes>>, Option<(u64, u64)>)>>;

/// Batched `POST /diag/masterEvents`, `window` connections, one request each.
struct HttpProducer {
    addr: SocketAddr,
    idle: Vec<SendRequest<Full<Bytes>>>,
    in_flight: VecDeque<InFlight>,
    bodies: Bodies,
    first: Option<u64>,
    last: u64,
}

impl HttpProducer {
    async fn new(addr: SocketAddr, setup: &Setup) -> Result<HttpProducer> {
        let mut idle = Vec::new();
        for _ in 0..setup.window.max(1) {
            idle.push(connect::<Full<Bytes>>(addr).await?);
        }
        Ok(HttpProducer {
            addr,
            idle,
            in_flight: VecDeque::new(),
            bodies: Bodies::new(setup),
            first: None,
            last: 0,
        })
    }

    fn note(&mut self, seqs: Option<(u64, u64)>) {
        if let Some((a, b)) = seqs {
            self.first = Some(self.first.map_or(a, |f| f.min(a)));
            self.last = self.last.max(b);
        }
    }

    async fn complete_oldest(&mut self) -> Result<()> {
        if let Some(handle) = self.in_flight.pop_front() {
            let (sender, seqs) = handle.await.context("an ingest task failed")??;
            self.idle.push(sender);
            self.note(seqs);
        }
        Ok(())
    }
}

/// The NDJSON bodies a producer sends: the mix's events in order, stamped when
/// asked.
struct Bodies {
    /// Throughput bodies: the mix in batches, built once.
    prebuilt: Vec<Bytes>,
    batch: usize,
    mix: std::sync::Arc<Mix>,
}

impl Bodies {
    fn new(setup: &Setup) -> Bodies {
        let batch = setup.batch.max(1);
        let n = setup.mix.templates.len() / batch;
        let prebuilt = (0..n)
            .map(|k| setup.mix.body((k * batch) as u64, batch))
            .collect();
        Bodies {
            prebuilt,
            batch,
            mix: std::sync::Arc::clone(&setup.mix),
        }
    }

    /// Events `start..start + n`: a prebuilt body when it is exactly one.
    fn get(&self, start: u64, n: usize, stamp_ns: Option<u64>) -> Bytes {
        let batch = self.batch as u64;
        if stamp_ns.is_none() && n == self.batch && start % batch == 0 && !self.prebuilt.is_empty()
        {
            return self.prebuilt[((start / batch) % self.prebuilt.len() as u64) as usize].clone();
        }
        let mut out = Vec::with_capacity(n * 256);
        for k in 0..n as u64 {
            let t = self.mix.get(start + k);
            let at = out.len();
            out.extend_from_slice(&t.line);
            if let (Some(ns), Some(slot)) = (stamp_ns, t.stamp_at) {
                workload::stamp(&mut out[at..], slot, ns);
            }
        }
        Bytes::from(out)
    }
}

async fn post(
    mut sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    body: Bytes,
) -> Result<(SendRequest<Full<Bytes>>, Option<(u64, u64)>)> {
    tokio::time::timeout(REQUEST_TIMEOUT, sender.ready())
        .await
        .context("connection not ready in time")?
        .context("ingest connection")?;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/diag/masterEvents")
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Full::new(body))
        .context("building a request")?;
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
        .await
        .context("ingest timed out")?
        .context("POST /diag/masterEvents")?;
    let status = resp.status();
    let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
        .await
        .context("ingest reply timed out")?
        .context("ingest reply")?
        .to_bytes();
    if status != StatusCode::OK {
        bail!(
            "ingest answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    #[derive(serde::Deserialize)]
    struct Accepted {
        seqs: Vec<u64>,
    }
    let reply: Accepted = serde_json::from_slice(&body).context("ingest reply JSON")?;
    let seqs = match reply.seqs.as_slice() {
        [a, b] => Some((*a, *b)),
        _ => None,
    };
    Ok((sender, seqs))
}

impl Producer for HttpProducer {
    fn send(&mut self, start: u64, n: usize, stamp_ns: Option<u64>) -> BoxFuture<'_, Result<()>> {
        async move {
            while self.idle.is_empty() {
                self.complete_oldest().await?;
            }
            let body = self.bodies.get(start, n, stamp_ns);
            let sender = self.idle.pop().context("no connection")?;
            self.in_flight
                .push_back(tokio::spawn(post(sender, self.addr, body)));
            Ok(())
        }
        .boxed()
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(u64, u64)>> {
        async move {
            while !self.in_flight.is_empty() {
                self.complete_oldest().await?;
            }
            Ok((self.first.unwrap_or(1), self.last))
        }
        .boxed()
    }
}

/// The body of a feed: batches as the producer hands them over.
type FeedBody = http_body_util::StreamBody<
    futures_util::stream::BoxStream<
        'static,
        Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
    >,
>;

/// `POST /diag/masterEvents?stream=1` feeds whose bodies carry the batches as they
/// are produced (`--master-events-ingest feed`), `window` of them on their own
/// connections, taking batches in turn (so that the server parses `window` at
/// once, as it does `window` requests); each is answered when it ends.
struct FeedProducer {
    feeds: Vec<Feed>,
    /// The feed the next batch goes to.
    turn: usize,
    bodies: Bodies,
}

/// One feed: batches to its body (dropped to end it), and its reply.
struct Feed {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    reply: Option<JoinHandle<Result<(StatusCode, Bytes)>>>,
}

impl Feed {
    async fn open(addr: SocketAddr) -> Result<Feed> {
        let mut sender = connect::<FeedBody>(addr).await?;
        // Two batches in the body's queue: the producer waits when the server
        // falls behind, as it does for a request's reply.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let frames =
            futures_util::StreamExt::boxed(futures_util::stream::unfold(rx, |mut rx| async move {
                let data = rx.recv().await?;
                Some((Ok(hyper::body::Frame::data(data)), rx))
            }));
        let req = Request::builder()
            .method(Method::POST)
            .uri("/diag/masterEvents?stream=1")
            .header(header::HOST, addr.to_string())
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(http_body_util::StreamBody::new(frames))
            .context("building the feed request")?;
        let reply = tokio::spawn(async move {
            tokio::time::timeout(REQUEST_TIMEOUT, sender.ready())
                .await
                .context("connection not ready in time")?
                .context("feed connection")?;
            let resp = sender
                .send_request(req)
                .await
                .context("POST /diag/masterEvents?stream=1")?;
            let status = resp.status();
            let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
                .await
                .context("feed reply timed out")?
                .context("feed reply")?
                .to_bytes();
            Ok((status, body))
        });
        Ok(Feed {
            tx: Some(tx),
            reply: Some(reply),
        })
    }

    async fn send(&mut self, body: Bytes) -> Result<()> {
        let tx = self.tx.as_ref().context("the feed has ended")?;
        if tokio::time::timeout(REQUEST_TIMEOUT, tx.send(body))
            .await
            .context("the feed stalled")?
            .is_err()
        {
            // The request ended early: its reply says why.
            let (status, body) = self.end().await?;
            bail!(
                "the feed ended early: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// Ends the body and waits for the reply.
    async fn end(&mut self) -> Result<(StatusCode, Bytes)> {
        self.tx = None;
        let reply = self
            .reply
            .take()
            .context("the feed's reply was taken already")?;
        tokio::time::timeout(REQUEST_TIMEOUT, reply)
            .await
            .context("the feed's reply did not come in time")?
            .context("the feed task failed")?
    }
}

impl FeedProducer {
    async fn new(addr: SocketAddr, setup: &Setup) -> Result<FeedProducer> {
        let mut feeds = Vec::new();
        for _ in 0..setup.window.max(1) {
            feeds.push(Feed::open(addr).await?);
        }
        Ok(FeedProducer {
            feeds,
            turn: 0,
            bodies: Bodies::new(setup),
        })
    }
}

impl Producer for FeedProducer {
    fn send(&mut self, start: u64, n: usize, stamp_ns: Option<u64>) -> BoxFuture<'_, Result<()>> {
        async move {
            let body = self.bodies.get(start, n, stamp_ns);
            let k = self.turn % self.feeds.len();
            self.turn = self.turn.wrapping_add(1);
            self.feeds[k].send(body).await
        }
        .boxed()
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(u64, u64)>> {
        async move {
            #[derive(serde::Deserialize)]
            struct Fed {
                seqs: Vec<u64>,
            }
            let (mut first, mut last) = (u64::MAX, 0);
            for feed in &mut self.feeds {
                let (status, body) = feed.end().await?;
                if status != StatusCode::OK {
                    bail!(
                        "a feed answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                let fed: Fed = serde_json::from_slice(&body).context("feed reply JSON")?;
                if let [a, b] = fed.seqs.as_slice() {
                    first = first.min(*a);
                    last = last.max(*b);
                }
            }
            Ok(if first == u64::MAX {
                (1, 0)
            } else {
                (first, last)
            })
        }
        .boxed()
    }
}
