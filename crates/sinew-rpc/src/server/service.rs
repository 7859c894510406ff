//! The [`Service`] trait that generated servers implement, and its descriptors.

use super::call::ServerCall;
use crate::status::Status;
use futures_util::future::BoxFuture;

/// The four shapes of a method, as in gRPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    Bidirectional,
}

/// One method of a service, as generated from the `.proto`.
#[derive(Debug)]
pub struct MethodDescriptor {
    /// Method name as in the `.proto` (`UnaryEcho`).
    pub name: &'static str,
    /// Full path on the wire (`/grpc.examples.echo.Echo/UnaryEcho`).
    pub path: &'static str,
    /// Its call shape.
    pub kind: MethodKind,
    /// Fully-qualified protobuf input type (`grpc.examples.echo.EchoRequest`).
    pub input_type: &'static str,
    /// Fully-qualified protobuf output type.
    pub output_type: &'static str,
}

/// A service, as generated from the `.proto`.
#[derive(Debug)]
pub struct ServiceDescriptor {
    /// Fully-qualified service name (`grpc.examples.echo.Echo`).
    pub name: &'static str,
    /// Its methods; a method's index here is the index passed to [`Service::call`].
    pub methods: &'static [MethodDescriptor],
    /// Encoded `google.protobuf.FileDescriptorSet` of the `.proto` files that define
    /// the service and their imports (for server reflection).
    pub file_descriptor_set: &'static [u8],
}

/// A service a [`Server`](super::Server) can serve: a descriptor plus a dispatch
/// function. Implemented by the code `sinew-build` generates; implement it by hand
/// only for dynamic services (proxies, gateways).
pub trait Service: Send + Sync + 'static {
    /// What the service offers.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Runs method number `method` (an index into the descriptor's methods) for one
    /// call. The future must end the call (the helpers in [`super::call`] do) and
    /// resolves to the status it ended with; if it ends without sending one the
    /// server ends the call with `INTERNAL`.
    fn call(&self, method: usize, call: ServerCall) -> BoxFuture<'static, Status>;
}
