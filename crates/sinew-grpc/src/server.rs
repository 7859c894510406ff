//! The gRPC server side: HTTP/2 requests in, calls on the sinew server out.

use crate::framing::{encode_message, Encoding, MessageDecoder};
use crate::metadata;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use http::{
    HeaderMap, HeaderValue, Method, Request as HttpRequest, Response as HttpResponse, StatusCode,
};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sinew_rpc::server::{Accepted, LocalConnector, Protocol, Sniff};
use sinew_rpc::{Channel, Decoder, RawMessage, Request, Status, Streaming};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// The body of every response: built from a stream, not `Sync`.
type Body = UnsyncBoxBody<Bytes, Infallible>;

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HTTP1_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Serves gRPC over HTTP/2 on a sinew server's listeners (see the crate docs).
#[derive(Clone, Debug)]
pub struct GrpcProtocol {
    config: Arc<Config>,
}

#[derive(Debug)]
struct Config {
    max_message_size: usize,
}

impl Default for GrpcProtocol {
    fn default() -> Self {
        GrpcProtocol {
            config: Arc::new(Config {
                max_message_size: 4 * 1024 * 1024,
            }),
        }
    }
}

impl GrpcProtocol {
    /// Largest request message accepted, after decompression (default 4 MiB);
    /// larger ones end the call with `RESOURCE_EXHAUSTED`.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config = Arc::new(Config {
            max_message_size: bytes,
        });
        self
    }
}

/// Whether `bytes` is (the start of) `expected`.
fn prefix_match(bytes: &[u8], expected: &[u8]) -> Sniff {
    let n = bytes.len().min(expected.len());
    if bytes[..n] != expected[..n] {
        Sniff::No
    } else if n == expected.len() {
        Sniff::Yes
    } else {
        Sniff::NeedMore
    }
}

impl Protocol for GrpcProtocol {
    fn name(&self) -> &'static str {
        "grpc"
    }

    fn sniff(&self, first_bytes: &[u8]) -> Sniff {
        // HTTP/2 (gRPC), and HTTP/1.x requests, which get a clear error.
        let mut verdict = prefix_match(first_bytes, HTTP2_PREFACE);
        for method in HTTP1_METHODS {
            verdict = match (verdict, prefix_match(first_bytes, method)) {
                (Sniff::Yes, _) | (_, Sniff::Yes) => Sniff::Yes,
                (Sniff::NeedMore, _) | (_, Sniff::NeedMore) => Sniff::NeedMore,
                _ => Sniff::No,
            };
        }
        verdict
    }

    fn serve(
        &self,
        connection: Accepted,
        local: LocalConnector,
        shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'static, ()> {
        let config = self.config.clone();
        Box::pin(async move {
            if connection.first_bytes().starts_with(b"PRI") {
                serve_http2(connection, local, shutdown, config).await;
            } else {
                serve_http1(connection).await;
            }
        })
    }
}

async fn serve_http2(
    connection: Accepted,
    local: LocalConnector,
    mut shutdown: watch::Receiver<bool>,
    config: Arc<Config>,
) {
    // One in-process sinew connection per HTTP/2 connection: calls keep the same
    // per-connection limits and ordering whichever protocol they arrive by.
    let channel = Channel::builder_with_connector(local).lazy();
    let service = hyper::service::service_fn(move |request| {
        let (channel, config) = (channel.clone(), config.clone());
        async move { Ok::<_, Infallible>(handle(request, channel, config).await) }
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(connection), service);
    tokio::pin!(connection);
    // (The borrow `wait_for` returns is dropped at once: it must not live across
    // the awaits below.)
    let stopping = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await.map(|_| ());
    };
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "gRPC connection ended with an error");
            }
        }
        _ = stopping => {
            // GOAWAY, then let the calls in flight finish.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// HTTP/1.x on a port that speaks sinew and gRPC: say so, then close.
async fn serve_http1(connection: Accepted) {
    let service = hyper::service::service_fn(|_request: HttpRequest<Incoming>| async {
        let mut response = HttpResponse::new(full(
            "this port serves sinew and gRPC over HTTP/2; HTTP/1.x is not supported\n",
        ));
        *response.status_mut() = StatusCode::HTTP_VERSION_NOT_SUPPORTED;
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        response
            .headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
        Ok::<_, Infallible>(response)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(connection), service)
        .await;
}

fn full(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync()
}

fn http_error(status: StatusCode, text: &'static str) -> HttpResponse<Body> {
    let mut response = HttpResponse::new(full(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    response
}

fn grpc_headers(headers: &mut HeaderMap, encoding: Encoding) {
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert(
        "grpc-accept-encoding",
        HeaderValue::from_static(Encoding::ACCEPTED),
    );
    if encoding != Encoding::Identity {
        headers.insert("grpc-encoding", HeaderValue::from_static(encoding.as_str()));
    }
}

/// A call that failed before any message: status in the only HEADERS frame.
fn trailers_only(status: &Status) -> HttpResponse<Body> {
    let mut response = HttpResponse::new(Empty::new().boxed_unsync());
    grpc_headers(response.headers_mut(), Encoding::Identity);
    metadata::status_trailers(status, response.headers_mut());
    response
}

async fn handle(
    request: HttpRequest<Incoming>,
    channel: Channel,
    config: Arc<Config>,
) -> HttpResponse<Body> {
    if request.method() != Method::POST {
        return http_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "gRPC calls are POST requests\n",
        );
    }
    let is_grpc = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !is_grpc {
        // As the gRPC spec asks, so that a non-gRPC client does not take a gRPC
        // error (HTTP 200) for success.
        return http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected content-type application/grpc\n",
        );
    }
    let headers = request.headers();
    let encoding_header = headers.get("grpc-encoding").and_then(|v| v.to_str().ok());
    let Some(encoding) = Encoding::from_header(encoding_header) else {
        return trailers_only(&Status::unimplemented(format!(
            "grpc-encoding {:?} is not supported; supported: {}",
            encoding_header.unwrap_or(""),
            Encoding::ACCEPTED
        )));
    };
    let timeout = match headers.get("grpc-timeout") {
        None => None,
        Some(value) => match value
            .to_str()
            .map_err(|_| ())
            .and_then(|v| metadata::parse_timeout(v).map_err(|_| ()))
        {
            Ok(timeout) => Some(timeout),
            Err(()) => {
                let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
                return trailers_only(&metadata::parse_timeout(&text).unwrap_err());
            }
        },
    };
    let call_metadata = match metadata::from_headers(headers) {
        Ok(metadata) => metadata,
        Err(status) => return trailers_only(&status),
    };
    let path = request.uri().path().to_owned();

    // The request body feeds the call's message stream from a task of its own.
    let (messages, received) = mpsc::channel::<RawMessage>(16);
    let (body_error, body_failed) = oneshot::channel::<Status>();
    let mut body_failed = Some(body_failed);
    tokio::spawn(read_body(
        request.into_body(),
        encoding,
        config.max_message_size,
        messages,
        body_error,
    ));

    let mut call_request = Request::new(tokio_stream::wrappers::ReceiverStream::new(received));
    *call_request.metadata_mut() = call_metadata;
    if let Some(timeout) = timeout {
        call_request.set_timeout(timeout);
    }
    let call = channel.bidirectional_with(&path, call_request, Decoder::raw());
    let response = tokio::select! {
        response = call => response,
        status = body_failure(&mut body_failed) => Err(status),
    };
    let response = match response {
        Ok(response) => response,
        Err(status) => return trailers_only(&status),
    };
    let (response_metadata, messages) = response.into_parts();
    let mut http_response = HttpResponse::new(response_body(messages, body_failed, encoding));
    grpc_headers(http_response.headers_mut(), encoding);
    metadata::to_headers(&response_metadata, http_response.headers_mut());
    http_response
}

/// Resolves with the request body's failure, if it fails; never resolves if the
/// body ends normally. Safe to poll again after either.
async fn body_failure(receiver: &mut Option<oneshot::Receiver<Status>>) -> Status {
    if let Some(pending) = receiver.as_mut() {
        let outcome = pending.await;
        *receiver = None;
        if let Ok(status) = outcome {
            return status;
        }
    }
    std::future::pending().await
}

/// Splits the request body into messages for the call. On bad input, reports the
/// status and keeps the message stream open until the call is dropped: the call
/// is cancelled, never ended as if the request were complete.
async fn read_body(
    mut body: Incoming,
    encoding: Encoding,
    max_message_size: usize,
    messages: mpsc::Sender<RawMessage>,
    body_error: oneshot::Sender<Status>,
) {
    let mut decoder = MessageDecoder::new(encoding, max_message_size);
    let failure = loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                decoder.push(&data);
                loop {
                    match decoder.next_message() {
                        Ok(Some(message)) => {
                            if messages.send(RawMessage(message)).await.is_err() {
                                return; // the call is over
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            let _ = body_error.send(status);
                            messages.closed().await;
                            return;
                        }
                    }
                }
            }
            Some(Err(error)) => {
                break Status::cancelled(format!("the client abandoned the request: {error}"))
            }
            None if decoder.has_partial() => {
                break Status::internal("the request body ended in the middle of a message")
            }
            None => return, // end of the request stream: dropping `messages` half-closes
        }
    };
    let _ = body_error.send(failure);
    messages.closed().await;
}

/// The response body: framed messages, then the status as trailers.
fn response_body(
    messages: Streaming<RawMessage>,
    body_failed: Option<oneshot::Receiver<Status>>,
    encoding: Encoding,
) -> Body {
    struct State {
        messages: Option<Streaming<RawMessage>>,
        body_failed: Option<oneshot::Receiver<Status>>,
        encoding: Encoding,
    }
    let frames = futures_util::stream::unfold(
        State {
            messages: Some(messages),
            body_failed,
            encoding,
        },
        |mut state| async move {
            let messages = state.messages.as_mut()?;
            let next = tokio::select! {
                next = messages.message() => next,
                status = body_failure(&mut state.body_failed) => Err(status),
            };
            let frame = match next {
                Ok(Some(RawMessage(bytes))) => Frame::data(encode_message(&bytes, state.encoding)),
                Ok(None) => {
                    let mut trailers = HeaderMap::new();
                    let mut status = Status::new(sinew_rpc::Code::Ok, "");
                    if let Some(metadata) = messages.trailers() {
                        *status.metadata_mut() = metadata.clone();
                    }
                    metadata::status_trailers(&status, &mut trailers);
                    state.messages = None;
                    Frame::trailers(trailers)
                }
                Err(status) => {
                    let mut trailers = HeaderMap::new();
                    metadata::status_trailers(&status, &mut trailers);
                    // Dropping the call cancels it on the sinew side.
                    state.messages = None;
                    Frame::trailers(trailers)
                }
            };
            Some((Ok::<_, Infallible>(frame), state))
        },
    );
    StreamBody::new(frames.boxed()).boxed_unsync()
}
