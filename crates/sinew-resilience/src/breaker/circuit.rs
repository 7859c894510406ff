//! [`Circuit`]: one circuit's state machine, closed, open, half-open, with
//! its sliding window of outcomes. No I/O and no clock of its own: every
//! step takes `now`, so the rules are tested step by step.

use super::{BreakerConfig, CircuitState};
use std::time::Duration;
use tokio::time::Instant;

/// Outcomes over the window, in buckets of a tenth of it.
const BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Which tenth of the window (since the circuit's epoch) it counts.
    slot: u64,
    calls: u32,
    failures: u32,
}

/// One circuit: the calls of one method (or whatever the breaker's key
/// groups).
#[derive(Debug)]
pub(crate) struct Circuit {
    epoch: Instant,
    bucket_width: Duration,
    buckets: [Bucket; BUCKETS],
    phase: Phase,
    /// Half-open phases so far.
    rounds: u64,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// `round` counts the half-open phases, so that a probe of an earlier
    /// one (ending late) is not taken for a probe of this one.
    HalfOpen {
        in_flight: u32,
        succeeded: u32,
        round: u64,
    },
}

/// Whether a call may go, and as what.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A call of a closed circuit.
    Call,
    /// One of the bounded calls of a half-open circuit, in its round.
    Probe { round: u64 },
    /// Refused: the circuit is open (or half-open with every probe out)
    /// for this much longer at least.
    Refused { retry_after: Duration },
}

/// A state change, for the breaker's events.
#[derive(Debug, PartialEq)]
pub(crate) struct Change {
    pub(crate) from: CircuitState,
    pub(crate) to: CircuitState,
    /// The failure share of the window when the circuit opened from closed.
    pub(crate) failure_rate: Option<f64>,
}

impl Circuit {
    pub(crate) fn new(config: &BreakerConfig, now: Instant) -> Circuit {
        Circuit {
            epoch: now,
            bucket_width: (config.window / BUCKETS as u32).max(Duration::from_millis(1)),
            buckets: [Bucket::default(); BUCKETS],
            phase: Phase::Closed,
            rounds: 0,
        }
    }

    pub(crate) fn state(&self) -> CircuitState {
        match self.phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether a call may go now. An open circuit whose time is up turns
    /// half-open here, and this call is its first probe.
    pub(crate) fn admit(
        &mut self,
        config: &BreakerConfig,
        now: Instant,
    ) -> (Admission, Option<Change>) {
        let mut change = None;
        if let Phase::Open { until } = self.phase {
            if now < until {
                return (
                    Admission::Refused {
                        retry_after: until - now,
                    },
                    None,
                );
            }
            self.rounds += 1;
            self.phase = Phase::HalfOpen {
                in_flight: 0,
                succeeded: 0,
                round: self.rounds,
            };
            change = Some(Change {
                from: CircuitState::Open,
                to: CircuitState::HalfOpen,
                failure_rate: None,
            });
        }
        let admission = match &mut self.phase {
            Phase::Closed => Admission::Call,
            Phase::HalfOpen {
                in_flight, round, ..
            } if *in_flight < config.probes => {
                *in_flight += 1;
                Admission::Probe { round: *round }
            }
            Phase::HalfOpen { .. } => Admission::Refused {
                retry_after: config.probe_timeout,
            },
            Phase::Open { .. } => unreachable!("an open circuit returned above"),
        };
        (admission, change)
    }

    /// The outcome of a call admitted as `admission` (`failed`: whether it
    /// counts as a failure).
    pub(crate) fn record(
        &mut self,
        config: &BreakerConfig,
        admission: &Admission,
        failed: bool,
        now: Instant,
    ) -> Option<Change> {
        match (admission, &mut self.phase) {
            (Admission::Call, Phase::Closed) => {
                self.count(failed, now);
                let (calls, failures) = self.totals(now);
                let rate = f64::from(failures) / f64::from(calls.max(1));
                if calls >= config.minimum_calls && rate >= config.failure_rate {
                    self.open(config, now);
                    return Some(Change {
                        from: CircuitState::Closed,
                        to: CircuitState::Open,
                        failure_rate: Some(rate),
                    });
                }
                None
            }
            (
                Admission::Probe { round: probe_round },
                Phase::HalfOpen {
                    in_flight,
                    succeeded,
                    round,
                },
            ) if probe_round == round => {
                *in_flight = in_flight.saturating_sub(1);
                if failed {
                    self.open(config, now);
                    return Some(Change {
                        from: CircuitState::HalfOpen,
                        to: CircuitState::Open,
                        failure_rate: None,
                    });
                }
                *succeeded += 1;
                if *succeeded >= config.probes {
                    self.phase = Phase::Closed;
                    self.buckets = [Bucket::default(); BUCKETS];
                    return Some(Change {
                        from: CircuitState::HalfOpen,
                        to: CircuitState::Closed,
                        failure_rate: None,
                    });
                }
                None
            }
            // An outcome from before the last change (a call of the closed
            // circuit ending after it opened, a probe after it reopened):
            // it says nothing about the circuit now.
            _ => None,
        }
    }

    /// A probe of `round` that ended with no outcome (its caller gave up):
    /// its slot is free again, if its round is still on.
    pub(crate) fn release_probe(&mut self, probe_round: u64) {
        if let Phase::HalfOpen {
            in_flight, round, ..
        } = &mut self.phase
        {
            if *round == probe_round {
                *in_flight = in_flight.saturating_sub(1);
            }
        }
    }

    fn open(&mut self, config: &BreakerConfig, now: Instant) {
        self.phase = Phase::Open {
            until: now + config.open_for,
        };
    }

    fn slot(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_nanos() / self.bucket_width.as_nanos()) as u64
    }

    fn count(&mut self, failed: bool, now: Instant) {
        let slot = self.slot(now);
        let bucket = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if bucket.slot != slot {
            *bucket = Bucket {
                slot,
                calls: 0,
                failures: 0,
            };
        }
        bucket.calls += 1;
        bucket.failures += u32::from(failed);
    }

    /// Calls and failures in the window that ends now.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let slot = self.slot(now);
        self.buckets
            .iter()
            .filter(|bucket| bucket.slot + (BUCKETS as u64) > slot)
            .fold((0, 0), |(calls, failures), bucket| {
                (calls + bucket.calls, failures + bucket.failures)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig::default()
            .failure_rate(0.5)
            .minimum_calls(10)
            .window(Duration::from_secs(10))
            .open_for(Duration::from_secs(5))
            .probes(2)
    }

    fn call(
        circuit: &mut Circuit,
        config: &BreakerConfig,
        failed: bool,
        now: Instant,
    ) -> Option<Change> {
        let (admission, _) = circuit.admit(config, now);
        assert_eq!(admission, Admission::Call);
        circuit.record(config, &admission, failed, now)
    }

    /// A circuit opened at `start` by 10 failed calls.
    fn opened(config: &BreakerConfig, start: Instant) -> Circuit {
        let mut circuit = Circuit::new(config, start);
        for _ in 0..10 {
            call(&mut circuit, config, true, start);
        }
        circuit
    }

    #[test]
    fn it_opens_at_the_failure_rate_once_the_window_has_enough_calls() {
        let config = config();
        let start = Instant::now();
        let mut circuit = Circuit::new(&config, start);
        // 9 failures: fewer calls than the minimum, still closed.
        for _ in 0..9 {
            assert_eq!(call(&mut circuit, &config, true, start), None);
        }
        let change = call(&mut circuit, &config, true, start).unwrap();
        assert_eq!(
            (change.from, change.to),
            (CircuitState::Closed, CircuitState::Open)
        );
        assert_eq!(change.failure_rate, Some(1.0));
        let (admission, _) = circuit.admit(&config, start + Duration::from_secs(1));
        assert_eq!(
            admission,
            Admission::Refused {
                retry_after: Duration::from_secs(4)
            }
        );
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let config = config();
        let start = Instant::now();
        let mut circuit = Circuit::new(&config, start);
        for _ in 0..6 {
            call(&mut circuit, &config, true, start);
        }
        // 11 s later the six failures left the window: 4 failures of 10
        // calls now would be 40%, closed.
        let later = start + Duration::from_secs(11);
        for failed in [true, true, true, true, false, false, false, false, false] {
            assert_eq!(call(&mut circuit, &config, failed, later), None);
        }
        assert_eq!(call(&mut circuit, &config, false, later), None);
        assert_eq!(circuit.state(), CircuitState::Closed);
    }

    #[test]
    fn half_open_admits_a_bounded_number_of_probes_and_closes_after_them() {
        let config = config();
        let start = Instant::now();
        let mut circuit = opened(&config, start);
        let later = start + Duration::from_secs(5);
        let (first, change) = circuit.admit(&config, later);
        assert_eq!(first, Admission::Probe { round: 1 });
        assert_eq!(change.unwrap().to, CircuitState::HalfOpen);
        let (second, _) = circuit.admit(&config, later);
        assert_eq!(second, Admission::Probe { round: 1 });
        // Both probes out: the third call is refused, not a third probe.
        assert!(matches!(
            circuit.admit(&config, later).0,
            Admission::Refused { .. }
        ));
        assert_eq!(circuit.record(&config, &first, false, later), None);
        let change = circuit.record(&config, &second, false, later).unwrap();
        assert_eq!(
            (change.from, change.to),
            (CircuitState::HalfOpen, CircuitState::Closed)
        );
        // Closed with a clean window.
        assert_eq!(call(&mut circuit, &config, true, later), None);
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again_and_late_outcomes_are_ignored() {
        let config = config();
        let start = Instant::now();
        let mut circuit = Circuit::new(&config, start);
        let (early, _) = circuit.admit(&config, start);
        for _ in 0..10 {
            call(&mut circuit, &config, true, start);
        }
        // A call admitted while closed ends after the circuit opened.
        assert_eq!(circuit.record(&config, &early, false, start), None);
        let later = start + Duration::from_secs(5);
        let (probe, _) = circuit.admit(&config, later);
        let change = circuit.record(&config, &probe, true, later).unwrap();
        assert_eq!(
            (change.from, change.to),
            (CircuitState::HalfOpen, CircuitState::Open)
        );
        assert!(matches!(
            circuit.admit(&config, later).0,
            Admission::Refused { .. }
        ));
    }

    #[test]
    fn a_probe_of_an_earlier_round_counts_for_nothing_now() {
        let config = config().probes(1);
        let start = Instant::now();
        let mut circuit = opened(&config, start);
        let later = start + Duration::from_secs(5);
        let (old_probe, _) = circuit.admit(&config, later);
        // Its round ends without it: the next probe fails, the circuit
        // reopens, and a new round begins with a probe of its own.
        circuit.record(&config, &old_probe, true, later);
        let again = later + Duration::from_secs(5);
        let (probe, _) = circuit.admit(&config, again);
        assert_eq!(probe, Admission::Probe { round: 2 });
        // The old probe's success, or its caller giving up, changes nothing.
        assert_eq!(circuit.record(&config, &old_probe, false, again), None);
        circuit.release_probe(1);
        assert!(matches!(
            circuit.admit(&config, again).0,
            Admission::Refused { .. }
        ));
        assert_eq!(circuit.state(), CircuitState::HalfOpen);
    }

    #[test]
    fn a_probe_given_up_frees_its_slot() {
        let config = config().probes(1);
        let start = Instant::now();
        let mut circuit = opened(&config, start);
        let later = start + Duration::from_secs(5);
        assert_eq!(
            circuit.admit(&config, later).0,
            Admission::Probe { round: 1 }
        );
        assert!(matches!(
            circuit.admit(&config, later).0,
            Admission::Refused { .. }
        ));
        circuit.release_probe(1);
        assert_eq!(
            circuit.admit(&config, later).0,
            Admission::Probe { round: 1 }
        );
    }
}
