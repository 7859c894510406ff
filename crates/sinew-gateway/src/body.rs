//! The bodies the gateway passes on: a request's to the upstream (held, so
//! that a retry can send it again, or streamed with the size limit
//! enforced), and a response's to the client (the upstream's, read from
//! its connection as the client takes it, the connection given back to its
//! pool at the end; one the gateway wrote itself; or one made as the
//! client takes it, from a transcoded call's stream of responses).
//!
//! No body is copied: frames go through as the upstream or client sent
//! them.

use crate::upstream::conn::UpstreamBody;
use crate::upstream::InFlight;
use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// An error of a body in either direction.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body grew past the limit (`max_body_bytes`).
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the limit of {0} bytes")]
pub(crate) struct TooLarge(pub(crate) u64);

/// A request's body on its way to an upstream.
pub(crate) enum RequestBody {
    /// No body, or one already sent (a held body's clone is sent per try).
    Full(Option<Bytes>),
    /// The client's body, streamed: it can be sent once.
    Stream {
        incoming: Incoming,
        /// Bytes the body may still bring.
        left: u64,
        limit: u64,
    },
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Full(bytes) => {
                Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes))))
            }
            RequestBody::Stream {
                incoming,
                left,
                limit,
            } => match Pin::new(incoming).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let size = data.len() as u64;
                        if size > *left {
                            return Poll::Ready(Some(Err(Box::new(TooLarge(*limit)))));
                        }
                        *left -= size;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Box::new(error)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Full(bytes) => bytes.is_none(),
            RequestBody::Stream { incoming, .. } => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            RequestBody::Full(None) => SizeHint::with_exact(0),
            RequestBody::Stream { incoming, .. } => incoming.size_hint(),
        }
    }
}

/// A response's body on its way to the client: an upstream's, streamed,
/// or one the gateway wrote.
pub struct ResponseBody(Kind);

enum Kind {
    /// Written by the gateway (an error page, a health answer).
    Full(Option<Bytes>),
    /// An upstream's, read from its connection as the client takes it.
    Upstream {
        body: UpstreamBody,
        /// The request in flight to the server, until the body's end; it
        /// takes the connection back to the server's pool then.
        in_flight: Option<InFlight>,
    },
    /// Made as the client takes it (a transcoded call's streamed
    /// responses).
    Stream(Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>),
}

impl ResponseBody {
    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody(Kind::Full(Some(bytes.into())))
    }

    /// An empty body.
    pub fn empty() -> ResponseBody {
        ResponseBody(Kind::Full(None))
    }

    /// A body of the chunks `chunks` yields, as the client takes them.
    pub(crate) fn stream(
        chunks: impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
    ) -> ResponseBody {
        ResponseBody(Kind::Stream(Box::pin(chunks)))
    }

    pub(crate) fn upstream(body: UpstreamBody, in_flight: InFlight) -> ResponseBody {
        let mut body = ResponseBody(Kind::Upstream {
            body,
            in_flight: Some(in_flight),
        });
        body.release_if_ended();
        body
    }

    /// Gives the connection back once the upstream's body is all read.
    fn release_if_ended(&mut self) {
        if let Kind::Upstream { body, in_flight } = &mut self.0 {
            if body.is_done() {
                if let Some(in_flight) = in_flight.take() {
                    if let Some(conn) = body.reusable() {
                        in_flight.peer().pool.checkin(conn);
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Full(bytes) => f
                .debug_tuple("Full")
                .field(&bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Upstream { .. } => f.write_str("Upstream"),
            Kind::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.0 {
            Kind::Full(bytes) => {
                return Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes))))
            }
            Kind::Upstream { body, .. } => body.poll_data(cx),
            Kind::Stream(chunks) => {
                return chunks
                    .as_mut()
                    .poll_next(cx)
                    .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
            }
        };
        match polled {
            Poll::Ready(Some(Ok(data))) => {
                this.release_if_ended();
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) => {
                this.release_if_ended();
                Poll::Ready(None)
            }
            other => other.map(|result| result.map(|result| result.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}
