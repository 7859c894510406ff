//! [`Dns`]: endpoints from DNS records, resolved again when their TTL runs
//! out and when an endpoint fails to connect.
//!
//! Two kinds of names:
//!
//! * a host and a port ([`Dns::host`], `dns:///host:port`): every A and AAAA
//!   record of the host is an endpoint at that port;
//! * an SRV name ([`Dns::srv`], e.g. `_echo._tcp.example.com`): every target
//!   of the lowest priority present is resolved to its addresses, each an
//!   endpoint at the record's port with the record's weight.
//!
//! Each answer is a [`Update::Reset`] to what DNS says now. The next lookup
//! happens when the answer's TTL runs out (bounded to
//! [`refresh_between`](Dns::refresh_between), 1 s to 5 min by default), or at
//! once when the balancer reports an endpoint that failed to connect (at most
//! once per minimum interval), so a replaced server is found without waiting
//! out the TTL: grpc-go's DNS resolver does neither (grpc-go#6718). A failed
//! lookup is reported as an error (the balancer keeps what it has) and
//! retried with backoff.
//!
//! Lookups use the system's configuration (`/etc/resolv.conf`) unless
//! [`Dns::nameserver`] names one server, and never a cache: each lookup asks.

use super::{Resolve, Update, Updates};
use crate::endpoint::Endpoint;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use sinew_rpc::Status;
use sinew_transport::Address;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Endpoints from DNS (see the module docs).
#[derive(Clone)]
pub struct Dns {
    target: Target,
    nameserver: Option<SocketAddr>,
    min_refresh: Duration,
    max_refresh: Duration,
    /// Signalled by [`Resolve::reresolve`].
    again: Arc<Notify>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Host { host: String, port: u16 },
    Srv { name: String },
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("target", &self.target)
            .field("nameserver", &self.nameserver)
            .finish_non_exhaustive()
    }
}

impl Dns {
    /// The A and AAAA records of `host`, each an endpoint at `port`.
    pub fn host(host: impl Into<String>, port: u16) -> Dns {
        Dns::new(Target::Host {
            host: host.into(),
            port,
        })
    }

    /// The SRV records of `name` (`_service._proto.domain`).
    pub fn srv(name: impl Into<String>) -> Dns {
        Dns::new(Target::Srv { name: name.into() })
    }

    /// A name in gRPC's syntax: `dns:///host:port` (or `dns://authority/host:port`,
    /// whose authority is used as the nameserver, as an IP address and port),
    /// or `dns+srv:///name` for SRV records.
    pub fn parse(name: &str) -> Result<Dns, Status> {
        let invalid = |problem: &str| {
            Status::invalid_argument(format!("invalid DNS name {name:?}: {problem}"))
        };
        let (srv, rest) = if let Some(rest) = name.strip_prefix("dns+srv://") {
            (true, rest)
        } else if let Some(rest) = name.strip_prefix("dns://") {
            (false, rest)
        } else {
            return Err(invalid("expected dns:///host:port or dns+srv:///name"));
        };
        let (authority, target) = rest
            .split_once('/')
            .ok_or_else(|| invalid("expected a / after the authority"))?;
        let mut dns = if srv {
            if target.is_empty() {
                return Err(invalid("no SRV name"));
            }
            Dns::srv(target)
        } else {
            let (host, port) = target
                .rsplit_once(':')
                .ok_or_else(|| invalid("expected host:port"))?;
            let port = port
                .parse()
                .map_err(|_| invalid("the port is not a number"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(invalid("no host"));
            }
            Dns::host(host, port)
        };
        if !authority.is_empty() {
            let nameserver = authority
                .parse()
                .map_err(|_| invalid("the authority is not an IP address and port"))?;
            dns = dns.nameserver(nameserver);
        }
        Ok(dns)
    }

    fn new(target: Target) -> Dns {
        Dns {
            target,
            nameserver: None,
            min_refresh: Duration::from_secs(1),
            max_refresh: Duration::from_secs(300),
            again: Arc::new(Notify::new()),
        }
    }

    /// Asks this DNS server (UDP, then TCP for truncated answers) instead of
    /// the system's.
    pub fn nameserver(mut self, address: SocketAddr) -> Dns {
        self.nameserver = Some(address);
        self
    }

    /// Bounds the time between lookups: the TTL, but never less than `min`
    /// (which also spaces lookups asked for by failed connects) nor more
    /// than `max`.
    pub fn refresh_between(mut self, min: Duration, max: Duration) -> Dns {
        self.min_refresh = min;
        self.max_refresh = max.max(min);
        self
    }

    fn resolver(&self) -> Result<TokioResolver, Status> {
        let failed = |error: &dyn std::fmt::Display| {
            Status::unavailable(format!("DNS resolver not available: {error}"))
        };
        let mut builder = match self.nameserver {
            Some(address) => {
                let mut server = NameServerConfig::udp_and_tcp(address.ip());
                for connection in &mut server.connections {
                    connection.port = address.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|error| failed(&error))?,
        };
        builder.options_mut().cache_size = 0;
        builder.build().map_err(|error| failed(&error))
    }

    /// One lookup: the endpoints, and when to look again.
    async fn lookup(&self, resolver: &TokioResolver) -> Result<(Vec<Endpoint>, Instant), Status> {
        let failed = |name: &str, error: &dyn std::fmt::Display| {
            Status::unavailable(format!("DNS lookup of {name} failed: {error}"))
        };
        match &self.target {
            Target::Host { host, port } => {
                let answer = resolver
                    .lookup_ip(host.as_str())
                    .await
                    .map_err(|error| failed(host, &error))?;
                let endpoints = answer
                    .iter()
                    .map(|ip| Endpoint::new(tcp(ip, *port)))
                    .collect();
                Ok((endpoints, answer.valid_until()))
            }
            Target::Srv { name } => {
                let answer = resolver
                    .srv_lookup(name.as_str())
                    .await
                    .map_err(|error| failed(name, &error))?;
                let mut valid_until = answer.valid_until();
                let records: Vec<_> = answer
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::SRV(srv) => Some(srv.clone()),
                        _ => None,
                    })
                    .collect();
                // RFC 2782: the lowest priority present; the others are backups.
                let lowest = records.iter().map(|srv| srv.priority).min();
                let mut endpoints = Vec::new();
                for srv in records.iter().filter(|srv| Some(srv.priority) == lowest) {
                    let target = srv.target.to_string();
                    let addresses = resolver
                        .lookup_ip(srv.target.clone())
                        .await
                        .map_err(|error| failed(&target, &error))?;
                    valid_until = valid_until.min(addresses.valid_until());
                    endpoints.extend(addresses.iter().map(|ip| {
                        Endpoint::new(tcp(ip, srv.port)).with_weight(u32::from(srv.weight))
                    }));
                }
                Ok((endpoints, valid_until))
            }
        }
    }
}

fn tcp(ip: std::net::IpAddr, port: u16) -> Address {
    Address::Tcp {
        host: ip.to_string(),
        port,
    }
}

impl Resolve for Dns {
    fn resolve(&self, _service: &str) -> Updates {
        let dns = self.clone();
        Box::pin(async_stream(dns))
    }

    fn reresolve(&self, _service: &str) {
        self.again.notify_waiters();
    }
}

/// The stream of one resolution: a lookup, a wait, a lookup...
fn async_stream(dns: Dns) -> impl futures_core::Stream<Item = Result<Update, Status>> + Send {
    enum State {
        Start,
        Next { at: Instant, failures: u32 },
    }
    futures_util::stream::unfold(
        (dns, None::<TokioResolver>, State::Start),
        |(dns, mut resolver, state)| async move {
            let failures = match state {
                State::Start => 0,
                State::Next { at, failures } => {
                    // Asked again (a failed connect), but not before the minimum.
                    let earliest = at.min(Instant::now() + dns.max_refresh);
                    let again = dns.again.notified();
                    tokio::select! {
                        _ = tokio::time::sleep_until(earliest.into()) => {}
                        _ = again => {
                            tokio::time::sleep(dns.min_refresh).await;
                        }
                    }
                    failures
                }
            };
            let started = Instant::now();
            let outcome = match &resolver {
                Some(resolver) => dns.lookup(resolver).await,
                None => match dns.resolver() {
                    Ok(made) => {
                        let outcome = dns.lookup(&made).await;
                        resolver = Some(made);
                        outcome
                    }
                    Err(status) => Err(status),
                },
            };
            let (item, next) = match outcome {
                Ok((endpoints, valid_until)) => {
                    let wait = valid_until
                        .saturating_duration_since(started)
                        .clamp(dns.min_refresh, dns.max_refresh);
                    (
                        Ok(Update::Reset(endpoints)),
                        State::Next {
                            at: started + wait,
                            failures: 0,
                        },
                    )
                }
                Err(status) => {
                    // Backoff: the minimum, doubled per failure, up to 30 s.
                    let wait = dns
                        .min_refresh
                        .saturating_mul(1 << failures.min(5))
                        .min(Duration::from_secs(30).max(dns.min_refresh));
                    (
                        Err(status),
                        State::Next {
                            at: Instant::now() + wait,
                            failures: failures + 1,
                        },
                    )
                }
            };
            Some((item, (dns, resolver, next)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_grpc_syntax() {
        let dns = Dns::parse("dns:///echo.example.com:7000").unwrap();
        assert_eq!(
            dns.target,
            Target::Host {
                host: "echo.example.com".into(),
                port: 7000
            }
        );
        assert_eq!(dns.nameserver, None);
        let dns = Dns::parse("dns://127.0.0.1:5353/[::1]:7000").unwrap();
        assert_eq!(
            dns.target,
            Target::Host {
                host: "::1".into(),
                port: 7000
            }
        );
        assert_eq!(dns.nameserver, Some("127.0.0.1:5353".parse().unwrap()));
        let dns = Dns::parse("dns+srv:///_echo._tcp.example.com").unwrap();
        assert_eq!(
            dns.target,
            Target::Srv {
                name: "_echo._tcp.example.com".into()
            }
        );
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        for (name, problem) in [
            ("tcp://host:1", "expected dns:///host:port"),
            ("dns://", "expected a / after the authority"),
            ("dns:///host", "expected host:port"),
            ("dns:///host:http", "the port is not a number"),
            ("dns:///:80", "no host"),
            ("dns+srv:///", "no SRV name"),
            (
                "dns://nameserver/host:80",
                "the authority is not an IP address and port",
            ),
        ] {
            let error = Dns::parse(name).unwrap_err();
            assert_eq!(error.code(), sinew_rpc::Code::InvalidArgument);
            assert!(error.message().contains(problem), "{name}: {error}");
        }
    }
}
