//! A server process frozen with SIGSTOP: its kernel still accepts and
//! acknowledges bytes, so only keepalive can tell. Calls to it fail with
//! UNAVAILABLE within about `interval + timeout`, over sinew's protocol and over
//! gRPC, instead of hanging.

mod common;

use common::Serve;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sinew::{Channel, Code};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(500);

/// Continues the server when dropped, so that a failing test does not leave a
/// stopped process behind (Serve's own drop then kills it).
struct Frozen(u32);

impl Frozen {
    /// Stops `pid` and waits until every thread of it is stopped: `kill`
    /// returns before a thread running on another core has taken the signal,
    /// and a call sent in that window is answered.
    fn stop(pid: u32) -> Frozen {
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
        let frozen = Frozen(pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "the server did not stop within 5 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        frozen
    }
}

/// Whether every thread of `pid` is in the stopped state (`T` in its stat).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses.
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_some_and(|state| state == "T")
        })
    })
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
    }
}

async fn fails_unavailable_soon(client: &EchoClient, what: &str) {
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(15), client.unary_echo(echo("frozen?")))
        .await
        .unwrap_or_else(|_| panic!("{what}: the call to a frozen server still hangs after 15 s"))
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status}");
    eprintln!("{what}: {status} after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_sigstopped_server_fail_with_unavailable() {
    let serve = Serve::start();
    let sinew = EchoClient::new(
        Channel::builder(serve.tcp.parse().unwrap())
            .keepalive(Some(INTERVAL), TIMEOUT)
            .connect()
            .await
            .unwrap(),
    );
    let grpc_address = serve.tcp.replacen("tcp://", "grpc://", 1);
    let grpc = EchoClient::new(Channel::from_service(
        sinew_grpc::client::GrpcChannel::builder(&grpc_address)
            .unwrap()
            .keepalive(Some(INTERVAL), TIMEOUT)
            .connect()
            .await
            .unwrap(),
    ));
    for client in [&sinew, &grpc] {
        assert_eq!(
            client
                .unary_echo(echo("up"))
                .await
                .unwrap()
                .into_inner()
                .message,
            "up"
        );
    }

    let frozen = Frozen::stop(serve.pid());
    let (over_sinew, over_grpc) = tokio::join!(
        fails_unavailable_soon(&sinew, "sinew"),
        fails_unavailable_soon(&grpc, "gRPC"),
    );
    let ((), ()) = (over_sinew, over_grpc);
    drop(frozen);
}
