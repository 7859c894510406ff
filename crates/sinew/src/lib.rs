//! sinew: one coherent, fast toolkit for the parts of a distributed system to talk.
//!
//! This facade re-exports the layers, so that applications depend on one crate:
//!
//! | module | crate | what it is |
//! |--------|-------|------------|
//! | [`rpc`] | `sinew-rpc` | [`Channel`] (client), [`Server`], [`Status`], streaming, deadlines |
//! | [`transport`] | `sinew-transport` | addresses (`tcp://`, `unix://`), listeners, connectors |
//! | [`wire`] | `sinew-wire` | the wire protocol's frames and codec (see `docs/protocol.md`) |
//!
//! Services are defined in `.proto` files and compiled in `build.rs` with
//! `sinew-build`, which generates a server trait and a typed client that refer to
//! `::sinew::rpc`. A minimal server and client:
//!
//! ```ignore
//! use sinew::prelude::*;
//! use echo::echo_server::{Echo, EchoServer};
//!
//! let server = Server::builder()
//!     .add_service(EchoServer::new(MyEcho))
//!     .bind(["tcp://127.0.0.1:7000"])
//!     .await?;
//! tokio::spawn(server.serve());
//!
//! let client = echo::echo_client::EchoClient::new(Channel::connect("tcp://127.0.0.1:7000").await?);
//! let reply = client.unary_echo(EchoRequest { message: "hi".into() }).await?;
//! ```
//!
//! Features will add optional backends (etcd discovery, NATS messaging, ...); the
//! default build has everything needed for the tour in the README.

#![forbid(unsafe_code)]

pub use sinew_rpc as rpc;
pub use sinew_transport as transport;
pub use sinew_wire as wire;

pub use sinew_rpc::{
    Channel, Client, Code, MetadataMap, Request, Response, Server, Status, Streaming,
};

/// The names most programs need: `use sinew::prelude::*;`.
pub mod prelude {
    pub use sinew_rpc::{
        Address, Channel, Code, IntoRequest, IntoStreamingRequest, MetadataMap, Request, Response,
        Server, Status, Streaming,
    };
}
