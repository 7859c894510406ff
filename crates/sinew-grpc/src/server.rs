//! The gRPC server side: HTTP/2 requests in, calls on the sinew server out.

use crate::coalesce::{coalesce, FlushAfter};
use crate::framing::{frame_in_place, Encoding, MessageDecoder, PREFIX_LEN};
use crate::metadata;
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::{
    HeaderMap, HeaderValue, Method, Request as HttpRequest, Response as HttpResponse, StatusCode,
};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sinew_rpc::server::external::RequestMessages;
use sinew_rpc::server::stats::Limit;
use sinew_rpc::server::{
    Accepted, ActiveCall, ExternalCall, ExternalRequest, LocalConnector, Peer, Protocol,
    ResponseEvent, ResponseHead, Sniff,
};
use sinew_rpc::{Keepalive, Status};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;

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

/// After the drain deadline, how long a connection may take to send the
/// last statuses and its GOAWAY before it is closed under its peer.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves gRPC over HTTP/2 on a sinew server's listeners (see the crate docs).
#[derive(Clone, Debug)]
pub struct GrpcProtocol {
    config: Arc<Config>,
}

#[derive(Clone, Debug)]
struct Config {
    max_message_size: usize,
    keepalive: Keepalive,
}

impl Default for GrpcProtocol {
    fn default() -> Self {
        GrpcProtocol {
            config: Arc::new(Config {
                max_message_size: 4 * 1024 * 1024,
                keepalive: Keepalive::SERVER,
            }),
        }
    }
}

impl GrpcProtocol {
    /// Largest request message accepted, after decompression (default 4 MiB);
    /// larger ones end the call with `RESOURCE_EXHAUSTED`.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).max_message_size = bytes;
        self
    }

    /// HTTP/2 keepalive: PING after `interval` without a frame from the client
    /// (`None` turns it off), close the connection if the answer takes longer
    /// than `timeout` (default [`Keepalive::SERVER`]: 30 s, 10 s), as sinew's
    /// own connections do.
    pub fn keepalive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.config).keepalive = Keepalive { interval, timeout };
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

    fn alpn(&self) -> Option<&'static [u8]> {
        Some(sinew_transport::tls::ALPN_H2)
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
            // A TLS client that agreed on h2 has said nothing yet.
            if connection.first_bytes().starts_with(b"PRI") || connection.first_bytes().is_empty() {
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
    // Calls run directly on the server's services, under the same per-connection
    // limit of concurrent calls as a sinew connection.
    let max_concurrent_streams = local.max_concurrent_streams();
    let max_header_list_size = local.max_header_list_size();
    let drain_timeout = local.drain_timeout();
    let activity = connection.activity().clone();
    let idle = idle_for(activity.clone(), local.idle_timeout());
    let keepalive = config.keepalive;
    let context = Arc::new(Connection {
        peer: connection.peer().clone(),
        activity: connection.activity().clone(),
        buffered: Arc::new(AtomicUsize::new(0)),
        memory_budget: local.connection_memory(),
        local,
        config,
    });
    let service = hyper::service::service_fn(move |request| {
        let context = context.clone();
        async move { Ok::<_, Infallible>(handle(request, context).await) }
    });
    // hyper writes into a buffer that goes to the socket once per turn of
    // this task (see `coalesce`).
    let (io, flusher) = coalesce(connection);
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(max_concurrent_streams)
        .max_header_list_size(max_header_list_size)
        .timer(TokioTimer::new())
        .keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout)
        .serve_connection(TokioIo::new(io), service);
    let mut connection = FlushAfter::new(connection, flusher);
    // (The borrow `wait_for` returns is dropped at once: it must not live across
    // the awaits below.)
    let stopping = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await.map(|_| ());
    };
    tokio::select! {
        result = &mut connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "gRPC connection ended with an error");
            }
        }
        _ = idle => {
            tracing::debug!("gRPC connection idle for the idle timeout; closing it");
            activity.limit_hit(Limit::IdleTimeout);
            connection.connection().graceful_shutdown();
            let _ = tokio::time::timeout(drain_timeout + SHUTDOWN_GRACE, connection).await;
        }
        _ = stopping => {
            // GOAWAY, then let the calls in flight finish: they end by the
            // drain deadline (the server's dispatch ends stragglers then), so
            // a connection still open a moment later has only a peer that does
            // not read or answer (an HTTP/2 preface and silence): close it.
            connection.connection().graceful_shutdown();
            if tokio::time::timeout(drain_timeout + SHUTDOWN_GRACE, connection)
                .await
                .is_err()
            {
                tracing::debug!("gRPC connection still open after the drain deadline; closed");
            }
        }
    }
}

/// Resolves once the connection has had no call in flight for `timeout`
/// (never, without one). Checked a few times per timeout.
async fn idle_for(activity: Arc<sinew_rpc::server::Activity>, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    let period = (timeout / 4).max(Duration::from_millis(50));
    let mut clock = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut since = None;
    loop {
        let now = clock.tick().await;
        if activity.calls() > 0 {
            since = None;
        } else if now >= *since.get_or_insert(now) + timeout {
            return;
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

/// What the calls of one HTTP/2 connection share.
struct Connection {
    local: LocalConnector,
    config: Arc<Config>,
    peer: Arc<Peer>,
    /// Calls in flight, for the server's connection table.
    activity: Arc<sinew_rpc::server::Activity>,
    /// Request bytes the calls buffer (see [`Buffered`]).
    buffered: Arc<AtomicUsize>,
    memory_budget: usize,
}

async fn handle(request: HttpRequest<Incoming>, connection: Arc<Connection>) -> HttpResponse<Body> {
    // Counted until its response body is gone: the server closes only idle
    // connections to make room for new ones.
    let active = connection.activity.call();
    let config = &connection.config;
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

    // The service runs right here, reading the request body as it goes, until
    // the response begins: a unary call is complete by then.
    let buffered = Buffered {
        connection: connection.buffered.clone(),
        activity: connection.activity.clone(),
        budget: connection.memory_budget,
        mine: 0,
    };
    let body = request.into_body();
    let mut call = connection.local.dispatch(ExternalRequest {
        path,
        metadata: call_metadata,
        timeout,
        messages: request_messages(body, encoding, config.max_message_size, buffered),
        headroom: PREFIX_LEN,
        peer: Some(connection.peer.clone()),
        protocol: "grpc",
    });
    match call.head().await {
        ResponseHead::TrailersOnly(status) => trailers_only(&status),
        ResponseHead::Headers(response_metadata) => {
            let body = ResponseBody {
                call,
                encoding,
                _active: active,
            };
            let mut http_response = HttpResponse::new(body.boxed_unsync());
            grpc_headers(http_response.headers_mut(), encoding);
            metadata::to_headers(&response_metadata, http_response.headers_mut());
            http_response
        }
    }
}

/// The request bytes a connection's calls buffer (partial messages, whole
/// ones not taken yet), against the server's `connection_memory`: hyper
/// returns HTTP/2 flow-control credit as it hands out body bytes, so without
/// this a client could make the bridge buffer a partial message of up to the
/// message limit on every stream (2 connections x 1,000 streams of 4 MiB
/// partial messages: 8 GB).
struct Buffered {
    connection: Arc<AtomicUsize>,
    /// Where a refusal is counted.
    activity: Arc<sinew_rpc::server::Activity>,
    budget: usize,
    /// This call's share of `connection`.
    mine: usize,
}

impl Buffered {
    /// Whether `more` bytes fit in the connection's budget.
    fn admit(&self, more: usize) -> Result<(), Status> {
        let total = self.connection.load(Ordering::Relaxed);
        if total > 0 && total + more > self.budget {
            self.activity.limit_hit(Limit::ConnectionMemory);
            return Err(Status::resource_exhausted(format!(
                "the connection's calls buffer {total} bytes of request messages not \
                 taken yet, and {more} more would pass its memory budget of {} bytes",
                self.budget
            )));
        }
        Ok(())
    }

    /// This call now buffers `bytes`.
    fn set(&mut self, bytes: usize) {
        if bytes >= self.mine {
            self.connection
                .fetch_add(bytes - self.mine, Ordering::Relaxed);
        } else {
            self.connection
                .fetch_sub(self.mine - bytes, Ordering::Relaxed);
        }
        self.mine = bytes;
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        self.connection.fetch_sub(self.mine, Ordering::Relaxed);
    }
}

/// Splits the request body into messages. Bad framing, an oversize message or a
/// body that breaks off ends the stream with a status, which ends the call with
/// that status: a call is never taken for complete because its request broke.
fn request_messages(
    body: Incoming,
    encoding: Encoding,
    max_message_size: usize,
    buffered: Buffered,
) -> RequestMessages {
    let decoder = MessageDecoder::new(encoding, max_message_size);
    let state = Some((body, decoder, buffered));
    let stream = futures_util::stream::unfold(state, |state| async move {
        let (mut body, mut decoder, mut buffered) = state?;
        loop {
            let next = decoder.next_message();
            buffered.set(decoder.buffered());
            match next {
                Ok(Some(message)) => return Some((Ok(message), Some((body, decoder, buffered)))),
                Ok(None) => {}
                Err(status) => return Some((Err(status), None)),
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if let Err(status) = buffered.admit(data.len()) {
                            return Some((Err(status), None));
                        }
                        decoder.push(&data);
                        buffered.set(decoder.buffered());
                    }
                }
                Some(Err(error)) => {
                    let status =
                        Status::cancelled(format!("the client abandoned the request: {error}"));
                    return Some((Err(status), None));
                }
                None if decoder.has_partial() => {
                    let status =
                        Status::internal("the request body ended in the middle of a message");
                    return Some((Err(status), None));
                }
                None => return None,
            }
        }
    });
    Box::pin(stream)
}

/// The response body: the call's messages, framed, then its status as trailers.
/// Dropped early (the client reset the stream or left), it cancels the call.
struct ResponseBody {
    call: ExternalCall,
    encoding: Encoding,
    /// The call counts as in flight on its connection while this lives.
    _active: ActiveCall,
}

/// Messages already queued after a stream's message go in the same DATA
/// frame, up to this many bytes: one frame, and one trip through h2 and the
/// connection's write, for many small messages (as tonic's encoder does), at
/// the cost of copying them.
const COALESCE_BYTES: usize = 32 * 1024;

impl ResponseBody {
    /// `first` (a framed message), followed by the framed messages queued
    /// behind it, up to [`COALESCE_BYTES`]; `first` alone, uncopied, if
    /// none is.
    fn coalesce(&mut self, first: Bytes) -> Bytes {
        if first.len() >= COALESCE_BYTES {
            return first;
        }
        let Some(second) = self.call.try_next_message() else {
            return first;
        };
        let mut frame = BytesMut::with_capacity(COALESCE_BYTES.max(first.len() + second.len()));
        frame.extend_from_slice(&first);
        frame.extend_from_slice(&frame_in_place(second, self.encoding));
        while frame.len() < COALESCE_BYTES {
            let Some(next) = self.call.try_next_message() else {
                break;
            };
            frame.extend_from_slice(&frame_in_place(next, self.encoding));
        }
        frame.freeze()
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            let frame = match std::task::ready!(self.call.poll_event(cx)) {
                None => return Poll::Ready(None),
                Some(ResponseEvent::Message(message)) => {
                    let first = frame_in_place(message, self.encoding);
                    Frame::data(self.coalesce(first))
                }
                Some(ResponseEvent::Trailers(status)) => {
                    let mut trailers = HeaderMap::new();
                    metadata::status_trailers(&status, &mut trailers);
                    Frame::trailers(trailers)
                }
                // Headers come first or not at all; `head` took them.
                Some(ResponseEvent::Headers(_)) => continue,
            };
            return Poll::Ready(Some(Ok(frame)));
        }
    }
}
