//! What the registries (the embedded gossip one and etcd) have in common:
//! the record published for one address, and which addresses of a server
//! are published.
//!
//! A record is JSON, one per address, listing every service served there,
//! because that is what a server is: listeners, each serving all of its
//! services.
//!
//! ```json
//! {"services": ["shop.Cart"], "weight": 1, "zone": "eu-1", "metadata": {"version": "2"}}
//! ```
//!
//! Fields a reader does not know are ignored (a newer writer may add some),
//! `weight` defaults to 1, `zone` and `metadata` to none.

use crate::endpoint::Endpoint;
use crate::resolve::Update;
use serde::{Deserialize, Serialize};
use sinew_rpc::Status;
use sinew_transport::Address;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// What is published for one address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) services: BTreeSet<String>,
    #[serde(default = "one")]
    pub(crate) weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) zone: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) metadata: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

impl Record {
    /// The record of `endpoint` serving `services`: an error if there is no
    /// service to publish.
    pub(crate) fn new(
        endpoint: &Endpoint,
        services: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Record, Status> {
        let services: BTreeSet<String> = services.into_iter().map(Into::into).collect();
        if services.is_empty() {
            return Err(Status::invalid_argument(format!(
                "publishing {}: no service named",
                endpoint.address()
            )));
        }
        Ok(Record {
            services,
            weight: endpoint.weight(),
            zone: endpoint.zone().map(str::to_owned),
            metadata: endpoint.metadata().clone(),
        })
    }

    pub(crate) fn encode(&self) -> String {
        serde_json::to_string(self).expect("a record is plain data")
    }

    /// The record in `text`, if it is one.
    pub(crate) fn decode(text: &[u8]) -> Option<Record> {
        serde_json::from_slice(text).ok()
    }

    /// The endpoint at `address` this record describes; `default_zone` when
    /// the record names none.
    pub(crate) fn endpoint(&self, address: Address, default_zone: Option<&str>) -> Endpoint {
        let mut endpoint = Endpoint::new(address).with_weight(self.weight);
        if let Some(zone) = self.zone.as_deref().or(default_zone) {
            endpoint = endpoint.with_zone(zone);
        }
        for (name, value) in &self.metadata {
            endpoint = endpoint.with_metadata(name, value);
        }
        endpoint
    }
}

/// What a registry's resolver has told the stream of one service: it sends
/// the set only when it changed (an empty set only after a non-empty one:
/// before, the service is unknown), and says once that the service is
/// unknown, until a set is sent again.
#[derive(Debug, Default)]
pub(crate) struct Told {
    /// The set last sent.
    last: Option<Vec<Endpoint>>,
    /// The service was said to be unknown since the set was last sent.
    unknown_said: bool,
}

impl Told {
    /// The update to send for `endpoints`, if they are news.
    pub(crate) fn update(&mut self, endpoints: &[Endpoint]) -> Option<Update> {
        if self.last.as_deref() == Some(endpoints) || (endpoints.is_empty() && self.last.is_none())
        {
            return None;
        }
        self.last = Some(endpoints.to_vec());
        self.unknown_said = false;
        Some(Update::Reset(endpoints.to_vec()))
    }

    /// Whether to say now that the service is unknown: it has no endpoint,
    /// and that was not said since a set was last sent.
    pub(crate) fn say_unknown(&mut self, endpoints: &[Endpoint]) -> bool {
        if !endpoints.is_empty() || self.unknown_said {
            return false;
        }
        self.unknown_said = true;
        true
    }

    /// Whether a set was ever sent.
    #[cfg_attr(not(feature = "gossip"), allow(dead_code))]
    pub(crate) fn sent_any(&self) -> bool {
        self.last.is_some()
    }
}

/// Service names as an error message lists them: sorted, once each,
/// `none` when there are none.
pub(crate) fn service_list<'a>(services: impl IntoIterator<Item = &'a str>) -> String {
    let services: BTreeSet<&str> = services.into_iter().collect();
    if services.is_empty() {
        return "none".to_owned();
    }
    services.into_iter().collect::<Vec<_>>().join(", ")
}

/// The addresses at which a bound server is published: each TCP listener's,
/// a listener on an unspecified IP (`0.0.0.0`, `::`) at `advertise`. Unix and
/// shared-memory listeners are not published: they are reachable on this
/// host only (and a TCP connection from this host moves to shared memory by
/// itself).
pub(crate) fn server_addresses(
    server: &sinew_rpc::Server,
    advertise: Option<IpAddr>,
) -> Result<Vec<Address>, Status> {
    let mut addresses = Vec::new();
    for address in server.local_addresses() {
        let Some((host, port)) = address.host_port() else {
            continue;
        };
        let unspecified = host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
        let host = if unspecified {
            match advertise.filter(|ip| !ip.is_unspecified()) {
                Some(ip) => ip.to_string(),
                None => {
                    return Err(Status::invalid_argument(format!(
                        "{address} listens on every interface and no address to advertise is known: listen on one"
                    )))
                }
            }
        } else {
            host.to_owned()
        };
        addresses.push(match address {
            Address::Tls { .. } => Address::tls(host, port),
            _ => Address::tcp(host, port),
        });
    }
    if addresses.is_empty() {
        return Err(Status::invalid_argument(
            "the server has no TCP or TLS listener to publish",
        ));
    }
    Ok(addresses)
}

/// The local IP a datagram to `peer` (`host:port`) leaves from: the address
/// this host is reached at from there (nothing is sent).
pub(crate) async fn local_ip_towards(peer: &str) -> Result<IpAddr, Status> {
    let unreachable =
        |error: std::io::Error| Status::unavailable(format!("cannot reach {peer}: {error}"));
    let peer_address = tokio::net::lookup_host(peer)
        .await
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| Status::unavailable(format!("{peer} has no address")))?;
    let any: SocketAddr = if peer_address.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(any)
        .await
        .map_err(unreachable)?;
    socket.connect(peer_address).await.map_err(unreachable)?;
    Ok(socket.local_addr().map_err(unreachable)?.ip())
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
        let record = Record::new(&endpoint, ["a.A"]).unwrap();
        let text = record.encode();
        assert_eq!(Record::decode(text.as_bytes()).unwrap(), record);
        assert_eq!(
            record.endpoint(endpoint.address().clone(), Some("us-1")),
            endpoint
        );
        // A newer writer may add fields; an older reader reads what it knows.
        let read = Record::decode(br#"{"services":["a.A"],"weight":2,"future":true}"#).unwrap();
        assert_eq!(read.weight, 2);
        assert_eq!(read.zone, None);
        // The weight defaults to 1, the zone to the default given.
        let bare = Record::decode(br#"{"services":[]}"#).unwrap();
        assert_eq!(bare.weight, 1);
        let address: Address = "tcp://10.0.0.1:1".parse().unwrap();
        assert_eq!(bare.endpoint(address, Some("us-1")).zone(), Some("us-1"));
        // Garbage is no record.
        for garbage in [
            &b"not json"[..],
            b"{}",
            b"[1,2]",
            b"{\"services\":3}",
            b"\xff\xfe",
        ] {
            assert!(Record::decode(garbage).is_none(), "{garbage:?}");
        }
    }

    #[test]
    fn a_set_is_told_when_it_changes_and_an_unknown_service_once() {
        let a = Endpoint::new("tcp://10.0.0.1:7000".parse().unwrap());
        let mut told = Told::default();
        // Nothing yet: no empty set, the service is unknown, said once.
        assert_eq!(told.update(&[]), None);
        assert!(told.say_unknown(&[]));
        assert!(!told.say_unknown(&[]));
        assert!(!told.sent_any());
        // A set, sent once; not unknown while it has endpoints.
        let set = vec![a];
        assert_eq!(told.update(&set), Some(Update::Reset(set.clone())));
        assert_eq!(told.update(&set), None);
        assert!(!told.say_unknown(&set));
        // Emptied: sent (the endpoints left), then unknown once more.
        assert_eq!(told.update(&[]), Some(Update::Reset(vec![])));
        assert_eq!(told.update(&[]), None);
        assert!(told.say_unknown(&[]));
        assert!(!told.say_unknown(&[]));
        assert!(told.sent_any());
        assert_eq!(service_list(["b.B", "a.A", "b.B"]), "a.A, b.B");
        assert_eq!(service_list([]), "none");
    }

    #[test]
    fn a_record_names_at_least_one_service() {
        let endpoint = Endpoint::new("tcp://10.0.0.1:7000".parse().unwrap());
        let error = Record::new(&endpoint, Vec::<String>::new()).unwrap_err();
        assert!(error.message().contains("no service"), "{error}");
    }
}
