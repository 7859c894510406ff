//! Trace context: which trace a call belongs to, and the span it is a child
//! of, as W3C Trace Context defines them (`traceparent`, `tracestate`) plus
//! W3C Baggage.
//!
//! A [`TraceContext`] is the position of the current unit of work in a
//! distributed trace: a 16-byte trace id shared by every span of the trace,
//! the 8-byte id of the current span, the sampled flag, and the two opaque
//! passengers that travel with it (`tracestate`, vendors' entries; `baggage`,
//! application key-values). The server layer makes one for every call
//! (a child of the caller's, or the root of a new trace) and makes it
//! current while the handler runs ([`TraceContext::current`]); the client
//! layer makes each outgoing call a child of the current context and writes
//! it into the call's metadata ([`propagation`]). So a trace crosses a
//! handler's own calls without the handler passing anything. Work a handler
//! moves to a task of its own takes the context along with
//! [`TraceContext::scope`], or by putting it in the outgoing request's
//! extensions.
//!
//! This module generates ids and carries them; it records nothing. Spans
//! are `tracing` spans (see [`crate::server`], [`crate::client`]), and what
//! is sampled decides what an exporter would send.

pub mod propagation;

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The 16-byte id of a trace, never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(u128);

impl TraceId {
    /// A random trace id.
    pub fn random() -> TraceId {
        loop {
            let id = fastrand::u128(..);
            if id != 0 {
                return TraceId(id);
            }
        }
    }

    /// The id with these bytes (big-endian, as W3C writes them); `None` for
    /// all zeros, which W3C reserves for "invalid".
    pub fn from_u128(id: u128) -> Option<TraceId> {
        (id != 0).then_some(TraceId(id))
    }

    /// The id as a number.
    pub fn to_u128(self) -> u128 {
        self.0
    }

    /// The id's 16 bytes, big-endian.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for TraceId {
    /// 32 lowercase hex digits, as in `traceparent`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// The 8-byte id of a span, never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(u64);

impl SpanId {
    /// A random span id.
    pub fn random() -> SpanId {
        loop {
            let id = fastrand::u64(..);
            if id != 0 {
                return SpanId(id);
            }
        }
    }

    /// The id with this value; `None` for zero (invalid in W3C).
    pub fn from_u64(id: u64) -> Option<SpanId> {
        (id != 0).then_some(SpanId(id))
    }

    /// The id as a number.
    pub fn to_u64(self) -> u64 {
        self.0
    }

    /// The id's 8 bytes, big-endian.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for SpanId {
    /// 16 lowercase hex digits, as in `traceparent`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// Where the current unit of work sits in a distributed trace: see the
/// module docs. Cheap to clone (the passengers are shared).
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    sampled: bool,
    /// The `tracestate` header, passed on as it came (already checked).
    state: Option<Arc<str>>,
    /// The `baggage` header, passed on as it came (already checked).
    baggage: Option<Arc<str>>,
}

impl TraceContext {
    /// The first span of a new trace: fresh ids, no parent, no passengers.
    pub fn new_root(sampled: bool) -> TraceContext {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent_span_id: None,
            sampled,
            state: None,
            baggage: None,
        }
    }

    /// A context with these ids (for bridges from other tracing systems and
    /// tests); its span has no parent.
    pub fn from_ids(trace_id: TraceId, span_id: SpanId, sampled: bool) -> TraceContext {
        TraceContext {
            trace_id,
            span_id,
            parent_span_id: None,
            sampled,
            state: None,
            baggage: None,
        }
    }

    /// A new span in the same trace whose parent is this context's span:
    /// same trace id, sampled flag and passengers, a fresh span id.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: SpanId::random(),
            parent_span_id: Some(self.span_id),
            sampled: self.sampled,
            state: self.state.clone(),
            baggage: self.baggage.clone(),
        }
    }

    /// The trace this span belongs to.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This span's id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The id of the span this one is a child of (possibly in another
    /// process); `None` for a trace's root.
    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.parent_span_id
    }

    /// Whether the trace is sampled (recorded and exported by whoever
    /// exports); the `traceparent` flag passed on to the next hop.
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// The `tracestate` entries that came with the trace, as received.
    pub fn trace_state(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// The `baggage` header that came with the trace, as received.
    pub fn baggage_header(&self) -> Option<&str> {
        self.baggage.as_deref()
    }

    /// The value of baggage entry `key`, percent-decoded (W3C Baggage);
    /// `None` if there is none or it is not UTF-8.
    pub fn baggage(&self, key: &str) -> Option<String> {
        propagation::baggage_value(self.baggage.as_deref()?, key)
    }

    /// The same context with `baggage` as its baggage header (`key=value`
    /// entries separated by commas, values percent-encoded): what this
    /// process's outgoing calls carry from now on. Refused (`Err` with the
    /// reason) if it is not valid W3C Baggage or exceeds its limits
    /// (64 entries, 8,192 bytes).
    pub fn with_baggage(mut self, baggage: &str) -> Result<TraceContext, &'static str> {
        propagation::check_baggage(baggage)?;
        self.baggage = (!baggage.is_empty()).then(|| Arc::from(baggage));
        Ok(self)
    }

    /// The context of the call the current task is handling (or of the
    /// scope set with [`TraceContext::scope`]); `None` outside any.
    pub fn current() -> Option<TraceContext> {
        CURRENT.with(|current| current.borrow().clone())
    }

    /// Runs `future` with `self` as [`TraceContext::current`] while it is
    /// polled: for work a handler moves to a task of its own.
    pub fn scope<F: Future>(self, future: F) -> Scoped<F> {
        Scoped {
            context: Some(self),
            future,
        }
    }

    /// Runs `f` with `self` as the current context.
    pub fn in_scope<R>(self, f: impl FnOnce() -> R) -> R {
        let mut slot = Some(self);
        enter(&mut slot, f)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("trace_id", &format_args!("{}", self.trace_id))
            .field("span_id", &format_args!("{}", self.span_id))
            .field(
                "parent_span_id",
                &self.parent_span_id.map(|id| id.to_string()),
            )
            .field("sampled", &self.sampled)
            .field("state", &self.state)
            .field("baggage", &self.baggage)
            .finish()
    }
}

thread_local! {
    /// The context of whatever this thread is polling now (see `enter`).
    static CURRENT: RefCell<Option<TraceContext>> = const { RefCell::new(None) };
}

/// Runs `f` with the context in `slot` as the current one, and puts it back
/// into `slot` after (also if `f` panics), restoring whatever was current
/// before: the context moves in and out, nothing is cloned.
pub(crate) fn enter<R>(slot: &mut Option<TraceContext>, f: impl FnOnce() -> R) -> R {
    struct Restore<'a> {
        slot: &'a mut Option<TraceContext>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            CURRENT.with(|current| std::mem::swap(&mut *current.borrow_mut(), self.slot));
        }
    }
    CURRENT.with(|current| std::mem::swap(&mut *current.borrow_mut(), slot));
    let _restore = Restore { slot };
    f()
}

pin_project_lite::pin_project! {
    /// A future polled with a [`TraceContext`] as the current one: see
    /// [`TraceContext::scope`].
    #[derive(Debug)]
    pub struct Scoped<F> {
        context: Option<TraceContext>,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let future = this.future;
        enter(this.context, || future.poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_w3c_writes_them() {
        let trace = TraceId::from_u128(0x4bf92f3577b34da6a3ce929d0e0e4736).unwrap();
        assert_eq!(trace.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let span = SpanId::from_u64(0xff).unwrap();
        assert_eq!(span.to_string(), "00000000000000ff");
        assert!(TraceId::from_u128(0).is_none());
        assert!(SpanId::from_u64(0).is_none());
    }

    #[test]
    fn a_child_shares_the_trace_and_points_at_its_parent() {
        let root = TraceContext::new_root(true)
            .with_baggage("user=alice")
            .unwrap();
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_eq!(child.parent_span_id(), Some(root.span_id()));
        assert_ne!(child.span_id(), root.span_id());
        assert!(child.is_sampled());
        assert_eq!(child.baggage("user").as_deref(), Some("alice"));
    }

    #[test]
    fn the_current_context_is_set_only_inside_its_scope() {
        assert!(TraceContext::current().is_none());
        let outer = TraceContext::new_root(false);
        let inner = outer.child();
        let seen = outer.clone().in_scope(|| {
            let before = TraceContext::current().unwrap().span_id();
            let nested = inner
                .clone()
                .in_scope(|| TraceContext::current().unwrap().span_id());
            let after = TraceContext::current().unwrap().span_id();
            (before, nested, after)
        });
        assert_eq!(seen, (outer.span_id(), inner.span_id(), outer.span_id()));
        assert!(TraceContext::current().is_none());
    }

    #[test]
    fn a_panic_inside_a_scope_restores_the_outer_context() {
        let context = TraceContext::new_root(false);
        let result = std::panic::catch_unwind(|| context.in_scope(|| panic!("boom")));
        assert!(result.is_err());
        assert!(TraceContext::current().is_none());
    }

    #[tokio::test]
    async fn a_scoped_future_sees_its_context_at_every_poll() {
        let context = TraceContext::new_root(true);
        let id = context.span_id();
        let seen = context
            .scope(async {
                let first = TraceContext::current().map(|c| c.span_id());
                tokio::task::yield_now().await;
                let second = TraceContext::current().map(|c| c.span_id());
                (first, second)
            })
            .await;
        assert_eq!(seen, (Some(id), Some(id)));
        assert!(TraceContext::current().is_none());
    }
}

/// A call's messages, as span attributes: what the request and the
/// response carried, as (messages, encoded bytes summed), for whichever
/// side the span is; `None` for a side not counted (a client's streaming
/// request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MessageSizes {
    pub(crate) request: Option<(u64, u64)>,
    pub(crate) response: Option<(u64, u64)>,
}

impl MessageSizes {
    /// Each attribute counted, with its value.
    fn attributes(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let request = self.request.map(|(messages, bytes)| {
            [
                ("rpc.request.size", bytes),
                ("rpc.request.messages", messages),
            ]
        });
        let response = self.response.map(|(messages, bytes)| {
            [
                ("rpc.response.size", bytes),
                ("rpc.response.messages", messages),
            ]
        });
        request.into_iter().chain(response).flatten()
    }

    /// Records them on `span` (declared with the four fields).
    pub(crate) fn record(&self, span: &tracing::Span) {
        for (name, value) in self.attributes() {
            span.record(name, value);
        }
    }

    /// Adds them to an exported span's attributes.
    pub(crate) fn push_attributes(&self, attributes: &mut Vec<(&'static str, String)>) {
        for (name, value) in self.attributes() {
            attributes.push((name, value.to_string()));
        }
    }
}

/// The service of a `package.Service/Method` name (`rpc.service`, which
/// OpenTelemetry's older RPC conventions and many backends still group
/// by); the whole name when it has no method part (`_OTHER`).
pub(crate) fn service_of(method: &str) -> &str {
    method
        .split_once('/')
        .map_or(method, |(service, _)| service)
}
