//! [`Forward`]: a service that passes every call it gets on to another
//! server, messages untouched.
//!
//! Given to [`ServerBuilder::fallback`](super::ServerBuilder::fallback), it
//! makes a server a front for another: calls to the services the server has
//! are answered there, every other path goes upstream, whatever its shape,
//! over whatever the client service speaks (sinew's protocol on any
//! transport, or gRPC: a sinew front for a grpc-go or grpcio server, or the
//! other way round). Messages stay encoded both ways
//! ([`RawMessage`]); request metadata goes up, response
//! headers and trailing metadata come back, statuses pass through as they
//! are; the deadline travels as for any call a handler makes
//! ([`crate::inherit`]), and a caller that cancels cancels upstream (the
//! forwarded call is dropped with the handler). Client layers on the
//! upstream service apply to every forwarded call: telemetry continues the
//! trace, a service config retries.

use super::call::{self, ServerCall};
use super::service::{Service, ServiceDescriptor};
use crate::call::CallService;
use crate::codec::{Decoder, RawMessage};
use crate::request::{Request, Response};
use crate::status::Status;
use crate::{Client, Streaming};
use futures_core::Stream;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use sinew_wire::Code;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What the fallback service describes: no methods of its own.
static FORWARD: ServiceDescriptor = ServiceDescriptor {
    name: "sinew.Forward",
    methods: &[],
    file_descriptor_set: &[],
};

/// Passes every call on to the server behind `T`: see the module docs.
#[derive(Clone, Debug)]
pub struct Forward<T> {
    upstream: Client<T>,
}

impl<T: CallService> Forward<T> {
    /// Forwards to `upstream` (a [`Channel`](crate::Channel), a balanced
    /// channel, or layers around one).
    pub fn new(upstream: T) -> Forward<T> {
        Forward {
            upstream: Client::new(upstream),
        }
    }
}

impl<T> Service for Forward<T>
where
    T: CallService + Sync,
{
    fn descriptor(&self) -> &'static ServiceDescriptor {
        &FORWARD
    }

    fn call(&self, _method: usize, call: ServerCall) -> BoxFuture<'static, Status> {
        let upstream = self.upstream.clone();
        Box::pin(call::raw(call, move |path, request| {
            forward(upstream, path, request)
        }))
    }
}

async fn forward<T: CallService>(
    upstream: Client<T>,
    path: String,
    request: Request<Streaming<RawMessage>>,
) -> Result<Response<Upstream>, Status> {
    let request = request.map(|messages| Requests { messages });
    let response = upstream
        .bidirectional_with(path, request, Decoder::raw())
        .await?;
    let (metadata, messages) = response.into_parts();
    Ok(Response::from_parts(
        metadata,
        Upstream {
            messages,
            ended: false,
        },
    ))
}

/// The caller's messages on their way up. A failed request stream (the
/// caller's framing broke) never ends cleanly: the forwarded call is
/// cancelled with the handler instead, so upstream never takes a truncated
/// stream for a whole one.
struct Requests {
    messages: Streaming<RawMessage>,
}

impl Stream for Requests {
    type Item = RawMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RawMessage>> {
        match std::task::ready!(self.messages.poll_next_unpin(cx)) {
            Some(Ok(message)) => Poll::Ready(Some(message)),
            None => Poll::Ready(None),
            Some(Err(_)) => Poll::Pending,
        }
    }
}

/// The upstream's messages on their way back, then its trailing metadata
/// as an OK status (how [`call::raw`] ends a call with trailers).
pub struct Upstream {
    messages: Streaming<RawMessage>,
    ended: bool,
}

impl Stream for Upstream {
    type Item = Result<RawMessage, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<RawMessage, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match std::task::ready!(self.messages.poll_next_unpin(cx)) {
            Some(item) => Poll::Ready(Some(item)),
            None => {
                self.ended = true;
                let mut end = Status::new(Code::Ok, "");
                if let Some(trailers) = self.messages.trailers() {
                    *end.metadata_mut() = trailers.clone();
                }
                Poll::Ready(Some(Err(end)))
            }
        }
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}
