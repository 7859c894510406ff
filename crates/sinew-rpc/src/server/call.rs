//! One call on the server, and the four call shapes that drive a handler.
//!
//! Generated code calls [`unary`], [`server_streaming`], [`client_streaming`] or
//! [`bidirectional`] with the [`ServerCall`] and the user's handler; each reads the
//! request(s), runs the handler, and sends the response(s) and the final status.
//! Every path ends the call with a status, and resolves to it: a handler error
//! becomes the trailers' status, a malformed request `INVALID_ARGUMENT`.
//!
//! [`ServerCall`] is also what server layers see of a call before it reaches
//! its handler: path, metadata (mutable), deadline, the peer, and per-call
//! extensions that the handler receives in its [`Request`].

use super::external::ExternalIo;
use super::Peer;
use crate::call::tally::{count_received, count_sent};
use crate::call::{Extensions, MessageTally};
use crate::codec::Decoder;
use crate::connection::stream::{Outgoing, StreamRef};
use crate::connection::Inbound;
use crate::request::{Request, Response};
use crate::status::Status;
use crate::streaming::Streaming;
use futures_core::Stream;
use futures_util::StreamExt;
use sinew_wire::{Code, MetadataMap};
use std::future::{poll_fn, Future};
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
    /// How long a single request may take to arrive (the server's
    /// `request_timeout`).
    fn request_timeout(&self) -> Duration {
        match self {
            CallIo::Sinew(stream) => stream.shared.limits.request_timeout,
            CallIo::External(io) => io.request_timeout,
        }
    }

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

    /// Ends the call with `status` at once, unless it already has one.
    pub(crate) fn end(&self, status: &Status) {
        match self {
            CallIo::Sinew(stream) => stream.end(status),
            CallIo::External(io) => io.finish(status.clone()),
        }
    }

    /// Ready with the reason once the call is over from the outside: the
    /// client cancelled it (or went away), or the server's drain deadline
    /// ended it. Otherwise the task is woken when that happens.
    pub(crate) fn poll_cancelled(&self, cx: &mut Context<'_>) -> Poll<Status> {
        match self {
            CallIo::Sinew(stream) => stream.poll_cancelled(cx),
            CallIo::External(io) => io.poll_cancelled(cx),
        }
    }
}

/// A call accepted by the server: what server layers see of it, then what its
/// [`Service`](super::Service) runs (whether it came on a sinew connection or
/// through a protocol extension, [`super::external`]).
pub struct ServerCall {
    pub(crate) io: CallIo,
    /// `/package.Service/Method`, as the client sent it.
    pub(crate) path: bytes::Bytes,
    pub(crate) metadata: MetadataMap,
    pub(crate) timeout: Option<Duration>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) extensions: Extensions,
    pub(crate) peer: Option<Arc<Peer>>,
    /// The service and method that run the call, or the status it is
    /// refused with.
    pub(crate) route: Result<(Arc<dyn super::Service>, usize), Status>,
    /// The single request message, when it arrived whole (with the end of the
    /// request stream) in the same read as the call's HEADERS: the reader hands
    /// it over directly, so the handler need not take the lock to receive it.
    pub(crate) prefetched: Option<bytes::Bytes>,
    /// What the handler's own calls leave of the deadline
    /// ([`ServerBuilder::deadline_margin`](super::ServerBuilder::deadline_margin)).
    pub(crate) deadline_margin: Duration,
    /// Counts the messages both ways, once a layer asked
    /// ([`ServerCall::tally_messages`]).
    pub(crate) tally: Option<Arc<MessageTally>>,
}

impl std::fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCall")
            .field("path", &self.path())
            .field("metadata", &self.metadata)
            .field("timeout", &self.timeout)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

fn ok_status() -> Status {
    Status::new(Code::Ok, "")
}

impl ServerCall {
    /// Request metadata.
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// Request metadata, mutable (a layer adding or removing entries before the
    /// handler sees them).
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    /// The path the client called, `/package.Service/Method`.
    pub fn path(&self) -> &str {
        std::str::from_utf8(&self.path).unwrap_or("")
    }

    /// The method that runs the call, as its service describes it (its
    /// shape, its message types): `None` when no service offers the path,
    /// or a fallback service (a proxy) without a method list serves it.
    pub fn method(&self) -> Option<&'static super::MethodDescriptor> {
        let (service, method) = self.route.as_ref().ok()?;
        service.descriptor().methods.get(*method)
    }

    /// The time the caller allowed, as received.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// When the server stops the call (`DEADLINE_EXCEEDED`), if the caller set
    /// a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sets when the server stops the call: a layer enforcing a server-side
    /// limit shortens it (the handler's [`Request::timeout`] stays what the
    /// caller sent).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Per-call extensions, handed to the handler in its request.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Per-call extensions, mutable (a layer passing what it learnt, an
    /// authenticated user say, to the handler).
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The protocol that carried the call: `"sinew"` for sinew's own (over
    /// any transport), else the name of the protocol extension that decoded
    /// it (`"grpc"` for gRPC).
    pub fn protocol(&self) -> &'static str {
        match &self.io {
            CallIo::Sinew(_) => "sinew",
            CallIo::External(io) => io.protocol,
        }
    }

    /// Who called: the peer's address and process, as the transport knows
    /// them (`None` for an in-process caller).
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_deref()
    }

    /// Resolves, with the reason, once the call is over from the outside:
    /// the client cancelled it or went away (`CANCELLED`), or a graceful
    /// shutdown's drain deadline ended it (`UNAVAILABLE`). Handlers see this
    /// by being dropped; a layer that makes a call wait before its handler
    /// runs (a queue, a limiter, an injected delay) races it, so that a call
    /// nobody waits for any more leaves at once. (The deadline is
    /// [`ServerCall::deadline`].)
    pub fn cancelled(&self) -> impl Future<Output = Status> + Send + 'static {
        let io = self.io.clone();
        poll_fn(move |cx| io.poll_cancelled(cx))
    }

    /// Counts this call's messages, both ways, from now on (the same
    /// tally to every layer that asks): for a layer that reports sizes,
    /// read once the call ended. Nothing is counted for calls no layer
    /// asked about.
    pub fn tally_messages(&mut self) -> Arc<MessageTally> {
        self.tally.get_or_insert_with(Arc::default).clone()
    }

    /// Reads the single request message of a unary or server-streaming call.
    async fn single_request<Req: prost::Message + Default>(&mut self) -> Result<Req, Status> {
        if let Some(bytes) = self.prefetched.take() {
            count_received(&self.tally, bytes.len());
            return Req::decode(bytes).map_err(|error| {
                Status::invalid_argument(format!("request is not a valid message: {error}"))
            });
        }
        let io = &self.io;
        let receive = async {
            let mut message = None;
            loop {
                match poll_fn(|cx| io.poll_recv(cx)).await {
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
            message.ok_or_else(|| {
                Status::invalid_argument("expected exactly one request message, got none")
            })
        };
        let limit = self.io.request_timeout();
        let bytes = tokio::time::timeout(limit, receive).await.map_err(|_| {
            if let CallIo::Sinew(stream) = &self.io {
                let limit = crate::server::stats::Limit::RequestTimeout;
                stream.shared.activity().limit_hit(limit);
            }
            Status::deadline_exceeded(format!(
                "the request did not arrive within {limit:?} of the call's headers \
                 (the server's request timeout)"
            ))
        })??;
        count_received(&self.tally, bytes.len());
        Req::decode(bytes).map_err(|error| {
            Status::invalid_argument(format!("request is not a valid message: {error}"))
        })
    }

    fn request<T>(&mut self, message: T) -> Request<T> {
        let mut request = Request::from_parts(
            std::mem::take(&mut self.metadata),
            self.timeout,
            std::mem::take(&mut self.extensions),
            message,
        );
        request.set_peer(self.peer.take());
        request
    }

    /// Ends the call with `status` and no message; resolves to the status the
    /// call ended with (`status`, or why it could not be sent).
    pub async fn finish(self, status: Status) -> Status {
        let sent = self
            .io
            .send::<()>(Outgoing {
                trailers: Some(&status),
                ..Outgoing::default()
            })
            .await;
        match sent {
            Ok(()) => status,
            Err(failure) => failure,
        }
    }

    /// Sends the one response of a unary or client-streaming call, then OK.
    async fn respond<Resp: prost::Message>(self, result: Result<Response<Resp>, Status>) -> Status {
        let response = match result {
            Ok(response) => response,
            Err(status) => return self.finish(status).await,
        };
        let (metadata, message) = response.into_parts();
        let size = message.encoded_len();
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
        match sent {
            Ok(()) => {
                count_sent(&self.tally, size);
                ok
            }
            // Too large for the client, typically; anything else means the
            // stream is gone and this is a no-op.
            Err(status) => self.finish(status).await,
        }
    }

    /// Sends response headers now, then every message of `responses`, then the status.
    async fn respond_stream<Resp, S>(self, result: Result<Response<S>, Status>) -> Status
    where
        Resp: prost::Message,
        S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    {
        let response = match result {
            Ok(response) => response,
            Err(status) => return self.finish(status).await,
        };
        let (metadata, responses) = response.into_parts();
        if let Err(status) = self
            .io
            .send::<Resp>(Outgoing {
                headers: Some(&metadata),
                ..Outgoing::default()
            })
            .await
        {
            return status; // the stream is gone (cancelled, connection lost)
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
                    if sent.is_ok() {
                        count_sent(&self.tally, message.encoded_len());
                    }
                    if let Err(status) = sent {
                        if status.code() == Code::ResourceExhausted {
                            return self.finish(status).await;
                        }
                        return status; // the stream is gone (cancelled, connection lost)
                    }
                }
                // An OK status at the end carries trailing metadata (see `raw`).
                Err(status) => return self.finish(status).await,
            }
        }
        self.finish(ok_status()).await
    }
}

/// Drives a unary handler: one request in, one response out.
pub async fn unary<Req, Resp, F, Fut>(mut call: ServerCall, handler: F) -> Status
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
    call.respond(result).await
}

/// Drives a server-streaming handler: one request in, a stream of responses out.
pub async fn server_streaming<Req, Resp, S, F, Fut>(mut call: ServerCall, handler: F) -> Status
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
    call.respond_stream(result).await
}

/// Drives a client-streaming handler: a stream of requests in, one response out.
pub async fn client_streaming<Req, Resp, F, Fut>(mut call: ServerCall, handler: F) -> Status
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    F: FnOnce(Request<Streaming<Req>>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let requests = Streaming::server(call.io.clone(), Decoder::prost(), call.tally.clone());
    let request = call.request(requests);
    let result = handler(request).await;
    call.respond(result).await
}

/// Drives a bidirectional handler: streams both ways.
pub async fn bidirectional<Req, Resp, S, F, Fut>(mut call: ServerCall, handler: F) -> Status
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    F: FnOnce(Request<Streaming<Req>>) -> Fut,
    Fut: Future<Output = Result<Response<S>, Status>>,
{
    let requests = Streaming::server(call.io.clone(), Decoder::prost(), call.tally.clone());
    let request = call.request(requests);
    let result = handler(request).await;
    call.respond_stream(result).await
}

/// Drives a call whose messages stay encoded, for services that forward calls
/// (proxies, protocol bridges) rather than handle them. The handler gets the
/// path and the request stream as bytes, and returns response messages as bytes.
/// The response stream may end with `Err(status)`; a final status with code OK
/// ends the call successfully with that status's trailing metadata.
pub async fn raw<S, F, Fut>(mut call: ServerCall, handler: F) -> Status
where
    S: Stream<Item = Result<crate::RawMessage, Status>> + Send + 'static,
    F: FnOnce(String, Request<Streaming<crate::RawMessage>>) -> Fut,
    Fut: Future<Output = Result<Response<S>, Status>>,
{
    let path = call.path().to_owned();
    let mut requests = Streaming::server(call.io.clone(), Decoder::raw(), call.tally.clone());
    if let Some(bytes) = call.prefetched.take() {
        count_received(&call.tally, bytes.len());
        requests.push_front(crate::RawMessage(bytes));
    }
    let request = call.request(requests);
    let result = handler(path, request).await;
    call.respond_stream(result).await
}

/// Ends a call to a method the service does not implement.
pub async fn unimplemented(call: ServerCall) -> Status {
    call.finish(Status::unimplemented("method not implemented"))
        .await
}
