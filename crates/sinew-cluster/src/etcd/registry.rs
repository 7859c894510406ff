//! [`Registry`] and [`Registration`]: endpoints registered in etcd under a
//! lease that a supervised keep-alive renews, and granted again when lost.

use super::resolver::EtcdResolver;
use super::{api, Etcd, DEFAULT_PREFIX, FIRST_RETRY, LAST_RETRY};
use crate::endpoint::Endpoint;
use crate::registry::{self, Record};
use sinew_rpc::Status;
use sinew_transport::Address;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a registration's lease lives unless renewed, by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// How long deregistering waits for etcd.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// Where endpoints are registered: an etcd cluster, a key prefix, and the
/// time to live of registrations. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    etcd: Etcd,
    prefix: String,
    ttl: Duration,
}

impl Registry {
    /// The registry at [`DEFAULT_PREFIX`] of `etcd`, with leases of
    /// [`DEFAULT_TTL`].
    pub fn new(etcd: Etcd) -> Registry {
        Registry {
            etcd,
            prefix: DEFAULT_PREFIX.to_owned(),
            ttl: DEFAULT_TTL,
        }
    }

    /// Registers under `prefix` instead (clusters sharing one etcd keep
    /// apart by prefix).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Registry {
        self.prefix = prefix.into();
        self
    }

    /// Leases of `ttl` (whole seconds; etcd raises very short ones to its
    /// minimum): how long a registration outlives a process that was killed
    /// or cut off from etcd.
    pub fn with_ttl(mut self, ttl: Duration) -> Registry {
        self.ttl = ttl;
        self
    }

    /// The etcd client.
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A resolver of service names to the endpoints registered here.
    pub fn resolver(&self) -> EtcdResolver {
        EtcdResolver::new(self.etcd.clone(), self.prefix.clone())
    }

    /// Registers `services` at `endpoint` (its weight, zone and metadata go
    /// with it). Returns once the key is in etcd; from then on a
    /// supervisor keeps it there until the registration is dropped or
    /// deregistered. Registering an address again replaces what was
    /// registered for it.
    pub async fn register(
        &self,
        endpoint: &Endpoint,
        services: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Registration, Status> {
        let record = Record::new(endpoint, services)?;
        self.register_records(vec![(endpoint.address().clone(), record)])
            .await
    }

    /// Registers a bound server: each of its TCP addresses, with the
    /// services added to it, under one lease. A listener on an unspecified
    /// IP (`0.0.0.0`, `::`) is registered at the IP this host reaches the
    /// first etcd member from.
    pub async fn register_server(
        &self,
        server: &sinew_rpc::Server,
    ) -> Result<Registration, Status> {
        self.register_server_with(server, Endpoint::new).await
    }

    /// [`register_server`](Registry::register_server), each address
    /// registered as the endpoint `endpoint` makes of it: with a weight, a
    /// zone, metadata (such as [`ADMIN_METADATA`](crate::ADMIN_METADATA),
    /// where dashboards find the process's figures).
    pub async fn register_server_with(
        &self,
        server: &sinew_rpc::Server,
        endpoint: impl Fn(Address) -> Endpoint,
    ) -> Result<Registration, Status> {
        let services = server.service_names();
        let advertise = registry::local_ip_towards(&self.etcd.members()[0])
            .await
            .ok();
        let addresses = registry::server_addresses(server, advertise)?;
        let records = addresses
            .into_iter()
            .map(|address| {
                let record = Record::new(&endpoint(address.clone()), services.iter().copied())?;
                Ok((address, record))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        self.register_records(records).await
    }

    /// Every address registered now, with its services, sorted by address
    /// (values that do not parse are left out).
    pub async fn registered(&self) -> Result<Vec<(Address, Vec<String>)>, Status> {
        Ok(self
            .registered_endpoints()
            .await?
            .into_iter()
            .map(|(endpoint, services)| (endpoint.address().clone(), services))
            .collect())
    }

    /// Every endpoint registered now (weight, zone, metadata), with its
    /// services, sorted by address.
    pub async fn registered_endpoints(&self) -> Result<Vec<(Endpoint, Vec<String>)>, Status> {
        let listing = self.etcd.get_prefix(self.prefix.as_bytes()).await?;
        let records = parse_records(&self.prefix, &listing.kvs);
        Ok(records
            .into_values()
            .map(|(address, record)| {
                let endpoint = record.endpoint(address, None);
                (endpoint, record.services.into_iter().collect())
            })
            .collect())
    }

    async fn register_records(
        &self,
        records: Vec<(Address, Record)>,
    ) -> Result<Registration, Status> {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = records
            .iter()
            .map(|(address, record)| {
                (
                    format!("{}{address}", self.prefix).into_bytes(),
                    record.encode().into_bytes(),
                )
            })
            .collect();
        let shared = Arc::new(Keeper {
            etcd: self.etcd.clone(),
            entries,
            ttl: self.ttl,
            lease: AtomicI64::new(0),
        });
        let granted_ttl = shared.register_once().await?;
        tracing::info!(
            lease = shared.lease.load(Ordering::Relaxed),
            addresses = ?records.iter().map(|(address, _)| address.to_string()).collect::<Vec<_>>(),
            "registered in etcd"
        );
        let task = tokio::spawn(shared.clone().supervise(granted_ttl));
        Ok(Registration {
            keeper: shared,
            addresses: records.into_iter().map(|(address, _)| address).collect(),
            task: task.abort_handle(),
        })
    }
}

/// A registration in etcd, kept alive while this value lives. Dropping it
/// stops the renewals (the keys go when the lease expires);
/// [`deregister`](Registration::deregister) removes them at once.
#[derive(Debug)]
pub struct Registration {
    keeper: Arc<Keeper>,
    addresses: Vec<Address>,
    task: tokio::task::AbortHandle,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Registration {
    /// The addresses registered.
    pub fn addresses(&self) -> &[Address] {
        &self.addresses
    }

    /// The lease the keys are attached to now (a new one after a lost lease
    /// was granted again).
    pub fn lease(&self) -> i64 {
        self.keeper.lease.load(Ordering::Acquire)
    }

    /// Removes the registration: stops the renewals and revokes the lease,
    /// which deletes its keys in the same step, so clients stop picking
    /// these endpoints before the server stops taking calls. If etcd cannot
    /// be reached within two seconds the keys go when the lease expires.
    pub async fn deregister(self) {
        self.task.abort();
        let lease = self.lease();
        match tokio::time::timeout(DEREGISTER_TIMEOUT, self.keeper.etcd.revoke(lease)).await {
            Ok(Ok(())) => tracing::info!(lease, "deregistered from etcd"),
            Ok(Err(status)) => {
                tracing::warn!(lease, %status, "deregistering: the keys go when the lease expires")
            }
            Err(_) => tracing::warn!(
                lease,
                "deregistering timed out: the keys go when the lease expires"
            ),
        }
    }
}

/// What the supervisor of a registration keeps in etcd.
#[derive(Debug)]
struct Keeper {
    etcd: Etcd,
    /// Keys and values, all under one lease.
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    ttl: Duration,
    lease: AtomicI64,
}

/// How keeping a lease alive ended.
#[derive(Debug, PartialEq, Eq)]
enum Lost {
    /// etcd said the lease no longer exists.
    Revoked,
    /// No renewal got through for the whole time to live.
    Expired,
}

impl Keeper {
    /// Grants a lease and puts every key under it; the time to live granted.
    async fn register_once(&self) -> Result<Duration, Status> {
        let (lease, ttl) = self.etcd.grant(self.ttl).await?;
        for (key, value) in &self.entries {
            if let Err(status) = self.etcd.put(key, value, lease).await {
                let _ = self.etcd.revoke(lease).await;
                return Err(status);
            }
        }
        self.lease.store(lease, Ordering::Release);
        Ok(ttl)
    }

    /// Keeps the lease alive, and registers again whenever it is lost. Runs
    /// until aborted.
    async fn supervise(self: Arc<Self>, mut ttl: Duration) {
        loop {
            let lease = self.lease.load(Ordering::Acquire);
            let lost = self.keep_alive(lease, ttl).await;
            tracing::warn!(lease, ?lost, "etcd lease lost: registering again");
            let mut retry = FIRST_RETRY;
            loop {
                match self.register_once().await {
                    Ok(granted) => {
                        ttl = granted;
                        tracing::info!(
                            lease = self.lease.load(Ordering::Relaxed),
                            "registered in etcd again"
                        );
                        break;
                    }
                    Err(status) => {
                        tracing::warn!(%status, "registering in etcd again failed");
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(LAST_RETRY);
                    }
                }
            }
        }
    }

    /// Renews `lease` every third of its time to live over one
    /// `LeaseKeepAlive` stream (opened again when it breaks), until the
    /// lease is lost.
    async fn keep_alive(&self, lease: i64, ttl: Duration) -> Lost {
        let client = api::etcdserverpb::lease_client::LeaseClient::new(self.etcd.channel().clone());
        let period = (ttl / 3).max(Duration::from_millis(100));
        // Until when the lease surely lives, by the last renewal.
        let mut alive_until = Instant::now() + ttl;
        let mut retry = FIRST_RETRY;
        loop {
            if Instant::now() >= alive_until {
                return Lost::Expired;
            }
            let (sender, receiver) = tokio::sync::mpsc::channel(1);
            // The first renewal goes with the opening: the call's response
            // (and so its opening) comes with the answer to a request.
            let renewal = api::etcdserverpb::LeaseKeepAliveRequest { id: lease };
            sender.try_send(renewal).expect("a new channel has room");
            let requests = futures_util::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|request| (request, receiver))
            });
            let opened = tokio::select! {
                opened = client.lease_keep_alive(requests) => opened,
                () = tokio::time::sleep_until(alive_until) => return Lost::Expired,
            };
            let mut responses = match opened {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    tracing::debug!(lease, %status, "opening the keep-alive stream failed");
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        () = tokio::time::sleep_until(alive_until) => return Lost::Expired,
                    }
                    retry = (retry * 2).min(LAST_RETRY);
                    continue;
                }
            };
            let mut renew = tokio::time::interval_at(Instant::now() + period, period);
            renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = renew.tick() => {
                        let request = api::etcdserverpb::LeaseKeepAliveRequest { id: lease };
                        if sender.send(request).await.is_err() {
                            break;
                        }
                    }
                    response = responses.message() => match response {
                        Ok(Some(response)) if response.ttl <= 0 => return Lost::Revoked,
                        Ok(Some(response)) => {
                            retry = FIRST_RETRY;
                            alive_until = Instant::now() + Duration::from_secs(response.ttl as u64);
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(lease, %status, "the keep-alive stream broke");
                            break;
                        }
                    },
                    () = tokio::time::sleep_until(alive_until) => return Lost::Expired,
                }
            }
            tokio::select! {
                () = tokio::time::sleep(retry) => {}
                () = tokio::time::sleep_until(alive_until) => return Lost::Expired,
            }
            retry = (retry * 2).min(LAST_RETRY);
        }
    }
}

/// The records among `kvs`, keyed and sorted by address text; keys that
/// are not `prefix` + an address and values that are not records are
/// skipped.
pub(super) fn parse_records(
    prefix: &str,
    kvs: &[api::mvccpb::KeyValue],
) -> BTreeMap<String, (Address, Record)> {
    kvs.iter()
        .filter_map(|kv| parse_record(prefix, &kv.key, &kv.value))
        .map(|(address, record)| (address.to_string(), (address, record)))
        .collect()
}

/// One record: its address and value, if both parse.
pub(super) fn parse_record(prefix: &str, key: &[u8], value: &[u8]) -> Option<(Address, Record)> {
    let parsed = parse_address(prefix, key).zip(Record::decode(value));
    if parsed.is_none() {
        tracing::debug!(key = %String::from_utf8_lossy(key), "skipping an etcd key that is not an endpoint record");
    }
    parsed
}

/// The address a key registers.
pub(super) fn parse_address(prefix: &str, key: &[u8]) -> Option<Address> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix(prefix)?
        .parse()
        .ok()
}
