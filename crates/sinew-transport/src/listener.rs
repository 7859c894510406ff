//! Listening sockets for every transport.

use crate::address::Address;
use crate::stream::Stream;
use crate::tls::ServerTls;
use crate::TransportOptions;
use sinew_shm::ShmListener;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use tokio::net::{TcpListener, UnixListener, UnixStream};

/// A bound listening socket that yields connected [`Stream`]s.
///
/// A Unix-socket or shared-memory listener removes a stale socket file left by a
/// process that died (nobody accepts on it), refuses to steal a path that a live
/// server listens on, and deletes its socket file when dropped.
#[derive(Debug)]
pub struct Listener {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Tcp(TcpListener),
    Tls {
        listener: TcpListener,
        tls: ServerTls,
    },
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    /// Its control socket's file is removed like a Unix socket's.
    Shm(ShmListener),
}

/// Binds a Unix socket at `path`, replacing a stale socket file.
async fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        match UnixStream::connect(path).await {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running server", path.display()),
                ))
            }
            // Nobody listens: a socket file left behind by a dead process.
            Err(_) => std::fs::remove_file(path)?,
        }
    }
    UnixListener::bind(path)
}

impl Listener {
    /// Binds `address`. `tcp://host:0` picks a free port: see [`Listener::local_address`].
    pub async fn bind(address: &Address) -> io::Result<Listener> {
        Listener::bind_with(address, &TransportOptions::default()).await
    }

    /// As [`Listener::bind`], with transport settings (see [`TransportOptions`]).
    pub async fn bind_with(address: &Address, options: &TransportOptions) -> io::Result<Listener> {
        let inner = match address {
            Address::Tcp { host, port } => {
                Inner::Tcp(TcpListener::bind((host.as_str(), *port)).await?)
            }
            Address::Tls { host, port } => {
                let tls = options.server_tls.clone().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a tls:// address needs a certificate and key (ServerBuilder::tls, sinew serve --tls-cert --tls-key)",
                    )
                })?;
                tls.start_watching();
                Inner::Tls {
                    listener: TcpListener::bind((host.as_str(), *port)).await?,
                    tls,
                }
            }
            Address::Unix(path) => Inner::Unix {
                listener: bind_unix(path).await?,
                path: path.clone(),
            },
            Address::Shm(path) => Inner::Shm(ShmListener::new(
                bind_unix(path).await?,
                path.clone(),
                options.shm.clone(),
            )),
        };
        Ok(Listener { inner })
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_address(&self) -> io::Result<Address> {
        match &self.inner {
            Inner::Tcp(listener) => {
                let local = listener.local_addr()?;
                Ok(Address::tcp(local.ip().to_string(), local.port()))
            }
            Inner::Tls { listener, .. } => {
                let local = listener.local_addr()?;
                Ok(Address::tls(local.ip().to_string(), local.port()))
            }
            Inner::Unix { path, .. } => Ok(Address::Unix(path.clone())),
            Inner::Shm(listener) => Ok(Address::Shm(listener.path().to_owned())),
        }
    }

    /// Waits for the next connection. TCP streams have `TCP_NODELAY` set: sinew
    /// batches its own writes, so Nagle's algorithm would only add latency.
    ///
    /// A TLS connection comes before its handshake, which is the caller's
    /// to run ([`Incoming::establish`]), in the connection's own task and
    /// within its own time limit, so that a slow client holds up nobody.
    pub async fn accept(&self) -> io::Result<Incoming> {
        let (stream, tls) = match &self.inner {
            Inner::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                (Stream::Tcp(stream), None)
            }
            Inner::Tls { listener, tls } => {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                (Stream::Tcp(stream), Some(tls.clone()))
            }
            Inner::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                (Stream::Unix(stream), None)
            }
            Inner::Shm(listener) => (Stream::Shm(listener.accept().await?), None),
        };
        Ok(Incoming { stream, tls })
    }
}

/// A connection a [`Listener`] accepted, before its transport's handshake
/// (TLS) is done.
#[derive(Debug)]
pub struct Incoming {
    stream: Stream,
    tls: Option<ServerTls>,
}

impl Incoming {
    /// The peer's IP address, over TCP (plain or TLS).
    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.stream.peer_ip()
    }

    /// Whether the connection has a TLS handshake to do.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The stream, its handshake done (for TLS: the server side of the TLS
    /// handshake; for the others, nothing to do). Bound it in time: a client
    /// that says nothing keeps it waiting.
    pub async fn establish(self) -> io::Result<Stream> {
        match (self.tls, self.stream) {
            (Some(tls), Stream::Tcp(stream)) => Ok(Stream::Tls(Box::new(
                tokio_rustls::TlsStream::Server(tls.accept(stream).await?),
            ))),
            (_, stream) => Ok(stream),
        }
    }

    /// The stream as it is, for a plaintext connection (to turn it away in
    /// the protocol it speaks); `None` for a TLS one.
    pub fn into_plaintext(self) -> Option<Stream> {
        match self.tls {
            Some(_) => None,
            None => Some(self.stream),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        match &self.inner {
            Inner::Unix { path, .. } => {
                let _ = std::fs::remove_file(path);
            }
            Inner::Shm(listener) => {
                let _ = std::fs::remove_file(listener.path());
            }
            Inner::Tcp(_) | Inner::Tls { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::connect;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tcp_and_unix_listeners_accept_and_unix_cleans_up() {
        let dir = std::env::temp_dir().join(format!("sinew-transport-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("listener.sock");
        let shm_socket = dir.join("shm.sock");
        for address in [
            Address::tcp("127.0.0.1", 0),
            Address::unix(&socket),
            Address::shm(&shm_socket),
        ] {
            let listener = Listener::bind(&address).await.unwrap();
            let bound = listener.local_address().unwrap();
            let client = tokio::spawn(async move {
                let mut stream = connect(&bound, None).await.unwrap();
                stream.write_all(b"ping").await.unwrap();
                let mut answer = [0u8; 4];
                stream.read_exact(&mut answer).await.unwrap();
                answer
            });
            let mut server = listener.accept().await.unwrap().establish().await.unwrap();
            let mut request = [0u8; 4];
            server.read_exact(&mut request).await.unwrap();
            assert_eq!(&request, b"ping");
            server.write_all(b"pong").await.unwrap();
            assert_eq!(&client.await.unwrap(), b"pong");
        }
        assert!(
            !socket.exists() && !shm_socket.exists(),
            "dropping the listener removes its socket file"
        );

        // A stale file (no one listening) is replaced; a live one is refused.
        std::fs::write(&socket, b"stale").unwrap();
        let live = Listener::bind(&Address::unix(&socket)).await.unwrap();
        let err = Listener::bind(&Address::unix(&socket)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(live);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
