//! [`RateLimiter`]: a token bucket per key, with a bounded table of keys,
//! for any protocol that can name its callers by a string. Each key may
//! take `rate` tokens a second on average and `burst` at once; a refusal
//! says how long until the key's next token, for the caller to pass on
//! (gRPC's `grpc-retry-pushback-ms`, HTTP's `Retry-After`). It is the
//! bucket table under the RPC server's [`RateLimitLayer`], and what an
//! HTTP front end keys by client address or API key; it knows nothing of
//! calls, requests or how a key is found.
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
//! rate plus the places a sweep frees. A key is what the caller says:
//! put the limit behind authentication if callers must not share or forge
//! them.
//!
//! Time is tokio's clock ([`tokio::time::Instant`]), so tests can pause
//! and advance it; outside a paused runtime it is the system's monotonic
//! clock, and no runtime is needed.
//!
//! [`RateLimitLayer`]: super::RateLimitLayer

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The settings of a rate limit.
#[derive(Clone, Debug)]
pub struct RateLimit {
    pub(super) rate: f64,
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

/// Token buckets per key: `rate` tokens a second, `burst` at once, in a
/// bounded table of keys (see the module docs). Clones share the buckets,
/// so one limiter can be handed to every connection or handler.
///
/// ```
/// use sinew_resilience::{RateLimit, RateLimiter};
/// let limiter = RateLimiter::new(RateLimit::new(10.0, 2));
/// assert!(limiter.try_acquire("203.0.113.7").is_ok());
/// assert!(limiter.try_acquire("203.0.113.7").is_ok());
/// // The burst is spent: the next token comes in about a tenth of a second.
/// let wait = limiter.try_acquire("203.0.113.7").unwrap_err();
/// assert!(wait.as_millis() <= 100);
/// // Another key has its own bucket.
/// assert!(limiter.try_acquire("198.51.100.1").is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct RateLimiter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: RateLimit,
    table: Mutex<Table>,
    refused: AtomicUsize,
}

impl RateLimiter {
    /// A limiter of `settings`, every bucket full.
    pub fn new(settings: RateLimit) -> RateLimiter {
        RateLimiter {
            shared: Arc::new(Shared {
                table: Mutex::new(Table::new(&settings)),
                settings,
                refused: AtomicUsize::new(0),
            }),
        }
    }

    /// Takes a token from `key`'s bucket (or, while the table is full and
    /// `key` is not in it, from the overflow bucket it shares): `Ok`, or
    /// `Err` with how long until the bucket's next token. A rate of almost nothing may give [`Duration::MAX`]: as good as
    /// never.
    pub fn try_acquire(&self, key: &str) -> Result<(), Duration> {
        self.acquire_at(key, Instant::now())
    }

    /// Keys tracked now (those with a bucket of their own).
    pub fn keys(&self) -> usize {
        self.table().buckets.len()
    }

    /// Tokens refused so far ([`RateLimiter::try_acquire`]'s `Err`s).
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// The settings it was made with.
    pub(super) fn settings(&self) -> &RateLimit {
        &self.shared.settings
    }

    /// [`RateLimiter::try_acquire`] at `now`.
    fn acquire_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let settings = &self.shared.settings;
        let mut table = self.table();
        let bucket = table.bucket(key, settings, now);
        bucket.tokens = bucket.refilled(settings, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        // (No wait fits a rate of almost nothing: as good as never.)
        let wait = Duration::try_from_secs_f64((1.0 - bucket.tokens) / settings.rate)
            .unwrap_or(Duration::MAX);
        drop(table);
        self.shared.refused.fetch_add(1, Ordering::Relaxed);
        Err(wait)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // Buckets are whole between steps: a poisoned lock holds valid ones.
        self.shared
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let limit = RateLimiter::new(RateLimit::new(10.0, 3));
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.acquire_at("a", start), Ok(()));
        }
        let wait = limit.acquire_at("a", start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Another key has its own bucket.
        assert_eq!(limit.acquire_at("b", start), Ok(()));
        // A tenth of a second later, one more token.
        let later = start + Duration::from_millis(100);
        assert_eq!(limit.acquire_at("a", later), Ok(()));
        assert!(limit.acquire_at("a", later).is_err());
        // Quiet for long: the bucket is full again, no more.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limit.acquire_at("a", much_later), Ok(()));
        }
        assert!(limit.acquire_at("a", much_later).is_err());
    }

    #[test]
    fn a_rate_of_nothing_allows_the_burst_and_then_refuses_without_panicking() {
        for rate in [0.0, -1.0, f64::NAN, 1e-300] {
            let limit = RateLimiter::new(RateLimit::new(rate, 1));
            let start = Instant::now();
            assert_eq!(limit.acquire_at("a", start), Ok(()));
            assert!(limit
                .acquire_at("a", start + Duration::from_secs(3600))
                .is_err());
        }
    }

    #[test]
    fn made_up_keys_get_no_room_from_busy_callers_and_share_one_bucket_when_full() {
        let limit = RateLimiter::new(RateLimit::new(1.0, 2).max_keys(100));
        let start = Instant::now();
        // 99 callers fill the table and go quiet; a busy one spends its burst.
        for n in 0..99 {
            limit.acquire_at(&format!("caller-{n}"), start).unwrap();
        }
        limit.acquire_at("busy", start).unwrap();
        limit.acquire_at("busy", start).unwrap();
        // 10,000 made-up keys, one a millisecond, while the busy caller
        // calls every 100 ms.
        let (mut made_up, mut busy) = (0, 0);
        for n in 0..10_000u64 {
            let now = start + Duration::from_millis(n);
            if limit.acquire_at(&format!("made-up-{n}"), now).is_ok() {
                made_up += 1;
            }
            if n % 100 == 0 && limit.acquire_at("busy", now).is_ok() {
                busy += 1;
            }
            assert!(limit.keys() <= 100);
        }
        // The busy caller kept its bucket: 1 a second, never a fresh burst.
        assert!(limit.table().buckets.contains_key("busy"));
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
        let limit = RateLimiter::new(RateLimit::new(0.0, 1).max_keys(10));
        let start = Instant::now();
        for n in 0..10 {
            limit.acquire_at(&format!("old-{n}"), start).unwrap();
        }
        let later = start + Duration::from_secs(2);
        assert_eq!(limit.acquire_at("new", later), Ok(()), "a place was made");
        assert!(limit.table().buckets.contains_key("new"));
        assert_eq!(limit.keys(), 10);
    }

    // The public face, on tokio's paused clock.

    #[tokio::test(start_paused = true)]
    async fn try_acquire_spends_the_burst_then_says_when_the_next_token_comes() {
        let limiter = RateLimiter::new(RateLimit::new(4.0, 5));
        for _ in 0..5 {
            assert_eq!(limiter.try_acquire("203.0.113.7"), Ok(()));
        }
        // 4 a second: the next token in a quarter of a second.
        assert_eq!(
            limiter.try_acquire("203.0.113.7"),
            Err(Duration::from_millis(250))
        );
        // Refused again at once: the wait has not grown (a refusal takes
        // nothing), and the count says both.
        assert_eq!(
            limiter.try_acquire("203.0.113.7"),
            Err(Duration::from_millis(250))
        );
        assert_eq!(limiter.refused(), 2);
        // Part of the way there, part of the wait left.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            limiter.try_acquire("203.0.113.7"),
            Err(Duration::from_millis(150))
        );
        assert_eq!(limiter.keys(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_come_back_at_the_rate_and_no_more_than_the_burst() {
        let limiter = RateLimiter::new(RateLimit::new(2.0, 3));
        for _ in 0..3 {
            limiter.try_acquire("key").unwrap();
        }
        assert!(limiter.try_acquire("key").is_err());
        // Half a second at 2 a second: one token, not two.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(limiter.try_acquire("key"), Ok(()));
        assert!(limiter.try_acquire("key").is_err());
        // Waiting what a refusal says is enough.
        let wait = limiter.try_acquire("key").unwrap_err();
        tokio::time::advance(wait).await;
        assert_eq!(limiter.try_acquire("key"), Ok(()));
        // An hour of quiet refills the burst and no more.
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..3 {
            assert_eq!(limiter.try_acquire("key"), Ok(()));
        }
        assert!(limiter.try_acquire("key").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_within_its_bound_under_many_keys() {
        let limiter = RateLimiter::new(RateLimit::new(1.0, 1).max_keys(50));
        let mut admitted = 0;
        for n in 0..5_000 {
            if limiter.try_acquire(&format!("client-{n}")).is_ok() {
                admitted += 1;
            }
            assert!(limiter.keys() <= 50, "{} keys", limiter.keys());
            if n % 100 == 0 {
                tokio::time::advance(Duration::from_millis(100)).await;
            }
        }
        assert!(limiter.keys() > 0);
        // The table's 50, then the overflow buckets (16 bursts and 1 a
        // second each over ~5 s) and the places sweeps free (at most 50 a
        // second): far from all 5,000.
        assert!(admitted <= 50 + 16 * (1 + 5) + 50 * 5, "{admitted}");
        assert_eq!(limiter.refused(), 5_000 - admitted);
    }

    #[test]
    fn clones_share_the_buckets() {
        let limiter = RateLimiter::new(RateLimit::new(1.0, 1));
        let clone = limiter.clone();
        assert_eq!(limiter.try_acquire("key"), Ok(()));
        assert!(clone.try_acquire("key").is_err());
        assert_eq!(clone.keys(), 1);
        assert_eq!(limiter.refused(), 1);
    }
}
