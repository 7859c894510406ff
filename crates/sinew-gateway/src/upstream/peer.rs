//! One upstream server: its settings (nginx's `server` line), its health,
//! passive and active, its load, and its pool of connections.
//!
//! **Passive health** is nginx's: `max_fails` failed requests within
//! `fail_timeout` take the server out for `fail_timeout`; then requests
//! may go to it again, and one more failure takes it out again at once,
//! while a success clears the count. **Active health** is set by the
//! group's checker (`health.rs`). A server is *usable* when it is not
//! `down`, is healthy both ways, and has room under `max_conns`.
//!
//! Everything a pick reads is an atomic: picks take no lock.

use super::pool::{Pool, PoolSettings};
use sinew_cluster::balance::PeakEwma;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What a server's `server` line says.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PeerSettings {
    pub(crate) address: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) backup: bool,
    pub(crate) down: bool,
    pub(crate) max_conns: usize,
    pub(crate) max_fails: u32,
    pub(crate) fail_timeout: Duration,
}

/// One server of a group, shared by the group's sets and the requests in
/// flight to it.
pub(crate) struct Peer {
    pub(crate) settings: PeerSettings,
    /// As nginx names it in `upstream` blocks: the ketama ring's names.
    pub(crate) name: String,
    pub(crate) pool: Pool,
    pub(crate) ewma: PeakEwma,
    in_flight: AtomicUsize,
    /// Failures counted in the current window.
    fails: AtomicU32,
    /// When the window began, in ns since [`epoch`].
    window_start: AtomicU64,
    /// Out (passively) until then, in ns since [`epoch`]; 0: not out.
    out_until: AtomicU64,
    /// What the active checks last concluded.
    healthy: AtomicBool,
    /// Active checks in a row that agreed (failed while healthy, or passed
    /// while not).
    checks_against: AtomicU32,
    /// Requests sent and failed, for the admin view and tests.
    requests: AtomicU64,
    failures: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos(now: Instant) -> u64 {
    now.saturating_duration_since(epoch()).as_nanos() as u64
}

/// A request in flight to a peer: counts against its `max_conns` and in
/// its load until dropped (at the end of the response's body).
pub(crate) struct InFlight(std::sync::Arc<Peer>);

impl InFlight {
    pub(crate) fn new(peer: std::sync::Arc<Peer>) -> InFlight {
        peer.in_flight.fetch_add(1, Ordering::Relaxed);
        peer.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(peer)
    }

    pub(crate) fn peer(&self) -> &std::sync::Arc<Peer> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Peer {
    pub(crate) fn new(settings: PeerSettings, pool: PoolSettings) -> Peer {
        let now = Instant::now();
        Peer {
            name: settings.address.to_string(),
            pool: Pool::new(settings.address, pool),
            ewma: PeakEwma::new(Duration::from_millis(1), Duration::from_secs(10), now),
            in_flight: AtomicUsize::new(0),
            fails: AtomicU32::new(0),
            window_start: AtomicU64::new(nanos(now)),
            out_until: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            checks_against: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            settings,
        }
    }

    /// Whether a request may go to it now.
    pub(crate) fn usable(&self, now: Instant) -> bool {
        !self.settings.down
            && self.healthy.load(Ordering::Relaxed)
            && !self.passively_out(now)
            && (self.settings.max_conns == 0 || self.in_flight() < self.settings.max_conns)
    }

    /// Whether it may take a request whatever its health: not `down`, and
    /// room under `max_conns`.
    pub(crate) fn has_room(&self) -> bool {
        !self.settings.down
            && (self.settings.max_conns == 0 || self.in_flight() < self.settings.max_conns)
    }

    fn passively_out(&self, now: Instant) -> bool {
        let until = self.out_until.load(Ordering::Relaxed);
        until != 0 && nanos(now) < until
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// A request to it failed (connect, I/O, timeout, or a status counted
    /// as failure).
    pub(crate) fn failed(&self, now: Instant) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let max_fails = self.settings.max_fails;
        if max_fails == 0 {
            return;
        }
        let now_ns = nanos(now);
        let window = self.settings.fail_timeout.as_nanos() as u64;
        // A server that was out and failed again goes out again at once.
        let was_out = self.out_until.load(Ordering::Relaxed) != 0;
        if now_ns.saturating_sub(self.window_start.load(Ordering::Relaxed)) > window && !was_out {
            self.window_start.store(now_ns, Ordering::Relaxed);
            self.fails.store(0, Ordering::Relaxed);
        }
        let fails = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= max_fails || was_out {
            self.out_until
                .store(now_ns.saturating_add(window).max(1), Ordering::Relaxed);
            tracing::warn!(
                server = %self.settings.address,
                fails,
                fail_timeout = ?self.settings.fail_timeout,
                "upstream server failed: out for fail_timeout"
            );
        }
    }

    /// A request to it succeeded: its failures are forgiven.
    pub(crate) fn succeeded(&self) {
        if self.fails.load(Ordering::Relaxed) != 0 || self.out_until.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
            self.out_until.store(0, Ordering::Relaxed);
        }
    }

    /// The result of one active check; `fails` and `passes` in a row flip
    /// the server's health.
    pub(crate) fn checked(&self, good: bool, fails: u32, passes: u32) {
        let healthy = self.healthy();
        if good == healthy {
            self.checks_against.store(0, Ordering::Relaxed);
            return;
        }
        let against = self.checks_against.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if healthy { fails } else { passes };
        if against >= needed {
            self.healthy.store(good, Ordering::Relaxed);
            self.checks_against.store(0, Ordering::Relaxed);
            if good {
                tracing::info!(server = %self.settings.address, "upstream server passed its health checks: back in");
                self.succeeded();
            } else {
                tracing::warn!(server = %self.settings.address, checks = against, "upstream server failed its health checks: out");
            }
        }
    }

    /// Requests sent to it and failed so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(max_fails: u32, max_conns: usize) -> Peer {
        Peer::new(
            PeerSettings {
                address: "127.0.0.1:1".parse().unwrap(),
                weight: 1,
                backup: false,
                down: false,
                max_conns,
                max_fails,
                fail_timeout: Duration::from_secs(10),
            },
            PoolSettings {
                max_idle: 1,
                idle_timeout: Duration::from_secs(1),
                max_requests: 1,
                connect_timeout: Duration::from_secs(1),
            },
        )
    }

    #[test]
    fn max_fails_within_fail_timeout_take_it_out_for_fail_timeout() {
        let peer = peer(2, 0);
        let start = Instant::now();
        peer.failed(start);
        assert!(peer.usable(start));
        peer.failed(start + Duration::from_secs(1));
        assert!(!peer.usable(start + Duration::from_secs(2)));
        // Out for fail_timeout from the failure that took it out.
        assert!(peer.usable(start + Duration::from_secs(12)));
        // Back on probation: one failure takes it out again.
        peer.failed(start + Duration::from_secs(12));
        assert!(!peer.usable(start + Duration::from_secs(13)));
        // A success forgives.
        peer.succeeded();
        assert!(peer.usable(start + Duration::from_secs(13)));
        peer.failed(start + Duration::from_secs(14));
        assert!(peer.usable(start + Duration::from_secs(14)));
    }

    #[test]
    fn failures_spread_wider_than_fail_timeout_do_not_add_up() {
        let peer = peer(2, 0);
        let start = Instant::now();
        peer.failed(start);
        peer.failed(start + Duration::from_secs(11));
        assert!(peer.usable(start + Duration::from_secs(11)));
    }

    #[test]
    fn max_fails_zero_never_takes_it_out() {
        let peer = peer(0, 0);
        let now = Instant::now();
        for _ in 0..10 {
            peer.failed(now);
        }
        assert!(peer.usable(now));
    }

    #[test]
    fn max_conns_bounds_requests_in_flight() {
        let peer = std::sync::Arc::new(peer(1, 2));
        let now = Instant::now();
        let first = InFlight::new(peer.clone());
        assert!(peer.usable(now));
        let second = InFlight::new(peer.clone());
        assert!(!peer.usable(now));
        drop(first);
        assert!(peer.usable(now));
        drop(second);
        assert_eq!(peer.in_flight(), 0);
    }

    #[test]
    fn active_checks_flip_health_after_fails_and_passes_in_a_row() {
        let peer = peer(1, 0);
        let now = Instant::now();
        peer.checked(false, 2, 3);
        assert!(peer.usable(now));
        peer.checked(true, 2, 3);
        peer.checked(false, 2, 3);
        assert!(peer.usable(now), "the failures were not in a row");
        peer.checked(false, 2, 3);
        assert!(!peer.usable(now));
        peer.checked(true, 2, 3);
        peer.checked(true, 2, 3);
        assert!(!peer.usable(now));
        peer.checked(true, 2, 3);
        assert!(peer.usable(now));
    }
}
