//! Upstream groups: the servers a route's requests are spread over, as
//! nginx's `upstream` blocks, with what nginx lacks (active health checks,
//! discovery, peak-EWMA balancing).
//!
//! The split is pingora-load-balancing's:
//!
//! ```text
//!   servers (static, or a resolver's updates) ──▶ PeerSet (select.rs) ◀── pick per request
//!                                                   │ Arc<Peer> (peer.rs): settings, passive
//!   group task: active checks (health.rs), ─────────┘ health, load, pool (pool.rs)
//!               idle connection sweeps,
//!               resolver updates
//! ```
//!
//! A group's task is its own, started with the group and stopped when the
//! group is dropped (a reload that removes it, or the gateway's end); it
//! holds the group weakly. A set of servers is swapped in whole, so a pick
//! never sees half an update. Servers whose settings a reload or an update
//! leaves as they were keep their state: health, load estimate and idle
//! connections.

pub(crate) mod conn;
pub(crate) mod health;
pub(crate) mod peer;
pub(crate) mod pool;
pub(crate) mod select;

pub(crate) use peer::InFlight;

use crate::config::{Balance, ConfigError, Upstream};
use crate::vars::Template;
use arc_swap::ArcSwap;
use futures_util::StreamExt;
use peer::{Peer, PeerSettings};
use pool::PoolSettings;
use select::PeerSet;
use sinew_cluster::resolve::Update;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long building a discovered group waits for the resolver's first
/// answer before it starts with no server (requests get 503 until one
/// comes).
const FIRST_RESOLUTION: Duration = Duration::from_secs(3);

/// How often idle connections past their timeout are closed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// One upstream group.
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) balance: Balance,
    pub(crate) hash_key: Option<Template>,
    config: Upstream,
    set: ArcSwap<PeerSet>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(task) = crate::lock(&self.task).take() {
            task.abort();
        }
    }
}

/// A server's settings from the group's defaults and its own line.
fn settings_of(config: &Upstream, address: SocketAddr, weight: u32) -> PeerSettings {
    PeerSettings {
        address,
        weight: weight.max(1),
        backup: false,
        down: false,
        max_conns: 0,
        max_fails: config.max_fails,
        fail_timeout: config.fail_timeout,
    }
}

fn pool_settings(config: &Upstream) -> PoolSettings {
    PoolSettings {
        max_idle: config.keepalive,
        idle_timeout: config.keepalive_timeout,
        max_requests: config.keepalive_requests.max(1),
        connect_timeout: config.connect_timeout,
    }
}

impl Group {
    /// The group `config` describes. Servers of `previous` (the group of the
    /// same name before a reload) with unchanged settings are kept.
    pub(crate) async fn build(
        name: &str,
        config: &Upstream,
        previous: Option<&Group>,
    ) -> Result<Arc<Group>, ConfigError> {
        let hash_key = config
            .hash_key
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|e| ConfigError::new(format!("upstream {name:?}: hash_key: {e}")))?;
        let previous_peers: Vec<Arc<Peer>> = previous
            .filter(|group| pool_settings(&group.config) == pool_settings(config))
            .map(|group| group.set.load().peers.clone())
            .unwrap_or_default();
        let mut updates = None;
        let settings: Vec<PeerSettings> = match &config.resolve {
            None => config
                .servers
                .iter()
                .map(|server| PeerSettings {
                    backup: server.backup,
                    down: server.down,
                    max_conns: server.max_conns,
                    max_fails: server.max_fails.unwrap_or(config.max_fails),
                    fail_timeout: server.fail_timeout.unwrap_or(config.fail_timeout),
                    ..settings_of(config, server.address, server.weight)
                })
                .collect(),
            Some(target) => {
                let (resolver, service) =
                    sinew_cluster::name::resolver(target, config.service.as_deref())
                        .await
                        .map_err(|status| {
                            ConfigError::new(format!(
                                "upstream {name:?}: resolve {target:?}: {}",
                                status.message()
                            ))
                        })?;
                let mut stream = resolver.resolve(&service);
                let mut endpoints = BTreeMap::new();
                match tokio::time::timeout(FIRST_RESOLUTION, stream.next()).await {
                    Ok(Some(first)) => apply(&mut endpoints, first, name),
                    // No answer yet: on a reload of the same name, the
                    // servers it gave last, rather than none.
                    _ => {
                        if let Some(previous) =
                            previous.filter(|group| group.config.resolve == config.resolve)
                        {
                            for peer in &previous.set().peers {
                                endpoints.insert(peer.settings.address, peer.settings.weight);
                            }
                        }
                    }
                }
                let settings = endpoints
                    .iter()
                    .map(|(&address, &weight)| settings_of(config, address, weight))
                    .collect();
                updates = Some((stream, endpoints));
                settings
            }
        };
        let group = Arc::new(Group {
            name: name.to_owned(),
            balance: config.balance,
            hash_key,
            set: ArcSwap::from_pointee(PeerSet::new(Vec::new(), config.consistent)),
            config: config.clone(),
            task: std::sync::Mutex::new(None),
        });
        group.publish(&settings, &previous_peers);
        let task = tokio::spawn(run(Arc::downgrade(&group), updates));
        *crate::lock(&group.task) = Some(task);
        Ok(group)
    }

    /// Stops the group's task (checks, sweeps, resolver): a reload replaced
    /// the group. Requests still holding it finish; its servers' state
    /// lives on in the new group where their settings did not change, under
    /// the new group's checks only.
    pub(crate) fn retire(&self) {
        if let Some(task) = crate::lock(&self.task).take() {
            task.abort();
        }
    }

    /// The servers as they are now.
    pub(crate) fn set(&self) -> arc_swap::Guard<Arc<PeerSet>> {
        self.set.load()
    }

    /// Swaps in the set of these servers, keeping the state of those in
    /// `keep` whose settings are the same.
    fn publish(&self, settings: &[PeerSettings], keep: &[Arc<Peer>]) {
        let pool = pool_settings(&self.config);
        let peers = settings
            .iter()
            .map(|settings| {
                keep.iter()
                    .find(|peer| peer.settings == *settings)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Peer::new(settings.clone(), pool)))
            })
            .collect();
        self.set
            .store(Arc::new(PeerSet::new(peers, self.config.consistent)));
    }

    /// A report of every server: address, whether it is usable, requests
    /// in flight, sent and failed, idle connections.
    pub(crate) fn report(&self) -> Vec<ServerReport> {
        let now = std::time::Instant::now();
        self.set()
            .peers
            .iter()
            .map(|peer| {
                let (requests, failures) = peer.counts();
                ServerReport {
                    address: peer.settings.address,
                    usable: peer.usable(now),
                    healthy: peer.healthy(),
                    in_flight: peer.in_flight(),
                    requests,
                    failures,
                    idle_connections: peer.pool.idle_count(),
                }
            })
            .collect()
    }
}

/// The state of one upstream server, as [`Gateway::upstreams`] reports it.
///
/// [`Gateway::upstreams`]: crate::Gateway::upstreams
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerReport {
    /// Its address.
    pub address: SocketAddr,
    /// Whether a request could go to it now.
    pub usable: bool,
    /// What its active health checks say (true without checks).
    pub healthy: bool,
    /// Requests in flight to it.
    pub in_flight: usize,
    /// Requests sent to it.
    pub requests: u64,
    /// Requests to it that failed.
    pub failures: u64,
    /// Idle kept-alive connections to it.
    pub idle_connections: usize,
}

/// Applies one resolver update to the endpoints by address (with their
/// weights). Endpoints whose host is not an IP address are skipped.
fn apply(
    endpoints: &mut BTreeMap<SocketAddr, u32>,
    update: Result<Update, sinew_rpc::Status>,
    group: &str,
) {
    let address_of = |address: &sinew_transport::Address| match address {
        sinew_transport::Address::Tcp { host, port } => host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, *port)),
        _ => None,
    };
    let add = |endpoints: &mut BTreeMap<SocketAddr, u32>, list: Vec<sinew_cluster::Endpoint>| {
        for endpoint in list {
            match address_of(endpoint.address()) {
                Some(address) => {
                    endpoints.insert(address, endpoint.weight());
                }
                None => tracing::warn!(
                    group,
                    address = %endpoint.address(),
                    "skipped a resolved endpoint: the gateway reaches tcp:// IP addresses"
                ),
            }
        }
    };
    match update {
        Ok(Update::Add(list)) => add(endpoints, list),
        Ok(Update::Remove(addresses)) => {
            for address in addresses.iter().filter_map(address_of) {
                endpoints.remove(&address);
            }
        }
        Ok(Update::Reset(list)) => {
            endpoints.clear();
            add(endpoints, list);
        }
        Err(status) => {
            tracing::warn!(group, error = %status, "the resolver failed; keeping the servers it gave last")
        }
    }
}

/// Type of the resolver's stream of updates.
type Updates = sinew_cluster::resolve::Updates;

/// A group's task: sweeps idle connections, runs active checks, follows the
/// resolver. Ends when the group is dropped.
async fn run(group: Weak<Group>, mut updates: Option<(Updates, BTreeMap<SocketAddr, u32>)>) {
    let (checker, check_every) = match group.upgrade() {
        Some(group) => match &group.config.health_check {
            Some(settings) => (
                Some(health::Checker::new(settings.clone())),
                settings.interval,
            ),
            None => (None, Duration::from_secs(3600)),
        },
        None => return,
    };
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut check = tokio::time::interval(check_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next_update = async {
            match &mut updates {
                Some((stream, _)) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sweep.tick() => {
                let Some(group) = group.upgrade() else { return };
                for peer in &group.set().peers {
                    peer.pool.sweep();
                }
            }
            _ = check.tick(), if checker.is_some() => {
                let peers = match group.upgrade() {
                    Some(group) => group.set().peers.clone(),
                    None => return,
                };
                if let Some(checker) = &checker {
                    checker.check_all(&peers).await;
                }
            }
            update = next_update => {
                let Some(group) = group.upgrade() else { return };
                let Some((_, endpoints)) = &mut updates else { continue };
                match update {
                    Some(update) => {
                        apply(endpoints, update, &group.name);
                        let settings: Vec<PeerSettings> = endpoints
                            .iter()
                            .map(|(&address, &weight)| settings_of(&group.config, address, weight))
                            .collect();
                        let keep = group.set().peers.clone();
                        group.publish(&settings, &keep);
                    }
                    None => {
                        tracing::warn!(group = %group.name, "the resolver's updates ended; keeping the servers it gave last");
                        updates = None;
                    }
                }
            }
        }
    }
}
