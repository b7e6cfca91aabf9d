//! Master discovery: who the master is now, and a watch of changes.
//!
//! Owns: the [`MasterDiscovery`] trait and the [`StaticDiscovery`] backend (the
//! configuration names the master; a lone node is its own master). The `etcd`
//! backend (leader election on a real etcd, cargo feature `etcd`) is in
//! [`crate::etcd`].
//!
//! Promises of every backend:
//! - [`MasterDiscovery::watch`] yields the current [`MasterView`] first, then every
//!   change; `master` is `None` while no master is known (an election in progress).
//! - `epoch` never decreases, and a change of master always comes with a greater
//!   epoch: it is the fencing token a deposed master is refused with.
//! - A node that loses its mastership (e.g. its etcd lease expired) sees a view
//!   without itself as master within the backend's lease TTL, and must stop
//!   sequencing then.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

/// Who the master is, as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterView {
    /// The master's node name; `None` while unknown.
    pub master: Option<String>,
    /// The master's term: greater for every new master (0 = none yet).
    pub epoch: u64,
}

/// A future returned by a discovery backend.
pub type DiscoveryFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A way to learn who the master is.
pub trait MasterDiscovery: Send + Sync + 'static {
    /// The backend's name, as shown by `GET /cluster` (`static`, `etcd`).
    fn backend(&self) -> &'static str;

    /// The current view, then every change.
    fn watch(&self) -> watch::Receiver<MasterView>;

    /// Stops taking part (gives up mastership if held). The default does nothing.
    fn shutdown(&self) -> DiscoveryFuture<'_> {
        Box::pin(async {})
    }
}

/// The master named by configuration. It never changes; its epoch is 1.
pub struct StaticDiscovery {
    tx: watch::Sender<MasterView>,
}

impl StaticDiscovery {
    /// A backend that always names `master`.
    pub fn new(master: impl Into<String>) -> StaticDiscovery {
        let (tx, _) = watch::channel(MasterView {
            master: Some(master.into()),
            epoch: 1,
        });
        StaticDiscovery { tx }
    }
}

impl MasterDiscovery for StaticDiscovery {
    fn backend(&self) -> &'static str {
        "static"
    }

    fn watch(&self) -> watch::Receiver<MasterView> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_discovery_names_its_master_with_epoch_one() {
        let d = StaticDiscovery::new("n_0@a");
        let view = d.watch().borrow().clone();
        assert_eq!(
            view,
            MasterView {
                master: Some("n_0@a".into()),
                epoch: 1
            }
        );
        assert_eq!(d.backend(), "static");
    }
}
