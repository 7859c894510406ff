//! Where sinew's bytes travel: addresses, listeners and connected streams.
//!
//! An [`Address`] names an endpoint as a URL (`tcp://127.0.0.1:7000`,
//! `unix:///run/app.sock`, `shm:///run/app.sock`). [`Listener::bind`] turns one into a listener and
//! [`connect`] into a connected [`Stream`]; a stream splits into owned read and
//! write halves so that a connection's reader and writer can run as two tasks
//! without a lock between them.
//!
//! This crate moves bytes and knows nothing of frames or calls: the protocol is in
//! `sinew-wire` and `sinew-rpc`. Transports are closed enums rather than trait
//! objects, so the hot path pays for no virtual call and no boxing; shared
//! memory (`sinew-shm`, the one crate with `unsafe` code) is one more variant.

#![forbid(unsafe_code)]

mod address;
mod listener;
mod stream;

pub use address::{Address, AddressError};
pub use listener::Listener;
pub use sinew_shm::{ShmOptions, SlabBuf, SlabPool};
pub use stream::{connect, connect_with, ReadHalf, Stream, WriteHalf};

/// Settings of the transports that have any (today: shared memory). The
/// defaults suit most uses; servers and channels take them from their builders.
#[derive(Clone, Debug, Default)]
pub struct TransportOptions {
    /// For `shm://` addresses: ring size, spin before sleeping, handshake
    /// timeout, accepted user ids.
    pub shm: ShmOptions,
}
