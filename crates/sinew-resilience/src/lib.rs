//! sinew's resilience layer: per-method call policies, configured the way
//! gRPC users already configure them, as tower layers over any sinew call
//! service (a [`Channel`](sinew_rpc::Channel), the gRPC client, a balanced
//! channel), so they work alike over sinew's protocol, shared memory and
//! gRPC.
//!
//! * [`config`]: [`ServiceConfig`], the gRPC service config (JSON, a file,
//!   or code): per-method timeouts, retry policies, size limits, retry
//!   throttling, balancing policy names.
//! * [`retry`]: [`RetryPolicy`] and [`RetryThrottle`], gRPC's retries (A6):
//!   exponential backoff with full jitter, retryable codes, server
//!   pushback, throttling, commit when the response begins, transparent
//!   retries of calls no server saw, another endpoint for each retry.
//! * [`hedge`]: [`HedgingPolicy`], gRPC's hedging (A6): copies of a slow
//!   call to other endpoints, the first answer wins, the others are
//!   cancelled.
//! * [`configured`]: [`Configured`] and [`ServiceConfigLayer`], which
//!   apply a config to every call, live-replaceable through a
//!   [`ConfigHandle`].
//! * [`breaker`]: [`BreakerLayer`], circuit breaking per method, per
//!   service or for everything below: a failure rate over a sliding
//!   window opens the circuit, bounded probes with a time limit close it,
//!   state changes are events.
//! * [`limit`]: overload protection on the server: an adaptive
//!   concurrency limit (Netflix's Vegas or Gradient2) with priorities, and rate
//!   limits per key; refusals are `RESOURCE_EXHAUSTED` with a pushback. The
//!   rate limit's token buckets, [`RateLimiter`], serve other protocols too
//!   (the HTTP gateway's limits per client).
//! * [`fault`]: [`FaultLayer`], fault injection as Envoy's fault filter
//!   does it (delay or fail a share of the calls by method and metadata),
//!   on either side of a call, for tests, benchmarks and drills.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use sinew_resilience::{ServiceConfig, ServiceConfigLayer};
//! use tower::Layer;
//! let config = ServiceConfig::from_json(r#"{
//!   "methodConfig": [{
//!     "name": [{"service": "grpc.examples.echo.Echo"}],
//!     "timeout": "2s",
//!     "retryPolicy": {
//!       "maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s",
//!       "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]
//!     }
//!   }],
//!   "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
//! }"#)?;
//! let channel = sinew_rpc::Channel::connect("tcp://127.0.0.1:7000").await?;
//! let service = ServiceConfigLayer::new(config).layer(channel);
//! // A typed client takes it: EchoClient::new(service).
//! # let _ = service; Ok(()) }
//! ```
//!
//! What this crate is not: it does not pick endpoints (the cluster crate's
//! balancer does, and honours the "another endpoint" request of a retry),
//! and it enforces deadlines only on its own waits (for the service below
//! to be ready, between attempts); the transports enforce them on the
//! calls, and a config's timeout sets a call's deadline.

#![forbid(unsafe_code)]

pub mod breaker;
pub mod config;
pub mod configured;
pub mod fault;
pub mod hedge;
pub mod limit;
mod readiness;
pub mod retry;
#[cfg(test)]
mod testing;

pub use breaker::{Breaker, BreakerConfig, BreakerEvent, BreakerLayer, CircuitState};
pub use config::{ConfigError, LoadBalancingConfig, MethodConfig, MethodName, ServiceConfig};
pub use configured::{ConfigHandle, Configured, ServiceConfigLayer};
pub use fault::{FaultHandle, FaultLayer, FaultRule};
pub use hedge::HedgingPolicy;
pub use limit::{
    AdaptiveLimit, AdaptiveLimitLayer, LimitAlgorithm, Priority, RateLimit, RateLimitKey,
    RateLimitLayer, RateLimiter,
};
pub use retry::{RetryPolicy, RetryThrottle, RetryThrottling};
