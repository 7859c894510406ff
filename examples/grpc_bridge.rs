//! One port, two protocols: the echo service answers a sinew client and a gRPC
//! client (here a raw HTTP/2 gRPC request made with hyper, as any gRPC library
//! would send it) on the same TCP port.
//!
//! ```text
//! cargo run --example grpc_bridge
//! ```
//! While it runs, any gRPC tool can call it too, for instance
//! `grpcurl -plaintext 127.0.0.1:PORT list` (reflection is on).

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use sinew::{Channel, Server};
use sinew_examples::echo::{
    echo_client::EchoClient, echo_server::EchoServer, EchoRequest, EchoResponse, EchoService,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .add_service(EchoServer::new(EchoService))
        .add_protocol(sinew_grpc::GrpcProtocol::default())
        .bind(["tcp://127.0.0.1:0"])
        .await?;
    let address = server.local_addresses()[0].clone();
    let sinew::transport::Address::Tcp { port, .. } = address.clone() else {
        unreachable!()
    };
    let handle = server.handle();
    let serving = tokio::spawn(server.serve());
    println!("echo service on {address}: sinew and gRPC on the same port");

    let sinew_client = EchoClient::new(Channel::connect(&address.to_string()).await?);
    let reply = sinew_client
        .unary_echo(EchoRequest {
            message: "over sinew".into(),
        })
        .await?;
    println!("sinew client got: {}", reply.into_inner().message);

    // A gRPC request, byte for byte as gRPC's HTTP/2 mapping defines it.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut http2, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(connection);
    let message = EchoRequest {
        message: "over gRPC".into(),
    }
    .encode_to_vec();
    let mut body = BytesMut::new();
    body.put_u8(0); // not compressed
    body.put_u32(message.len() as u32);
    body.put_slice(&message);
    let request = http::Request::post(format!(
        "http://127.0.0.1:{port}/grpc.examples.echo.Echo/UnaryEcho"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(http_body_util::Full::new(body.freeze()))?;
    let response = http2.send_request(request).await?;
    let collected = response.into_body().collect().await?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let bytes: Bytes = collected.to_bytes();
    let reply = EchoResponse::decode(&bytes[5..])?;
    println!(
        "gRPC client got: {} (grpc-status {})",
        reply.message,
        trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
    );

    handle.shutdown();
    serving.await?;
    Ok(())
}
