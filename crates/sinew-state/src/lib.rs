//! Shared state for sinew services: a consistent key-value store with
//! etcd's semantics (revisions, compare-and-swap transactions, leases,
//! watches from a revision), on etcd in production and on an embedded
//! store for development.
//!
//! * [`embedded`]: the embedded store, one node persisted in redb, with
//!   etcd's v3 semantics and message types (not replicated; see its docs
//!   for what it gives and how it differs from etcd), and
//!   [`Store::serve_etcd_api`](embedded::Store::serve_etcd_api): the store
//!   served as etcd's v3 gRPC API (`KV`, `Watch`, `Lease`,
//!   `Maintenance.Status`), so etcd's clients, sinew's among them, use it
//!   as they use etcd.
//!
//! * [`Kv`]: get, list a prefix, put (on a lease), delete, compare-and-swap,
//!   watch a prefix's changes from a revision ([`Watch`]), follow a prefix; linearizable reads unless asked otherwise.
//! * [`Config`]: a protobuf message under a key, with the latest value
//!   always at hand ([`ConfigWatch`]).
//! * [`Lease`]: a lease kept alive, whose [`Lost`] signal resolves before
//!   the store can expire it.
//! * [`Lock`]: a distributed lock with fencing tokens ([`FencingToken`],
//!   checked by a guarded resource with a [`Fence`]), etcd's algorithm.
//! * [`Election`]: leader election (campaign, observe, proclaim, resign,
//!   and a [`Leadership`] told when it is lost), etcd's algorithm.
//!
//! Both backends speak etcd's v3 API (`sinew_cluster::etcd::api`), so the
//! locks, elections and typed configuration built on it work on either.

#![forbid(unsafe_code)]

pub mod config;
pub mod election;
pub mod embedded;
pub mod kv;
pub mod lease;
pub mod lock;
mod queue;

pub use config::{Config, ConfigWatch, Versioned};
pub use election::{Election, Leader, Leadership, Observer};
pub use kv::{outcome_unknown, Change, Expect, KeyValue, Kv, Swap, Watch, Watched};
pub use lease::{Lease, Lost, LostReason};
pub use lock::{Fence, FencingToken, Lock, LockGuard};
