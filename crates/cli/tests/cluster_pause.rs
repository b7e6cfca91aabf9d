//! A master frozen with SIGSTOP holds nobody's events beyond its lease: three
//! `serve` nodes on a real etcd (lease TTL 1 s), both followers posting events
//! steadily, the master is paused. The new master must sequence events of both
//! survivors (its own queue included) soon after the lease runs out — not when the
//! forwards stuck in the frozen node time out.
#![cfg(feature = "etcd")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{free_port, http, start_binary, start_etcd, wait_until, Paused, Proc};
use serde_json::Value;

const NODES: usize = 3;
/// The lease TTL given to every node, in seconds.
const TTL: f64 = 1.0;

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn cluster_view(port: u16) -> Value {
    let (_, body) = http(port, "GET", "/cluster", "");
    serde_json::from_str(&body).unwrap_or_default()
}

#[test]
fn a_paused_master_stalls_sequencing_for_its_lease_not_for_the_pause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, etcd_port) = start_etcd(dir.path());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "pause-test-secret").expect("secret");
    let names: Vec<String> = (0..NODES).map(|i| format!("n_{i}@127.0.0.1")).collect();
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let nodes: Vec<Proc> = (0..NODES)
        .map(|i| {
            let mut a: Vec<String> = vec![
                "serve".into(),
                "--listen".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--node".into(),
                names[i].clone(),
                "--discovery".into(),
                "etcd".into(),
                "--etcd".into(),
                format!("http://127.0.0.1:{etcd_port}"),
                "--lease-ttl".into(),
                TTL.to_string(),
                "--heartbeat".into(),
                "1".into(),
                "--cluster-secret-file".into(),
                secret.display().to_string(),
            ];
            for (n, p) in names.iter().zip(&ports) {
                a.push("--peer".into());
                a.push(format!("{n}=http://127.0.0.1:{p}"));
            }
            start_binary(&a)
        })
        .collect();

    let mut master = None;
    wait_until("a master to be elected", Duration::from_secs(20), || {
        master = cluster_view(ports[0])["master"]
            .as_str()
            .and_then(|m| names.iter().position(|n| n == m));
        master.is_some()
    });
    let master = master.unwrap_or(0);
    let old_epoch = cluster_view(ports[master])["epoch"].as_u64().unwrap_or(0);
    let survivors: Vec<usize> = (0..NODES).filter(|i| *i != master).collect();
    for &i in &survivors {
        wait_until("the followers to be ready", Duration::from_secs(20), || {
            http(ports[i], "GET", "/ready", "").0 == 200
        });
    }

    // Both followers post events steadily (one request at a time: a request the
    // frozen master holds keeps its emitter waiting, as a real client would).
    let stop = Arc::new(AtomicBool::new(false));
    let emitters: Vec<_> = survivors
        .iter()
        .map(|&i| {
            let (port, stop) = (ports[i], Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("{{\"type\":\"deleteBucket\",\"bucket\":\"b{i}-{k}\"}}\n");
                    http(port, "POST", "/diag/masterEvents", &body);
                    k += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    wait_until(
        "events from both followers",
        Duration::from_secs(10),
        || {
            let (_, archive) = http(ports[master], "GET", "/diag/masterEvents?o=1", "");
            survivors
                .iter()
                .all(|&i| archive.contains(&format!("\"origin\":\"{}\"", names[i])))
        },
    );

    let paused_at = now_secs();
    let _paused = Paused::pause(&nodes[master]);

    // A new master (asked of the survivors only: the frozen node answers nobody).
    let mut new_master = None;
    wait_until("a new master", Duration::from_secs(20), || {
        new_master = survivors.iter().copied().find(|&i| {
            let v = cluster_view(ports[i]);
            v["is_master"] == true && v["epoch"].as_u64().unwrap_or(0) > old_epoch
        });
        new_master.is_some()
    });
    let new_master = new_master.unwrap_or(survivors[0]);

    // In the new master's archive, after its becameMaster: each survivor's first
    // event, with the ts the new master stamped it with.
    let mut firsts: Vec<(String, f64)> = Vec::new();
    wait_until(
        "the new master to sequence events of both survivors",
        Duration::from_secs(30),
        || {
            let (_, archive) = http(ports[new_master], "GET", "/diag/masterEvents?o=1", "");
            let lines: Vec<Value> = archive
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let Some(became) = lines.iter().rposition(|v| {
                v["type"] == "becameMaster" && v["node"] == names[new_master].as_str()
            }) else {
                return false;
            };
            firsts = survivors
                .iter()
                .filter_map(|&i| {
                    lines[became + 1..]
                        .iter()
                        .find(|v| v["origin"] == names[i].as_str())
                        .and_then(|v| Some((names[i].clone(), v["ts"].as_f64()?)))
                })
                .collect();
            firsts.len() == survivors.len()
        },
    );
    stop.store(true, Ordering::Relaxed);
    for (origin, ts) in &firsts {
        let after = ts - paused_at;
        eprintln!(
            "first event of {origin} sequenced by the new master {after:.3} s after the pause"
        );
        assert!(
            after < TTL + 2.0,
            "{origin}: nothing sequenced for {after:.3} s after the master paused (lease TTL {TTL} s)"
        );
    }
    drop(_paused);
    for e in emitters {
        let _ = e.join();
    }
}
