//! `/diag/masterEvents`: the stream (`GET`, NDJSON or Server-Sent Events, see
//! [`crate::stream`]) and ingest (`POST`: a whole body, or a feed with `?stream=1`:
//! [`crate::feed`]), and the reply an ingest gets.
//!
//! Owns: the two handlers, the client origin header, and [`ingest_reply`]: what a
//! `200`, `202` or refusal says (shared with `POST /cluster/forward`).
//!
//! Promises: a handler runs only for a caller the route table's guard allowed
//! (`crate::routes`); a token's filter is ANDed with every stream it reads; an ingest
//! answers `200` only for committed events, with their seqs (docs/api.md).

use super::*;
use master_events_router::WaitGroup;

pub(crate) fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// Where this server's schemas are, as the client reached it (`http://HOST:PORT`):
/// the request's `Host` when it is a plain host name or address with an optional
/// port, else the address the server listens on.
pub(crate) fn schema_base(state: &AppState, headers: &HeaderMap) -> String {
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| state.config.listen.to_string());
    format!("{scheme}://{host}")
}

pub(crate) async fn get_stream(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
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
        state.metrics.request_limited("max_streams");
        if let Some(n) = state.guards.warn_streams.note() {
            tracing::warn!(
                refused = n,
                max = state.config.max_streams,
                "refused streams over the limit of open streams (max_streams, --max-streams): answered 503"
            );
        }
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
    let mut sub = state.router.subscribe(cursor);
    if let Some(group) = req.extensions().get::<WaitGroup>() {
        // An HTTP/2 stream waits with the other streams of its connection (a
        // group of this server's one router: it cannot be refused).
        let joined = sub.join(group);
        debug_assert!(
            joined,
            "a connection's group belongs to the server's router"
        );
    }
    let body = StreamBody::new(
        sub,
        &query,
        format,
        once_until,
        state.streams_stop.clone(),
        Arc::clone(&state.metrics),
    )
    .with_history(Arc::clone(&history), reset);
    let body = if query.cloudevents {
        body.with_cloudevents(schema_base(&state, req.headers()))
    } else {
        body
    };
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

pub(crate) async fn post_ingest(
    State(state): State<Arc<AppState>>,
    req: Request<Body>,
) -> Response {
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
    let params = match stream_param(req.uri().query()) {
        Ok(params) => params,
        Err(message) => {
            state.metrics.ingest_error("bad_query");
            return error_response(StatusCode::BAD_REQUEST, message);
        }
    };
    match params.stream {
        false => {}
        true if client_origin.is_some() => {
            state.metrics.ingest_error("bad_header");
            return error_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "header {} is for single requests, not stream=1 feeds",
                    ingest::ORIGIN_HEADER
                ),
            );
        }
        true => {
            let rules = limits::BodyRules::feed(&state.guards.limits);
            let body = state.guards.body(req.into_body(), rules, None);
            return feed(&state, body, &charge, params.legacy).await;
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
    // A long body of plain lines is parsed as it is read (see `body_parse`).
    let threads = declared.map_or(1, ingest::parts_while_read);
    let parsed = if client_origin.is_none() && !params.legacy && threads > 1 {
        use http_body_util::BodyExt;
        let mut parse = crate::body_parse::BodyParse::new(threads);
        let mut body = http_body_util::Limited::new(body, limit);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        parse.push(data);
                    }
                }
                Err(e) => return body_error(&state, axum::Error::new(e), limit),
            }
        }
        parse.finish().await
    } else {
        let body = match axum::body::to_bytes(body, limit).await {
            Ok(b) => b,
            Err(e) => return body_error(&state, e, limit),
        };
        let body = if params.legacy {
            ingest::rewrite_legacy(&body)
        } else {
            body
        };
        match &client_origin {
            Some(origin) => ingest::parse_body_of(&body, origin).map(|records| vec![records]),
            None => ingest::parse_body_in_parts(&body).await,
        }
    };
    let parts = match parsed {
        Ok(r) => r,
        Err(refusal) => {
            state.metrics.ingest_error("bad_line");
            return json_response(StatusCode::BAD_REQUEST, &refusal);
        }
    };
    let n = parts.iter().map(Vec::len).sum();
    let outcome = publish_parts(&state, parts).await;
    ingest_reply(&state, outcome, n, client_origin.is_some())
}

/// The reply to an ingest whose body could not be read: cut by a limit of the
/// guards (their status), over `limit` bytes (413), or broken off (400).
fn body_error(state: &AppState, e: axum::Error, limit: usize) -> Response {
    if let Some(cut) = limits::BodyLimitError::find(&e) {
        state.metrics.ingest_error(cut.reason());
        let resp = error_response(cut.status(), format!("cannot read the body: {cut}"));
        return state.guards.body_cut(&state.metrics, cut, resp);
    }
    if over_body_limit(&e) {
        state.metrics.ingest_error("too_large");
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is over the limit of {limit} bytes"),
        );
    }
    state.metrics.ingest_error("body_read");
    error_response(
        StatusCode::BAD_REQUEST,
        format!("cannot read the body: {}", error_chain(&e)),
    )
}

/// The client origin a request names ([`ingest::ORIGIN_HEADER`]), if any; an
/// invalid one is a `400` saying why.
pub(crate) fn client_origin(headers: &HeaderMap) -> Result<Option<String>, String> {
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
pub(crate) async fn publish(
    state: &AppState,
    records: Vec<master_events_events::Record>,
) -> Result<IngestOutcome, IngestError> {
    publish_parts(state, vec![records]).await
}

/// [`publish`] of a batch held in parts (in order), handed to the hook as they are.
pub(crate) async fn publish_parts(
    state: &AppState,
    parts: Vec<Vec<master_events_events::Record>>,
) -> Result<IngestOutcome, IngestError> {
    let mut types = [0u64; EventType::ALL.len()];
    for r in parts.iter().flatten() {
        types[r.event.event_type().index()] += 1;
    }
    let outcome = state.ingest.ingest_parts(parts).await;
    if outcome.is_ok() {
        for (ty, count) in EventType::ALL.iter().zip(types) {
            if count > 0 {
                state.metrics.ingested(*ty, count);
            }
        }
    }
    outcome
}

/// The reply to an ingest of `n` events; with `keyed` (a client origin), a `200`
/// also says how many the cluster already had.
pub(crate) fn ingest_reply(
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
