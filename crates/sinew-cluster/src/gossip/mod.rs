//! The embedded registry: the services' processes find each other by gossip,
//! with no registry server to run.
//!
//! A [`Member`] joins a cluster (a name, and a seed or two to start from) and
//! gossips with the other members over UDP (scuttlebutt anti-entropy and a
//! phi-accrual failure detector, from the [`chitchat`] crate that Quickwit
//! runs in production). A server member publishes where it serves which
//! services ([`Member::publish`], [`Member::publish_server`]); any member,
//! server or observer, resolves a service name to the endpoints the live
//! members publish ([`Member::resolver`], a [`Resolve`](crate::Resolve) for
//! [`Balanced`](crate::Balanced)).
//!
//! ```text
//!  member A (server) ──gossip──▶ member B (server) ──gossip──▶ member C (observer)
//!    sinew.endpoint:tcp://10.0.0.1:7000 = {"services": ["echo.Echo"]}   │
//!                                                                       ▼
//!                                              resolver("echo.Echo") ─▶ Balanced
//! ```
//!
//! * **Membership.** Every member gossips to up to three others each
//!   [`gossip_interval`](MemberBuilder::gossip_interval) (100 ms by default).
//!   A member that stops gossiping (killed, or its host gone) is declared
//!   dead by each member's failure detector after about eight of its usual
//!   heartbeat intervals (under a second at the default interval), and its
//!   endpoints leave every resolver's set. A member that leaves gracefully
//!   ([`Member::leave`]) withdraws its endpoints first and says so, and they
//!   leave the sets within a round or two of gossip.
//! * **Service configs**: a member may also publish a service's config
//!   (gRPC's JSON: timeouts, retries, hedging; [`Member::publish_service_config`]),
//!   and clients follow the newest one a live member publishes
//!   ([`Member::service_configs`]), so operators change every client's
//!   policies from any member (`config.rs`).
//! * **Clusters are kept apart by name**: a member answers gossip from
//!   another cluster with a refusal and takes nothing from it.
//! * **Restarts**: each join is a new generation of the member, so a member
//!   restarted on the same address replaces the old one cleanly.
//! * **Bad input**: datagrams that do not decode are dropped (and logged by
//!   chitchat); endpoint records that do not parse are skipped.
//!
//! ```no_run
//! # async fn example(server: sinew_rpc::Server) -> Result<(), sinew_rpc::Status> {
//! use sinew_cluster::gossip::{Member, Role};
//! use sinew_cluster::Balanced;
//! // A server joins through a seed and publishes its services; at shutdown it
//! // leaves the cluster before it drains.
//! let member = Member::builder()
//!     .cluster("shop")
//!     .listen("10.0.0.2:7946".parse().unwrap())
//!     .seeds(["10.0.0.1:7946"])
//!     .join()
//!     .await?;
//! member.publish_server(&server).await?;
//! let signal = async { /* Ctrl-C */ };
//! server
//!     .serve_with_shutdown(async move {
//!         signal.await;
//!         member.leave().await;
//!     })
//!     .await;
//!
//! // A client joins as an observer and calls the service by name.
//! let observer = Member::builder()
//!     .cluster("shop")
//!     .role(Role::Observer)
//!     .listen("0.0.0.0:0".parse().unwrap())
//!     .seeds(["10.0.0.1:7946"])
//!     .join()
//!     .await?;
//! let carts = Balanced::builder(observer.resolver(), "shop.Cart").build();
//! # let _ = carts; Ok(()) }
//! ```
//!
//! Gossip is not authenticated: run it on a network you trust (the security
//! layer does not cover it yet). Its cost is small: a digest of every
//! member's versions, to three members per interval.

mod config;
mod record;
mod resolver;

pub use config::{ServiceConfigs, MAX_SERVICE_CONFIG};
pub use record::MEMBER_METADATA;
pub use resolver::GossipResolver;

use crate::endpoint::Endpoint;
use crate::registry::{self, Record};
use chitchat::{
    spawn_chitchat, transport::UdpTransport, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId,
    FailureDetectorConfig, NodeState,
};
use record::{ADMIN_KEY, ROLE_KEY, STATE_KEY, ZONE_KEY};
use sinew_rpc::Status;
use sinew_transport::Address;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// The cluster name of a member that is given none.
pub const DEFAULT_CLUSTER: &str = "sinew";

/// The default gossip interval.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(100);

/// How many of a member's heartbeat intervals may pass without news before
/// it is declared dead (chitchat's phi threshold; its default).
const PHI_THRESHOLD: f64 = 8.0;

/// A dead member's state is kept this long (so that its late gossip does not
/// bring it back), then forgotten.
const DEAD_MEMBER_KEPT: Duration = Duration::from_secs(3600);

/// How long a member that joined through seeds waits for their state before
/// its resolvers say that a service nobody publishes is unknown.
const FIRST_SYNC: Duration = Duration::from_secs(1);

/// How many times a member tries free ports when asked for port 0.
const BIND_ATTEMPTS: usize = 5;

/// Whether a member serves or only watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It publishes endpoints.
    Server,
    /// It only resolves (a client); it gossips like any member, so it
    /// learns of changes as fast.
    Observer,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Observer => "observer",
        }
    }
}

/// A member of a gossip cluster: see the module docs. Clones share the
/// membership; it ends when [`leave`](Member::leave) is called or the last
/// clone (and the last resolver made from it) is dropped.
#[derive(Clone)]
pub struct Member {
    inner: Arc<Inner>,
}

/// What a member's clones and resolvers share.
pub(crate) struct Inner {
    id: ChitchatId,
    cluster: String,
    gossip_interval: Duration,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    /// The live members and their state, as chitchat last published them.
    live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    /// Until when resolvers wait for the seeds' state before calling a name
    /// unknown.
    first_sync: Instant,
    /// The seeds it joined through.
    seeds: Vec<String>,
    /// The gossip server; taken by `leave`.
    handle: Mutex<Option<ChitchatHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.get_mut().ok().and_then(Option::take) {
            handle.abort();
        }
    }
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("name", &&*self.inner.id.node_id)
            .field("cluster", &self.inner.cluster)
            .field("gossip_address", &self.inner.id.gossip_advertise_addr)
            .finish_non_exhaustive()
    }
}

impl Member {
    /// A member of the cluster [`DEFAULT_CLUSTER`], gossiping on a free port
    /// of 127.0.0.1 until configured otherwise.
    pub fn builder() -> MemberBuilder {
        MemberBuilder {
            cluster: DEFAULT_CLUSTER.to_owned(),
            name: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            seeds: Vec::new(),
            zone: None,
            admin: None,
            role: Role::Server,
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
        }
    }

    /// Its name, unique in the cluster.
    pub fn name(&self) -> &str {
        &self.inner.id.node_id
    }

    /// The cluster it belongs to.
    pub fn cluster(&self) -> &str {
        &self.inner.cluster
    }

    /// The address other members gossip with it at (the one to give as a
    /// seed to members that join later).
    pub fn gossip_address(&self) -> SocketAddr {
        self.inner.id.gossip_advertise_addr
    }

    /// A resolver of service names to the endpoints the live members publish.
    pub fn resolver(&self) -> GossipResolver {
        GossipResolver::new(self.inner.clone())
    }

    /// Publishes that `services` are served at `endpoint` (its weight, zone
    /// and metadata go with it; a member's zone is the default zone).
    /// Publishing an address again replaces what was published for it.
    pub async fn publish(
        &self,
        endpoint: &Endpoint,
        services: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<(), Status> {
        let key = record::key(endpoint.address());
        let value = Record::new(endpoint, services)?.encode();
        self.with_own_state(|state| state.set(key, value)).await
    }

    /// Withdraws what was published for `address`.
    pub async fn unpublish(&self, address: &Address) -> Result<(), Status> {
        let key = record::key(address);
        self.with_own_state(|state| state.delete(&key)).await
    }

    /// Publishes a bound server: each of its TCP addresses, with the services
    /// added to it. A listener on an unspecified IP (`0.0.0.0`, `::`) is
    /// published at this member's gossip IP. Unix and shared-memory
    /// listeners are not published: they are reachable on this host only
    /// (and a TCP connection from this host moves to shared memory by
    /// itself). Returns the addresses published.
    pub async fn publish_server(&self, server: &sinew_rpc::Server) -> Result<Vec<Address>, Status> {
        let services = server.service_names();
        let addresses = registry::server_addresses(server, Some(self.gossip_address().ip()))?;
        for address in &addresses {
            self.publish(&Endpoint::new(address.clone()), services.iter().copied())
                .await?;
        }
        Ok(addresses)
    }

    /// Publishes `config` as the service config of `service` (gRPC's JSON;
    /// see `config.rs`), a version `written` then (a file's modification
    /// time; `SystemTime::now()` for one made now): clients that follow it
    /// (`sinew_resilience::ConfigHandle::follow_gossip`) put the newest
    /// written of those the live members publish in force, so a member
    /// restarted with an older copy does not override a newer one.
    /// Publishing again replaces this member's. `INVALID_ARGUMENT` if it is
    /// not JSON or longer than [`MAX_SERVICE_CONFIG`].
    pub async fn publish_service_config(
        &self,
        service: &str,
        config: &str,
        written: SystemTime,
    ) -> Result<(), Status> {
        if config.len() > MAX_SERVICE_CONFIG {
            return Err(Status::invalid_argument(format!(
                "the service config of {service} is {} bytes; gossip carries at most {MAX_SERVICE_CONFIG} (keep a larger one in a file or etcd)",
                config.len()
            )));
        }
        if let Err(error) = serde_json::from_str::<serde_json::Value>(config) {
            return Err(Status::invalid_argument(format!(
                "the service config of {service} is not JSON: {error}"
            )));
        }
        let published_ms = written
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let record = config::ConfigRecord {
            published_ms,
            config: config.to_owned(),
        };
        let value = serde_json::to_string(&record)
            .map_err(|error| Status::internal(format!("encoding a service config: {error}")))?;
        let key = config::key(service);
        self.with_own_state(|state| state.set(key, value)).await
    }

    /// Withdraws the service config this member published for `service`.
    pub async fn withdraw_service_config(&self, service: &str) -> Result<(), Status> {
        let key = config::key(service);
        self.with_own_state(|state| state.delete(&key)).await
    }

    /// The service config of `service` in force: the newest one a live
    /// member publishes.
    pub fn service_config(&self, service: &str) -> Option<String> {
        config::newest(&self.inner.live.borrow(), service)
    }

    /// The service config of `service` now, then each time it changes.
    pub fn service_configs(&self, service: &str) -> ServiceConfigs {
        config::follow(self.inner.clone(), service)
    }

    /// Every member this one knows of, live or dead, sorted by name.
    pub async fn members(&self) -> Vec<MemberReport> {
        let chitchat = self.inner.chitchat.lock().await;
        let live: BTreeSet<&ChitchatId> = chitchat.live_nodes().collect();
        let mut reports: Vec<MemberReport> = chitchat
            .node_states()
            .iter()
            .map(|(id, node)| MemberReport {
                name: id.node_id.to_string(),
                generation: id.generation_id,
                gossip_address: id.gossip_advertise_addr,
                live: live.contains(id),
                leaving: record::is_leaving(node),
                role: node.get(ROLE_KEY).unwrap_or("unknown").to_owned(),
                zone: node.get(ZONE_KEY).map(str::to_owned),
                admin: node.get(ADMIN_KEY).map(str::to_owned),
                endpoints: record::records(node)
                    .map(|(address, record)| (address, record.services.into_iter().collect()))
                    .collect(),
            })
            .collect();
        reports.sort_by(|a, b| (&a.name, a.generation).cmp(&(&b.name, b.generation)));
        reports
    }

    /// Every service the live members publish, sorted.
    pub fn services(&self) -> Vec<String> {
        record::services(&self.inner.live.borrow())
            .into_iter()
            .collect()
    }

    /// Leaves the cluster gracefully: withdraws every endpoint this member
    /// published and says it is leaving, gives the news a few rounds of
    /// gossip to reach the others, then stops gossiping. Call it before a
    /// server drains, so that clients stop sending to it before it refuses
    /// calls. Later calls (and those of clones) do nothing.
    pub async fn leave(&self) {
        let Some(handle) = crate::balance::lock(&self.inner.handle).take() else {
            return;
        };
        let members = {
            let mut chitchat = self.inner.chitchat.lock().await;
            let own = chitchat.self_node_state();
            let keys: Vec<String> = own
                .iter_prefix(record::ENDPOINT_PREFIX)
                .map(|(key, _)| key.to_owned())
                .collect();
            for key in keys {
                own.delete(&key);
            }
            own.set(STATE_KEY, record::LEAVING);
            chitchat.live_nodes().count()
        };
        // Each round reaches three members, and those who heard pass it on:
        // a few rounds more than log2 of the cluster's size reach everyone.
        let rounds = 3 + usize::BITS - members.max(1).leading_zeros();
        tokio::time::sleep(self.inner.gossip_interval * rounds).await;
        if let Err(error) = handle.shutdown().await {
            tracing::debug!(%error, "gossip stopped with an error");
        }
        tracing::info!(member = %self.name(), cluster = %self.cluster(), "left the cluster");
    }

    async fn with_own_state(&self, change: impl FnOnce(&mut NodeState)) -> Result<(), Status> {
        if crate::balance::lock(&self.inner.handle).is_none() {
            return Err(Status::failed_precondition(format!(
                "member {} has left cluster {}",
                self.name(),
                self.cluster()
            )));
        }
        change(self.inner.chitchat.lock().await.self_node_state());
        Ok(())
    }
}

/// One member as another sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberReport {
    /// Its name.
    pub name: String,
    /// Which of its joins this is (a restart is a new generation).
    pub generation: u64,
    /// Where it gossips.
    pub gossip_address: SocketAddr,
    /// Whether the failure detector thinks it alive.
    pub live: bool,
    /// Whether it has begun to leave.
    pub leaving: bool,
    /// `server` or `observer` (`unknown` for a member that does not say).
    pub role: String,
    /// Its zone, if it gave one.
    pub zone: Option<String>,
    /// Its admin endpoint (`http://host:port`), if it serves one.
    pub admin: Option<String>,
    /// What it publishes: each address with its services.
    pub endpoints: Vec<(Address, Vec<String>)>,
}

/// Configures and joins a [`Member`].
#[derive(Clone, Debug)]
pub struct MemberBuilder {
    cluster: String,
    name: Option<String>,
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    seeds: Vec<String>,
    zone: Option<String>,
    admin: Option<String>,
    role: Role,
    gossip_interval: Duration,
}

impl MemberBuilder {
    /// The cluster to join (default [`DEFAULT_CLUSTER`]); members of other
    /// clusters are ignored, even on the same seeds.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// Its name, unique in the cluster (default: its gossip address).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where it listens for gossip, UDP (default `127.0.0.1:0`: a free port
    /// on loopback). Port 0 picks a free port.
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.listen = address;
        self
    }

    /// The address the others gossip with it at, when it is not the listen
    /// address (a listener on `0.0.0.0`, NAT). Port 0 means the listen port.
    /// Without one, a member listening on an unspecified IP (`0.0.0.0`, `::`)
    /// advertises the IP of the interface that reaches its first seed.
    pub fn advertise(mut self, address: SocketAddr) -> Self {
        self.advertise = Some(address);
        self
    }

    /// Members to start from, `host:port` (names are looked up, and again
    /// every minute). Any live member will do; without seeds the member
    /// starts a cluster of its own that others join.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.seeds.extend(seeds.into_iter().map(Into::into));
        self
    }

    /// Its zone, the default zone of the endpoints it publishes.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Where its admin endpoint is (`http://host:port`): told to the
    /// cluster, for dashboards.
    pub fn admin(mut self, admin: impl Into<String>) -> Self {
        self.admin = Some(admin.into());
        self
    }

    /// Server (default) or observer.
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// How often it gossips (default 100 ms). Failure detection takes about
    /// eight intervals; a larger cluster may prefer a longer one.
    pub fn gossip_interval(mut self, interval: Duration) -> Self {
        self.gossip_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Joins: starts gossiping (on the current Tokio runtime) and returns at
    /// once; the others' state arrives with the first rounds.
    pub async fn join(self) -> Result<Member, Status> {
        if self.cluster.is_empty() {
            return Err(Status::invalid_argument("the cluster name is empty"));
        }
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            let listen = free_port(self.listen)?;
            match self.clone().spawn(listen).await {
                Ok(member) => return Ok(member),
                // Only a port picked here can be lost to a race; retry then.
                Err(error) if self.listen.port() == 0 => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    async fn spawn(self, listen: SocketAddr) -> Result<Member, Status> {
        let mut advertise = self.advertise.unwrap_or(listen);
        if advertise.port() == 0 {
            advertise.set_port(listen.port());
        }
        if advertise.ip().is_unspecified() {
            let seed = self.seeds.first().ok_or_else(|| {
                Status::invalid_argument(format!(
                    "gossip listens on {listen} with no seed to learn its IP from: give an advertise address"
                ))
            })?;
            advertise.set_ip(registry::local_ip_towards(seed).await?);
        }
        let name = self.name.unwrap_or_else(|| advertise.to_string());
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64);
        let id = ChitchatId::new(name, generation, advertise);
        let config = ChitchatConfig {
            chitchat_id: id.clone(),
            cluster_id: self.cluster.clone(),
            gossip_interval: self.gossip_interval,
            listen_addr: listen,
            seed_nodes: self.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: PHI_THRESHOLD,
                sampling_window_size: 100,
                max_interval: Duration::from_secs(10).max(self.gossip_interval * 10),
                initial_interval: self.gossip_interval,
                dead_node_grace_period: DEAD_MEMBER_KEPT,
            },
            marked_for_deletion_grace_period: DEAD_MEMBER_KEPT,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let mut initial = vec![(ROLE_KEY.to_owned(), self.role.as_str().to_owned())];
        if let Some(zone) = &self.zone {
            initial.push((ZONE_KEY.to_owned(), zone.clone()));
        }
        if let Some(admin) = &self.admin {
            initial.push((ADMIN_KEY.to_owned(), admin.clone()));
        }
        let handle = spawn_chitchat(config, initial, &UdpTransport)
            .await
            .map_err(|error| Status::unavailable(format!("{error:#}")))?;
        let chitchat = handle.chitchat();
        let live = chitchat.lock().await.live_nodes_watcher();
        let first_sync = if self.seeds.is_empty() {
            Instant::now()
        } else {
            Instant::now() + FIRST_SYNC.max(self.gossip_interval * 10)
        };
        tracing::info!(
            member = %id.node_id,
            cluster = %self.cluster,
            gossip = %advertise,
            seeds = ?self.seeds,
            "joined the cluster"
        );
        Ok(Member {
            inner: Arc::new(Inner {
                id,
                cluster: self.cluster,
                gossip_interval: self.gossip_interval,
                chitchat,
                live,
                first_sync,
                seeds: self.seeds,
                handle: Mutex::new(Some(handle)),
            }),
        })
    }
}

/// `address`, with a free port in place of port 0.
fn free_port(address: SocketAddr) -> Result<SocketAddr, Status> {
    if address.port() != 0 {
        return Ok(address);
    }
    let probe = std::net::UdpSocket::bind(address).map_err(|error| {
        Status::unavailable(format!("no free UDP port on {}: {error}", address.ip()))
    })?;
    probe
        .local_addr()
        .map_err(|error| Status::internal(error.to_string()))
}
