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
//! `waitForReady: true` makes a call that failed because no endpoint was
//! ready (`UNAVAILABLE`, not processed) wait and go again, backing off from
//! 10 ms to 1 s, until its deadline, over a channel that fails fast; over
//! one built to wait for ready, calls wait anyway. Single-message requests
//! only: a stream is sent once.

mod follow;
mod future;
mod layer;

pub use follow::FollowedFile;
#[cfg(feature = "etcd")]
pub use follow::FollowedKey;
pub use future::ResponseFuture;
pub use layer::ServiceConfigLayer;

use crate::config::ServiceConfig;
use crate::hedge::{Hedging, HedgingPolicy};
use crate::retry::{RetryPolicy, RetryThrottle, Retrying};
use arc_swap::ArcSwap;
use sinew_rpc::call::{Attempts, CallRequest, CallResponse};
use sinew_rpc::Status;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower::Service;

/// A service config in force, replaceable while calls run; cheap to clone
/// (clones share it).
#[derive(Clone, Debug)]
pub struct ConfigHandle {
    current: Arc<ArcSwap<InForce>>,
}

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
        }
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
#[derive(Clone, Debug)]
pub struct Configured<S> {
    inner: S,
    config: ConfigHandle,
    // Why the service below was not ready, when readiness was granted
    // anyway for calls that wait for ready (see `poll_ready`).
    unready: Option<Status>,
}

impl<S> Configured<S> {
    /// `inner`, with the config `config` holds.
    pub fn new(inner: S, config: ConfigHandle) -> Configured<S> {
        Configured {
            inner,
            config,
            unready: None,
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

    /// The service below's readiness; but when it fails a call at once
    /// because nothing is ready (`UNAVAILABLE`, not processed) and some
    /// method waits for ready, ready anyway: `call` then fails the calls of
    /// other methods with that status, and the others wait.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(status))
                if status.is_not_processed()
                    && self.config.current.load().config.waits_for_ready() =>
            {
                self.unready = Some(status);
                Poll::Ready(Ok(()))
            }
            other => {
                self.unready = None;
                other
            }
        }
    }

    fn call(&mut self, mut request: CallRequest) -> Self::Future {
        let unready = self.unready.take();
        let in_force = self.config.current.load();
        let method = in_force.config.method_config(request.path().as_str());
        let repeatable = request.path().idempotency().is_repeatable();
        if method.is_none() && !repeatable {
            return match unready {
                Some(status) => ResponseFuture::failed(status),
                None => ResponseFuture::direct(self.inner.call(request), None),
            };
        }
        let mut response_limit = None;
        let mut repeat = None;
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
        }
        if repeat.is_none() && repeatable {
            repeat = in_force.config.idempotent_retry().map(Repeat::Retry);
        }
        let wait_for_ready = method.and_then(|method| method.wait_for_ready_value()) == Some(true);
        // Waiting for ready alone is a retry policy of one attempt.
        let once = RetryPolicy::new(1, []);
        if repeat.is_none() && wait_for_ready {
            repeat = Some(Repeat::Retry(&once));
        }
        let repeat = repeat.filter(|repeat| {
            !request.body().is_stream()
                && (wait_for_ready
                    || !matches!(repeat, Repeat::Retry(policy) if policy.max_attempts() < 2))
        });
        if let Some(status) = unready {
            // Not ready: only a call that waits for ready goes on, to be
            // sent when the service below is.
            return match (repeat, wait_for_ready && !request.body().is_stream()) {
                (Some(Repeat::Retry(policy)), true) => {
                    let waiting = Retrying::not_sent(
                        self.inner.clone(),
                        request,
                        status,
                        policy.clone(),
                        in_force.throttle.clone(),
                        true,
                    );
                    match waiting {
                        Ok(waiting) => ResponseFuture::retrying(waiting, response_limit),
                        Err(status) => ResponseFuture::failed(status),
                    }
                }
                _ => ResponseFuture::failed(status),
            };
        }
        let Some(repeat) = repeat else {
            return ResponseFuture::direct(self.inner.call(request), response_limit);
        };
        if let Repeat::Hedge(_) = repeat {
            // Copies in flight together share where each went (a retry
            // learns it from the failure it follows).
            request.extensions_mut().insert(Attempts::new());
        }
        let spare = request
            .try_spare()
            .expect("a request of one message has a spare");
        // The ready service makes the first attempt and goes with the call
        // for the next ones; a clone takes its place here (as tower's retry
        // does).
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let first = ready.call(request);
        let throttle = in_force.throttle.clone();
        match repeat {
            Repeat::Retry(policy) => ResponseFuture::retrying(
                Retrying::new(
                    ready,
                    first,
                    spare,
                    policy.clone(),
                    throttle,
                    wait_for_ready,
                ),
                response_limit,
            ),
            Repeat::Hedge(policy) => ResponseFuture::hedging(
                Hedging::new(ready, first, spare, policy.clone(), throttle),
                response_limit,
            ),
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
