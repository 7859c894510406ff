//! Smooth weighted round robin, nginx's (`ngx_http_upstream_get_peer` in
//! `ngx_http_upstream_round_robin.c`): the state of
//! [`Policy::weighted_round_robin`](super::Policy::weighted_round_robin)
//! over one group of endpoints.
//!
//! Each endpoint has a current weight, zero at first. At each pick every
//! usable endpoint's current weight grows by its weight; the endpoint with
//! the largest current weight is picked (the first of equals), and the sum
//! of the weights added is taken off its current weight. Over a round of
//! `sum of weights` picks each endpoint is picked `weight` times, and the
//! heavy endpoint's picks are spread through the round (5, 1, 1 gives
//! `a a b a c a a`, not `a a a a a b c`). An endpoint that is not usable
//! adds nothing and is not picked, so its share goes to the others in
//! proportion to their weights.
//!
//! Not nginx's `effective_weight` (which drops on failures and climbs back):
//! here an endpoint whose calls fail is ejected ([`OutlierDetection`]) or
//! not ready, and leaves the turns altogether.
//!
//! The current weights sit behind a small mutex: a pick is a read and write
//! of the whole row, and concurrent picks must not lose each other's
//! updates (the sequence would drift from the weights). The state lives in
//! the published group, so it starts again with each new set.
//!
//! [`OutlierDetection`]: super::OutlierDetection

use super::endpoints::EndpointState;
use super::lock;
use super::policy::Usable;
use std::sync::{Arc, Mutex};

/// The current weights of one group's endpoints: nginx's smooth weighted
/// round robin, also behind the gateway's `round_robin` upstreams.
#[derive(Debug)]
pub struct Smooth {
    weights: Vec<i64>,
    current: Mutex<Vec<i64>>,
}

impl Smooth {
    /// State for endpoints of these weights, in the group's order.
    pub fn new(weights: &[u32]) -> Smooth {
        Smooth {
            weights: weights.iter().map(|&weight| i64::from(weight)).collect(),
            current: Mutex::new(vec![0; weights.len()]),
        }
    }

    /// The index of the next endpoint of the smooth weighted round, among
    /// those `admits` lets through (`None` if it lets none).
    pub fn pick_index(&self, mut admits: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut current = lock(&self.current);
        let mut total = 0;
        let mut best: Option<usize> = None;
        for index in 0..self.weights.len() {
            if !admits(index) {
                continue;
            }
            // Weights are u32, current weights stay within ± the sum of
            // them: no overflow in i64.
            current[index] += self.weights[index];
            total += self.weights[index];
            if best.is_none_or(|best| current[index] > current[best]) {
                best = Some(index);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }

    /// The next endpoint of the smooth weighted round, among the usable.
    pub(crate) fn pick<'a>(
        &self,
        endpoints: &'a [Arc<EndpointState>],
        usable: Usable<'_>,
    ) -> Option<&'a Arc<EndpointState>> {
        let index = self.pick_index(|index| {
            endpoints
                .get(index)
                .is_some_and(|state| usable.admits(state))
        })?;
        Some(&endpoints[index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::endpoints::Health;
    use crate::balance::policy::tests::{position, weighted};
    use crate::balance::policy::Group;
    use crate::{Endpoint, Policy};
    use sinew_transport::Address;
    use std::sync::atomic::AtomicUsize;

    /// Endpoints `a`, `b`, `c`... of these weights.
    fn set(weights: &[u32]) -> Vec<Arc<EndpointState>> {
        let endpoints: Vec<Endpoint> = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                Endpoint::new(Address::tcp("127.0.0.1", 2000 + i as u16)).with_weight(weight)
            })
            .collect();
        weighted(&endpoints)
    }

    /// The letters of `picks` picks.
    fn sequence(group: &Group, picks: usize) -> String {
        let policy = Policy::weighted_round_robin();
        let cursor = AtomicUsize::new(0);
        (0..picks)
            .map(|_| {
                let picked = policy.pick(group, &cursor, None, None, false).unwrap();
                (b'a' + position(&group.endpoints, picked) as u8) as char
            })
            .collect()
    }

    fn counts(group: &Group, picks: usize) -> Vec<usize> {
        let mut counts = vec![0; group.endpoints.len()];
        for letter in sequence(group, picks).bytes() {
            counts[(letter - b'a') as usize] += 1;
        }
        counts
    }

    #[test]
    fn weights_5_1_1_give_nginxs_sequence() {
        let group = Group::new(&Policy::weighted_round_robin(), set(&[5, 1, 1]));
        // nginx's own example: the 2012 change that brought smooth
        // weighted round robin says weights { 5, 1, 1 } give { a, a, b, a,
        // c, a, a }. Then the same round again: the state carries over.
        assert_eq!(sequence(&group, 7), "aabacaa");
        assert_eq!(sequence(&group, 7), "aabacaa");
    }

    #[test]
    fn each_round_gives_each_endpoint_its_weight() {
        let weights = [3, 7, 1, 4, 1];
        let group = Group::new(&Policy::weighted_round_robin(), set(&weights));
        let round: usize = weights.iter().sum::<u32>() as usize;
        // Exact, not statistical: smooth weighted round robin is
        // deterministic, and every round of 16 picks is a full one.
        assert_eq!(counts(&group, round * 100), [300, 700, 100, 400, 100]);
    }

    #[test]
    fn an_unusable_endpoints_share_is_spread_by_weight() {
        let endpoints = set(&[2, 1, 1]);
        endpoints[0].set_health(Health::Failed);
        let group = Group::new(&Policy::weighted_round_robin(), endpoints.clone());
        assert_eq!(counts(&group, 1000), [0, 500, 500]);
        // Back: its weight again, from the state the others left.
        endpoints[0].set_health(Health::Ready);
        let after = counts(&group, 4000);
        assert!(after[0].abs_diff(2000) <= 2, "{after:?}");
        assert!(after[1].abs_diff(1000) <= 2, "{after:?}");
    }

    #[test]
    fn concurrent_picks_keep_the_proportions() {
        let group = Arc::new(Group::new(&Policy::weighted_round_robin(), set(&[5, 1, 1])));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let group = group.clone();
                std::thread::spawn(move || counts(&group, 7 * 1000))
            })
            .collect();
        let mut total = [0; 3];
        for thread in threads {
            for (sum, count) in total.iter_mut().zip(thread.join().unwrap()) {
                *sum += count;
            }
        }
        // Each pick is one step of the same round, whichever thread made
        // it: 4,000 full rounds in all.
        assert_eq!(total, [20_000, 4_000, 4_000]);
    }

    #[test]
    fn weights_as_large_as_u32_allows_do_not_overflow() {
        let group = Group::new(
            &Policy::weighted_round_robin(),
            set(&[u32::MAX, u32::MAX, 1]),
        );
        let counts = counts(&group, 10_000);
        assert_eq!(counts[0] + counts[1], 10_000);
        assert!(counts[0].abs_diff(counts[1]) <= 1, "{counts:?}");
    }
}
