//! sinew's cluster layer: call a service by name, spread the calls over the
//! endpoints that serve it, and keep calling when some of them die.
//!
//! * [`resolve`]: discovery. A [`Resolve`]r turns a service name into a
//!   stream of [`Update`]s of its [`Endpoint`]s (add, remove, reset).
//! * [`balance`]: [`Balanced`], a call service over those endpoints, driven
//!   by its own task: it connects endpoints before calls need them, picks
//!   each call's endpoint with a [`Policy`] among those that are ready, and
//!   sends a call that failed *not processed* to another endpoint at once.
//!   Policies: power of two choices over peak-EWMA latency (the default) or
//!   calls in flight, round robin, nginx's smooth weighted round robin, and
//!   consistent hashing of a metadata entry (a ketama ring compatible with
//!   nginx, or Maglev) with bounded load. Any of them can prefer the
//!   caller's zone, and connect to a subset of the endpoints only.
//! * [`gossip`] (feature `gossip`, on by default): the embedded registry.
//!   Servers publish their endpoints to a cluster of members that gossip
//!   among themselves; no registry server to run.
//! * [`etcd`] (feature `etcd`, on by default): etcd as the registry.
//!   Servers register under a lease a supervisor keeps alive (and grants
//!   again when lost); clients list and watch a prefix, resuming from the
//!   last revision. The etcd v3 client is sinew's own gRPC client.
//! * [`scatter`]: scatter/gather: one request to every endpoint of a
//!   service (or a sample, or until a quorum answered), each with its own
//!   deadline, the replies partial when some failed.
//! * [`name`]: names as addresses (`dns:///host:port`,
//!   `gossip://seed:7946/package.Service`, `etcd://host:2379/package.Service`),
//!   each a balanced channel.
//!
//! ```no_run
//! # async fn example() -> Result<(), sinew_rpc::Status> {
//! use sinew_cluster::{resolve::Fixed, Balanced};
//! let replicas = Fixed::parse(["tcp://10.0.0.1:7000", "tcp://10.0.0.2:7000"])?;
//! let channel = Balanced::builder(replicas, "grpc.examples.echo.Echo").build();
//! // Typed clients take it like a Channel:
//! // let echo = EchoClient::new(channel);
//! # let _ = channel; Ok(()) }
//! ```
//!
//! What this crate is not: it does not retry calls that reached a server
//! (that is a resilience policy, with budgets), and it does not serve
//! anything: servers announce themselves through a registry (a
//! [`gossip::Member`], an [`etcd::Registration`], DNS records) that a
//! resolver reads.

#![forbid(unsafe_code)]

pub mod balance;
mod endpoint;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "gossip")]
pub mod gossip;
pub mod name;
#[cfg(any(feature = "gossip", feature = "etcd"))]
mod registry;
pub mod resolve;
pub mod scatter;

pub use balance::{Balanced, BalancedBuilder, BalancedObserver, Policy};

/// Where a process's admin endpoint is (`http://HOST:PORT`, the figures
/// `sinew dashboard` reads): the gossip member key a member publishes it
/// under, and the endpoint metadata key of an etcd registration.
pub const ADMIN_METADATA: &str = "sinew.admin";
pub use endpoint::Endpoint;
pub use resolve::{Resolve, Update};
