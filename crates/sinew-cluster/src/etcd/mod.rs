//! etcd as the registry of the production path: servers register their
//! endpoints under a lease kept alive while they run; clients resolve a
//! service by name from a prefix watch.
//!
//! ```text
//!  server ──lease grant, put, keep-alive──▶ etcd ◀──range + watch (from revision)── EtcdResolver ─▶ Balanced
//!         /sinew/endpoints/tcp://10.0.0.1:7000 = {"services": ["shop.Cart"], ...}
//! ```
//!
//! * [`Etcd`]: a client of etcd's v3 gRPC API (Debian's etcd 3.4 and later)
//!   over sinew's own gRPC client, balanced over the cluster's members: a
//!   member that dies is left out, calls go to the others. The generated
//!   clients of the whole API it uses are in [`api`] for anything the
//!   helpers here do not cover.
//! * [`Registration`] ([`Registry::register`], [`Registry::register_server`]):
//!   one lease per registration, its keys attached to it; a supervised
//!   keep-alive renews it every third of its time to live. When the lease is
//!   lost anyway (etcd expired it while the server could not reach etcd, or
//!   an operator revoked it), a new lease is granted and the keys are put
//!   again, the failure mode of etcd#7472 that leaves a live server
//!   unregistered for good. [`Registration::deregister`] revokes the lease,
//!   deleting the keys at once: do it first thing at shutdown, before the
//!   server drains. A process killed outright leaves its keys until the
//!   lease expires; clients stop calling it sooner, when its connections
//!   drop.
//! * [`EtcdResolver`] ([`Registry::resolver`]): lists the prefix once, then
//!   watches it from the revision after the listing. A watch that breaks is
//!   resumed from the last revision seen, so no change is missed; one whose
//!   revision was compacted away lists again. While etcd cannot be reached
//!   the last set stands (never an empty set because etcd blinked).
//!
//! Keys are `PREFIX` + address (default prefix [`DEFAULT_PREFIX`]), values
//! the same JSON record the gossip registry publishes:
//! `{"services": [...], "weight": 1, "zone": "...", "metadata": {...}}`.
//! Values that do not parse are skipped (and logged at debug level).
//!
//! ```no_run
//! # async fn example(server: sinew_rpc::Server) -> Result<(), sinew_rpc::Status> {
//! use sinew_cluster::etcd::{Etcd, Registry};
//! use sinew_cluster::Balanced;
//! let etcd = Etcd::connect(["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"])?;
//! let registry = Registry::new(etcd);
//! // A server registers its listeners, and deregisters before draining.
//! let registration = registry.register_server(&server).await?;
//! let signal = async { /* Ctrl-C */ };
//! server
//!     .serve_with_shutdown(async move {
//!         signal.await;
//!         registration.deregister().await;
//!     })
//!     .await;
//! // A client calls the service by name.
//! let carts = Balanced::builder(registry.resolver(), "shop.Cart").build();
//! # let _ = carts; Ok(()) }
//! ```

mod follow;
mod registry;
mod resolver;

pub use follow::{PrefixFollower, Snapshot};
pub use registry::{Registration, Registry, DEFAULT_TTL};
pub use resolver::EtcdResolver;

use crate::balance::Balanced;
use crate::resolve::Fixed;
use api::etcdserverpb::{kv_client::KvClient, lease_client::LeaseClient};
use sinew_rpc::{Channel, Request, Status};
use sinew_transport::Address;
use std::time::Duration;

/// etcd's v3 API as sinew generates it from etcd's `.proto` files (the
/// services sinew uses: KV, Watch, Lease, Maintenance.Status). etcd's own
/// documentation describes every field.
#[allow(missing_docs, unreachable_pub, clippy::all, rustdoc::all)]
pub mod api {
    /// Keys, values and watch events.
    pub mod mvccpb {
        include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    }
    /// The services and their messages.
    pub mod etcdserverpb {
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    }
}

/// The key prefix endpoints are registered under unless told otherwise.
pub const DEFAULT_PREFIX: &str = "/sinew/endpoints/";

/// The first and the longest wait before trying etcd again (doubling in
/// between).
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(2);

/// How long a call to etcd may take before it fails (a member that lost its
/// quorum holds calls until they time out).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of an etcd cluster, over its members' client URLs, balanced:
/// calls go to a member that is up. Clone it freely.
#[derive(Clone, Debug)]
pub struct Etcd {
    members: Vec<String>,
    channel: Channel,
    balanced: Balanced,
}

impl Etcd {
    /// A client of the etcd cluster whose members answer at `members`
    /// (`host:port`, `http://host:port` or `grpc://host:port` each). Connects
    /// in the background: calls wait for a member while none is connected
    /// yet, and fail with `UNAVAILABLE` once every member refused. Must be
    /// called inside a Tokio runtime.
    pub fn connect(members: impl IntoIterator<Item = impl AsRef<str>>) -> Result<Etcd, Status> {
        let members: Vec<String> = members
            .into_iter()
            .map(|member| {
                let member = member.as_ref();
                member
                    .strip_prefix("http://")
                    .or_else(|| member.strip_prefix("grpc://"))
                    .unwrap_or(member)
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect();
        if members.is_empty() {
            return Err(Status::invalid_argument("etcd: no member address given"));
        }
        let addresses = members
            .iter()
            .map(|member| {
                let (host, port) = crate::name::host_port(member).ok_or_else(|| {
                    Status::invalid_argument(format!("etcd member {member:?} is not host:port"))
                })?;
                Ok(Address::tcp(
                    host.trim_start_matches('[').trim_end_matches(']'),
                    port,
                ))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let balanced = Balanced::builder(Fixed::new(addresses), "etcd")
            // etcd's health service answers for the server (""), not for a
            // service named "etcd"; a member that cannot serve fails calls.
            .health_check(false)
            .channel(|endpoint| {
                let target = match endpoint.address() {
                    Address::Tcp { host, port } if host.contains(':') => {
                        format!("grpc://[{host}]:{port}")
                    }
                    Address::Tcp { host, port } => format!("grpc://{host}:{port}"),
                    other => other.to_string(),
                };
                match sinew_grpc::client::GrpcChannel::builder(&target) {
                    Ok(builder) => Channel::from_service(builder.lazy()),
                    Err(status) => Channel::from_service(tower::service_fn(
                        move |_: sinew_rpc::call::CallRequest| {
                            std::future::ready(Err::<sinew_rpc::call::CallResponse, _>(
                                status.clone(),
                            ))
                        },
                    )),
                }
            })
            .build();
        Ok(Etcd {
            members,
            channel: Channel::from_service(balanced.clone()),
            balanced,
        })
    }

    /// The members' addresses, as given.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The balanced channel to the members, for the generated clients in
    /// [`api`].
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The balanced channel's view of each member (connected or not, calls,
    /// latency).
    pub fn member_reports(&self) -> Vec<crate::balance::EndpointReport> {
        self.balanced.endpoints()
    }

    fn kv(&self) -> KvClient {
        KvClient::new(self.channel.clone())
    }

    fn lease(&self) -> LeaseClient {
        LeaseClient::new(self.channel.clone())
    }

    /// The keys under `prefix` (linearizable: what a majority has), with the
    /// store's revision they were read at.
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<Listing, Status> {
        let request = api::etcdserverpb::RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..Default::default()
        };
        let response = self
            .kv()
            .range(timed(request))
            .await
            .map_err(|status| self.unavailable("listing", status))?
            .into_inner();
        Ok(Listing {
            revision: response.header.map_or(0, |header| header.revision),
            kvs: response.kvs,
        })
    }

    /// Puts `value` at `key`, attached to `lease` (0: none); the store's new
    /// revision.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, Status> {
        let request = api::etcdserverpb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        };
        let response = self
            .kv()
            .put(timed(request))
            .await
            .map_err(|status| self.unavailable("putting a key", status))?
            .into_inner();
        Ok(response.header.map_or(0, |header| header.revision))
    }

    /// Deletes `key`; how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: &[u8]) -> Result<i64, Status> {
        let request = api::etcdserverpb::DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let response = self
            .kv()
            .delete_range(timed(request))
            .await
            .map_err(|status| self.unavailable("deleting a key", status))?
            .into_inner();
        Ok(response.deleted)
    }

    /// A new lease of `ttl` (whole seconds, at least 1; etcd may raise it to
    /// its minimum): its ID and the time to live etcd granted.
    pub async fn grant(&self, ttl: Duration) -> Result<(i64, Duration), Status> {
        let request = api::etcdserverpb::LeaseGrantRequest {
            ttl: ttl.as_secs().max(1) as i64,
            id: 0,
        };
        let response = self
            .lease()
            .lease_grant(timed(request))
            .await
            .map_err(|status| self.unavailable("granting a lease", status))?
            .into_inner();
        if !response.error.is_empty() {
            return Err(Status::unavailable(format!(
                "etcd refused a lease: {}",
                response.error
            )));
        }
        Ok((response.id, Duration::from_secs(response.ttl.max(1) as u64)))
    }

    /// Ends lease `id` now, deleting its keys.
    pub async fn revoke(&self, id: i64) -> Result<(), Status> {
        let request = api::etcdserverpb::LeaseRevokeRequest { id };
        self.lease()
            .lease_revoke(timed(request))
            .await
            .map_err(|status| self.unavailable("revoking a lease", status))?;
        Ok(())
    }

    /// The remaining time to live of lease `id`; `None` when it no longer
    /// exists.
    pub async fn time_to_live(&self, id: i64) -> Result<Option<Duration>, Status> {
        let request = api::etcdserverpb::LeaseTimeToLiveRequest { id, keys: false };
        let response = self
            .lease()
            .lease_time_to_live(timed(request))
            .await
            .map_err(|status| self.unavailable("asking a lease's time to live", status))?
            .into_inner();
        Ok((response.ttl >= 0).then(|| Duration::from_secs(response.ttl as u64)))
    }

    /// The error of a failed call, naming the cluster: the status etcd (or
    /// the connection) gave, with what was being done.
    fn unavailable(&self, doing: &str, status: Status) -> Status {
        Status::new(
            status.code(),
            format!(
                "etcd at {}: {doing}: {}",
                self.members.join(","),
                status.message()
            ),
        )
    }
}

/// Keys read at one revision.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// The store's revision the keys were read at: a watch from the next one
    /// misses nothing.
    pub revision: i64,
    /// The keys and values.
    pub kvs: Vec<api::mvccpb::KeyValue>,
}

/// The end of the range of every key starting with `prefix` (etcd's
/// convention: the prefix with its last byte below 0xff incremented, and
/// what follows it dropped; `\0`, every key, when there is no such byte).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn timed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_follow_etcds_convention() {
        assert_eq!(prefix_end(b"/sinew/"), b"/sinew0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[tokio::test]
    async fn member_addresses_are_checked() {
        for bad in ["", "localhost", "host:port", ":2379", "http://"] {
            let error = Etcd::connect([bad]).unwrap_err();
            assert_eq!(error.code(), sinew_rpc::Code::InvalidArgument, "{bad}");
        }
        assert!(Etcd::connect(Vec::<String>::new()).is_err());
        let etcd = Etcd::connect(["http://127.0.0.1:2379/", "grpc://[::1]:2379"]).unwrap();
        assert_eq!(etcd.members(), ["127.0.0.1:2379", "[::1]:2379"]);
    }
}
