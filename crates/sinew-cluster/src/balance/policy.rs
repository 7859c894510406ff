//! [`Policy`]: how a balanced channel picks the endpoint of each call.
//!
//! Every policy picks only among endpoints that are [`Ready`](super::Health::Ready)
//! (connected, with room), and can be told to avoid one endpoint (the one a
//! call just failed on, when it fails over).
//!
//! * **Peak EWMA** (the default): power of two choices, Finagle's and
//!   linkerd's. Two endpoints at random; the call goes to the one with the
//!   lower cost, its latency estimate (`ewma.rs`) times its calls in flight
//!   plus one. A slow or overloaded endpoint loses nearly every comparison
//!   and gets a small share, and no endpoint is left idle for long.
//! * **Least requests**: power of two choices on calls in flight alone
//!   (gRPC's `least_request`), for when latency says little (calls of very
//!   different cost).
//! * **Round robin**: each usable endpoint in turn (a scan of the set per
//!   call: for sets of tens of endpoints, not thousands).

use super::endpoints::EndpointState;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a balanced channel picks the endpoint of each call.
#[derive(Clone, Debug)]
pub struct Policy {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    PeakEwma { decay: Duration },
    LeastRequests,
    RoundRobin,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::peak_ewma()
    }
}

impl Policy {
    /// The decay time of the latency estimate unless told otherwise
    /// (Finagle's and linkerd's).
    pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

    /// Power of two choices over peak-EWMA latency times calls in flight: the
    /// default.
    pub fn peak_ewma() -> Policy {
        Policy::peak_ewma_with_decay(Policy::DEFAULT_DECAY)
    }

    /// Peak EWMA whose estimate forgets over `decay` (shorter: reacts faster
    /// to an endpoint that got better, probes slow ones more often).
    pub fn peak_ewma_with_decay(decay: Duration) -> Policy {
        Policy {
            kind: Kind::PeakEwma { decay },
        }
    }

    /// Power of two choices over calls in flight.
    pub fn least_requests() -> Policy {
        Policy {
            kind: Kind::LeastRequests,
        }
    }

    /// Each endpoint in turn.
    pub fn round_robin() -> Policy {
        Policy {
            kind: Kind::RoundRobin,
        }
    }

    /// The decay of the latency estimates the balancer keeps (every policy
    /// keeps them, for reports; only peak EWMA picks by them).
    pub(crate) fn decay(&self) -> Duration {
        match self.kind {
            Kind::PeakEwma { decay } => decay,
            _ => Policy::DEFAULT_DECAY,
        }
    }

    /// The endpoint for the next call among `endpoints`: a ready one that is
    /// not `avoid` and, unless `with_unhealthy`, neither ejected nor said
    /// not serving by its health service, if there is one.
    pub(crate) fn pick<'a>(
        &self,
        endpoints: &'a [Arc<EndpointState>],
        cursor: &AtomicUsize,
        avoid: Option<&EndpointState>,
        with_unhealthy: bool,
    ) -> Option<&'a Arc<EndpointState>> {
        let usable = |state: &EndpointState| {
            state.is_ready()
                && (with_unhealthy || (!state.outlier.is_ejected() && state.is_serving()))
                && !avoid.is_some_and(|avoid| std::ptr::eq(avoid, state))
        };
        let count = endpoints.len();
        match self.kind {
            Kind::RoundRobin => {
                // The next of the usable endpoints (not the next endpoint,
                // skipping unusable ones: the one after a skipped endpoint
                // would get its share too).
                let usable_count = endpoints.iter().filter(|state| usable(state)).count();
                if usable_count == 0 {
                    return None;
                }
                let turn = cursor.fetch_add(1, Ordering::Relaxed) % usable_count;
                endpoints.iter().filter(|state| usable(state)).nth(turn)
            }
            Kind::PeakEwma { .. } | Kind::LeastRequests => {
                if count == 0 {
                    return None;
                }
                let first = fastrand::usize(..count);
                let mut second = first;
                if count > 1 {
                    second = fastrand::usize(..count - 1);
                    if second >= first {
                        second += 1;
                    }
                }
                let (a, b) = (&endpoints[first], &endpoints[second]);
                match (usable(a), usable(b)) {
                    (true, true) => Some(if self.cost(b) < self.cost(a) { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    // Neither: the first usable one from a random start.
                    (false, false) => (1..count)
                        .map(|offset| &endpoints[(first + offset) % count])
                        .find(|state| usable(state)),
                }
            }
        }
    }

    fn cost(&self, state: &EndpointState) -> f64 {
        match self.kind {
            Kind::LeastRequests => state.in_flight.load(Ordering::Relaxed) as f64,
            _ => state.cost(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::endpoints::Health;
    use crate::balance::OutlierDetection;
    use crate::Endpoint;
    use sinew_rpc::Channel;

    /// `count` ready endpoints whose latency estimates are equal (set at
    /// the same instant: estimates decay from when they were set).
    fn endpoints(count: usize) -> Vec<Arc<EndpointState>> {
        let now = Instant::now();
        (0..count)
            .map(|i| {
                let address: sinew_transport::Address =
                    format!("tcp://127.0.0.1:{}", 1000 + i).parse().unwrap();
                let channel = Channel::builder(address.clone()).lazy();
                let state = EndpointState::new(
                    Endpoint::new(address),
                    channel,
                    Duration::from_millis(1),
                    Policy::DEFAULT_DECAY,
                );
                state.set_health(Health::Ready);
                state.rtt.observe(Duration::from_millis(1), now);
                Arc::new(state)
            })
            .collect()
    }

    /// How many of `picks` calls each endpoint gets.
    fn shares(policy: &Policy, set: &[Arc<EndpointState>], picks: usize) -> Vec<usize> {
        let cursor = AtomicUsize::new(0);
        let mut counts = vec![0; set.len()];
        for _ in 0..picks {
            let picked = policy.pick(set, &cursor, None, false).unwrap();
            counts[set.iter().position(|s| Arc::ptr_eq(s, picked)).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_takes_each_in_turn() {
        let set = endpoints(3);
        assert_eq!(shares(&Policy::round_robin(), &set, 300), [100, 100, 100]);
        // One out: the others share evenly (not the one after it twice).
        set[1].set_health(Health::Connecting);
        assert_eq!(shares(&Policy::round_robin(), &set, 300), [150, 0, 150]);
    }

    #[test]
    fn equal_endpoints_share_evenly_under_p2c() {
        let set = endpoints(4);
        for policy in [Policy::peak_ewma(), Policy::least_requests()] {
            let counts = shares(&policy, &set, 40_000);
            // Each expects 10,000 (binomial sd ~87): 5 sd either way.
            for count in counts {
                assert!((9_560..=10_440).contains(&count), "{policy:?}: {count}");
            }
        }
    }

    #[test]
    fn a_slow_endpoint_loses_every_comparison() {
        let set = endpoints(3);
        set[2]
            .rtt
            .observe(Duration::from_millis(20), Instant::now());
        let counts = shares(&Policy::peak_ewma(), &set, 30_000);
        // The two choices are distinct endpoints, so whenever the slow one
        // is drawn the other is faster.
        assert_eq!(counts[2], 0, "{counts:?}");
        assert!(counts[0] > 14_000 && counts[1] > 14_000, "{counts:?}");
    }

    #[test]
    fn a_loaded_endpoint_gets_fewer_calls() {
        let set = endpoints(3);
        set[0].in_flight.store(50, Ordering::Relaxed);
        for policy in [Policy::peak_ewma(), Policy::least_requests()] {
            let counts = shares(&policy, &set, 30_000);
            assert_eq!(counts[0], 0, "{policy:?}: {counts:?}");
        }
    }

    #[test]
    fn only_ready_endpoints_are_picked_and_the_avoided_one_is_not() {
        let set = endpoints(3);
        set[0].set_health(Health::Connecting);
        set[1].set_health(Health::Failed);
        let cursor = AtomicUsize::new(0);
        for policy in [
            Policy::peak_ewma(),
            Policy::least_requests(),
            Policy::round_robin(),
        ] {
            for _ in 0..100 {
                let picked = policy.pick(&set, &cursor, None, false).unwrap();
                assert!(Arc::ptr_eq(picked, &set[2]));
            }
            assert!(policy.pick(&set, &cursor, Some(&*set[2]), false).is_none());
            assert!(policy.pick(&[], &cursor, None, false).is_none());
        }
    }

    #[test]
    fn unhealthy_endpoints_are_skipped_unless_asked_for() {
        let set = endpoints(3);
        assert!(set[1]
            .outlier
            .eject(&OutlierDetection::new(), Instant::now()));
        set[2].serving.store(false, Ordering::Relaxed);
        let cursor = AtomicUsize::new(0);
        for policy in [Policy::peak_ewma(), Policy::round_robin()] {
            for _ in 0..100 {
                assert!(Arc::ptr_eq(
                    policy.pick(&set, &cursor, None, false).unwrap(),
                    &set[0]
                ));
            }
            assert!(policy.pick(&set, &cursor, Some(&*set[0]), false).is_none());
            let picked = policy.pick(&set, &cursor, Some(&*set[0]), true).unwrap();
            assert!(!Arc::ptr_eq(picked, &set[0]));
        }
    }
}
