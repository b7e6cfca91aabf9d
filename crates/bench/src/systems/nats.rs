//! NATS under test: `nats-server` as a child process, driven with `async-nats`.
//!
//! Owns: starting `nats-server -a 127.0.0.1 -p P` (with `-js -sd DIR` when the run
//! measures retention), the producer (core `publish` to `bench.events`, one
//! client), the readers (one client and one core subscription each), retention in
//! a JetStream memory stream (`max_messages` = the archive size, discard old), and
//! idle subscribers over raw sockets (`CONNECT`, `SUB`, `PING` → `PONG`).
//!
//! Promises: a reader is registered with the server before it is handed out (it
//! receives a probe it published after subscribing); payloads carry the producer's
//! sequence number, so what core NATS drops for a slow consumer shows as holes (it
//! does not tell the subscriber which messages: they are silent losses). Clients
//! keep `async-nats`'s defaults (64 Ki messages of subscription buffer, 2048
//! commands of send buffer).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{Kind, Producer, Reader, Server, Setup};
use crate::proc::{self, Child};
use crate::tally::{Clock, Tally};
use crate::workload::{self, Mix};

/// The subject events are published on.
pub(crate) const SUBJECT: &str = "bench.events";
/// The subject the JetStream retention stream captures.
const RETAINED_SUBJECT: &str = "bench.retained";
/// The JetStream stream's name.
const STREAM: &str = "BENCH";
/// How long one operation may take before the run gives up.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `nats-server`.
pub struct Nats {
    child: Child,
    addr: SocketAddr,
    setup: Setup,
}

async fn client(addr: SocketAddr) -> Result<async_nats::Client> {
    tokio::time::timeout(
        OP_TIMEOUT,
        async_nats::ConnectOptions::new().connect(format!("nats://{addr}")),
    )
    .await
    .context("NATS connect timed out")?
    .with_context(|| format!("cannot connect to NATS at {addr}"))
}

impl Nats {
    /// Starts `nats-server` on a free port and waits for its `INFO`.
    pub async fn start(setup: &Setup) -> Result<Nats> {
        let port = proc::free_port()?;
        let mut args: Vec<String> = ["-a", "127.0.0.1", "-p", &port.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if setup.retention {
            let store = setup.dir.join("jetstream");
            args.extend([
                "-js".to_owned(),
                "-sd".to_owned(),
                store.display().to_string(),
            ]);
        }
        let (mut child, _) = Child::spawn("nats", &setup.nats_bin, &args, &setup.dir, false)?;
        let addr = proc::loopback(port);
        let ready = proc::wait_until("nats-server", Duration::from_secs(10), || async move {
            let s = TcpStream::connect(addr).await.context("connect")?;
            let mut r = BufReader::new(s);
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(2), r.read_line(&mut line))
                .await
                .context("no INFO")?
                .context("reading INFO")?;
            if !line.starts_with("INFO ") {
                bail!("unexpected greeting {line:?}");
            }
            Ok(())
        })
        .await;
        if let Err(e) = ready {
            child.check_running()?;
            return Err(e);
        }
        Ok(Nats {
            child,
            addr,
            setup: setup.clone(),
        })
    }
}

impl Server for Nats {
    fn kind(&self) -> Kind {
        Kind::Nats
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
            let c = client(addr).await?;
            let sub = c.subscribe(SUBJECT).await.context("SUB")?;
            // Make sure the server has registered the subscription: it handles a
            // client's operations in order, so once a probe published after the SUB
            // comes back, the SUB is in place.
            let inbox = c.new_inbox();
            let mut probe = c.subscribe(inbox.clone()).await.context("SUB probe")?;
            c.publish(inbox, Bytes::from_static(b"probe"))
                .await
                .context("PUB probe")?;
            c.flush().await.context("flush")?;
            tokio::time::timeout(OP_TIMEOUT, probe.next())
                .await
                .context("the probe did not come back")?
                .ok_or_else(|| anyhow!("the probe subscription ended"))?;
            let _ = probe.unsubscribe().await;
            Ok(Box::new(SubReader {
                _client: c,
                sub,
                stamp: workload::stamp_finder(),
                latency,
            }) as Box<dyn Reader>)
        }
        .boxed()
    }

    fn producer(&self) -> BoxFuture<'static, Result<Box<dyn Producer>>> {
        let addr = self.addr;
        let mix = std::sync::Arc::clone(&self.setup.mix);
        async move {
            Ok(Box::new(PubProducer {
                client: client(addr).await?,
                mix,
                last: 0,
            }) as Box<dyn Producer>)
        }
        .boxed()
    }

    fn fill_retained(&self, total: u64) -> BoxFuture<'_, Result<()>> {
        async move {
            let c = client(self.addr).await?;
            let js = async_nats::jetstream::new(c);
            js.create_stream(async_nats::jetstream::stream::Config {
                name: STREAM.to_owned(),
                subjects: vec![RETAINED_SUBJECT.to_owned()],
                max_messages: self.setup.retain as i64,
                storage: async_nats::jetstream::stream::StorageType::Memory,
                discard: async_nats::jetstream::stream::DiscardPolicy::Old,
                ..Default::default()
            })
            .await
            .context("creating the JetStream stream (is JetStream on?)")?;
            let mut i = 0u64;
            let window = self.setup.batch.max(1) as u64;
            while i < total {
                let n = window.min(total - i);
                let mut acks = Vec::with_capacity(n as usize);
                for k in 0..n {
                    let payload = framed(&self.setup.mix, i + k, None);
                    let ack = js
                        .publish(RETAINED_SUBJECT, payload)
                        .await
                        .context("JetStream publish")?;
                    acks.push(ack);
                }
                for ack in acks {
                    tokio::time::timeout(OP_TIMEOUT, std::future::IntoFuture::into_future(ack))
                        .await
                        .context("JetStream ack timed out")?
                        .context("JetStream ack")?;
                }
                i += n;
            }
            Ok(())
        }
        .boxed()
    }

    fn retained(&self) -> BoxFuture<'_, Result<u64>> {
        async move { Ok(self.stream_state().await?.0) }.boxed()
    }

    fn store_bytes(&self) -> BoxFuture<'_, Result<Option<u64>>> {
        async move { Ok(Some(self.stream_state().await?.1)) }.boxed()
    }

    fn idle_connection(&self) -> BoxFuture<'static, Result<TcpStream>> {
        let addr = self.addr;
        async move {
            let s = TcpStream::connect(addr).await.context("connect")?;
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).await.context("reading INFO")?;
            if !line.starts_with("INFO ") {
                bail!("unexpected greeting {line:?}");
            }
            r.get_mut()
                .write_all(
                    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nSUB idle 1\r\nPING\r\n",
                )
                .await
                .context("write")?;
            loop {
                line.clear();
                if r.read_line(&mut line).await.context("reading PONG")? == 0 {
                    bail!("closed before PONG");
                }
                if line.starts_with("PONG") {
                    break;
                }
                if line.starts_with("-ERR") {
                    bail!("NATS refused: {}", line.trim_end());
                }
            }
            Ok(r.into_inner())
        }
        .boxed()
    }

    fn check_idle(&self, _n: usize) -> BoxFuture<'_, Result<()>> {
        // Each idle connection got its PONG after its SUB: it is registered.
        async { Ok(()) }.boxed()
    }

    fn check_running(&mut self) -> Result<()> {
        self.child.check_running()
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move { self.child.stop().await }.boxed()
    }
}

impl Nats {
    /// The retention stream's message count and bytes.
    async fn stream_state(&self) -> Result<(u64, u64)> {
        let c = client(self.addr).await?;
        let js = async_nats::jetstream::new(c);
        let mut stream = js.get_stream(STREAM).await.context("JetStream stream")?;
        let info = stream.info().await.context("JetStream stream info")?;
        Ok((info.state.messages, info.state.bytes))
    }
}

/// The framed payload of the `i`-th event.
fn framed(mix: &Mix, i: u64, stamp_ns: Option<u64>) -> Bytes {
    let t = mix.get(i);
    let mut out = Vec::with_capacity(workload::framed_payload_len(&t.line));
    workload::write_framed(&mut out, t, i + 1, stamp_ns);
    Bytes::from(out)
}

/// One core subscriber.
struct SubReader {
    _client: async_nats::Client,
    sub: async_nats::Subscriber,
    stamp: memchr::memmem::Finder<'static>,
    latency: bool,
}

impl SubReader {
    fn message(&self, msg: &async_nats::Message, tally: &mut Tally, now: u64) -> Result<()> {
        let Some((seq, line)) = workload::split_framed(&msg.payload) else {
            bail!("a message without a sequence number");
        };
        let stamp = if self.latency {
            workload::read_stamp(&self.stamp, line)
        } else {
            None
        };
        tally.event(seq, stamp, now);
        Ok(())
    }
}

impl Reader for SubReader {
    fn read<'a>(
        &'a mut self,
        tally: &'a mut Tally,
        clock: &'a Clock,
    ) -> BoxFuture<'a, Result<bool>> {
        async move {
            let Some(msg) = self.sub.next().await else {
                return Ok(false);
            };
            self.message(&msg, tally, clock.now_ns())?;
            // Take what else is already buffered without waiting.
            for _ in 0..1024 {
                match self.sub.next().now_or_never() {
                    Some(Some(msg)) => self.message(&msg, tally, clock.now_ns())?,
                    Some(None) => return Ok(false),
                    None => break,
                }
            }
            Ok(true)
        }
        .boxed()
    }
}

/// Core NATS publisher.
struct PubProducer {
    client: async_nats::Client,
    mix: std::sync::Arc<Mix>,
    last: u64,
}

impl Producer for PubProducer {
    fn send(&mut self, start: u64, n: usize, stamp_ns: Option<u64>) -> BoxFuture<'_, Result<()>> {
        async move {
            for k in 0..n as u64 {
                let payload = framed(&self.mix, start + k, stamp_ns);
                tokio::time::timeout(OP_TIMEOUT, self.client.publish(SUBJECT, payload))
                    .await
                    .context("NATS publish timed out")?
                    .context("NATS publish")?;
            }
            if stamp_ns.is_some() {
                // Paced sends: push them out now rather than when the buffer fills.
                tokio::time::timeout(OP_TIMEOUT, self.client.flush())
                    .await
                    .context("NATS flush timed out")?
                    .context("NATS flush")?;
            }
            self.last = start + n as u64;
            Ok(())
        }
        .boxed()
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<(u64, u64)>> {
        async move {
            tokio::time::timeout(OP_TIMEOUT, self.client.flush())
                .await
                .context("NATS flush timed out")?
                .context("NATS flush")?;
            Ok((1, self.last))
        }
        .boxed()
    }
}
