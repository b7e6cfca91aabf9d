//! The server every HTTP integration test runs against: a router and a [`Server`]
//! on a free loopback port, serving as the master of a one-node cluster, and
//! stopped when the test's [`TestServer`] is dropped.
//!
//! Owns: the router the server is given (node `n_0@127.0.0.1`), its users, its
//! [`ServerConfig`] (the default, tweaked by the test), the [`ClusterView`] channel
//! (kept open for the server's life), and the task that runs it.
//!
//! Promises:
//! - [`Builder::start`] returns once the server is bound and its task spawned: a
//!   connection to [`TestServer::addr`] is served, nothing needs waiting for.
//! - Dropping a [`TestServer`] asks the server to shut down and aborts its task,
//!   whatever the test did (or where it panicked).
//! - Nothing here sleeps or waits on a clock.
//!
//! Each test binary compiles this module on its own and uses a part of it, hence
//! `dead_code` is allowed here.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use master_events_router::{Router, RouterConfig};
use master_events_server::auth::Users;
use master_events_server::metrics::Metrics;
use master_events_server::{ClusterView, Server, ServerConfig, ShutdownHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The name of the node the test server runs as (and the master it sees).
pub const NODE: &str = "n_0@127.0.0.1";

/// The cluster as a one-node cluster's master sees it: [`NODE`], master itself,
/// epoch 1, static discovery.
pub fn master_view() -> ClusterView {
    ClusterView {
        node: NODE.into(),
        master: Some(NODE.into()),
        is_master: true,
        epoch: 1,
        discovery: "static".into(),
    }
}

/// The users `MASTER_EVENTS_USERS` would give: `name:password:role[,...]`, the
/// empty string for none (authentication off).
pub fn users(env: &str) -> Users {
    Users::from_entries(&Users::parse_env(env).expect("users parse")).expect("users")
}

/// A running server of a test: bound on 127.0.0.1, its `run` spawned. Dropping it
/// shuts the server down.
pub struct TestServer {
    /// The address bound.
    pub addr: SocketAddr,
    /// `http://{addr}`.
    pub url: String,
    /// The router the server streams from and ingests into.
    pub router: Router,
    /// The server's metrics (what `/metrics` shows).
    pub metrics: Arc<Metrics>,
    /// Stops the server (as dropping this does).
    pub shutdown: ShutdownHandle,
    task: JoinHandle<()>,
    _cluster: watch::Sender<ClusterView>,
}

impl TestServer {
    /// A builder of a server with the defaults: the router's default archive, no
    /// users, the default [`ServerConfig`] (127.0.0.1, port 0).
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        self.task.abort();
    }
}

/// How a test's server is made: the archive's capacity, the users, and the
/// configuration, then [`Builder::start`] (or [`Builder::bind`] to reach the
/// [`Server`] before it runs).
pub struct Builder {
    archive_capacity: usize,
    users: Users,
    config: ServerConfig,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            archive_capacity: RouterConfig::default().archive_capacity,
            users: Users::default(),
            config: ServerConfig::default(),
        }
    }
}

impl Builder {
    /// The router keeps the last `capacity` events.
    pub fn archive(mut self, capacity: usize) -> Builder {
        self.archive_capacity = capacity;
        self
    }

    /// The users, as `MASTER_EVENTS_USERS` says them (see [`users`]).
    pub fn users(self, env: &str) -> Builder {
        self.with_users(users(env))
    }

    /// These users (with tokens or a cluster secret, say).
    pub fn with_users(mut self, users: Users) -> Builder {
        self.users = users;
        self
    }

    /// Changes the configuration (applied at once, on top of what was set before).
    pub fn config(mut self, tweak: impl FnOnce(&mut ServerConfig)) -> Builder {
        tweak(&mut self.config);
        self
    }

    /// Starts the router and binds the server, not running it yet.
    pub async fn bind(self) -> Bound {
        let router = Router::start(RouterConfig {
            node: NODE.into(),
            archive_capacity: self.archive_capacity,
            ..RouterConfig::default()
        });
        let (cluster, rx) = watch::channel(master_view());
        let server = Server::bind(self.config, router.clone(), self.users, rx)
            .await
            .expect("binds");
        Bound {
            server,
            router,
            cluster,
        }
    }

    /// Starts the router, binds the server and runs it.
    pub async fn start(self) -> TestServer {
        self.bind().await.run()
    }
}

/// A server bound but not running: what a test reads off the [`Server`] before
/// [`Server::run`] (its TLS reloader, say) it reads from `server`.
pub struct Bound {
    /// The server, bound.
    pub server: Server,
    router: Router,
    cluster: watch::Sender<ClusterView>,
}

impl Bound {
    /// Spawns the server's `run`.
    pub fn run(self) -> TestServer {
        let addr = self.server.local_addr();
        TestServer {
            addr,
            url: format!("http://{addr}"),
            router: self.router,
            metrics: self.server.metrics(),
            shutdown: self.server.shutdown_handle(),
            task: tokio::spawn(self.server.run()),
            _cluster: self.cluster,
        }
    }
}
