//! [`ServerTelemetryLayer`]: a span, a trace context and metrics for every
//! call a server takes, whatever protocol carried it.
//!
//! For each call the layer reads the caller's trace context from the
//! metadata (`traceparent`, `tracestate`, `baggage`), makes the call's own
//! span a child of it (or the root of a new trace), opens a `tracing` span
//! `rpc.server` with the OpenTelemetry RPC attributes, and runs the rest of
//! the stack and the handler inside both: events the handler logs carry the
//! span's `trace_id`, and the calls it makes continue the trace
//! ([`TraceContext::current`]). When the call ends, however it ends, its
//! duration goes into `rpc.server.call.duration` under its status, and a
//! failed or slow call into the recent calls.
//!
//! Put it first ([`ServerBuilder::layer`](sinew_rpc::ServerBuilder::layer)
//! before the others), so that calls other layers refuse are counted and
//! traced too.

use crate::export::{FinishedSpan, SpanKind};
use crate::metrics::ServerMethod;
use crate::recent::{RecentCall, Side};
use crate::trace::{self, propagation, MessageSizes, TraceContext};
use crate::Shared;
use pin_project_lite::pin_project;
use sinew_rpc::call::MessageTally;
use sinew_rpc::server::ServerCall;
use sinew_rpc::Status;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};
use tower::{Layer, Service};
use tracing::field::Empty;

/// Traces and counts every call of a server: see the module docs. Made by
/// [`Telemetry::server_layer`](crate::Telemetry::server_layer).
#[derive(Clone, Debug)]
pub struct ServerTelemetryLayer {
    pub(crate) shared: Arc<Shared>,
}

impl<S> Layer<S> for ServerTelemetryLayer {
    type Service = ServerTelemetry<S>;

    fn layer(&self, inner: S) -> ServerTelemetry<S> {
        ServerTelemetry {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A server stack behind a [`ServerTelemetryLayer`].
#[derive(Clone, Debug)]
pub struct ServerTelemetry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<ServerCall> for ServerTelemetry<S>
where
    S: Service<ServerCall, Response = Status, Error = Status>,
{
    type Response = Status;
    type Error = Status;
    type Future = ServerTelemetryFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: ServerCall) -> Self::Future {
        let start = Instant::now();
        let protocol = call.protocol();
        let stats = self
            .shared
            .metrics
            .calls()
            .server
            .get(protocol, call.method());
        stats.started.increment();
        let context = match propagation::extract(call.metadata()) {
            Some(caller) => caller.child(),
            None => TraceContext::new_root(self.shared.sample_root()),
        };
        let span = tracing::info_span!(
            "rpc.server",
            otel.name = &*stats.method,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system.name = protocol,
            rpc.method = &*stats.method,
            rpc.service = trace::service_of(&stats.method),
            rpc.method_original = Empty,
            rpc.response.status_code = Empty,
            network.peer.address = Empty,
            rpc.request.size = Empty,
            rpc.request.messages = Empty,
            rpc.response.size = Empty,
            rpc.response.messages = Empty,
            trace_id = %context.trace_id(),
            span_id = %context.span_id(),
            parent_span_id = Empty,
        );
        if !span.is_disabled() {
            if call.method().is_none() {
                span.record("rpc.method_original", call.path());
            }
            if let Some(address) = call.peer().and_then(|peer| peer.address()) {
                span.record("network.peer.address", tracing::field::display(address));
            }
            if let Some(parent) = context.parent_span_id() {
                span.record("parent_span_id", tracing::field::display(parent));
            }
        }
        // Only a span that will be exported needs its peer as text.
        let exported = context.is_sampled() && self.shared.export.is_some();
        let peer = exported
            .then(|| {
                call.peer()
                    .and_then(|peer| peer.address())
                    .map(ToString::to_string)
            })
            .flatten();
        let original = (exported && call.method().is_none()).then(|| call.path().to_owned());
        // Message sizes only for a span someone records or exports.
        let tally = (!span.is_disabled() || exported).then(|| call.tally_messages());
        let mut context = Some(context);
        let inner = {
            let _entered = span.enter();
            // The layers below and the handler's synchronous start run in
            // the call's context too.
            trace::enter(&mut context, || self.inner.call(call))
        };
        ServerTelemetryFuture {
            inner,
            span,
            context,
            start,
            stats,
            shared: self.shared.clone(),
            exported: (peer, original),
            tally,
        }
    }
}

pin_project! {
    /// A call running under a [`ServerTelemetry`]: polls the stack inside
    /// the call's span and trace context, and records the call's end.
    pub struct ServerTelemetryFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        context: Option<TraceContext>,
        start: Instant,
        stats: Arc<ServerMethod>,
        shared: Arc<Shared>,
        // For an exported span: the peer's address and the path as sent
        // (for a method no service offers).
        exported: (Option<String>, Option<String>),
        // The call's messages both ways, for a recorded or exported span.
        tally: Option<Arc<MessageTally>>,
    }
}

impl<F> Future for ServerTelemetryFuture<F>
where
    F: Future<Output = Result<Status, Status>>,
{
    type Output = Result<Status, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let result = {
            let _entered = this.span.enter();
            std::task::ready!(trace::enter(this.context, || inner.poll(cx)))
        };
        let status = match &result {
            Ok(status) | Err(status) => status,
        };
        let elapsed = this.start.elapsed();
        this.stats
            .durations
            .get(status.code())
            .observe_duration(elapsed);
        // The server received the request and sent the response.
        let sizes = this.tally.as_ref().map(|tally| MessageSizes {
            request: Some(tally.received()),
            response: Some(tally.sent()),
        });
        if !this.span.is_disabled() {
            if let Some(sizes) = &sizes {
                sizes.record(this.span);
            }
            this.span
                .record("rpc.response.status_code", status.code().as_str());
            if status.code() != sinew_rpc::Code::Ok {
                this.span.record("otel.status_code", "ERROR");
                let _entered = this.span.enter();
                tracing::debug!(
                    code = status.code().as_str(),
                    status_message = status.message(),
                    elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                    "call failed"
                );
            }
        }
        if let (Some(export), Some(context)) = (&this.shared.export, this.context.as_ref()) {
            if context.is_sampled() {
                let (peer, original) = std::mem::take(this.exported);
                let mut attributes = vec![
                    ("rpc.system.name", this.stats.system.to_owned()),
                    ("rpc.method", this.stats.method.to_string()),
                    (
                        "rpc.service",
                        trace::service_of(&this.stats.method).to_owned(),
                    ),
                    (
                        "rpc.response.status_code",
                        status.code().as_str().to_owned(),
                    ),
                ];
                if let Some(peer) = peer {
                    attributes.push(("network.peer.address", peer));
                }
                if let Some(sizes) = &sizes {
                    sizes.push_attributes(&mut attributes);
                }
                // A path no service describes (a forwarding server's
                // calls) names the span as sent; the metrics keep `_OTHER`.
                let name = match &original {
                    Some(path) => Arc::from(path.trim_start_matches('/')),
                    None => this.stats.method.clone(),
                };
                if let Some(original) = original {
                    attributes.push(("rpc.method_original", original));
                }
                let end = SystemTime::now();
                export.send(FinishedSpan {
                    name,
                    kind: SpanKind::Server,
                    trace_id: context.trace_id(),
                    span_id: context.span_id(),
                    parent_span_id: context.parent_span_id(),
                    parent_is_remote: true,
                    start: end.checked_sub(elapsed).unwrap_or(end),
                    end,
                    attributes,
                    code: status.code(),
                    message: status.message().to_owned(),
                });
            }
        }
        if this.shared.recent.wants(status.code(), elapsed) {
            if let Some(context) = this.context.as_ref() {
                this.shared.recent.push(RecentCall {
                    ended: SystemTime::now(),
                    side: Side::Server,
                    method: this.stats.method.clone(),
                    peer: Arc::from(this.stats.system),
                    code: status.code(),
                    message: status.message().to_string(),
                    duration: elapsed,
                    trace_id: context.trace_id(),
                });
            }
        }
        Poll::Ready(result)
    }
}
