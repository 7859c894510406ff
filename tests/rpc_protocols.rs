//! In-process connections, raw message passthrough, and other protocols sharing
//! a listener with sinew's own: the foundations of the gRPC bridge.

mod common;
#[path = "common/raw.rs"]
mod raw;

use common::TestServer;
use futures_util::future::BoxFuture;
use prost::Message;
use sinew::rpc::server::{Accepted, LocalConnector, Protocol, Sniff};
use sinew::rpc::{Decoder, RawMessage};
use sinew::{Channel, Request};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest, EchoResponse};
use sinew_wire::{Frame, Reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_channel_carries_every_call_kind_without_a_socket() {
    let server = TestServer::start().await;
    let channel = Channel::builder_with_connector(server.local.clone())
        .connect()
        .await
        .unwrap();
    assert!(channel.address().is_none());
    let client = EchoClient::new(channel);
    let reply = client
        .unary_echo(EchoRequest {
            message: "local".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "local");
    let words = futures_util::stream::iter(["a", "b"].map(|m| EchoRequest { message: m.into() }));
    let joined = client.client_streaming_echo(words).await.unwrap();
    assert_eq!(joined.into_inner().message, "a\nb");
    let report = server.shutdown().await;
    assert_eq!(report.cancelled_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_messages_pass_through_undecoded() {
    let server = TestServer::start().await;
    let channel = server.channel(&server.unix).await;
    let request = EchoRequest {
        message: "raw".into(),
    }
    .encode_to_vec();
    let response = sinew::Client::new(channel)
        .unary_with(
            "/grpc.examples.echo.Echo/UnaryEcho",
            Request::new(RawMessage(request.into())),
            &Decoder::raw(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(EchoResponse::decode(response.0).unwrap().message, "raw");
    server.shutdown().await;
}

/// Claims connections that start with "HELO" and answers with a greeting.
struct Greeter;

impl Protocol for Greeter {
    fn name(&self) -> &'static str {
        "greeter"
    }

    fn sniff(&self, first_bytes: &[u8]) -> Sniff {
        let n = first_bytes.len().min(4);
        if first_bytes[..n] != b"HELO"[..n] {
            Sniff::No
        } else if n < 4 {
            Sniff::NeedMore
        } else {
            Sniff::Yes
        }
    }

    fn serve(
        &self,
        mut connection: Accepted,
        _local: LocalConnector,
        _shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut hello = [0u8; 10];
            if connection.read_exact(&mut hello).await.is_ok() {
                let _ = connection.write_all(b"hi from the greeter: ").await;
                let _ = connection.write_all(&hello).await;
            }
            let _ = connection.shutdown().await;
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_protocol_shares_the_port_and_sees_its_first_bytes_again() {
    let server = TestServer::start_with(|builder| builder.add_protocol(Greeter)).await;
    // The greeter gets its connection, sniffed bytes included, split across writes.
    let sinew::transport::Address::Tcp { host, port } = &server.tcp else {
        unreachable!()
    };
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), *port))
        .await
        .unwrap();
    stream.write_all(b"HE").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    stream.write_all(b"LO world").await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "hi from the greeter: HELO world");

    // sinew's own protocol on the same port is unaffected...
    let client = EchoClient::new(server.channel(&server.tcp).await);
    let reply = client
        .unary_echo(EchoRequest {
            message: "same port".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "same port");
    // ...and bytes nobody claims still get sinew's BAD_PREFACE.
    let mut garbage = raw::RawClient::connect(&server.tcp).await;
    garbage.send_bytes(b"XYZ garbage").await;
    garbage.read_preface().await;
    let frames = garbage.read_until_closed().await;
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::GoAway(g) if g.reason == Reason::BadPreface)),
        "{frames:?}"
    );
    server.shutdown().await;
}
