//! Client layers: a span, trace context and metrics for the calls a process
//! makes.
//!
//! [`ClientTelemetryLayer`] goes at the top of a client stack (above any
//! retrying layer): each call becomes a child span of the current trace
//! context (that of the call being handled, when a handler makes it; a
//! [`TraceContext`] in the request's extensions if the caller put one
//! there; else a new trace), its context goes into the request metadata
//! for the server, a `tracing` span `rpc.client` covers it, and its
//! duration as the application saw it goes into
//! `grpc.client.call.duration` when its response ends (read to the end,
//! failed, or dropped: `CANCELLED`).
//!
//! [`AttemptTelemetryLayer`] goes below the retrying layer, where each
//! attempt passes: it counts `grpc.client.attempt.started` and
//! `grpc.client.attempt.duration` per attempt, and tells the call layer how
//! many attempts a call took (`grpc.client.call.retries`). Without it the
//! call layer counts each call as its one attempt.

use crate::export::{FinishedSpan, SpanKind};
use crate::metrics::calls::ClientTarget;
use crate::metrics::ClientMethod;
use crate::recent::{RecentCall, Side};
use crate::trace::{self, propagation, MessageSizes, TraceContext};
use crate::Shared;
use pin_project_lite::pin_project;
use sinew_rpc::call::{CallRequest, CallResponse, MessageTally};
use sinew_rpc::{Code, Status};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};
use tower::{Layer, Service};
use tracing::field::Empty;

/// What a client layer shares with its services and their calls: one
/// `Arc` to clone per call (typed clients clone their service for each).
#[derive(Debug)]
pub(crate) struct ClientSide {
    pub(crate) shared: Arc<Shared>,
    pub(crate) target: Arc<ClientTarget>,
}

/// Traces and counts the calls of a client: see the module docs. Made by
/// [`Telemetry::client_layer`](crate::Telemetry::client_layer).
#[derive(Clone, Debug)]
pub struct ClientTelemetryLayer {
    pub(crate) side: Arc<ClientSide>,
}

impl<S> Layer<S> for ClientTelemetryLayer {
    type Service = ClientTelemetry<S>;

    fn layer(&self, inner: S) -> ClientTelemetry<S> {
        ClientTelemetry {
            inner,
            side: self.side.clone(),
            role: Role::Call,
        }
    }
}

/// A client stack behind a [`ClientTelemetryLayer`] (each call) or an
/// [`AttemptTelemetryLayer`] (each attempt).
#[derive(Clone, Debug)]
pub struct ClientTelemetry<S> {
    inner: S,
    side: Arc<ClientSide>,
    role: Role,
}

/// A client stack behind an [`AttemptTelemetryLayer`]: the same service
/// as for calls, counting attempts.
pub type AttemptTelemetry<S> = ClientTelemetry<S>;

/// What a [`ClientTelemetry`] sees pass: whole calls, or attempts.
#[derive(Clone, Copy, Debug)]
enum Role {
    Call,
    Attempt,
}

/// How many attempts a call took, shared by the copies of its request that
/// a retrying layer sends (extensions travel with the copies).
#[derive(Clone, Debug, Default)]
struct AttemptCount(Arc<AtomicU32>);

/// The end of a call or attempt, recorded when its status is known.
struct Ending {
    start: Instant,
    stats: Arc<ClientMethod>,
    span: tracing::Span,
    /// Set on a call (not an attempt): its trace context, and its attempt
    /// counter when an attempt layer counts them.
    call: Option<(TraceContext, Option<AttemptCount>)>,
    side: Arc<ClientSide>,
    /// For a call whose span is recorded or exported: its messages (the
    /// request's known at the start for a single message, the response's
    /// counted as they are read).
    sizes: Option<Sizes>,
}

/// What a call sent and is receiving, for its span.
struct Sizes {
    request: Option<(u64, u64)>,
    response: Option<Arc<MessageTally>>,
}

impl Ending {
    fn end(self, status: &Status) {
        let elapsed = self.start.elapsed();
        let code = status.code();
        match &self.call {
            None => self
                .stats
                .attempt_durations
                .get(code)
                .observe_duration(elapsed),
            Some((context, attempts)) => {
                self.stats
                    .call_durations
                    .get(code)
                    .observe_duration(elapsed);
                // Without an attempt layer below, the call was its one
                // attempt: its duration stands for the attempt's too (see
                // `ClientMethod::attempt_durations`).
                if let Some(attempts) = attempts {
                    let attempts = attempts.0.load(Ordering::Relaxed);
                    if attempts > 1 {
                        self.stats.retries().observe(u64::from(attempts - 1));
                    }
                }
                let sizes = self.sizes.as_ref().map(|sizes| MessageSizes {
                    request: sizes.request,
                    response: sizes.response.as_ref().map(|tally| tally.received()),
                });
                if !self.span.is_disabled() {
                    self.span.record("rpc.response.status_code", code.as_str());
                    if code != Code::Ok {
                        self.span.record("otel.status_code", "ERROR");
                    }
                    if let Some(sizes) = &sizes {
                        sizes.record(&self.span);
                    }
                }
                if self.side.shared.recent.wants(code, elapsed) {
                    self.side.shared.recent.push(RecentCall {
                        ended: SystemTime::now(),
                        side: Side::Client,
                        method: self.stats.method.clone(),
                        peer: self.side.target.target.clone(),
                        code,
                        message: status.message().to_string(),
                        duration: elapsed,
                        trace_id: context.trace_id(),
                    });
                }
                if let Some(export) = &self.side.shared.export {
                    if context.is_sampled() {
                        let end = SystemTime::now();
                        let mut attributes = vec![
                            ("rpc.system.name", "sinew".to_owned()),
                            ("rpc.method", self.stats.method.to_string()),
                            (
                                "rpc.service",
                                trace::service_of(&self.stats.method).to_owned(),
                            ),
                            ("rpc.response.status_code", code.as_str().to_owned()),
                            ("server.address", self.side.target.target.to_string()),
                        ];
                        if let Some(sizes) = &sizes {
                            sizes.push_attributes(&mut attributes);
                        }
                        export.send(FinishedSpan {
                            name: self.stats.method.clone(),
                            kind: SpanKind::Client,
                            trace_id: context.trace_id(),
                            span_id: context.span_id(),
                            parent_span_id: context.parent_span_id(),
                            parent_is_remote: false,
                            start: end.checked_sub(elapsed).unwrap_or(end),
                            end,
                            attributes,
                            code,
                            message: status.message().to_owned(),
                        });
                    }
                }
            }
        }
    }
}

pin_project! {
    /// A call or attempt under a client telemetry layer: resolves as the
    /// inner one does, and records the end (at once for a failure, when
    /// the body ends for a response, `CANCELLED` if dropped before either).
    pub struct ClientTelemetryFuture<F> {
        #[pin]
        inner: F,
        ending: EndOnDrop,
    }
}

/// Records a call that is dropped before its response begins (a timeout
/// around it, a losing hedge, a cancelled handler) as `CANCELLED`.
struct EndOnDrop(Option<Ending>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Some(ending) = self.0.take() {
            ending.end(&Status::cancelled(
                "the caller dropped the call before its response began",
            ));
        }
    }
}

impl<F> Future for ClientTelemetryFuture<F>
where
    F: Future<Output = Result<CallResponse, Status>>,
{
    type Output = Result<CallResponse, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = std::task::ready!(this.inner.poll(cx));
        if let Some(mut ending) = this.ending.0.take() {
            match &mut result {
                Ok(response) => {
                    if let Some(sizes) = &mut ending.sizes {
                        sizes.response = Some(response.body_mut().tally_messages());
                    }
                    response.body_mut().on_end(move |status| ending.end(status))
                }
                Err(status) => ending.end(status),
            }
        }
        Poll::Ready(result)
    }
}

impl<S> Service<CallRequest> for ClientTelemetry<S>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status>,
{
    type Response = CallResponse;
    type Error = Status;
    type Future = ClientTelemetryFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: CallRequest) -> Self::Future {
        match self.role {
            Role::Call => self.whole_call(request),
            Role::Attempt => self.attempt(request),
        }
    }
}

impl<S> ClientTelemetry<S>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status>,
{
    /// A call: its span, its trace context sent on, its end recorded.
    fn whole_call(&mut self, mut request: CallRequest) -> ClientTelemetryFuture<S::Future> {
        let start = Instant::now();
        let target = &self.side.target;
        let stats = target.get(request.path().as_str());
        let context = match request
            .extensions()
            .get::<TraceContext>()
            .cloned()
            .or_else(TraceContext::current)
        {
            Some(parent) => parent.child(),
            None => TraceContext::new_root(self.side.shared.sample_root()),
        };
        propagation::inject(&context, request.metadata_mut());
        // A counter of attempts only for an attempt layer to count in (an
        // extension costs a map and a box per call).
        let attempts = if target.attempt_layer.load(Ordering::Relaxed) {
            let attempts = AttemptCount::default();
            request.extensions_mut().insert(attempts.clone());
            Some(attempts)
        } else {
            // The call is its one attempt.
            stats.attempts_started.increment();
            None
        };
        let span = tracing::info_span!(
            "rpc.client",
            otel.name = &*stats.method,
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system.name = "sinew",
            rpc.method = &*stats.method,
            rpc.service = trace::service_of(&stats.method),
            rpc.response.status_code = Empty,
            server.address = &*target.target,
            rpc.request.size = Empty,
            rpc.request.messages = Empty,
            rpc.response.size = Empty,
            rpc.response.messages = Empty,
            trace_id = %context.trace_id(),
            span_id = %context.span_id(),
            parent_span_id = Empty,
        );
        if !span.is_disabled() {
            if let Some(parent) = context.parent_span_id() {
                span.record("parent_span_id", tracing::field::display(parent));
            }
        }
        // Message sizes only for a span someone records or exports: a
        // single request's now, a stream's not counted.
        let exported = context.is_sampled() && self.side.shared.export.is_some();
        let sizes = (!span.is_disabled() || exported).then(|| Sizes {
            request: request
                .body()
                .as_single()
                .map(|payload| (1, payload.encoded_len() as u64)),
            response: None,
        });
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let ending = Ending {
            start,
            stats,
            span,
            call: Some((context, attempts)),
            side: self.side.clone(),
            sizes,
        };
        ClientTelemetryFuture {
            inner: response,
            ending: EndOnDrop(Some(ending)),
        }
    }
}

/// Counts each attempt of a call: see the module docs. Made by
/// [`Telemetry::attempt_layer`](crate::Telemetry::attempt_layer).
#[derive(Clone, Debug)]
pub struct AttemptTelemetryLayer {
    pub(crate) side: Arc<ClientSide>,
}

impl<S> Layer<S> for AttemptTelemetryLayer {
    type Service = ClientTelemetry<S>;

    fn layer(&self, inner: S) -> ClientTelemetry<S> {
        ClientTelemetry {
            inner,
            side: self.side.clone(),
            role: Role::Attempt,
        }
    }
}

impl<S> ClientTelemetry<S>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status>,
{
    /// An attempt: counted, its duration recorded, and the call told.
    fn attempt(&mut self, request: CallRequest) -> ClientTelemetryFuture<S::Future> {
        let start = Instant::now();
        let stats = self.side.target.get(request.path().as_str());
        stats.attempts_started.increment();
        if let Some(attempts) = request.extensions().get::<AttemptCount>() {
            attempts.0.fetch_add(1, Ordering::Relaxed);
        }
        let ending = Ending {
            start,
            stats,
            span: tracing::Span::none(),
            call: None,
            side: self.side.clone(),
            sizes: None,
        };
        ClientTelemetryFuture {
            inner: self.inner.call(request),
            ending: EndOnDrop(Some(ending)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Telemetry;
    use sinew_rpc::call::{CallRequest, CallResponse, Payload, RequestBody};
    use sinew_rpc::{Code, Status};
    use tower::{Layer, Service, ServiceExt};

    fn request() -> CallRequest {
        CallRequest::new(
            "/a.B/C",
            RequestBody::single(Payload::from_bytes(bytes::Bytes::new())),
        )
    }

    #[tokio::test]
    async fn a_call_dropped_before_its_response_counts_as_cancelled() {
        let telemetry = Telemetry::new();
        let mut service = telemetry
            .client_layer("t")
            .layer(tower::service_fn(|_: CallRequest| {
                std::future::pending::<Result<CallResponse, Status>>()
            }));
        let call = service.ready().await.unwrap().call(request());
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(10), call).await;
        assert!(timed_out.is_err());
        let target = &telemetry.metrics().client_targets()[0];
        let method = &target.methods()[0];
        let codes: Vec<(Code, u64)> = method
            .call_durations()
            .iter()
            .map(|(code, snapshot)| (*code, snapshot.count()))
            .collect();
        assert_eq!(codes, [(Code::Cancelled, 1)]);
        assert_eq!(method.attempts_started(), 1);
    }

    #[tokio::test]
    async fn a_failed_call_is_recorded_once() {
        let telemetry = Telemetry::new();
        let mut service = telemetry
            .client_layer("t")
            .layer(tower::service_fn(|_: CallRequest| {
                std::future::ready(Err::<CallResponse, _>(Status::unavailable("down")))
            }));
        let status = service
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        let method = &telemetry.metrics().client_targets()[0].methods()[0];
        let counts: Vec<(Code, u64)> = method
            .call_durations()
            .iter()
            .map(|(code, snapshot)| (*code, snapshot.count()))
            .collect();
        assert_eq!(counts, [(Code::Unavailable, 1)]);
        assert_eq!(telemetry.recent_calls()[0].code, Code::Unavailable);
    }

    #[tokio::test]
    async fn under_a_retrying_layer_each_attempt_counts_and_the_call_once() {
        use sinew_rpc::call::ResponseBody;
        use sinew_wire::MetadataMap;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let telemetry = Telemetry::new();
        // The first attempt fails, the second is answered.
        let sent = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let server = tower::service_fn(move |_: CallRequest| {
            std::future::ready(match counter.fetch_add(1, Ordering::Relaxed) {
                0 => Err(Status::unavailable("first attempt lost")),
                _ => Ok(CallResponse::new(
                    MetadataMap::new(),
                    ResponseBody::from_status(Status::new(Code::Ok, "")),
                )),
            })
        });
        let attempt = telemetry.attempt_layer("t").layer(server);
        // A retrying layer of two attempts, between the two telemetry layers.
        let retrying = tower::service_fn(move |request: CallRequest| {
            let mut attempt = attempt.clone();
            async move {
                let copy = request
                    .try_clone()
                    .expect("a request that can be sent again");
                match attempt.ready().await?.call(request).await {
                    Ok(response) => Ok(response),
                    Err(_) => attempt.ready().await?.call(copy).await,
                }
            }
        });
        let mut service = telemetry.client_layer("t").layer(retrying);
        let mut response = service
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap();
        // The call ends when its body does.
        while std::future::poll_fn(|cx| response.body_mut().poll_frame(cx))
            .await
            .is_some()
        {}
        assert_eq!(sent.load(Ordering::Relaxed), 2);
        let target = &telemetry.metrics().client_targets()[0];
        assert!(target.counts_attempts());
        let method = &target.methods()[0];
        assert_eq!(method.attempts_started(), 2);
        let counts = |durations: Vec<(Code, crate::metrics::Snapshot)>| -> Vec<(Code, u64)> {
            durations
                .iter()
                .map(|(code, snapshot)| (*code, snapshot.count()))
                .collect()
        };
        let mut attempts = counts(method.attempt_durations());
        attempts.sort_by_key(|(code, _)| *code as i32);
        assert_eq!(attempts, [(Code::Ok, 1), (Code::Unavailable, 1)]);
        assert_eq!(counts(method.call_durations()), [(Code::Ok, 1)]);
        // One call retried once.
        let retries = method.retries().snapshot();
        assert_eq!((retries.count(), retries.sum()), (1, 1.0));
    }
}
