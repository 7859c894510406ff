//! The admin HTTP endpoint: what operators and their tools read from a
//! running process.
//!
//! | path | answers |
//! |------|---------|
//! | `GET /metrics` | every metric, Prometheus text format 0.0.4 |
//! | `GET /healthz` | `200 ok` while the process serves HTTP at all (liveness) |
//! | `GET /readyz` | `200 ready`, or `503` with the reason while not ready (readiness: starting, draining) |
//! | `GET /` | the live dashboard: every method's calls a second, errors, p50 and p99 over the last five minutes, recent slow and failed calls with their trace ids (one page, assets inside the binary) |
//! | `GET /api/snapshot` | what the dashboard shows, as JSON ([`Snapshot`]; `?history=N`: only the N busiest methods with their whole history, the others with their newest point; `?latest=1`: newest points only) |
//! | `GET /api/events` | the same, live: a server-sent event every second with each method's newest point |
//!
//! HTTP/1.1 on its own port, meant for loopback or a management network:
//! it has no authentication (as Prometheus exporters, Envoy's admin port and
//! linkerd's have none), so bind it where only operators reach. What a
//! client can make it hold is bounded: at most [`MAX_CONNECTIONS`]
//! connections, request heads within [`HEADER_TIMEOUT`], no request bodies
//! read.

use crate::timeline::Series;
use crate::RecentCall;
use crate::Telemetry;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::SystemTime;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Connections the endpoint serves at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 64;
/// Live event streams (open dashboards) at once, of those connections; more
/// get `503`, so that dashboards never crowd out `/healthz` and `/metrics`.
pub const MAX_EVENT_STREAMS: usize = 16;
/// How long one event stream lasts; the browser reconnects by itself, so a
/// client that stopped reading gives its place back.
pub const EVENT_STREAM_LIFETIME: Duration = Duration::from_secs(600);
/// How long a client may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the process is ready for traffic, as `/readyz` says: starts not
/// ready ("starting"), and the application says when it is
/// ([`Readiness::set_ready`] once its server listens,
/// [`Readiness::set_not_ready`] when it drains; `sinew serve` does both).
/// Clones share the state.
#[derive(Clone, Debug)]
pub struct Readiness {
    state: Arc<Mutex<Result<(), String>>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            state: Arc::new(Mutex::new(Err("starting".to_string()))),
        }
    }
}

impl Readiness {
    /// Ready for traffic.
    pub fn set_ready(&self) {
        *self.lock() = Ok(());
    }

    /// Not ready, for `reason` (shown by `/readyz`).
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.lock() = Err(reason.into());
    }

    /// `Ok` when ready, else the reason.
    pub fn get(&self) -> Result<(), String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Result<(), String>> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A running admin endpoint. Dropping it leaves it running for the life of
/// the runtime; [`AdminServer::shutdown`] stops it.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `address` and serves `telemetry`'s endpoint there.
    pub async fn bind(address: SocketAddr, telemetry: Telemetry) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(address).await?;
        // The dashboard's history starts now.
        telemetry.timeline();
        AdminServer::serve(listener, Site::Admin(telemetry))
    }

    /// Binds `address` and serves the dashboard page there with figures
    /// from `source` (`sinew dashboard`: a whole cluster's), at `/`,
    /// `/api/snapshot` and `/api/events`.
    pub async fn bind_dashboard(
        address: SocketAddr,
        source: impl DashboardSource,
    ) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(address).await?;
        AdminServer::serve(listener, Site::Dashboard(Arc::new(source)))
    }

    fn serve(listener: TcpListener, site: Site) -> std::io::Result<AdminServer> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept(listener, site, stopped));
        Ok(AdminServer {
            local_addr,
            stop,
            task,
        })
    }

    /// The address it listens on (the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops listening and closes its connections.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Where the figures a dashboard shows come from, other than this
/// process's own telemetry: `sinew dashboard` gathers a cluster's.
pub trait DashboardSource: Send + Sync + 'static {
    /// The JSON the page reads: `{"members": [...], "processes": [...]}`,
    /// each process as its own `/api/snapshot` (with a `member` name); only
    /// the `history` busiest series with their whole history, the others
    /// with their newest point (0 for live updates).
    fn snapshot(&self, history: usize) -> BoxFuture<'static, Vec<u8>>;
}

/// What an endpoint serves: one process's admin pages, or a dashboard fed
/// from elsewhere.
#[derive(Clone)]
enum Site {
    Admin(Telemetry),
    Dashboard(Arc<dyn DashboardSource>),
}

impl Site {
    async fn snapshot(&self, history: usize) -> Vec<u8> {
        match self {
            Site::Admin(telemetry) => {
                serde_json::to_vec(&Snapshot::of(telemetry, history)).unwrap_or_default()
            }
            Site::Dashboard(source) => source.snapshot(history).await,
        }
    }
}

/// Resolves when [`AdminServer::shutdown`] is called; never if the handle
/// was dropped instead (the endpoint then lives with the runtime).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    if stopped.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn accept(listener: TcpListener, site: Site, mut stopped: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let streams = Arc::new(Semaphore::new(MAX_EVENT_STREAMS));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop_requested(&mut stopped) => return,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, typically: back off.
                    tracing::debug!(%error, "admin endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop_requested(&mut stopped) => return,
        };
        let site = site.clone();
        let streams = streams.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let site = site.clone();
                let streams = streams.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(site, streams, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop_requested(&mut stopped) => {}
            }
        });
    }
}

/// A response body: whole, or the event stream.
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The dashboard page: HTML, styles and script in one file, in the binary.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// Everything the dashboard shows of one process.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// The process.
    pub process: Process,
    /// Whether `/readyz` says ready, and if not, why.
    pub ready: bool,
    /// Why not ready (empty when ready).
    pub reason: String,
    /// Each method's history (or only its newest point, in events).
    pub series: Vec<Series>,
    /// Recent slow and failed calls, newest first.
    pub recent: Vec<RecentJson>,
    /// The watched parts: server, balanced clients, breakers, limits.
    pub components: crate::components::Components,
}

/// Which process.
#[derive(Debug, Serialize)]
pub struct Process {
    /// Its id.
    pub pid: u32,
    /// sinew's version.
    pub version: &'static str,
    /// Seconds since its telemetry started.
    pub uptime_s: u64,
    /// Calls that took at least this long count as slow, milliseconds.
    pub slow_ms: u64,
}

/// A recent call as JSON.
#[derive(Debug, Serialize)]
pub struct RecentJson {
    /// When it ended, milliseconds since the Unix epoch.
    pub ended: u64,
    /// `server` or `client`.
    pub side: &'static str,
    /// The method.
    pub method: String,
    /// The protocol or target.
    pub peer: String,
    /// The status code's name.
    pub code: &'static str,
    /// The status message.
    pub message: String,
    /// How long it took, milliseconds.
    pub duration_ms: f64,
    /// Its trace.
    pub trace_id: String,
}

impl From<&RecentCall> for RecentJson {
    fn from(call: &RecentCall) -> RecentJson {
        RecentJson {
            ended: millis(call.ended),
            side: call.side.as_str(),
            method: call.method.to_string(),
            peer: call.peer.to_string(),
            code: call.code.as_str(),
            message: call.message.clone(),
            duration_ms: call.duration.as_secs_f64() * 1000.0,
            trace_id: call.trace_id.to_string(),
        }
    }
}

use crate::timeline::unix_millis as millis;

impl Snapshot {
    /// `telemetry` now: every method, the `history` busiest with their
    /// whole history, the others with their newest point.
    pub fn of(telemetry: &Telemetry, history: usize) -> Snapshot {
        let timeline = telemetry.timeline();
        timeline.follow_new(telemetry.metrics());
        let ready = telemetry.readiness().get();
        Snapshot {
            at: millis(SystemTime::now()),
            process: Process {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION"),
                uptime_s: telemetry.started().elapsed().map_or(0, |up| up.as_secs()),
                slow_ms: telemetry.slow_call_threshold().as_millis() as u64,
            },
            ready: ready.is_ok(),
            reason: ready.err().unwrap_or_default(),
            series: timeline.with_history(history),
            recent: telemetry
                .recent_calls()
                .iter()
                .map(RecentJson::from)
                .collect(),
            components: telemetry.components(),
        }
    }
}

async fn respond(
    site: Site,
    streams: Arc<Semaphore>,
    request: Request<Incoming>,
) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    let history = history(request.uri().query());
    match request.uri().path() {
        "/" => {
            let mut response = Response::new(full(Bytes::from_static(DASHBOARD.as_bytes())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        "/api/snapshot" => json(site.snapshot(history).await),
        "/api/events" => match streams.try_acquire_owned() {
            Ok(permit) => events(site, permit),
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many live dashboards on this endpoint\n",
            ),
        },
        _ => match &site {
            Site::Admin(telemetry) => admin_page(telemetry, request.uri().path()),
            Site::Dashboard(_) => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

/// How many series keep their history in a snapshot: `?history=N`, none
/// for `?latest=1`, all by default.
fn history(query: Option<&str>) -> usize {
    let mut history = usize::MAX;
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("history", count)) => history = count.parse().unwrap_or(usize::MAX),
            Some(("latest", "1")) => history = 0,
            _ => {}
        }
    }
    history
}

/// The pages only a process's own endpoint has.
fn admin_page(telemetry: &Telemetry, path: &str) -> Response<Body> {
    match path {
        "/metrics" => {
            let mut response = Response::new(full(Bytes::from(telemetry.metrics().encode())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match telemetry.readiness().get() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {reason}\n"),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed_unsync()
}

fn json(body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// Server-sent events: each method's newest point, every second, until the
/// client goes (or the endpoint stops).
fn events(site: Site, permit: tokio::sync::OwnedSemaphorePermit) -> Response<Body> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = tokio::time::Instant::now() + EVENT_STREAM_LIFETIME;
    // The permit lives as long as the stream does.
    let state = (tick, site, permit);
    let stream = futures_util::stream::unfold(state, move |(mut tick, site, permit)| async move {
        if tokio::time::Instant::now() >= end {
            return None;
        }
        tick.tick().await;
        let data = site.snapshot(0).await;
        let mut event = Vec::with_capacity(data.len() + 32);
        event.extend_from_slice(b"event: tick\ndata: ");
        event.extend_from_slice(&data);
        event.extend_from_slice(b"\n\n");
        let frame = hyper::body::Frame::data(Bytes::from(event));
        Some((Ok::<_, Infallible>(frame), (tick, site, permit)))
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
