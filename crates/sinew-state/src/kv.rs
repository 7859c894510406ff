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
use sinew_cluster::etcd::api::etcdserverpb::{
    compare, kv_client::KvClient, request_op, response_op, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
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

    /// Every key under `prefix` as it changes: listed once, then followed
    /// by a watch from the next revision, resumed across broken streams
    /// from the last revision seen, listed again after a compaction (see
    /// [`PrefixFollower`]).
    pub fn follow(&self, prefix: impl AsRef<[u8]>) -> PrefixFollower {
        self.etcd.follow_prefix(prefix.as_ref())
    }
}
