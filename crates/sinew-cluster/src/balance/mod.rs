//! [`Balanced`]: a channel to a service by name, spreading calls over its
//! endpoints.
//!
//! ```text
//!   resolver ──updates──▶ worker task ──publishes──▶ endpoint set ◀──picks── calls
//!                          │   subset (optional), then   + policy state   (Balanced,
//!                          │   one watcher per endpoint:   (ring, table,   any clone)
//!                          │   connects it, marks it        weights),
//!                          │   ready / lost / failed        zone groups
//!                          ▼
//!                   per-endpoint Channel (sinew's pool: reconnect, backoff)
//! ```
//!
//! * The **worker** (`worker.rs`) is the balancer's own task, started by
//!   [`BalancedBuilder::build`]: it applies the resolver's updates and runs a
//!   watcher per endpoint that connects it and follows its connection. Discovery
//!   and connects make progress with no call arriving, and readiness never
//!   waits on a call to find out an endpoint died (the trap of tower's
//!   balancer, tower#824). It stops when the last clone of the channel drops.
//!   With a [`subset`](BalancedBuilder::subset) it keeps only this client's
//!   share of the endpoints (`subset.rs`, gRPC's A68): the others are never
//!   connected. Each set it publishes carries what the policy needs, built
//!   once for the set: a hash ring or table, weights, the zone's groups.
//! * **Calls** pick from the published set without locks: the [`Policy`]
//!   among the endpoints that are ready, so a connecting or backing-off
//!   endpoint is never picked and a call never waits on one endpoint while
//!   another could take it. With a [`zone`](BalancedBuilder::zone), the
//!   policy picks among the caller's zone's endpoints, and calls spill over
//!   to the other zones when it has too few usable ones or they are
//!   overloaded (`locality.rs`). A call that fails *not processed* (the
//!   connection was lost before any of it was sent, or the server was
//!   shutting down and refused it) is sent again at once to another ready
//!   endpoint (for a hash policy, the next of its key's order). An endpoint
//!   whose calls keep failing is left out for a while ([`OutlierDetection`]),
//!   and so is one whose health service says it is not serving
//!   ([`health_check`](BalancedBuilder::health_check)); when more than half
//!   of the endpoints are unhealthy, calls go to every ready one (panic).
//! * **Readiness**: ready while an endpoint is; pending while endpoints are
//!   connecting (or the first resolution has not come); `UNAVAILABLE` naming
//!   each endpoint's last error when every one of them failed its last
//!   connect (unless [`wait_for_ready`](BalancedBuilder::wait_for_ready)), or
//!   the resolver's error while there is no endpoint at all. `poll_ready`
//!   picks the next call's endpoint, except under a hash policy, whose pick
//!   needs the call's key: then `call` picks, and readiness says that some
//!   endpoint could take the call.
//!
//! Which policy, in short (the table in [`Policy`]'s module has more):
//!
//! | you want | use |
//! |---|---|
//! | the lowest latency, endpoints of any speed | [`Policy::peak_ewma`] (default) |
//! | calls of very uneven cost | [`Policy::least_requests`] |
//! | endpoints of different sizes, weights from the resolver | [`Policy::weighted_round_robin`] |
//! | the same key on the same endpoint (caches, sessions) | [`Policy::maglev`], or [`Policy::ring_hash`] to agree with nginx |
//! | calls kept in the caller's zone | [`BalancedBuilder::zone`], with any policy |
//! | thousands of clients of thousands of servers | [`BalancedBuilder::subset`], with any policy |
//!
//! ```
//! # async fn example() -> Result<(), sinew_rpc::Status> {
//! use sinew_cluster::{resolve::Fixed, Balanced, Policy};
//! let replicas = Fixed::parse(["tcp://10.0.0.1:7000", "tcp://10.0.0.2:7000"])?;
//! let channel = Balanced::builder(replicas, "shop.Cart")
//!     // A user's calls go to one replica, within 1.25 × the mean load.
//!     .policy(Policy::maglev("x-user-id"))
//!     .zone("eu-west-1a")
//!     .subset(20)
//!     .build();
//! # let _ = channel; Ok(()) }
//! ```
//!
//! `Balanced` is a call service like [`Channel`]: typed clients take it, and
//! tower layers stack around it.

mod endpoints;
mod ewma;
mod future;
mod hash;
mod health_check;
mod locality;
mod outlier;
mod policy;
mod subset;
mod weighted;
mod worker;

pub use endpoints::{EndpointReport, Health};
pub use ewma::PeakEwma;
pub use future::ResponseFuture;
pub use hash::Ring as KetamaRing;
pub use outlier::OutlierDetection;
pub use policy::{ParsePolicyError, Policy};
pub use weighted::Smooth;

use crate::endpoint::Endpoint;
use crate::resolve::Resolve;
use arc_swap::ArcSwap;
use endpoints::{EndpointState, Set};
use locality::Locality;
use sinew_rpc::call::{Attempts, CallRequest, CallResponse, Destination};
use sinew_rpc::{Channel, Status};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use subset::Subset;

/// Reads a [`Balanced`] channel's endpoints while the channel lives
/// ([`Balanced::observer`]).
#[derive(Clone)]
pub struct BalancedObserver {
    handle: std::sync::Weak<Handle>,
}

impl fmt::Debug for BalancedObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancedObserver")
            .field("service", &self.service())
            .finish()
    }
}

/// Observers of the same channel are equal.
impl PartialEq for BalancedObserver {
    fn eq(&self, other: &BalancedObserver) -> bool {
        self.handle.ptr_eq(&other.handle)
    }
}

impl BalancedObserver {
    /// The service the channel calls, while a clone of it lives.
    pub fn service(&self) -> Option<String> {
        Some(self.handle.upgrade()?.shared.service.clone())
    }

    /// Every endpoint as the channel sees it now ([`Balanced::endpoints`]);
    /// `None` once every clone of the channel is gone.
    pub fn endpoints(&self) -> Option<Vec<EndpointReport>> {
        Some(self.handle.upgrade()?.shared.reports())
    }
}

/// Makes the channel of a new endpoint.
type MakeChannel = Arc<dyn Fn(&Endpoint) -> Channel + Send + Sync>;

/// A call service over the endpoints of one service, found by a resolver:
/// see the module docs. Clone it freely: clones share the endpoints, their
/// connections and the worker.
pub struct Balanced {
    handle: Arc<Handle>,
    /// The endpoint `poll_ready` picked for the next call.
    picked: Option<Arc<EndpointState>>,
}

/// What the clones of a balanced channel share; dropping the last one stops
/// the worker (and with it every endpoint's watcher).
struct Handle {
    shared: Arc<Shared>,
    worker: tokio::task::AbortHandle,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

/// The state calls and the worker share.
pub(crate) struct Shared {
    service: String,
    /// Told when an endpoint fails to connect (it may look again).
    resolver: Arc<dyn Resolve>,
    policy: Policy,
    /// The metadata key a hash policy picks by: such a policy picks in
    /// `call`, where the key is known, not in `poll_ready`.
    key: Option<Arc<str>>,
    /// The caller's zone, when calls prefer it.
    locality: Option<Locality>,
    /// The subset of the resolver's endpoints this channel connects to.
    subset: Option<Subset>,
    wait_for_ready: bool,
    /// More endpoints a not-processed call is sent to after the first.
    failover: usize,
    outlier: OutlierDetection,
    /// Endpoints of the set ejected now.
    ejected: AtomicUsize,
    /// Follow each endpoint's health service.
    health_check: bool,
    /// Endpoints of the set whose health service says not serving.
    not_serving: AtomicUsize,
    set: ArcSwap<Set>,
    /// Round-robin position.
    cursor: AtomicUsize,
    /// The resolver's first answer came (an update or an error).
    resolved: AtomicBool,
    /// The resolver's last error, until its next update.
    resolve_error: Mutex<Option<Status>>,
    /// Callers waiting for an endpoint to become ready.
    waiters: Mutex<Vec<Waker>>,
}

impl Shared {
    /// Every endpoint of the set as it is now.
    fn reports(&self) -> Vec<EndpointReport> {
        let now = Instant::now();
        self.set
            .load()
            .endpoints()
            .iter()
            .map(|state| state.report(now))
            .collect()
    }

    /// Wakes every caller waiting in `poll_ready`: an endpoint's health or
    /// the set changed.
    pub(crate) fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *lock(&self.waiters));
        for waker in waiters {
            waker.wake();
        }
    }

    fn register(&self, waker: &Waker) {
        let mut waiters = lock(&self.waiters);
        if !waiters.iter().any(|waiting| waiting.will_wake(waker)) {
            waiters.push(waker.clone());
        }
    }

    pub(crate) fn publish(&self, set: Set) {
        self.set.store(Arc::new(set));
        // Endpoints that left no longer count as unhealthy.
        self.recount();
        self.resolved.store(true, Ordering::Release);
        *lock(&self.resolve_error) = None;
        self.wake_waiters();
    }

    pub(crate) fn resolve_failed(&self, status: Status) {
        tracing::debug!(service = %self.service, %status, "resolving failed");
        *lock(&self.resolve_error) = Some(status);
        self.resolved.store(true, Ordering::Release);
        self.wake_waiters();
    }

    /// The endpoint for a call whose hash key (for the hash policies) is
    /// `key`. Unhealthy endpoints (ejected, or not serving by their health
    /// service) are left out, unless more than half of the set is unhealthy
    /// (panic: every ready endpoint) or no other endpoint is ready. With a
    /// zone, the zone's endpoints first (`locality.rs`).
    fn pick(
        &self,
        key: Option<&[u8]>,
        avoid: Option<&EndpointState>,
    ) -> Option<Arc<EndpointState>> {
        let set = self.set.load();
        let unhealthy =
            self.ejected.load(Ordering::Relaxed) + self.not_serving.load(Ordering::Relaxed);
        match (&set.zones, &self.locality) {
            (Some(zones), Some(locality)) => self.policy.pick_among(
                &zones.order(locality.overload),
                &self.cursor,
                key,
                avoid,
                unhealthy,
            ),
            _ => self
                .policy
                .pick_among(&[&set.all], &self.cursor, key, avoid, unhealthy),
        }
        .cloned()
    }

    /// The value a hash policy hashes: the first value of the call's key
    /// entry, if it has one and it is not empty (nginx, too, spreads calls
    /// with an empty key). `None` for the other policies.
    fn key_of<'a>(&self, request: &'a CallRequest) -> Option<&'a [u8]> {
        let key = self.key.as_deref()?;
        request
            .metadata()
            .get_bin(key)
            .filter(|value| !value.is_empty())
    }

    /// Counts the set's unhealthy endpoints again. Done on every change
    /// (rare), not kept by increments and decrements: an endpoint that left
    /// the set while a call on it was still ending could otherwise be counted
    /// as ejected forever (nothing would take it back), and the panic rule
    /// with it.
    pub(crate) fn recount(&self) {
        let set = self.set.load();
        let ejected = set
            .endpoints()
            .iter()
            .filter(|s| s.outlier.is_ejected())
            .count();
        let not_serving = set.endpoints().iter().filter(|s| !s.is_serving()).count();
        self.ejected.store(ejected, Ordering::Release);
        self.not_serving.store(not_serving, Ordering::Release);
    }

    /// What an endpoint's health service said.
    pub(crate) fn set_serving(&self, state: &EndpointState, serving: bool) {
        if state.serving.swap(serving, Ordering::AcqRel) == serving {
            return;
        }
        self.recount();
        tracing::debug!(
            service = %self.service,
            endpoint = %state.endpoint.load().address(),
            serving,
            "endpoint's health changed"
        );
        self.wake_waiters();
    }

    /// Takes a call's outcome into its endpoint's outlier state, ejecting
    /// the endpoint if it reached the threshold and the share allows.
    pub(crate) fn record(&self, state: &EndpointState, outcome: Result<(), &Status>) {
        if state.outlier.record(&self.outlier, outcome) == outlier::Verdict::Eject {
            self.eject(state, "its calls keep failing");
        }
    }

    /// Ejects the endpoints whose success rate over the interval that ends
    /// now is an outlier (the worker's success-rate tick).
    pub(crate) fn eject_by_success_rate(&self) {
        let Some(rule) = self.outlier.success_rate_rule() else {
            return;
        };
        let set = self.set.load();
        let samples: Vec<(u64, u64)> = set
            .endpoints()
            .iter()
            .map(|state| {
                let calls = state.calls.load(Ordering::Relaxed);
                state.outlier.take_interval(calls)
            })
            .collect();
        for index in outlier::success_rate_outliers(&samples, rule) {
            let (calls, failures) = samples[index];
            tracing::debug!(
                service = %self.service,
                endpoint = %set.endpoints()[index].endpoint.load().address(),
                calls,
                failures,
                "success rate far below the other endpoints'"
            );
            self.eject(
                &set.endpoints()[index],
                "its success rate is far below the others'",
            );
        }
    }

    /// Ejects `state` if the share of ejected endpoints allows.
    fn eject(&self, state: &EndpointState, why: &str) {
        let allowed = self.outlier.max_ejected(self.set.load().endpoints().len());
        let counted = self
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |ejected| {
                (ejected < allowed).then_some(ejected + 1)
            });
        if counted.is_err() {
            return;
        }
        if state.outlier.eject(&self.outlier, Instant::now()) {
            tracing::info!(
                service = %self.service,
                endpoint = %state.endpoint.load().address(),
                "endpoint ejected: {why}"
            );
        }
        self.recount();
    }

    /// Returns the ejected endpoints whose time is up (the worker's tick).
    pub(crate) fn return_ejected(&self) {
        if self.ejected.load(Ordering::Acquire) == 0 {
            return;
        }
        let now = Instant::now();
        for state in self.set.load().endpoints().iter() {
            if state.outlier.return_if_due(&self.outlier, now) {
                tracing::info!(
                    service = %self.service,
                    endpoint = %state.endpoint.load().address(),
                    "ejected endpoint back in, on probation"
                );
            }
        }
        self.recount();
    }

    /// Why no call can be made now, when waiting would not help: `None` while
    /// an endpoint may still become ready.
    fn failure(&self) -> Option<Status> {
        // Whether the resolver answered, read before the set: `publish`
        // stores the set before it says so, so a set read after this is at
        // least the one published then (read the other way round, a call
        // racing the first publish could see an empty set and "resolved",
        // and fail with "no endpoints").
        let resolved = self.resolved.load(Ordering::Acquire);
        let set = self.set.load();
        if set.endpoints().is_empty() {
            if let Some(error) = lock(&self.resolve_error).as_ref() {
                return Some(
                    Status::unavailable(format!(
                        "no endpoint of {}: {}",
                        self.service,
                        error.message()
                    ))
                    .mark_not_processed(),
                );
            }
            if resolved && !self.wait_for_ready {
                return Some(
                    Status::unavailable(format!("{} has no endpoints", self.service))
                        .mark_not_processed(),
                );
            }
            return None;
        }
        if self.wait_for_ready {
            return None;
        }
        let mut errors = Vec::with_capacity(set.endpoints().len());
        for state in set.endpoints().iter() {
            if state.health() != Health::Failed {
                return None;
            }
            let error = state
                .channel
                .last_connect_error()
                .map(|status| status.message().to_owned())
                .unwrap_or_else(|| "connect failed".to_owned());
            errors.push(format!("{}: {error}", state.endpoint.load().address()));
        }
        Some(
            Status::unavailable(format!(
                "every endpoint of {} is unavailable: {}",
                self.service,
                errors.join("; ")
            ))
            .mark_not_processed(),
        )
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Balanced {
    /// A balanced channel to `service`, whose endpoints `resolver` finds.
    pub fn builder(resolver: impl Resolve, service: impl Into<String>) -> BalancedBuilder {
        BalancedBuilder {
            resolver: Arc::new(resolver),
            service: service.into(),
            policy: Policy::default(),
            zone: None,
            zone_overload: Locality::DEFAULT_OVERLOAD,
            subset: None,
            client_id: None,
            wait_for_ready: false,
            failover: 2,
            outlier: OutlierDetection::default(),
            health_check: true,
            make_channel: Arc::new(|endpoint: &Endpoint| {
                Channel::builder(endpoint.address().clone()).lazy()
            }),
        }
    }

    /// The service this channel calls.
    pub fn service(&self) -> &str {
        &self.handle.shared.service
    }

    /// Every endpoint as the channel sees it now: health, calls in flight,
    /// latency estimate, last connect error. With a
    /// [`subset`](BalancedBuilder::subset), the subset's endpoints only.
    pub fn endpoints(&self) -> Vec<EndpointReport> {
        self.handle.shared.reports()
    }

    /// A handle that reads this channel's endpoints without keeping the
    /// channel alive: for metrics and dashboards, which must not hold a
    /// balancer (its connections, its worker) after the application let go.
    pub fn observer(&self) -> BalancedObserver {
        BalancedObserver {
            handle: Arc::downgrade(&self.handle),
        }
    }

    /// Resolves once at least `count` endpoints are ready (connected, with
    /// room for calls): for a process that should not take traffic, or a
    /// benchmark that should not start its clock, before it can reach its
    /// peers. Woken by the balancer's own changes, not by polling; put a
    /// timeout around it (`tokio::time::timeout`) to bound the wait.
    pub async fn until_ready(&self, count: usize) {
        let shared = &self.handle.shared;
        let ready = || {
            shared
                .set
                .load()
                .endpoints()
                .iter()
                .filter(|state| state.is_ready())
                .count()
                >= count
        };
        std::future::poll_fn(|cx| {
            if ready() {
                return Poll::Ready(());
            }
            // Registered before looking again, so that a change in between
            // wakes us.
            shared.register(cx.waker());
            if ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

impl Balanced {
    /// Keeps `poll_ready`'s pick for the next call, unless the policy picks
    /// by the call's key (known only in `call`): then readiness only
    /// promised that some endpoint is usable.
    fn keep(&mut self, state: Arc<EndpointState>) {
        if self.handle.shared.key.is_none() {
            self.picked = Some(state);
        }
    }
}

impl Clone for Balanced {
    fn clone(&self) -> Self {
        Balanced {
            handle: self.handle.clone(),
            // A pick is for the next call of the handle that made it.
            picked: None,
        }
    }
}

impl fmt::Debug for Balanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balanced")
            .field("service", &self.handle.shared.service)
            .field("policy", &self.handle.shared.policy)
            .field(
                "endpoints",
                &self.handle.shared.set.load().endpoints().len(),
            )
            .finish_non_exhaustive()
    }
}

impl tower::Service<CallRequest> for Balanced {
    type Response = CallResponse;
    type Error = Status;
    type Future = ResponseFuture;

    /// Ready when an endpoint is (and picks it for the next call, unless
    /// the policy hashes a key of the call: then `call` picks); see the
    /// module docs for when it waits and when it fails.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        if self.picked.as_ref().is_some_and(|state| state.is_ready()) {
            return Poll::Ready(Ok(()));
        }
        let shared = &self.handle.shared;
        if let Some(state) = shared.pick(None, None) {
            self.keep(state);
            return Poll::Ready(Ok(()));
        }
        // Registered before looking again, so that a change in between wakes us.
        shared.register(cx.waker());
        if let Some(state) = shared.pick(None, None) {
            self.keep(state);
            return Poll::Ready(Ok(()));
        }
        match shared.failure() {
            Some(status) => Poll::Ready(Err(status)),
            None => Poll::Pending,
        }
    }

    /// Sends the call to the endpoint `poll_ready` picked, or picks one now
    /// (by the call's key, for a hash policy). A later attempt of a call (a
    /// retry, a hedge: the request carries [`Attempts`]) goes to another
    /// endpoint than the last attempt's, when another is ready; a failed
    /// call's status names its endpoint ([`Status::destination`]).
    fn call(&mut self, request: CallRequest) -> ResponseFuture {
        let shared = self.handle.shared.clone();
        let attempts = request.extensions().get::<Attempts>();
        let last = attempts
            .and_then(Attempts::last)
            .and_then(|last| last.get::<EndpointState>());
        let key = shared.key_of(&request);
        let picked = match self.picked.take() {
            Some(picked) if !last.as_ref().is_some_and(|last| Arc::ptr_eq(&picked, last)) => {
                Some(picked)
            }
            // None picked yet, or the last attempt's endpoint: another one,
            // else that one after all.
            picked => shared
                .pick(key, last.as_deref())
                .or(picked)
                .or_else(|| last.as_ref().and_then(|_| shared.pick(key, None))),
        };
        if let (Some(attempts), Some(picked)) = (attempts, &picked) {
            attempts.record(Destination::new(picked.clone()));
        }
        ResponseFuture::start(shared, picked, request)
    }
}

/// Configures a [`Balanced`] channel.
pub struct BalancedBuilder {
    resolver: Arc<dyn Resolve>,
    service: String,
    policy: Policy,
    zone: Option<String>,
    zone_overload: usize,
    subset: Option<usize>,
    client_id: Option<u64>,
    wait_for_ready: bool,
    failover: usize,
    outlier: OutlierDetection,
    health_check: bool,
    make_channel: MakeChannel,
}

impl fmt::Debug for BalancedBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancedBuilder")
            .field("service", &self.service)
            .field("policy", &self.policy)
            .field("zone", &self.zone)
            .field("zone_overload", &self.zone_overload)
            .field("subset", &self.subset)
            .field("wait_for_ready", &self.wait_for_ready)
            .field("failover", &self.failover)
            .field("outlier", &self.outlier)
            .field("health_check", &self.health_check)
            .finish_non_exhaustive()
    }
}

impl BalancedBuilder {
    /// How each call's endpoint is picked (default: [`Policy::peak_ewma`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The caller's zone: calls go to endpoints whose [`Endpoint::zone`] is
    /// the same, and spill over to the other zones (Envoy's zone-aware
    /// routing and priority levels are the reference):
    ///
    /// * every call, when the zone has no usable endpoint (none there, or
    ///   none ready and healthy);
    /// * every call, while each usable endpoint of the zone has
    ///   [`zone_overload`](BalancedBuilder::zone_overload) calls of this
    ///   channel in flight: the zone stays about that busy and the rest
    ///   goes elsewhere;
    /// * part of the calls when the zone is degraded: with `u` of its `n`
    ///   endpoints usable, a share `min(1, 1.4 × u / n)` stays (Envoy's
    ///   overprovisioning factor 1.4: all while 5 in 7 are usable, 70% with
    ///   half of them).
    ///
    /// The rule is applied to every call, so calls come back as soon as the
    /// zone recovers. The policy picks within the group chosen, and the
    /// other group is tried when it has no endpoint to pick. Without a zone
    /// (the default) every endpoint is alike, at no cost.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// With a [`zone`](BalancedBuilder::zone): calls in flight from this
    /// channel from which a local endpoint counts as loaded; when every
    /// usable local endpoint is, calls spill over to the other zones.
    /// The default, 100, is the fewest concurrent streams HTTP/2 recommends
    /// a server allow (RFC 9113 §5.1.2): a local endpoint is passed over
    /// only when a server of ordinary settings would queue the call. 0
    /// spills every call; `usize::MAX` never spills for load.
    pub fn zone_overload(mut self, calls_in_flight: usize) -> Self {
        self.zone_overload = calls_in_flight;
        self
    }

    /// Connect to at most `size` of the service's endpoints, chosen by
    /// rendezvous hashing of this client's id (gRPC's A68
    /// `random_subsetting`): different clients spread evenly over the
    /// endpoints, and an endpoint added or removed changes at most one
    /// member of a subset. Endpoints outside the subset are not connected
    /// at all. The subset follows the resolver, not health: a member that
    /// fails stays (calls go to the others meanwhile), so choose a size
    /// that can lose a few. Zones and weights play no part in the choice.
    /// 0 (and the default) connects to every endpoint.
    pub fn subset(mut self, size: usize) -> Self {
        self.subset = (size > 0).then_some(size);
        self
    }

    /// With a [`subset`](BalancedBuilder::subset): this client's id (a host
    /// name, a pod name), so that it picks the same subset across restarts.
    /// By default each channel draws a random one.
    pub fn client_id(mut self, id: impl AsRef<[u8]>) -> Self {
        self.client_id = Some(Subset::seed_of(id.as_ref()));
        self
    }

    /// When every endpoint failed its last connect (or the service has none),
    /// wait for one to come back instead of failing with `UNAVAILABLE`
    /// (gRPC's wait-for-ready). Off by default.
    pub fn wait_for_ready(mut self, enabled: bool) -> Self {
        self.wait_for_ready = enabled;
        self
    }

    /// How many other endpoints a call that failed *not processed* is sent to
    /// before its failure is returned (default 2; 0 turns fail-over off).
    pub fn failover(mut self, endpoints: usize) -> Self {
        self.failover = endpoints;
        self
    }

    /// When an endpoint whose calls keep failing is left out for a while
    /// (default: [`OutlierDetection::new`], Envoy's defaults;
    /// [`OutlierDetection::disabled`] to turn it off).
    pub fn outlier_detection(mut self, outlier: OutlierDetection) -> Self {
        self.outlier = outlier;
        self
    }

    /// Follow each connected endpoint's `grpc.health.v1` `Watch` for the
    /// service (on by default): an endpoint that says it is not serving
    /// leaves the picks until it says it is. The service name must be the
    /// one its servers register.
    pub fn health_check(mut self, enabled: bool) -> Self {
        self.health_check = enabled;
        self
    }

    /// How the channel of each endpoint is made (default: a sinew channel
    /// with default settings, `Channel::builder(address).lazy()`). The
    /// channel should be lazy: the balancer's worker connects it. Replaces
    /// [`tls`](Self::tls), if it was called before (the last one called is
    /// the one used): a maker of one's own sets TLS itself.
    pub fn channel(mut self, make: impl Fn(&Endpoint) -> Channel + Send + Sync + 'static) -> Self {
        self.make_channel = Arc::new(make);
        self
    }

    /// Connects to the endpoints with these TLS settings (a private CA, a
    /// client certificate for mutual TLS): every network endpoint is reached
    /// over TLS, `tcp://` ones at the same host and port as `tls://` (DNS
    /// names resolve to plain addresses; a registry's `tls://` endpoints say
    /// so themselves); `unix://` and `shm://` endpoints, which cannot leave
    /// the host, stay as they are. Resolvers give addresses, so a
    /// certificate must name the endpoint's IP address unless the settings
    /// name the server ([`ClientTlsBuilder::server_name`](sinew_transport::tls::ClientTlsBuilder::server_name),
    /// [`ClientTls::with_server_name`](sinew_transport::tls::ClientTls::with_server_name)).
    ///
    /// This is a way of making each endpoint's channel: it replaces
    /// [`channel`](Self::channel), and a later `channel` replaces it (the
    /// last one called is the one used).
    pub fn tls(self, tls: sinew_transport::tls::ClientTls) -> Self {
        self.channel(move |endpoint| {
            let address = match endpoint.address() {
                sinew_transport::Address::Tcp { host, port } => {
                    sinew_transport::Address::tls(host.clone(), *port)
                }
                other => other.clone(),
            };
            Channel::builder(address).tls(tls.clone()).lazy()
        })
    }

    /// The balanced channel. Starts its worker on the current Tokio runtime
    /// (panics outside one, as `tokio::spawn` does).
    pub fn build(self) -> Balanced {
        let key = self.policy.key().map(Arc::from);
        let locality = self.zone.map(|zone| Locality {
            zone,
            overload: self.zone_overload,
        });
        let subset = self
            .subset
            .map(|size| Subset::new(size, self.client_id.unwrap_or_else(Subset::random_seed)));
        let shared = Arc::new(Shared {
            service: self.service,
            resolver: self.resolver,
            policy: self.policy,
            key,
            locality,
            subset,
            wait_for_ready: self.wait_for_ready,
            failover: self.failover,
            outlier: self.outlier,
            ejected: AtomicUsize::new(0),
            health_check: self.health_check,
            not_serving: AtomicUsize::new(0),
            set: ArcSwap::from_pointee(Set::default()),
            cursor: AtomicUsize::new(0),
            resolved: AtomicBool::new(false),
            resolve_error: Mutex::new(None),
            waiters: Mutex::new(Vec::new()),
        });
        let updates = shared.resolver.resolve(&shared.service);
        let worker = tokio::spawn(worker::run(shared.clone(), updates, self.make_channel));
        Balanced {
            handle: Arc::new(Handle {
                shared,
                worker: worker.abort_handle(),
            }),
            picked: None,
        }
    }
}
