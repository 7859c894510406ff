//! Names as addresses: a [`Balanced`] channel from one string, the way gRPC
//! writes resolver targets.
//!
//! | name | endpoints |
//! |---|---|
//! | `dns:///host:port` | the A/AAAA records of `host`, at `port` ([`Dns`]) |
//! | `dns://NS_IP:PORT/host:port` | the same, asking that name server |
//! | `dns+srv:///name` | the SRV records of `name` |
//! | `gossip://SEED[,SEED...]/[SERVICE][?cluster=NAME]` | the members of a gossip cluster that publish the service ([`gossip`](crate::gossip)) |
//!
//! The service a call goes to is named by the call; a channel needs it too,
//! for its health checks and, with gossip, to know which endpoints to take.
//! A gossip name may carry it in its path; otherwise it is given apart
//! ([`connect_service`]).

use crate::balance::Balanced;
use crate::resolve::Dns;
use sinew_rpc::Status;

/// The schemes of names, as opposed to addresses of one server.
pub const SCHEMES: &[&str] = if cfg!(feature = "gossip") {
    &["dns", "dns+srv", "gossip"]
} else {
    &["dns", "dns+srv"]
};

/// Whether `text` is a name (its scheme is one of [`SCHEMES`]).
pub fn is_name(text: &str) -> bool {
    text.split_once("://")
        .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme))
}

/// A balanced channel to the service a name gives in its path (gossip), or
/// to the whole server (DNS: health checks ask about the server, `""`).
pub async fn connect(name: &str) -> Result<Balanced, Status> {
    connect_with(name, None).await
}

/// A balanced channel to `service` at the endpoints `name` resolves to.
pub async fn connect_service(name: &str, service: &str) -> Result<Balanced, Status> {
    connect_with(name, Some(service)).await
}

async fn connect_with(name: &str, service: Option<&str>) -> Result<Balanced, Status> {
    let scheme = name.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("dns" | "dns+srv") => {
            let dns = Dns::parse(name)?;
            Ok(Balanced::builder(dns, service.unwrap_or_default()).build())
        }
        #[cfg(feature = "gossip")]
        Some("gossip") => {
            let target = gossip::Target::parse(name)?;
            let service = match (service, target.service.as_deref()) {
                (Some(given), Some(named)) if given != named => {
                    return Err(Status::invalid_argument(format!(
                        "{name} names service {named}, not {given}"
                    )))
                }
                (Some(service), _) | (None, Some(service)) => service.to_owned(),
                (None, None) => {
                    return Err(Status::invalid_argument(format!(
                        "{name} names no service: write gossip://SEED/package.Service"
                    )))
                }
            };
            let member = target.observe().await?;
            Ok(Balanced::builder(member.resolver(), service).build())
        }
        _ => Err(Status::invalid_argument(format!(
            "{name:?} is not a name: expected one of {}",
            SCHEMES
                .iter()
                .map(|scheme| format!("{scheme}://"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `gossip://` names.
#[cfg(feature = "gossip")]
pub mod gossip {
    use crate::gossip::{Member, Role, DEFAULT_CLUSTER};
    use sinew_rpc::Status;
    use std::net::SocketAddr;

    /// A parsed `gossip://SEED[,SEED...]/[SERVICE][?cluster=NAME]`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Target {
        /// Members to join through (`host:port`).
        pub seeds: Vec<String>,
        /// The service, when the name gives one.
        pub service: Option<String>,
        /// The cluster (default [`DEFAULT_CLUSTER`]).
        pub cluster: String,
    }

    impl Target {
        /// Parses a gossip name.
        pub fn parse(name: &str) -> Result<Target, Status> {
            let invalid = |problem: &str| {
                Status::invalid_argument(format!(
                    "invalid gossip name {name:?}: {problem} (expected gossip://SEED[,SEED...]/[SERVICE][?cluster=NAME])"
                ))
            };
            let rest = name
                .strip_prefix("gossip://")
                .ok_or_else(|| invalid("not gossip://"))?;
            let (rest, query) = match rest.split_once('?') {
                Some((rest, query)) => (rest, Some(query)),
                None => (rest, None),
            };
            let (seeds, path) = rest.split_once('/').unwrap_or((rest, ""));
            let seeds: Vec<String> = seeds
                .split(',')
                .filter(|seed| !seed.is_empty())
                .map(str::to_owned)
                .collect();
            if seeds.is_empty() {
                return Err(invalid("no seed"));
            }
            if let Some(seed) = seeds.iter().find(|seed| {
                seed.rsplit_once(':')
                    .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            }) {
                return Err(invalid(&format!("seed {seed:?} is not host:port")));
            }
            let mut cluster = DEFAULT_CLUSTER.to_owned();
            for pair in query.into_iter().flat_map(|query| query.split('&')) {
                match pair.split_once('=') {
                    Some(("cluster", value)) if !value.is_empty() => cluster = value.to_owned(),
                    _ => return Err(invalid(&format!("unknown parameter {pair:?}"))),
                }
            }
            Ok(Target {
                seeds,
                service: (!path.is_empty()).then(|| path.to_owned()),
                cluster,
            })
        }

        /// Joins the cluster as an observer (gossiping from the interface
        /// that reaches the first seed).
        pub async fn observe(&self) -> Result<Member, Status> {
            let any: SocketAddr = ([0, 0, 0, 0], 0).into();
            Member::builder()
                .cluster(&self.cluster)
                .role(Role::Observer)
                .listen(any)
                .seeds(self.seeds.iter().cloned())
                .join()
                .await
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names_parse_with_seeds_service_and_cluster() {
            let target =
                Target::parse("gossip://127.0.0.1:7946,node-b:7946/echo.Echo?cluster=prod")
                    .unwrap();
            assert_eq!(target.seeds, ["127.0.0.1:7946", "node-b:7946"]);
            assert_eq!(target.service.as_deref(), Some("echo.Echo"));
            assert_eq!(target.cluster, "prod");
            let bare = Target::parse("gossip://127.0.0.1:7946").unwrap();
            assert_eq!(bare.service, None);
            assert_eq!(bare.cluster, DEFAULT_CLUSTER);
            for bad in [
                "gossip:///echo.Echo",
                "gossip://127.0.0.1/echo.Echo",
                "gossip://127.0.0.1:x/echo.Echo",
                "gossip://127.0.0.1:7946/echo.Echo?zone=a",
                "gossip://127.0.0.1:7946/echo.Echo?cluster=",
                "tcp://127.0.0.1:7946",
            ] {
                let error = Target::parse(bad).unwrap_err();
                assert!(
                    error.message().contains("invalid gossip name"),
                    "{bad}: {error}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_told_from_addresses() {
        assert!(is_name("dns:///localhost:7000"));
        assert!(is_name("dns+srv:///_echo._tcp.example.com"));
        assert!(!is_name("tcp://127.0.0.1:7000"));
        assert!(!is_name("localhost:7000"));
    }

    #[tokio::test]
    async fn a_name_without_a_scheme_of_names_is_refused() {
        let error = connect("tcp://127.0.0.1:1").await.unwrap_err();
        assert!(error.message().contains("dns://"), "{error}");
    }
}
