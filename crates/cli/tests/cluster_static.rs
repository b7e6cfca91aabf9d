//! Three `serve` processes on loopback with static discovery: events noted on every
//! node appear exactly once in the master's stream, in order per origin, and the
//! stream read from a non-master node equals the master's, byte for byte.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{free_port, http, http_with, start_binary, wait_until, Proc};

const NAMES: [&str; 3] = ["n_0@127.0.0.1", "n_1@127.0.0.1", "n_2@127.0.0.1"];

/// Three nodes on loopback (`NAMES`, `n_0` the master): their ports, and a cluster
/// secret's file in a temp dir of their own.
struct Layout {
    ports: Vec<u16>,
    secret: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Layout {
    fn new() -> Layout {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "a-cluster-secret\n").expect("write secret");
        Layout {
            ports: NAMES.iter().map(|_| free_port()).collect(),
            secret,
            _dir: dir,
        }
    }

    /// Starts node `i` with the other nodes as peers, and `extra` arguments.
    fn start(&self, i: usize, extra: &[&str]) -> Proc {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.ports[i]),
            "--node".into(),
            NAMES[i].into(),
            "--master".into(),
            NAMES[0].into(),
            "--cluster-secret-file".into(),
            self.secret.display().to_string(),
        ];
        for (n, p) in NAMES.iter().zip(&self.ports) {
            args.push("--peer".into());
            args.push(format!("{n}=http://127.0.0.1:{p}"));
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        start_binary(&args)
    }

    /// Starts all three.
    fn start_all(&self, extra: &[&str]) -> Vec<Proc> {
        (0..NAMES.len()).map(|i| self.start(i, extra)).collect()
    }
}

/// A gauge of the node's `/metrics`, 0 when absent.
fn gauge(port: u16, name: &str) -> f64 {
    http(port, "GET", "/metrics", "")
        .1
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn archive(port: u16) -> String {
    let (status, body) = http(port, "GET", "/diag/masterEvents?o=1", "");
    assert_eq!(status, 200);
    body
}

#[test]
fn three_static_nodes_sequence_every_event_once_and_replicate_the_archive() {
    let layout = Layout::new();
    let (names, ports) = (NAMES, layout.ports.clone());
    let _nodes = layout.start_all(&[]);

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
        if v["type"] == "becameMaster" {
            // The master notes it itself as it takes over: no originSeq.
            assert_eq!(v["origin"], names[0]);
            continue;
        }
        per_origin
            .entry(v["origin"].as_str().unwrap_or("").to_owned())
            .or_default()
            .push(v["originSeq"].as_u64().unwrap_or(0));
    }
    assert_eq!(lines[0]["type"], "becameMaster");
    for name in names {
        let seqs = &per_origin[name];
        assert_eq!(seqs.len(), 100, "{name}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{name}: {seqs:?}"
        );
    }
    // Each follower serves the same archive, byte for byte.
    for port in &ports[1..] {
        wait_until(
            "the follower to replicate everything",
            Duration::from_secs(30),
            || archive(*port) == master,
        );
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

fn keyed(
    port: u16,
    origin: &str,
    origin_seqs: std::ops::RangeInclusive<u64>,
) -> (u16, serde_json::Value) {
    let body: String = origin_seqs
        .map(|n| format!("{{\"type\":\"deleteBucket\",\"bucket\":\"k{n}\",\"originSeq\":{n}}}\n"))
        .collect();
    let (status, reply) = http_with(
        &format!("127.0.0.1:{port}"),
        "POST",
        "/diag/masterEvents",
        &[("Master-Events-Origin", origin)],
        &body,
    );
    (
        status,
        serde_json::from_str(&reply).unwrap_or(serde_json::Value::String(reply)),
    )
}

#[test]
fn a_client_that_retries_with_its_origin_and_origin_seqs_on_any_node_creates_no_duplicate() {
    let layout = Layout::new();
    let (names, ports) = (NAMES, layout.ports.clone());
    let _nodes = layout.start_all(&[]);

    // Through a follower, retried as a client does while the master takes over
    // (503: nothing queued, retry): sequenced and committed once, with its seqs.
    let mut first = serde_json::Value::Null;
    wait_until(
        "a keyed request to be committed",
        Duration::from_secs(20),
        || {
            let (status, reply) = keyed(ports[1], "loader-7", 1..=5);
            assert!(status == 200 || status == 503, "{status}: {reply}");
            first = reply;
            status == 200
        },
    );
    let taken = first["accepted"].as_u64().unwrap_or(0) + first["duplicates"].as_u64().unwrap_or(0);
    assert_eq!(taken, 5, "{first}");
    // The same request again, through the other follower (a retry after a
    // timeout): nothing new.
    let (status, again) = keyed(ports[2], "loader-7", 1..=5);
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(5))
    );
    // Overlapping, through the master: only the new ones.
    let (status, more) = keyed(ports[0], "loader-7", 4..=8);
    assert_eq!(status, 200, "{more}");
    assert_eq!(
        (more["accepted"].as_u64(), more["duplicates"].as_u64()),
        (Some(3), Some(2))
    );
    // Refused with what is wrong: a node's name, a line without originSeq.
    let (status, reply) = keyed(ports[1], names[2], 1..=1);
    assert_eq!(status, 400, "{reply}");
    assert!(reply.to_string().contains("name of a node"), "{reply}");
    let (status, reply) = http_with(
        &format!("127.0.0.1:{}", ports[0]),
        "POST",
        "/diag/masterEvents",
        &[("Master-Events-Origin", "loader-7")],
        "{\"type\":\"deleteBucket\",\"bucket\":\"x\"}\n",
    );
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("needs an originSeq"), "{reply}");

    // Every node's archive holds loader-7's 1..=8 once each, in order.
    let master = archive(ports[0]);
    let loader: Vec<u64> = master
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["origin"] == "loader-7")
        .filter_map(|v| v["originSeq"].as_u64())
        .collect();
    assert_eq!(loader, (1..=8).collect::<Vec<_>>(), "{master}");
    for port in &ports[1..] {
        wait_until(
            "the follower to hold the same archive",
            Duration::from_secs(30),
            || archive(*port) == master,
        );
    }
}

#[test]
fn a_takeover_without_a_quorum_says_in_cluster_and_ready_who_answered_and_who_is_trusted() {
    let layout = Layout::new();
    let (names, ports) = (NAMES, layout.ports.clone());
    // Two of three, freshly started: nobody's archive is trusted yet, so the master
    // named by the configuration cannot take over until every node answers.
    let _first: Vec<Proc> = (0..2).map(|i| layout.start(i, &[])).collect();
    let waiting = |port: u16| -> Option<String> {
        let (status, body) = http(port, "GET", "/cluster", "");
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["waiting"].as_str().map(str::to_owned)
    };
    wait_until(
        "the takeover to say what it waits for",
        Duration::from_secs(20),
        || waiting(ports[0]).is_some_and(|w| w.contains("2 of 3 nodes answered")),
    );
    let said = waiting(ports[0]).unwrap_or_default();
    assert!(said.contains("0 with a trusted archive"), "{said}");
    assert!(
        said.contains("not trusted") && said.contains(names[1]),
        "{said}"
    );
    let (status, body) = http(ports[0], "GET", "/ready", "");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("2 of 3 nodes answered"),
        "/ready says why: {body}"
    );

    // The third node comes: every node answers, the takeover completes, and the
    // note is gone.
    let _third = layout.start(2, &[]);
    wait_until("the master to take over", Duration::from_secs(20), || {
        let (status, body) = http(ports[0], "GET", "/cluster", "");
        status == 200
            && serde_json::from_str::<serde_json::Value>(&body)
                .is_ok_and(|v| v["is_master"] == true && v["waiting"].is_null())
    });
}

#[test]
fn a_follower_restarted_empty_catches_up_byte_for_byte_from_a_master_whose_archive_is_compressed() {
    let layout = Layout::new();
    let ports = layout.ports.clone();
    let big = ["--archive-size", "100000"];
    let mut nodes = layout.start_all(&big);
    for round in 0..8 {
        let body: String = (0..5_000)
            .map(|k| {
                format!(
                    "{{\"type\":\"vbucketMoveDone\",\"vbucket\":{},\"bucket\":\"b{round}\"}}\n",
                    k % 1024
                )
            })
            .collect();
        let (status, reply) = http(ports[0], "POST", "/diag/masterEvents", &body);
        assert_eq!(status, 200, "{reply}");
    }
    // The master keeps its older blocks compressed once they are a second old.
    wait_until(
        "the master to compress older blocks",
        Duration::from_secs(30),
        || gauge(ports[0], "master_events_archive_cold_blocks") >= 4.0,
    );
    let master = archive(ports[0]);
    assert_eq!(
        master.lines().count(),
        40_001,
        "becameMaster and 40,000 events"
    );
    // A follower restarted without persistence copies the master's log again, the
    // compressed blocks included, and serves it byte for byte (its own older
    // blocks compressed in turn).
    nodes[2].kill9();
    nodes[2] = layout.start(2, &big);
    wait_until(
        "the restarted follower to copy the master's archive",
        Duration::from_secs(60),
        || archive(ports[2]) == master,
    );
    wait_until(
        "the follower to compress older blocks",
        Duration::from_secs(30),
        || gauge(ports[2], "master_events_archive_cold_blocks") >= 4.0,
    );
    assert_eq!(archive(ports[2]), master);
}
