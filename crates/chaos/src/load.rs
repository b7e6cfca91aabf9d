//! The load on the cluster while faults happen, and what it saw.
//!
//! Owns: the writers (each POSTs small batches of `rebalanceStageEvent`s to a
//! random node at a bounded rate and records every reply), the burst (one large
//! POST), the consumer (streams `/diag/masterEvents` from one node, resuming after
//! its last `seq` when the connection breaks) and the master monitor (asks every
//! node `GET /cluster` ten times a second).
//!
//! Promises: every event carries a marker unique in the run, `chaos:WRITER:K`, in its
//! free-form `event` field, so the checker can find each acknowledged event; every
//! request has a timeout; every task stops when its stop flag is raised (a writer
//! after its request in flight).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cluster::view_of;

/// How long a writer waits for a reply (a follower answers 202 after 10 s).
pub const POST_TIMEOUT: Duration = Duration::from_secs(15);

/// Seconds since the Unix epoch (the clock the nodes stamp `ts` with).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The marker of writer `writer`'s `k`th event.
pub fn marker(writer: &str, k: u64) -> String {
    format!("chaos:{writer}:{k}")
}

/// Splits a marker into its writer and number.
pub fn parse_marker(marker: &str) -> Option<(&str, u64)> {
    let rest = marker.strip_prefix("chaos:")?;
    let (writer, k) = rest.rsplit_once(':')?;
    Some((writer, k.parse().ok()?))
}

/// The NDJSON body for events with these markers.
pub fn body(markers: &[String]) -> String {
    markers
        .iter()
        .map(|m| {
            format!(
                "{{\"type\":\"rebalanceStageEvent\",\"stage\":[\"chaos\"],\"event\":\"{m}\"}}\n"
            )
        })
        .collect()
}

/// What a POST got back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// `200`: sequenced (and replicated) — acknowledged.
    Acked,
    /// `202`: queued on the node, not yet confirmed.
    Queued,
    /// Another status.
    Status(u16),
    /// No reply (connection refused or reset, timeout).
    NoReply,
}

/// One POST and its reply.
#[derive(Clone, Debug, Serialize)]
pub struct Write {
    /// The node it was sent to.
    pub node: usize,
    /// The markers of its events, in body order.
    pub markers: Vec<String>,
    /// The reply.
    pub outcome: Outcome,
    /// When the reply (or the failure) came, seconds since the epoch.
    pub replied_at: f64,
}

/// POSTs `markers` to `base` and records the reply.
pub async fn post(
    http: &reqwest::Client,
    base: &str,
    node: usize,
    markers: Vec<String>,
    timeout: Duration,
) -> Write {
    let result = http
        .post(format!("{base}/diag/masterEvents"))
        .header("Content-Type", "application/x-ndjson")
        .body(body(&markers))
        .timeout(timeout)
        .send()
        .await;
    let outcome = match result {
        Ok(r) => {
            let status = r.status().as_u16();
            // Read the reply whole: a 200 counts only once it has arrived.
            match (status, r.bytes().await) {
                (200, Ok(_)) => Outcome::Acked,
                (202, Ok(_)) => Outcome::Queued,
                (_, Ok(_)) => Outcome::Status(status),
                (_, Err(_)) => Outcome::NoReply,
            }
        }
        Err(_) => Outcome::NoReply,
    };
    Write {
        node,
        markers,
        outcome,
        replied_at: now(),
    }
}

/// How the writers load the cluster.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Writers running at once.
    pub writers: usize,
    /// Events per POST.
    pub batch: usize,
    /// Events per second over all writers.
    pub rate: f64,
}

/// Starts the writers; each records its POSTs into `log` until `stop` is raised.
pub fn spawn_writers(
    config: &WriterConfig,
    bases: Vec<String>,
    seed: u64,
    http: reqwest::Client,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Write>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let writers = config.writers.max(1);
    let batch = config.batch.max(1);
    let per_writer = (config.rate / writers as f64).max(0.1);
    let interval = Duration::from_secs_f64(batch as f64 / per_writer);
    (0..writers)
        .map(|w| {
            let (bases, http, stop, log) = (bases.clone(), http.clone(), stop.clone(), log.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9));
            tokio::spawn(async move {
                let name = format!("w{w}");
                let mut k = 0u64;
                let mut next = tokio::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let node = rng.random_range(0..bases.len());
                    let markers: Vec<String> =
                        (k..k + batch as u64).map(|j| marker(&name, j)).collect();
                    k += batch as u64;
                    let write = post(&http, &bases[node], node, markers, POST_TIMEOUT).await;
                    if let Ok(mut l) = log.lock() {
                        l.push(write);
                    }
                    next += interval;
                    tokio::time::sleep_until(next).await;
                    // After a long wait, do not rush to make up for it.
                    let now = tokio::time::Instant::now();
                    if next + interval < now {
                        next = now;
                    }
                }
            })
        })
        .collect()
}

/// What the consumer received, in order.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Consumed {
    /// `(seq, marker)` of every event line, in arrival order.
    pub events: Vec<(u64, Option<String>)>,
    /// `(fromSeq, toSeq)` of every `gap` frame.
    pub gaps: Vec<(u64, u64)>,
    /// For every `reset` frame, how many events had arrived before it (the stream
    /// then starts again from the archive's start, in another history).
    pub resets: Vec<usize>,
    /// The history the last stream named (sent back on a resume).
    pub history: Option<String>,
    /// How many times the stream was opened.
    pub connections: u64,
    /// The node it read from last.
    pub node: usize,
}

impl Consumed {
    /// The last seq received (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.events.last().map(|(s, _)| *s).unwrap_or(0)
    }
}

/// Starts the consumer: it streams from `bases[first]`, resuming with `since=`
/// after the last seq it received; after three failed attempts in a row on a node
/// it moves to the next one.
pub fn spawn_consumer(
    bases: Vec<String>,
    first: usize,
    http: reqwest::Client,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Consumed>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut node = first;
        let mut failures = 0;
        while !stop.load(Ordering::Relaxed) {
            let (since, history) = out
                .lock()
                .map(|c| (c.last_seq(), c.history.clone()))
                .unwrap_or_default();
            if let Ok(mut c) = out.lock() {
                c.connections += 1;
                c.node = node;
            }
            let mut url = format!(
                "{}/diag/masterEvents?since={since}&heartbeat=1",
                bases[node]
            );
            if let Some(h) = history {
                url.push_str(&format!("&history={h}"));
            }
            let got = read_stream(&http, &url, &stop, &out).await;
            if got {
                failures = 0;
            } else {
                failures += 1;
                if failures >= 3 {
                    node = (node + 1) % bases.len();
                    failures = 0;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Reads one stream until it ends, breaks, or stays silent 3 s (heartbeats come
/// every second); whether anything arrived.
async fn read_stream(
    http: &reqwest::Client,
    url: &str,
    stop: &AtomicBool,
    out: &Mutex<Consumed>,
) -> bool {
    let Ok(resp) = http
        .get(url)
        .timeout(Duration::from_secs(3600))
        .send()
        .await
    else {
        return false;
    };
    if !resp.status().is_success() {
        return false;
    }
    if let Some(h) = resp
        .headers()
        .get("Master-Events-History")
        .and_then(|h| h.to_str().ok())
    {
        if let Ok(mut c) = out.lock() {
            c.history = Some(h.to_owned());
        }
    }
    let mut stream = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut any = false;
    while !stop.load(Ordering::Relaxed) {
        let chunk = match tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            _ => break,
        };
        any = true;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            let Ok(mut c) = out.lock() else { continue };
            match v["type"].as_str() {
                Some("heartbeat") => {
                    if let Some(h) = v["history"].as_str() {
                        c.history = Some(h.to_owned());
                    }
                }
                Some("reset") => {
                    let at = c.events.len();
                    c.resets.push(at);
                    c.history = v["history"].as_str().map(str::to_owned);
                }
                Some("gap") => {
                    let from = v["fromSeq"].as_u64().unwrap_or(0);
                    let to = v["toSeq"].as_u64().unwrap_or(0);
                    c.gaps.push((from, to));
                }
                _ => {
                    if let Some(seq) = v["seq"].as_u64() {
                        let m = v["event"]
                            .as_str()
                            .filter(|e| e.starts_with("chaos:"))
                            .map(str::to_owned);
                        c.events.push((seq, m));
                    }
                }
            }
        }
    }
    any
}

/// One poll of every node: how many said they are master.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MasterSample {
    /// When, seconds since the epoch.
    pub at: f64,
    /// Nodes that answered `is_master: true`.
    pub masters: usize,
}

/// Starts the monitor: every 100 ms it asks each node `GET /cluster` (300 ms
/// timeout) and records how many say they are master.
pub fn spawn_monitor(
    bases: Vec<String>,
    http: reqwest::Client,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<MasterSample>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let views = futures_util::future::join_all(
                bases
                    .iter()
                    .map(|b| view_of(&http, b, Duration::from_millis(300))),
            )
            .await;
            let masters = views.iter().flatten().filter(|v| v.is_master).count();
            if let Ok(mut o) = out.lock() {
                o.push(MasterSample { at: now(), masters });
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_splits_back_into_its_writer_and_number() {
        assert_eq!(parse_marker(&marker("w2", 17)), Some(("w2", 17)));
        assert_eq!(parse_marker("chaos:w2:x"), None);
        assert_eq!(parse_marker("w2:17"), None);
    }

    #[test]
    fn a_body_has_one_catalog_line_per_marker() {
        let b = body(&[marker("w0", 0), marker("w0", 1)]);
        let lines: Vec<serde_json::Value> = b
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["type"], "rebalanceStageEvent");
        assert_eq!(lines[1]["event"], "chaos:w0:1");
    }
}
