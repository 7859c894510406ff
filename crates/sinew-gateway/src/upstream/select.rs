//! Picking a request's server among a group's: the policies of
//! [`Balance`], over the servers that are usable and not yet tried by this
//! request, the backup servers only when no other is left.
//!
//! The state a policy keeps (smooth weighted round robin's current weights,
//! the ketama ring) is built once per set of servers ([`PeerSet`]), with
//! the primitives the balanced channel uses (`sinew_cluster::balance`), so
//! that a key hashes to the same server through nginx, the gateway and a
//! sinew client.

use super::peer::Peer;
use crate::config::Balance;
use sinew_cluster::balance::{KetamaRing, Smooth};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// nginx gives up rehashing after 20 tries and falls back to round robin.
const HASH_TRIES: u32 = 20;

/// One tier of a set: the primary servers, or the backups.
struct Tier {
    /// Indices into the set's peers.
    members: Vec<usize>,
    weights: Vec<u32>,
    total_weight: u64,
    smooth: Smooth,
    ring: Option<KetamaRing>,
}

impl Tier {
    fn new(peers: &[Arc<Peer>], members: Vec<usize>, consistent: bool) -> Tier {
        let weights: Vec<u32> = members
            .iter()
            .map(|&index| peers[index].settings.weight)
            .collect();
        let ring = consistent.then(|| {
            let servers: Vec<(String, u64)> = members
                .iter()
                .zip(&weights)
                .map(|(&index, &weight)| (peers[index].name.clone(), u64::from(weight)))
                .collect();
            KetamaRing::from_servers(&servers)
        });
        Tier {
            total_weight: weights.iter().map(|&weight| u64::from(weight)).sum(),
            smooth: Smooth::new(&weights),
            weights,
            members,
            ring,
        }
    }
}

/// A group's servers as they are now, with each policy's state.
pub(crate) struct PeerSet {
    pub(crate) peers: Vec<Arc<Peer>>,
    primary: Tier,
    backup: Tier,
}

/// What a pick knows of the request.
pub(crate) struct PickContext<'a> {
    pub(crate) client: IpAddr,
    /// The expanded hash key (for `Balance::Hash`).
    pub(crate) key: &'a [u8],
    /// The servers this request already tried.
    pub(crate) tried: &'a [SocketAddr],
    pub(crate) now: Instant,
}

impl PeerSet {
    pub(crate) fn new(peers: Vec<Arc<Peer>>, consistent: bool) -> PeerSet {
        let (backup, primary): (Vec<usize>, Vec<usize>) =
            (0..peers.len()).partition(|&index| peers[index].settings.backup);
        PeerSet {
            primary: Tier::new(&peers, primary, consistent),
            backup: Tier::new(&peers, backup, consistent),
            peers,
        }
    }

    /// The index of the server for this request, or `None` when none can
    /// take it.
    ///
    /// When every server not tried yet is out by health (passive or
    /// active), one is picked anyway, as nginx does once all its servers
    /// failed: a group whose every server looks down is more likely seeing
    /// a passing fault, or a wrong health check, than a total outage, and
    /// refusing everything for `fail_timeout` would make it one. `down`
    /// servers and full `max_conns` stay out.
    pub(crate) fn pick(&self, balance: Balance, context: &PickContext<'_>) -> Option<usize> {
        self.pick_in(&self.primary, balance, context, false)
            .or_else(|| self.pick_in(&self.backup, balance, context, false))
            .or_else(|| self.pick_in(&self.primary, balance, context, true))
            .or_else(|| self.pick_in(&self.backup, balance, context, true))
    }

    fn pick_in(
        &self,
        tier: &Tier,
        balance: Balance,
        context: &PickContext<'_>,
        despite_health: bool,
    ) -> Option<usize> {
        if tier.members.is_empty() {
            return None;
        }
        let admits = |member: usize| {
            let peer = &self.peers[tier.members[member]];
            !context.tried.contains(&peer.settings.address)
                && if despite_health {
                    peer.has_room()
                } else {
                    peer.usable(context.now)
                }
        };
        let member = match balance {
            Balance::RoundRobin => tier.smooth.pick_index(admits),
            Balance::LeastConn => self.least_loaded(tier, admits),
            Balance::IpHash => {
                ip_hash(tier, context.client, admits).or_else(|| tier.smooth.pick_index(admits))
            }
            Balance::Hash => match &tier.ring {
                Some(ring) => ring
                    .candidates(context.key)
                    .take(tier.members.len() * HASH_TRIES as usize)
                    .find(|&member| admits(member))
                    .or_else(|| tier.smooth.pick_index(admits)),
                None => modulo_hash(tier, context.key, admits)
                    .or_else(|| tier.smooth.pick_index(admits)),
            },
            Balance::RandomTwo => self.two_random(tier, admits, |peer| {
                peer.in_flight() as f64 / f64::from(peer.settings.weight)
            }),
            Balance::P2cEwma => self.two_random(tier, admits, |peer| {
                peer.ewma.estimate(context.now) * (peer.in_flight() + 1) as f64
                    / f64::from(peer.settings.weight)
            }),
        }?;
        Some(tier.members[member])
    }

    /// nginx's `least_conn`: the fewest requests in flight for the weight,
    /// ties broken by weighted round robin.
    fn least_loaded(&self, tier: &Tier, admits: impl Fn(usize) -> bool) -> Option<usize> {
        let load = |member: usize| {
            let peer = &self.peers[tier.members[member]];
            (peer.in_flight() as u64, u64::from(tier.weights[member]))
        };
        let mut best: Option<(u64, u64)> = None;
        for member in (0..tier.members.len()).filter(|&member| admits(member)) {
            let (in_flight, weight) = load(member);
            // a/b < c/d  <=>  a*d < c*b, for positive weights.
            if best.is_none_or(|(best_in_flight, best_weight)| {
                in_flight * best_weight < best_in_flight * weight
            }) {
                best = Some((in_flight, weight));
            }
        }
        let (best_in_flight, best_weight) = best?;
        tier.smooth
            .pick_index(|member| {
                admits(member) && {
                    let (in_flight, weight) = load(member);
                    in_flight * best_weight == best_in_flight * weight
                }
            })
            // The loads moved between the two passes: any usable one.
            .or_else(|| tier.smooth.pick_index(&admits))
    }

    /// Two servers drawn by weight, the one of lower `cost`.
    fn two_random(
        &self,
        tier: &Tier,
        admits: impl Fn(usize) -> bool,
        cost: impl Fn(&Peer) -> f64,
    ) -> Option<usize> {
        let first = weighted_draw(tier, &admits, None)?;
        let Some(second) = weighted_draw(tier, &admits, Some(first)) else {
            return Some(first);
        };
        let (a, b) = (
            cost(&self.peers[tier.members[first]]),
            cost(&self.peers[tier.members[second]]),
        );
        Some(if b < a { second } else { first })
    }
}

/// A member drawn at random by weight among those admitted, but `except`.
fn weighted_draw(
    tier: &Tier,
    admits: &impl Fn(usize) -> bool,
    except: Option<usize>,
) -> Option<usize> {
    let eligible = |member: usize| Some(member) != except && admits(member);
    let total: u64 = (0..tier.members.len())
        .filter(|&member| eligible(member))
        .map(|member| u64::from(tier.weights[member]))
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = fastrand::u64(0..total);
    for member in (0..tier.members.len()).filter(|&member| eligible(member)) {
        let weight = u64::from(tier.weights[member]);
        if point < weight {
            return Some(member);
        }
        point -= weight;
    }
    None
}

/// The member owning `point` (< total weight) when the weights are laid
/// end to end, as nginx's hash and ip_hash walk them.
fn by_weight(tier: &Tier, mut point: u64) -> usize {
    for (member, &weight) in tier.weights.iter().enumerate() {
        let weight = u64::from(weight);
        if point < weight {
            return member;
        }
        point -= weight;
    }
    tier.weights.len() - 1
}

/// nginx's `ip_hash`: the first three bytes of an IPv4 address (all of an
/// IPv6 one), rehashed up to 20 times while the server is not usable.
fn ip_hash(tier: &Tier, client: IpAddr, admits: impl Fn(usize) -> bool) -> Option<usize> {
    let octets: Vec<u8> = match client {
        IpAddr::V4(v4) => v4.octets()[..3].to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets()[..3].to_vec(),
            None => v6.octets().to_vec(),
        },
    };
    let mut hash: u64 = 89;
    for _ in 0..HASH_TRIES {
        for &octet in &octets {
            hash = (hash * 113 + u64::from(octet)) % 6271;
        }
        let member = by_weight(tier, hash % tier.total_weight);
        if admits(member) {
            return Some(member);
        }
    }
    None
}

/// nginx's plain `hash $key`: CRC-32 of the key modulo the total weight,
/// rehashed with the try's number while the server is not usable.
fn modulo_hash(tier: &Tier, key: &[u8], admits: impl Fn(usize) -> bool) -> Option<usize> {
    let mut hash = crc32fast::hash(key);
    for tries in 0..HASH_TRIES {
        let member = by_weight(tier, u64::from(hash) % tier.total_weight);
        if admits(member) {
            return Some(member);
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update((tries + 1).to_string().as_bytes());
        hasher.update(key);
        hash = hasher.finalize();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::peer::PeerSettings;
    use crate::upstream::pool::PoolSettings;
    use crate::upstream::InFlight;
    use std::time::Duration;

    fn set(weights: &[(u32, bool)], consistent: bool) -> PeerSet {
        let peers = weights
            .iter()
            .enumerate()
            .map(|(index, &(weight, backup))| {
                Arc::new(Peer::new(
                    PeerSettings {
                        address: format!("10.0.0.{}:80", index + 1).parse().unwrap(),
                        weight,
                        backup,
                        down: false,
                        max_conns: 0,
                        max_fails: 1,
                        fail_timeout: Duration::from_secs(10),
                    },
                    PoolSettings {
                        max_idle: 1,
                        idle_timeout: Duration::from_secs(1),
                        max_requests: 1,
                        connect_timeout: Duration::from_secs(1),
                    },
                ))
            })
            .collect();
        PeerSet::new(peers, consistent)
    }

    fn context<'a>(key: &'a [u8], tried: &'a [SocketAddr], now: Instant) -> PickContext<'a> {
        PickContext {
            client: "192.168.1.20".parse().unwrap(),
            key,
            tried,
            now,
        }
    }

    fn picks(set: &PeerSet, balance: Balance, count: usize) -> Vec<usize> {
        let now = Instant::now();
        (0..count)
            .map(|_| set.pick(balance, &context(b"k", &[], now)).unwrap())
            .collect()
    }

    #[test]
    fn round_robin_is_nginx_smooth_weighted() {
        let set = set(&[(5, false), (1, false), (1, false)], false);
        assert_eq!(
            picks(&set, Balance::RoundRobin, 7),
            vec![0, 0, 1, 0, 2, 0, 0]
        );
    }

    #[test]
    fn backups_only_when_no_primary_is_usable() {
        let set = set(&[(1, false), (1, true)], false);
        let now = Instant::now();
        let (first, second) = (set.peers[0].settings.address, set.peers[1].settings.address);
        for balance in [
            Balance::RoundRobin,
            Balance::LeastConn,
            Balance::IpHash,
            Balance::Hash,
            Balance::RandomTwo,
            Balance::P2cEwma,
        ] {
            assert_eq!(set.pick(balance, &context(b"k", &[], now)), Some(0));
            assert_eq!(set.pick(balance, &context(b"k", &[first], now)), Some(1));
            assert_eq!(
                set.pick(balance, &context(b"k", &[first, second], now)),
                None
            );
        }
        set.peers[0].failed(now);
        assert_eq!(
            set.pick(Balance::RoundRobin, &context(b"k", &[], now)),
            Some(1)
        );
        // Both out by health: one is picked anyway, the primary first.
        set.peers[1].failed(now);
        assert_eq!(
            set.pick(Balance::RoundRobin, &context(b"k", &[], now)),
            Some(0)
        );
        // With the primary tried, the backup, out or not.
        assert_eq!(
            set.pick(Balance::RoundRobin, &context(b"k", &[first], now)),
            Some(1)
        );
    }

    #[test]
    fn least_conn_avoids_the_busy_server() {
        let set = set(&[(1, false), (1, false), (1, false)], false);
        let _busy = [
            InFlight::new(set.peers[0].clone()),
            InFlight::new(set.peers[2].clone()),
        ];
        assert_eq!(picks(&set, Balance::LeastConn, 3), vec![1, 1, 1]);
    }

    #[test]
    fn hashes_are_stable_and_move_on_when_their_server_fails() {
        let now = Instant::now();
        for consistent in [false, true] {
            let set = set(&[(1, false), (1, false), (1, false)], consistent);
            let first = set.pick(Balance::Hash, &context(b"/a", &[], now)).unwrap();
            for _ in 0..10 {
                assert_eq!(
                    set.pick(Balance::Hash, &context(b"/a", &[], now)),
                    Some(first)
                );
            }
            let spread: std::collections::HashSet<usize> = (0..100)
                .map(|n| {
                    set.pick(
                        Balance::Hash,
                        &context(format!("/k{n}").as_bytes(), &[], now),
                    )
                    .unwrap()
                })
                .collect();
            assert_eq!(spread.len(), 3, "keys spread over every server");
            let tried = [set.peers[first].settings.address];
            let next = set
                .pick(Balance::Hash, &context(b"/a", &tried, now))
                .unwrap();
            assert_ne!(next, first);
        }
    }

    #[test]
    fn ip_hash_keeps_a_client_network_on_one_server() {
        let set = set(&[(1, false), (1, false), (1, false)], false);
        let now = Instant::now();
        let pick = |client: &str| {
            set.pick(
                Balance::IpHash,
                &PickContext {
                    client: client.parse().unwrap(),
                    key: b"",
                    tried: &[],
                    now,
                },
            )
            .unwrap()
        };
        assert_eq!(pick("172.16.5.1"), pick("172.16.5.200"));
        let spread: std::collections::HashSet<usize> =
            (0..50).map(|n| pick(&format!("10.{n}.1.1"))).collect();
        assert!(spread.len() > 1);
    }

    #[test]
    fn random_two_spreads_by_weight() {
        let set = set(&[(3, false), (1, false)], false);
        let picks = picks(&set, Balance::RandomTwo, 400);
        let heavy = picks.iter().filter(|&&index| index == 0).count();
        assert!(heavy > 200, "{heavy} of 400 to the server of weight 3");
    }

    #[test]
    fn p2c_ewma_prefers_the_faster_server() {
        let set = set(&[(1, false), (1, false)], false);
        let now = Instant::now();
        set.peers[0].ewma.observe(Duration::from_millis(50), now);
        set.peers[1].ewma.observe(Duration::from_micros(200), now);
        let picks = picks(&set, Balance::P2cEwma, 100);
        assert!(picks.iter().all(|&index| index == 1));
    }
}
