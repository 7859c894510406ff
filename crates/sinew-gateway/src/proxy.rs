//! The reverse proxy: one request from a client to a server of its route's
//! upstream group and the response back, with retries to the next server.
//!
//! ```text
//!  request ─▶ route ─▶ pick server ─▶ connection (pool, or connect) ─▶ send ─▶ response headers
//!                          ▲                                                      │
//!                          └──── next server: error / timeout / chosen status ◀───┘
//!                                (tries and time bounded; see below)
//! ```
//!
//! What the upstream gets: the method, the path (rewritten if the route
//! says so) and query, the headers without the hop-by-hop ones
//! (`Connection` and those it names, `Keep-Alive`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`, `Proxy-Connection`), `X-Forwarded-For`
//! (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Request-Id`
//! (the client's if it sent a sane one, otherwise a new one, also set on
//! the response), and the route's header rewrites. Always HTTP/1.1, on
//! kept-alive connections.
//!
//! **Retries** (the route's `retry`, nginx's `proxy_next_upstream`): a try
//! that fails with a connect or I/O error, a timeout, or one of the chosen
//! statuses goes to another server of the group (never one this request
//! tried), within `tries` tries in all and `retry.timeout` of time. A
//! request is sent again only if its body can be: none, or held because
//! it was small enough (`buffer_bytes`); and a POST, PATCH or LOCK only if
//! it never left the gateway (its connect failed, or a kept-alive
//! connection closed as it was written: hyper hands such a request back
//! unsent) unless `non_idempotent` is set. When the tries run out on a
//! chosen status, the client gets that last response, as from nginx.
//!
//! **Failures count** against the server (passive health): connect and I/O
//! errors, timeouts, and the 5xx statuses among the route's retry
//! conditions (nginx counts those too; a 403, 404 or 429 never counts).
//!
//! The gateway's own answers: 404 when no route takes the request, 503
//! when no server of the group can take it, 502 when the servers failed,
//! 504 when they timed out, 413 when the body is over the limit.

use crate::body::{RequestBody, ResponseBody};
use crate::config::RetryOn;
use crate::route::{host_of, Route, Target};
use crate::transcode;
use crate::upstream::conn::{SendError, UpstreamBody};
use crate::upstream::select::PickContext;
use crate::upstream::Group;
use crate::upstream::InFlight;
use crate::vars::RequestVars;
use crate::Table;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The client's address, put in each request's extensions by the
/// gateway's front (or by whoever serves [`Gateway::service`]).
///
/// [`Gateway::service`]: crate::Gateway::service
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Connections that close as a request is written to them before another
/// is made: a pool of kept connections the server timed out all at once
/// costs a few handed-back requests, not a failure.
const STALE_CONNECTIONS: usize = 3;

/// A response the gateway writes itself.
pub(crate) fn answer(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Removes the hop-by-hop headers: those of RFC 9110 §7.6.1 and those the
/// `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        // A client may not have Host removed this way (it is what the
        // request was routed by).
        .filter(|name| name != header::HOST)
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The client's request id if it is sane (visible ASCII, at most 128
/// bytes), otherwise a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID) {
        let bytes = id.as_bytes();
        if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic()) {
            return id.clone();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = fastrand::u128(..);
    let id: Vec<u8> = (0..32)
        .map(|digit| HEX[((random >> (124 - 4 * digit)) & 0xf) as usize])
        .collect();
    HeaderValue::from_maybe_shared(Bytes::from(id)).expect("hex is a valid header value")
}

/// `X-Forwarded-For`: the client's address after those already there.
fn forwarded_for(earlier: Option<&HeaderValue>, client: std::net::IpAddr) -> Option<HeaderValue> {
    use std::fmt::Write as _;
    let mut value = String::with_capacity(earlier.map_or(0, |v| v.len() + 2) + 15);
    if let Some(earlier) = earlier.and_then(|v| v.to_str().ok()) {
        value.push_str(earlier);
        value.push_str(", ");
    }
    let _ = write!(value, "{client}");
    HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
}

fn idempotent(method: &Method) -> bool {
    !matches!(method.as_str(), "POST" | "PATCH" | "LOCK")
}

/// How the last try ended, for the answer when none is left.
enum Outcome {
    /// No server could be picked at all.
    NoServer,
    Error(String),
    Timeout,
    TooLarge(u64),
    /// The client's body could not be read to its end.
    BadBody(String),
    /// A response with a chosen status, held in case it is the last.
    Response(Box<(http::response::Parts, UpstreamBody, InFlight)>),
}

fn client_addr(parts: &http::request::Parts) -> SocketAddr {
    parts
        .extensions
        .get::<ClientAddr>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |client| client.0)
}

/// Answers one request by the routes of `table`: the route that matches
/// takes it, through its middleware if it has any; the access log, if
/// there is one, gets a line.
pub(crate) async fn proxy(table: Arc<Table>, request: Request<Incoming>) -> Response<ResponseBody> {
    let Some(log) = table.access_log.clone() else {
        return dispatch(&table, request).await;
    };
    let header = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    // Logged when the answer begins, or as 499 if the client goes away
    // before (this future dropped).
    let mut pending = PendingLine {
        log,
        remote: client_addr_of(&request),
        method: request.method().clone(),
        uri: request.uri().clone(),
        version: request.version(),
        referer: header(header::REFERER),
        user_agent: header(header::USER_AGENT),
        started: std::time::Instant::now(),
        time: std::time::SystemTime::now(),
        written: false,
    };
    let response = dispatch(&table, request).await;
    let request_id = response
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok());
    pending.write(
        response.status().as_u16(),
        response.body().size_hint().exact(),
        request_id,
    );
    response
}

/// A request's access log line, written once its answer is known.
struct PendingLine {
    log: Arc<crate::middleware::access_log::AccessLog>,
    remote: SocketAddr,
    method: Method,
    uri: http::Uri,
    version: http::Version,
    referer: Option<String>,
    user_agent: Option<String>,
    started: Instant,
    time: std::time::SystemTime,
    written: bool,
}

impl PendingLine {
    fn write(&mut self, status: u16, bytes: Option<u64>, request_id: Option<&str>) {
        self.written = true;
        self.log.log(&crate::middleware::access_log::Record {
            remote: self.remote,
            method: &self.method,
            uri: &self.uri,
            version: self.version,
            status,
            bytes,
            referer: self.referer.as_deref(),
            user_agent: self.user_agent.as_deref(),
            request_id,
            elapsed: self.started.elapsed(),
            time: self.time,
        });
    }
}

impl Drop for PendingLine {
    fn drop(&mut self) {
        if !self.written {
            // nginx's "client closed request".
            self.write(499, Some(0), None);
        }
    }
}

fn client_addr_of<B>(request: &Request<B>) -> SocketAddr {
    request
        .extensions()
        .get::<ClientAddr>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |client| client.0)
}

async fn dispatch(table: &Table, request: Request<Incoming>) -> Response<ResponseBody> {
    let (mut parts, incoming) = request.into_parts();
    if parts
        .extensions
        .get::<crate::smuggle::Conflicting>()
        .is_some()
    {
        return answer(
            StatusCode::BAD_REQUEST,
            "the request has both Content-Length and Transfer-Encoding",
        );
    }
    let normalizer = crate::path::Normalizer {
        merge_slashes: table.config.server.merge_slashes,
        escaped_slashes: table.config.server.escaped_slashes,
    };
    match normalizer.normalize(parts.uri.path()).and_then(|normal| {
        normal
            .map(|path| crate::path::with_path(&parts.uri, &path))
            .transpose()
    }) {
        Ok(None) => {}
        Ok(Some(uri)) => parts.uri = uri,
        Err(crate::path::Refused(why)) => return answer(StatusCode::BAD_REQUEST, why),
    }
    let host = host_of(&parts);
    // A Host that is not a name or an address (with a port) is refused:
    // it would make keys (cache, hash) collide with other requests'.
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'))
    {
        return answer(
            StatusCode::BAD_REQUEST,
            "the Host is not a host name or address",
        );
    }
    let Some(route) = table
        .routes
        .iter()
        .find(|route| route.matches(&host, &parts))
    else {
        return answer(StatusCode::NOT_FOUND, "no route takes this request");
    };
    let started = std::time::Instant::now();
    let mut request = Request::from_parts(parts, incoming);
    let response = match &route.middleware {
        None => handle(route, request).await,
        Some(stack) => {
            use tower::ServiceExt;
            request
                .extensions_mut()
                .insert(crate::middleware::Matched(route.clone()));
            match stack.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    };
    route.stats.record(response.status(), started.elapsed());
    response
}

/// What a matched route does with a request: proxy it or transcode it,
/// with its header rewrites and the request id.
pub(crate) async fn handle(route: &Route, request: Request<Incoming>) -> Response<ResponseBody> {
    let (parts, incoming) = request.into_parts();
    let remote = client_addr(&parts);
    let host = host_of(&parts);
    let limit = route.max_body_bytes;
    if incoming.size_hint().lower() > limit {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than the limit of {limit} bytes"),
        );
    }
    let id = request_id(&parts.headers);
    let mut response = match &route.target {
        Target::Upstream(group) => {
            forward(route, group, &parts, incoming, remote, &host, &id, limit).await
        }
        Target::Service(transcoder) => {
            let request = transcode::Incoming {
                route,
                parts: &parts,
                body: incoming,
                remote,
                request_id: &id,
                limit,
            };
            // Boxed: the transcoder's future is large, and the proxy's
            // path should not carry its size.
            Box::pin(transcoder.handle(request)).await
        }
    };
    let headers = response.headers_mut();
    strip_hop_by_hop(headers);
    for name in &route.remove_response_headers {
        headers.remove(name);
    }
    if !route.set_response_headers.is_empty() {
        let vars = RequestVars {
            parts: &parts,
            remote,
            host: &host,
            request_id: id.to_str().unwrap_or_default(),
        };
        for (name, template) in &route.set_response_headers {
            if let Ok(value) = HeaderValue::from_str(&template.expand(&vars)) {
                response.headers_mut().insert(name.clone(), value);
            }
        }
    }
    response.headers_mut().insert(X_REQUEST_ID.clone(), id);
    response
}

/// The head of the request to send upstream, made once and cloned per try.
fn upstream_head<'a>(
    route: &Route,
    parts: &'a http::request::Parts,
    remote: SocketAddr,
    host: &str,
    id: &HeaderValue,
) -> Result<(std::borrow::Cow<'a, str>, HeaderMap), String> {
    let path = route.upstream_path(&parts.uri);
    if let std::borrow::Cow::Owned(rewritten) = &path {
        // What the client sent hyper checked; a rewrite is checked here.
        http::uri::PathAndQuery::try_from(rewritten.as_str())
            .map_err(|e| format!("the rewritten path is not a valid URI: {e}"))?;
    }
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    // One Host, the one the route was matched by: a URI's authority
    // (HTTP/2, absolute-form) wins over the header, as RFC 9112 §3.2.2 has
    // it; repeated Host headers are cut to the first.
    let host_value = match parts.uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    match host_value {
        Some(value) => {
            headers.insert(header::HOST, value);
        }
        None => {
            headers.remove(header::HOST);
        }
    }
    if let Some(value) = forwarded_for(headers.get(&X_FORWARDED_FOR), remote.ip()) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    let scheme = if parts.extensions.get::<crate::server::OverTls>().is_some() {
        "https"
    } else {
        "http"
    };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    if let Some(original) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST.clone(), original);
    }
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    for name in &route.remove_request_headers {
        headers.remove(name);
    }
    if !route.set_request_headers.is_empty() {
        let vars = RequestVars {
            parts,
            remote,
            host,
            request_id: id.to_str().unwrap_or_default(),
        };
        for (name, template) in &route.set_request_headers {
            let value = template.expand(&vars);
            let value = HeaderValue::from_str(&value)
                .map_err(|_| format!("header {name} would be set to an invalid value"))?;
            headers.insert(name.clone(), value);
        }
    }
    Ok((path, headers))
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    route: &Route,
    group: &Group,
    parts: &http::request::Parts,
    incoming: Incoming,
    remote: SocketAddr,
    host: &str,
    id: &HeaderValue,
    limit: u64,
) -> Response<ResponseBody> {
    // The first try's head; a retry makes its own again from `parts`.
    let mut head = match upstream_head(route, parts, remote, host, id) {
        Ok(head) => Some(head),
        Err(message) => return answer(StatusCode::BAD_REQUEST, &message),
    };
    let retry = &route.settings.retry;
    let started = Instant::now();
    let deadline = retry.timeout.map(|timeout| started + timeout);
    let may_resend_sent = idempotent(&parts.method) || retry.non_idempotent;
    // The body: none; held, if retries may need it again; or streamed once.
    let mut held: Option<Option<Bytes>> = None;
    let mut stream = None;
    if incoming.is_end_stream() {
        held = Some(None);
    } else if retry.tries > 1
        && incoming
            .size_hint()
            .upper()
            .is_some_and(|upper| upper <= retry.buffer_bytes as u64)
    {
        match tokio::time::timeout(route.settings.timeout, incoming.collect()).await {
            Ok(Ok(collected)) => held = Some(Some(collected.to_bytes())),
            Ok(Err(error)) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    &format!("reading the request body failed: {error}"),
                )
            }
            Err(_) => {
                return answer(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                )
            }
        }
    } else {
        stream = Some(incoming);
    }
    let key = match (&group.hash_key, group.balance) {
        (Some(template), crate::config::Balance::Hash) => template.expand(&RequestVars {
            parts,
            remote,
            host,
            request_id: id.to_str().unwrap_or_default(),
        }),
        _ => String::new(),
    };
    // By address: a retry may pick from a newer set of servers.
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut outcome = Outcome::NoServer;
    for attempt in 0..retry.tries {
        let now = Instant::now();
        let per_try = match deadline {
            Some(deadline) if attempt > 0 => {
                let left = deadline.saturating_duration_since(now);
                if left.is_zero() {
                    break;
                }
                left.min(route.settings.timeout)
            }
            _ => route.settings.timeout,
        };
        let set = group.set();
        let Some(index) = set.pick(
            group.balance,
            &PickContext {
                client: remote.ip(),
                key: key.as_bytes(),
                tried: &tried,
                now,
            },
        ) else {
            break;
        };
        let peer = set.peers[index].clone();
        tried.push(peer.settings.address);
        drop(set);
        let in_flight = InFlight::new(peer.clone());
        let body = match (&held, stream.take()) {
            (Some(bytes), _) => RequestBody::Full(bytes.clone()),
            (None, Some(incoming)) => RequestBody::Stream {
                incoming,
                left: limit,
                limit,
            },
            // The streamed body went with an earlier try.
            (None, None) => break,
        };
        let (path, mut headers) = match head.take() {
            Some(head) => head,
            None => match upstream_head(route, parts, remote, host, id) {
                Ok(head) => head,
                Err(message) => return answer(StatusCode::BAD_REQUEST, &message),
            },
        };
        if !route.settings.preserve_host {
            if let Ok(value) = HeaderValue::from_str(&peer.name) {
                headers.insert(header::HOST, value);
            }
        }
        let sent_at = Instant::now();
        let result = send(
            &peer,
            &parts.method,
            &path,
            &headers,
            body,
            may_resend_sent,
            per_try,
        )
        .await;
        let now = Instant::now();
        match result {
            Ok((head, body)) => {
                peer.ewma.observe(now - sent_at, now);
                let status = head.status.as_u16();
                if route.retry_statuses.contains(&status) {
                    if status >= 500 {
                        peer.failed(now);
                    }
                    let replayable = held.is_some() && may_resend_sent;
                    outcome = Outcome::Response(Box::new((head, body, in_flight)));
                    if replayable {
                        continue;
                    }
                    break;
                }
                peer.succeeded();
                return Response::from_parts(head, ResponseBody::upstream(body, in_flight));
            }
            Err((SendError::TooLarge(limit), _)) => {
                outcome = Outcome::TooLarge(limit);
                break;
            }
            Err((SendError::ClientBody(message), _)) => {
                // The client's body broke off: not the server's fault.
                outcome = Outcome::BadBody(message);
                break;
            }
            Err((SendError::Timeout(_), _)) => {
                peer.failed(now);
                outcome = Outcome::Timeout;
                if retry.on.contains(&RetryOn::Timeout) && held.is_some() && may_resend_sent {
                    continue;
                }
                break;
            }
            Err((error, body_back)) => {
                // A kept connection closing as a request crossed it is the
                // keep-alive race, not a sign of a failing server.
                if !matches!(error, SendError::ClosedAfterSend) {
                    peer.failed(now);
                }
                outcome = Outcome::Error(format!(
                    "upstream {} failed: {error}",
                    peer.settings.address
                ));
                if !retry.on.contains(&RetryOn::Error) {
                    break;
                }
                if let SendError::Unsent(_) = error {
                    // No server saw the request: any method may go on.
                    if let Some(RequestBody::Stream { incoming, .. }) = body_back {
                        stream = Some(incoming);
                    }
                    continue;
                }
                if held.is_some() && may_resend_sent {
                    continue;
                }
                break;
            }
        }
    }
    match outcome {
        Outcome::NoServer => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("no server of upstream {:?} is available", group.name),
        ),
        Outcome::Error(message) => {
            tracing::warn!(upstream = %group.name, %message, "request failed");
            answer(StatusCode::BAD_GATEWAY, &message)
        }
        Outcome::Timeout => answer(
            StatusCode::GATEWAY_TIMEOUT,
            &format!(
                "upstream {:?} did not answer within {:?}",
                group.name, route.settings.timeout
            ),
        ),
        Outcome::TooLarge(limit) => answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than the limit of {limit} bytes"),
        ),
        Outcome::BadBody(message) => answer(
            StatusCode::BAD_REQUEST,
            &format!("the request body could not be read: {message}"),
        ),
        Outcome::Response(held) => {
            let (head, body, in_flight) = *held;
            Response::from_parts(head, ResponseBody::upstream(body, in_flight))
        }
    }
}

/// Sends the request on a kept connection to the peer, or a new one. A
/// kept connection the server closed as the request crossed it costs a
/// try on another (up to [`STALE_CONNECTIONS`]), not a failure: nothing
/// was answered, and such closes come from idle connections only. When it
/// closed after the request was written, a request that must not be sent
/// twice (`resend_sent` false) fails instead.
async fn send(
    peer: &crate::upstream::peer::Peer,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    mut body: RequestBody,
    resend_sent: bool,
    timeout: std::time::Duration,
) -> Result<(http::response::Parts, UpstreamBody), (SendError, Option<RequestBody>)> {
    let mut stale = 0;
    loop {
        // Past a few stale kept connections, a new one (the others are
        // likely as stale, but not worth closing here).
        let kept = if stale < STALE_CONNECTIONS {
            peer.pool.checkout()
        } else {
            None
        };
        let conn = match kept {
            Some(conn) => conn,
            None => match peer.pool.connect().await {
                Ok(conn) => conn,
                Err(error) => return Err((SendError::Unsent(error), Some(body))),
            },
        };
        let resend = match &body {
            RequestBody::Full(bytes) => Some(RequestBody::Full(bytes.clone())),
            RequestBody::Stream { .. } => None,
        };
        match conn.send(method, path, headers, body, timeout).await {
            // Sent, closed unanswered: only what may be sent twice goes on.
            Err((SendError::ClosedAfterSend, _)) if !resend_sent => {
                return Err((SendError::ClosedAfterSend, None))
            }
            Err((error @ (SendError::ClosedIdle | SendError::ClosedAfterSend), back)) => {
                stale += 1;
                if let SendError::ClosedAfterSend = error {
                    // Once only, and on a new connection: its answer (or
                    // failure) settles the try.
                    stale = STALE_CONNECTIONS;
                }
                body = match resend.or(back) {
                    Some(body) => body,
                    // A streamed body partly sent cannot go again.
                    None => {
                        return Err((
                            SendError::Failed(
                                "the kept connection closed while the body was being sent"
                                    .to_owned(),
                            ),
                            None,
                        ))
                    }
                };
            }
            other => return other,
        }
    }
}
