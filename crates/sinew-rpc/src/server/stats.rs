//! [`ServerStats`]: what a server holds now and has done so far, for metrics
//! and dashboards ([`ServerHandle::stats`](super::ServerHandle::stats)).
//!
//! Counting adds nothing shared to the call path. Each connection counts
//! its own calls, bytes and flow-control stalls in its [`Activity`], which
//! only its own tasks write (uncontended atomics); the server adds the live
//! connections' counts up when asked, and folds a connection's counts into
//! its totals when the connection goes. Rare events (a connection refused, a
//! limit hit, a connection error) go straight to server-wide counters.
//!
//! What is counted where:
//!
//! | figure | sinew's protocol | protocol extensions (gRPC) |
//! |---|---|---|
//! | connections, refusals | yes | yes |
//! | handshake failures | TLS, the first bytes, sinew's preface | TLS, the first bytes (the HTTP/2 preface is the HTTP/2 stack's) |
//! | calls in flight and started | yes | yes (their [`Activity::call`] guards) |
//! | bytes in and out | the connection's stream (the plaintext under TLS; shared-memory slabs included) | the same |
//! | flow-control stalls | a message waiting to be sent | not seen (the HTTP/2 stack's own) |
//! | limits hit | every one | those the extension reports ([`Activity::limit_hit`]) |
//! | connection errors | by GOAWAY reason | not seen |

use super::admission::Activity;
use sinew_wire::Reason;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a connection was turned away before it could make a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The server held `max_connections`, every one of them busy.
    ConnectionLimit,
    /// The peer's address held `max_connections_per_ip`, all busy.
    AddressLimit,
    /// No complete handshake (TLS, the first bytes, sinew's preface) within
    /// the handshake timeout, or one that was not valid.
    Handshake,
}

impl Refusal {
    /// Every reason, in a fixed order.
    pub const ALL: [Refusal; 3] = [
        Refusal::ConnectionLimit,
        Refusal::AddressLimit,
        Refusal::Handshake,
    ];

    /// A name for labels and logs: `connection_limit`, `address_limit`,
    /// `handshake`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::AddressLimit => "address_limit",
            Refusal::Handshake => "handshake",
        }
    }
}

/// A server limit that turned a call or a connection away, or ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// A call refused: its connection had `max_concurrent_streams` open.
    ConcurrentStreams,
    /// A call refused, or a message not sent: the connection's memory budget
    /// was spent on messages its peer had not taken.
    ConnectionMemory,
    /// A call ended: its request did not arrive within the request timeout.
    RequestTimeout,
    /// A connection closed: a frame took longer than the frame timeout.
    FrameTimeout,
    /// A connection closed gracefully: no call for the idle timeout.
    IdleTimeout,
    /// An idle connection closed to make room for a new one at the
    /// connection limit.
    ConnectionLimit,
    /// An idle connection closed to make room for a new one from the same
    /// address, at the per-address limit.
    AddressLimit,
}

impl Limit {
    /// Every limit, in a fixed order.
    pub const ALL: [Limit; 7] = [
        Limit::ConcurrentStreams,
        Limit::ConnectionMemory,
        Limit::RequestTimeout,
        Limit::FrameTimeout,
        Limit::IdleTimeout,
        Limit::ConnectionLimit,
        Limit::AddressLimit,
    ];

    /// A name for labels and logs, as the builder's setting is named:
    /// `max_concurrent_streams`, `connection_memory`, `request_timeout`,
    /// `frame_timeout`, `idle_timeout`, `max_connections`,
    /// `max_connections_per_ip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::ConcurrentStreams => "max_concurrent_streams",
            Limit::ConnectionMemory => "connection_memory",
            Limit::RequestTimeout => "request_timeout",
            Limit::FrameTimeout => "frame_timeout",
            Limit::IdleTimeout => "idle_timeout",
            Limit::ConnectionLimit => "max_connections",
            Limit::AddressLimit => "max_connections_per_ip",
        }
    }
}

/// The connection error reasons a server reports (every one but `NO_ERROR`).
const ERROR_REASONS: [Reason; 7] = [
    Reason::ProtocolError,
    Reason::InternalError,
    Reason::FlowControlError,
    Reason::FrameSizeError,
    Reason::BadPreface,
    Reason::UnsupportedVersion,
    Reason::EnhanceYourCalm,
];

/// The server-wide counters of rare events, shared by the server and every
/// connection's [`Activity`].
#[derive(Debug, Default)]
pub(crate) struct Events {
    accepted: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    limits: [AtomicU64; Limit::ALL.len()],
    errors: [AtomicU64; ERROR_REASONS.len()],
}

impl Events {
    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn limit_hit(&self, limit: Limit) {
        self.limits[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_error(&self, reason: Reason) {
        if let Some(index) = ERROR_REASONS.iter().position(|r| *r == reason) {
            self.errors[index].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the connections of a server carried, added up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Carried {
    pub(crate) calls_started: u64,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) flow_control_stalls: u64,
}

impl Carried {
    pub(crate) fn add(&mut self, activity: &Activity) {
        let counts = activity.carried();
        self.calls_started += counts.calls_started;
        self.bytes_received += counts.bytes_received;
        self.bytes_sent += counts.bytes_sent;
        self.flow_control_stalls += counts.flow_control_stalls;
    }
}

/// A server's figures at one moment ([`ServerHandle::stats`](super::ServerHandle::stats)).
/// Counters (`_total` in Prometheus) only grow over the server's life;
/// the others are what it holds now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections open now (accepted, not yet closed), every protocol.
    pub connections_open: u64,
    /// Connections given a place so far: those turned away at the
    /// connection limits are not, those refused at the handshake are (a
    /// connection gets its place before its first byte is read).
    pub connections_accepted: u64,
    /// Calls in flight now, every connection.
    pub calls_in_flight: u64,
    /// Calls started so far.
    pub calls_started: u64,
    /// Bytes read from connections so far.
    pub bytes_received: u64,
    /// Bytes written to connections so far.
    pub bytes_sent: u64,
    /// Messages that had to wait before they could be sent: for the peer's
    /// flow-control window (a peer reading slowly), or for the socket to
    /// take what is queued (over 1 MiB).
    pub flow_control_stalls: u64,
    /// Connections over shared memory open now.
    pub shm_connections: u64,
    /// Bytes their rings hold in all (two rings each, one per direction),
    /// and how many of those wait now, written and not yet read.
    pub shm_ring_bytes: u64,
    /// See `shm_ring_bytes`.
    pub shm_ring_bytes_used: u64,
    /// Of their slabs (large messages written in place), how many are in
    /// use now (sent, not yet taken back from the peer), and how many there
    /// are in all.
    pub shm_slabs_in_use: u64,
    /// See `shm_slabs_in_use`.
    pub shm_slabs: u64,
    refused: [u64; Refusal::ALL.len()],
    limits: [u64; Limit::ALL.len()],
    errors: [u64; ERROR_REASONS.len()],
}

impl ServerStats {
    /// Connections turned away for `why` so far.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize]
    }

    /// Times `limit` turned a call or a connection away (or ended one) so far.
    pub fn limit_hits(&self, limit: Limit) -> u64 {
        self.limits[limit as usize]
    }

    /// Connections this server ended with a connection error of `reason`
    /// (a GOAWAY saying why) so far.
    pub fn connection_errors(&self, reason: Reason) -> u64 {
        ERROR_REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |index| self.errors[index])
    }

    /// Every connection error reason a server can report, with its count.
    pub fn connection_errors_by_reason(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        ERROR_REASONS
            .iter()
            .copied()
            .zip(self.errors.iter().copied())
    }

    pub(crate) fn new(
        events: &Events,
        carried: Carried,
        connections_open: u64,
        calls_in_flight: u64,
    ) -> ServerStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ServerStats {
            connections_open,
            connections_accepted: load(&events.accepted),
            calls_in_flight,
            calls_started: carried.calls_started,
            bytes_received: carried.bytes_received,
            bytes_sent: carried.bytes_sent,
            flow_control_stalls: carried.flow_control_stalls,
            shm_connections: 0,
            shm_ring_bytes: 0,
            shm_ring_bytes_used: 0,
            shm_slabs_in_use: 0,
            shm_slabs: 0,
            refused: events.refused.each_ref().map(load),
            limits: events.limits.each_ref().map(load),
            errors: events.errors.each_ref().map(load),
        }
    }
}
