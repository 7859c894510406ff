//! sinew RPC: calls over sinew's multiplexed wire protocol.
//!
//! * [`Channel`]: the client side. Cheap to clone, it holds a small pool of
//!   multiplexed connections to one address, connects lazily, reconnects with
//!   backoff, and carries every call kind: unary, server streaming, client
//!   streaming and bidirectional.
//! * [`Server`]: serves any number of [`Service`]s on any number of listeners
//!   (`tcp://`, `unix://`), one task per connection and one per call, with
//!   per-connection limits and graceful shutdown that drains calls in flight.
//! * [`Status`], [`Request`], [`Response`], [`Streaming`]: the call-level types,
//!   shaped like tonic's so that code moves easily between the two.
//!
//! Services are normally not written against this crate directly: `sinew-build`
//! generates a typed server trait and client from a `.proto` file, and the
//! generated code uses [`codegen`]. The bytes on the wire are described in
//! `docs/protocol.md` and encoded by `sinew-wire`; this crate owns connection
//! state, flow control, deadlines and cancellation.

#![forbid(unsafe_code)]

pub mod call;
pub mod client;
mod codec;
pub mod codegen;
mod connection;
pub mod inherit;
pub mod local;
mod request;
pub mod server;
mod status;
mod streaming;

pub use call::{CallRequest, CallResponse, CallService};
pub use client::{Channel, ChannelBuilder, Client};
pub use codec::{Decoder, RawMessage};
pub use connection::Keepalive;
pub use inherit::inherited_deadline;
pub use request::{IntoRequest, IntoStreamingRequest, Request, Response};
pub use server::{Server, ServerBuilder, ServerHandle, Service, ShutdownReport};
pub use sinew_transport::Address;
pub use sinew_wire::{Code, MetadataMap};
pub use status::Status;
pub use streaming::Streaming;

/// A boxed stream of messages, or of the failure that ends it: the easy type
/// for a streaming method's response stream.
pub type BoxStream<T> =
    std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<T, Status>> + Send>>;
