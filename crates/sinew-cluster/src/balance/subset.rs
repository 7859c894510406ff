//! Subsetting: each channel connects to a few of a service's endpoints, not
//! all of them, so that 1,000 clients of 1,000 servers hold 20,000
//! connections instead of a million (gRPC's A68 `random_subsetting`, the
//! problem Finagle's aperture and Google's deterministic subsetting solve).
//!
//! Rendezvous hashing, as A68 does it: every endpoint gets a score, a hash
//! of its address keyed by the client's id; the client takes the `size`
//! endpoints of lowest score (all of them when there are fewer). So:
//!
//! * **Even spread**: different clients' scores are independent, so each
//!   endpoint is in a share `size / endpoints` of the subsets, and the count
//!   of clients per endpoint is binomial around that mean. The more
//!   `clients × size / endpoints`, the more even.
//! * **Little churn**: an endpoint's score does not depend on the others, so
//!   adding or removing one endpoint changes at most one member of a subset,
//!   and only in the subsets it enters or leaves (about `size / endpoints` of
//!   them).
//! * **Stable per client**: a client with a fixed id
//!   ([`BalancedBuilder::client_id`](super::BalancedBuilder::client_id))
//!   picks the same subset after a restart; by default each channel draws a
//!   random id, as A68's salt.
//!
//! The subset follows the resolver only, not endpoint health: an endpoint of
//! the subset that fails stays in it (its connection backs off and retries),
//! and calls go to the subset's other endpoints. That is A68's choice too: a
//! subset that chased health would churn connections across the fleet on
//! every failure. Pick `size` so that the subset can lose a few endpoints.
//! Nor does it look at zones or weights: with
//! [`zone`](super::BalancedBuilder::zone), the zone preference applies within
//! the subset.
//!
//! Where it runs: in the balancer's worker, on every resolver update, before
//! any endpoint is connected; endpoints outside the subset get no channel,
//! no connection and no health watch at all.
//!
//! Scores are SipHash-1-3 of the address (`tcp://host:port`) keyed by the
//! client id's hash, where A68 takes MurmurHash3 of the address and a salt:
//! the two spread alike, and nothing outside one client needs its scores.

use crate::endpoint::Endpoint;
use siphasher::sip::SipHasher13;

/// Key of the hash that turns a client id into the score's key.
const CLIENT_ID_HASH: (u64, u64) = (0x7369_6e65_772d_7375, 0x6273_6574_2d69_6421);

/// A client's subset rule.
#[derive(Clone, Debug)]
pub(crate) struct Subset {
    size: usize,
    seed: u64,
}

impl Subset {
    /// Subsets of `size` for the client whose id hashes to `seed`.
    pub(crate) fn new(size: usize, seed: u64) -> Subset {
        Subset { size, seed }
    }

    /// The seed of a client id.
    pub(crate) fn seed_of(client_id: &[u8]) -> u64 {
        SipHasher13::new_with_keys(CLIENT_ID_HASH.0, CLIENT_ID_HASH.1).hash(client_id)
    }

    /// A seed for a client without an id.
    pub(crate) fn random_seed() -> u64 {
        fastrand::u64(..)
    }

    /// The endpoints of `endpoints` in this client's subset, in their order.
    pub(crate) fn select(&self, endpoints: &[Endpoint]) -> Vec<Endpoint> {
        // Size 0 is "no subsetting" (the builder never makes one).
        if endpoints.len() <= self.size || self.size == 0 {
            return endpoints.to_vec();
        }
        let hasher = SipHasher13::new_with_keys(self.seed, CLIENT_ID_HASH.1);
        let mut scored: Vec<(u64, usize)> = endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| {
                let score = hasher.hash(endpoint.address().to_string().as_bytes());
                (score, index)
            })
            .collect();
        // Ties (a 64-bit collision) broken by the address, not the
        // resolver's order.
        scored.select_nth_unstable_by(self.size - 1, |a, b| {
            a.0.cmp(&b.0).then_with(|| {
                endpoints[a.1]
                    .address()
                    .to_string()
                    .cmp(&endpoints[b.1].address().to_string())
            })
        });
        let mut chosen: Vec<usize> = scored[..self.size].iter().map(|&(_, i)| i).collect();
        chosen.sort_unstable();
        chosen.into_iter().map(|i| endpoints[i].clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sinew_transport::Address;
    use std::collections::BTreeSet;

    fn endpoints(count: usize) -> Vec<Endpoint> {
        (0..count)
            .map(|i| Endpoint::new(Address::tcp(format!("10.7.{}.{}", i / 250, i % 250), 7000)))
            .collect()
    }

    fn client(i: usize, size: usize) -> Subset {
        Subset::new(size, Subset::seed_of(format!("client-{i}").as_bytes()))
    }

    fn members(subset: &[Endpoint]) -> BTreeSet<String> {
        subset.iter().map(|e| e.address().to_string()).collect()
    }

    #[test]
    fn each_client_gets_exactly_its_size_or_everything() {
        let all = endpoints(30);
        for i in 0..50 {
            let subset = client(i, 10).select(&all);
            assert_eq!(members(&subset).len(), 10);
            // In the resolver's order.
            let positions: Vec<usize> = subset
                .iter()
                .map(|e| all.iter().position(|a| a == e).unwrap())
                .collect();
            assert!(positions.windows(2).all(|pair| pair[0] < pair[1]));
        }
        assert_eq!(client(0, 10).select(&all[..7]), all[..7].to_vec());
        assert_eq!(client(0, 10).select(&all[..10]), all[..10].to_vec());
        assert!(client(0, 10).select(&[]).is_empty());
    }

    #[test]
    fn the_same_client_gets_the_same_subset_whatever_the_order() {
        let all = endpoints(40);
        let mut reversed = all.clone();
        reversed.reverse();
        let a = members(&client(7, 5).select(&all));
        assert_eq!(a, members(&client(7, 5).select(&reversed)));
        assert_ne!(a, members(&client(8, 5).select(&all)));
    }

    #[test]
    fn a_thousand_clients_spread_evenly_over_a_hundred_endpoints() {
        let all = endpoints(100);
        let mut clients_of = vec![0usize; all.len()];
        for i in 0..1_000 {
            for endpoint in client(i, 10).select(&all) {
                clients_of[all.iter().position(|e| *e == endpoint).unwrap()] += 1;
            }
        }
        // Each endpoint's count is binomial(1000, 0.1): mean 100, sd ~9.5.
        // Every one of the 100 within 5 sd, and the spread of the counts
        // about the binomial's (a bad hash would clump far beyond it).
        assert_eq!(clients_of.iter().sum::<usize>(), 10_000);
        for &count in &clients_of {
            assert!((53..=147).contains(&count), "{clients_of:?}");
        }
        let variance = clients_of
            .iter()
            .map(|&c| (c as f64 - 100.0).powi(2))
            .sum::<f64>()
            / clients_of.len() as f64;
        // The sample variance of 100 counts: 90 expected; 150 is far out.
        assert!(variance < 150.0, "{variance}");
    }

    #[test]
    fn adding_or_removing_one_endpoint_changes_few_subsets_by_one_member() {
        let all = endpoints(101);
        let (before, after) = (&all[..100], &all[..]);
        let mut changed = 0;
        for i in 0..1_000 {
            let subset = client(i, 10);
            let (old, new) = (
                members(&subset.select(before)),
                members(&subset.select(after)),
            );
            let gone = old.difference(&new).count();
            assert!(gone <= 1, "client {i}: {gone} members replaced");
            assert_eq!(new.len(), 10);
            if gone == 1 {
                changed += 1;
                // And the one that came in is the new endpoint.
                let added = new.difference(&old).next().unwrap();
                assert_eq!(*added, all[100].address().to_string());
            }
            // Removing it again restores the subset exactly.
            assert_eq!(members(&subset.select(before)), old);
        }
        // The new endpoint enters about 1,000 × 10/101 ≈ 99 subsets
        // (binomial sd ~9.4): 5 sd either way.
        assert!((52..=146).contains(&changed), "{changed}");
    }

    #[test]
    fn random_seeds_differ_and_ids_are_stable() {
        assert_ne!(Subset::random_seed(), Subset::random_seed());
        assert_eq!(Subset::seed_of(b"pod-1"), Subset::seed_of(b"pod-1"));
        assert_ne!(Subset::seed_of(b"pod-1"), Subset::seed_of(b"pod-2"));
    }
}
