//! Calls that arrive by a protocol extension, run directly on the server's
//! services.
//!
//! A [`Protocol`](super::Protocol) that decodes calls itself (the gRPC bridge
//! does, from HTTP/2 requests) hands each one to [`LocalConnector::dispatch`]
//! as an [`ExternalRequest`]: path, metadata, timeout, and the request messages
//! as a stream of encoded protobuf messages. The call then runs through the same
//! generated code and call drivers as a call on a sinew connection, under the
//! same deadline, panic handling and drain deadline; only its two ends differ.
//! The response comes back from the [`ExternalCall`] as [`ResponseEvent`]s.
//!
//! [`ExternalCall::head`] runs the call in the caller's task until its first
//! response event is known. A unary call is usually complete by then, so it
//! costs no task of its own; a streaming one is moved to a task of its own when
//! the caller goes on to [`ExternalCall::poll_event`]. Dropping the
//! `ExternalCall` before the end cancels the call, as a RESET does on a sinew
//! connection.
//!
//! Responses are queued in a bounded outbox: a handler that produces faster
//! than the protocol sends waits once [`OUTBOX_BYTES`] are queued.
//!
//! [`LocalConnector::dispatch`]: super::LocalConnector::dispatch

use crate::connection::stream::Outgoing;
use crate::connection::Inbound;
use crate::status::Status;
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_util::future::BoxFuture;
use sinew_wire::MetadataMap;
use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Encoded response bytes queued for the protocol beyond which a handler's
/// next message waits until the protocol takes some.
pub const OUTBOX_BYTES: usize = 256 * 1024;

/// The request messages of an external call, each one encoded protobuf message.
/// An `Err` ends the request stream with that status (bad framing, a message
/// too large, the client gone); the handler sees it as the request's failure.
pub type RequestMessages = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// A call decoded by a protocol extension, to run on this server's services.
pub struct ExternalRequest {
    /// `/package.Service/Method`.
    pub path: String,
    /// Request metadata.
    pub metadata: MetadataMap,
    /// How long the caller will wait, if it said.
    pub timeout: Option<Duration>,
    /// The request messages.
    pub messages: RequestMessages,
    /// Bytes left free at the front of each response message's buffer, for the
    /// protocol's framing prefix (5 for gRPC).
    pub headroom: usize,
    /// Who called ([`Accepted::peer`](super::Accepted::peer)); `None` if the
    /// protocol does not know.
    pub peer: Option<Arc<super::Peer>>,
    /// The protocol that carried the call, as layers see it in
    /// [`ServerCall::protocol`](super::ServerCall::protocol): its
    /// [`Protocol::name`](super::Protocol::name).
    pub protocol: &'static str,
}

impl fmt::Debug for ExternalRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalRequest")
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One item of an external call's response, in order: at most one `Headers`
/// first, then messages, then always exactly one `Trailers`.
#[derive(Debug)]
pub enum ResponseEvent {
    /// Response metadata, sent before any message.
    Headers(MetadataMap),
    /// One encoded message, after the request's `headroom` bytes (zeroed) at
    /// the front of the buffer.
    Message(BytesMut),
    /// The call's final status (with trailing metadata); nothing follows.
    Trailers(Status),
}

/// How a call's response begins: see [`ExternalCall::head`].
#[derive(Debug)]
pub enum ResponseHead {
    /// Response headers (empty if the handler set none); messages and trailers
    /// follow from [`ExternalCall::poll_event`].
    Headers(MetadataMap),
    /// The call ended before any header or message: only a status.
    TrailersOnly(Status),
}

/// The shared state between a call's handler (through [`CallIo::External`](super::call::CallIo::External)) and
/// the protocol that carries it.
pub(crate) struct ExternalIo {
    requests: Mutex<Requests>,
    outbox: Mutex<Outbox>,
    headroom: usize,
    /// Resolves when a graceful shutdown's drain deadline passes.
    drain: Mutex<BoxFuture<'static, ()>>,
    /// The server's request timeout.
    pub(crate) request_timeout: Duration,
    /// The protocol that carried the call.
    pub(crate) protocol: &'static str,
}

struct Requests {
    messages: RequestMessages,
    ended: Option<Inbound>,
}

#[derive(Default)]
struct Outbox {
    events: VecDeque<ResponseEvent>,
    queued_bytes: usize,
    /// Trailers are queued: the handler can send nothing more.
    closed: bool,
    /// The protocol side is gone (the client left): sends fail.
    abandoned: bool,
    /// The call's task, waiting to learn that the protocol side is gone.
    canceller: Option<Waker>,
    /// The protocol side, waiting for an event.
    consumer: Option<Waker>,
    /// The handler, waiting for room.
    producer: Option<Waker>,
}

impl Outbox {
    /// Takes the next event; a message taken makes room, so a handler
    /// waiting for room is woken.
    fn pop(&mut self) -> Option<ResponseEvent> {
        let event = self.events.pop_front()?;
        if let ResponseEvent::Message(message) = &event {
            self.queued_bytes -= message.len();
            if let Some(producer) = self.producer.take() {
                producer.wake();
            }
        }
        Some(event)
    }
}

impl fmt::Debug for ExternalIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalIo").finish_non_exhaustive()
    }
}

impl ExternalIo {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding the lock cannot leave the outbox inconsistent
        // (every update is a single push or flag), so poisoning is ignored.
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next request item, as a sinew stream would report it.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Inbound> {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(ended) = &requests.ended {
            return Poll::Ready(match ended {
                Inbound::Reset(status) => Inbound::Reset(status.clone()),
                _ => Inbound::End,
            });
        }
        match requests.messages.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Inbound::Message(bytes)),
            Poll::Ready(Some(Err(status))) => {
                // The request broke (bad framing, too large, the client gone):
                // the call ends with that status, whatever the handler does next,
                // as a RESET ends a call on a sinew connection.
                requests.ended = Some(Inbound::Reset(status.clone()));
                drop(requests);
                self.finish(status.clone());
                Poll::Ready(Inbound::Reset(status))
            }
            Poll::Ready(None) => {
                requests.ended = Some(Inbound::End);
                Poll::Ready(Inbound::End)
            }
        }
    }

    /// Queues what `send` holds once the outbox has room for a message.
    pub(crate) async fn send<M: prost::Message>(
        &self,
        send: Outgoing<'_, M>,
    ) -> Result<(), Status> {
        let mut message = send.message.map(|message| {
            let mut buf = BytesMut::with_capacity(self.headroom + message.encoded_len());
            buf.resize(self.headroom, 0);
            // A BytesMut grows on demand.
            message.encode_raw(&mut buf);
            buf
        });
        poll_fn(|cx| {
            let mut outbox = self.outbox();
            if outbox.abandoned {
                return Poll::Ready(Err(Status::cancelled("the call was cancelled")));
            }
            if outbox.closed {
                return Poll::Ready(Err(Status::internal(
                    "cannot send on a call whose status was already sent",
                )));
            }
            if message.is_some() && outbox.queued_bytes >= OUTBOX_BYTES {
                outbox.producer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            if let Some(headers) = send.headers {
                outbox
                    .events
                    .push_back(ResponseEvent::Headers(headers.clone()));
            }
            if let Some(message) = message.take() {
                outbox.queued_bytes += message.len();
                outbox.events.push_back(ResponseEvent::Message(message));
            }
            if let Some(status) = send.trailers {
                outbox
                    .events
                    .push_back(ResponseEvent::Trailers(status.clone()));
                outbox.closed = true;
            }
            // (A server never half-closes without a status: `end_stream` is
            // only ever set by clients.)
            if let Some(consumer) = outbox.consumer.take() {
                consumer.wake();
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Ready once the protocol side is gone (the client cancelled the call or
    /// went away), or the drain deadline of a graceful shutdown passed (the
    /// call is then ended with `UNAVAILABLE`); otherwise wakes the task when
    /// one of them happens.
    pub(crate) fn poll_cancelled(&self, cx: &mut Context<'_>) -> Poll<Status> {
        {
            let mut outbox = self.outbox();
            if outbox.abandoned {
                return Poll::Ready(Status::cancelled("the client cancelled the call"));
            }
            outbox.canceller = Some(cx.waker().clone());
        }
        let mut drain = self.drain.lock().unwrap_or_else(|e| e.into_inner());
        if drain.as_mut().poll(cx).is_ready() {
            let status = Status::unavailable(
                "server shutting down: the drain deadline passed before the call finished",
            );
            self.finish(status.clone());
            return Poll::Ready(status);
        }
        Poll::Pending
    }

    /// Ends the call with `status` unless it already has one.
    pub(crate) fn finish(&self, status: Status) {
        let mut outbox = self.outbox();
        if !outbox.closed {
            outbox.closed = true;
            outbox.events.push_back(ResponseEvent::Trailers(status));
        }
        if let Some(consumer) = outbox.consumer.take() {
            consumer.wake();
        }
    }
}

/// A call started by [`LocalConnector::dispatch`](super::LocalConnector::dispatch).
pub struct ExternalCall {
    /// The call, until it completes or moves to a task of its own.
    driver: Option<BoxFuture<'static, ()>>,
    /// The call's own task, once it moved to one (it ends by itself, also
    /// when cancelled).
    task: Option<JoinHandle<()>>,
    io: Arc<ExternalIo>,
    head_taken: bool,
}

impl fmt::Debug for ExternalCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalCall")
            .field("running_inline", &self.driver.is_some())
            .finish_non_exhaustive()
    }
}

impl ExternalCall {
    pub(crate) fn new(
        request: ExternalRequest,
        drain: BoxFuture<'static, ()>,
        request_timeout: Duration,
        start: impl FnOnce(&Arc<ExternalIo>, ExternalRequestParts) -> Option<BoxFuture<'static, ()>>,
    ) -> ExternalCall {
        let ExternalRequest {
            path,
            metadata,
            timeout,
            messages,
            headroom,
            peer,
            protocol,
        } = request;
        let io = Arc::new(ExternalIo {
            requests: Mutex::new(Requests {
                messages,
                ended: None,
            }),
            outbox: Mutex::new(Outbox::default()),
            headroom,
            drain: Mutex::new(drain),
            request_timeout,
            protocol,
        });
        let driver = start(
            &io,
            ExternalRequestParts {
                path,
                metadata,
                timeout,
                peer,
            },
        );
        ExternalCall {
            driver,
            task: None,
            io,
            head_taken: false,
        }
    }

    /// Runs the call in this task until its first response event is ready, and
    /// says how the response begins. Call once, before [`ExternalCall::poll_event`].
    pub async fn head(&mut self) -> ResponseHead {
        poll_fn(|cx| {
            if let Some(driver) = self.driver.as_mut() {
                if driver.as_mut().poll(cx).is_ready() {
                    self.driver = None;
                }
            }
            let mut outbox = self.io.outbox();
            self.head_taken = true;
            match outbox.events.front() {
                Some(ResponseEvent::Headers(_)) => {
                    let Some(ResponseEvent::Headers(metadata)) = outbox.events.pop_front() else {
                        unreachable!("the front was just checked");
                    };
                    Poll::Ready(ResponseHead::Headers(metadata))
                }
                Some(ResponseEvent::Message(_)) => {
                    Poll::Ready(ResponseHead::Headers(MetadataMap::default()))
                }
                Some(ResponseEvent::Trailers(_)) => {
                    let Some(ResponseEvent::Trailers(status)) = outbox.events.pop_front() else {
                        unreachable!("the front was just checked");
                    };
                    Poll::Ready(ResponseHead::TrailersOnly(status))
                }
                None if self.driver.is_none() && self.task.is_none() => Poll::Ready(
                    // Not reached: the driver always ends the call with a status.
                    ResponseHead::TrailersOnly(Status::internal("the call ended without a status")),
                ),
                None => {
                    outbox.consumer = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The next response event after the head; `None` after the trailers. A call
    /// still running moves to a task of its own here.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<ResponseEvent>> {
        debug_assert!(self.head_taken, "ExternalCall::head comes first");
        if let Some(driver) = self.driver.take() {
            self.task = Some(tokio::spawn(driver));
        }
        let mut outbox = self.io.outbox();
        match outbox.pop() {
            Some(event) => Poll::Ready(Some(event)),
            None if outbox.closed => Poll::Ready(None),
            None => {
                outbox.consumer = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// The next event if it is a message already queued, without waiting:
    /// for a protocol that sends several queued messages in one write (one
    /// HTTP/2 DATA frame for many small messages of a stream). `None` when
    /// nothing is queued or the next event is not a message.
    pub fn try_next_message(&mut self) -> Option<BytesMut> {
        let mut outbox = self.io.outbox();
        if !matches!(outbox.events.front(), Some(ResponseEvent::Message(_))) {
            return None;
        }
        match outbox.pop() {
            Some(ResponseEvent::Message(message)) => Some(message),
            _ => None,
        }
    }

    /// Whether every event has been taken (the trailers included).
    pub fn is_finished(&self) -> bool {
        let outbox = self.io.outbox();
        outbox.closed && outbox.events.is_empty()
    }
}

impl Drop for ExternalCall {
    /// Cancels the call if it is still running, as a RESET does on a sinew
    /// connection: the call sees it (its layers see `CANCELLED`) and stops its
    /// handler. A call still running in the caller's task moves to a task of
    /// its own to do so.
    fn drop(&mut self) {
        let mut outbox = self.io.outbox();
        outbox.abandoned = true;
        let closed = outbox.closed;
        let wakers = [outbox.producer.take(), outbox.canceller.take()];
        drop(outbox);
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
        if let Some(driver) = self.driver.take() {
            if !closed {
                tokio::spawn(driver);
            }
        }
    }
}

/// What [`LocalConnector::dispatch`](super::LocalConnector::dispatch) needs to
/// build the `ServerCall`, besides the I/O.
pub(crate) struct ExternalRequestParts {
    pub(crate) path: String,
    pub(crate) metadata: MetadataMap,
    pub(crate) timeout: Option<Duration>,
    pub(crate) peer: Option<Arc<super::Peer>>,
}
