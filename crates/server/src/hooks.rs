//! Where ingested events go: the [`Ingest`] hook between the HTTP API and the
//! cluster layer.
//!
//! Owns: the contract of `POST /diag/masterEvents` (events a client sends to this
//! node) and `POST /cluster/forward` (events another node forwards to the master).
//!
//! Promises: a standalone node ([`RouterIngest`]) sequences ingested events into
//! its own router at once; a cluster node routes them to the master (directly if it
//! is the master) and answers once they are sequenced, or says they are queued.
//! Forwarded events keep their `origin` and `originSeq`, so the master drops what a
//! re-sending origin already delivered.

use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;

use master_events_events::Record;
use master_events_router::{Router, RouterError};

/// What became of ingested events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Sequenced with these seqs (empty when all were duplicates).
    Sequenced(RangeInclusive<u64>),
    /// Accepted into this node's queue; they will be sequenced when a master is
    /// reachable (the queue keeps them until then).
    Queued {
        /// How many.
        accepted: usize,
    },
}

/// Why ingested events were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// This node is not the master of that epoch (for forwarded events).
    #[error("this node is not the master (the master it knows is {master:?}, epoch {epoch})")]
    NotMaster {
        /// The master this node knows of.
        master: Option<String>,
        /// Its epoch.
        epoch: u64,
    },
    /// The node cannot take events now (shutting down, queue full).
    #[error("{0}")]
    Unavailable(String),
    /// A forwarded line lacks what forwarding needs.
    #[error("{0}")]
    BadRequest(String),
}

/// The future an [`Ingest`] hook returns.
pub type IngestFuture<'a> =
    Pin<Box<dyn Future<Output = Result<IngestOutcome, IngestError>> + Send + 'a>>;

/// Where the HTTP API sends ingested events.
pub trait Ingest: Send + Sync + 'static {
    /// Events a client sent to this node (their envelopes are cleared).
    fn ingest(&self, records: Vec<Record>) -> IngestFuture<'_>;

    /// [`Ingest::ingest`] of events held in parts (a request parsed on several
    /// threads): the records of every part, in order, are one batch. The default
    /// joins the parts and calls [`Ingest::ingest`]; a hook that can take the
    /// parts as they are spares that copy of every record.
    fn ingest_parts(&self, parts: Vec<Vec<Record>>) -> IngestFuture<'_> {
        let records = if parts.len() <= 1 {
            parts.into_iter().next().unwrap_or_default()
        } else {
            let mut records = Vec::with_capacity(parts.iter().map(Vec::len).sum());
            for part in parts {
                records.extend(part);
            }
            records
        };
        self.ingest(records)
    }

    /// Events another node forwards to this one as master of `epoch` (each keeps
    /// its `origin` and `originSeq`). The default refuses: only cluster nodes
    /// take forwarded events.
    fn forwarded(&self, epoch: u64, records: Vec<Record>) -> IngestFuture<'_> {
        let _ = records;
        Box::pin(async move {
            Err(IngestError::NotMaster {
                master: None,
                epoch,
            })
        })
    }

    /// A request of another node of the cluster, already authenticated with the
    /// cluster secret: `route` is the path after `/cluster/` (`vote`, `log`,
    /// `replicated`), `query` its query string. The cluster layer owns these
    /// routes' protocol (see the cluster crate); the default answers 404.
    fn peer(&self, route: &str, query: Option<&str>) -> PeerFuture<'_> {
        let route = route.to_owned();
        let _ = query;
        Box::pin(async move {
            PeerReply::text(
                404,
                format!("no cluster route /cluster/{route} on this node"),
            )
        })
    }

    /// How this node's link to the master is doing, for `GET /cluster` and
    /// `GET /ready`. The default (`None`) is a node alone: healthy and ready.
    fn health(&self) -> Option<crate::ClusterHealth> {
        None
    }
}

/// A body streamed to a peer.
pub type PeerBody =
    Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send>>;

/// The answer to a peer's request (see [`Ingest::peer`]).
pub struct PeerReply {
    /// The HTTP status.
    pub status: u16,
    /// The content type.
    pub content_type: &'static str,
    /// The body (may be endless: a replication stream).
    pub body: PeerBody,
}

impl PeerReply {
    /// A short plain-text answer.
    pub fn text(status: u16, text: String) -> PeerReply {
        PeerReply::whole(status, "text/plain; charset=utf-8", text.into_bytes())
    }

    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> PeerReply {
        PeerReply::whole(status, "application/json", value.to_string().into_bytes())
    }

    fn whole(status: u16, content_type: &'static str, body: Vec<u8>) -> PeerReply {
        let chunk = bytes::Bytes::from(body);
        PeerReply {
            status,
            content_type,
            body: Box::pin(futures_util::stream::once(async move { Ok(chunk) })),
        }
    }
}

impl std::fmt::Debug for PeerReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerReply")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .finish()
    }
}

/// The future of [`Ingest::peer`].
pub type PeerFuture<'a> = Pin<Box<dyn Future<Output = PeerReply> + Send + 'a>>;

/// A standalone node: events go straight into its router.
pub struct RouterIngest(pub Router);

fn router_error(e: RouterError) -> IngestError {
    IngestError::Unavailable(e.to_string())
}

impl Ingest for RouterIngest {
    fn ingest(&self, records: Vec<Record>) -> IngestFuture<'_> {
        self.ingest_parts(vec![records])
    }

    fn ingest_parts(&self, parts: Vec<Vec<Record>>) -> IngestFuture<'_> {
        Box::pin(async move {
            self.0
                .publish_parts(parts)
                .await
                .map(IngestOutcome::Sequenced)
                .map_err(router_error)
        })
    }
}
