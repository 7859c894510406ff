//! `Forward`: a server that passes every call it does not serve on to another,
//! over sinew's protocol and over gRPC: every call shape, metadata both ways,
//! trailers, failures with their trailers, deadlines, and what the front
//! serves itself.

mod common;

use common::TestServer;
use futures_util::StreamExt;
use sinew::rpc::server::Forward;
use sinew::{Channel, Code, Request, Server};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use sinew_tests::testing::{
    testing_client::TestingClient, Chunk, FailRequest, FloodRequest, SleepRequest,
};
use std::time::Duration;

/// A front with no service of its own (but health, which every server has)
/// forwarding to `upstream`; a channel to it.
async fn front(upstream: Channel) -> Channel {
    let server = Server::builder()
        .fallback(Forward::new(upstream))
        .bind(["tcp://127.0.0.1:0"])
        .await
        .unwrap();
    let address = server.local_addresses()[0].clone();
    tokio::spawn(server.serve());
    Channel::builder(address).connect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_shape_and_its_metadata_go_through_over_sinew_and_grpc() {
    let server = TestServer::start_with(|builder| {
        builder.add_protocol(sinew::grpc::GrpcProtocol::default())
    })
    .await;
    let upstreams = [
        ("sinew", server.channel(&server.tcp).await),
        ("grpc", server.grpc_channel().await),
    ];
    for (over, upstream) in upstreams {
        let channel = front(upstream).await;
        let echo = EchoClient::new(channel.clone());
        let testing = TestingClient::new(channel.clone());

        // Unary, with metadata up and back.
        let mut request = Request::new(EchoRequest {
            message: "hello".into(),
        });
        request.metadata_mut().insert("x-echo-id", "7").unwrap();
        let response = echo.unary_echo(request).await.unwrap();
        assert_eq!(response.metadata().get("x-echo-id"), Some("7"), "{over}");
        assert_eq!(response.into_inner().message, "hello", "{over}");

        // Trailers of an OK call.
        let mut request = Request::new(());
        request.metadata_mut().insert("x-trailer", "t").unwrap();
        let response = testing.metadata(request).await.unwrap();
        assert_eq!(
            response.metadata().get("x-trailer-echo"),
            Some("t"),
            "{over}"
        );

        // Server streaming: every message, in order.
        let flood = testing
            .flood(FloodRequest {
                count: 100,
                size: 1000,
            })
            .await
            .unwrap()
            .into_inner();
        let indexes: Vec<u64> = flood.map(|chunk| chunk.unwrap().index).collect().await;
        assert_eq!(indexes, (0..100).collect::<Vec<_>>(), "{over}");

        // Client streaming.
        let chunks = futures_util::stream::iter((0..50).map(|index| Chunk {
            data: vec![1; 100],
            index,
        }));
        let summary = testing
            .sink(Request::new(chunks))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((summary.chunks, summary.bytes), (50, 5000), "{over}");

        // Bidirectional.
        let requests = futures_util::stream::iter(["a", "b", "c"].map(|message| EchoRequest {
            message: message.into(),
        }));
        let replies: Vec<String> = echo
            .bidirectional_streaming_echo(Request::new(requests))
            .await
            .unwrap()
            .into_inner()
            .map(|reply| reply.unwrap().message)
            .collect()
            .await;
        assert_eq!(replies, ["a", "b", "c"], "{over}");

        // A failure keeps its code, message and trailers.
        let status = testing
            .fail(FailRequest {
                code: Code::FailedPrecondition as u32,
                message: "not yet".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{over}");
        assert_eq!(status.message(), "not yet", "{over}");
        assert_eq!(
            status.metadata().get("x-fail-detail"),
            Some("from the testing service"),
            "{over}"
        );

        // The caller's deadline reaches upstream.
        let mut request = Request::new(SleepRequest { millis: 5_000 });
        request.set_timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let status = testing.sleep(request).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{over}");
        assert!(started.elapsed() < Duration::from_secs(3), "{over}");

        // A method upstream does not have either.
        let status = sinew::Client::new(channel.clone())
            .unary::<(), ()>("/nowhere.Nothing/Never", Request::new(()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{over}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_answers_what_it_serves_itself() {
    let server = TestServer::start().await;
    let upstream = server.channel(&server.tcp).await;
    server.health.set_not_serving("grpc.examples.echo.Echo");
    let channel = front(upstream).await;
    // The front's own health service answers for the front: it knows no
    // Echo service, and does not ask upstream.
    let health = sinew::rpc::server::health::v1::health_client::HealthClient::new(channel);
    let status = health
        .check(sinew::rpc::server::health::v1::HealthCheckRequest {
            service: "grpc.examples.echo.Echo".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    server.shutdown().await;
}
