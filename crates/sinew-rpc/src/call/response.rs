//! [`CallResponse`]: a call's answer as it arrives, whatever carried it.

use super::request::Extensions;
use super::tally::{count_received, MessageTally};
use crate::client::call::SinewBody;
use crate::status::Status;
use bytes::Bytes;
use futures_core::Stream;
use sinew_wire::{Code, MetadataMap};
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// One item of a response body: a message, or the call's final status (with
/// its trailing metadata), which is always the last item.
#[derive(Debug)]
pub enum ResponseFrame {
    /// One encoded response message.
    Message(Bytes),
    /// The call's final status: `OK` with the trailers, or the failure.
    Status(Status),
}

/// The messages of a response, then its final status.
///
/// Read it with [`ResponseBody::message`] (messages, then `Ok(None)` at an OK
/// end with the trailing metadata in [`ResponseBody::trailers`], or the
/// failure as an error), or as a [`Stream`] of [`ResponseFrame`]s ending with
/// exactly one `Status`, which is what layers that watch a call's end wrap.
/// Dropping it before the end cancels the call.
pub struct ResponseBody {
    repr: BodyRepr,
    trailers: Option<MetadataMap>,
    /// Told the final status once (see [`ResponseBody::on_end`]).
    on_end: Option<OnEnd>,
    /// Counts the messages read, once a layer asked
    /// ([`ResponseBody::tally_messages`]).
    tally: Option<Arc<MessageTally>>,
}

/// What [`ResponseBody::on_end`] runs.
type OnEnd = Box<dyn FnOnce(&Status) + Send>;

enum BodyRepr {
    /// A call on a sinew connection (`client::call`).
    Sinew(SinewBody),
    /// Any other source (the gRPC client, a layer's wrapper).
    Boxed(Pin<Box<dyn Stream<Item = ResponseFrame> + Send>>),
    /// The final status was taken.
    Ended,
}

impl ResponseBody {
    /// A body of the frames `frames` yields; it should end with one
    /// `Status` (a stream that ends without one reads as an `INTERNAL` failure).
    pub fn new<S>(frames: S) -> ResponseBody
    where
        S: Stream<Item = ResponseFrame> + Send + 'static,
    {
        ResponseBody {
            repr: BodyRepr::Boxed(Box::pin(frames)),
            trailers: None,
            on_end: None,
            tally: None,
        }
    }

    /// A body with no message, ending with `status`.
    pub fn from_status(status: Status) -> ResponseBody {
        ResponseBody::new(futures_util::stream::once(std::future::ready(
            ResponseFrame::Status(status),
        )))
    }

    pub(crate) fn sinew(body: SinewBody) -> ResponseBody {
        ResponseBody {
            repr: BodyRepr::Sinew(body),
            trailers: None,
            on_end: None,
            tally: None,
        }
    }

    /// The next frame; `None` once the final status was taken.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<ResponseFrame>> {
        let frame = match &mut self.repr {
            BodyRepr::Sinew(body) => std::task::ready!(body.poll_frame(cx)),
            BodyRepr::Boxed(frames) => match std::task::ready!(frames.as_mut().poll_next(cx)) {
                Some(frame) => frame,
                None => {
                    ResponseFrame::Status(Status::internal("the response ended without a status"))
                }
            },
            BodyRepr::Ended => return Poll::Ready(None),
        };
        if let ResponseFrame::Message(bytes) = &frame {
            count_received(&self.tally, bytes.len());
        }
        if let ResponseFrame::Status(status) = &frame {
            self.repr = BodyRepr::Ended;
            if let Some(on_end) = self.on_end.take() {
                on_end(status);
            }
        }
        Poll::Ready(Some(frame))
    }

    /// Runs `on_end` with the call's final status when the body reaches it,
    /// however it is read, or with `CANCELLED` if the body is dropped before
    /// (which cancels the call): for layers that watch a call's end (its
    /// duration, its outcome) without wrapping the body, which would cost
    /// the unary fast path. Callbacks added by several layers all run, the
    /// last added first. Added after the end was taken, it does not run
    /// (whoever took the end saw it): add it when the response arrives.
    pub fn on_end(&mut self, on_end: impl FnOnce(&Status) + Send + 'static) {
        if matches!(self.repr, BodyRepr::Ended) {
            // The end is past: whoever took it saw it.
            return;
        }
        self.on_end = Some(match self.on_end.take() {
            None => Box::new(on_end),
            Some(earlier) => Box::new(move |status: &Status| {
                on_end(status);
                earlier(status);
            }),
        });
    }

    /// Counts the messages read from here on (the same tally to every
    /// layer that asks): for a layer that reports sizes, read when the body
    /// ends ([`ResponseBody::on_end`]). Nothing is counted for bodies no
    /// layer asked about.
    pub fn tally_messages(&mut self) -> Arc<MessageTally> {
        self.tally.get_or_insert_with(Arc::default).clone()
    }

    /// The next message; `Ok(None)` at an OK end (the trailing metadata is
    /// then in [`ResponseBody::trailers`]), or the call's failure.
    pub async fn message(&mut self) -> Result<Option<Bytes>, Status> {
        poll_fn(|cx| self.poll_message(cx)).await
    }

    pub(crate) fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, Status>> {
        Poll::Ready(match std::task::ready!(self.poll_frame(cx)) {
            Some(ResponseFrame::Message(bytes)) => Ok(Some(bytes)),
            Some(ResponseFrame::Status(status)) if status.code() == Code::Ok => {
                self.trailers = Some(status.into_metadata());
                Ok(None)
            }
            Some(ResponseFrame::Status(status)) => Err(status),
            None => Ok(None),
        })
    }

    /// The whole response of a call that has one message, when it is already
    /// here (a unary call's message and status usually come together): the
    /// message and the trailing metadata, or the failure. `None` when it must
    /// be read frame by frame.
    pub(crate) fn take_whole_single(&mut self) -> Option<Result<(Bytes, MetadataMap), Status>> {
        let BodyRepr::Sinew(body) = &mut self.repr else {
            return None;
        };
        let whole = body.take_whole_single()?;
        self.repr = BodyRepr::Ended;
        if let Ok((message, _)) = &whole {
            count_received(&self.tally, message.len());
        }
        if let Some(on_end) = self.on_end.take() {
            match &whole {
                Ok(_) => on_end(&Status::new(Code::Ok, "")),
                Err(status) => on_end(status),
            }
        }
        Some(whole)
    }

    /// Trailing metadata, once the body has ended with an OK status.
    pub fn trailers(&self) -> Option<&MetadataMap> {
        self.trailers.as_ref()
    }

    /// Takes the trailing metadata (see [`ResponseBody::trailers`]).
    pub fn take_trailers(&mut self) -> Option<MetadataMap> {
        self.trailers.take()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(&Status::cancelled(
                "the caller dropped the response before its end",
            ));
        }
    }
}

impl Stream for ResponseBody {
    type Item = ResponseFrame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ResponseFrame>> {
        self.get_mut().poll_frame(cx)
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.repr {
            BodyRepr::Sinew(_) => "sinew",
            BodyRepr::Boxed(_) => "boxed",
            BodyRepr::Ended => "ended",
        };
        f.debug_struct("ResponseBody")
            .field("state", &state)
            .finish()
    }
}

/// A call's answer as layers and typed clients see it: the response headers
/// (metadata), then the body. A call that fails before its response begins
/// (the server refused it, or answered with a status alone) is an error
/// instead, as in gRPC's trailers-only responses.
#[derive(Debug)]
pub struct CallResponse {
    headers: MetadataMap,
    body: ResponseBody,
    extensions: Extensions,
}

impl CallResponse {
    /// A response with these headers and body.
    pub fn new(headers: MetadataMap, body: ResponseBody) -> CallResponse {
        CallResponse {
            headers,
            body,
            extensions: Extensions::new(),
        }
    }

    /// Response metadata, sent before the messages.
    pub fn headers(&self) -> &MetadataMap {
        &self.headers
    }

    /// Response metadata, mutable.
    pub fn headers_mut(&mut self) -> &mut MetadataMap {
        &mut self.headers
    }

    /// The body.
    pub fn body_mut(&mut self) -> &mut ResponseBody {
        &mut self.body
    }

    /// Per-call extensions set by the transport or layers.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Per-call extensions, mutable.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The headers, the body and the extensions.
    pub fn into_parts(self) -> (MetadataMap, ResponseBody, Extensions) {
        (self.headers, self.body, self.extensions)
    }

    /// A response from its parts.
    pub fn from_parts(
        headers: MetadataMap,
        body: ResponseBody,
        extensions: Extensions,
    ) -> CallResponse {
        CallResponse {
            headers,
            body,
            extensions,
        }
    }
}
