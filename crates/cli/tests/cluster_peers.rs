//! Hostile or broken peers on the replication protocol: a vote for an older epoch,
//! a replica claiming an epoch nobody began, a report for another epoch, garbage
//! parameters — each refused with a clear status, a WARN and a metric, and the
//! node keeps serving; a master that answers garbage or stalls mid-body is left,
//! reported as unreachable (with why), and nothing of it is taken.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, http, run_logged, wait_until, Logged};
use serde_json::Value;

const NODE: &str = "n_0@127.0.0.1";

fn serve(name: &str, port: u16, master: &str, peers: &[(&str, u16)]) -> Logged {
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--node".into(),
        name.into(),
        "--master".into(),
        master.into(),
    ];
    for (n, p) in peers {
        args.push("--peer".into());
        args.push(format!("{n}=http://127.0.0.1:{p}"));
    }
    run_logged(&args, true)
}

fn post_event(port: u16) -> (u16, String) {
    http(
        port,
        "POST",
        "/diag/masterEvents",
        "{\"type\":\"deleteBucket\",\"bucket\":\"b\"}\n",
    )
}

#[test]
fn stale_and_impossible_peer_requests_are_refused_warned_and_counted_and_the_node_goes_on() {
    let port = free_port();
    // A cluster of one (its own peer entry): it is master of epoch 1 at once.
    let node = serve(NODE, port, NODE, &[(NODE, port)]);
    wait_until("the node to sequence", Duration::from_secs(20), || {
        post_event(port).0 == 200
    });

    // A vote for an epoch older than the one it promised (1).
    let (status, body) = http(port, "GET", "/cluster/vote?epoch=0&node=x", "");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("older than the epoch 1"), "{body}");
    // A vote for its own epoch: what its archive holds.
    let (status, body) = http(port, "GET", "/cluster/vote?epoch=1&node=x", "");
    assert_eq!(status, 200, "{body}");
    let vote: Value = serde_json::from_str(&body).expect("a vote");
    assert_eq!(vote["node"], NODE);
    assert!(vote["lastSeq"].as_u64() >= Some(2), "{vote}");
    assert_eq!(vote["lastEpoch"], 1);

    // A replica claiming an epoch nobody began.
    let (status, body) = http(
        port,
        "GET",
        "/cluster/log?follow=1&last=5&epochs=7:1&node=x",
        "",
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("claims epoch 7"), "{body}");
    // A follower of an epoch this node is not the master of.
    let (status, body) = http(port, "GET", "/cluster/log?follow=3&last=0&node=x", "");
    assert_eq!(status, 409, "{body}");
    // A report for another epoch, and one beyond the archive.
    let report = |q: &str| {
        http(
            port,
            "POST",
            &format!("/cluster/replicated?node={}&run=1&{q}", "n_0%40127.0.0.1"),
            "",
        )
    };
    assert_eq!(report("epoch=0&seq=1").0, 409);
    assert_eq!(report("epoch=1&seq=999999").0, 409);
    // Garbage parameters: 400 saying which.
    let (status, body) = http(port, "GET", "/cluster/log?epochs=3:1,2:9&node=x", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("epochs="), "{body}");
    let (status, body) = http(port, "GET", "/cluster/vote?epoch=many", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("epoch="), "{body}");
    let (status, _) = http(
        port,
        "POST",
        "/cluster/replicated?node=stranger&run=1&epoch=1&seq=1",
        "",
    );
    assert_eq!(status, 400);

    // Counted, warned, and the node still sequences and serves.
    let (_, metrics) = http(port, "GET", "/metrics", "");
    let stale = metrics
        .lines()
        .find(|l| l.starts_with("master_events_cluster_stale_peer_requests_total"))
        .unwrap_or_default()
        .to_owned();
    assert!(stale.ends_with(" 5"), "{stale}");
    let log = node.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("refused a peer's request"))
            .count()
            >= 5,
        "{log}"
    );
    assert_eq!(post_event(port).0, 200);
    // A catch-up read of the whole archive: a start frame, then every event.
    let (status, body) = http(port, "GET", "/cluster/log?last=0&node=x", "");
    assert_eq!(status, 200);
    let mut lines = body.lines();
    let start: Value = serde_json::from_str(lines.next().unwrap_or("")).expect("start");
    assert_eq!(start["control"], "start");
    assert_eq!(start["agreed"], 0);
    assert_eq!(start["epochs"], "1:1");
    let events: Vec<Value> = lines
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v.get("type").is_some())
        .collect();
    assert_eq!(events.len() as u64, start["last"].as_u64().unwrap_or(0));
    assert_eq!(events[0]["type"], "becameMaster");
}

/// A fake master: answers every request with `reply` (status line and head
/// included), then holds the connection open until the test ends.
fn fake_master(reply: &'static str, stop: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let _ = listener.set_nonblocking(true);
    std::thread::spawn(move || {
        let mut open = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(reply.as_bytes());
                    open.push(s);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    port
}

fn follower_of(master_port: u16) -> (Logged, u16) {
    let port = free_port();
    let follower = serve(
        "n_1@127.0.0.1",
        port,
        NODE,
        &[(NODE, master_port), ("n_1@127.0.0.1", port)],
    );
    (follower, port)
}

#[test]
fn a_master_answering_garbage_is_left_and_reported_unreachable_and_nothing_of_it_is_taken() {
    let stop = Arc::new(AtomicBool::new(false));
    let garbage = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: 27\r\n\r\n{\"control\":\"start\",\"x\":1}\n\n";
    let master = fake_master(garbage, Arc::clone(&stop));
    let (follower, port) = follower_of(master);
    wait_until(
        "the follower to report the master's garbage",
        Duration::from_secs(15),
        || {
            follower
                .log()
                .contains("master unreachable: bad control frame")
        },
    );
    let (_, cluster) = http(port, "GET", "/cluster", "");
    let cluster: Value = serde_json::from_str(&cluster).expect("json");
    assert_eq!(cluster["masterReachable"], false, "{cluster}");
    assert_eq!(cluster["last_seq"], 0, "nothing taken: {cluster}");
    let (status, ready) = http(port, "GET", "/ready", "");
    assert_eq!(status, 503, "{ready}");
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn a_master_that_stalls_mid_body_is_given_up_after_three_silent_seconds() {
    let stop = Arc::new(AtomicBool::new(false));
    // A valid start frame, then a half line, then nothing.
    let stalled = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n\
        96\r\n{\"control\":\"start\",\"agreed\":0,\"last\":3,\"committed\":3,\"epochs\":\"1:1\",\"history\":\"abcdef0123456789\"}\n{\"type\":\"deleteBucket\",\"seq\":1,\"ts\":1.0,\"bucket\":\"b\"\r\n";
    let master = fake_master(stalled, Arc::clone(&stop));
    let (follower, port) = follower_of(master);
    wait_until(
        "the follower to give up the stalled master",
        Duration::from_secs(20),
        || {
            follower
                .log()
                .contains("master unreachable: nothing from the peer for 3 s")
        },
    );
    let (_, cluster) = http(port, "GET", "/cluster", "");
    let cluster: Value = serde_json::from_str(&cluster).expect("json");
    assert_eq!(
        cluster["last_seq"], 0,
        "the half line is not taken: {cluster}"
    );
    stop.store(true, Ordering::Relaxed);
}
