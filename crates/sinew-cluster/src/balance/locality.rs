//! Locality: a channel told its caller's zone
//! ([`BalancedBuilder::zone`](super::BalancedBuilder::zone)) sends calls to
//! endpoints of that zone, and spills over to the other zones when its own
//! cannot take them. Envoy's zone-aware routing and priority levels are the
//! reference: the caller's zone is the first priority, the others the second.
//!
//! Each call, in this order:
//!
//! 1. **No usable local endpoint** (none in the zone, or none ready and
//!    healthy): the call goes to the other zones.
//! 2. **Overloaded**: every usable local endpoint has at least
//!    [`zone_overload`](super::BalancedBuilder::zone_overload) calls of this
//!    channel in flight (100 by default: the fewest concurrent streams
//!    HTTP/2 recommends a server allow, RFC 9113 §5.1.2, so a local endpoint
//!    is passed over only when a server of ordinary settings would queue the
//!    call). The call goes to the other zones; the zone takes calls again as
//!    soon as one of its endpoints is below the threshold, so it stays
//!    about that busy while the overflow goes elsewhere.
//! 3. **Degraded**: with `u` of the zone's `n` endpoints usable, a share
//!    `min(1, 1.4 × u / n)` of calls stays in the zone and the rest go to the
//!    other zones (Envoy's priority spill-over with its default
//!    overprovisioning factor, 1.4). So the zone keeps every call while at
//!    least 5 in 7 of its endpoints are usable, 70% of them with half its
//!    endpoints usable, and the spill grows smoothly as more fail instead
//!    of all at once.
//! 4. Otherwise the call stays in the zone.
//!
//! The policy then picks within the chosen group, and if that group has no
//! endpoint it can pick (all loaded ones aside, a race with a failing
//! endpoint), the other group is tried: readiness never says no while any
//! endpoint could take the call. Calls come back to the zone as soon as it
//! recovers: the rule is applied afresh to every call, with nothing to
//! reset.
//!
//! The zone's endpoints are those whose [`Endpoint::zone`](crate::Endpoint::zone)
//! equals the caller's when the set was published (a resolver update that
//! moves an endpoint to another zone publishes a new set). A channel without
//! a zone has no groups to choose between and does none of this.

use super::endpoints::EndpointState;
use super::policy::{Group, Policy};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The caller's zone and when it counts as overloaded.
#[derive(Clone, Debug)]
pub(crate) struct Locality {
    pub(crate) zone: String,
    /// Calls in flight from which a local endpoint counts as loaded.
    pub(crate) overload: usize,
}

impl Locality {
    /// The default overload threshold: see the module docs.
    pub(crate) const DEFAULT_OVERLOAD: usize = 100;
}

/// Envoy's default overprovisioning factor, as tenths.
const OVERPROVISIONING_TENTHS: usize = 14;

/// A set's endpoints split by zone.
#[derive(Debug)]
pub(crate) struct Zones {
    /// The caller's zone's endpoints.
    local: Group,
    /// Every other endpoint (another zone, or none known).
    remote: Group,
}

impl Zones {
    pub(crate) fn new(policy: &Policy, zone: &str, endpoints: &[Arc<EndpointState>]) -> Zones {
        let (local, remote): (Vec<_>, Vec<_>) = endpoints
            .iter()
            .cloned()
            .partition(|state| state.endpoint.load().zone() == Some(zone));
        Zones {
            local: Group::new(policy, local),
            remote: Group::new(policy, remote),
        }
    }

    /// The groups in the order a call tries them (see the module docs).
    pub(crate) fn order(&self, overload: usize) -> [&Group; 2] {
        let local_first = [&self.local, &self.remote];
        let remote_first = [&self.remote, &self.local];
        let total = self.local.endpoints.len();
        let mut usable = 0;
        let mut room = false;
        for state in &self.local.endpoints {
            if state.is_ready() && state.outlier_admits() && state.is_serving() {
                usable += 1;
                room = room || state.in_flight.load(Ordering::Relaxed) < overload;
            }
        }
        if usable == 0 || !room {
            return remote_first;
        }
        // min(1, 1.4 × usable / total), in integers: usable × 14 against
        // total × 10.
        let weight = usable * OVERPROVISIONING_TENTHS;
        if weight >= total * 10 || fastrand::usize(..total * 10) < weight {
            local_first
        } else {
            remote_first
        }
    }

    #[cfg(test)]
    pub(crate) fn local(&self) -> &Group {
        &self.local
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::endpoints::Health;
    use crate::balance::policy::tests::weighted;
    use crate::balance::OutlierDetection;
    use crate::Endpoint;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// `local` endpoints in zone `eu-1` (first), `remote` in `us-1`.
    fn zoned(local: usize, remote: usize) -> Vec<Arc<EndpointState>> {
        let endpoints: Vec<Endpoint> = (0..local + remote)
            .map(|i| {
                let zone = if i < local { "eu-1" } else { "us-1" };
                Endpoint::new(format!("tcp://10.5.0.{}:1", i + 1).parse().unwrap()).with_zone(zone)
            })
            .collect();
        weighted(&endpoints)
    }

    /// Of `picks` calls, how many stay in zone `eu-1`.
    fn local_picks(policy: &Policy, zones: &Zones, picks: usize) -> usize {
        let cursor = AtomicUsize::new(0);
        let mut local = 0;
        for _ in 0..picks {
            let picked = policy
                .pick_among(
                    &zones.order(Locality::DEFAULT_OVERLOAD),
                    &cursor,
                    None,
                    None,
                    0,
                )
                .expect("a usable endpoint");
            if picked.endpoint.load().zone() == Some("eu-1") {
                local += 1;
            }
        }
        local
    }

    #[test]
    fn calls_stay_in_the_callers_zone() {
        let set = zoned(3, 3);
        for policy in [
            Policy::peak_ewma(),
            Policy::round_robin(),
            Policy::weighted_round_robin(),
        ] {
            let zones = Zones::new(&policy, "eu-1", &set);
            assert_eq!(zones.local().endpoints.len(), 3);
            assert_eq!(local_picks(&policy, &zones, 1_000), 1_000, "{policy:?}");
        }
    }

    #[test]
    fn a_zone_with_no_usable_endpoint_spills_everything_and_gets_it_back() {
        let set = zoned(2, 3);
        let policy = Policy::peak_ewma();
        let zones = Zones::new(&policy, "eu-1", &set);
        set[0].set_health(Health::Failed);
        set[1].set_health(Health::Connecting);
        assert_eq!(local_picks(&policy, &zones, 1_000), 0);
        set[0].set_health(Health::Ready);
        set[1].set_health(Health::Ready);
        assert_eq!(local_picks(&policy, &zones, 1_000), 1_000);
        // Not serving and ejected count as unusable too.
        set[0].serving.store(false, Ordering::Relaxed);
        assert!(set[1]
            .outlier
            .eject(&OutlierDetection::new(), Instant::now()));
        assert_eq!(local_picks(&policy, &zones, 1_000), 0);
    }

    #[test]
    fn a_degraded_zone_keeps_its_overprovisioned_share() {
        let policy = Policy::peak_ewma();
        // 3 of 4 usable: 1.4 × 0.75 ≥ 1, every call stays.
        let set = zoned(4, 4);
        let zones = Zones::new(&policy, "eu-1", &set);
        set[0].set_health(Health::Failed);
        assert_eq!(local_picks(&policy, &zones, 2_000), 2_000);
        // 2 of 4: 70% stay. Of 10,000 picks 7,000 expected (binomial sd
        // ~46): 5 sd either way.
        set[1].set_health(Health::Failed);
        let local = local_picks(&policy, &zones, 10_000);
        assert!((6_770..=7_230).contains(&local), "{local}");
        // 1 of 4: 35%.
        set[2].set_health(Health::Failed);
        let local = local_picks(&policy, &zones, 10_000);
        assert!((3_260..=3_740).contains(&local), "{local}");
        // All back: all local again.
        for state in &set[..3] {
            state.set_health(Health::Ready);
        }
        assert_eq!(local_picks(&policy, &zones, 2_000), 2_000);
    }

    #[test]
    fn an_overloaded_zone_spills_until_an_endpoint_has_room() {
        let policy = Policy::least_requests();
        let set = zoned(2, 2);
        let zones = Zones::new(&policy, "eu-1", &set);
        set[0].in_flight.store(100, Ordering::Relaxed);
        set[1].in_flight.store(250, Ordering::Relaxed);
        assert_eq!(local_picks(&policy, &zones, 1_000), 0);
        // One local endpoint below the threshold: the zone takes calls.
        set[0].in_flight.store(99, Ordering::Relaxed);
        assert_eq!(local_picks(&policy, &zones, 1_000), 1_000);
        // A failed endpoint's load does not count: the usable one is full.
        set[0].set_health(Health::Failed);
        set[0].in_flight.store(0, Ordering::Relaxed);
        assert_eq!(local_picks(&policy, &zones, 1_000), 0);
    }

    #[test]
    fn the_other_zones_are_a_fallback_both_ways() {
        let policy = Policy::peak_ewma();
        let set = zoned(1, 1);
        let zones = Zones::new(&policy, "eu-1", &set);
        // The zone is overloaded but the others cannot take calls: the
        // zone's endpoint takes them all the same.
        set[0].in_flight.store(500, Ordering::Relaxed);
        set[1].set_health(Health::Failed);
        assert_eq!(local_picks(&policy, &zones, 100), 100);
        // A failing-over call avoiding the zone's only endpoint goes out.
        let cursor = AtomicUsize::new(0);
        set[0].in_flight.store(0, Ordering::Relaxed);
        set[1].set_health(Health::Ready);
        let order = zones.order(Locality::DEFAULT_OVERLOAD);
        assert!(Arc::ptr_eq(&order[0].endpoints[0], &set[0]));
        let picked = policy
            .pick_among(&order, &cursor, None, Some(&*set[0]), 0)
            .unwrap();
        assert!(Arc::ptr_eq(picked, &set[1]));
    }

    #[test]
    fn a_caller_whose_zone_has_no_endpoints_uses_the_others() {
        let policy = Policy::round_robin();
        let set = zoned(0, 3);
        let zones = Zones::new(&policy, "eu-1", &set);
        assert_eq!(local_picks(&policy, &zones, 300), 0);
        // Endpoints without a zone are not in the caller's.
        let set = weighted(&[Endpoint::new("tcp://10.6.0.1:1".parse().unwrap())]);
        let zones = Zones::new(&policy, "eu-1", &set);
        assert!(zones.local().endpoints.is_empty());
    }

    #[test]
    fn hash_keys_stay_in_the_zone_and_consistent() {
        let policy = Policy::ring_hash("k");
        let set = zoned(3, 3);
        let zones = Zones::new(&policy, "eu-1", &set);
        let cursor = AtomicUsize::new(0);
        for i in 0..200 {
            let key = format!("key-{i}");
            let pick = || {
                policy
                    .pick_among(
                        &zones.order(Locality::DEFAULT_OVERLOAD),
                        &cursor,
                        Some(key.as_bytes()),
                        None,
                        0,
                    )
                    .unwrap()
                    .clone()
            };
            let first = pick();
            assert_eq!(first.endpoint.load().zone(), Some("eu-1"));
            assert!(Arc::ptr_eq(&pick(), &first));
        }
    }
}
