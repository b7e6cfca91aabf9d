//! Three `serve` processes on loopback with static discovery: events noted on every
//! node appear exactly once in the master's stream, in order per origin, and the
//! stream read from a non-master node equals the master's, byte for byte.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process killed on drop, whatever happens in the test.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_node(
    name: &str,
    port: u16,
    master: &str,
    peers: &[(String, String)],
    secret: &std::path::Path,
) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_master-events"));
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--node",
        name,
        "--master",
        master,
    ])
    .arg("--cluster-secret-file")
    .arg(secret)
    .env("RUST_LOG", "warn")
    .env_remove("MASTER_EVENTS_USERS")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    for (n, url) in peers {
        cmd.arg("--peer").arg(format!("{n}={url}"));
    }
    let mut child = cmd.spawn().expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("node started");
    assert!(line.starts_with("listening on http://"), "{line}");
    Proc(child)
}

fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, dechunk(&body))
}

/// Decodes a chunked body (or returns it as is).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if n == 0 {
            return out;
        }
        if after.len() < n {
            return body.to_owned();
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

fn archive(port: u16) -> String {
    let (status, body) = http(port, "GET", "/diag/masterEvents?o=1", "");
    assert_eq!(status, 200);
    body
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn three_static_nodes_sequence_every_event_once_and_replicate_the_archive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-cluster-secret\n").expect("write secret");
    let names = ["n_0@127.0.0.1", "n_1@127.0.0.1", "n_2@127.0.0.1"];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let peers: Vec<(String, String)> = names
        .iter()
        .zip(&ports)
        .map(|(n, p)| ((*n).to_owned(), format!("http://127.0.0.1:{p}")))
        .collect();
    let _nodes: Vec<Proc> = names
        .iter()
        .zip(&ports)
        .map(|(n, p)| start_node(n, *p, names[0], &peers, &secret))
        .collect();

    // Every node ingests its own events; a follower answers once they are sequenced.
    for round in 0..5 {
        for (i, port) in ports.iter().enumerate() {
            let body: String = (0..20)
                .map(|k| {
                    format!(
                        "{{\"type\":\"vbucketMoveDone\",\"vbucket\":{},\"bucket\":\"b{i}\"}}\n",
                        round * 20 + k
                    )
                })
                .collect();
            let (status, reply) = http(*port, "POST", "/diag/masterEvents", &body);
            assert_eq!(status, 200, "node {i}: {reply}");
            assert!(reply.contains("\"accepted\":20"), "{reply}");
        }
    }
    // The master's archive: becameMaster + 300 events, each exactly once, in order
    // per origin.
    let master = archive(ports[0]);
    let lines: Vec<serde_json::Value> = master
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 301, "{master}");
    let mut per_origin: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["seq"].as_u64(), Some(i as u64 + 1));
        per_origin
            .entry(v["origin"].as_str().unwrap_or("").to_owned())
            .or_default()
            .push(v["originSeq"].as_u64().unwrap_or(0));
    }
    assert_eq!(lines[0]["type"], "becameMaster");
    for name in names {
        let seqs = &per_origin[name];
        let expected_len = if name == names[0] { 101 } else { 100 };
        assert_eq!(seqs.len(), expected_len, "{name}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{name}: {seqs:?}"
        );
    }
    // Each follower serves the same archive, byte for byte.
    for port in &ports[1..] {
        wait_until("the follower to replicate everything", || {
            archive(*port) == master
        });
    }
    let (_, cluster) = http(ports[1], "GET", "/cluster", "");
    assert!(
        cluster.contains("\"master\":\"n_0@127.0.0.1\"") && cluster.contains("\"is_master\":false"),
        "{cluster}"
    );
    // The forward endpoint refuses anyone without the cluster secret.
    let (status, _) = http(
        ports[0],
        "POST",
        "/cluster/forward",
        "{\"type\":\"failoverEnded\"}\n",
    );
    assert_eq!(status, 401);
}
