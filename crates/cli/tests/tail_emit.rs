//! `master-events tail` and `emit` as a user runs them, against a scripted fake server
//! (hyper, on a free loopback port) that records every request.
//!
//! Each test starts its own server and runs the binary as a child process under a
//! timeout (the child is killed if it overruns); nothing waits on a sleep.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "s3cret-Pa55";

type Body = BoxBody<Bytes, std::io::Error>;

/// One request as the fake server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

impl Seen {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A fake server: answers each request with the script's response (given the
/// request and its 0-based index) and records them all.
struct FakeServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl FakeServer {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<F>(script: F) -> FakeServer
where
    F: Fn(&Seen, usize) -> Response<Body> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let script = Arc::new(script);
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen = seen.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        let script = script.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let header = |name: hyper::header::HeaderName| {
                                parts
                                    .headers
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned)
                            };
                            let request = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                query: parse_query(parts.uri.query().unwrap_or("")),
                                authorization: header(hyper::header::AUTHORIZATION),
                                content_type: header(hyper::header::CONTENT_TYPE),
                                body,
                            };
                            let index = {
                                let mut all = seen.lock().expect("not poisoned");
                                all.push(request.clone());
                                all.len() - 1
                            };
                            Ok::<_, Infallible>(script(&request, index))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        }
    });
    FakeServer { addr, seen, task }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.replace("%2C", ",").replace("%40", "@"))
        })
        .collect()
}

/// How a scripted stream ends.
enum End {
    /// The response ends properly.
    Clean,
    /// The connection is cut (no final chunk), after what was sent is flushed.
    Drop,
    /// The response stays open for ever.
    Hang,
}

fn stream_response(chunks: Vec<String>, end: End) -> Response<Body> {
    let data = stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from(c)))),
    );
    let body: Body = match end {
        End::Clean => BoxBody::new(StreamBody::new(data)),
        End::Drop => BoxBody::new(StreamBody::new(data.chain(stream::once(async {
            // One pending poll lets hyper flush what was sent before the cut.
            tokio::task::yield_now().await;
            Err(std::io::Error::other("scripted connection drop"))
        })))),
        End::Hang => BoxBody::new(StreamBody::new(data.chain(stream::pending()))),
    };
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(body)
        .expect("valid response")
}

fn text_response(status: StatusCode, text: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(BoxBody::new(
            Full::new(Bytes::from(text.to_owned())).map_err(|never| match never {}),
        ))
        .expect("valid response")
}

/// An event line as the server streams it, without its newline.
fn event(seq: u64) -> String {
    format!(
        r#"{{"type":"vbucketMoveDone","seq":{seq},"ts":1333576052.926554,"vbucket":{seq},"bucket":"default"}}"#
    )
}

fn lines(seqs: impl IntoIterator<Item = u64>) -> String {
    seqs.into_iter().map(|s| event(s) + "\n").collect()
}

/// The binary, with no credentials nor proxy from the test's environment.
fn command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_master-events"));
    cmd.args(args)
        .env_remove("MASTER_EVENTS_AUTH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for proxy in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(proxy);
    }
    cmd
}

/// Runs the command to its end (killed after [`TIMEOUT`]), feeding `stdin`.
async fn finish(mut cmd: tokio::process::Command, stdin: Option<&[u8]>) -> Output {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("the binary starts");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).await.expect("write stdin");
    }
    tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("the command finishes in time")
        .expect("the command runs")
}

async fn run(args: &[&str]) -> Output {
    finish(command(args), None).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn printed_seqs(out: &Output) -> Vec<u64> {
    text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            v["seq"].as_u64().expect("each line has a seq")
        })
        .collect()
}

fn basic(user_password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

fn ndjson_file(content: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(content.as_bytes()).expect("write temp file");
    file
}

fn accept_all(seen: &Seen, _: usize) -> Response<Body> {
    let n = seen
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    text_response(
        StatusCode::OK,
        &format!(r#"{{"accepted":{n},"seqs":[1,{n}]}}"#),
    )
}

// ---------------------------------------------------------------------------- tail

#[tokio::test]
async fn tail_resumes_after_a_drop_with_since_and_prints_every_seq_once() {
    let server = serve(|seen, index| match index {
        // Three events, a fourth cut in the middle, then the connection drops.
        0 if seen.param("since").is_none() => stream_response(
            vec![
                lines(1..=2) + &event(3)[..20],
                event(3)[20..].to_owned() + "\n" + &event(4)[..30],
            ],
            End::Drop,
        ),
        // The server is restarting.
        1 => text_response(StatusCode::SERVICE_UNAVAILABLE, "restarting"),
        // The resumed stream repeats seq 3 (the client must drop it), then goes on.
        2 if seen.param("since") == Some("3") => stream_response(
            vec![
                lines(3..=4),
                r#"{"type":"heartbeat","seq":4,"ts":1333576060.5}"#.to_owned() + "\n",
                lines(5..=7),
            ],
            End::Hang,
        ),
        _ => text_response(StatusCode::BAD_REQUEST, "unexpected request"),
    })
    .await;
    let out = run(&["tail", &server.url(), "--count", "6"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(printed_seqs(&out), vec![1, 2, 3, 4, 5, 6]);
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen
        .iter()
        .all(|s| s.method == "GET" && s.path == "/diag/masterEvents"));
    assert_eq!(seen[2].param("since"), Some("3"));
    assert!(
        text(&out.stderr).contains("reconnecting"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn tail_once_prints_the_archive_reports_a_gap_and_exits_zero() {
    let server = serve(|_, _| {
        stream_response(
            vec![
                r#"{"type":"gap","fromSeq":1,"toSeq":9,"missed":9,"reason":"evicted from the archive"}"#
                    .to_owned()
                    + "\n",
                lines(10..=11),
            ],
            End::Clean,
        )
    })
    .await;
    let out = run(&[
        "tail",
        &format!("{}/diag/masterEvents", server.url()),
        "--once",
        "--since",
        "0",
        "--type",
        "vbucketMoveDone,updateMap",
        "--bucket",
        "default",
        "--vbucket",
        "10,11",
        "--node",
        "n_0@10.0.0.1",
        "--heartbeat",
        "0",
    ])
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(printed_seqs(&out), vec![10, 11]);
    assert!(
        stderr.contains("9 events were missed (seq 1 to 9)") && stderr.contains("evicted"),
        "{stderr}"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let q = &seen[0];
    assert_eq!(q.path, "/diag/masterEvents");
    assert_eq!(q.param("o"), Some("1"));
    assert_eq!(q.param("since"), Some("0"));
    assert_eq!(q.param("type"), Some("vbucketMoveDone,updateMap"));
    assert_eq!(q.param("bucket"), Some("default"));
    assert_eq!(q.param("vbucket"), Some("10,11"));
    assert_eq!(q.param("node"), Some("n_0@10.0.0.1"));
    assert_eq!(q.param("heartbeat"), Some("0"));
}

#[tokio::test]
async fn tail_pretty_prints_one_readable_line_per_event() {
    let server = serve(|_, _| stream_response(vec![lines([12])], End::Clean)).await;
    let out = run(&["tail", &server.url(), "--once", "--pretty"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "#12 2012-04-04T21:47:32.926554Z vbucketMoveDone bucket=default vbucket=12\n"
    );
}

#[tokio::test]
async fn tail_refused_credentials_exit_one_without_retry_or_password() {
    let server = serve(|_, _| text_response(StatusCode::UNAUTHORIZED, "")).await;
    let out = run(&[
        "tail",
        &server.url(),
        "--user",
        &format!("alice:{PASSWORD}"),
    ])
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("authentication failed") && stderr.contains("\"alice\""),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD) && !text(&out.stdout).contains(PASSWORD));
    assert_eq!(server.seen().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn tail_without_credentials_says_how_to_give_them() {
    let server = serve(|_, _| text_response(StatusCode::UNAUTHORIZED, "")).await;
    let out = run(&["tail", &server.url()]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("authentication required") && stderr.contains("MASTER_EVENTS_AUTH"),
        "{stderr}"
    );
    assert_eq!(server.seen()[0].authorization, None);
}

#[tokio::test]
async fn tail_sends_basic_auth_from_user_and_from_the_environment() {
    let server = serve(|_, _| stream_response(vec![], End::Clean)).await;
    let out = run(&["tail", &server.url(), "--once", "--user", "alice:s3cret"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut cmd = command(&["tail", &server.url(), "--once"]);
    cmd.env("MASTER_EVENTS_AUTH", "bob:pa:ss");
    let out = finish(cmd, None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen = server.seen();
    assert_eq!(seen[0].authorization, Some(basic("alice:s3cret")));
    assert_eq!(seen[1].authorization, Some(basic("bob:pa:ss")));
}

#[tokio::test]
async fn tail_gives_up_after_max_reconnects() {
    let server = serve(|_, _| text_response(StatusCode::SERVICE_UNAVAILABLE, "not ready")).await;
    let out = run(&["tail", &server.url(), "--max-reconnects", "2"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("giving up") && stderr.contains("503"),
        "{stderr}"
    );
    assert_eq!(server.seen().len(), 3, "the first try and two reconnects");
}

#[tokio::test]
async fn tail_exits_zero_on_ctrl_c() {
    let server = serve(|_, _| stream_response(vec![lines([1])], End::Hang)).await;
    let mut child = command(&["tail", &server.url()])
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut first = String::new();
    tokio::time::timeout(TIMEOUT, BufReader::new(stdout).read_line(&mut first))
        .await
        .expect("the first event arrives in time")
        .expect("stdout reads");
    assert!(first.contains("\"seq\":1"), "{first}");
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on the pid of our own running child, with a valid signal.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("exits in time")
        .expect("waits");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn tail_rejects_an_unknown_type_as_usage_error() {
    let out = run(&["tail", "http://127.0.0.1:9", "--type", "noSuchType"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not an event type"));
}

// ---------------------------------------------------------------------------- emit

const LINE_A: &str = r#"{"type":"deleteBucket","bucket":"a"}"#;
const LINE_B: &str = r#"{"type":"vbucketMoveDone","vbucket":43,"bucket":"default"}"#;
const LINE_C: &str = r#"{"type":"failoverEnded","ts":1333576052.926554,"seq":7}"#;

#[tokio::test]
async fn emit_sends_a_file_in_batches_and_prints_each_reply() {
    let server = serve(accept_all).await;
    let file = ndjson_file(&format!(
        "{LINE_A}\n{LINE_B}\n\n{LINE_C}\r\n{LINE_A}\n{LINE_B}"
    ));
    let path = file.path().to_string_lossy().into_owned();
    let out = run(&["emit", &server.url(), &path, "--batch-lines", "2"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen = server.seen();
    let bodies: Vec<String> = seen.iter().map(|s| text(&s.body)).collect();
    assert_eq!(
        bodies,
        vec![
            format!("{LINE_A}\n{LINE_B}\n"),
            format!("{LINE_C}\n{LINE_A}\n"),
            format!("{LINE_B}\n"),
        ]
    );
    assert!(seen.iter().all(|s| s.method == "POST"
        && s.path == "/diag/masterEvents"
        && s.content_type.as_deref() == Some("application/x-ndjson")));
    assert_eq!(
        text(&out.stdout),
        "{\"accepted\":2,\"seqs\":[1,2]}\n{\"accepted\":2,\"seqs\":[1,2]}\n{\"accepted\":1,\"seqs\":[1,1]}\n"
    );
    assert!(
        text(&out.stderr).contains("5 lines sent"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn emit_refuses_a_bad_line_before_sending_anything() {
    let server = serve(accept_all).await;
    let file = ndjson_file(&format!(
        "{LINE_A}\n{LINE_B}\n{{\"type\":\"vbucketMoveDone\",\"vbucket\":1}}\n{LINE_C}\n"
    ));
    let path = file.path().to_string_lossy().into_owned();
    let out = run(&["emit", &server.url(), &path, "--batch-lines", "1"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:3: missing field \"bucket\"")),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert!(server.seen().is_empty(), "nothing may be sent");
}

#[tokio::test]
async fn emit_sends_standard_input() {
    let server = serve(accept_all).await;
    let out = finish(
        command(&["emit", &server.url(), "-"]),
        Some(format!("{LINE_A}\n{LINE_B}\n").as_bytes()),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(text(&seen[0].body), format!("{LINE_A}\n{LINE_B}\n"));
}

#[tokio::test]
async fn emit_from_standard_input_stops_at_a_bad_line() {
    let server = serve(accept_all).await;
    let out = finish(
        command(&["emit", &server.url(), "--batch-lines", "1"]),
        Some(format!("{LINE_A}\nnot json\n{LINE_B}\n").as_bytes()),
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("<stdin>:2: invalid JSON"), "{stderr}");
    assert!(stderr.contains("up to line 1 were delivered"), "{stderr}");
    let bodies: Vec<String> = server.seen().iter().map(|s| text(&s.body)).collect();
    assert_eq!(bodies, vec![format!("{LINE_A}\n")]);
}

#[tokio::test]
async fn emit_builds_one_event_from_key_values() {
    let server = serve(accept_all).await;
    let out = run(&[
        "emit",
        &server.url(),
        "vbucketMoveDone",
        "vbucket=43",
        "bucket=default",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let sent: serde_json::Value = serde_json::from_slice(&seen[0].body).expect("JSON body");
    assert_eq!(
        sent,
        serde_json::json!({"type":"vbucketMoveDone","vbucket":43,"bucket":"default"})
    );
    assert!(seen[0].body.ends_with(b"\n"));
    assert_eq!(text(&out.stdout), "{\"accepted\":1,\"seqs\":[1,1]}\n");
}

#[tokio::test]
async fn emit_an_event_missing_a_field_names_it_and_sends_nothing() {
    let server = serve(accept_all).await;
    let out = run(&["emit", &server.url(), "vbucketMoveDone", "vbucket=43"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing field \"bucket\""), "{stderr}");
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn emit_maps_a_refused_line_back_to_the_input_line() {
    let server = serve(|seen, index| match index {
        0 => accept_all(seen, index),
        _ => text_response(
            StatusCode::BAD_REQUEST,
            r#"{"error":"field \"bucket\": no such bucket","line":2}"#,
        ),
    })
    .await;
    let file = ndjson_file(&format!("{LINE_A}\n{LINE_B}\n{LINE_C}\n{LINE_A}\n"));
    let path = file.path().to_string_lossy().into_owned();
    let out = run(&["emit", &server.url(), &path, "--batch-lines", "2"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:4: the server refused the line: field \"bucket\": no such bucket"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("up to line 2 were delivered"), "{stderr}");
}

#[tokio::test]
async fn emit_to_a_server_with_no_ingest_asks_whether_it_is_a_master_events_server() {
    for status in [
        StatusCode::NOT_FOUND,
        StatusCode::METHOD_NOT_ALLOWED,
        StatusCode::NOT_IMPLEMENTED,
    ] {
        let server = serve(move |_, _| text_response(status, "<html>nothing here</html>")).await;
        let out = run(&["emit", &server.url(), "deleteBucket", "bucket=a"]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{status}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "answered {status}: is this a master-events server"
            )),
            "{status}: {stderr}"
        );
        assert!(!stderr.contains("<html>"), "{status}: {stderr}");
    }
}

#[tokio::test]
async fn emit_refused_credentials_exit_one_without_the_password() {
    let server = serve(|_, _| text_response(StatusCode::UNAUTHORIZED, "")).await;
    let mut cmd = command(&["emit", &server.url(), "deleteBucket", "bucket=a"]);
    cmd.env("MASTER_EVENTS_AUTH", format!("alice:{PASSWORD}"));
    let out = finish(cmd, None).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(!stderr.contains(PASSWORD) && !text(&out.stdout).contains(PASSWORD));
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization,
        Some(basic(&format!("alice:{PASSWORD}")))
    );
}

#[tokio::test]
async fn emit_sends_basic_auth_from_user() {
    let server = serve(accept_all).await;
    let out = run(&[
        "emit",
        &server.url(),
        "deleteBucket",
        "bucket=a",
        "--user",
        "alice:s3cret",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(server.seen()[0].authorization, Some(basic("alice:s3cret")));
}

#[tokio::test]
async fn emit_of_neither_a_file_nor_a_type_explains_both_forms() {
    let out = run(&["emit", "http://127.0.0.1:9", "no-such-file.ndjson"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("emit URL FILE") && stderr.contains("emit URL TYPE key=value"),
        "{stderr}"
    );
}

#[tokio::test]
async fn tail_once_against_a_server_that_is_down_gives_up_and_exits_one() {
    let server = serve(|_, _| text_response(StatusCode::SERVICE_UNAVAILABLE, "not ready")).await;
    let out = run(&["tail", &server.url(), "--once"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("giving up"), "{stderr}");
    assert_eq!(server.seen().len(), 6, "the first try and five reconnects");
}

#[tokio::test]
async fn tail_across_a_restart_without_persistence_warns_and_prints_the_new_history() {
    let server = serve(|seen, index| {
        let mut resp = match index {
            // History "aaaa": seqs 1 to 3, then the server goes away.
            0 => stream_response(vec![lines(1..=3)], End::Drop),
            // Restarted without its archive: history "bbbb" holds seqs 1 and 2.
            1 if seen.param("since") == Some("3") && seen.param("history") == Some("aaaa") => {
                let reset = r#"{"type":"reset","history":"bbbb","oldestSeq":1,"lastSeq":2,"requestedHistory":"aaaa","requestedSince":3,"reason":"history changed"}"#;
                stream_response(vec![reset.to_owned() + "\n" + &lines(1..=2)], End::Hang)
            }
            _ => text_response(StatusCode::BAD_REQUEST, "unexpected request"),
        };
        let history = if index == 0 { "aaaa" } else { "bbbb" };
        resp.headers_mut().insert(
            "master-events-history",
            hyper::header::HeaderValue::from_static(history),
        );
        resp
    })
    .await;
    let out = run(&["tail", &server.url(), "--count", "5"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        printed_seqs(&out),
        vec![1, 2, 3, 1, 2],
        "the new history's events are not dropped as already seen"
    );
    assert!(
        stderr.contains("WARNING") && stderr.contains("history bbbb"),
        "{stderr}"
    );
    assert!(stderr.contains("reconnected"), "{stderr}");
}
