//! The figures of the parts a process runs, besides its calls: its
//! servers' connections, bytes and limits, each balanced client's view of
//! its endpoints, circuit breakers and adaptive concurrency limits, message
//! brokers and their work queues, HTTP gateways' upstream servers.
//!
//! A part is registered once ([`Telemetry::watch_server`](crate::Telemetry::watch_server)
//! and its siblings) and read when asked: at each Prometheus scrape and each
//! dashboard snapshot, into one [`Components`] value that both encode.
//! Nothing is added to the call path, and a watched balanced channel is held
//! weakly: telemetry never keeps one alive.
//!
//! | metric | type | labels |
//! |--------|------|--------|
//! | `sinew_server_connections` | gauge | |
//! | `sinew_server_connections_accepted_total` | counter | |
//! | `sinew_server_connections_refused_total` | counter | `reason` (`connection_limit`, `address_limit`, `handshake`) |
//! | `sinew_server_open_streams` | gauge (calls in flight) | |
//! | `sinew_server_received_bytes_total`, `sinew_server_sent_bytes_total` | counter | |
//! | `sinew_server_flow_control_stalls_total` | counter | |
//! | `sinew_server_limit_hits_total` | counter | `limit` (`max_concurrent_streams`, `connection_memory`, `request_timeout`, `frame_timeout`, `idle_timeout`, `max_connections`, `max_connections_per_ip`) |
//! | `sinew_server_connection_errors_total` | counter | `reason` (the GOAWAY's: `PROTOCOL_ERROR`, `ENHANCE_YOUR_CALM`, ...) |
//! | `sinew_server_shm_connections`, `sinew_server_shm_ring_bytes`, `sinew_server_shm_ring_used_bytes`, `sinew_server_shm_slabs`, `sinew_server_shm_slabs_in_use` | gauge | |
//! | `sinew_client_endpoint_up` | gauge (1 ready, 0 not) | `target`, `endpoint` |
//! | `sinew_client_endpoint_ejected` | gauge (1 ejected by outlier detection) | `target`, `endpoint` |
//! | `sinew_client_endpoint_in_flight` | gauge | `target`, `endpoint` |
//! | `sinew_client_endpoint_calls_total` | counter | `target`, `endpoint` |
//! | `sinew_client_endpoint_rtt_estimate_seconds` | gauge (peak EWMA) | `target`, `endpoint` |
//! | `sinew_circuit_breaker_state` | gauge (1 for the circuit's state) | `breaker`, `circuit`, `state` (`closed`, `open`, `half-open`) |
//! | `sinew_adaptive_limit`, `sinew_adaptive_limit_in_flight` | gauge | `limit` |
//! | `sinew_adaptive_limit_shed_total` | counter | `limit` |
//! | `sinew_broker_published_total`, `sinew_broker_delivered_total`, `sinew_broker_slow_consumers_total`, `sinew_broker_dropped_total` | counter | `broker` |
//! | `sinew_broker_subscriptions`, `sinew_broker_buffered` | gauge | `broker` |
//! | `sinew_queue_pending`, `sinew_queue_in_flight`, `sinew_queue_delayed`, `sinew_queue_bytes`, `sinew_queue_workers` | gauge | `broker`, `queue` |
//! | `sinew_queue_pushed_total`, `sinew_queue_duplicates_total`, `sinew_queue_acked_total`, `sinew_queue_redelivered_total`, `sinew_queue_dead_lettered_total`, `sinew_queue_terminated_total` | counter | `broker`, `queue` |
//! | `sinew_gateway_upstream_up` (1 while requests may go to it), `sinew_gateway_upstream_healthy` (its active checks), `sinew_gateway_upstream_in_flight`, `sinew_gateway_upstream_idle_connections` | gauge | `gateway`, `upstream`, `server` |
//! | `sinew_gateway_upstream_requests_total`, `sinew_gateway_upstream_failures_total` | counter | `gateway`, `upstream`, `server` |
//! | `sinew_gateway_route_responses_total` | counter | `gateway`, `route`, `code` (`1xx` to `5xx`) |
//! | `sinew_gateway_route_response_seconds_total` (to response heads, summed) | counter | `gateway`, `route` |
//!
//! With several servers watched, the server figures are their sums; two
//! balanced channels to the same service share their endpoints' series
//! (the dashboard lists each channel's); a breaker or a limit watched
//! again under a name already taken replaces the earlier one.

use serde::Serialize;
use sinew_rpc::server::stats::{Limit, Refusal};
use sinew_rpc::server::{ServerHandle, ServerStats};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What is watched.
#[derive(Default)]
pub(crate) struct Watched {
    servers: Mutex<Vec<ServerHandle>>,
    #[cfg(feature = "cluster")]
    balanced: Mutex<Vec<sinew_cluster::BalancedObserver>>,
    #[cfg(feature = "resilience")]
    breakers: Mutex<Vec<(Arc<str>, sinew_resilience::breaker::BreakerLayer)>>,
    #[cfg(feature = "resilience")]
    limits: Mutex<Vec<(Arc<str>, sinew_resilience::limit::AdaptiveLimitLayer)>>,
    #[cfg(feature = "messaging")]
    brokers: Mutex<Vec<(Arc<str>, sinew_messaging::Broker)>>,
    #[cfg(feature = "gateway")]
    gateways: Mutex<Vec<(Arc<str>, sinew_gateway::Gateway)>>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Watched {
    pub(crate) fn server(&self, handle: ServerHandle) {
        let mut servers = lock(&self.servers);
        // The same server watched twice counts once.
        if !servers.contains(&handle) {
            servers.push(handle);
        }
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn balanced(&self, observer: sinew_cluster::BalancedObserver) {
        let mut balanced = lock(&self.balanced);
        // Channels that are gone leave the list when a new one comes; the
        // same channel watched twice is listed once.
        balanced.retain(|known| known.service().is_some() && *known != observer);
        balanced.push(observer);
    }

    #[cfg(feature = "resilience")]
    pub(crate) fn breaker(&self, name: &str, layer: sinew_resilience::breaker::BreakerLayer) {
        let mut breakers = lock(&self.breakers);
        breakers.retain(|(known, _)| **known != *name);
        breakers.push((Arc::from(name), layer));
    }

    #[cfg(feature = "resilience")]
    pub(crate) fn limit(&self, name: &str, layer: sinew_resilience::limit::AdaptiveLimitLayer) {
        let mut limits = lock(&self.limits);
        limits.retain(|(known, _)| **known != *name);
        limits.push((Arc::from(name), layer));
    }

    #[cfg(feature = "messaging")]
    pub(crate) fn broker(&self, name: &str, broker: sinew_messaging::Broker) {
        let mut brokers = lock(&self.brokers);
        brokers.retain(|(known, _)| **known != *name);
        brokers.push((Arc::from(name), broker));
    }

    #[cfg(feature = "gateway")]
    pub(crate) fn gateway(&self, name: &str, gateway: sinew_gateway::Gateway) {
        let mut gateways = lock(&self.gateways);
        gateways.retain(|(known, _)| **known != *name);
        gateways.push((Arc::from(name), gateway));
    }

    /// Every watched part, read now.
    pub(crate) fn read(&self) -> Components {
        let servers = lock(&self.servers);
        let server = (!servers.is_empty()).then(|| {
            let mut sum = ServerFigures::default();
            for handle in servers.iter() {
                sum.add(&handle.stats());
            }
            sum
        });
        drop(servers);
        #[allow(unused_mut)]
        let mut components = Components {
            server,
            clients: Vec::new(),
            breakers: Vec::new(),
            limits: Vec::new(),
            brokers: Vec::new(),
            gateways: Vec::new(),
        };
        #[cfg(feature = "gateway")]
        for (name, gateway) in lock(&self.gateways).iter() {
            components.gateways.push(GatewayFigures::new(name, gateway));
        }
        #[cfg(feature = "messaging")]
        for (name, broker) in lock(&self.brokers).iter() {
            if let Some(stats) = broker.stats_now() {
                components.brokers.push(BrokerFigures::new(name, stats));
            }
        }
        #[cfg(feature = "cluster")]
        for observer in lock(&self.balanced).iter() {
            let (Some(target), Some(endpoints)) = (observer.service(), observer.endpoints()) else {
                continue;
            };
            components.clients.push(ClientFigures {
                target,
                endpoints: endpoints.iter().map(EndpointFigures::from).collect(),
            });
        }
        #[cfg(feature = "resilience")]
        {
            for (name, layer) in lock(&self.breakers).iter() {
                components.breakers.push(BreakerFigures {
                    name: name.to_string(),
                    circuits: layer
                        .states()
                        .into_iter()
                        .map(|(key, state)| CircuitFigures {
                            key: key.to_string(),
                            state: circuit_state(state),
                        })
                        .collect(),
                });
            }
            for (name, layer) in lock(&self.limits).iter() {
                components.limits.push(LimitFigures {
                    name: name.to_string(),
                    limit: layer.limit() as u64,
                    in_flight: layer.in_flight() as u64,
                    shed: layer.shed() as u64,
                });
            }
        }
        components
    }
}

#[cfg(feature = "resilience")]
fn circuit_state(state: sinew_resilience::breaker::CircuitState) -> &'static str {
    use sinew_resilience::breaker::CircuitState;
    match state {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half-open",
    }
}

/// Every watched part's figures at one moment (the dashboard's
/// `components`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Components {
    /// The servers' figures, summed; none without a watched server.
    pub server: Option<ServerFigures>,
    /// Each balanced client's view of its endpoints.
    pub clients: Vec<ClientFigures>,
    /// Each circuit breaker's circuits.
    pub breakers: Vec<BreakerFigures>,
    /// Each adaptive concurrency limit.
    pub limits: Vec<LimitFigures>,
    /// Each message broker.
    pub brokers: Vec<BrokerFigures>,
    /// Each HTTP gateway.
    pub gateways: Vec<GatewayFigures>,
}

/// One HTTP gateway's upstream servers and routes.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayFigures {
    /// The name it was watched under.
    pub name: String,
    /// Every server of every upstream group.
    pub servers: Vec<GatewayServerFigures>,
    /// Every route's responses.
    pub routes: Vec<GatewayRouteFigures>,
}

/// One route of a gateway.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayRouteFigures {
    /// The route's name (its `name`, or its host and path).
    pub route: String,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub responses: [u64; 5],
    /// Seconds from requests to their response heads, summed.
    pub seconds: f64,
}

/// One upstream server of a gateway.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayServerFigures {
    /// Its upstream group.
    pub upstream: String,
    /// Its address.
    pub server: String,
    /// Whether a request may go to it now.
    pub up: bool,
    /// What its active health checks say (true without checks).
    pub healthy: bool,
    /// Requests in flight to it.
    pub in_flight: u64,
    /// Requests sent to it so far.
    pub requests: u64,
    /// Requests to it that failed so far.
    pub failures: u64,
    /// Idle kept-alive connections to it.
    pub idle_connections: u64,
}

#[cfg(feature = "gateway")]
impl GatewayFigures {
    fn new(name: &str, gateway: &sinew_gateway::Gateway) -> GatewayFigures {
        let servers = gateway
            .upstreams()
            .into_iter()
            .flat_map(|(upstream, servers)| {
                servers.into_iter().map(move |server| GatewayServerFigures {
                    upstream: upstream.clone(),
                    server: server.address.to_string(),
                    up: server.usable,
                    healthy: server.healthy,
                    in_flight: server.in_flight as u64,
                    requests: server.requests,
                    failures: server.failures,
                    idle_connections: server.idle_connections as u64,
                })
            })
            .collect();
        let routes = gateway
            .routes()
            .into_iter()
            .map(|route| GatewayRouteFigures {
                route: route.route,
                responses: route.responses,
                seconds: route.seconds,
            })
            .collect();
        GatewayFigures {
            name: name.to_owned(),
            servers,
            routes,
        }
    }
}

/// One message broker and its work queues.
#[derive(Clone, Debug, Serialize)]
pub struct BrokerFigures {
    /// The name it was watched under.
    pub name: String,
    /// Messages published so far.
    pub published: u64,
    /// Copies delivered to subscriptions so far.
    pub delivered: u64,
    /// Subscriptions now.
    pub subscriptions: u64,
    /// Subscriptions ended as slow consumers so far.
    pub slow_consumers: u64,
    /// Messages dropped for slow subscribers so far.
    pub dropped: u64,
    /// Messages waiting in subscriptions' buffers now.
    pub buffered: u64,
    /// Each work queue.
    pub queues: Vec<QueueFigures>,
}

/// One work queue.
#[derive(Clone, Debug, Serialize)]
pub struct QueueFigures {
    /// Its name.
    pub name: String,
    /// Jobs waiting to be delivered.
    pub pending: u64,
    /// Jobs delivered and not settled.
    pub in_flight: u64,
    /// Jobs waiting for a nak's delay.
    pub delayed: u64,
    /// Bytes of payload held.
    pub bytes: u64,
    /// Workers pulling now.
    pub workers: u64,
    /// Jobs pushed so far.
    pub pushed: u64,
    /// Pushes dropped as duplicates so far.
    pub duplicates: u64,
    /// Jobs acked so far.
    pub acked: u64,
    /// Deliveries after the first so far.
    pub redelivered: u64,
    /// Jobs moved to the dead-letter queue so far.
    pub dead_lettered: u64,
    /// Jobs terminated so far.
    pub terminated: u64,
}

#[cfg(feature = "messaging")]
impl BrokerFigures {
    fn new(name: &str, stats: sinew_messaging::BrokerStats) -> BrokerFigures {
        BrokerFigures {
            name: name.to_owned(),
            published: stats.published,
            delivered: stats.delivered,
            subscriptions: stats.subscriptions,
            slow_consumers: stats.slow_consumers,
            dropped: stats.dropped,
            buffered: stats.buffered,
            queues: stats
                .queues
                .into_iter()
                .map(|queue| QueueFigures {
                    name: queue.queue,
                    pending: queue.pending,
                    in_flight: queue.in_flight,
                    delayed: queue.delayed,
                    bytes: queue.bytes,
                    workers: queue.workers,
                    pushed: queue.pushed,
                    duplicates: queue.duplicates,
                    acked: queue.acked,
                    redelivered: queue.redelivered,
                    dead_lettered: queue.dead_lettered,
                    terminated: queue.terminated,
                })
                .collect(),
        }
    }
}

/// A server's figures ([`ServerStats`]) with names for every reason.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerFigures {
    /// Connections open now.
    pub connections: u64,
    /// Connections accepted so far.
    pub accepted: u64,
    /// Connections turned away so far, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// Calls in flight now (open streams).
    pub open_streams: u64,
    /// Calls started so far.
    pub calls_started: u64,
    /// Bytes read so far.
    pub received_bytes: u64,
    /// Bytes written so far.
    pub sent_bytes: u64,
    /// Messages that waited for flow-control window so far.
    pub flow_control_stalls: u64,
    /// Limits that turned something away so far, by limit.
    pub limit_hits: BTreeMap<&'static str, u64>,
    /// Connections ended with an error so far, by reason.
    pub connection_errors: BTreeMap<&'static str, u64>,
    /// Shared-memory connections open now.
    pub shm_connections: u64,
    /// Bytes their rings hold in all.
    pub shm_ring_bytes: u64,
    /// Bytes waiting in their rings now.
    pub shm_ring_bytes_used: u64,
    /// Their slabs in all.
    pub shm_slabs: u64,
    /// Their slabs in use now.
    pub shm_slabs_in_use: u64,
}

impl ServerFigures {
    fn add(&mut self, stats: &ServerStats) {
        self.connections += stats.connections_open;
        self.accepted += stats.connections_accepted;
        self.open_streams += stats.calls_in_flight;
        self.calls_started += stats.calls_started;
        self.received_bytes += stats.bytes_received;
        self.sent_bytes += stats.bytes_sent;
        self.flow_control_stalls += stats.flow_control_stalls;
        self.shm_connections += stats.shm_connections;
        self.shm_ring_bytes += stats.shm_ring_bytes;
        self.shm_ring_bytes_used += stats.shm_ring_bytes_used;
        self.shm_slabs += stats.shm_slabs;
        self.shm_slabs_in_use += stats.shm_slabs_in_use;
        for why in Refusal::ALL {
            *self.refused.entry(why.as_str()).or_default() += stats.refused(why);
        }
        for limit in Limit::ALL {
            *self.limit_hits.entry(limit.as_str()).or_default() += stats.limit_hits(limit);
        }
        for (reason, count) in stats.connection_errors_by_reason() {
            *self.connection_errors.entry(reason.as_str()).or_default() += count;
        }
    }
}

/// One balanced client's endpoints.
#[derive(Clone, Debug, Serialize)]
pub struct ClientFigures {
    /// The service it calls.
    pub target: String,
    /// Its endpoints.
    pub endpoints: Vec<EndpointFigures>,
}

/// One endpoint as its balanced client sees it.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointFigures {
    /// Its address.
    pub address: String,
    /// `connecting`, `ready` or `failed`.
    pub health: &'static str,
    /// Left out for a while by outlier detection.
    pub ejected: bool,
    /// What its health service last said.
    pub serving: bool,
    /// Calls sent, not yet answered.
    pub in_flight: u64,
    /// Calls sent so far.
    pub calls: u64,
    /// The peak-EWMA latency estimate, milliseconds.
    pub rtt_ms: f64,
    /// Why its last connect failed, while it backs off.
    pub last_error: Option<String>,
}

#[cfg(feature = "cluster")]
impl From<&sinew_cluster::balance::EndpointReport> for EndpointFigures {
    fn from(report: &sinew_cluster::balance::EndpointReport) -> EndpointFigures {
        EndpointFigures {
            address: report.endpoint.address().to_string(),
            health: report.health.as_str(),
            ejected: report.ejected,
            serving: report.serving,
            in_flight: report.in_flight as u64,
            calls: report.calls,
            rtt_ms: report.rtt_estimate.as_secs_f64() * 1000.0,
            last_error: report.last_error.as_ref().map(ToString::to_string),
        }
    }
}

/// One circuit breaker.
#[derive(Clone, Debug, Serialize)]
pub struct BreakerFigures {
    /// The name it was watched under.
    pub name: String,
    /// Its circuits.
    pub circuits: Vec<CircuitFigures>,
}

/// One circuit.
#[derive(Clone, Debug, Serialize)]
pub struct CircuitFigures {
    /// Its key (a method, a service, or `*`).
    pub key: String,
    /// `closed`, `open` or `half-open`.
    pub state: &'static str,
}

/// One adaptive concurrency limit.
#[derive(Clone, Debug, Serialize)]
pub struct LimitFigures {
    /// The name it was watched under.
    pub name: String,
    /// The limit now, in calls.
    pub limit: u64,
    /// Calls running under it now.
    pub in_flight: u64,
    /// Calls it refused so far.
    pub shed: u64,
}

/// Encodes the watched parts at each scrape.
pub(crate) struct ComponentCollector(pub(crate) Arc<Watched>);

impl std::fmt::Debug for ComponentCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentCollector").finish_non_exhaustive()
    }
}

mod encode {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
    use prometheus_client::metrics::MetricType;
    use prometheus_client::registry::Unit;
    use std::fmt::Error;

    /// One family: its name, help, type, unit, and each series' labels and value.
    struct Family<'a> {
        name: &'a str,
        help: &'a str,
        kind: MetricType,
        unit: Option<Unit>,
        series: Vec<(Vec<(&'a str, &'a str)>, Value)>,
    }

    /// A series' value: counters stay integers (no precision lost past
    /// 2^53), gauges may be fractions.
    #[derive(Clone, Copy)]
    enum Value {
        Count(u64),
        Gauge(f64),
    }

    impl<'a> Family<'a> {
        fn new(name: &'a str, help: &'a str, kind: MetricType) -> Family<'a> {
            Family {
                name,
                help,
                kind,
                unit: None,
                series: Vec::new(),
            }
        }

        fn seconds(mut self) -> Self {
            self.unit = Some(Unit::Seconds);
            self
        }

        fn one(mut self, value: u64) -> Self {
            let value = match self.kind {
                MetricType::Counter => Value::Count(value),
                _ => Value::Gauge(value as f64),
            };
            self.series.push((Vec::new(), value));
            self
        }

        fn push(&mut self, labels: Vec<(&'a str, &'a str)>, value: f64) {
            self.series.push((labels, Value::Gauge(value)));
        }

        fn push_count(&mut self, labels: Vec<(&'a str, &'a str)>, value: u64) {
            self.series.push((labels, Value::Count(value)));
        }

        fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), Error> {
            if self.series.is_empty() {
                return Ok(());
            }
            let mut family =
                encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), self.kind)?;
            for (labels, value) in &self.series {
                let mut metric = family.encode_family(labels)?;
                match (self.kind, value) {
                    (MetricType::Counter, Value::Count(count)) => {
                        metric.encode_counter::<NoLabelSet, _, u64>(count, None)?
                    }
                    (MetricType::Counter, Value::Gauge(value)) => {
                        metric.encode_counter::<NoLabelSet, _, f64>(value, None)?
                    }
                    (_, Value::Count(count)) => metric.encode_gauge(&(*count as f64))?,
                    (_, Value::Gauge(value)) => metric.encode_gauge(value)?,
                }
            }
            Ok(())
        }
    }

    fn counter<'a>(name: &'a str, help: &'a str) -> Family<'a> {
        Family::new(name, help, MetricType::Counter)
    }

    fn gauge<'a>(name: &'a str, help: &'a str) -> Family<'a> {
        Family::new(name, help, MetricType::Gauge)
    }

    /// The families of `server`, keyed where a map gives the labels.
    fn server_families(server: &ServerFigures) -> Vec<Family<'_>> {
        let keyed = |mut family: Family<'static>,
                     label: &'static str,
                     map: &BTreeMap<&'static str, u64>| {
            for (key, count) in map {
                family.push_count(vec![(label, *key)], *count);
            }
            family
        };
        vec![
            gauge("sinew_server_connections", "Connections open now.").one(server.connections),
            counter("sinew_server_connections_accepted", "Connections accepted.")
                .one(server.accepted),
            keyed(
                counter(
                    "sinew_server_connections_refused",
                    "Connections turned away, by reason.",
                ),
                "reason",
                &server.refused,
            ),
            gauge("sinew_server_open_streams", "Calls in flight now.").one(server.open_streams),
            counter(
                "sinew_server_received_bytes",
                "Bytes read from connections.",
            )
            .one(server.received_bytes),
            counter("sinew_server_sent_bytes", "Bytes written to connections.")
                .one(server.sent_bytes),
            counter(
                "sinew_server_flow_control_stalls",
                "Messages that waited to be sent: for the peer's flow-control window, or the socket.",
            )
            .one(server.flow_control_stalls),
            keyed(
                counter(
                    "sinew_server_limit_hits",
                    "Times a server limit turned a call or a connection away, by limit.",
                ),
                "limit",
                &server.limit_hits,
            ),
            keyed(
                counter(
                    "sinew_server_connection_errors",
                    "Connections ended with a connection error (GOAWAY), by reason.",
                ),
                "reason",
                &server.connection_errors,
            ),
            gauge(
                "sinew_server_shm_connections",
                "Shared-memory connections open now.",
            )
            .one(server.shm_connections),
            gauge(
                "sinew_server_shm_ring_bytes",
                "Bytes the shared-memory connections' rings hold, both directions.",
            )
            .one(server.shm_ring_bytes),
            gauge(
                "sinew_server_shm_ring_used_bytes",
                "Bytes waiting in the shared-memory rings, written and not yet read.",
            )
            .one(server.shm_ring_bytes_used),
            gauge(
                "sinew_server_shm_slabs",
                "Slabs of the shared-memory connections.",
            )
            .one(server.shm_slabs),
            gauge(
                "sinew_server_shm_slabs_in_use",
                "Slabs sent and not yet taken back from the peer.",
            )
            .one(server.shm_slabs_in_use),
        ]
    }

    /// The families of every broker and its queues.
    fn broker_families(brokers: &[BrokerFigures]) -> Vec<Family<'_>> {
        type Of = fn(&BrokerFigures) -> u64;
        let broker_figures: [(Family<'static>, Of); 6] = [
            (
                counter("sinew_broker_published", "Messages published."),
                |b| b.published,
            ),
            (
                counter(
                    "sinew_broker_delivered",
                    "Copies delivered to subscriptions.",
                ),
                |b| b.delivered,
            ),
            (
                gauge("sinew_broker_subscriptions", "Subscriptions now."),
                |b| b.subscriptions,
            ),
            (
                counter(
                    "sinew_broker_slow_consumers",
                    "Subscriptions ended as slow consumers.",
                ),
                |b| b.slow_consumers,
            ),
            (
                counter(
                    "sinew_broker_dropped",
                    "Messages dropped for slow subscribers.",
                ),
                |b| b.dropped,
            ),
            (
                gauge(
                    "sinew_broker_buffered",
                    "Messages waiting in subscriptions' buffers.",
                ),
                |b| b.buffered,
            ),
        ];
        type OfQueue = fn(&QueueFigures) -> u64;
        let queue_figures: [(Family<'static>, OfQueue); 11] = [
            (
                gauge("sinew_queue_pending", "Jobs waiting to be delivered."),
                |q| q.pending,
            ),
            (
                gauge("sinew_queue_in_flight", "Jobs delivered and not settled."),
                |q| q.in_flight,
            ),
            (
                gauge("sinew_queue_delayed", "Jobs waiting for a nak's delay."),
                |q| q.delayed,
            ),
            (gauge("sinew_queue_bytes", "Bytes of payload held."), |q| {
                q.bytes
            }),
            (gauge("sinew_queue_workers", "Workers pulling now."), |q| {
                q.workers
            }),
            (counter("sinew_queue_pushed", "Jobs pushed."), |q| q.pushed),
            (
                counter("sinew_queue_duplicates", "Pushes dropped as duplicates."),
                |q| q.duplicates,
            ),
            (counter("sinew_queue_acked", "Jobs acked."), |q| q.acked),
            (
                counter("sinew_queue_redelivered", "Deliveries after the first."),
                |q| q.redelivered,
            ),
            (
                counter(
                    "sinew_queue_dead_lettered",
                    "Jobs moved to the dead-letter queue.",
                ),
                |q| q.dead_lettered,
            ),
            (counter("sinew_queue_terminated", "Jobs terminated."), |q| {
                q.terminated
            }),
        ];
        let mut families = Vec::new();
        for (mut family, of) in broker_figures {
            for broker in brokers {
                let value = of(broker);
                let labels = vec![("broker", broker.name.as_str())];
                match family.kind {
                    MetricType::Counter => family.push_count(labels, value),
                    _ => family.push(labels, value as f64),
                }
            }
            families.push(family);
        }
        for (mut family, of) in queue_figures {
            for broker in brokers {
                for queue in &broker.queues {
                    let value = of(queue);
                    let labels = vec![
                        ("broker", broker.name.as_str()),
                        ("queue", queue.name.as_str()),
                    ];
                    match family.kind {
                        MetricType::Counter => family.push_count(labels, value),
                        _ => family.push(labels, value as f64),
                    }
                }
            }
            families.push(family);
        }
        families
    }

    /// The families of every gateway's upstream servers.
    fn gateway_families(gateways: &[GatewayFigures]) -> Vec<Family<'_>> {
        type Of = fn(&GatewayServerFigures) -> u64;
        let figures: [(Family<'static>, Of); 6] = [
            (
                gauge(
                    "sinew_gateway_upstream_up",
                    "1 while requests may go to the upstream server.",
                ),
                |s| u64::from(s.up),
            ),
            (
                gauge(
                    "sinew_gateway_upstream_healthy",
                    "1 while the upstream server passes its active health checks.",
                ),
                |s| u64::from(s.healthy),
            ),
            (
                gauge(
                    "sinew_gateway_upstream_in_flight",
                    "Requests in flight to the upstream server.",
                ),
                |s| s.in_flight,
            ),
            (
                gauge(
                    "sinew_gateway_upstream_idle_connections",
                    "Idle kept-alive connections to the upstream server.",
                ),
                |s| s.idle_connections,
            ),
            (
                counter(
                    "sinew_gateway_upstream_requests",
                    "Requests sent to the upstream server.",
                ),
                |s| s.requests,
            ),
            (
                counter(
                    "sinew_gateway_upstream_failures",
                    "Requests to the upstream server that failed (connect, I/O, timeout, a 5xx retried on).",
                ),
                |s| s.failures,
            ),
        ];
        let mut families = Vec::new();
        for (mut family, of) in figures {
            for gateway in gateways {
                for server in &gateway.servers {
                    let value = of(server);
                    let labels = vec![
                        ("gateway", gateway.name.as_str()),
                        ("upstream", server.upstream.as_str()),
                        ("server", server.server.as_str()),
                    ];
                    match family.kind {
                        MetricType::Counter => family.push_count(labels, value),
                        _ => family.push(labels, value as f64),
                    }
                }
            }
            families.push(family);
        }
        let mut responses = counter(
            "sinew_gateway_route_responses",
            "Responses the route gave, by status class (1xx to 5xx).",
        );
        let mut seconds = counter(
            "sinew_gateway_route_response",
            "Seconds from the route's requests to their response heads, summed (over sinew_gateway_route_responses_total: the mean).",
        )
        .seconds();
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        for gateway in gateways {
            for route in &gateway.routes {
                for (class, count) in CLASSES.iter().zip(route.responses) {
                    let labels = vec![
                        ("gateway", gateway.name.as_str()),
                        ("route", route.route.as_str()),
                        ("code", *class),
                    ];
                    responses.push_count(labels, count);
                }
                let labels = vec![
                    ("gateway", gateway.name.as_str()),
                    ("route", route.route.as_str()),
                ];
                seconds.push(labels, route.seconds);
            }
        }
        families.push(responses);
        families.push(seconds);
        families
    }

    impl Collector for ComponentCollector {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), Error> {
            let components = self.0.read();
            if let Some(server) = &components.server {
                for family in server_families(server) {
                    family.encode(&mut encoder)?;
                }
            }
            let mut up = gauge(
                "sinew_client_endpoint_up",
                "1 while the endpoint is connected with room for calls.",
            );
            let mut ejected = gauge(
                "sinew_client_endpoint_ejected",
                "1 while outlier detection leaves the endpoint out.",
            );
            let mut in_flight = gauge(
                "sinew_client_endpoint_in_flight",
                "Calls sent, not yet answered.",
            );
            let mut calls = counter("sinew_client_endpoint_calls", "Calls sent to the endpoint.");
            let mut rtt = gauge(
                "sinew_client_endpoint_rtt_estimate",
                "The balancer's peak-EWMA latency estimate of the endpoint.",
            )
            .seconds();
            // Two channels to the same service share their series: one
            // series per target and endpoint (up and ejected if either
            // says so, calls added up, the higher estimate).
            let mut merged: BTreeMap<(&str, &str), EndpointFigures> = BTreeMap::new();
            for client in &components.clients {
                for endpoint in &client.endpoints {
                    let key = (client.target.as_str(), endpoint.address.as_str());
                    match merged.get_mut(&key) {
                        None => {
                            merged.insert(key, endpoint.clone());
                        }
                        Some(known) => {
                            if endpoint.health == "ready" {
                                known.health = "ready";
                            }
                            known.ejected |= endpoint.ejected;
                            known.in_flight += endpoint.in_flight;
                            known.calls += endpoint.calls;
                            known.rtt_ms = known.rtt_ms.max(endpoint.rtt_ms);
                        }
                    }
                }
            }
            for ((target, address), endpoint) in &merged {
                let labels = vec![("target", *target), ("endpoint", *address)];
                up.push(
                    labels.clone(),
                    f64::from(u8::from(endpoint.health == "ready")),
                );
                ejected.push(labels.clone(), f64::from(u8::from(endpoint.ejected)));
                in_flight.push(labels.clone(), endpoint.in_flight as f64);
                calls.push_count(labels.clone(), endpoint.calls);
                rtt.push(labels, endpoint.rtt_ms / 1000.0);
            }
            let mut breaker = gauge(
                "sinew_circuit_breaker_state",
                "1 for each circuit's state (closed, open, half-open), 0 for the others.",
            );
            for one in &components.breakers {
                for circuit in &one.circuits {
                    for state in ["closed", "open", "half-open"] {
                        breaker.push(
                            vec![
                                ("breaker", one.name.as_str()),
                                ("circuit", circuit.key.as_str()),
                                ("state", state),
                            ],
                            f64::from(u8::from(circuit.state == state)),
                        );
                    }
                }
            }
            let mut limit = gauge(
                "sinew_adaptive_limit",
                "The adaptive concurrency limit now, in calls.",
            );
            let mut limit_in_flight = gauge(
                "sinew_adaptive_limit_in_flight",
                "Calls running under the limit now.",
            );
            let mut shed = counter("sinew_adaptive_limit_shed", "Calls the limit refused.");
            for one in &components.limits {
                let labels = vec![("limit", one.name.as_str())];
                limit.push(labels.clone(), one.limit as f64);
                limit_in_flight.push(labels.clone(), one.in_flight as f64);
                shed.push_count(labels, one.shed);
            }
            for family in [
                up,
                ejected,
                in_flight,
                calls,
                rtt,
                breaker,
                limit,
                limit_in_flight,
                shed,
            ] {
                family.encode(&mut encoder)?;
            }
            for family in broker_families(&components.brokers) {
                family.encode(&mut encoder)?;
            }
            for family in gateway_families(&components.gateways) {
                family.encode(&mut encoder)?;
            }
            Ok(())
        }
    }
}
