//! Keepalive: finds a peer that stopped answering (a frozen process, a
//! partitioned network) on either end of a connection.
//!
//! TCP alone notices neither: a stopped process's kernel still acknowledges
//! bytes, and a silent network path only times out after many minutes. So each
//! side watches what it receives: after [`Keepalive::interval`] without a
//! single frame from the peer it sends a PING, which any live peer answers at
//! once; if nothing at all arrives within [`Keepalive::timeout`] after that,
//! the connection is closed and its calls fail with `UNAVAILABLE`. A busy
//! connection never pings: its frames prove the peer alive.

use super::Shared;
use crate::client::reconnect::human_duration;
use crate::status::Status;
use sinew_wire::encode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// When a connection checks that its peer is still there: see the module docs
/// of `connection::keepalive` and the builders' `keepalive` methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// PING after this long without a frame from the peer; `None` turns
    /// keepalive off.
    pub interval: Option<Duration>,
    /// Close the connection if nothing arrives this long after the PING.
    pub timeout: Duration,
}

impl Keepalive {
    /// A client's default: PING after 10 s of silence, give up 5 s later, so
    /// that a frozen server is found within 15 s.
    pub const CLIENT: Keepalive = Keepalive {
        interval: Some(Duration::from_secs(10)),
        timeout: Duration::from_secs(5),
    };

    /// A server's default: PING after 30 s of silence, give up 10 s later
    /// (clients check more often; a server mostly frees what a vanished
    /// client held).
    pub const SERVER: Keepalive = Keepalive {
        interval: Some(Duration::from_secs(30)),
        timeout: Duration::from_secs(10),
    };

    /// No keepalive.
    pub const OFF: Keepalive = Keepalive {
        interval: None,
        timeout: Duration::from_secs(10),
    };
}

/// Starts the keepalive of a connection, in a task of its own that ends with
/// the connection (it holds only a weak reference to it).
pub(crate) fn start(shared: &Arc<Shared>, keepalive: Keepalive) {
    let Some(interval) = keepalive.interval else {
        return;
    };
    let shared = Arc::downgrade(shared);
    tokio::spawn(watch(shared, interval, keepalive.timeout));
}

async fn watch(shared: Weak<Shared>, interval: Duration, timeout: Duration) {
    let mut pings = 0u64;
    // A ping is out, unanswered so far.
    let mut asked = false;
    loop {
        tokio::time::sleep(if asked { timeout } else { interval }).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut state = shared.lock();
        if state.dead.is_some() {
            return;
        }
        if shared.received.swap(false, Ordering::Relaxed) {
            // Something arrived: the peer is alive.
            asked = false;
        } else if asked {
            tracing::debug!("keepalive: the peer did not answer a ping");
            state.kill(Status::unavailable(format!(
                "the peer did not answer a keepalive ping within {} (frozen or unreachable); connection closed",
                human_duration(timeout)
            )));
            return;
        } else {
            // Silent for a whole interval: ask.
            pings += 1;
            encode::ping(&mut state.pending, false, pings.to_be_bytes());
            asked = true;
        }
    }
}
