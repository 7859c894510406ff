//! One call over a sinew connection: the future a [`Channel`](super::Channel)
//! returns for a [`CallRequest`], and the body of its response.
//!
//! [`SinewCall`] gets a connection from the pool (unless readiness already
//! picked one), opens a stream (HEADERS, and the first message with them when
//! flow control allows, in one lock so they leave in one write), sends the
//! rest of the body (a stream of messages is pumped by a task of its own),
//! and resolves once the response begins: its headers, or a status alone.
//! Whatever had arrived by then (for a unary call, usually the message and the
//! trailers too) is taken in that same lock, so a unary call costs two lock
//! acquisitions however many frames its response came in.
//!
//! [`ClientStream`] owns the stream: dropping it before the call ended sends
//! RESET CANCELLED, so the server stops working on a call nobody waits for.
//! Both the future and the body enforce the call's deadline.

use super::pool::Pool;
use crate::call::{
    CallRequest, CallResponse, MethodPath, Payload, PayloadStream, ResponseBody, ResponseFrame,
};
use crate::connection::stream::{Outgoing, StreamRef};
use crate::connection::{Inbound, Inbox, Shared, StreamState, PENDING_WRITE_HIGH};
use crate::status::Status;
use bytes::Bytes;
use futures_util::StreamExt;
use pin_project_lite::pin_project;
use sinew_wire::{encode, flow_cost, Code, MetadataMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep};

/// The client's ownership of one stream. Dropping it before the call ended sends
/// RESET CANCELLED, so the server stops working on a call nobody waits for.
#[derive(Debug)]
pub(crate) struct ClientStream {
    pub(crate) stream: StreamRef,
    /// Task sending the requests of a streaming call, stopped with the call.
    pump: Option<AbortHandle>,
    /// The stream already left the table (it ended and was removed in the same
    /// lock that delivered its status): nothing to do on drop.
    removed: bool,
}

impl ClientStream {
    /// Ends the client's part in the stream: stops the pump, removes the
    /// stream from the table, and resets it with `code` and `reason` if the
    /// call had not ended, so that the server stops working on it (and knows
    /// why: `CANCELLED`, or `DEADLINE_EXCEEDED` when the deadline passed).
    fn release(&mut self, code: Code, reason: &str) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        if self.removed {
            return;
        }
        self.removed = true;
        let mut state = self.stream.shared.lock();
        let Some(stream) = state.remove_stream(self.stream.id) else {
            return;
        };
        if !stream.remote_closed && !stream.reset && state.dead.is_none() {
            state.encode_reset(self.stream.id, code, reason);
        }
        let unread = stream.unread_credit();
        if unread > 0 && state.dead.is_none() {
            state.credit(None, unread);
        }
        if state.close_when_idle && state.streams.is_empty() {
            state.kill(Status::unavailable("channel closed"));
        }
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        self.release(Code::Cancelled, "call cancelled by the client");
    }
}

/// What a call still has to send when its stream opens.
enum Body {
    /// One message (unary and server-streaming calls).
    Single(Payload),
    /// The messages of a stream (client-streaming and bidirectional calls).
    Stream(PayloadStream),
}

/// Where a call is.
enum Step {
    /// Waiting for a connection with room for a stream.
    Connecting { pool: Arc<Pool> },
    /// Waiting for room to open the stream on `shared`.
    Opening { shared: Arc<Shared> },
    /// Open; the single message waits for flow-control credit.
    Sending {
        stream: ClientStream,
        message: Payload,
    },
    /// Everything is sent (or being pumped): waiting for the response to begin.
    Waiting { stream: ClientStream },
    /// The future has completed.
    Done,
}

pin_project! {
    /// A call on a sinew connection, until its response begins.
    pub(crate) struct SinewCall {
        step: Step,
        path: MethodPath,
        metadata: MetadataMap,
        body: Option<Body>,
        deadline: Option<Instant>,
        #[pin]
        timer: Timer,
    }
}

pin_project! {
    #[project = TimerProjection]
    enum Timer {
        Off,
        On { #[pin] sleep: Sleep },
    }
}

impl SinewCall {
    /// A call that takes the first connection with room from `pool`.
    pub(crate) fn new(pool: Arc<Pool>, request: CallRequest) -> SinewCall {
        SinewCall::starting(Step::Connecting { pool }, request)
    }

    /// A call on a connection readiness already picked.
    pub(crate) fn on(shared: Arc<Shared>, request: CallRequest) -> SinewCall {
        SinewCall::starting(Step::Opening { shared }, request)
    }

    fn starting(step: Step, request: CallRequest) -> SinewCall {
        let parts = request.into_parts();
        let body = match parts.body.into_single_or_stream() {
            Ok(message) => Body::Single(message),
            Err(stream) => Body::Stream(stream),
        };
        SinewCall {
            step,
            path: parts.path,
            metadata: parts.metadata,
            body: Some(body),
            deadline: parts.deadline,
            timer: match parts.deadline {
                Some(deadline) => Timer::On {
                    sleep: tokio::time::sleep_until(deadline),
                },
                None => Timer::Off,
            },
        }
    }
}

impl Future for SinewCall {
    type Output = Result<CallResponse, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match std::mem::replace(this.step, Step::Done) {
                Step::Connecting { pool } => match pool.poll_connection(cx) {
                    Poll::Ready(Ok(shared)) => *this.step = Step::Opening { shared },
                    Poll::Ready(Err(status)) => return Poll::Ready(Err(status)),
                    Poll::Pending => {
                        *this.step = Step::Connecting { pool };
                        break;
                    }
                },
                Step::Opening { shared } => {
                    let timeout = match this.deadline {
                        Some(deadline) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return Poll::Ready(Err(Status::deadline_exceeded(
                                    "deadline expired before the call was sent",
                                )
                                .mark_not_processed()));
                            }
                            Some(left)
                        }
                        None => None,
                    };
                    let first = match this.body.as_ref() {
                        Some(Body::Single(message)) => Some(message),
                        _ => None,
                    };
                    let opened = poll_open(
                        &shared,
                        cx,
                        this.path.as_str(),
                        this.metadata,
                        timeout,
                        first,
                    );
                    let (mut stream, sent) = match opened {
                        Poll::Ready(Ok(opened)) => opened,
                        Poll::Ready(Err(status)) => return Poll::Ready(Err(status)),
                        Poll::Pending => {
                            *this.step = Step::Opening { shared };
                            break;
                        }
                    };
                    *this.step = match this.body.take() {
                        Some(Body::Single(message)) if !sent => Step::Sending { stream, message },
                        Some(Body::Stream(messages)) => {
                            let pump = tokio::spawn(pump(stream.stream.clone(), messages));
                            stream.pump = Some(pump.abort_handle());
                            Step::Waiting { stream }
                        }
                        _ => Step::Waiting { stream },
                    };
                }
                Step::Sending { stream, message } => {
                    let send = Outgoing {
                        message: Some(&message),
                        end_stream: true,
                        ..Outgoing::default()
                    };
                    let sent = stream
                        .stream
                        .check_sizes(&send)
                        .map(|len| stream.stream.poll_send(cx, &send, len));
                    match sent {
                        Ok(Poll::Ready(Ok(()))) => *this.step = Step::Waiting { stream },
                        Ok(Poll::Pending) => {
                            *this.step = Step::Sending { stream, message };
                            break;
                        }
                        Ok(Poll::Ready(Err(status))) | Err(status) => {
                            return Poll::Ready(Err(status))
                        }
                    }
                }
                Step::Waiting { mut stream } => match poll_head(&mut stream, cx) {
                    Poll::Ready(Ok((headers, prefetched))) => {
                        let body = SinewBody {
                            stream,
                            prefetched,
                            deadline: *this.deadline,
                            timer: None,
                        };
                        return Poll::Ready(Ok(CallResponse::new(
                            headers,
                            ResponseBody::sinew(body),
                        )));
                    }
                    Poll::Ready(Err(status)) => return Poll::Ready(Err(status)),
                    Poll::Pending => {
                        *this.step = Step::Waiting { stream };
                        break;
                    }
                },
                Step::Done => panic!("SinewCall polled after completion"),
            }
        }
        // Pending: past the deadline, the call ends here (the server is told
        // with RESET DEADLINE_EXCEEDED).
        if let TimerProjection::On { sleep } = this.timer.as_mut().project() {
            if sleep.poll(cx).is_ready() {
                let status = match std::mem::replace(this.step, Step::Done) {
                    // Nothing of the call was queued yet.
                    Step::Connecting { .. } | Step::Opening { .. } => Status::deadline_exceeded(
                        "deadline exceeded while waiting to send the call",
                    )
                    .mark_not_processed(),
                    Step::Sending { mut stream, .. } | Step::Waiting { mut stream } => {
                        stream.release(Code::DeadlineExceeded, "the client's deadline passed");
                        Status::deadline_exceeded("deadline exceeded before the server answered")
                    }
                    Step::Done => {
                        Status::deadline_exceeded("deadline exceeded before the server answered")
                    }
                };
                return Poll::Ready(Err(status));
            }
        }
        Poll::Pending
    }
}

/// Opens a stream: HEADERS, and the first message with them when flow control
/// allows, all in one lock so they leave in the same write. Returns the stream
/// and whether `first` went with it.
fn poll_open(
    shared: &Arc<Shared>,
    cx: &mut Context<'_>,
    path: &str,
    metadata: &MetadataMap,
    timeout: Option<std::time::Duration>,
    first: Option<&Payload>,
) -> Poll<Result<(ClientStream, bool), Status>> {
    let max = shared.peer.max_frame_size as usize;
    let first_len = first.map(Payload::encoded_len);
    if let Some(len) = first_len {
        if len > max {
            return Poll::Ready(Err(Status::resource_exhausted(format!(
                "request of {len} bytes is larger than the server's limit of {max} bytes"
            ))
            .mark_not_processed()));
        }
    }
    let headers_len = encode::headers_len(timeout.is_some(), path, metadata);
    let header_limit = shared.peer.max_header_list_size as usize;
    if headers_len > header_limit {
        return Poll::Ready(Err(Status::resource_exhausted(format!(
            "request metadata of {headers_len} bytes is larger than the server's \
             header list limit of {header_limit} bytes"
        ))
        .mark_not_processed()));
    }
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
    // A single-message call ends its side with its message: with the HEADERS
    // when the message goes along, otherwise with the message sent later.
    let single = first.is_some();
    encode::headers(&mut state.pending, id, false, timeout, path, metadata);
    if let (true, Some(message), Some(len)) = (with_first, first, first_len) {
        state.encode_data(id, true, message, len);
        let cost = flow_cost(len) as i64;
        stream.send_window -= cost;
        state.send_window -= cost;
        stream.local_closed = true;
    }
    state.insert_stream(id, stream);
    Poll::Ready(Ok((
        ClientStream {
            stream: StreamRef {
                shared: shared.clone(),
                id,
            },
            pump: None,
            removed: false,
        },
        with_first || !single,
    )))
}

/// Sends every message of `messages`, then half-closes. A message that fails
/// cancels the call with its status. Stops quietly if the stream is gone: the
/// response side reports why.
async fn pump(stream: StreamRef, mut messages: PayloadStream) {
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(status) => {
                stream.cancel(status);
                return;
            }
        };
        let sent = stream
            .send(Outgoing {
                message: Some(&message),
                ..Outgoing::default()
            })
            .await;
        if let Err(status) = sent {
            // Too large for the server: the call fails with that. Anything
            // else means the stream is gone already.
            if status.code() == Code::ResourceExhausted {
                stream.cancel(status);
            }
            return;
        }
    }
    let _ = stream
        .send::<Payload>(Outgoing {
            end_stream: true,
            ..Outgoing::default()
        })
        .await;
}

/// Waits for the response to begin: its headers, with whatever else has
/// arrived (taken in the same lock, crediting its messages), or the status of
/// a call that failed before any message ("trailers only"), as an error.
fn poll_head(
    stream: &mut ClientStream,
    cx: &mut Context<'_>,
) -> Poll<Result<(MetadataMap, Inbox), Status>> {
    let id = stream.stream.id;
    let mut state = stream.stream.shared.lock();
    let Some(entry) = state.streams.get_mut(&id) else {
        return Poll::Ready(Err(Status::cancelled("the call has ended")));
    };
    let headers = match entry.inbox.front() {
        None => {
            entry.recv_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Some(Inbound::Trailers(status)) if status.code() != Code::Ok => {
            let Some(Inbound::Trailers(status)) = entry.inbox.pop() else {
                unreachable!("the front was just checked");
            };
            return Poll::Ready(Err(status));
        }
        Some(Inbound::Reset(_)) => {
            let Some(Inbound::Reset(status)) = entry.inbox.pop() else {
                unreachable!("the front was just checked");
            };
            return Poll::Ready(Err(status));
        }
        Some(Inbound::Headers(_)) => match entry.inbox.pop() {
            Some(Inbound::Headers(headers)) => headers,
            _ => unreachable!("the front was just checked"),
        },
        // A message or OK trailers without headers: the body delivers them.
        Some(_) => MetadataMap::new(),
    };
    let mut prefetched = Inbox::default();
    let mut credit = 0;
    let mut ended = false;
    while let Some(item) = entry.inbox.pop() {
        match &item {
            Inbound::Message(bytes) => credit += flow_cost(bytes.len()),
            Inbound::Trailers(_) | Inbound::Reset(_) => ended = true,
            _ => {}
        }
        prefetched.push(item);
    }
    if credit > 0 {
        state.credit(Some(id), credit);
    }
    if ended {
        // The whole response is in: the stream leaves the table now.
        state.remove_stream(id);
        stream.removed = true;
    }
    Poll::Ready(Ok((headers, prefetched)))
}

/// The body of a response on a sinew connection.
pub(crate) struct SinewBody {
    stream: ClientStream,
    /// Items taken with the headers, delivered before anything else.
    prefetched: Inbox,
    deadline: Option<Instant>,
    /// Made the first time the body has to wait with a deadline.
    timer: Option<Pin<Box<Sleep>>>,
}

impl SinewBody {
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<ResponseFrame> {
        loop {
            let item = match self.prefetched.pop() {
                Some(item) => item,
                None => match self.poll_item(cx) {
                    Poll::Ready(item) => item,
                    Poll::Pending => {
                        ready!(self.poll_deadline(cx));
                        return Poll::Ready(ResponseFrame::Status(Status::deadline_exceeded(
                            "deadline exceeded while receiving the response stream",
                        )));
                    }
                },
            };
            match item {
                Inbound::Message(bytes) => return Poll::Ready(ResponseFrame::Message(bytes)),
                // Headers after the first message carry nothing new.
                Inbound::Headers(_) => continue,
                Inbound::Trailers(status) | Inbound::Reset(status) => {
                    return Poll::Ready(ResponseFrame::Status(status))
                }
                Inbound::End => {
                    return Poll::Ready(ResponseFrame::Status(Status::internal(
                        "stream ended without a status",
                    )))
                }
            }
        }
    }

    /// The message and the status, when they are all the response and have
    /// both arrived (see `ResponseBody::take_whole_single`).
    pub(crate) fn take_whole_single(&mut self) -> Option<Result<(Bytes, MetadataMap), Status>> {
        if !matches!(
            self.prefetched.as_slice(),
            [Inbound::Message(_), Inbound::Trailers(_)]
        ) {
            return None;
        }
        let (Some(Inbound::Message(bytes)), Some(Inbound::Trailers(status))) =
            (self.prefetched.pop(), self.prefetched.pop())
        else {
            unreachable!("the items were just checked");
        };
        Some(if status.code() == Code::Ok {
            Ok((bytes, status.into_metadata()))
        } else {
            Err(status)
        })
    }

    /// The next item of the stream, crediting messages; the stream leaves the
    /// table in the same lock that delivers its end.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        if self.stream.removed {
            return Poll::Ready(Inbound::Reset(Status::cancelled("the call has ended")));
        }
        let id = self.stream.stream.id;
        let mut state = self.stream.stream.shared.lock();
        let Some(entry) = state.streams.get_mut(&id) else {
            return Poll::Ready(Inbound::Reset(Status::cancelled("the call has ended")));
        };
        match entry.inbox.pop() {
            Some(Inbound::Message(bytes)) => {
                state.credit(Some(id), flow_cost(bytes.len()));
                Poll::Ready(Inbound::Message(bytes))
            }
            Some(item @ (Inbound::Trailers(_) | Inbound::Reset(_))) => {
                state.remove_stream(id);
                self.stream.removed = true;
                Poll::Ready(item)
            }
            Some(item) => Poll::Ready(item),
            None => {
                entry.recv_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Ready once the deadline has passed (never without one).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(timer.as_mut().poll(cx));
        // Past the deadline: the call ends here, and the server is told.
        self.deadline = None;
        self.stream
            .release(Code::DeadlineExceeded, "the client's deadline passed");
        Poll::Ready(())
    }
}

impl StreamRef {
    /// Client side: cancels the call with `status`: RESET CANCELLED to the
    /// server, and `status` to whoever reads the response.
    pub(crate) fn cancel(&self, status: Status) {
        let mut state = self.shared.lock();
        let dead = state.dead.is_some();
        let mut wake = std::mem::take(&mut state.wake);
        let reset = match state.streams.get_mut(&self.id) {
            Some(stream) if !stream.reset => {
                let send_reset = !stream.remote_closed && !dead;
                stream.fail(status.clone(), &mut wake);
                send_reset
            }
            _ => false,
        };
        state.wake = wake;
        if reset {
            state.encode_reset(self.id, Code::Cancelled, status.message());
        }
    }
}
