//! HTTP/JSON to RPC calls: a route with `service = "NAME"` turns each
//! request into a call of a sinew or gRPC service, as the methods'
//! `google.api.http` rules describe, and the call's answer into JSON.
//!
//! ```text
//!  request ─▶ rules.rs: binding (method + path template) ─▶ message.rs: body, query, path
//!                                                                  │  call (sinew or gRPC)
//!  response ◀─ reply.rs: JSON / NDJSON / SSE, status as HTTP ◀─────┘
//! ```
//!
//! * [`template`]: `google.api.http` path templates, parsed and matched.
//! * `rules.rs`: the bindings of every method offered (their rules,
//!   additional bindings, and `POST /package.Service/Method`), and which
//!   one a request goes to.
//! * `message.rs`: the request message from the body, the query and the
//!   path.
//! * `reply.rs`: JSON out, failures as grpc-gateway writes them, streams.
//! * `pump.rs`: streamed responses fed to clients, bounded.
//! * `grpc_web.rs`: gRPC-Web (binary and text) calls by their paths, for
//!   browsers, messages passed through as bytes.
//!
//! The descriptors come from the service's `.proto` files (compiled at
//! start, `google/api/annotations.proto` built in) or from the server's
//! reflection service. The channel is made by the gateway's [`Connector`]
//! at the first request (or at start, for reflection) and kept; a failed
//! connect is the request's 503 and the next request tries again.
//!
//! Calls: unary ones get the route's `timeout` as their deadline; a
//! server stream has none and lasts until it ends or the client goes
//! away, within the bounds of `pump.rs` (`max_streams` open at once, a
//! client that stops reading cut off after `stream_write_timeout`,
//! keep-alive comments on quiet server-sent events). A client stream's body is a sequence of JSON messages (one per
//! line, or simply one after the other), path and query left aside. The
//! request's `authorization`, `traceparent`, `tracestate`, request id,
//! `X-Forwarded-For` / `-Host` and `grpc-metadata-NAME` headers (and the
//! service's `forward_headers`) become the call's metadata.

mod grpc_web;
mod message;
mod pump;
mod reply;
mod rules;
pub(crate) mod template;

use crate::body::{RequestBody, ResponseBody, TooLarge};
use crate::config::{self, ConfigError};
use crate::route::Route;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use rules::{BodyRule, Lookup, Rules};
use sinew_rpc::{Channel, Client, Code, Decoder, MetadataMap, RawMessage, Request, Status};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How the gateway connects to the RPC services of its `[services]`:
/// an address in, a channel out.
///
/// [`Gateway::new`](crate::Gateway::new) uses sinew's own protocol
/// (`tcp://`, `unix://`, `shm://`, `tls://`); the `sinew` facade's
/// `gateway_connector()` takes every address `sinew::connect` does (gRPC
/// servers and names included), and any `Fn(String) -> Future` returning
/// a channel is one.
pub trait Connector: Send + Sync + 'static {
    /// A channel to `address`.
    fn connect(&self, address: &str) -> BoxFuture<'static, Result<Channel, Status>>;
}

impl<F, Fut> Connector for F
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Channel, Status>> + Send + 'static,
{
    fn connect(&self, address: &str) -> BoxFuture<'static, Result<Channel, Status>> {
        Box::pin(self(address.to_owned()))
    }
}

/// [`Connector`] over sinew's own protocol.
pub(crate) fn sinew_connector() -> Arc<dyn Connector> {
    Arc::new(|address: String| async move { Channel::connect(&address).await })
}

/// How long the start of a gateway waits for a server's reflection.
const REFLECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The services of one `[services.NAME]`, ready to take requests.
pub(crate) struct Transcoder {
    name: String,
    settings: config::Service,
    rules: Rules,
    json: reply::Json,
    json_in: DeserializeOptions,
    forward: Vec<HeaderName>,
    connector: Arc<dyn Connector>,
    client: tokio::sync::OnceCell<Client<Channel>>,
    /// The bounds on its server streams.
    streams: pump::Streams,
    /// When the last connect failed, and why.
    failed: std::sync::Mutex<Option<(std::time::Instant, Status)>>,
}

/// How long a failed connect is the answer to the requests after it.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// A request on its way to a transcoder.
pub(crate) struct Incoming<'a> {
    pub(crate) route: &'a Route,
    pub(crate) parts: &'a http::request::Parts,
    pub(crate) body: hyper::body::Incoming,
    pub(crate) remote: SocketAddr,
    pub(crate) request_id: &'a HeaderValue,
    pub(crate) limit: u64,
}

impl Transcoder {
    /// The transcoder of `settings`: the previous one if they did not
    /// A transcoder for `settings`, its descriptors loaded again (a
    /// `.proto` edited or a server's new methods are seen at a reload)
    /// and its rules checked; the previous one's channel is kept when the
    /// address did not change.
    pub(crate) async fn build(
        name: &str,
        settings: &config::Service,
        connector: &Arc<dyn Connector>,
        previous: Option<&Arc<Transcoder>>,
    ) -> Result<Arc<Transcoder>, ConfigError> {
        let which = |message: String| ConfigError::new(format!("service {name:?}: {message}"));
        let kept = previous
            .filter(|previous| previous.settings.address == settings.address)
            .and_then(|previous| previous.client.get().cloned());
        let client = tokio::sync::OnceCell::new();
        if let Some(kept) = &kept {
            let _ = client.set(kept.clone());
        }
        let pool = if settings.protos.is_empty() {
            let kept = kept.map(|client| client.into_service());
            let connected = tokio::time::timeout(
                REFLECTION_TIMEOUT,
                reflect(
                    connector.as_ref(),
                    kept,
                    &settings.address,
                    &settings.services,
                ),
            )
            .await
            .map_err(|_| {
                which(format!(
                    "{} did not answer reflection in time",
                    settings.address
                ))
            })?;
            let (channel, pool) = connected.map_err(which)?;
            let _ = client.set(Client::new(channel));
            pool
        } else {
            let includes = if settings.includes.is_empty() {
                settings
                    .protos
                    .iter()
                    .map(|proto| sinew_schema::include_of(proto))
                    .collect()
            } else {
                settings.includes.clone()
            };
            sinew_schema::compile_pool(&settings.protos, &includes)
                .map_err(|e| which(format!("the protos do not compile: {e}")))?
        };
        let rules =
            Rules::build(&pool, &settings.services, settings.method_paths).map_err(which)?;
        tracing::info!(service = name, bindings = rules.len(), "transcoding");
        let forward = settings
            .forward_headers
            .iter()
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        Ok(Arc::new(Transcoder {
            name: name.to_owned(),
            rules,
            json: reply::Json {
                options: SerializeOptions::new()
                    .skip_default_fields(!settings.emit_defaults)
                    .stringify_64_bit_integers(!settings.int64_as_numbers)
                    .use_proto_field_name(settings.proto_names)
                    .use_enum_numbers(settings.enums_as_numbers),
                proto_names: settings.proto_names,
            },
            json_in: DeserializeOptions::new().deny_unknown_fields(!settings.ignore_unknown_fields),
            forward,
            connector: connector.clone(),
            client,
            failed: std::sync::Mutex::new(None),
            streams: pump::Streams::new(settings),
            settings: settings.clone(),
        }))
    }

    /// The channel, connected at the first request that needs it.
    /// A connect that failed answers the requests of the next
    /// [`RETRY_AFTER_FAILURE`] at once with its failure, rather than
    /// each waiting in line for a connect of its own; the whole wait is
    /// bounded by `timeout`.
    async fn client(&self, timeout: Duration) -> Result<Client<Channel>, Status> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        if let Some((when, status)) = &*crate::lock(&self.failed) {
            if when.elapsed() < RETRY_AFTER_FAILURE {
                return Err(status.clone());
            }
        }
        let connect = self.client.get_or_try_init(|| async {
            let connecting = self.connector.connect(&self.settings.address);
            let result = match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map(Client::new),
                Err(_) => Err(Status::unavailable(format!(
                    "{} did not accept a connection in time",
                    self.settings.address
                ))),
            };
            if let Err(status) = &result {
                *crate::lock(&self.failed) = Some((std::time::Instant::now(), status.clone()));
            }
            result
        });
        match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result.cloned(),
            Err(_) => Err(Status::unavailable(format!(
                "{} could not be connected to within {timeout:?}",
                self.settings.address
            ))),
        }
    }

    /// Answers one request.
    pub(crate) async fn handle(&self, request: Incoming<'_>) -> Response<ResponseBody> {
        match self.call(request).await {
            Ok(response) => response,
            Err(status) => {
                if status.code() == Code::Unavailable {
                    tracing::warn!(service = %self.name, message = status.message(), "call failed");
                }
                reply::failure(&status)
            }
        }
    }

    async fn call(&self, request: Incoming<'_>) -> Result<Response<ResponseBody>, Status> {
        let Incoming {
            route,
            parts,
            body,
            remote,
            request_id,
            limit,
        } = request;
        let limit = limit.min(self.settings.max_body_bytes);
        let target = route.upstream_path(&parts.uri);
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let timeout = route.settings.timeout;
        if let Some(flavour) = grpc_web::Flavour::of(&parts.headers) {
            if !self.settings.grpc_web {
                return Err(Status::unimplemented(
                    "gRPC-Web is not offered here (the service's grpc_web is false)",
                ));
            }
            let body = match read_body(body, limit, timeout).await {
                Ok(body) => body,
                Err(response) => return Ok(response),
            };
            let response = self.grpc_web(
                flavour,
                parts,
                path,
                body,
                (timeout, limit),
                (remote, request_id, route),
            );
            return Ok(response.await);
        }
        let (binding, values) = match self.rules.find(&parts.method, path) {
            Lookup::Found(binding, values) => (binding, values),
            Lookup::NotAllowed(methods) => {
                let allow = methods.join(", ");
                let mut response = reply::refuse(
                    Code::Unimplemented,
                    Some(StatusCode::METHOD_NOT_ALLOWED),
                    format!("{} is not allowed on {path}: {allow}", parts.method),
                );
                if let Ok(value) = HeaderValue::from_str(&allow) {
                    response.headers_mut().insert(http::header::ALLOW, value);
                }
                return Ok(response);
            }
            Lookup::NotFound => {
                return Err(Status::not_found(format!(
                    "no method is bound to {} {path}",
                    parts.method
                )))
            }
        };
        let body = match read_body(body, limit, timeout).await {
            Ok(body) => body,
            Err(response) => return Ok(response),
        };
        let method = &binding.method;
        let mut metadata = self.metadata(parts);
        self.forwarding(route, parts, remote, request_id, &mut metadata);
        let client = self.client(timeout).await?;
        let output = method.output();
        let decoder = Decoder::new(move |bytes| DynamicMessage::decode(output.clone(), bytes));
        let invalid = |message: String| Status::invalid_argument(message);
        if method.is_client_streaming() {
            let messages = messages(&method.input(), &body, &self.json_in).map_err(invalid)?;
            let messages = futures_util::stream::iter(messages);
            let mut call = Request::new(messages);
            std::mem::swap(call.metadata_mut(), &mut metadata);
            if method.is_server_streaming() {
                let slot = self.streams.slot()?;
                let started = client.bidirectional_with(binding.call_path.clone(), call, decoder);
                let response = bounded(timeout, started).await?;
                return Ok(self.stream(parts, response, binding.response_body.clone(), slot));
            }
            call.set_timeout(timeout);
            let response = client
                .client_streaming_with(binding.call_path.clone(), call, &decoder)
                .await?;
            let (metadata, message) = response.into_parts();
            return Ok(reply::message(
                &self.json,
                &metadata,
                &message,
                binding.response_body.as_ref(),
            ));
        }
        let input = method.input();
        let mut message =
            message::from_body(&input, &binding.body, &body, &self.json_in).map_err(invalid)?;
        if !matches!(binding.body, BodyRule::Whole) {
            let body_field = match &binding.body {
                BodyRule::Field(field) => Some(field.name().to_owned()),
                _ => None,
            };
            let skip = |path: &[String]| {
                binding.path_fields().any(|bound| bound == path)
                    || body_field.as_deref().is_some_and(|field| path[0] == field)
            };
            message::apply_query(
                &mut message,
                query,
                skip,
                self.settings.ignore_unknown_fields,
            )
            .map_err(invalid)?;
        }
        for (field_path, value) in &values {
            message::set_text(&mut message, field_path, value).map_err(invalid)?;
        }
        let encoded = Bytes::from(message.encode_to_vec());
        let mut call = Request::new(RawMessage(encoded));
        std::mem::swap(call.metadata_mut(), &mut metadata);
        if method.is_server_streaming() {
            let slot = self.streams.slot()?;
            let started = client.server_streaming_with(binding.call_path.clone(), call, decoder);
            let response = bounded(timeout, started).await?;
            return Ok(self.stream(parts, response, binding.response_body.clone(), slot));
        }
        call.set_timeout(timeout);
        let response = client
            .unary_with(binding.call_path.clone(), call, &decoder)
            .await?;
        let (metadata, message) = response.into_parts();
        Ok(reply::message(
            &self.json,
            &metadata,
            &message,
            binding.response_body.as_ref(),
        ))
    }

    fn stream(
        &self,
        parts: &http::request::Parts,
        response: sinew_rpc::Response<sinew_rpc::Streaming<DynamicMessage>>,
        field: Option<prost_reflect::FieldDescriptor>,
        slot: pump::Slot,
    ) -> Response<ResponseBody> {
        let format = reply::StreamFormat::for_accept(&parts.headers);
        let (metadata, messages) = response.into_parts();
        let chunks = reply::stream_chunks(self.json.clone(), format, messages, field);
        let keep_alive =
            (format == reply::StreamFormat::Sse).then(|| Bytes::from_static(reply::SSE_KEEP_ALIVE));
        reply::stream_response(
            format,
            &metadata,
            self.streams.body(chunks, slot, keep_alive),
        )
    }

    /// The call's metadata from the request's headers: the ones passed
    /// on (`authorization`, trace context, `forward_headers`,
    /// `grpc-metadata-NAME` as `NAME` but for gRPC's own and the
    /// forwarding entries); [`forwarding`](Self::forwarding) adds the
    /// gateway's entries and the route's.
    fn metadata(&self, parts: &http::request::Parts) -> MetadataMap {
        const PREFIX: &str = "grpc-metadata-";
        let mut metadata = MetadataMap::new();
        for (name, value) in &parts.headers {
            let Ok(value) = value.to_str() else { continue };
            let key = name.as_str();
            let key = match key.strip_prefix(PREFIX) {
                Some(stripped) if is_gateways(stripped) || stripped.ends_with("-bin") => continue,
                Some(stripped) => stripped,
                None if matches!(key, "authorization" | "traceparent" | "tracestate")
                    || self.forward.contains(name) =>
                {
                    key
                }
                None => continue,
            };
            let _ = metadata.append(key, value);
        }
        metadata
    }

    /// What the gateway adds to a call's `metadata`: the request's id,
    /// `x-forwarded-for` (the client's address after those it sent) and
    /// `x-forwarded-host` (the Host or `:authority` it named); then the
    /// route's own: its `remove_request_headers` taken out, its
    /// `set_request_headers` put in, as they are on proxied requests.
    fn forwarding(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        remote: SocketAddr,
        request_id: &HeaderValue,
        metadata: &mut MetadataMap,
    ) {
        let id = request_id.to_str().unwrap_or_default();
        if !id.is_empty() {
            let _ = metadata.insert("x-request-id", id);
        }
        let forwarded = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(earlier) => format!("{earlier}, {}", remote.ip()),
            None => remote.ip().to_string(),
        };
        let _ = metadata.insert("x-forwarded-for", &forwarded);
        let host = crate::route::host_of(parts);
        if !host.is_empty() {
            let _ = metadata.insert("x-forwarded-host", &host);
        }
        for name in &route.remove_request_headers {
            metadata.remove(name.as_str());
        }
        if !route.set_request_headers.is_empty() {
            let vars = crate::vars::RequestVars {
                parts,
                remote,
                host: &host,
                request_id: id,
            };
            for (name, template) in &route.set_request_headers {
                let _ = metadata.insert(name.as_str(), &template.expand(&vars));
            }
        }
    }
}

/// Metadata keys the gateway sets or gRPC owns, which a client may not
/// set through `grpc-metadata-NAME`.
fn is_gateways(key: &str) -> bool {
    key.starts_with("grpc-")
        || key.starts_with(':')
        || matches!(
            key,
            "x-request-id" | "x-forwarded-for" | "x-forwarded-host" | "content-type" | "te"
        )
}

/// Waits for a streaming call's response to begin, within `timeout`: a
/// backend with no room for another stream fails the request rather than
/// holding it.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    started: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(timeout, started).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the stream did not begin within {timeout:?}"
        ))),
    }
}

/// Connects to `address` (unless a channel to it is `kept`) and loads the
/// descriptors of `services` (every one the server lists when empty) from
/// its reflection service.
async fn reflect(
    connector: &dyn Connector,
    kept: Option<Channel>,
    address: &str,
    services: &[String],
) -> Result<(Channel, prost_reflect::DescriptorPool), String> {
    use sinew_rpc::server::reflection::client;
    let channel = match kept {
        Some(channel) => channel,
        None => connector
            .connect(address)
            .await
            .map_err(|status| format!("cannot reach {address}: {}", status.message()))?,
    };
    let failed = |status: Status| match status.code() {
        Code::Unimplemented => {
            format!("{address} does not offer server reflection: give the service's protos")
        }
        _ => format!("reflection from {address} failed: {}", status.message()),
    };
    let services = if services.is_empty() {
        client::list_services(&channel).await.map_err(failed)?
    } else {
        services.to_vec()
    };
    let files = client::file_descriptors(&channel, &services)
        .await
        .map_err(failed)?;
    let pool = sinew_schema::pool_from_files(files)
        .map_err(|e| format!("the descriptors {address} sent do not fit together: {e}"))?;
    Ok((channel, pool))
}

/// The whole request body, within `limit` bytes and `timeout`; or the
/// answer when it cannot be had.
async fn read_body(
    body: hyper::body::Incoming,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, Response<ResponseBody>> {
    let body = RequestBody::Stream {
        incoming: body,
        left: limit,
        limit,
    };
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<TooLarge>() => Err(reply::refuse(
            Code::ResourceExhausted,
            Some(StatusCode::PAYLOAD_TOO_LARGE),
            error.to_string(),
        )),
        Ok(Err(error)) => Err(reply::refuse(
            Code::InvalidArgument,
            None,
            format!("reading the request body failed: {error}"),
        )),
        Err(_) => Err(reply::refuse(
            Code::DeadlineExceeded,
            Some(StatusCode::REQUEST_TIMEOUT),
            "the request body did not arrive in time",
        )),
    }
}

/// A client stream's messages: JSON values one after the other.
fn messages(
    input: &MessageDescriptor,
    body: &[u8],
    options: &DeserializeOptions,
) -> Result<Vec<RawMessage>, String> {
    let mut out = Vec::new();
    let mut json = serde_json::Deserializer::from_slice(body);
    // Read straight into messages, one after the other: no JSON tree in
    // between (`end` is Ok once only whitespace is left).
    while json.end().is_err() {
        let message = DynamicMessage::deserialize_with_options(input.clone(), &mut json, options)
            .map_err(|e| {
            format!(
                "message {} of the body does not fit {}: {e}",
                out.len() + 1,
                input.full_name()
            )
        })?;
        out.push(RawMessage(Bytes::from(message.encode_to_vec())));
    }
    Ok(out)
}
