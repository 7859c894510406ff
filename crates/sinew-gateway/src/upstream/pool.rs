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

use crate::body::RequestBody;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The sending half of one HTTP/1.1 connection to a server.
pub(crate) type Sender = http1::SendRequest<RequestBody>;

/// A connection checked out of its pool (or just made).
pub(crate) struct Pooled {
    pub(crate) sender: Sender,
    /// Requests it has carried, this one included.
    served: u32,
}

/// How a pool keeps connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolSettings {
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_requests: u32,
    pub(crate) connect_timeout: Duration,
}

struct Idle {
    sender: Sender,
    served: u32,
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
    pub(crate) fn checkout(&self) -> Option<Pooled> {
        let mut idle = crate::lock(&self.idle);
        let now = Instant::now();
        while let Some(entry) = idle.pop() {
            if entry.sender.is_closed()
                || now.saturating_duration_since(entry.since) >= self.settings.idle_timeout
            {
                continue;
            }
            return Some(Pooled {
                sender: entry.sender,
                served: entry.served + 1,
            });
        }
        None
    }

    /// Gives a connection whose response was read to its end back, unless
    /// it has carried its share of requests or the pool is full.
    pub(crate) fn checkin(&self, pooled: Pooled) {
        if pooled.served >= self.settings.max_requests || pooled.sender.is_closed() {
            return;
        }
        let mut idle = crate::lock(&self.idle);
        if idle.len() < self.settings.max_idle {
            idle.push(Idle {
                sender: pooled.sender,
                served: pooled.served,
                since: Instant::now(),
            });
        }
    }

    /// Closes the connections idle for longer than the timeout.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let timeout = self.settings.idle_timeout;
        crate::lock(&self.idle).retain(|entry| {
            !entry.sender.is_closed() && now.saturating_duration_since(entry.since) < timeout
        });
    }

    /// Idle connections now.
    pub(crate) fn idle_count(&self) -> usize {
        crate::lock(&self.idle).len()
    }

    /// A new connection to the server, its task spawned.
    pub(crate) async fn connect(&self) -> io::Result<Pooled> {
        let sender = connect(self.address, self.settings.connect_timeout).await?;
        Ok(Pooled { sender, served: 1 })
    }
}

/// Opens an HTTP/1.1 connection to `address` within `timeout`, and spawns
/// the task that drives it (it ends when the connection closes or every
/// sender is dropped).
pub(crate) async fn connect(address: SocketAddr, timeout: Duration) -> io::Result<Sender> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {address} timed out after {timeout:?}"),
            )
        })??;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%address, %error, "upstream connection ended");
        }
    });
    Ok(sender)
}
