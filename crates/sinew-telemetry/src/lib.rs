//! Observability for sinew: a span for every call, W3C trace context across
//! services, Prometheus metrics, and an admin HTTP endpoint.
//!
//! Everything hangs off one [`Telemetry`] handle, and everything on the
//! call path is a tower layer, so it works the same over sinew's protocol
//! on every transport and over gRPC:
//!
//! * [`Telemetry::server_layer`] for a server's stack
//!   ([`ServerBuilder::layer`](sinew_rpc::ServerBuilder::layer)): reads the
//!   caller's `traceparent`, opens an `rpc.server` span, makes the call's
//!   trace context current while the handler runs, counts the call.
//! * [`Telemetry::client_layer`] (and [`Telemetry::attempt_layer`] under a
//!   retrying layer) for a client's: continues the current trace in the
//!   request's metadata, opens an `rpc.client` span, counts the call.
//! * [`Telemetry::serve_admin`]: `/metrics`, `/healthz`, `/readyz`.
//! * [`Telemetry::watch_server`] (and `watch_balanced`, `watch_breaker`,
//!   `watch_limit` with features `cluster` and `resilience`): a part's
//!   state (connections, bytes, limits hit, endpoints, circuits) in the
//!   metrics and the dashboard, read when asked ([`components`]).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use sinew_telemetry::Telemetry;
//! let telemetry = Telemetry::new();
//! let server = sinew_rpc::Server::builder().layer(telemetry.server_layer());
//! let admin = telemetry.serve_admin("127.0.0.1:9000".parse().unwrap()).await?;
//! // ... once the server listens (and set_not_ready("draining") when it drains):
//! telemetry.readiness().set_ready();
//! # let _ = (server, admin);
//! # Ok(())
//! # }
//! ```
//!
//! The spans are `tracing` spans at `INFO`, with the OpenTelemetry RPC
//! attributes (`rpc.system.name`, `rpc.method`, `rpc.service`, `rpc.response.status_code`,
//! `network.peer.address`), the messages each way (`rpc.request.size` and
//! `rpc.response.size` in encoded bytes, `rpc.request.messages`,
//! `rpc.response.messages`; counted only for a span a subscriber records or
//! an exporter sends) and the call's `trace_id` and `span_id`, so
//! whatever a handler logs inside its call carries the trace id; a
//! subscriber that does not want them filters the target
//! `sinew_telemetry`. Metric names are listed in [`metrics`].
//!
//! Sampled spans go to an OpenTelemetry collector with feature `otlp`
//! ([`export::otlp`], [`TelemetryBuilder::export`]), with the ids that went
//! into `traceparent`, so a trace is whole across sinew and other
//! OpenTelemetry services. Sampling is decided where a trace starts: the
//! sampled flag is passed on as received, and new traces are sampled at
//! [`TelemetryBuilder::sample_ratio`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod client;
pub mod components;
pub mod export;
pub mod metrics;
pub mod recent;
pub mod server;
pub mod timeline;
pub mod trace;

pub use admin::{AdminServer, Readiness};
pub use client::{AttemptTelemetryLayer, ClientTelemetryLayer};
pub use metrics::Metrics;
pub use recent::{RecentCall, Side};
pub use server::ServerTelemetryLayer;
pub use trace::{SpanId, TraceContext, TraceId};

use recent::RecentCalls;
use std::sync::Arc;
use std::time::Duration;

/// The telemetry of a process: its metrics, its recent slow and failed
/// calls, its readiness, and the layers that feed them. Clones share all.
#[derive(Clone, Debug)]
pub struct Telemetry {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) metrics: Metrics,
    /// The parts whose figures the metrics and the dashboard show.
    watched: Arc<components::Watched>,
    pub(crate) recent: RecentCalls,
    readiness: Readiness,
    sample_ratio: f64,
    pub(crate) export: Option<export::Export>,
    timeline: std::sync::OnceLock<timeline::Timeline>,
    started: std::time::SystemTime,
}

impl Shared {
    /// Whether a new trace started here is sampled.
    pub(crate) fn sample_root(&self) -> bool {
        self.sample_ratio >= 1.0 || (self.sample_ratio > 0.0 && fastrand::f64() < self.sample_ratio)
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    /// Telemetry with the defaults of [`TelemetryBuilder`].
    pub fn new() -> Telemetry {
        Telemetry::builder().build()
    }

    /// Telemetry with settings.
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }

    /// A layer for a server's stack: see [`server`].
    pub fn server_layer(&self) -> ServerTelemetryLayer {
        ServerTelemetryLayer {
            shared: self.shared.clone(),
        }
    }

    /// A layer for the top of a client's stack, whose calls go to `target`
    /// (the address or name it was made for: the `grpc_target` label): see
    /// [`client`].
    pub fn client_layer(&self, target: &str) -> ClientTelemetryLayer {
        ClientTelemetryLayer {
            side: Arc::new(client::ClientSide {
                shared: self.shared.clone(),
                target: self.shared.metrics.calls().client(target),
            }),
        }
    }

    /// A layer below a client's retrying layer, counting each attempt: see
    /// [`client`].
    pub fn attempt_layer(&self, target: &str) -> AttemptTelemetryLayer {
        let target = self.shared.metrics.calls().client(target);
        target
            .attempt_layer
            .store(true, std::sync::atomic::Ordering::Relaxed);
        AttemptTelemetryLayer {
            side: Arc::new(client::ClientSide {
                shared: self.shared.clone(),
                target,
            }),
        }
    }

    /// Adds a server's figures (connections, calls in flight, bytes, limits
    /// hit: see [`components`]) to the metrics and the dashboard.
    pub fn watch_server(&self, server: &sinew_rpc::server::ServerHandle) {
        self.shared.watched.server(server.clone());
    }

    /// Adds a balanced client's view of its endpoints (health, ejection,
    /// calls in flight, latency estimate) to the metrics and the dashboard.
    /// The channel is not kept alive by this.
    #[cfg(feature = "cluster")]
    pub fn watch_balanced(&self, channel: &sinew_cluster::Balanced) {
        self.shared.watched.balanced(channel.observer());
    }

    /// Adds a circuit breaker's circuits, under `name`, to the metrics and
    /// the dashboard.
    #[cfg(feature = "resilience")]
    pub fn watch_breaker(&self, name: &str, breaker: &sinew_resilience::BreakerLayer) {
        self.shared.watched.breaker(name, breaker.clone());
    }

    /// Adds an adaptive concurrency limit, under `name`, to the metrics and
    /// the dashboard.
    #[cfg(feature = "resilience")]
    pub fn watch_limit(&self, name: &str, limit: &sinew_resilience::AdaptiveLimitLayer) {
        self.shared.watched.limit(name, limit.clone());
    }

    /// Adds a broker's figures (messages published and delivered, slow
    /// consumers, each work queue's depth, in flight, dead letters) to the
    /// metrics and the dashboard, under `name`. An embedded broker only
    /// (the one that keeps the queues); the broker is kept alive by this.
    #[cfg(feature = "messaging")]
    pub fn watch_broker(&self, name: &str, broker: &sinew_messaging::Broker) {
        self.shared.watched.broker(name, broker.clone());
    }

    /// Reports an HTTP gateway's upstream servers (the
    /// `sinew_gateway_upstream_*` metrics: up, healthy, in flight,
    /// requests, failures, idle connections) under `name`.
    #[cfg(feature = "gateway")]
    pub fn watch_gateway(&self, name: &str, gateway: &sinew_gateway::Gateway) {
        self.shared.watched.gateway(name, gateway.clone());
    }

    /// Every watched part's figures now.
    pub fn components(&self) -> components::Components {
        self.shared.watched.read()
    }

    /// The metrics (to read them, or to register more).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The recent slow and failed calls, newest first.
    pub fn recent_calls(&self) -> Vec<RecentCall> {
        self.shared.recent.list()
    }

    /// How long a call takes to count as slow.
    pub fn slow_call_threshold(&self) -> Duration {
        self.shared.recent.slow_threshold()
    }

    /// What `/readyz` says.
    pub fn readiness(&self) -> &Readiness {
        &self.shared.readiness
    }

    /// The per-second history of every method (the sampler starts on the
    /// current runtime at the first call; the admin endpoint makes that
    /// call).
    pub fn timeline(&self) -> &timeline::Timeline {
        self.shared
            .timeline
            .get_or_init(|| timeline::Timeline::spawn(self.shared.metrics.clone()))
    }

    /// When this telemetry (and so, usually, the process's serving) began.
    pub fn started(&self) -> std::time::SystemTime {
        self.shared.started
    }

    /// Resolves once the spans of the calls that ended so far were handed
    /// to the exporter (at once without one): before a process exits.
    pub async fn flush(&self) {
        if let Some(export) = &self.shared.export {
            export.flush().await;
        }
    }

    /// Spans the exporter had to drop (its queue full: the collector too
    /// slow or unreachable).
    pub fn dropped_spans(&self) -> u64 {
        self.shared
            .export
            .as_ref()
            .map_or(0, export::Export::dropped)
    }

    /// Serves the admin endpoint on `address` (see [`admin`]).
    pub async fn serve_admin(&self, address: std::net::SocketAddr) -> std::io::Result<AdminServer> {
        AdminServer::bind(address, self.clone()).await
    }
}

/// Settings of a [`Telemetry`].
#[derive(Clone, Debug)]
pub struct TelemetryBuilder {
    sample_ratio: f64,
    slow_call: Duration,
    recent_calls: usize,
    export: Option<export::Export>,
}

impl Default for TelemetryBuilder {
    fn default() -> Self {
        TelemetryBuilder {
            sample_ratio: 0.0,
            slow_call: Duration::from_millis(250),
            recent_calls: 100,
            export: None,
        }
    }
}

impl TelemetryBuilder {
    /// The share of the traces started here (calls without a caller's
    /// `traceparent`) marked sampled, from 0 to 1; default 0, since this
    /// crate exports nothing itself: set it when a subscriber exports
    /// spans. A trace that arrives keeps the caller's decision.
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        self
    }

    /// How long a call takes to be kept among the recent slow calls;
    /// default 250 ms.
    pub fn slow_call_threshold(mut self, threshold: Duration) -> Self {
        self.slow_call = threshold;
        self
    }

    /// How many recent slow and failed calls are kept; default 100.
    pub fn recent_calls(mut self, count: usize) -> Self {
        self.recent_calls = count;
        self
    }

    /// Sends the spans of sampled calls to `export` (with feature `otlp`,
    /// [`export::otlp`]: any OpenTelemetry collector).
    pub fn export(mut self, export: export::Export) -> Self {
        self.export = Some(export);
        self
    }

    /// The telemetry.
    pub fn build(self) -> Telemetry {
        let metrics = Metrics::new();
        let watched = Arc::new(components::Watched::default());
        let collector = components::ComponentCollector(watched.clone());
        metrics.register(|registry| registry.register_collector(Box::new(collector)));
        Telemetry {
            shared: Arc::new(Shared {
                metrics,
                watched,
                recent: RecentCalls::new(self.slow_call, self.recent_calls),
                readiness: Readiness::default(),
                sample_ratio: self.sample_ratio,
                export: self.export,
                timeline: std::sync::OnceLock::new(),
                started: std::time::SystemTime::now(),
            }),
        }
    }
}
