//! Sending sampled spans to an OpenTelemetry collector.
//!
//! When a call whose trace is sampled ends, the layer that traced it hands
//! a [`FinishedSpan`] (ids, parent, kind, times, attributes, status) to the
//! telemetry's export queue, without waiting: a bounded queue whose
//! overflow is counted and dropped, never a reason for a call to wait. A
//! task drains the queue in batches (up to 512 spans, or what came within a
//! second) into the exporter. With feature `otlp`, [`otlp`] makes that
//! exporter `opentelemetry-otlp`'s gRPC one, so spans reach any OTLP
//! collector (the OpenTelemetry Collector, Jaeger, Tempo) with the very ids
//! that went into `traceparent`; unsampled calls cost nothing here.

use crate::trace::{SpanId, TraceId};
use sinew_wire::Code;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot};

/// Spans queued for export at most; more are dropped (and counted).
pub const QUEUE: usize = 8192;
/// Spans sent in one export at most.
pub const BATCH: usize = 512;

/// Which side of a call a span is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// The server's span of a call.
    Server,
    /// The client's span of a call.
    Client,
}

/// A span that ended, as exporters receive it.
#[derive(Clone, Debug)]
pub struct FinishedSpan {
    /// `package.Service/Method` (the OpenTelemetry span name of an RPC).
    pub name: Arc<str>,
    /// Server or client.
    pub kind: SpanKind,
    /// The trace.
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// Its parent, if any.
    pub parent_span_id: Option<SpanId>,
    /// Whether the parent is in another process (a server span's caller).
    pub parent_is_remote: bool,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// OpenTelemetry attributes: `rpc.system.name`, `rpc.method`,
    /// `rpc.response.status_code`, `network.peer.address` or
    /// `server.address`.
    pub attributes: Vec<(&'static str, String)>,
    /// How the call ended.
    pub code: Code,
    /// Its status message, when it failed.
    pub message: String,
}

/// Where finished spans go: implemented by [`otlp`]'s exporter, or by an
/// application's own (tests, other backends).
pub trait SpanSink: Send + 'static {
    /// Sends one batch; resolves when done (an error is logged at debug
    /// level and the batch dropped: spans are not worth a retry storm).
    fn export(
        &mut self,
        batch: Vec<FinishedSpan>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

enum Message {
    Span(Box<FinishedSpan>),
    Flush(oneshot::Sender<()>),
}

/// The export queue of a [`Telemetry`](crate::Telemetry): see the module
/// docs. Made with [`Export::spawn`], given to
/// [`TelemetryBuilder::export`](crate::TelemetryBuilder::export).
#[derive(Clone, Debug)]
pub struct Export {
    queue: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

impl Export {
    /// Starts the task that sends queued spans to `sink` (on the current
    /// tokio runtime). It ends when every clone of the `Export` (and so
    /// the telemetry holding it) is gone, after sending what was queued.
    pub fn spawn<S: SpanSink>(mut sink: S) -> Export {
        let (queue, mut receiver) = mpsc::channel::<Message>(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut open = true;
            while open {
                let mut flushed = Vec::new();
                // Wait for a first span, then take what else comes within
                // a second, up to a batch.
                match receiver.recv().await {
                    Some(Message::Span(span)) => batch.push(*span),
                    Some(Message::Flush(done)) => flushed.push(done),
                    None => open = false,
                }
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
                while open && flushed.is_empty() && batch.len() < BATCH && !batch.is_empty() {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(Message::Span(span))) => batch.push(*span),
                        Ok(Some(Message::Flush(done))) => flushed.push(done),
                        Ok(None) => open = false,
                        Err(_elapsed) => break,
                    }
                }
                if !batch.is_empty() {
                    let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    let count = spans.len();
                    if let Err(error) = sink.export(spans).await {
                        tracing::debug!(%error, count, "could not export spans");
                    }
                }
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
        Export {
            queue,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues a span; drops it if the queue is full.
    pub(crate) fn send(&self, span: FinishedSpan) {
        if self.queue.try_send(Message::Span(Box::new(span))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spans dropped because the queue was full (the collector too slow or
    /// away).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Resolves once every span queued before the call was handed to the
    /// sink (and the sink's export returned).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

#[cfg(feature = "otlp")]
pub use otlp::{otlp, OtlpError};

#[cfg(feature = "otlp")]
mod otlp {
    //! The OTLP/gRPC exporter of `opentelemetry-otlp` as a [`SpanSink`].

    use super::{FinishedSpan, SpanKind, SpanSink};
    use opentelemetry::trace::{SpanContext, Status, TraceFlags, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
    use opentelemetry_sdk::Resource;
    use sinew_wire::Code;

    /// Why the OTLP exporter could not be made.
    #[derive(Debug)]
    pub struct OtlpError(String);

    impl std::fmt::Display for OtlpError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot export spans over OTLP: {}", self.0)
        }
    }

    impl std::error::Error for OtlpError {}

    /// Spans sent over OTLP/gRPC to the collector at `endpoint`
    /// (`http://127.0.0.1:4317`), under the resource `service.name =
    /// service_name`. Call within a tokio runtime; pass the result to
    /// [`TelemetryBuilder::export`](crate::TelemetryBuilder::export).
    pub fn otlp(endpoint: &str, service_name: &str) -> Result<super::Export, OtlpError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|error| OtlpError(error.to_string()))?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(service_name.to_owned())
                .build(),
        );
        Ok(super::Export::spawn(Otlp {
            exporter,
            scope: InstrumentationScope::builder("sinew")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }))
    }

    struct Otlp {
        exporter: opentelemetry_otlp::SpanExporter,
        scope: InstrumentationScope,
    }

    impl SpanSink for Otlp {
        async fn export(&mut self, batch: Vec<FinishedSpan>) -> Result<(), String> {
            let spans = batch
                .into_iter()
                .map(|span| span_data(span, &self.scope))
                .collect();
            self.exporter
                .export(spans)
                .await
                .map_err(|error| error.to_string())
        }
    }

    fn span_data(span: FinishedSpan, scope: &InstrumentationScope) -> SpanData {
        let context = SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(span.trace_id.to_bytes()),
            opentelemetry::trace::SpanId::from_bytes(span.span_id.to_bytes()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let status = match span.code {
            Code::Ok => Status::Unset,
            code => Status::error(format!("{}: {}", code.as_str(), span.message)),
        };
        SpanData {
            span_context: context,
            parent_span_id: span
                .parent_span_id
                .map_or(opentelemetry::trace::SpanId::INVALID, |parent| {
                    opentelemetry::trace::SpanId::from_bytes(parent.to_bytes())
                }),
            parent_span_is_remote: span.parent_is_remote,
            span_kind: match span.kind {
                SpanKind::Server => opentelemetry::trace::SpanKind::Server,
                SpanKind::Client => opentelemetry::trace::SpanKind::Client,
            },
            name: span.name.to_string().into(),
            start_time: span.start,
            end_time: span.end,
            attributes: span
                .attributes
                .into_iter()
                .map(|(key, value)| KeyValue::new(key, value))
                .collect(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Collected(Arc<Mutex<Vec<Vec<FinishedSpan>>>>);

    impl SpanSink for Collected {
        async fn export(&mut self, batch: Vec<FinishedSpan>) -> Result<(), String> {
            self.0.lock().unwrap().push(batch);
            Ok(())
        }
    }

    fn span(index: u64) -> FinishedSpan {
        FinishedSpan {
            name: Arc::from("a.B/C"),
            kind: SpanKind::Server,
            trace_id: TraceId::random(),
            span_id: SpanId::from_u64(index + 1).unwrap(),
            parent_span_id: None,
            parent_is_remote: false,
            start: SystemTime::now(),
            end: SystemTime::now(),
            attributes: Vec::new(),
            code: Code::Ok,
            message: String::new(),
        }
    }

    #[tokio::test]
    async fn spans_go_out_in_batches_and_a_flush_waits_for_them() {
        let collected = Collected::default();
        let export = Export::spawn(collected.clone());
        for index in 0..1000 {
            export.send(span(index));
        }
        export.flush().await;
        let batches = collected.0.lock().unwrap().clone();
        assert!(batches.iter().all(|batch| batch.len() <= BATCH));
        let sent: Vec<u64> = batches
            .iter()
            .flatten()
            .map(|span| span.span_id.to_u64())
            .collect();
        assert_eq!(sent, (1..=1000).collect::<Vec<_>>());
        assert_eq!(export.dropped(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_rather_than_wait() {
        struct Stuck;
        impl SpanSink for Stuck {
            async fn export(&mut self, _batch: Vec<FinishedSpan>) -> Result<(), String> {
                std::future::pending().await
            }
        }
        let export = Export::spawn(Stuck);
        for index in 0..(QUEUE + BATCH + 100) as u64 {
            export.send(span(index));
        }
        assert!(export.dropped() >= 100, "{}", export.dropped());
    }
}
