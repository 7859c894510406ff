//! [`Peer`]: who is on the other end of a call, as the server knows it.

use sinew_transport::{Address, PeerIdentity, Stream};

/// The caller of a server call, as the transport knows it: a handler reads it
/// from [`Request::peer`](crate::Request::peer), a layer from
/// [`ServerCall::peer`](super::ServerCall::peer). One per connection, shared by
/// its calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    address: Option<Address>,
    process_id: Option<u32>,
    identity: Option<PeerIdentity>,
    tls: bool,
}

impl Peer {
    /// A peer at `address` (if it has one), running as `process_id` (if the
    /// transport tells).
    pub fn new(address: Option<Address>, process_id: Option<u32>) -> Peer {
        Peer {
            address,
            process_id,
            identity: None,
            tls: false,
        }
    }

    /// The peer of a connected stream: its address, and what its transport
    /// proved (see [`Peer::identity`]).
    pub fn of(stream: &Stream) -> Peer {
        Peer {
            address: stream.peer_address(),
            process_id: stream.peer_pid(),
            identity: stream.peer_identity(),
            tls: stream.is_tls(),
        }
    }

    /// The same peer, with `identity` (for protocols and tests that make
    /// their own peers).
    pub fn with_identity(mut self, identity: Option<PeerIdentity>) -> Peer {
        self.identity = identity;
        self
    }

    /// The peer's address: `tcp://ip:port` over TCP, `tls://ip:port` over
    /// TLS; a Unix socket's path when the client bound one (they rarely do);
    /// `None` over shared memory and in-process connections.
    pub fn address(&self) -> Option<&Address> {
        self.address.as_ref()
    }

    /// The peer's process id, over the transports that can only reach this
    /// host (Unix sockets and shared memory, from `SO_PEERCRED`).
    pub fn process_id(&self) -> Option<u32> {
        self.process_id
    }

    /// What the transport proved about the peer: the names of its verified
    /// client certificate (mutual TLS), or its process's user, group and
    /// process ids (Unix sockets, shared memory). `None` over plain TCP, for
    /// a TLS client without a certificate, and for in-process callers.
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_ref()
    }

    /// Whether the connection is encrypted with TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}
