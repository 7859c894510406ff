//! Operations on one stream of a connection: receive with flow-control credit,
//! send under flow control, close.

use super::{Encode, Inbound, Shared, State, PENDING_WRITE_HIGH};
use crate::status::Status;
use sinew_wire::{encode, flow_cost, MetadataMap};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A handle on one stream: the connection plus the stream id. Cheap; carries no
/// ownership (who removes the stream from the table is the owner's business:
/// `client::call::ClientStream` or the server's call task).
#[derive(Clone, Debug)]
pub(crate) struct StreamRef {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: u32,
}

/// What to queue in one go, in this order: response headers, one message, then
/// either END_STREAM on that message (or HALF_CLOSE without one) or TRAILERS.
pub(crate) struct Outgoing<'a, M: ?Sized> {
    pub(crate) headers: Option<&'a MetadataMap>,
    pub(crate) message: Option<&'a M>,
    pub(crate) end_stream: bool,
    pub(crate) trailers: Option<&'a Status>,
}

impl<M: ?Sized> Default for Outgoing<'_, M> {
    fn default() -> Self {
        Outgoing {
            headers: None,
            message: None,
            end_stream: false,
            trailers: None,
        }
    }
}

impl StreamRef {
    /// The next inbound item. A message's bytes are credited back to the peer's
    /// windows here, when the application takes it, not when it arrived: that is
    /// what makes a slow reader slow the writer down.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Inbound> {
        let mut state = self.shared.lock();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Inbound::Reset(Status::cancelled("the call has ended")));
        };
        match stream.pop_inbound() {
            Some(Inbound::Message(bytes)) => {
                state.credit(Some(self.id), flow_cost(bytes.len()));
                Poll::Ready(Inbound::Message(bytes))
            }
            Some(item) => Poll::Ready(item),
            None if stream.remote_closed => Poll::Ready(Inbound::End),
            None => {
                stream.recv_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Server side: ends the call with `status` at once, unless it already
    /// ended: TRAILERS, or, for a status marked not processed (a layer shed
    /// the call before any handler ran), a RESET with the `REFUSED` flag, so
    /// that the client knows it may send the call again.
    pub(crate) fn end(&self, status: &Status) {
        let mut state = self.shared.lock();
        if let Some(stream) = state.streams.get_mut(&self.id) {
            if !stream.local_closed && !stream.reset {
                stream.local_closed = true;
                if status.is_not_processed() {
                    state.encode_refusal(self.id, status.message());
                } else {
                    state.encode_trailers(self.id, status);
                }
            }
        }
    }

    /// Server side: ready with the reason once the call was cancelled from
    /// outside (client reset, connection lost, drain deadline); otherwise
    /// wakes the task when it is.
    pub(crate) fn poll_cancelled(&self, cx: &mut Context<'_>) -> Poll<Status> {
        let mut state = self.shared.lock();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Status::cancelled("the call has ended"));
        };
        if let Some(status) = &stream.cancelled {
            return Poll::Ready(status.clone());
        }
        if !stream
            .cancel_waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            stream.cancel_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Queues `send` once flow control allows (only a message needs credit).
    pub(crate) async fn send<M: Encode + ?Sized>(
        &self,
        send: Outgoing<'_, M>,
    ) -> Result<(), Status> {
        let message_len = self.check_sizes(&send)?;
        poll_fn(|cx| self.poll_send(cx, &send, message_len)).await
    }

    /// Checks that what `send` holds fits the peer's frame limit; returns the
    /// message's encoded length.
    pub(crate) fn check_sizes<M: Encode + ?Sized>(
        &self,
        send: &Outgoing<'_, M>,
    ) -> Result<Option<usize>, Status> {
        let message_len = send.message.map(|m| m.wire_len());
        let max = self.shared.peer.max_frame_size as usize;
        if let Some(len) = message_len {
            if len > max {
                return Err(Status::resource_exhausted(format!(
                    "message of {len} bytes is larger than the peer's limit of {max} bytes"
                )));
            }
        }
        if let Some(headers) = send.headers {
            let len = encode::headers_len(false, "", headers);
            let limit = self.shared.peer.max_header_list_size as usize;
            if len > limit {
                return Err(Status::resource_exhausted(format!(
                    "response metadata of {len} bytes is larger than the client's \
                     header list limit of {limit} bytes"
                )));
            }
        }
        Ok(message_len)
    }

    /// Queues `send` (checked by [`StreamRef::check_sizes`], which gave
    /// `message_len`) once flow control allows.
    pub(crate) fn poll_send<M: Encode + ?Sized>(
        &self,
        cx: &mut Context<'_>,
        send: &Outgoing<'_, M>,
        message_len: Option<usize>,
    ) -> Poll<Result<(), Status>> {
        let mut locked = self.shared.lock();
        if let Some(status) = &locked.dead {
            return Poll::Ready(Err(status.clone()));
        }
        let state: &mut State = &mut locked;
        let queued = state.queued_len();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(Status::cancelled("the call has ended")));
        };
        if stream.reset {
            return Poll::Ready(Err(Status::cancelled("the call was cancelled")));
        }
        if stream.local_closed {
            return Poll::Ready(Err(Status::internal(
                "cannot send on a stream this side already closed",
            )));
        }
        let mut waited = 0;
        if let Some(len) = message_len {
            let stream_blocked = stream.send_window <= 0;
            if stream_blocked || state.send_window <= 0 || queued >= PENDING_WRITE_HIGH {
                // The message waits, and counts against the memory budget
                // meanwhile: unless that is already spent by others.
                if stream.waiting == 0 {
                    let budget = self.shared.limits.memory_budget;
                    if state.held > 0 && state.held.saturating_add(len) > budget {
                        let limit = crate::server::stats::Limit::ConnectionMemory;
                        self.shared.activity().limit_hit(limit);
                        return Poll::Ready(Err(Status::resource_exhausted(format!(
                            "the peer is not taking what this connection sends: {} bytes \
                             already wait, and the connection holds at most {budget} \
                             (memory budget); this message of {len} bytes cannot wait too",
                            state.held
                        ))));
                    }
                    stream.waiting = len;
                    state.held += len;
                }
                if !stream.stalled {
                    stream.stalled = true;
                    self.shared.activity().stalled();
                }
                if stream_blocked {
                    stream.send_waker = Some(cx.waker().clone());
                } else {
                    state.capacity_waiters.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            waited = std::mem::take(&mut stream.waiting);
            stream.stalled = false;
            let cost = flow_cost(len) as i64;
            stream.send_window -= cost;
            state.send_window -= cost;
        }
        if send.end_stream || send.trailers.is_some() {
            stream.local_closed = true;
        }
        let id = self.id;
        if let Some(headers) = send.headers {
            encode::headers(&mut state.pending, id, false, None, "", headers);
        }
        if let (Some(message), Some(len)) = (send.message, message_len) {
            state.encode_data(id, send.end_stream, message, len);
        } else if send.end_stream {
            encode::half_close(&mut state.pending, id);
        }
        if let Some(status) = send.trailers {
            locked.encode_trailers(id, status);
        }
        locked.release_held(waited);
        Poll::Ready(Ok(()))
    }
}
