//! The node-to-node routes: `POST /cluster/forward` (events forwarded to the
//! master) and `POST /cluster/replicated`, `GET /cluster/vote`, `GET /cluster/log`
//! (the replication protocol, owned by the cluster layer through [`Ingest::peer`]).
//!
//! Owns: the handlers and [`is_cluster_peer`], who counts as another node.
//!
//! Promises: only another node (the cluster secret; with none configured, an
//! `admin` user) reaches them, never a token, whatever its role (checked by the
//! route table's guard with [`routes::Access::Node`]).

use super::*;

/// `POST /cluster/replicated`, `GET /cluster/vote`, `GET /cluster/log`: requests
/// between the nodes of a cluster (the replication protocol, owned by the cluster
/// layer through [`Ingest::peer`]). Need the cluster secret when one is configured.
pub(crate) async fn peer_route(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
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
pub(crate) fn is_cluster_peer(state: &AppState, headers: &HeaderMap) -> bool {
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
pub(crate) async fn post_forward(
    State(state): State<Arc<AppState>>,
    req: Request<Body>,
) -> Response {
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
            return if crate::over_body_limit(&e) {
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body is over the limit of {limit} bytes"),
                )
            } else {
                error_response(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {}", crate::error_chain(&e)),
                )
            };
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
