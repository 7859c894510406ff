//! Call metrics, and their Prometheus exposition with the official
//! `prometheus-client` crate.
//!
//! The layers count every call in lock-free per-method tables
//! ([`calls`]); a scrape encodes them, with whatever else was registered
//! ([`Metrics::register`]), in the Prometheus text format. The names and
//! labels are those of the OpenTelemetry semantic conventions for RPC on
//! the server, and of gRPC's OpenTelemetry metrics (A66, retries from A96)
//! on the client, translated as Prometheus translates OpenTelemetry names
//! (dots become underscores, the unit a suffix):
//!
//! | metric | type | labels |
//! |--------|------|--------|
//! | `rpc_server_call_duration_seconds` | histogram | `rpc_system_name` (`sinew`, `grpc`), `rpc_method`, `rpc_response_status_code` |
//! | `rpc_server_call_started_total` | counter | `rpc_system_name`, `rpc_method` |
//! | `grpc_client_attempt_started_total` | counter | `grpc_method`, `grpc_target` |
//! | `grpc_client_attempt_duration_seconds` | histogram | `grpc_method`, `grpc_target`, `grpc_status` |
//! | `grpc_client_call_duration_seconds` | histogram | `grpc_method`, `grpc_target`, `grpc_status` |
//! | `grpc_client_call_retries` | histogram | `grpc_method`, `grpc_target` (calls retried at least once) |
//!
//! Methods are `package.Service/Method`; a server counts paths none of its
//! services offers as `_OTHER`, so a scanner cannot grow the series.

pub mod calls;
pub mod histogram;
mod shard;

pub use calls::ClientTarget;
use calls::ServerMethods;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use calls::{ClientMethod, ServerMethod};
pub use histogram::{Histogram, Snapshot};

/// The call figures of a process, and the Prometheus registry that exposes
/// them with anything else registered. Clones share everything.
#[derive(Clone, Debug)]
pub struct Metrics {
    calls: Arc<Calls>,
    registry: Arc<Mutex<Registry>>,
}

/// What the layers count.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    pub(crate) server: ServerMethods,
    clients: Mutex<HashMap<Arc<str>, Arc<ClientTarget>>>,
}

impl Calls {
    /// The figures of calls to `target` (created at first use; clients with
    /// the same target share them).
    pub(crate) fn client(&self, target: &str) -> Arc<ClientTarget> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(existing) = clients.get(target) {
            return existing.clone();
        }
        let target: Arc<str> = Arc::from(target);
        let created = Arc::new(ClientTarget::new(target.clone()));
        clients.insert(target, created.clone());
        created
    }

    pub(crate) fn clients(&self) -> Vec<Arc<ClientTarget>> {
        let clients = self
            .clients
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut clients: Vec<_> = clients.values().cloned().collect();
        clients.sort_by(|a, b| a.target().cmp(b.target()));
        clients
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// No calls counted yet; the registry holds the call metrics.
    pub fn new() -> Metrics {
        let calls = Arc::new(Calls::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(CallCollector(calls.clone())));
        Metrics {
            calls,
            registry: Arc::new(Mutex::new(registry)),
        }
    }

    pub(crate) fn calls(&self) -> &Arc<Calls> {
        &self.calls
    }

    /// Registers more metrics (the application's own, or a component's
    /// [`Collector`]) to be exposed with the call metrics: `f` gets the
    /// registry.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.lock_registry());
    }

    /// Every metric, in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail, and the collectors' own
        // encoders only fail on a writer's failure.
        let _ =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.lock_registry());
        text
    }

    /// Each server method's figures (a protocol's calls to paths no
    /// service offers under `_OTHER`).
    pub fn server_methods(&self) -> Vec<Arc<ServerMethod>> {
        let mut methods = self.calls.server.all();
        methods.sort_by(|a, b| (a.method(), a.system()).cmp(&(b.method(), b.system())));
        methods
    }

    /// Each client target's figures.
    pub fn client_targets(&self) -> Vec<Arc<ClientTarget>> {
        self.calls.clients()
    }

    fn lock_registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Encodes the call tables at each scrape.
#[derive(Debug)]
struct CallCollector(Arc<Calls>);

/// A histogram snapshot as `prometheus-client` encodes one.
struct Encoded(Snapshot);

impl EncodeMetric for Encoded {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(
            self.0.sum(),
            self.0.count(),
            &self.0.per_bucket(),
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for CallCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let server = self.0.server.all();
        {
            let mut family = encoder.encode_descriptor(
                "rpc_server_call_duration",
                "How long server calls took, from their arrival to their status.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for method in &server {
                for (code, snapshot) in method.durations.snapshots() {
                    let labels = [
                        ("rpc_system_name", method.system),
                        ("rpc_method", &*method.method),
                        ("rpc_response_status_code", code.as_str()),
                    ];
                    Encoded(snapshot).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "rpc_server_call_started",
                "Server calls started.",
                None,
                MetricType::Counter,
            )?;
            for method in &server {
                let labels = [
                    ("rpc_system_name", method.system),
                    ("rpc_method", &*method.method),
                ];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&method.started(), None)?;
            }
        }
        let clients = self.0.clients();
        let per_method: Vec<_> = clients
            .iter()
            .flat_map(|target| {
                target
                    .methods()
                    .into_iter()
                    .map(move |method| (target.target.clone(), target.counts_attempts(), method))
            })
            .collect();
        {
            let mut family = encoder.encode_descriptor(
                "grpc_client_attempt_started",
                "Client call attempts started.",
                None,
                MetricType::Counter,
            )?;
            for (target, _, method) in &per_method {
                let labels = [("grpc_method", &*method.method), ("grpc_target", target)];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&method.attempts_started(), None)?;
            }
        }
        for (name, help, attempts) in [
            (
                "grpc_client_attempt_duration",
                "How long each client call attempt took, to its status.",
                true,
            ),
            (
                "grpc_client_call_duration",
                "How long client calls took as the application saw them, every attempt included.",
                false,
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (target, counts_attempts, method) in &per_method {
                // Without an attempt layer each call was its one attempt.
                let durations = match attempts && *counts_attempts {
                    true => &method.attempt_durations,
                    false => &method.call_durations,
                };
                for (code, snapshot) in durations.snapshots() {
                    let labels = [
                        ("grpc_method", &*method.method),
                        ("grpc_target", &**target),
                        ("grpc_status", code.as_str()),
                    ];
                    Encoded(snapshot).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "grpc_client_call_retries",
                "Retries per client call, of the calls retried at least once.",
                None,
                MetricType::Histogram,
            )?;
            for (target, _, method) in &per_method {
                if let Some(retries) = method.retries.get() {
                    let labels = [("grpc_method", &*method.method), ("grpc_target", target)];
                    Encoded(retries.snapshot()).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sinew_wire::Code;
    use std::time::Duration;

    #[test]
    fn the_exposition_has_cumulative_buckets_at_the_bounds_as_written() {
        let metrics = Metrics::new();
        let other = metrics.calls().server.get("sinew", None);
        other.started.increment();
        other.started.increment();
        let durations = other.durations.get(Code::NotFound);
        durations.observe_duration(Duration::from_micros(250));
        durations.observe_duration(Duration::from_secs(3));
        let text = metrics.encode();
        let series =
            r#"rpc_system_name="sinew",rpc_method="_OTHER",rpc_response_status_code="NOT_FOUND""#;
        for (le, count) in [
            ("0.0001", 0),
            ("0.0003", 1),
            ("2", 1),
            ("5", 2),
            ("+Inf", 2),
        ] {
            let line = format!(
                "rpc_server_call_duration_seconds_bucket{{{series},le=\"{le}\"}} {count}\n"
            );
            assert!(text.contains(&line), "no {line:?} in\n{text}");
        }
        assert!(text.contains(&format!(
            "rpc_server_call_duration_seconds_count{{{series}}} 2\n"
        )));
        assert!(text.contains(
            "rpc_server_call_started_total{rpc_system_name=\"sinew\",rpc_method=\"_OTHER\"} 2\n"
        ));
        assert!(text.contains("# TYPE rpc_server_call_duration_seconds histogram\n"));
    }
}
