//! Circuit breaking: when most recent calls of a method fail, stop sending
//! it calls for a while, then let a few probes through to see whether it
//! recovered. A [`Breaker`] keeps one circuit per key (per method by
//! default; per service, or one for everything it wraps, such as one
//! endpoint's channel):
//!
//! * **closed**: calls go; their outcomes fill a sliding window (the last
//!   `window`, in tenths). Once the window holds `minimum_calls` and the
//!   share of failures reaches `failure_rate`, the circuit opens. Failures
//!   are the codes that say the server side is in trouble (`UNAVAILABLE`,
//!   `DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN`, `RESOURCE_EXHAUSTED`,
//!   `DATA_LOSS` by default), not the caller's own mistakes.
//! * **open** for `open_for`: calls fail at once with `UNAVAILABLE`, marked
//!   not processed, with `grpc-retry-pushback-ms` saying when to come back
//!   (a retry layer above waits that long).
//! * **half-open**: at most `probes` calls at a time go through; as many
//!   successes close the circuit, one failure opens it again. A probe that
//!   reports nothing within `probe_timeout` counts as failed, and a probe
//!   whose caller gives up frees its place, so the circuit can never stay
//!   half-open for good.
//!
//! The circuit is checked before anything waits: a call refused by an open
//! circuit fails at once, without waiting for the service below to be
//! ready. (So the breaker is always ready, and each call waits for the
//! service below in its own future.) State changes are [`BreakerEvent`]s,
//! for metrics and logs; [`BreakerLayer::states`] gives the current ones.
//!
//! For the endpoints of a balanced channel, the balancer's outlier
//! detection (`sinew_cluster::balance::OutlierDetection`) plays this part
//! per endpoint, and routes calls around an ejected one instead of failing
//! them.

mod circuit;
mod future;

pub use future::ResponseFuture;

use crate::config::CodeSet;
use crate::retry::PUSHBACK;
use circuit::{Admission, Change, Circuit};
use sinew_rpc::call::{CallRequest, CallResponse};
use sinew_rpc::{Code, Status};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tower::{Layer, Service};

/// When a circuit opens and how it recovers; see the module docs.
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    failure_rate: f64,
    minimum_calls: u32,
    window: Duration,
    open_for: Duration,
    probes: u32,
    probe_timeout: Duration,
    failures: CodeSet,
}

impl Default for BreakerConfig {
    /// Opens at 50% failures of at least 20 calls in 10 s; open for 5 s;
    /// 3 probes, each given 10 s.
    fn default() -> BreakerConfig {
        BreakerConfig {
            failure_rate: 0.5,
            minimum_calls: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            probes: 3,
            probe_timeout: Duration::from_secs(10),
            failures: CodeSet::from_codes([
                Code::Unavailable,
                Code::DeadlineExceeded,
                Code::Internal,
                Code::Unknown,
                Code::ResourceExhausted,
                Code::DataLoss,
            ]),
        }
    }
}

impl BreakerConfig {
    /// The share of failed calls (0 to 1) in the window that opens the
    /// circuit.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate.clamp(0.0, 1.0);
        self
    }

    /// Calls the window must hold before the rate counts.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls.max(1);
        self
    }

    /// How far back the window reaches.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How long an open circuit refuses calls before probing.
    pub fn open_for(mut self, open_for: Duration) -> Self {
        self.open_for = open_for;
        self
    }

    /// Probes at a time when half-open, and the successes that close it.
    pub fn probes(mut self, probes: u32) -> Self {
        self.probes = probes.max(1);
        self
    }

    /// How long a probe may take before it counts as failed.
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// The codes that count as failures (the default: see the module
    /// docs).
    pub fn failure_codes(mut self, codes: impl IntoIterator<Item = Code>) -> Self {
        self.failures = CodeSet::from_codes(codes);
        self
    }
}

/// A circuit's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls go.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probes go.
    HalfOpen,
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        })
    }
}

/// A circuit changed state.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerEvent {
    /// The circuit's key (a method path, a service name, or `*`).
    pub key: Arc<str>,
    /// The state it left.
    pub from: CircuitState,
    /// The state it is in.
    pub to: CircuitState,
    /// The share of failures in the window, when it opened from closed.
    pub failure_rate: Option<f64>,
}

/// What groups calls into one circuit.
#[derive(Clone, Copy, Debug)]
enum Key {
    Method,
    Service,
    Single,
}

/// One circuit and its key (shared by the calls in flight on it, so that a
/// call holds one reference, not a copy of the key).
#[derive(Debug)]
struct Keyed {
    key: Arc<str>,
    circuit: Mutex<Circuit>,
}

/// Makes [`Breaker`]s that share circuits; see the module docs.
#[derive(Clone, Debug)]
pub struct BreakerLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: BreakerConfig,
    key: Key,
    circuits: RwLock<HashMap<Arc<str>, Arc<Keyed>>>,
    events: broadcast::Sender<BreakerEvent>,
}

impl BreakerLayer {
    /// One circuit per method (`/package.Service/Method`).
    pub fn per_method(config: BreakerConfig) -> BreakerLayer {
        BreakerLayer::new(config, Key::Method)
    }

    /// One circuit per service (`package.Service`).
    pub fn per_service(config: BreakerConfig) -> BreakerLayer {
        BreakerLayer::new(config, Key::Service)
    }

    /// One circuit for every call (around one endpoint's channel, say).
    pub fn single(config: BreakerConfig) -> BreakerLayer {
        BreakerLayer::new(config, Key::Single)
    }

    fn new(config: BreakerConfig, key: Key) -> BreakerLayer {
        BreakerLayer {
            shared: Arc::new(Shared {
                config,
                key,
                circuits: RwLock::default(),
                events: broadcast::channel(64).0,
            }),
        }
    }

    /// The state changes from now on. A receiver that falls more than 64
    /// changes behind loses the oldest (and is told so).
    pub fn events(&self) -> broadcast::Receiver<BreakerEvent> {
        self.shared.events.subscribe()
    }

    /// Every circuit's key and state now, by key.
    pub fn states(&self) -> Vec<(Arc<str>, CircuitState)> {
        let circuits = self
            .shared
            .circuits
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let mut states: Vec<_> = circuits
            .iter()
            .map(|(key, keyed)| (key.clone(), lock(&keyed.circuit).state()))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A call service that refuses calls while their circuit is open; see the
/// module docs.
#[derive(Clone, Debug)]
pub struct Breaker<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<CallRequest> for Breaker<S>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status> + Clone,
{
    type Response = CallResponse;
    type Error = Status;
    type Future = ResponseFuture<S>;

    /// Always ready: the circuit is checked first, in `call`, and a call it
    /// lets through waits for the service below in its own future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CallRequest) -> ResponseFuture<S> {
        let keyed = self.shared.circuit(self.shared.key_of(&request));
        let key = &*keyed.key;
        let now = Instant::now();
        let (admission, change) = lock(&keyed.circuit).admit(&self.shared.config, now);
        if let Some(change) = change {
            self.shared.announce(key, change);
        }
        if let Admission::Refused { retry_after } = admission {
            let mut status = Status::unavailable(format!(
                "circuit open for {key}: too many of its recent calls failed; it is tried again in {} ms",
                retry_after.as_millis()
            ))
            .mark_not_processed();
            // Digits: always valid metadata.
            let _ = status
                .metadata_mut()
                .insert(PUSHBACK, &retry_after.as_millis().to_string());
            return ResponseFuture::refused(status);
        }
        let outcome = Outcome {
            shared: self.shared.clone(),
            keyed,
            admission: Some(admission),
        };
        ResponseFuture::new(self.inner.clone(), request, outcome)
    }
}

impl Shared {
    fn key_of<'a>(&self, request: &'a CallRequest) -> &'a str {
        let path = request.path().as_str();
        match self.key {
            Key::Method => path,
            Key::Service => path
                .strip_prefix('/')
                .and_then(|rest| rest.rsplit_once('/'))
                .map_or(path, |(service, _)| service),
            Key::Single => "*",
        }
    }

    fn circuit(&self, key: &str) -> Arc<Keyed> {
        if let Some(keyed) = self
            .circuits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return keyed.clone();
        }
        let mut circuits = self.circuits.write().unwrap_or_else(|e| e.into_inner());
        let key: Arc<str> = key.into();
        circuits
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Keyed {
                    key,
                    circuit: Mutex::new(Circuit::new(&self.config, Instant::now())),
                })
            })
            .clone()
    }

    fn announce(&self, key: &str, change: Change) {
        tracing::info!(
            circuit = key,
            from = %change.from,
            to = %change.to,
            failure_rate = change.failure_rate,
            "circuit changed state"
        );
        let _ = self.events.send(BreakerEvent {
            key: key.into(),
            from: change.from,
            to: change.to,
            failure_rate: change.failure_rate,
        });
    }
}

/// A call let through, until its outcome is recorded (or it is dropped
/// without one: a probe's place is then free again).
#[derive(Debug)]
pub(crate) struct Outcome {
    shared: Arc<Shared>,
    keyed: Arc<Keyed>,
    admission: Option<Admission>,
}

impl Outcome {
    fn is_probe(&self) -> bool {
        matches!(self.admission, Some(Admission::Probe { .. }))
    }

    /// Records the call's outcome (`status`: its failure, if it failed),
    /// once.
    fn record(&mut self, status: Option<&Status>) {
        let failed =
            status.is_some_and(|status| self.shared.config.failures.contains(status.code()));
        self.record_outcome(failed);
    }

    /// Records a failure (a probe out of time), once.
    fn record_failed(&mut self) {
        self.record_outcome(true);
    }

    fn record_outcome(&mut self, failed: bool) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        let change = lock(&self.keyed.circuit).record(
            &self.shared.config,
            &admission,
            failed,
            Instant::now(),
        );
        if let Some(change) = change {
            self.shared.announce(&self.keyed.key, change);
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if let Some(Admission::Probe { round }) = self.admission.take() {
            lock(&self.keyed.circuit).release_probe(round);
        }
    }
}

fn lock(circuit: &Mutex<Circuit>) -> std::sync::MutexGuard<'_, Circuit> {
    // The state machine never panics mid-step; a poisoned lock holds a
    // whole state.
    circuit.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
