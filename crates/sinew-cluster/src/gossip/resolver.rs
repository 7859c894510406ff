//! [`GossipResolver`]: a service's endpoints as the live members of a gossip
//! cluster publish them.

use super::record::{endpoints_of, services};
use super::Inner;
use crate::registry::{service_list, Told};
use crate::resolve::{Resolve, Update, Updates};
use chitchat::{ChitchatId, NodeState};
use sinew_rpc::Status;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Resolves service names to the endpoints the live members of a gossip
/// cluster publish; made by [`Member::resolver`](super::Member::resolver).
///
/// Each stream starts with the current set (an [`Update::Reset`]) and sends
/// the whole set again whenever it changes: a member publishes or
/// withdraws, joins, leaves, or is declared dead. A name no live member
/// publishes is an error naming the services that are published (once the
/// member had time to hear from its seeds); the stream goes on, and the
/// service's endpoints come when a member publishes it.
#[derive(Clone)]
pub struct GossipResolver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GossipResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipResolver")
            .field("cluster", &self.inner.cluster)
            .field("member", &&*self.inner.id.node_id)
            .finish()
    }
}

impl GossipResolver {
    pub(super) fn new(inner: Arc<Inner>) -> GossipResolver {
        GossipResolver { inner }
    }
}

impl Resolve for GossipResolver {
    fn resolve(&self, service: &str) -> Updates {
        let follow = Follow {
            inner: self.inner.clone(),
            live: self.inner.live.clone(),
            service: service.to_owned(),
            told: Told::default(),
        };
        Box::pin(futures_util::stream::unfold(follow, Follow::next))
    }
}

/// One resolution's state.
struct Follow {
    /// Keeps the member in the cluster while the stream lives.
    inner: Arc<Inner>,
    live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    service: String,
    told: Told,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Update, Status>, Follow)> {
        loop {
            let (endpoints, known, alone) = {
                let members = self.live.borrow_and_update();
                let endpoints = endpoints_of(&members, &self.service);
                let known = endpoints.is_empty().then(|| services(&members));
                (endpoints, known, members.len() <= 1)
            };
            if let Some(update) = self.told.update(&endpoints) {
                return Some((Ok(update), self));
            }
            let synced = tokio::time::Instant::now() >= self.inner.first_sync.into();
            if synced && self.told.say_unknown(&endpoints) {
                // (Listed whenever the set is empty, which it is here.)
                let known = service_list(known.iter().flatten().map(String::as_str));
                let status = if alone && !self.inner.seeds.is_empty() {
                    Status::unavailable(format!(
                        "no member of cluster {} answered at {}",
                        self.inner.cluster,
                        self.inner.seeds.join(", ")
                    ))
                } else {
                    Status::not_found(format!(
                        "no live member of cluster {} publishes {}; services published: {known}",
                        self.inner.cluster, self.service
                    ))
                };
                return Some((Err(status), self));
            }
            let first_sync = self.inner.first_sync;
            let waiting_for_sync = !synced && !self.told.sent_any();
            tokio::select! {
                changed = self.live.changed() => {
                    // The member stopped gossiping (it left): no more updates.
                    changed.ok()?;
                }
                () = tokio::time::sleep_until(first_sync.into()), if waiting_for_sync => {}
            }
        }
    }
}
