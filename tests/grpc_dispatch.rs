//! gRPC calls run directly on the server's services (`LocalConnector::dispatch`):
//! deadlines, cancellation, panics, error statuses, backpressure and the drain
//! deadline hold for them exactly as for calls over sinew's own protocol.

mod common;

use common::{eventually, sleep, TestServer};
use futures_util::StreamExt;
use sinew::{Channel, Code, Request};
use sinew_grpc::GrpcProtocol;
use sinew_tests::testing::{
    testing_client::TestingClient, Chunk, Counters, FailRequest, FloodRequest,
};
use std::time::Duration;

async fn start(drain_timeout: Duration) -> (TestServer, Channel) {
    let server = TestServer::start_with(|builder| {
        builder
            .add_protocol(GrpcProtocol::default())
            .drain_timeout(drain_timeout)
    })
    .await;
    let channel = server.grpc_channel().await;
    (server, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_panics_errors_and_cancellation_reach_the_handler_over_grpc() {
    let (server, channel) = start(Duration::from_secs(5)).await;
    let client = TestingClient::new(channel);
    let counters = server.counters.clone();

    // (That the server sees the caller's grpc-timeout is checked with the other
    // transports in rpc_deadlines_cancellation.rs.)
    // A deadline that passes fails the call and stops the handler.
    let status = client
        .sleep(sleep(30_000, Some(Duration::from_millis(100))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    eventually(
        Duration::from_secs(5),
        "handler cancelled by the deadline",
        || Counters::get(&counters.sleeps_cancelled) == 1,
    )
    .await;

    // A client that gives up (RST_STREAM) stops the handler too.
    let abandoned = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(sleep(30_000, None)).await }
    });
    eventually(Duration::from_secs(5), "second sleep started", || {
        Counters::get(&counters.sleeps_started) == 2
    })
    .await;
    abandoned.abort();
    eventually(
        Duration::from_secs(5),
        "handler cancelled by the client",
        || Counters::get(&counters.sleeps_cancelled) == 2,
    )
    .await;
    assert_eq!(Counters::get(&counters.sleeps_finished), 0);

    // A panicking handler is INTERNAL, and the connection goes on.
    let status = client.panic(Request::new(())).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert!(status.message().contains("panicked"), "{status}");

    // An error status keeps its code, message and trailing metadata.
    let status = client
        .fail(Request::new(FailRequest {
            code: Code::FailedPrecondition as u32,
            message: "not ready: ünïcode and % signs".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "not ready: ünïcode and % signs");
    assert_eq!(
        status.metadata().get("x-fail-detail"),
        Some("from the testing service")
    );

    let report = server.shutdown().await;
    assert_eq!(report.cancelled_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_grpc_reader_holds_back_a_streaming_handler_and_loses_nothing() {
    let (server, channel) = start(Duration::from_secs(5)).await;
    let client = TestingClient::new(channel);
    let counters = server.counters.clone();
    const COUNT: u64 = 2_000;
    const SIZE: u32 = 16 * 1024; // 32 MiB in all

    let mut chunks = client
        .flood(FloodRequest {
            count: COUNT,
            size: SIZE,
        })
        .await
        .unwrap()
        .into_inner();
    let first = chunks.next().await.unwrap().unwrap();
    assert_eq!(first.index, 0);
    // The handler runs ahead only as far as the queues and HTTP/2 windows let it:
    // wait until it stops producing, then check it stopped well short of the end.
    let mut last = u64::MAX;
    eventually(Duration::from_secs(10), "the flood to stall", || {
        let now = Counters::get(&counters.flood_chunks_sent);
        let stalled = now == last;
        last = now;
        stalled
    })
    .await;
    assert!(
        last < COUNT / 2,
        "{last} of {COUNT} chunks produced for a reader that took one"
    );

    // Then everything arrives, whole and in order.
    let mut expected = 1;
    while let Some(chunk) = chunks.next().await {
        let chunk: Chunk = chunk.unwrap();
        assert_eq!(chunk.index, expected);
        assert_eq!(chunk.data.len(), SIZE as usize);
        assert!(chunk.data.iter().all(|&b| b == 0xA5));
        expected += 1;
    }
    assert_eq!(expected, COUNT);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_client_stream_arrives_whole_over_grpc() {
    let (server, channel) = start(Duration::from_secs(5)).await;
    let client = TestingClient::new(channel);
    let chunks = (0..500u64).map(|index| Chunk {
        data: vec![index as u8; 8 * 1024],
        index,
    });
    let summary = client
        .sink(futures_util::stream::iter(chunks))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.chunks, 500);
    assert_eq!(summary.bytes, 500 * 8 * 1024);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_ends_grpc_calls_still_running_with_unavailable() {
    let (server, channel) = start(Duration::from_millis(300)).await;
    let client = TestingClient::new(channel);
    let counters = server.counters.clone();
    let running = tokio::spawn(async move { client.sleep(sleep(30_000, None)).await });
    eventually(Duration::from_secs(5), "sleep started", || {
        Counters::get(&counters.sleeps_started) == 1
    })
    .await;
    let report = tokio::spawn(server.shutdown());
    let status = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the call ended at the drain deadline")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("drain deadline"), "{status}");
    report.await.unwrap();
    assert_eq!(Counters::get(&counters.sleeps_cancelled), 1);
    assert_eq!(Counters::get(&counters.sleeps_finished), 0);
}
