//! Shared set-up for the end-to-end tests: a real server on real sockets.

#![allow(dead_code, unreachable_pub)] // each test file uses a different part of this module

use sinew::rpc::server::ServerHandle;
use sinew::rpc::ShutdownReport;
use sinew::transport::Address;
use sinew::{Channel, Server};
use sinew_examples::echo::{echo_server::EchoServer, EchoService};
use sinew_examples::kv::{key_value_server::KeyValueServer, KeyValueStore};
use sinew_tests::testing::{testing_server::TestingServer, Counters, TestingService};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A running server with every example service, on a TCP port, a Unix socket and
/// a shared-memory control socket.
pub struct TestServer {
    pub health: sinew::rpc::server::HealthReporter,
    pub local: sinew::rpc::server::LocalConnector,
    pub tcp: Address,
    pub unix: Address,
    pub shm: Address,
    pub counters: Arc<Counters>,
    pub handle: ServerHandle,
    pub task: JoinHandle<ShutdownReport>,
    _dir: TempDir,
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sinew-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|builder| builder).await
    }

    pub async fn start_with(
        configure: impl FnOnce(sinew::rpc::ServerBuilder) -> sinew::rpc::ServerBuilder,
    ) -> TestServer {
        TestServer::start_on_tcp_port(0, configure).await
    }

    /// Like [`TestServer::start_with`], but its TCP listener on `127.0.0.1:port`
    /// (a port a test reserved, to bring a server up where a channel already
    /// points; 0 for any free port).
    pub async fn start_on_tcp_port(
        port: u16,
        configure: impl FnOnce(sinew::rpc::ServerBuilder) -> sinew::rpc::ServerBuilder,
    ) -> TestServer {
        let dir = TempDir::new("server");
        let service = TestingService::default();
        let counters = service.counters.clone();
        let builder = Server::builder()
            .add_service(EchoServer::new(EchoService))
            .add_service(KeyValueServer::new(KeyValueStore::default()))
            .add_service(TestingServer::new(service));
        let socket = dir.0.join("server.sock");
        let shm_socket = dir.0.join("shm.sock");
        let server = configure(builder)
            .bind([
                format!("tcp://127.0.0.1:{port}"),
                format!("unix://{}", socket.display()),
                format!("shm://{}", shm_socket.display()),
            ])
            .await
            .expect("bind test server");
        let health = server.health_reporter().expect("health is on by default");
        let local = server.local_connector();
        let tcp = server.local_addresses()[0].clone();
        let unix = server.local_addresses()[1].clone();
        let shm = server.local_addresses()[2].clone();
        let handle = server.handle();
        let task = tokio::spawn(server.serve());
        TestServer {
            health,
            local,
            tcp,
            unix,
            shm,
            counters,
            handle,
            task,
            _dir: dir,
        }
    }

    /// Every address, for tests that run over every transport.
    pub fn addresses(&self) -> [Address; 3] {
        [self.tcp.clone(), self.unix.clone(), self.shm.clone()]
    }

    /// A channel that calls the server over gRPC (HTTP/2 on its TCP port); the
    /// server must have been started with `sinew_grpc::GrpcProtocol`.
    pub async fn grpc_channel(&self) -> Channel {
        let host_port = self.tcp.to_string().replacen("tcp://", "", 1);
        sinew_grpc::connect(&format!("grpc://{host_port}"))
            .await
            .expect("connect over gRPC")
    }

    pub async fn channel(&self, address: &Address) -> Channel {
        Channel::builder(address.clone())
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to test server")
    }

    /// Shuts down and returns the report, failing the test if it takes too long.
    pub async fn shutdown(self) -> ShutdownReport {
        self.handle.shutdown();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("server shut down in time")
            .expect("server task did not panic")
    }
}

/// A `Sleep` request of `millis`, with the caller's `timeout` if any.
pub fn sleep(
    millis: u64,
    timeout: Option<Duration>,
) -> sinew::Request<sinew_tests::testing::SleepRequest> {
    let mut request = sinew::Request::new(sinew_tests::testing::SleepRequest { millis });
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}

/// Waits until `condition` holds, polling; fails the test after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn unused_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
