//! Passive outlier ejection: an endpoint whose calls keep failing is left out
//! of the picks for a while, though its connection is fine (Envoy's outlier
//! detection, its consecutive-failures kind).
//!
//! * A call that fails with a status that says the *endpoint* is in trouble
//!   (`UNAVAILABLE`, `INTERNAL`, `UNKNOWN`, `DATA_LOSS`, `DEADLINE_EXCEEDED`)
//!   counts against it; any other outcome resets the count. Statuses about the
//!   request (`INVALID_ARGUMENT`, `NOT_FOUND`, ...) say nothing about the
//!   endpoint and do not count. Calls that failed *not processed* are not
//!   counted either: the connection, which the watcher follows, was the
//!   problem.
//! * After [`consecutive_failures`](OutlierDetection::consecutive_failures)
//!   in a row (5 by default) the endpoint is ejected for the base ejection
//!   time times the number of times it was ejected recently (30 s, 60 s, ...,
//!   at most 300 s; the count starts again once it has stayed in for the
//!   longest ejection time).
//! * At most a share of the endpoints is ejected at once (10% by default, and
//!   always at least one): an overload that fails calls everywhere must not
//!   empty the set.
//! * Panic: should more than half of the endpoints be ejected all the same (a
//!   share above one half, or a set that shrank), ejections are ignored and
//!   calls go to every ready endpoint (Envoy's and Finagle's panic mode).
//!
//! The balancer's worker returns ejected endpoints when their time is up.

use super::ewma::since_epoch;
use sinew_rpc::{Code, Status};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a balanced channel takes an endpoint out because its calls fail
/// (see the module docs). On by default.
#[derive(Clone, Debug)]
pub struct OutlierDetection {
    consecutive_failures: u32,
    base_ejection: Duration,
    max_ejection: Duration,
    max_ejected_share: f64,
}

impl Default for OutlierDetection {
    fn default() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_share: 0.1,
        }
    }
}

impl OutlierDetection {
    /// Envoy's defaults: 5 consecutive failures, 30 s growing to 300 s, at
    /// most 10% of the endpoints (at least one).
    pub fn new() -> OutlierDetection {
        OutlierDetection::default()
    }

    /// Never eject.
    pub fn disabled() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 0,
            ..OutlierDetection::default()
        }
    }

    /// Failed calls in a row that eject an endpoint (0: never).
    pub fn consecutive_failures(mut self, count: u32) -> Self {
        self.consecutive_failures = count;
        self
    }

    /// The first ejection lasts `base`; each further one, `base` more, up to
    /// `max`.
    pub fn ejection_time(mut self, base: Duration, max: Duration) -> Self {
        self.base_ejection = base;
        self.max_ejection = max.max(base);
        self
    }

    /// The largest share of the endpoints ejected at once (one endpoint is
    /// always allowed).
    pub fn max_ejected_share(mut self, share: f64) -> Self {
        self.max_ejected_share = share.clamp(0.0, 1.0);
        self
    }

    fn enabled(&self) -> bool {
        self.consecutive_failures > 0
    }

    /// How many of `endpoints` may be ejected at once.
    pub(crate) fn max_ejected(&self, endpoints: usize) -> usize {
        ((endpoints as f64 * self.max_ejected_share).floor() as usize).max(1)
    }
}

/// Whether a failure with this status counts against the endpoint.
fn counts_against_endpoint(status: &Status) -> bool {
    !status.is_not_processed()
        && matches!(
            status.code(),
            Code::Unavailable
                | Code::Internal
                | Code::Unknown
                | Code::DataLoss
                | Code::DeadlineExceeded
        )
}

/// One endpoint's failures and ejection.
#[derive(Debug, Default)]
pub(crate) struct Outlier {
    consecutive: AtomicU32,
    ejected: AtomicBool,
    /// While ejected: until when, in nanoseconds since the estimates' epoch;
    /// after: when the last ejection ended.
    until: AtomicU64,
    /// Ejections counted for the next ejection's length.
    times: AtomicU32,
}

/// What [`Outlier::record`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing to do.
    Keep,
    /// The endpoint reached the threshold: eject it if the share allows.
    Eject,
}

impl Outlier {
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Counts one call's outcome.
    pub(crate) fn record(
        &self,
        config: &OutlierDetection,
        outcome: Result<(), &Status>,
    ) -> Verdict {
        if !config.enabled() {
            return Verdict::Keep;
        }
        match outcome {
            Err(status) if counts_against_endpoint(status) => {
                let failures = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= config.consecutive_failures && !self.is_ejected() {
                    Verdict::Eject
                } else {
                    Verdict::Keep
                }
            }
            Err(_) => Verdict::Keep,
            Ok(()) => {
                if self.consecutive.load(Ordering::Relaxed) != 0 {
                    self.consecutive.store(0, Ordering::Relaxed);
                }
                Verdict::Keep
            }
        }
    }

    /// Ejects the endpoint; whether this call did (not already ejected).
    pub(crate) fn eject(&self, config: &OutlierDetection, now: Instant) -> bool {
        if self.ejected.swap(true, Ordering::AcqRel) {
            return false;
        }
        let now_ns = since_epoch(now);
        // Back in for the longest ejection time since the last one: count
        // from the start again.
        let ended = self.until.load(Ordering::Relaxed);
        if ended != 0 && now_ns.saturating_sub(ended) >= config.max_ejection.as_nanos() as u64 {
            self.times.store(0, Ordering::Relaxed);
        }
        let times = self.times.fetch_add(1, Ordering::Relaxed) + 1;
        let length = config
            .base_ejection
            .saturating_mul(times)
            .min(config.max_ejection);
        self.until
            .store(now_ns + length.as_nanos() as u64, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        true
    }

    /// Returns the endpoint if its ejection is over; whether it did.
    pub(crate) fn return_if_due(&self, now: Instant) -> bool {
        if !self.is_ejected() || since_epoch(now) < self.until.load(Ordering::Relaxed) {
            return false;
        }
        self.until.store(since_epoch(now), Ordering::Relaxed);
        self.ejected.store(false, Ordering::Release);
        true
    }

    /// Ejections that count for the next one's length.
    #[cfg(test)]
    fn times_ejected(&self) -> u32 {
        self.times.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OutlierDetection {
        OutlierDetection::new()
            .consecutive_failures(3)
            .ejection_time(Duration::from_secs(10), Duration::from_secs(25))
    }

    fn fail(outlier: &Outlier, code: Code) -> Verdict {
        outlier.record(&config(), Err(&Status::new(code, "failed")))
    }

    #[test]
    fn consecutive_endpoint_failures_eject_and_a_success_resets_the_count() {
        let outlier = Outlier::default();
        assert_eq!(fail(&outlier, Code::Unavailable), Verdict::Keep);
        assert_eq!(fail(&outlier, Code::Internal), Verdict::Keep);
        assert_eq!(outlier.record(&config(), Ok(())), Verdict::Keep);
        assert_eq!(fail(&outlier, Code::Unknown), Verdict::Keep);
        assert_eq!(fail(&outlier, Code::DeadlineExceeded), Verdict::Keep);
        assert_eq!(fail(&outlier, Code::DataLoss), Verdict::Eject);
    }

    #[test]
    fn failures_about_the_request_or_not_processed_do_not_count() {
        let outlier = Outlier::default();
        for _ in 0..10 {
            assert_eq!(fail(&outlier, Code::InvalidArgument), Verdict::Keep);
            assert_eq!(fail(&outlier, Code::NotFound), Verdict::Keep);
            assert_eq!(fail(&outlier, Code::PermissionDenied), Verdict::Keep);
            let not_processed = Status::unavailable("connection lost").mark_not_processed();
            assert_eq!(
                outlier.record(&config(), Err(&not_processed)),
                Verdict::Keep
            );
        }
        let disabled = OutlierDetection::disabled();
        for _ in 0..10 {
            let status = Status::unavailable("down");
            assert_eq!(outlier.record(&disabled, Err(&status)), Verdict::Keep);
        }
    }

    #[test]
    fn ejections_grow_up_to_the_maximum_and_start_again_after_a_quiet_time() {
        let outlier = Outlier::default();
        let start = Instant::now();
        let mut now = start;
        for expected in [10, 20, 25, 25] {
            assert!(outlier.eject(&config(), now));
            assert!(!outlier.eject(&config(), now), "already ejected");
            assert!(outlier.is_ejected());
            let length = Duration::from_secs(expected);
            assert!(!outlier.return_if_due(now + length - Duration::from_millis(1)));
            now += length;
            assert!(outlier.return_if_due(now));
            assert!(!outlier.is_ejected());
        }
        assert_eq!(outlier.times_ejected(), 4);
        // In for 25 s (the longest ejection): the next one is short again.
        now += Duration::from_secs(25);
        assert!(outlier.eject(&config(), now));
        assert_eq!(outlier.times_ejected(), 1);
        assert!(outlier.return_if_due(now + Duration::from_secs(10)));
    }

    #[test]
    fn at_most_a_share_of_the_endpoints_and_always_one() {
        let detection = OutlierDetection::new();
        assert_eq!(detection.max_ejected(1), 1);
        assert_eq!(detection.max_ejected(3), 1);
        assert_eq!(detection.max_ejected(25), 2);
        let half = OutlierDetection::new().max_ejected_share(0.5);
        assert_eq!(half.max_ejected(7), 3);
    }
}
