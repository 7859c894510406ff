//! What the gateway tests share: real HTTP servers on loopback to proxy to,
//! a gateway serving a configuration on a free port, and a client.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sinew_gateway::{Config, Gateway};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// A small HTTP/1.1 server, as a test's upstream. Its answers name it, and
/// paths ask it for behaviours:
///
/// * `/status/N`: answers status N;
/// * `/slow/MS`: answers after MS milliseconds;
/// * `/close`: closes the connection without answering;
/// * `/healthz`: answers the status set with [`Upstream::set_health`];
/// * `/echo`: answers the request body;
/// * anything else: 200, `name method path-and-query` and the request's
///   headers, one per line.
pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) address: SocketAddr,
    pub(crate) connections: Arc<AtomicUsize>,
    pub(crate) requests: Arc<AtomicUsize>,
    health: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub(crate) async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Upstream::on(name, listener)
    }

    pub(crate) fn on(name: &str, listener: TcpListener) -> Upstream {
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(AtomicU16::new(200));
        let task = tokio::spawn({
            let name = name.to_owned();
            let connections = connections.clone();
            let requests = requests.clone();
            let health = health.clone();
            async move {
                // Dropped with the task: a kill closes every connection.
                let mut tasks = tokio::task::JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        break;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let name = name.clone();
                    let requests = requests.clone();
                    let health = health.clone();
                    let service = hyper::service::service_fn(move |request| {
                        requests.fetch_add(1, Ordering::SeqCst);
                        answer(name.clone(), health.clone(), request)
                    });
                    tasks.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                    while tasks.try_join_next().is_some() {}
                }
            }
        });
        Upstream {
            name: name.to_owned(),
            address,
            connections,
            requests,
            health,
            task,
        }
    }

    pub(crate) fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }

    /// Stops accepting and closes its connections: as a killed server.
    pub(crate) fn kill(&self) {
        self.task.abort();
    }
}

async fn answer(
    name: String,
    health: Arc<AtomicU16>,
    request: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, std::io::Error> {
    let path = request.uri().path().to_owned();
    let text = |status: u16, body: String| {
        let mut response = http::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        response
            .headers_mut()
            .insert("x-upstream", name.parse().unwrap());
        Ok(response)
    };
    if let Some(code) = path.strip_prefix("/status/") {
        return text(code.parse().unwrap_or(500), format!("{name} status\n"));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        return text(200, format!("{name} slow\n"));
    }
    if path == "/close" {
        return Err(std::io::Error::other("closing as asked"));
    }
    if path == "/healthz" {
        return text(health.load(Ordering::SeqCst), format!("{name} health\n"));
    }
    let mut lines = format!(
        "{name} {} {}\n",
        request.method(),
        request.uri().path_and_query().map_or("/", |pq| pq.as_str())
    );
    for (header, value) in request.headers() {
        lines.push_str(&format!("{header}: {}\n", value.to_str().unwrap_or("?")));
    }
    if path == "/echo" {
        let body = request.into_body().collect().await.map(|b| b.to_bytes());
        return match body {
            Ok(body) => text(200, String::from_utf8_lossy(&body).into_owned()),
            Err(error) => Err(std::io::Error::other(error)),
        };
    }
    text(200, lines)
}

/// A gateway serving `config` on a free loopback port.
pub(crate) struct Running {
    pub(crate) gateway: Gateway,
    pub(crate) address: SocketAddr,
    pub(crate) serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.gateway.shutdown();
    }
}

pub(crate) async fn gateway(config: &str) -> Running {
    let config = Config::from_toml(config).unwrap_or_else(|e| panic!("{e}\n{config}"));
    let gateway = Gateway::new(config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let serving = tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.serve(listener).await }
    });
    Running {
        gateway,
        address,
        serving,
    }
}

/// `servers = [...]` of these upstreams, with extra settings per server.
pub(crate) fn servers(upstreams: &[&Upstream], extra: &str) -> String {
    let entries: Vec<String> = upstreams
        .iter()
        .map(|upstream| {
            if extra.is_empty() {
                format!("{{ address = \"{}\" }}", upstream.address)
            } else {
                format!("{{ address = \"{}\", {extra} }}", upstream.address)
            }
        })
        .collect();
    format!("servers = [{}]", entries.join(", "))
}

/// A `gateway.toml` of one upstream group, `app`, of the servers at
/// `addresses`, and one route to it: what most tests need, with the lines
/// that make each test what it is passed in. `group` is more lines of the
/// `[upstreams.app]` table (after `servers`, so they may end in a sub-table
/// such as `[upstreams.app.health_check]`); `route` is more lines of the
/// `[[routes]]` entry, whose `upstream = "app"` is written here. Everything
/// else is at its default; a `[server]` table goes in front of the result.
///
/// Settings of one server rather than the group (`weight`, `backup`,
/// `max_conns`, ...) are not taken: a test about them writes its `servers`
/// out, where they show.
pub(crate) fn one_group(addresses: &[SocketAddr], group: &str, route: &str) -> String {
    let servers: Vec<String> = addresses
        .iter()
        .map(|address| format!("{{ address = \"{address}\" }}"))
        .collect();
    format!(
        "[upstreams.app]\nservers = [{}]\n{group}\n[[routes]]\nupstream = \"app\"\n{route}\n",
        servers.join(", ")
    )
}

/// A response read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn upstream(&self) -> &str {
        self.headers
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A kept-alive HTTP/1.1 connection to the gateway.
pub(crate) struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    address: SocketAddr,
}

impl Client {
    pub(crate) async fn connect(address: SocketAddr) -> Client {
        let stream = TcpStream::connect(address).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Client { sender, address }
    }

    pub(crate) async fn send(&mut self, request: http::Request<Full<Bytes>>) -> Reply {
        if self.sender.ready().await.is_err() {
            *self = Client::connect(self.address).await;
        }
        let response = self.sender.send_request(request).await.unwrap();
        let (head, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: head.status.as_u16(),
            headers: head.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Reply {
        self.send(
            http::Request::get(path)
                .header("host", "gateway.test")
                .body(Full::default())
                .unwrap(),
        )
        .await
    }
}

/// One GET on a connection of its own.
pub(crate) async fn get(address: SocketAddr, path: &str) -> Reply {
    Client::connect(address).await.get(path).await
}

/// Writes raw bytes to the gateway and reads until it closes the
/// connection or `wait` passes; returns what it read.
pub(crate) async fn raw(address: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut read = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut read)).await;
    String::from_utf8_lossy(&read).into_owned()
}

/// A server that answers every request with `reply` as it is (bytes on the
/// wire, malformed or cut short as a test needs), then keeps the connection
/// open for `hold` before closing it.
pub(crate) async fn raw_upstream(
    reply: &'static [u8],
    hold: Duration,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                break;
            };
            connections.spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&chunk[..read]),
                    }
                }
                let _ = stream.write_all(reply).await;
                tokio::time::sleep(hold).await;
            });
            while connections.try_join_next().is_some() {}
        }
    });
    (address, task)
}
