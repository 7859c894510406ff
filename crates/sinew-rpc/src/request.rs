//! [`Request`] and [`Response`]: a message plus the metadata around it.

use crate::call::Extensions;
use crate::server::Peer;
use futures_core::Stream;
use sinew_wire::MetadataMap;
use std::sync::Arc;
use std::time::Duration;

/// A request: a message (or a stream of them) with metadata, an optional
/// timeout and per-call extensions.
///
/// On the client, set the timeout with [`Request::set_timeout`]; it becomes the
/// call's deadline on both sides. On the server, [`Request::timeout`] is the time
/// the caller allowed, as received, [`Request::peer`] who called, and the
/// extensions hold what server layers added.
#[derive(Debug)]
pub struct Request<T> {
    metadata: MetadataMap,
    timeout: Option<Duration>,
    extensions: Extensions,
    peer: Option<Arc<Peer>>,
    message: T,
}

impl<T> Request<T> {
    /// A request with no metadata and no timeout.
    pub fn new(message: T) -> Request<T> {
        Request {
            metadata: MetadataMap::new(),
            timeout: None,
            extensions: Extensions::new(),
            peer: None,
            message,
        }
    }

    /// A request from its parts (see [`Request::into_parts`]).
    pub fn from_parts(
        metadata: MetadataMap,
        timeout: Option<Duration>,
        extensions: Extensions,
        message: T,
    ) -> Self {
        Request {
            metadata,
            timeout,
            extensions,
            peer: None,
            message,
        }
    }

    /// The message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }

    /// The message, mutable.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// Takes the message out.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// Request metadata.
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// Request metadata, mutable.
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    /// The time allowed for the call, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Sets the time allowed for the call; the server is told and both sides enforce it.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = Some(timeout);
    }

    /// Per-call extensions: on the server, what server layers added; on the
    /// client, passed to the client's layers.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Per-call extensions, mutable.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// Who called, on the server: the peer's address and process as the
    /// transport knows them (`None` on the client, and for in-process callers).
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_deref()
    }

    pub(crate) fn set_peer(&mut self, peer: Option<Arc<Peer>>) {
        self.peer = peer;
    }

    /// Same request with another message.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Request<U> {
        Request {
            metadata: self.metadata,
            timeout: self.timeout,
            extensions: self.extensions,
            peer: self.peer,
            message: f(self.message),
        }
    }

    /// The metadata, the timeout, the extensions and the message, taken apart.
    pub fn into_parts(self) -> (MetadataMap, Option<Duration>, Extensions, T) {
        (self.metadata, self.timeout, self.extensions, self.message)
    }
}

/// A response: a message (or a stream of them) with the server's metadata.
///
/// For unary and client-streaming calls the client merges response headers and
/// trailers into [`Response::metadata`]; a streaming response carries its headers
/// here and its trailers on the stream.
#[derive(Debug)]
pub struct Response<T> {
    metadata: MetadataMap,
    message: T,
}

impl<T> Response<T> {
    /// A response with no metadata.
    pub fn new(message: T) -> Response<T> {
        Response {
            metadata: MetadataMap::new(),
            message,
        }
    }

    /// A response from its metadata and message.
    pub fn from_parts(metadata: MetadataMap, message: T) -> Response<T> {
        Response { metadata, message }
    }

    /// The message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }

    /// The message, mutable.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// Takes the message out.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// Response metadata.
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// Response metadata, mutable (server side: sent as response headers).
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    /// The metadata and the message, taken apart.
    pub fn into_parts(self) -> (MetadataMap, T) {
        (self.metadata, self.message)
    }
}

/// Anything a unary or server-streaming client method accepts: a message or a
/// [`Request`] around one.
pub trait IntoRequest<T> {
    /// Wraps into a request.
    fn into_request(self) -> Request<T>;
}

impl<T> IntoRequest<T> for T {
    fn into_request(self) -> Request<T> {
        Request::new(self)
    }
}

impl<T> IntoRequest<T> for Request<T> {
    fn into_request(self) -> Request<T> {
        self
    }
}

/// Anything a client-streaming or bidirectional client method accepts: a stream
/// of messages, or a [`Request`] around one.
pub trait IntoStreamingRequest {
    /// The stream of messages.
    type Stream: Stream<Item = Self::Message> + Send + 'static;
    /// The message type.
    type Message;
    /// Wraps into a request.
    fn into_streaming_request(self) -> Request<Self::Stream>;
}

impl<S: Stream + Send + 'static> IntoStreamingRequest for S {
    type Stream = S;
    type Message = S::Item;
    fn into_streaming_request(self) -> Request<S> {
        Request::new(self)
    }
}

impl<S: Stream + Send + 'static> IntoStreamingRequest for Request<S> {
    type Stream = S;
    type Message = S::Item;
    fn into_streaming_request(self) -> Request<S> {
        self
    }
}
