//! How a member's endpoints are written in its gossiped state, and read back
//! into the [`Endpoint`]s of a service.
//!
//! Each member gossips a small key-value map (chitchat's node state). sinew
//! uses these keys in it:
//!
//! | key | value |
//! |---|---|
//! | `sinew.endpoint:<address>` | the address's record (`registry.rs`): JSON `{"services": [...], "weight": 1, "zone": "...", "metadata": {...}}` |
//! | `sinew.zone` | the member's zone, the default of its endpoints' |
//! | `sinew.role` | `server` or `observer` |
//! | `sinew.state` | `leaving` once a member has begun to leave |
//! | `sinew.config:<service>` | a service config the member publishes (`config.rs`) |
//!
//! A value
//! that does not parse (a member of another version, or one that writes
//! garbage) is skipped with a debug event; the rest of the state stands.

use crate::endpoint::Endpoint;
use crate::registry::Record;
use chitchat::{ChitchatId, NodeState};
use sinew_transport::Address;
use std::collections::{BTreeMap, BTreeSet};

/// Prefix of the keys that publish an endpoint.
pub(super) const ENDPOINT_PREFIX: &str = "sinew.endpoint:";
/// The member's zone.
pub(super) const ZONE_KEY: &str = "sinew.zone";
/// `server` or `observer`.
pub(super) const ROLE_KEY: &str = "sinew.role";
/// The member's admin endpoint (`http://host:port`), if it serves one: where
/// `sinew dashboard` reads its figures.
pub(super) const ADMIN_KEY: &str = crate::ADMIN_METADATA;
/// `leaving` once the member has begun to leave.
pub(super) const STATE_KEY: &str = "sinew.state";
/// The value of [`STATE_KEY`] once the member has begun to leave.
pub(super) const LEAVING: &str = "leaving";

/// The metadata key under which the resolver tells which member published an
/// endpoint.
pub const MEMBER_METADATA: &str = "sinew.member";

/// The key that publishes `address`.
pub(super) fn key(address: &Address) -> String {
    format!("{ENDPOINT_PREFIX}{address}")
}

/// Whether the member has begun to leave (its endpoints no longer count).
pub(super) fn is_leaving(node: &NodeState) -> bool {
    node.get(STATE_KEY) == Some(LEAVING)
}

/// The records a member publishes, with their addresses; unparsable ones are
/// skipped.
pub(super) fn records(node: &NodeState) -> impl Iterator<Item = (Address, Record)> + '_ {
    node.iter_prefix(ENDPOINT_PREFIX)
        .filter_map(move |(key, value)| {
            let text = &key[ENDPOINT_PREFIX.len()..];
            let parsed = text
                .parse::<Address>()
                .ok()
                .zip(Record::decode(value.value.as_bytes()));
            if parsed.is_none() {
                tracing::debug!(
                    member = %node.chitchat_id().node_id,
                    key,
                    "skipping an endpoint record that does not parse"
                );
            }
            parsed
        })
}

/// The endpoints of `service` among these members, sorted by address; an
/// address published by several members counts once (the first member's, in
/// the map's order).
pub(super) fn endpoints_of(
    members: &BTreeMap<ChitchatId, NodeState>,
    service: &str,
) -> Vec<Endpoint> {
    let mut endpoints: BTreeMap<String, Endpoint> = BTreeMap::new();
    for (id, node) in members {
        if is_leaving(node) {
            continue;
        }
        let zone = node.get(ZONE_KEY);
        for (address, record) in records(node) {
            if !record.services.contains(service) {
                continue;
            }
            let key = address.to_string();
            if endpoints.contains_key(&key) {
                continue;
            }
            let endpoint = record
                .endpoint(address, zone)
                .with_metadata(MEMBER_METADATA, &*id.node_id);
            endpoints.insert(key, endpoint);
        }
    }
    endpoints.into_values().collect()
}

/// Every service some member publishes, sorted.
pub(super) fn services(members: &BTreeMap<ChitchatId, NodeState>) -> BTreeSet<String> {
    members
        .values()
        .filter(|node| !is_leaving(node))
        .flat_map(|node| records(node).flat_map(|(_, record)| record.services))
        .collect()
}
