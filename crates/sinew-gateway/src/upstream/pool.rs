//! Keep-alive connections to one upstream server: nginx's `keepalive`,
//! `keepalive_timeout` and `keepalive_requests`.
//!
//! A connection is checked out for one request and given back when the
//! response's body has been read to its end (a response the client left
//! early takes its connection down with it: what remains of it would
//! otherwise be read as the next response). The most recently used idle
//! connection is taken first, so that under light load the others age out.
//! A connection that closed while idle (the server's own idle timeout) is
//! noticed at checkout and passed over; one that closes as a request is
//! written to it hands the request back unsent, and the proxy tries
//! another (see `proxy.rs`).

use super::conn::Conn;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a pool keeps connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolSettings {
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_requests: u32,
    pub(crate) connect_timeout: Duration,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle connections to one server.
pub(crate) struct Pool {
    address: SocketAddr,
    settings: PoolSettings,
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    pub(crate) fn new(address: SocketAddr, settings: PoolSettings) -> Pool {
        Pool {
            address,
            settings,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The most recently used idle connection still open, if any.
    pub(crate) fn checkout(&self) -> Option<Conn> {
        let mut idle = crate::lock(&self.idle);
        let now = Instant::now();
        while let Some(entry) = idle.pop() {
            if now.saturating_duration_since(entry.since) < self.settings.idle_timeout
                && entry.conn.idle_and_open()
            {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Gives a connection whose response was read to its end back, unless
    /// it has carried its share of requests or the pool is full.
    pub(crate) fn checkin(&self, conn: Conn) {
        if conn.served >= self.settings.max_requests {
            return;
        }
        let mut idle = crate::lock(&self.idle);
        if idle.len() < self.settings.max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Closes the connections idle for longer than the timeout, or closed
    /// by the server.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let timeout = self.settings.idle_timeout;
        crate::lock(&self.idle).retain(|entry| {
            now.saturating_duration_since(entry.since) < timeout && entry.conn.idle_and_open()
        });
    }

    /// Idle connections now.
    pub(crate) fn idle_count(&self) -> usize {
        crate::lock(&self.idle).len()
    }

    /// A new connection to the server.
    pub(crate) async fn connect(&self) -> io::Result<Conn> {
        Conn::connect(self.address, self.settings.connect_timeout).await
    }
}
