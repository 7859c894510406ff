//! Overload protection on the server: calls beyond what the server can
//! serve well are refused at once, before their handlers run, rather than
//! queued until every call times out.
//!
//! * [`AdaptiveLimitLayer`]: a concurrency limit that finds itself: by
//!   default Netflix's Vegas over a measured no-load latency (`vegas.rs`),
//!   which keeps a few calls of queue, or their Gradient2 (`gradient.rs`);
//!   it grows while latency holds and shrinks when latency rises, so the
//!   calls admitted keep their latency under any offered load. Calls over the limit fail with
//!   `RESOURCE_EXHAUSTED` and a `grpc-retry-pushback-ms` of the server's
//!   usual latency, which a client's retry policy honours.
//! * Priorities: a call's `sinew-priority` metadata (`critical`, `normal`
//!   (the default), `sheddable`) sets how much of the limit it may use:
//!   sheddable calls are refused once half of it is in use, normal ones at
//!   90%, critical ones only at the limit itself, so the calls that matter
//!   most are shed last.
//! * Streams: a call whose responses stream (server streaming,
//!   bidirectional) may stay open for as long as its client likes (a
//!   health watch, a subscription), so its length says nothing of the
//!   server's load. Such a call is refused like any other while the server
//!   is over its limit, but once admitted it does not hold a place under the
//!   limit and gives the gradient no sample: a few hundred open watches do
//!   not shut the server to everything else.
//! * [`RateLimitLayer`]: a token bucket per key (the peer's IP address, or
//!   a metadata entry such as an API key), with a bounded number of keys.
//!   Its buckets are a [`RateLimiter`] (`buckets.rs`), which knows nothing
//!   of calls: anything that can name its callers by a string (the HTTP
//!   gateway, by client address or API key) limits them with it.
//!
//! Server layers: add them with `ServerBuilder::layer`, outermost first.

mod buckets;
mod gradient;
mod rate;
mod vegas;

pub use buckets::{RateLimit, RateLimiter};
pub use rate::{RateLimitKey, RateLimitLayer};

use crate::retry::PUSHBACK;
use futures_util::future::BoxFuture;
use gradient::Gradient;
use sinew_rpc::server::{MethodKind, ServerCall};
use sinew_rpc::Status;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service};
use vegas::Vegas;

/// The settings of an adaptive limit.
#[derive(Clone, Debug)]
pub struct AdaptiveLimit {
    pub(crate) algorithm: LimitAlgorithm,
    pub(crate) initial: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) smoothing: f64,
    pub(crate) tolerance: f64,
    pub(crate) long_window: u32,
    pub(crate) baseline_every: Duration,
    pub(crate) queue: (f64, f64),
}

/// How an adaptive limit finds itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LimitAlgorithm {
    /// Netflix's Vegas over a measured no-load latency (`vegas.rs`): keeps
    /// a few calls of queue, so admitted calls stay near the unloaded
    /// latency. The default.
    #[default]
    Vegas,
    /// Netflix's Gradient2 (`gradient.rs`): the latency against its own
    /// long-term average; admits more queue (its average drifts up with
    /// it) for a little more throughput.
    Gradient2,
}

impl Default for AdaptiveLimit {
    /// Vegas, starting at 20 calls, between 4 and 1000, its baseline
    /// measured every 10 s, keeping a queue of 2 to 4 calls (times
    /// `log10(limit)`; Netflix's Vegas keeps 3 to 6: see
    /// [`AdaptiveLimit::queue`]). Gradient2's own settings are Netflix's:
    /// smoothing 0.2, tolerance 1.5, a long average over 600 calls.
    fn default() -> AdaptiveLimit {
        AdaptiveLimit {
            algorithm: LimitAlgorithm::Vegas,
            initial: 20.0,
            min: 4.0,
            max: 1000.0,
            smoothing: 0.2,
            tolerance: 1.5,
            long_window: 600,
            baseline_every: Duration::from_secs(10),
            queue: (2.0, 4.0),
        }
    }
}

impl AdaptiveLimit {
    /// The algorithm.
    pub fn algorithm(mut self, algorithm: LimitAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Vegas: the queue it keeps, in calls times `log10(limit)`: the limit
    /// grows while fewer than `alpha` wait, shrinks when more than `beta`
    /// do. Larger values admit more queue (latency) for a little more
    /// throughput; measured in the overload bench row (1 ms of work on 8
    /// backend connections, 3x its capacity offered), 2 and 4 keep the p99
    /// of admitted calls at 3.0x the unloaded one with 107% of the capacity
    /// served, Netflix's 3 and 6 at 3.6x with 113%.
    pub fn queue(mut self, alpha: f64, beta: f64) -> Self {
        let alpha = if alpha.is_finite() {
            alpha.max(0.0)
        } else {
            2.0
        };
        let beta = if beta.is_finite() {
            beta.max(alpha)
        } else {
            alpha.max(4.0)
        };
        self.queue = (alpha, beta);
        self
    }

    /// How often Vegas measures its no-load latency again (at least every
    /// 100 ms).
    pub fn baseline_every(mut self, every: Duration) -> Self {
        self.baseline_every = every.max(Duration::from_millis(100));
        self
    }

    /// The limit to start with.
    pub fn initial(mut self, calls: usize) -> Self {
        self.initial = calls.max(1) as f64;
        self
    }

    /// The lowest and highest the limit goes.
    pub fn bounds(mut self, min: usize, max: usize) -> Self {
        self.min = min.max(1) as f64;
        self.max = (max as f64).max(self.min);
        self
    }

    /// Gradient2: how much latency may rise over its long-term average (a
    /// factor, at least 1) before the limit shrinks.
    pub fn tolerance(mut self, factor: f64) -> Self {
        self.tolerance = factor.max(1.0);
        self
    }
}

/// An adaptive limit's state, by its algorithm.
#[derive(Debug)]
enum Estimator {
    Vegas(Vegas),
    Gradient(Gradient),
}

impl Estimator {
    fn new(settings: AdaptiveLimit) -> Estimator {
        match settings.algorithm {
            LimitAlgorithm::Vegas => Estimator::Vegas(Vegas::new(settings)),
            LimitAlgorithm::Gradient2 => Estimator::Gradient(Gradient::new(settings)),
        }
    }

    fn limit(&self) -> usize {
        match self {
            Estimator::Vegas(vegas) => vegas.limit(),
            Estimator::Gradient(gradient) => gradient.limit(),
        }
    }

    /// What a call usually costs, once known.
    fn usual_latency(&self) -> Option<Duration> {
        match self {
            Estimator::Vegas(vegas) => vegas.usual_latency(),
            Estimator::Gradient(gradient) => gradient.long_latency(),
        }
    }

    /// Whether it is measuring its baseline (Vegas).
    fn measuring(&self) -> bool {
        match self {
            Estimator::Vegas(vegas) => vegas.measuring(),
            Estimator::Gradient(_) => false,
        }
    }

    fn sample(
        &mut self,
        latency: Duration,
        in_flight: usize,
        dropped: bool,
        measured: bool,
        now: Instant,
    ) {
        match self {
            Estimator::Vegas(vegas) => vegas.sample(latency, in_flight, dropped, measured, now),
            Estimator::Gradient(gradient) => gradient.sample(latency, in_flight),
        }
    }
}

/// The metadata entry that sets a call's priority.
pub const PRIORITY: &str = "sinew-priority";

/// How much of the limit a call may use; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Shed first: admitted while under half the limit is in use.
    Sheddable,
    /// Admitted while under 90% of the limit is in use.
    Normal,
    /// Shed last: admitted up to the limit.
    Critical,
}

impl Priority {
    /// The priority a call's metadata asks for (`Normal` when it says
    /// nothing, or something else).
    pub fn of(call: &ServerCall) -> Priority {
        match call.metadata().get(PRIORITY) {
            Some("critical") => Priority::Critical,
            Some("sheddable") => Priority::Sheddable,
            _ => Priority::Normal,
        }
    }

    /// The share of the limit calls of this priority may fill.
    pub(crate) fn share(self) -> f64 {
        match self {
            Priority::Sheddable => 0.5,
            Priority::Normal => 0.9,
            Priority::Critical => 1.0,
        }
    }
}

/// Puts an adaptive concurrency limit on a server's calls; see the module
/// docs. Clones share the limit.
#[derive(Clone, Debug)]
pub struct AdaptiveLimitLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    estimator: Mutex<Estimator>,
    /// The limit, as the estimator last set it (read without the lock).
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    shed: AtomicUsize,
    /// While the estimator measures its baseline: the measurement's number,
    /// and how many calls admitted before it still run (they do not count
    /// under the measurement's limit, and its samples wait for them).
    measuring: AtomicBool,
    epoch: AtomicU64,
    earlier: AtomicUsize,
}

impl AdaptiveLimitLayer {
    /// A limit with `settings`.
    pub fn new(settings: AdaptiveLimit) -> AdaptiveLimitLayer {
        let estimator = Estimator::new(settings);
        AdaptiveLimitLayer {
            shared: Arc::new(Shared {
                limit: AtomicUsize::new(estimator.limit()),
                measuring: AtomicBool::new(estimator.measuring()),
                estimator: Mutex::new(estimator),
                in_flight: AtomicUsize::new(0),
                shed: AtomicUsize::new(0),
                epoch: AtomicU64::new(0),
                earlier: AtomicUsize::new(0),
            }),
        }
    }

    /// The limit now, in calls.
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Ordering::Relaxed)
    }

    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Calls refused so far.
    pub fn shed(&self) -> usize {
        self.shared.shed.load(Ordering::Relaxed)
    }
}

impl<S> Layer<S> for AdaptiveLimitLayer {
    type Service = AdaptiveLimitService<S>;

    fn layer(&self, inner: S) -> AdaptiveLimitService<S> {
        AdaptiveLimitService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A server stack under an adaptive limit; see the module docs.
#[derive(Clone, Debug)]
pub struct AdaptiveLimitService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<ServerCall> for AdaptiveLimitService<S>
where
    S: Service<ServerCall, Response = Status, Error = Status>,
    S::Future: Send + 'static,
{
    type Response = Status;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Status, Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        let shared = &self.shared;
        let limit = shared.limit.load(Ordering::Relaxed);
        let allowed = ((limit as f64) * Priority::of(&call).share()).max(1.0) as usize;
        // While a baseline is measured, calls admitted before it do not
        // count under its limit.
        let measuring = shared.measuring.load(Ordering::Acquire);
        let earlier = if measuring {
            shared.earlier.load(Ordering::Acquire)
        } else {
            0
        };
        let epoch = shared.epoch.load(Ordering::Acquire);
        let admitted =
            shared
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_flight| {
                    (in_flight.saturating_sub(earlier) < allowed).then_some(in_flight + 1)
                });
        if admitted.is_err() {
            shared.shed.fetch_add(1, Ordering::Relaxed);
            let status = overloaded(shared, limit);
            return Box::pin(std::future::ready(Err(status)));
        }
        if streams_responses(&call) {
            // Admitted, but not held under the limit: see the module docs.
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Box::pin(self.inner.call(call));
        }
        let running = Running {
            shared: shared.clone(),
            started: Instant::now(),
            epoch,
            measured: measuring && earlier == 0,
        };
        let future = self.inner.call(call);
        Box::pin(async move {
            let outcome = future.await;
            // A call that ran out of time, or went wrong in a way that
            // says the server was too slow.
            let dropped = match &outcome {
                Ok(status) | Err(status) => status.code() == sinew_rpc::Code::DeadlineExceeded,
            };
            running.finish(dropped);
            outcome
        })
    }
}

/// Whether the call's responses stream, so that its length is the
/// client's choice (a call to a path no method serves is not: it ends at
/// once).
fn streams_responses(call: &ServerCall) -> bool {
    call.method().is_some_and(|method| {
        matches!(
            method.kind,
            MethodKind::ServerStreaming | MethodKind::Bidirectional
        )
    })
}

/// The refusal of a call over the limit, with a pushback of the server's
/// usual latency.
fn overloaded(shared: &Shared, limit: usize) -> Status {
    let usual = lock(&shared.estimator)
        .usual_latency()
        .unwrap_or(Duration::from_millis(1));
    let mut status = Status::resource_exhausted(format!(
        "the server is at its concurrency limit ({limit} calls); try again later"
    ));
    let pushback = usual.as_millis().max(1);
    // Digits: always valid metadata.
    let _ = status
        .metadata_mut()
        .insert(PUSHBACK, &pushback.to_string());
    status
}

/// A call admitted under the limit, until it ends (dropped unfinished: not
/// counted any more, and no sample).
struct Running {
    shared: Arc<Shared>,
    started: Instant,
    /// The measurement going on when it was admitted (or the last one).
    epoch: u64,
    /// Admitted in a measurement, once the calls before it were done.
    measured: bool,
}

impl Running {
    fn finish(self, dropped: bool) {
        let shared = &self.shared;
        let in_flight = shared.in_flight.load(Ordering::Relaxed);
        let now = Instant::now();
        let mut estimator = lock(&shared.estimator);
        let current = self.epoch == shared.epoch.load(Ordering::Acquire);
        let was_measuring = estimator.measuring();
        estimator.sample(
            now - self.started,
            in_flight,
            dropped,
            self.measured && current,
            now,
        );
        match (was_measuring, estimator.measuring()) {
            (false, true) => {
                // A measurement begins: every call running now (but this
                // one, which is ending) was admitted before it.
                shared
                    .earlier
                    .store(in_flight.saturating_sub(1), Ordering::Release);
                shared.epoch.fetch_add(1, Ordering::AcqRel);
                shared.measuring.store(true, Ordering::Release);
            }
            (true, false) => shared.measuring.store(false, Ordering::Release),
            _ => {}
        }
        shared.limit.store(estimator.limit(), Ordering::Relaxed);
        // `self` drops here: the call stops counting.
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let shared = &self.shared;
        if self.epoch != shared.epoch.load(Ordering::Acquire) {
            // One fewer call from before the measurement.
            let _ = shared
                .earlier
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |earlier| {
                    earlier.checked_sub(1)
                });
        }
        shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The state is whole between steps: a poisoned lock holds a valid one.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
