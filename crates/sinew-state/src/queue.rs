//! The queue locks and elections stand on, as etcd's `concurrency` package
//! keeps it: contenders' keys under one prefix, in create-revision order.
//!
//! Each contender puts a key `PREFIX/<lease id>` on a lease of its own (in
//! one transaction that also reads the first key, the current holder); the
//! holder is the contender whose key has the lowest create revision, and
//! each other contender waits for the deletion of the key created just
//! before its own (no herd: one waiter wakes per departure), then checks its
//! own key is still there. A contender's create revision is its
//! [`FencingToken`]: keys are only removed, and new ones get revisions
//! above every existing one, so tokens strictly increase from one holder to
//! the next.
//!
//! A [`Place`] at the head of the queue is told lost (see
//! [`crate::lease`]) when its lease is, or when its key is deleted (a watch
//! on it, resumed across broken streams and compactions).

use crate::lease::{Lease, Lost, LostReason};
use futures_util::StreamExt as _;
use sinew_cluster::etcd::api::etcdserverpb::{
    compare, kv_client::KvClient, range_request, request_op, response_op,
    watch_client::WatchClient, watch_request, Compare, PutRequest, RangeRequest, RequestOp,
    TxnRequest, WatchCreateRequest, WatchRequest,
};
use sinew_cluster::etcd::api::mvccpb::{event::EventType, KeyValue};
pub(crate) use sinew_cluster::etcd::prefix_end;
use sinew_cluster::etcd::Etcd;
use sinew_rpc::{Request, Status};
use std::time::Duration;

/// A holder's token: its key's create revision. Later holders have higher
/// ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub i64);

/// A queue of contenders under a prefix.
#[derive(Clone, Debug)]
pub(crate) struct Queue {
    pub(crate) etcd: Etcd,
    pub(crate) prefix: Vec<u8>,
    pub(crate) ttl: Duration,
}

/// A contender's key in the queue.
pub(crate) struct Entry {
    pub(crate) key: Vec<u8>,
    pub(crate) token: FencingToken,
    /// The first contender's token.
    pub(crate) head: Option<FencingToken>,
}

impl Queue {
    fn kv(&self) -> KvClient<sinew_rpc::Channel> {
        KvClient::new(self.etcd.channel().clone())
    }

    /// The range request for the first (`Ascend`) or last key.
    fn edge(&self, order: range_request::SortOrder, max_create_revision: i64) -> RangeRequest {
        RangeRequest {
            key: self.prefix.clone(),
            range_end: prefix_end(&self.prefix),
            limit: 1,
            sort_order: order as i32,
            sort_target: range_request::SortTarget::Create as i32,
            max_create_revision,
            ..RangeRequest::default()
        }
    }

    /// The first contender's key (the holder, the leader), if any.
    pub(crate) async fn head(&self) -> Result<(Option<KeyValue>, i64), Status> {
        let first = self
            .kv()
            .range(Request::new(self.edge(range_request::SortOrder::Ascend, 0)))
            .await?
            .into_inner();
        let revision = first.header.as_ref().map_or(0, |header| header.revision);
        Ok((first.kvs.into_iter().next(), revision))
    }

    /// Puts the key of `lease` with `value` unless it is there; reads the
    /// head in the same transaction.
    pub(crate) async fn enqueue(&self, lease: &Lease, value: &[u8]) -> Result<Entry, Status> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(format!("{:x}", lease.id()).as_bytes());
        let first = RequestOp {
            request: Some(request_op::Request::RequestRange(
                self.edge(range_request::SortOrder::Ascend, 0),
            )),
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
                        value: value.to_vec(),
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
        let answer = self.kv().txn(Request::new(txn)).await?.into_inner();
        let range = |index: usize| match answer
            .responses
            .get(index)
            .and_then(|r| r.response.as_ref())
        {
            Some(response_op::Response::ResponseRange(range)) => range.kvs.first(),
            _ => None,
        };
        let token = if answer.succeeded {
            answer.header.as_ref().map_or(0, |header| header.revision)
        } else {
            range(0).map_or(0, |kv| kv.create_revision)
        };
        if token == 0 {
            return Err(Status::internal(
                "the store's answer to a queue request is incomplete",
            ));
        }
        Ok(Entry {
            key,
            token: FencingToken(token),
            head: range(1).map(|kv| FencingToken(kv.create_revision)),
        })
    }

    /// Waits until every key created before `token` is gone, one
    /// predecessor at a time; fails if `lost` resolves first.
    pub(crate) async fn wait_turn(
        &self,
        token: FencingToken,
        lost: &mut Lost,
    ) -> Result<(), Status> {
        let waiting = async {
            loop {
                let last = self
                    .kv()
                    .range(Request::new(
                        self.edge(range_request::SortOrder::Descend, token.0 - 1),
                    ))
                    .await?
                    .into_inner();
                let Some(predecessor) = last.kvs.first() else {
                    return Ok(());
                };
                let revision = last.header.as_ref().map_or(0, |header| header.revision);
                wait_for_deletion(&self.etcd, &predecessor.key, revision + 1).await?;
            }
        };
        tokio::select! {
            waited = waiting => waited,
            reason = lost.wait() => Err(Status::aborted(format!("{reason} while waiting in line"))),
        }
    }

    /// The head of the queue, once `entry` is there: checks its key is
    /// still present and watches it.
    pub(crate) async fn hold(&self, lease: Lease, entry: Entry) -> Result<Place, Status> {
        let current = self
            .kv()
            .range(Request::new(RangeRequest {
                key: entry.key.clone(),
                ..RangeRequest::default()
            }))
            .await?
            .into_inner();
        let revision = current.header.as_ref().map_or(0, |header| header.revision);
        if current.kvs.first().map(|kv| kv.create_revision) != Some(entry.token.0) {
            return Err(Status::aborted("the lease ran out while waiting in line"));
        }
        if let Some(reason) = lease.lost().now() {
            return Err(Status::aborted(format!("{reason} while waiting in line")));
        }
        let watcher = tokio::spawn({
            let (etcd, key, loss) = (self.etcd.clone(), entry.key.clone(), lease.loss().clone());
            async move {
                if wait_for_deletion(&etcd, &key, revision + 1).await.is_ok() {
                    loss.tell(LostReason::KeyDeleted);
                }
            }
        });
        Ok(Place {
            etcd: self.etcd.clone(),
            lease: Some(lease),
            key: entry.key,
            token: entry.token,
            watcher,
        })
    }
}

/// Waits for a DELETE of `key` at or after `revision`, across broken
/// watch streams and compactions.
pub(crate) async fn wait_for_deletion(
    etcd: &Etcd,
    key: &[u8],
    mut revision: i64,
) -> Result<(), Status> {
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
        // The watch lasts while the request side stays open.
        let requests = futures_util::stream::once(async move { create })
            .chain(futures_util::stream::pending());
        if let Ok(response) = client.watch(Request::new(requests)).await {
            let mut responses = response.into_inner();
            while let Ok(Some(response)) = responses.message().await {
                failures = 0;
                if response.canceled {
                    if response.compact_revision > 0 {
                        // The history is gone: look whether the key is.
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

/// The head of a queue, held: a lock's holder, an election's leader.
#[derive(Debug)]
pub(crate) struct Place {
    etcd: Etcd,
    lease: Option<Lease>,
    pub(crate) key: Vec<u8>,
    pub(crate) token: FencingToken,
    watcher: tokio::task::JoinHandle<()>,
}

impl Place {
    pub(crate) fn lease_id(&self) -> i64 {
        self.lease.as_ref().map_or(0, Lease::id)
    }

    pub(crate) fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    pub(crate) fn lost(&self) -> Lost {
        match &self.lease {
            Some(lease) => lease.lost(),
            None => {
                let loss = crate::lease::Loss::new();
                loss.tell(LostReason::Released);
                loss.lost()
            }
        }
    }

    /// The comparison that holds while this place is held.
    pub(crate) fn owner_compare(&self) -> Compare {
        Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: self.key.clone(),
            target_union: Some(compare::TargetUnion::CreateRevision(self.token.0)),
            range_end: Vec::new(),
        }
    }

    /// Leaves: the lease revoked, the key with it.
    pub(crate) async fn leave(mut self) -> Result<(), Status> {
        self.watcher.abort();
        match self.lease.take() {
            Some(lease) => lease.revoke().await,
            None => Ok(()),
        }
    }

    /// Stops renewing without leaving, as a killed holder.
    pub(crate) fn orphan(mut self) {
        self.watcher.abort();
        if let Some(lease) = self.lease.take() {
            lease.orphan();
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        // The lease's own drop revokes it.
        self.watcher.abort();
    }
}
