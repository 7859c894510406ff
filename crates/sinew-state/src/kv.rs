//! The key-value API most code needs, over the store's (etcd's) own:
//! reads, writes, compare-and-swap, and a prefix followed as it changes.
//!
//! Reads are **linearizable** unless the [`Kv`] was made
//! [`serializable`](Kv::serializable): a linearizable read sees every write
//! acknowledged before it began (etcd confirms its leader with a quorum
//! first); a serializable one is answered by the member reached, from its
//! own copy, faster and possibly behind. (The embedded store has one copy:
//! both are linearizable there.) Every write takes one new store revision,
//! returned; a write that fails with `UNAVAILABLE` or `DEADLINE_EXCEEDED`
//! may or may not have been applied ([`outcome_unknown`]).
//!
//! For anything else (ranges with limits and sorts, transactions of
//! several operations), etcd's generated clients on
//! [`Etcd::channel`](sinew_cluster::etcd::Etcd::channel) take the messages
//! this module builds.

use crate::lease::Lease;
use futures_util::StreamExt as _;
use sinew_cluster::etcd::api::etcdserverpb::{
    compare, kv_client::KvClient, request_op, response_op, watch_client::WatchClient,
    watch_request, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use sinew_cluster::etcd::api::mvccpb::event::EventType;
pub use sinew_cluster::etcd::api::mvccpb::KeyValue;
use sinew_cluster::etcd::{prefix_end, Etcd};
pub use sinew_cluster::etcd::{PrefixFollower, Snapshot};
use sinew_rpc::{Code, Request, Status};

/// Keys and values in the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Kv {
    etcd: Etcd,
    serializable: bool,
}

/// What a compare-and-swap expects the key to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Not there.
    Absent,
    /// Last modified at this revision (as read with it).
    ModRevision(i64),
    /// Holding this value.
    Value(Vec<u8>),
}

/// How a compare-and-swap went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swap {
    /// Written, at this revision.
    Swapped {
        /// The store revision of the write.
        revision: i64,
    },
    /// The key was not as expected: nothing written; here is what it is.
    Conflict {
        /// The key now (`None`: absent).
        current: Option<KeyValue>,
    },
}

/// Whether a failed write's outcome is unknown (it may have been applied):
/// the store was unreachable or slow, rather than refusing it.
pub fn outcome_unknown(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

impl Kv {
    /// Keys and values in the store `etcd` reaches (etcd, or an embedded
    /// store served as etcd's API).
    pub fn new(etcd: Etcd) -> Kv {
        Kv {
            etcd,
            serializable: false,
        }
    }

    /// The same, with serializable reads (see the module docs).
    pub fn serializable(mut self) -> Kv {
        self.serializable = true;
        self
    }

    fn client(&self) -> KvClient<sinew_rpc::Channel> {
        KvClient::new(self.etcd.channel().clone())
    }

    /// One key.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>, Status> {
        let response = self
            .client()
            .range(Request::new(RangeRequest {
                key: key.as_ref().to_vec(),
                serializable: self.serializable,
                ..RangeRequest::default()
            }))
            .await?
            .into_inner();
        Ok(response.kvs.into_iter().next())
    }

    /// Every key under `prefix`, in key order, and the revision read at.
    pub async fn list(&self, prefix: impl AsRef<[u8]>) -> Result<(Vec<KeyValue>, i64), Status> {
        let prefix = prefix.as_ref();
        let response = self
            .client()
            .range(Request::new(RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                serializable: self.serializable,
                ..RangeRequest::default()
            }))
            .await?
            .into_inner();
        let revision = response.header.map_or(0, |header| header.revision);
        Ok((response.kvs, revision))
    }

    /// Sets `key`; the revision of the write.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<i64, Status> {
        self.put_request(PutRequest {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            ..PutRequest::default()
        })
        .await
    }

    /// Sets `key` on `lease`: it goes when the lease does.
    pub async fn put_on(
        &self,
        lease: &Lease,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<i64, Status> {
        self.put_request(PutRequest {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            lease: lease.id(),
            ..PutRequest::default()
        })
        .await
    }

    async fn put_request(&self, request: PutRequest) -> Result<i64, Status> {
        let response = self.client().put(Request::new(request)).await?.into_inner();
        Ok(response.header.map_or(0, |header| header.revision))
    }

    /// Deletes `key`; whether it was there.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, Status> {
        let response = self
            .client()
            .delete_range(Request::new(DeleteRangeRequest {
                key: key.as_ref().to_vec(),
                ..DeleteRangeRequest::default()
            }))
            .await?
            .into_inner();
        Ok(response.deleted > 0)
    }

    /// Deletes every key under `prefix`; how many there were.
    pub async fn delete_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<i64, Status> {
        let prefix = prefix.as_ref();
        let response = self
            .client()
            .delete_range(Request::new(DeleteRangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                ..DeleteRangeRequest::default()
            }))
            .await?
            .into_inner();
        Ok(response.deleted)
    }

    /// Sets `key` to `value` if it is as `expected`, atomically.
    pub async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected: Expect,
        value: impl AsRef<[u8]>,
    ) -> Result<Swap, Status> {
        let key = key.as_ref().to_vec();
        let (target, union) = match expected {
            Expect::Absent => (
                compare::CompareTarget::Create,
                compare::TargetUnion::CreateRevision(0),
            ),
            Expect::ModRevision(revision) => (
                compare::CompareTarget::Mod,
                compare::TargetUnion::ModRevision(revision),
            ),
            Expect::Value(value) => (
                compare::CompareTarget::Value,
                compare::TargetUnion::Value(value),
            ),
        };
        let txn = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: target as i32,
                key: key.clone(),
                target_union: Some(union),
                range_end: Vec::new(),
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: value.as_ref().to_vec(),
                    ..PutRequest::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key,
                    ..RangeRequest::default()
                })),
            }],
        };
        let response = self.client().txn(Request::new(txn)).await?.into_inner();
        if response.succeeded {
            return Ok(Swap::Swapped {
                revision: response.header.map_or(0, |header| header.revision),
            });
        }
        let current = response
            .responses
            .into_iter()
            .next()
            .and_then(|op| match op.response {
                Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
                _ => None,
            });
        Ok(Swap::Conflict { current })
    }

    /// The changes of every key under `prefix` from `start_revision` on (0:
    /// from the store's revision when the watch's task first reaches it;
    /// give a revision, such as a listing's + 1, to be sure of where it
    /// starts), with each key's value before the change: see [`Watch`].
    pub fn watch(&self, prefix: impl AsRef<[u8]>, start_revision: i64) -> Watch {
        let prefix = prefix.as_ref();
        self.watch_range(prefix.to_vec(), prefix_end(prefix), start_revision)
    }

    /// The changes of the one key `key` from `start_revision` on, as
    /// [`Kv::watch`] gives a prefix's.
    pub fn watch_key(&self, key: impl AsRef<[u8]>, start_revision: i64) -> Watch {
        self.watch_range(key.as_ref().to_vec(), Vec::new(), start_revision)
    }

    fn watch_range(&self, key: Vec<u8>, range_end: Vec<u8>, start_revision: i64) -> Watch {
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let task = tokio::spawn(watch(
            self.etcd.clone(),
            (key, range_end),
            start_revision,
            sender,
        ));
        Watch {
            receiver,
            task: task.abort_handle(),
        }
    }

    /// One key and the store revision it was read at.
    pub(crate) async fn get_at(&self, key: &[u8]) -> Result<(Option<KeyValue>, i64), Status> {
        let response = self
            .client()
            .range(Request::new(RangeRequest {
                key: key.to_vec(),
                serializable: self.serializable,
                ..RangeRequest::default()
            }))
            .await?
            .into_inner();
        let revision = response.header.map_or(0, |header| header.revision);
        Ok((response.kvs.into_iter().next(), revision))
    }

    /// Every key under `prefix` as it changes: listed once, then followed
    /// by a watch from the next revision, resumed across broken streams
    /// from the last revision seen, listed again after a compaction (see
    /// [`PrefixFollower`]).
    pub fn follow(&self, prefix: impl AsRef<[u8]>) -> PrefixFollower {
        self.etcd.follow_prefix(prefix.as_ref())
    }
}

/// A change of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Set: the key as it is now, and as it was before (if it was).
    Put {
        /// The key after the change.
        kv: KeyValue,
        /// The key before it.
        previous: Option<KeyValue>,
    },
    /// Deleted at `revision`: the key as it was.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// The revision of the deletion.
        revision: i64,
        /// The key before it.
        previous: Option<KeyValue>,
    },
}

/// What a [`Watch`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watched {
    /// The changes up to and including `revision`, in order.
    Changes {
        /// The newest revision these changes cover.
        revision: i64,
        /// Each change, oldest first.
        changes: Vec<Change>,
    },
    /// The revision to go on from was compacted away: the watch ends; list
    /// the keys again and watch from the listing's revision + 1.
    Compacted {
        /// The newest revision compacted.
        compact_revision: i64,
    },
}

/// The changes under a prefix from a revision on, each once and in order:
/// a broken watch stream (a member gone, the store restarting) is opened
/// again from the revision after the last change yielded, so none is lost
/// or repeated; an error is yielded once per outage while it lasts. Ends
/// after [`Watched::Compacted`]. Stops its task when dropped.
#[derive(Debug)]
pub struct Watch {
    receiver: tokio::sync::mpsc::Receiver<Result<Watched, Status>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures_core::Stream for Watch {
    type Item = Result<Watched, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

/// The task behind a [`Watch`].
async fn watch(
    etcd: Etcd,
    (key, range_end): (Vec<u8>, Vec<u8>),
    start_revision: i64,
    sender: tokio::sync::mpsc::Sender<Result<Watched, Status>>,
) {
    let client = WatchClient::new(etcd.channel().clone());
    // The revision to (re)open from; "from now" is the revision after the
    // store's current one, read first, so that an outage before the first
    // answer loses nothing either.
    let mut next = start_revision;
    while next == 0 {
        let read = KvClient::new(etcd.channel().clone())
            .range(Request::new(RangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                count_only: true,
                ..RangeRequest::default()
            }))
            .await;
        match read {
            Ok(response) => {
                next = response
                    .into_inner()
                    .header
                    .map_or(0, |header| header.revision)
                    + 1;
            }
            Err(status) => {
                if sender.send(Err(status)).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
    let mut retry = std::time::Duration::from_millis(100);
    let mut told_outage = false;
    loop {
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: key.clone(),
                    range_end: range_end.clone(),
                    start_revision: next,
                    prev_kv: true,
                    ..WatchCreateRequest::default()
                },
            )),
        };
        let requests = futures_util::stream::once(async move { create })
            .chain(futures_util::stream::pending());
        let broke = match client.watch(Request::new(requests)).await {
            Err(status) => status,
            Ok(response) => {
                let mut responses = response.into_inner();
                loop {
                    match responses.message().await {
                        Ok(Some(response))
                            if response.canceled && response.compact_revision > 0 =>
                        {
                            let _ = sender
                                .send(Ok(Watched::Compacted {
                                    compact_revision: response.compact_revision,
                                }))
                                .await;
                            return;
                        }
                        Ok(Some(response)) if response.canceled => {
                            break Status::unavailable(format!(
                                "the store ended the watch: {}",
                                response.cancel_reason
                            ));
                        }
                        Ok(Some(response)) => {
                            told_outage = false;
                            retry = std::time::Duration::from_millis(100);
                            if response.events.is_empty() {
                                continue;
                            }
                            let mut changes = Vec::with_capacity(response.events.len());
                            let mut last = next - 1;
                            for event in response.events {
                                let kv = event.kv.unwrap_or_default();
                                last = last.max(kv.mod_revision);
                                changes.push(if event.r#type == EventType::Delete as i32 {
                                    Change::Delete {
                                        revision: kv.mod_revision,
                                        key: kv.key,
                                        previous: event.prev_kv,
                                    }
                                } else {
                                    Change::Put {
                                        kv,
                                        previous: event.prev_kv,
                                    }
                                });
                            }
                            next = last + 1;
                            let batch = Watched::Changes {
                                revision: last,
                                changes,
                            };
                            if sender.send(Ok(batch)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break Status::unavailable("the store ended the watch stream"),
                        Err(status) => break status,
                    }
                }
            }
        };
        if !told_outage {
            told_outage = true;
            if sender.send(Err(broke)).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(std::time::Duration::from_secs(2));
    }
}
