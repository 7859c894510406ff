//! The gateway's configuration: what `gateway.toml` says, read and checked
//! before anything is started (or swapped in, on a reload).
//!
//! ```toml
//! [server]
//! listen = ["127.0.0.1:8080"]
//!
//! [upstreams.api]
//! balance = "round_robin"          # as nginx's default; see Balance
//! servers = [
//!   { address = "10.0.0.1:8080", weight = 5 },
//!   { address = "10.0.0.2:8080", max_fails = 3, fail_timeout = "30s" },
//!   { address = "10.0.0.3:8080", backup = true },
//! ]
//! keepalive = 32                    # idle connections kept per server
//!
//! [upstreams.api.health_check]      # active checks (nginx has none)
//! path = "/healthz"
//! interval = "2s"
//!
//! [[routes]]
//! path = "/api/"
//! upstream = "api"
//! retry = { tries = 3, on = ["error", "timeout", "http_503"] }
//! ```
//!
//! Durations are written with a unit (`250us`, `500ms`, `1.5s`, `2m`, `1h`;
//! see [`parse_duration`]); sizes in bytes. Every table refuses keys it does
//! not know, so a misspelt setting is an error at load, not a default
//! silently in force. [`Config::check`]
//! (called by [`Config::from_toml`]) refuses what could not work: a route to
//! an unknown upstream, a group without servers, a hash balance without a
//! key, weights of zero.
//!
//! Not here: the listeners' sockets and the upstreams' state; see
//! [`Gateway`](crate::Gateway) for what a reload keeps.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A whole gateway configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The front: listeners and the limits every client is held to.
    #[serde(default)]
    pub server: Server,
    /// Upstream groups by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// RPC services by name, called from HTTP/JSON (transcoding): a route
    /// with `service = "NAME"` goes to them.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// Routes, tried in order: the first that matches a request takes it.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// RPC services that a route's HTTP/JSON requests are transcoded into
/// calls of, by the methods' `google.api.http` rules (and
/// `POST /package.Service/Method` for every method).
///
/// ```toml
/// [services.library]
/// address = "tcp://127.0.0.1:7000"     # sinew's protocol, gRPC, or a name
/// protos = ["proto/library.proto"]     # or none: the server's reflection
///
/// [[routes]]
/// path = "/v1/"
/// service = "library"
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Service {
    /// Where the services are served: any address the gateway's connector
    /// takes. With the `sinew` command (and `sinew::gateway_connector`)
    /// every scheme of `sinew::connect`: `tcp://`, `unix://`, `shm://`,
    /// `tls://`, `grpc://`, `http://`, `grpcs://`, `dns:///`,
    /// `gossip://`, `etcd://`; a bare [`Gateway::new`](crate::Gateway::new)
    /// connects with sinew's protocol only.
    pub address: String,
    /// `.proto` files describing the services; none: the descriptors are
    /// fetched from the server's reflection service at start (so the
    /// server must be up then, which it need not be with protos).
    pub protos: Vec<std::path::PathBuf>,
    /// Directories imports are found in (default: each proto's own);
    /// `google/api/annotations.proto` and `google/protobuf/*` are built in.
    pub includes: Vec<std::path::PathBuf>,
    /// The services (`package.Service`) offered over HTTP; default: every
    /// service of the protos or of the server's reflection, but reflection
    /// and health.
    pub services: Vec<String>,
    /// Offer `POST /package.Service/Method` (a JSON body, the whole request
    /// message) for every method, annotated or not. Default true.
    pub method_paths: bool,
    /// JSON out: write fields at their default values (0, "", false, [])
    /// too, rather than leaving them out as proto3 JSON does.
    pub emit_defaults: bool,
    /// JSON out: 64-bit integers as numbers rather than strings (proto3
    /// JSON writes them as strings, since JavaScript cannot hold them).
    pub int64_as_numbers: bool,
    /// JSON out: fields by their proto names (`page_size`) rather than
    /// lowerCamelCase (`pageSize`). Both are read in.
    pub proto_names: bool,
    /// JSON out: enums as numbers rather than names.
    pub enums_as_numbers: bool,
    /// JSON in: ignore fields the message does not have, rather than
    /// answering 400.
    pub ignore_unknown_fields: bool,
    /// Request headers passed to the call as metadata, besides
    /// `authorization`, `traceparent`, `tracestate`, the request id and
    /// every `grpc-metadata-NAME` header (as `NAME`).
    pub forward_headers: Vec<String>,
    /// The largest request body taken for a call (413 beyond), JSON or
    /// gRPC-Web; at most `[server] max_body_bytes`. Default 4 MiB (gRPC's
    /// default message limit): JSON read into a message takes several
    /// times its size in memory (`[0,0,...]` some 20 bytes a byte).
    pub max_body_bytes: u64,
    /// Take gRPC-Web calls (`application/grpc-web*`, every method of the
    /// services offered, by `POST /package.Service/Method`). Default
    /// true; false answers them UNIMPLEMENTED (501).
    pub grpc_web: bool,
    /// The most server streams (JSON, server-sent events, gRPC-Web) open
    /// at once through this service; more are refused with 429
    /// (`RESOURCE_EXHAUSTED`). Default 512, leaving room among the 1024
    /// streams a sinew server takes on one connection for unary calls.
    pub max_streams: usize,
    /// How long a streamed message may wait for a client that does not
    /// read before the stream is cut off and its call cancelled (as
    /// nginx's `send_timeout`). Default 60 s.
    #[serde(deserialize_with = "duration")]
    pub stream_write_timeout: Duration,
    /// Server-sent events quiet this long get a `: keep-alive` comment;
    /// `"0s"`: never. Default 15 s.
    #[serde(deserialize_with = "duration")]
    pub sse_keep_alive: Duration,
}

impl Default for Service {
    fn default() -> Service {
        Service {
            address: String::new(),
            protos: Vec::new(),
            includes: Vec::new(),
            services: Vec::new(),
            method_paths: true,
            emit_defaults: false,
            int64_as_numbers: false,
            proto_names: false,
            enums_as_numbers: false,
            ignore_unknown_fields: false,
            forward_headers: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            grpc_web: true,
            max_streams: 512,
            stream_write_timeout: Duration::from_secs(60),
            sse_keep_alive: Duration::from_secs(15),
        }
    }
}

/// The front's listeners and the limits on what clients send.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// Addresses to listen on (HTTP/1.1 and h2c on each).
    pub listen: Vec<SocketAddr>,
    /// Addresses to listen on with TLS (HTTP/2 and HTTP/1.1 by ALPN);
    /// they need `tls`.
    pub tls_listen: Vec<SocketAddr>,
    /// The certificate of the `tls_listen` listeners.
    pub tls: Option<Tls>,
    /// The most bytes a request's line and headers may take (431 beyond).
    pub max_header_bytes: usize,
    /// The most headers a request may have (431 beyond).
    pub max_headers: usize,
    /// The largest request body accepted (413 beyond), streamed or not.
    pub max_body_bytes: u64,
    /// How long a client has to send a request's headers once it has
    /// started, and how long a kept-alive connection may sit idle
    /// (slowloris clients are closed after it).
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// The most client connections open at once; beyond, new ones wait in
    /// the listen backlog.
    pub max_connections: usize,
    /// The most concurrent streams an HTTP/2 client may open.
    pub max_concurrent_streams: u32,
    /// How long a stop (or the end of a listener) waits for requests in
    /// flight before closing their connections.
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// Where every request is logged, one line each: `"stdout"`,
    /// `"stderr"` or a file path (appended to); none by default.
    pub access_log: Option<String>,
    /// The lines' format: `combined` (nginx's and Apache's, with the
    /// request id and duration appended) or `json`.
    pub access_log_format: AccessLogFormat,
    /// Merge runs of `/` in request paths into one before routing (as
    /// nginx's `merge_slashes on`); `.` and `..` segments are always
    /// resolved and unreserved percent-encodings decoded.
    pub merge_slashes: bool,
    /// What an encoded `/` or `\` (`%2F`, `%5C`) in a request path gets:
    /// `keep` (sent on encoded; routes see it as a character, not a
    /// separator) or `reject` (400), for upstreams that decode it into a
    /// separator after the gateway has routed.
    pub escaped_slashes: EscapedSlashes,
}

/// What an encoded slash in a request path gets.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Kept encoded, and sent on so.
    #[default]
    Keep,
    /// Refused with 400.
    Reject,
}

/// The certificate and key the TLS listeners present, and the clients
/// they accept. The files are read again when they change (checked every
/// 5 s) and on SIGHUP with `sinew gateway`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The certificate chain (PEM), the server's first.
    pub cert: std::path::PathBuf,
    /// Its private key (PEM).
    pub key: std::path::PathBuf,
    /// Client certificates must chain to these CA certificates (PEM):
    /// mutual TLS.
    #[serde(default)]
    pub client_ca: Option<std::path::PathBuf>,
    /// With `client_ca`: accept clients without a certificate too.
    #[serde(default)]
    pub client_certificate_optional: bool,
}

/// The format of access log lines.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// `$remote_addr - $remote_user [$time_local] "$request" $status
    /// $body_bytes_sent "$http_referer" "$http_user_agent"`, then the
    /// request id and the seconds the response head took.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

impl Default for Server {
    fn default() -> Server {
        Server {
            listen: Vec::new(),
            tls_listen: Vec::new(),
            tls: None,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 16 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_concurrent_streams: 256,
            drain_timeout: Duration::from_secs(30),
            access_log: None,
            access_log_format: AccessLogFormat::Combined,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        }
    }
}

/// An upstream group: the servers a route's requests are spread over.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Upstream {
    /// The servers, as nginx's `server` lines. Either these or `resolve`.
    pub servers: Vec<ServerEntry>,
    /// A name whose endpoints are the servers, followed as they change:
    /// `dns:///host:port`, `dns+srv:///name`, `gossip://SEED/SERVICE`,
    /// `etcd://HOST:PORT/SERVICE`.
    pub resolve: Option<String>,
    /// The service to resolve, when the name does not carry it.
    pub service: Option<String>,
    /// How a request's server is chosen.
    pub balance: Balance,
    /// The key of `balance = "hash"`: `$remote_addr`, `$request_uri`,
    /// `$uri`, `$host`, `$http_<header>` (dashes as `_`), `$arg_<name>`,
    /// `$cookie_<name>`, or text mixing them (`$host$uri`).
    pub hash_key: Option<String>,
    /// `balance = "hash"`: a ketama ring (nginx's `consistent`), so that
    /// adding or removing a server moves few keys. Otherwise the key's
    /// CRC-32 modulo the total weight, as nginx's plain `hash`.
    pub consistent: bool,
    /// Idle connections kept per server (nginx's `keepalive`, which counts
    /// per group); 0 closes each after its response.
    pub keepalive: usize,
    /// How long an idle kept connection stays open (`keepalive_timeout`).
    #[serde(deserialize_with = "duration")]
    pub keepalive_timeout: Duration,
    /// Requests a connection carries before it is closed
    /// (`keepalive_requests`).
    pub keepalive_requests: u32,
    /// How long a connect to a server may take (`proxy_connect_timeout`).
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// The default of each server's `max_fails`.
    pub max_fails: u32,
    /// The default of each server's `fail_timeout`.
    #[serde(deserialize_with = "duration")]
    pub fail_timeout: Duration,
    /// Active health checks of every server.
    pub health_check: Option<HealthCheck>,
}

impl Default for Upstream {
    fn default() -> Upstream {
        Upstream {
            servers: Vec::new(),
            resolve: None,
            service: None,
            balance: Balance::default(),
            hash_key: None,
            consistent: false,
            keepalive: 64,
            keepalive_timeout: Duration::from_secs(60),
            keepalive_requests: 10_000,
            connect_timeout: Duration::from_secs(5),
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            health_check: None,
        }
    }
}

/// How an upstream group picks a request's server. Every policy skips
/// servers that are `down`, failed (passive or active health) or at their
/// `max_conns`, and turns to the `backup` servers only when no other is
/// left.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin, nginx's default.
    #[default]
    RoundRobin,
    /// The fewest requests in flight for the weight (`least_conn`).
    LeastConn,
    /// The client's address (`ip_hash`: the first three bytes of IPv4, all
    /// of IPv6), as nginx hashes it.
    IpHash,
    /// A key made of the request (`hash $key [consistent]`).
    Hash,
    /// Two servers at random by weight, the one with fewer requests in
    /// flight (`random two least_conn`).
    RandomTwo,
    /// Two servers at random, the one with the lower peak-EWMA latency
    /// times requests in flight: sinew's default for calls, quick to
    /// avoid a server that turns slow.
    P2cEwma,
}

/// One server of a static group.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    /// `host:port` (an IP address; resolve names with `resolve`).
    pub address: SocketAddr,
    /// Its share of requests against the others' (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Used only when no server without `backup` can take a request.
    #[serde(default)]
    pub backup: bool,
    /// Never used (kept in the file, as nginx's `down`).
    #[serde(default)]
    pub down: bool,
    /// The most requests in flight to it at once (0: no limit).
    #[serde(default)]
    pub max_conns: usize,
    /// Failures within `fail_timeout` that take it out for `fail_timeout`
    /// (0: never taken out). Default: the group's.
    #[serde(default)]
    pub max_fails: Option<u32>,
    /// See `max_fails`. Default: the group's.
    #[serde(default, deserialize_with = "optional_duration")]
    pub fail_timeout: Option<Duration>,
}

fn one() -> u32 {
    1
}

/// Active health checks: a request to every server at an interval, which
/// takes it out after `fails` failed checks in a row and back after
/// `passes` good ones.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheck {
    /// The path requested with GET.
    pub path: String,
    /// The Host header sent (default: the server's address).
    pub host: Option<String>,
    /// Time between two checks of a server.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// How long a check may take, connect included.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Failed checks in a row that take a server out.
    pub fails: u32,
    /// Good checks in a row that bring it back.
    pub passes: u32,
    /// The statuses that count as good, as `"200-399"` or `"200,204"`.
    pub status: String,
}

impl Default for HealthCheck {
    fn default() -> HealthCheck {
        HealthCheck {
            path: "/".to_owned(),
            host: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            fails: 2,
            passes: 2,
            status: "200-399".to_owned(),
        }
    }
}

/// A route: which requests it takes and where they go.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Its name in metrics (`route` label); default: its host and path.
    #[serde(default)]
    pub name: Option<String>,
    /// The Host (or `:authority`) the request names, without port;
    /// `*.example.com` matches any subdomain. Default: any.
    #[serde(default)]
    pub host: Option<String>,
    /// The path prefix, matched by whole segments when it ends in `/` or
    /// as written otherwise (nginx's `location /prefix`). Default: `/`.
    #[serde(default = "root")]
    pub path: String,
    /// The methods taken. Default: all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Headers the request must carry with these values (`"*"`: present).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The upstream group the requests go to (proxied). Either this or
    /// `service`.
    #[serde(default)]
    pub upstream: String,
    /// The RPC services the requests go to (transcoded from HTTP/JSON):
    /// a name of `[services]`. Either this or `upstream`. The request's
    /// path, after `rewrite_prefix`, is matched against the methods' HTTP
    /// rules; the route's `timeout` is each call's deadline, `retry` does
    /// not apply (calls follow the channel's own policies).
    #[serde(default)]
    pub service: Option<String>,
    /// Replaces the matched prefix before forwarding (nginx's
    /// `proxy_pass http://up/new/;`). Default: the path as it came.
    #[serde(default)]
    pub rewrite_prefix: Option<String>,
    /// How long one try may wait for the response's headers
    /// (`proxy_read_timeout` for the first byte).
    #[serde(default = "minute", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Retries to the next server.
    #[serde(default)]
    pub retry: Retry,
    /// Headers set on the request to the upstream (replacing any of the
    /// same name); `$remote_addr`, `$host`, `$request_id` and the other
    /// `hash_key` variables expand.
    #[serde(default)]
    pub set_request_headers: BTreeMap<String, String>,
    /// Headers removed from the request to the upstream.
    #[serde(default)]
    pub remove_request_headers: Vec<String>,
    /// Headers set on the response to the client.
    #[serde(default)]
    pub set_response_headers: BTreeMap<String, String>,
    /// Headers removed from the response to the client.
    #[serde(default)]
    pub remove_response_headers: Vec<String>,
    /// Keep the client's Host header (default); otherwise the server's
    /// address is sent, as nginx's default `Host $proxy_host`.
    #[serde(default = "yes")]
    pub preserve_host: bool,
    /// Cross-origin requests from browsers: preflights answered, CORS
    /// headers on responses.
    #[serde(default)]
    pub cors: Option<Cors>,
    /// Who may make the requests: API keys or bearer tokens (JWT); 401
    /// without either.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Requests a second per client (or per key); 429 beyond.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// GET and HEAD responses kept and served again for a while.
    #[serde(default)]
    pub cache: Option<Cache>,
}

/// Cross-origin resource sharing for a route.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Cors {
    /// Origins allowed (`https://app.example.com`), or `"*"` for any.
    pub allow_origins: Vec<String>,
    /// Methods a preflight allows.
    pub allow_methods: Vec<String>,
    /// Request headers a preflight allows.
    pub allow_headers: Vec<String>,
    /// Response headers the page's script may read.
    pub expose_headers: Vec<String>,
    /// Let requests carry cookies and credentials (not with `"*"`).
    pub allow_credentials: bool,
    /// How long a browser may keep a preflight's answer.
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
}

impl Default for Cors {
    fn default() -> Cors {
        let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        Cors {
            allow_origins: Vec::new(),
            allow_methods: strings(&["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
            allow_headers: strings(&[
                "content-type",
                "authorization",
                "x-api-key",
                "x-request-id",
                "x-grpc-web",
                "x-user-agent",
                "grpc-timeout",
            ]),
            expose_headers: strings(&["x-request-id", "grpc-status", "grpc-message"]),
            allow_credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

/// Authentication for a route: a request passes with one of the API keys
/// (in `api_key_header`) or a bearer token the JWT settings verify.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// API keys accepted.
    pub api_keys: Vec<String>,
    /// A file of API keys, one a line (blank lines and `#` comments
    /// skipped), read at load and at each reload.
    pub api_keys_file: Option<std::path::PathBuf>,
    /// The header an API key comes in.
    pub api_key_header: String,
    /// Bearer tokens (JWT, HS256/384/512) verified with the secret in this
    /// file.
    pub jwt_secret_file: Option<std::path::PathBuf>,
    /// Bearer tokens (JWT) verified with this public key (PEM).
    pub jwt_public_key_file: Option<std::path::PathBuf>,
    /// Bearer tokens (JWT) verified with the keys of this JWK set (JSON).
    pub jwt_jwks_file: Option<std::path::PathBuf>,
    /// Tokens only from these issuers (any when empty).
    pub jwt_issuers: Vec<String>,
    /// Tokens only for these audiences (any when empty).
    pub jwt_audiences: Vec<String>,
}

impl Default for Auth {
    fn default() -> Auth {
        Auth {
            api_keys: Vec::new(),
            api_keys_file: None,
            api_key_header: "x-api-key".to_owned(),
            jwt_secret_file: None,
            jwt_public_key_file: None,
            jwt_jwks_file: None,
            jwt_issuers: Vec::new(),
            jwt_audiences: Vec::new(),
        }
    }
}

/// A rate limit for a route: a token bucket per key (nginx's
/// `limit_req`), `rate` requests a second on average and `burst` at once.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Requests a second per key.
    pub rate: f64,
    /// Requests at once per key (at least 1).
    pub burst: u32,
    /// What a request's bucket is chosen by: `$remote_addr` (default),
    /// `$http_x_api_key`, `$auth_subject` (who the route's `auth` let in),
    /// or any text of the `hash_key` variables.
    pub key: String,
    /// Keys tracked at most (beyond, new keys share a few buckets).
    pub max_keys: usize,
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit {
            rate: 10.0,
            burst: 20,
            key: "$remote_addr".to_owned(),
            max_keys: 10_000,
        }
    }
}

/// A response cache for a route's GET and HEAD requests.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Cache {
    /// How long a response is served from the cache when it does not say
    /// (`Cache-Control: max-age` or `s-maxage` wins when it does).
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// Responses kept at most; the oldest go first.
    pub max_entries: usize,
    /// Bytes kept at most, all entries together (bodies, keys and
    /// headers).
    pub max_bytes: usize,
    /// The largest body kept (larger responses pass through uncached); at
    /// most `max_bytes`.
    pub max_entry_bytes: usize,
    /// What tells requests apart (default `$scheme://$host$request_uri`).
    pub key: String,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            ttl: Duration::from_secs(10),
            max_entries: 1000,
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            key: "$scheme://$host$request_uri".to_owned(),
        }
    }
}

fn root() -> String {
    "/".to_owned()
}

fn minute() -> Duration {
    Duration::from_secs(60)
}

fn yes() -> bool {
    true
}

/// When a request goes to the next server (`proxy_next_upstream`).
///
/// A request is sent again only if its body can be (none, or one small
/// enough to have been held: up to `buffer_bytes`), and a non-idempotent
/// one (POST, PATCH, LOCK) only if it never reached a server (the connect
/// failed) unless `non_idempotent` is set.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Retry {
    /// Tries in all, the first included (`proxy_next_upstream_tries`);
    /// 1 never retries.
    pub tries: u32,
    /// The time all tries may take together
    /// (`proxy_next_upstream_timeout`); none by default, each try bounded
    /// by the route's `timeout`.
    #[serde(deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// What sends a request on: `error` (connect or I/O failure),
    /// `timeout`, `http_500`, `http_502`, `http_503`, `http_504`,
    /// `http_429`, `http_403`, `http_404`.
    pub on: Vec<RetryOn>,
    /// Retry POST, PATCH and LOCK after they were sent, too.
    pub non_idempotent: bool,
    /// The largest request body held so that it can be sent again.
    pub buffer_bytes: usize,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            tries: 3,
            timeout: None,
            on: vec![RetryOn::Error, RetryOn::Timeout],
            non_idempotent: false,
            buffer_bytes: 64 * 1024,
        }
    }
}

/// One condition of [`Retry::on`].
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The connection failed, or broke before a response.
    Error,
    /// No response within the route's timeout.
    Timeout,
    /// A 500 answer.
    #[serde(rename = "http_500")]
    Http500,
    /// A 502 answer.
    #[serde(rename = "http_502")]
    Http502,
    /// A 503 answer.
    #[serde(rename = "http_503")]
    Http503,
    /// A 504 answer.
    #[serde(rename = "http_504")]
    Http504,
    /// A 429 answer.
    #[serde(rename = "http_429")]
    Http429,
    /// A 403 answer.
    #[serde(rename = "http_403")]
    Http403,
    /// A 404 answer.
    #[serde(rename = "http_404")]
    Http404,
}

impl RetryOn {
    /// The status this condition names, if it names one.
    pub fn status(self) -> Option<u16> {
        Some(match self {
            RetryOn::Error | RetryOn::Timeout => return None,
            RetryOn::Http500 => 500,
            RetryOn::Http502 => 502,
            RetryOn::Http503 => 503,
            RetryOn::Http504 => 504,
            RetryOn::Http429 => 429,
            RetryOn::Http403 => 403,
            RetryOn::Http404 => 404,
        })
    }
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> ConfigError {
        ConfigError(message.into())
    }
}

impl Config {
    /// Reads and checks a configuration in TOML.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Reads and checks the configuration in `path`. Relative paths of
    /// its services' `protos` and `includes` and of `[server] tls` are
    /// taken from the file's directory.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError(format!("cannot read {}: {error}", path.display())))?;
        let mut config = Config::from_toml(&text)
            .map_err(|error| ConfigError(format!("{}: {error}", path.display())))?;
        let base = path.parent().unwrap_or(std::path::Path::new(""));
        if let Some(tls) = &mut config.server.tls {
            for file in [&mut tls.cert, &mut tls.key]
                .into_iter()
                .chain(tls.client_ca.as_mut())
            {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        for service in config.services.values_mut() {
            for file in service.protos.iter_mut().chain(service.includes.iter_mut()) {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        Ok(config)
    }

    /// Refuses what could not work; see the module docs.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (name, upstream) in &self.upstreams {
            match (&upstream.resolve, upstream.servers.is_empty()) {
                (None, true) => {
                    return Err(ConfigError(format!(
                        "upstream {name:?} has neither servers nor a name to resolve"
                    )))
                }
                (Some(_), false) => {
                    return Err(ConfigError(format!(
                        "upstream {name:?} has both servers and a name to resolve: keep one"
                    )))
                }
                _ => {}
            }
            if let Some(server) = upstream.servers.iter().find(|server| server.weight == 0) {
                return Err(ConfigError(format!(
                    "upstream {name:?}: server {} has weight 0 (use down = true to keep it out)",
                    server.address
                )));
            }
            if upstream.balance == Balance::Hash && upstream.hash_key.is_none() {
                return Err(ConfigError(format!(
                    "upstream {name:?}: balance = \"hash\" needs a hash_key, such as \"$request_uri\""
                )));
            }
            if upstream.balance != Balance::Hash && upstream.consistent {
                return Err(ConfigError(format!(
                    "upstream {name:?}: consistent = true goes with balance = \"hash\""
                )));
            }
            if let Some(check) = &upstream.health_check {
                if !check.path.starts_with('/') {
                    return Err(ConfigError(format!(
                        "upstream {name:?}: health_check.path {:?} must start with /",
                        check.path
                    )));
                }
                if check.interval.is_zero() || check.timeout.is_zero() {
                    return Err(ConfigError(format!(
                        "upstream {name:?}: health_check interval and timeout must be more than 0"
                    )));
                }
                if check.fails == 0 || check.passes == 0 {
                    return Err(ConfigError(format!(
                        "upstream {name:?}: health_check fails and passes must be at least 1"
                    )));
                }
                StatusRanges::parse(&check.status).map_err(|e| {
                    ConfigError(format!("upstream {name:?}: health_check.status: {e}"))
                })?;
            }
        }
        if !self.server.tls_listen.is_empty() && self.server.tls.is_none() {
            return Err(ConfigError(
                "[server] tls_listen needs tls = { cert = \"...\", key = \"...\" }".to_owned(),
            ));
        }
        for (name, service) in &self.services {
            if service.address.is_empty() {
                return Err(ConfigError(format!(
                    "service {name:?} has no address (such as \"tcp://127.0.0.1:7000\")"
                )));
            }
            for header in &service.forward_headers {
                http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    ConfigError(format!("service {name:?}: {header:?} is not a header name"))
                })?;
            }
        }
        for (index, route) in self.routes.iter().enumerate() {
            let which = format!("route {} (path {:?})", index + 1, route.path);
            match (&route.service, route.upstream.is_empty()) {
                (None, true) => {
                    return Err(ConfigError(format!(
                        "{which} has neither an upstream nor a service to go to"
                    )))
                }
                (Some(_), false) => {
                    return Err(ConfigError(format!(
                        "{which} has both an upstream and a service: keep one"
                    )))
                }
                (Some(service), true) if !self.services.contains_key(service) => {
                    return Err(ConfigError(format!(
                        "{which} goes to service {service:?}, which is not defined"
                    )))
                }
                (None, false) if !self.upstreams.contains_key(&route.upstream) => {
                    return Err(ConfigError(format!(
                        "{which} goes to upstream {:?}, which is not defined",
                        route.upstream
                    )))
                }
                _ => {}
            }
            if !route.path.starts_with('/') {
                return Err(ConfigError(format!("{which}: the path must start with /")));
            }
            if let Some(prefix) = &route.rewrite_prefix {
                if !prefix.starts_with('/') {
                    return Err(ConfigError(format!(
                        "{which}: rewrite_prefix must start with /"
                    )));
                }
            }
            for method in &route.methods {
                http::Method::from_bytes(method.as_bytes())
                    .map_err(|_| ConfigError(format!("{which}: {method:?} is not a method")))?;
            }
            for name in route
                .headers
                .keys()
                .chain(route.set_request_headers.keys())
                .chain(route.set_response_headers.keys())
                .chain(&route.remove_request_headers)
                .chain(&route.remove_response_headers)
            {
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| ConfigError(format!("{which}: {name:?} is not a header name")))?;
            }
            if route.timeout.is_zero() {
                return Err(ConfigError(format!("{which}: timeout must be more than 0")));
            }
            if route.retry.tries == 0 {
                return Err(ConfigError(format!(
                    "{which}: retry.tries counts the first try: at least 1"
                )));
            }
        }
        Ok(())
    }
}

/// A set of status codes, as `"200-399"` or `"200,204,300-302"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StatusRanges(Vec<(u16, u16)>);

impl StatusRanges {
    pub(crate) fn parse(text: &str) -> Result<StatusRanges, String> {
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let parse = |code: &str| {
                code.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|code| (100..=599).contains(code))
                    .ok_or_else(|| format!("{part:?} is not a status or a range of them"))
            };
            let (low, high) = (parse(low)?, parse(high)?);
            if low > high {
                return Err(format!("{part:?} is an empty range"));
            }
            ranges.push((low, high));
        }
        Ok(StatusRanges(ranges))
    }

    pub(crate) fn contains(&self, status: u16) -> bool {
        self.0
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }
}

/// The longest duration [`parse_duration`] takes, in seconds: a little over
/// three years, far past any timeout or interval yet well inside what a
/// [`Duration`] (or an `Instant` plus it) can hold.
const LONGEST_SECONDS: f64 = 1e8;

/// Parses `<number><unit>`, unit `us` (or `µs`), `ms`, `s`, `m` or `h`, the
/// number whole or decimal: `250us`, `500ms`, `1.5s`, `2m`, `1h`. Spaces
/// around the whole are ignored, spaces inside are not.
///
/// This is the one duration reader of sinew's configuration text: the
/// gateway's `gateway.toml` and the `sinew` command line's flags both read
/// through it, so a duration written for one is written right for the other.
///
/// Refused, each with a message that says what to write instead: an empty
/// text, a negative duration, a bare number (`5` could as well mean 5 ms as
/// 5 s, and a wrong guess fails far from the typo), an unknown unit, and
/// anything longer than 10⁸ seconds.
///
/// ```
/// use sinew_gateway::config::parse_duration;
/// use std::time::Duration;
///
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
/// assert!(parse_duration("5").unwrap_err().contains("has no unit"));
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an empty text is not a duration: write one like 500ms, 10s or 2m".into());
    }
    if let Some(positive) = text.strip_prefix('-') {
        return Err(format!(
            "{text:?} is negative: a duration is 0 or more, as in {positive}"
        ));
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 10s or 2m"))?;
    // Nanoseconds per unit.
    let scale = match unit {
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        "" => {
            return Err(format!(
                "{text} has no unit: add one, as in {text}s, {text}ms, {text}us or {text}m"
            ))
        }
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use us, ms, s, m or h"
            ))
        }
    };
    let nanoseconds = value * scale;
    // Only digits and dots reach here, so the value is not negative (nor
    // NaN); a long run of digits can still be past any sensible length, or
    // even infinite.
    if nanoseconds > LONGEST_SECONDS * 1e9 {
        return Err(format!(
            "{text:?} is too long: the longest duration taken is {LONGEST_SECONDS:.0}s"
        ));
    }
    // Rounded to the nanosecond, so that `0.3s` is 300ms exactly rather
    // than a nanosecond short of it.
    Ok(Duration::from_nanos(nanoseconds.round() as u64))
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a duration such as \"500ms\", \"10s\" or \"2m\"")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(Visitor)
}

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_reads() {
        let config = Config::from_toml(
            r#"
            [server]
            listen = ["127.0.0.1:8080"]
            header_timeout = "5s"

            [upstreams.api]
            balance = "hash"
            hash_key = "$request_uri"
            consistent = true
            servers = [
              { address = "127.0.0.1:9001", weight = 5, max_conns = 10 },
              { address = "127.0.0.1:9002", backup = true, fail_timeout = "30s" },
            ]
            [upstreams.api.health_check]
            path = "/healthz"
            interval = "250ms"
            status = "200,204"

            [[routes]]
            host = "*.example.com"
            path = "/api/"
            methods = ["GET", "POST"]
            upstream = "api"
            retry = { tries = 2, timeout = "3s", on = ["error", "http_503"] }
            "#,
        )
        .unwrap();
        assert_eq!(config.server.header_timeout, Duration::from_secs(5));
        let api = &config.upstreams["api"];
        assert_eq!(api.servers[0].weight, 5);
        assert_eq!(api.servers[1].fail_timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            api.health_check.as_ref().unwrap().interval,
            Duration::from_millis(250)
        );
        let route = &config.routes[0];
        assert_eq!(route.retry.tries, 2);
        assert_eq!(route.retry.on, vec![RetryOn::Error, RetryOn::Http503]);
        assert!(route.preserve_host);
    }

    #[test]
    fn what_could_not_work_is_refused() {
        for (text, says) in [
            (
                "[[routes]]\nupstream = \"nowhere\"",
                "not defined",
            ),
            ("[upstreams.a]\n", "neither servers"),
            (
                "[upstreams.a]\nservers = [{ address = \"127.0.0.1:1\", weight = 0 }]",
                "weight 0",
            ),
            (
                "[upstreams.a]\nbalance = \"hash\"\nservers = [{ address = \"127.0.0.1:1\" }]",
                "hash_key",
            ),
            (
                "[upstreams.a]\nservers = [{ address = \"127.0.0.1:1\" }]\nkeepalive_timeout = \"10\"",
                "no unit",
            ),
            (
                "[upstreams.a]\nservers = [{ address = \"127.0.0.1:1\" }]\nkeepalive_timout = \"10s\"",
                "unknown field",
            ),
            (
                "[upstreams.a]\nservers = [{ address = \"127.0.0.1:1\" }]\n[[routes]]\nupstream = \"a\"\nmethods = [\"G ET\"]",
                "not a method",
            ),
            (
                "[upstreams.a]\nservers = [{ address = \"127.0.0.1:1\" }]\n[upstreams.a.health_check]\nstatus = \"300-200\"",
                "empty range",
            ),
            (
                "[upstreams.a]\nservers = [{ address = \"127.0.0.1:1\" }]\n[[routes]]\nupstream = \"a\"\nretry = { tries = 0 }",
                "at least 1",
            ),
        ] {
            let error = Config::from_toml(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }

    #[test]
    fn durations_read_in_every_unit() {
        for (text, expected) in [
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("0s", Duration::ZERO),
            ("1.5s", Duration::from_millis(1500)),
            ("0.3s", Duration::from_millis(300)),
            ("1.5us", Duration::from_nanos(1500)),
            (".5m", Duration::from_secs(30)),
            ("2.s", Duration::from_secs(2)),
            (" 3s ", Duration::from_secs(3)),
            ("100000000s", Duration::from_secs(100_000_000)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
    }

    /// Each class of bad duration, with the part of its message that tells
    /// the writer what to do about it.
    #[test]
    fn bad_durations_are_refused_with_what_to_write() {
        for (text, says) in [
            // Empty, or only spaces.
            ("", "empty"),
            ("   ", "empty"),
            // Negative.
            ("-5s", "negative"),
            ("-0.5ms", "negative"),
            // A bare number.
            ("5", "5 has no unit: add one, as in 5s, 5ms, 5us or 5m"),
            ("1.5", "1.5 has no unit"),
            // No number, or not one number.
            ("soon", "not a duration"),
            ("s", "not a duration"),
            ("1.2.3s", "not a duration"),
            ("+5s", "not a duration"),
            (".s", "not a duration"),
            // A unit not taken, or spelt another way.
            ("5d", "unknown unit \"d\""),
            ("5 s", "unknown unit \" s\""),
            ("5sec", "unknown unit"),
            ("5S", "unknown unit"),
            ("1e3s", "unknown unit"),
            ("5ns", "use us, ms, s, m or h"),
            // Too long, up to more digits than an f64 holds.
            ("100000001s", "too long"),
            ("30000h", "too long"),
            ("2000000000s", "too long"),
        ] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
        // 400 nines read as an infinite f64.
        let huge = format!("{}s", "9".repeat(400));
        assert!(parse_duration(&huge).unwrap_err().contains("too long"));
    }

    #[test]
    fn status_ranges() {
        let ranges = StatusRanges::parse("200-299, 301").unwrap();
        assert!(ranges.contains(204) && ranges.contains(301));
        assert!(!ranges.contains(300) && !ranges.contains(500));
        assert!(StatusRanges::parse("20x").is_err());
        assert!(StatusRanges::parse("99").is_err());
    }
}
