//! `sinew serve`: the example services on any number of listeners, until Ctrl-C;
//! with `--join` or `--gossip`, a member of a gossip cluster that publishes
//! them, and leaves the cluster before it drains; with `--register`, registered
//! in etcd, and deregistered before it drains.

use crate::error::CliError;
use sinew::resilience::{FaultHandle, FaultLayer, FaultRule};
use sinew::telemetry::{AdminServer, Telemetry};
use sinew::Server;
use sinew_examples::echo::{echo_server::EchoServer, EchoService};
use sinew_examples::kv::{key_value_server::KeyValueServer, KeyValueStore};
use sinew_examples::library::LibraryService;
use std::io::Write;
use std::time::Duration;

/// Which example services to serve.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Example {
    /// grpc.examples.echo.Echo
    Echo,
    /// sinew.examples.kv.KeyValue
    Kv,
    /// sinew.examples.library.Library (books on shelves, with
    /// google.api.http rules for the gateway's JSON transcoding)
    Library,
    /// Every one.
    All,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  sinew serve --listen tcp://127.0.0.1:7000 --listen unix:///tmp/sinew.sock --listen shm:///tmp/sinew-shm.sock\n  \
sinew serve --listen tcp://127.0.0.1:7001 --gossip 127.0.0.1:7946         # the first member of a cluster\n  \
sinew serve --listen tcp://127.0.0.1:7002 --join 127.0.0.1:7946           # another one\n  \
sinew call gossip://127.0.0.1:7946 grpc.examples.echo.Echo/UnaryEcho '{\"message\":\"hi\"}'\n  \
sinew serve --listen tcp://127.0.0.1:7003 --register etcd://127.0.0.1:2379   # registered in etcd\n  \
sinew call etcd://127.0.0.1:2379 grpc.examples.echo.Echo/UnaryEcho '{\"message\":\"hi\"}'"
)]
pub(crate) struct Args {
    /// Serve the admin endpoint on this address (HTTP): / (a live
    /// dashboard), /metrics (every
    /// call's metrics, Prometheus text format), /healthz, /readyz (not ready
    /// until listening, and while draining). It has no authentication:
    /// bind it where only operators reach, e.g. 127.0.0.1:9000.
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<std::net::SocketAddr>,
    /// Pass every call to a service this server does not have on to
    /// ADDRESS (any address `sinew call` takes: a sinew server, or a gRPC
    /// one with grpc://), messages untouched, metadata, deadlines and
    /// statuses kept, the trace continued.
    #[arg(long, value_name = "ADDRESS")]
    forward: Option<String>,
    /// Send the spans of sampled calls to the OpenTelemetry collector at
    /// URL over OTLP/gRPC (e.g. http://127.0.0.1:4317).
    #[arg(long, value_name = "URL")]
    otlp: Option<String>,
    /// The share of traces started here (calls without a traceparent) to
    /// sample, from 0 to 1; a caller's decision is kept. Default: 1 with
    /// --otlp, else 0.
    #[arg(long, value_name = "RATIO")]
    sample_ratio: Option<f64>,
    /// Address to listen on: tcp://HOST:PORT, tls://HOST:PORT (needs
    /// --tls-cert and --tls-key), unix:///PATH or shm:///PATH (repeatable).
    /// Default: tcp://127.0.0.1:0 (tls://127.0.0.1:0 with --tls-cert), a free
    /// port, printed at start.
    #[arg(short, long = "listen", value_name = "ADDRESS")]
    listen: Vec<String>,
    /// Which example services to serve.
    #[arg(long, value_enum, default_value_t = Example::All)]
    example: Example,
    /// At shutdown, how long calls in flight may run before they are ended with
    /// UNAVAILABLE.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::time::parse_duration)]
    drain_timeout: Duration,
    #[command(flatten)]
    limits: Limits,
    /// Add this latency to every call while switched on by SIGUSR1 (SIGUSR2
    /// switches it off): a server made slow on demand, to watch balancers
    /// avoid it (`sinew demo` does).
    #[arg(long, value_name = "DURATION", value_parser = crate::time::parse_duration)]
    fault_latency: Option<Duration>,
    /// Inject a fault into the calls a rule matches (repeatable; every rule
    /// that matches applies), as Envoy's fault filter does: comma-separated
    /// settings, e.g. `delay=50ms@5%`, `abort=UNAVAILABLE@50%,pushback=100ms`,
    /// `path=/grpc.examples.echo.Echo/,first-attempt,abort=UNAVAILABLE`,
    /// `metadata=x-fault=slow,delay=1s`. For drills and tests.
    #[arg(long, value_name = "RULE")]
    fault: Vec<sinew::resilience::FaultRule>,
    /// Refuse calls over an adaptive concurrency limit (Netflix's Vegas: it
    /// keeps a queue of a few calls, growing while latency holds and
    /// shrinking when it rises) with
    /// RESOURCE_EXHAUSTED and a retry pushback; `sinew-priority: critical`
    /// calls are refused last, `sheddable` ones first.
    #[arg(long)]
    adaptive_limit: bool,
    /// Allow each caller this many calls a second on average (a token bucket
    /// per caller, see --rate-limit-by); calls over it get RESOURCE_EXHAUSTED
    /// with a pushback saying when to come back.
    #[arg(long, value_name = "CALLS_PER_SECOND", value_parser = parse_rate)]
    rate_limit: Option<f64>,
    /// How many calls a caller may make at once under --rate-limit (default:
    /// one second's worth).
    #[arg(long, value_name = "CALLS", requires = "rate_limit")]
    rate_limit_burst: Option<u32>,
    /// Who a caller is for --rate-limit: `peer` (its IP address) or
    /// `metadata:KEY` (the value of a metadata entry, an API key say).
    #[arg(long, value_name = "peer|metadata:KEY", default_value = "peer", value_parser = parse_rate_limit_key, requires = "rate_limit")]
    rate_limit_by: sinew::resilience::RateLimitKey,
    #[command(flatten)]
    security: super::security::ServerSecurity,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    tasks: TaskArgs,
    #[command(flatten)]
    election: ElectionArgs,
}

/// Standing in a leader election beside serving (what `sinew demo`'s nodes
/// do).
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Leader election")]
pub(crate) struct ElectionArgs {
    /// Stand in this election of the shared-state store (--elect-store):
    /// prints `leading NAME as VALUE` when elected (the value is --name, or
    /// the first address); resigns first thing at shutdown.
    #[arg(long, value_name = "NAME", requires = "elect_store")]
    elect: Option<String>,
    /// The store the election is in: etcd members or a `sinew state`
    /// (comma-separated HOST:PORT).
    #[arg(long, value_name = "HOST:PORT,...")]
    elect_store: Option<String>,
    /// How long this node goes on leading if it is killed or cut off.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::time::parse_duration)]
    elect_ttl: Duration,
}

impl ElectionArgs {
    /// Starts campaigning as `value`, if asked to: the handle resigns
    /// (or ends the campaign) when told to stop.
    fn start(
        &self,
        value: String,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, CliError> {
        let (Some(name), Some(store)) = (&self.elect, &self.elect_store) else {
            return Ok(None);
        };
        let etcd = sinew::cluster::etcd::Etcd::connect(store.split(',').map(str::trim))
            .map_err(|status| CliError::usage(status.message().to_owned()))?;
        let election = sinew::state::Election::new(etcd, name).with_ttl(self.elect_ttl);
        let name = name.clone();
        println!("campaigning in {name} as {value}");
        Ok(Some(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            tokio::pin!(stopped);
            // Campaign again after a failed campaign or a lost leadership
            // (the store restarted, a partition), until the shutdown.
            let mut retry = Duration::from_millis(200);
            loop {
                let leadership = tokio::select! {
                    won = election.campaign(value.clone()) => match won {
                        Ok(leadership) => leadership,
                        Err(status) => {
                            eprintln!("the campaign in {name} failed ({}); trying again", status.message());
                            tokio::select! {
                                () = tokio::time::sleep(retry) => {}
                                () = &mut stopped => return,
                            }
                            retry = (retry * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    },
                    () = &mut stopped => return,
                };
                retry = Duration::from_millis(200);
                println!(
                    "leading {name} as {value} (term {})",
                    leadership.fencing_token().0
                );
                let _ = std::io::stdout().flush();
                let mut lost = leadership.lost();
                tokio::select! {
                    reason = lost.wait() => println!("leadership of {name} lost: {reason}"),
                    () = &mut stopped => {
                        match leadership.resign().await {
                            Ok(()) => println!("resigned from {name}"),
                            Err(status) => eprintln!("resigning from {name} failed: {}", status.message()),
                        }
                        let _ = std::io::stdout().flush();
                        return;
                    }
                }
                let _ = std::io::stdout().flush();
            }
        })))
    }
}

/// Working on a task queue beside serving (what `sinew demo`'s nodes do).
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Tasks")]
pub(crate) struct TaskArgs {
    /// Work on the tasks of a broker's task queue (a served broker's
    /// address, or nats://...): each task takes --task-time, and its result
    /// names this server (--name) and the delivery. At shutdown no task is
    /// taken any more and the running ones finish.
    #[arg(long = "tasks", value_name = "BROKER")]
    broker: Option<String>,
    /// The task queue (it must exist).
    #[arg(
        long,
        value_name = "QUEUE",
        default_value = "demo.tasks",
        requires = "broker"
    )]
    task_queue: String,
    /// How long each task takes.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = crate::time::parse_duration, requires = "broker")]
    task_time: Duration,
    /// Tasks worked on at once.
    #[arg(long, value_name = "TASKS", default_value_t = 4, requires = "broker")]
    task_concurrency: usize,
}

impl TaskArgs {
    /// Starts the worker, if asked for: it stops taking tasks once `stop`
    /// says so, and its handle ends when the running ones are done.
    async fn start(
        &self,
        name: String,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, CliError> {
        let Some(address) = &self.broker else {
            return Ok(None);
        };
        let broker = if address.starts_with("nats://") {
            sinew::messaging::Broker::nats(address).await?
        } else {
            sinew::messaging::Broker::connect(address).await?
        };
        let tasks = sinew::messaging::TaskQueue::open(&broker, &self.task_queue).await?;
        let (time, concurrency) = (self.task_time, self.task_concurrency);
        println!("working on the tasks of {} at {address}", self.task_queue);
        Ok(Some(tokio::spawn(async move {
            let handler = move |task: std::sync::Arc<sinew::messaging::Task>| {
                let result = format!("{name} (delivery {})", task.attempt());
                async move {
                    tokio::time::sleep(time).await;
                    Ok(result.into())
                }
            };
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            if let Err(error) = tasks.serve_until(concurrency, handler, stopped).await {
                eprintln!("the task worker stopped: {error}");
            }
        })))
    }
}

/// Registration in etcd.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Cluster (etcd registry)")]
pub(crate) struct RegistryArgs {
    /// Register this server's TCP addresses and services in etcd, at
    /// etcd://HOST:PORT (more members after commas; ?prefix=PREFIX for a key
    /// prefix other than /sinew/endpoints/); deregistered first thing at
    /// shutdown.
    #[arg(long, value_name = "ETCD")]
    register: Option<String>,
    /// The registration's lease: how long it outlives this process if it is
    /// killed or cut off from etcd.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::time::parse_duration)]
    ttl: Duration,
}

impl RegistryArgs {
    /// Registers `server`, when asked to; with the admin endpoint at
    /// `admin` in each endpoint's metadata (`sinew dashboard etcd://...`
    /// finds the process's figures there).
    async fn register(
        &self,
        server: &Server,
        admin: Option<std::net::SocketAddr>,
    ) -> Result<Option<sinew::cluster::etcd::Registration>, CliError> {
        let Some(name) = &self.register else {
            return Ok(None);
        };
        let target = sinew::cluster::name::etcd::Target::parse(name)
            .map_err(|status| CliError::usage(status.message().to_owned()))?;
        if let Some(service) = &target.service {
            return Err(CliError::usage(format!(
                "--register {name}: a server registers all of its services; drop /{service}"
            )));
        }
        let failure = |status: sinew::Status| {
            CliError::failure(format!("registering in etcd: {}", status.message()))
        };
        let registry = target.registry().map_err(failure)?.with_ttl(self.ttl);
        let endpoint = |address: sinew::Address| {
            let mut endpoint = sinew::cluster::Endpoint::new(address.clone());
            if let Some(admin) = admin {
                // On every interface: told by the host of the address
                // registered (this host as other hosts reach it).
                let url = match (&address, admin.ip().is_unspecified()) {
                    (sinew::Address::Tcp { host, .. } | sinew::Address::Tls { host, .. }, true)
                        if host.contains(':') =>
                    {
                        format!("http://[{host}]:{}", admin.port())
                    }
                    (sinew::Address::Tcp { host, .. } | sinew::Address::Tls { host, .. }, true) => {
                        format!("http://{host}:{}", admin.port())
                    }
                    (_, true) => format!("http://127.0.0.1:{}", admin.port()),
                    (_, false) => format!("http://{admin}"),
                };
                endpoint = endpoint.with_metadata(sinew::cluster::ADMIN_METADATA, url);
            }
            endpoint
        };
        let registration = registry
            .register_server_with(server, endpoint)
            .await
            .map_err(failure)?;
        for address in registration.addresses() {
            println!(
                "registered {address} in etcd at {} under {}: {}",
                target.members.join(","),
                target.prefix,
                server.service_names().join(", ")
            );
        }
        Ok(Some(registration))
    }
}

/// The IP of a TCP or TLS address (none for the other transports, or a
/// host name).
fn host_ip(address: &sinew::Address) -> Option<std::net::IpAddr> {
    match address {
        sinew::Address::Tcp { host, .. } | sinew::Address::Tls { host, .. } => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok(),
        _ => None,
    }
}

/// Membership of a gossip cluster (the embedded registry).
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Cluster (embedded gossip registry)")]
pub(crate) struct ClusterArgs {
    /// Join the gossip cluster that this member belongs to (HOST:PORT of its
    /// gossip address; repeatable) and publish this server's services at its
    /// TCP addresses.
    #[arg(long, value_name = "HOST:PORT")]
    join: Vec<String>,
    /// Gossip on this UDP address. Enough alone for the first member of a
    /// cluster [default with --join: a free port on the first TCP listener's
    /// IP].
    #[arg(long, value_name = "HOST:PORT")]
    gossip: Option<std::net::SocketAddr>,
    /// The cluster's name: members of other clusters are ignored.
    #[arg(long, value_name = "NAME", default_value = sinew::cluster::gossip::DEFAULT_CLUSTER)]
    cluster: String,
    /// This member's name, unique in the cluster [default: its gossip address].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The zone this server runs in, for clients that prefer their own.
    #[arg(long, value_name = "ZONE")]
    zone: Option<String>,
    /// Publish this gRPC service config (a JSON file) to the cluster for
    /// each of this server's services: clients that call them by a
    /// gossip:// name follow it. The file is read again every second, and
    /// a changed version that is a valid config published. Of the versions
    /// the live members publish, the most recently written file's is in
    /// force.
    #[arg(long, value_name = "FILE")]
    publish_service_config: Option<std::path::PathBuf>,
}

impl ClusterArgs {
    /// Joins and publishes `server`, when asked to.
    async fn join(
        &self,
        server: &Server,
        admin: Option<std::net::SocketAddr>,
    ) -> Result<Option<sinew::cluster::gossip::Member>, CliError> {
        if self.join.is_empty() && self.gossip.is_none() {
            return Ok(None);
        }
        let listen = self.gossip.unwrap_or_else(|| {
            let ip = server
                .local_addresses()
                .iter()
                .find_map(host_ip)
                .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
            std::net::SocketAddr::new(ip, 0)
        });
        let mut builder = sinew::cluster::gossip::Member::builder()
            .cluster(&self.cluster)
            .listen(listen)
            .seeds(self.join.iter().cloned());
        if let Some(name) = &self.name {
            builder = builder.name(name);
        }
        if let Some(zone) = &self.zone {
            builder = builder.zone(zone);
        }
        if let Some(mut admin) = admin {
            // Where dashboards find this member's figures: an admin
            // endpoint on every interface is told by the gossip address
            // (0.0.0.0 means nothing to another host).
            if admin.ip().is_unspecified() {
                let ip = if listen.ip().is_unspecified() {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    listen.ip()
                };
                admin.set_ip(ip);
            }
            builder = builder.admin(format!("http://{admin}"));
        }
        let failure = |status: sinew::Status| {
            CliError::failure(format!("joining the cluster: {}", status.message()))
        };
        let member = builder.join().await.map_err(failure)?;
        let published = member.publish_server(server).await.map_err(failure)?;
        println!(
            "member {} of cluster {}, gossip on {}",
            member.name(),
            member.cluster(),
            member.gossip_address()
        );
        for address in published {
            println!("published {address}: {}", server.service_names().join(", "));
        }
        if let Some(path) = &self.publish_service_config {
            let services: Vec<String> = server
                .service_names()
                .iter()
                .map(|service| service.to_string())
                .collect();
            let text = read_service_config(path).map_err(CliError::usage)?;
            publish_service_config(&member, &services, &text, written(path))
                .await
                .map_err(failure)?;
            println!(
                "published the service config {} for {}",
                path.display(),
                services.join(", ")
            );
            tokio::spawn(republish_on_change(
                member.clone(),
                services,
                path.clone(),
                text,
            ));
        }
        Ok(Some(member))
    }
}

/// The service config in `path`, checked.
fn read_service_config(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read the service config {}: {error}", path.display()))?;
    check_service_config(path, &text)?;
    Ok(text)
}

fn check_service_config(path: &std::path::Path, text: &str) -> Result<(), String> {
    sinew::resilience::ServiceConfig::from_json(text)
        .map(drop)
        .map_err(|error| format!("the service config {}: {error}", path.display()))
}

/// When the file at `path` was last written (now, if that is unknown).
fn written(path: &std::path::Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .unwrap_or_else(|_| std::time::SystemTime::now())
}

async fn publish_service_config(
    member: &sinew::cluster::gossip::Member,
    services: &[String],
    text: &str,
    written: std::time::SystemTime,
) -> Result<(), sinew::Status> {
    for service in services {
        member
            .publish_service_config(service, text, written)
            .await?;
    }
    Ok(())
}

/// Publishes the service config in `path` again whenever it changes into
/// a valid one (looked at every second).
async fn republish_on_change(
    member: sinew::cluster::gossip::Member,
    services: Vec<String>,
    path: std::path::PathBuf,
    mut published: String,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if text == published {
            continue;
        }
        match check_service_config(&path, &text) {
            Ok(()) => match publish_service_config(&member, &services, &text, written(&path)).await
            {
                Ok(()) => {
                    println!("published the new service config {}", path.display());
                    published = text;
                }
                Err(status) => eprintln!("service config not published: {}", status.message()),
            },
            Err(error) => {
                eprintln!("{error}; the published one stays");
                // Said once per version.
                published = text;
            }
        }
    }
}

/// What one peer may cost the server (docs/security.md says how to size them).
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Limits")]
pub(crate) struct Limits {
    /// Connections held at once; at the limit a new one closes the oldest idle
    /// one, or is refused when all are busy [default: 10000, at most 3/4 of the
    /// file descriptor limit].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Connections one IP address may hold at once [default: no limit].
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<usize>,
    /// Time a new connection has to pick its protocol and finish its handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::time::parse_duration)]
    handshake_timeout: Duration,
    /// Calls one connection may have open at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_concurrent_streams: u32,
    /// Largest request message (one frame), e.g. 4MiB.
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = crate::size::parse_size_u32)]
    max_message_size: u32,
    /// Largest header list (path and metadata) of a call, e.g. 16KiB.
    #[arg(long, value_name = "SIZE", default_value = "16KiB", value_parser = crate::size::parse_size_u32)]
    max_header_list_size: u32,
    /// Bytes of messages one connection may hold for a client that does not
    /// take them (answers waiting for credit, buffered gRPC requests).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = crate::size::parse_size)]
    connection_memory: u64,
    /// Time the request of a unary or server-streaming call may take to arrive.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::time::parse_duration)]
    request_timeout: Duration,
    /// Time a frame may take to arrive once its first bytes have.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::time::parse_duration)]
    frame_timeout: Duration,
    /// Time a connection may stay without a call before it is closed (0s: never).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::time::parse_duration)]
    idle_timeout: Duration,
}

impl Limits {
    /// Applies these limits to a server and to its gRPC bridge.
    fn apply(
        &self,
        builder: sinew::rpc::ServerBuilder,
        grpc: sinew_grpc::GrpcProtocol,
    ) -> (sinew::rpc::ServerBuilder, sinew_grpc::GrpcProtocol) {
        let mut builder = builder
            .handshake_timeout(self.handshake_timeout)
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_frame_size(self.max_message_size)
            .max_header_list_size(self.max_header_list_size)
            .connection_memory(usize::try_from(self.connection_memory).unwrap_or(usize::MAX))
            .request_timeout(self.request_timeout)
            .frame_timeout(self.frame_timeout)
            .idle_timeout((!self.idle_timeout.is_zero()).then_some(self.idle_timeout));
        if let Some(limit) = self.max_connections {
            builder = builder.max_connections(limit);
        }
        if let Some(limit) = self.max_connections_per_ip {
            builder = builder.max_connections_per_ip(limit);
        }
        let grpc = grpc.max_message_size(self.max_message_size as usize);
        (builder, grpc)
    }
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let tls = args.security.tls()?;
    let mut addresses = args.listen;
    if addresses.is_empty() {
        addresses.push(
            if tls.is_some() {
                "tls://127.0.0.1:0"
            } else {
                "tcp://127.0.0.1:0"
            }
            .to_owned(),
        );
    }
    for address in &addresses {
        crate::schema::parse_address(address)?;
    }
    // sinew's protocol and gRPC (HTTP/2) on every listener: any gRPC client or
    // tool can call these services too.
    let (builder, grpc) = args.limits.apply(
        Server::builder().drain_timeout(args.drain_timeout),
        sinew_grpc::GrpcProtocol::default(),
    );
    let mut builder = builder.add_protocol(grpc);
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    // Telemetry first, so that calls the layers below refuse are traced
    // and counted too.
    let mut settings =
        Telemetry::builder().sample_ratio(args.sample_ratio.unwrap_or(if args.otlp.is_some() {
            1.0
        } else {
            0.0
        }));
    if let Some(endpoint) = &args.otlp {
        let export = sinew::telemetry::export::otlp(endpoint, "sinew")
            .map_err(|error| CliError::usage(error.to_string()))?;
        settings = settings.export(export);
    }
    let telemetry = settings.build();
    builder = builder.layer(telemetry.server_layer());
    if let Some(upstream) = &args.forward {
        let channel = sinew::ConnectOptions::new()
            .telemetry(telemetry.clone())
            .connect(upstream)
            .await
            .map_err(|status| {
                CliError::failure(format!("cannot reach {upstream}: {}", status.message()))
            })?;
        let upstream_client = tower::Layer::layer(&telemetry.client_layer(upstream), channel);
        builder = builder.fallback(sinew::rpc::server::Forward::new(upstream_client));
    }
    // Who the caller is (a token) before what it may call (the policy),
    // both before anything spends work on the call.
    if let Some(authenticate) = args.security.authenticate()? {
        builder = builder.layer(authenticate);
    }
    if let Some(authorize) = args.security.authorize()? {
        builder = builder.layer(authorize);
    }
    if !args.fault.is_empty() || args.fault_latency.is_some() {
        let faults = FaultLayer::with_rules(args.fault.clone());
        if let Some(latency) = args.fault_latency {
            switch_latency_on_signals(faults.handle().clone(), args.fault, latency).map_err(
                |error| CliError::failure(format!("cannot listen for SIGUSR1: {error}")),
            )?;
        }
        builder = builder.layer(faults);
    }
    if let Some(rate) = args.rate_limit {
        let burst = args.rate_limit_burst.unwrap_or(rate.ceil().max(1.0) as u32);
        builder = builder.layer(sinew::resilience::RateLimitLayer::new(
            sinew::resilience::RateLimit::new(rate, burst),
            args.rate_limit_by.clone(),
        ));
    }
    if args.adaptive_limit {
        let limit =
            sinew::resilience::AdaptiveLimitLayer::new(sinew::resilience::AdaptiveLimit::default());
        telemetry.watch_limit("server", &limit);
        builder = builder.layer(limit);
    }
    if matches!(args.example, Example::Echo | Example::All) {
        builder = builder.add_service(EchoServer::new(EchoService));
    }
    if matches!(args.example, Example::Kv | Example::All) {
        builder = builder.add_service(KeyValueServer::new(KeyValueStore::default()));
    }
    if matches!(args.example, Example::Library | Example::All) {
        builder = builder.add_service(LibraryService::with_sample_books().into_server());
    }
    let server = builder
        .bind(&addresses)
        .await
        .map_err(|error| CliError::failure(error.to_string()))?;
    telemetry.watch_server(&server.handle());
    // Listening for the signals before saying Ctrl-C works: one that came
    // earlier would end the process on the spot, with no drain.
    let signal = shutdown_signal(args.drain_timeout)
        .map_err(|error| CliError::failure(format!("cannot listen for Ctrl-C: {error}")))?;
    // Listening: ready (before anything is printed, so that whoever reads
    // the output and asks /readyz hears "ready").
    telemetry.readiness().set_ready();
    for address in server.local_addresses() {
        println!("listening on {address}");
    }
    let admin = super::serve_admin(&telemetry, args.admin).await?;
    let member = args
        .cluster
        .join(&server, admin.as_ref().map(AdminServer::local_addr))
        .await?;
    let registration = args
        .registry
        .register(&server, admin.as_ref().map(AdminServer::local_addr))
        .await?;
    let (stop_tasks, tasks_stopped) = tokio::sync::watch::channel(false);
    let node_name = args
        .cluster
        .name
        .clone()
        .unwrap_or_else(|| server.local_addresses()[0].to_string());
    let task_worker = args
        .tasks
        .start(node_name.clone(), tasks_stopped.clone())
        .await?;
    let campaign = args.election.start(node_name, tasks_stopped)?;
    // A member leaves the cluster (and a registration is removed) first, so
    // that clients stop sending here before the server refuses calls; the
    // task worker stops taking tasks.
    let readiness = telemetry.readiness().clone();
    let shutdown = async move {
        signal.await;
        readiness.set_not_ready("draining");
        stop_tasks.send_replace(true);
        if let Some(registration) = registration {
            registration.deregister().await;
            eprintln!("deregistered from etcd");
        }
        if let Some(member) = member {
            member.leave().await;
            eprintln!("left the cluster");
        }
    };
    println!("every address speaks sinew and gRPC (HTTP/2)");
    println!("press Ctrl-C to shut down gracefully");
    let _ = std::io::stdout().flush();
    let report = server.serve_with_shutdown(shutdown).await;
    if let Some(campaign) = campaign {
        // Resigned at the shutdown's start (within a second or two).
        let _ = tokio::time::timeout(Duration::from_secs(5), campaign).await;
    }
    if let Some(worker) = task_worker {
        // The tasks running finish (within the drain timeout).
        let _ = tokio::time::timeout(args.drain_timeout, worker).await;
    }
    // The spans of the last calls, before the process ends.
    telemetry.flush().await;
    if let Some(admin) = admin {
        admin.shutdown().await;
    }
    println!(
        "shut down gracefully: {} calls drained, {} cancelled at the drain deadline, {} connections closed",
        report.drained_calls, report.cancelled_calls, report.connections
    );
    if report.closed_at_deadline > 0 {
        println!(
            "{} of them were still open after the drain deadline (peers that neither read nor left) and were dropped",
            report.closed_at_deadline
        );
    }
    Ok(())
}

/// Completes at Ctrl-C (SIGINT) or SIGTERM, listened for from this call on,
/// and says how long the drain may take.
fn shutdown_signal(
    drain_timeout: Duration,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        // The server counts calls in flight only as they finish (see the report
        // printed at the end), so the limit is what can be said up front.
        eprintln!("{}", draining_message(drain_timeout));
    })
}

/// Adds `latency` to every call while SIGUSR1 has switched it on (until
/// SIGUSR2), on top of the `--fault` rules: `--fault-latency`.
fn switch_latency_on_signals(
    faults: FaultHandle,
    rules: Vec<FaultRule>,
    latency: Duration,
) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut slow = signal(SignalKind::user_defined1())?;
    let mut fast = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        loop {
            let slower = tokio::select! {
                Some(()) = slow.recv() => true,
                Some(()) = fast.recv() => false,
                else => return,
            };
            let mut in_force = rules.clone();
            if slower {
                in_force.push(FaultRule::all().delay(1.0, latency));
                let latency = crate::time::format_duration(latency);
                eprintln!("every call now {latency} slower (SIGUSR1)");
            } else {
                eprintln!("calls at full speed again (SIGUSR2)");
            }
            faults.set(in_force);
        }
    });
    Ok(())
}

/// `--rate-limit`: a number of calls a second above 0.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a number of calls a second above 0"
        )),
    }
}

/// `--rate-limit-by`: `peer` or `metadata:KEY`.
fn parse_rate_limit_key(text: &str) -> Result<sinew::resilience::RateLimitKey, String> {
    match text.split_once(':') {
        None if text == "peer" => Ok(sinew::resilience::RateLimitKey::PeerAddress),
        Some(("metadata", key)) if !key.is_empty() => {
            Ok(sinew::resilience::RateLimitKey::Metadata(key.to_owned()))
        }
        _ => Err(format!("{text:?} is neither `peer` nor `metadata:KEY`")),
    }
}

/// What `serve` says when the drain begins.
fn draining_message(drain_timeout: Duration) -> String {
    format!(
        "shutting down gracefully: calls in flight have up to {} to finish (--drain-timeout)",
        crate::time::format_duration(drain_timeout)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_message_says_how_long_calls_in_flight_may_take() {
        assert_eq!(
            draining_message(Duration::from_secs(30)),
            "shutting down gracefully: calls in flight have up to 30s to finish (--drain-timeout)"
        );
        assert!(draining_message(Duration::from_millis(1500)).contains("up to 1.5s to finish"));
    }
}
