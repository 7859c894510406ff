//! Several protocols on one listener: the first bytes of a connection pick who
//! serves it.
//!
//! sinew's own preface starts with the byte 0x89, which no text protocol, HTTP/2
//! preface or TLS record starts with, so one byte is enough to recognise it. Any
//! other connection is offered to the [`Protocol`] extensions registered with
//! [`ServerBuilder::add_protocol`](super::ServerBuilder::add_protocol) (the gRPC
//! bridge in `sinew-grpc` is one), each of which looks at the first bytes and says
//! whether the connection is theirs. A connection nobody claims goes to sinew's
//! own handler, which refuses it with a `BAD_PREFACE` GOAWAY.
//!
//! On a `tls://` listener the TLS handshake comes first (within the same
//! handshake time limit), and ALPN says what the client will speak: `sinew`
//! for sinew's protocol, or the id a protocol extension names in
//! [`Protocol::alpn`] (`h2` for gRPC). A client that offered no ALPN is
//! sniffed, as on a plaintext listener.
//!
//! Extensions do not reimplement calls. A [`LocalConnector`] hands them the
//! server's services: [`LocalConnector::dispatch`] runs a call the extension
//! decoded itself directly on them (see [`super::external`]), and
//! [`LocalConnector::connect`] opens an in-process sinew connection. Either way
//! every call, whatever protocol it arrived by, runs through the one
//! implementation (generated code, call drivers, deadlines, cancellation,
//! panics, the drain deadline).

use super::admission::{Activity, Refused, Ticket};
use super::call::{CallIo, ServerCall};
use super::connection::{self, DrainCounts};
use super::external::{ExternalCall, ExternalRequest};
use super::{Peer, Router, ServerConfig};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use sinew_transport::{Incoming, Stream};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// What a protocol says about the first bytes of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniff {
    /// The connection is mine.
    Yes,
    /// It is not.
    No,
    /// Not enough bytes to tell yet.
    NeedMore,
}

/// A protocol served on the same listeners as sinew's own.
pub trait Protocol: Send + Sync + 'static {
    /// A short name, for logs.
    fn name(&self) -> &'static str;

    /// Whether a connection starting with `first_bytes` is for this protocol.
    fn sniff(&self, first_bytes: &[u8]) -> Sniff;

    /// The ALPN id that names this protocol in a TLS handshake (`h2` for
    /// gRPC), if it has one: a TLS connection that agreed on it is this
    /// protocol's without sniffing.
    fn alpn(&self) -> Option<&'static [u8]> {
        None
    }

    /// Serves a connection this protocol claimed. `local` opens in-process sinew
    /// connections to this server; `shutdown` turns true when the server begins a
    /// graceful shutdown (stop taking new calls, finish the ones in flight).
    fn serve(
        &self,
        connection: Accepted,
        local: LocalConnector,
        shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'static, ()>;
}

/// An accepted connection, with the bytes already read to sniff it put back in
/// front: reading it yields them first.
#[derive(Debug)]
pub struct Accepted {
    prefix: BytesMut,
    stream: Stream,
    peer: Arc<Peer>,
    activity: Arc<Activity>,
}

impl Accepted {
    /// The bytes that were read to pick the protocol (they are read again
    /// too); none when a TLS handshake's ALPN picked it.
    pub fn first_bytes(&self) -> &[u8] {
        &self.prefix
    }

    /// Who connected, for the calls of this connection
    /// ([`ExternalRequest::peer`]).
    pub fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }

    /// The connection's count of calls in flight, which the protocol keeps
    /// (hold an [`Activity::call`] guard for each call, until its response
    /// has been sent): the server reads it to tell idle connections, which
    /// are the ones it closes to make room at its connection limit.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.activity.received(buf.filled().len() - before);
        read
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.activity.sent(n);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            self.activity.sent(n);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The server's services, as seen from a protocol extension or an in-process
/// client: runs calls decoded elsewhere ([`LocalConnector::dispatch`]) and opens
/// in-process sinew connections ([`LocalConnector::connect`]). Cheap to clone.
#[derive(Clone)]
pub struct LocalConnector {
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    shutdown: watch::Receiver<bool>,
    /// For a server with no listener: keeps its shutdown signal alive (a dropped
    /// sender would read as "shut down").
    _owner: Option<Arc<watch::Sender<bool>>>,
}

impl std::fmt::Debug for LocalConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalConnector").finish_non_exhaustive()
    }
}

/// Buffer of each direction of an in-process connection.
const LOCAL_BUFFER: usize = 256 * 1024;

impl LocalConnector {
    pub(crate) fn new(
        router: Arc<Router>,
        config: Arc<ServerConfig>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        LocalConnector {
            router,
            config,
            shutdown,
            _owner: None,
        }
    }

    pub(crate) fn new_owning(
        router: Arc<Router>,
        config: Arc<ServerConfig>,
        shutdown: watch::Receiver<bool>,
        owner: watch::Sender<bool>,
    ) -> Self {
        LocalConnector {
            router,
            config,
            shutdown,
            _owner: Some(Arc::new(owner)),
        }
    }

    /// How long calls may go on after a graceful shutdown begins.
    pub fn drain_timeout(&self) -> Duration {
        self.config.drain_timeout
    }

    /// The most calls one connection may have open at once (the server's
    /// `max_concurrent_streams`), for protocols with a limit of their own.
    pub fn max_concurrent_streams(&self) -> u32 {
        self.config.settings.max_concurrent_streams
    }

    /// The bytes of messages one connection's calls may hold (the server's
    /// `connection_memory`), for protocols that buffer requests themselves.
    pub fn connection_memory(&self) -> usize {
        self.config.connection_memory
    }

    /// How long a connection may stay without a call before it is closed
    /// gracefully (the server's `idle_timeout`).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.config.idle_timeout
    }

    /// The largest header list a call may arrive with (the server's
    /// `max_header_list_size`), for protocols with a limit of their own.
    pub fn max_header_list_size(&self) -> u32 {
        self.config.settings.max_header_list_size
    }

    /// Runs a call a protocol extension decoded itself on this server's
    /// services: see [`super::external`]. Unknown paths and expired deadlines
    /// end at once with their status; calls still running when the drain
    /// deadline of a graceful shutdown passes end with `UNAVAILABLE`.
    pub fn dispatch(&self, request: ExternalRequest) -> ExternalCall {
        let drain = drain_deadline(self.shutdown.clone(), self.config.drain_timeout);
        let request_timeout = self.config.request_timeout;
        ExternalCall::new(
            request,
            Box::pin(drain),
            request_timeout,
            |external, parts| {
                let route = self.router.route(&parts.path, parts.timeout);
                if let Err(status) = &route {
                    // Without layers, nobody needs to see the refusal.
                    if !self.router.has_layers() {
                        external.finish(status.clone());
                        return None;
                    }
                }
                let call = ServerCall {
                    io: CallIo::External(external.clone()),
                    path: Bytes::from(parts.path),
                    metadata: parts.metadata,
                    timeout: parts.timeout,
                    deadline: parts.timeout.map(|timeout| Instant::now() + timeout),
                    extensions: crate::call::Extensions::new(),
                    peer: parts.peer,
                    route,
                    prefetched: None,
                    tally: None,
                    deadline_margin: self.config.deadline_margin,
                };
                Some(Box::pin(self.router.serve(call).map(drop)))
            },
        )
    }

    /// A new in-process connection: the client end of a pipe whose other end this
    /// server serves like any accepted connection.
    pub fn connect(&self) -> DuplexStream {
        let (client, server) = tokio::io::duplex(LOCAL_BUFFER);
        let (reader, writer) = tokio::io::split(server);
        tokio::spawn(connection::serve(
            reader,
            writer,
            BytesMut::new(),
            connection::Setup {
                router: self.router.clone(),
                config: self.config.clone(),
                peer: None,
                shutdown: self.shutdown.clone(),
                handshake_deadline: Instant::now() + self.config.handshake_timeout,
                activity: Arc::default(),
            },
        ));
        client
    }
}

impl crate::client::Connector for LocalConnector {
    fn connect(&self) -> BoxFuture<'static, io::Result<DuplexStream>> {
        let stream = LocalConnector::connect(self);
        Box::pin(async move { Ok(stream) })
    }
}

/// Resolves once a graceful shutdown began `drain_timeout` ago (a dropped
/// sender counts as a shutdown, as everywhere in the server).
async fn drain_deadline(mut shutdown: watch::Receiver<bool>, drain_timeout: Duration) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
    tokio::time::sleep(drain_timeout).await;
}

/// Picks who serves an accepted connection, and serves it. `ticket` is its
/// place among the server's connections: its close signal is the
/// connection's shutdown, and it is given back when the connection ends.
pub(crate) async fn route(
    incoming: Incoming,
    protocols: Arc<Vec<Arc<dyn Protocol>>>,
    local: LocalConnector,
    ticket: Ticket,
) -> DrainCounts {
    // One budget for the whole handshake (TLS, picking the protocol, the
    // sinew preface), however many protocols look.
    let handshake_deadline = Instant::now() + local.config.handshake_timeout;
    let shutdown = ticket.close.clone();
    let mut closing = shutdown.clone();
    let closed = async move {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    let mut stream = if incoming.is_tls() {
        tokio::select! {
            established = tokio::time::timeout_at(handshake_deadline, incoming.establish()) => {
                match established {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "TLS handshake failed");
                        ticket.activity.handshake_failed();
                        return DrainCounts::default();
                    }
                    Err(_) => {
                        tracing::debug!("no TLS handshake within the handshake timeout");
                        ticket.activity.handshake_failed();
                        return DrainCounts::default();
                    }
                }
            }
            _ = closed => return DrainCounts::default(),
        }
    } else {
        match incoming.establish().await {
            Ok(stream) => stream,
            Err(_) => return DrainCounts::default(),
        }
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let peer = Arc::new(Peer::of(&stream));
    // A TLS client that named its protocol gets it without sniffing.
    let chosen = match stream.alpn_protocol() {
        Some(alpn) if alpn == sinew_transport::tls::ALPN_SINEW => Some(None),
        Some(alpn) => Some(protocols.iter().position(|p| p.alpn() == Some(alpn))),
        None => None,
    };
    let picked = match chosen {
        Some(picked) => picked,
        None if protocols.is_empty() => None,
        None => {
            let sniffing = async {
                loop {
                    if buf.first() == Some(&sinew_wire::MAGIC[0]) {
                        return None;
                    }
                    if !buf.is_empty() {
                        let verdicts: Vec<Sniff> =
                            protocols.iter().map(|p| p.sniff(&buf)).collect();
                        if let Some(index) = verdicts.iter().position(|v| *v == Sniff::Yes) {
                            return Some(index);
                        }
                        if verdicts.iter().all(|v| *v == Sniff::No) {
                            return None;
                        }
                    }
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                }
            };
            // Told to close before it said anything: nothing to drain.
            let mut closing = shutdown.clone();
            let closed = async move {
                let _ = closing.wait_for(|closing| *closing).await;
            };
            let sniffed = tokio::select! {
                sniffed = tokio::time::timeout_at(handshake_deadline, sniffing) => sniffed,
                _ = closed => return DrainCounts::default(),
            };
            // A silent peer falls through to the native handler, whose
            // handshake (out of time by now) refuses it.
            sniffed.ok().flatten()
        }
    };
    if let Some(index) = picked {
        let protocol = protocols[index].clone();
        tracing::debug!(
            protocol = protocol.name(),
            "connection claimed by a protocol extension"
        );
        ticket.activity.received(buf.len());
        let accepted = Accepted {
            prefix: buf,
            stream,
            peer,
            activity: ticket.activity.clone(),
        };
        protocol.serve(accepted, local, shutdown).await;
        return DrainCounts::default();
    }
    let (reader, writer) = stream.into_split();
    let setup = connection::Setup {
        router: local.router,
        config: local.config,
        peer: Some(peer),
        shutdown,
        handshake_deadline,
        activity: ticket.activity.clone(),
    };
    connection::serve(reader, writer, buf, setup).await
}

/// Turns away a connection the server has no room for: sinew's preface and a
/// GOAWAY `ENHANCE_YOUR_CALM` saying why (a sinew client reports it; any
/// other client sees a protocol it does not speak), then closes.
/// A TLS connection is closed without a word: saying why would cost a
/// handshake, which is what a server out of room cannot spend.
pub(crate) async fn refuse(incoming: Incoming, config: Arc<ServerConfig>, refused: Refused) {
    tracing::debug!(reason = %refused.0, "connection refused");
    let Some(stream) = incoming.into_plaintext() else {
        return;
    };
    let (_reader, writer) = stream.into_split();
    let error = sinew_wire::WireError::new(sinew_wire::Reason::EnhanceYourCalm, refused.0);
    connection::refuse(writer, &config, &error).await;
}
