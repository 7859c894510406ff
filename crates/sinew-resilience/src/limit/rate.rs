//! [`RateLimitLayer`]: a token bucket per key on a server's calls. Each key
//! (a peer's IP address, or the value of a metadata entry such as an API
//! key) may make `rate` calls a second on average and `burst` at once;
//! calls over that fail with `RESOURCE_EXHAUSTED` and a
//! `grpc-retry-pushback-ms` saying when the next token comes.
//!
//! The buckets are a [`RateLimiter`]'s (`buckets.rs`), whose module docs
//! say how its table of keys stays bounded and what a peer gains by
//! making up keys: little. This module only finds a call's key and turns a
//! refusal into a `Status`. Keys from metadata are what the caller says:
//! put the limit behind authentication if callers must not share or forge
//! them.

use super::{RateLimit, RateLimiter};
use crate::retry::PUSHBACK;
use futures_util::future::{BoxFuture, FutureExt};
use sinew_rpc::server::ServerCall;
use sinew_rpc::Address;
use sinew_rpc::Status;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// What a call's bucket is chosen by.
#[derive(Clone, Debug)]
pub enum RateLimitKey {
    /// The peer's IP address (the host of a TCP peer; every caller over a
    /// Unix socket, shared memory or in-process shares one key).
    PeerAddress,
    /// The value of a metadata entry (calls without it share one key).
    Metadata(String),
}

/// Puts a rate limit per key on a server's calls; see the module docs.
/// Clones share the buckets.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    key: Arc<RateLimitKey>,
}

impl RateLimitLayer {
    /// A limit of `settings` per `key`.
    pub fn new(settings: RateLimit, key: RateLimitKey) -> RateLimitLayer {
        let key = match key {
            RateLimitKey::Metadata(entry) => RateLimitKey::Metadata(entry.to_ascii_lowercase()),
            other => other,
        };
        RateLimitLayer {
            limiter: RateLimiter::new(settings),
            key: Arc::new(key),
        }
    }

    /// Calls refused so far.
    pub fn refused(&self) -> usize {
        self.limiter.refused()
    }

    /// Keys tracked now (those with a bucket of their own).
    pub fn keys(&self) -> usize {
        self.limiter.keys()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> RateLimitService<S> {
        RateLimitService {
            inner,
            limiter: self.limiter.clone(),
            key: self.key.clone(),
        }
    }
}

/// A server stack under a rate limit per key; see the module docs.
#[derive(Clone, Debug)]
pub struct RateLimitService<S> {
    inner: S,
    limiter: RateLimiter,
    key: Arc<RateLimitKey>,
}

impl<S> Service<ServerCall> for RateLimitService<S>
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
        match self.limiter.try_acquire(key_of(&self.key, &call)) {
            Ok(()) => self.inner.call(call).boxed(),
            Err(wait) => {
                let mut status = Status::resource_exhausted(format!(
                    "rate limit of {} calls a second reached; try again later",
                    self.limiter.settings().rate
                ));
                let pushback = wait.as_millis().max(1);
                // Digits: always valid metadata.
                let _ = status
                    .metadata_mut()
                    .insert(PUSHBACK, &pushback.to_string());
                std::future::ready(Err(status)).boxed()
            }
        }
    }
}

/// The key of `call`'s bucket.
fn key_of<'a>(key: &RateLimitKey, call: &'a ServerCall) -> &'a str {
    match key {
        RateLimitKey::PeerAddress => match call.peer().and_then(|peer| peer.address()) {
            Some(Address::Tcp { host, .. } | Address::Tls { host, .. }) => host,
            _ => "",
        },
        RateLimitKey::Metadata(entry) => call.metadata().get(entry).unwrap_or(""),
    }
}
