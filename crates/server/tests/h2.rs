//! HTTP/2 (h2c) connections over real sockets on 127.0.0.1, served on one task a
//! connection (`h2serve.rs`): request bodies past the flow-control window, one
//! that stalls mid-way and one reset while it is read, a stream reset by its
//! client, one whose client does not read, response heads, and shutdown. Each test starts its
//! own server on a free port; every wait is bounded.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::SendRequest;
use master_events_server::ServerConfig;
use tokio::time::{timeout, Instant};

use common::TestServer;

/// The most any one step of a test waits.
const T: Duration = Duration::from_secs(20);

const LINE: &str = "{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n";

/// A stream of the events from now on, without heartbeats.
const STREAM: &str = "/diag/masterEvents?start=now&heartbeat=0";

async fn start() -> TestServer {
    start_with_archive(200_000).await
}

async fn start_with_archive(archive_capacity: usize) -> TestServer {
    start_with(archive_capacity, |_| {}).await
}

async fn start_with(archive_capacity: usize, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::builder()
        .archive(archive_capacity)
        .config(tweak)
        .start()
        .await
}

/// An h2c connection to `server` (prior knowledge), and its driver's task.
async fn connect(
    server: &TestServer,
) -> (
    SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connects");
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    (sender, tokio::spawn(conn))
}

/// Sends `req` on the connection of `sender` and waits (at most `T`) for the
/// response's head.
async fn send(
    sender: &SendRequest<Full<Bytes>>,
    req: hyper::Request<Full<Bytes>>,
) -> hyper::Response<hyper::body::Incoming> {
    timeout(T, sender.clone().send_request(req))
        .await
        .expect("answered in time")
        .expect("answered")
}

/// Reads `body` until a line says `seq` `last` or is a `gap` frame: the lines read.
async fn lines_until(body: &mut hyper::body::Incoming, last: u64) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    loop {
        let line = next_line(body).await;
        for line in line.lines() {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let done = value["type"] == "gap" || value["seq"] == last;
            lines.push(value);
            if done {
                return lines;
            }
        }
    }
}

fn get(server: &TestServer, path: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::get(format!("http://{}{path}", server.addr))
        .body(Full::default())
        .expect("request")
}

fn post(server: &TestServer, body: String) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(format!("http://{}/diag/masterEvents", server.addr))
        .header("content-type", "application/x-ndjson")
        .body(Full::new(Bytes::from(body)))
        .expect("request")
}

/// Reads `body` until a whole line came, and returns it.
async fn next_line(body: &mut hyper::body::Incoming) -> String {
    let mut got = Vec::new();
    while !got.ends_with(b"\n") {
        let frame = timeout(T, body.frame())
            .await
            .expect("a line in time")
            .expect("the stream goes on")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    String::from_utf8(got).expect("UTF-8")
}

/// Waits (at most `T`) until `open` streams are open on `server`.
async fn wait_open_streams(server: &TestServer, open: i64) {
    let deadline = Instant::now() + T;
    while server.metrics.open_streams().get() != open {
        assert!(
            Instant::now() < deadline,
            "{} streams open, not {open}",
            server.metrics.open_streams().get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_ingest_body_three_times_the_flow_control_window_is_read_whole() {
    let server = start().await;
    let (sender, conn) = connect(&server).await;
    // 3 MiB and more: the server offers a 1 MiB window, so the body arrives only
    // if the server gives back the window as it reads.
    let lines = 3 * 1024 * 1024 / LINE.len() + 1;
    let resp = send(&sender, post(&server, LINE.repeat(lines))).await;
    let status = resp.status();
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&text));
    assert_eq!(server.router.last_seq(), lines as u64);
    conn.abort();
}

#[tokio::test]
async fn a_stream_reset_by_its_client_ends_its_subscription_and_the_others_go_on() {
    let server = start().await;
    let (sender, conn) = connect(&server).await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let resp = send(&sender, get(&server, STREAM)).await;
        assert_eq!(resp.status(), 200);
        bodies.push(resp.into_body());
    }
    wait_open_streams(&server, 3).await;
    // Dropping a response's body resets its stream (CANCEL).
    drop(bodies.remove(1));
    wait_open_streams(&server, 2).await;
    let resp = send(&sender, post(&server, LINE.into())).await;
    assert_eq!(resp.status(), 200);
    for body in &mut bodies {
        let line = next_line(body).await;
        assert!(
            line.starts_with("{\"type\":\"deleteBucket\",\"seq\":1,"),
            "{line}"
        );
    }
    conn.abort();
}

#[tokio::test]
async fn a_response_head_carries_date_and_the_length_of_a_body_of_known_size() {
    let server = start().await;
    let (sender, conn) = connect(&server).await;
    let resp = send(&sender, get(&server, "/health")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert!(resp.headers().contains_key("date"), "{:?}", resp.headers());
    let length: usize = resp.headers()["content-length"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("a number");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.len(), length);
    // A stream's head has no length: it has no end.
    let resp = send(&sender, get(&server, "/diag/masterEvents?start=now")).await;
    assert!(!resp.headers().contains_key("content-length"));
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    conn.abort();
}

#[tokio::test]
async fn at_shutdown_a_stream_ends_cleanly_and_its_connection_closes() {
    let server = start().await;
    let (sender, conn) = connect(&server).await;
    let resp = send(&sender, get(&server, STREAM)).await;
    let mut body = resp.into_body();
    wait_open_streams(&server, 1).await;
    server.shutdown.shutdown();
    // The stream ends (its last frame, if any, then the end), not cut.
    loop {
        match timeout(T, body.frame()).await.expect("ended in time") {
            None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the stream was cut: {e}"),
        }
    }
    timeout(T, conn)
        .await
        .expect("the connection closed in time")
        .expect("its task ran")
        .expect("closed without an error");
}

#[tokio::test]
async fn a_stream_whose_client_does_not_read_is_not_buffered_past_its_window_but_told_of_a_gap() {
    let server = start_with_archive(1024).await;
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connects");
    // A small window for each stream (the connection's stays large, so that the
    // ingest answers still come).
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(1024)
            .handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let resp = send(&sender, get(&server, STREAM)).await;
    let mut body = resp.into_body();
    // Five times the archive, not read meanwhile.
    let (batches, per_batch) = (5, 1024);
    for _ in 0..batches {
        let resp = send(&sender, post(&server, LINE.repeat(per_batch))).await;
        assert_eq!(resp.status(), 200);
    }
    let last = (batches * per_batch) as u64;
    assert_eq!(server.router.last_seq(), last);
    // Had the server rendered every event into the stream's buffer, they would
    // all come. It sends a chunk (here a block of the archive: 128 events, an
    // eighth of it) once the stream may send, and holds the next until it may
    // send again, so the reader, behind the archive, is told of what it missed.
    let lines = lines_until(&mut body, last).await;
    let gap = lines.last().expect("a line");
    assert_eq!(gap["type"], "gap", "{gap}");
    assert!(
        lines.len() <= 2 * 128 + 1,
        "{} lines before the gap: more than two chunks",
        lines.len()
    );
    let from = gap["fromSeq"].as_u64().expect("fromSeq");
    let to = gap["toSeq"].as_u64().expect("toSeq");
    assert_eq!(
        from,
        lines.len() as u64,
        "the gap starts after the events read"
    );
    assert!(to > from && to < last, "{gap}");
    conn.abort();
}

/// Over a connection of `h2`'s own client: an ingest of a declared 1,000 bytes, of
/// which only the first 10 are sent. Returns the client, its connection's task,
/// the response to come and the body's stream.
async fn post_a_tenth_of_a_line(
    server: &TestServer,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
    h2::client::ResponseFuture,
    h2::SendStream<Bytes>,
) {
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connects");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let request = hyper::Request::post(format!("http://{}/diag/masterEvents", server.addr))
        .header("content-type", "application/x-ndjson")
        .header("content-length", "1000")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("sent");
    body.send_data(Bytes::from_static(&LINE.as_bytes()[..10]), false)
        .expect("data sent");
    (client, conn, response, body)
}

#[tokio::test]
async fn a_body_that_stalls_mid_way_is_answered_408_and_the_connection_serves_on() {
    let server = start_with(1024, |c| {
        c.limits.body_stall_timeout = Duration::from_millis(300);
    })
    .await;
    // A tenth of a line, then nothing more.
    let (client, conn, response, _body) = post_a_tenth_of_a_line(&server).await;
    let response = timeout(T, response)
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(response.status(), 408);
    let text = server.metrics.render();
    assert!(
        text.contains("master_events_requests_limited_total{reason=\"body_stalled\"} 1"),
        "{text}"
    );
    assert_eq!(server.router.last_seq(), 0, "nothing of the cut body taken");
    // The connection serves the next request.
    let mut client = client.ready().await.expect("ready again");
    let request = hyper::Request::get(format!("http://{}/health", server.addr))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("sent");
    let response = timeout(T, response)
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(response.status(), 200);
    conn.abort();
}

#[tokio::test]
async fn a_request_reset_while_its_body_is_read_lets_go_of_what_it_buffered() {
    let server = start_with(1024, |c| {
        c.limits.body_stall_timeout = Duration::from_secs(60);
    })
    .await;
    let (_client, conn, _response, mut body) = post_a_tenth_of_a_line(&server).await;
    let buffered = || server.metrics.body_bytes_buffered().get();
    let deadline = Instant::now() + T;
    while buffered() != 10 {
        assert!(
            Instant::now() < deadline,
            "{} bytes buffered, not 10",
            buffered()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The client gives up on the request, long before the stall timeout.
    body.send_reset(h2::Reason::CANCEL);
    while buffered() != 0 {
        assert!(
            Instant::now() < deadline,
            "{} bytes still buffered after the reset",
            buffered()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.router.last_seq(), 0, "nothing of the cut body taken");
    conn.abort();
}
