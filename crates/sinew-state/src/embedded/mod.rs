//! The embedded store: one node's consistent KV with etcd's semantics,
//! persisted in redb, for development and `sinew demo`. **Not
//! replicated**: it is as available and as durable as the one machine
//! and disk it runs on. Production runs on etcd; both speak etcd's v3 API,
//! so everything built on the store works on either.
//!
//! ```text
//!  requests (etcd's message types) ─▶ Store ─▶ state.rs: a Tx over the keys, leases ─▶ Changes
//!                                        │                                              │
//!                                        │      disk.rs: one redb transaction, fsynced ◀┘
//!                                        │      then applied in memory, revision + 1
//!  Watcher ◀── history of recent revisions (bounded) ◀── notified of each new revision
//! ```
//!
//! What it gives, and how it differs from etcd:
//!
//! * **Revisions** as etcd's: one store-wide revision, raised by each
//!   request that changes a key; every key's `create_revision`,
//!   `mod_revision` and `version`. A write is answered once it is on disk.
//! * **Reads are linearizable** (there is one copy, and requests are
//!   applied one at a time under one lock): `serializable` makes no
//!   difference. Reads are of the newest revision only: the store keeps
//!   no older values, so a range at an older revision is refused as
//!   compacted (etcd keeps them until compaction).
//! * **Transactions** compare versions, revisions, values and leases (over
//!   a key or a range) and run one branch, all of it or nothing; etcd's
//!   limits hold (128 operations, a key put once, 1.5 MiB a request).
//! * **Leases** expire when not kept alive within their TTL, deleting
//!   their keys in one revision; after a restart each gets its whole TTL
//!   again, as etcd gives them after a leader change.
//! * **Watches** start from a revision still in the history (the changes
//!   of the last 65 536 events or 64 MiB, and none from before a restart); from an
//!   older one they end with the compact revision, and the watcher lists
//!   again and watches from there, as it must with etcd after compaction.
//!   A watcher reads the history at its own pace; one that falls further
//!   behind than the history ends the same way, so a slow watcher costs
//!   no memory.
//!
//! The data set is held in memory (and in the redb file): this is a store
//! for configuration, locks and leaders, not for bulk data.

mod disk;
mod serve;
mod state;

pub use serve::{EtcdApi, MAX_WATCHES_PER_STREAM};

use disk::Disk;
use sinew_cluster::etcd::api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse, WatchCreateRequest,
};
use sinew_cluster::etcd::api::mvccpb::{event::EventType, Event};
use sinew_rpc::Status;
use state::{State, Tx};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How often expired leases are looked for.
const EXPIRY_CHECK: Duration = Duration::from_millis(100);

/// The most events one [`Watcher::next`] returns.
const WATCH_BATCH: usize = 1024;

/// The most bytes of keys and values one [`Watcher::next`] returns (unless
/// one revision alone holds more), well under a gRPC client's 4 MiB.
const WATCH_BATCH_BYTES: usize = 1024 * 1024;

/// An embedded store; cheap to clone (clones share it). See the module
/// docs.
///
/// Its writing methods block while the write is made durable (an fsync):
/// call them from blocking contexts (`spawn_blocking`) in async code that
/// must not stall. Reads, keep-alives and watchers never wait for an fsync:
/// writes hold the state's lock only to read it and to apply their
/// changes.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    disk: Disk,
    /// Held by a write request from its reads to its apply (across the
    /// fsync), so that writes apply in order; the state's own lock is
    /// taken only briefly.
    writer: Mutex<()>,
    state: Mutex<State>,
    /// The revision, sent on every change: watchers wait on it.
    changed: tokio::sync::watch::Sender<i64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("revision", &self.revision())
            .finish()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic under the lock leaves the state as it was before the
    // request (changes are applied only once written).
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store {
    /// Opens the store in the redb file at `path` (created if missing).
    /// Must be called within a tokio runtime: leases are expired by a
    /// task of the store's, which ends when the last clone is dropped.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Store, Status> {
        Store::start(Disk::open(path.as_ref())?)
    }

    /// A store in memory only, gone when dropped (tests and throwaway
    /// demos). Within a tokio runtime, as [`Store::open`].
    pub fn in_memory() -> Result<Store, Status> {
        Store::start(Disk::in_memory()?)
    }

    fn start(disk: Disk) -> Result<Store, Status> {
        let state = disk.load(Instant::now())?;
        let (changed, _) = tokio::sync::watch::channel(state.revision);
        let inner = Arc::new(Inner {
            disk,
            writer: Mutex::new(()),
            state: Mutex::new(state),
            changed,
        });
        tokio::spawn(expire(Arc::downgrade(&inner)));
        Ok(Store { inner })
    }

    /// The revision of the last change.
    pub fn revision(&self) -> i64 {
        lock(&self.inner.state).revision
    }

    /// The header of an answer given now.
    pub(crate) fn header(&self) -> sinew_cluster::etcd::api::etcdserverpb::ResponseHeader {
        lock(&self.inner.state).header()
    }

    /// Runs a write request: persisted, then applied and answered.
    fn write<T>(
        &self,
        run: impl FnOnce(&mut Tx<'_>) -> Result<T, Status>,
    ) -> Result<(T, Applied), Status> {
        // One write at a time, from its reads to its apply; readers (and
        // keep-alives, watchers) take only the state's lock, never held
        // across the fsync.
        let _writing = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (out, changes) = {
            let state = lock(&self.inner.state);
            let mut tx = state.tx();
            let out = run(&mut tx)?;
            (out, tx.finish())
        };
        let touched = changes.revision.is_some()
            || !changes.leases.is_empty()
            || changes.next_lease.is_some();
        if touched {
            self.inner.disk.write(&changes)?;
        }
        let mut state = lock(&self.inner.state);
        if touched {
            state.apply(changes, Instant::now());
        }
        let header = state.header();
        let revision = state.revision;
        drop(state);
        if touched {
            self.inner.changed.send_replace(revision);
        }
        Ok((out, Applied { header }))
    }

    /// Keys (one, a range, or every key from one on), as etcd's `Range`.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Status> {
        let state = lock(&self.inner.state);
        let mut response = state.tx().range(request)?;
        response.header = Some(state.header());
        Ok(response)
    }

    /// Sets a key, as etcd's `Put`.
    pub fn put(&self, request: &PutRequest) -> Result<PutResponse, Status> {
        let (mut response, at) = self.write(|tx| tx.put(request))?;
        response.header = Some(at.header);
        Ok(response)
    }

    /// Deletes keys, as etcd's `DeleteRange`.
    pub fn delete_range(
        &self,
        request: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Status> {
        let (mut response, at) = self.write(|tx| tx.delete_range(request))?;
        response.header = Some(at.header);
        Ok(response)
    }

    /// Compares, then runs one branch, as etcd's `Txn`.
    pub fn txn(&self, request: &TxnRequest) -> Result<TxnResponse, Status> {
        let (mut response, at) = self.write(|tx| tx.txn(request))?;
        response.header = Some(at.header);
        Ok(response)
    }

    /// Drops the watch history up to a revision, as etcd's `Compact`.
    pub fn compact(&self, request: &CompactionRequest) -> Result<CompactionResponse, Status> {
        let mut state = lock(&self.inner.state);
        state.compact(request.revision)?;
        let header = state.header();
        drop(state);
        // Watchers behind the compaction are told now, not at the next write.
        self.inner.changed.send_modify(|_| {});
        Ok(CompactionResponse {
            header: Some(header),
        })
    }

    /// Grants a lease, as etcd's `LeaseGrant`.
    pub fn lease_grant(&self, request: &LeaseGrantRequest) -> Result<LeaseGrantResponse, Status> {
        let (id, at) = self.write(|tx| tx.grant(request.id, request.ttl))?;
        Ok(LeaseGrantResponse {
            header: Some(at.header),
            id,
            ttl: request.ttl,
            error: String::new(),
        })
    }

    /// Revokes a lease and deletes its keys, as etcd's `LeaseRevoke`.
    pub fn lease_revoke(
        &self,
        request: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, Status> {
        let ((), at) = self.write(|tx| tx.revoke(request.id))?;
        Ok(LeaseRevokeResponse {
            header: Some(at.header),
        })
    }

    /// Renews a lease for its whole TTL, as one message of etcd's
    /// `LeaseKeepAlive`: the TTL, or 0 when the lease is gone.
    pub fn lease_keep_alive(&self, id: i64) -> LeaseKeepAliveResponse {
        let mut state = lock(&self.inner.state);
        let now = Instant::now();
        let ttl = match state.leases.get_mut(&id) {
            Some(lease) if lease.deadline > now => {
                lease.deadline = state::expiry(now, lease.ttl);
                lease.ttl
            }
            _ => 0,
        };
        LeaseKeepAliveResponse {
            header: Some(state.header()),
            id,
            ttl,
        }
    }

    /// A lease's remaining time (whole seconds, rounded up; -1 when it is
    /// gone), as etcd's `LeaseTimeToLive`.
    pub fn lease_time_to_live(&self, request: &LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse {
        let state = lock(&self.inner.state);
        let now = Instant::now();
        let (ttl, granted, keys) = match state.leases.get(&request.id) {
            Some(lease) if lease.deadline > now => {
                let left = lease.deadline - now;
                let seconds = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
                let keys = if request.keys {
                    lease.keys.iter().cloned().collect()
                } else {
                    Vec::new()
                };
                (seconds, lease.ttl, keys)
            }
            _ => (-1, 0, Vec::new()),
        };
        LeaseTimeToLiveResponse {
            header: Some(state.header()),
            id: request.id,
            ttl,
            granted_ttl: granted,
            keys,
        }
    }

    /// Watches keys from `start_revision` (0: from the next change), as
    /// one watch of etcd's `Watch`; [`WatchEnd::Compacted`] at once when
    /// that revision is compacted (see [`Watcher::next`] for later).
    pub fn watch(&self, request: &WatchCreateRequest) -> Result<Watcher, WatchEnd> {
        use sinew_cluster::etcd::api::etcdserverpb::watch_create_request::FilterType;
        let state = lock(&self.inner.state);
        let next = match request.start_revision {
            0 => state.revision + 1,
            start if start <= state.compacted => {
                return Err(WatchEnd::Compacted {
                    compact_revision: state.compacted,
                })
            }
            start => start,
        };
        let filtered = |filter: FilterType| request.filters.contains(&(filter as i32));
        Ok(Watcher {
            store: Arc::downgrade(&self.inner),
            changed: self.inner.changed.subscribe(),
            next,
            key: request.key.clone(),
            range_end: request.range_end.clone(),
            no_put: filtered(FilterType::Noput),
            no_delete: filtered(FilterType::Nodelete),
            prev_kv: request.prev_kv,
        })
    }
}

/// What a write request's answer carries of the store after it.
struct Applied {
    header: sinew_cluster::etcd::api::etcdserverpb::ResponseHeader,
}

/// Revokes leases past their deadline until the store is gone.
async fn expire(store: Weak<Inner>) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = store.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<i64> = lock(&inner.state)
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let store = Store { inner };
        for id in expired {
            // Kept alive since, or revoked: nothing to do.
            let still = lock(&store.inner.state)
                .leases
                .get(&id)
                .is_some_and(|lease| lease.deadline <= Instant::now());
            if still {
                // A write waits for its fsync: off the runtime's threads.
                let store = store.clone();
                let revoked =
                    tokio::task::spawn_blocking(move || store.write(|tx| tx.revoke(id))).await;
                if let Ok(Err(status)) = revoked {
                    tracing::warn!(lease = id, %status, "an expired lease could not be revoked");
                }
            }
        }
    }
}

/// Why a watch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// The revision it was to go on from is no longer in the history:
    /// list again (as of `compact_revision` or later) and watch on from
    /// there.
    Compacted {
        /// The newest revision compacted away.
        compact_revision: i64,
    },
    /// The store is gone.
    Closed,
}

/// One watch's changes, read at its own pace; see [`Store::watch`].
pub struct Watcher {
    store: Weak<Inner>,
    changed: tokio::sync::watch::Receiver<i64>,
    next: i64,
    key: Vec<u8>,
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("next", &self.next).finish()
    }
}

impl Watcher {
    /// The revision the next changes are looked for from.
    pub fn next_revision(&self) -> i64 {
        self.next
    }

    /// The next changes of the watched keys, in revision order (at most
    /// 1024 events, all of a revision together): waits for them. The
    /// revision returned is the newest the events cover.
    pub async fn next(&mut self) -> Result<(i64, Vec<Event>), WatchEnd> {
        loop {
            {
                let Some(store) = self.store.upgrade() else {
                    return Err(WatchEnd::Closed);
                };
                let state = lock(&store.state);
                if self.next <= state.compacted {
                    return Err(WatchEnd::Compacted {
                        compact_revision: state.compacted,
                    });
                }
                if self.next <= state.revision {
                    let start = state
                        .history
                        .partition_point(|(revision, _)| *revision < self.next);
                    let bounds = state::bounds(&self.key, &self.range_end);
                    let mut events = Vec::new();
                    let mut last = self.next - 1;
                    let mut bytes = 0;
                    for (revision, changes) in state.history.iter().skip(start) {
                        // Bounded in events and bytes, a revision's events
                        // always together (and at least one revision).
                        let size = state::events_bytes(changes);
                        if !events.is_empty()
                            && (events.len() + changes.len() > WATCH_BATCH
                                || bytes + size > WATCH_BATCH_BYTES)
                        {
                            break;
                        }
                        bytes += size;
                        last = *revision;
                        for event in changes.iter() {
                            let key = event.kv.as_ref().map_or(&[][..], |kv| kv.key.as_slice());
                            let put = event.r#type == EventType::Put as i32;
                            if !state::contains(key, bounds)
                                || (put && self.no_put)
                                || (!put && self.no_delete)
                            {
                                continue;
                            }
                            let mut event = event.clone();
                            if !self.prev_kv {
                                event.prev_kv = None;
                            }
                            events.push(event);
                        }
                    }
                    self.next = last + 1;
                    if !events.is_empty() {
                        return Ok((last, events));
                    }
                }
            }
            if self.changed.changed().await.is_err() {
                return Err(WatchEnd::Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
