//! The ingest feed: `POST /diag/masterEvents?stream=1`, whole lines taken as they
//! arrive and sequenced in batches while the body is still coming.
//!
//! Owns: [`stream_param`] (the ingest's `stream` and `legacy` parameters), [`feed`] and its reply ([`Fed`], [`FeedRefusal`]).
//!
//! Promises: every whole line is sequenced once, in order, in batches of at most
//! [`FEED_BATCH_BYTES`]; a bad line ends the feed with a refusal that says how many
//! were taken before it (they stay taken); the body's bytes count against the
//! buffering budget while they are held.

use super::*;

/// The `stream` query parameter of an ingest: `1`/`true` for a feed, `0`/`false`
/// (or none) for one request. Other parameters are ignored, as before.
pub(crate) fn stream_param(query: Option<&str>) -> Result<IngestParams, String> {
    let mut params = IngestParams::default();
    for (name, value) in stream::parse_pairs(query) {
        let flag = match name.as_str() {
            "stream" => &mut params.stream,
            "legacy" => &mut params.legacy,
            _ => continue,
        };
        *flag = match value.as_str() {
            "1" | "true" => true,
            "0" | "false" => false,
            other => {
                return Err(format!(
                    "query parameter {name}: {other:?} is not 1, true, 0 or false"
                ))
            }
        };
    }
    Ok(params)
}

/// The query parameters of an ingest request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IngestParams {
    /// `stream=1`: take lines as they arrive ([`feed`]).
    pub stream: bool,
    /// `legacy=1`: lines of ns_server's 2012 form are rewritten in the current form
    /// before they are checked (`master_events_events::legacy`).
    pub legacy: bool,
}

/// Most bytes of whole lines a feed gathers before publishing them as one batch
/// (it publishes sooner when no more has arrived).
pub(crate) const FEED_BATCH_BYTES: usize = 256 * 1024;

/// What a feed has had taken so far: the reply at its end, and part of any refusal.
#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
pub(crate) struct Fed {
    /// Events taken.
    accepted: usize,
    /// The first and the last seq given to this feed's events (events of other
    /// publishers may lie between them); empty when none was sequenced here.
    seqs: Vec<u64>,
    /// Events queued on this node for the master (a follower's feed).
    #[serde(skip_serializing_if = "is_zero")]
    queued: usize,
}

pub(crate) fn is_zero(n: &usize) -> bool {
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
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct FeedRefusal {
    #[serde(flatten)]
    refusal: ingest::Refusal,
    #[serde(flatten)]
    fed: Fed,
}

pub(crate) fn feed_refusal(status: StatusCode, refusal: ingest::Refusal, fed: Fed) -> Response {
    json_response(status, &FeedRefusal { refusal, fed })
}

pub(crate) fn refusal(error: String) -> ingest::Refusal {
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
pub(crate) async fn feed(
    state: &AppState,
    mut body: Body,
    charge: &limits::Charge,
    legacy: bool,
) -> Response {
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
                let run = if legacy {
                    ingest::rewrite_legacy(&run)
                } else {
                    run
                };
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
                        "cannot read the body: {}; nothing from line {} on was taken",
                        crate::error_chain(&e),
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
pub(crate) async fn end_feed(
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
pub(crate) fn feed_outcome(
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
