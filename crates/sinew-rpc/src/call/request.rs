//! [`CallRequest`]: a call on its way out, whatever its shape and whatever
//! carries it.

use super::Payload;
use crate::status::Status;
use futures_core::Stream;
use sinew_wire::MetadataMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Per-call values that layers and transports pass along (an attempt number,
/// a tracing context, the peer's identity on the server side); typed by
/// `TypeId`, as in `http`.
pub type Extensions = http::Extensions;

/// The method a call is for: `/package.Service/Method`, and what its
/// `.proto` says about running it twice ([`Idempotency`]; generated clients
/// set it). Two paths are equal when their text is.
#[derive(Clone)]
pub struct MethodPath {
    repr: PathRepr,
    idempotency: Idempotency,
}

#[derive(Clone)]
enum PathRepr {
    Static(&'static str),
    Shared(Arc<str>),
}

/// Whether a method may run more than once for one call, as its `.proto`
/// declares it (`option idempotency_level = ...;`, protobuf's
/// `MethodOptions.IdempotencyLevel`). Resilience policies retry and hedge
/// by default only methods that are not [`Idempotency::Unknown`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Idempotency {
    /// Nothing declared: running it twice may do the work twice.
    #[default]
    Unknown,
    /// `IDEMPOTENT`: running it twice has the effect of running it once.
    Idempotent,
    /// `NO_SIDE_EFFECTS`: it changes nothing (a read).
    NoSideEffects,
}

impl Idempotency {
    /// Whether a second run is harmless.
    pub fn is_repeatable(self) -> bool {
        self != Idempotency::Unknown
    }
}

impl MethodPath {
    /// The path as text.
    pub fn as_str(&self) -> &str {
        match &self.repr {
            PathRepr::Static(path) => path,
            PathRepr::Shared(path) => path,
        }
    }

    /// The path, with the method's declared idempotency.
    pub fn with_idempotency(mut self, idempotency: Idempotency) -> MethodPath {
        self.idempotency = idempotency;
        self
    }

    /// What the method's `.proto` declares ([`Idempotency::Unknown`] when
    /// nothing does, or nothing said).
    pub fn idempotency(&self) -> Idempotency {
        self.idempotency
    }
}

impl PartialEq for MethodPath {
    fn eq(&self, other: &MethodPath) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for MethodPath {}

impl std::hash::Hash for MethodPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl From<&'static str> for MethodPath {
    fn from(path: &'static str) -> MethodPath {
        MethodPath {
            repr: PathRepr::Static(path),
            idempotency: Idempotency::Unknown,
        }
    }
}

impl From<String> for MethodPath {
    fn from(path: String) -> MethodPath {
        MethodPath {
            repr: PathRepr::Shared(path.into()),
            idempotency: Idempotency::Unknown,
        }
    }
}

impl From<Arc<str>> for MethodPath {
    fn from(path: Arc<str>) -> MethodPath {
        MethodPath {
            repr: PathRepr::Shared(path),
            idempotency: Idempotency::Unknown,
        }
    }
}

impl fmt::Debug for MethodPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MethodPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request messages of a stream: an `Err` ends the stream and cancels the
/// call with that status (the server sees a cancelled call, never a stream cut
/// short as if it were complete).
pub type PayloadStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

/// What a call sends: exactly one message (unary and server-streaming calls),
/// or a stream of them (client-streaming and bidirectional calls).
pub struct RequestBody {
    kind: BodyKind,
}

enum BodyKind {
    Single(Payload),
    Stream(PayloadStream),
}

impl RequestBody {
    /// A body of exactly one message.
    pub fn single(payload: Payload) -> RequestBody {
        RequestBody {
            kind: BodyKind::Single(payload),
        }
    }

    /// A body of the messages a stream yields, sent as it yields them.
    pub fn stream<S>(messages: S) -> RequestBody
    where
        S: Stream<Item = Result<Payload, Status>> + Send + 'static,
    {
        RequestBody {
            kind: BodyKind::Stream(Box::pin(messages)),
        }
    }

    /// The one message of a single-message body.
    pub fn as_single(&self) -> Option<&Payload> {
        match &self.kind {
            BodyKind::Single(payload) => Some(payload),
            BodyKind::Stream(_) => None,
        }
    }

    /// Whether the body is a stream of messages.
    pub fn is_stream(&self) -> bool {
        matches!(self.kind, BodyKind::Stream(_))
    }

    /// A second body with the same message, for a single-message body (cheap:
    /// the payload is shared); `None` for a stream, which can be sent once.
    pub fn try_clone(&self) -> Option<RequestBody> {
        self.as_single().cloned().map(RequestBody::single)
    }

    /// As [`try_clone`](RequestBody::try_clone), a copy to keep in reserve
    /// in case the send fails and must be made again: the original is still
    /// encoded in place ([`Payload::spare`]).
    pub fn try_spare(&self) -> Option<RequestBody> {
        self.as_single()
            .map(Payload::spare)
            .map(RequestBody::single)
    }

    /// The body as a stream of messages, whatever its kind.
    pub fn into_stream(self) -> PayloadStream {
        match self.kind {
            BodyKind::Single(payload) => {
                Box::pin(futures_util::stream::once(std::future::ready(Ok(payload))))
            }
            BodyKind::Stream(stream) => stream,
        }
    }

    /// The body taken apart: one message, or the stream.
    pub(crate) fn into_single_or_stream(self) -> Result<Payload, PayloadStream> {
        match self.kind {
            BodyKind::Single(payload) => Ok(payload),
            BodyKind::Stream(stream) => Err(stream),
        }
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BodyKind::Single(payload) => f.debug_tuple("Single").field(payload).finish(),
            BodyKind::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// A call on its way out, as client layers and transports see it: the method,
/// request metadata, the deadline, per-call extensions and the body.
///
/// Typed clients build it (encoding the message into a [`Payload`]) and hand
/// it to their service, a [`Channel`](crate::Channel) or any stack of tower
/// layers around one; whatever carries the call reads it from here.
pub struct CallRequest {
    path: MethodPath,
    metadata: MetadataMap,
    deadline: Option<Instant>,
    extensions: Extensions,
    body: RequestBody,
}

impl CallRequest {
    /// A call to `path` (`/package.Service/Method`) with no metadata and no
    /// extensions. Its deadline is the one it inherits when made by a
    /// handler ([`crate::inherit`]), none otherwise.
    pub fn new(path: impl Into<MethodPath>, body: RequestBody) -> CallRequest {
        CallRequest {
            path: path.into(),
            metadata: MetadataMap::new(),
            deadline: crate::inherit::inherited_deadline(),
            extensions: Extensions::new(),
            body,
        }
    }

    /// The method, `/package.Service/Method`.
    pub fn path(&self) -> &MethodPath {
        &self.path
    }

    /// Request metadata.
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// Request metadata, mutable (a layer adding a header).
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    /// When the caller stops waiting, if it set a limit. The transport sends
    /// the time left to the server, which enforces it too.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sets (or clears) the deadline.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Sets the deadline `timeout` from now, or keeps an earlier one.
    pub fn set_timeout(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
    }

    /// Per-call extensions.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Per-call extensions, mutable.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The body.
    pub fn body(&self) -> &RequestBody {
        &self.body
    }

    /// Takes the request apart.
    pub fn into_parts(self) -> CallRequestParts {
        CallRequestParts {
            path: self.path,
            metadata: self.metadata,
            deadline: self.deadline,
            extensions: self.extensions,
            body: self.body,
        }
    }

    /// Puts a request together from its parts.
    pub fn from_parts(parts: CallRequestParts) -> CallRequest {
        CallRequest {
            path: parts.path,
            metadata: parts.metadata,
            deadline: parts.deadline,
            extensions: parts.extensions,
            body: parts.body,
        }
    }

    /// A copy to send again (a retry, a hedge): the payload is shared, not
    /// re-encoded. `None` for a streaming body, which can be sent once.
    pub fn try_clone(&self) -> Option<CallRequest> {
        Some(self.with_body(self.body.try_clone()?))
    }

    /// As [`try_clone`](CallRequest::try_clone), a copy to keep in reserve
    /// for sending the call again if it fails (a retry or fail-over buffer).
    /// Unlike a clone, it does not make the request's message be encoded
    /// into a buffer of its own before it is sent ([`Payload::spare`]): a
    /// call that needs no second send pays only for the copy.
    pub fn try_spare(&self) -> Option<CallRequest> {
        Some(self.with_body(self.body.try_spare()?))
    }

    /// A copy of the request (method, metadata, deadline, extensions)
    /// with `body` for its body: what a layer that sends a streaming call
    /// again builds each attempt from.
    pub fn with_body(&self, body: RequestBody) -> CallRequest {
        CallRequest {
            path: self.path.clone(),
            metadata: self.metadata.clone(),
            deadline: self.deadline,
            extensions: self.extensions.clone(),
            body,
        }
    }
}

impl fmt::Debug for CallRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallRequest")
            .field("path", &self.path)
            .field("metadata", &self.metadata)
            .field("deadline", &self.deadline)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

/// A [`CallRequest`] taken apart ([`CallRequest::into_parts`]).
#[derive(Debug)]
pub struct CallRequestParts {
    /// The method.
    pub path: MethodPath,
    /// Request metadata.
    pub metadata: MetadataMap,
    /// The deadline.
    pub deadline: Option<Instant>,
    /// Per-call extensions.
    pub extensions: Extensions,
    /// The body.
    pub body: RequestBody,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_single_message_request_clones_cheaply_and_a_stream_does_not() {
        let mut request = CallRequest::new(
            "/pkg.Service/Method",
            RequestBody::single(Payload::from_bytes(Bytes::from_static(b"\x08\x01"))),
        );
        request.metadata_mut().insert("x-attempt", "1").unwrap();
        request.set_timeout(Duration::from_secs(5));
        request.extensions_mut().insert(7u32);
        let copy = request.try_clone().expect("one message clones");
        assert_eq!(copy.path().as_str(), "/pkg.Service/Method");
        assert_eq!(copy.metadata().get("x-attempt"), Some("1"));
        assert_eq!(copy.deadline(), request.deadline());
        assert_eq!(copy.extensions().get::<u32>(), Some(&7));
        // The payload is shared, not copied.
        assert_eq!(
            copy.body().as_single().unwrap().to_bytes().as_ptr(),
            request.body().as_single().unwrap().to_bytes().as_ptr()
        );

        let streaming = CallRequest::new(
            "/pkg.Service/Stream",
            RequestBody::stream(futures_util::stream::empty()),
        );
        assert!(streaming.body().is_stream());
        assert!(streaming.try_clone().is_none(), "a stream is sent once");
    }

    #[test]
    fn set_timeout_keeps_an_earlier_deadline() {
        let mut request = CallRequest::new(
            "/pkg.Service/Method",
            RequestBody::single(Payload::from_bytes(Bytes::new())),
        );
        request.set_timeout(Duration::from_millis(100));
        let first = request.deadline().unwrap();
        request.set_timeout(Duration::from_secs(60));
        assert_eq!(request.deadline(), Some(first));
    }
}
