//! [`Endpoint`]: one place a service can be called at, as a resolver reports
//! it: its address, and what a balancer may weigh (weight, zone, metadata).

use sinew_transport::Address;
use std::collections::BTreeMap;
use std::fmt;

/// One endpoint of a service: where to call it, and what a balancing policy
/// may take into account. Two endpoints are the same endpoint when their
/// addresses are equal; an update that reports an address again replaces its
/// weight, zone and metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    address: Address,
    weight: u32,
    zone: Option<String>,
    metadata: BTreeMap<String, String>,
}

impl Endpoint {
    /// The default weight of an endpoint.
    pub const DEFAULT_WEIGHT: u32 = 1;

    /// An endpoint at `address`, of weight 1, in no zone, without metadata.
    pub fn new(address: Address) -> Endpoint {
        Endpoint {
            address,
            weight: Endpoint::DEFAULT_WEIGHT,
            zone: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Its relative share of calls under weighted policies (at least 1: a
    /// weight of 0 is taken as 1; to take an endpoint out, remove it).
    pub fn with_weight(mut self, weight: u32) -> Endpoint {
        self.weight = weight.max(1);
        self
    }

    /// The zone (or rack, or data centre) it runs in, for locality.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Endpoint {
        self.zone = Some(zone.into());
        self
    }

    /// One more metadata entry (a version, a shard, a role).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Endpoint {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Where the service is called.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Its relative share of calls under weighted policies (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The zone it runs in, if the resolver knows.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// Its metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}

impl From<Address> for Endpoint {
    fn from(address: Address) -> Endpoint {
        Endpoint::new(address)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_of_zero_counts_as_one() {
        let address: Address = "tcp://127.0.0.1:1".parse().unwrap();
        assert_eq!(Endpoint::new(address.clone()).weight(), 1);
        assert_eq!(Endpoint::new(address.clone()).with_weight(0).weight(), 1);
        assert_eq!(Endpoint::new(address).with_weight(5).weight(), 5);
    }

    #[test]
    fn zone_and_metadata_are_kept() {
        let endpoint = Endpoint::new("unix:///tmp/a.sock".parse().unwrap())
            .with_zone("eu-1")
            .with_metadata("version", "2")
            .with_metadata("version", "3");
        assert_eq!(endpoint.zone(), Some("eu-1"));
        assert_eq!(
            endpoint.metadata().get("version").map(String::as_str),
            Some("3")
        );
        assert_eq!(endpoint.to_string(), "unix:///tmp/a.sock");
    }
}
