//! Deadlines enforced on both sides, and cancellation reaching the server.

mod common;

use common::{eventually, sleep, TestServer};
use futures_util::StreamExt;
use sinew::{Code, Request};
use sinew_tests::testing::{testing_client::TestingClient, Counters, FloodRequest};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sees_the_callers_timeout() {
    // Over every transport, and over gRPC (grpc-timeout).
    let server =
        TestServer::start_with(|builder| builder.add_protocol(sinew_grpc::GrpcProtocol::default()))
            .await;
    let mut channels = Vec::new();
    for address in server.addresses() {
        channels.push((address.to_string(), server.channel(&address).await));
    }
    channels.push(("gRPC".to_owned(), server.grpc_channel().await));
    for (address, channel) in channels {
        let client = TestingClient::new(channel);
        let seen = client
            .sleep(sleep(0, Some(Duration::from_secs(5))))
            .await
            .unwrap()
            .into_inner()
            .timeout_millis;
        assert!(
            seen > 0 && seen <= 5000,
            "server saw {seen} ms over {address}"
        );
        let none = client.sleep(sleep(0, None)).await.unwrap().into_inner();
        assert_eq!(none.timeout_millis, 0);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_deadline_fails_the_call_and_cancels_the_handler() {
    let server = TestServer::start().await;
    for (round, address) in server.addresses().into_iter().enumerate() {
        let client = TestingClient::new(server.channel(&address).await);
        let status = client
            .sleep(sleep(30_000, Some(Duration::from_millis(100))))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::DeadlineExceeded,
            "{status} over {address}"
        );
        eventually(Duration::from_secs(5), "handler cancelled", || {
            Counters::get(&server.counters.sleeps_cancelled) == round as u64 + 1
        })
        .await;
    }
    assert_eq!(Counters::get(&server.counters.sleeps_finished), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_timeout_on_the_channel_applies_to_calls_without_one() {
    let server = TestServer::start().await;
    let channel = sinew::Channel::builder(server.tcp.clone())
        .default_timeout(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    let status = TestingClient::new(channel)
        .sleep(sleep(30_000, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_unary_call_cancels_it_on_the_server() {
    let server = TestServer::start().await;
    let client = TestingClient::new(server.channel(&server.unix).await);
    let call = tokio::spawn(async move { client.sleep(sleep(30_000, None)).await });
    eventually(Duration::from_secs(5), "handler started", || {
        Counters::get(&server.counters.sleeps_started) == 1
    })
    .await;
    call.abort();
    eventually(Duration::from_secs(5), "handler cancelled", || {
        Counters::get(&server.counters.sleeps_cancelled) == 1
    })
    .await;
    let report = server.shutdown().await;
    assert_eq!(report.cancelled_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_response_stream_stops_the_server_producing() {
    let server = TestServer::start().await;
    let client = TestingClient::new(server.channel(&server.tcp).await);
    let mut stream = client
        .flood(FloodRequest {
            count: 10_000_000,
            size: 1024,
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..100 {
        stream.message().await.unwrap().expect("a chunk");
    }
    drop(stream);
    let sent = || Counters::get(&server.counters.flood_chunks_sent);
    let mut last = sent();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if sent() == last {
            break;
        }
        last = sent();
    }
    assert!(
        last < 100_000,
        "server kept producing after the client left: {last}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_also_bounds_a_response_stream() {
    let server = TestServer::start().await;
    let client = TestingClient::new(server.channel(&server.tcp).await);
    let mut request = Request::new(FloodRequest {
        count: u64::MAX,
        size: 16,
    });
    request.set_timeout(Duration::from_millis(200));
    let stream = client.flood(request).await.unwrap().into_inner();
    // Read until the stream ends; it must end with DEADLINE_EXCEEDED.
    let last = stream.fold(None, |_, item| async move { Some(item) }).await;
    let status = last.expect("some items").unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deadline_fails_locally_without_sending() {
    let server = TestServer::start().await;
    let client = TestingClient::new(server.channel(&server.tcp).await);
    let status = client
        .sleep(sleep(0, Some(Duration::ZERO)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(Counters::get(&server.counters.sleeps_started), 0);
    server.shutdown().await;
}
