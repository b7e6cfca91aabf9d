//! A cluster over TLS: two nodes serving https with mutual TLS (`--tls-client-ca`),
//! reaching each other with `--peer-ca` and a client certificate (`--peer-cert`,
//! `--peer-key`): the follower forwards, follows and reports over TLS, and its
//! events are committed; without the client certificate the master refuses the
//! follower, which says so.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{free_port, run_logged, Logged};
use master_events_testpki::TestPki;

const MASTER: &str = "n_0@127.0.0.1";
const FOLLOWER: &str = "n_1@127.0.0.1";
const WAIT: Duration = Duration::from_secs(30);

/// A test CA, a server certificate for 127.0.0.1 and a client certificate.
struct Pki(TestPki);

impl Pki {
    fn new() -> Pki {
        Pki(TestPki::with_server_and_client("node"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    fn arg(&self, name: &str) -> String {
        self.0.arg(name)
    }

    /// A client trusting the test CA and presenting the client certificate.
    fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.path("ca.pem")).expect("ca");
        let mut identity = std::fs::read(self.path("client.pem")).expect("cert");
        identity.extend(std::fs::read(self.path("client-key.pem")).expect("key"));
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
            .identity(reqwest::Identity::from_pem(&identity).expect("identity"))
            .timeout(WAIT)
            .build()
            .expect("client")
    }
}

fn serve(pki: &Pki, name: &str, port: u16, peers: &[(&str, u16)], identity: bool) -> Logged {
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--node".into(),
        name.into(),
        "--master".into(),
        MASTER.into(),
        "--tls-cert".into(),
        pki.arg("server.pem"),
        "--tls-key".into(),
        pki.arg("server-key.pem"),
        "--tls-client-ca".into(),
        pki.arg("ca.pem"),
        "--peer-ca".into(),
        pki.arg("ca.pem"),
    ];
    if identity {
        args.extend([
            "--peer-cert".into(),
            pki.arg("client.pem"),
            "--peer-key".into(),
            pki.arg("client-key.pem"),
        ]);
    }
    for (n, p) in peers {
        args.push("--peer".into());
        args.push(format!("{n}=https://127.0.0.1:{p}"));
    }
    run_logged(&args, true)
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn url(port: u16, path: &str) -> String {
    format!("https://127.0.0.1:{port}{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_replicate_and_commit_over_mutual_tls_with_peer_ca_and_a_client_certificate() {
    let pki = Pki::new();
    let (pm, pf) = (free_port(), free_port());
    let peers = [(MASTER, pm), (FOLLOWER, pf)];
    let _master = serve(&pki, MASTER, pm, &peers, true);
    let follower = serve(&pki, FOLLOWER, pf, &peers, true);
    let client = pki.client();
    // Ingest on the follower: forwarded to the master, followed back, committed.
    // (Retried as a client with its own origin does while the master takes over.)
    let deadline = tokio::time::Instant::now() + WAIT;
    let reply = loop {
        let sent = client
            .post(url(pf, "/diag/masterEvents"))
            .header("content-type", "application/x-ndjson")
            .header("Master-Events-Origin", "tls-test")
            .body("{\"type\":\"deleteBucket\",\"bucket\":\"over-tls\",\"originSeq\":1}\n")
            .send()
            .await;
        if let Ok(resp) = sent {
            if resp.status() == 200 {
                break resp.text().await.unwrap_or_default();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 200 from the follower over TLS: {}",
            follower.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        reply.contains("\"accepted\":1") || reply.contains("\"duplicates\":1"),
        "{reply}"
    );
    for port in [pm, pf] {
        let archive = client
            .get(url(port, "/diag/masterEvents?o=1"))
            .send()
            .await
            .expect("archive")
            .text()
            .await
            .expect("text");
        assert!(
            archive.contains("\"bucket\":\"over-tls\""),
            "{port}: {archive}"
        );
    }
    assert!(
        !follower.log().contains("unreachable"),
        "{}",
        follower.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_without_the_client_certificate_is_refused_and_says_the_master_is_unreachable() {
    let pki = Pki::new();
    let (pm, pf) = (free_port(), free_port());
    let peers = [(MASTER, pm), (FOLLOWER, pf)];
    let _master = serve(&pki, MASTER, pm, &peers, true);
    let follower = serve(&pki, FOLLOWER, pf, &peers, false);
    let client = pki.client();
    wait_for("the follower to say why it cannot reach the master", || {
        let log = follower.log();
        async move { log.contains("master unreachable") }
    })
    .await;
    let ready = client.get(url(pf, "/ready")).send().await.expect("ready");
    assert_eq!(ready.status(), 503);
}
