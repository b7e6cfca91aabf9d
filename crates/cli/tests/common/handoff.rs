//! The two fault scenarios every exactly-once hand-off sink (nats in JetStream mode,
//! kafka) must pass, written once and run against each external log:
//!
//! - [`sigkill`]: one server with a durable file log (`fsync = "always"`: a `200`
//!   means on disk) and the hand-off sink is killed with SIGKILL while writers
//!   post, and restarted.
//! - [`failover`]: three `serve` nodes on a real etcd (lease 1 s), the sink on the
//!   master only; the master is killed with SIGKILL and later restarted as a
//!   follower ([`Fault::Kill`]), or frozen with SIGSTOP past its lease while a new
//!   master takes over, then thawed with SIGCONT ([`Fault::Pause`]): whatever its
//!   sink had in flight must not reach the log twice.
//!
//! Either way the external log must then hold every event the server (cluster)
//! committed exactly once, in seq order, all of one history; the moment of the
//! kill comes from a seed, printed first.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::{host_port, http, listening_url, post_acknowledged, spawn, wait_until, Paused, Proc};

/// What happens to the master in [`failover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, later restarted.
    Kill,
    /// SIGSTOP past its lease, later SIGCONT.
    Pause,
}

/// One record as the external log holds it.
#[derive(Debug, Clone)]
pub struct Handed {
    /// Its seq header.
    pub seq: u64,
    /// Its history header.
    pub history: String,
    /// Its message id, where the log has them (JetStream's `Nats-Msg-Id`).
    pub id: Option<String>,
}

/// What the JetStream stream `stream` holds, once it reaches seq `last`.
pub fn jetstream_records(url: &str, stream: &str, last: u64, what: &str) -> Vec<Handed> {
    super::wait_for_stream_seq(url, stream, last, what)
        .into_iter()
        .map(|(seq, id, history)| Handed {
            seq,
            history,
            id: Some(id),
        })
        .collect()
}

/// The scenario's seed: `$VAR` when set, else random; printed.
pub fn seed(var: &str) -> (u64, rand::rngs::StdRng) {
    let seed: u64 = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("{var}={seed}");
    (seed, rand::rngs::StdRng::seed_from_u64(seed))
}

/// Every record is seq `1..=last` once, in order, of one non-empty history, with
/// ids `HISTORY:SEQ` where the log has ids.
pub fn assert_exactly_once(records: &[Handed], last: u64, what: &str) {
    let seqs: Vec<u64> = records.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "exactly once and in seq order ({what})"
    );
    let history = &records[0].history;
    assert!(!history.is_empty());
    for r in records {
        assert_eq!(&r.history, history, "one history ({what})");
        if let Some(id) = &r.id {
            assert_eq!(id, &format!("{history}:{}", r.seq));
        }
    }
}

/// Waits (at most 60 s) until the writers have `n` acknowledged batches; fails with
/// `why()` otherwise.
fn wait_for_acked(acked: &Mutex<Vec<(u64, u64)>>, n: usize, why: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < n {
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(5));
    }
}

const KILL_BATCH: u64 = 50;
const KILL_WRITERS: u64 = 2;
const KILL_MAX_BATCHES: u64 = 200;

fn serve(config: &Path) -> (Proc, String) {
    let config = config.display().to_string();
    let mut p = spawn(&["serve", "--listen", "127.0.0.1:0", "--config", &config]);
    let addr = host_port(&listening_url(&mut p));
    (p, addr)
}

/// Posts one batch; its seqs when acknowledged (`200`).
fn post(addr: &str, writer: u64, batch: u64) -> Option<(u64, u64)> {
    let body: String = (0..KILL_BATCH)
        .map(|i| format!("{{\"type\":\"deleteBucket\",\"bucket\":\"w{writer}-b{batch}-{i}\"}}\n"))
        .collect();
    post_acknowledged(addr, &body)
}

/// The SIGKILL scenario. `sink` is the hand-off sink's `[[sinks]]` entry (after a
/// file sink in `dir/log`); `read_back(last, what)` waits until the log holds seq
/// `last` and returns all it holds.
pub fn sigkill(
    seed_var: &str,
    dir: &Path,
    sink: &str,
    read_back: &dyn Fn(u64, &str) -> Vec<Handed>,
) {
    let (seed, mut rng) = seed(seed_var);
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[sinks]]\ntype = \"file\"\ndir = \"{}\"\nfsync = \"always\"\n\n{sink}",
            dir.join("log").display(),
        ),
    )
    .expect("write the config");

    let (mut server, addr) = serve(&config);
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..KILL_WRITERS)
        .map(|w| {
            let (addr, acked, stop) = (addr.clone(), Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                for b in 0..KILL_MAX_BATCHES {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match post(&addr, w, b) {
                        Some(range) => acked.lock().expect("lock").push(range),
                        None => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    // Kill it at a moment between 10 and 60 acknowledged batches.
    let kill_after = rng.random_range(10..60usize);
    wait_for_acked(&acked, kill_after, || {
        "the writers are not acknowledged".into()
    });
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    let acked = acked.lock().expect("lock").clone();
    let last_acked = acked
        .iter()
        .map(|r| r.1)
        .max()
        .expect("acknowledged batches");

    let (mut server, addr) = serve(&config);
    // Something after the restart, so the new run has its own events too.
    let after = post(&addr, 9, 0).expect("posted after the restart");
    let expected_last = after.1;
    let records = read_back(expected_last, &format!("seed {seed}"));
    server.kill9();

    assert_exactly_once(&records, expected_last, &format!("seed {seed}"));
    assert!(last_acked < expected_last);
    for (first, last) in &acked {
        assert!(*last <= expected_last && *first >= 1);
    }
}

const NODES: usize = 3;
/// Events per POST.
const FAILOVER_BATCH: u64 = 20;
/// POSTs per writer at most (a bound on the load, whatever happens).
const FAILOVER_MAX_BATCHES: u64 = 400;

/// `GET /cluster` of the node on `port`, if it answers.
pub fn cluster_status(port: u16) -> Option<Value> {
    let (status, body) = http(port, "GET", "/cluster", "");
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// The index of the master, as the first live node that knows one says.
fn master(names: &[String], ports: &[u16], live: &[bool]) -> Option<usize> {
    (0..NODES)
        .filter(|i| live[*i])
        .find_map(|i| {
            cluster_status(ports[i])?["master"]
                .as_str()
                .map(str::to_owned)
        })
        .and_then(|m| names.iter().position(|n| *n == m))
}

/// The state of the sink named `name` on the node on `port`.
pub fn sink_state(port: u16, name: &str) -> Option<String> {
    let status = cluster_status(port)?;
    status["sinks"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["state"].as_str().map(str::to_owned))
}

/// The failover scenario: `sink` is the `[[sinks]]` entry every node gets, `name`
/// its type; `etcd_port` a running etcd; `read_back` as for [`sigkill`].
pub fn failover(
    fault: Fault,
    seed_var: &str,
    dir: &Path,
    etcd_port: u16,
    sink: &str,
    name: &str,
    read_back: &dyn Fn(u64, &str) -> Vec<Handed>,
) {
    let (seed, mut rng) = seed(seed_var);
    let secret = dir.join("secret");
    std::fs::write(&secret, "handoff-failover-secret").expect("secret");
    let config = dir.join("config.toml");
    std::fs::write(&config, sink).expect("config");
    let names: Vec<String> = (0..NODES).map(|i| format!("n_{i}@127.0.0.1")).collect();
    let ports: Vec<u16> = (0..NODES).map(|_| super::free_port()).collect();
    let args: Vec<Vec<String>> = (0..NODES)
        .map(|i| {
            let mut a: Vec<String> = [
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", ports[i]),
                "--node",
                &names[i],
                "--discovery",
                "etcd",
                "--etcd",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--lease-ttl",
                "1",
                "--archive-size",
                "100000",
                "--cluster-secret-file",
                &secret.display().to_string(),
                "--config",
                &config.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            for (n, p) in names.iter().zip(&ports) {
                a.push("--peer".into());
                a.push(format!("{n}=http://127.0.0.1:{p}"));
            }
            a
        })
        .collect();
    let mut procs: Vec<Option<Proc>> = args.iter().map(|a| Some(super::start_binary(a))).collect();
    let mut live = vec![true; NODES];
    wait_until("a master to be elected", Duration::from_secs(20), || {
        master(&names, &ports, &live).is_some()
    });
    let first = master(&names, &ports, &live).expect("a master");
    // The master runs the sink; the followers stand by.
    wait_until("the sinks' roles", Duration::from_secs(30), || {
        (0..NODES).all(|i| {
            let want = if i == first { "ok" } else { "standby" };
            sink_state(ports[i], name).as_deref() == Some(want)
        })
    });

    // Writers, one a node, each posting until told to stop (or the bound).
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..NODES)
        .map(|w| {
            let (port, acked, stop) = (ports[w], Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                for b in 0..FAILOVER_MAX_BATCHES {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let body: String = (0..FAILOVER_BATCH)
                        .map(|i| {
                            format!("{{\"type\":\"deleteBucket\",\"bucket\":\"w{w}-{b}-{i}\"}}\n")
                        })
                        .collect();
                    match post_acknowledged(&format!("127.0.0.1:{port}"), &body) {
                        Some(range) => acked.lock().expect("lock").push(range),
                        // Its node is down or has no master yet: try again shortly.
                        None => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        })
        .collect();

    // Kill the master after 10 to 40 acknowledged batches.
    let kill_after = rng.random_range(10..40usize);
    wait_for_acked(&acked, kill_after, || {
        "the writers are not acknowledged".into()
    });
    // Every follower caught up with the master's commit since it started: its
    // archive is trusted, so the two survivors make a quorum. (A follower that has
    // not caught up is not trusted — it may have lost what a previous run
    // acknowledged — and the survivors then wait for the old master: safe, but
    // not the failover this scenario is about.)
    let reached = acked
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.1)
        .max()
        .unwrap_or(0);
    wait_until(
        "every follower to catch up",
        Duration::from_secs(20),
        || {
            (0..NODES).all(|i| {
                cluster_status(ports[i])
                    .and_then(|s| s["committed_seq"].as_u64())
                    .is_some_and(|c| c >= reached)
            })
        },
    );
    let mut paused = None;
    match fault {
        Fault::Kill => {
            if let Some(p) = procs[first].as_mut() {
                p.kill9();
            }
            procs[first] = None;
        }
        Fault::Pause => paused = procs[first].as_ref().map(Paused::pause),
    }
    live[first] = false;
    println!(
        "{fault:?}: the master {} after {kill_after} batches",
        names[first]
    );
    wait_until("another master", Duration::from_secs(20), || {
        master(&names, &ports, &live).is_some_and(|m| m != first)
    });
    let second = master(&names, &ports, &live).expect("a new master");
    // Some load under the new master, then the old one back, as a follower.
    let under_new = acked.lock().expect("lock").len() + 20;
    wait_for_acked(&acked, under_new, || {
        format!(
            "no acknowledgement under the new master (seed {seed}); the nodes say: {:?}",
            (0..NODES)
                .filter(|i| live[*i])
                .map(|i| cluster_status(ports[i]))
                .collect::<Vec<_>>()
        )
    });
    match fault {
        Fault::Kill => procs[first] = Some(super::start_binary(&args[first])),
        // Thawed: it finds itself deposed, and whatever its sink had in flight
        // must not reach the log.
        Fault::Pause => drop(paused.take()),
    }
    live[first] = true;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }

    // A last batch, then the log must reach it.
    let last = post_acknowledged(
        &format!("127.0.0.1:{}", ports[second]),
        "{\"type\":\"deleteBucket\",\"bucket\":\"last\"}\n",
    )
    .expect("the last batch is acknowledged")
    .1;
    let records = read_back(last, &format!("seed {seed}"));
    // Every committed event once, in seq order: the cluster's seqs have no hole
    // (an event is handed over only once committed), so that is 1..=last.
    assert_exactly_once(&records, last, &format!("seed {seed}"));
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.iter().all(|(a, b)| *a >= 1 && *b <= last));
    // Only the master hands over: the two others stand by, the restarted old
    // master among them.
    wait_until("the followers stand by", Duration::from_secs(20), || {
        (0..NODES)
            .filter(|i| *i != second)
            .all(|i| sink_state(ports[i], name).as_deref() == Some("standby"))
    });
    assert_eq!(sink_state(ports[second], name).as_deref(), Some("ok"));
    println!(
        "{} records, {} batches acknowledged; masters {} then {}",
        records.len(),
        acked.len(),
        names[first],
        names[second]
    );
}
