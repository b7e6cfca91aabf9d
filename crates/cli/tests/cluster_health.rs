//! A follower says when its link to the master is broken, and why: `GET /cluster`
//! (`masterReachable`, `forwarding`), `GET /ready` (503 with the reason), `/metrics`
//! and one WARN per change of state; `emit` exits 3 when its events were only
//! queued; `serve` refuses a static master it has no URL for.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{free_port, http, run_logged, wait_until, Logged};
use serde_json::Value;

fn serve(name: &str, port: u16, master: &str, peers: &[(&str, u16)], secret: &Path) -> Logged {
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--node".into(),
        name.into(),
        "--master".into(),
        master.into(),
        "--cluster-secret-file".into(),
        secret.display().to_string(),
    ];
    for (n, p) in peers {
        args.push("--peer".into());
        args.push(format!("{n}=http://127.0.0.1:{p}"));
    }
    run_logged(&args, true)
}

fn json(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = http(port, "GET", path, "");
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// POSTs one event in the background (a follower may hold the request ~10 s).
fn post_in_background(port: u16) {
    std::thread::spawn(move || {
        http(
            port,
            "POST",
            "/diag/masterEvents",
            "{\"type\":\"deleteBucket\",\"bucket\":\"b\"}\n",
        )
    });
}

const MASTER: &str = "n_0@127.0.0.1";
const FOLLOWER: &str = "n_1@127.0.0.1";

#[test]
fn a_follower_whose_secret_the_master_refuses_shows_refused_and_warns_once_naming_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good");
    let wrong = dir.path().join("wrong");
    std::fs::write(&good, "the-right-secret\n").expect("write");
    std::fs::write(&wrong, "not-the-secret-xyzzy\n").expect("write");
    let (pm, pf) = (free_port(), free_port());
    let peers = [(MASTER, pm), (FOLLOWER, pf)];
    let _master = serve(MASTER, pm, MASTER, &peers, &good);
    let follower = serve(FOLLOWER, pf, MASTER, &peers, &wrong);
    post_in_background(pf);

    wait_until(
        "the follower's /cluster to show forwarding refused",
        Duration::from_secs(10),
        || json(pf, "/cluster").1["forwarding"]["state"] == "refused",
    );
    let (_, cluster) = json(pf, "/cluster");
    let error = cluster["forwarding"]["lastError"].as_str().unwrap_or("");
    assert!(
        error.contains("cluster secret refused by the master"),
        "{cluster}"
    );
    let (status, ready) = json(pf, "/ready");
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cluster secret")),
        "{ready}"
    );
    let (_, metrics) = http(pf, "GET", "/metrics", "");
    assert!(
        metrics.contains("master_events_cluster_forwarding_state{state=\"refused\"} 1"),
        "{metrics}"
    );
    wait_until(
        "the follower to log the refusal",
        Duration::from_secs(5),
        || {
            follower
                .log()
                .contains("cluster secret refused by the master")
        },
    );
    let log = follower.log();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("cluster secret refused by the master"))
        .collect();
    assert_eq!(warns.len(), 1, "one WARN per change of state:\n{log}");
    assert!(!log.contains("xyzzy"), "the secret is in the log:\n{log}");
}

#[test]
fn a_follower_of_a_killed_static_master_is_unreachable_and_not_ready_until_the_master_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-cluster-secret\n").expect("write");
    let (pm, pf) = (free_port(), free_port());
    let peers = [(MASTER, pm), (FOLLOWER, pf)];
    let mut master = serve(MASTER, pm, MASTER, &peers, &secret);
    let follower = serve(FOLLOWER, pf, MASTER, &peers, &secret);

    wait_until("the follower to be ready", Duration::from_secs(20), || {
        json(pf, "/ready").0 == 200
    });
    let (_, cluster) = json(pf, "/cluster");
    assert_eq!(cluster["masterReachable"], true, "{cluster}");
    assert!(cluster["lastContactSecsAgo"].is_number(), "{cluster}");

    master.proc.kill9();
    wait_until(
        "the follower to see its master unreachable",
        Duration::from_secs(10),
        || json(pf, "/cluster").1["masterReachable"] == false,
    );
    let (status, ready) = json(pf, "/ready");
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["ready"], false, "{ready}");
    assert!(
        ready["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unreachable")),
        "{ready}"
    );
    let (_, metrics) = http(pf, "GET", "/metrics", "");
    assert!(
        metrics.contains("master_events_cluster_master_reachable 0"),
        "{metrics}"
    );
    wait_until("a WARN naming the outage", Duration::from_secs(5), || {
        follower
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("master unreachable"))
    });

    let _master = serve(MASTER, pm, MASTER, &peers, &secret);
    wait_until(
        "the follower to be ready again",
        Duration::from_secs(20),
        || json(pf, "/ready").0 == 200,
    );
    assert_eq!(json(pf, "/cluster").1["masterReachable"], true);
    wait_until("an INFO on recovery", Duration::from_secs(5), || {
        follower.log().contains("reachable again")
    });
}

#[test]
fn emit_exits_3_naming_the_node_and_cause_when_its_event_is_only_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-cluster-secret\n").expect("write");
    // The master's port has nothing listening.
    let (pm, pf) = (free_port(), free_port());
    let peers = [(MASTER, pm), (FOLLOWER, pf)];
    let _follower = serve(FOLLOWER, pf, MASTER, &peers, &secret);

    let mut emit = run_logged(
        &[
            "emit".into(),
            format!("http://127.0.0.1:{pf}"),
            "deleteBucket".into(),
            "bucket=b".into(),
        ],
        false,
    );
    let code = emit.proc.wait_exit(Duration::from_secs(60));
    let said = emit.log();
    assert_eq!(code, Some(3), "{said}");
    assert!(
        said.contains(&format!("queued by {FOLLOWER}, not yet sequenced")),
        "{said}"
    );
    assert!(said.contains("the master is unreachable ("), "{said}");
    assert!(said.contains("connection refused"), "{said}");
}

#[test]
fn serve_with_a_static_master_but_no_peer_url_for_it_exits_2_saying_what_to_add() {
    let mut serve = run_logged(
        &[
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--node".into(),
            FOLLOWER.into(),
            "--master".into(),
            MASTER.into(),
        ],
        false,
    );
    let code = serve.proc.wait_exit(Duration::from_secs(20));
    let said = serve.log();
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains(&format!("--peer {MASTER}=http://")), "{said}");
}
