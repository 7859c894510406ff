//! [`RateLimitLayer`]: a token bucket per key on a server's calls. Each key
//! (a peer's IP address, or the value of a metadata entry such as an API
//! key) may make `rate` calls a second on average and `burst` at once;
//! calls over that fail with `RESOURCE_EXHAUSTED` and a
//! `grpc-retry-pushback-ms` saying when the next token comes.
//!
//! The table of keys is bounded (`max_keys`), and a peer that makes up keys
//! gains little by it: once the table is full, the buckets that refilled
//! (their keys went quiet) are dropped, at most once a second (and the
//! least recently used, down to 90% of the table, when too few refilled),
//! and while it is still full the keys not in it share 16 overflow buckets
//! of the same rate, by a hash of the key. Keys in the table keep their
//! buckets (made-up keys never evict a busy caller's nearly empty bucket,
//! which would hand it a fresh burst), a flood of new keys costs one lookup
//! each (no scan per key), and all of them together get at most 16 keys'
//! rate plus the places a sweep frees. Keys from metadata are
//! what the caller says: put the limit behind authentication if callers
//! must not share or forge them.

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
    table: Mutex<Table>,
    refused: AtomicUsize,
}

/// The buckets of the keys tracked, and those the others share.
#[derive(Debug)]
struct Table {
    buckets: HashMap<String, Bucket>,
    /// For keys not in the table, by a hash of the key.
    overflow: Vec<Bucket>,
    hasher: std::collections::hash_map::RandomState,
    /// When refilled buckets were last dropped.
    swept: Option<Instant>,
}

/// How often a full table is swept of refilled buckets, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The buckets keys not in the table share.
const OVERFLOW_BUCKETS: usize = 16;

/// The share of a full table a sweep frees, the least recently used keys,
/// when too few buckets refilled (a rate so low they never do).
const SWEEP_LEAST_USED: f64 = 0.1;

impl Table {
    fn new(settings: &RateLimit) -> Table {
        let now = Instant::now();
        Table {
            buckets: HashMap::new(),
            overflow: vec![Bucket::full(settings, now); OVERFLOW_BUCKETS],
            hasher: std::collections::hash_map::RandomState::new(),
            swept: None,
        }
    }

    /// `key`'s bucket: its own if the table has or makes room for it, else
    /// the overflow bucket.
    fn bucket(&mut self, key: &str, settings: &RateLimit, now: Instant) -> &mut Bucket {
        if !self.buckets.contains_key(key) && self.buckets.len() >= settings.max_keys {
            let due = self
                .swept
                .is_none_or(|swept| now.saturating_duration_since(swept) >= SWEEP_EVERY);
            if due {
                self.swept = Some(now);
                self.sweep(settings, now);
            }
            if self.buckets.len() >= settings.max_keys {
                use std::hash::BuildHasher;
                let index = self.hasher.hash_one(key) as usize % OVERFLOW_BUCKETS;
                return &mut self.overflow[index];
            }
        }
        self.buckets
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::full(settings, now))
    }

    /// Drops the buckets that refilled (their keys went quiet); if that
    /// frees less than a tenth of the table, the least recently used too.
    fn sweep(&mut self, settings: &RateLimit, now: Instant) {
        self.buckets
            .retain(|_, bucket| bucket.refilled(settings, now) < settings.burst);
        let wanted = (settings.max_keys as f64 * (1.0 - SWEEP_LEAST_USED)) as usize;
        if self.buckets.len() <= wanted {
            return;
        }
        let mut ages: Vec<Instant> = self.buckets.values().map(|bucket| bucket.updated).collect();
        let excess = self.buckets.len() - wanted;
        let (_, cutoff, _) = ages.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        let mut dropped = 0;
        self.buckets.retain(|_, bucket| {
            let drop = dropped < excess && bucket.updated <= cutoff;
            dropped += usize::from(drop);
            !drop
        });
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(settings: &RateLimit, now: Instant) -> Bucket {
        Bucket {
            tokens: settings.burst,
            updated: now,
        }
    }

    /// Its tokens at `now`.
    fn refilled(&self, settings: &RateLimit, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * settings.rate).min(settings.burst)
    }
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
                table: Mutex::new(Table::new(&settings)),
                settings,
                key,
                refused: AtomicUsize::new(0),
            }),
        }
    }

    /// Calls refused so far.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Keys tracked now (those with a bucket of their own).
    pub fn keys(&self) -> usize {
        lock(&self.shared.table).buckets.len()
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
                Some(Address::Tcp { host, .. } | Address::Tls { host, .. }) => host,
                _ => "",
            },
            RateLimitKey::Metadata(entry) => call.metadata().get(entry).unwrap_or(""),
        }
    }

    /// Takes a token of `key`'s bucket, or says how long until one comes.
    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let settings = &self.settings;
        let mut table = lock(&self.table);
        let bucket = table.bucket(key, settings, now);
        bucket.tokens = bucket.refilled(settings, now);
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Buckets are whole between steps: a poisoned lock holds valid ones.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(settings: RateLimit) -> Shared {
        Shared {
            table: Mutex::new(Table::new(&settings)),
            settings,
            key: RateLimitKey::PeerAddress,
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
    fn made_up_keys_get_no_room_from_busy_callers_and_share_one_bucket_when_full() {
        let limit = shared(RateLimit::new(1.0, 2).max_keys(100));
        let start = Instant::now();
        // 99 callers fill the table and go quiet; a busy one spends its burst.
        for n in 0..99 {
            limit.take(&format!("caller-{n}"), start).unwrap();
        }
        limit.take("busy", start).unwrap();
        limit.take("busy", start).unwrap();
        // 10,000 made-up keys, one a millisecond, while the busy caller
        // calls every 100 ms.
        let (mut made_up, mut busy) = (0, 0);
        for n in 0..10_000u64 {
            let now = start + Duration::from_millis(n);
            if limit.take(&format!("made-up-{n}"), now).is_ok() {
                made_up += 1;
            }
            if n % 100 == 0 && limit.take("busy", now).is_ok() {
                busy += 1;
            }
            assert!(lock(&limit.table).buckets.len() <= 100);
        }
        // The busy caller kept its bucket: 1 a second, never a fresh burst.
        assert!(lock(&limit.table).buckets.contains_key("busy"));
        assert!((9..=11).contains(&busy), "{busy}");
        // Made-up keys get a place only as quiet callers' buckets refill
        // and are swept (at most once a second, 100 places each time);
        // while the table is full they share one bucket (2, then 1 a
        // second). Without that, all 10,000 got in.
        println!("{made_up} of 10,000 made-up keys admitted");
        assert!(made_up <= 16 * (2 + 10) + 100 * 10, "{made_up}");
    }

    #[test]
    fn buckets_that_never_refill_do_not_freeze_the_table() {
        // A rate of nothing: buckets never refill, so none is ever swept as
        // quiet; the least recently used make room all the same.
        let limit = shared(RateLimit::new(0.0, 1).max_keys(10));
        let start = Instant::now();
        for n in 0..10 {
            limit.take(&format!("old-{n}"), start).unwrap();
        }
        let later = start + Duration::from_secs(2);
        assert_eq!(limit.take("new", later), Ok(()), "a place was made");
        assert!(lock(&limit.table).buckets.contains_key("new"));
        assert_eq!(lock(&limit.table).buckets.len(), 10);
    }
}
