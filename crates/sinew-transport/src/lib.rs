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
pub use stream::{connect, ReadHalf, Stream, WriteHalf};
