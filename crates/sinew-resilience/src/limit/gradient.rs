//! [`Gradient`]: the adaptive concurrency limit of Netflix's
//! concurrency-limits library (`Gradient2Limit`), as a pure state machine
//! over latency samples: no clock and no locks of its own.
//!
//! Each call's latency updates a long-term average (an exponential moving
//! average over about `long_window` calls). While the latest latency stays
//! within `tolerance` times that average, the limit grows by a queue
//! allowance (the square root of the limit) every sample; when latency
//! rises past it, the limit shrinks in proportion (at most halved per
//! sample). The limit moves smoothly (`smoothing`), stays within
//! `[min, max]`, and does not grow while fewer than half of it is in use
//! (a server with little to do learns nothing about its capacity). When
//! the long-term average drifts far above the current latency (the load
//! went away), it decays towards it.

use super::AdaptiveLimit;
use std::time::Duration;

/// The state of an adaptive limit; see the module docs.
#[derive(Debug)]
pub(crate) struct Gradient {
    settings: AdaptiveLimit,
    limit: f64,
    /// The long-term average latency, in seconds; `None` before a sample.
    long: Option<f64>,
    samples: u32,
}

impl Gradient {
    pub(crate) fn new(settings: AdaptiveLimit) -> Gradient {
        let limit = settings.initial.clamp(settings.min, settings.max);
        Gradient {
            settings,
            limit,
            long: None,
            samples: 0,
        }
    }

    /// The limit now, in calls.
    pub(crate) fn limit(&self) -> usize {
        self.limit as usize
    }

    /// The long-term latency, if any sample was taken.
    pub(crate) fn long_latency(&self) -> Option<Duration> {
        self.long.map(Duration::from_secs_f64)
    }

    /// Takes one call's `latency`, with `in_flight` calls (itself
    /// included) running when it ended.
    pub(crate) fn sample(&mut self, latency: Duration, in_flight: usize) {
        let settings = &self.settings;
        let short = latency.as_secs_f64().max(1e-9);
        self.samples = self.samples.saturating_add(1);
        // A plain average over the first samples, then an exponential one.
        let long = match self.long {
            None => short,
            Some(long) if self.samples <= 10 => long + (short - long) / f64::from(self.samples),
            Some(long) => {
                let factor = 2.0 / (f64::from(settings.long_window) + 1.0);
                long + (short - long) * factor
            }
        };
        // The load went away: the long average follows the latency down.
        let long = if long / short > 2.0 {
            long * 0.95
        } else {
            long
        };
        self.long = Some(long);
        if (in_flight as f64) < self.limit / 2.0 {
            return;
        }
        let gradient = (settings.tolerance * long / short).clamp(0.5, 1.0);
        let queue = self.limit.sqrt();
        let next = self.limit * gradient + queue;
        let next = self.limit * (1.0 - settings.smoothing) + next * settings.smoothing;
        self.limit = next.clamp(settings.min, settings.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn a_steady_latency_under_full_use_grows_the_limit_to_the_ceiling() {
        let mut limit = Gradient::new(AdaptiveLimit::default().bounds(4, 200));
        for _ in 0..2000 {
            let in_flight = limit.limit();
            limit.sample(ms(10), in_flight);
        }
        assert_eq!(limit.limit(), 200);
    }

    #[test]
    fn rising_latency_shrinks_the_limit_and_it_recovers_when_latency_falls() {
        let mut limit = Gradient::new(AdaptiveLimit::default().initial(100));
        for _ in 0..700 {
            let in_flight = limit.limit();
            limit.sample(ms(10), in_flight);
        }
        let before = limit.limit();
        // Queues build up: latency five times the usual.
        for _ in 0..50 {
            let in_flight = limit.limit();
            limit.sample(ms(50), in_flight);
        }
        let squeezed = limit.limit();
        assert!(squeezed * 2 < before, "{before} -> {squeezed}");
        // Back to normal.
        for _ in 0..500 {
            let in_flight = limit.limit();
            limit.sample(ms(10), in_flight);
        }
        assert!(
            limit.limit() > squeezed * 2,
            "{squeezed} -> {}",
            limit.limit()
        );
    }

    #[test]
    fn an_idle_server_does_not_grow_its_limit_and_it_stays_in_bounds() {
        let mut limit = Gradient::new(AdaptiveLimit::default().initial(50).bounds(10, 60));
        for _ in 0..1000 {
            limit.sample(ms(1), 3);
        }
        assert_eq!(
            limit.limit(),
            50,
            "3 calls in flight say nothing of capacity"
        );
        for _ in 0..1000 {
            let in_flight = limit.limit();
            limit.sample(ms(1000), in_flight);
            limit.sample(ms(1), in_flight);
        }
        assert!((10..=60).contains(&limit.limit()));
        assert!(limit.long_latency().is_some());
    }
}
