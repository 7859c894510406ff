//! sinew's HTTP edge: a reverse proxy that takes the place of an nginx
//! `upstream` block and its `location`s, on hyper and tower.
//!
//! ```text
//!  clients ──HTTP/1.1, h2c, TLS──▶ front (server.rs) ──▶ routes (route.rs) ──▶ proxy (proxy.rs)
//!                              limits, drain         host, prefix,          retries, headers
//!                                                    method, headers             │
//!                                   upstream groups (upstream/): pick, health, pools ◀┘
//!                                   ──HTTP/1.1, kept alive──▶ servers
//! ```
//!
//! * [`config`]: the `gateway.toml` a [`Gateway`] runs from.
//! * The front (`server.rs`) serves HTTP/1.1 and h2c on each listener,
//!   holding clients to the configured limits.
//! * Routes (`route.rs`) match by host, path prefix, method and headers.
//! * The proxy (`proxy.rs`) forwards with header rewrites and request ids,
//!   and retries on the next server within bounds of tries and time.
//! * Upstream groups (`upstream/`): nginx's balancing (`round_robin`,
//!   `least_conn`, `ip_hash`, `hash` with `consistent`, `random two`) and
//!   sinew's peak EWMA; `weight`, `backup`, `down`, `max_conns`, passive
//!   health (`max_fails`, `fail_timeout`), active health checks, keep-alive
//!   pools; static servers or a resolver's (`dns:///`, `gossip://`,
//!   `etcd://`).
//!
//! * Transcoding (`transcode/`): routes with `service = "NAME"` turn
//!   HTTP/JSON into calls of sinew and gRPC services, by the methods'
//!   `google.api.http` rules.
//!
//! * Middleware (`middleware/`): per route, CORS, API keys and bearer
//!   tokens, rate limits and a response cache, as tower layers; the access
//!   log for every request.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use sinew_gateway::{config::Config, Gateway};
//! let config = Config::from_toml(r#"
//!     [server]
//!     listen = ["127.0.0.1:8080"]
//!     [upstreams.app]
//!     servers = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]
//!     [[routes]]
//!     upstream = "app"
//! "#)?;
//! let gateway = Gateway::new(config).await?;
//! gateway.run().await?; // until gateway.shutdown()
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod body;
pub mod config;
mod middleware;
pub mod nginx;
mod path;
mod proxy;
mod route;
mod server;
mod smuggle;
mod stats;
mod transcode;
mod upstream;
mod vars;

pub use body::ResponseBody;
pub use config::{Config, ConfigError};
pub use proxy::ClientAddr;
pub use stats::RouteReport;
pub use transcode::Connector;
pub use upstream::ServerReport;

use arc_swap::ArcSwap;
use middleware::access_log::AccessLog;
use route::Route;
use sinew_transport::tls::ServerTls;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use transcode::Transcoder;
use upstream::Group;

/// Locks `mutex`, through a poisoning: every critical section in this
/// crate leaves its data consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The routes and upstream groups of one configuration, swapped in whole.
pub(crate) struct Table {
    pub(crate) config: Config,
    pub(crate) routes: Vec<Arc<Route>>,
    groups: HashMap<String, Arc<Group>>,
    services: HashMap<String, Arc<Transcoder>>,
    /// The access log, opened at start and opened again on reloads.
    pub(crate) access_log: Option<Arc<AccessLog>>,
}

impl Table {
    async fn build(
        config: Config,
        previous: Option<&Table>,
        connector: &Arc<dyn Connector>,
        registry: &stats::Registry,
    ) -> Result<Table, ConfigError> {
        config.check()?;
        let mut groups = HashMap::new();
        for (name, upstream) in &config.upstreams {
            let earlier = previous.and_then(|table| table.groups.get(name));
            let group = Group::build(name, upstream, earlier.map(|group| &**group)).await?;
            groups.insert(name.clone(), group);
        }
        let mut services = HashMap::new();
        for (name, service) in &config.services {
            let earlier = previous.and_then(|table| table.services.get(name));
            let transcoder = Transcoder::build(name, service, connector, earlier).await?;
            services.insert(name.clone(), transcoder);
        }
        let limit = config.server.max_body_bytes;
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| {
                // The same route before a reload: by its name in metrics.
                let name = route::name_of(route);
                let earlier = previous.and_then(|table| {
                    table
                        .routes
                        .iter()
                        .find(|earlier| route::name_of(&earlier.settings) == name)
                });
                let earlier = earlier.map(|earlier| &**earlier);
                Route::new(index, route, &groups, &services, limit, registry, earlier).map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
        // A reload opens the same file again (it may have been rotated),
        // or another one if the configuration names it.
        let format = config.server.access_log_format;
        let kept = previous.and_then(|previous| previous.access_log.clone());
        let access_log = match (kept, &config.server.access_log) {
            (_, None) => None,
            (Some(kept), Some(target)) if kept.is(target, format) => {
                kept.reopen();
                Some(kept)
            }
            (_, Some(target)) => Some(Arc::new(
                AccessLog::open(target, format).map_err(|e| ConfigError::new(e.to_string()))?,
            )),
        };
        Ok(Table {
            config,
            routes,
            groups,
            services,
            access_log,
        })
    }
}

struct Shared {
    table: ArcSwap<Table>,
    /// One reload at a time: each builds on the table before it.
    reloading: tokio::sync::Mutex<()>,
    stop: tokio::sync::watch::Sender<bool>,
    connector: Arc<dyn Connector>,
    /// The TLS listeners' certificate, from the configuration the gateway
    /// started with.
    tls: Option<ServerTls>,
    /// Every route's request counts, by name, across reloads.
    stats: stats::Registry,
}

/// The TLS settings of `[server] tls`, read and checked.
fn server_tls(tls: &config::Tls) -> Result<ServerTls, ConfigError> {
    use sinew_transport::tls::{ClientAuth, ALPN_H2, ALPN_HTTP1};
    let mut builder = ServerTls::from_pem_files(&tls.cert, &tls.key).alpn(&[ALPN_H2, ALPN_HTTP1]);
    if let Some(ca) = &tls.client_ca {
        builder = builder.client_ca_file(ca);
        if tls.client_certificate_optional {
            builder = builder.client_auth(ClientAuth::Optional);
        }
    }
    builder
        .build()
        .map_err(|e| ConfigError::new(format!("[server] tls: {e}")))
}

/// A gateway: its routes and upstream groups, served on listeners.
///
/// Cheap to clone; every clone is the same gateway.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table();
        f.debug_struct("Gateway")
            .field("routes", &table.routes.len())
            .field("upstreams", &table.groups.len())
            .finish()
    }
}

impl Gateway {
    /// A gateway for `config`: its upstream groups are built (discovered
    /// ones resolved, for up to 3 s) and their health checks started; its
    /// services' descriptors are loaded (from their protos, or from their
    /// servers' reflection). Nothing listens until [`run`](Gateway::run)
    /// or [`serve`](Gateway::serve). Services are reached over sinew's
    /// own protocol; see [`with_connector`](Gateway::with_connector).
    pub async fn new(config: Config) -> Result<Gateway, ConfigError> {
        Gateway::with_connector(config, transcode::sinew_connector()).await
    }

    /// [`new`](Gateway::new), with the services of `[services]` reached
    /// through `connector` (the `sinew` facade's `gateway_connector()`
    /// takes every address `sinew::connect` does).
    pub async fn with_connector(
        config: Config,
        connector: Arc<dyn Connector>,
    ) -> Result<Gateway, ConfigError> {
        let tls = config.server.tls.as_ref().map(server_tls).transpose()?;
        let stats = stats::Registry::default();
        let table = Table::build(config, None, &connector, &stats).await?;
        Ok(Gateway {
            shared: Arc::new(Shared {
                table: ArcSwap::from_pointee(table),
                reloading: tokio::sync::Mutex::new(()),
                stop: tokio::sync::watch::channel(false).0,
                connector,
                tls,
                stats,
            }),
        })
    }

    /// Swaps in a new configuration, or leaves the running one if `config`
    /// is refused. Requests in flight finish as they started; connections,
    /// client and upstream, stay open; the next request follows the new
    /// routes. Servers whose settings did not change keep their health,
    /// load and idle connections. The listeners and their limits stay as
    /// they started (a changed `[server]` is reported and takes a restart),
    /// but for `max_body_bytes`, which the next request reads from the new
    /// configuration.
    pub async fn reload(&self, config: Config) -> Result<(), ConfigError> {
        let _one_at_a_time = self.shared.reloading.lock().await;
        let current = self.table();
        if config.server != current.config.server {
            tracing::warn!(
                "[server] changed: listeners and limits stay as they are until a restart"
            );
        }
        let table = Table::build(
            config,
            Some(&current),
            &self.shared.connector,
            &self.shared.stats,
        )
        .await?;
        self.shared.table.store(Arc::new(table));
        for group in current.groups.values() {
            group.retire();
        }
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.table().config.clone()
    }

    /// Every upstream group's servers as they are now.
    pub fn upstreams(&self) -> BTreeMap<String, Vec<ServerReport>> {
        self.table()
            .groups
            .iter()
            .map(|(name, group)| (name.clone(), group.report()))
            .collect()
    }

    /// Every route's request counts so far, by route name (kept across
    /// reloads).
    pub fn routes(&self) -> Vec<RouteReport> {
        self.shared.stats.report()
    }

    /// Binds every `listen` address of the configuration and serves them
    /// until [`shutdown`](Gateway::shutdown).
    pub async fn run(&self) -> io::Result<()> {
        let server = self.table().config.server.clone();
        if server.listen.is_empty() && server.tls_listen.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the configuration's [server] has no listen or tls_listen address",
            ));
        }
        let mut serving = Vec::new();
        for (address, tls) in server
            .listen
            .iter()
            .map(|address| (address, false))
            .chain(server.tls_listen.iter().map(|address| (address, true)))
        {
            let listener = TcpListener::bind(address).await.map_err(|error| {
                io::Error::new(error.kind(), format!("listen on {address}: {error}"))
            })?;
            serving.push(async move {
                if tls {
                    self.serve_tls(listener).await
                } else {
                    self.serve(listener).await
                }
            });
        }
        for result in futures_util::future::join_all(serving).await {
            result?;
        }
        Ok(())
    }

    /// Serves clients on `listener` (HTTP/1.1 and h2c) until
    /// [`shutdown`](Gateway::shutdown), then drains.
    pub async fn serve(&self, listener: TcpListener) -> io::Result<()> {
        server::serve(self.clone(), listener, None).await
    }

    /// [`serve`](Gateway::serve), over TLS with the certificate of
    /// `[server] tls` (an error if the configuration has none).
    pub async fn serve_tls(&self, listener: TcpListener) -> io::Result<()> {
        let Some(tls) = self.shared.tls.clone() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the configuration has no [server] tls certificate",
            ));
        };
        server::serve(self.clone(), listener, Some(tls)).await
    }

    /// Reads the TLS certificate, key and client CA files again now (they
    /// are also read when they change on disk); on an error the ones in
    /// use stay, and the error says why.
    pub fn reload_tls(&self) -> Result<(), ConfigError> {
        match &self.shared.tls {
            Some(tls) => tls
                .reload()
                .map_err(|e| ConfigError::new(format!("[server] tls: {e}"))),
            None => Ok(()),
        }
    }

    /// Stops every listener of the gateway: no new connections; requests in
    /// flight get `drain_timeout` to finish.
    pub fn shutdown(&self) {
        self.shared.stop.send_replace(true);
    }

    /// The gateway as a tower service, to serve from a server of one's own
    /// (put a [`ClientAddr`] in each request's extensions).
    pub fn service(&self) -> GatewayService {
        GatewayService {
            gateway: self.clone(),
        }
    }

    pub(crate) fn table(&self) -> Arc<Table> {
        self.shared.table.load_full()
    }

    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.stop.subscribe()
    }
}

/// [`Gateway::service`]: the proxy as a `tower::Service`.
#[derive(Clone, Debug)]
pub struct GatewayService {
    gateway: Gateway,
}

impl tower::Service<http::Request<hyper::body::Incoming>> for GatewayService {
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let table = self.gateway.table();
        Box::pin(async move { Ok(proxy::proxy(table, request).await) })
    }
}
