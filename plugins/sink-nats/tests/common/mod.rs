//! A real `nats-server` for tests (started on a free loopback port in a temp dir,
//! optionally with a configuration file, killed on drop; a missing binary fails the
//! test with what to install), a subscriber that records what the sink published
//! (over TLS if asked), and a running sink fed by its own router.
//!
//! A failing test prints the end of the server's log; with `NATS_TEST_TRACE=1` the
//! server logs every protocol message (`-DV`) and the client's debug log is shown.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use master_events_events::catalog::{DeleteBucket, VbucketMoveDone};
use master_events_events::{Event, Record};
use master_events_router::{Cursor, Filter, Router, RouterConfig, Sink, SinkHealth, SinkInput};
use master_events_sink_nats::{Counters, NatsConfig, NatsSink};
use master_events_sinktest::{Observed, Target};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any wait of these tests may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// Finds `nats-server` on `PATH` or where Debian puts it.
fn binary() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server is not installed: these tests need a real NATS server. \
                 Install Debian's package (apt-get install nats-server), as scripts/test.sh does."
            )
        })
}

/// A port below the ephemeral range: the server is restarted on it, and while it
/// is down a reconnecting client could otherwise take it as its own local port
/// (see `master_events_testpki::ports`).
fn free_port() -> u16 {
    master_events_testpki::ports::free_port()
}

/// A `nats-server` process.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// The configuration file it is started with (`-c`), if any.
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Starts a server on a free port and waits (up to 20 s) until it accepts.
    pub fn start() -> NatsServer {
        NatsServer::start_with(None)
    }

    /// Starts a server with the configuration file `config` (written in its temp
    /// dir; the command line's port and address win over it).
    pub fn start_with_config(config: &str) -> NatsServer {
        NatsServer::start_with(Some(config))
    }

    fn start_with(config: Option<&str>) -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config.map(|text| {
            let path = dir.path().join("nats.conf");
            std::fs::write(&path, text).expect("write the nats-server config");
            path
        });
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            dir,
            config,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("nats.log");
        let mut command = Command::new(binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        if std::env::var_os("NATS_TEST_TRACE").is_some() {
            command.arg("-DV");
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-l"])
            .arg(&log)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("nats-server exited ({status}): {}", read(&log));
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {} within 20 s: {}",
                self.port,
                read(&log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `tls://127.0.0.1:PORT`.
    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        read(&self.dir.path().join("nats.log"))
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// Freezes the server (SIGSTOP): it takes nothing until `cont`.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Kills the server (its port is free again).
    pub fn kill(&mut self) {
        self.thaw();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let from = (log.len().saturating_sub(16 * 1024)..log.len())
                .find(|&i| log.is_char_boundary(i))
                .unwrap_or(0);
            let tail = &log[from..];
            eprintln!("--- the end of nats-server's log ---\n{tail}");
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The TLS files of a client: the CAs it trusts, its certificate and key.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ClientTls {
    fn options(&self) -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(self.ca_file.clone())
            .add_client_certificate(self.cert_file.clone(), self.key_file.clone())
    }
}

/// A server and a subscriber to `<prefix>.>` that records `(subject, observed)`.
pub struct NatsTarget {
    pub server: NatsServer,
    pub prefix: String,
    /// How the subscriber connects over TLS (plain text if `None`).
    tls: Option<ClientTls>,
    got: Arc<Mutex<Vec<(String, Observed)>>>,
    task: JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl NatsTarget {
    /// A fresh server and a subscriber to `master_events.>`.
    pub async fn start() -> NatsTarget {
        NatsTarget::with_prefix("master_events").await
    }

    /// A fresh server and a subscriber to `<prefix>.>`.
    pub async fn with_prefix(prefix: &str) -> NatsTarget {
        let server = NatsServer::start();
        let (got, task) = subscribe(&server.url(), prefix, None).await;
        NatsTarget {
            server,
            prefix: prefix.to_owned(),
            tls: None,
            got,
            task,
        }
    }

    /// A subscriber to `master_events.>` on `server`, connecting with `tls`.
    pub async fn over_tls(server: NatsServer, tls: ClientTls) -> NatsTarget {
        let prefix = "master_events";
        let (got, task) = subscribe(&server.url(), prefix, Some(&tls)).await;
        NatsTarget {
            server,
            prefix: prefix.to_owned(),
            tls: Some(tls),
            got,
            task,
        }
    }

    /// Every message received: its subject and what it says.
    pub fn messages(&self) -> Vec<(String, Observed)> {
        lock(&self.got).clone()
    }

    /// A new subscriber (e.g. after a restart of the server); the old one's
    /// messages are forgotten.
    pub async fn resubscribe(&mut self) {
        self.task.abort();
        let (got, task) = subscribe(&self.server.url(), &self.prefix, self.tls.as_ref()).await;
        self.got = got;
        self.task = task;
    }
}

/// The last token of the subject the test subscriber probes itself on.
const PROBE: &str = "_test_subscriber_probe";

async fn subscribe(
    url: &str,
    prefix: &str,
    tls: Option<&ClientTls>,
) -> (Arc<Mutex<Vec<(String, Observed)>>>, JoinHandle<()>) {
    let options = tls.map_or_else(async_nats::ConnectOptions::new, ClientTls::options);
    let client = options
        .connect(url)
        .await
        .expect("the test subscriber connects");
    let mut sub = client
        .subscribe(format!("{prefix}.>"))
        .await
        .expect("subscribes");
    // A flush only puts the SUB on the wire; the server may not have taken it
    // yet, and what is published meanwhile would pass this subscriber by. The
    // server handles a connection's messages in order, so once our own probe
    // comes back, the subscription is in place.
    let got = Arc::new(Mutex::new(Vec::new()));
    client
        .publish(format!("{prefix}.{PROBE}"), "probe".into())
        .await
        .expect("publishes the probe");
    tokio::time::timeout(WAIT, async {
        while let Some(message) = sub.next().await {
            if message.subject.as_str().ends_with(PROBE) {
                return;
            }
            if let Some(observed) = Observed::from_line(&message.payload) {
                lock(&got).push((message.subject.to_string(), observed));
            }
        }
        panic!("the test subscription ended before its probe came back");
    })
    .await
    .expect("the test subscriber's probe comes back: the subscription is in place");
    let sink = Arc::clone(&got);
    let task = tokio::spawn(async move {
        let _client = client;
        while let Some(message) = sub.next().await {
            if let Some(observed) = Observed::from_line(&message.payload) {
                lock(&sink).push((message.subject.to_string(), observed));
            }
        }
    });
    (got, task)
}

impl Drop for NatsTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Target for NatsTarget {
    fn config(&self) -> String {
        format!(
            "servers = [{:?}]\nsubject_prefix = {:?}\nshutdown_timeout_ms = 20000",
            self.server.url(),
            self.prefix
        )
    }

    fn observed(&self) -> Vec<Observed> {
        self.messages().into_iter().map(|(_, o)| o).collect()
    }

    fn stall(&self) {
        self.server.freeze();
    }

    fn resume(&self) {
        self.server.thaw();
    }
}

/// Event `i` of the tests: `deleteBucket` for even `i`, `vbucketMoveDone` for odd.
pub fn event(i: u64) -> Event {
    if i % 2 == 0 {
        DeleteBucket {
            bucket: format!("b{i}").into(),
        }
        .into()
    } else {
        VbucketMoveDone {
            vbucket: (i % 1024) as u16,
            bucket: "default".into(),
        }
        .into()
    }
}

/// A running `nats` sink reading its own router from the oldest event.
pub struct Running {
    pub router: Router,
    pub counters: Arc<Counters>,
    pub health: Arc<SinkHealth>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Starts the sink of `config` (which must be valid) with `filter`.
    pub fn start(config: NatsConfig, filter: Option<Filter>) -> Running {
        if std::env::var_os("NATS_TEST_TRACE").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_test_writer()
                .with_env_filter("async_nats=debug,master_events_sink_nats=debug")
                .try_init();
        }
        let router = Router::start(RouterConfig::default());
        let health = Arc::new(SinkHealth::new("nats", 0));
        let sink = NatsSink::new(config)
            .expect("valid config")
            .with_health(Arc::clone(&health));
        let counters = sink.counters();
        let cancel = CancellationToken::new();
        let input = SinkInput::new(
            "nats",
            router.subscribe(Cursor::Oldest),
            filter,
            cancel.clone(),
        );
        let task = tokio::spawn(Box::new(sink).run(input));
        Running {
            router,
            counters,
            health,
            cancel,
            task,
        }
    }

    /// Publishes events `from..from + n` (seqs `from + 1..=from + n` on a fresh
    /// router).
    pub async fn publish(&self, from: u64, n: u64) {
        self.router
            .publish_batch((from..from + n).map(|i| Record::new(event(i))).collect())
            .await
            .expect("published");
    }

    /// Shuts the router down and stops the sink; how long stopping took.
    pub async fn stop(self) -> Duration {
        let started = Instant::now();
        self.router.shutdown().await;
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the sink stops in time")
            .expect("the sink task ends normally");
        started.elapsed()
    }
}

/// A client of the test's own (not the sink's), connected to `url`. A connection
/// refused or reset while the server comes up is tried again, a few times within
/// [`WAIT`]: once in a full suite run a fresh JetStream server reset the first
/// connection after its readiness probe had connected.
pub async fn connect(url: &str) -> async_nats::Client {
    let start = Instant::now();
    let mut errors = Vec::new();
    for _ in 0..5 {
        match async_nats::connect(url).await {
            Ok(client) => return client,
            Err(e) => errors.push(e.to_string()),
        }
        if start.elapsed() > WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the test's client cannot connect to {url}: {errors:?}");
}

/// `client`'s subscription to `<prefix>.>`, once the server has taken it: a flush
/// only puts the SUB on the wire, and what another connection publishes before the
/// server reads it would pass the subscription by. The server handles a
/// connection's messages in order, so once a probe on a second, private
/// subscription of the same connection comes back, the first is in place. (The
/// probe's subject is outside `<prefix>.>`: a JetStream stream on those subjects
/// would take it in.)
pub async fn subscribe_in_place(
    client: &async_nats::Client,
    prefix: &str,
) -> async_nats::Subscriber {
    let sub = client
        .subscribe(format!("{prefix}.>"))
        .await
        .expect("subscribes");
    let probe_subject = format!("_test_probe.{PROBE}");
    let mut probe = client
        .subscribe(probe_subject.clone())
        .await
        .expect("subscribes to the probe");
    client
        .publish(probe_subject, "probe".into())
        .await
        .expect("publishes the probe");
    tokio::time::timeout(WAIT, probe.next())
        .await
        .expect("the probe comes back: the subscription is in place")
        .expect("the probe's subscription lives");
    sub
}

/// Polls `cond` every 10 ms until it holds; fails the test after [`WAIT`].
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The seqs of the events among `messages` (gaps left out).
pub fn seqs(messages: &[(String, Observed)]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|(_, o)| match o {
            Observed::Event { seq, .. } => Some(*seq),
            Observed::Gap { .. } => None,
        })
        .collect()
}
