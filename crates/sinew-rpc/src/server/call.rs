//! One call on the server, and the four call shapes that drive a handler.
//!
//! Generated code calls [`unary`], [`server_streaming`], [`client_streaming`] or
//! [`bidirectional`] with the [`ServerCall`] and the user's handler; each reads the
//! request(s), runs the handler, and sends the response(s) and the final status.
//! Every path ends the call with a status: a handler error becomes the trailers'
//! status, a malformed request `INVALID_ARGUMENT`.

use super::external::ExternalIo;
use super::Service;
use crate::codec::Decoder;
use crate::connection::stream::{Outgoing, StreamRef};
use crate::connection::Inbound;
use crate::request::{Request, Response};
use crate::status::Status;
use crate::streaming::Streaming;
use futures_core::Stream;
use futures_util::{FutureExt, StreamExt};
use sinew_wire::{Code, MetadataMap};
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// The two ends a call can have: a stream of a sinew connection, or a call a
/// protocol extension decoded itself (see [`super::external`]).
#[derive(Clone, Debug)]
pub(crate) enum CallIo {
    Sinew(StreamRef),
    External(Arc<ExternalIo>),
}

impl CallIo {
    /// The next request item.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Inbound> {
        match self {
            CallIo::Sinew(stream) => stream.poll_recv(cx),
            CallIo::External(io) => io.poll_recv(cx),
        }
    }

    /// Sends response headers, a message and/or the status, under flow control.
    pub(crate) async fn send<M: prost::Message>(
        &self,
        send: Outgoing<'_, M>,
    ) -> Result<(), Status> {
        match self {
            CallIo::Sinew(stream) => stream.send(send).await,
            CallIo::External(io) => io.send(send).await,
        }
    }
}

/// Runs a service's handler for one call under the call's deadline, catching
/// panics. Returns the status to end the call with when the handler could not
/// (it panicked, or the deadline passed first); the caller sends it unless the
/// call already has one.
pub(crate) async fn run_handler(
    service: &Arc<dyn Service>,
    method: usize,
    call: ServerCall,
    deadline: Option<Instant>,
) -> Option<Status> {
    let handler = AssertUnwindSafe(service.call(method, call)).catch_unwind();
    let outcome = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, handler).await,
        None => Ok(handler.await),
    };
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(_panic)) => Some(Status::internal("handler panicked")),
        Err(_elapsed) => Some(Status::deadline_exceeded(
            "deadline exceeded while the server was handling the call",
        )),
    }
}

/// A call accepted by the server, handed to a [`Service`] (by a
/// sinew connection, or by a protocol extension through [`super::external`]).
#[derive(Debug)]
pub struct ServerCall {
    pub(crate) io: CallIo,
    /// `/package.Service/Method`, as the client sent it.
    pub(crate) path: bytes::Bytes,
    pub(crate) metadata: MetadataMap,
    pub(crate) timeout: Option<Duration>,
    /// The single request message, when it arrived whole (with the end of the
    /// request stream) in the same read as the call's HEADERS: the reader hands
    /// it over directly, so the handler need not take the lock to receive it.
    pub(crate) prefetched: Option<bytes::Bytes>,
}

fn ok_status() -> Status {
    Status::new(Code::Ok, "")
}

impl ServerCall {
    /// Request metadata.
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// The path the client called, `/package.Service/Method`.
    pub fn path(&self) -> &str {
        std::str::from_utf8(&self.path).unwrap_or("")
    }

    /// Reads the single request message of a unary or server-streaming call.
    async fn single_request<Req: prost::Message + Default>(&mut self) -> Result<Req, Status> {
        if let Some(bytes) = self.prefetched.take() {
            return Req::decode(bytes).map_err(|error| {
                Status::invalid_argument(format!("request is not a valid message: {error}"))
            });
        }
        let mut message = None;
        loop {
            match poll_fn(|cx| self.io.poll_recv(cx)).await {
                Inbound::Message(bytes) => {
                    if message.is_some() {
                        return Err(Status::invalid_argument(
                            "expected exactly one request message, got more",
                        ));
                    }
                    message = Some(bytes);
                }
                Inbound::End => break,
                Inbound::Reset(status) | Inbound::Trailers(status) => return Err(status),
                Inbound::Headers(_) => {}
            }
        }
        let bytes = message.ok_or_else(|| {
            Status::invalid_argument("expected exactly one request message, got none")
        })?;
        Req::decode(bytes).map_err(|error| {
            Status::invalid_argument(format!("request is not a valid message: {error}"))
        })
    }

    fn request<T>(&mut self, message: T) -> Request<T> {
        Request::from_parts(std::mem::take(&mut self.metadata), self.timeout, message)
    }

    /// Ends the call with `status` and no message.
    pub async fn finish(self, status: Status) {
        let _ = self
            .io
            .send::<()>(Outgoing {
                trailers: Some(&status),
                ..Outgoing::default()
            })
            .await;
    }

    /// Sends the one response of a unary or client-streaming call, then OK.
    async fn respond<Resp: prost::Message>(self, result: Result<Response<Resp>, Status>) {
        let response = match result {
            Ok(response) => response,
            Err(status) => return self.finish(status).await,
        };
        let (metadata, message) = response.into_parts();
        let ok = ok_status();
        let sent = self
            .io
            .send(Outgoing {
                headers: (!metadata.is_empty()).then_some(&metadata),
                message: Some(&message),
                end_stream: false,
                trailers: Some(&ok),
            })
            .await;
        if let Err(status) = sent {
            // Too large for the client, typically; anything else means the
            // stream is gone and this is a no-op.
            self.finish(status).await;
        }
    }

    /// Sends response headers now, then every message of `responses`, then the status.
    async fn respond_stream<Resp, S>(self, result: Result<Response<S>, Status>)
    where
        Resp: prost::Message,
        S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    {
        let response = match result {
            Ok(response) => response,
            Err(status) => return self.finish(status).await,
        };
        let (metadata, responses) = response.into_parts();
        if self
            .io
            .send::<Resp>(Outgoing {
                headers: Some(&metadata),
                ..Outgoing::default()
            })
            .await
            .is_err()
        {
            return;
        }
        let mut responses = std::pin::pin!(responses);
        while let Some(item) = responses.next().await {
            match item {
                Ok(message) => {
                    let sent = self
                        .io
                        .send(Outgoing {
                            message: Some(&message),
                            ..Outgoing::default()
                        })
                        .await;
                    if let Err(status) = sent {
                        if status.code() == Code::ResourceExhausted {
                            return self.finish(status).await;
                        }
                        return; // the stream is gone (cancelled, connection lost)
                    }
                }
                // An OK status at the end carries trailing metadata (see `raw`).
                Err(status) => return self.finish(status).await,
            }
        }
        self.finish(ok_status()).await;
    }
}

/// Drives a unary handler: one request in, one response out.
pub async fn unary<Req, Resp, F, Fut>(mut call: ServerCall, handler: F)
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let message = match call.single_request::<Req>().await {
        Ok(message) => message,
        Err(status) => return call.finish(status).await,
    };
    let request = call.request(message);
    let result = handler(request).await;
    call.respond(result).await;
}

/// Drives a server-streaming handler: one request in, a stream of responses out.
pub async fn server_streaming<Req, Resp, S, F, Fut>(mut call: ServerCall, handler: F)
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<S>, Status>>,
{
    let message = match call.single_request::<Req>().await {
        Ok(message) => message,
        Err(status) => return call.finish(status).await,
    };
    let request = call.request(message);
    let result = handler(request).await;
    call.respond_stream(result).await;
}

/// Drives a client-streaming handler: a stream of requests in, one response out.
pub async fn client_streaming<Req, Resp, F, Fut>(mut call: ServerCall, handler: F)
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    F: FnOnce(Request<Streaming<Req>>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let requests = Streaming::server(call.io.clone(), Decoder::prost());
    let request = call.request(requests);
    let result = handler(request).await;
    call.respond(result).await;
}

/// Drives a bidirectional handler: streams both ways.
pub async fn bidirectional<Req, Resp, S, F, Fut>(mut call: ServerCall, handler: F)
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    F: FnOnce(Request<Streaming<Req>>) -> Fut,
    Fut: Future<Output = Result<Response<S>, Status>>,
{
    let requests = Streaming::server(call.io.clone(), Decoder::prost());
    let request = call.request(requests);
    let result = handler(request).await;
    call.respond_stream(result).await;
}

/// Drives a call whose messages stay encoded, for services that forward calls
/// (proxies, protocol bridges) rather than handle them. The handler gets the
/// path and the request stream as bytes, and returns response messages as bytes.
/// The response stream may end with `Err(status)`; a final status with code OK
/// ends the call successfully with that status's trailing metadata.
pub async fn raw<S, F, Fut>(mut call: ServerCall, handler: F)
where
    S: Stream<Item = Result<crate::RawMessage, Status>> + Send + 'static,
    F: FnOnce(String, Request<Streaming<crate::RawMessage>>) -> Fut,
    Fut: Future<Output = Result<Response<S>, Status>>,
{
    let path = call.path().to_owned();
    let mut requests = Streaming::server(call.io.clone(), Decoder::raw());
    if let Some(bytes) = call.prefetched.take() {
        requests.push_front(crate::RawMessage(bytes));
    }
    let request = call.request(requests);
    let result = handler(path, request).await;
    call.respond_stream(result).await;
}

/// Ends a call to a method the service does not implement.
pub async fn unimplemented(call: ServerCall) {
    call.finish(Status::unimplemented("method not implemented"))
        .await;
}
