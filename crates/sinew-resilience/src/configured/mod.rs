//! [`Configured`]: a call service that applies a [`ServiceConfig`] to every
//! call it passes on: the method's timeout (the call keeps a sooner deadline
//! of its own), its request and response size limits, and its retry policy
//! under the config's retry throttling, or its hedging policy. Methods whose
//! `.proto` declares them idempotent are retried by default
//! ([`ServiceConfig::idempotent_retry`]). Other calls to methods the config
//! does not name pass through untouched, at the cost of one lookup.
//!
//! The config is live: [`ConfigHandle::set`] replaces it for the calls that
//! start after (and [`ConfigHandle::follow_file`] does so whenever a config
//! file changes), and a throttle whose settings did not change keeps its
//! tokens.
//!
//! Waiting for the service below: `Configured` is ready whenever the
//! service below is or will be, and a call that finds it not ready waits in
//! its own future, where its deadline (which the method's timeout may set)
//! bounds the wait: `DEADLINE_EXCEEDED`, never sent, when it passes first.
//! `waitForReady: true` makes a call that failed because no endpoint was
//! ready (`UNAVAILABLE`, not processed) wait and go again, backing off from
//! 10 ms to 1 s, until its deadline, over a channel that fails fast; over
//! one built to wait for ready, calls wait anyway.
//!
//! Streaming requests are retried too, from a replay of their messages kept
//! up to the retry buffer ([`ConfigHandle::set_retry_buffer`]);
//! hedging sends copies of single-message requests only (a streaming one is
//! sent once).

mod follow;
mod future;
mod layer;

pub use follow::FollowedFile;
#[cfg(any(feature = "etcd", feature = "gossip"))]
pub use follow::FollowedKey;
pub use future::ResponseFuture;
pub use layer::ServiceConfigLayer;

use crate::config::ServiceConfig;
use crate::hedge::{Hedging, HedgingPolicy};
use crate::retry::{RetryPolicy, RetryThrottle, Retrying};
use arc_swap::ArcSwap;
use sinew_rpc::call::{CallRequest, CallResponse};
use sinew_rpc::Status;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower::Service;

/// A service config in force, replaceable while calls run; cheap to clone
/// (clones share it).
#[derive(Clone, Debug)]
pub struct ConfigHandle {
    current: Arc<ArcSwap<InForce>>,
    retry_buffer: Arc<AtomicUsize>,
}

/// The most a streaming call keeps of its request for its retries unless
/// [`ConfigHandle::set_retry_buffer`] says otherwise: 256 KiB, as grpc-go's
/// per-call retry buffer.
pub const DEFAULT_RETRY_BUFFER: usize = 256 << 10;

/// A config and the throttle that goes with it.
#[derive(Debug)]
struct InForce {
    config: ServiceConfig,
    throttle: Option<RetryThrottle>,
}

impl ConfigHandle {
    /// A handle with `config` in force.
    pub fn new(config: ServiceConfig) -> ConfigHandle {
        let throttle = config.retry_throttling().map(RetryThrottle::new);
        ConfigHandle {
            current: Arc::new(ArcSwap::from_pointee(InForce { config, throttle })),
            retry_buffer: Arc::new(AtomicUsize::new(DEFAULT_RETRY_BUFFER)),
        }
    }

    /// How much of a streaming request (encoded messages, in bytes) a call
    /// keeps so that a retry can send it again from its first message:
    /// once its messages outgrow this, a call is not retried. A setting of
    /// the channel, as in gRPC (not of the config's JSON): a new config
    /// keeps it.
    pub fn set_retry_buffer(&self, bytes: usize) {
        self.retry_buffer.store(bytes, Ordering::Relaxed);
    }

    /// What a streaming call keeps of its request for its retries, in bytes.
    pub fn retry_buffer(&self) -> usize {
        self.retry_buffer.load(Ordering::Relaxed)
    }

    /// Puts `config` in force for the calls that start from now on. The
    /// retry throttle keeps its tokens if its settings are the same.
    pub fn set(&self, config: ServiceConfig) {
        let current = self.current.load();
        let throttle = match (config.retry_throttling(), &current.throttle) {
            (Some(settings), Some(throttle)) if throttle.settings() == settings => {
                Some(throttle.clone())
            }
            (settings, _) => settings.map(RetryThrottle::new),
        };
        self.current.store(Arc::new(InForce { config, throttle }));
    }

    /// The config in force.
    pub fn get(&self) -> ServiceConfig {
        self.current.load().config.clone()
    }

    /// The retry throttle in force, if the config sets one.
    pub fn throttle(&self) -> Option<RetryThrottle> {
        self.current.load().throttle.clone()
    }
}

/// A call service that applies a service config to the calls it passes to
/// `S`; see the module docs.
#[derive(Debug)]
pub struct Configured<S> {
    inner: S,
    config: ConfigHandle,
    // What `poll_ready` found of the service below, for `call`.
    below: Below,
}

/// The service below, as `poll_ready` found it.
#[derive(Clone, Debug)]
enum Below {
    Ready,
    /// Not ready yet: each call waits for it in its own future, within
    /// its deadline (which the config's timeout may set).
    Waiting,
    /// Failing calls at once because nothing is ready (`UNAVAILABLE`, not
    /// processed), while some method waits for ready: its calls wait, the
    /// others fail with this.
    Refusing(Status),
}

impl<S: Clone> Clone for Configured<S> {
    /// A clone, to be readied before its first call (the readiness found
    /// for this one is not the clone's).
    fn clone(&self) -> Configured<S> {
        Configured {
            inner: self.inner.clone(),
            config: self.config.clone(),
            below: Below::Waiting,
        }
    }
}

impl<S> Configured<S> {
    /// `inner`, with the config `config` holds.
    pub fn new(inner: S, config: ConfigHandle) -> Configured<S> {
        Configured {
            inner,
            config,
            below: Below::Waiting,
        }
    }

    /// The handle that replaces the config.
    pub fn config(&self) -> &ConfigHandle {
        &self.config
    }

    /// The service calls go to.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Service<CallRequest> for Configured<S>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status> + Clone,
{
    type Response = CallResponse;
    type Error = Status;
    type Future = ResponseFuture<S, S::Future>;

    /// Ready, unless the service below fails calls at once and no method
    /// waits for ready: a call then waits for the service below in its own
    /// future, where its deadline bounds the wait (the caller's readiness
    /// wait cannot know the timeout the config gives the method).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.below = match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Below::Ready,
            Poll::Pending => Below::Waiting,
            Poll::Ready(Err(status))
                if status.is_not_processed()
                    && self.config.current.load().config.waits_for_ready() =>
            {
                Below::Refusing(status)
            }
            Poll::Ready(Err(status)) => {
                self.below = Below::Waiting;
                return Poll::Ready(Err(status));
            }
        };
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: CallRequest) -> Self::Future {
        let below = std::mem::replace(&mut self.below, Below::Waiting);
        let in_force = self.config.current.load();
        let method = in_force.config.method_config(request.path().as_str());
        let repeatable = request.path().idempotency().is_repeatable();
        if method.is_none() && !repeatable {
            // Nothing to apply.
            return match below {
                Below::Ready => ResponseFuture::direct(self.inner.call(request), None),
                Below::Waiting => ResponseFuture::readying(self.inner.clone(), request, None),
                Below::Refusing(status) => ResponseFuture::failed(status),
            };
        }
        let mut response_limit = None;
        let mut repeat = None;
        let mut wait_for_ready = false;
        if let Some(method) = method {
            if let Some(timeout) = method.timeout_value() {
                // A timeout too long to add to the clock sets no deadline.
                if let Some(deadline) = Instant::now().checked_add(timeout) {
                    if request.deadline().is_none_or(|own| own > deadline) {
                        request.set_deadline(Some(deadline));
                    }
                }
            }
            if let (Some(limit), Some(payload)) =
                (method.max_request_bytes_value(), request.body().as_single())
            {
                let length = payload.encoded_len();
                if length > limit {
                    return ResponseFuture::failed(Status::resource_exhausted(format!(
                        "request message of {length} bytes for {} is larger than the {limit} bytes its service config allows",
                        request.path()
                    )));
                }
            }
            response_limit = method.max_response_bytes_value();
            repeat = match (method.retry_policy(), method.hedging_policy()) {
                (Some(policy), _) => Some(Repeat::Retry(policy)),
                (None, Some(policy)) => Some(Repeat::Hedge(policy)),
                (None, None) => None,
            };
            wait_for_ready = method.wait_for_ready_value() == Some(true);
        }
        if repeat.is_none() && repeatable {
            repeat = in_force.config.idempotent_retry().map(Repeat::Retry);
        }
        // Waiting for ready alone is a retry policy of one attempt.
        let once = RetryPolicy::new(1, []);
        if repeat.is_none() && wait_for_ready {
            repeat = Some(Repeat::Retry(&once));
        }
        // A streaming request is retried (from a replay of its messages),
        // not hedged: it is sent once under a hedging policy.
        let repeat = repeat.filter(|repeat| match repeat {
            Repeat::Retry(policy) => wait_for_ready || policy.max_attempts() > 1,
            Repeat::Hedge(_) => !request.body().is_stream(),
        });
        let buffer = self.config.retry_buffer();
        let throttle = || in_force.throttle.clone();
        let ready = match below {
            Below::Ready => true,
            Below::Waiting => false,
            // Only a call that waits for ready goes on, to be sent when the
            // service below is.
            Below::Refusing(_) if wait_for_ready && repeat.is_some() => false,
            Below::Refusing(status) => return ResponseFuture::failed(status),
        };
        // The service that makes the first attempt goes with the call; a
        // clone takes its place here (as tower's retry does). A service
        // not ready yet is readied in the call's future.
        let service = match (ready, &repeat) {
            (true, None) => {
                return ResponseFuture::direct(self.inner.call(request), response_limit)
            }
            (true, Some(_)) => {
                let clone = self.inner.clone();
                std::mem::replace(&mut self.inner, clone)
            }
            (false, _) => self.inner.clone(),
        };
        match (repeat, ready) {
            (None, _) => ResponseFuture::readying(service, request, response_limit),
            (Some(Repeat::Retry(policy)), ready) => {
                let (policy, throttle) = (policy.clone(), throttle());
                let retrying = if ready {
                    Retrying::start(service, request, policy, throttle, wait_for_ready, buffer)
                } else {
                    Retrying::unsent(service, request, policy, throttle, wait_for_ready, buffer)
                };
                ResponseFuture::retrying(retrying, response_limit)
            }
            (Some(Repeat::Hedge(policy)), ready) => {
                let (policy, throttle) = (policy.clone(), throttle());
                let hedging = if ready {
                    Hedging::start(service, request, policy, throttle)
                } else {
                    Hedging::unsent(service, request, policy, throttle)
                };
                ResponseFuture::hedging(hedging, response_limit)
            }
        }
    }
}

/// How a call is sent more than once.
enum Repeat<'a> {
    Retry(&'a RetryPolicy),
    Hedge(&'a HedgingPolicy),
}

#[cfg(test)]
mod tests;
