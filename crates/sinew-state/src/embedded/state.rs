//! The store's data in memory and how requests change it: keys with etcd's
//! revision bookkeeping, leases, and the recent history watches read.
//!
//! A write request runs as a [`Tx`] over the state: its reads see its own
//! earlier writes, its writes collect in an overlay, and nothing of it
//! reaches the state unless all of it succeeds ([`Tx::finish`] gives the
//! changes to persist, [`State::apply`] makes them visible). Every write
//! request that changes anything takes one new revision, as in etcd.

use sinew_cluster::etcd::api::etcdserverpb::{
    compare, request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use sinew_cluster::etcd::api::mvccpb::{event::EventType, Event, KeyValue};
use sinew_rpc::Status;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use tokio::time::Instant;

/// The largest request taken (key and value bytes of a put, etcd's
/// default `--max-request-bytes`).
pub(crate) const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// The longest lease granted, in seconds (etcd's `MaxLeaseTTL`).
pub(crate) const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// When a lease of `ttl` seconds renewed at `now` expires (saturating).
pub(crate) fn expiry(now: Instant, ttl: i64) -> Instant {
    let ttl = std::time::Duration::from_secs(ttl.clamp(0, MAX_LEASE_TTL) as u64);
    now.checked_add(ttl)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(100 * 365 * 86_400))
}

/// The most operations a transaction may hold (etcd's `--max-txn-ops`).
pub(crate) const MAX_TXN_OPS: usize = 128;

/// Events kept for watches that start in the past; older ones are
/// compacted (a watch from before them is told so and lists again).
pub(crate) const HISTORY_EVENTS: usize = 64 * 1024;

/// Bytes of keys and values the history keeps at most.
pub(crate) const HISTORY_BYTES: usize = 64 * 1024 * 1024;

/// The keys and values of `events`, in bytes (with a little for each
/// event's other fields): what the history and a watch batch count.
pub(crate) fn events_bytes(events: &[Event]) -> usize {
    events
        .iter()
        .map(|event| {
            let kv =
                |kv: &Option<KeyValue>| kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len());
            kv(&event.kv) + kv(&event.prev_kv) + 64
        })
        .sum()
}

/// The cluster and member ids the store answers with.
pub(crate) const CLUSTER_ID: u64 = 0x5e11e_57a7e;

/// A lease: keys attached to it go when it expires or is revoked.
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    /// The time to live it was granted, in seconds.
    pub(crate) ttl: i64,
    /// When it expires unless kept alive.
    pub(crate) deadline: Instant,
    pub(crate) keys: BTreeSet<Vec<u8>>,
}

/// Everything the store holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The revision of the last change.
    pub(crate) revision: i64,
    /// Watches cannot start at or before this revision.
    pub(crate) compacted: i64,
    pub(crate) kvs: BTreeMap<Vec<u8>, KeyValue>,
    pub(crate) leases: HashMap<i64, Lease>,
    /// The id the next lease granted without one gets (at least).
    pub(crate) next_lease: i64,
    /// The changes of recent revisions, oldest first.
    pub(crate) history: VecDeque<(i64, Arc<Vec<Event>>)>,
    history_events: usize,
    history_bytes: usize,
}

/// What a write request changed, to persist and then apply.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// The new revision; `None` when no key changed.
    pub(crate) revision: Option<i64>,
    /// Keys written (`Some`) or deleted (`None`).
    pub(crate) kvs: BTreeMap<Vec<u8>, Option<KeyValue>>,
    /// Leases granted or kept (`Some(ttl)`) or gone (`None`).
    pub(crate) leases: BTreeMap<i64, Option<i64>>,
    pub(crate) next_lease: Option<i64>,
    pub(crate) events: Vec<Event>,
}

/// The keys a request's `key` and `range_end` name, as etcd reads them:
/// no end for the key alone, `"\0"` for every key from `key` on (every
/// key at all when `key` is `"\0"` too), otherwise `[key, range_end)`.
pub(crate) fn bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    match range_end {
        [] => (Bound::Included(key), Bound::Included(key)),
        [0] if key == [0] => (Bound::Unbounded, Bound::Unbounded),
        [0] => (Bound::Included(key), Bound::Unbounded),
        end => (Bound::Included(key), Bound::Excluded(end)),
    }
}

pub(crate) fn contains(key: &[u8], (lower, upper): (Bound<&[u8]>, Bound<&[u8]>)) -> bool {
    let above = match lower {
        Bound::Included(lower) => key >= lower,
        Bound::Excluded(lower) => key > lower,
        Bound::Unbounded => true,
    };
    let below = match upper {
        Bound::Included(upper) => key <= upper,
        Bound::Excluded(upper) => key < upper,
        Bound::Unbounded => true,
    };
    above && below
}

/// An empty range (`[b, a)` with `a < b`) is no range at all.
fn empty(bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> bool {
    match bounds {
        (Bound::Included(lower), Bound::Excluded(upper)) => upper <= lower,
        _ => false,
    }
}

impl State {
    pub(crate) fn header(&self) -> ResponseHeader {
        ResponseHeader {
            cluster_id: CLUSTER_ID,
            member_id: CLUSTER_ID,
            revision: self.revision,
            raft_term: 1,
        }
    }

    /// Starts a write request at the current state.
    pub(crate) fn tx(&self) -> Tx<'_> {
        Tx {
            state: self,
            changes: Changes::default(),
        }
    }

    /// Makes persisted `changes` visible: keys, leases, the revision and
    /// the history (compacting it past [`HISTORY_EVENTS`]).
    pub(crate) fn apply(&mut self, changes: Changes, now: Instant) {
        // Leases granted first (keys of this request may be attached to
        // them), leases gone last.
        for (id, ttl) in &changes.leases {
            if let Some(ttl) = *ttl {
                let keys = self.leases.remove(id).map(|l| l.keys).unwrap_or_default();
                let deadline = expiry(now, ttl);
                self.leases.insert(
                    *id,
                    Lease {
                        ttl,
                        deadline,
                        keys,
                    },
                );
            }
        }
        for (key, kv) in changes.kvs {
            if let Some(old) = self.kvs.get(&key) {
                if old.lease != 0 {
                    if let Some(lease) = self.leases.get_mut(&old.lease) {
                        lease.keys.remove(&key);
                    }
                }
            }
            match kv {
                Some(kv) => {
                    if kv.lease != 0 {
                        if let Some(lease) = self.leases.get_mut(&kv.lease) {
                            lease.keys.insert(key.clone());
                        }
                    }
                    self.kvs.insert(key, kv);
                }
                None => {
                    self.kvs.remove(&key);
                }
            }
        }
        for (id, ttl) in &changes.leases {
            if ttl.is_none() {
                self.leases.remove(id);
            }
        }
        if let Some(next) = changes.next_lease {
            self.next_lease = next;
        }
        if let Some(revision) = changes.revision {
            self.revision = revision;
            self.history_events += changes.events.len();
            self.history_bytes += events_bytes(&changes.events);
            self.history.push_back((revision, Arc::new(changes.events)));
            while self.history_events > HISTORY_EVENTS || self.history_bytes > HISTORY_BYTES {
                let Some((revision, events)) = self.history.pop_front() else {
                    break;
                };
                self.history_events -= events.len();
                self.history_bytes -= events_bytes(&events);
                self.compacted = revision;
            }
        }
    }

    /// Drops the history up to and including `revision` (etcd's
    /// `Compact`): watches cannot start there any more.
    pub(crate) fn compact(&mut self, revision: i64) -> Result<(), Status> {
        if revision > self.revision {
            return Err(future_revision());
        }
        if revision <= self.compacted {
            return Err(compacted_revision());
        }
        while self.history.front().is_some_and(|(r, _)| *r <= revision) {
            if let Some((_, events)) = self.history.pop_front() {
                self.history_events -= events.len();
                self.history_bytes -= events_bytes(&events);
            }
        }
        self.compacted = revision;
        Ok(())
    }
}

pub(crate) fn compacted_revision() -> Status {
    Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
}

pub(crate) fn future_revision() -> Status {
    Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
}

fn lease_not_found() -> Status {
    Status::not_found("etcdserver: requested lease not found")
}

/// One write request (or a read inside a transaction) in progress.
pub(crate) struct Tx<'a> {
    state: &'a State,
    changes: Changes,
}

impl Tx<'_> {
    /// The revision this request writes at.
    fn write_revision(&mut self) -> i64 {
        *self.changes.revision.get_or_insert(self.state.revision + 1)
    }

    fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        match self.changes.kvs.get(key) {
            Some(kv) => kv.as_ref(),
            None => self.state.kvs.get(key),
        }
    }

    fn lease_exists(&self, id: i64) -> bool {
        match self.changes.leases.get(&id) {
            Some(ttl) => ttl.is_some(),
            None => self.state.leases.contains_key(&id),
        }
    }

    /// The keys in `bounds` as this request sees them, in key order.
    fn scan(&self, bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> Vec<KeyValue> {
        if empty(bounds) {
            return Vec::new();
        }
        let mut out: BTreeMap<&[u8], &KeyValue> = self
            .state
            .kvs
            .range::<[u8], _>(bounds)
            .map(|(key, kv)| (key.as_slice(), kv))
            .collect();
        for (key, kv) in &self.changes.kvs {
            if contains(key, bounds) {
                match kv {
                    Some(kv) => {
                        out.insert(key.as_slice(), kv);
                    }
                    None => {
                        out.remove(key.as_slice());
                    }
                }
            }
        }
        out.into_values().cloned().collect()
    }

    pub(crate) fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Status> {
        if request.key.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        if request.revision > 0 && request.revision != self.state.revision {
            // Only the newest revision is kept (see the module docs).
            return Err(if request.revision > self.state.revision {
                future_revision()
            } else {
                compacted_revision()
            });
        }
        let mut kvs: Vec<KeyValue> = self
            .scan(bounds(&request.key, &request.range_end))
            .into_iter()
            .filter(|kv| {
                (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
                    && (request.max_mod_revision == 0
                        || kv.mod_revision <= request.max_mod_revision)
                    && (request.min_create_revision == 0
                        || kv.create_revision >= request.min_create_revision)
                    && (request.max_create_revision == 0
                        || kv.create_revision <= request.max_create_revision)
            })
            .collect();
        use sinew_cluster::etcd::api::etcdserverpb::range_request::{SortOrder, SortTarget};
        let order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
        let target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
        if order != SortOrder::None || target != SortTarget::Key {
            kvs.sort_by(|a, b| match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            });
            if order == SortOrder::Descend {
                kvs.reverse();
            }
        }
        let count = kvs.len() as i64;
        let more = request.limit > 0 && count > request.limit;
        if more {
            kvs.truncate(request.limit as usize);
        }
        if request.count_only {
            kvs.clear();
        } else if request.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse {
            header: None,
            kvs,
            more,
            count,
        })
    }

    pub(crate) fn put(&mut self, request: &PutRequest) -> Result<PutResponse, Status> {
        if request.key.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        if request.key.len() + request.value.len() > MAX_REQUEST_BYTES {
            return Err(Status::invalid_argument("etcdserver: request is too large"));
        }
        let previous = self.get(&request.key).cloned();
        let value = match (&previous, request.ignore_value) {
            (Some(previous), true) => previous.value.clone(),
            (None, true) => return Err(Status::invalid_argument("etcdserver: key not found")),
            (_, false) => request.value.clone(),
        };
        let lease = match (&previous, request.ignore_lease) {
            (Some(previous), true) => previous.lease,
            (None, true) => return Err(Status::invalid_argument("etcdserver: key not found")),
            (_, false) => request.lease,
        };
        if lease != 0 && !self.lease_exists(lease) {
            return Err(lease_not_found());
        }
        let revision = self.write_revision();
        let kv = KeyValue {
            key: request.key.clone(),
            create_revision: previous.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.changes.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv.clone()),
            prev_kv: previous.clone(),
        });
        self.changes.kvs.insert(request.key.clone(), Some(kv));
        Ok(PutResponse {
            header: None,
            prev_kv: previous.filter(|_| request.prev_kv),
        })
    }

    pub(crate) fn delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Status> {
        if request.key.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        let gone = self.scan(bounds(&request.key, &request.range_end));
        if gone.is_empty() {
            return Ok(DeleteRangeResponse::default());
        }
        let revision = self.write_revision();
        for kv in &gone {
            self.changes.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: kv.key.clone(),
                    mod_revision: revision,
                    ..KeyValue::default()
                }),
                prev_kv: Some(kv.clone()),
            });
            self.changes.kvs.insert(kv.key.clone(), None);
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: gone.len() as i64,
            prev_kvs: if request.prev_kv { gone } else { Vec::new() },
        })
    }

    /// Whether `compare` holds, as etcd decides it: against every key of
    /// its range, a missing key reading as zeros (and failing any value
    /// comparison).
    fn holds(&self, compare: &Compare) -> bool {
        use sinew_cluster::etcd::api::etcdserverpb::compare::{CompareResult, CompareTarget};
        let mut kvs: Vec<KeyValue> = if compare.range_end.is_empty() {
            vec![self.get(&compare.key).cloned().unwrap_or_default()]
        } else {
            self.scan(bounds(&compare.key, &compare.range_end))
        };
        if kvs.is_empty() {
            // An empty range compares as one missing key, as in etcd.
            kvs.push(KeyValue::default());
        }
        let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
        let result = CompareResult::try_from(compare.result).unwrap_or(CompareResult::Equal);
        kvs.iter().all(|kv| {
            let missing = kv.create_revision == 0;
            let ordering = match (&compare.target_union, target) {
                (Some(compare::TargetUnion::Version(v)), CompareTarget::Version) => {
                    kv.version.cmp(v)
                }
                (Some(compare::TargetUnion::CreateRevision(v)), CompareTarget::Create) => {
                    kv.create_revision.cmp(v)
                }
                (Some(compare::TargetUnion::ModRevision(v)), CompareTarget::Mod) => {
                    kv.mod_revision.cmp(v)
                }
                (Some(compare::TargetUnion::Value(v)), CompareTarget::Value) => {
                    if missing {
                        return false;
                    }
                    kv.value.as_slice().cmp(v.as_slice())
                }
                (Some(compare::TargetUnion::Lease(v)), CompareTarget::Lease) => kv.lease.cmp(v),
                // No value given, or one of another target: etcd's
                // zero value of the target.
                (_, CompareTarget::Value) => {
                    if missing {
                        return false;
                    }
                    kv.value.as_slice().cmp(&[][..])
                }
                (_, CompareTarget::Version) => kv.version.cmp(&0),
                (_, CompareTarget::Create) => kv.create_revision.cmp(&0),
                (_, CompareTarget::Mod) => kv.mod_revision.cmp(&0),
                (_, CompareTarget::Lease) => kv.lease.cmp(&0),
            };
            match result {
                CompareResult::Equal => ordering.is_eq(),
                CompareResult::Greater => ordering.is_gt(),
                CompareResult::Less => ordering.is_lt(),
                CompareResult::NotEqual => ordering.is_ne(),
            }
        })
    }

    pub(crate) fn txn(&mut self, request: &TxnRequest) -> Result<TxnResponse, Status> {
        check_txn(request)?;
        let succeeded = request.compare.iter().all(|compare| self.holds(compare));
        let ops = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(range)) => {
                    response_op::Response::ResponseRange(self.range(range)?)
                }
                Some(request_op::Request::RequestPut(put)) => {
                    response_op::Response::ResponsePut(self.put(put)?)
                }
                Some(request_op::Request::RequestDeleteRange(delete)) => {
                    response_op::Response::ResponseDeleteRange(self.delete_range(delete)?)
                }
                Some(request_op::Request::RequestTxn(txn)) => {
                    response_op::Response::ResponseTxn(self.txn(txn)?)
                }
                None => return Err(Status::invalid_argument("etcdserver: empty request op")),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    /// Grants a lease of `ttl` seconds, with `id` or a new one.
    pub(crate) fn grant(&mut self, id: i64, ttl: i64) -> Result<i64, Status> {
        if ttl <= 0 {
            return Err(Status::invalid_argument(
                "etcdserver: lease TTL must be positive",
            ));
        }
        if ttl > MAX_LEASE_TTL {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        let id = if id == 0 {
            let mut next = self
                .changes
                .next_lease
                .unwrap_or(self.state.next_lease)
                .max(1);
            while self.lease_exists(next) {
                next += 1;
            }
            self.changes.next_lease = Some(next + 1);
            next
        } else if id < 0 {
            return Err(Status::invalid_argument(
                "etcdserver: lease ID must be positive",
            ));
        } else if self.lease_exists(id) {
            return Err(Status::already_exists("etcdserver: lease already exists"));
        } else {
            id
        };
        self.changes.leases.insert(id, Some(ttl));
        Ok(id)
    }

    /// Revokes lease `id`, deleting its keys.
    pub(crate) fn revoke(&mut self, id: i64) -> Result<(), Status> {
        let Some(lease) = self.state.leases.get(&id) else {
            return Err(lease_not_found());
        };
        let keys: Vec<Vec<u8>> = lease.keys.iter().cloned().collect();
        for key in keys {
            self.delete_range(&DeleteRangeRequest {
                key,
                ..DeleteRangeRequest::default()
            })?;
        }
        self.changes.leases.insert(id, None);
        Ok(())
    }

    /// What the request changed.
    pub(crate) fn finish(self) -> Changes {
        self.changes
    }
}

/// Refuses transactions etcd refuses: too many operations, or one key put
/// twice (or put and deleted) in the branch that may run.
fn check_txn(request: &TxnRequest) -> Result<(), Status> {
    let bytes: usize = [&request.success, &request.failure]
        .iter()
        .flat_map(|ops| ops.iter())
        .map(|op| match &op.request {
            Some(request_op::Request::RequestPut(put)) => put.key.len() + put.value.len(),
            _ => 0,
        })
        .sum();
    if bytes > MAX_REQUEST_BYTES {
        return Err(Status::invalid_argument("etcdserver: request is too large"));
    }
    for ops in [&request.success, &request.failure] {
        if ops.len() > MAX_TXN_OPS || request.compare.len() > MAX_TXN_OPS {
            return Err(Status::invalid_argument(
                "etcdserver: too many operations in txn request",
            ));
        }
        let mut puts = BTreeSet::new();
        for op in ops.iter() {
            if let Some(request_op::Request::RequestPut(put)) = &op.request {
                if !puts.insert(put.key.as_slice()) {
                    return Err(Status::invalid_argument(
                        "etcdserver: duplicate key given in txn request",
                    ));
                }
            }
        }
        for op in ops.iter() {
            if let Some(request_op::Request::RequestDeleteRange(delete)) = &op.request {
                let range = bounds(&delete.key, &delete.range_end);
                if puts.iter().any(|key| contains(key, range)) {
                    return Err(Status::invalid_argument(
                        "etcdserver: duplicate key given in txn request",
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sinew_cluster::etcd::api::etcdserverpb::compare::{CompareResult, CompareTarget};
    use sinew_cluster::etcd::api::etcdserverpb::RequestOp;

    fn commit(state: &mut State, run: impl FnOnce(&mut Tx<'_>)) {
        let mut tx = state.tx();
        run(&mut tx);
        let changes = tx.finish();
        state.apply(changes, Instant::now());
    }

    fn put(key: &str, value: &str) -> PutRequest {
        PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        }
    }

    fn get<'a>(state: &'a State, key: &str) -> Option<&'a KeyValue> {
        state.kvs.get(key.as_bytes())
    }

    #[test]
    fn revisions_versions_and_creation_are_kept_as_etcd_keeps_them() {
        let mut state = State::default();
        commit(&mut state, |tx| {
            tx.put(&put("a", "1")).unwrap();
        });
        commit(&mut state, |tx| {
            tx.put(&put("b", "1")).unwrap();
        });
        commit(&mut state, |tx| {
            let previous = tx
                .put(&PutRequest {
                    prev_kv: true,
                    ..put("a", "2")
                })
                .unwrap();
            assert_eq!(previous.prev_kv.unwrap().value, b"1");
        });
        assert_eq!(state.revision, 3);
        let a = get(&state, "a").unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 3, 2));
        // Deleted and put again: created anew.
        commit(&mut state, |tx| {
            let deleted = tx
                .delete_range(&DeleteRangeRequest {
                    key: "a".into(),
                    ..DeleteRangeRequest::default()
                })
                .unwrap();
            assert_eq!(deleted.deleted, 1);
        });
        commit(&mut state, |tx| {
            tx.put(&put("a", "3")).unwrap();
        });
        let a = get(&state, "a").unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
        // A request that changes nothing takes no revision.
        commit(&mut state, |tx| {
            let nothing = tx
                .delete_range(&DeleteRangeRequest {
                    key: "zzz".into(),
                    ..DeleteRangeRequest::default()
                })
                .unwrap();
            assert_eq!(nothing.deleted, 0);
        });
        assert_eq!(state.revision, 5);
        assert_eq!(state.history.len(), 5);
    }

    #[test]
    fn ranges_read_prefixes_limits_sorts_and_filters() {
        let mut state = State::default();
        for (key, value) in [("app/a", "3"), ("app/b", "1"), ("app/c", "2"), ("apq", "x")] {
            commit(&mut state, |tx| {
                tx.put(&put(key, value)).unwrap();
            });
        }
        let tx = state.tx();
        let range = |key: &str, end: &[u8]| RangeRequest {
            key: key.into(),
            range_end: end.to_vec(),
            ..RangeRequest::default()
        };
        let keys = |response: RangeResponse| -> Vec<String> {
            response
                .kvs
                .iter()
                .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
                .collect()
        };
        // The prefix "app/": [app/, app0).
        assert_eq!(
            keys(tx.range(&range("app/", b"app0")).unwrap()),
            ["app/a", "app/b", "app/c"]
        );
        assert_eq!(keys(tx.range(&range("app/b", b"")).unwrap()), ["app/b"]);
        assert_eq!(
            keys(tx.range(&range("app/c", b"\0")).unwrap()),
            ["app/c", "apq"]
        );
        assert_eq!(tx.range(&range("\0", b"\0")).unwrap().count, 4);
        let limited = tx
            .range(&RangeRequest {
                limit: 2,
                ..range("app/", b"app0")
            })
            .unwrap();
        assert!(limited.more);
        assert_eq!(limited.count, 3);
        assert_eq!(keys(limited), ["app/a", "app/b"]);
        let by_value = tx
            .range(&RangeRequest {
                sort_order: 2,
                sort_target: 4,
                ..range("app/", b"app0")
            })
            .unwrap();
        assert_eq!(keys(by_value), ["app/a", "app/c", "app/b"]);
        let recent = tx
            .range(&RangeRequest {
                min_mod_revision: 3,
                keys_only: true,
                ..range("\0", b"\0")
            })
            .unwrap();
        assert!(recent.kvs.iter().all(|kv| kv.value.is_empty()));
        assert_eq!(keys(recent), ["app/c", "apq"]);
        assert!(tx
            .range(&RangeRequest {
                revision: 2,
                ..range("app/", b"app0")
            })
            .is_err());
        assert_eq!(tx.range(&range("b", b"a")).unwrap().count, 0);
    }

    fn compare(
        key: &str,
        target: CompareTarget,
        result: CompareResult,
        with: compare::TargetUnion,
    ) -> Compare {
        Compare {
            result: result as i32,
            target: target as i32,
            key: key.into(),
            target_union: Some(with),
            range_end: Vec::new(),
        }
    }

    fn op_put(key: &str, value: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(put(key, value))),
        }
    }

    #[test]
    fn transactions_compare_then_run_one_branch_all_or_nothing() {
        let mut state = State::default();
        commit(&mut state, |tx| {
            tx.put(&put("counter", "1")).unwrap();
        });
        // Compare-and-swap on the value and on the mod revision.
        let cas = |expected: &str, next: &str| TxnRequest {
            compare: vec![compare(
                "counter",
                CompareTarget::Value,
                CompareResult::Equal,
                compare::TargetUnion::Value(expected.into()),
            )],
            success: vec![op_put("counter", next)],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: "counter".into(),
                    ..RangeRequest::default()
                })),
            }],
        };
        commit(&mut state, |tx| {
            assert!(tx.txn(&cas("1", "2")).unwrap().succeeded);
        });
        commit(&mut state, |tx| {
            let lost = tx.txn(&cas("1", "3")).unwrap();
            assert!(!lost.succeeded);
            let Some(response_op::Response::ResponseRange(now)) = &lost.responses[0].response
            else {
                panic!("{lost:?}");
            };
            assert_eq!(now.kvs[0].value, b"2");
        });
        assert_eq!(get(&state, "counter").unwrap().value, b"2");
        assert_eq!(state.revision, 2, "a failed CAS writes nothing");
        // Create-if-absent: create revision 0 means missing; a value
        // comparison on a missing key fails.
        let absent = |key: &str| TxnRequest {
            compare: vec![compare(
                key,
                CompareTarget::Create,
                CompareResult::Equal,
                compare::TargetUnion::CreateRevision(0),
            )],
            success: vec![op_put(key, "mine")],
            failure: vec![],
        };
        commit(&mut state, |tx| {
            assert!(tx.txn(&absent("lock")).unwrap().succeeded);
            assert!(!tx.txn(&absent("counter")).unwrap().succeeded);
            assert!(!tx.holds(&compare(
                "nope",
                CompareTarget::Value,
                CompareResult::NotEqual,
                compare::TargetUnion::Value("x".into())
            )));
        });
        // All or nothing: a failing op (an unknown lease) leaves no change.
        let mut tx = state.tx();
        let failing = TxnRequest {
            compare: vec![],
            success: vec![
                op_put("x", "1"),
                RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        lease: 99,
                        ..put("y", "1")
                    })),
                },
            ],
            failure: vec![],
        };
        assert_eq!(
            tx.txn(&failing).unwrap_err().code(),
            sinew_rpc::Code::NotFound
        );
        drop(tx);
        assert!(get(&state, "x").is_none());
        // Refused outright: a key put twice, too many operations.
        let mut tx = state.tx();
        let twice = TxnRequest {
            success: vec![op_put("k", "1"), op_put("k", "2")],
            ..TxnRequest::default()
        };
        assert!(tx.txn(&twice).is_err());
        let many = TxnRequest {
            success: (0..=MAX_TXN_OPS)
                .map(|i| op_put(&i.to_string(), "v"))
                .collect(),
            ..TxnRequest::default()
        };
        assert!(tx.txn(&many).is_err());
    }

    #[test]
    fn leases_take_their_keys_with_them() {
        let mut state = State::default();
        let mut id = 0;
        commit(&mut state, |tx| {
            id = tx.grant(0, 10).unwrap();
            tx.put(&PutRequest {
                lease: id,
                ..put("held", "1")
            })
            .unwrap();
            tx.put(&put("kept", "1")).unwrap();
        });
        assert_eq!(state.leases[&id].keys.len(), 1);
        // Put again without the lease: no longer its key.
        commit(&mut state, |tx| {
            tx.put(&PutRequest {
                lease: id,
                ..put("moved", "1")
            })
            .unwrap();
        });
        assert_eq!(state.leases[&id].keys.len(), 2);
        commit(&mut state, |tx| {
            tx.put(&put("moved", "2")).unwrap();
        });
        assert_eq!(state.leases[&id].keys.len(), 1);
        commit(&mut state, |tx| tx.revoke(id).unwrap());
        assert!(get(&state, "held").is_none());
        assert!(get(&state, "kept").is_some() && get(&state, "moved").is_some());
        assert!(state.leases.is_empty());
        let mut tx = state.tx();
        assert_eq!(tx.revoke(id).unwrap_err().code(), sinew_rpc::Code::NotFound);
        assert!(tx.grant(0, 0).is_err());
        let next = tx.grant(0, 5).unwrap();
        assert!(next > id, "ids are not reused");
    }

    #[test]
    fn what_etcd_refuses_is_refused() {
        let mut state = State::default();
        let mut tx = state.tx();
        assert_eq!(
            tx.grant(0, MAX_LEASE_TTL + 1).unwrap_err().code(),
            sinew_rpc::Code::OutOfRange
        );
        assert!(tx.grant(0, i64::MAX).is_err(), "no overflow past the cap");
        let huge = tx.grant(0, MAX_LEASE_TTL).unwrap();
        assert!(tx.range(&RangeRequest::default()).is_err(), "an empty key");
        assert!(tx
            .delete_range(&DeleteRangeRequest {
                range_end: vec![0],
                ..DeleteRangeRequest::default()
            })
            .is_err());
        let changes = tx.finish();
        state.apply(changes, Instant::now());
        assert!(state.leases.contains_key(&huge));
    }

    #[test]
    fn a_compare_over_an_empty_range_is_one_over_a_missing_key() {
        let state = State::default();
        let tx = state.tx();
        let over =
            |target: CompareTarget, result: CompareResult, with: compare::TargetUnion| Compare {
                range_end: b"b".to_vec(),
                ..compare("a", target, result, with)
            };
        assert!(!tx.holds(&over(
            CompareTarget::Version,
            CompareResult::Greater,
            compare::TargetUnion::Version(0)
        )));
        assert!(tx.holds(&over(
            CompareTarget::Version,
            CompareResult::Equal,
            compare::TargetUnion::Version(0)
        )));
        assert!(!tx.holds(&over(
            CompareTarget::Value,
            CompareResult::Equal,
            compare::TargetUnion::Value(Vec::new())
        )));
    }

    #[test]
    fn the_history_is_bounded_and_compaction_is_checked() {
        let mut state = State::default();
        for i in 0..10 {
            commit(&mut state, |tx| {
                tx.put(&put("k", &i.to_string())).unwrap();
            });
        }
        assert!(state.compact(11).is_err(), "a future revision");
        state.compact(4).unwrap();
        assert_eq!(state.compacted, 4);
        assert_eq!(state.history.front().unwrap().0, 5);
        assert!(state.compact(3).is_err(), "compacted already");
    }
}
