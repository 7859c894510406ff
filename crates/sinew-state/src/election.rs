//! Leader election, as etcd's `concurrency.Election` runs it, over the
//! store's KV, watch and lease API.
//!
//! Candidates queue under `/sinew/elections/<name>/` (see `queue.rs`), each
//! key holding the candidate's value (an address, a name): the first is the
//! leader, each other waits for the one before it, so one leader at a time
//! and no herd when it goes. [`Election::campaign`] returns once the
//! candidate leads; its [`Leadership`] says when it is lost (the lease lost
//! or the key deleted: stop acting as leader then, before anyone else can
//! lead; if its key is deleted under it, as soon as the watch on it says
//! so, while the next candidate may lead already: guard with the term),
//! proclaims a new value while it leads, and resigns. Its
//! [`fencing_token`](Leadership::fencing_token) (the key's create revision,
//! a term number) rises from one leader to the next.
//!
//! [`Election::leader`] reads the current leader (linearizably), and
//! [`Election::observe`] follows it: each change of leader or of its value,
//! from a watch of the prefix. Observers see the latest leader eventually
//! and may skip one that came and went between two reads.

use crate::lease::{Lease, Lost};
use crate::queue::{prefix_end, FencingToken, Place, Queue};
use futures_util::StreamExt as _;
use sinew_cluster::etcd::api::etcdserverpb::{
    kv_client::KvClient, request_op, watch_client::WatchClient, watch_request, PutRequest,
    RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use sinew_cluster::etcd::api::mvccpb::KeyValue;
use sinew_cluster::etcd::Etcd;
use sinew_rpc::{Request, Status, Streaming};
use std::time::Duration;

/// The time to live of a leader's lease unless set.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// A named election in the store; see the module docs.
#[derive(Clone, Debug)]
pub struct Election {
    queue: Queue,
}

/// Who leads, as an observer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The value the leader campaigned with (or proclaimed since).
    pub value: Vec<u8>,
    /// Its key in the store.
    pub key: Vec<u8>,
    /// Its term: the key's create revision (its fencing token).
    pub term: FencingToken,
}

impl Leader {
    fn of(kv: KeyValue) -> Leader {
        Leader {
            term: FencingToken(kv.create_revision),
            value: kv.value,
            key: kv.key,
        }
    }
}

impl Election {
    /// The election `name`, its keys under `/sinew/elections/<name>/`.
    pub fn new(etcd: Etcd, name: &str) -> Election {
        Election {
            queue: Queue {
                etcd,
                prefix: format!("/sinew/elections/{name}/").into_bytes(),
                ttl: DEFAULT_TTL,
            },
        }
    }

    /// The time to live of the lease a leader keeps (default 10 s): how
    /// long a leader that dies goes on leading before a new one is
    /// elected.
    pub fn with_ttl(mut self, ttl: Duration) -> Election {
        self.queue.ttl = ttl;
        self
    }

    /// Stands with `value` and returns once leading; cancel-safe (a
    /// candidate dropped while waiting takes its key away).
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership, Status> {
        let value = value.into();
        let lease = Lease::grant(&self.queue.etcd, self.queue.ttl).await?;
        let entry = self.queue.enqueue(&lease, &value).await?;
        if entry.head != Some(entry.token) {
            self.queue
                .wait_turn(entry.token, &mut lease.lost())
                .await
                .map_err(|status| {
                    Status::aborted(format!("the campaign failed: {}", status.message()))
                })?;
        }
        let place = self.queue.hold(lease, entry).await?;
        Ok(Leadership { place })
    }

    /// The current leader, if any (a linearizable read).
    pub async fn leader(&self) -> Result<Option<Leader>, Status> {
        let (head, _) = self.queue.head().await?;
        Ok(head.map(Leader::of))
    }

    /// Follows the leader: see [`Observer`].
    pub fn observe(&self) -> Observer {
        Observer {
            queue: self.queue.clone(),
            last: None,
            watch: None,
        }
    }
}

/// Leading an election; see the module docs. Dropping it resigns in a task
/// of the runtime (if one still runs; otherwise another leads when its lease
/// expires): call [`Leadership::resign`] to know it has.
#[derive(Debug)]
pub struct Leadership {
    place: Place,
}

impl Leadership {
    /// The term: rises from one leader to the next.
    pub fn fencing_token(&self) -> FencingToken {
        self.place.token
    }

    /// Resolves when this candidate may no longer lead: stop acting as
    /// leader.
    pub fn lost(&self) -> Lost {
        self.place.lost()
    }

    /// Sets the value observers see, while still leading
    /// (`FAILED_PRECONDITION` once not).
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<(), Status> {
        let txn = TxnRequest {
            compare: vec![self.place.owner_compare()],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: self.place.key.clone(),
                    value: value.into(),
                    lease: self.place.lease_id(),
                    ..PutRequest::default()
                })),
            }],
            failure: Vec::new(),
        };
        let answer = KvClient::new(self.place.etcd().channel().clone())
            .txn(Request::new(txn))
            .await?
            .into_inner();
        if answer.succeeded {
            Ok(())
        } else {
            Err(Status::failed_precondition("not the leader any more"))
        }
    }

    /// Steps down: the next candidate leads.
    pub async fn resign(self) -> Result<(), Status> {
        self.place.leave().await
    }

    /// Stops renewing without resigning, as a killed leader: another leads
    /// once its lease expires.
    pub fn orphan(self) {
        self.place.orphan();
    }
}

/// Follows an election's leader: [`Observer::next`] gives each new leader
/// (or value of it), and `None` while there is none.
pub struct Observer {
    queue: Queue,
    last: Option<Option<Leader>>,
    watch: Option<(
        Streaming<sinew_cluster::etcd::api::etcdserverpb::WatchResponse>,
        i64,
    )>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("last", &self.last)
            .finish()
    }
}

impl Observer {
    /// The leader after the last one returned (the current one the first
    /// time): waits for a change. Errors when the store cannot be reached;
    /// call again to go on.
    pub async fn next(&mut self) -> Result<Option<Leader>, Status> {
        loop {
            let (head, revision) = self.queue.head().await?;
            let now = head.map(Leader::of);
            if self.last.as_ref() != Some(&now) {
                // Watch on from the revision read, so no change is missed;
                // the leader counts as told only once the watch is open
                // (a failure, or this future dropped, tells it again).
                self.watch = None;
                self.watch = Some((open(&self.queue, revision + 1).await?, revision + 1));
                self.last = Some(now.clone());
                return Ok(now);
            }
            if self.watch.is_none() {
                self.watch = Some((open(&self.queue, revision + 1).await?, revision + 1));
            }
            let Some((responses, _)) = self.watch.as_mut() else {
                continue;
            };
            match responses.message().await {
                Ok(Some(response)) if response.canceled => self.watch = None,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    self.watch = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// A watch of the election's prefix from revision `from` (kept by an
/// [`Observer`]; free of it so that its future holds only the queue).
async fn open(
    queue: &Queue,
    from: i64,
) -> Result<Streaming<sinew_cluster::etcd::api::etcdserverpb::WatchResponse>, Status> {
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: queue.prefix.clone(),
                range_end: prefix_end(&queue.prefix),
                start_revision: from,
                ..WatchCreateRequest::default()
            },
        )),
    };
    let requests =
        futures_util::stream::once(async move { create }).chain(futures_util::stream::pending());
    let mut responses = WatchClient::new(queue.etcd.channel().clone())
        .watch(Request::new(requests))
        .await?
        .into_inner();
    // The answer to the create request comes first.
    match responses.message().await? {
        Some(created) if created.created && !created.canceled => Ok(responses),
        _ => Err(Status::unavailable("the store refused the watch")),
    }
}
