//! Overload protection on the server: calls beyond what the server can
//! serve well are refused at once, before their handlers run, rather than
//! queued until every call times out.
//!
//! * [`AdaptiveLimitLayer`]: a concurrency limit that finds itself
//!   (Netflix's Gradient2, `gradient.rs`): it grows while latency holds and
//!   shrinks when latency rises, so the calls admitted keep their latency
//!   under any offered load. Calls over the limit fail with
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
//!
//! Server layers: add them with `ServerBuilder::layer`, outermost first.

mod gradient;
mod rate;

pub use gradient::AdaptiveLimit;
pub use rate::{RateLimit, RateLimitKey, RateLimitLayer};

use crate::retry::PUSHBACK;
use futures_util::future::BoxFuture;
use gradient::Gradient;
use sinew_rpc::server::{MethodKind, ServerCall};
use sinew_rpc::Status;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service};

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
    gradient: Mutex<Gradient>,
    /// The limit, as the gradient last set it (read without the lock).
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    shed: AtomicUsize,
}

impl AdaptiveLimitLayer {
    /// A limit with `settings`.
    pub fn new(settings: AdaptiveLimit) -> AdaptiveLimitLayer {
        let gradient = Gradient::new(settings);
        AdaptiveLimitLayer {
            shared: Arc::new(Shared {
                limit: AtomicUsize::new(gradient.limit()),
                gradient: Mutex::new(gradient),
                in_flight: AtomicUsize::new(0),
                shed: AtomicUsize::new(0),
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
        let admitted =
            shared
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_flight| {
                    (in_flight < allowed).then_some(in_flight + 1)
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
        };
        let future = self.inner.call(call);
        Box::pin(async move {
            let outcome = future.await;
            running.finish();
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
    let usual = lock(&shared.gradient)
        .long_latency()
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
}

impl Running {
    fn finish(self) {
        let in_flight = self.shared.in_flight.load(Ordering::Relaxed);
        let mut gradient = lock(&self.shared.gradient);
        gradient.sample(self.started.elapsed(), in_flight);
        self.shared.limit.store(gradient.limit(), Ordering::Relaxed);
        // `self` drops here: the call stops counting.
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The state is whole between steps: a poisoned lock holds a valid one.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
