//! The server: services on listeners, connections, calls, graceful shutdown.
//!
//! ```no_run
//! # async fn example(service: impl sinew_rpc::Service) -> std::io::Result<()> {
//! use sinew_rpc::Server;
//! let server = Server::builder()
//!     .add_service(service)
//!     .bind(["tcp://127.0.0.1:7000", "unix:///tmp/sinew.sock"])
//!     .await?;
//! let handle = server.handle();
//! tokio::spawn(async move {
//!     tokio::signal::ctrl_c().await.ok();
//!     handle.shutdown();
//! });
//! let report = server.serve().await;
//! println!("drained {} calls", report.drained_calls);
//! # Ok(()) }
//! ```
//!
//! Each accepted connection runs in its own task (`connection.rs`), each call in
//! its own task too, so calls on one connection run concurrently.

mod admission;
pub mod call;
mod connection;
pub mod dispatch;
pub mod external;
pub mod forward;
pub mod health;
mod interceptor;
mod peer;
mod protocol;
pub mod reflection;
mod service;
pub mod stats;

pub use admission::{ActiveCall, Activity};
pub use call::ServerCall;
pub use dispatch::Dispatch;
pub use external::{ExternalCall, ExternalRequest, ResponseEvent, ResponseHead};
pub use forward::Forward;
pub use health::HealthReporter;
pub use interceptor::{Interceptor, InterceptorLayer};
pub use peer::Peer;
pub use protocol::{Accepted, LocalConnector, Protocol, Sniff};
pub use service::{MethodDescriptor, MethodKind, Service, ServiceDescriptor};
pub use stats::ServerStats;

use crate::call::BoxError;
use crate::status::Status;
use rustc_hash::{FxHashMap, FxHashSet};
use sinew_transport::{Address, AddressError, Listener, TransportOptions};
use sinew_wire::Settings;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tower::util::BoxCloneSyncService;
use tower::{Service as _, ServiceExt};

/// Limits and timeouts of a server.
#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
    pub(crate) settings: Settings,
    pub(crate) handshake_timeout: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) keepalive: crate::Keepalive,
    pub(crate) transport: TransportOptions,
    pub(crate) connection_limits: admission::Limits,
    /// See [`ServerBuilder::connection_memory`].
    pub(crate) connection_memory: usize,
    /// See [`ServerBuilder::request_timeout`].
    pub(crate) request_timeout: Duration,
    /// See [`ServerBuilder::frame_timeout`].
    pub(crate) frame_timeout: Duration,
    /// See [`ServerBuilder::idle_timeout`].
    pub(crate) idle_timeout: Option<Duration>,
    /// See [`ServerBuilder::deadline_margin`].
    pub(crate) deadline_margin: Duration,
}

/// What a server layer wraps: the rest of the stack, down to [`Dispatch`],
/// erased. Its response is the call's final status, its error the status of
/// a call the stack failed itself (a layer refused it, say); either way the
/// call ends with that status.
pub type ServerStack = BoxCloneSyncService<ServerCall, Status, Status>;

/// Adds one layer on top of a stack.
type AddLayer = Arc<dyn Fn(ServerStack) -> ServerStack + Send + Sync>;

/// Maps `/service/method` paths to a service and a method index, and runs
/// calls through the server's layers.
pub(crate) struct Router {
    pub(crate) services: Vec<Arc<dyn Service>>,
    routes: FxHashMap<&'static str, (usize, usize)>,
    names: FxHashSet<&'static str>,
    /// Index in `services` of the service that takes every unknown path.
    fallback: Option<usize>,
    /// The layers around [`Dispatch`]; `None` without layers, when calls go to
    /// [`dispatch::run`] directly.
    stack: Option<ServerStack>,
}

impl Router {
    fn new(
        mut services: Vec<Arc<dyn Service>>,
        fallback: Option<Arc<dyn Service>>,
        layers: &[AddLayer],
    ) -> Router {
        let fallback = fallback.map(|service| {
            services.push(service);
            services.len() - 1
        });
        let mut routes = FxHashMap::default();
        let mut names = FxHashSet::default();
        for (service_index, service) in services.iter().enumerate() {
            let descriptor = service.descriptor();
            names.insert(descriptor.name);
            for (method_index, method) in descriptor.methods.iter().enumerate() {
                routes.insert(method.path, (service_index, method_index));
            }
        }
        // The first layer added is the outermost, as in tower's ServiceBuilder.
        let stack = (!layers.is_empty()).then(|| {
            layers
                .iter()
                .rev()
                .fold(ServerStack::new(Dispatch), |stack, add| add(stack))
        });
        Router {
            services,
            routes,
            names,
            fallback,
            stack,
        }
    }

    /// Whether calls go through layers (and so must be dispatched even when
    /// they are refused, for the layers to see them).
    pub(crate) fn has_layers(&self) -> bool {
        self.stack.is_some()
    }

    /// The service and method for a path, or the status to refuse the call
    /// with; a call already past its deadline is refused too.
    pub(crate) fn route(
        &self,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<(Arc<dyn Service>, usize), Status> {
        if timeout == Some(Duration::ZERO) {
            return Err(Status::deadline_exceeded(
                "deadline already expired when the call arrived",
            ));
        }
        let (service, method) = self.resolve(path)?;
        Ok((self.services[service].clone(), method))
    }

    /// Runs a call through the layers (if any) and its handler; resolves to
    /// the status the call ended with, which has been sent.
    pub(crate) fn serve(&self, call: ServerCall) -> Serving {
        let Some(stack) = &self.stack else {
            return Serving::Direct {
                running: dispatch::run(call),
            };
        };
        Serving::Layered {
            io: call.io.clone(),
            service: stack.clone(),
            call: Some(call),
            future: None,
        }
    }

    /// The service and method for a path, or the `UNIMPLEMENTED` status to answer.
    pub(crate) fn resolve(&self, path: &str) -> Result<(usize, usize), Status> {
        if let Some(route) = self.routes.get(path) {
            return Ok(*route);
        }
        if let Some(fallback) = self.fallback {
            return Ok((fallback, 0));
        }
        let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
            return Err(Status::unimplemented(format!(
                "malformed method path {path:?}: expected /package.Service/Method"
            )));
        };
        if self.names.contains(service) {
            Err(Status::unimplemented(format!(
                "unknown method {method} of service {service}"
            )))
        } else {
            Err(Status::unimplemented(format!("unknown service {service}")))
        }
    }
}

pin_project_lite::pin_project! {
    /// One call served by [`Router::serve`]: straight to its handler, or
    /// through the layers.
    #[project = ServingProjection]
    pub(crate) enum Serving {
        Direct { #[pin] running: dispatch::Running },
        // The stack's readiness, then its future (a hand-written state
        // machine rather than an `async` block: one allocation less a call).
        Layered {
            io: call::CallIo,
            service: ServerStack,
            call: Option<ServerCall>,
            future: Option<futures_util::future::BoxFuture<'static, Result<Status, Status>>>,
        },
    }
}

impl std::future::Future for Serving {
    type Output = Status;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Status> {
        use std::task::Poll;
        match self.project() {
            ServingProjection::Direct { running } => running.poll(cx),
            ServingProjection::Layered {
                io,
                service,
                call,
                future,
            } => {
                let result = loop {
                    if let Some(future) = future {
                        break std::task::ready!(future.as_mut().poll(cx));
                    }
                    match std::task::ready!(service.poll_ready(cx)) {
                        Ok(()) => match call.take() {
                            Some(call) => *future = Some(service.call(call)),
                            None => break Err(Status::internal("a call served twice")),
                        },
                        Err(status) => break Err(status),
                    }
                };
                let status = result.unwrap_or_else(|status| status);
                // A layer that failed the call (or refused it) left it to us to end.
                io.end(&status);
                Poll::Ready(status)
            }
        }
    }
}

/// Builds a [`Server`]: services, layers, limits, then [`ServerBuilder::bind`].
pub struct ServerBuilder {
    services: Vec<Arc<dyn Service>>,
    fallback: Option<Arc<dyn Service>>,
    layers: Vec<AddLayer>,
    protocols: Vec<Arc<dyn Protocol>>,
    config: ServerConfig,
    reflection: bool,
    health: Option<HealthReporter>,
    advertise_local: bool,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("services", &self.services.len())
            .field("layers", &self.layers.len())
            .field("config", &self.config)
            .finish()
    }
}

impl ServerBuilder {
    /// Adds a service; its methods are routed by `/package.Service/Method`.
    pub fn add_service(mut self, service: impl Service) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Adds a service already behind an `Arc` (shared with other servers).
    pub fn add_shared_service(mut self, service: Arc<dyn Service>) -> Self {
        self.services.push(service);
        self
    }

    /// A service that takes every call whose path no other service serves (a
    /// forwarding proxy, for instance); it sees the path in
    /// [`ServerCall::path`] and is called with method index 0.
    pub fn fallback(mut self, service: impl Service) -> Self {
        self.fallback = Some(Arc::new(service));
        self
    }

    /// Wraps every call in a tower layer: the call as a [`ServerCall`] on the
    /// way in (path, mutable metadata, deadline, peer, per-call extensions;
    /// the layer may refuse it with an error status before any handler runs),
    /// and its final status on the way out, whatever ended it (the handler, a
    /// panic as `INTERNAL`, the deadline, a client's cancellation, the drain
    /// deadline of a shutdown). Every call goes through the layers, whatever
    /// protocol carried it (sinew's, gRPC) and whatever it is for (the
    /// services added, health, reflection, local-endpoint discovery, unknown
    /// methods).
    ///
    /// The first layer added is the outermost, as in tower's `ServiceBuilder`.
    /// A layer's errors become the call's status ([`Status::from_error`]), so
    /// tower's own layers (concurrency limits, load shedding, timeouts) work
    /// as they are. See `examples/middleware.rs`.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<ServerStack> + Send + Sync + 'static,
        L::Service: tower::Service<ServerCall, Response = Status> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<ServerCall>>::Error: Into<BoxError>,
        <L::Service as tower::Service<ServerCall>>::Future: Send + 'static,
    {
        self.layers.push(Arc::new(move |inner| {
            ServerStack::new(layer.layer(inner).map_err(crate::call::into_status))
        }));
        self
    }

    /// Runs `check` on every call before anything else sees it: `Ok(())` lets
    /// the call go on (with whatever `check` changed in its metadata or
    /// extensions), `Err(status)` refuses it with that status. The common
    /// case of [`ServerBuilder::layer`], for authentication for instance.
    pub fn interceptor<F>(self, check: F) -> Self
    where
        F: Fn(&mut ServerCall) -> Result<(), Status> + Clone + Send + Sync + 'static,
    {
        self.layer(InterceptorLayer::new(check))
    }

    /// A server with no listener, reachable only in-process through the returned
    /// connector (for instance behind a [`Channel`](crate::Channel) built with
    /// [`Channel::builder_with_connector`](crate::Channel::builder_with_connector)).
    /// It runs as long as a clone of the connector exists.
    pub fn into_local_connector(self) -> LocalConnector {
        let services = self.assemble_services(&[]);
        let (shutdown, receiver) = watch::channel(false);
        LocalConnector::new_owning(
            Arc::new(Router::new(services, self.fallback, &self.layers)),
            Arc::new(self.config),
            receiver,
            shutdown,
        )
    }

    /// The services to route: those added, plus health, local-endpoint
    /// discovery and reflection when on.
    fn assemble_services(&self, bound: &[Address]) -> Vec<Arc<dyn Service>> {
        let mut services = self.services.clone();
        if self.advertise_local {
            if let Some(endpoints) = crate::local::LocalEndpoints::new(bound) {
                services.push(Arc::new(crate::local::v1::local_server::LocalServer::new(
                    endpoints,
                )));
            }
        }
        if let Some(reporter) = &self.health {
            for service in &services {
                let name = service.descriptor().name;
                // A status the application set before binding stands.
                if reporter.status(name).is_none() {
                    reporter.set_serving(name);
                }
            }
            let own = health::v1::health_server::SERVICE_DESCRIPTOR.name;
            if reporter.status(own).is_none() {
                reporter.set_serving(own);
            }
            services.push(Arc::new(health::v1::health_server::HealthServer::new(
                health::Health::new(reporter.clone()),
            )));
        }
        if self.reflection {
            let reflection = reflection::Reflection::new(services.iter().map(|s| s.descriptor()));
            let alpha = reflection.share();
            services.push(Arc::new(
                reflection::v1::server_reflection_server::ServerReflectionServer::new(reflection),
            ));
            services.push(Arc::new(
                reflection::v1alpha::server_reflection_server::ServerReflectionServer::new(alpha),
            ));
        }
        services
    }

    /// Serves another protocol on the same listeners, for the connections whose
    /// first bytes it claims (see [`Protocol`]); the gRPC bridge is one.
    pub fn add_protocol(mut self, protocol: impl Protocol) -> Self {
        self.protocols.push(Arc::new(protocol));
        self
    }

    /// Whether to serve gRPC server reflection (`grpc.reflection.v1`) for every
    /// service added (default true). Tools such as `sinew call` and grpcurl use it
    /// to learn the services' schemas from the server itself.
    pub fn reflection(mut self, enabled: bool) -> Self {
        self.reflection = enabled;
        self
    }

    /// Whether to serve gRPC health checking (`grpc.health.v1.Health`, default
    /// true). Every service added starts SERVING; see [`ServerBuilder::health_reporter`].
    pub fn health(mut self, enabled: bool) -> Self {
        self.health = enabled.then(|| self.health.take().unwrap_or_default());
        self
    }

    /// The handle through which the application sets the health statuses this
    /// server reports (also available later from [`Server::health_reporter`]).
    /// `None` when health checking is turned off.
    pub fn health_reporter(&self) -> Option<HealthReporter> {
        self.health.clone()
    }

    /// Whether to tell clients of this server's shared-memory and Unix-socket
    /// addresses (`sinew.local.v1.Local`, default true), so that a client on the
    /// same host that reached it over TCP can move to them: see
    /// [`crate::local`]. Only served when the server listens on such addresses.
    pub fn advertise_local(mut self, enabled: bool) -> Self {
        self.advertise_local = enabled;
        self
    }

    /// Settings of the shared-memory listeners (`shm://`): ring size, spin
    /// before sleeping, handshake timeout, other user ids to accept.
    pub fn shm_options(mut self, options: sinew_transport::ShmOptions) -> Self {
        self.config.transport.shm = options;
        self
    }

    /// The certificate, key and client authentication of the TLS listeners
    /// (`tls://host:port`, which need them). On a TLS listener sinew's
    /// protocol and gRPC share the port as on a plaintext one (ALPN tells them
    /// apart); a verified client certificate becomes the
    /// [`Peer::identity`] of the connection's calls.
    pub fn tls(mut self, tls: sinew_transport::tls::ServerTls) -> Self {
        self.config.transport.server_tls = Some(tls);
        self
    }

    /// Calls one client may have open at once on one connection (default 1024).
    /// Calls above the limit are refused with `UNAVAILABLE` before being processed.
    pub fn max_concurrent_streams(mut self, limit: u32) -> Self {
        self.config.settings.set_max_concurrent_streams(limit);
        self
    }

    crate::connection::options::connection_options!("requests");

    /// Connections the server holds at once, whatever their protocol (default
    /// 10,000, and at most three quarters of the process's file descriptor
    /// limit). At the limit, a new connection closes the oldest idle one (no
    /// call in flight) with a graceful GOAWAY; when every connection has calls
    /// in flight, the new one is refused with a GOAWAY `ENHANCE_YOUR_CALM`.
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.config.connection_limits.max_connections = limit.max(1);
        self
    }

    /// Connections one peer IP address may hold at once (default: no limit
    /// beyond [`max_connections`](Self::max_connections)); at the limit, the
    /// same rule applies among that address's connections.
    pub fn max_connections_per_ip(mut self, limit: usize) -> Self {
        self.config.connection_limits.max_connections_per_ip = limit.max(1);
        self
    }

    /// Bytes of response messages the calls of one connection may hold while
    /// they wait for the client to take them (default 64 MiB): a client that
    /// grants no flow-control credit, or does not read its socket, makes the
    /// server hold what its calls answer. Within two receive windows of the
    /// budget the connection stops returning credit for requests, so a client
    /// that asks faster than it takes its answers is slowed down at its
    /// requests. Past the budget it refuses new calls (`UNAVAILABLE`, not
    /// processed), and a call whose message would have to wait too ends with
    /// `RESOURCE_EXHAUSTED` (a client that takes nothing; or many calls
    /// answering far more than they were asked, all at once). The gRPC bridge
    /// bounds the request bytes it buffers per connection by the same figure.
    pub fn connection_memory(mut self, bytes: usize) -> Self {
        self.config.connection_memory = bytes.max(1);
        self
    }

    /// Time the request of a unary or server-streaming call may take to
    /// arrive, counted from the call's headers (default 60 s): a client that
    /// opens calls and never sends their request cannot keep them open. A
    /// call over it ends with `DEADLINE_EXCEEDED`. Streaming requests are the
    /// application's to time (their gaps can be long on purpose).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// How much sooner than the call's own deadline the calls its handler
    /// makes must end (default 0): the deadline they inherit
    /// ([`crate::inherit`]) is the call's less this margin, which leaves the
    /// handler time to answer when a call it made runs out.
    pub fn deadline_margin(mut self, margin: Duration) -> Self {
        self.config.deadline_margin = margin;
        self
    }

    /// Time a frame may take to arrive once its first bytes have (default
    /// 30 s): a peer that trickles a large frame a byte at a time is closed
    /// with a GOAWAY instead of pinning its buffer forever.
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.config.frame_timeout = timeout;
        self
    }

    /// Time a connection may stay without a call before the server closes it
    /// gracefully (GOAWAY `NO_ERROR`; a client opens a new connection when it
    /// next calls). Default 10 minutes; `None` keeps idle connections open.
    /// Keepalive PINGs do not count as calls. Checked a few times per frame
    /// timeout, so a connection goes within about a quarter of it after.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Time a new connection has to say which protocol it speaks and finish
    /// its handshake, all together (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// On shutdown, how long calls in flight may run before they are ended with
    /// `UNAVAILABLE` (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self
    }

    /// Binds every address (`tcp://host:port`, `unix:///path`; port 0 picks a free
    /// port, see [`Server::local_addresses`]).
    pub async fn bind<I, A>(self, addresses: I) -> io::Result<Server>
    where
        I: IntoIterator<Item = A>,
        A: TryInto<Address>,
        A::Error: Into<AddressErrorOrIo>,
    {
        let mut listeners = Vec::new();
        let mut local_addresses = Vec::new();
        for address in addresses {
            let address: Address = address.try_into().map_err(|e| e.into().into_io())?;
            let listener = Listener::bind_with(&address, &self.config.transport)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("binding {address}: {e}")))?;
            local_addresses.push(listener.local_address()?);
            listeners.push(listener);
        }
        if listeners.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to listen on",
            ));
        }
        let services = self.assemble_services(&local_addresses);
        let service_names = self
            .services
            .iter()
            .map(|service| service.descriptor().name)
            .collect();
        let (shutdown, _) = watch::channel(false);
        let admission = admission::Admission::new(self.config.connection_limits);
        Ok(Server {
            admission,
            listeners,
            local_addresses,
            service_names,
            router: Arc::new(Router::new(services, self.fallback, &self.layers)),
            config: Arc::new(self.config),
            shutdown,
            connection_shutdown: watch::channel(false).0,
            health: self.health,
            protocols: Arc::new(self.protocols),
        })
    }
}

/// Either a malformed address or an I/O error; lets [`ServerBuilder::bind`] take
/// strings and already-parsed [`Address`]es alike.
#[derive(Debug)]
pub struct AddressErrorOrIo(io::Error);

impl AddressErrorOrIo {
    fn into_io(self) -> io::Error {
        self.0
    }
}

impl From<AddressError> for AddressErrorOrIo {
    fn from(error: AddressError) -> Self {
        AddressErrorOrIo(io::Error::new(io::ErrorKind::InvalidInput, error))
    }
}

impl From<std::convert::Infallible> for AddressErrorOrIo {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// A bound server. Call [`Server::serve`] to run it.
pub struct Server {
    /// The table of connections, and the server's figures.
    admission: Arc<admission::Admission>,
    listeners: Vec<Listener>,
    local_addresses: Vec<Address>,
    /// The names of the services added by the application.
    service_names: Vec<&'static str>,
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    shutdown: watch::Sender<bool>,
    /// Tells connections (accepted and in-process) to drain; see `serve`.
    connection_shutdown: watch::Sender<bool>,
    health: Option<HealthReporter>,
    protocols: Arc<Vec<Arc<dyn Protocol>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addresses", &self.local_addresses)
            .finish_non_exhaustive()
    }
}

/// Starts a graceful shutdown of the server it came from. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    shutdown: watch::Sender<bool>,
    admission: Arc<admission::Admission>,
}

/// Handles of the same server are equal.
impl PartialEq for ServerHandle {
    fn eq(&self, other: &ServerHandle) -> bool {
        Arc::ptr_eq(&self.admission, &other.admission)
    }
}

impl Eq for ServerHandle {}

impl ServerHandle {
    /// The server's figures now: connections, calls, bytes, limits hit (see
    /// [`ServerStats`]). Cheap enough for every scrape: a lock and a walk
    /// over the open connections, nothing on the call path.
    pub fn stats(&self) -> ServerStats {
        self.admission.stats()
    }

    /// Stops accepting, sends GOAWAY on every connection, lets calls in flight
    /// finish (up to the drain timeout), then makes [`Server::serve`] return.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

/// 10,000 connections, or three quarters of the file descriptor limit if that
/// is lower: the rest stay for the listeners, shared-memory descriptors and
/// whatever else the process opens.
fn default_max_connections() -> usize {
    let descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    (descriptors / 4 * 3).clamp(1, 10_000) as usize
}

/// How long after the drain deadline the server waits for its connections to
/// flush their last frames and close before it drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What a graceful shutdown did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections that were open when shutdown began.
    pub connections: u64,
    /// Calls in flight when shutdown began that finished normally.
    pub drained_calls: u64,
    /// Calls ended with `UNAVAILABLE` because the drain timeout passed.
    pub cancelled_calls: u64,
    /// Connections still open a grace period after the drain deadline (their
    /// peers neither read nor left), closed under them so that shutdown
    /// always ends.
    pub closed_at_deadline: u64,
}

impl Server {
    /// A builder with default limits and no service.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            services: Vec::new(),
            fallback: None,
            layers: Vec::new(),
            protocols: Vec::new(),
            reflection: true,
            health: Some(HealthReporter::default()),
            advertise_local: true,
            config: ServerConfig {
                settings: Settings::default(),
                handshake_timeout: Duration::from_secs(10),
                drain_timeout: Duration::from_secs(30),
                keepalive: crate::Keepalive::SERVER,
                transport: TransportOptions::default(),
                connection_limits: admission::Limits {
                    max_connections: default_max_connections(),
                    max_connections_per_ip: usize::MAX,
                },
                connection_memory: 64 * 1024 * 1024,
                request_timeout: Duration::from_secs(60),
                frame_timeout: Duration::from_secs(30),
                idle_timeout: Some(Duration::from_secs(600)),
                deadline_margin: Duration::ZERO,
            },
        }
    }

    /// The addresses actually bound, in the order given to `bind`.
    pub fn local_addresses(&self) -> &[Address] {
        &self.local_addresses
    }

    /// The full names of the services added to it (`package.Service`), in
    /// the order they were added; not the health, reflection and
    /// local-endpoint services every server also offers.
    pub fn service_names(&self) -> &[&'static str] {
        &self.service_names
    }

    /// The handle that sets the health statuses this server reports, unless health
    /// checking was turned off.
    pub fn health_reporter(&self) -> Option<HealthReporter> {
        self.health.clone()
    }

    /// Opens in-process connections to this server: a [`Channel`](crate::Channel)
    /// built with [`Channel::builder_with_connector`](crate::Channel::builder_with_connector)
    /// over it calls the server without a socket. Calls made this way drain with
    /// the others at shutdown.
    pub fn local_connector(&self) -> LocalConnector {
        LocalConnector::new(
            self.router.clone(),
            self.config.clone(),
            self.connection_shutdown.subscribe(),
        )
    }

    /// A handle that can shut this server down.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shutdown: self.shutdown.clone(),
            admission: self.admission.clone(),
        }
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn serve_with_shutdown(
        self,
        signal: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> ShutdownReport {
        let handle = self.handle();
        let watcher = tokio::spawn(async move {
            signal.await;
            handle.shutdown();
        });
        let report = self.serve().await;
        watcher.abort();
        report
    }

    /// Serves until [`ServerHandle::shutdown`] is called, then shuts down gracefully
    /// and reports what happened to the calls in flight.
    pub async fn serve(self) -> ShutdownReport {
        let Server {
            admission,
            listeners,
            local_addresses: _,
            service_names: _,
            router,
            config,
            shutdown,
            connection_shutdown,
            health,
            protocols,
        } = self;
        let mut shutdown_rx = shutdown.subscribe();
        let (accepted_tx, mut accepted_rx) = mpsc::channel(64);
        let mut acceptors = JoinSet::new();
        for listener in listeners {
            let accepted = accepted_tx.clone();
            acceptors.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok(stream) => {
                            if accepted.send(stream).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            // Typically out of file descriptors: back off and retry
                            // rather than spin or stop serving.
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        drop(accepted_tx);

        // Connections get their own shutdown signal, sent only once they have been
        // counted: were they to watch the server's, an idle one could finish
        // before `serve` noticed the shutdown, and go uncounted.
        let local = LocalConnector::new(
            router.clone(),
            config.clone(),
            connection_shutdown.subscribe(),
        );
        let mut connections = JoinSet::new();
        let mut report = ShutdownReport::default();
        if !*shutdown_rx.borrow_and_update() {
            loop {
                tokio::select! {
                    accepted = accepted_rx.recv() => match accepted {
                        Some(stream) => match admission.admit(stream.peer_ip()) {
                            Ok(ticket) => {
                                connections.spawn(protocol::route(
                                    stream,
                                    protocols.clone(),
                                    local.clone(),
                                    ticket,
                                ));
                            }
                            Err(refused) => {
                                tokio::spawn(protocol::refuse(stream, config.clone(), refused));
                            }
                        },
                        None => break,
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    changed = shutdown_rx.changed() => {
                        if changed.is_err() || *shutdown_rx.borrow() {
                            break;
                        }
                    }
                }
            }
        }
        // Tell health watchers first, so balancers stop sending new calls here.
        if let Some(health) = &health {
            health.shutting_down();
        }
        // Stop accepting (dropping the listeners also removes Unix socket files).
        acceptors.abort_all();
        while acceptors.join_next().await.is_some() {}
        shutdown.send_replace(true);
        report.connections = connections.len() as u64;
        admission.close_all();
        connection_shutdown.send_replace(true);
        // Every protocol ends its calls by the drain deadline and closes its
        // connections right after; the server's own bound makes that certain
        // whatever a protocol or a peer does.
        let give_up = tokio::time::Instant::now() + config.drain_timeout + SHUTDOWN_GRACE;
        loop {
            match tokio::time::timeout_at(give_up, connections.join_next()).await {
                Ok(Some(Ok(counts))) => {
                    report.drained_calls += counts.drained;
                    report.cancelled_calls += counts.cancelled;
                }
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    report.closed_at_deadline = connections.len() as u64;
                    tracing::debug!(
                        connections = connections.len(),
                        "connections still open after the drain deadline; closed"
                    );
                    connections.shutdown().await;
                    break;
                }
            }
        }
        report
    }
}
