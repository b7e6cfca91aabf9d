//! The HTTP API of master-events, on hyper 1 (axum routes the requests).
//!
//! Owns: the listener, the routes of the HTTP API (docs/api.md), authentication, metrics,
//! and graceful shutdown.
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

pub mod auth;
mod conn;
pub mod hooks;
pub mod ingest;
pub mod limits;
pub mod metrics;
mod repoll;
pub mod routes;
pub mod stream;
pub mod tls;
pub mod tokens;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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

/// The default ingest body limit: 16 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// The default idle heartbeat interval of streams.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// What `GET /cluster` reports, supplied by whoever runs the server (the cluster
/// layer updates it when the master changes).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
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
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHealth {
    /// Whether the master answers this node (always `true` on the master itself).
    pub master_reachable: bool,
    /// Seconds since this node last heard from the master (`None` on the master,
    /// and before the first contact).
    pub last_contact_secs_ago: Option<f64>,
    /// How this node's events reach the master.
    pub forwarding: ForwardingHealth,
    /// Why this node is not ready (`None` = ready): `GET /ready` answers 503 with it.
    #[serde(skip)]
    pub not_ready: Option<String>,
}

/// The forwarding part of [`ClusterHealth`].
#[derive(Clone, Debug, Serialize, PartialEq)]
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
}

/// See [`ForwardingHealth::state`].
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
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
            },
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
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.state.config.header_read_timeout)
            // hyper's smallest read buffer: an idle stream holds ~10 KiB instead of
            // ~22 KiB with a 256 KiB cap (measured, docs/benchmarks.md); it also caps
            // a request head at 8 KiB, far above any query this API takes. Bodies are
            // read in 8 KiB steps (25 reads per 1,000 events of ~200 bytes against
            // 1.5 with the larger cap, ~1% of the server's instructions), which
            // measured no slower for ingest.
            .max_buf_size(8192);
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
            let driver = conn::Driver {
                activity,
                first_request: self.state.config.header_read_timeout,
                idle: guards.limits.idle_timeout,
                shutdown: open_conns.subscribe(),
                guards: Arc::clone(&guards),
                metrics: Arc::clone(&self.state.metrics),
                client,
            };
            if let Some(tls) = self.tls.clone() {
                // The handshake runs on the connection's task, within its deadline.
                let builder = Arc::clone(&builder);
                tokio::spawn(async move {
                    if let Some(stream) = tls.accept(stream, &driver).await {
                        let conn = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .into_owned();
                        repoll::Repoll::new(conn::drive(conn, |c| c.graceful_shutdown(), driver))
                            .await;
                    }
                    drop(slot);
                });
                continue;
            }
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(async move {
                repoll::Repoll::new(conn::drive(conn, |c| c.graceful_shutdown(), driver)).await;
                drop(slot);
            });
        }
        drop(self.listener);
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

fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    json_response(
        status,
        &E {
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

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
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

async fn get_stream(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let caller = match guarded(&req) {
        Ok(caller) => caller,
        Err(resp) => return *resp,
    };
    let headers = req.headers();
    let format = if wants_sse(headers) {
        Format::Sse
    } else {
        Format::Ndjson
    };
    let last_event_id = match format {
        Format::Sse => headers.get("last-event-id").and_then(|v| v.to_str().ok()),
        Format::Ndjson => None,
    };
    let mut query =
        match StreamQuery::parse(req.uri().query(), last_event_id, state.config.heartbeat) {
            Ok(q) => q,
            Err(e) => return error_response(StatusCode::BAD_REQUEST, e.to_string()),
        };
    if let Some((scope, expr)) = &caller.scope {
        // A token reads its scope only, whatever the request asks.
        if query
            .filter
            .as_ref()
            .is_some_and(|asked| tokens::disjoint(scope, asked))
        {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} may read only the events of its filter ({expr}); this request's filter \
                     excludes all of them: the stream would never carry an event",
                    caller.name.as_deref().unwrap_or("this token")
                ),
            );
        }
        let scope = Filter::clone(scope);
        query.filter = Some(match query.filter.take() {
            Some(f) => Filter::And(vec![scope, f]),
            None => scope,
        });
    }
    if let Some(base) = &state.config.stream_filter {
        if let Some(asked) = &query.filter {
            if base
                .possible_types()
                .intersection(&asked.possible_types())
                .is_empty()
            {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "this server's stream filter (the `filter` of its `http` sink configuration) \
                     excludes every event type this request asks for: the stream would never \
                     carry an event",
                );
            }
        }
        query.filter = Some(match query.filter.take() {
            Some(f) => Filter::And(vec![base.clone(), f]),
            None => base.clone(),
        });
    }
    if state.metrics.open_streams().get() >= state.config.max_streams as i64 {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many open streams (limit {})", state.config.max_streams),
        );
    }
    let history = state.router.history();
    let is_master = state.cluster.borrow().is_master;
    // On the master, every seq the cluster committed is in its archive (a new
    // master's commit may still lag behind it: a reader waits for it); on a
    // follower, a reader may know seqs this replica does not hold yet.
    let known = if is_master {
        state.router.last_seq()
    } else {
        state.router.committed_seq()
    };
    let (cursor, reset) = stream::resolve_resume(
        &query,
        &history,
        known,
        state.router.oldest_seq(),
        is_master,
    );
    if let Some(reset) = &reset {
        tracing::info!(
            requested_history = reset.requested_history.as_deref().unwrap_or("-"),
            requested_since = reset.requested_since,
            %history,
            last_seq = reset.last_seq,
            "a stream resumes in another history or after an unknown seq: sent a reset frame"
        );
    }
    let once_until = query.once.then(|| state.router.committed_seq());
    let sub = state.router.subscribe(cursor);
    let body = StreamBody::new(
        sub,
        &query,
        format,
        once_until,
        state.shutdown.clone(),
        Arc::clone(&state.metrics),
    )
    .with_history(Arc::clone(&history), reset);
    let content_type = match format {
        Format::Ndjson => "application/x-ndjson",
        Format::Sse => "text/event-stream",
    };
    let mut resp = Response::new(Body::from_stream(body.into_stream()));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(v) = HeaderValue::from_str(&history) {
        h.insert(HISTORY_HEADER, v);
    }
    if state.config.stream_filter.is_some() {
        // Some events are never streamed by this server, whatever the request asks.
        h.insert(SERVER_FILTER_HEADER, HeaderValue::from_static("on"));
    }
    if caller.scope.is_some() {
        h.insert(TOKEN_FILTER_HEADER, HeaderValue::from_static("on"));
    }
    resp
}

/// The response header of a stream that names its history.
pub const HISTORY_HEADER: &str = "master-events-history";

/// The response header of a stream that this server's own stream filter (its `http`
/// sink's `filter`) narrows, whatever the request asked.
pub const SERVER_FILTER_HEADER: &str = "master-events-server-filter";

/// The response header of a stream that the filter of the token it was asked with
/// narrows, whatever the request asked.
pub const TOKEN_FILTER_HEADER: &str = "master-events-token-filter";

async fn post_ingest(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let user = match guarded(&req) {
        Ok(caller) => caller.name,
        Err(resp) => return *resp,
    };
    // The body's bytes count against the buffering budget until the reply.
    let charge = state.guards.budget.charge(user.as_deref());
    if let Err(e) = ingest::check_headers(req.headers()) {
        state.metrics.ingest_error("unsupported_media_type");
        return error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string());
    }
    let client_origin = match client_origin(req.headers()) {
        Ok(origin) => origin,
        Err(why) => {
            state.metrics.ingest_error("bad_header");
            return error_response(StatusCode::BAD_REQUEST, why);
        }
    };
    match stream_param(req.uri().query()) {
        Ok(false) => {}
        Ok(true) if client_origin.is_some() => {
            state.metrics.ingest_error("bad_header");
            return error_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "header {} is for single requests, not stream=1 feeds",
                    ingest::ORIGIN_HEADER
                ),
            );
        }
        Ok(true) => {
            let rules = limits::BodyRules::feed(&state.guards.limits);
            let body = state.guards.body(req.into_body(), rules, None);
            return feed(&state, body, &charge).await;
        }
        Err(message) => {
            state.metrics.ingest_error("bad_query");
            return error_response(StatusCode::BAD_REQUEST, message);
        }
    }
    let limit = state.config.body_limit;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        state.metrics.ingest_error("too_large");
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body of {} bytes is over the limit of {limit} bytes",
                declared.unwrap_or(0)
            ),
        );
    }
    let rules = limits::BodyRules::request(&state.guards.limits);
    let body = state
        .guards
        .body(req.into_body(), rules, Some(Arc::clone(&charge)));
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            if let Some(cut) = limits::BodyLimitError::find(&e) {
                state.metrics.ingest_error(cut.reason());
                let resp = error_response(cut.status(), format!("cannot read the body: {cut}"));
                return state.guards.body_cut(&state.metrics, cut, resp);
            }
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                state.metrics.ingest_error("too_large");
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body is over the limit of {limit} bytes"),
                );
            }
            state.metrics.ingest_error("body_read");
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            );
        }
    };
    let parsed = match &client_origin {
        Some(origin) => ingest::parse_body_of(&body, origin),
        None => ingest::parse_body(&body),
    };
    let records = match parsed {
        Ok(r) => r,
        Err(refusal) => {
            state.metrics.ingest_error("bad_line");
            return json_response(StatusCode::BAD_REQUEST, &refusal);
        }
    };
    let n = records.len();
    let outcome = publish(&state, records).await;
    ingest_reply(&state, outcome, n, client_origin.is_some())
}

/// The client origin a request names ([`ingest::ORIGIN_HEADER`]), if any; an
/// invalid one is a `400` saying why.
fn client_origin(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get(ingest::ORIGIN_HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(v) if ingest::is_valid_origin(v) => Ok(Some(v.to_owned())),
        _ => Err(format!(
            "header {}: 1 to 128 visible ASCII characters, without spaces",
            ingest::ORIGIN_HEADER
        )),
    }
}

/// Hands a batch to the ingest hook and, once it is taken, adds it to the per-type
/// metric (counted before the records move on; added once per type, not per event).
async fn publish(
    state: &AppState,
    records: Vec<master_events_events::Record>,
) -> Result<IngestOutcome, IngestError> {
    let mut types = [0u64; EventType::ALL.len()];
    for r in &records {
        types[r.event.event_type().index()] += 1;
    }
    let outcome = state.ingest.ingest(records).await;
    if outcome.is_ok() {
        for (ty, count) in EventType::ALL.iter().zip(types) {
            if count > 0 {
                state.metrics.ingested(*ty, count);
            }
        }
    }
    outcome
}

/// The `stream` query parameter of an ingest: `1`/`true` for a feed, `0`/`false`
/// (or none) for one request. Other parameters are ignored, as before.
fn stream_param(query: Option<&str>) -> Result<bool, String> {
    let mut stream = false;
    for (name, value) in stream::parse_pairs(query) {
        if name == "stream" {
            stream = match value.as_str() {
                "1" | "true" => true,
                "0" | "false" => false,
                other => {
                    return Err(format!(
                        "query parameter stream: {other:?} is not 1, true, 0 or false"
                    ))
                }
            };
        }
    }
    Ok(stream)
}

/// Most bytes of whole lines a feed gathers before publishing them as one batch
/// (it publishes sooner when no more has arrived).
const FEED_BATCH_BYTES: usize = 256 * 1024;

/// What a feed has had taken so far: the reply at its end, and part of any refusal.
#[derive(Debug, Default, Serialize)]
struct Fed {
    /// Events taken.
    accepted: usize,
    /// The first and the last seq given to this feed's events (events of other
    /// publishers may lie between them); empty when none was sequenced here.
    seqs: Vec<u64>,
    /// Events queued on this node for the master (a follower's feed).
    #[serde(skip_serializing_if = "is_zero")]
    queued: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Fed {
    fn add(&mut self, outcome: &IngestOutcome) {
        match outcome {
            IngestOutcome::Sequenced(range) if !range.is_empty() => {
                self.accepted += (range.end() - range.start() + 1) as usize;
                let first = self.seqs.first().copied().unwrap_or(*range.start());
                self.seqs = vec![first.min(*range.start()), *range.end()];
            }
            IngestOutcome::Sequenced(_) => {}
            IngestOutcome::Queued { accepted } => {
                self.accepted += accepted;
                self.queued += accepted;
            }
        }
    }
}

/// A feed that ends early: why, and what it had taken before.
#[derive(Serialize)]
struct FeedRefusal {
    #[serde(flatten)]
    refusal: ingest::Refusal,
    #[serde(flatten)]
    fed: Fed,
}

fn feed_refusal(status: StatusCode, refusal: ingest::Refusal, fed: Fed) -> Response {
    json_response(status, &FeedRefusal { refusal, fed })
}

fn refusal(error: String) -> ingest::Refusal {
    ingest::Refusal {
        error,
        line: None,
        field: None,
    }
}

/// `POST /diag/masterEvents?stream=1`: takes whole lines as they arrive, until
/// the body ends. One batch is with the router at a time; while it is, the next
/// one gathers what arrives (up to [`FEED_BATCH_BYTES`]), so a slow trickle is
/// published line by line and a fast producer in large batches. See the `ingest`
/// module for what it promises.
async fn feed(state: &AppState, mut body: Body, charge: &limits::Charge) -> Response {
    use http_body_util::BodyExt as _;

    let limit = state.config.body_limit;
    let mut lines = ingest::LineBatcher::new();
    let mut fed = Fed::default();
    let mut ended = false;
    // The batch with the router: its first line, and the outcome to come.
    let mut in_flight: Option<(usize, IngestFuture<'_>)> = None;
    loop {
        if in_flight.is_none() {
            let run = if ended { lines.finish() } else { lines.take() };
            if let Some((first_line, run)) = run {
                let (records, stop) = ingest::parse_lines_until(&run, first_line, limit);
                let Some(stop) = stop else {
                    if !records.is_empty() {
                        in_flight = Some((first_line, Box::pin(publish(state, records))));
                    }
                    continue;
                };
                // The lines before the refused one are taken, then the feed ends.
                if !records.is_empty() {
                    let outcome = publish(state, records).await;
                    if let Some(resp) = feed_outcome(state, &mut fed, first_line, outcome) {
                        return resp;
                    }
                }
                let (status, reason, refused) = match stop {
                    ingest::Stop::BadLine(r) => (StatusCode::BAD_REQUEST, "bad_line", r),
                    ingest::Stop::TooLong(r) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", r),
                };
                state.metrics.ingest_error(reason);
                return feed_refusal(status, refused, fed);
            }
            if ended {
                return json_response(StatusCode::OK, &fed);
            }
            if lines.unfinished() > limit {
                state.metrics.ingest_error("too_large");
                let refused = ingest::too_long(lines.next_line(), limit);
                return feed_refusal(StatusCode::PAYLOAD_TOO_LARGE, refused, fed);
            }
        }
        // Read on while the whole lines waiting are under a batch and the unfinished
        // one is within the limit.
        let reading = !ended && lines.waiting() < FEED_BATCH_BYTES && lines.unfinished() <= limit;
        tokio::select! {
            outcome = async { match in_flight.as_mut() {
                Some((_, pending)) => pending.await,
                None => std::future::pending().await,
            } } => {
                let Some((first_line, _)) = in_flight.take() else { continue };
                if let Some(resp) = feed_outcome(state, &mut fed, first_line, outcome) {
                    return resp;
                }
            }
            frame = body.frame(), if reading => match frame {
                None => ended = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        lines.push(&data);
                        // What waits to be parsed counts against the budget.
                        if let Err(over) = charge.hold(lines.waiting() + lines.unfinished()) {
                            let cut = limits::BodyLimitError::OverBudget(over);
                            let error = format!("{cut}; nothing from line {} on was taken", lines.next_line());
                            let end = (cut.status(), cut.reason(), error);
                            let resp = end_feed(state, fed, in_flight, end).await;
                            return state.guards.body_cut(&state.metrics, &cut, resp);
                        }
                    }
                }
                Some(Err(e)) => {
                    if let Some(cut) = limits::BodyLimitError::find(&e) {
                        let error = format!("{cut}; nothing from line {} on was taken", lines.next_line());
                        let end = (cut.status(), cut.reason(), error);
                        let resp = end_feed(state, fed, in_flight, end).await;
                        return state.guards.body_cut(&state.metrics, cut, resp);
                    }
                    let error = format!(
                        "cannot read the body: {e}; nothing from line {} on was taken",
                        lines.next_line()
                    );
                    let end = (StatusCode::BAD_REQUEST, "body_read", error);
                    return end_feed(state, fed, in_flight, end).await;
                }
            },
            _ = state.shutdown.cancelled() => {
                let error = format!(
                    "the server is shutting down; nothing from line {} on was taken",
                    lines.next_line()
                );
                let end = (StatusCode::SERVICE_UNAVAILABLE, "closed", error);
                return end_feed(state, fed, in_flight, end).await;
            }
        }
    }
}

/// Ends a feed early with `(status, metric reason, error)`, after settling the
/// batch with the router, so that the reply counts it.
async fn end_feed(
    state: &AppState,
    mut fed: Fed,
    in_flight: Option<(usize, IngestFuture<'_>)>,
    (status, reason, error): (StatusCode, &'static str, String),
) -> Response {
    if let Some((first_line, pending)) = in_flight {
        let outcome = pending.await;
        if let Some(resp) = feed_outcome(state, &mut fed, first_line, outcome) {
            return resp;
        }
    }
    state.metrics.ingest_error(reason);
    feed_refusal(status, refusal(error), fed)
}

/// Adds a batch's outcome to the feed; when the router refused it, the reply that
/// ends the feed.
fn feed_outcome(
    state: &AppState,
    fed: &mut Fed,
    first_line: usize,
    outcome: Result<IngestOutcome, IngestError>,
) -> Option<Response> {
    match outcome {
        Ok(outcome) => {
            fed.add(&outcome);
            None
        }
        Err(e) => {
            let (status, reason) = match &e {
                IngestError::NotMaster { .. } => (StatusCode::CONFLICT, "not_master"),
                IngestError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "closed"),
                IngestError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_line"),
            };
            state.metrics.ingest_error(reason);
            let error = format!("{e}; nothing from line {first_line} on was taken");
            Some(feed_refusal(status, refusal(error), std::mem::take(fed)))
        }
    }
}

/// The reply to an ingest of `n` events; with `keyed` (a client origin), a `200`
/// also says how many the cluster already had.
fn ingest_reply(
    state: &AppState,
    outcome: Result<IngestOutcome, IngestError>,
    n: usize,
    keyed: bool,
) -> Response {
    match outcome {
        Ok(IngestOutcome::Sequenced(range)) => {
            let seqs = if range.is_empty() {
                Vec::new()
            } else {
                vec![*range.start(), *range.end()]
            };
            let accepted = if range.is_empty() {
                0
            } else {
                (range.end() - range.start() + 1) as usize
            };
            json_response(
                StatusCode::OK,
                &ingest::Accepted {
                    accepted,
                    seqs,
                    duplicates: keyed.then(|| n.saturating_sub(accepted)),
                },
            )
        }
        Ok(IngestOutcome::Queued { accepted }) => json_response(
            StatusCode::ACCEPTED,
            &serde_json::json!({
                "accepted": accepted,
                "queued": true,
                "note": "queued on this node: they will be sequenced once the master takes them",
            }),
        ),
        Err(IngestError::NotMaster { master, epoch }) => {
            state.metrics.ingest_error("not_master");
            json_response(
                StatusCode::CONFLICT,
                &serde_json::json!({"error": "this node is not the master", "master": master, "epoch": epoch}),
            )
        }
        Err(IngestError::BadRequest(e)) => {
            state.metrics.ingest_error("bad_line");
            let _ = n;
            error_response(StatusCode::BAD_REQUEST, e)
        }
        Err(IngestError::Unavailable(e)) => {
            state.metrics.ingest_error("closed");
            error_response(StatusCode::SERVICE_UNAVAILABLE, e)
        }
    }
}

/// `POST /cluster/replicated`, `GET /cluster/vote`, `GET /cluster/log`: requests
/// between the nodes of a cluster (the replication protocol, owned by the cluster
/// layer through [`Ingest::peer`]). Need the cluster secret when one is configured.
async fn peer_route(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    if let Err(resp) = guarded(&req) {
        return *resp;
    }
    let route = req.uri().path().trim_start_matches("/cluster/").to_owned();
    let reply = state.ingest.peer(&route, req.uri().query()).await;
    let mut resp = Response::new(Body::from_stream(reply.body));
    *resp.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    resp
}

/// Whether the request comes from another node of the cluster (or from anyone
/// allowed everything, when no cluster secret is configured).
fn is_cluster_peer(state: &AppState, headers: &HeaderMap) -> bool {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match state.users.check(header) {
        AuthOutcome::Cluster => true,
        AuthOutcome::Open => !state.users.has_cluster_secret(),
        AuthOutcome::User { role, .. } => !state.users.has_cluster_secret() && role == Role::Admin,
        // A token is never another node, whatever its role.
        AuthOutcome::Token { .. } | AuthOutcome::ExpiredToken { .. } => false,
        AuthOutcome::Unauthenticated => false,
    }
}

/// `POST /cluster/forward`: events another node forwards to this master. Needs
/// the cluster secret (when one is configured) and the `X-Master-Events-Epoch`
/// the sender believes this master holds.
async fn post_forward(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    if let Err(resp) = guarded(&req) {
        return *resp;
    }
    let Some(epoch) = req
        .headers()
        .get("x-master-events-epoch")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "X-Master-Events-Epoch header required",
        );
    };
    let limit = state.config.body_limit;
    let body = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the body: {e}"),
            )
        }
    };
    let records = match ingest::parse_forwarded(&body) {
        Ok(r) => r,
        Err(refusal) => return json_response(StatusCode::BAD_REQUEST, &refusal),
    };
    let n = records.len();
    let outcome = state.ingest.forwarded(epoch, records).await;
    ingest_reply(&state, outcome, n, false)
}

#[derive(Serialize)]
struct SchemaIndex {
    schemas: Vec<&'static str>,
}

async fn schema_index() -> Response {
    json_response(
        StatusCode::OK,
        &SchemaIndex {
            schemas: published::FILES.iter().map(|(p, _)| *p).collect(),
        },
    )
}

async fn schema_file(Path(path): Path<String>) -> Response {
    match published::get(&path) {
        Some(text) => {
            let mut resp = (StatusCode::OK, text).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/schema+json"),
            );
            resp
        }
        None => error_response(
            StatusCode::NOT_FOUND,
            format!("no schema {path:?}; GET /schemas/ lists them"),
        ),
    }
}

async fn cluster(State(state): State<Arc<AppState>>) -> Response {
    #[derive(Serialize)]
    struct View<'a> {
        #[serde(flatten)]
        view: &'a ClusterView,
        #[serde(flatten)]
        health: ClusterHealth,
        last_seq: u64,
        oldest_seq: Option<u64>,
        archive_capacity: usize,
        history: &'a str,
        committed_seq: u64,
        sinks: Vec<master_events_router::SinkStatus>,
    }
    let view = state.cluster.borrow().clone();
    json_response(
        StatusCode::OK,
        &View {
            view: &view,
            health: state
                .ingest
                .health()
                .unwrap_or_else(ClusterHealth::standalone),
            last_seq: state.router.last_seq(),
            oldest_seq: state.router.oldest_seq(),
            archive_capacity: state.router.archive_capacity(),
            history: &state.router.history(),
            committed_seq: state.router.committed_seq(),
            sinks: state.metrics.sink_statuses(),
        },
    )
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut resp = (StatusCode::OK, state.metrics.render()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

async fn health() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// Readiness, no auth (like `/health`): 200 on the master, or on a follower whose
/// master is reachable, takes its events and whose replica caught up; else 503
/// with the reason.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.ingest.health().and_then(|h| h.not_ready) {
        None => json_response(StatusCode::OK, &serde_json::json!({"ready": true})),
        Some(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"ready": false, "reason": reason}),
        ),
    }
}

/// `GET /`: the live page is where a browser pointed at the server goes.
async fn root() -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui"));
    resp
}

/// A path the route table does not hold (the guard asked for the read role first).
async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        format!("no such route; see {}", routes::listing()),
    )
}

/// The `http` sink: its configuration sets what every stream of the HTTP server
/// does by default. The streams themselves are served per connection by the server,
/// so the sink built from this entry consumes nothing.
#[derive(Deserialize, schemars::JsonSchema, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Default idle heartbeat interval of streams, in seconds (0 = off); a client's
    /// `?heartbeat=` overrides it.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat: f64,
    /// Most stream connections open at once; more are answered 503.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
}

fn default_heartbeat_secs() -> f64 {
    DEFAULT_HEARTBEAT.as_secs_f64()
}

fn default_max_streams() -> usize {
    ServerConfig::default().max_streams
}

struct HttpSink;

impl master_events_router::Sink for HttpSink {
    fn run(
        self: Box<Self>,
        _input: master_events_router::SinkInput,
    ) -> master_events_router::SinkFuture {
        // The server's connections read the ring themselves; this entry only carries
        // their settings, so its own subscription is released at once.
        Box::pin(async {})
    }
}

impl master_events_router::SinkConfig for HttpSinkConfig {
    const NAME: &'static str = "http";
    const DESCRIPTION: &'static str =
        "the NDJSON / Server-Sent Events streams of GET /diag/masterEvents (settings and filter for every stream)";

    fn validate(&self) -> Result<(), String> {
        if !self.heartbeat.is_finite() || !(0.0..=86_400.0).contains(&self.heartbeat) {
            return Err(format!(
                "heartbeat must be 0 to 86400 seconds, not {}",
                self.heartbeat
            ));
        }
        if self.max_streams == 0 {
            return Err("max_streams must be at least 1".into());
        }
        Ok(())
    }

    fn build(
        self,
        _ctx: &master_events_router::SinkContext,
    ) -> Result<Box<dyn master_events_router::Sink>, master_events_router::ConfigError> {
        Ok(Box::new(HttpSink))
    }
}

master_events_router::register_sink!(HttpSinkConfig);

impl HttpSinkConfig {
    /// Applies this entry (and its filter) to a server configuration.
    pub fn apply_to(&self, config: &mut ServerConfig, filter: Option<Filter>) {
        config.heartbeat = (self.heartbeat > 0.0).then(|| Duration::from_secs_f64(self.heartbeat));
        config.max_streams = self.max_streams;
        config.stream_filter = filter;
    }
}
