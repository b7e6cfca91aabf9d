//! Redis Streams under test: `redis-server` as a child process, driven over raw RESP.
//!
//! Owns: starting `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no`
//! in the run's directory; the producer (pipelined `XADD bench MAXLEN ~ N * e
//! PAYLOAD`, up to `window` batches of replies outstanding); the readers (`XREAD
//! BLOCK 100 COUNT 1024 STREAMS bench LAST_ID`, each from its own last id, on its
//! own connection); idle readers (`XREAD BLOCK 0 STREAMS idle $`).
//!
//! Promises: a reader starts at id `0-0` on a stream that does not exist yet, so it
//! sees every entry from the first; the payload carries the producer's sequence
//! number, so entries trimmed before a reader got to them show as holes (Redis
//! itself does not say: they are silent losses).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::resp::{self, Cursor};
use super::{Kind, Producer, Reader, Server, Setup};
use crate::proc::{self, Child};
use crate::tally::{Clock, Tally};
use crate::workload::{self, Mix};

/// The stream key.
pub(crate) const KEY: &[u8] = b"bench";
/// Entries per XREAD reply at most (this project's blocks hold up to 1024 events).
const READ_COUNT: &[u8] = b"1024";
/// How long an XREAD blocks before returning empty (ms).
const BLOCK_MS: &[u8] = b"100";
/// How long a reply may take before the run gives up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `redis-server`.
pub struct Redis {
    child: Child,
    addr: SocketAddr,
    setup: Setup,
}

/// A connection with a read buffer.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        })
    }

    /// Reads until one complete reply is buffered; returns its length.
    async fn reply_len(&mut self) -> Result<usize> {
        loop {
            if let Some(end) = resp::value_end(&self.buf, 0)? {
                return Ok(end);
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .context("Redis reply timed out")?
                .context("reading from Redis")?;
            if n == 0 {
                bail!("Redis closed the connection");
            }
        }
    }

    /// Sends one command and returns its reply's bytes.
    async fn call(&mut self, args: &[&[u8]]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        resp::command(&mut out, args);
        self.stream
            .write_all(&out)
            .await
            .context("writing to Redis")?;
        let len = self.reply_len().await?;
        let reply = self.buf.split_to(len).to_vec();
        if reply.first() == Some(&b'-') {
            bail!(
                "Redis error: {}",
                String::from_utf8_lossy(&reply).trim_end()
            );
        }
        Ok(reply)
    }
}

impl Redis {
    /// Starts `redis-server` on a free port and waits for `PING`.
    pub async fn start(setup: &Setup) -> Result<Redis> {
        let port = proc::free_port()?;
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            // Protected mode answers `-DENIED` to a client from any address but
            // 127.0.0.1, and the watchers scenario connects from 127.0.0.2 and up;
            // the server still listens on 127.0.0.1 only.
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &setup.dir.display().to_string(),
            "--maxclients",
            &setup.max_connections.max(10_100).to_string(),
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (mut child, _) = Child::spawn("redis", &setup.redis_bin, &args, &setup.dir, false)?;
        let addr = proc::loopback(port);
        let ready = proc::wait_until("redis-server", Duration::from_secs(10), || async move {
            let mut c = Conn::open(addr).await?;
            let reply = c.call(&[b"PING"]).await?;
            if reply != b"+PONG\r\n" {
                bail!("PING answered {:?}", String::from_utf8_lossy(&reply));
            }
            Ok(())
        })
        .await;
        if let Err(e) = ready {
            child.check_running()?;
            return Err(e);
        }
        Ok(Redis {
            child,
            addr,
            setup: setup.clone(),
        })
    }

    async fn info_field(&self, section: &[u8], field: &str) -> Result<Option<u64>> {
        let mut c = Conn::open(self.addr).await?;
        let reply = c.call(&[b"INFO", section]).await?;
        let text = String::from_utf8_lossy(&reply);
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix(field))
            .filter_map(|l| l.strip_prefix(':'))
            .find_map(|v| v.trim().parse().ok()))
    }
}

impl Server for Redis {
    fn kind(&self) -> Kind {
        Kind::Redis
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn rss_bytes(&self) -> Result<u64> {
        self.child.rss_bytes()
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn reader(&self, latency: bool) -> BoxFuture<'static, Result<Box<dyn Reader>>> {
        let addr = self.addr;
        async move {
            let conn = Conn::open(addr).await?;
            Ok(Box::new(StreamReader {
                conn,
                last_id: b"0-0".to_vec(),
                out: Vec::new(),
                written: 0,
                stamp: workload::stamp_finder(),
                latency,
            }) as Box<dyn Reader>)
        }
        .boxed()
    }

    fn producer(&self) -> BoxFuture<'static, Result<Box<dyn Producer>>> {
        let addr = self.addr;
        let setup = self.setup.clone();
        async move { Ok(Box::new(XaddProducer::new(addr, &setup).await?) as Box<dyn Producer>) }
            .boxed()
    }

    fn fill_retained(&self, total: u64) -> BoxFuture<'_, Result<()>> {
        async move {
            let mut p = XaddProducer::new(self.addr, &self.setup).await?;
            super::produce_all(&mut p, total, self.setup.batch).await
        }
        .boxed()
    }

    fn retained(&self) -> BoxFuture<'_, Result<u64>> {
        async move {
            let mut c = Conn::open(self.addr).await?;
            let reply = c.call(&[b"XLEN", KEY]).await?;
            let text = String::from_utf8_lossy(&reply);
            text.trim_start_matches(':')
                .trim()
                .parse()
                .with_context(|| format!("XLEN answered {text:?}"))
        }
        .boxed()
    }

    fn store_bytes(&self) -> BoxFuture<'_, Result<Option<u64>>> {
        async move {
            let mut c = Conn::open(self.addr).await?;
            let reply = c
                .call(&[b"MEMORY", b"USAGE", KEY, b"SAMPLES", b"0"])
                .await?;
            let text = String::from_utf8_lossy(&reply);
            Ok(text.trim_start_matches(':').trim().parse().ok())
        }
        .boxed()
    }

    fn idle_connection(&self) -> BoxFuture<'static, Result<TcpStream>> {
        let addr = self.addr;
        async move {
            let mut s = TcpStream::connect(addr).await.context("connect")?;
            let mut out = Vec::new();
            resp::command(
                &mut out,
                &[b"XREAD", b"BLOCK", b"0", b"STREAMS", b"idle", b"$"],
            );
            s.write_all(&out).await.context("write")?;
            Ok(s)
        }
        .boxed()
    }

    fn check_idle(&self, n: usize) -> BoxFuture<'_, Result<()>> {
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let blocked = self
                    .info_field(b"clients", "blocked_clients")
                    .await?
                    .unwrap_or(0);
                if blocked as usize >= n {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    bail!("only {blocked} of {n} idle readers are blocked in XREAD");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
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

/// One XREAD reader.
struct StreamReader {
    conn: Conn,
    last_id: Vec<u8>,
    /// The XREAD being written, and how much of it is written (cancel safety).
    out: Vec<u8>,
    written: usize,
    stamp: memchr::memmem::Finder<'static>,
    latency: bool,
}

impl StreamReader {
    fn reply(&mut self, len: usize, tally: &mut Tally, now: u64) -> Result<()> {
        let reply = self.conn.buf.split_to(len);
        for_each_entry(&reply, |id, seq, line| {
            self.last_id.clear();
            self.last_id.extend_from_slice(id);
            let stamp = if self.latency {
                workload::read_stamp(&self.stamp, line)
            } else {
                None
            };
            tally.event(seq, stamp, now);
        })
    }
}

/// Walks one complete XREAD reply (null when it timed out, or `[[key, [[id,
/// [field, value, ...]], ...]]]`), calling `each` with every entry's id and its
/// framed payload's sequence number and line, in order.
pub(crate) fn for_each_entry<'r>(
    reply: &'r [u8],
    mut each: impl FnMut(&'r [u8], u64, &'r [u8]),
) -> Result<()> {
    let mut c = Cursor::new(reply);
    let Some(streams) = c.array()? else {
        return Ok(());
    };
    for _ in 0..streams {
        c.array()?;
        c.bulk()?;
        let entries = c.array()?.unwrap_or(0);
        for _ in 0..entries {
            c.array()?;
            let id = c.bulk()?.unwrap_or_default();
            let fields = c.array()?.unwrap_or(0);
            let mut payload = None;
            for _ in 0..fields / 2 {
                if c.bulk()? == Some(b"e") {
                    payload = c.bulk()?;
                } else {
                    c.skip()?;
                }
            }
            let Some((seq, line)) = payload.and_then(workload::split_framed) else {
                bail!("an XREAD entry without a payload");
            };
            each(id, seq, line);
        }
    }
    Ok(())
}

impl Reader for StreamReader {
    fn read<'a>(
        &'a mut self,
        tally: &'a mut Tally,
        clock: &'a Clock,
    ) -> BoxFuture<'a, Result<bool>> {
        async move {
            if self.out.is_empty() {
                resp::command(
                    &mut self.out,
                    &[
                        b"XREAD",
                        b"COUNT",
                        READ_COUNT,
                        b"BLOCK",
                        BLOCK_MS,
                        b"STREAMS",
                        KEY,
                        &self.last_id,
                    ],
                );
                self.written = 0;
            }
            while self.written < self.out.len() {
                let n = self
                    .conn
                    .stream
                    .write(&self.out[self.written..])
                    .await
                    .context("writing XREAD")?;
                if n == 0 {
                    return Ok(false);
                }
                self.written += n;
            }
            loop {
                if let Some(len) = resp::value_end(&self.conn.buf, 0)? {
                    let now = clock.now_ns();
                    self.out.clear();
                    self.reply(len, tally, now)?;
                    return Ok(true);
                }
                if self.conn.buf.capacity() - self.conn.buf.len() < 16 * 1024 {
                    self.conn.buf.reserve(256 * 1024);
                }
                let n = self
                    .conn
                    .stream
                    .read_buf(&mut self.conn.buf)
                    .await
                    .context("reading XREAD")?;
                if n == 0 {
                    return Ok(false);
                }
            }
        }
        .boxed()
    }
}

/// Pipelined XADD.
struct XaddProducer {
    conn: Conn,
    /// Replies outstanding, per batch sent.
    pending: VecDeque<usize>,
    window: usize,
    mix: std::sync::Arc<Mix>,
    maxlen: Vec<u8>,
    out: Vec<u8>,
    last: u64,
}

impl XaddProducer {
    async fn new(addr: SocketAddr, setup: &Setup) -> Result<XaddProducer> {
        Ok(XaddProducer {
            conn: Conn::open(addr).await?,
            pending: VecDeque::new(),
            window: setup.window.max(1),
            mix: std::sync::Arc::clone(&setup.mix),
            maxlen: setup.retain.to_string().into_bytes(),
            out: Vec::with_capacity(setup.batch * 300),
            last: 0,
        })
    }

    async fn drain_one_batch(&mut self) -> Result<()> {
        let Some(n) = self.pending.pop_front() else {
            return Ok(());
        };
        for _ in 0..n {
            let len = self.conn.reply_len().await?;
            let reply = self.conn.buf.split_to(len);
            if reply.first() == Some(&b'-') {
                bail!(
                    "XADD failed: {}",
                    String::from_utf8_lossy(&reply).trim_end()
                );
            }
        }
        Ok(())
    }
}

impl Producer for XaddProducer {
    fn send(&mut self, start: u64, n: usize, stamp_ns: Option<u64>) -> BoxFuture<'_, Result<()>> {
        async move {
            self.out.clear();
            for k in 0..n as u64 {
                let i = start + k;
                let t = self.mix.get(i);
                // XADD bench MAXLEN ~ N * e PAYLOAD
                self.out.extend_from_slice(b"*8\r\n");
                for a in [&b"XADD"[..], KEY, b"MAXLEN", b"~", &self.maxlen, b"*", b"e"] {
                    resp::bulk_header(&mut self.out, a.len());
                    self.out.extend_from_slice(a);
                    self.out.extend_from_slice(b"\r\n");
                }
                resp::bulk_header(&mut self.out, workload::framed_payload_len(&t.line));
                workload::write_framed(&mut self.out, t, i + 1, stamp_ns);
                self.out.extend_from_slice(b"\r\n");
            }
            tokio::time::timeout(REPLY_TIMEOUT, self.conn.stream.write_all(&self.out))
                .await
                .context("XADD write timed out")?
                .context("writing XADD")?;
            self.last = start + n as u64;
            self.pending.push_back(n);
            while self.pending.len() > self.window {
                self.drain_one_batch().await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(u64, u64)>> {
        async move {
            while !self.pending.is_empty() {
                self.drain_one_batch().await?;
            }
            Ok((1, self.last))
        }
        .boxed()
    }
}
