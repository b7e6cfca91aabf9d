//! The HTTP API over real TCP: streams (NDJSON and SSE), ingest, auth, limits, and
//! bad input. Each test starts its own server on a free loopback port.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use master_events_events::{catalog::*, Record};
use master_events_router::{Router, RouterConfig};
use master_events_server::auth::Users;
use master_events_server::{ClusterView, Server, ServerConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use common::TestServer;

const T: Duration = Duration::from_secs(20);

async fn start(archive: usize, users: &str, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::builder()
        .archive(archive)
        .users(users)
        .config(tweak)
        .start()
        .await
}

fn move_done(vb: u16, bucket: &str) -> Record {
    Record::new(VbucketMoveDone {
        vbucket: vb,
        bucket: bucket.into(),
    })
}

async fn publish(router: &Router, n: usize) {
    let recs = (0..n)
        .map(|i| move_done((i % 1024) as u16, "default"))
        .collect();
    router.publish_batch(recs).await.expect("published");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// Reads a streaming response line by line.
struct Lines {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
}

impl Lines {
    fn new(resp: reqwest::Response) -> Lines {
        Lines {
            stream: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
        }
    }

    /// The next line, or `None` at the end of the body.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            match timeout(T, self.stream.next())
                .await
                .expect("stream stalled")
            {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    async fn json(&mut self) -> Option<Value> {
        let line = self.next().await?;
        Some(serde_json::from_str(&line).expect("each line is JSON"))
    }

    /// The `seq` of every line left, to the end of the body.
    async fn seqs_to_end(&mut self) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some(v) = self.json().await {
            seqs.push(seq(&v));
        }
        seqs
    }
}

async fn get_stream(url: &str, query: &str) -> Lines {
    let resp = client()
        .get(format!("{url}/diag/masterEvents{query}"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    Lines::new(resp)
}

fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().expect("seq")
}

#[tokio::test]
async fn replay_then_live_has_no_gap() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 10).await;
    let mut lines = get_stream(&s.url, "").await;
    for expected in 1..=10 {
        assert_eq!(seq(&lines.json().await.expect("line")), expected);
    }
    publish(&s.router, 10).await;
    for expected in 11..=20 {
        let v = lines.json().await.expect("line");
        assert_eq!(seq(&v), expected);
        assert_eq!(v["type"], "vbucketMoveDone");
        assert_eq!(v["origin"], "n_0@127.0.0.1");
    }
}

#[tokio::test]
async fn once_ends_after_the_archive() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 25).await;
    let mut lines = get_stream(&s.url, "?o=1").await;
    let seqs = lines.seqs_to_end().await;
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
}

/// A gauge of `/metrics`, 0 when absent.
async fn gauge(url: &str, name: &str) -> f64 {
    metrics(url)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_kept_compressed_streams_the_same_lines_filters_included() {
    let s = start(60_000, "", |_| {}).await;
    for _ in 0..6 {
        publish(&s.router, 5_000).await;
    }
    let whole = |query: &'static str| {
        let url = s.url.clone();
        async move {
            client()
                .get(format!("{url}/diag/masterEvents{query}"))
                .send()
                .await
                .expect("GET")
                .text()
                .await
                .expect("body")
        }
    };
    let before = whole("?o=1").await;
    let filtered_before = whole("?o=1&vbucket=7").await;
    // Blocks in the archive for more than a second, but the newest, get compressed.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let stored = gauge(&s.url, "master_events_archive_stored_bytes").await;
        let lines = gauge(&s.url, "master_events_archived_bytes").await;
        let cold = gauge(&s.url, "master_events_archive_cold_blocks").await;
        if cold >= 1.0 && stored < lines / 2.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{cold} blocks compressed, lines stored in {stored} of {lines} bytes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(before.lines().count(), 30_000);
    assert_eq!(whole("?o=1").await, before);
    assert_eq!(whole("?o=1&vbucket=7").await, filtered_before);
    let mut resumed = get_stream(&s.url, "?since=12345&o=1").await;
    assert_eq!(
        resumed.seqs_to_end().await,
        (12_346..=30_000).collect::<Vec<u64>>()
    );
    // Readers of the compressed blocks share thawed copies, which the metrics
    // show while they are read, and which are let go once no one reads them.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        assert_eq!(whole("?o=1").await, before);
        let thawed = gauge(&s.url, "master_events_archive_thawed_bytes").await;
        if thawed > 0.0 {
            let lines = gauge(&s.url, "master_events_archived_bytes").await;
            assert!(thawed <= lines, "{thawed} of {lines} bytes");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no thawed copy shown"
        );
    }
    let deadline = tokio::time::Instant::now() + T;
    while gauge(&s.url, "master_events_archive_thawed_bytes").await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "thawed copies kept with no reader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn since_resumes_exactly() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 30).await;
    let mut lines = get_stream(&s.url, "?since=17&o=1").await;
    let seqs = lines.seqs_to_end().await;
    assert_eq!(seqs, (18..=30).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_too_old_since_gets_a_gap_frame_first() {
    let s = start(8, "", |_| {}).await;
    publish(&s.router, 20).await;
    let mut lines = get_stream(&s.url, "?since=2&o=1").await;
    let gap = lines.json().await.expect("gap");
    assert_eq!(gap["type"], "gap");
    assert_eq!(gap["fromSeq"], 3);
    assert_eq!(gap["toSeq"], 12);
    assert_eq!(gap["missed"], 10);
    let seqs = lines.seqs_to_end().await;
    assert_eq!(seqs, (13..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn format_cloudevents_wraps_every_line_gap_included_as_a_structured_cloudevent() {
    let s = start(8, "", |_| {}).await;
    publish(&s.router, 20).await;
    let history = s.router.history().to_string();
    let mut lines = get_stream(&s.url, "?since=2&o=1&format=cloudevents").await;
    // The gap the reader must learn of comes first, as a control CloudEvent.
    let gap = lines.json().await.expect("the gap");
    assert_eq!(gap["specversion"], "1.0");
    assert_eq!(gap["type"], "io.master-events.control.gap");
    assert_eq!(
        gap["dataschema"],
        format!("{}/schemas/control/gap.json", s.url)
    );
    assert_eq!(
        (
            gap["data"]["fromSeq"].as_u64(),
            gap["data"]["toSeq"].as_u64()
        ),
        (Some(3), Some(12))
    );
    assert!(
        gap.get("sequence").is_none(),
        "a control frame has no seq: {gap}"
    );
    // Then each retained event, its line unchanged as `data`.
    let mut seqs = Vec::new();
    while let Some(ce) = lines.json().await {
        let seq = ce["data"]["seq"].as_u64().expect("the line's seq");
        assert_eq!(ce["id"], format!("{history}:{seq}"));
        assert_eq!(ce["type"], "io.master-events.event.vbucketMoveDone");
        assert_eq!(
            ce["source"],
            format!("/clusters/{history}/nodes/n_0@127.0.0.1")
        );
        assert_eq!(ce["sequence"], format!("{seq:020}"));
        assert_eq!(ce["datacontenttype"], "application/json");
        assert_eq!(
            ce["dataschema"],
            format!("{}/schemas/event/vbucketMoveDone.json", s.url)
        );
        assert_eq!(ce["data"]["type"], "vbucketMoveDone");
        seqs.push(seq);
    }
    assert_eq!(seqs, (13..=20).collect::<Vec<_>>());
    // An unknown format is refused, naming the two.
    let resp = client()
        .get(format!("{}/diag/masterEvents?format=xml", s.url))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap_or_default();
    assert!(text.contains("cloudevents"), "{text}");
}

#[tokio::test]
async fn start_now_sees_only_live_events() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 5).await;
    let mut lines = get_stream(&s.url, "?start=now&heartbeat=0").await;
    // The subscription exists once the response head is out; events after it are live.
    publish(&s.router, 3).await;
    assert_eq!(seq(&lines.json().await.expect("line")), 6);
}

#[tokio::test]
async fn filters_are_or_within_a_key_and_and_across_keys() {
    let s = start(4096, "", |_| {}).await;
    s.router
        .publish_batch(vec![
            move_done(1, "default"),
            move_done(2, "default"),
            move_done(1, "other"),
            Record::new(DeleteBucket {
                bucket: "default".into(),
            }),
            move_done(3, "default"),
        ])
        .await
        .expect("published");
    let mut lines = get_stream(
        &s.url,
        "?o=1&type=vbucketMoveDone,deleteBucket&bucket=default&vbucket=1,3",
    )
    .await;
    let got = lines.seqs_to_end().await;
    assert_eq!(got, vec![1, 5]);
    let mut lines = get_stream(&s.url, "?o=1&type=deleteBucket").await;
    assert_eq!(lines.json().await.map(|v| seq(&v)), Some(4));
    assert_eq!(lines.json().await, None);
}

#[tokio::test]
async fn sse_has_ids_and_last_event_id_resumes() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 8).await;
    let resp = client()
        .get(format!("{}/diag/masterEvents?o=1", s.url))
        .header("accept", "text/event-stream")
        .header("last-event-id", format!("{}:5", s.router.history()))
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let history = s.router.history();
    let text = timeout(T, resp.text()).await.expect("ends").expect("body");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "{text}");
    for (event, id) in events.iter().zip(6..) {
        let mut parts = event.lines();
        assert_eq!(parts.next(), Some(format!("id: {history}:{id}").as_str()));
        let data = parts
            .next()
            .and_then(|d| d.strip_prefix("data: "))
            .expect("data");
        let v: Value = serde_json::from_str(data).expect("json");
        assert_eq!(seq(&v), id);
    }
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats_with_the_last_seq() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 3).await;
    let mut lines = get_stream(&s.url, "?heartbeat=0.2").await;
    for _ in 0..3 {
        lines.json().await.expect("event");
    }
    let hb = lines.json().await.expect("heartbeat");
    assert_eq!(hb["type"], "heartbeat");
    assert_eq!(hb["seq"], 3);
    assert!(hb["ts"].as_f64().is_some_and(|t| t > 1.0e9));
}

/// The server's `/metrics` text.
async fn metrics(url: &str) -> String {
    client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

async fn post(url: &str, body: impl Into<reqwest::Body>, content_type: &str) -> (u16, Value) {
    let resp = client()
        .post(format!("{url}/diag/masterEvents"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test]
async fn ingest_assigns_seqs_and_replaces_the_envelope() {
    let s = start(4096, "", |_| {}).await;
    let body = "{\"type\":\"deleteBucket\",\"bucket\":\"a\",\"seq\":900,\"ts\":1,\"origin\":\"elsewhere\"}\n{\"type\":\"failoverEnded\"}\n";
    let (status, reply) = post(&s.url, body, "application/x-ndjson").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 2);
    assert_eq!(reply["seqs"], serde_json::json!([1, 2]));
    let mut lines = get_stream(&s.url, "?o=1").await;
    let first = lines.json().await.expect("line");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["origin"], "n_0@127.0.0.1");
    assert!(first["ts"].as_f64().is_some_and(|t| t > 1.0e9));
}

#[tokio::test]
async fn ingested_events_are_counted_per_type() {
    let s = start(4096, "", |_| {}).await;
    let body = "{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n{\"type\":\"failoverEnded\"}\n{\"type\":\"deleteBucket\",\"bucket\":\"b\"}\n";
    for _ in 0..2 {
        let (status, reply) = post(&s.url, body, "application/x-ndjson").await;
        assert_eq!(status, 200, "{reply}");
    }
    let (status, _) = post(&s.url, "{\"type\":\"nope\"}\n", "application/x-ndjson").await;
    assert_eq!(status, 400);
    let metrics = metrics(&s.url).await;
    for name in [
        "master_events_ingested_events_total{type=\"deleteBucket\"} 4\n",
        "master_events_ingested_events_total{type=\"failoverEnded\"} 2\n",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    assert!(
        !metrics.contains("master_events_ingested_events_total{type=\"becameMaster\"}"),
        "a type never ingested has no series"
    );
}

#[tokio::test]
async fn an_ingest_batch_with_one_bad_line_adds_nothing() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 2).await;
    let body = "{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n{\"type\":\"vbucketMoveDone\",\"vbucket\":\"x\",\"bucket\":\"b\"}\n{\"type\":\"failoverEnded\"}\n";
    let (status, reply) = post(&s.url, body, "application/x-ndjson").await;
    assert_eq!(status, 400);
    assert_eq!(reply["line"], 2);
    assert_eq!(reply["field"], "vbucket");
    assert_eq!(s.router.last_seq(), 2, "nothing taken");
    for bad in [
        &b"{\"type\":\"deleteBucket\",\"bucket\":"[..],
        b"{\"type\":\"nope\"}",
        b"{\"type\":\"deleteBucket\",\"bucket\":\"\xff\"}",
        b"[1,2,3]",
    ] {
        let (status, reply) = post(&s.url, bad.to_vec(), "application/x-ndjson").await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["line"], 1);
    }
    assert_eq!(s.router.last_seq(), 2);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_wrong_types_415() {
    let s = start(4096, "", |c| c.body_limit = 1024).await;
    let line = "{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n";
    let (status, _) = post(&s.url, line.repeat(100), "application/x-ndjson").await;
    assert_eq!(status, 413);
    // Without a Content-Length (chunked), the limit is enforced while reading.
    let chunks = futures_util::stream::iter(
        (0..100).map(move |_| Ok::<_, std::io::Error>(bytes::Bytes::from(line))),
    );
    let (status, _) = post(
        &s.url,
        reqwest::Body::wrap_stream(chunks),
        "application/x-ndjson",
    )
    .await;
    assert_eq!(status, 413);
    let (status, reply) = post(&s.url, line, "application/x-www-form-urlencoded").await;
    assert_eq!(status, 415, "{reply}");
    assert_eq!(s.router.last_seq(), 0);
    let (status, _) = post(&s.url, line, "application/x-ndjson").await;
    assert_eq!(status, 200);
}

/// A feed (`POST /diag/masterEvents?stream=1`) whose body is sent piece by piece:
/// the sender, and the reply once the body is done.
struct Feed {
    tx: Option<tokio::sync::mpsc::Sender<&'static str>>,
    reply: tokio::task::JoinHandle<(u16, Value)>,
}

impl Feed {
    fn open(url: &str) -> Feed {
        let (tx, rx) = tokio::sync::mpsc::channel::<&'static str>(16);
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            let piece = rx.recv().await?;
            Some((Ok::<_, std::io::Error>(bytes::Bytes::from(piece)), rx))
        });
        let url = url.to_owned();
        let reply = tokio::spawn(async move {
            let resp = client()
                .post(format!("{url}/diag/masterEvents?stream=1"))
                .header("content-type", "application/x-ndjson")
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        });
        Feed {
            tx: Some(tx),
            reply,
        }
    }

    async fn send(&self, piece: &'static str) {
        if let Some(tx) = &self.tx {
            // The server may have ended the feed already; its reply says why.
            let _ = timeout(T, tx.send(piece)).await.expect("feed stalled");
        }
    }

    async fn end(mut self) -> (u16, Value) {
        self.tx = None;
        timeout(T, self.reply)
            .await
            .expect("reply in time")
            .expect("feed task")
    }
}

#[tokio::test]
async fn a_feed_takes_lines_as_they_arrive_and_replies_when_it_ends() {
    let s = start(4096, "", |_| {}).await;
    let mut stream = get_stream(&s.url, "?start=now&heartbeat=0").await;
    let feed = Feed::open(&s.url);
    feed.send("{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n")
        .await;
    let first = stream
        .json()
        .await
        .expect("the first line, before the body ends");
    assert_eq!(
        (first["seq"].clone(), first["bucket"].clone()),
        (1.into(), "a".into())
    );
    // A line split across pieces is taken once it is whole.
    feed.send("{\"type\":\"deleteBu").await;
    feed.send("cket\",\"bucket\":\"b\"}\n\n").await;
    let second = stream.json().await.expect("the second line");
    assert_eq!(
        (second["seq"].clone(), second["bucket"].clone()),
        (2.into(), "b".into())
    );
    // The last line needs no line end.
    feed.send("{\"type\":\"failoverEnded\"}").await;
    let (status, reply) = feed.end().await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, serde_json::json!({"accepted": 3, "seqs": [1, 3]}));
    assert_eq!(
        stream.json().await.expect("the third line")["type"],
        "failoverEnded"
    );
}

#[tokio::test]
async fn a_bad_line_ends_a_feed_after_taking_every_line_before_it() {
    let s = start(4096, "", |_| {}).await;
    let feed = Feed::open(&s.url);
    feed.send("{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n")
        .await;
    feed.send("{\"type\":\"deleteBucket\",\"bucket\":\"b\"}\n{\"type\":\"vbucketMoveDone\",\"vbucket\":\"x\",\"bucket\":\"b\"}\n{\"type\":\"failoverEnded\"}\n").await;
    let (status, reply) = feed.end().await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["line"], 3);
    assert_eq!(reply["field"], "vbucket");
    assert_eq!(reply["accepted"], 2);
    assert_eq!(reply["seqs"], serde_json::json!([1, 2]));
    assert_eq!(
        s.router.last_seq(),
        2,
        "the lines before the bad one, and no other"
    );
    assert!(metrics(&s.url)
        .await
        .contains("master_events_ingest_errors_total{reason=\"bad_line\"} 1"));
}

#[tokio::test]
async fn a_feed_is_bound_per_line_not_per_body() {
    let s = start(4096, "", |c| c.body_limit = 256).await;
    let line = "{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n";
    let feed = Feed::open(&s.url);
    for _ in 0..50 {
        feed.send(line).await;
    }
    let (status, reply) = feed.end().await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 50, "50 lines, 7 times the limit in all");

    let feed = Feed::open(&s.url);
    feed.send(line).await;
    let long: &'static str = Box::leak(
        format!(
            "{{\"type\":\"deleteBucket\",\"bucket\":\"{}\"}}\n",
            "x".repeat(300)
        )
        .into_boxed_str(),
    );
    feed.send(long).await;
    feed.send(line).await;
    let (status, reply) = feed.end().await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["line"], 2);
    assert_eq!(reply["accepted"], 1);
    assert_eq!(s.router.last_seq(), 51);
}

#[tokio::test]
async fn a_feed_line_longer_than_a_batch_is_taken_whole() {
    let s = start(4096, "", |_| {}).await;
    let feed = Feed::open(&s.url);
    feed.send("{\"type\":\"deleteBucket\",\"bucket\":\"").await;
    // 400 KiB of one line, in pieces, more than a feed gathers for one batch.
    let piece: &'static str = Box::leak("x".repeat(8192).into_boxed_str());
    for _ in 0..50 {
        feed.send(piece).await;
    }
    feed.send("\"}\n{\"type\":\"failoverEnded\"}\n").await;
    let (status, reply) = feed.end().await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 2);
}

#[tokio::test]
async fn a_feed_open_at_shutdown_ends_with_503_and_what_it_took() {
    let s = start(4096, "", |_| {}).await;
    let mut stream = get_stream(&s.url, "?start=now&heartbeat=0").await;
    let feed = Feed::open(&s.url);
    feed.send("{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n")
        .await;
    assert_eq!(stream.json().await.expect("the line is taken")["seq"], 1);
    s.shutdown.shutdown();
    let (status, reply) = feed.end().await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["accepted"], 1);
    assert_eq!(reply["seqs"], serde_json::json!([1, 1]));
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("from line 2")),
        "{reply}"
    );
}

/// An ingest hook that queues the first batch and refuses the next, telling the
/// test of each call.
struct QueueThenRefuse {
    calls: tokio::sync::mpsc::UnboundedSender<usize>,
    seen: std::sync::atomic::AtomicUsize,
}

impl master_events_server::hooks::Ingest for QueueThenRefuse {
    fn ingest(&self, records: Vec<Record>) -> master_events_server::hooks::IngestFuture<'_> {
        use master_events_server::hooks::{IngestError, IngestOutcome};
        let n = records.len();
        let call = self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = self.calls.send(n);
        Box::pin(async move {
            if call == 0 {
                Ok(IngestOutcome::Queued { accepted: n })
            } else {
                Err(IngestError::Unavailable("the node's queue is full".into()))
            }
        })
    }
}

#[tokio::test]
async fn a_followers_feed_counts_queued_events_and_ends_when_its_node_refuses() {
    let router = Router::start(RouterConfig::default());
    let (_cluster, rx) = tokio::sync::watch::channel(ClusterView {
        node: "n_1@127.0.0.1".into(),
        master: Some("n_0@127.0.0.1".into()),
        is_master: false,
        epoch: 1,
        discovery: "static".into(),
    });
    let (calls, mut called) = tokio::sync::mpsc::unbounded_channel();
    let hook = QueueThenRefuse {
        calls,
        seen: Default::default(),
    };
    let server = Server::bind(ServerConfig::default(), router, Users::default(), rx)
        .await
        .expect("binds")
        .with_ingest(std::sync::Arc::new(hook));
    let url = format!("http://{}", server.local_addr());
    let shutdown = server.shutdown_handle();
    let task = tokio::spawn(server.run());
    let feed = Feed::open(&url);
    feed.send("{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n")
        .await;
    assert_eq!(
        timeout(T, called.recv()).await.expect("first batch"),
        Some(1)
    );
    feed.send("{\"type\":\"failoverEnded\"}\n{\"type\":\"failoverEnded\"}\n")
        .await;
    let (status, reply) = feed.end().await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["accepted"], 1);
    assert_eq!(reply["queued"], 1);
    assert_eq!(reply["seqs"], serde_json::json!([]));
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("queue is full") && error.contains("from line 2"),
        "{reply}"
    );
    shutdown.shutdown();
    task.abort();
}

#[tokio::test]
async fn the_stream_parameter_of_an_ingest_is_checked() {
    let s = start(4096, "", |_| {}).await;
    let resp = client()
        .post(format!("{}/diag/masterEvents?stream=maybe", s.url))
        .header("content-type", "application/x-ndjson")
        .body("{\"type\":\"failoverEnded\"}\n")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 400);
    let text = resp.text().await.expect("body");
    assert!(text.contains("stream") && text.contains("maybe"), "{text}");
    let resp = client()
        .post(format!("{}/diag/masterEvents?stream=0", s.url))
        .body("{\"type\":\"failoverEnded\"}\n")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(s.router.last_seq(), 1);
}

#[tokio::test]
async fn every_protected_route_needs_credentials() {
    let s = start(
        4096,
        "reader:rpw:read,writer:wpw:write,root:toor:admin",
        // Every wrong attempt below is answered 401, none 429.
        |c| c.limits.auth_failure_burst = 1000,
    )
    .await;
    let c = client();
    let routes = [
        ("GET", "/diag/masterEvents?o=1"),
        ("POST", "/diag/masterEvents"),
        ("GET", "/schemas/"),
        ("GET", "/schemas/event.json"),
        ("GET", "/cluster"),
        ("GET", "/metrics"),
    ];
    for (method, path) in routes {
        for auth in [None, Some(("reader", "wrong")), Some(("nobody", "rpw"))] {
            let mut req = match method {
                "GET" => c.get(format!("{}{path}", s.url)),
                _ => c
                    .post(format!("{}{path}", s.url))
                    .body("{\"type\":\"failoverEnded\"}\n"),
            };
            if let Some((u, p)) = auth {
                req = req.basic_auth(u, Some(p));
            }
            let resp = req.send().await.expect("request");
            assert_eq!(resp.status(), 401, "{method} {path} with {auth:?}");
            let www = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok());
            assert!(
                www.is_some_and(|w| w.starts_with("Basic")),
                "{method} {path}"
            );
        }
    }
    let health = c
        .get(format!("{}/health", s.url))
        .send()
        .await
        .expect("request");
    assert_eq!(health.status(), 200);
    let ok = c
        .get(format!("{}/cluster", s.url))
        .basic_auth("reader", Some("rpw"))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
    let forbidden = c
        .post(format!("{}/diag/masterEvents", s.url))
        .basic_auth("reader", Some("rpw"))
        .body("{\"type\":\"failoverEnded\"}\n")
        .send()
        .await
        .expect("request");
    assert_eq!(forbidden.status(), 403);
    let written = c
        .post(format!("{}/diag/masterEvents", s.url))
        .basic_auth("writer", Some("wpw"))
        .body("{\"type\":\"failoverEnded\"}\n")
        .send()
        .await
        .expect("request");
    assert_eq!(written.status(), 200);
    let admin = c
        .get(format!("{}/diag/masterEvents?o=1", s.url))
        .basic_auth("root", Some("toor"))
        .send()
        .await
        .expect("request");
    assert_eq!(admin.status(), 200);
    assert!(admin
        .text()
        .await
        .unwrap_or_default()
        .contains("failoverEnded"));
}

#[tokio::test]
async fn an_unauthenticated_server_refuses_a_public_address() {
    let router = Router::start(RouterConfig::default());
    let (_tx, rx) = tokio::sync::watch::channel(ClusterView {
        node: "n".into(),
        master: None,
        is_master: false,
        epoch: 0,
        discovery: "static".into(),
    });
    let config = ServerConfig {
        listen: "0.0.0.0:0".parse().expect("addr"),
        ..ServerConfig::default()
    };
    let err = Server::bind(config, router, Users::default(), rx)
        .await
        .err();
    assert!(err.is_some_and(|e| e.to_string().contains("--insecure-no-auth")));
}

#[tokio::test]
async fn schemas_cluster_metrics_and_health_answer() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 4).await;
    let c = client();
    let index: Value = c
        .get(format!("{}/schemas/", s.url))
        .send()
        .await
        .expect("req")
        .text()
        .await
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let list = index["schemas"].as_array().expect("list");
    assert!(list.iter().any(|p| p == "event/becameMaster.json"));
    assert!(list.iter().any(|p| p == "stream-line.json"));
    let schema = c
        .get(format!("{}/schemas/event/becameMaster.json", s.url))
        .send()
        .await
        .expect("req");
    assert_eq!(schema.status(), 200);
    let text = schema.text().await.expect("text");
    assert_eq!(
        Some(text.as_str()),
        master_events_events::published::get("event/becameMaster.json")
    );
    let missing = c
        .get(format!("{}/schemas/nope.json", s.url))
        .send()
        .await
        .expect("req");
    assert_eq!(missing.status(), 404);
    let cluster: Value = c
        .get(format!("{}/cluster", s.url))
        .send()
        .await
        .expect("req")
        .text()
        .await
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    assert_eq!(cluster["node"], "n_0@127.0.0.1");
    assert_eq!(cluster["last_seq"], 4);
    assert_eq!(cluster["discovery"], "static");
    let mut lines = get_stream(&s.url, "?o=1").await;
    while lines.next().await.is_some() {}
    let metrics = metrics(&s.url).await;
    for name in [
        "master_events_streamed_events_total{type=\"vbucketMoveDone\"} 4",
        "master_events_open_streams",
        "master_events_last_seq 4",
        "master_events_http_request_duration_seconds_bucket",
        "master_events_dropped_total 0",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn a_thousand_concurrent_stream_clients_all_receive_every_event() {
    // A thousand connections from one address.
    let s = start(4096, "", |c| c.limits.max_connections_per_ip = 2000).await;
    let c = client();
    let mut readers = Vec::new();
    for _ in 0..1000 {
        let resp = c
            .get(format!("{}/diag/masterEvents?heartbeat=0", s.url))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        readers.push(tokio::spawn(async move {
            let mut lines = Lines::new(resp);
            let mut expected = 1;
            while expected <= 200 {
                let v = lines.json().await.expect("line");
                assert_eq!(seq(&v), expected);
                expected += 1;
            }
        }));
    }
    for _ in 0..20 {
        publish(&s.router, 10).await;
    }
    for r in readers {
        timeout(T, r)
            .await
            .expect("reader done")
            .expect("reader ok");
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_stall_others_and_costs_bounded_memory() {
    let s = start(1024, "", |_| {}).await;
    // A client that asks for the stream and then never reads.
    let mut stalled = TcpStream::connect(s.addr).await.expect("connect");
    stalled
        .write_all(b"GET /diag/masterEvents?heartbeat=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut reader = get_stream(&s.url, "?heartbeat=0").await;
    let before = rss_kib();
    let total = 200_000u64;
    let publisher = {
        let router = s.router.clone();
        tokio::spawn(async move {
            for _ in 0..(total / 1000) {
                publish(&router, 1000).await;
            }
        })
    };
    // The live reader keeps up (or, if scheduling made it lag, learns exactly what
    // it missed): it reaches the last event either way.
    let mut last = 0;
    let mut missed = 0;
    while last < total {
        let v = reader.json().await.expect("line");
        if v["type"] == "gap" {
            assert_eq!(v["fromSeq"].as_u64(), Some(last + 1));
            missed += v["missed"].as_u64().unwrap_or(0);
            last = v["toSeq"].as_u64().expect("toSeq");
            continue;
        }
        assert_eq!(seq(&v), last + 1);
        last += 1;
    }
    timeout(T, publisher)
        .await
        .expect("publisher finished")
        .expect("ok");
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "memory grew by {grown} KiB with a stalled client"
    );
    assert!(missed < total, "the live reader got most events");
    // The stalled client, reading at last, sees contiguous events, then one exact
    // gap, then the oldest retained ones.
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut gap: Option<Value> = None;
    while gap.is_none() {
        let n = timeout(T, stalled.read(&mut buf))
            .await
            .expect("reads")
            .expect("io");
        assert!(n > 0, "stream ended early");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        gap = text
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "gap");
    }
    let gap = gap.expect("gap");
    let from = gap["fromSeq"].as_u64().expect("from");
    let to = gap["toSeq"].as_u64().expect("to");
    assert_eq!(gap["missed"].as_u64(), Some(to - from + 1));
    assert!(from > 1 && to <= total, "{gap}");
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_and_others_are_served() {
    let s = start(4096, "", |c| {
        c.header_read_timeout = Duration::from_millis(500)
    })
    .await;
    let mut slow = TcpStream::connect(s.addr).await.expect("connect");
    let dribble = async {
        for b in b"GET /health HTTP/1.1\r\nHost: x\r\n" {
            if slow.write_all(&[*b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let served = async {
        let resp = client()
            .get(format!("{}/health", s.url))
            .send()
            .await
            .expect("req");
        resp.status().as_u16()
    };
    let (closed_while_writing, status) = tokio::join!(dribble, served);
    assert_eq!(status, 200);
    if !closed_while_writing {
        let mut buf = [0u8; 256];
        let n = timeout(T, slow.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
}

/// Asserts that the server still takes an event.
async fn assert_still_serves(s: &TestServer) {
    let (status, reply) = post(
        &s.url,
        "{\"type\":\"failoverEnded\"}\n",
        "application/x-ndjson",
    )
    .await;
    assert_eq!(status, 200, "the server still serves: {reply}");
}

#[tokio::test]
async fn a_body_that_lies_about_its_length_changes_nothing() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 3).await;
    let mut liar = TcpStream::connect(s.addr).await.expect("connect");
    liar.write_all(b"POST /diag/masterEvents HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n{\"type\":\"failoverEnded\"}\n")
        .await
        .expect("write");
    liar.shutdown().await.expect("half-close");
    let mut buf = Vec::new();
    let _ = timeout(T, liar.read_to_end(&mut buf))
        .await
        .expect("server answers or closes");
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(s.router.last_seq(), 3, "nothing taken");
    assert_still_serves(&s).await;
}

/// `n` numbered `deleteBucket` lines, line `bad` (1-based, 0: none) not an event.
fn numbered_lines(n: usize, bad: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 1..=n {
        if i == bad {
            body.extend_from_slice(b"{\"type\":\"deleteBucket\",\"bucket\":7}\n");
        } else {
            body.extend_from_slice(
                format!("{{\"type\":\"deleteBucket\",\"bucket\":\"bucket-{i:06}\"}}\n").as_bytes(),
            );
        }
    }
    body
}

/// Sends a POST of `body` (its whole length declared) in `pieces` pieces, each
/// once the server has read the one before (its buffered-bytes gauge), and, with
/// `cut_after`, stops sending after that many pieces and half-closes. Returns
/// what the server answers before it closes.
async fn post_in_pieces(
    s: &TestServer,
    body: &[u8],
    pieces: usize,
    cut_after: Option<usize>,
) -> String {
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    conn.write_all(
        format!(
            "POST /diag/masterEvents HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("write the head");
    let size = body.len().div_ceil(pieces);
    let mut sent = 0;
    for (k, piece) in body.chunks(size).enumerate() {
        if cut_after == Some(k) {
            conn.shutdown().await.expect("half-close");
            break;
        }
        conn.write_all(piece).await.expect("write a piece");
        sent += piece.len();
        if sent == body.len() {
            break;
        }
        let want = format!("master_events_body_bytes_buffered {sent}\n");
        let deadline = tokio::time::Instant::now() + T;
        while !s.metrics.render().contains(&want) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server never read {sent} bytes"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut reply = Vec::new();
    let _ = timeout(T, conn.read_to_end(&mut reply))
        .await
        .expect("the server answers or closes in time");
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_body_parsed_while_it_arrives_is_taken_whole_or_not_at_all() {
    let s = start(8192, "", |_| {}).await;
    publish(&s.router, 2).await;
    let n = 3_000; // about 160 KB: parsed in chunks as its pieces come
    let body = numbered_lines(n, 0);
    assert!(body.len() > 2 * master_events_server::ingest::PART_BYTES);
    let reply = post_in_pieces(&s, &body, 5, None).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains(&format!("{{\"accepted\":{n},\"seqs\":[3,{}]}}", n + 2)),
        "{reply}"
    );
    let lines = all_lines(
        client()
            .get(format!("{}/diag/masterEvents?since=2&o=1", s.url))
            .send()
            .await
            .expect("stream"),
    )
    .await;
    let buckets: Vec<String> = lines
        .iter()
        .map(|l| l["bucket"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: Vec<String> = (1..=n).map(|i| format!("bucket-{i:06}")).collect();
    assert_eq!(buckets, expected, "every line, once, in order");
    // A bad line in the fourth piece: nothing is taken, and the refusal names it
    // by its number in the whole body.
    for bad in [1, n / 2 + 17, n] {
        let reply = post_in_pieces(&s, &numbered_lines(n, bad), 5, None).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
        assert!(
            reply.contains(&format!("\"line\":{bad}")),
            "line {bad}: {reply}"
        );
        assert_eq!(s.router.last_seq(), n as u64 + 2, "nothing taken");
    }
    // A body that ends before its declared length, its first pieces parsed.
    let reply = post_in_pieces(&s, &body, 5, Some(3)).await;
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 400"),
        "{reply}"
    );
    assert_eq!(s.router.last_seq(), n as u64 + 2, "nothing taken");
    assert_still_serves(&s).await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_within_a_second() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 2).await;
    let mut lines = get_stream(&s.url, "?heartbeat=0").await;
    lines.json().await.expect("first");
    lines.json().await.expect("second");
    let asked = std::time::Instant::now();
    s.shutdown.shutdown();
    let end = timeout(Duration::from_secs(5), lines.next())
        .await
        .expect("ended");
    assert_eq!(end, None);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
}

/// The lines of a finished `?o=1`-style response, parsed.
async fn all_lines(resp: reqwest::Response) -> Vec<Value> {
    let text = timeout(T, resp.text()).await.expect("ends").expect("body");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[tokio::test]
async fn a_stream_names_its_history_in_a_header_and_in_heartbeats() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 2).await;
    let history = s.router.history().to_string();
    assert_eq!(history.len(), 16, "{history}");
    let resp = client()
        .get(format!(
            "{}/diag/masterEvents?start=now&heartbeat=0.05",
            s.url
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.headers()
            .get("master-events-history")
            .and_then(|v| v.to_str().ok()),
        Some(history.as_str())
    );
    let mut lines = Lines::new(resp);
    let beat = lines.json().await.expect("a heartbeat");
    assert_eq!(beat["type"], "heartbeat");
    assert_eq!(beat["history"], history.as_str());
    let cluster = client()
        .get(format!("{}/cluster", s.url))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    let cluster: Value = serde_json::from_str(&cluster).expect("json");
    assert_eq!(cluster["history"], history.as_str());
}

#[tokio::test]
async fn resuming_in_another_history_gets_a_reset_then_the_archive_from_its_start() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 20).await;
    let resp = client()
        .get(format!(
            "{}/diag/masterEvents?o=1&since=50&history=0123456789abcdef",
            s.url
        ))
        .send()
        .await
        .expect("request");
    let lines = all_lines(resp).await;
    assert_eq!(lines.len(), 21, "a reset and all 20 events: {lines:?}");
    let reset = &lines[0];
    assert_eq!(reset["type"], "reset");
    assert_eq!(reset["history"], s.router.history().as_ref());
    assert_eq!(reset["requestedHistory"], "0123456789abcdef");
    assert_eq!(reset["requestedSince"], 50);
    assert_eq!(
        (reset["oldestSeq"].as_u64(), reset["lastSeq"].as_u64()),
        (Some(1), Some(20))
    );
    let seqs: Vec<u64> = lines[1..].iter().map(seq).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_since_beyond_the_last_seq_gets_a_reset_not_silence() {
    // A server restarted without persistence: its history restarted at 1 and ended
    // at 24; a reader that had seen seq 1000000 elsewhere must be told.
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 24).await;
    let resp = client()
        .get(format!("{}/diag/masterEvents?o=1", s.url))
        .header("accept", "text/event-stream")
        .header("last-event-id", "1000000")
        .send()
        .await
        .expect("request");
    let text = timeout(T, resp.text()).await.expect("ends").expect("body");
    let first = text.split("\n\n").next().unwrap_or_default();
    assert!(
        first.starts_with("event: reset\ndata: {\"type\":\"reset\""),
        "{first}"
    );
    assert!(first.contains("\"requestedSince\":1000000"), "{first}");
    assert_eq!(
        text.matches("\ndata: {\"type\":\"vbucketMoveDone\"")
            .count(),
        24
    );
    // The same history, within its seqs: no reset.
    let history = s.router.history();
    let resp = client()
        .get(format!(
            "{}/diag/masterEvents?o=1&since=20&history={history}",
            s.url
        ))
        .send()
        .await
        .expect("request");
    let seqs: Vec<u64> = all_lines(resp).await.iter().map(seq).collect();
    assert_eq!(seqs, vec![21, 22, 23, 24]);
    // The master vouches for no seq it has not sequenced, even in its own history.
    let resp = client()
        .get(format!(
            "{}/diag/masterEvents?o=1&since=30&history={history}",
            s.url
        ))
        .send()
        .await
        .expect("request");
    let lines = all_lines(resp).await;
    assert_eq!(lines[0]["type"], "reset", "{lines:?}");
    assert_eq!(lines.len(), 25);
}

#[tokio::test]
async fn a_history_id_that_is_garbage_is_refused_with_a_clear_error() {
    let s = start(4096, "", |_| {}).await;
    for query in [
        "since=1&history=%1B%5B2J",
        "since=1&history=",
        "history=abc",
    ] {
        let resp = client()
            .get(format!("{}/diag/masterEvents?o=1&{query}", s.url))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 400, "{query}");
        let body = resp.text().await.expect("body");
        assert!(body.contains("history"), "{query}: {body}");
        assert!(
            !body.contains('\u{1b}'),
            "{query}: the raw input is not echoed: {body}"
        );
    }
}

#[tokio::test]
async fn a_request_that_the_servers_own_filter_empties_is_refused_with_the_reason() {
    use master_events_events::EventType;
    use master_events_router::Filter;
    let s = start(4096, "", |c| {
        c.stream_filter = Some(Filter::types([EventType::VbucketMoveDone]).negate());
    })
    .await;
    let resp = client()
        .get(format!(
            "{}/diag/masterEvents?o=1&type=vbucketMoveDone",
            s.url
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.expect("body");
    assert!(body.contains("stream filter"), "{body}");
    // A request the server's filter leaves something to is served, and told that a
    // server filter applies.
    let resp = client()
        .get(format!(
            "{}/diag/masterEvents?o=1&type=failover,vbucketMoveDone",
            s.url
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("master-events-server-filter")
            .and_then(|v| v.to_str().ok()),
        Some("on")
    );
}

#[tokio::test]
async fn each_sinks_state_is_in_cluster_and_metrics() {
    use master_events_router::SinkHealth;
    let s = start(4096, "", |_| {}).await;
    let file = std::sync::Arc::new(SinkHealth::new("file", 0));
    let webhook = std::sync::Arc::new(SinkHealth::new("webhook", 1));
    s.metrics.set_sinks(vec![file.clone(), webhook.clone()]);
    file.retrying("No space left on device (os error 28)");
    let body = client()
        .get(format!("{}/cluster", s.url))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    let cluster: Value = serde_json::from_str(&body).expect("json");
    let sinks = cluster["sinks"].as_array().cloned().unwrap_or_default();
    assert_eq!(sinks.len(), 2, "{body}");
    assert_eq!(sinks[0]["name"], "file");
    assert_eq!(sinks[0]["state"], "retrying");
    assert_eq!(sinks[0]["reason"], "No space left on device (os error 28)");
    assert_eq!(sinks[1]["state"], "ok");
    let text = client()
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(
        text.contains(r#"master_events_sink_state{sink="file",index="0",state="retrying"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"master_events_sink_state{sink="webhook",index="1",state="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"master_events_sink_panics_total{sink="file",index="0"} 0"#),
        "{text}"
    );
}

#[tokio::test]
async fn the_root_sends_a_browser_to_the_live_page() {
    let s = start(16, "", |_| {}).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = client
        .get(format!("{}/", s.url))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/ui")
    );
}

/// Deny by default, from the route table: with users configured, every route of
/// the table refuses a request without credentials (401) unless the table marks it
/// public, a method a route does not take is a 405 naming the ones it does, and a
/// path the table does not hold needs credentials before it is a 404 listing the
/// routes.
#[tokio::test]
async fn every_route_of_the_table_is_guarded_unless_marked_public() {
    use master_events_server::routes::{Access, ROUTES};
    // Every refusal here counts as a failed authentication: no 429 in between.
    let s = start(100, "alice:pw:read", |c| c.limits.auth_failure_burst = 1000).await;
    // `/` redirects to `/ui`: its own answer is what is checked.
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for route in ROUTES {
        let path = route.path.replace("{*path}", "event.json");
        for (method, access) in [
            (reqwest::Method::GET, route.get),
            (reqwest::Method::POST, route.post),
        ] {
            let resp = c
                .request(method.clone(), format!("{}{path}", s.url))
                .send()
                .await
                .expect("answered");
            let status = resp.status().as_u16();
            match access {
                None => {
                    assert_eq!(status, 405, "{method} {path}");
                    assert_eq!(
                        resp.headers().get("allow").and_then(|v| v.to_str().ok()),
                        Some(route.allow()),
                        "{method} {path}"
                    );
                }
                Some(Access::Public) => assert_ne!(status, 401, "{method} {path} is public"),
                Some(_) => assert_eq!(status, 401, "{method} {path} needs credentials"),
            }
        }
    }
    let resp = c
        .get(format!("{}/no/such/route", s.url))
        .send()
        .await
        .expect("answered");
    assert_eq!(
        resp.status().as_u16(),
        401,
        "an unknown path needs credentials"
    );
    let resp = c
        .get(format!("{}/no/such/route", s.url))
        .basic_auth("alice", Some("pw"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 404);
    let body = resp.text().await.expect("body");
    assert!(
        body.contains("/diag/masterEvents") && body.contains("/ui"),
        "{body}"
    );
    // A read user reads, and is refused what needs more.
    let resp = c
        .get(format!("{}/cluster", s.url))
        .basic_auth("alice", Some("pw"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 200);
    let resp = c
        .post(format!("{}/diag/masterEvents", s.url))
        .basic_auth("alice", Some("pw"))
        .header("content-type", "application/x-ndjson")
        .body("{\"type\":\"deleteBucket\",\"bucket\":\"b\"}\n")
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 403);
}

/// Reads from `sock` until `done` holds for what arrived (or the wait ends).
async fn read_until(sock: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = timeout(T, async {
        while !done(&String::from_utf8_lossy(&got)) {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

async fn wait_for_open_streams(s: &TestServer, n: i64) {
    let waited = std::time::Instant::now();
    while s.metrics.open_streams().get() != n {
        assert!(
            waited.elapsed() < T,
            "open streams stayed {} (waited for {n})",
            s.metrics.open_streams().get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_stream_head_sent_a_byte_at_a_time_is_answered_with_a_chunked_stream() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 2).await;
    let mut sock = TcpStream::connect(s.addr).await.expect("connect");
    for b in b"GET /diag/masterEvents?heartbeat=0 HTTP/1.1\r\nhost: x\r\n\r\n" {
        sock.write_all(&[*b]).await.expect("write");
        sock.flush().await.expect("flush");
    }
    let got = read_until(&mut sock, |t| t.matches("\"seq\":").count() >= 2).await;
    let (head, body) = got.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(
        head.contains("content-type: application/x-ndjson"),
        "{head}"
    );
    assert!(head.contains("\r\ndate: "), "{head}");
    // Each chunk: its size in hex, CRLF, that many bytes, CRLF.
    let mut rest = body.as_bytes();
    let mut lines = String::new();
    while let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..at]).expect("hex"), 16)
            .expect("a chunk size");
        let Some(chunk) = rest.get(at + 2..at + 2 + size) else {
            break; // the last chunk is still arriving
        };
        lines.push_str(std::str::from_utf8(chunk).expect("UTF-8"));
        rest = &rest[(at + 4 + size).min(rest.len())..];
    }
    let seqs: Vec<u64> = lines
        .lines()
        .map(|l| seq(&serde_json::from_str(l).expect("JSON")))
        .collect();
    assert_eq!(seqs, vec![1, 2]);
}

#[tokio::test]
async fn a_malformed_chunked_body_is_refused_with_the_reason_and_nothing_is_taken() {
    let s = start(4096, "", |_| {}).await;
    for query in ["", "?feed=1"] {
        let mut sock = TcpStream::connect(s.addr).await.expect("connect");
        let request = format!(
            "POST /diag/masterEvents{query} HTTP/1.1\r\nhost: x\r\n\
             content-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n\
             ZZ\r\nabc\r\n0\r\n\r\n"
        );
        sock.write_all(request.as_bytes()).await.expect("write");
        let got = read_until(&mut sock, |t| t.contains("}")).await;
        assert!(got.starts_with("HTTP/1.1 400 "), "{query}: {got}");
        // The cause, not only "error reading a body from connection".
        assert!(
            got.contains("cannot read the body: error reading a body from connection: ")
                && got.to_ascii_lowercase().contains("chunk size"),
            "{query}: {got}"
        );
    }
    // Another node's forward: a broken body is a 400 with its reason, not a 413.
    let mut sock = TcpStream::connect(s.addr).await.expect("connect");
    sock.write_all(
        b"POST /cluster/forward HTTP/1.1\r\nhost: x\r\nx-master-events-epoch: 1\r\n\
          content-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n\
          ZZ\r\nabc\r\n0\r\n\r\n",
    )
    .await
    .expect("write");
    let got = read_until(&mut sock, |t| t.contains("}")).await;
    assert!(got.starts_with("HTTP/1.1 400 "), "forward: {got}");
    assert!(got.contains("cannot read the body: "), "forward: {got}");
    assert_eq!(s.router.last_seq(), 0, "nothing was taken");
}

#[tokio::test]
async fn a_stream_client_that_goes_away_takes_its_stream_with_it() {
    let s = start(4096, "", |_| {}).await;
    let mut socks = Vec::new();
    for _ in 0..3 {
        let mut sock = TcpStream::connect(s.addr).await.expect("connect");
        sock.write_all(b"GET /diag/masterEvents?heartbeat=0 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        read_until(&mut sock, |t| t.contains("\r\n\r\n")).await;
        socks.push(sock);
    }
    wait_for_open_streams(&s, 3).await;
    // Idle streams (nothing to send): only reading the connection sees them go.
    socks.pop();
    wait_for_open_streams(&s, 2).await;
    socks.clear();
    wait_for_open_streams(&s, 0).await;
}

#[tokio::test]
async fn a_stream_request_pipelined_with_another_is_answered_in_order_on_one_connection() {
    let s = start(4096, "", |_| {}).await;
    publish(&s.router, 1).await;
    let mut sock = TcpStream::connect(s.addr).await.expect("connect");
    sock.write_all(
        b"GET /diag/masterEvents?o=1 HTTP/1.1\r\nhost: x\r\n\r\nGET /health HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await
    .expect("write");
    let got = read_until(&mut sock, |t| t.contains("\"status\"")).await;
    let first = got.find("HTTP/1.1 200").expect("the stream's answer");
    let second = got.rfind("HTTP/1.1 200").expect("the health answer");
    assert!(first < second, "{got}");
    assert!(got[first..second].contains("\"seq\":1"), "{got}");
    assert!(got[second..].contains("\"status\""), "{got}");
}

#[tokio::test]
async fn a_refused_stream_request_is_answered_and_its_connection_closed() {
    let s = start(4096, "ops:pw:read", |_| {}).await;
    let mut sock = TcpStream::connect(s.addr).await.expect("connect");
    sock.write_all(b"GET /diag/masterEvents HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut got = String::new();
    timeout(T, sock.read_to_string(&mut got))
        .await
        .expect("closed in time")
        .expect("read");
    assert!(got.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{got}");
    let (head, body) = got.split_once("\r\n\r\n").expect("a head");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .expect("a content-length")
        .parse()
        .expect("a number");
    assert_eq!(body.len(), length, "{got}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
}
