//! Listening sockets for every transport.

use crate::address::Address;
use crate::stream::Stream;
use crate::TransportOptions;
use sinew_shm::ShmListener;
use std::io;
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
            Inner::Unix { path, .. } => Ok(Address::Unix(path.clone())),
            Inner::Shm(listener) => Ok(Address::Shm(listener.path().to_owned())),
        }
    }

    /// Waits for the next connection. TCP streams have `TCP_NODELAY` set: sinew
    /// batches its own writes, so Nagle's algorithm would only add latency.
    pub async fn accept(&self) -> io::Result<Stream> {
        match &self.inner {
            Inner::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            Inner::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                Ok(Stream::Unix(stream))
            }
            Inner::Shm(listener) => Ok(Stream::Shm(listener.accept().await?)),
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
            Inner::Tcp(_) => {}
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
            let mut server = listener.accept().await.unwrap();
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
