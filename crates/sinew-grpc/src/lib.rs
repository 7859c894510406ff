//! The gRPC bridge: every sinew service is also a real gRPC service.
//!
//! [`GrpcProtocol`] is a [`Protocol`](sinew_rpc::server::Protocol) extension:
//! register it on a server and the same listeners (TCP or Unix socket) serve
//! gRPC over HTTP/2 to any gRPC client, in any language, next to sinew's own
//! protocol. The first bytes of a connection decide: sinew's preface starts with
//! 0x89, HTTP/2's with `PRI * HTTP/2.0`.
//!
//! ```no_run
//! # async fn example(service: impl sinew_rpc::Service) -> std::io::Result<()> {
//! let server = sinew_rpc::Server::builder()
//!     .add_service(service)
//!     .add_protocol(sinew_grpc::GrpcProtocol::default())
//!     .bind(["tcp://127.0.0.1:7000"])
//!     .await?;
//! server.serve().await;
//! # Ok(()) }
//! ```
//!
//! The bridge translates, it does not reimplement: each gRPC request is handed
//! to the server's own services with
//! [`LocalConnector::dispatch`](sinew_rpc::server::LocalConnector::dispatch),
//! its body as a stream of encoded messages, and the call's response events
//! become the HTTP/2 response (headers, framed messages, status trailers). So
//! there is one implementation of every service and of every rule (generated
//! code, call drivers, deadlines from `grpc-timeout`, panics, cancellation when
//! the client resets the stream, the drain deadline), whichever protocol the
//! call came by, and no second hop: a unary gRPC call runs in hyper's task for
//! the request, as in tonic. hyper does the HTTP/2; this crate writes no HTTP/2
//! of its own.
//!
//! What gRPC's wire spec asks of a server, and where it is done:
//! * `content-type` other than `application/grpc*`: HTTP 415 ([`server`]);
//! * `grpc-timeout` parsed into the call's deadline; a malformed one is
//!   `INVALID_ARGUMENT` ([`metadata`]);
//! * metadata: ASCII headers, and `-bin` headers base64-decoded ([`metadata`]);
//! * messages: the 5-byte prefix, gzip (`grpc-encoding`), size limits
//!   (`RESOURCE_EXHAUSTED`) ([`framing`]);
//! * status in trailers (`grpc-status`, percent-encoded `grpc-message`,
//!   `grpc-status-details-bin`), trailers-only for calls that fail before any
//!   message ([`server`]);
//! * HTTP/1.x on the shared port: a clear HTTP 505, not a hang ([`server`]).

#![forbid(unsafe_code)]

pub mod client;
mod coalesce;
pub mod framing;
pub mod metadata;
pub mod server;

pub use client::connect;
pub use server::GrpcProtocol;
