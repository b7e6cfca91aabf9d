//! The HTTP API of master-events, on hyper 1 (axum routes the requests).
//!
//! Owns: the listener and its accept loop, the guard in front of every route
//! (the table is [`routes`]), authentication of a request, and graceful shutdown.
//! The routes live in their own modules: `diag` (the stream and ingest), `feed`
//! (`?stream=1` ingest), `peer_routes` (node to node), `schema_routes`,
//! `status_routes` (`/cluster`, `/metrics`, `/health`, `/ready`, the 404), `ui`;
//! the `http` sink entry in `http_sink` ([`HttpSinkConfig`]).
//!
//! | route | role | what |
//! |---|---|---|
//! | `GET /diag/masterEvents` | read | the stream (see [`stream`]) |
//! | `POST /diag/masterEvents` | write | ingest NDJSON (see [`ingest`]) |
//! | `GET /schemas/`, `GET /schemas/{path}` | read | the published JSON Schemas |
//! | `GET /cluster` | read | this node, the master it sees, the discovery backend |
//! | `GET /metrics` | read | Prometheus text format |
//! | `GET /health` | none | liveness |
//! | `GET /ready` | none | readiness: master, or follower in touch with it (503 + reason) |
//! | `GET /ui`, `GET /ui/` | read | the live page (`src/ui.rs`, `ui/`) |
//!
//! Promises:
//! - Every protected route answers 401 with `WWW-Authenticate: Basic` without valid
//!   credentials (an expired token: 401 saying so), and 403 when the user's or
//!   token's role does not allow it.
//! - A token's filter ([`tokens`]) is ANDed with every stream it reads (NDJSON,
//!   SSE, `o=1`, `since=`; the `/ui` page reads those); a token with a filter is
//!   refused `/cluster` and `/metrics`, which describe every event; no token is
//!   taken for the cluster secret on the node-to-node routes.
//! - With no users configured, the server refuses a non-loopback listen address
//!   unless `insecure_no_auth` is set ([`ServerConfig::check_exposure`]).
//! - A connection that does not finish sending its request head within
//!   `header_read_timeout` is closed (the first one whatever the protocol, counted
//!   from accept); one bad client never stalls another.
//! - What one client may hold is bounded: connections per address, idle time,
//!   request bodies that stall or trickle, body bytes buffered per user and in all,
//!   failed authentications per address ([`limits`], `conn`; docs/configuration.md,
//!   "Limits").
//! - With [`ServerConfig::tls`] every connection is TLS (HTTP/1.1 or HTTP/2 by
//!   ALPN), its handshake under the first-request deadline ([`tls`]).
//! - [`Server::run`] returns after shutdown was asked for, every stream has ended
//!   (streams end at once) and open connections were given up to
//!   `shutdown_grace` to finish.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod asyncapi;
pub mod auth;
mod body_parse;
mod coalesce;
mod conn;
mod diag;
mod feed;
mod h1stream;
mod h2serve;
pub mod hooks;
mod http_sink;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod openapi;
mod parse_helpers;
mod peer_routes;
mod repoll;
pub mod routes;
mod schema_routes;
mod status_routes;
pub mod stream;
#[cfg(test)]
mod testwake;
pub mod tls;
pub mod tokens;
mod ui;

pub use http_sink::HttpSinkConfig;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use master_events_events::{published, EventType};
use master_events_router::{Filter, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use auth::{AuthOutcome, Role, Users};
use hooks::{Ingest, IngestError, IngestFuture, IngestOutcome, RouterIngest};
use metrics::Metrics;
use stream::{Format, StreamBody, StreamQuery};

use diag::{get_stream, ingest_reply, post_ingest, publish};
use feed::{feed, stream_param};
use peer_routes::{is_cluster_peer, peer_route, post_forward};
use schema_routes::{schema_file, schema_index};
use status_routes::{cluster, health, metrics, not_found, ready, root};

/// The default ingest body limit: 16 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// The default idle heartbeat interval of streams.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// Streams (requests) an HTTP/2 connection may have open at once, told to the
/// client in its settings; a stream past them is reset with `REFUSED_STREAM`.
pub const H2_MAX_STREAMS_PER_CONNECTION: u32 = 200;

/// What `GET /cluster` reports, supplied by whoever runs the server (the cluster
/// layer updates it when the master changes).
#[derive(Clone, Debug, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// The master this node sees (`None` while unknown).
    pub master: Option<String>,
    /// Whether this node is the master.
    pub is_master: bool,
    /// The master's term (increases at each change of master).
    pub epoch: u64,
    /// The discovery backend (`static`, `etcd`).
    pub discovery: String,
}

/// How this node's link to the master is doing, read live at each `GET /cluster`
/// and `GET /ready` (the cluster layer supplies it: [`hooks::Ingest::health`]).
#[derive(Clone, Debug, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHealth {
    /// Whether the master answers this node (always `true` on the master itself).
    pub master_reachable: bool,
    /// Seconds since this node last heard from the master (`None` on the master,
    /// and before the first contact).
    pub last_contact_secs_ago: Option<f64>,
    /// How this node's events reach the master.
    pub forwarding: ForwardingHealth,
    /// What this node waits for while it has no master to follow and is not master
    /// yet (an election, or a takeover that has no quorum yet: who answered, who
    /// is trusted); `None` otherwise.
    pub waiting: Option<String>,
    /// Why this node is not ready (`None` = ready): `GET /ready` answers 503 with it.
    #[serde(skip)]
    pub not_ready: Option<String>,
}

/// The forwarding part of [`ClusterHealth`].
#[derive(Clone, Debug, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForwardingHealth {
    /// `ok`, `retrying` (the master cannot be reached or failed) or `refused` (the
    /// master refuses this node, e.g. its cluster secret).
    pub state: ForwardingState,
    /// The last failure, while the state is not `ok`.
    pub last_error: Option<String>,
    /// Events queued on this node and not yet sequenced.
    pub queued: u64,
    /// How long the oldest of them has waited, in seconds (`None` when none waits).
    pub oldest_queued_secs: Option<f64>,
    /// Why the queue journal (`serve --queue-dir`) cannot write, while it cannot:
    /// queued events are then kept in memory only (`None` when it writes, or there
    /// is no journal).
    pub journal_error: Option<String>,
}

/// See [`ForwardingHealth::state`].
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ForwardingState {
    /// Events reach the master (or this node is the master).
    Ok,
    /// Forwarding fails and is retried with backoff.
    Retrying,
    /// The master refuses this node (retried with backoff, but needs an operator).
    Refused,
}

impl ClusterHealth {
    /// A node alone: its own master, always ready.
    pub fn standalone() -> ClusterHealth {
        ClusterHealth {
            master_reachable: true,
            last_contact_secs_ago: None,
            forwarding: ForwardingHealth {
                state: ForwardingState::Ok,
                last_error: None,
                queued: 0,
                oldest_queued_secs: None,
                journal_error: None,
            },
            waiting: None,
            not_ready: None,
        }
    }
}

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Ingest body limit in bytes.
    pub body_limit: usize,
    /// Default idle heartbeat of streams (`None` = off); `?heartbeat=` overrides it.
    pub heartbeat: Option<Duration>,
    /// Time a client has to send a request head; for a connection's first request,
    /// counted from accept whatever the protocol (see [`limits`]).
    pub header_read_timeout: Duration,
    /// How long shutdown waits for open connections after ending the streams.
    pub shutdown_grace: Duration,
    /// Allow a non-loopback address without users.
    pub insecure_no_auth: bool,
    /// Most stream connections open at once (more get 503).
    pub max_streams: usize,
    /// A filter every stream applies on top of its query (from the `http` sink's
    /// configuration).
    pub stream_filter: Option<Filter>,
    /// What one client may hold of the server: connections, idle time, body bytes,
    /// failed authentications (see [`limits`]). `header_read_timeout` is also the
    /// deadline of a connection's first request, whatever its protocol.
    pub limits: limits::Limits,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) from these files instead of plain
    /// HTTP (see [`tls`]).
    pub tls: Option<tls::TlsFiles>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            body_limit: DEFAULT_BODY_LIMIT,
            heartbeat: Some(DEFAULT_HEARTBEAT),
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(1),
            insecure_no_auth: false,
            max_streams: 20_000,
            stream_filter: None,
            limits: limits::Limits::default(),
            tls: None,
        }
    }
}

/// Why an address cannot be listened on, in the operator's terms, with what to do.
fn bind_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => "another process listens there; choose another port, or --listen 127.0.0.1:0 for a free one".to_owned(),
        std::io::ErrorKind::AddrNotAvailable => "no network interface of this machine has that address".to_owned(),
        std::io::ErrorKind::PermissionDenied => "not allowed (ports below 1024 need privileges); choose a port above 1023".to_owned(),
        _ => error.to_string(),
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No users and a non-loopback address without `insecure_no_auth`.
    #[error("refusing to listen on {0} without authentication: configure users (MASTER_EVENTS_USERS or [[users]]) or pass --insecure-no-auth")]
    Exposed(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {}", bind_reason(error))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// The TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

impl ServerConfig {
    /// Refuses to expose an unauthenticated server beyond loopback.
    pub fn check_exposure(&self, users: &Users) -> Result<(), ServerError> {
        if users.is_empty() && !self.listen.ip().is_loopback() && !self.insecure_no_auth {
            return Err(ServerError::Exposed(self.listen));
        }
        Ok(())
    }
}

struct AppState {
    router: Router,
    users: Users,
    metrics: Arc<Metrics>,
    config: ServerConfig,
    cluster: tokio::sync::watch::Receiver<ClusterView>,
    shutdown: CancellationToken,
    /// Ends every stream once the server stops accepting (see [`Server::run`]).
    streams_stop: stream::StreamsStop,
    ingest: Arc<dyn Ingest>,
    guards: Arc<limits::Guards>,
}

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    addr: SocketAddr,
    tls: Option<tls::Tls>,
}

/// Asks a running server to stop (cheap to clone).
#[derive(Clone, Debug)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// Ends every stream and stops accepting connections.
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

impl Server {
    /// Binds the listener. Refuses a non-loopback address without users (unless
    /// allowed), and says so in the log when it serves without authentication.
    pub async fn bind(
        config: ServerConfig,
        router: Router,
        users: Users,
        cluster: tokio::sync::watch::Receiver<ClusterView>,
    ) -> Result<Server, ServerError> {
        config.check_exposure(&users)?;
        let tls = config.tls.as_ref().map(tls::Tls::load).transpose()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|error| ServerError::Bind {
                    addr: config.listen,
                    error,
                })?;
        let addr = listener.local_addr().map_err(|error| ServerError::Bind {
            addr: config.listen,
            error,
        })?;
        if users.is_empty() {
            tracing::warn!(
                %addr,
                "no users configured: authentication is off{}",
                if addr.ip().is_loopback() { " (listening on loopback only)" } else { " (--insecure-no-auth)" }
            );
        }
        let metrics = Metrics::new(router.clone());
        let guards = limits::Guards::new(&config.limits, metrics.body_bytes_buffered().clone());
        let router_for_ingest = router.clone();
        let streams_stop = stream::StreamsStop::new(router.clone());
        Ok(Server {
            listener,
            addr,
            tls,
            state: Arc::new(AppState {
                router,
                users,
                metrics,
                config,
                cluster,
                shutdown: CancellationToken::new(),
                streams_stop,
                ingest: Arc::new(RouterIngest(router_for_ingest)),
                guards,
            }),
        })
    }

    /// Sends ingested events to `ingest` instead of straight into the router (a
    /// cluster node routes them to the master). Call before [`Server::run`].
    pub fn with_ingest(mut self, ingest: Arc<dyn Ingest>) -> Server {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.ingest = ingest;
        }
        self
    }

    /// The address actually bound (with the port picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What reloads the TLS certificate and key (`None` without TLS).
    pub fn tls_reloader(&self) -> Option<tls::TlsReloader> {
        self.tls.as_ref().map(tls::Tls::reloader)
    }

    /// A handle that stops [`Server::run`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.state.shutdown.clone())
    }

    /// The server's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.state.metrics)
    }

    /// Serves until shut down.
    pub async fn run(self) {
        let app = app(Arc::clone(&self.state));
        // hyper serves HTTP/1 only: an HTTP/2 connection (its preface) is served
        // with `h2` on one task a connection (h2serve.rs, which holds the HTTP/2
        // settings; at most H2_MAX_STREAMS_PER_CONNECTION streams at once, so
        // 100,000 streams take 500 connections, not 100,000 descriptors).
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.state.config.header_read_timeout)
            // Request bodies are read in steps of up to 64 KiB: a producer sending
            // 1,000-event requests one at a time went 6-15% faster than with
            // hyper's smallest cap, 8 KiB (docs/benchmarks-history.md). Streams do not pay
            // for it: over HTTP/1.1 they are served without hyper (h1stream.rs),
            // and an idle one holds 4.7 KiB either way; before that, this cap
            // made an idle stream cost 22.5 KiB instead of 10. It also caps a
            // request head (hyper answers 431 above it).
            .max_buf_size(64 * 1024);
        let builder = Arc::new(builder);
        let shutdown = self.state.shutdown.clone();
        let guards = Arc::clone(&self.state.guards);
        // Every connection task holds a receiver: shutdown tells them through it, then
        // waits for them all to go.
        let (open_conns, _) = tokio::sync::watch::channel(());
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(ok) => ok,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let client = limits::ClientKey::of(peer.ip());
            let Some(slot) = guards.conns.try_open(client) else {
                // Closed at once (dropped): one address holds its most connections.
                self.state.metrics.connection_closed("per_ip_limit");
                if let Some(n) = guards.warn_per_ip.note() {
                    tracing::warn!(
                        %client,
                        refused = n,
                        max = guards.limits.max_connections_per_ip,
                        "refused connections over the per-address limit"
                    );
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            let activity = conn::Activity::new();
            let service = conn::ConnService::new(
                app.clone(),
                Arc::clone(&activity),
                client,
                Arc::clone(&guards),
                Arc::clone(&self.state.metrics),
            );
            let metrics = Arc::clone(&self.state.metrics);
            let driver = conn::Driver {
                activity,
                first_request: self.state.config.header_read_timeout,
                idle: guards.limits.idle_timeout,
                shutdown: open_conns.subscribe(),
                guards: Arc::clone(&guards),
                metrics: Arc::clone(&self.state.metrics),
                client,
            };
            // Everything logged for this connection carries its peer.
            let span = tracing::info_span!("conn", %peer);
            if let Some(tls) = self.tls.clone() {
                // The handshake runs on the connection's task, within its deadline.
                let builder = Arc::clone(&builder);
                tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        if let Some(stream) = tls.accept(stream, &driver).await {
                            let conn = Box::pin(h1stream::serve(stream, service, builder));
                            let conn = conn::drive(conn, |c| c.close(), driver);
                            contain_panic(repoll::Repoll::new(conn), &metrics).await;
                        }
                        drop(slot);
                    },
                    span,
                ));
                continue;
            }
            let conn = Box::pin(h1stream::serve(stream, service, Arc::clone(&builder)));
            let fut = tracing::Instrument::instrument(
                async move {
                    let conn = conn::drive(conn, |c| c.close(), driver);
                    contain_panic(repoll::Repoll::new(conn), &metrics).await;
                    drop(slot);
                },
                span,
            );
            tokio::spawn(fut);
        }
        drop(self.listener);
        // Every stream ends (so that its connection can close).
        self.state.streams_stop.stop();
        // Every connection closes gracefully (HTTP/2: GOAWAY) once its request ends.
        let _ = open_conns.send(());
        let grace = self.state.config.shutdown_grace;
        if tokio::time::timeout(grace, open_conns.closed())
            .await
            .is_err()
        {
            tracing::info!("closing connections still open after {grace:?}");
        }
    }
}

/// Runs a connection's task, so that a panic in it (a request's handler or its
/// response body: a bug) closes that connection only, is logged at ERROR, and is
/// counted (`master_events_response_panics_total`); the server serves on. HTTP/2
/// contains a panic to its own stream first (`h2serve`).
async fn contain_panic(conn: impl std::future::Future<Output = ()>, metrics: &Metrics) {
    use futures_util::FutureExt as _;
    if std::panic::AssertUnwindSafe(conn)
        .catch_unwind()
        .await
        .is_err()
    {
        metrics.response_panicked();
        tracing::error!(
            "a request's handler or response panicked: its connection was closed, the \
             server serves on"
        );
    }
}

/// The handler of a path of the route table ([`routes::ROUTES`]); `None` for a
/// path it does not know.
fn handler(path: &str) -> Option<axum::routing::MethodRouter<Arc<AppState>>> {
    use axum::routing::post;
    Some(match path {
        "/" => get(root),
        "/diag/masterEvents" => get(get_stream).post(post_ingest),
        "/schemas" | "/schemas/" => get(schema_index),
        "/schemas/{*path}" => get(schema_file),
        "/cluster" => get(cluster),
        "/cluster/forward" => post(post_forward),
        "/cluster/replicated" => post(peer_route),
        "/cluster/vote" | "/cluster/log" => get(peer_route),
        "/metrics" => get(metrics),
        "/health" => get(health),
        "/ready" => get(ready),
        "/ui" | "/ui/" => get(ui::page),
        openapi::PATH => get(schema_routes::openapi_document),
        asyncapi::PATH => get(schema_routes::asyncapi_document),
        _ => return None,
    })
}

/// The routes of the table, each behind the guard that checks who may call it
/// ([`guard`]), and the latency metrics around everything.
///
/// # Panics
///
/// If a path of the route table has no handler (a programming error, caught by
/// every test that starts a server).
fn app(state: Arc<AppState>) -> axum::Router {
    let mut router = axum::Router::new();
    for route in routes::ROUTES {
        let Some(handler) = handler(route.path) else {
            panic!(
                "the route table lists {} but no handler serves it",
                route.path
            );
        };
        router = router.route(route.path, handler);
    }
    router
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            observe_latency,
        ))
        .with_state(state)
}

/// Checks every request against the route table before a handler sees it (deny by
/// default, see [`routes`]): the method must be one the route takes (else `405`),
/// and the caller must be allowed by its [`routes::Access`]; a path the table does
/// not hold needs the `read` role before it gets its `404`. The allowed
/// [`Caller`] goes to the handler in the request's extensions.
async fn guard(
    State(state): State<Arc<AppState>>,
    mut req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    use routes::Access;
    let access = match routes::find(req.uri().path()) {
        Some(route) => match route.access(req.method()) {
            Some(access) => access,
            None => {
                let mut resp = error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{} takes {}", route.path, route.allow()),
                );
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(route.allow()));
                return resp;
            }
        },
        None => Access::Role(Role::Read),
    };
    let caller = match access {
        Access::Public => Caller {
            name: None,
            scope: None,
        },
        Access::Role(role) => match authorize(&state, req.headers(), role) {
            Ok(caller) => caller,
            Err(resp) => return *resp,
        },
        Access::Unscoped(role) => match authorize(&state, req.headers(), role) {
            Ok(Caller {
                name,
                scope: Some(_),
            }) => {
                state.metrics.auth_failure();
                return error_response(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{} has a filter: this route describes every event, so it is for \
                         users and tokens without one",
                        name.as_deref().unwrap_or("this token")
                    ),
                );
            }
            Ok(caller) => caller,
            Err(resp) => return *resp,
        },
        Access::Node => {
            if !is_cluster_peer(&state, req.headers()) {
                state.metrics.auth_failure();
                let mut resp =
                    error_response(StatusCode::UNAUTHORIZED, "the cluster secret is required");
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"master-events cluster\""),
                );
                return resp;
            }
            Caller {
                name: Some("(cluster)".to_owned()),
                scope: None,
            }
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

async fn observe_latency(
    State(state): State<Arc<AppState>>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let route = routes::label(req.uri().path());
    let method = method_name(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .observe(route, method, response.status().as_u16(), started.elapsed());
    response
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The body of every error answer: what is wrong, in words.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct ErrorBody {
    /// What is wrong (never a secret).
    error: String,
}

/// An error and its causes in one line, each said once: a body that could not be
/// read is `error reading a body from connection: invalid chunk size line`, not
/// the first half alone. For errors of a request's own transport (no secret).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let said = cause.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        next = cause.source();
    }
    text
}

/// Whether reading a body failed because it is over the limit given to
/// `axum::body::to_bytes` (a `413`), and not because it broke off or was malformed.
fn over_body_limit(e: &axum::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
}

fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(
        status,
        &ErrorBody {
            error: message.into(),
        },
    )
}

/// Who a request is allowed as (put in the request's extensions by [`guard`]).
#[derive(Clone)]
struct Caller {
    /// The user (or `token NAME`); `None` when no users are configured.
    name: Option<String>,
    /// A token's filter and its expression: all it may read.
    scope: Option<(Arc<Filter>, String)>,
}

/// Checks credentials and role: `Ok(caller)` says who is allowed, `Err(response)`
/// is the refusal to send.
fn authorize(state: &AppState, headers: &HeaderMap, needed: Role) -> Result<Caller, Box<Response>> {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let user = |name: String| Caller {
        name: Some(name),
        scope: None,
    };
    match state.users.check(header) {
        AuthOutcome::Open => Ok(Caller {
            name: None,
            scope: None,
        }),
        AuthOutcome::User { name, role } if role.allows(needed) => Ok(user(name)),
        AuthOutcome::Cluster => Ok(user("(cluster)".to_owned())),
        AuthOutcome::Token {
            name,
            role,
            filter,
            filter_text,
        } if role.allows(needed) => Ok(Caller {
            name: Some(format!("token {name:?}")),
            scope: filter.map(|f| (f, filter_text.unwrap_or_default())),
        }),
        AuthOutcome::User { name, role } => {
            state.metrics.auth_failure();
            Err(Box::new(error_response(
                StatusCode::FORBIDDEN,
                format!("user {name:?} has role {role}; this needs {needed} (or admin)"),
            )))
        }
        AuthOutcome::Token { name, role, .. } => {
            state.metrics.auth_failure();
            Err(Box::new(error_response(
                StatusCode::FORBIDDEN,
                format!("token {name:?} has role {role}; this needs {needed} (or admin)"),
            )))
        }
        AuthOutcome::ExpiredToken { name, at } => {
            state.metrics.auth_failure();
            let mut resp = error_response(
                StatusCode::UNAUTHORIZED,
                format!("token {name:?} expired at {at}"),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"master-events\", error=\"invalid_token\", \
                     error_description=\"the token expired\"",
                ),
            );
            Err(Box::new(resp))
        }
        AuthOutcome::Unauthenticated => {
            state.metrics.auth_failure();
            let mut resp = error_response(
                StatusCode::UNAUTHORIZED,
                "credentials required (HTTP Basic)",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"master-events\", charset=\"UTF-8\""),
            );
            Err(Box::new(resp))
        }
    }
}

/// The caller [`guard`] let through; a request that did not pass it (a handler
/// mounted outside the table) is refused.
fn guarded(req: &Request<Body>) -> Result<Caller, Box<Response>> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| {
        Box::new(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this route is not in the route table",
        ))
    })
}

/// The response header of a stream that names its history.
pub const HISTORY_HEADER: &str = "master-events-history";

/// The response header of a stream that this server's own stream filter (its `http`
/// sink's `filter`) narrows, whatever the request asked.
pub const SERVER_FILTER_HEADER: &str = "master-events-server-filter";

/// The response header of a stream that the filter of the token it was asked with
/// narrows, whatever the request asked.
pub const TOKEN_FILTER_HEADER: &str = "master-events-token-filter";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_task_that_panics_is_contained_counted_and_ended() {
        let router = Router::start(Default::default());
        let metrics = Metrics::new(router.clone());
        let panicking = async { panic!("a handler that panics") };
        contain_panic(panicking, &metrics).await;
        contain_panic(async {}, &metrics).await;
        let text = metrics.render();
        assert!(
            text.contains("master_events_response_panics_total 1\n"),
            "{text}"
        );
        router.shutdown().await;
    }
}
