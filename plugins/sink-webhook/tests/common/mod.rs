//! A webhook receiver for tests: a hyper server on loopback that records what it
//! is sent, can be taken down and brought back on the same port, can hang
//! (holding requests unanswered), and can answer with a chosen status.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use master_events_sinktest::{observe_ndjson, Observed, Target};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What one request carried (besides its body).
#[derive(Clone, Debug)]
pub struct Seen {
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub custom: Option<String>,
}

struct Inner {
    body: Mutex<Vec<u8>>,
    seen: Mutex<Vec<Seen>>,
    stalled: watch::Sender<bool>,
    status: AtomicU16,
}

pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: Mutex<Option<JoinHandle<()>>>,
    /// Extra sink keys for the kit (e.g. a longer timeout).
    pub kit_keys: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let seen = Seen {
        content_type: header("content-type"),
        authorization: header("authorization"),
        custom: header("x-team"),
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut stalled = inner.stalled.subscribe();
    let _ = stalled.wait_for(|s| !*s).await;
    let status =
        StatusCode::from_u16(inner.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
    if status.is_success() {
        lock(&inner.body).extend_from_slice(&body);
        lock(&inner.seen).push(seen);
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}

async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let inner = Arc::clone(&inner);
        connections.spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&inner), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

impl Receiver {
    /// A receiver listening on a free loopback port.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let receiver = Receiver::with_addr(addr);
        receiver.spawn(listener);
        receiver
    }

    /// A receiver that is down (its port is free, nothing listens) until `up`.
    pub async fn start_down() -> Receiver {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        Receiver::with_addr(addr)
    }

    fn with_addr(addr: SocketAddr) -> Receiver {
        Receiver {
            addr,
            inner: Arc::new(Inner {
                body: Mutex::new(Vec::new()),
                seen: Mutex::new(Vec::new()),
                stalled: watch::channel(false).0,
                status: AtomicU16::new(200),
            }),
            server: Mutex::new(None),
            kit_keys: "timeout_ms = 120000\nlinger_ms = 10".to_owned(),
        }
    }

    fn spawn(&self, listener: TcpListener) {
        let task = tokio::spawn(serve(listener, Arc::clone(&self.inner)));
        *lock(&self.server) = Some(task);
    }

    pub fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    /// Stops listening and closes every connection.
    pub fn down(&self) {
        if let Some(task) = lock(&self.server).take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.spawn(listener);
    }

    /// Answer every request with `status` from now on (the body is recorded only
    /// for 2xx).
    pub fn answer(&self, status: u16) {
        self.inner.status.store(status, Ordering::SeqCst);
    }

    /// Everything received (bodies of 2xx answers, back to back).
    pub fn received(&self) -> Vec<u8> {
        lock(&self.inner.body).clone()
    }

    /// The headers of every recorded request.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.inner.seen).clone()
    }

    /// The seqs of the events received, in order.
    pub fn seqs(&self) -> Vec<u64> {
        self.observed()
            .into_iter()
            .filter_map(|o| match o {
                Observed::Event { seq, .. } => Some(seq),
                Observed::Gap { .. } => None,
            })
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

impl Target for Receiver {
    fn config(&self) -> String {
        format!("url = {:?}\n{}", self.url(), self.kit_keys)
    }

    fn observed(&self) -> Vec<Observed> {
        observe_ndjson(&self.received())
    }

    fn stall(&self) {
        self.inner.stalled.send_replace(true);
    }

    fn resume(&self) {
        self.inner.stalled.send_replace(false);
    }
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
