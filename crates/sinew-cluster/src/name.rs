//! Names as addresses: a [`Balanced`] channel from one string, the way gRPC
//! writes resolver targets.
//!
//! | name | endpoints |
//! |---|---|
//! | `dns:///host:port` | the A/AAAA records of `host`, at `port` ([`Dns`]) |
//! | `dns://NS_IP:PORT/host:port` | the same, asking that name server |
//! | `dns+srv:///name` | the SRV records of `name` |
//! | `gossip://SEED[,SEED...]/[SERVICE][?cluster=NAME]` | the members of a gossip cluster that publish the service ([`gossip`](crate::gossip)) |
//! | `etcd://HOST:PORT[,HOST:PORT...]/[SERVICE][?prefix=PREFIX]` | the endpoints registered for the service in etcd ([`etcd`](crate::etcd)) |
//!
//! The service a call goes to is named by the call; a channel needs it too,
//! for its health checks and, with a registry, to know which endpoints to
//! take. A gossip or etcd name may carry it in its path; otherwise it is
//! given apart ([`connect_service`]).

use crate::balance::{Balanced, BalancedBuilder};
use crate::resolve::Dns;
use sinew_rpc::Status;

/// The schemes of names, as opposed to addresses of one server.
pub const SCHEMES: &[&str] = match (cfg!(feature = "gossip"), cfg!(feature = "etcd")) {
    (true, true) => &["dns", "dns+srv", "gossip", "etcd"],
    (true, false) => &["dns", "dns+srv", "gossip"],
    (false, true) => &["dns", "dns+srv", "etcd"],
    (false, false) => &["dns", "dns+srv"],
};

/// Whether `text` is a name (its scheme is one of [`SCHEMES`]).
pub fn is_name(text: &str) -> bool {
    text.split_once("://")
        .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme))
}

/// A balanced channel to the service a name gives in its path (gossip,
/// etcd), or to the whole server (DNS: health checks ask about the server,
/// `""`).
pub async fn connect(name: &str) -> Result<Balanced, Status> {
    Ok(builder(name, None).await?.build())
}

/// A balanced channel to `service` at the endpoints `name` resolves to.
pub async fn connect_service(name: &str, service: &str) -> Result<Balanced, Status> {
    Ok(builder(name, Some(service)).await?.build())
}

/// The builder of the balanced channel of [`connect`] (or, with `service`,
/// [`connect_service`]), for settings of one's own (a policy, a zone).
pub async fn builder(name: &str, service: Option<&str>) -> Result<BalancedBuilder, Status> {
    let (resolver, service) = resolver(name, service).await?;
    Ok(Balanced::builder(resolver, service))
}

/// The resolver `name` stands for and the service to resolve with it: what
/// [`builder`] balances over, for those who keep endpoints of their own
/// (the HTTP gateway's upstream groups). A DNS name's service is `service`
/// or empty (DNS names no service).
pub async fn resolver(
    name: &str,
    service: Option<&str>,
) -> Result<(std::sync::Arc<dyn crate::resolve::Resolve>, String), Status> {
    let scheme = name.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("dns" | "dns+srv") => Ok((
            std::sync::Arc::new(Dns::parse(name)?),
            service.unwrap_or_default().to_owned(),
        )),
        #[cfg(feature = "gossip")]
        Some("gossip") => {
            let target = gossip::Target::parse(name)?;
            let service = service_of(name, service, target.service.as_deref())?;
            let member = target.observe().await?;
            Ok((std::sync::Arc::new(member.resolver()), service))
        }
        #[cfg(feature = "etcd")]
        Some("etcd") => {
            let target = etcd::Target::parse(name)?;
            let service = service_of(name, service, target.service.as_deref())?;
            Ok((std::sync::Arc::new(target.registry()?.resolver()), service))
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

/// The service of a registry name: the one given apart (`given`), the one
/// in the name's path (`named`), or both if they agree;
/// `INVALID_ARGUMENT` if they differ or there is none.
#[cfg(any(feature = "gossip", feature = "etcd"))]
pub fn service_of(name: &str, given: Option<&str>, named: Option<&str>) -> Result<String, Status> {
    match (given, named) {
        (Some(given), Some(named)) if given != named => Err(Status::invalid_argument(format!(
            "{name} names service {named}, not {given}"
        ))),
        (Some(service), _) | (None, Some(service)) => Ok(service.to_owned()),
        (None, None) => {
            let scheme = name.split_once("://").map_or("", |(scheme, _)| scheme);
            Err(Status::invalid_argument(format!(
                "{name} names no service: write {scheme}://HOST:PORT/package.Service"
            )))
        }
    }
}

/// `HOST:PORT` taken apart (a bracketed IPv6 host keeps its brackets):
/// `None` when the host is empty or the port is not a port number.
#[cfg(any(feature = "gossip", feature = "etcd"))]
pub(crate) fn host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// A registry name taken apart: `SCHEME://HOST:PORT[,HOST:PORT...]/[PATH][?QUERY]`.
#[cfg(any(feature = "gossip", feature = "etcd"))]
struct Parts<'a> {
    hosts: Vec<String>,
    path: Option<String>,
    /// `key=value` pairs.
    query: Vec<(&'a str, &'a str)>,
}

#[cfg(any(feature = "gossip", feature = "etcd"))]
impl<'a> Parts<'a> {
    /// Parses `name` of `scheme`; errors are `problem` strings for the
    /// caller to wrap.
    fn parse(name: &'a str, scheme: &str) -> Result<Parts<'a>, String> {
        let rest = name
            .strip_prefix(scheme)
            .and_then(|rest| rest.strip_prefix("://"))
            .ok_or_else(|| format!("not {scheme}://"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let hosts: Vec<String> = hosts
            .split(',')
            .filter(|host| !host.is_empty())
            .map(str::to_owned)
            .collect();
        if hosts.is_empty() {
            return Err("no host:port".to_owned());
        }
        if let Some(host) = hosts.iter().find(|host| host_port(host).is_none()) {
            return Err(format!("{host:?} is not host:port"));
        }
        let query = query
            .into_iter()
            .flat_map(|query| query.split('&'))
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !value.is_empty() => Ok((key, value)),
                _ => Err(format!("parameter {pair:?} has no value")),
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Parts {
            hosts,
            path: (!path.is_empty()).then(|| path.to_owned()),
            query,
        })
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
            let parts = super::Parts::parse(name, "gossip").map_err(|problem| invalid(&problem))?;
            let mut cluster = DEFAULT_CLUSTER.to_owned();
            for (key, value) in parts.query {
                match key {
                    "cluster" => cluster = value.to_owned(),
                    _ => return Err(invalid(&format!("unknown parameter {key:?}"))),
                }
            }
            Ok(Target {
                seeds: parts.hosts,
                service: parts.path,
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

/// `etcd://` names.
#[cfg(feature = "etcd")]
pub mod etcd {
    use crate::etcd::{Etcd, Registry, DEFAULT_PREFIX};
    use sinew_rpc::Status;

    /// A parsed `etcd://HOST:PORT[,HOST:PORT...]/[SERVICE][?prefix=PREFIX]`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Target {
        /// The etcd members' client addresses (`host:port`).
        pub members: Vec<String>,
        /// The service, when the name gives one.
        pub service: Option<String>,
        /// The key prefix (default [`DEFAULT_PREFIX`]).
        pub prefix: String,
    }

    impl Target {
        /// Parses an etcd name.
        pub fn parse(name: &str) -> Result<Target, Status> {
            let invalid = |problem: &str| {
                Status::invalid_argument(format!(
                    "invalid etcd name {name:?}: {problem} (expected etcd://HOST:PORT[,HOST:PORT...]/[SERVICE][?prefix=PREFIX])"
                ))
            };
            let parts = super::Parts::parse(name, "etcd").map_err(|problem| invalid(&problem))?;
            let mut prefix = DEFAULT_PREFIX.to_owned();
            for (key, value) in parts.query {
                match key {
                    "prefix" => prefix = value.to_owned(),
                    _ => return Err(invalid(&format!("unknown parameter {key:?}"))),
                }
            }
            Ok(Target {
                members: parts.hosts,
                service: parts.path,
                prefix,
            })
        }

        /// The registry the name points at (connecting in the background;
        /// inside a Tokio runtime).
        pub fn registry(&self) -> Result<Registry, Status> {
            Ok(Registry::new(Etcd::connect(&self.members)?).with_prefix(&self.prefix))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names_parse_with_members_service_and_prefix() {
            let target =
                Target::parse("etcd://127.0.0.1:2379,etcd-b:2379/shop.Cart?prefix=/prod/").unwrap();
            assert_eq!(target.members, ["127.0.0.1:2379", "etcd-b:2379"]);
            assert_eq!(target.service.as_deref(), Some("shop.Cart"));
            assert_eq!(target.prefix, "/prod/");
            let bare = Target::parse("etcd://127.0.0.1:2379").unwrap();
            assert_eq!(bare.service, None);
            assert_eq!(bare.prefix, DEFAULT_PREFIX);
            for bad in [
                "etcd:///shop.Cart",
                "etcd://127.0.0.1/shop.Cart",
                "etcd://:2379/shop.Cart",
                "etcd://127.0.0.1:99999/shop.Cart",
                "etcd://127.0.0.1:2379/shop.Cart?cluster=a",
                "etcd://127.0.0.1:2379/shop.Cart?prefix=",
                "gossip://127.0.0.1:2379",
            ] {
                let error = Target::parse(bad).unwrap_err();
                assert!(
                    error.message().contains("invalid etcd name"),
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
        assert!(is_name("etcd://127.0.0.1:2379/echo.Echo"));
        assert!(!is_name("tcp://127.0.0.1:7000"));
        assert!(!is_name("localhost:7000"));
    }

    #[tokio::test]
    async fn a_name_without_a_scheme_of_names_is_refused() {
        let error = connect("tcp://127.0.0.1:1").await.unwrap_err();
        assert!(error.message().contains("dns://"), "{error}");
    }
}
