//! Discovery as a stream of updates: a [`Resolve`]r turns a service name into
//! the endpoints that serve it, now and as they change.
//!
//! A resolver's stream yields [`Update`]s: endpoints added, endpoints
//! removed, or the whole set reset (linkerd2-proxy's shape). A balancer
//! applies them in order to its endpoint set. An `Err` on the stream is a
//! failure to resolve *now* (the registry is unreachable, the name is
//! unknown): the balancer keeps the set it has (never an empty set because a
//! registry blinked) and reports the error to callers only while it has no
//! endpoint at all. The stream ending means no more updates will come; the
//! set stays as it is.
//!
//! Resolvers: [`Fixed`] (a static list), [`Dns`] (A/AAAA and SRV records).
//! The embedded gossip registry and etcd come as their own modules.

mod dns;
mod fixed;

pub use dns::Dns;
pub use fixed::Fixed;

use crate::endpoint::Endpoint;
use sinew_rpc::Status;
use sinew_transport::Address;
use std::pin::Pin;

/// A change to a service's set of endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// These endpoints serve the service (an address already in the set is
    /// replaced: its weight, zone and metadata).
    Add(Vec<Endpoint>),
    /// These addresses no longer serve it.
    Remove(Vec<Address>),
    /// The set is exactly these endpoints from now on.
    Reset(Vec<Endpoint>),
}

/// The updates of one service's endpoints, or why they cannot be had now.
pub type Updates = Pin<Box<dyn futures_core::Stream<Item = Result<Update, Status>> + Send>>;

/// Turns a service name into the stream of its endpoints.
///
/// One resolver serves many names (a registry); each [`resolve`] is an
/// independent stream. Implementations start with the current set (an
/// [`Update::Reset`], or `Add`s) and follow with changes.
///
/// [`resolve`]: Resolve::resolve
pub trait Resolve: Send + Sync + 'static {
    /// The endpoints of `service`, as they change.
    fn resolve(&self, service: &str) -> Updates;

    /// A hint from the balancer: an endpoint of `service` failed to connect,
    /// so what the resolver last said may be stale. Resolvers that look up
    /// periodically (DNS) look again now; those that are told of changes
    /// (gossip, etcd) ignore it.
    fn reresolve(&self, service: &str) {
        let _ = service;
    }
}

impl<R: Resolve + ?Sized> Resolve for std::sync::Arc<R> {
    fn resolve(&self, service: &str) -> Updates {
        (**self).resolve(service)
    }

    fn reresolve(&self, service: &str) {
        (**self).reresolve(service)
    }
}
