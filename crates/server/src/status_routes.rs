//! The status routes: `GET /cluster` (this node, its master, its archive and
//! sinks), `GET /metrics`, `GET /health`, `GET /ready`, `GET /` (to `/ui`) and
//! the 404 of a path no route has.
//!
//! Owns: their handlers. Promises: `/health` and `/ready` answer without
//! credentials; `/cluster` and `/metrics` describe every event, so a token with a
//! filter is refused them (the route table's `Unscoped`).

use super::*;

/// `GET /cluster`: this node, its master, its link to it, its archive and sinks.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct ClusterStatus<'a> {
    #[serde(flatten)]
    view: &'a ClusterView,
    #[serde(flatten)]
    health: ClusterHealth,
    /// The last seq this node's archive holds.
    last_seq: u64,
    /// The oldest seq it still retains (`None` when empty).
    oldest_seq: Option<u64>,
    /// How many events the archive retains.
    archive_capacity: usize,
    /// The archive's history id (docs/api.md, "Histories").
    history: &'a str,
    /// The last seq committed (shown to readers, acknowledged to publishers).
    committed_seq: u64,
    /// Every configured sink's state.
    sinks: Vec<master_events_router::SinkStatus>,
}

pub(crate) async fn cluster(State(state): State<Arc<AppState>>) -> Response {
    let view = state.cluster.borrow().clone();
    json_response(
        StatusCode::OK,
        &ClusterStatus {
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

pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut resp = (StatusCode::OK, state.metrics.render()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

pub(crate) async fn health() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// Readiness, no auth (like `/health`): 200 on the master, or on a follower whose
/// master is reachable, takes its events and whose replica caught up; else 503
/// with the reason.
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.ingest.health().and_then(|h| h.not_ready) {
        None => json_response(StatusCode::OK, &serde_json::json!({"ready": true})),
        Some(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"ready": false, "reason": reason}),
        ),
    }
}

/// `GET /`: the live page is where a browser pointed at the server goes.
pub(crate) async fn root() -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui"));
    resp
}

/// A path the route table does not hold (the guard asked for the read role first).
pub(crate) async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        format!("no such route; see {}", routes::listing()),
    )
}
