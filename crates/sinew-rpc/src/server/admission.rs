//! [`Admission`]: how many connections a server holds, in all and per peer
//! address, and which one goes when a new one needs room.
//!
//! Every accepted connection (whatever protocol it turns out to speak) gets a
//! [`Ticket`] before anything is read from it, and gives it back when its task
//! ends. At the limit, a new connection makes room by closing the **oldest
//! idle** connection (no call in flight, for instance one that sent a preface
//! and nothing since) with a graceful drain: GOAWAY, and since it has no call,
//! it closes at once. When every connection has calls in flight, the new one
//! is refused instead: the server answers its first bytes with sinew's preface
//! and a GOAWAY `ENHANCE_YOUR_CALM` saying why, and closes. So a peer that
//! opens thousands of silent connections cannot keep others out, and no
//! working connection is ever cut to let a new one in.
//!
//! Whether a connection is idle is read from its [`Activity`]: the count of
//! calls in flight that each protocol keeps (sinew's connections count their
//! open streams in it; the gRPC bridge counts its calls). The same
//! `Activity` counts what the connection carries, and the table adds those
//! counts up for [`ServerStats`] (see `stats.rs`).

use super::stats::{Carried, Events, Limit, Refusal, ServerStats};
use sinew_transport::{RingGauge, SlabGauge};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::watch;

/// Calls in flight on one connection, kept by whoever serves it, and what
/// the connection carried: calls started, bytes, flow-control stalls. Only
/// the connection's own tasks write it; the server reads it for
/// [`ServerStats`].
#[derive(Debug, Default)]
pub struct Activity {
    calls: AtomicU32,
    started: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    stalls: AtomicU64,
    /// The server's counters of rare events (none on a client's connection,
    /// or an in-process one).
    events: Option<Arc<Events>>,
    /// Over shared memory: gauges of its rings and of the slabs it sends
    /// from (weak: they keep none of the connection's memory).
    shm: OnceLock<(RingGauge, Option<SlabGauge>)>,
}

impl Activity {
    /// Counts one more call in flight until the returned guard is dropped.
    pub fn call(self: &Arc<Self>) -> ActiveCall {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        ActiveCall(self.clone())
    }

    /// Sets the count (for a protocol that keeps its own count and copies
    /// it); `opened` says whether a call just started.
    pub(crate) fn set(&self, calls: u32, opened: bool) {
        self.calls.store(calls, Ordering::Relaxed);
        if opened {
            self.started.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls in flight now.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Counts `bytes` read from the connection (the server counts what
    /// it reads itself, also for protocol extensions, through [`Accepted`](super::Accepted)).
    pub(crate) fn received(&self, bytes: usize) {
        self.received.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts `bytes` written to the connection.
    pub(crate) fn sent(&self, bytes: usize) {
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a message that had to wait for its peer's flow-control window.
    pub(crate) fn stalled(&self) {
        self.stalls.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `limit` turning a call or the connection away (for a protocol
    /// extension that enforces one of the server's limits itself).
    pub fn limit_hit(&self, limit: Limit) {
        if let Some(events) = &self.events {
            events.limit_hit(limit);
        }
    }

    /// Counts a connection error sent to the peer.
    pub(crate) fn connection_error(&self, reason: sinew_wire::Reason) {
        if let Some(events) = &self.events {
            events.connection_error(reason);
        }
    }

    /// Counts a handshake that failed or did not finish in time.
    pub(crate) fn handshake_failed(&self) {
        if let Some(events) = &self.events {
            events.refused(Refusal::Handshake);
        }
    }

    /// Remembers the rings of a shared-memory connection, and the slabs
    /// it sends from.
    pub(crate) fn set_shm(&self, rings: RingGauge, slabs: Option<SlabGauge>) {
        let _ = self.shm.set((rings, slabs));
    }

    pub(crate) fn carried(&self) -> Carried {
        Carried {
            calls_started: self.started.load(Ordering::Relaxed),
            bytes_received: self.received.load(Ordering::Relaxed),
            bytes_sent: self.sent.load(Ordering::Relaxed),
            flow_control_stalls: self.stalls.load(Ordering::Relaxed),
        }
    }
}

/// One call counted in an [`Activity`]; uncounted when dropped.
#[derive(Debug)]
pub struct ActiveCall(Arc<Activity>);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection limits (see `ServerBuilder::max_connections`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
}

/// The table of a server's connections.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Limits,
    table: Mutex<Table>,
    events: Arc<Events>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
    /// What the connections that are gone carried.
    retired: Carried,
}

#[derive(Debug)]
struct Entry {
    ip: Option<IpAddr>,
    accepted: Instant,
    activity: Arc<Activity>,
    /// Turned true to make the connection drain and close.
    close: watch::Sender<bool>,
    /// Already told to close (it still counts until it is gone).
    closing: bool,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) String);

/// A connection's place in the table, given back when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    /// Calls in flight on the connection.
    pub(crate) activity: Arc<Activity>,
    /// True when the server wants this connection to drain and close (its
    /// own shutdown, or room for a newer connection).
    pub(crate) close: watch::Receiver<bool>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut table = self
            .admission
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = table.entries.remove(&self.id) {
            table.retired.add(&entry.activity);
            if let Some(ip) = entry.ip {
                if let Some(count) = table.per_ip.get_mut(&ip) {
                    *count -= 1;
                    if *count == 0 {
                        table.per_ip.remove(&ip);
                    }
                }
            }
        }
    }
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            table: Mutex::new(Table::default()),
            events: Arc::default(),
        })
    }

    /// The server's figures now: the live connections' counts added to the
    /// totals of those gone.
    pub(crate) fn stats(&self) -> ServerStats {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut carried = table.retired;
        let mut in_flight = 0;
        let mut shm = Vec::new();
        for entry in table.entries.values() {
            carried.add(&entry.activity);
            in_flight += u64::from(entry.activity.calls());
            if let Some(parts) = entry.activity.shm.get() {
                shm.push(parts.clone());
            }
        }
        let open = table.entries.len() as u64;
        // The shared memory is read without the table's lock.
        drop(table);
        let mut stats = ServerStats::new(&self.events, carried, open, in_flight);
        for (rings, slabs) in shm {
            let (Some(capacity), Some((outbound, inbound))) = (rings.capacity(), rings.used())
            else {
                continue; // closed meanwhile
            };
            stats.shm_connections += 1;
            stats.shm_ring_bytes += 2 * capacity;
            stats.shm_ring_bytes_used += outbound + inbound;
            if let Some((out, count)) = slabs.and_then(|slabs| slabs.in_use()) {
                stats.shm_slabs += u64::from(count);
                stats.shm_slabs_in_use += u64::from(out);
            }
        }
        stats
    }

    /// A place for a connection from `ip`: at a limit, the oldest idle
    /// connection that counts against it is told to close to make room; when
    /// there is none, the connection is refused.
    pub(crate) fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Ticket, Refused> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let limit = self.limits.max_connections_per_ip;
        let crowded = ip.filter(|ip| table.per_ip.get(ip).is_some_and(|n| *n >= limit));
        if let Some(address) = crowded {
            if !table.shed_oldest_idle(ip) {
                self.events.refused(Refusal::AddressLimit);
                return Err(Refused(format!(
                    "too many connections from {address} (limit {limit}, all busy)"
                )));
            }
            self.events.limit_hit(Limit::AddressLimit);
        } else if table.entries.len() >= self.limits.max_connections {
            if !table.shed_oldest_idle(None) {
                self.events.refused(Refusal::ConnectionLimit);
                return Err(Refused(format!(
                    "server at its connection limit ({}, all busy)",
                    self.limits.max_connections
                )));
            }
            self.events.limit_hit(Limit::ConnectionLimit);
        }
        self.events.accepted();
        let id = table.next_id;
        table.next_id += 1;
        let (close, close_rx) = watch::channel(false);
        let activity = Arc::new(Activity {
            events: Some(self.events.clone()),
            ..Activity::default()
        });
        table.entries.insert(
            id,
            Entry {
                ip,
                accepted: Instant::now(),
                activity: activity.clone(),
                close,
                closing: false,
            },
        );
        if let Some(ip) = ip {
            *table.per_ip.entry(ip).or_insert(0) += 1;
        }
        Ok(Ticket {
            admission: self.clone(),
            id,
            activity,
            close: close_rx,
        })
    }

    /// Tells every connection to drain and close (the server's shutdown).
    pub(crate) fn close_all(&self) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        for entry in table.entries.values_mut() {
            entry.closing = true;
            entry.close.send_replace(true);
        }
    }

    /// Connections in the table (open, or closing and not gone yet).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }
}

impl Table {
    /// Tells the oldest idle connection (from `ip`, if given) that is not
    /// closing yet to close. False when there is none.
    fn shed_oldest_idle(&mut self, ip: Option<IpAddr>) -> bool {
        let oldest = self
            .entries
            .values_mut()
            .filter(|entry| !entry.closing && entry.activity.calls() == 0)
            .filter(|entry| ip.is_none() || entry.ip == ip)
            .min_by_key(|entry| entry.accepted);
        match oldest {
            Some(entry) => {
                entry.closing = true;
                entry.close.send_replace(true);
                tracing::debug!(peer = ?entry.ip, "closing the oldest idle connection to make room");
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn the_oldest_idle_connection_makes_room_and_busy_ones_never_do() {
        let admission = Admission::new(Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
        });
        let first = admission.admit(ip(1)).unwrap();
        let second = admission.admit(ip(2)).unwrap();
        let third = admission.admit(ip(3)).unwrap();
        let _busy = second.activity.call();
        let _busy_too = third.activity.call();
        // At the limit: the oldest idle one (the first) is told to close.
        let fourth = admission.admit(ip(4)).unwrap();
        assert!(*first.close.borrow());
        assert!(!*second.close.borrow() && !*third.close.borrow());
        // Until it is gone it still counts; nothing else is idle: refused.
        let _busy_fourth = fourth.activity.call();
        let refused = admission.admit(ip(5)).unwrap_err();
        assert!(refused.0.contains("connection limit (3"), "{refused:?}");
        let stats = admission.stats();
        assert_eq!(stats.connections_accepted, 4);
        assert_eq!(stats.connections_open, 4, "the closing one still counts");
        assert_eq!(stats.calls_in_flight, 3);
        assert_eq!(stats.limit_hits(Limit::ConnectionLimit), 1);
        assert_eq!(stats.refused(Refusal::ConnectionLimit), 1);
        // A connection's counts outlive it, in the totals.
        first.activity.received(100);
        first.activity.sent(40);
        second.activity.received(1);
        drop(first);
        assert_eq!(admission.len(), 3);
        let stats = admission.stats();
        assert_eq!((stats.bytes_received, stats.bytes_sent), (101, 40));
        assert_eq!(stats.calls_started, 3);
        assert_eq!(stats.connections_open, 3);
        admission.close_all();
        assert!(*second.close.borrow() && *third.close.borrow() && *fourth.close.borrow());
    }

    #[test]
    fn per_address_the_same_rule_applies_among_its_connections() {
        let admission = Admission::new(Limits {
            max_connections: 100,
            max_connections_per_ip: 2,
        });
        let other = admission.admit(ip(1)).unwrap();
        let a = admission.admit(ip(9)).unwrap();
        let b = admission.admit(ip(9)).unwrap();
        let _busy_b = b.activity.call();
        // The third from 10.0.0.9 closes its idle one, not another address's.
        let c = admission.admit(ip(9)).unwrap();
        assert!(*a.close.borrow() && !*other.close.borrow());
        let _busy_c = c.activity.call();
        let refused = admission.admit(ip(9)).unwrap_err();
        assert!(refused.0.contains("from 10.0.0.9 (limit 2"), "{refused:?}");
        assert_eq!(admission.stats().refused(Refusal::AddressLimit), 1);
        assert_eq!(admission.stats().limit_hits(Limit::AddressLimit), 1);
        assert_eq!(admission.stats().limit_hits(Limit::ConnectionLimit), 0);
        assert_eq!(admission.stats().refused(Refusal::ConnectionLimit), 0);
        // Unix sockets and shared memory have no address: only the total counts.
        assert!(admission.admit(None).is_ok());
    }
}
