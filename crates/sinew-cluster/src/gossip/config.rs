//! Service configs in the gossiped state: a member publishes the config
//! of a service (gRPC's service config JSON, as
//! `sinew_resilience::ServiceConfig` reads it; the text is passed on as
//! written) under `sinew.config:<service>`, with the time that version was
//! written (a file's modification time). The config of a service is the
//! newest written that a live member (not leaving) publishes, so a member
//! that publishes a new one changes it for every client in a round or two
//! of gossip, a member restarted with an old copy changes nothing, and if
//! the member of the newest dies, the newest left takes over. Times come
//! from the clocks of the machines the versions were written on: keep them
//! in sync (as NTP does) or write configs in one place.
//!
//! The value is JSON `{"published_ms": <unix ms>, "config": "<the text>"}`;
//! one that does not parse is skipped (with a debug event), as endpoint
//! records are.

use super::record::is_leaving;
use super::Inner;
use chitchat::{ChitchatId, NodeState};
use futures_core::Stream;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;

/// Prefix of the keys that publish a service's config.
pub(super) const CONFIG_PREFIX: &str = "sinew.config:";

/// The longest config a member gossips, in bytes: a gossip message is one
/// UDP datagram. Larger configs belong in a file or an etcd key.
pub const MAX_SERVICE_CONFIG: usize = 16 << 10;

/// The key that publishes `service`'s config.
pub(super) fn key(service: &str) -> String {
    format!("{CONFIG_PREFIX}{service}")
}

/// A published config.
#[derive(Serialize, Deserialize)]
pub(super) struct ConfigRecord {
    pub(super) published_ms: u64,
    pub(super) config: String,
}

/// The newest config of `service` that a live member, not leaving,
/// publishes (ties go to the greater member name).
pub(super) fn newest(members: &BTreeMap<ChitchatId, NodeState>, service: &str) -> Option<String> {
    let key = key(service);
    members
        .iter()
        .filter(|(_, node)| !is_leaving(node))
        .filter_map(|(id, node)| {
            let value = node.get(&key)?;
            match serde_json::from_str::<ConfigRecord>(value) {
                Ok(record) => Some(((record.published_ms, id.node_id.clone()), record.config)),
                Err(error) => {
                    tracing::debug!(member = %id.node_id, %key, %error, "skipping a service config record that does not parse");
                    None
                }
            }
        })
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, config)| config)
}

/// The config of a service as it changes: the one in force when asked
/// (`None`: no member publishes one), then each different one. Made by
/// [`Member::service_configs`](super::Member::service_configs); ends when
/// the member stops gossiping.
pub type ServiceConfigs = Pin<Box<dyn Stream<Item = Option<String>> + Send>>;

/// One follow of a service's config.
struct Follow {
    /// Keeps the member in the cluster while the stream lives.
    _inner: Arc<Inner>,
    live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    service: String,
    /// What was said last (`None` before the first).
    told: Option<Option<String>>,
}

pub(super) fn follow(inner: Arc<Inner>, service: &str) -> ServiceConfigs {
    let follow = Follow {
        live: inner.live.clone(),
        _inner: inner,
        service: service.to_owned(),
        told: None,
    };
    Box::pin(futures_util::stream::unfold(
        follow,
        |mut follow| async move {
            loop {
                let now = newest(&follow.live.borrow_and_update(), &follow.service);
                if follow.told.as_ref() != Some(&now) {
                    follow.told = Some(now.clone());
                    return Some((now, follow));
                }
                // The member stopped gossiping (it left): no more changes.
                follow.live.changed().await.ok()?;
            }
        },
    ))
}
