//! One accepted connection, from accept to close.
//!
//! Owns: the service every connection runs ([`ConnService`]: it notes each
//! request's arrival and end, answers 429 to an address with no failed
//! authentication left, and notes 401s), and the task that drives the connection
//! ([`drive`]: its deadlines and its graceful close at shutdown).
//!
//! Promises:
//! - A connection that has not delivered one complete request head within the
//!   first-request deadline (`header_read_timeout`, counted from accept) is closed,
//!   whatever it sent: nothing, part of an HTTP/1 head, part of the HTTP/2 preface,
//!   or the preface and SETTINGS and no request. The deadline runs from accept in
//!   [`Activity`], so a TLS handshake done before the HTTP connection starts can be
//!   put under the same deadline (`tokio::time::timeout_at(activity.first_deadline(..))`).
//! - A connection with no request in flight (for HTTP/2: no open stream) for
//!   `idle_timeout` is closed. hyper has no such timer: its HTTP/2 keep-alive only
//!   pings, which a live but idle client answers; HTTP/1 connections are also
//!   closed by hyper's `header_read_timeout` between requests.
//! - Failed authentications are rate limited per client address before any
//!   credential is checked, except for requests presenting a Bearer token (the
//!   cluster secret of another node: a long random machine secret, and a node with
//!   a wrong one must keep being answered 401 to show it) and for `/health` and
//!   `/ready`, which need no credentials.
//! - Every close is counted in `master_events_connections_closed{reason}`; a
//!   first-request timeout is also logged at WARN (rate limited), an idle close at
//!   DEBUG (it is routine).
//! - The timer costs one wheel entry per connection, moved only when it fires: a
//!   request's arrival and end touch two atomics, nothing else.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::http::{header, HeaderValue, Request, Response, StatusCode, Version};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Instant;
use tower::util::{Oneshot, ServiceExt as _};

use crate::limits::{ClientKey, Guards};
use crate::metrics::Metrics;

/// A response extension asking that an HTTP/1 connection be closed after it (a
/// request whose body was cut: what is left of it is not read).
#[derive(Clone, Copy, Debug)]
pub struct CloseConnection;

/// What a connection has done, for its deadlines.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    /// Requests whose head arrived.
    requests: AtomicU64,
    /// Requests in flight (until their response body is done or dropped).
    active: AtomicUsize,
    /// Milliseconds after `accepted` when the last request in flight ended.
    idle_since_ms: AtomicU64,
}

/// What the timer of a connection decides when it fires.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Look again then.
    Wait(Instant),
    /// Close it, for this reason (the metric's label).
    Close(&'static str),
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            accepted: Instant::now(),
            requests: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// When the first request's head must have arrived.
    pub fn first_deadline(&self, first: Duration) -> Instant {
        self.accepted + first
    }

    fn start(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(self))
    }

    fn verdict(&self, now: Instant, first: Duration, idle: Duration) -> Verdict {
        if self.requests.load(Ordering::Acquire) == 0 {
            let deadline = self.first_deadline(first);
            return if now >= deadline {
                Verdict::Close("first_request_timeout")
            } else {
                Verdict::Wait(deadline)
            };
        }
        if self.active.load(Ordering::Acquire) > 0 {
            return Verdict::Wait(now + idle);
        }
        let since =
            self.accepted + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        let deadline = since + idle;
        if now >= deadline {
            Verdict::Close("idle_timeout")
        } else {
            Verdict::Wait(deadline)
        }
    }
}

/// A request in flight; its end is noted when dropped.
#[derive(Debug)]
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = a.accepted.elapsed().as_millis() as u64;
        a.idle_since_ms.store(ms, Ordering::Release);
        a.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The service of one connection: the routes, plus the notes its deadlines and the
/// failed-authentication limit need.
#[derive(Clone)]
pub struct ConnService {
    app: axum::Router,
    activity: Arc<Activity>,
    client: ClientKey,
    guards: Arc<Guards>,
    metrics: Arc<Metrics>,
}

impl ConnService {
    /// The service of a connection from `client`.
    pub fn new(
        app: axum::Router,
        activity: Arc<Activity>,
        client: ClientKey,
        guards: Arc<Guards>,
        metrics: Arc<Metrics>,
    ) -> ConnService {
        ConnService {
            app,
            activity,
            client,
            guards,
            metrics,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ConnFuture;

    fn call(&self, req: Request<Incoming>) -> ConnFuture {
        self.call_axum(req.map(AxumBody::new))
    }
}

impl ConnService {
    /// The service of a connection from 127.0.0.1 answering with `app`, with
    /// default limits and the metrics of `router` (for unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests(
        app: axum::Router,
        router: &master_events_router::Router,
    ) -> ConnService {
        let limits = crate::limits::Limits::default();
        ConnService::new(
            app,
            Activity::new(),
            ClientKey::of(std::net::Ipv4Addr::LOCALHOST.into()),
            Guards::new(&limits, Default::default()),
            Metrics::new(router.clone()),
        )
    }

    /// The server's metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Answers `req` as [`hyper::service::Service::call`] does, for a request not
    /// read by hyper (see [`crate::h1stream`]).
    pub fn call_axum(&self, req: Request<AxumBody>) -> ConnFuture {
        let guard = self.activity.start();
        let http1 = req.version() < Version::HTTP_2;
        // Another node presents the cluster secret (a long random machine secret,
        // docs/cluster.md) as a Bearer token: it is not rate limited, so that a node
        // with a wrong secret keeps being told so (401) and shows it.
        let limited = !req.headers().get(header::AUTHORIZATION).is_some_and(|v| {
            v.as_bytes()
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "))
        });
        if limited && !matches!(req.uri().path(), "/health" | "/ready") {
            if let Some(wait) = self.guards.auth.refused(self.client) {
                self.metrics.request_limited("auth_rate_limit");
                if let Some(n) = self.guards.warn_auth.note() {
                    tracing::warn!(
                        client = %self.client,
                        refused = n,
                        "too many failed authentications from this address: answered 429"
                    );
                }
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                let mut resp = crate::error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many failed authentications from this address; retry in {secs}s"),
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                return ConnFuture {
                    inner: None,
                    ready: Some(resp),
                    guard: Some(guard),
                    http1,
                    limited,
                    service: self.clone(),
                };
            }
        }
        ConnFuture {
            inner: Some(self.app.clone().oneshot(req)),
            ready: None,
            guard: Some(guard),
            http1,
            limited,
            service: self.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response to come of a [`ConnService`] request.
    pub struct ConnFuture {
        #[pin]
        inner: Option<Oneshot<axum::Router, Request<AxumBody>>>,
        ready: Option<Response<AxumBody>>,
        guard: Option<RequestGuard>,
        http1: bool,
        // Whether a 401 counts against the client's failed authentications.
        limited: bool,
        service: ConnService,
    }
}

impl Future for ConnFuture {
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = match this.inner.as_pin_mut() {
            Some(inner) => match ready!(inner.poll(cx)) {
                Ok(resp) => resp,
                Err(never) => match never {},
            },
            None => match this.ready.take() {
                Some(resp) => resp,
                None => crate::error_response(StatusCode::INTERNAL_SERVER_ERROR, "polled twice"),
            },
        };
        if *this.limited && resp.status() == StatusCode::UNAUTHORIZED {
            this.service.guards.auth.failed(this.service.client);
        }
        if *this.http1 && resp.extensions().get::<CloseConnection>().is_some() {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let guard = this.guard.take();
        Poll::Ready(Ok(resp.map(|inner| TrackedBody {
            inner,
            _guard: guard,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it is
    /// done or dropped.
    pub struct TrackedBody {
        #[pin]
        inner: AxumBody,
        _guard: Option<RequestGuard>,
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What [`drive`] needs besides the connection.
pub struct Driver {
    /// The connection's activity (shared with its [`ConnService`]).
    pub activity: Arc<Activity>,
    /// The first request's head must arrive within this of accept.
    pub first_request: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle: Duration,
    /// Changed (or closed) when the server shuts down; held until the connection
    /// ends, so that shutdown can wait for every connection to end. (A watch, like
    /// hyper-util's graceful watcher: its waiters are spread over several locks,
    /// which matters as every wake-up of the connection polls it.)
    pub shutdown: tokio::sync::watch::Receiver<()>,
    /// The server's limits (for the WARN throttles).
    pub guards: Arc<Guards>,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// Who is at the other end.
    pub client: ClientKey,
}

/// Runs `conn` until it ends, closing it when a deadline of its activity passes
/// (see the module's promises) and asking it to close gracefully (`close`) once
/// the server shuts down.
///
/// `conn` comes boxed, and stays where it is: moved by value, a connection (about
/// 1.5 KiB) was held by the task's future once as this function's argument, once
/// as its pinned local and once more by the caller's async block, 5.4 KiB a task
/// in all, most of an idle stream's memory (docs/benchmarks-history.md).
pub async fn drive<C, E>(mut conn: Pin<Box<C>>, close: fn(Pin<&mut C>), d: Driver)
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let Driver {
        activity,
        first_request,
        idle,
        mut shutdown,
        guards,
        metrics,
        client,
    } = d;
    let timer = tokio::time::sleep_until(activity.first_deadline(first_request));
    let mut timer = std::pin::pin!(timer);
    // Borrows the receiver, which so lives until the connection ends; a closed
    // channel (the server is gone) counts as shutdown too.
    let mut stopping = std::pin::pin!(shutdown.changed());
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%client, error = %e, "connection ended with an error");
                }
                return;
            }
            () = timer.as_mut(), if !closing => {
                match activity.verdict(Instant::now(), first_request, idle) {
                    Verdict::Wait(at) => timer.as_mut().reset(at),
                    Verdict::Close(reason) => {
                        metrics.connection_closed(reason);
                        if reason == "first_request_timeout" {
                            if let Some(n) = guards.warn_first_request.note() {
                                tracing::warn!(
                                    %client,
                                    closed = n,
                                    timeout_secs = first_request.as_secs_f64(),
                                    "closed connections that sent no complete request in time"
                                );
                            }
                        } else {
                            tracing::debug!(%client, reason, "closed an idle connection");
                        }
                        return;
                    }
                }
            }
            _ = stopping.as_mut(), if !closing => {
                close(conn.as_mut());
                closing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_task_holds_its_connection_by_pointer_however_large_it_is() {
        let router = master_events_router::Router::start(Default::default());
        let limits = crate::limits::Limits::default();
        let driver = || Driver {
            activity: Activity::new(),
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            shutdown: tokio::sync::watch::channel(()).1,
            guards: Guards::new(&limits, Default::default()),
            metrics: Metrics::new(router.clone()),
            client: ClientKey::of(std::net::Ipv4Addr::LOCALHOST.into()),
        };
        // A stand-in for hyper's connection, four times the size of the real one.
        let big = async {
            let state = [0u8; 6144];
            std::future::ready(()).await;
            Ok::<_, std::convert::Infallible>(state.len()).map(|_| ())
        };
        let small = async { Ok::<(), std::convert::Infallible>(()) };
        let with_big = drive(Box::pin(big), |_| {}, driver());
        let with_small = drive(Box::pin(small), |_| {}, driver());
        assert_eq!(
            std::mem::size_of_val(&with_big),
            std::mem::size_of_val(&with_small)
        );
        assert!(std::mem::size_of_val(&with_big) < 1024);
        router.shutdown().await;
    }

    #[test]
    fn the_first_request_deadline_then_the_idle_timeout_decide() {
        let a = Activity::new();
        let first = Duration::from_secs(10);
        let idle = Duration::from_secs(60);
        let t0 = a.accepted;
        assert_eq!(
            a.verdict(t0 + Duration::from_secs(1), first, idle),
            Verdict::Wait(t0 + first)
        );
        assert_eq!(
            a.verdict(t0 + first, first, idle),
            Verdict::Close("first_request_timeout")
        );
        let guard = a.start();
        let later = t0 + Duration::from_secs(100);
        assert_eq!(a.verdict(later, first, idle), Verdict::Wait(later + idle));
        drop(guard);
        let since = t0 + Duration::from_millis(a.idle_since_ms.load(Ordering::Acquire));
        assert_eq!(a.verdict(since, first, idle), Verdict::Wait(since + idle));
        assert_eq!(
            a.verdict(since + idle, first, idle),
            Verdict::Close("idle_timeout")
        );
    }
}
