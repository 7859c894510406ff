//! Connected byte streams and their owned halves.

use crate::address::Address;
use crate::identity::{CertificateIdentity, PeerCredentials, PeerIdentity};
use crate::tls::{Buffered, ClientTls, ALPN_SINEW};
use crate::TransportOptions;
use sinew_shm::{RingGauge, ShmReadHalf, ShmStream, ShmWriteHalf, SlabBuf, SlabPool};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};

/// TCP with TLS, client or server side (boxed: a TLS session is large).
pub type TlsStream = Box<tokio_rustls::TlsStream<Buffered<TcpStream>>>;

/// A connected stream over one of sinew's transports.
#[derive(Debug)]
pub enum Stream {
    /// TCP, with `TCP_NODELAY` set.
    Tcp(TcpStream),
    /// TCP with TLS, its handshake done.
    Tls(TlsStream),
    /// A Unix domain socket.
    Unix(UnixStream),
    /// Shared memory with a process on this host.
    Shm(ShmStream),
}

/// The reading half of a [`Stream`], owned so it can move to its own task.
#[derive(Debug)]
pub enum ReadHalf {
    /// TCP.
    Tcp(tcp::OwnedReadHalf),
    /// TLS: reading and writing share the session, behind a lock held for
    /// the length of one read or write.
    Tls(tokio::io::ReadHalf<tokio_rustls::TlsStream<Buffered<TcpStream>>>),
    /// Unix domain socket.
    Unix(unix::OwnedReadHalf),
    /// Shared memory.
    Shm(ShmReadHalf),
}

/// The writing half of a [`Stream`], owned so it can move to its own task.
#[derive(Debug)]
pub enum WriteHalf {
    /// TCP.
    Tcp(tcp::OwnedWriteHalf),
    /// TLS.
    Tls(tokio::io::WriteHalf<tokio_rustls::TlsStream<Buffered<TcpStream>>>),
    /// Unix domain socket.
    Unix(unix::OwnedWriteHalf),
    /// Shared memory.
    Shm(ShmWriteHalf),
}

impl WriteHalf {
    /// The slabs a shared-memory connection sends large messages from, encoded
    /// in place (see `sinew_shm::slab`); `None` for the other transports, and
    /// for shared memory without slabs.
    pub fn slab_pool(&self) -> Option<SlabPool> {
        match self {
            WriteHalf::Shm(half) => half.slab_pool(),
            _ => None,
        }
    }

    /// A gauge of the shared-memory rings (`None` for the other transports).
    pub fn ring_gauge(&self) -> Option<RingGauge> {
        match self {
            WriteHalf::Shm(half) => Some(half.ring_gauge()),
            _ => None,
        }
    }

    /// Sends a filled slab buffer as the stream's next bytes (shared memory
    /// only: the others have no slabs to fill).
    pub fn send_slab(&mut self, buf: SlabBuf) -> io::Result<()> {
        match self {
            WriteHalf::Shm(half) => half.send_slab(buf),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only shared-memory connections have slabs",
            )),
        }
    }
}

/// Connects to `address`, giving up after `timeout` if one is given.
///
/// Errors are `io::Error`s whose message names the address, so they read well as
/// they are (`connecting to tcp://127.0.0.1:9: Connection refused`).
pub async fn connect(address: &Address, timeout: Option<Duration>) -> io::Result<Stream> {
    connect_with(address, timeout, &TransportOptions::default()).await
}

/// As [`connect`], with transport settings (see [`TransportOptions`]).
pub async fn connect_with(
    address: &Address,
    timeout: Option<Duration>,
    options: &TransportOptions,
) -> io::Result<Stream> {
    let attempt = async {
        match address {
            Address::Tcp { host, port } => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            Address::Tls { host, port } => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                let tls = match &options.client_tls {
                    Some(tls) => tls.clone(),
                    None => ClientTls::system_default()?,
                };
                let stream = tls.connect(host, stream, ALPN_SINEW).await?;
                Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(
                    stream,
                ))))
            }
            Address::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
            Address::Shm(path) => Ok(Stream::Shm(sinew_shm::connect(path, &options.shm).await?)),
        }
    };
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {limit:?}"),
            )),
        },
        None => attempt.await,
    };
    result.map_err(|e| io::Error::new(e.kind(), format!("connecting to {address}: {e}")))
}

impl Stream {
    /// The process id of the peer, for transports that can only reach this host
    /// (from `SO_PEERCRED`, in our pid namespace); `None` over TCP.
    pub fn peer_pid(&self) -> Option<u32> {
        match self {
            Stream::Tcp(_) | Stream::Tls(_) => None,
            Stream::Unix(stream) => stream
                .peer_cred()
                .ok()
                .and_then(|cred| cred.pid())
                .and_then(|pid| u32::try_from(pid).ok()),
            Stream::Shm(stream) => stream.peer_pid(),
        }
    }

    /// The peer's address, where the transport has one: `tcp://ip:port`, or a
    /// Unix socket's path when the client bound one (they rarely do); `None`
    /// over shared memory.
    pub fn peer_address(&self) -> Option<Address> {
        match self {
            Stream::Tcp(stream) => stream
                .peer_addr()
                .ok()
                .map(|addr| Address::tcp(addr.ip().to_string(), addr.port())),
            Stream::Tls(stream) => stream
                .get_ref()
                .0
                .get_ref()
                .peer_addr()
                .ok()
                .map(|addr| Address::tls(addr.ip().to_string(), addr.port())),
            Stream::Unix(stream) => stream
                .peer_addr()
                .ok()
                .and_then(|addr| addr.as_pathname().map(Address::unix)),
            Stream::Shm(_) => None,
        }
    }

    /// The peer's IP address, over TCP.
    pub fn peer_ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Stream::Tcp(stream) => stream.peer_addr().ok().map(|addr| addr.ip()),
            Stream::Tls(stream) => stream
                .get_ref()
                .0
                .get_ref()
                .peer_addr()
                .ok()
                .map(|addr| addr.ip()),
            Stream::Unix(_) | Stream::Shm(_) => None,
        }
    }

    /// What the transport proved about the peer: a TLS client's verified
    /// certificate (on the server side of mutual TLS), or a local process's
    /// credentials (Unix socket, shared memory); `None` over plain TCP and
    /// for an anonymous TLS client. (On the client side of TLS the server's
    /// certificate was verified against the expected name; it is not
    /// reported here.)
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        match self {
            Stream::Tcp(_) => None,
            Stream::Tls(stream) => match stream.as_ref() {
                tokio_rustls::TlsStream::Server(server) => {
                    let leaf = server.get_ref().1.peer_certificates()?.first()?;
                    match CertificateIdentity::from_der(leaf) {
                        Ok(identity) => Some(PeerIdentity::Certificate(identity)),
                        Err(error) => {
                            // rustls verified it, so this is a certificate
                            // x509-parser cannot read: no identity.
                            tracing::warn!(%error, "peer certificate without readable names");
                            None
                        }
                    }
                }
                tokio_rustls::TlsStream::Client(_) => None,
            },
            Stream::Unix(stream) => PeerCredentials::of(stream).ok().map(PeerIdentity::Process),
            Stream::Shm(stream) => Some(PeerIdentity::Process(stream.peer_credentials())),
        }
    }

    /// Whether the stream is encrypted with TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The protocol the TLS handshake agreed on (ALPN), if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Stream::Tls(stream) => stream.get_ref().1.alpn_protocol(),
            _ => None,
        }
    }

    /// Splits into halves that can be used from two tasks without a lock.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(stream) => {
                let (read, write) = stream.into_split();
                (ReadHalf::Tcp(read), WriteHalf::Tcp(write))
            }
            Stream::Unix(stream) => {
                let (read, write) = stream.into_split();
                (ReadHalf::Unix(read), WriteHalf::Unix(write))
            }
            Stream::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (ReadHalf::Tls(read), WriteHalf::Tls(write))
            }
            Stream::Shm(stream) => {
                let (read, write) = stream.into_split();
                (ReadHalf::Shm(read), WriteHalf::Shm(write))
            }
        }
    }
}

macro_rules! delegate_read {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(inner) => Pin::new(inner).poll_read(cx, buf),
                    Self::Tls(inner) => Pin::new(inner).poll_read(cx, buf),
                    Self::Unix(inner) => Pin::new(inner).poll_read(cx, buf),
                    Self::Shm(inner) => Pin::new(inner).poll_read(cx, buf),
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(inner) => Pin::new(inner).poll_write(cx, buf),
                    Self::Tls(inner) => Pin::new(inner).poll_write(cx, buf),
                    Self::Unix(inner) => Pin::new(inner).poll_write(cx, buf),
                    Self::Shm(inner) => Pin::new(inner).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),
                    Self::Tls(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),
                    Self::Unix(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),
                    Self::Shm(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(inner) => Pin::new(inner).poll_flush(cx),
                    Self::Tls(inner) => Pin::new(inner).poll_flush(cx),
                    Self::Unix(inner) => Pin::new(inner).poll_flush(cx),
                    Self::Shm(inner) => Pin::new(inner).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(inner) => Pin::new(inner).poll_shutdown(cx),
                    Self::Tls(inner) => Pin::new(inner).poll_shutdown(cx),
                    Self::Unix(inner) => Pin::new(inner).poll_shutdown(cx),
                    Self::Shm(inner) => Pin::new(inner).poll_shutdown(cx),
                }
            }
        }
    };
}

delegate_read!(Stream);
delegate_read!(ReadHalf);
delegate_write!(Stream);
delegate_write!(WriteHalf);
