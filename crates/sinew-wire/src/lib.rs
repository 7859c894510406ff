//! The sinew wire protocol: the bytes two sinew peers exchange, and nothing else.
//!
//! This crate turns bytes into [`Frame`]s and frames into bytes. It does no I/O,
//! spawns no task and keeps no connection state: flow-control accounting, stream
//! bookkeeping and call semantics live in `sinew-rpc`, which drives this codec over
//! a socket. Keeping the codec pure makes it easy to test, to fuzz (see `fuzz/`
//! beside this crate) and to reimplement in another language from
//! `docs/protocol.md`, which is the normative description of everything here.
//!
//! A connection is a [`Preface`] from each side followed by frames:
//!
//! ```text
//! client                                   server
//!   | -- preface (magic, version, settings) -> |
//!   | <- preface (magic, version, settings) -- |
//!   | -- HEADERS  stream 1 (method, deadline) ->|
//!   | -- DATA     stream 1 END_STREAM --------> |
//!   | -- HEADERS  stream 3 ------------------>  |   many calls share one connection
//!   | <- DATA     stream 3 ------------------   |   and answers may come out of order
//!   | <- TRAILERS stream 3 (status) ----------  |
//!   | <- DATA     stream 1 ------------------   |
//!   | <- TRAILERS stream 1 (status) ----------  |
//! ```
//!
//! Decoding follows the tokio-util codec contract: [`FrameDecoder::decode`] returns
//! `Ok(None)` when the buffer does not hold a whole frame yet, `Ok(Some(frame))`
//! when it consumed one, and `Err` for bytes that can never become a valid frame,
//! after which the connection must be closed with the error's [`Reason`].
//! Encoding writes straight into the caller's write buffer (see [`encode`]) so that
//! a message is serialized once, in place, next to the frames of other calls.

#![forbid(unsafe_code)]

mod code;
mod decode;
pub mod encode;
mod error;
mod frame;
mod metadata;
mod preface;

pub use code::Code;
pub use decode::FrameDecoder;
pub use error::{Reason, WireError};
pub use frame::{
    flags, flow_cost, Data, Frame, FrameHeader, FrameKind, GoAway, HalfClose, Headers, Ping, Reset,
    Trailers, WindowUpdate, DATA_FRAME_COST, FRAME_HEADER_LEN,
};
pub use metadata::{InvalidMetadata, MetadataMap};
pub use preface::{Preface, Settings, MAGIC, PROTOCOL_VERSION};
