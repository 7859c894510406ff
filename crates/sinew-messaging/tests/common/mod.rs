//! What the messaging tests share: a broker of each backend: the embedded
//! one in this process; the same served by a real sinew server on
//! loopback, reached by the remote client; and a real `nats-server` (with
//! JetStream, on a free port, its data in a temporary directory).

#![allow(dead_code)]

use sinew_messaging::{Broker, Message, Subscription};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a test waits for something that should come.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Embedded,
    Remote,
    Nats,
}

/// A broker and what it needs kept alive (a NATS server, a temporary
/// directory); used as a [`Broker`] through `Deref`.
pub(crate) struct Fixture {
    broker: Broker,
    _nats: Option<NatsServer>,
}

impl std::ops::Deref for Fixture {
    type Target = Broker;

    fn deref(&self) -> &Broker {
        &self.broker
    }
}

/// A `nats-server -js` child process, killed when dropped.
pub(crate) struct NatsServer {
    child: Child,
    pub(crate) url: String,
    data: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one on a free loopback port, JetStream's files in a
    /// temporary directory, payloads up to `max_payload` if given.
    pub(crate) fn start(max_payload: Option<usize>) -> NatsServer {
        let data = tempfile::tempdir().expect("a temporary directory");
        let (child, url) = spawn_nats(data.path(), "-1", max_payload);
        NatsServer { child, url, data }
    }

    /// SIGKILLs the server (no goodbye to its clients), then starts it
    /// again on the same port and files.
    pub(crate) fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.url.rsplit(':').next().unwrap().to_owned();
        let (child, url) = spawn_nats(self.data.path(), &port, None);
        self.child = child;
        self.url = url;
    }
}

/// `nats-server -js` on `port` ("-1": any free one) with its files in
/// `data`: the process and its URL, once it says it is ready.
fn spawn_nats(data: &std::path::Path, port: &str, max_payload: Option<usize>) -> (Child, String) {
    let mut command = Command::new("nats-server");
    command
        .args(["-a", "127.0.0.1", "-p", port, "-js", "-sd"])
        .arg(data);
    if let Some(max_payload) = max_payload {
        let config = data.join("nats.conf");
        std::fs::write(&config, format!("max_payload: {max_payload}\n")).unwrap();
        command.arg("-c").arg(config);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nats-server (Debian's nats-server package: scripts/install-peers.sh)");
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut url = None;
    let mut line = String::new();
    loop {
        line.clear();
        if log.read_line(&mut line).unwrap() == 0 {
            panic!("nats-server exited before it was ready");
        }
        if let Some((_, address)) = line.split_once("Listening for client connections on ") {
            url = Some(format!("nats://{}", address.trim()));
        }
        if line.contains("Server is ready") {
            break;
        }
    }
    // The rest of its log is read, so that it never blocks on a pipe.
    std::thread::spawn(move || for _ in log.lines() {});
    (child, url.expect("nats-server said where it listens"))
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A broker of `backend` taking payloads up to `max_payload` (the default
/// if `None`); the server of a remote one runs until the test's runtime
/// ends.
pub(crate) async fn broker_with(backend: Backend, max_payload: Option<usize>) -> Fixture {
    let mut builder = Broker::builder();
    if let Some(max_payload) = max_payload {
        builder = builder.max_payload(max_payload);
    }
    match backend {
        Backend::Embedded => Fixture {
            broker: builder.build().expect("the broker opens"),
            _nats: None,
        },
        Backend::Remote => {
            let served = builder.build().expect("the broker opens");
            let server = sinew_rpc::Server::builder()
                .add_service(served.service())
                .bind(["tcp://127.0.0.1:0"])
                .await
                .expect("a server on loopback");
            let address = server.local_addresses()[0].to_string();
            tokio::spawn(server.serve());
            Fixture {
                broker: Broker::connect(&address).await.expect("the remote broker"),
                _nats: None,
            }
        }
        Backend::Nats => {
            let server = NatsServer::start(max_payload);
            Fixture {
                broker: Broker::nats(&server.url).await.expect("connected to NATS"),
                _nats: Some(server),
            }
        }
    }
}

/// A broker with the default settings.
pub(crate) async fn broker(backend: Backend) -> Fixture {
    broker_with(backend, None).await
}

/// The next message of `subscription`, which must come within [`WAIT`].
pub(crate) async fn next(subscription: &mut Subscription) -> Message {
    tokio::time::timeout(WAIT, subscription.next_message())
        .await
        .expect("a message in time")
        .expect("the subscription goes on")
}

/// Whether nothing comes to `subscription` within 50 ms.
pub(crate) async fn quiet(subscription: &mut Subscription) -> bool {
    tokio::time::timeout(Duration::from_millis(50), subscription.next_message())
        .await
        .is_err()
}

/// Waits up to [`WAIT`] for `condition` to hold.
pub(crate) async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs each named `async fn(Backend)` on every backend, as tests named
/// `<name>::embedded`, `<name>::remote` and `<name>::nats`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    super::$name($crate::common::Backend::Embedded).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn remote() {
                    super::$name($crate::common::Backend::Remote).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn nats() {
                    super::$name($crate::common::Backend::Nats).await
                }
            }
        )*
    };
}
