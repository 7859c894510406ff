//! A server's figures (`ServerHandle::stats`) as real connections make them:
//! connections open and gone, calls, bytes over every transport and gRPC,
//! shared-memory slabs, and the connection limit's refusals and sheds.

mod common;

use common::{eventually, sleep, TestServer};
use sinew::rpc::server::stats::{Limit, Refusal};
use sinew::Channel;
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use sinew_grpc::GrpcProtocol;
use sinew_tests::testing::testing_client::TestingClient;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn echo(channel: &Channel, size: usize) {
    let reply = EchoClient::new(channel.clone())
        .unary_echo(EchoRequest {
            message: "x".repeat(size),
        })
        .await
        .expect("echo");
    assert_eq!(reply.into_inner().message.len(), size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_and_grpc_count_their_connections_calls_and_bytes() {
    let server =
        TestServer::start_with(|builder| builder.add_protocol(GrpcProtocol::default())).await;
    let idle = server.handle.stats();
    assert_eq!((idle.connections_open, idle.calls_started), (0, 0));

    let mut channels = Vec::new();
    for address in server.addresses() {
        channels.push(server.channel(&address).await);
    }
    channels.push(server.grpc_channel().await);
    // 256 KiB answers: over shared memory they go out through slabs.
    const SIZE: usize = 256 * 1024;
    for channel in &channels {
        for _ in 0..3 {
            echo(channel, SIZE).await;
        }
    }
    // Each request and answer crossed a socket (or a slab) once. The
    // server counts an answer's bytes once its write returns, which may
    // come after the client has read them: the counts settle a moment
    // after the calls.
    let carried = 12 * SIZE as u64;
    eventually(WAIT, "every answer counted", || {
        let stats = server.handle.stats();
        stats.bytes_sent >= carried && stats.bytes_received >= carried && stats.calls_in_flight == 0
    })
    .await;
    let stats = server.handle.stats();
    assert_eq!(stats.connections_open, 4, "{stats:?}");
    assert_eq!(stats.connections_accepted, 4, "{stats:?}");
    assert_eq!(stats.calls_started, 12, "{stats:?}");
    assert_eq!(stats.calls_in_flight, 0, "{stats:?}");
    assert!(stats.bytes_received >= carried, "{stats:?}");
    assert!(stats.bytes_sent >= carried, "{stats:?}");
    assert!(stats.bytes_received < 2 * carried, "{stats:?}");
    assert!(stats.bytes_sent < 2 * carried, "{stats:?}");
    assert_eq!(stats.shm_connections, 1, "{stats:?}");
    // Two rings, every answer read: at most a keepalive PING waits in them.
    assert!(stats.shm_ring_bytes > 0, "{stats:?}");
    assert!(stats.shm_ring_bytes_used < 4096, "{stats:?}");
    assert!(stats.shm_slabs > 0, "{stats:?}");
    assert_eq!(stats.refused(Refusal::Handshake), 0, "{stats:?}");

    // Connections that go keep their counts in the totals.
    drop(channels);
    eventually(WAIT, "every connection closed", || {
        server.handle.stats().connections_open == 0
    })
    .await;
    let gone = server.handle.stats();
    assert_eq!(gone.calls_started, stats.calls_started, "{gone:?}");
    assert!(gone.bytes_sent >= stats.bytes_sent, "{gone:?}");
    assert!(gone.bytes_received >= stats.bytes_received, "{gone:?}");
    assert_eq!(
        (gone.shm_connections, gone.shm_slabs, gone.shm_ring_bytes),
        (0, 0, 0),
        "{gone:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_are_counted_while_they_run() {
    let server = TestServer::start().await;
    let channel = server.channel(&server.unix).await;
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = TestingClient::new(channel.clone());
            tokio::spawn(async move { client.sleep(sleep(400, None)).await })
        })
        .collect();
    eventually(WAIT, "three calls in flight", || {
        server.handle.stats().calls_in_flight == 3
    })
    .await;
    for call in calls {
        call.await.unwrap().expect("sleep");
    }
    eventually(WAIT, "no call in flight", || {
        server.handle.stats().calls_in_flight == 0
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_counts_what_it_sheds_and_what_it_refuses() {
    let server = TestServer::start_with(|builder| builder.max_connections(1)).await;
    // An idle connection is closed to make room for a new one.
    let first = server.channel(&server.tcp).await;
    echo(&first, 1).await;
    let second = server.channel(&server.tcp).await;
    echo(&second, 1).await;
    let stats = server.handle.stats();
    assert_eq!(stats.limit_hits(Limit::ConnectionLimit), 1, "{stats:?}");
    assert_eq!(stats.refused(Refusal::ConnectionLimit), 0, "{stats:?}");

    // A busy one is not: the newcomer is refused.
    let busy = TestingClient::new(second.clone());
    let call = tokio::spawn(async move { busy.sleep(sleep(1_000, None)).await });
    eventually(WAIT, "the call in flight", || {
        server.handle.stats().calls_in_flight == 1
    })
    .await;
    let third = Channel::builder(server.tcp.clone())
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(third) = third {
        let refused = EchoClient::new(third)
            .unary_echo(EchoRequest {
                message: "no room".into(),
            })
            .await;
        assert!(refused.is_err(), "a call on a refused connection fails");
    }
    eventually(WAIT, "the refusal counted", || {
        server.handle.stats().refused(Refusal::ConnectionLimit) >= 1
    })
    .await;
    call.await
        .unwrap()
        .expect("the busy connection's call finished");
    server.shutdown().await;
}
