//! sinew's typed clients call gRPC servers over `grpc://`: a tonic server
//! (nobody here wrote it) and a sinew server through its own bridge.

#![allow(missing_docs, unreachable_pub)]

use futures_util::StreamExt;
use sinew::{Code, Request};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use std::pin::Pin;
use std::time::Duration;

#[allow(clippy::all)]
mod peer {
    pub mod echo {
        tonic::include_proto!("grpc.examples.echo");
    }
}

use peer::echo::echo_server::{Echo, EchoServer};

/// The echo service written with tonic.
struct TonicEcho;

type ResponseStream = Pin<
    Box<dyn futures_util::Stream<Item = Result<peer::echo::EchoResponse, tonic::Status>> + Send>,
>;

#[tonic::async_trait]
impl Echo for TonicEcho {
    async fn unary_echo(
        &self,
        request: tonic::Request<peer::echo::EchoRequest>,
    ) -> Result<tonic::Response<peer::echo::EchoResponse>, tonic::Status> {
        let user = request.metadata().get("x-user").cloned();
        let message = request.into_inner().message;
        if message == "fail" {
            return Err(tonic::Status::failed_precondition("asked to fail"));
        }
        if message == "slow" {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        let mut response = tonic::Response::new(peer::echo::EchoResponse { message });
        if let Some(user) = user {
            response.metadata_mut().insert("x-user-seen", user);
        }
        Ok(response)
    }

    type ServerStreamingEchoStream = ResponseStream;
    async fn server_streaming_echo(
        &self,
        request: tonic::Request<peer::echo::EchoRequest>,
    ) -> Result<tonic::Response<ResponseStream>, tonic::Status> {
        let message = request.into_inner().message;
        let stream = futures_util::stream::iter((0..3).map(move |i| {
            Ok(peer::echo::EchoResponse {
                message: format!("{message} {i}"),
            })
        }));
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn client_streaming_echo(
        &self,
        request: tonic::Request<tonic::Streaming<peer::echo::EchoRequest>>,
    ) -> Result<tonic::Response<peer::echo::EchoResponse>, tonic::Status> {
        let mut messages = Vec::new();
        let mut stream = request.into_inner();
        while let Some(message) = stream.message().await? {
            messages.push(message.message);
        }
        Ok(tonic::Response::new(peer::echo::EchoResponse {
            message: messages.join("+"),
        }))
    }

    type BidirectionalStreamingEchoStream = ResponseStream;
    async fn bidirectional_streaming_echo(
        &self,
        request: tonic::Request<tonic::Streaming<peer::echo::EchoRequest>>,
    ) -> Result<tonic::Response<ResponseStream>, tonic::Status> {
        let stream = request.into_inner().map(|m| {
            m.map(|m| peer::echo::EchoResponse {
                message: m.message.to_uppercase(),
            })
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sinew_client_calls_a_tonic_server_with_every_call_kind() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(TonicEcho))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client = EchoClient::new(
        sinew_grpc::connect(&format!("grpc://127.0.0.1:{port}"))
            .await
            .unwrap(),
    );

    let mut request = Request::new(echo("hello"));
    request.metadata_mut().insert("x-user", "ada").unwrap();
    let response = client.unary_echo(request).await.unwrap();
    assert_eq!(response.metadata().get("x-user-seen"), Some("ada"));
    assert_eq!(response.into_inner().message, "hello");

    let stream = client
        .server_streaming_echo(echo("n"))
        .await
        .unwrap()
        .into_inner();
    let messages: Vec<String> = stream.map(|m| m.unwrap().message).collect().await;
    assert_eq!(messages, ["n 0", "n 1", "n 2"]);

    let joined = client
        .client_streaming_echo(futures_util::stream::iter(["a", "b"].map(echo)))
        .await
        .unwrap();
    assert_eq!(joined.into_inner().message, "a+b");

    let shouted = client
        .bidirectional_streaming_echo(futures_util::stream::iter(["x", "y"].map(echo)))
        .await
        .unwrap()
        .into_inner();
    let shouted: Vec<String> = shouted.map(|m| m.unwrap().message).collect().await;
    assert_eq!(shouted, ["X", "Y"]);

    let failed = client.unary_echo(echo("fail")).await.unwrap_err();
    assert_eq!(failed.code(), Code::FailedPrecondition);
    assert_eq!(failed.message(), "asked to fail");

    let mut slow = Request::new(echo("slow"));
    slow.set_timeout(Duration::from_millis(200));
    let late = client.unary_echo(slow).await.unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late}");

    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_malformed_grpc_addresses_are_reported() {
    let unreachable = sinew_grpc::connect("grpc://127.0.0.1:1").await.unwrap_err();
    assert_eq!(unreachable.code(), Code::Unavailable, "{unreachable}");
    for bad in ["grpc://", "tcp://x:1", "grpc://nohost"] {
        let error = sinew_grpc::connect(bad).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{bad}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sinew_client_reaches_a_sinew_server_through_both_bridges() {
    let server = sinew::Server::builder()
        .add_service(sinew_examples::echo::echo_server::EchoServer::new(
            sinew_examples::echo::EchoService,
        ))
        .add_service(sinew_examples::kv::key_value_server::KeyValueServer::new(
            sinew_examples::kv::KeyValueStore::default(),
        ))
        .add_protocol(sinew_grpc::GrpcProtocol::default())
        .bind(["tcp://127.0.0.1:0"])
        .await
        .unwrap();
    let sinew::transport::Address::Tcp { port, .. } = server.local_addresses()[0].clone() else {
        unreachable!()
    };
    let handle = server.handle();
    let task = tokio::spawn(server.serve());
    let channel = sinew_grpc::connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let client = EchoClient::new(channel.clone());
    let mut request = Request::new(echo("round trip"));
    request.metadata_mut().insert("x-repeat", "2").unwrap();
    let stream = client
        .server_streaming_echo(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.count().await, 2);
    let kv = sinew_examples::kv::key_value_client::KeyValueClient::new(channel);
    let missing = kv
        .get(sinew_examples::kv::GetRequest { key: "k".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "no value for key \"k\"");
    handle.shutdown();
    task.await.unwrap();
}
