//! How a member's endpoints are written in its gossiped state, and read back
//! into the [`Endpoint`]s of a service.
//!
//! Each member gossips a small key-value map (chitchat's node state). sinew
//! uses these keys in it:
//!
//! | key | value |
//! |---|---|
//! | `sinew.endpoint:<address>` | JSON: `{"services": [...], "weight": 1, "zone": "...", "metadata": {...}}` |
//! | `sinew.zone` | the member's zone, the default of its endpoints' |
//! | `sinew.role` | `server` or `observer` |
//! | `sinew.state` | `leaving` once a member has begun to leave |
//!
//! One key per address, listing every service served there, because that is
//! what a server is: listeners, each serving all of its services. A value
//! that does not parse (a member of another version, or one that writes
//! garbage) is skipped with a debug event; the rest of the state stands.

use crate::endpoint::Endpoint;
use chitchat::{ChitchatId, NodeState};
use serde::{Deserialize, Serialize};
use sinew_transport::Address;
use std::collections::{BTreeMap, BTreeSet};

/// Prefix of the keys that publish an endpoint.
pub(super) const ENDPOINT_PREFIX: &str = "sinew.endpoint:";
/// The member's zone.
pub(super) const ZONE_KEY: &str = "sinew.zone";
/// `server` or `observer`.
pub(super) const ROLE_KEY: &str = "sinew.role";
/// `leaving` once the member has begun to leave.
pub(super) const STATE_KEY: &str = "sinew.state";
/// The value of [`STATE_KEY`] once the member has begun to leave.
pub(super) const LEAVING: &str = "leaving";

/// The metadata key under which the resolver tells which member published an
/// endpoint.
pub const MEMBER_METADATA: &str = "sinew.member";

/// What is published for one address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) services: BTreeSet<String>,
    #[serde(default = "one")]
    pub(super) weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) zone: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) metadata: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

impl Record {
    pub(super) fn new(endpoint: &Endpoint, services: BTreeSet<String>) -> Record {
        Record {
            services,
            weight: endpoint.weight(),
            zone: endpoint.zone().map(str::to_owned),
            metadata: endpoint.metadata().clone(),
        }
    }

    pub(super) fn key(address: &Address) -> String {
        format!("{ENDPOINT_PREFIX}{address}")
    }

    pub(super) fn encode(&self) -> String {
        serde_json::to_string(self).expect("a record is plain data")
    }
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
                .zip(serde_json::from_str::<Record>(&value.value).ok());
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
            let mut endpoint = Endpoint::new(address).with_weight(record.weight);
            if let Some(zone) = record.zone.as_deref().or(zone) {
                endpoint = endpoint.with_zone(zone);
            }
            for (name, value) in record.metadata {
                endpoint = endpoint.with_metadata(name, value);
            }
            endpoint = endpoint.with_metadata(MEMBER_METADATA, &*id.node_id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_unknown_fields_are_ignored() {
        let endpoint = Endpoint::new("tcp://10.0.0.1:7000".parse().unwrap())
            .with_weight(3)
            .with_zone("eu-1")
            .with_metadata("version", "2");
        let record = Record::new(&endpoint, ["a.A".to_owned()].into());
        let text = record.encode();
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), record);
        // A newer member may add fields; an older one reads what it knows.
        let newer = r#"{"services":["a.A"],"weight":2,"future":true}"#;
        let read: Record = serde_json::from_str(newer).unwrap();
        assert_eq!(read.weight, 2);
        assert_eq!(read.zone, None);
        // The weight defaults to 1.
        let bare: Record = serde_json::from_str(r#"{"services":[]}"#).unwrap();
        assert_eq!(bare.weight, 1);
    }
}
