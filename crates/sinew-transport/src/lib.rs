//! Where sinew's bytes travel: addresses, listeners and connected streams.
//!
//! An [`Address`] names an endpoint as a URL (`tcp://127.0.0.1:7000`,
//! `tls://api.example.org:7443`, `unix:///run/app.sock`, `shm:///run/app.sock`).
//! [`Listener::bind`] turns one into a listener, whose [`Incoming`] connections
//! become [`Stream`]s once their transport's handshake is done (TLS: [`tls`]), and
//! [`connect`] into a connected [`Stream`]; a stream splits into owned read and
//! write halves so that a connection's reader and writer can run as two tasks
//! without a lock between them. A stream tells what its transport proved about
//! the peer: a [`PeerIdentity`] (a verified client certificate, or a local
//! process's credentials).
//!
//! This crate moves bytes and knows nothing of frames or calls: the protocol is in
//! `sinew-wire` and `sinew-rpc`. Transports are closed enums rather than trait
//! objects, so the hot path pays for no virtual call and no boxing; shared
//! memory (`sinew-shm`, the one crate with `unsafe` code) is one more variant.

#![forbid(unsafe_code)]

mod address;
pub mod identity;
mod listener;
mod stream;
pub mod tls;

pub use address::{Address, AddressError};
pub use identity::{CertificateIdentity, PeerCredentials, PeerIdentity};
pub use listener::{Incoming, Listener};
pub use sinew_shm::{RingGauge, ShmOptions, SlabBuf, SlabGauge, SlabPool};
pub use stream::{connect, connect_with, ReadHalf, Stream, TlsStream, WriteHalf};

/// Settings of the transports that have any (shared memory, TLS). The
/// defaults suit most uses; servers and channels take them from their builders.
#[derive(Clone, Debug, Default)]
pub struct TransportOptions {
    /// For `shm://` addresses: ring size, spin before sleeping, handshake
    /// timeout, accepted user ids.
    pub shm: ShmOptions,
    /// For connecting to `tls://` addresses; without it, the system's root
    /// certificates and no client certificate.
    pub client_tls: Option<tls::ClientTls>,
    /// For listening on `tls://` addresses, which need it.
    pub server_tls: Option<tls::ServerTls>,
}
