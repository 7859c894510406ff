//! The front: accepting clients and serving HTTP/1.1 and HTTP/2 over
//! cleartext (h2c, by prior knowledge; told apart by the connection's
//! first bytes) on each listener, and over TLS on the `tls_listen` ones
//! (ALPN offers `h2` and `http/1.1`; certificates reloaded as they change
//! on disk, by `sinew_transport`'s `ServerTls`, client certificates
//! required or accepted with a client CA).
//!
//! Limits hold every client to a bound, whatever it sends: a request's
//! line and headers to `max_header_bytes` and `max_headers` (431), its body
//! to `max_body_bytes` (413), its headers to `header_timeout` once started,
//! and an idle kept-alive connection to the same time (slowloris clients
//! are closed), the connections open at once to `max_connections` (more
//! wait in the listen backlog), an HTTP/2 client's streams to
//! `max_concurrent_streams`. Malformed requests get hyper's 400 and their
//! connection closed; a request with both `Content-Length` and
//! `Transfer-Encoding` gets a 400 (spotted on the wire by `smuggle.rs`,
//! since hyper drops the length) and its connection closed after it, so
//! nothing can be smuggled behind it.
//!
//! A stop ([`Gateway::shutdown`](crate::Gateway::shutdown)) closes the
//! listener, lets requests in flight finish (connections are told to close
//! after them) for up to `drain_timeout`, then closes what is left. The
//! limits are those of the configuration the listener started with; a
//! reload changes routes and upstreams, not them (but `max_body_bytes`,
//! which the proxy reads per request).

use crate::config::Server as Limits;
use crate::proxy::ClientAddr;
use crate::smuggle::{Conflicting, Conflicts, Watched};
use crate::Gateway;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use sinew_transport::tls::ServerTls;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The connection builder for these limits.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    builder
}

/// Resolves once `flag` is set (or its sender is gone).
async fn stopped(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// Put in the extensions of requests that came over TLS (`$scheme` is
/// `https`, and so is `X-Forwarded-Proto`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OverTls;

/// Serves `listener` until the gateway stops, with TLS when `tls` is
/// given (the handshake bounded by `header_timeout`; HTTP/2 or HTTP/1.1
/// as ALPN settles).
pub(crate) async fn serve(
    gateway: Gateway,
    listener: TcpListener,
    tls: Option<ServerTls>,
) -> io::Result<()> {
    let limits = gateway.table().config.server.clone();
    let builder = builder(&limits);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let room = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut stopping = gateway.stopping();
    // Set when the drain is over: the connections left are dropped.
    let (close, closed) = tokio::sync::watch::channel(false);
    loop {
        let permit = tokio::select! {
            permit = room.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = stopped(&mut stopping) => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a little
                    // rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stopping) => break,
        };
        let _ = stream.set_nodelay(true);
        let service_gateway = gateway.clone();
        let secure = tls.is_some();
        let conflicts = Arc::new(Conflicts::default());
        let served = AtomicU64::new(0);
        let service = hyper::service::service_fn({
            let conflicts = conflicts.clone();
            move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ClientAddr(remote));
                if secure {
                    request.extensions_mut().insert(OverTls);
                }
                if conflicts.at(served.fetch_add(1, Ordering::Relaxed)) {
                    request.extensions_mut().insert(Conflicting);
                }
                let table = service_gateway.table();
                async move {
                    Ok::<_, std::convert::Infallible>(crate::proxy::proxy(table, request).await)
                }
            }
        });
        let max_head = limits.max_header_bytes.max(8192);
        let mut closed = closed.clone();
        match &tls {
            None => {
                let connection = builder
                    .serve_connection(
                        TokioIo::new(Watched::new(stream, conflicts, max_head)),
                        service,
                    )
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    tokio::select! {
                        result = connection => {
                            if let Err(error) = result {
                                tracing::debug!(%remote, %error, "client connection ended with an error");
                            }
                        }
                        () = stopped(&mut closed) => {}
                    }
                    drop(permit);
                });
            }
            Some(tls) => {
                let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
                let handshake_timeout = limits.header_timeout;
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(handshake_timeout, tls.accept(stream));
                    let stream = tokio::select! {
                        accepted = handshake => match accepted {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%remote, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake too slow");
                                return;
                            }
                        },
                        () = stopped(&mut closed) => return,
                    };
                    let connection = builder
                        .serve_connection(
                            TokioIo::new(Watched::new(stream, conflicts, max_head)),
                            service,
                        )
                        .into_owned();
                    tokio::select! {
                        result = watcher.watch(connection) => {
                            if let Err(error) = result {
                                tracing::debug!(%remote, %error, "client connection ended with an error");
                            }
                        }
                        () = stopped(&mut closed) => {}
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout = ?limits.drain_timeout,
            "requests still in flight at the end of the drain: closing their connections"
        );
    }
    let _ = close.send(true);
    Ok(())
}
