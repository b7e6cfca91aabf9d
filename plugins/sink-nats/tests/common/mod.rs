//! A real `nats-server` for tests (started on a free loopback port in a temp dir,
//! killed on drop; a missing binary fails the test with what to install), and a
//! subscriber that records what the sink published.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use master_events_sinktest::{Observed, Target};
use tokio::task::JoinHandle;

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `nats-server` process.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port and waits (up to 20 s) until it accepts.
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("nats.log");
        let child = Command::new(binary())
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
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A server and a subscriber to `<prefix>.>` that records `(subject, observed)`.
pub struct NatsTarget {
    pub server: NatsServer,
    pub prefix: String,
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
        let (got, task) = subscribe(&server.url(), prefix).await;
        NatsTarget {
            server,
            prefix: prefix.to_owned(),
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
        let (got, task) = subscribe(&self.server.url(), &self.prefix).await;
        self.got = got;
        self.task = task;
    }
}

async fn subscribe(
    url: &str,
    prefix: &str,
) -> (Arc<Mutex<Vec<(String, Observed)>>>, JoinHandle<()>) {
    let client = async_nats::connect(url)
        .await
        .expect("the test subscriber connects");
    let mut sub = client
        .subscribe(format!("{prefix}.>"))
        .await
        .expect("subscribes");
    client.flush().await.expect("the subscription is in place");
    let got = Arc::new(Mutex::new(Vec::new()));
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
