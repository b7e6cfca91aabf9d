//! Failover without loss, on a real etcd: three `serve` nodes elect a master with a
//! 1 s lease; every node's emitter posts events steadily; the master is killed with
//! SIGKILL twice, at random moments (each time restarted afterwards, as a follower).
//! A consumer reading the stream (from a surviving node) must receive every
//! acknowledged event exactly once, in per-origin order, with no gap and no
//! duplicate `seq`; the final master's archive must hold them all. The failover time
//! (kill → the new master's `becameMaster`) is printed.
#![cfg(feature = "etcd")]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{free_port, http, start_binary, start_etcd, wait_until, Proc};
use serde_json::Value;

const NODES: usize = 3;
const PER_NODE: usize = 5_000;
/// Events per POST; with the pacing below, about 1,000 events/s in all.
const BATCH: usize = 10;

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

struct Cluster {
    names: Vec<String>,
    ports: Vec<u16>,
    procs: Vec<Option<Proc>>,
    args: Vec<Vec<String>>,
}

impl Cluster {
    fn master(&self) -> Option<usize> {
        for (i, port) in self.ports.iter().enumerate() {
            if self.procs[i].is_none() {
                continue;
            }
            let (status, body) = http(*port, "GET", "/cluster", "");
            if status != 200 {
                continue;
            }
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(m) = v["master"].as_str() {
                return self.names.iter().position(|n| n == m);
            }
        }
        None
    }
}

/// A consumer that follows the stream from `port`, and from another live node
/// (resuming after the last seq) if that one goes away.
fn consume(ports: Vec<u16>, first: usize, stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<Value>>>) {
    let mut which = first;
    let mut last_seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let port = ports[which];
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            which = (which + 1) % ports.len();
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        let req = format!(
            "GET /diag/masterEvents?since={last_seq}&heartbeat=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        if s.write_all(req.as_bytes()).is_err() {
            continue;
        }
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
                continue; // response head, chunk sizes
            };
            if !v.is_object() {
                continue; // a chunk size that happens to be a number
            }
            match v["type"].as_str() {
                Some("heartbeat") => {}
                _ => {
                    if let Some(seq) = v["seq"].as_u64() {
                        last_seq = seq;
                    }
                    if let Ok(mut o) = out.lock() {
                        o.push(v);
                    }
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        which = (which + 1) % ports.len();
    }
}

#[test]
fn master_killed_twice_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, etcd_port) = start_etcd(dir.path());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "etcd-test-secret").expect("secret");
    let names: Vec<String> = (0..NODES).map(|i| format!("n_{i}@127.0.0.1")).collect();
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let args: Vec<Vec<String>> = (0..NODES)
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
                "1".into(),
                "--archive-size".into(),
                "100000".into(),
                "--heartbeat".into(),
                "1".into(),
                "--cluster-secret-file".into(),
                secret.display().to_string(),
            ];
            for (n, p) in names.iter().zip(&ports) {
                a.push("--peer".into());
                a.push(format!("{n}=http://127.0.0.1:{p}"));
            }
            a
        })
        .collect();
    let mut cluster = Cluster {
        names: names.clone(),
        ports: ports.clone(),
        procs: args.iter().map(|a| Some(start_binary(a))).collect(),
        args,
    };
    wait_until("a master to be elected", Duration::from_secs(20), || {
        cluster.master().is_some()
    });

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(Mutex::new(Vec::new()));
    let first_master = cluster.master().unwrap_or(0);
    let consumer = {
        let (ports, stop, received) = (ports.clone(), Arc::clone(&stop), Arc::clone(&received));
        std::thread::spawn(move || consume(ports, (first_master + 1) % NODES, stop, received))
    };

    // Emitters: each posts its node's events; it records which were acknowledged
    // (200: sequenced, and replicated when sequenced by the master itself).
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let maybe: Arc<Mutex<HashSet<String>>> = Arc::default();
    let emitters: Vec<_> = (0..NODES)
        .map(|i| {
            let (port, acked, maybe) = (ports[i], Arc::clone(&acked), Arc::clone(&maybe));
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut k = 0;
                while k < PER_NODE {
                    let ids: Vec<String> = (k..k + BATCH).map(|j| format!("e{i}-{j}")).collect();
                    let body: String = ids
                        .iter()
                        .map(|id| {
                            format!("{{\"type\":\"rebalanceStageEvent\",\"stage\":[\"emit\"],\"event\":\"{id}\"}}\n")
                        })
                        .collect();
                    let (status, _) = http(port, "POST", "/diag/masterEvents", &body);
                    let target = if status == 200 { &acked } else { &maybe };
                    if let Ok(mut set) = target.lock() {
                        set.extend(ids);
                    }
                    if status == 0 {
                        std::thread::sleep(Duration::from_millis(100)); // the node is down
                    }
                    k += BATCH;
                    // Pace: about 1,000 events/s over the three emitters.
                    let due = Duration::from_secs_f64(k as f64 * NODES as f64 / 1000.0);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        })
        .collect();

    // Kill the master twice, at random moments, restarting each victim as a follower.
    let mut kills = Vec::new();
    let mut rng_state = (now_secs() * 1e6) as u64 | 1;
    eprintln!("kill schedule seed: {rng_state}");
    let mut rand = move |lo: u64, hi: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        lo + rng_state % (hi - lo)
    };
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(rand(2_000, 4_000)));
        // The master at this moment (on a loaded machine a lease may lapse and
        // be taken again: wait for whoever holds it).
        let mut victim = None;
        wait_until("a master to kill", Duration::from_secs(20), || {
            victim = cluster.master();
            victim.is_some()
        });
        let victim = victim.expect("a master");
        let killed_at = now_secs();
        if let Some(p) = cluster.procs[victim].as_mut() {
            p.kill9();
        }
        cluster.procs[victim] = None;
        kills.push((victim, killed_at));
        wait_until("another master", Duration::from_secs(20), || {
            cluster.master().is_some_and(|m| m != victim)
        });
        eprintln!(
            "round {round}: killed master {} at {killed_at:.3}",
            names[victim]
        );
        cluster.procs[victim] = Some(start_binary(&cluster.args[victim]));
    }
    for e in emitters {
        e.join().expect("emitter");
    }
    // Everything acknowledged must reach the consumer.
    let acked = acked.lock().map(|s| s.clone()).unwrap_or_default();
    wait_until(
        "the consumer to receive every acknowledged event",
        Duration::from_secs(30),
        || {
            let got: HashSet<String> = received
                .lock()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v["event"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            acked.iter().all(|id| got.contains(id))
        },
    );
    stop.store(true, Ordering::Relaxed);
    let _ = consumer.join();

    let received = received.lock().map(|r| r.clone()).unwrap_or_default();
    let maybe = maybe.lock().map(|s| s.clone()).unwrap_or_default();
    // No gap frame, no duplicate or missing seq.
    assert!(
        received.iter().all(|v| v["type"] != "gap"),
        "a gap frame arrived"
    );
    let seqs: Vec<u64> = received.iter().filter_map(|v| v["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs not contiguous"
    );
    // Every acknowledged event exactly once; nothing twice.
    let mut count: HashMap<&str, usize> = HashMap::new();
    for v in &received {
        if let Some(id) = v["event"].as_str() {
            *count.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "duplicates: {twice:?}");
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !count.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing",
        missing.len()
    );
    // Per-origin order: each emitter's ids and each origin's originSeq only grow.
    let mut last_id: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_origin_seq: BTreeMap<String, u64> = BTreeMap::new();
    for v in &received {
        if let Some((emitter, k)) = v["event"].as_str().and_then(|id| id.split_once('-')) {
            let k: usize = k.parse().unwrap_or(0);
            let prev = last_id.insert(emitter.to_owned(), k);
            assert!(prev.is_none_or(|p| p < k), "{emitter}: {k} after {prev:?}");
        }
        if v["type"] == "becameMaster" {
            continue; // noted by the master as it takes over: no originSeq
        }
        let origin = v["origin"].as_str().unwrap_or("").to_owned();
        let os = v["originSeq"].as_u64().unwrap_or(0);
        let prev = last_origin_seq.insert(origin.clone(), os);
        assert!(
            prev.is_none_or(|p| p < os),
            "{origin}: originSeq {os} after {prev:?}"
        );
    }
    // The final master's archive holds them all.
    let master = cluster.master().expect("a final master");
    let (_, archive) = http(
        ports[master],
        "GET",
        "/diag/masterEvents?o=1&type=rebalanceStageEvent",
        "",
    );
    let in_archive: HashSet<String> = archive
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["event"].as_str().map(str::to_owned))
        .collect();
    assert!(
        acked.iter().all(|id| in_archive.contains(id)),
        "the final archive misses events"
    );
    // Failover time: kill → the new master's becameMaster (its ts is the new
    // master's clock).
    for (victim, killed_at) in &kills {
        let became = received
            .iter()
            .filter(|v| v["type"] == "becameMaster")
            .filter_map(|v| v["ts"].as_f64())
            .find(|ts| ts > killed_at);
        match became {
            Some(ts) => eprintln!(
                "failover after killing {}: {:.3} s (lease TTL 1 s)",
                names[*victim],
                ts - killed_at
            ),
            None => panic!("no becameMaster after killing {}", names[*victim]),
        }
    }
    eprintln!(
        "{} events acknowledged, {} unacknowledged of which {} arrived",
        acked.len(),
        maybe.len(),
        maybe
            .iter()
            .filter(|id| count.contains_key(id.as_str()))
            .count()
    );
}
