//! [`Streaming`]: a stream of messages arriving on a call.

use crate::call::ResponseBody;
use crate::codec::Decoder;
use crate::connection::Inbound;
use crate::server::call::CallIo;
use crate::status::Status;
use futures_core::Stream;
use sinew_wire::MetadataMap;
use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

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
    done: bool,
    trailers: Option<MetadataMap>,
    _message: PhantomData<fn() -> T>,
}

// Both sides are as common; boxing the larger would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
enum Source {
    /// Client side: the response body (it enforces the call's deadline, and
    /// dropping it cancels the call).
    Client(ResponseBody),
    /// Server side: the call task owns the stream (and counts its messages
    /// into the call's tally, if a layer asked for one).
    Server(CallIo, Option<std::sync::Arc<crate::call::MessageTally>>),
}

impl<T> Streaming<T> {
    pub(crate) fn client(body: ResponseBody, decoder: Decoder<T>) -> Streaming<T> {
        Streaming::new(Source::Client(body), decoder)
    }

    pub(crate) fn server(
        stream: CallIo,
        decoder: Decoder<T>,
        tally: Option<std::sync::Arc<crate::call::MessageTally>>,
    ) -> Streaming<T> {
        Streaming::new(Source::Server(stream, tally), decoder)
    }

    fn new(source: Source, decoder: Decoder<T>) -> Streaming<T> {
        Streaming {
            first: None,
            source,
            decoder,
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
        if self.done {
            return Poll::Ready(None);
        }
        let item = match &mut self.source {
            Source::Client(body) => match std::task::ready!(body.poll_message(cx)) {
                Ok(Some(bytes)) => Ok(Some(bytes)),
                Ok(None) => {
                    self.trailers = body.take_trailers();
                    Ok(None)
                }
                Err(status) => Err(status),
            },
            Source::Server(io, tally) => loop {
                match std::task::ready!(io.poll_recv(cx)) {
                    Inbound::Message(bytes) => {
                        crate::call::tally::count_received(tally, bytes.len());
                        break Ok(Some(bytes));
                    }
                    Inbound::Headers(_) => continue,
                    Inbound::End => break Ok(None),
                    Inbound::Trailers(status) | Inbound::Reset(status) => break Err(status),
                }
            },
        };
        match item {
            Ok(Some(bytes)) => {
                let is_client = matches!(self.source, Source::Client(_));
                Poll::Ready(Some(self.decoder.decode(bytes).map_err(|error| {
                    self.done = true;
                    if is_client {
                        Status::internal(format!("response is not a valid message: {error}"))
                    } else {
                        Status::invalid_argument(format!("request is not a valid message: {error}"))
                    }
                })))
            }
            Ok(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Err(status) => {
                self.done = true;
                Poll::Ready(Some(Err(status)))
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
