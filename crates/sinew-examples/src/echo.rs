//! gRPC's echo service: generated code plus [`EchoService`], and
//! [`WithUnary`] for an echo whose unary method does something else.

#![allow(missing_docs)] // generated code; the .proto comments become its docs
include!(concat!(env!("OUT_DIR"), "/grpc.examples.echo.rs"));

use echo_server::Echo;
use futures_core::Stream;
use futures_util::StreamExt;
use sinew::{MetadataMap, Request, Response, Status, Streaming};
use std::future::Future;
use std::pin::Pin;

/// Responses of the streaming echo methods.
pub type EchoStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

/// How many times `ServerStreamingEcho` repeats the message unless the request
/// says otherwise with the `x-repeat` metadata key.
pub const DEFAULT_REPEAT: usize = 10;
/// The most repetitions `x-repeat` may ask for.
pub const MAX_REPEAT: usize = 1_000_000;

/// The echo service.
///
/// * `UnaryEcho` answers with the request's message.
/// * `ServerStreamingEcho` answers with the message repeated `x-repeat` times
///   (metadata; default 10).
/// * `ClientStreamingEcho` answers with every received message joined by `\n`.
/// * `BidirectionalStreamingEcho` answers each message as it arrives.
///
/// Every method copies request metadata whose key starts with `x-echo-` into its
/// response metadata, which makes metadata easy to test in both directions.
#[derive(Debug, Default, Clone)]
pub struct EchoService;

fn echoed_metadata(request: &MetadataMap) -> MetadataMap {
    let mut out = MetadataMap::new();
    for (key, value) in request.iter() {
        if key.starts_with("x-echo-") {
            if key.ends_with("-bin") {
                let _ = out.insert_bin(key, value.to_vec());
            } else if let Ok(text) = std::str::from_utf8(value) {
                let _ = out.append(key, text);
            }
        }
    }
    out
}

fn with_metadata<T>(message: T, metadata: MetadataMap) -> Response<T> {
    let mut response = Response::new(message);
    *response.metadata_mut() = metadata;
    response
}

impl Echo for EchoService {
    type ServerStreamingEchoStream = EchoStream;
    type BidirectionalStreamingEchoStream = EchoStream;

    async fn unary_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        let metadata = echoed_metadata(request.metadata());
        let message = request.into_inner().message;
        Ok(with_metadata(EchoResponse { message }, metadata))
    }

    async fn server_streaming_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::ServerStreamingEchoStream>, Status> {
        let metadata = echoed_metadata(request.metadata());
        let repeat = match request.metadata().get("x-repeat") {
            None => DEFAULT_REPEAT,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n <= MAX_REPEAT => n,
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "x-repeat must be a number from 0 to {MAX_REPEAT}, got {text:?}"
                    )))
                }
            },
        };
        let message = request.into_inner().message;
        let stream = futures_util::stream::iter(0..repeat).map(move |_| {
            Ok(EchoResponse {
                message: message.clone(),
            })
        });
        Ok(with_metadata(Box::pin(stream) as EchoStream, metadata))
    }

    async fn client_streaming_echo(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let metadata = echoed_metadata(request.metadata());
        let mut requests = request.into_inner();
        let mut messages = Vec::new();
        while let Some(request) = requests.message().await? {
            messages.push(request.message);
        }
        Ok(with_metadata(
            EchoResponse {
                message: messages.join("\n"),
            },
            metadata,
        ))
    }

    async fn bidirectional_streaming_echo(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidirectionalStreamingEchoStream>, Status> {
        let metadata = echoed_metadata(request.metadata());
        let requests = request.into_inner();
        let responses = requests.map(|request| {
            request.map(|request| EchoResponse {
                message: request.message,
            })
        });
        Ok(with_metadata(Box::pin(responses) as EchoStream, metadata))
    }
}

/// What answers `UnaryEcho` in a [`WithUnary`] echo.
pub trait UnaryEcho: Send + Sync + 'static {
    /// Answers one `UnaryEcho` call.
    fn unary_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> impl Future<Output = Result<Response<EchoResponse>, Status>> + Send;
}

/// The echo service with `H` answering `UnaryEcho` and [`EchoService`]
/// the streaming methods: a server that measures or tests something about
/// unary calls (a slow replica, a backend with few connections, a chain
/// of hops) without restating the rest.
#[derive(Clone, Debug, Default)]
pub struct WithUnary<H>(pub H);

impl<H: UnaryEcho> Echo for WithUnary<H> {
    type ServerStreamingEchoStream = EchoStream;
    type BidirectionalStreamingEchoStream = EchoStream;

    async fn unary_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        self.0.unary_echo(request).await
    }

    async fn server_streaming_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoStream>, Status> {
        EchoService.server_streaming_echo(request).await
    }

    async fn client_streaming_echo(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        EchoService.client_streaming_echo(request).await
    }

    async fn bidirectional_streaming_echo(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoStream>, Status> {
        EchoService.bidirectional_streaming_echo(request).await
    }
}
