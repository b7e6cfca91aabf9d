//! Loopback ports for the servers tests start.
//!
//! Owns: [`free_port`]. Promises: a port it returns was free when picked, is below
//! Linux's ephemeral range, and is returned once per test process.
//!
//! Why below the ephemeral range (32768 and up): a port the kernel hands out for a
//! bind to port 0 comes from that range, and so does the local port of every
//! outgoing connection. Between the test's pick and its server's bind, or while a
//! server the test restarts on the same port is down, a connection may take that
//! port: the server then cannot listen, or a client reconnecting to it connects to
//! itself (a TCP self-connection). Both were seen as rare failures of the suite.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::ops::Range;
use std::sync::Mutex;

/// The ports [`free_port`] picks from.
pub const PORTS: Range<u16> = 20_000..32_000;

/// A loopback port in [`PORTS`], free now and never returned before by this process.
///
/// # Panics
///
/// When every port of [`PORTS`] is taken or was returned already.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let span = u64::from(PORTS.end - PORTS.start);
    // A random start, so that concurrent test processes rarely try the same ports.
    let start = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % span;
    for i in 0..span {
        let port = PORTS.start + ((start + i) % span) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_free_and_never_given_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for p in ports {
            assert!(PORTS.contains(&p), "{p}");
            assert!(p < 32_768, "{p}");
            TcpListener::bind(("127.0.0.1", p)).expect("still free");
        }
    }
}
