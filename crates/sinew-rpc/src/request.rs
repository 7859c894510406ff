//! [`Request`] and [`Response`]: a message plus the metadata around it.

use futures_core::Stream;
use sinew_wire::MetadataMap;
use std::time::Duration;

/// A request: a message (or a stream of them) with metadata and an optional timeout.
///
/// On the client, set the timeout with [`Request::set_timeout`]; it becomes the
/// call's deadline on both sides. On the server, [`Request::timeout`] is the time
/// the caller allowed, as received.
#[derive(Debug)]
pub struct Request<T> {
    metadata: MetadataMap,
    timeout: Option<Duration>,
    message: T,
}

impl<T> Request<T> {
    /// A request with no metadata and no timeout.
    pub fn new(message: T) -> Request<T> {
        Request {
            metadata: MetadataMap::new(),
            timeout: None,
            message,
        }
    }

    pub(crate) fn from_parts(metadata: MetadataMap, timeout: Option<Duration>, message: T) -> Self {
        Request {
            metadata,
            timeout,
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

    /// Same request with another message.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Request<U> {
        Request {
            metadata: self.metadata,
            timeout: self.timeout,
            message: f(self.message),
        }
    }

    /// The metadata, the timeout and the message, taken apart.
    pub fn into_parts(self) -> (MetadataMap, Option<Duration>, T) {
        (self.metadata, self.timeout, self.message)
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
