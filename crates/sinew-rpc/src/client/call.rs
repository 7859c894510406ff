//! Client-side calls: opening a stream, the four call shapes, cancellation on drop.

use super::Channel;
use crate::codec::Decoder;
use crate::connection::stream::{Outgoing, StreamRef};
use crate::connection::{Inbound, Shared, StreamState, PENDING_WRITE_HIGH};
use crate::request::{Request, Response};
use crate::status::Status;
use crate::streaming::Streaming;
use futures_core::Stream;
use futures_util::StreamExt;
use sinew_wire::{encode, Code, MetadataMap};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// The client's ownership of one stream. Dropping it before the call ended sends
/// RESET CANCELLED, so the server stops working on a call nobody waits for.
#[derive(Debug)]
pub(crate) struct ClientStream {
    pub(crate) stream: StreamRef,
    /// Task sending the requests of a bidirectional call, stopped with the call.
    pump: Option<AbortHandle>,
    /// The stream already left the table (it ended and was removed in the same
    /// lock that delivered its status): nothing to do on drop.
    removed: bool,
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        if self.removed {
            return;
        }
        let mut state = self.stream.shared.lock();
        let Some(stream) = state.remove_stream(self.stream.id) else {
            return;
        };
        if !stream.remote_closed && !stream.reset && state.dead.is_none() {
            state.encode_reset(
                self.stream.id,
                Code::Cancelled,
                "call cancelled by the client",
            );
        }
        let unread = stream.unread_bytes();
        if unread > 0 && state.dead.is_none() {
            state.credit(None, unread);
        }
        if state.close_when_idle && state.streams.is_empty() {
            state.kill(Status::unavailable("channel closed"));
        }
    }
}

/// Opens a stream: HEADERS, and the first message with it when flow control
/// allows, all in one lock so they leave in the same write.
async fn open<M: prost::Message>(
    shared: &Arc<Shared>,
    path: &str,
    metadata: &MetadataMap,
    timeout: Option<Duration>,
    first: Option<&M>,
    end_stream: bool,
) -> Result<(ClientStream, bool), Status> {
    let max = shared.peer.max_frame_size as usize;
    let first_len = first.map(|m| m.encoded_len());
    if let Some(len) = first_len {
        if len > max {
            return Err(Status::resource_exhausted(format!(
                "request of {len} bytes is larger than the server's limit of {max} bytes"
            )));
        }
    }
    if metadata.encoded_len() + path.len() + 16 > max {
        return Err(Status::resource_exhausted(
            "request metadata is larger than the server's frame limit",
        ));
    }
    poll_fn(|cx| {
        let mut state = shared.lock();
        if let Some(status) = &state.dead {
            return Poll::Ready(Err(status.clone().mark_not_processed()));
        }
        if state.goaway_received.is_some() {
            return Poll::Ready(Err(Status::unavailable(
                "connection is going away; call not sent",
            )
            .mark_not_processed()));
        }
        if state.open_streams >= shared.peer.max_concurrent_streams {
            state.capacity_waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        if state.highest_stream_id >= i32::MAX as u32 {
            // Ids exhausted: retire the connection; the pool opens a new one.
            shared
                .accepting
                .store(false, std::sync::atomic::Ordering::Release);
            return Poll::Ready(Err(Status::unavailable(
                "stream ids exhausted on this connection; call not sent",
            )
            .mark_not_processed()));
        }
        let id = state.highest_stream_id + 1;
        state.highest_stream_id = id;
        let mut stream = StreamState::new(
            shared.peer.initial_stream_window,
            shared.local.initial_stream_window,
        );
        stream.queued_in_batch = state.batches_taken;
        let with_first =
            first_len.is_some() && state.send_window > 0 && state.queued_len() < PENDING_WRITE_HIGH;
        let headers_end_stream = end_stream && first.is_none();
        encode::headers(
            &mut state.pending,
            id,
            headers_end_stream,
            timeout,
            path,
            metadata,
        );
        if let (true, Some(message), Some(len)) = (with_first, first, first_len) {
            state.encode_data(shared.slabs.as_ref(), id, end_stream, message, len);
            stream.send_window -= len as i64;
            state.send_window -= len as i64;
        }
        if end_stream && (first.is_none() || with_first) {
            stream.local_closed = true;
        }
        state.streams.insert(id, stream);
        state.open_streams += 1;
        Poll::Ready(Ok((
            ClientStream {
                stream: StreamRef {
                    shared: shared.clone(),
                    id,
                },
                pump: None,
                removed: false,
            },
            with_first || first.is_none(),
        )))
    })
    .await
}

/// Opens a call that takes exactly one request (unary, server streaming): the
/// request goes with the HEADERS when flow control allows, otherwise right after.
async fn open_with_request<M: prost::Message>(
    shared: &Arc<Shared>,
    path: &str,
    metadata: &MetadataMap,
    timeout: Option<Duration>,
    message: &M,
) -> Result<ClientStream, Status> {
    let (stream, sent) = open(shared, path, metadata, timeout, Some(message), true).await?;
    if !sent {
        stream
            .stream
            .send(Outgoing {
                message: Some(message),
                end_stream: true,
                ..Outgoing::default()
            })
            .await?;
    }
    Ok(stream)
}

/// Sends every message of `requests`, then half-closes. Stops quietly if the
/// stream is gone: the response side reports why.
async fn pump_requests<M, S>(stream: StreamRef, requests: S)
where
    M: prost::Message,
    S: Stream<Item = M>,
{
    let mut requests = pin!(requests);
    while let Some(message) = requests.next().await {
        let sent = stream
            .send(Outgoing {
                message: Some(&message),
                ..Outgoing::default()
            })
            .await;
        if sent.is_err() {
            return;
        }
    }
    let _ = stream
        .send::<M>(Outgoing {
            end_stream: true,
            ..Outgoing::default()
        })
        .await;
}

/// Reads the single response of a unary or client-streaming call.
///
/// Everything that has arrived is taken in one lock acquisition, and the stream
/// leaves the table in the same one once its status is in: a unary call's
/// response costs one lock, however many frames it came in.
async fn single_response<Resp>(
    stream: &mut ClientStream,
    decoder: &Decoder<Resp>,
) -> Result<Response<Resp>, Status> {
    let mut metadata = MetadataMap::new();
    let mut message = None;
    let id = stream.stream.id;
    let shared = stream.stream.shared.clone();
    let status = poll_fn(|cx| {
        let mut state = shared.lock();
        loop {
            let Some(entry) = state.streams.get_mut(&id) else {
                return Poll::Ready(Err(Status::cancelled("the call has ended")));
            };
            let Some(item) = entry.pop_inbound() else {
                if entry.remote_closed {
                    return Poll::Ready(Err(Status::internal("stream ended without a status")));
                }
                entry.recv_waker = Some(cx.waker().clone());
                return Poll::Pending;
            };
            match item {
                Inbound::Headers(headers) => metadata.extend(headers),
                Inbound::Message(bytes) => {
                    state.credit(Some(id), bytes.len());
                    if message.is_some() {
                        return Poll::Ready(Err(Status::internal(
                            "server sent more than one response message to a call expecting one",
                        )));
                    }
                    message = Some(bytes);
                }
                Inbound::Trailers(status) => {
                    state.remove_stream(id);
                    stream.removed = true;
                    return Poll::Ready(Ok(status));
                }
                Inbound::Reset(status) => return Poll::Ready(Err(status)),
                Inbound::End => {
                    return Poll::Ready(Err(Status::internal("stream ended without a status")))
                }
            }
        }
    })
    .await?;
    if status.code() != Code::Ok {
        return Err(status);
    }
    let bytes = message.ok_or_else(|| {
        Status::internal("server ended the call with OK but sent no response message")
    })?;
    let message = decoder
        .decode(bytes)
        .map_err(|error| Status::internal(format!("response is not a valid message: {error}")))?;
    metadata.extend(status.into_metadata());
    Ok(Response::from_parts(metadata, message))
}

/// Waits for the response headers of a streaming call. A call that fails before
/// any message ("trailers only") is reported here as an error.
async fn response_headers(stream: &ClientStream) -> Result<MetadataMap, Status> {
    poll_fn(|cx| {
        let mut state = stream.stream.shared.lock();
        let Some(entry) = state.streams.get_mut(&stream.stream.id) else {
            return Poll::Ready(Err(Status::cancelled("the call has ended")));
        };
        match entry.inbox.front() {
            Some(Inbound::Headers(_)) => match entry.pop_inbound() {
                Some(Inbound::Headers(metadata)) => Poll::Ready(Ok(metadata)),
                _ => unreachable!("front was headers"),
            },
            Some(Inbound::Trailers(status)) if status.code() != Code::Ok => {
                let status = status.clone();
                entry.pop_inbound();
                Poll::Ready(Err(status))
            }
            Some(Inbound::Reset(status)) => {
                let status = status.clone();
                entry.pop_inbound();
                Poll::Ready(Err(status))
            }
            // A message or OK trailers without headers: the stream will deliver them.
            Some(_) => Poll::Ready(Ok(MetadataMap::new())),
            None => {
                entry.recv_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await
}

impl Channel {
    fn call_deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        timeout
            .or(self.inner.config.default_timeout)
            .map(|timeout| Instant::now() + timeout)
    }

    /// Runs `call` under the deadline: past it, the call's future is dropped (which
    /// sends RESET CANCELLED) and the caller gets `DEADLINE_EXCEEDED`.
    async fn with_deadline<T>(
        deadline: Option<Instant>,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        match deadline {
            None => call.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, call).await {
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded(
                    "deadline exceeded before the server answered",
                )),
            },
        }
    }

    fn remaining(deadline: Option<Instant>) -> Result<Option<Duration>, Status> {
        match deadline {
            None => Ok(None),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Err(
                        Status::deadline_exceeded("deadline expired before the call was sent")
                            .mark_not_processed(),
                    )
                } else {
                    Ok(Some(left))
                }
            }
        }
    }

    /// A unary call: one request, one response.
    pub async fn unary<Req, Resp>(
        &self,
        path: &str,
        request: Request<Req>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.unary_with(path, request, &Decoder::prost()).await
    }

    /// A unary call whose response is decoded by `decoder`.
    pub async fn unary_with<Req, Resp>(
        &self,
        path: &str,
        request: Request<Req>,
        decoder: &Decoder<Resp>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message,
    {
        let (metadata, timeout, message) = request.into_parts();
        let deadline = self.call_deadline(timeout);
        Self::with_deadline(deadline, async {
            let shared = self.connection().await?;
            let timeout = Self::remaining(deadline)?;
            let mut stream = open_with_request(&shared, path, &metadata, timeout, &message).await?;
            single_response(&mut stream, decoder).await
        })
        .await
    }

    /// A server-streaming call: one request, a stream of responses.
    pub async fn server_streaming<Req, Resp>(
        &self,
        path: &str,
        request: Request<Req>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.server_streaming_with(path, request, Decoder::prost())
            .await
    }

    /// A server-streaming call whose responses are decoded by `decoder`.
    pub async fn server_streaming_with<Req, Resp>(
        &self,
        path: &str,
        request: Request<Req>,
        decoder: Decoder<Resp>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        Req: prost::Message,
    {
        let (metadata, timeout, message) = request.into_parts();
        let deadline = self.call_deadline(timeout);
        Self::with_deadline(deadline, async {
            let shared = self.connection().await?;
            let timeout = Self::remaining(deadline)?;
            let stream = open_with_request(&shared, path, &metadata, timeout, &message).await?;
            let headers = response_headers(&stream).await?;
            Ok(Response::from_parts(
                headers,
                Streaming::client(stream, deadline, decoder),
            ))
        })
        .await
    }

    /// A client-streaming call: a stream of requests, one response. Requests are
    /// sent as the stream yields them, under flow control; if the server answers
    /// before the stream ends, the answer is returned and the stream dropped.
    pub async fn client_streaming<S, Req, Resp>(
        &self,
        path: &str,
        request: Request<S>,
    ) -> Result<Response<Resp>, Status>
    where
        S: Stream<Item = Req> + Send + 'static,
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.client_streaming_with(path, request, &Decoder::prost())
            .await
    }

    /// A client-streaming call whose response is decoded by `decoder`.
    pub async fn client_streaming_with<S, Req, Resp>(
        &self,
        path: &str,
        request: Request<S>,
        decoder: &Decoder<Resp>,
    ) -> Result<Response<Resp>, Status>
    where
        S: Stream<Item = Req> + Send + 'static,
        Req: prost::Message,
    {
        let (metadata, timeout, requests) = request.into_parts();
        let deadline = self.call_deadline(timeout);
        Self::with_deadline(deadline, async {
            let shared = self.connection().await?;
            let timeout = Self::remaining(deadline)?;
            let (mut stream, _) =
                open::<Req>(&shared, path, &metadata, timeout, None, false).await?;
            let mut pump = pin!(pump_requests(stream.stream.clone(), requests));
            let mut response = pin!(single_response(&mut stream, decoder));
            let mut pumping = true;
            loop {
                tokio::select! {
                    result = &mut response => return result,
                    _ = &mut pump, if pumping => pumping = false,
                }
            }
        })
        .await
    }

    /// A bidirectional call: requests are sent by a background task as the stream
    /// yields them, while responses are read from the returned [`Streaming`].
    pub async fn bidirectional<S, Req, Resp>(
        &self,
        path: &str,
        request: Request<S>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        S: Stream<Item = Req> + Send + 'static,
        Req: prost::Message + Send + 'static,
        Resp: prost::Message + Default,
    {
        self.bidirectional_with(path, request, Decoder::prost())
            .await
    }

    /// A bidirectional call whose responses are decoded by `decoder`.
    pub async fn bidirectional_with<S, Req, Resp>(
        &self,
        path: &str,
        request: Request<S>,
        decoder: Decoder<Resp>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        S: Stream<Item = Req> + Send + 'static,
        Req: prost::Message + Send + 'static,
    {
        let (metadata, timeout, requests) = request.into_parts();
        let deadline = self.call_deadline(timeout);
        Self::with_deadline(deadline, async {
            let shared = self.connection().await?;
            let timeout = Self::remaining(deadline)?;
            let (mut stream, _) =
                open::<Req>(&shared, path, &metadata, timeout, None, false).await?;
            let pump = tokio::spawn(pump_requests(stream.stream.clone(), requests));
            stream.pump = Some(pump.abort_handle());
            let headers = response_headers(&stream).await?;
            Ok(Response::from_parts(
                headers,
                Streaming::client(stream, deadline, decoder),
            ))
        })
        .await
    }
}
