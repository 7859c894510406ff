//! [`Peer`]: who is on the other end of a call, as the server knows it.

use sinew_transport::Address;

/// The caller of a server call, as the transport knows it: a handler reads it
/// from [`Request::peer`](crate::Request::peer), a layer from
/// [`ServerCall::peer`](super::ServerCall::peer). One per connection, shared by
/// its calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    address: Option<Address>,
    process_id: Option<u32>,
}

impl Peer {
    /// A peer at `address` (if it has one), running as `process_id` (if the
    /// transport tells).
    pub fn new(address: Option<Address>, process_id: Option<u32>) -> Peer {
        Peer {
            address,
            process_id,
        }
    }

    /// The peer's address: `tcp://ip:port` over TCP; a Unix socket's path
    /// when the client bound one (they rarely do); `None` over shared memory
    /// and in-process connections.
    pub fn address(&self) -> Option<&Address> {
        self.address.as_ref()
    }

    /// The peer's process id, over the transports that can only reach this
    /// host (Unix sockets and shared memory, from `SO_PEERCRED`).
    pub fn process_id(&self) -> Option<u32> {
        self.process_id
    }
}
