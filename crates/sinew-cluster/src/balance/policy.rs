//! [`Policy`]: how a balanced channel picks the endpoint of each call.
//!
//! Every policy picks only among endpoints that are [`Ready`](super::Health::Ready)
//! (connected, with room): an endpoint that is connecting or backing off is
//! never picked. Each can be told to avoid one endpoint (the one a call just
//! failed on, when it fails over).
//!
//! | policy | picks | pick it when |
//! |---|---|---|
//! | [`peak_ewma`](Policy::peak_ewma) (default) | the cheaper of two at random: latency estimate × (calls in flight + 1) | almost always: it follows latency and load, and ignores weights |
//! | [`least_requests`](Policy::least_requests) | the less loaded of two at random | calls of very different cost, where latency says little |
//! | [`round_robin`](Policy::round_robin) | each endpoint in turn | equal endpoints, and a predictable spread matters more than load |
//! | [`weighted_round_robin`](Policy::weighted_round_robin) | in turn, in proportion to [`Endpoint::weight`](crate::Endpoint::weight) | endpoints of different sizes whose resolver says so |
//! | [`ring_hash`](Policy::ring_hash) | by a key of the call, on a ketama ring | affinity (caches, sessions), and to agree with nginx's `hash $key consistent` |
//! | [`maglev`](Policy::maglev) | by a key of the call, in a Maglev table | affinity with an even spread and O(1) picks |
//!
//! * **Peak EWMA**: power of two choices, Finagle's and linkerd's. Two
//!   endpoints at random; the call goes to the one with the lower cost, its
//!   latency estimate (`ewma.rs`) times its calls in flight plus one. A slow
//!   or overloaded endpoint loses nearly every comparison and gets a small
//!   share, and no endpoint is left idle for long.
//! * **Least requests**: power of two choices on calls in flight alone
//!   (gRPC's `least_request`).
//! * **Round robin**: each usable endpoint in turn (a scan of the set per
//!   call: for sets of tens of endpoints, not thousands).
//! * **Weighted round robin**: nginx's smooth weighted round robin
//!   (`weighted.rs`): weights 5, 1, 1 give `a a b a c a a`, the heavy
//!   endpoint's turns spread out rather than in a burst. An endpoint that
//!   cannot take calls is left out of the turns, so its share goes to the
//!   others in proportion to their weights.
//! * **Ring hash** and **Maglev** (`hash.rs`): the call's endpoint follows
//!   from the value of one metadata entry of the call (a user id, a cache
//!   key), so calls with the same value go to the same endpoint while it is
//!   usable, and a change of the set moves few keys. With *bounded load*
//!   (on by default, factor 1.25) no endpoint takes more than its share of
//!   this channel's calls in flight times the factor: a hot key's overflow
//!   walks on to the next endpoint of its own order. A call without the
//!   entry goes to a usable endpoint at random.
//!
//! A policy picks within a group of endpoints that carries the state it
//! needs (weights, the ring, the table, smooth round robin's current
//! weights), built when the worker publishes a set, never per call.

use super::endpoints::EndpointState;
use super::hash::{Maglev, Ring};
use super::weighted::Smooth;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a balanced channel picks the endpoint of each call: see the module
/// docs for each policy and when to pick it.
///
/// ```
/// use sinew_cluster::Policy;
/// // Calls with the same `x-user-id` go to the same endpoint, nginx's way,
/// // and no endpoint takes more than 1.5 times its share of the load.
/// let sticky = Policy::ring_hash("x-user-id").with_load_bound(1.5);
/// assert_eq!(sticky.name(), "ring_hash");
/// assert_eq!(sticky.key(), Some("x-user-id"));
/// // By name, as a configuration file writes it:
/// let named: Policy = "maglev:x-user-id".parse().unwrap();
/// assert_eq!(named.name(), "maglev");
/// ```
#[derive(Clone, Debug)]
pub struct Policy {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    PeakEwma { decay: Duration },
    LeastRequests,
    RoundRobin,
    WeightedRoundRobin,
    RingHash(HashConfig),
    Maglev(HashConfig),
}

/// What the hash policies need to know.
#[derive(Clone, Debug)]
pub(crate) struct HashConfig {
    /// The metadata key whose value is hashed.
    key: Arc<str>,
    /// Bounded load's factor; infinite when off.
    load_bound: f64,
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

    /// The load bound of the hash policies unless told otherwise: no
    /// endpoint above 1.25 times its share of the calls in flight, so an
    /// endpoint may take a quarter more than its share before its keys'
    /// calls move on (HAProxy's `hash-balance-factor 125`).
    pub const DEFAULT_LOAD_BOUND: f64 = 1.25;

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

    /// Each endpoint in turn, as often as its
    /// [`weight`](crate::Endpoint::weight) says: nginx's smooth weighted
    /// round robin. Its turns are shared by every clone of the channel, and
    /// start again when the resolver changes the set.
    pub fn weighted_round_robin() -> Policy {
        Policy {
            kind: Kind::WeightedRoundRobin,
        }
    }

    /// Consistent hashing of the call's `key` metadata entry on a ketama
    /// ring, as nginx's `hash $key consistent` does: 160 points per unit of
    /// weight, CRC-32 of the endpoint's `host:port` (`unix:` path) and of
    /// the key. For the same servers (written `host:port` in nginx, the
    /// same weights) and the same key, nginx and sinew pick the same server
    /// while it is usable; an unusable one is passed over for the next point
    /// of the ring, as nginx does. Load is bounded (see
    /// [`with_load_bound`](Policy::with_load_bound)): a loaded endpoint's
    /// calls walk on too, which nginx does not do (`f64::INFINITY` turns
    /// the bound off, for nginx's picks under load as well). A call without
    /// the entry, or with an empty value, goes to a usable endpoint at
    /// random (nginx round-robins calls with an empty key).
    ///
    /// The key is a metadata key, so it is taken in lower case (`X-User`
    /// and `x-user` are the same key).
    ///
    /// # Panics
    ///
    /// When `key` can never be a metadata key (empty, longer than 255
    /// bytes, or with a character outside `[A-Za-z0-9-_.]`): no call could
    /// carry it. [`str::parse`] returns an error instead.
    pub fn ring_hash(key: impl AsRef<str>) -> Policy {
        Policy {
            kind: Kind::RingHash(HashConfig::new(key.as_ref())),
        }
    }

    /// Consistent hashing of the call's `key` metadata entry with a Maglev
    /// lookup table (Google's Maglev load balancer): each endpoint gets a
    /// share of the table's slots in proportion to its weight, nearly
    /// exactly, and a pick is one lookup. A change of the set moves a few
    /// more keys than a ring would; the spread is more even than a ring's
    /// with fewer resources. Load bound, keyless calls and panics as for
    /// [`ring_hash`](Policy::ring_hash).
    pub fn maglev(key: impl AsRef<str>) -> Policy {
        Policy {
            kind: Kind::Maglev(HashConfig::new(key.as_ref())),
        }
    }

    /// Bounded load for the hash policies (consistent hashing with bounded
    /// loads, Mirrokni, Thorup and Zadimoghaddam): an endpoint takes a call
    /// only while its calls in flight are fewer than
    /// `ceil(factor × (calls in flight on usable endpoints + 1) × its weight
    /// / usable endpoints' weight)`; otherwise the call walks on to the next
    /// endpoint of its key's order. The default is
    /// [`DEFAULT_LOAD_BOUND`](Policy::DEFAULT_LOAD_BOUND); smaller keeps
    /// load more even and moves more calls off their key's endpoint. A
    /// factor below 1 (or NaN) is taken as 1, the tightest bound that can
    /// always be met; `f64::INFINITY` turns the bound off. The calls in
    /// flight are this channel's own. No effect on the other policies.
    pub fn with_load_bound(mut self, factor: f64) -> Policy {
        if let Kind::RingHash(config) | Kind::Maglev(config) = &mut self.kind {
            config.load_bound = if factor >= 1.0 { factor } else { 1.0 };
        }
        self
    }

    /// The policy's name, as [`str::parse`] takes it (gRPC's
    /// `loadBalancingConfig` names where gRPC has the policy).
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::PeakEwma { .. } => "peak_ewma",
            Kind::LeastRequests => "least_request",
            Kind::RoundRobin => "round_robin",
            Kind::WeightedRoundRobin => "weighted_round_robin",
            Kind::RingHash(_) => "ring_hash",
            Kind::Maglev(_) => "maglev",
        }
    }

    /// The metadata key a hash policy hashes (`None` for the others).
    pub fn key(&self) -> Option<&str> {
        match &self.kind {
            Kind::RingHash(config) | Kind::Maglev(config) => Some(&config.key),
            _ => None,
        }
    }

    /// The load bound of a hash policy (`None` for the others; infinite
    /// when off).
    pub fn load_bound(&self) -> Option<f64> {
        match &self.kind {
            Kind::RingHash(config) | Kind::Maglev(config) => Some(config.load_bound),
            _ => None,
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

    /// The endpoint for the next call in `group`: a ready one that is not
    /// `avoid` and, unless `with_unhealthy`, neither ejected nor said not
    /// serving by its health service, if there is one. `key` is the value
    /// of the call's key entry, for the hash policies.
    pub(crate) fn pick<'a>(
        &self,
        group: &'a Group,
        cursor: &AtomicUsize,
        key: Option<&[u8]>,
        avoid: Option<&EndpointState>,
        with_unhealthy: bool,
    ) -> Option<&'a Arc<EndpointState>> {
        let usable = Usable {
            avoid,
            with_unhealthy,
        };
        let endpoints = &group.endpoints[..];
        let count = endpoints.len();
        match &self.kind {
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
                match (usable.admits(a), usable.admits(b)) {
                    (true, true) => Some(if self.cost(b) < self.cost(a) { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    // Neither: the first usable one after the first draw.
                    (false, false) => first_usable(endpoints, first + 1, usable),
                }
            }
            Kind::RoundRobin => {
                // The next of the usable endpoints (not the next endpoint,
                // skipping unusable ones: the one after a skipped endpoint
                // would get its share too).
                let usable_count = endpoints.iter().filter(|s| usable.admits(s)).count();
                if usable_count == 0 {
                    return None;
                }
                let turn = cursor.fetch_add(1, Ordering::Relaxed) % usable_count;
                endpoints.iter().filter(|s| usable.admits(s)).nth(turn)
            }
            Kind::WeightedRoundRobin => match &group.table {
                Table::Smooth(smooth) => smooth.pick(endpoints, usable),
                _ => random(endpoints, usable),
            },
            Kind::RingHash(config) => match (&group.table, key) {
                (Table::Ring(ring), Some(key)) => {
                    ring.pick(endpoints, &group.weights, key, config.load_bound, usable)
                }
                _ => random(endpoints, usable),
            },
            Kind::Maglev(config) => match (&group.table, key) {
                (Table::Maglev(table), Some(key)) => {
                    table.pick(endpoints, &group.weights, key, config.load_bound, usable)
                }
                _ => random(endpoints, usable),
            },
        }
    }

    /// The endpoint for a call among `groups`, tried in order: a healthy
    /// endpoint of any group first, then (when none is, as when `unhealthy`
    /// endpoints of the set are left out, or those back from an ejection
    /// have their probes in flight) any ready one. When more than half of
    /// the endpoints are unhealthy (panic), every ready endpoint counts from
    /// the start.
    pub(crate) fn pick_among<'a>(
        &self,
        groups: &[&'a Group],
        cursor: &AtomicUsize,
        key: Option<&[u8]>,
        avoid: Option<&EndpointState>,
        unhealthy: usize,
    ) -> Option<&'a Arc<EndpointState>> {
        let total: usize = groups.iter().map(|group| group.endpoints.len()).sum();
        let panic = unhealthy * 2 > total;
        let first = groups
            .iter()
            .find_map(|group| self.pick(group, cursor, key, avoid, panic));
        match first {
            None if !panic => groups
                .iter()
                .find_map(|group| self.pick(group, cursor, key, avoid, true)),
            picked => picked,
        }
    }

    fn cost(&self, state: &EndpointState) -> f64 {
        match self.kind {
            Kind::LeastRequests => state.in_flight.load(Ordering::Relaxed) as f64,
            _ => state.cost(Instant::now()),
        }
    }
}

impl HashConfig {
    fn new(key: &str) -> HashConfig {
        match HashConfig::parse(key) {
            Ok(config) => config,
            Err(error) => panic!("{error}"),
        }
    }

    fn parse(key: &str) -> Result<HashConfig, ParsePolicyError> {
        let key = key.to_ascii_lowercase();
        sinew_rpc::MetadataMap::validate_key(&key).map_err(|_| ParsePolicyError {
            input: key.clone(),
            problem: "the hash key is not a metadata key (1 to 255 characters of [a-z0-9-_.])",
        })?;
        Ok(HashConfig {
            key: key.into(),
            load_bound: Policy::DEFAULT_LOAD_BOUND,
        })
    }
}

/// Parses a policy by name: `peak_ewma`, `least_request`, `round_robin`,
/// `weighted_round_robin`, or a hash policy with its key,
/// `ring_hash:KEY` / `maglev:KEY` (default load bound).
impl FromStr for Policy {
    type Err = ParsePolicyError;

    fn from_str(input: &str) -> Result<Policy, ParsePolicyError> {
        let (name, key) = match input.split_once(':') {
            Some((name, key)) => (name, Some(key)),
            None => (input, None),
        };
        let error = |problem| ParsePolicyError {
            input: input.to_owned(),
            problem,
        };
        let kind = match (name, key) {
            ("peak_ewma", None) => return Ok(Policy::peak_ewma()),
            ("least_request", None) => return Ok(Policy::least_requests()),
            ("round_robin", None) => return Ok(Policy::round_robin()),
            ("weighted_round_robin", None) => return Ok(Policy::weighted_round_robin()),
            ("ring_hash" | "maglev", None) => {
                return Err(error(
                    "a hash policy needs the metadata key it hashes: ring_hash:KEY or maglev:KEY",
                ))
            }
            ("ring_hash", Some(key)) => {
                Kind::RingHash(HashConfig::parse(key).map_err(|e| error(e.problem))?)
            }
            ("maglev", Some(key)) => {
                Kind::Maglev(HashConfig::parse(key).map_err(|e| error(e.problem))?)
            }
            ("peak_ewma" | "least_request" | "round_robin" | "weighted_round_robin", Some(_)) => {
                return Err(error("only ring_hash and maglev take a key"))
            }
            _ => return Err(error(
                "unknown policy: expected peak_ewma, least_request, round_robin, weighted_round_robin, ring_hash:KEY or maglev:KEY",
            )),
        };
        Ok(Policy { kind })
    }
}

impl fmt::Display for Policy {
    /// The policy as [`str::parse`] takes it back (the load bound aside).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key() {
            Some(key) => write!(f, "{}:{key}", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// A string that names no policy, with what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsePolicyError {
    input: String,
    problem: &'static str,
}

impl fmt::Display for ParsePolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid balancing policy {:?}: {}",
            self.input, self.problem
        )
    }
}

impl std::error::Error for ParsePolicyError {}

/// Which endpoints a pick may take.
#[derive(Clone, Copy)]
pub(crate) struct Usable<'a> {
    avoid: Option<&'a EndpointState>,
    with_unhealthy: bool,
}

impl Usable<'_> {
    /// Any ready, healthy endpoint.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Usable<'static> {
        Usable {
            avoid: None,
            with_unhealthy: false,
        }
    }

    pub(crate) fn admits(&self, state: &EndpointState) -> bool {
        state.is_ready()
            && (self.with_unhealthy || (state.outlier_admits() && state.is_serving()))
            && !self.avoid.is_some_and(|avoid| std::ptr::eq(avoid, state))
    }
}

/// The first usable endpoint from `start` on (wrapping around).
fn first_usable<'a>(
    endpoints: &'a [Arc<EndpointState>],
    start: usize,
    usable: Usable<'_>,
) -> Option<&'a Arc<EndpointState>> {
    let count = endpoints.len();
    (0..count)
        .map(|offset| &endpoints[(start + offset) % count])
        .find(|state| usable.admits(state))
}

/// A usable endpoint at random: the first usable one from a random start
/// (for calls without a hash key).
fn random<'a>(
    endpoints: &'a [Arc<EndpointState>],
    usable: Usable<'_>,
) -> Option<&'a Arc<EndpointState>> {
    if endpoints.is_empty() {
        return None;
    }
    first_usable(endpoints, fastrand::usize(..endpoints.len()), usable)
}

/// The endpoints a policy picks among, with the state the policy keeps over
/// them: built when a set is published (not per call), replaced with it.
#[derive(Debug, Default)]
pub(crate) struct Group {
    pub(crate) endpoints: Vec<Arc<EndpointState>>,
    /// Each endpoint's weight when the group was built (the set is built
    /// again when a weight changes); empty for the unweighted policies.
    weights: Vec<u32>,
    table: Table,
}

/// A policy's state over a group.
#[derive(Debug, Default)]
enum Table {
    /// The policy needs none (or the group is never picked from).
    #[default]
    None,
    Smooth(Smooth),
    Ring(Ring),
    Maglev(Maglev),
}

impl Group {
    /// `endpoints` with the state `policy` needs over them.
    pub(crate) fn new(policy: &Policy, endpoints: Vec<Arc<EndpointState>>) -> Group {
        let weights = || {
            endpoints
                .iter()
                .map(|state| state.endpoint.load().weight())
                .collect::<Vec<_>>()
        };
        let (weights, table) = match policy.kind {
            Kind::PeakEwma { .. } | Kind::LeastRequests | Kind::RoundRobin => {
                (Vec::new(), Table::None)
            }
            Kind::WeightedRoundRobin => {
                let weights = weights();
                let table = Table::Smooth(Smooth::new(&weights));
                (weights, table)
            }
            Kind::RingHash(_) => (weights(), Table::Ring(Ring::new(&endpoints))),
            Kind::Maglev(_) => (weights(), Table::Maglev(Maglev::new(&endpoints))),
        };
        Group {
            endpoints,
            weights,
            table,
        }
    }

    /// `endpoints` without any policy state: a group that is only listed,
    /// never picked from.
    pub(crate) fn plain(endpoints: Vec<Arc<EndpointState>>) -> Group {
        Group {
            endpoints,
            weights: Vec::new(),
            table: Table::None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::balance::endpoints::Health;
    use crate::balance::OutlierDetection;
    use crate::Endpoint;
    use sinew_rpc::Channel;

    /// Ready endpoints of these addresses and weights, whose latency
    /// estimates are equal (set at the same instant: estimates decay from
    /// when they were set).
    pub(crate) fn weighted(endpoints: &[Endpoint]) -> Vec<Arc<EndpointState>> {
        let now = Instant::now();
        endpoints
            .iter()
            .map(|endpoint| {
                let channel = Channel::builder(endpoint.address().clone()).lazy();
                let state = EndpointState::new(
                    endpoint.clone(),
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

    /// `count` ready endpoints of weight 1, `tcp://127.0.0.1:1000` on.
    pub(crate) fn endpoints(count: usize) -> Vec<Arc<EndpointState>> {
        let endpoints: Vec<Endpoint> = (0..count)
            .map(|i| Endpoint::new(sinew_transport::Address::tcp("127.0.0.1", 1000 + i as u16)))
            .collect();
        weighted(&endpoints)
    }

    /// Where `picked` is in `set`.
    pub(crate) fn position(set: &[Arc<EndpointState>], picked: &Arc<EndpointState>) -> usize {
        set.iter().position(|s| Arc::ptr_eq(s, picked)).unwrap()
    }

    /// How many of `picks` calls each endpoint gets.
    fn shares(policy: &Policy, set: &[Arc<EndpointState>], picks: usize) -> Vec<usize> {
        let group = Group::new(policy, set.to_vec());
        let cursor = AtomicUsize::new(0);
        let mut counts = vec![0; set.len()];
        for _ in 0..picks {
            let picked = policy.pick(&group, &cursor, None, None, false).unwrap();
            counts[position(set, picked)] += 1;
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

    /// Every policy, the hash ones with and without a key.
    fn every_policy() -> Vec<(Policy, Option<&'static [u8]>)> {
        vec![
            (Policy::peak_ewma(), None),
            (Policy::least_requests(), None),
            (Policy::round_robin(), None),
            (Policy::weighted_round_robin(), None),
            (Policy::ring_hash("k"), None),
            (Policy::ring_hash("k"), Some(b"user-1")),
            (Policy::maglev("k"), None),
            (Policy::maglev("k"), Some(b"user-1")),
        ]
    }

    #[test]
    fn only_ready_endpoints_are_picked_and_the_avoided_one_is_not() {
        let set = endpoints(3);
        set[0].set_health(Health::Connecting);
        set[1].set_health(Health::Failed);
        let cursor = AtomicUsize::new(0);
        for (policy, key) in every_policy() {
            let group = Group::new(&policy, set.clone());
            for _ in 0..100 {
                let picked = policy.pick(&group, &cursor, key, None, false).unwrap();
                assert!(Arc::ptr_eq(picked, &set[2]), "{policy:?}");
            }
            let avoid = Some(&*set[2]);
            assert!(policy.pick(&group, &cursor, key, avoid, false).is_none());
            let empty = Group::new(&policy, Vec::new());
            assert!(policy.pick(&empty, &cursor, key, None, false).is_none());
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
        for (policy, key) in every_policy() {
            let group = Group::new(&policy, set.clone());
            for _ in 0..100 {
                let picked = policy.pick(&group, &cursor, key, None, false).unwrap();
                assert!(Arc::ptr_eq(picked, &set[0]), "{policy:?}");
            }
            let avoid = Some(&*set[0]);
            assert!(policy.pick(&group, &cursor, key, avoid, false).is_none());
            let picked = policy.pick(&group, &cursor, key, avoid, true).unwrap();
            assert!(!Arc::ptr_eq(picked, &set[0]), "{policy:?}");
        }
    }

    #[test]
    fn an_endpoint_on_probation_takes_only_its_probes_while_others_can_take_calls() {
        let set = endpoints(2);
        let detection = OutlierDetection::new().probes(2);
        let start = Instant::now();
        assert!(set[1].outlier.eject(&detection, start));
        assert!(set[1]
            .outlier
            .return_if_due(&detection, start + Duration::from_secs(30)));
        // Its two probes in flight: every call goes to the other one.
        set[1].in_flight.store(2, Ordering::Relaxed);
        let cursor = AtomicUsize::new(0);
        for (policy, key) in every_policy() {
            let group = Group::new(&policy, set.clone());
            for _ in 0..50 {
                let picked = policy.pick_among(&[&group], &cursor, key, None, 0).unwrap();
                assert!(Arc::ptr_eq(picked, &set[0]), "{policy:?}");
            }
            // With nothing else to take it, a call goes to it all the same.
            let avoid = Some(&*set[0]);
            let picked = policy
                .pick_among(&[&group], &cursor, key, avoid, 0)
                .unwrap();
            assert!(Arc::ptr_eq(picked, &set[1]), "{policy:?}");
        }
        // A probe slot free: it may be picked again.
        set[1].in_flight.store(1, Ordering::Relaxed);
        assert!(set[1].outlier_admits());
    }

    #[test]
    fn a_group_without_the_policys_state_still_picks_a_usable_endpoint() {
        // Never the case in a published set; picks stay total all the same.
        let set = endpoints(3);
        set[0].set_health(Health::Connecting);
        let cursor = AtomicUsize::new(0);
        let group = Group::plain(set.clone());
        for (policy, key) in every_policy() {
            for _ in 0..50 {
                let picked = policy.pick(&group, &cursor, key, None, false).unwrap();
                assert!(!Arc::ptr_eq(picked, &set[0]), "{policy:?}");
            }
        }
    }

    #[test]
    fn policies_parse_by_name_and_print_back() {
        for name in [
            "peak_ewma",
            "least_request",
            "round_robin",
            "weighted_round_robin",
            "ring_hash:x-user-id",
            "maglev:x-user-id",
        ] {
            let policy: Policy = name.parse().unwrap();
            assert_eq!(policy.to_string(), name);
        }
        let policy: Policy = "ring_hash:X-User-Id".parse().unwrap();
        assert_eq!(policy.key(), Some("x-user-id"));
        assert_eq!(policy.load_bound(), Some(Policy::DEFAULT_LOAD_BOUND));
        assert_eq!(Policy::peak_ewma().key(), None);
        assert_eq!(Policy::peak_ewma().load_bound(), None);
    }

    #[test]
    fn bad_policy_names_are_refused_with_the_reason() {
        for (input, problem) in [
            ("", "unknown policy"),
            ("random", "unknown policy"),
            ("Round_Robin", "unknown policy"),
            ("least_requests", "unknown policy"),
            ("ring_hash", "needs the metadata key"),
            ("maglev", "needs the metadata key"),
            ("ring_hash:", "not a metadata key"),
            ("maglev:x user", "not a metadata key"),
            ("ring_hash:key:more", "not a metadata key"),
            (
                "round_robin:x-user-id",
                "only ring_hash and maglev take a key",
            ),
        ] {
            let error = input.parse::<Policy>().unwrap_err().to_string();
            assert!(error.contains(problem), "{input:?}: {error}");
            assert!(error.contains(&format!("{input:?}")), "{input:?}: {error}");
        }
    }

    #[test]
    #[should_panic(expected = "not a metadata key")]
    fn a_hash_key_no_call_can_carry_panics_at_construction() {
        let _ = Policy::maglev("user id");
    }

    #[test]
    fn the_load_bound_is_at_least_one_and_only_for_hash_policies() {
        let bound = |factor| Policy::maglev("k").with_load_bound(factor).load_bound();
        assert_eq!(bound(2.0), Some(2.0));
        assert_eq!(bound(0.5), Some(1.0));
        assert_eq!(bound(-1.0), Some(1.0));
        assert_eq!(bound(f64::NAN), Some(1.0));
        assert_eq!(bound(f64::INFINITY), Some(f64::INFINITY));
        assert_eq!(
            Policy::round_robin().with_load_bound(2.0).load_bound(),
            None
        );
    }
}
