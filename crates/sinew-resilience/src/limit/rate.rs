//! [`RateLimitLayer`]: a token bucket per key on a server's calls. Each key
//! (a peer's IP address, or the value of a metadata entry such as an API
//! key) may make `rate` calls a second on average and `burst` at once;
//! calls over that fail with `RESOURCE_EXHAUSTED` and a
//! `grpc-retry-pushback-ms` saying when the next token comes. The table of
//! keys is bounded (`max_keys`): when it is full, buckets that refilled
//! (their keys went quiet) are dropped first, then the least recently used,
//! so a peer that makes up keys cannot make the server grow.

use crate::retry::PUSHBACK;
use futures_util::future::{BoxFuture, FutureExt};
use sinew_rpc::server::ServerCall;
use sinew_rpc::Address;
use sinew_rpc::Status;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service};

/// The settings of a rate limit.
#[derive(Clone, Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    max_keys: usize,
}

impl RateLimit {
    /// `rate` calls a second per key on average, `burst` at once (at least
    /// 1); at most 10,000 keys tracked ([`RateLimit::max_keys`]). A rate
    /// that is not above 0 lets a key make its burst and no more.
    pub fn new(rate: f64, burst: u32) -> RateLimit {
        RateLimit {
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                f64::MIN_POSITIVE
            },
            burst: f64::from(burst.max(1)),
            max_keys: 10_000,
        }
    }

    /// How many keys the table holds at most.
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.max_keys = keys.max(1);
        self
    }
}

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
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: RateLimit,
    key: RateLimitKey,
    buckets: Mutex<HashMap<String, Bucket>>,
    refused: AtomicUsize,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimitLayer {
    /// A limit of `settings` per `key`.
    pub fn new(settings: RateLimit, key: RateLimitKey) -> RateLimitLayer {
        let key = match key {
            RateLimitKey::Metadata(entry) => RateLimitKey::Metadata(entry.to_ascii_lowercase()),
            other => other,
        };
        RateLimitLayer {
            shared: Arc::new(Shared {
                settings,
                key,
                buckets: Mutex::default(),
                refused: AtomicUsize::new(0),
            }),
        }
    }

    /// Calls refused so far.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        lock(&self.shared.buckets).len()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> RateLimitService<S> {
        RateLimitService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A server stack under a rate limit per key; see the module docs.
#[derive(Clone, Debug)]
pub struct RateLimitService<S> {
    inner: S,
    shared: Arc<Shared>,
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
        let key = self.shared.key_of(&call);
        match self.shared.take(key, Instant::now()) {
            Ok(()) => self.inner.call(call).boxed(),
            Err(wait) => {
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
                let mut status = Status::resource_exhausted(format!(
                    "rate limit of {} calls a second reached; try again later",
                    self.shared.settings.rate
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

impl Shared {
    fn key_of<'a>(&self, call: &'a ServerCall) -> &'a str {
        match &self.key {
            RateLimitKey::PeerAddress => match call.peer().and_then(|peer| peer.address()) {
                Some(Address::Tcp { host, .. }) => host,
                _ => "",
            },
            RateLimitKey::Metadata(entry) => call.metadata().get(entry).unwrap_or(""),
        }
    }

    /// Takes a token of `key`'s bucket, or says how long until one comes.
    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let settings = &self.settings;
        let mut buckets = lock(&self.buckets);
        if !buckets.contains_key(key) && buckets.len() >= settings.max_keys {
            make_room(&mut buckets, settings, now);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: settings.burst,
            updated: now,
        });
        bucket.tokens = refilled(bucket, settings, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            // (No wait fits a rate of almost nothing: as good as never.)
            Err(
                Duration::try_from_secs_f64((1.0 - bucket.tokens) / settings.rate)
                    .unwrap_or(Duration::MAX),
            )
        }
    }
}

fn refilled(bucket: &Bucket, settings: &RateLimit, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * settings.rate).min(settings.burst)
}

/// Drops the buckets that refilled; if none did, the least recently used.
fn make_room(buckets: &mut HashMap<String, Bucket>, settings: &RateLimit, now: Instant) {
    buckets.retain(|_, bucket| refilled(bucket, settings, now) < settings.burst);
    if buckets.len() >= settings.max_keys {
        let oldest = buckets
            .iter()
            .min_by_key(|(_, bucket)| bucket.updated)
            .map(|(key, _)| key.clone());
        if let Some(oldest) = oldest {
            buckets.remove(&oldest);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Buckets are whole between steps: a poisoned lock holds valid ones.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(settings: RateLimit) -> Shared {
        Shared {
            settings,
            key: RateLimitKey::PeerAddress,
            buckets: Mutex::default(),
            refused: AtomicUsize::new(0),
        }
    }

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let limit = shared(RateLimit::new(10.0, 3));
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.take("a", start), Ok(()));
        }
        let wait = limit.take("a", start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Another key has its own bucket.
        assert_eq!(limit.take("b", start), Ok(()));
        // A tenth of a second later, one more token.
        let later = start + Duration::from_millis(100);
        assert_eq!(limit.take("a", later), Ok(()));
        assert!(limit.take("a", later).is_err());
        // Quiet for long: the bucket is full again, no more.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limit.take("a", much_later), Ok(()));
        }
        assert!(limit.take("a", much_later).is_err());
    }

    #[test]
    fn a_rate_of_nothing_allows_the_burst_and_then_refuses_without_panicking() {
        for rate in [0.0, -1.0, f64::NAN, 1e-300] {
            let limit = shared(RateLimit::new(rate, 1));
            let start = Instant::now();
            assert_eq!(limit.take("a", start), Ok(()));
            assert!(limit.take("a", start + Duration::from_secs(3600)).is_err());
        }
    }

    #[test]
    fn made_up_keys_cannot_grow_the_table() {
        let limit = shared(RateLimit::new(1.0, 2).max_keys(100));
        let start = Instant::now();
        // 10,000 made-up keys, one a millisecond, while a real one keeps
        // calling: the table stays at 100, and the real key stays in it.
        for n in 0..10_000u64 {
            let now = start + Duration::from_millis(n);
            let _ = limit.take(&format!("key-{n}"), now);
            if n % 50 == 0 {
                let _ = limit.take("busy", now);
            }
            assert!(lock(&limit.buckets).len() <= 100);
        }
        assert!(lock(&limit.buckets).contains_key("busy"));
    }
}
