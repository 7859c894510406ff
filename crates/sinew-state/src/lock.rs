//! Distributed locks with fencing tokens, as etcd's own `concurrency`
//! package takes them, over the store's KV, watch and lease API (so on
//! etcd and on the embedded store alike).
//!
//! Each contender puts a key `PREFIX/<lease id>` on a lease of its own;
//! the holder is the contender whose key has the lowest create revision,
//! and the others each wait for the deletion of the key created just
//! before theirs (no herd: one waiter wakes per release). The holder's
//! **fencing token** is its key's create revision: keys are only removed,
//! and new ones get revisions above every existing one, so tokens strictly
//! increase from one holder to the next. A guarded resource that remembers
//! the highest token it has seen ([`Fence`]) refuses a late write from a
//! holder that has lost the lock without knowing it (paused, partitioned).
//!
//! [`LockGuard::lost`] resolves when the lock can no longer be counted on:
//! its lease lost (see [`crate::lease`]: told before the store can expire
//! it) or its key deleted. Releasing (or dropping) the guard revokes its
//! lease, which deletes the key and wakes the next waiter.

use crate::lease::{Lease, Lost, LostReason};
use futures_util::StreamExt as _;
use sinew_cluster::etcd::api::etcdserverpb::{
    compare, kv_client::KvClient, range_request, request_op, response_op,
    watch_client::WatchClient, watch_request, Compare, PutRequest, RangeRequest, RequestOp,
    TxnRequest, WatchCreateRequest, WatchRequest,
};
use sinew_cluster::etcd::api::mvccpb::event::EventType;
use sinew_cluster::etcd::Etcd;
use sinew_rpc::{Request, Status};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The time to live of a lock's lease unless set.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// A lock's token: its holder's key's create revision. Later holders have
/// higher ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub i64);

/// A named lock in the store; see the module docs.
#[derive(Clone, Debug)]
pub struct Lock {
    etcd: Etcd,
    prefix: Vec<u8>,
    ttl: Duration,
}

/// The end of the range of keys under `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: every key from the prefix on.
    vec![0]
}

impl Lock {
    /// The lock `name`, its keys under `/sinew/locks/<name>/`.
    pub fn new(etcd: Etcd, name: &str) -> Lock {
        Lock {
            etcd,
            prefix: format!("/sinew/locks/{name}/").into_bytes(),
            ttl: DEFAULT_TTL,
        }
    }

    /// The time to live of the lease a holder keeps (default 10 s): how
    /// long a holder that dies keeps the lock from the others.
    pub fn with_ttl(mut self, ttl: Duration) -> Lock {
        self.ttl = ttl;
        self
    }

    /// Takes the lock, waiting for the holders before; cancel-safe (a
    /// waiter dropped takes its key away).
    pub async fn acquire(&self) -> Result<LockGuard, Status> {
        let lease = Lease::grant(&self.etcd, self.ttl).await?;
        let (key, token, holder) = self.enqueue(&lease).await?;
        if holder.is_some_and(|holder| holder != token) {
            let mut lost = lease.lost();
            tokio::select! {
                waited = self.wait_for_predecessors(token) => waited?,
                reason = lost.wait() => {
                    return Err(Status::aborted(format!(
                        "the lock was not taken: {reason} while waiting"
                    )))
                }
            }
        }
        self.guard(lease, key, token).await
    }

    /// Takes the lock if no one holds it; `None` otherwise.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, Status> {
        let lease = Lease::grant(&self.etcd, self.ttl).await?;
        let (key, token, holder) = self.enqueue(&lease).await?;
        if holder.is_some_and(|holder| holder != token) {
            // Dropping the lease revokes it, taking the key away.
            lease.revoke().await?;
            return Ok(None);
        }
        self.guard(lease, key, token).await.map(Some)
    }

    /// Puts this contender's key; returns it, its create revision and the
    /// holder's.
    async fn enqueue(
        &self,
        lease: &Lease,
    ) -> Result<(Vec<u8>, FencingToken, Option<FencingToken>), Status> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(format!("{:x}", lease.id()).as_bytes());
        let first = RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: self.prefix.clone(),
                range_end: prefix_end(&self.prefix),
                limit: 1,
                sort_order: range_request::SortOrder::Ascend as i32,
                sort_target: range_request::SortTarget::Create as i32,
                ..RangeRequest::default()
            })),
        };
        let txn = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Create as i32,
                key: key.clone(),
                target_union: Some(compare::TargetUnion::CreateRevision(0)),
                range_end: Vec::new(),
            }],
            success: vec![
                RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: key.clone(),
                        lease: lease.id(),
                        ..PutRequest::default()
                    })),
                },
                first.clone(),
            ],
            failure: vec![
                RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: key.clone(),
                        ..RangeRequest::default()
                    })),
                },
                first,
            ],
        };
        let answer = KvClient::new(self.etcd.channel().clone())
            .txn(Request::new(txn))
            .await?
            .into_inner();
        let range = |index: usize| match answer
            .responses
            .get(index)
            .and_then(|r| r.response.as_ref())
        {
            Some(response_op::Response::ResponseRange(range)) => Some(range),
            _ => None,
        };
        let token = if answer.succeeded {
            answer.header.as_ref().map_or(0, |header| header.revision)
        } else {
            range(0)
                .and_then(|range| range.kvs.first())
                .map_or(0, |kv| kv.create_revision)
        };
        if token == 0 {
            return Err(Status::internal(
                "the store's answer to a lock request is incomplete",
            ));
        }
        let holder = range(1)
            .and_then(|range| range.kvs.first())
            .map(|kv| FencingToken(kv.create_revision));
        Ok((key, FencingToken(token), holder))
    }

    /// Waits until every key created before `token` under the prefix is
    /// gone, one predecessor at a time.
    async fn wait_for_predecessors(&self, token: FencingToken) -> Result<(), Status> {
        let kv = KvClient::new(self.etcd.channel().clone());
        loop {
            let last = kv
                .range(Request::new(RangeRequest {
                    key: self.prefix.clone(),
                    range_end: prefix_end(&self.prefix),
                    limit: 1,
                    sort_order: range_request::SortOrder::Descend as i32,
                    sort_target: range_request::SortTarget::Create as i32,
                    max_create_revision: token.0 - 1,
                    ..RangeRequest::default()
                }))
                .await?
                .into_inner();
            let Some(predecessor) = last.kvs.first() else {
                return Ok(());
            };
            let revision = last.header.as_ref().map_or(0, |header| header.revision);
            wait_for_deletion(&self.etcd, &predecessor.key, revision + 1).await?;
        }
    }

    async fn guard(
        &self,
        lease: Lease,
        key: Vec<u8>,
        token: FencingToken,
    ) -> Result<LockGuard, Status> {
        // The key must still be there: the lease may have run out while
        // waiting.
        let current = KvClient::new(self.etcd.channel().clone())
            .range(Request::new(RangeRequest {
                key: key.clone(),
                ..RangeRequest::default()
            }))
            .await?
            .into_inner();
        let revision = current.header.as_ref().map_or(0, |header| header.revision);
        if current.kvs.first().map(|kv| kv.create_revision) != Some(token.0) {
            return Err(Status::aborted(
                "the lock was not taken: its lease ran out while waiting",
            ));
        }
        // Told at once if the key is deleted under the holder.
        let watcher = tokio::spawn({
            let (etcd, key, loss) = (self.etcd.clone(), key.clone(), lease.loss().clone());
            async move {
                if wait_for_deletion(&etcd, &key, revision + 1).await.is_ok() {
                    loss.tell(LostReason::KeyDeleted);
                }
            }
        });
        Ok(LockGuard {
            lease: Some(lease),
            key,
            token,
            watcher,
        })
    }
}

/// Waits for a DELETE of `key` at or after `revision`, across broken
/// watch streams.
async fn wait_for_deletion(etcd: &Etcd, key: &[u8], mut revision: i64) -> Result<(), Status> {
    let client = WatchClient::new(etcd.channel().clone());
    let mut failures = 0u32;
    loop {
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: key.to_vec(),
                    start_revision: revision,
                    ..WatchCreateRequest::default()
                },
            )),
        };
        // The stream stays open (and the watch with it) while the request
        // side does.
        let requests = futures_util::stream::once(async move { create })
            .chain(futures_util::stream::pending());
        let opened = client.watch(Request::new(requests)).await;
        if let Ok(response) = opened {
            let mut responses = response.into_inner();
            while let Ok(Some(response)) = responses.message().await {
                failures = 0;
                if response.canceled {
                    if response.compact_revision > 0 {
                        // The history is gone: look again whether the key
                        // is there.
                        let now = KvClient::new(etcd.channel().clone())
                            .range(Request::new(RangeRequest {
                                key: key.to_vec(),
                                count_only: true,
                                ..RangeRequest::default()
                            }))
                            .await?
                            .into_inner();
                        if now.count == 0 {
                            return Ok(());
                        }
                        revision = now.header.as_ref().map_or(revision, |h| h.revision + 1);
                    }
                    break;
                }
                for event in &response.events {
                    if let Some(kv) = &event.kv {
                        revision = revision.max(kv.mod_revision + 1);
                    }
                    if event.r#type == EventType::Delete as i32 {
                        return Ok(());
                    }
                }
            }
        }
        failures += 1;
        if failures > 50 {
            return Err(Status::unavailable("the store's watch keeps failing"));
        }
        tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(10)))).await;
    }
}

/// A held lock; see the module docs. Dropping it releases the lock (in the
/// background).
#[derive(Debug)]
pub struct LockGuard {
    lease: Option<Lease>,
    key: Vec<u8>,
    token: FencingToken,
    watcher: tokio::task::JoinHandle<()>,
}

impl LockGuard {
    /// The token to show a guarded resource.
    pub fn fencing_token(&self) -> FencingToken {
        self.token
    }

    /// The lock's key in the store.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Resolves when the lock can no longer be counted on: stop the work
    /// it guards.
    pub fn lost(&self) -> Lost {
        self.lease.as_ref().map_or_else(
            || {
                let loss = crate::lease::Loss::new();
                loss.tell(LostReason::Released);
                loss.lost()
            },
            Lease::lost,
        )
    }

    /// The comparison that holds while this guard holds the lock: put it
    /// in a transaction to make a write to the store conditional on it.
    pub fn owner_compare(&self) -> Compare {
        Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: self.key.clone(),
            target_union: Some(compare::TargetUnion::CreateRevision(self.token.0)),
            range_end: Vec::new(),
        }
    }

    /// Releases the lock: its key goes, the next waiter takes it.
    pub async fn release(mut self) -> Result<(), Status> {
        self.watcher.abort();
        match self.lease.take() {
            Some(lease) => lease.revoke().await,
            None => Ok(()),
        }
    }

    /// Stops keeping the lock alive without releasing it, as a killed
    /// holder would: it frees up when its lease expires.
    pub fn orphan(mut self) {
        self.watcher.abort();
        if let Some(lease) = self.lease.take() {
            lease.orphan();
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.watcher.abort();
        // The lease's drop revokes it.
    }
}

/// What a guarded resource keeps to refuse stale holders: the highest
/// token it has admitted.
#[derive(Debug, Default)]
pub struct Fence {
    highest: AtomicI64,
}

impl Fence {
    /// A fence that has admitted nothing yet.
    pub fn new() -> Fence {
        Fence::default()
    }

    /// Admits work under `token` unless a later holder's token was seen:
    /// `FAILED_PRECONDITION` then.
    pub fn admit(&self, token: FencingToken) -> Result<(), Status> {
        let seen = self.highest.fetch_max(token.0, Ordering::AcqRel);
        if token.0 < seen {
            return Err(Status::failed_precondition(format!(
                "fencing token {} is older than {seen}: the lock has moved on",
                token.0
            )));
        }
        Ok(())
    }
}
