//! Passive outlier ejection: an endpoint whose calls keep failing, or fail
//! far more often than the others', is left out of the picks for a while,
//! though its connection is fine (Envoy's outlier detection, its
//! consecutive-failures and success-rate kinds).
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
//! * **Success rate** (catches an endpoint that fails one call in three, never
//!   five in a row): every [`interval`](OutlierDetection::success_rate)
//!   (10 s), among the endpoints that took at least 100 calls in it, when
//!   there are at least 5 of them, an endpoint whose share of successful
//!   calls is below the mean by more than 1.9 standard deviations is
//!   ejected, as above. Only the failures that count against an endpoint
//!   count; the calls are those sent to it.
//! * At most a share of the endpoints is ejected at once (10% by default, and
//!   always at least one): an overload that fails calls everywhere must not
//!   empty the set.
//! * Panic: should more than half of the endpoints be ejected all the same (a
//!   share above one half, or a set that shrank), ejections are ignored and
//!   calls go to every ready endpoint (Envoy's and Finagle's panic mode).
//!
//! * **Half-open return**: an endpoint whose ejection is over comes back on
//!   probation (the circuit breaker's half-open state, per endpoint): it
//!   takes at most [`probes`](OutlierDetection::probes) calls at once (3
//!   by default) until that many have succeeded in a row, then all it is
//!   given; a probe that fails (as above) ejects it again at once, for
//!   longer. An endpoint that is still broken costs a few calls, not its
//!   whole share of the traffic.
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
    success_rate: Option<SuccessRate>,
    probes: u32,
}

/// The success-rate rule's settings (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SuccessRate {
    pub(crate) interval: Duration,
    pub(crate) request_volume: u64,
    pub(crate) minimum_hosts: usize,
    pub(crate) stdev_factor: f64,
}

impl Default for OutlierDetection {
    fn default() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_share: 0.1,
            success_rate: Some(SuccessRate {
                interval: Duration::from_secs(10),
                request_volume: 100,
                minimum_hosts: 5,
                stdev_factor: 1.9,
            }),
            probes: 3,
        }
    }
}

impl OutlierDetection {
    /// Envoy's defaults: 5 consecutive failures; a success rate 1.9
    /// standard deviations below the mean, over 10 s, among at least 5
    /// endpoints of at least 100 calls each; ejections of 30 s growing to
    /// 300 s; at most 10% of the endpoints (at least one).
    pub fn new() -> OutlierDetection {
        OutlierDetection::default()
    }

    /// Never eject.
    pub fn disabled() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 0,
            success_rate: None,
            ..OutlierDetection::default()
        }
    }

    /// Ejects by success rate: every `interval`, among the endpoints that
    /// took at least `request_volume` calls in it, when there are at least
    /// `minimum_hosts` of them, those whose success rate is below the mean
    /// by more than `stdev_factor` standard deviations.
    pub fn success_rate(
        mut self,
        interval: Duration,
        request_volume: u64,
        minimum_hosts: usize,
        stdev_factor: f64,
    ) -> Self {
        self.success_rate = Some(SuccessRate {
            interval: interval.max(Duration::from_millis(1)),
            request_volume: request_volume.max(1),
            minimum_hosts: minimum_hosts.max(2),
            stdev_factor: if stdev_factor.is_nan() {
                1.9
            } else {
                stdev_factor.max(0.0)
            },
        });
        self
    }

    /// Does not eject by success rate (consecutive failures only).
    pub fn without_success_rate(mut self) -> Self {
        self.success_rate = None;
        self
    }

    /// The success-rate rule, when on.
    pub(crate) fn success_rate_rule(&self) -> Option<SuccessRate> {
        self.success_rate
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

    /// An endpoint back from an ejection takes at most `count` calls at
    /// once until `count` have succeeded in a row (0: it is back in full at
    /// once, as in Envoy).
    pub fn probes(mut self, count: u32) -> Self {
        self.probes = count;
        self
    }

    fn enabled(&self) -> bool {
        self.consecutive_failures > 0 || self.success_rate.is_some()
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

/// The endpoints whose success rate is an outlier among `samples` (calls
/// and failures of each endpoint over one interval), by their index: see
/// the module docs.
pub(crate) fn success_rate_outliers(samples: &[(u64, u64)], rule: SuccessRate) -> Vec<usize> {
    let rates: Vec<(usize, f64)> = samples
        .iter()
        .enumerate()
        .filter(|(_, (calls, _))| *calls >= rule.request_volume)
        .map(|(index, &(calls, failures))| {
            (index, 1.0 - (failures.min(calls) as f64 / calls as f64))
        })
        .collect();
    if rates.len() < rule.minimum_hosts {
        return Vec::new();
    }
    let count = rates.len() as f64;
    let mean = rates.iter().map(|(_, rate)| rate).sum::<f64>() / count;
    let variance = rates
        .iter()
        .map(|(_, rate)| (rate - mean).powi(2))
        .sum::<f64>()
        / count;
    let threshold = mean - rule.stdev_factor * variance.sqrt();
    rates
        .into_iter()
        .filter(|(_, rate)| *rate < threshold)
        .map(|(index, _)| index)
        .collect()
}

/// One endpoint's failures and ejection.
#[derive(Debug, Default)]
pub(crate) struct Outlier {
    consecutive: AtomicU32,
    /// Failures that count against the endpoint, ever.
    failures: AtomicU64,
    /// The endpoint's calls and failures when the success-rate interval
    /// began (the worker's alone).
    window_calls: AtomicU64,
    window_failures: AtomicU64,
    ejected: AtomicBool,
    /// While ejected: until when, in nanoseconds since the estimates' epoch;
    /// after: when the last ejection ended.
    until: AtomicU64,
    /// Ejections counted for the next ejection's length.
    times: AtomicU32,
    /// Back from an ejection: successes still needed in a row before the
    /// endpoint is back in full (0: it is), and the most calls it takes at
    /// once until then.
    probation: AtomicU32,
    probes: AtomicU32,
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

    /// Whether the endpoint may take one more call, with `in_flight` calls
    /// running on it: not while ejected; on probation, under its probes.
    pub(crate) fn admits(&self, in_flight: usize) -> bool {
        !self.is_ejected()
            && (self.probation.load(Ordering::Relaxed) == 0
                || in_flight < self.probes.load(Ordering::Relaxed) as usize)
    }

    /// Whether the endpoint is on probation after an ejection.
    pub(crate) fn on_probation(&self) -> bool {
        self.probation.load(Ordering::Relaxed) != 0
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
                self.failures.fetch_add(1, Ordering::Relaxed);
                let failures = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                let probe_failed = self.on_probation();
                if (probe_failed
                    || (config.consecutive_failures > 0 && failures >= config.consecutive_failures))
                    && !self.is_ejected()
                {
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
                if self.on_probation() {
                    // (Not below 0 if a return raced it.)
                    let _ =
                        self.probation
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                                left.checked_sub(1)
                            });
                }
                Verdict::Keep
            }
        }
    }

    /// The calls and failures since the last call of this (given the
    /// endpoint's calls ever, `calls`), starting the next interval.
    pub(crate) fn take_interval(&self, calls: u64) -> (u64, u64) {
        let failures = self.failures.load(Ordering::Relaxed);
        let calls_before = self.window_calls.swap(calls, Ordering::Relaxed);
        let failures_before = self.window_failures.swap(failures, Ordering::Relaxed);
        (
            calls.saturating_sub(calls_before),
            failures.saturating_sub(failures_before),
        )
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
        self.probation.store(0, Ordering::Relaxed);
        true
    }

    /// Returns the endpoint, on probation, if its ejection is over; whether
    /// it did.
    pub(crate) fn return_if_due(&self, config: &OutlierDetection, now: Instant) -> bool {
        if !self.is_ejected() || since_epoch(now) < self.until.load(Ordering::Relaxed) {
            return false;
        }
        self.until.store(since_epoch(now), Ordering::Relaxed);
        self.probes.store(config.probes, Ordering::Relaxed);
        self.probation.store(config.probes, Ordering::Relaxed);
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
            assert!(!outlier.return_if_due(&config(), now + length - Duration::from_millis(1)));
            now += length;
            assert!(outlier.return_if_due(&config(), now));
            assert!(!outlier.is_ejected());
        }
        assert_eq!(outlier.times_ejected(), 4);
        // In for 25 s (the longest ejection): the next one is short again.
        now += Duration::from_secs(25);
        assert!(outlier.eject(&config(), now));
        assert_eq!(outlier.times_ejected(), 1);
        assert!(outlier.return_if_due(&config(), now + Duration::from_secs(10)));
    }

    #[test]
    fn a_returned_endpoint_takes_a_few_probes_and_one_failure_ejects_it_again() {
        let config = config().probes(2);
        let outlier = Outlier::default();
        let start = Instant::now();
        assert!(outlier.eject(&config, start));
        assert!(!outlier.admits(0));
        assert!(outlier.return_if_due(&config, start + Duration::from_secs(10)));
        // On probation: two calls at once at most.
        assert!(outlier.on_probation());
        assert!(outlier.admits(1));
        assert!(!outlier.admits(2));
        // One probe fails (not a run of three): ejected again, for longer.
        let down = Status::unavailable("still down");
        assert_eq!(outlier.record(&config, Err(&down)), Verdict::Eject);
        let now = start + Duration::from_secs(10);
        assert!(outlier.eject(&config, now));
        assert!(!outlier.on_probation());
        assert!(!outlier.return_if_due(&config, now + Duration::from_secs(19)));
        assert!(outlier.return_if_due(&config, now + Duration::from_secs(20)));
        // A failure about the request says nothing; two successes in a row
        // end the probation.
        let bad_request = Status::invalid_argument("no");
        assert_eq!(outlier.record(&config, Err(&bad_request)), Verdict::Keep);
        assert_eq!(outlier.record(&config, Ok(())), Verdict::Keep);
        assert!(outlier.on_probation());
        assert_eq!(outlier.record(&config, Ok(())), Verdict::Keep);
        assert!(!outlier.on_probation());
        assert!(outlier.admits(1000));
        // Back in full: a failure counts toward a run again.
        assert_eq!(outlier.record(&config, Err(&down)), Verdict::Keep);

        // Without probes: back in full at once.
        let full = OutlierDetection::new().probes(0);
        let outlier = Outlier::default();
        assert!(outlier.eject(&full, start));
        assert!(outlier.return_if_due(&full, start + Duration::from_secs(30)));
        assert!(!outlier.on_probation());
        assert!(outlier.admits(1000));
    }

    fn rule() -> SuccessRate {
        OutlierDetection::new().success_rate_rule().unwrap()
    }

    #[test]
    fn an_endpoint_failing_far_more_often_than_the_others_is_an_outlier() {
        // Five endpoints of 1,000 calls: four fail about 1%, one 30% (never
        // five in a row need be).
        let samples = [(1000, 10), (1000, 8), (1000, 300), (1000, 12), (1000, 9)];
        assert_eq!(success_rate_outliers(&samples, rule()), [2]);
        // All alike: no outlier, even when they all fail often (an
        // overload is not one endpoint's fault).
        let alike = [
            (1000, 400),
            (1000, 410),
            (1000, 390),
            (1000, 405),
            (1000, 395),
        ];
        assert!(success_rate_outliers(&alike, rule()).is_empty());
        let perfect = [(500, 0); 6];
        assert!(success_rate_outliers(&perfect, rule()).is_empty());
    }

    #[test]
    fn too_few_calls_or_endpoints_decide_nothing() {
        // Under 100 calls the bad one does not qualify.
        let few_calls = [(1000, 10), (1000, 8), (99, 90), (1000, 12), (1000, 9)];
        assert!(success_rate_outliers(&few_calls, rule()).is_empty());
        // Four qualifying endpoints are fewer than the minimum of five.
        let few_hosts = [(1000, 10), (1000, 8), (1000, 300), (1000, 12)];
        assert!(success_rate_outliers(&few_hosts, rule()).is_empty());
        assert!(success_rate_outliers(&[], rule()).is_empty());
        // More failures than calls (counted across the interval's edge)
        // count as none succeeding, not as a negative rate.
        let skewed = [(100, 150), (1000, 8), (1000, 9), (1000, 12), (1000, 9)];
        assert_eq!(success_rate_outliers(&skewed, rule()), [0]);
    }

    #[test]
    fn intervals_count_the_calls_and_counted_failures_since_the_last() {
        let outlier = Outlier::default();
        for _ in 0..3 {
            fail(&outlier, Code::Unavailable);
            fail(&outlier, Code::InvalidArgument);
        }
        assert_eq!(outlier.take_interval(100), (100, 3));
        fail(&outlier, Code::Internal);
        assert_eq!(outlier.take_interval(150), (50, 1));
        assert_eq!(outlier.take_interval(150), (0, 0));
        // Failures count for the success rate with consecutive ejection off.
        let counting = Outlier::default();
        let only_rate = OutlierDetection::new().consecutive_failures(0);
        let status = Status::unavailable("down");
        for _ in 0..10 {
            assert_eq!(counting.record(&only_rate, Err(&status)), Verdict::Keep);
        }
        assert_eq!(counting.take_interval(10), (10, 10));
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
