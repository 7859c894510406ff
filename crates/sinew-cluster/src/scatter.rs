//! Scatter/gather: one request to every endpoint of a service (or to
//! some of them), each with a deadline of its own, and the replies as
//! they are: partial when some endpoints failed or were too slow, each
//! failure said.
//!
//! A [`Scatter`] follows a service's endpoints through any [`Resolve`]r
//! (gossip, etcd, DNS, a fixed list), keeps one channel per endpoint
//! (connected at the first call, reconnected by itself), and sends each
//! request to the [`Targets`] asked for:
//!
//! * [`Targets::All`]: every endpoint; the result once each has answered
//!   or missed its deadline;
//! * [`Targets::Random`]`(n)`: `n` endpoints picked at random (a sample);
//! * [`Targets::Quorum`]`(n)`: every endpoint, the result as soon as `n`
//!   have answered (the others are cancelled and say so).
//!
//! ```no_run
//! # async fn example() -> Result<(), sinew_rpc::Status> {
//! use sinew_cluster::resolve::Fixed;
//! use sinew_cluster::scatter::{Gather, Scatter, Targets};
//! use std::time::Duration;
//! # #[derive(Clone, PartialEq, prost::Message)] struct Query {}
//! # #[derive(Clone, PartialEq, prost::Message)] struct Hits {}
//! let shards = Fixed::parse(["tcp://10.0.0.1:7000", "tcp://10.0.0.2:7000"])?;
//! let scatter = Scatter::new(shards, "search.Index");
//! let gather = Gather::default().shard_timeout(Duration::from_millis(50));
//! let gathered = scatter
//!     .unary::<Query, Hits>("/search.Index/Search", Query {}, &gather)
//!     .await?;
//! for (endpoint, hits) in gathered.successes() { /* merge */ }
//! for (endpoint, status) in gathered.failures() { /* report */ }
//! # Ok(()) }
//! ```
//!
//! It is not a balancer (that is [`Balanced`](crate::Balanced): one call,
//! one endpoint) and it does not retry: a shard that failed is reported,
//! and whether the rest is enough is the caller's to decide.

use crate::balance::lock;
use crate::endpoint::Endpoint;
use crate::resolve::{Resolve, Update};
use futures_util::StreamExt;
use sinew_rpc::{Channel, Client, Code, Request, Status};
use sinew_transport::Address;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Which endpoints a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// Every endpoint.
    All,
    /// This many endpoints, picked at random (all, if there are fewer).
    Random(usize),
    /// Every endpoint; done as soon as this many have answered.
    Quorum(usize),
}

/// How a request is scattered and its replies gathered.
#[derive(Clone, Debug)]
pub struct Gather {
    targets: Targets,
    shard_timeout: Duration,
    resolve_timeout: Duration,
}

impl Default for Gather {
    fn default() -> Self {
        Gather {
            targets: Targets::All,
            shard_timeout: Duration::from_secs(1),
            resolve_timeout: Duration::from_secs(2),
        }
    }
}

impl Gather {
    /// Which endpoints (default [`Targets::All`]).
    pub fn targets(mut self, targets: Targets) -> Self {
        self.targets = targets;
        self
    }

    /// Each endpoint's deadline, connecting included (default 1 s): a
    /// shard that misses it is a `DEADLINE_EXCEEDED` failure, the others
    /// are not held up.
    pub fn shard_timeout(mut self, timeout: Duration) -> Self {
        self.shard_timeout = timeout;
        self
    }

    /// How long the first call waits for the resolver's first set of
    /// endpoints (default 2 s).
    pub fn resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve_timeout = timeout;
        self
    }
}

/// What one endpoint did with the request.
#[derive(Debug)]
#[non_exhaustive]
pub struct Shard<T> {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Its answer, or why there is none (`DEADLINE_EXCEEDED` past the
    /// shard timeout, `CANCELLED` once a quorum was reached).
    pub result: Result<T, Status>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Every shard of one scattered request, in the order of the endpoints'
/// addresses.
#[derive(Debug)]
#[non_exhaustive]
pub struct Gathered<T> {
    /// Each endpoint's outcome.
    pub shards: Vec<Shard<T>>,
}

impl<T> Gathered<T> {
    /// The endpoints that answered, and their answers.
    pub fn successes(&self) -> impl Iterator<Item = (&Endpoint, &T)> {
        self.shards
            .iter()
            .filter_map(|shard| shard.result.as_ref().ok().map(|ok| (&shard.endpoint, ok)))
    }

    /// The endpoints that did not, and why.
    pub fn failures(&self) -> impl Iterator<Item = (&Endpoint, &Status)> {
        self.shards.iter().filter_map(|shard| {
            shard
                .result
                .as_ref()
                .err()
                .map(|err| (&shard.endpoint, err))
        })
    }

    /// Whether every shard answered.
    pub fn is_complete(&self) -> bool {
        self.shards.iter().all(|shard| shard.result.is_ok())
    }
}

/// The endpoints as the resolver last said, or why there are none yet.
type Known = Option<Result<BTreeMap<String, Endpoint>, Status>>;

/// Sends requests to many endpoints of one service; see the
/// [module docs](self). Clones share the endpoints and channels.
#[derive(Clone, Debug)]
pub struct Scatter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    service: String,
    known: watch::Receiver<Known>,
    channels: Mutex<HashMap<Address, Channel>>,
    follower: tokio::task::AbortHandle,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl Scatter {
    /// Follows `service`'s endpoints through `resolver` (a task, until the
    /// last clone is dropped).
    pub fn new(resolver: impl Resolve, service: &str) -> Scatter {
        let (sender, known) = watch::channel(None);
        let mut updates = resolver.resolve(service);
        let follower = tokio::spawn(async move {
            let mut endpoints = BTreeMap::new();
            while let Some(update) = updates.next().await {
                match update {
                    Ok(update) => {
                        apply(&mut endpoints, update);
                        sender.send_replace(Some(Ok(endpoints.clone())));
                    }
                    // A resolver that fails now keeps the set it had; with
                    // none yet, callers learn why.
                    Err(status) => {
                        sender.send_if_modified(|known| match known {
                            Some(Ok(_)) => false,
                            _ => {
                                *known = Some(Err(status));
                                true
                            }
                        });
                    }
                }
            }
        })
        .abort_handle();
        Scatter {
            shared: Arc::new(Shared {
                service: service.to_owned(),
                known,
                channels: Mutex::new(HashMap::new()),
                follower,
            }),
        }
    }

    /// The service's endpoints now, waiting up to `wait` for the
    /// resolver's first answer.
    pub async fn endpoints(&self, wait: Duration) -> Result<Vec<Endpoint>, Status> {
        let mut known = self.shared.known.clone();
        let first = tokio::time::timeout(wait, known.wait_for(|known| known.is_some())).await;
        let unavailable = || {
            Status::unavailable(format!(
                "no endpoints of {} within {wait:?}",
                self.shared.service
            ))
        };
        let Ok(Ok(current)) = first else {
            return Err(unavailable());
        };
        match &*current {
            Some(Ok(endpoints)) => Ok(endpoints.values().cloned().collect()),
            Some(Err(status)) => Err(status.clone()),
            None => Err(unavailable()),
        }
    }

    fn channel(&self, address: &Address) -> Channel {
        let mut channels = lock(&self.shared.channels);
        channels
            .entry(address.clone())
            .or_insert_with(|| Channel::builder(address.clone()).lazy())
            .clone()
    }

    /// Sends `request` to `path` (`/package.Service/Method`) on the
    /// targets, and gathers what each did. Fails only when there is no
    /// endpoint to send it to.
    pub async fn unary<Req, Resp>(
        &self,
        path: &str,
        request: Req,
        gather: &Gather,
    ) -> Result<Gathered<Resp>, Status>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let mut endpoints = self.endpoints(gather.resolve_timeout).await?;
        if endpoints.is_empty() {
            return Err(Status::unavailable(format!(
                "{} has no endpoints",
                self.shared.service
            )));
        }
        // Channels of endpoints that left are dropped.
        {
            let mut channels = lock(&self.shared.channels);
            channels.retain(|address, _| endpoints.iter().any(|e| e.address() == address));
        }
        let needed = match gather.targets {
            Targets::All => endpoints.len(),
            Targets::Random(n) => {
                fastrand::shuffle(&mut endpoints);
                endpoints.truncate(n.max(1));
                endpoints.sort_by_key(|endpoint| endpoint.address().to_string());
                endpoints.len()
            }
            Targets::Quorum(n) => n.clamp(1, endpoints.len()),
        };
        let mut calls = tokio::task::JoinSet::new();
        let mut shard_of = HashMap::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let client = Client::new(self.channel(endpoint.address()));
            let request = request.clone();
            let path = path.to_owned();
            let timeout = gather.shard_timeout;
            let call = calls.spawn(async move {
                let started = Instant::now();
                let mut request = Request::new(request);
                request.set_timeout(timeout);
                let call = client.unary::<Req, Resp>(path, request);
                let result = match tokio::time::timeout(timeout, call).await {
                    Ok(result) => result.map(|response| response.into_inner()),
                    Err(_) => Err(Status::deadline_exceeded(format!(
                        "no answer within the shard timeout of {timeout:?}"
                    ))),
                };
                (result, started.elapsed())
            });
            shard_of.insert(call.id(), index);
        }
        let mut results: Vec<Option<(Result<Resp, Status>, Duration)>> =
            (0..endpoints.len()).map(|_| None).collect();
        let mut answered = 0;
        while let Some(joined) = calls.join_next_with_id().await {
            let (id, result, elapsed) = match joined {
                Ok((id, (result, elapsed))) => (id, result, elapsed),
                Err(error) => (
                    error.id(),
                    Err(Status::internal("the shard's call panicked")),
                    Duration::ZERO,
                ),
            };
            let Some(&index) = shard_of.get(&id) else {
                continue;
            };
            if result.is_ok() {
                answered += 1;
            }
            results[index] = Some((result, elapsed));
            if answered >= needed && matches!(gather.targets, Targets::Quorum(_)) {
                calls.abort_all();
                break;
            }
        }
        let shards = endpoints
            .into_iter()
            .zip(results)
            .map(|(endpoint, outcome)| {
                let (result, elapsed) = outcome.unwrap_or_else(|| {
                    (
                        Err(Status::new(Code::Cancelled, "a quorum answered first")),
                        Duration::ZERO,
                    )
                });
                Shard {
                    endpoint,
                    result,
                    elapsed,
                }
            })
            .collect();
        Ok(Gathered { shards })
    }
}

/// Applies a resolver's update to the set.
/// (Keyed by the address written out: the order shards are reported in.)
fn apply(endpoints: &mut BTreeMap<String, Endpoint>, update: Update) {
    match update {
        Update::Add(added) => {
            for endpoint in added {
                endpoints.insert(endpoint.address().to_string(), endpoint);
            }
        }
        Update::Remove(removed) => {
            for address in removed {
                endpoints.remove(&address.to_string());
            }
        }
        Update::Reset(all) => {
            *endpoints = all
                .into_iter()
                .map(|endpoint| (endpoint.address().to_string(), endpoint))
                .collect();
        }
    }
}
