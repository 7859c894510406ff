//! [`ConnectOptions`]: how [`connect`](crate::connect) makes a channel of an
//! address or a name, with settings: TLS, a service config, the service.
//!
//! One path for every scheme: a single server over sinew's protocol
//! (`tcp://`, `tls://`, `unix://`, `shm://`) or gRPC (`grpc://`, `grpcs://`,
//! ...), or a name balanced over many (`dns:///`, `gossip://`, `etcd://`).
//! [`connect`](crate::connect), [`connect_service`](crate::connect_service)
//! and [`connect_with`](crate::connect_with) are this with one setting each.

use crate::{scheme_list, Channel, Status};
use sinew_transport::tls::ClientTls;

/// Settings of a channel made from an address or a name.
///
/// ```no_run
/// # async fn example() -> Result<(), sinew::Status> {
/// use sinew::tls::ClientTls;
/// let tls = ClientTls::builder()
///     .ca_file("/etc/sinew/ca.crt")
///     .identity_files("/etc/sinew/client.crt", "/etc/sinew/client.key")
///     .build()
///     .map_err(|e| sinew::Status::invalid_argument(e.to_string()))?;
/// let channel = sinew::ConnectOptions::new()
///     .tls(tls)
///     .connect("tls://api.example.org:7443")
///     .await?;
/// # let _ = channel; Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    tls: Option<ClientTls>,
    service: Option<String>,
    #[cfg(feature = "resilience")]
    service_config: Option<crate::resilience::ServiceConfig>,
    #[cfg(feature = "telemetry")]
    telemetry: Option<crate::telemetry::Telemetry>,
}

impl ConnectOptions {
    /// No settings: what [`connect`](crate::connect) does.
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// TLS settings (roots, a client certificate, the identity expected of
    /// the server) for `tls://`, `grpcs://` and `https://` addresses, and for
    /// the endpoints of a name, whose network endpoints are then all reached
    /// over TLS (see [`BalancedBuilder::tls`](crate::cluster::BalancedBuilder::tls);
    /// a `dns:///` name's host is the server name their certificates must
    /// have). Given with a plaintext address (`tcp://`, `grpc://`, ...) they
    /// are an error, not silently unused: the caller meant to be encrypted.
    /// Without them, TLS trusts the system's roots and presents no
    /// certificate.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The service the channel calls, for names that do not give it
    /// (`gossip://SEED`, `dns:///HOST:PORT`); see
    /// [`connect_service`](crate::connect_service).
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// Every call follows this gRPC service config; see
    /// [`connect_with`](crate::connect_with).
    #[cfg(feature = "resilience")]
    pub fn service_config(mut self, config: crate::resilience::ServiceConfig) -> Self {
        self.service_config = Some(config);
        self
    }

    /// A name's balanced channel shows its endpoints (health, ejection,
    /// calls in flight, latency estimate) in `telemetry`'s metrics and
    /// dashboard ([`Telemetry::watch_balanced`](crate::telemetry::Telemetry::watch_balanced)).
    #[cfg(feature = "telemetry")]
    pub fn telemetry(mut self, telemetry: crate::telemetry::Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// The balanced channel `builder` makes, watched by the telemetry if
    /// there is one.
    #[cfg(feature = "cluster")]
    fn build_balanced(&self, builder: sinew_cluster::BalancedBuilder) -> sinew_cluster::Balanced {
        let balanced = builder.build();
        #[cfg(feature = "telemetry")]
        if let Some(telemetry) = &self.telemetry {
            telemetry.watch_balanced(&balanced);
        }
        balanced
    }

    /// The channel to `address`; see [`connect`](crate::connect) for what
    /// each scheme does and what fails here.
    pub async fn connect(&self, address: &str) -> Result<Channel, Status> {
        let scheme = address.split_once("://").map(|(scheme, _)| scheme);
        if let (Some(_), Some(scheme @ ("tcp" | "unix" | "shm" | "grpc" | "grpc+unix" | "http"))) =
            (&self.tls, scheme)
        {
            let secure = match scheme {
                "tcp" => "tls://",
                "grpc" | "http" => "grpcs://",
                _ => "a tls:// or grpcs:// address",
            };
            return Err(Status::invalid_argument(format!(
                "TLS settings were given for {address:?}, a plaintext address: use {secure}"
            )));
        }
        let channel = match scheme {
            Some("tcp" | "tls" | "unix" | "shm") => {
                let parsed = address.parse().map_err(|e: sinew_transport::AddressError| {
                    Status::invalid_argument(e.to_string())
                })?;
                let mut builder = Channel::builder(parsed);
                if let Some(tls) = &self.tls {
                    builder = builder.tls(tls.clone());
                }
                builder.connect().await?
            }
            #[cfg(feature = "grpc")]
            Some("grpc" | "grpcs" | "grpc+unix" | "http" | "https") => {
                let mut builder = sinew_grpc::client::GrpcChannel::builder(address)?;
                if let Some(tls) = &self.tls {
                    builder = builder.tls(tls.clone());
                }
                Channel::from_service(builder.connect().await?)
            }
            #[cfg(not(feature = "grpc"))]
            Some("grpc" | "grpcs" | "grpc+unix" | "http" | "https") => {
                return Err(Status::invalid_argument(format!(
                    "invalid address {address:?}: gRPC addresses need sinew's `grpc` feature; this build speaks {}",
                    scheme_list()
                )))
            }
            #[cfg(feature = "cluster")]
            Some(_) if sinew_cluster::name::is_name(address) => return self.connect_name(address).await,
            Some(other) => {
                return Err(Status::invalid_argument(format!(
                    "invalid address {address:?}: unknown scheme {other:?}; sinew speaks {}",
                    scheme_list()
                )))
            }
            None => {
                return Err(Status::invalid_argument(format!(
                    "invalid address {address:?}: no scheme; write it as a URL ({}), for example tcp://127.0.0.1:7000",
                    scheme_list()
                )))
            }
        };
        Ok(self.configured(channel))
    }

    /// `channel` under the service config, if there is one (as it is
    /// otherwise: a sinew channel keeps what only it can tell, such as its
    /// address).
    fn configured(&self, channel: Channel) -> Channel {
        #[cfg(feature = "resilience")]
        if let Some(config) = &self.service_config {
            let layer = crate::resilience::ServiceConfigLayer::new(config.clone());
            return Channel::from_service(tower::Layer::layer(&layer, channel));
        }
        channel
    }

    /// A name: the balanced channel over its endpoints.
    #[cfg(feature = "cluster")]
    async fn connect_name(&self, name: &str) -> Result<Channel, Status> {
        #[cfg(all(feature = "gossip", feature = "resilience"))]
        if name.starts_with("gossip://") && self.service_config.is_none() {
            return self.connect_gossip(name).await;
        }
        let mut builder = sinew_cluster::name::builder(name, self.service.as_deref()).await?;
        #[cfg(feature = "resilience")]
        if let Some(policy) = self
            .service_config
            .as_ref()
            .and_then(crate::balancing_policy)
        {
            builder = builder.policy(policy);
        }
        if let Some(tls) = self.endpoint_tls(name) {
            builder = builder.tls(tls);
        }
        Ok(self.configured(Channel::from_service(self.build_balanced(builder))))
    }

    /// The TLS settings of a name's endpoints: a `dns:///HOST:PORT` name's
    /// endpoints are IP addresses, and HOST is the name their certificates
    /// have (unless the settings say another).
    #[cfg(feature = "cluster")]
    fn endpoint_tls(&self, name: &str) -> Option<ClientTls> {
        let tls = self.tls.clone()?;
        if tls.server_name().is_some() {
            return Some(tls);
        }
        let host = name
            .strip_prefix("dns://")
            .and_then(|rest| rest.rsplit('/').next())
            .map(|target| target.split('?').next().unwrap_or(target))
            .map(|target| target.rsplit_once(':').map_or(target, |(host, _)| host))
            .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
            .filter(|host| !host.is_empty());
        Some(match host {
            Some(host) => tls.with_server_name(host),
            None => tls,
        })
    }

    /// A `gossip://` name: the balanced channel, with the service config the
    /// service's members publish in force as it changes.
    #[cfg(all(feature = "gossip", feature = "resilience"))]
    async fn connect_gossip(&self, address: &str) -> Result<Channel, Status> {
        use crate::{cluster, resilience};
        use tower::Layer;
        let target = sinew_cluster::name::gossip::Target::parse(address)?;
        let service = sinew_cluster::name::service_of(
            address,
            self.service.as_deref(),
            target.service.as_deref(),
        )?;
        let member = target.observe().await?;
        // The config in force from the first call: once the members that
        // publish the service are heard from (their config comes with their
        // endpoints), or the resolver gives up waiting for them.
        let mut first = cluster::Resolve::resolve(&member.resolver(), &service);
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            futures_util::StreamExt::next(&mut first),
        )
        .await;
        let initial = member
            .service_config(&service)
            .and_then(|text| resilience::ServiceConfig::from_json(&text).ok())
            .unwrap_or_default();
        let mut builder = cluster::Balanced::builder(member.resolver(), &service);
        if let Some(policy) = crate::balancing_policy(&initial) {
            builder = builder.policy(policy);
        }
        if let Some(tls) = &self.tls {
            builder = builder.tls(tls.clone());
        }
        let balanced = self.build_balanced(builder);
        let handle = resilience::ConfigHandle::new(initial);
        let following = handle.follow_gossip(&member, &service);
        let configured = resilience::ServiceConfigLayer::with_handle(handle).layer(balanced);
        Ok(Channel::from_service(Keeping {
            inner: configured,
            _kept: std::sync::Arc::new(following),
        }))
    }
}

/// A service that keeps something alive (a config follower) for as long
/// as it or a clone of it lives.
#[cfg(all(feature = "gossip", feature = "resilience"))]
#[derive(Clone)]
struct Keeping<S> {
    inner: S,
    _kept: std::sync::Arc<crate::resilience::configured::FollowedKey>,
}

#[cfg(all(feature = "gossip", feature = "resilience"))]
impl<S, R> tower::Service<R> for Keeping<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.inner.call(request)
    }
}
