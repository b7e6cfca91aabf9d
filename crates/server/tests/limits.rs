//! The server's limits over real sockets on 127.0.0.1: connections that send no
//! request, idle HTTP/2 connections and their streams a connection, stalled and
//! trickling bodies, the buffering budget, failed authentication, and the
//! per-address connection cap. Each test
//! starts its own server on a free port; every loop is bounded in count and time.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use master_events_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};

use common::TestServer;

/// The most any one step of a test waits.
const T: Duration = Duration::from_secs(20);

async fn start(users: &str, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::builder()
        .archive(1024)
        .users(users)
        .config(tweak)
        .start()
        .await
}

/// Raises this process's open-file limit to at least `want` (up to the hard
/// limit): the tests that hold a thousand connections hold both their ends.
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {enc}")
}

/// Sends `request` on a new connection (from `from`, or any loopback address) and
/// returns everything the server sends until it closes.
async fn exchange(addr: SocketAddr, from: Option<[u8; 4]>, request: &[u8]) -> String {
    let mut s = connect_from(addr, from).await;
    s.write_all(request).await.expect("write");
    read_to_close(&mut s).await
}

async fn connect_from(addr: SocketAddr, from: Option<[u8; 4]>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(ip) = from {
        socket
            .bind(SocketAddr::from((ip, 0)))
            .expect("bind the client address");
    }
    timeout(T, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = timeout(T, s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection in time");
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str, auth: Option<&str>) -> Vec<u8> {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").into_bytes()
}

/// Whether the server closed `s` (EOF or reset) within [`T`].
async fn closed_by_server(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(timeout(T, s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

/// Opens `n` connections, each sending `first` (maybe nothing), checks another
/// client is served while they are open, then that the server closes them all.
async fn idle_connections_are_closed(first: &'static [u8]) {
    const N: usize = 1000;
    raise_nofile(4 * N as u64 + 256);
    let server = start("", |c| {
        c.header_read_timeout = Duration::from_secs(1);
        c.limits.max_connections_per_ip = 10 * N;
    })
    .await;
    let mut idle = Vec::with_capacity(N);
    for _ in 0..N {
        let mut s = connect_from(server.addr, None).await;
        if !first.is_empty() {
            s.write_all(first).await.expect("write");
        }
        idle.push(s);
    }
    let reply = exchange(server.addr, None, &get("/health", None)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let closed = timeout(
        T,
        futures_util::future::join_all(idle.into_iter().map(closed_by_server)),
    )
    .await
    .expect("every read ends in time");
    let closed = closed.iter().filter(|c| **c).count();
    assert_eq!(closed, N, "connections closed by the server");
    let text = server.metrics.render();
    assert!(
        text.contains(&format!(
            "master_events_connections_closed_total{{reason=\"first_request_timeout\"}} {N}"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_that_send_nothing_are_closed_at_the_first_request_deadline() {
    idle_connections_are_closed(b"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_with_a_partial_h2_preface_are_closed_at_the_first_request_deadline()
{
    idle_connections_are_closed(b"PRI * HTTP/2.0\r\n").await;
}

#[tokio::test]
async fn an_h2_connection_with_preface_and_settings_but_no_request_is_closed() {
    let server = start("", |c| c.header_read_timeout = Duration::from_secs(1)).await;
    let mut s = connect_from(server.addr, None).await;
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // An empty SETTINGS frame: length 0, type 4, flags 0, stream 0.
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    s.write_all(&hello).await.expect("write");
    // The server's SETTINGS and the ack come first, then the close.
    let _ = read_to_close(&mut s).await;
}

#[tokio::test]
async fn an_h2_connection_with_no_open_stream_is_closed_after_the_idle_timeout() {
    let server = start("", |c| c.limits.idle_timeout = Duration::from_secs(1)).await;
    let tcp = connect_from(server.addr, None).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{}/health", server.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = timeout(T, sender.send_request(req))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(resp.status(), 200);
    drop(resp);
    // The connection's task ends when the server closes it.
    let ended = timeout(T, conn)
        .await
        .expect("the idle connection is closed in time")
        .expect("the connection task ran");
    // Closed by the server without a GOAWAY: the client's connection may end with
    // an error or without; either way it ended.
    let _ = ended;
    let text = server.metrics.render();
    assert!(
        text.contains("master_events_connections_closed_total{reason=\"idle_timeout\"} 1"),
        "{text}"
    );
}

/// Waits (at most `T`) until the server's metrics hold the line `line`; `what`
/// names the condition when it never comes.
async fn wait_for_metric(server: &TestServer, line: &str, what: &str) {
    let line = format!("{line}\n");
    let deadline = Instant::now() + T;
    loop {
        let text = server.metrics.render();
        if text.contains(&line) {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn post_head(path: &str, auth: Option<&str>, length: usize) -> Vec<u8> {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/x-ndjson\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

const LINE: &str = "{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n";

#[tokio::test]
async fn a_body_that_stalls_is_cut_with_408_and_the_connection_closed() {
    let server = start("", |c| {
        c.limits.body_stall_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = connect_from(server.addr, None).await;
    s.write_all(&post_head("/diag/masterEvents", None, 1000))
        .await
        .expect("write");
    s.write_all(&LINE.as_bytes()[..10]).await.expect("write");
    let reply = read_to_close(&mut s).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("sent nothing"), "{reply}");
    let text = server.metrics.render();
    assert!(
        text.contains("master_events_requests_limited_total{reason=\"body_stalled\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_body_that_stalls_after_chunks_were_parsed_is_cut_and_takes_nothing() {
    let server = start("", |c| {
        c.limits.body_stall_timeout = Duration::from_millis(300);
    })
    .await;
    // 6,000 lines declared (about 240 KB: parsed as it is read), half of them sent.
    let lines = LINE.repeat(6_000);
    let half = lines.len() / 2;
    let mut s = connect_from(server.addr, None).await;
    s.write_all(&post_head("/diag/masterEvents", None, lines.len()))
        .await
        .expect("write");
    s.write_all(&lines.as_bytes()[..half]).await.expect("write");
    let reply = read_to_close(&mut s).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert_eq!(server.router.last_seq(), 0, "nothing taken");
    let text = server.metrics.render();
    assert!(
        text.contains("master_events_requests_limited_total{reason=\"body_stalled\"} 1"),
        "{text}"
    );
    // What the cut request held is given back.
    wait_for_metric(
        &server,
        "master_events_body_bytes_buffered 0",
        "the budget given back",
    )
    .await;
    // The whole body, sent again, is taken.
    let head = String::from_utf8_lossy(&post_head("/diag/masterEvents", None, lines.len()))
        .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    let reply = exchange(server.addr, None, format!("{head}{lines}").as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(server.router.last_seq(), 6_000);
}

#[tokio::test]
async fn a_body_trickling_under_the_minimum_rate_is_cut_with_408() {
    let server = start("", |c| {
        c.limits.body_stall_timeout = Duration::from_secs(5);
        c.limits.body_min_rate = 1000;
        c.limits.body_min_rate_after = Duration::from_millis(500);
    })
    .await;
    let mut s = connect_from(server.addr, None).await;
    s.write_all(&post_head("/diag/masterEvents", None, 10_000))
        .await
        .expect("write");
    // One byte every 20 ms (50 bytes a second), never stalling for long: at most
    // 500 bytes (10 s), fewer once the server has answered.
    let mut reply = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..500 {
        tick.tick().await;
        if s.write_all(b" ").await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                reply.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let rest = read_to_close(&mut s).await;
    let reply = format!("{}{rest}", String::from_utf8_lossy(&reply));
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("under 1000 bytes a second"), "{reply}");
}

#[tokio::test]
async fn a_slow_feed_has_no_rate_rule_but_is_cut_when_it_stalls() {
    let server = start("", |c| {
        c.limits.body_stall_timeout = Duration::from_millis(800);
        c.limits.body_min_rate = 100_000;
        c.limits.body_min_rate_after = Duration::from_millis(100);
    })
    .await;
    let mut s = connect_from(server.addr, None).await;
    s.write_all(
        b"POST /diag/masterEvents?stream=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .expect("write");
    // Ten lines, one every 100 ms: far under the minimum rate, never a stall.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..10 {
        tick.tick().await;
        let chunk = format!("{:x}\r\n{LINE}\r\n", LINE.len());
        if let Err(e) = s.write_all(chunk.as_bytes()).await {
            let reply = read_to_close(&mut s).await;
            panic!("the feed ended early ({e}): {reply}");
        }
    }
    // Then nothing: the stall timeout ends the feed, counting the lines taken.
    let reply = read_to_close(&mut s).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"accepted\":10"), "{reply}");
}

#[tokio::test]
async fn body_bytes_over_the_per_user_budget_get_503_with_retry_after() {
    let server = start("w:pw:write,a:pa:admin", |c| {
        c.limits.body_buffer_per_user = 32 * 1024;
        c.limits.body_buffer_total = 1024 * 1024;
        c.limits.body_stall_timeout = Duration::from_secs(15);
    })
    .await;
    let writer = basic("w", "pw");
    // One request holds 20 KiB of a 40 KiB body, unfinished.
    let mut first = connect_from(server.addr, None).await;
    first
        .write_all(&post_head("/diag/masterEvents", Some(&writer), 40 * 1024))
        .await
        .expect("write");
    first.write_all(&[b' '; 20 * 1024]).await.expect("write");
    wait_for_metric(
        &server,
        "master_events_body_bytes_buffered 20480",
        "20 KiB read",
    )
    .await;
    // The same user's second body passes 32 KiB buffered at once.
    let mut second = connect_from(server.addr, None).await;
    second
        .write_all(&post_head("/diag/masterEvents", Some(&writer), 40 * 1024))
        .await
        .expect("write");
    let _ = second.write_all(&[b' '; 20 * 1024]).await;
    let reply = read_to_close(&mut second).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("retry-after: 1"),
        "{reply}"
    );
    drop(first);
    // Everything is given back once the first request is gone.
    wait_for_metric(
        &server,
        "master_events_body_bytes_buffered 0",
        "the budget given back",
    )
    .await;
}

#[tokio::test]
async fn failed_authentication_past_the_burst_gets_429_from_that_address_only() {
    let server = start("ops:right:read", |c| {
        c.limits.auth_failure_burst = 5;
        c.limits.auth_failure_rate = 0.01;
    })
    .await;
    let wrong = basic("ops", "wrong");
    let right = basic("ops", "right");
    for i in 0..5 {
        let reply = exchange(server.addr, None, &get("/cluster", Some(&wrong))).await;
        assert!(reply.starts_with("HTTP/1.1 401"), "attempt {i}: {reply}");
    }
    let reply = exchange(server.addr, None, &get("/cluster", Some(&wrong))).await;
    assert!(reply.starts_with("HTTP/1.1 429"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("retry-after:"),
        "{reply}"
    );
    // Even the right password waits: the address is refused before any check.
    let reply = exchange(server.addr, None, &get("/cluster", Some(&right))).await;
    assert!(reply.starts_with("HTTP/1.1 429"), "{reply}");
    // Another node's cluster secret (a Bearer token) is told it is wrong, not 429.
    let forward = b"POST /cluster/forward HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let reply = exchange(server.addr, None, forward).await;
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    // Liveness needs no credentials and stays open.
    let reply = exchange(server.addr, None, &get("/health", None)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // Another address is not limited.
    let other = Some([127, 0, 0, 2]);
    let reply = exchange(server.addr, other, &get("/cluster", Some(&wrong))).await;
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    let reply = exchange(server.addr, other, &get("/cluster", Some(&right))).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let text = server.metrics.render();
    assert!(
        text.contains("master_events_requests_limited_total{reason=\"auth_rate_limit\"} 2"),
        "{text}"
    );
}

/// Sends a keep-alive request on `s` and reads the start of its reply.
async fn served(s: &mut TcpStream) -> bool {
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 256];
    match timeout(T, s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => buf[..n].starts_with(b"HTTP/1.1 200"),
        _ => false,
    }
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_closed_at_once() {
    const CAP: usize = 4;
    let server = start("", |c| c.limits.max_connections_per_ip = CAP).await;
    let mut open = Vec::new();
    for i in 0..CAP {
        let mut s = connect_from(server.addr, None).await;
        assert!(served(&mut s).await, "connection {i} is served");
        open.push(s);
    }
    let mut over = connect_from(server.addr, None).await;
    let _ = over
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let reply = read_to_close(&mut over).await;
    assert_eq!(reply, "", "the connection over the cap gets no answer");
    // Another address has its own allowance.
    let mut other = connect_from(server.addr, Some([127, 0, 0, 2])).await;
    assert!(served(&mut other).await);
    // Once one closes, a new connection from the first address is served again.
    drop(open.pop());
    let deadline = Instant::now() + T;
    loop {
        let mut s = connect_from(server.addr, None).await;
        if served(&mut s).await {
            break;
        }
        assert!(Instant::now() < deadline, "a place was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = server.metrics.render();
    assert!(
        text.contains("master_events_connections_closed_total{reason=\"per_ip_limit\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn an_h2_connection_carries_200_streams_that_each_get_every_event_and_no_more_at_once() {
    use http_body_util::BodyExt as _;
    let server = start("", |c| c.max_streams = 1000).await;
    let tcp = connect_from(server.addr, None).await;
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let addr = server.addr;
    let stream_request = move || {
        hyper::Request::get(format!(
            "http://{addr}/diag/masterEvents?start=now&heartbeat=0"
        ))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request")
    };
    let per_connection = master_events_server::H2_MAX_STREAMS_PER_CONNECTION as usize;
    let mut bodies = Vec::new();
    for _ in 0..per_connection {
        let resp = timeout(T, sender.clone().send_request(stream_request()))
            .await
            .expect("answered in time")
            .expect("answered");
        assert_eq!(resp.status(), 200);
        bodies.push(resp.into_body());
    }
    assert_eq!(server.metrics.open_streams().get(), per_connection as i64);
    // One more is held by the client, which the server told its limit.
    let mut extra = sender.clone();
    let mut pending = tokio::spawn(async move { extra.send_request(stream_request()).await });
    assert!(
        timeout(Duration::from_millis(300), &mut pending)
            .await
            .is_err(),
        "a stream past the connection's limit was answered"
    );
    // One event reaches every stream of the connection.
    let post = format!(
        "POST /diag/masterEvents HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{LINE}",
        LINE.len()
    );
    let reply = exchange(server.addr, None, post.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    for (i, body) in bodies.iter_mut().enumerate() {
        let mut got = Vec::new();
        while !got.ends_with(b"\n") {
            let frame = timeout(T, body.frame())
                .await
                .unwrap_or_else(|_| panic!("stream {i}: no event in time"))
                .unwrap_or_else(|| panic!("stream {i} ended"))
                .expect("a frame");
            if let Ok(data) = frame.into_data() {
                got.extend_from_slice(&data);
            }
        }
        let line = String::from_utf8_lossy(&got);
        assert!(
            line.starts_with("{\"type\":\"deleteBucket\",\"seq\":1,"),
            "stream {i}: {line}"
        );
    }
    // A stream closed makes room for the one held.
    drop(bodies.pop());
    let resp = timeout(T, pending)
        .await
        .expect("answered once there was room")
        .expect("the task ran")
        .expect("answered");
    assert_eq!(resp.status(), 200);
    drop(resp);
    drop(bodies);
    conn.abort();
}
