//! The etcd discovery backend against a real etcd (`/usr/bin/etcd`, Debian's
//! `etcd-server`; `scripts/test.sh` installs it). Each test starts its own etcd on
//! free loopback ports and, where it needs to cut a node off, puts a TCP proxy
//! between that node and etcd that it can turn into a black hole.
#![cfg(feature = "etcd")]

use std::future::Future;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use master_events_cluster::discovery::{MasterDiscovery, MasterView};
use master_events_cluster::etcd::{EtcdDiscovery, EtcdError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};

const TTL: Duration = Duration::from_secs(1);
const ELECTION: &str = "master-events-test";
const TEST_LIMIT: Duration = Duration::from_secs(20);

/// A single-member etcd on free loopback ports, killed on drop.
struct Etcd {
    child: Child,
    client_addr: SocketAddr,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it answers a status request.
    async fn start() -> Etcd {
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        match Command::new(&bin).arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!("`{bin} --version` failed: {out:?}"),
            Err(e) => panic!(
                "these tests need the `etcd` binary ({bin}: {e}); install it with \
                 `apt-get install etcd-server` (scripts/test.sh does) or set ETCD_BIN"
            ),
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let client_addr = free_addr();
        let peer_addr = free_addr();
        let client_url = format!("http://{client_addr}");
        let peer_url = format!("http://{peer_addr}");
        let log = dir.path().join("etcd.log");
        let log_file = std::fs::File::create(&log).expect("etcd log file");
        let child = Command::new(&bin)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--initial-cluster-state=new")
            // etcd's minimum lease TTL is 1.5 election timeouts, rounded up to whole
            // seconds: these make it 1 s, so a TTL of 1 s is granted as asked.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut etcd = Etcd {
            child,
            client_addr,
            log,
            _dir: dir,
        };
        etcd.wait_until_ready().await;
        etcd
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.client_addr)
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd exited with {status}:\n{}", self.log_tail());
            }
            let answered = timeout(Duration::from_secs(1), async {
                let mut client = Client::connect([self.endpoint()], None).await?;
                client.status().await
            })
            .await;
            if let Ok(Ok(_)) = answered {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "etcd did not answer within 10 s ({answered:?}):\n{}",
                    self.log_tail()
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The values (node names) of the election's candidate keys.
    async fn candidates(&self) -> Vec<String> {
        let mut client = Client::connect([self.endpoint()], None)
            .await
            .expect("connect to etcd");
        let found = client
            .get(
                format!("{ELECTION}/"),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .expect("list the candidates");
        let mut names: Vec<String> = found
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// A TCP proxy to etcd that can black-hole its traffic: connections stay open but
/// nothing goes through (a network partition), until healed; then the held
/// connections are closed and new ones go through again.
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, cut_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                tokio::spawn(pipe(down, upstream, cut_rx.clone()));
            }
        });
        Proxy { addr, cut, task }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn partition(&self) {
        self.cut.send_replace(true);
    }

    fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(mut down: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    let cut_now = *cut.borrow();
    if !cut_now {
        let Ok(mut up) = TcpStream::connect(upstream).await else {
            return;
        };
        let partitioned = tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut down, &mut up) => false,
            cut = async { cut.wait_for(|cut| *cut).await.is_ok() } => cut,
        };
        if !partitioned {
            return;
        }
    }
    // Black hole: hold the connection(s) without forwarding, close them on heal.
    let _ = async { cut.wait_for(|cut| !*cut).await.is_ok() }.await;
}

/// Waits until `rx` shows a view satisfying `ok`; returns it and when it appeared.
async fn wait_for_view(
    rx: &mut watch::Receiver<MasterView>,
    ok: impl Fn(&MasterView) -> bool,
) -> (MasterView, Instant) {
    let seen = rx
        .wait_for(|view| ok(view))
        .await
        .expect("the discovery stopped publishing")
        .clone();
    (seen, Instant::now())
}

/// Waits until every receiver shows the same master (not `None`); returns it.
async fn agreed(rxs: &mut [watch::Receiver<MasterView>]) -> MasterView {
    loop {
        let views: Vec<MasterView> = rxs
            .iter_mut()
            .map(|rx| rx.borrow_and_update().clone())
            .collect();
        if views[0].master.is_some() && views.iter().all(|v| *v == views[0]) {
            return views[0].clone();
        }
        let changes = rxs.iter_mut().map(|rx| Box::pin(rx.changed()));
        let _ = futures_util::future::select_all(changes).await;
    }
}

async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not within {limit:?}"),
    }
}

async fn start_nodes(endpoints: &[String]) -> Vec<EtcdDiscovery> {
    let mut nodes = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let node = EtcdDiscovery::start(
            vec![endpoint.clone()],
            format!("node-{i}"),
            ELECTION.into(),
            TTL,
        )
        .await
        .unwrap_or_else(|e| panic!("node-{i} cannot join the election: {e}"));
        assert_eq!(node.lease_ttl(), TTL, "etcd granted another TTL");
        nodes.push(node);
    }
    nodes
}

fn index_of(nodes: &[EtcdDiscovery], master: &MasterView) -> usize {
    let name = master.master.as_deref().expect("a master");
    nodes
        .iter()
        .position(|n| n.node() == name)
        .unwrap_or_else(|| panic!("unknown master {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_on_one_master_with_one_epoch() {
    within("test", TEST_LIMIT, async {
        let etcd = Etcd::start().await;
        let nodes = start_nodes(&vec![etcd.endpoint(); 3]).await;
        let mut rxs: Vec<_> = nodes.iter().map(|n| n.watch()).collect();

        let master = within("agreement", Duration::from_secs(5), agreed(&mut rxs)).await;
        println!("agreed: {master:?}");
        assert!(master.epoch > 0);
        index_of(&nodes, &master);
        assert_eq!(nodes[0].backend(), "etcd");
        // Every node campaigns: three candidate keys, one per node.
        assert_eq!(etcd.candidates().await, ["node-0", "node-1", "node-2"]);

        for node in &nodes {
            node.shutdown().await;
        }
        assert!(etcd.candidates().await.is_empty(), "shutdown revokes");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_shuts_down_hands_over_at_once_with_a_greater_epoch() {
    within("test", TEST_LIMIT, async {
        let etcd = Etcd::start().await;
        let nodes = start_nodes(&vec![etcd.endpoint(); 3]).await;
        let mut rxs: Vec<_> = nodes.iter().map(|n| n.watch()).collect();
        let first = within("agreement", Duration::from_secs(5), agreed(&mut rxs)).await;
        let old = index_of(&nodes, &first);

        let t0 = Instant::now();
        nodes[old].shutdown().await;
        assert_eq!(
            nodes[old].watch().borrow().master,
            None,
            "a node that shut down names no master"
        );
        let mut others: Vec<_> = (0..3)
            .filter(|&i| i != old)
            .map(|i| nodes[i].watch())
            .collect();
        let second = within("handover", TTL, async {
            loop {
                let view = agreed(&mut others).await;
                if view != first {
                    return view;
                }
                let _ = others[0].changed().await;
            }
        })
        .await;
        let handover = t0.elapsed();
        println!("handover after resign: {handover:?} ({first:?} -> {second:?})");
        assert_ne!(second.master, first.master);
        assert!(second.epoch > first.epoch, "{second:?} after {first:?}");

        for node in &nodes {
            node.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_cut_off_from_etcd_steps_down_within_the_ttl_before_another_takes_over() {
    within("test", TEST_LIMIT, async {
        let etcd = Etcd::start().await;
        let mut proxies = Vec::new();
        for _ in 0..3 {
            proxies.push(Proxy::start(etcd.client_addr).await);
        }
        let endpoints: Vec<String> = proxies.iter().map(Proxy::endpoint).collect();
        let nodes = start_nodes(&endpoints).await;
        let mut rxs: Vec<_> = nodes.iter().map(|n| n.watch()).collect();
        let first = within("agreement", Duration::from_secs(5), agreed(&mut rxs)).await;
        let old = index_of(&nodes, &first);
        let old_name = nodes[old].node().to_string();

        let t0 = Instant::now();
        proxies[old].partition();
        let mut deposed = nodes[old].watch();
        let mut others: Vec<_> = (0..3)
            .filter(|&i| i != old)
            .map(|i| nodes[i].watch())
            .collect();
        let greater = |v: &MasterView| v.master.is_some() && v.epoch > first.epoch;
        let (stepped_down, took_over) = within(
            "failover",
            Duration::from_secs(5),
            futures_util::future::join(
                wait_for_view(&mut deposed, |v| {
                    v.master.as_deref() != Some(old_name.as_str())
                }),
                wait_for_view(&mut others[0], greater),
            ),
        )
        .await;
        let step_down = stepped_down.1 - t0;
        let failover = took_over.1 - t0;
        println!(
            "lease TTL {TTL:?}: cut at 0, old master {old_name} stepped down after {step_down:?}, \
             new master {:?} (epoch {} > {}) seen after {failover:?}",
            took_over.0.master, took_over.0.epoch, first.epoch
        );
        assert!(step_down < TTL, "stepped down after {step_down:?}");
        assert!(
            stepped_down.1 <= took_over.1,
            "the old master still claimed mastership when the new one was seen"
        );
        assert_ne!(took_over.0.master.as_deref(), Some(old_name.as_str()));
        let second = within("agreement", Duration::from_secs(5), agreed(&mut others)).await;
        assert_eq!(second, took_over.0);

        // When etcd is reachable again the old master campaigns again, as a
        // follower of the new one.
        proxies[old].heal();
        let (rejoined, _) = within(
            "rejoin",
            Duration::from_secs(5),
            wait_for_view(&mut deposed, |v| *v == second),
        )
        .await;
        assert_eq!(rejoined, second);
        within("new candidacy", Duration::from_secs(5), async {
            while etcd.candidates().await != ["node-0", "node-1", "node-2"] {
                sleep(Duration::from_millis(50)).await;
            }
        })
        .await;

        for node in &nodes {
            node.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_without_a_reachable_etcd_fails_with_an_error() {
    within("test", TEST_LIMIT, async {
        let nobody = format!("http://{}", free_addr());
        let started =
            EtcdDiscovery::start(vec![nobody], "node-0".into(), ELECTION.into(), TTL).await;
        let err = match started {
            Ok(_) => panic!("started without etcd"),
            Err(e) => e,
        };
        println!("{err}");
        assert!(
            matches!(err, EtcdError::Etcd { .. } | EtcdError::Timeout { .. }),
            "{err:?}"
        );
        let no_endpoints =
            EtcdDiscovery::start(vec![], "node-0".into(), ELECTION.into(), TTL).await;
        assert!(matches!(no_endpoints, Err(EtcdError::NoEndpoints)));
    })
    .await;
}
