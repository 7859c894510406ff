//! [`Client`]: typed calls over any call service.
//!
//! The four call shapes of gRPC, with messages encoded and decoded around the
//! type-erased [`CallRequest`] and [`CallResponse`]. Generated clients wrap one;
//! tools that learn message types at run time (the `sinew` CLI) use it with a
//! [`Decoder`] of their own.

use super::Channel;
use crate::call::{
    into_status, CallRequest, CallResponse, CallService, MethodPath, Payload, RequestBody,
};
use crate::codec::Decoder;
use crate::request::{Request, Response};
use crate::status::Status;
use crate::streaming::Streaming;
use futures_core::Stream;
use futures_util::StreamExt;
use std::future::poll_fn;
use tokio::time::Instant;

/// Typed calls over a call service: a [`Channel`] (the default) or any stack
/// of tower layers around one.
///
/// Methods take `&self`: each call clones the service (for a channel, a
/// reference count) and waits for that clone to be ready, within the call's
/// deadline, before calling it.
#[derive(Clone, Debug)]
pub struct Client<T = Channel> {
    service: T,
}

impl<T> Client<T> {
    /// Typed calls over `service`.
    pub fn new(service: T) -> Client<T> {
        Client { service }
    }

    /// The service calls go through.
    pub fn service(&self) -> &T {
        &self.service
    }

    /// Takes the service back.
    pub fn into_service(self) -> T {
        self.service
    }
}

/// A call request from a typed request, its body made by `body`.
fn call_request<T>(
    path: MethodPath,
    request: Request<T>,
    body: impl FnOnce(T) -> RequestBody,
) -> CallRequest {
    let (metadata, timeout, extensions, message) = request.into_parts();
    let mut call = CallRequest::new(path, body(message));
    *call.metadata_mut() = metadata;
    *call.extensions_mut() = extensions;
    // The request's own timeout, unless the deadline the call inherited
    // (from the handler making it) is sooner.
    if let Some(timeout) = timeout {
        let own = Instant::now() + timeout;
        if call.deadline().is_none_or(|inherited| own < inherited) {
            call.set_deadline(Some(own));
        }
    }
    call
}

/// The body of a request that streams `messages`.
fn stream_body<S>(messages: S) -> RequestBody
where
    S: Stream + Send + 'static,
    S::Item: prost::Message + Send + Sync + 'static,
{
    RequestBody::stream(messages.map(|message| Ok(Payload::new(message))))
}

/// Reads the single response message of a unary or client-streaming call, and
/// merges the trailers into the response metadata.
async fn single_response<Resp>(
    response: CallResponse,
    decoder: &Decoder<Resp>,
) -> Result<Response<Resp>, Status> {
    let (mut metadata, mut body, _) = response.into_parts();
    let (bytes, trailers) = match body.take_whole_single() {
        Some(whole) => whole?,
        None => {
            let Some(bytes) = body.message().await? else {
                return Err(Status::internal(
                    "server ended the call with OK but sent no response message",
                ));
            };
            if body.message().await?.is_some() {
                return Err(Status::internal(
                    "server sent more than one response message to a call expecting one",
                ));
            }
            (bytes, body.take_trailers().unwrap_or_default())
        }
    };
    if !trailers.is_empty() {
        metadata.extend(trailers);
    }
    let message = decoder
        .decode(bytes)
        .map_err(|error| Status::internal(format!("response is not a valid message: {error}")))?;
    Ok(Response::from_parts(metadata, message))
}

/// The response of a streaming call: its headers, and its messages as they come.
fn streaming_response<Resp>(
    response: CallResponse,
    decoder: Decoder<Resp>,
) -> Response<Streaming<Resp>> {
    let (headers, body, _) = response.into_parts();
    Response::from_parts(headers, Streaming::client(body, decoder))
}

impl<T: CallService> Client<T> {
    /// One type-erased call: waits for the service to be ready (within the
    /// call's deadline), then calls it. Resolves when the response begins.
    pub async fn call(&self, request: CallRequest) -> Result<CallResponse, Status> {
        let mut service = self.service.clone();
        let ready = poll_fn(|cx| service.poll_ready(cx));
        match request.deadline() {
            None => ready.await.map_err(into_status)?,
            Some(deadline) => match tokio::time::timeout_at(deadline, ready).await {
                Ok(ready) => ready.map_err(into_status)?,
                Err(_) => {
                    return Err(Status::deadline_exceeded(
                        "deadline exceeded while waiting for the service to be ready",
                    )
                    .mark_not_processed())
                }
            },
        }
        service.call(request).await.map_err(into_status)
    }

    /// A unary call: one request, one response.
    pub async fn unary<Req, Resp>(
        &self,
        path: impl Into<MethodPath>,
        request: Request<Req>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default,
    {
        self.unary_with(path, request, &Decoder::prost()).await
    }

    /// A unary call whose response is decoded by `decoder`.
    pub async fn unary_with<Req, Resp>(
        &self,
        path: impl Into<MethodPath>,
        request: Request<Req>,
        decoder: &Decoder<Resp>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
    {
        let request = call_request(path.into(), request, |message| {
            RequestBody::single(Payload::new(message))
        });
        single_response(self.call(request).await?, decoder).await
    }

    /// A server-streaming call: one request, a stream of responses.
    pub async fn server_streaming<Req, Resp>(
        &self,
        path: impl Into<MethodPath>,
        request: Request<Req>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default,
    {
        self.server_streaming_with(path, request, Decoder::prost())
            .await
    }

    /// A server-streaming call whose responses are decoded by `decoder`.
    pub async fn server_streaming_with<Req, Resp>(
        &self,
        path: impl Into<MethodPath>,
        request: Request<Req>,
        decoder: Decoder<Resp>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
    {
        let request = call_request(path.into(), request, |message| {
            RequestBody::single(Payload::new(message))
        });
        Ok(streaming_response(self.call(request).await?, decoder))
    }

    /// A client-streaming call: a stream of requests, one response. Requests
    /// are sent as the stream yields them, under flow control; if the server
    /// answers before the stream ends, the answer is returned and the stream
    /// dropped.
    pub async fn client_streaming<S, Resp>(
        &self,
        path: impl Into<MethodPath>,
        request: Request<S>,
    ) -> Result<Response<Resp>, Status>
    where
        S: Stream + Send + 'static,
        S::Item: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default,
    {
        self.client_streaming_with(path, request, &Decoder::prost())
            .await
    }

    /// A client-streaming call whose response is decoded by `decoder`.
    pub async fn client_streaming_with<S, Resp>(
        &self,
        path: impl Into<MethodPath>,
        request: Request<S>,
        decoder: &Decoder<Resp>,
    ) -> Result<Response<Resp>, Status>
    where
        S: Stream + Send + 'static,
        S::Item: prost::Message + Send + Sync + 'static,
    {
        let request = call_request(path.into(), request, stream_body);
        single_response(self.call(request).await?, decoder).await
    }

    /// A bidirectional call: requests are sent as the stream yields them,
    /// while responses are read from the returned [`Streaming`].
    pub async fn bidirectional<S, Resp>(
        &self,
        path: impl Into<MethodPath>,
        request: Request<S>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        S: Stream + Send + 'static,
        S::Item: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default,
    {
        self.bidirectional_with(path, request, Decoder::prost())
            .await
    }

    /// A bidirectional call whose responses are decoded by `decoder`.
    pub async fn bidirectional_with<S, Resp>(
        &self,
        path: impl Into<MethodPath>,
        request: Request<S>,
        decoder: Decoder<Resp>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        S: Stream + Send + 'static,
        S::Item: prost::Message + Send + Sync + 'static,
    {
        let request = call_request(path.into(), request, stream_body);
        Ok(streaming_response(self.call(request).await?, decoder))
    }
}
