//! A channel's readiness and load, as tower sees them, against real servers:
//! pending while an endpoint backs off (wait for ready) or fails fast, pending
//! at the server's stream limit, calls in flight as `Load`, and tower's p2c
//! balancer over several sinew endpoints.

mod common;

use common::{eventually, sleep, unused_tcp_port, TestServer};
use sinew::rpc::CallRequest;
use sinew::transport::Address;
use sinew::{Channel, Code};
use sinew_tests::testing::{testing_client::TestingClient, Counters};
use std::time::Duration;
use tower::load::Load;
use tower::ServiceExt;

/// Waits for `channel` to be ready, for at most `limit`: `None` if it was not
/// by then.
async fn ready_within(channel: &mut Channel, limit: Duration) -> Option<Result<(), sinew::Status>> {
    tokio::time::timeout(limit, ServiceExt::<CallRequest>::ready(channel))
        .await
        .ok()
        .map(|ready| ready.map(|_| ()))
}

fn tcp_address(port: u16) -> Address {
    format!("tcp://127.0.0.1:{port}").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_ready_stays_pending_while_backing_off_then_finds_the_server() {
    let port = unused_tcp_port();
    let mut channel = Channel::builder(tcp_address(port))
        .wait_for_ready(true)
        .reconnect_backoff(Duration::from_millis(200), Duration::from_secs(1))
        .lazy();
    let early = ready_within(&mut channel, Duration::from_millis(500)).await;
    assert!(early.is_none(), "ready with nothing listening: {early:?}");

    let server = TestServer::start_on_tcp_port(port, |builder| builder).await;
    let ready = ready_within(&mut channel, Duration::from_secs(10)).await;
    ready
        .expect("ready once the server listens")
        .expect("readiness without an error");
    TestingClient::new(channel.clone())
        .sleep(sleep(0, None))
        .await
        .unwrap();
    assert_eq!(Counters::get(&server.counters.sleeps_finished), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_fast_channel_reports_a_dead_endpoint_as_unavailable_not_processed() {
    let port = unused_tcp_port();
    let mut channel = Channel::builder(tcp_address(port))
        .reconnect_backoff(Duration::from_secs(1), Duration::from_secs(5))
        .lazy();
    let status = ready_within(&mut channel, Duration::from_secs(10))
        .await
        .expect("a dead endpoint is reported, not waited for")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.is_not_processed(), "{status:?}");

    // A typed call on it fails the same way (during the backoff, at once).
    let status = TestingClient::new(channel)
        .sleep(sleep(0, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.is_not_processed(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_counts_the_calls_in_flight() {
    let server =
        TestServer::start_with(|b| b.add_protocol(sinew_grpc::GrpcProtocol::default())).await;
    // Over sinew's protocol, and over gRPC (a channel over another service).
    for channel in [
        server.channel(&server.tcp).await,
        server.grpc_channel().await,
    ] {
        assert_eq!(channel.load(), 0);
        let finished = Counters::get(&server.counters.sleeps_finished);
        let testing = TestingClient::new(channel.clone());
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let testing = testing.clone();
                tokio::spawn(async move { testing.sleep(sleep(2_000, None)).await })
            })
            .collect();
        eventually(Duration::from_secs(5), "three calls in flight", || {
            channel.load() == 3
        })
        .await;
        assert_eq!(
            Counters::get(&server.counters.sleeps_finished),
            finished,
            "counted while in flight"
        );
        for call in calls {
            call.await.unwrap().unwrap();
        }
        eventually(Duration::from_secs(5), "no call in flight", || {
            channel.load() == 0
        })
        .await;
    }
    server.shutdown().await;
}

/// Lazy channels to `addresses`, built for a balancer (wait for ready).
async fn endpoints(addresses: impl IntoIterator<Item = Address>) -> Vec<Channel> {
    let mut channels = Vec::new();
    for address in addresses {
        let builder = Channel::builder(address)
            .wait_for_ready(true)
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500));
        channels.push(builder.lazy());
    }
    channels
}

type Balance =
    tower::balance::p2c::Balance<tower::discover::ServiceList<Vec<Channel>>, CallRequest>;

/// tower's p2c balancer behind a buffer, which makes it `Clone` (as typed
/// clients need).
type Balanced =
    tower::buffer::Buffer<CallRequest, <Balance as tower::Service<CallRequest>>::Future>;

/// A typed client over a balancer of `channels`.
fn balanced(channels: Vec<Channel>) -> TestingClient<Balanced> {
    let discover = tower::discover::ServiceList::new::<CallRequest>(channels);
    TestingClient::new(tower::buffer::Buffer::new(Balance::new(discover), 64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2c_balancer_spreads_calls_over_every_endpoint() {
    let servers = [
        TestServer::start().await,
        TestServer::start().await,
        TestServer::start().await,
    ];
    let testing = balanced(endpoints(servers.iter().map(|s| s.tcp.clone())).await);
    for _ in 0..60 {
        testing.sleep(sleep(0, None)).await.unwrap();
    }
    let counts: Vec<u64> = servers
        .iter()
        .map(|server| Counters::get(&server.counters.sleeps_started))
        .collect();
    println!("calls per endpoint: {counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), 60, "{counts:?}");
    assert!(counts.iter().all(|&count| count > 0), "{counts:?}");
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2c_balancer_routes_around_a_dead_endpoint() {
    let servers = [TestServer::start().await, TestServer::start().await];
    let dead = tcp_address(unused_tcp_port());
    let addresses = [servers[0].tcp.clone(), dead, servers[1].tcp.clone()];
    let testing = balanced(endpoints(addresses).await);
    for _ in 0..60 {
        let mut request = sleep(0, None);
        request.set_timeout(Duration::from_secs(10));
        testing.sleep(request).await.unwrap();
    }
    let counts: Vec<u64> = servers
        .iter()
        .map(|server| Counters::get(&server.counters.sleeps_started))
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 60, "{counts:?}");
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_room_under_the_servers_stream_limit() {
    let server = TestServer::start_with(|builder| builder.max_concurrent_streams(1)).await;
    let channel = Channel::builder(server.tcp.clone())
        .connections(1)
        .connect()
        .await
        .unwrap();
    let testing = TestingClient::new(channel.clone());
    let call = tokio::spawn(async move { testing.sleep(sleep(3_000, None)).await });
    eventually(Duration::from_secs(5), "the call started", || {
        Counters::get(&server.counters.sleeps_started) == 1
    })
    .await;

    // A fresh clone waits for the stream to close; keep its readiness future
    // alive across the call's end, so that the end must wake it.
    let mut fresh = channel.clone();
    let waiter = tokio::spawn(async move {
        ServiceExt::<CallRequest>::ready(&mut fresh)
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "ready while the only stream allowed is in use"
    );
    assert_eq!(Counters::get(&server.counters.sleeps_finished), 0);

    call.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("ready once the call ended")
        .unwrap()
        .expect("readiness without an error");
    server.shutdown().await;
}

/// `poll_connected`, for what watches an endpoint: connected or not.
async fn connected_within(channel: &mut Channel, limit: Duration) -> bool {
    tokio::time::timeout(limit, std::future::poll_fn(|cx| channel.poll_connected(cx)))
        .await
        .is_ok_and(|connected| connected.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_waits_through_backoffs_and_hears_of_a_lost_connection() {
    let port = unused_tcp_port();
    // Fail fast for calls, yet poll_connected waits out the backoffs.
    let mut channel = Channel::builder(tcp_address(port))
        .reconnect_backoff(Duration::from_millis(100), Duration::from_millis(400))
        .lazy();
    assert!(!connected_within(&mut channel, Duration::from_millis(600)).await);
    let error = channel
        .last_connect_error()
        .expect("the failed connect's error");
    assert_eq!(error.code(), Code::Unavailable);
    let status = ready_within(&mut channel, Duration::from_secs(5))
        .await
        .expect("fails fast")
        .unwrap_err();
    assert!(status.is_not_processed());

    let server = TestServer::start_on_tcp_port(port, |builder| builder).await;
    assert!(connected_within(&mut channel, Duration::from_secs(10)).await);
    assert!(channel.last_connect_error().is_none());
    let lost = tokio::spawn(channel.connection_lost());
    sleep_a_little().await;
    assert!(!lost.is_finished(), "the connection is fine");

    // A graceful shutdown sends GOAWAY: the connection takes no new calls
    // from then on, and the watcher hears of it before the server is gone.
    server.handle.shutdown();
    tokio::time::timeout(Duration::from_secs(10), lost)
        .await
        .expect("heard of the GOAWAY")
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), server.task).await;
    // The server is gone: no connection to be had.
    assert!(!connected_within(&mut channel, Duration::from_millis(300)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_under_the_channel_is_heard_of() {
    // The server on a runtime of its own, dropped at once below: its tasks
    // and sockets go as they would with its process.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (address_sender, address) = tokio::sync::oneshot::channel();
    runtime.spawn(async move {
        let server = TestServer::start().await;
        address_sender.send(server.tcp.clone()).unwrap();
        std::future::pending::<()>().await;
        drop(server);
    });
    let mut channel = Channel::builder(address.await.unwrap()).lazy();
    assert!(connected_within(&mut channel, Duration::from_secs(10)).await);
    let lost = tokio::spawn(channel.connection_lost());
    sleep_a_little().await;
    assert!(!lost.is_finished());
    runtime.shutdown_background();
    tokio::time::timeout(Duration::from_secs(10), lost)
        .await
        .expect("heard of the lost connection")
        .unwrap();
}

async fn sleep_a_little() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}
