//! Fault injection, as Envoy's fault filter does it: delay or fail a share
//! of the calls that match a rule (by method path and by a metadata entry),
//! on the server side ([`ServerCall`]s, through
//! `ServerBuilder::layer`) or the client side ([`CallRequest`]s). Off
//! unless rules are set; rules change live through a [`FaultHandle`].
//!
//! For tests, benchmarks and drills (`sinew demo` makes a node slow with
//! it): what a slow or failing replica does to the callers, on demand,
//! with no code in the handlers.

mod future;
mod text;

pub use future::ResponseFuture;
pub use text::ParseFaultError;

use crate::retry::PREVIOUS_ATTEMPTS;
use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use sinew_rpc::call::CallRequest;
use sinew_rpc::server::ServerCall;
use sinew_rpc::{Code, MetadataMap, Status};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// One fault: the calls it matches, and what happens to them.
#[derive(Clone, Debug)]
pub struct FaultRule {
    path_prefix: String,
    metadata: Option<(String, String)>,
    first_attempt_only: bool,
    delay: Option<(f64, Duration)>,
    abort: Option<(f64, Status)>,
}

impl FaultRule {
    /// A rule for every call that does nothing yet.
    pub fn all() -> FaultRule {
        FaultRule {
            path_prefix: "/".to_owned(),
            metadata: None,
            first_attempt_only: false,
            delay: None,
            abort: None,
        }
    }

    /// A rule for the calls whose path starts with `prefix`: one method
    /// (`/package.Service/Method`) or a service (`/package.Service/`).
    pub fn for_path(prefix: impl Into<String>) -> FaultRule {
        FaultRule {
            path_prefix: prefix.into(),
            ..FaultRule::all()
        }
    }

    /// Only the calls whose metadata has `key` set to `value`.
    pub fn when_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata = Some((key.into().to_ascii_lowercase(), value.into()));
        self
    }

    /// Only first attempts: not the retries and hedges of a call (which
    /// carry `grpc-previous-rpc-attempts`), so that a retry succeeds, as
    /// when a replica fails for a moment.
    pub fn first_attempt_only(mut self) -> Self {
        self.first_attempt_only = true;
        self
    }

    /// Delays `share` (0 to 1) of the matching calls by `delay` before
    /// they go on.
    pub fn delay(mut self, share: f64, delay: Duration) -> Self {
        self.delay = Some((share.clamp(0.0, 1.0), delay));
        self
    }

    /// Fails `share` (0 to 1) of the matching calls with `status` instead
    /// of passing them on (after the delay, if one applies too).
    pub fn abort(mut self, share: f64, status: Status) -> Self {
        self.abort = Some((share.clamp(0.0, 1.0), status));
        self
    }

    /// Fails `share` of the matching calls with `code`.
    pub fn abort_with(self, share: f64, code: Code) -> Self {
        self.abort(
            share,
            Status::new(code, format!("{code} injected by a fault rule")),
        )
    }

    fn matches(&self, path: &str, metadata: &MetadataMap) -> bool {
        path.starts_with(&self.path_prefix)
            && !(self.first_attempt_only && metadata.contains_key(PREVIOUS_ATTEMPTS))
            && self
                .metadata
                .as_ref()
                .is_none_or(|(key, value)| metadata.get(key) == Some(value.as_str()))
    }
}

/// What the fault layer does to one call.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub(crate) delay: Option<Duration>,
    pub(crate) abort: Option<Status>,
}

/// The rules in force, replaceable while calls run; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct FaultHandle {
    rules: Arc<ArcSwap<Vec<FaultRule>>>,
}

impl FaultHandle {
    /// No rules: every call passes untouched.
    pub fn new() -> FaultHandle {
        FaultHandle::default()
    }

    /// Puts `rules` in force. Every rule that matches a call applies to it:
    /// their delays add up, and the first abort that hits fails it.
    pub fn set(&self, rules: impl IntoIterator<Item = FaultRule>) {
        self.rules.store(Arc::new(rules.into_iter().collect()));
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.set([]);
    }

    /// The rules in force.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.load().to_vec()
    }

    /// What happens to a call to `path` with `metadata`.
    pub(crate) fn verdict(&self, path: &str, metadata: &MetadataMap) -> Verdict {
        let rules = self.rules.load();
        let mut verdict = Verdict::default();
        if rules.is_empty() {
            return verdict;
        }
        let hit = |share: f64| share >= 1.0 || fastrand::f64() < share;
        for rule in rules.iter().filter(|rule| rule.matches(path, metadata)) {
            if let Some((share, delay)) = rule.delay {
                if hit(share) {
                    verdict.delay = Some(verdict.delay.unwrap_or_default() + delay);
                }
            }
            if let (None, Some((share, status))) = (&verdict.abort, &rule.abort) {
                if hit(*share) {
                    verdict.abort = Some(status.clone());
                }
            }
        }
        verdict
    }
}

/// A call a fault rule can look at: its path and metadata, and when it is
/// no longer worth delaying.
pub trait FaultTarget {
    /// `/package.Service/Method`.
    fn fault_path(&self) -> &str;
    /// The call's metadata.
    fn fault_metadata(&self) -> &MetadataMap;
    /// Resolves with the call's status once a delay should end early: its
    /// deadline passed or (on a server) its client gave up.
    fn abandoned(&self) -> BoxFuture<'static, Status>;
}

impl FaultTarget for ServerCall {
    fn fault_path(&self) -> &str {
        self.path()
    }

    fn fault_metadata(&self) -> &MetadataMap {
        self.metadata()
    }

    fn abandoned(&self) -> BoxFuture<'static, Status> {
        let cancelled = self.cancelled();
        let deadline = self.deadline();
        Box::pin(async move {
            tokio::select! {
                status = cancelled => status,
                () = until(deadline) => past_deadline(),
            }
        })
    }
}

impl FaultTarget for CallRequest {
    fn fault_path(&self) -> &str {
        self.path().as_str()
    }

    fn fault_metadata(&self) -> &MetadataMap {
        self.metadata()
    }

    fn abandoned(&self) -> BoxFuture<'static, Status> {
        let deadline = self.deadline();
        Box::pin(async move {
            until(deadline).await;
            past_deadline()
        })
    }
}

/// Sleeps until `deadline`; forever without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn past_deadline() -> Status {
    Status::deadline_exceeded("the deadline passed while a fault rule delayed the call")
}

/// Wraps a service in [`Fault`]; every service it makes follows one
/// [`FaultHandle`].
#[derive(Clone, Debug, Default)]
pub struct FaultLayer {
    handle: FaultHandle,
}

impl FaultLayer {
    /// A layer with no rules yet (see [`FaultLayer::handle`]).
    pub fn new() -> FaultLayer {
        FaultLayer::default()
    }

    /// A layer with `rules` in force.
    pub fn with_rules(rules: impl IntoIterator<Item = FaultRule>) -> FaultLayer {
        let layer = FaultLayer::new();
        layer.handle.set(rules);
        layer
    }

    /// The handle that changes the rules.
    pub fn handle(&self) -> &FaultHandle {
        &self.handle
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Fault<S> {
        Fault {
            inner,
            handle: self.handle.clone(),
        }
    }
}

/// A service that delays or fails the calls its rules match; see the
/// module docs.
#[derive(Clone, Debug)]
pub struct Fault<S> {
    inner: S,
    handle: FaultHandle,
}

impl<S, R> Service<R> for Fault<S>
where
    S: Service<R, Error = Status> + Clone,
    R: FaultTarget,
{
    type Response = S::Response;
    type Error = Status;
    type Future = ResponseFuture<S, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let verdict = self
            .handle
            .verdict(request.fault_path(), request.fault_metadata());
        match verdict {
            Verdict {
                delay: None,
                abort: None,
            } => ResponseFuture::direct(self.inner.call(request)),
            Verdict {
                delay: None,
                abort: Some(status),
            } => ResponseFuture::failed(status),
            Verdict {
                delay: Some(delay),
                abort,
            } => {
                // The ready service goes with the call, to be readied again
                // after the delay; a clone takes its place.
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                let abandoned = request.abandoned();
                ResponseFuture::delayed(delay, abandoned, service, request, abort)
            }
        }
    }
}

#[cfg(test)]
mod tests;
