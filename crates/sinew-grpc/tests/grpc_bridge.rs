//! A gRPC client nobody here wrote (tonic) calls sinew services through the
//! bridge, on the port that also speaks sinew: every call kind, metadata both
//! ways, status codes with messages, deadlines, health, reflection, Unix
//! sockets; and each class of bad input gets the answer gRPC's spec asks for.

#![allow(missing_docs, unreachable_pub)]

use futures_util::StreamExt;
use sinew_examples::echo::{echo_server::EchoServer, EchoService};
use sinew_examples::kv::{key_value_server::KeyValueServer, KeyValueStore};
use sinew_grpc::GrpcProtocol;
use std::time::Duration;
use tonic::Code;

#[allow(clippy::all)]
mod peer {
    pub mod echo {
        tonic::include_proto!("grpc.examples.echo");
    }
    pub mod kv {
        tonic::include_proto!("sinew.examples.kv");
    }
    pub mod health {
        tonic::include_proto!("grpc.health.v1");
    }
    pub mod reflection {
        tonic::include_proto!("grpc.reflection.v1");
    }
}

use peer::echo::{echo_client::EchoClient, EchoRequest};

struct Running {
    tcp: String,
    port: u16,
    socket: std::path::PathBuf,
    handle: sinew::rpc::server::ServerHandle,
    task: tokio::task::JoinHandle<sinew::rpc::ShutdownReport>,
}

async fn start(protocol: GrpcProtocol) -> Running {
    let socket = std::env::temp_dir().join(format!(
        "sinew-grpc-test-{}-{}.sock",
        std::process::id(),
        rand()
    ));
    let server = sinew::Server::builder()
        .add_service(EchoServer::new(EchoService))
        .add_service(KeyValueServer::new(KeyValueStore::default()))
        .add_protocol(protocol)
        .bind([
            "tcp://127.0.0.1:0".to_owned(),
            format!("unix://{}", socket.display()),
        ])
        .await
        .unwrap();
    let sinew::transport::Address::Tcp { port, .. } = server.local_addresses()[0].clone() else {
        unreachable!()
    };
    let handle = server.handle();
    let task = tokio::spawn(server.serve());
    Running {
        tcp: format!("tcp://127.0.0.1:{port}"),
        port,
        socket,
        handle,
        task,
    }
}

fn rand() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn tonic_channel(port: u16) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("tonic connects to the sinew port")
}

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_makes_every_kind_of_call_on_the_sinew_port() {
    let server = start(GrpcProtocol::default()).await;
    let mut client = EchoClient::new(tonic_channel(server.port).await);

    let mut request = tonic::Request::new(echo("hello"));
    request
        .metadata_mut()
        .insert("x-echo-id", "42".parse().unwrap());
    request.metadata_mut().insert_bin(
        "x-echo-raw-bin",
        tonic::metadata::MetadataValue::from_bytes(&[0, 255]),
    );
    let response = client.unary_echo(request).await.unwrap();
    assert_eq!(response.metadata().get("x-echo-id").unwrap(), "42");
    assert_eq!(
        response
            .metadata()
            .get_bin("x-echo-raw-bin")
            .unwrap()
            .to_bytes()
            .unwrap()
            .as_ref(),
        &[0, 255]
    );
    assert_eq!(response.into_inner().message, "hello");

    let mut request = tonic::Request::new(echo("tick"));
    request
        .metadata_mut()
        .insert("x-repeat", "5".parse().unwrap());
    let ticks: Vec<_> = client
        .server_streaming_echo(request)
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(ticks.len(), 5);
    assert!(ticks.iter().all(|t| t.as_ref().unwrap().message == "tick"));

    let words = futures_util::stream::iter(["a", "b", "c"].map(echo));
    let joined = client
        .client_streaming_echo(words)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.message, "a\nb\nc");

    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let mut replies = client
        .bidirectional_streaming_echo(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    for i in 0..20 {
        sender.send(echo(&format!("ping {i}"))).await.unwrap();
        assert_eq!(
            replies.message().await.unwrap().unwrap().message,
            format!("ping {i}")
        );
    }
    drop(sender);
    assert!(replies.message().await.unwrap().is_none());

    // sinew's own protocol on the same port, at the same time.
    let sinew_client = sinew_examples::echo::echo_client::EchoClient::new(
        sinew::Channel::connect(&server.tcp).await.unwrap(),
    );
    let reply = sinew_client
        .unary_echo(sinew_examples::echo::EchoRequest {
            message: "native".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "native");

    server.handle.shutdown();
    let report = server.task.await.unwrap();
    assert_eq!(report.cancelled_calls, 0);
}

/// Streamed messages queued together leave in one DATA frame (up to 32 KiB),
/// larger ones alone: a client reads every message whole either way, small
/// ones by the hundred thousand and ones larger than a frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_messages_arrive_whole_however_they_share_frames() {
    let server = start(GrpcProtocol::default()).await;
    let mut client = EchoClient::new(tonic_channel(server.port).await);
    for (size, repeat) in [(100, 100_000), (20_000, 200), (40_000, 50)] {
        let message = "m".repeat(size);
        let mut request = tonic::Request::new(echo(&message));
        request
            .metadata_mut()
            .insert("x-repeat", repeat.to_string().parse().unwrap());
        let mut stream = client
            .server_streaming_echo(request)
            .await
            .unwrap()
            .into_inner();
        let mut count = 0;
        while let Some(item) = stream.message().await.unwrap() {
            assert!(item.message == message, "message {count} of {size} bytes");
            count += 1;
        }
        assert_eq!(count, repeat, "messages of {size} bytes");
    }
    server.handle.shutdown();
    server.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_deadlines_health_and_reflection_reach_the_grpc_client() {
    let server = start(GrpcProtocol::default()).await;
    let channel = tonic_channel(server.port).await;

    let mut kv = peer::kv::key_value_client::KeyValueClient::new(channel.clone());
    let missing = kv
        .get(peer::kv::GetRequest { key: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "no value for key \"nope\"");

    let mut watch = tonic::Request::new(peer::kv::WatchRequest {
        prefix: "p".into(),
        send_initial: false,
    });
    watch.set_timeout(Duration::from_millis(200));
    let mut events = kv.watch(watch).await.unwrap().into_inner();
    let ended = events.message().await.unwrap_err();
    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");

    let mut health = peer::health::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(peer::health::HealthCheckRequest {
            service: "grpc.examples.echo.Echo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        peer::health::health_check_response::ServingStatus::Serving as i32
    );

    let mut reflection =
        peer::reflection::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = peer::reflection::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            peer::reflection::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(peer::reflection::server_reflection_response::MessageResponse::ListServicesResponse(
        list,
    )) = answer.message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"grpc.examples.echo.Echo".to_owned()),
        "{names:?}"
    );

    // Unknown method: UNIMPLEMENTED, as from any gRPC server.
    let mut unknown = tonic::client::Grpc::new(channel.clone());
    unknown.ready().await.unwrap();
    let status = unknown
        .unary::<_, peer::echo::EchoResponse, _>(
            tonic::Request::new(echo("x")),
            http::uri::PathAndQuery::from_static("/grpc.examples.echo.Echo/Nope"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    server.handle.shutdown();
    server.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_works_on_a_unix_socket_too() {
    let server = start(GrpcProtocol::default()).await;
    let socket = server.socket.clone();
    let channel = tonic::transport::Endpoint::from_static("http://unix.socket")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let reply = EchoClient::new(channel)
        .unary_echo(echo("over unix"))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "over unix");
    server.handle.shutdown();
    server.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_answers_the_grpc_spec_asks_for() {
    let server = start(GrpcProtocol::default().max_message_size(1024)).await;

    // HTTP/1.1 on the shared port: a clear HTTP error, then the connection closes.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut http1 = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    http1
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), http1.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 505"), "{answer}");
    assert!(answer.contains("HTTP/2"), "{answer}");

    // HTTP/2 but not gRPC: 415, so the client does not mistake an error for success.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("http://localhost/grpc.examples.echo.Echo/UnaryEcho")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // A malformed grpc-timeout: a clear status, not a hang or a default.
    let request = http::Request::post("http://localhost/grpc.examples.echo.Echo/UnaryEcho")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "soon")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(&[
            0, 0, 0, 0, 0,
        ])))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "3");
    assert!(response.headers()["grpc-message"]
        .to_str()
        .unwrap()
        .contains("grpc-timeout"));

    // Oversize message: RESOURCE_EXHAUSTED.
    let mut client = EchoClient::new(tonic_channel(server.port).await);
    let status = client
        .unary_echo(echo(&"x".repeat(2048)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // The connection is fine afterwards.
    assert_eq!(
        client
            .unary_echo(echo("small"))
            .await
            .unwrap()
            .into_inner()
            .message,
        "small"
    );

    // gzip-compressed requests and responses, negotiated as gRPC does.
    let mut gzip = EchoClient::new(tonic_channel(server.port).await)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    assert_eq!(
        gzip.unary_echo(echo("squeezed"))
            .await
            .unwrap()
            .into_inner()
            .message,
        "squeezed"
    );
    server.handle.shutdown();
    server.task.await.unwrap();
}
