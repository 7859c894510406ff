//! Peak EWMA: the latency estimate behind the default balancing policy
//! (Finagle's and linkerd's).
//!
//! Each response's round-trip time moves the estimate: a slower one than the
//! estimate replaces it at once (the *peak*: an endpoint that turns slow is
//! avoided at the next pick), a faster one is blended in with a weight that
//! grows with the time since the last observation (an exponentially weighted
//! moving average over the decay time). Without observations the estimate
//! decays towards zero over the same time, so an endpoint that was avoided
//! because it was slow is tried again now and then and can win back its share.
//!
//! Lock-free: the estimate and its time are two atomics. An observation racing
//! another may lose; for a load estimate that is harmless.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The time base of every estimate's `at`: one for the process, so that
/// estimates set at the same instant decay alike.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A peak-EWMA estimate of an endpoint's round-trip time.
#[derive(Debug)]
pub struct PeakEwma {
    decay_ns: f64,
    /// The estimate in nanoseconds, as `f64` bits.
    rtt_ns: AtomicU64,
    /// When `rtt_ns` was last set, in nanoseconds since [`epoch`].
    at: AtomicU64,
}

impl PeakEwma {
    /// An estimate starting at `initial`, decaying over `decay`.
    pub fn new(initial: Duration, decay: Duration, now: Instant) -> PeakEwma {
        PeakEwma {
            decay_ns: decay.as_nanos().max(1) as f64,
            rtt_ns: AtomicU64::new((initial.as_nanos() as f64).to_bits()),
            at: AtomicU64::new(since_epoch(now)),
        }
    }

    /// Takes one response's round-trip time into the estimate.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        let (estimate, decay) = self.stored(now);
        let next = if rtt > estimate {
            rtt
        } else {
            estimate * decay + rtt * (1.0 - decay)
        };
        self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
        self.at.store(since_epoch(now), Ordering::Relaxed);
    }

    /// The estimate now, in nanoseconds: the stored one decayed by the time
    /// since it was set.
    pub fn estimate(&self, now: Instant) -> f64 {
        let (estimate, decay) = self.stored(now);
        estimate * decay
    }

    /// The stored estimate, and the weight it keeps after the time since it
    /// was set.
    fn stored(&self, now: Instant) -> (f64, f64) {
        let estimate = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let elapsed = since_epoch(now).saturating_sub(self.at.load(Ordering::Relaxed));
        (estimate, (-(elapsed as f64) / self.decay_ns).exp())
    }
}

/// `now` in nanoseconds since the process-wide epoch of the estimates.
pub(crate) fn since_epoch(now: Instant) -> u64 {
    now.saturating_duration_since(epoch()).as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECAY: Duration = Duration::from_secs(10);

    fn ms(estimate: f64) -> f64 {
        estimate / 1e6
    }

    #[test]
    fn a_slower_response_replaces_the_estimate_at_once() {
        let start = Instant::now();
        let ewma = PeakEwma::new(Duration::from_millis(1), DECAY, start);
        ewma.observe(Duration::from_millis(20), start);
        assert_eq!(ms(ewma.estimate(start)), 20.0);
    }

    #[test]
    fn faster_responses_pull_it_down_with_time() {
        let start = Instant::now();
        let ewma = PeakEwma::new(Duration::from_millis(20), DECAY, start);
        // Right away, a fast response hardly moves it...
        ewma.observe(Duration::from_millis(1), start);
        assert!(ms(ewma.estimate(start)) > 19.9);
        // ...after one decay time, it weighs 1 - 1/e.
        let later = start + DECAY;
        ewma.observe(Duration::from_millis(1), later);
        let expected = 20.0 / std::f64::consts::E + 1.0 * (1.0 - 1.0 / std::f64::consts::E);
        assert!((ms(ewma.estimate(later)) - expected).abs() < 0.01);
    }

    #[test]
    fn without_responses_it_decays_towards_zero() {
        let start = Instant::now();
        let ewma = PeakEwma::new(Duration::from_millis(30), DECAY, start);
        assert_eq!(ms(ewma.estimate(start)), 30.0);
        let half = ms(ewma.estimate(start + DECAY.mul_f64(std::f64::consts::LN_2)));
        assert!((half - 15.0).abs() < 0.01, "{half}");
        assert!(ms(ewma.estimate(start + DECAY * 10)) < 0.01);
    }
}
