//! [`Streaming`]: a stream of messages arriving on a call.

use crate::client::call::ClientStream;
use crate::codec::Decoder;
use crate::connection::Inbound;
use crate::server::call::CallIo;
use crate::status::Status;
use futures_core::Stream;
use sinew_wire::MetadataMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// Messages arriving on a call: the responses of a server-streaming or
/// bidirectional call (client side), or the requests of a client-streaming or
/// bidirectional call (server side).
///
/// Use [`Streaming::message`] or the [`Stream`] implementation. On the client the
/// stream ends with `None` after an OK status (its trailing metadata is then in
/// [`Streaming::trailers`]) or yields the error status last. Dropping a client-side
/// `Streaming` before its end cancels the call on the server.
pub struct Streaming<T> {
    /// A message already received before the stream was created.
    first: Option<T>,
    source: Source,
    decoder: Decoder<T>,
    /// Client side: the call's deadline, enforced here too for streamed responses.
    deadline: Option<Pin<Box<Sleep>>>,
    done: bool,
    trailers: Option<MetadataMap>,
    _message: PhantomData<fn() -> T>,
}

enum Source {
    /// Client side: owns the stream, resets it if dropped early.
    Client(ClientStream),
    /// Client side after the deadline passed: the stream was released (reset).
    Released,
    /// Server side: the call task owns the stream.
    Server(CallIo),
}

impl<T> Streaming<T> {
    pub(crate) fn client(
        stream: ClientStream,
        deadline: Option<Instant>,
        decoder: Decoder<T>,
    ) -> Streaming<T> {
        Streaming {
            first: None,
            source: Source::Client(stream),
            decoder,
            deadline: deadline.map(|deadline| Box::pin(tokio::time::sleep_until(deadline))),
            done: false,
            trailers: None,
            _message: PhantomData,
        }
    }

    pub(crate) fn server(stream: CallIo, decoder: Decoder<T>) -> Streaming<T> {
        Streaming {
            first: None,
            source: Source::Server(stream),
            decoder,
            deadline: None,
            done: false,
            trailers: None,
            _message: PhantomData,
        }
    }

    /// Puts a message in front of those still to come.
    pub(crate) fn push_front(&mut self, message: T) {
        self.first = Some(message);
    }

    /// Trailing metadata, once the stream has ended with an OK status (client side).
    pub fn trailers(&self) -> Option<&MetadataMap> {
        self.trailers.as_ref()
    }
}

impl<T> Streaming<T> {
    /// The next message; `Ok(None)` at a clean end, `Err(status)` if the call failed.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        poll_fn(|cx| self.poll_message(cx)).await.transpose()
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, Status>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if let Some(deadline) = &mut self.deadline {
                if deadline.as_mut().poll(cx).is_ready() {
                    self.done = true;
                    // Dropping the stream sends RESET CANCELLED to the server.
                    self.source = Source::Released;
                    return Poll::Ready(Some(Err(Status::deadline_exceeded(
                        "deadline exceeded while receiving the response stream",
                    ))));
                }
            }
            let (polled, is_client) = match &self.source {
                Source::Client(owner) => (owner.stream.poll_recv(cx), true),
                Source::Server(io) => (io.poll_recv(cx), false),
                Source::Released => return Poll::Ready(None),
            };
            let item = match polled {
                Poll::Ready(item) => item,
                Poll::Pending => return Poll::Pending,
            };
            match item {
                Inbound::Message(bytes) => {
                    return Poll::Ready(Some(self.decoder.decode(bytes).map_err(|error| {
                        self.done = true;
                        if is_client {
                            Status::internal(format!("response is not a valid message: {error}"))
                        } else {
                            Status::invalid_argument(format!(
                                "request is not a valid message: {error}"
                            ))
                        }
                    })));
                }
                // Response headers after the first message carry nothing new.
                Inbound::Headers(_) => continue,
                Inbound::End => {
                    self.done = true;
                    if is_client {
                        return Poll::Ready(Some(Err(Status::internal(
                            "stream ended without a status",
                        ))));
                    }
                    return Poll::Ready(None);
                }
                Inbound::Trailers(status) => {
                    self.done = true;
                    if status.code() == sinew_wire::Code::Ok {
                        self.trailers = Some(status.into_metadata());
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(status)));
                }
                Inbound::Reset(status) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
            }
        }
    }
}

// No part of a `Streaming` is ever pinned in place (the message held in `first`
// is moved out whole), so it is `Unpin` whatever `T` is.
impl<T> Unpin for Streaming<T> {}

impl<T> Stream for Streaming<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_message(cx)
    }
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streaming")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
