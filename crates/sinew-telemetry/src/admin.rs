//! The admin HTTP endpoint: what operators and their tools read from a
//! running process.
//!
//! | path | answers |
//! |------|---------|
//! | `GET /metrics` | every metric, Prometheus text format 0.0.4 |
//! | `GET /healthz` | `200 ok` while the process serves HTTP at all (liveness) |
//! | `GET /readyz` | `200 ready`, or `503` with the reason while not ready (readiness: starting, draining) |
//!
//! HTTP/1.1 on its own port, meant for loopback or a management network:
//! it has no authentication (as Prometheus exporters, Envoy's admin port and
//! linkerd's have none), so bind it where only operators reach. What a
//! client can make it hold is bounded: at most [`MAX_CONNECTIONS`]
//! connections, request heads within [`HEADER_TIMEOUT`], no request bodies
//! read.

use crate::Telemetry;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Connections the endpoint serves at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the process is ready for traffic, as `/readyz` says: starts not
/// ready ("starting"); the server marks itself ready when it listens and
/// not ready when it drains. Clones share the state.
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
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept(listener, telemetry, stopped));
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

async fn accept(listener: TcpListener, telemetry: Telemetry, mut stopped: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stopped.changed() => return,
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
            _ = stopped.changed() => return,
        };
        let telemetry = telemetry.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&telemetry, &request);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped.changed() => {}
            }
        });
    }
}

fn respond(telemetry: &Telemetry, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(telemetry.metrics().encode())));
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
        "/" => text(
            StatusCode::OK,
            "sinew admin endpoint: /metrics /healthz /readyz\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
