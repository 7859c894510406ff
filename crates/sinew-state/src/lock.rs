//! Distributed locks with fencing tokens, as etcd's own `concurrency`
//! package takes them, over the store's KV, watch and lease API (so on
//! etcd and on the embedded store alike).
//!
//! Contenders queue under `/sinew/locks/<name>/` (see `queue.rs`): the
//! first holds the lock, each other waits for the one before it. The
//! holder's **fencing token** is its key's create revision, strictly
//! increasing from one holder to the next. A guarded resource that remembers
//! the highest token it has seen ([`Fence`]) refuses a late write from a
//! holder that has lost the lock without knowing it (paused, partitioned).
//!
//! [`LockGuard::lost`] resolves when the lock can no longer be counted on:
//! its lease lost (see [`crate::lease`]: told before the store can expire
//! it) or its key deleted. Releasing (or dropping) the guard revokes its
//! lease, which deletes the key and wakes the next waiter.

use crate::lease::{Lease, Lost};
pub use crate::queue::FencingToken;
use crate::queue::{Place, Queue};
use sinew_cluster::etcd::api::etcdserverpb::Compare;
use sinew_cluster::etcd::Etcd;
use sinew_rpc::Status;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The time to live of a lock's lease unless set.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// A named lock in the store; see the module docs.
#[derive(Clone, Debug)]
pub struct Lock {
    queue: Queue,
}

impl Lock {
    /// The lock `name`, its keys under `/sinew/locks/<name>/`.
    pub fn new(etcd: Etcd, name: &str) -> Lock {
        Lock {
            queue: Queue {
                etcd,
                prefix: format!("/sinew/locks/{name}/").into_bytes(),
                ttl: DEFAULT_TTL,
            },
        }
    }

    /// The time to live of the lease a holder keeps (default 10 s): how
    /// long a holder that dies keeps the lock from the others.
    pub fn with_ttl(mut self, ttl: Duration) -> Lock {
        self.queue.ttl = ttl;
        self
    }

    /// Takes the lock, waiting for the holders before; cancel-safe (a
    /// waiter dropped takes its key away).
    pub async fn acquire(&self) -> Result<LockGuard, Status> {
        let lease = Lease::grant(&self.queue.etcd, self.queue.ttl).await?;
        let entry = self.queue.enqueue(&lease, b"").await?;
        if entry.head != Some(entry.token) {
            self.queue
                .wait_turn(entry.token, &mut lease.lost())
                .await
                .map_err(|status| {
                    Status::aborted(format!("the lock was not taken: {}", status.message()))
                })?;
        }
        let place = self.queue.hold(lease, entry).await?;
        Ok(LockGuard { place })
    }

    /// Takes the lock if no one holds it; `None` otherwise.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, Status> {
        let lease = Lease::grant(&self.queue.etcd, self.queue.ttl).await?;
        let entry = self.queue.enqueue(&lease, b"").await?;
        if entry.head != Some(entry.token) {
            // Revoking the lease takes the key away.
            lease.revoke().await?;
            return Ok(None);
        }
        let place = self.queue.hold(lease, entry).await?;
        Ok(Some(LockGuard { place }))
    }
}

/// A held lock; see the module docs. Dropping it releases the lock in a
/// task of the runtime (if one still runs; otherwise the lock frees when its
/// lease expires): call [`LockGuard::release`] to know it is released.
#[derive(Debug)]
pub struct LockGuard {
    place: Place,
}

impl LockGuard {
    /// The token to show a guarded resource.
    pub fn fencing_token(&self) -> FencingToken {
        self.place.token
    }

    /// The lock's key in the store.
    pub fn key(&self) -> &[u8] {
        &self.place.key
    }

    /// Resolves when the lock can no longer be counted on: stop the work
    /// it guards.
    pub fn lost(&self) -> Lost {
        self.place.lost()
    }

    /// The comparison that holds while this guard holds the lock: put it
    /// in a transaction to make a write to the store conditional on it.
    pub fn owner_compare(&self) -> Compare {
        self.place.owner_compare()
    }

    /// Releases the lock: its key goes, the next waiter takes it.
    pub async fn release(self) -> Result<(), Status> {
        self.place.leave().await
    }

    /// Stops keeping the lock alive without releasing it, as a killed
    /// holder would: it frees up when its lease expires.
    pub fn orphan(self) {
        self.place.orphan();
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
