//! sinew: one coherent, fast toolkit for the parts of a distributed system to
//! talk.
//!
//! A service is defined once in a `.proto` file and served over sinew's own
//! multiplexed protocol on TCP (`tcp://`, and with TLS `tls://`), Unix sockets
//! (`unix://`) and shared memory between processes on one host (`shm://`), and
//! over gRPC on the same ports; clients reach it, or any gRPC server
//! (`grpc://`, `grpcs://`), through one
//! [`connect`]. Calls, on both sides, are tower services, so that timeouts,
//! limits, authentication and the like are layers.
//!
//! # A service from scratch
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! sinew = "0.1"
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//!
//! [build-dependencies]
//! sinew-build = "0.1"
//! ```
//!
//! `build.rs` compiles the `.proto` (pure Rust, no `protoc` needed):
//!
//! ```no_run
//! fn main() -> std::io::Result<()> {
//!     sinew_build::compile_protos("proto/echo.proto")
//! }
//! ```
//!
//! and the program serves it and calls it (here gRPC's echo service,
//! `crates/sinew-examples/proto/echo.proto` in the repository; no `prost`
//! dependency of your own is needed):
//!
//! ```no_run
//! use sinew::{BoxStream, Request, Response, Server, Status, Streaming};
//! # mod echo { pub use sinew_examples::echo::*; }
//! // In your crate: mod echo { sinew::include_proto!("grpc.examples.echo"); }
//! use echo::{echo_client::EchoClient, echo_server, EchoRequest, EchoResponse};
//!
//! struct MyEcho;
//!
//! impl echo_server::Echo for MyEcho {
//!     async fn unary_echo(
//!         &self,
//!         request: Request<EchoRequest>,
//!     ) -> Result<Response<EchoResponse>, Status> {
//!         let message = request.into_inner().message;
//!         Ok(Response::new(EchoResponse { message }))
//!     }
//!
//!     type ServerStreamingEchoStream = BoxStream<EchoResponse>;
//!     async fn server_streaming_echo(
//!         &self,
//!         request: Request<EchoRequest>,
//!     ) -> Result<Response<Self::ServerStreamingEchoStream>, Status> {
//!         let message = request.into_inner().message;
//!         let replies = (1..=3).map(move |n| Ok(EchoResponse { message: format!("{message} {n}") }));
//!         Ok(Response::new(sinew::stream::iter(replies)))
//!     }
//!
//!     async fn client_streaming_echo(
//!         &self,
//!         _request: Request<Streaming<EchoRequest>>,
//!     ) -> Result<Response<EchoResponse>, Status> {
//!         Err(Status::unimplemented("not in this example"))
//!     }
//!
//!     type BidirectionalStreamingEchoStream = BoxStream<EchoResponse>;
//!     async fn bidirectional_streaming_echo(
//!         &self,
//!         _request: Request<Streaming<EchoRequest>>,
//!     ) -> Result<Response<Self::BidirectionalStreamingEchoStream>, Status> {
//!         Err(Status::unimplemented("not in this example"))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let server = Server::builder()
//!         .add_service(echo_server::EchoServer::new(MyEcho))
//!         .add_protocol(sinew::grpc::GrpcProtocol::default()) // gRPC clients too
//!         .bind(["tcp://127.0.0.1:7000", "unix:///tmp/echo.sock"])
//!         .await?;
//!     tokio::spawn(server.serve());
//!
//!     let client = EchoClient::connect("tcp://127.0.0.1:7000").await?;
//!     let mut request = Request::new(EchoRequest { message: "hi".into() });
//!     request.set_timeout(std::time::Duration::from_secs(1)); // enforced on both sides
//!     println!("{}", client.unary_echo(request).await?.into_inner().message);
//!
//!     let mut replies = client
//!         .server_streaming_echo(EchoRequest { message: "tick".into() })
//!         .await?
//!         .into_inner();
//!     while let Some(reply) = replies.message().await? {
//!         println!("{}", reply.message);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Where things are
//!
//! | item | what it is |
//! |------|------------|
//! | [`connect`], [`connect_with`] | a [`Channel`] to any address (with a gRPC service config's policies): `tcp://`, `tls://`, `unix://`, `shm://` (sinew's protocol), `grpc://`, `grpcs://`, `grpc+unix://`, `http://`, `https://` (gRPC) |
//! | [`Channel`], [`ChannelBuilder`](rpc::ChannelBuilder) | the client's handle on an endpoint: connection pool, reconnects, keepalive, readiness; a `tower::Service` |
//! | [`Client`] | typed calls over any call service; generated clients wrap one |
//! | [`Server`], [`ServerBuilder`](rpc::ServerBuilder) | services on listeners, layers ([`ServerBuilder::layer`](rpc::ServerBuilder::layer), [`interceptor`](rpc::ServerBuilder::interceptor)), limits, graceful shutdown |
//! | [`Status`], [`Code`] | every failure, in gRPC's code space |
//! | [`Request`], [`Response`], [`Streaming`], [`MetadataMap`] | the call-level types |
//! | [`rpc::call`] | the type-erased call that client layers see |
//! | [`rpc::server::ServerCall`] | the call that server layers see |
//! | [`transport`] | addresses, listeners, shared-memory options ([`transport::ShmOptions`]), peer identities ([`transport::PeerIdentity`]) |
//! | [`tls`] | TLS and mutual TLS settings: [`tls::ServerTls`] for `tls://` listeners, [`tls::ClientTls`] for `tls://` and `grpcs://` clients; certificates reloaded when their files change |
//! | [`wire`] | sinew's frames and codec (`docs/protocol.md`) |
//! | [`grpc`] (feature `grpc`, default) | the gRPC bridge and client |
//! | [`cluster`] (feature `cluster`, default) | discovery (resolvers) and the balanced channel over a service's endpoints |
//! | [`auth`] (feature `auth`, default) | who may call what: [`auth::AuthorizeLayer`] with a [`auth::Policy`] over certificate, process and token identities; bearer tokens ([`auth::AuthenticateLayer`], [`auth::BearerToken`]) |
//! | [`resilience`] (feature `resilience`, default) | gRPC service configs applied to calls: timeouts, retries, size limits |
//! | [`messaging`] (features `messaging` and `nats`, default) | publish/subscribe, queue groups, request/reply and durable work queues: [`messaging::Broker`] embedded in the process, served by a sinew server, or on NATS |
//! | [`gateway`] (feature `gateway`, default) | the HTTP edge: [`gateway::Gateway`], a reverse proxy with routes, balanced upstream groups (nginx's policies and peak EWMA), passive and active health, keep-alive pools, bounded retries and reloads, run by `sinew gateway` |
//! | [`state`] (feature `state`, default) | shared state: [`state::Kv`], [`state::Lock`] with fencing tokens, [`state::Election`], typed [`state::Config`], on etcd or the embedded store (`state::embedded`, served as etcd's API by `sinew state`) |
//! | [`telemetry`] (feature `telemetry`, default) | a span per call, W3C trace context across services ([`telemetry::TraceContext`]), Prometheus metrics, the admin endpoint (`/metrics`, `/healthz`, `/readyz`) |
//!
//! # Features
//!
//! * `grpc` (default): gRPC over HTTP/2 ([`grpc`]), on hyper: the bridge that
//!   serves sinew services to gRPC clients on the same port, and the client
//!   behind `grpc://` addresses. Without it, sinew's own protocol only.
//! * `cluster` (default): calling a service by name over many endpoints
//!   ([`cluster`]): resolvers, [`cluster::Balanced`] with its policies,
//!   endpoint health and fail-over.
//! * `gossip` (default): the embedded registry ([`cluster::gossip`]):
//!   servers publish their services to a cluster of members that gossip
//!   among themselves over UDP, and clients resolve names from it; no
//!   registry server to run. Builds chitchat and zstd (a C compiler).
//! * `etcd` (default): etcd as the registry ([`cluster::etcd`]): servers
//!   register under a kept-alive lease, clients resolve `etcd://` names
//!   from a watch. Needs `grpc`; no `protoc` (etcd's API is generated in
//!   Rust).
//! * `resilience` (default): per-method call policies from gRPC service
//!   configs ([`resilience`]): timeouts, retries with backoff, server
//!   pushback and throttling, message size limits, as one tower layer.
//! * `auth` (default): authorization policies and bearer-token
//!   authentication as server layers, and a client layer that sends a
//!   token ([`auth`]). (TLS and mutual TLS are always there: [`tls`].)
//! * `telemetry` (default): observability as layers ([`telemetry`]): a
//!   `tracing` span for every call with the OpenTelemetry RPC attributes,
//!   `traceparent`/`tracestate`/`baggage` carried across services and
//!   through handlers' own calls, per-method metrics with OpenTelemetry and
//!   gRPC (A66) names, and an admin HTTP endpoint serving them to
//!   Prometheus.
//! * `otlp`: the spans of sampled calls sent to an OpenTelemetry collector
//!   over OTLP/gRPC ([`telemetry::export`]), on `opentelemetry-otlp`.
//! * `gateway` (default): the HTTP edge ([`gateway`]): a reverse proxy
//!   for HTTP/1.1 and h2c clients with routes, upstream groups balanced as
//!   nginx balances them (and by peak EWMA), static or discovered, passive
//!   and active health, keep-alive pools, bounded retries and reloads; the
//!   engine of `sinew gateway`.
//! * `state` (default): shared state ([`state`]): a consistent KV, locks
//!   with fencing tokens, leader election and typed config over etcd's v3
//!   API, on etcd or on the embedded store (one node persisted in redb,
//!   served as etcd's API by `sinew state`).
//! * `dev-certs`: a throwaway certificate authority (`sinew::tls::dev`) for
//!   tests, demos and development.

#![forbid(unsafe_code)]

pub use sinew_rpc as rpc;
pub use sinew_transport as transport;
pub use sinew_transport::tls;
pub use sinew_wire as wire;

#[cfg(feature = "grpc")]
pub use sinew_grpc as grpc;

#[cfg(feature = "cluster")]
pub use sinew_cluster as cluster;

#[cfg(feature = "resilience")]
pub use sinew_resilience as resilience;

#[cfg(feature = "auth")]
pub use sinew_auth as auth;

#[cfg(feature = "telemetry")]
pub use sinew_telemetry as telemetry;

/// Messaging: publish/subscribe, queue groups, request/reply and durable
/// work queues, on the embedded broker or NATS (features `messaging` and
/// `nats`, default).
#[cfg(feature = "messaging")]
pub use sinew_messaging as messaging;

/// The HTTP edge: a reverse proxy in place of an nginx upstream block
/// (feature `gateway`, default).
#[cfg(feature = "gateway")]
pub use sinew_gateway as gateway;

/// Shared state: a consistent KV, locks with fencing tokens, leader
/// election and typed config, on etcd or the embedded store (feature
/// `state`, default).
#[cfg(feature = "state")]
pub use sinew_state as state;

/// The gateway's [`Connector`](gateway::Connector) over [`connect`]: the
/// services of its `[services]` may be at any address this build
/// understands (sinew's protocol, gRPC, names).
///
/// ```no_run
/// # async fn example(config: sinew::gateway::Config) -> Result<(), Box<dyn std::error::Error>> {
/// let gateway = sinew::gateway::Gateway::with_connector(config, sinew::gateway_connector()).await?;
/// gateway.run().await?;
/// # Ok(()) }
/// ```
#[cfg(feature = "gateway")]
pub fn gateway_connector() -> std::sync::Arc<dyn gateway::Connector> {
    std::sync::Arc::new(|address: String| async move { connect(&address).await })
}

mod connect;
pub use connect::ConnectOptions;

/// The protobuf runtime generated code uses: applications need no `prost`
/// dependency of their own (at a matching version) to use generated types.
pub use prost;
/// Protobuf's well-known types (`google.protobuf.Timestamp`, ...), as generated
/// code refers to them.
pub use prost_types;

pub use sinew_rpc::{
    Address, Channel, Client, Code, Keepalive, MetadataMap, Request, Response, Server, Status,
    Streaming,
};

pub use sinew_rpc::BoxStream;

/// Response streams from ordinary values, for streaming methods.
pub mod stream {
    use super::BoxStream;

    /// A response stream of the messages (or failures) `items` yields.
    pub fn iter<T, I>(items: I) -> BoxStream<T>
    where
        I: IntoIterator<Item = Result<T, super::Status>>,
        I::IntoIter: Send + 'static,
    {
        Box::pin(futures_util::stream::iter(items))
    }
}

/// The schemes of single-server addresses [`connect`] understands; with
/// feature `cluster` it takes names too ([`schemes`] lists both).
pub const SCHEMES: &[&str] = if cfg!(feature = "grpc") {
    &[
        "tcp",
        "tls",
        "unix",
        "shm",
        "grpc",
        "grpcs",
        "grpc+unix",
        "http",
        "https",
    ]
} else {
    &["tcp", "tls", "unix", "shm"]
};

/// Every scheme [`connect`] understands in this build, addresses then names,
/// for error messages and `--help` texts.
pub fn schemes() -> Vec<&'static str> {
    let names: &[&str] = {
        #[cfg(feature = "cluster")]
        {
            sinew_cluster::name::SCHEMES
        }
        #[cfg(not(feature = "cluster"))]
        {
            &[]
        }
    };
    SCHEMES.iter().chain(names).copied().collect()
}

/// Connects to an address given as text and returns a [`Channel`] to it:
///
/// * `tcp://HOST:PORT`, `tls://HOST:PORT`, `unix:///PATH`, `shm:///PATH`:
///   sinew's own protocol ([`Channel::connect`]; use [`Channel::builder`] for
///   settings, [`ChannelBuilder::tls`](rpc::ChannelBuilder::tls) for a CA or
///   a client certificate: here TLS trusts the system's roots);
/// * `grpc://HOST:PORT`, `http://HOST:PORT`, `grpc+unix:///PATH`, and over
///   TLS `grpcs://HOST:PORT`, `https://HOST:PORT`: any gRPC server (feature
///   `grpc`; [`grpc::client::GrpcChannel::builder`] for settings);
/// * `dns:///HOST:PORT`, `dns+srv:///NAME`, `gossip://SEED/package.Service`,
///   `etcd://HOST:PORT/package.Service`: a name, resolved to many endpoints
///   that calls are balanced over (feature `cluster`, `gossip` and `etcd`
///   for those names; see
///   [`cluster::name`]). Endpoints are connected in the background: an
///   unreachable one is not an error here, and a call waits until one is
///   ready, or fails with `UNAVAILABLE` naming each endpoint's last error.
///   Over a `gossip://` name (feature `resilience`), calls follow the
///   service config the service's members publish
///   ([`cluster::gossip::Member::publish_service_config`]), in force
///   within a round or two of gossip of each change (its balancing policy
///   is the one published when the channel is made).
///
/// The connection to a single server is made here, so an unreachable server
/// is `UNAVAILABLE` now; a malformed address, or an unknown scheme, is
/// `INVALID_ARGUMENT`, and the message lists every scheme this build
/// understands.
pub async fn connect(address: &str) -> Result<Channel, Status> {
    ConnectOptions::new().connect(address).await
}

/// [`connect`], for calls to `service`: a name that does not give the
/// service in its path (`gossip://SEED`, `dns:///HOST:PORT`) is resolved
/// for it (one that does must give the same); an address of one server is
/// connected to as [`connect`] does.
pub async fn connect_service(address: &str, service: &str) -> Result<Channel, Status> {
    ConnectOptions::new()
        .service(service)
        .connect(address)
        .await
}

/// [`connect`], with every call following a gRPC service config
/// ([`resilience::ServiceConfig`]): its method configs (timeouts, retries,
/// hedging, size limits) apply to each call, and for a name its
/// `loadBalancingConfig` picks the balancing policy: the first that sinew
/// has of `round_robin`, `least_request_experimental`,
/// `weighted_round_robin`, `ring_hash_experimental` (with its
/// `requestHashHeader`) and sinew's own `peak_ewma` (the default when none
/// is named). Feature `resilience`.
#[cfg(feature = "resilience")]
pub async fn connect_with(
    address: &str,
    config: resilience::ServiceConfig,
) -> Result<Channel, Status> {
    ConnectOptions::new()
        .service_config(config)
        .connect(address)
        .await
}

/// The first balancing policy of `config`'s `loadBalancingConfig` that
/// sinew has.
#[cfg(all(feature = "resilience", feature = "cluster"))]
pub(crate) fn balancing_policy(config: &resilience::ServiceConfig) -> Option<cluster::Policy> {
    config.load_balancing().iter().find_map(|policy| {
        let name = match policy.name.as_str() {
            "round_robin" | "weighted_round_robin" | "peak_ewma" => policy.name.clone(),
            "least_request_experimental" | "least_request" => "least_request".to_owned(),
            "ring_hash_experimental" | "ring_hash" => {
                let header = policy.settings.get("requestHashHeader")?.as_str()?;
                format!("ring_hash:{header}")
            }
            _ => return None,
        };
        name.parse().ok()
    })
}

pub(crate) fn scheme_list() -> String {
    schemes()
        .iter()
        .map(|scheme| format!("{scheme}://"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Includes the code `sinew-build` generated for a protobuf package:
/// `sinew::include_proto!("grpc.examples.echo")` in a module of its own.
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}

/// What code generated by `sinew-build` uses (the default runtime path
/// `::sinew`). Not for hand-written code.
#[doc(hidden)]
pub mod codegen {
    pub use sinew_rpc::codegen::*;

    /// What a generated client's `connect` calls: every scheme of [`connect`](crate::connect).
    pub use crate::connect;
}

/// The names most programs need: `use sinew::prelude::*;`.
pub mod prelude {
    pub use crate::BoxStream;
    pub use sinew_rpc::{
        Address, Channel, Client, Code, IntoRequest, IntoStreamingRequest, MetadataMap, Request,
        Response, Server, Status, Streaming,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_scheme_lists_every_supported_one() {
        let status = connect("carrier-pigeon://coop:1").await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        for scheme in schemes() {
            assert!(
                status.message().contains(&format!("{scheme}://")),
                "{status}"
            );
        }
        let status = connect("127.0.0.1:7000").await.unwrap_err();
        assert!(status.message().contains("no scheme"), "{status}");
    }

    #[cfg(all(feature = "resilience", feature = "cluster"))]
    #[test]
    fn a_service_configs_balancing_policy_is_the_first_sinew_has() {
        let policy = |json: &str| {
            let config = resilience::ServiceConfig::from_json(json).unwrap();
            balancing_policy(&config).map(|policy| policy.to_string())
        };
        assert_eq!(
            policy(r#"{"loadBalancingConfig": [{"pick_first": {}}, {"round_robin": {}}]}"#),
            Some("round_robin".to_owned())
        );
        assert_eq!(
            policy(
                r#"{"loadBalancingConfig": [{"least_request_experimental": {"choiceCount": 2}}]}"#
            ),
            Some("least_request".to_owned())
        );
        assert_eq!(
            policy(
                r#"{"loadBalancingConfig": [{"ring_hash_experimental": {"requestHashHeader": "x-user"}}]}"#
            ),
            Some("ring_hash:x-user".to_owned())
        );
        // A ring hash without a header to hash is not one sinew can run.
        assert_eq!(
            policy(r#"{"loadBalancingConfig": [{"ring_hash_experimental": {}}]}"#),
            None
        );
        assert_eq!(policy("{}"), None);
    }

    #[cfg(feature = "resilience")]
    #[tokio::test]
    async fn a_channel_with_a_service_config_retries_what_a_plain_one_does_not() {
        use resilience::{FaultLayer, FaultRule};
        use sinew_examples::echo::{echo_client::EchoClient, echo_server::EchoServer, EchoRequest};
        let server = Server::builder()
            .layer(FaultLayer::with_rules([FaultRule::all()
                .first_attempt_only()
                .abort_with(1.0, Code::Unavailable)]))
            .add_service(EchoServer::new(sinew_examples::echo::EchoService))
            .bind(["tcp://127.0.0.1:0"])
            .await
            .unwrap();
        let address = server.local_addresses()[0].to_string();
        tokio::spawn(server.serve());
        let request = || EchoRequest {
            message: "hi".into(),
        };
        let plain = EchoClient::new(connect(&address).await.unwrap());
        assert_eq!(
            plain.unary_echo(request()).await.unwrap_err().code(),
            Code::Unavailable
        );
        let config = resilience::ServiceConfig::from_json(
            r#"{"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 2,
                "initialBackoff": "0.01s", "maxBackoff": "0.01s", "backoffMultiplier": 1,
                "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
        )
        .unwrap();
        let retrying = EchoClient::new(connect_with(&address, config).await.unwrap());
        assert_eq!(
            retrying
                .unary_echo(request())
                .await
                .unwrap()
                .into_inner()
                .message,
            "hi"
        );
    }

    #[tokio::test]
    async fn each_scheme_family_reaches_its_client() {
        // Nothing listens on port 1: the error comes from the right client.
        let sinew = connect("tcp://127.0.0.1:1").await.unwrap_err();
        assert_eq!(sinew.code(), Code::Unavailable, "{sinew}");
        #[cfg(feature = "grpc")]
        {
            let grpc = connect("grpc://127.0.0.1:1").await.unwrap_err();
            assert_eq!(grpc.code(), Code::Unavailable, "{grpc}");
            assert!(grpc.message().contains("gRPC"), "{grpc}");
        }
    }
}
