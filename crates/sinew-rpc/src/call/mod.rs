//! The call as one type-erased value, so that everything around a call is a
//! tower layer.
//!
//! A typed client encodes its request into a [`CallRequest`] (path, metadata,
//! deadline, extensions, and a body of one [`Payload`] or a stream of them)
//! and hands it to a [`CallService`]: a `tower::Service<CallRequest>` whose
//! response is a [`CallResponse`] (headers, then a [`ResponseBody`] of
//! messages ending with the final status). [`Channel`](crate::Channel)
//! implements it over sinew's protocol, `sinew_grpc`'s client over gRPC, and
//! any stack of tower layers around either does too:
//!
//! ```no_run
//! # async fn example() -> Result<(), sinew_rpc::Status> {
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! let channel = sinew_rpc::Channel::connect("tcp://127.0.0.1:7000").await?;
//! let service = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(1))
//!     .concurrency_limit(64)
//!     .service(channel);
//! let client = sinew_rpc::client::Client::new(service);
//! # let _ = client; Ok(()) }
//! ```
//!
//! (A generated `EchoClient::new(service)` takes the same stack.) Layers see
//! every call the same way whatever its shape (unary or streaming) and
//! whatever carries it (TCP, a Unix socket, shared memory, gRPC).
//!
//! Requests with one message are cheap to clone ([`CallRequest::try_clone`]):
//! the payload is shared and encoded once, so retries and hedges resend it
//! without re-encoding. Failures are [`Status`]es; errors of other types that
//! tower layers return (a timeout layer's `Elapsed`, a load shedder's
//! `Overloaded`) become statuses through [`Status::from_error`].
//!
//! This module holds the values; `client` holds the services that carry them
//! and the typed-call helper, `server` the other side.

mod attempts;
mod payload;
mod request;
mod response;
pub(crate) mod tally;

pub use attempts::{Attempts, Destination};
pub use payload::Payload;
pub use request::{
    CallRequest, CallRequestParts, Extensions, Idempotency, MethodPath, PayloadStream, RequestBody,
};
pub use response::{CallResponse, ResponseBody, ResponseFrame};
pub use tally::MessageTally;

use crate::status::Status;
use std::future::Future;
use std::task::{Context, Poll};

/// An error of any type, as tower layers return them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A `tower::Service` that carries calls: takes a [`CallRequest`], answers
/// with a [`CallResponse`]. Implemented for every such service (a
/// [`Channel`](crate::Channel), the gRPC client, a stack of layers around
/// them) whose error converts to a [`BoxError`]; not implemented by hand.
///
/// `Clone` because typed clients take `&self`: each call clones the service
/// and waits for that clone to be ready, as tower asks of shared services.
pub trait CallService: Clone + Send + 'static {
    /// The service's error (a [`Status`] for sinew's own services).
    type Error: Into<BoxError>;
    /// The future of one call.
    type Future: Future<Output = Result<CallResponse, Self::Error>> + Send;

    /// `tower::Service::poll_ready`.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;

    /// `tower::Service::call`.
    fn call(&mut self, request: CallRequest) -> Self::Future;
}

impl<S> CallService for S
where
    S: tower::Service<CallRequest, Response = CallResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        tower::Service::poll_ready(self, cx)
    }

    fn call(&mut self, request: CallRequest) -> S::Future {
        tower::Service::call(self, request)
    }
}

/// Converts a call service's error into the status the caller gets.
pub(crate) fn into_status(error: impl Into<BoxError>) -> Status {
    Status::from_error(error.into())
}
