//! [`Vegas`]: an adaptive concurrency limit after Netflix's `VegasLimit`
//! (the default of their concurrency-limits library, after TCP Vegas),
//! with its no-load latency measured as Envoy's adaptive concurrency
//! filter measures it; a pure state machine over latency samples.
//!
//! * Each call's latency reads as a queue estimate: `limit × (1 −
//!   baseline / latency)` calls waiting, where the baseline is what a call
//!   costs with no queue. A queue of at most `log10(limit)` grows the limit
//!   fast (by `beta × log10`), one under `alpha × log10` slowly (by
//!   `log10`), one over `beta × log10` shrinks it (by `log10`); in between
//!   it holds ([`AdaptiveLimit::queue`](super::AdaptiveLimit::queue):
//!   Netflix's `alpha` and `beta` are 3 and 6, sinew's 2 and 4, for a
//!   tighter latency at a little less throughput). A call
//!   that failed on its deadline shrinks it; it does not grow while fewer
//!   than half of it is in use.
//! * The baseline is measured, not taken from the calls it judges: at the
//!   start and every `baseline_every` (10 s, jittered by up to a tenth), the
//!   limit drops to its floor for the calls admitted from then on (calls
//!   admitted before, a long poll say, keep running beside them but do not
//!   count), until `BASELINE_SAMPLES` calls admitted once the earlier ones
//!   were done have run; their median latency is the new baseline, and the
//!   limit goes back to where it was. A measurement lasts `MEASURE_MAX` at
//!   most (earlier calls that never end, too little traffic): then the
//!   median of what it has (`MEASURE_MIN` samples at least) or the
//!   previous baseline stands. A baseline taken
//!   from the calls themselves (the lowest latency seen, or a moving
//!   average) drifts up with the very queue it should measure, and so
//!   does the limit; this one does not, so the calls admitted keep a
//!   latency near the unloaded one. A server that became slower for good
//!   gets its new baseline at the next measurement.

use super::AdaptiveLimit;
use std::time::Duration;
use tokio::time::Instant;

/// Calls measured for a baseline.
const BASELINE_SAMPLES: usize = 20;

/// The longest a measurement lasts, and the fewest samples it may end with.
const MEASURE_MAX: Duration = Duration::from_secs(1);
const MEASURE_MIN: usize = 5;

/// The state of a Vegas limit; see the module docs.
#[derive(Debug)]
pub(crate) struct Vegas {
    settings: AdaptiveLimit,
    limit: f64,
    /// The no-load latency, in seconds, once measured.
    baseline: Option<f64>,
    /// While a baseline is measured: the latencies so far, and when the
    /// first call of the measurement ended.
    measuring: Option<(Vec<f64>, Option<Instant>)>,
    /// When the next measurement begins.
    next_measurement: Option<Instant>,
}

/// `log10` of the limit, at least 1, as Netflix's `Log10RootFunction`.
fn log10(limit: f64) -> f64 {
    limit.log10().floor().max(1.0)
}

impl Vegas {
    pub(crate) fn new(settings: AdaptiveLimit) -> Vegas {
        let limit = settings.initial.clamp(settings.min, settings.max);
        Vegas {
            settings,
            limit,
            baseline: None,
            measuring: Some((Vec::with_capacity(BASELINE_SAMPLES), None)),
            next_measurement: None,
        }
    }

    /// The limit now, in calls: its floor while a baseline is measured.
    pub(crate) fn limit(&self) -> usize {
        if self.measuring.is_some() {
            self.settings.min as usize
        } else {
            self.limit as usize
        }
    }

    /// Whether it is measuring its baseline.
    pub(crate) fn measuring(&self) -> bool {
        self.measuring.is_some()
    }

    /// What a call costs with no queue, once measured.
    pub(crate) fn usual_latency(&self) -> Option<Duration> {
        self.baseline.map(Duration::from_secs_f64)
    }

    /// Takes one call's `latency`, ended at `now` with `in_flight` calls
    /// (itself included) running; `dropped` if it failed on its deadline;
    /// `measured` if it was admitted in the measurement going on, once the
    /// calls admitted before it were done.
    pub(crate) fn sample(
        &mut self,
        latency: Duration,
        in_flight: usize,
        dropped: bool,
        measured: bool,
        now: Instant,
    ) {
        let rtt = latency.as_secs_f64().max(1e-9);
        if let Some((samples, started)) = self.measuring.as_mut() {
            if measured && !dropped {
                samples.push(rtt);
            }
            let started = *started.get_or_insert(now);
            let over = now.saturating_duration_since(started) >= MEASURE_MAX;
            if samples.len() >= BASELINE_SAMPLES || over {
                if samples.len() >= MEASURE_MIN {
                    samples.sort_by(f64::total_cmp);
                    self.baseline = Some(samples[samples.len() / 2]);
                }
                self.measuring = None;
                let every = self
                    .settings
                    .baseline_every
                    .mul_f64(1.0 - fastrand::f64() * 0.1);
                self.next_measurement = now.checked_add(every);
            }
            return;
        }
        if self.next_measurement.is_some_and(|next| now >= next) {
            self.measuring = Some((Vec::with_capacity(BASELINE_SAMPLES), Some(now)));
            return;
        }
        let Some(baseline) = self.baseline else {
            return;
        };
        let limit = self.limit;
        let log = log10(limit);
        let next = if dropped {
            limit - log
        } else if (in_flight as f64) * 2.0 < limit {
            // Little in use: nothing learnt about capacity.
            return;
        } else {
            let queue = (limit * (1.0 - baseline / rtt)).ceil();
            let settings = &self.settings;
            let (alpha, beta) = (settings.queue.0 * log, settings.queue.1 * log);
            if queue <= log {
                limit + beta.max(1.0)
            } else if queue < alpha {
                limit + log
            } else if queue > beta {
                limit - log
            } else {
                return;
            }
        };
        self.limit = next.clamp(self.settings.min, self.settings.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: f64) -> Duration {
        Duration::from_secs_f64(millis / 1000.0)
    }

    /// A server of `capacity` calls at once, each `work` ms long, kept at
    /// the limit (an overload): a call waits for those ahead of it.
    fn run(vegas: &mut Vegas, capacity: usize, work: f64, samples: usize, now: &mut Instant) {
        for _ in 0..samples {
            let limit = vegas.limit();
            let latency = ms(work * (limit.max(capacity) as f64 / capacity as f64));
            *now += latency / limit as u32;
            // (All calls of a measurement count: at the floor, no backlog.)
            vegas.sample(latency, limit, false, vegas.measuring(), *now);
        }
    }

    #[test]
    fn under_overload_the_limit_settles_just_above_what_the_server_serves_at_once() {
        let mut vegas = Vegas::new(AdaptiveLimit::default());
        let mut now = Instant::now();
        // The first calls measure the baseline at the floor.
        assert_eq!(vegas.limit(), 4);
        run(&mut vegas, 8, 1.0, BASELINE_SAMPLES, &mut now);
        assert_eq!(vegas.usual_latency(), Some(ms(1.0)));
        assert_eq!(vegas.limit(), 20);
        // 60 s of overload, with a new baseline every 10 s: 8 served at
        // once, and 3 to 6 more queue; it never drifts up.
        let start = now;
        let mut limits = Vec::new();
        while now - start < Duration::from_secs(60) {
            run(&mut vegas, 8, 1.0, 1000, &mut now);
            limits.push(vegas.limit());
        }
        let settled = &limits[limits.len() / 2..];
        assert!(
            settled.iter().all(|limit| (4..=16).contains(limit)),
            "{settled:?}"
        );
        assert_eq!(vegas.usual_latency(), Some(ms(1.0)));
    }

    #[test]
    fn a_server_slower_for_good_gets_a_new_baseline_at_the_next_measurement() {
        let mut vegas = Vegas::new(AdaptiveLimit::default().baseline_every(Duration::from_secs(1)));
        let mut now = Instant::now();
        run(&mut vegas, 8, 1.0, 500, &mut now);
        assert_eq!(vegas.usual_latency(), Some(ms(1.0)));
        let start = now;
        while now - start < Duration::from_secs(5) {
            run(&mut vegas, 8, 3.0, 100, &mut now);
        }
        assert_eq!(vegas.usual_latency(), Some(ms(3.0)));
        let limit = vegas.limit();
        assert!((4..=16).contains(&limit), "{limit}");
    }

    #[test]
    fn a_steady_latency_grows_it_and_deadline_failures_shrink_it() {
        let mut vegas = Vegas::new(AdaptiveLimit::default().bounds(4, 200));
        let now = Instant::now();
        for _ in 0..BASELINE_SAMPLES {
            vegas.sample(ms(10.0), 4, false, true, now);
        }
        for _ in 0..100 {
            let limit = vegas.limit();
            vegas.sample(ms(10.0), limit, false, false, now);
        }
        assert_eq!(vegas.limit(), 200);
        for _ in 0..5 {
            vegas.sample(ms(100.0), 200, true, false, now);
        }
        assert!(vegas.limit() < 200);
        // An idle server learns nothing.
        let before = vegas.limit();
        for _ in 0..100 {
            vegas.sample(ms(1.0), 2, false, false, now);
        }
        assert_eq!(vegas.limit(), before);
    }

    #[test]
    fn a_measurement_without_enough_calls_ends_in_time_and_keeps_the_last_baseline() {
        let mut vegas = Vegas::new(AdaptiveLimit::default());
        let start = Instant::now();
        for n in 0..BASELINE_SAMPLES {
            vegas.sample(ms(1.0), 1, false, true, start + ms(n as f64));
        }
        assert_eq!(vegas.usual_latency(), Some(ms(1.0)));
        assert!(!vegas.measuring());
        // 10 s later a measurement begins; only calls admitted before it
        // end (long polls): none is measured, and after 1 s the limit is
        // back with the baseline it had.
        let later = start + Duration::from_secs(11);
        vegas.sample(ms(1.0), 20, false, false, later);
        assert!(vegas.measuring());
        assert_eq!(vegas.limit(), 4);
        vegas.sample(ms(5000.0), 20, false, false, later + ms(500.0));
        assert!(vegas.measuring());
        vegas.sample(ms(5000.0), 20, false, false, later + ms(1000.0));
        assert!(!vegas.measuring());
        assert_eq!(vegas.limit(), 20);
        assert_eq!(vegas.usual_latency(), Some(ms(1.0)));
    }
}
