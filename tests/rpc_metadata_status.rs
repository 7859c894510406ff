//! Metadata in both directions, status codes and messages, panics.

mod common;

use common::TestServer;
use sinew::{Code, MetadataMap, Request};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use sinew_tests::testing::{testing_client::TestingClient, Chunk, FailRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metadata_reaches_the_handler_ascii_and_binary() {
    let server = TestServer::start().await;
    for address in server.addresses() {
        let client = TestingClient::new(server.channel(&address).await);
        let mut request = Request::new(());
        request.metadata_mut().insert("x-user", "ada").unwrap();
        request.metadata_mut().append("x-multi", "1").unwrap();
        request.metadata_mut().append("x-multi", "2").unwrap();
        request
            .metadata_mut()
            .insert_bin("x-blob-bin", vec![0u8, 1, 2, 255])
            .unwrap();
        request.metadata_mut().insert("x-trailer", "t").unwrap();
        let response = client.metadata(request).await.unwrap();
        assert_eq!(response.metadata().get("x-trailer-echo"), Some("t"));
        let list = response.into_inner();
        let pairs: Vec<(String, Vec<u8>)> = list.keys.into_iter().zip(list.values).collect();
        assert_eq!(
            pairs,
            vec![
                ("x-user".to_owned(), b"ada".to_vec()),
                ("x-multi".to_owned(), b"1".to_vec()),
                ("x-multi".to_owned(), b"2".to_vec()),
                ("x-blob-bin".to_owned(), vec![0, 1, 2, 255]),
                ("x-trailer".to_owned(), b"t".to_vec()),
            ],
            "over {address}"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_metadata_comes_back_for_unary_and_streaming_calls() {
    let server = TestServer::start().await;
    let client = EchoClient::new(server.channel(&server.tcp).await);
    let mut request = Request::new(EchoRequest {
        message: "m".into(),
    });
    request.metadata_mut().insert("x-echo-id", "42").unwrap();
    request
        .metadata_mut()
        .insert_bin("x-echo-raw-bin", vec![9u8, 0])
        .unwrap();
    let response = client.unary_echo(request).await.unwrap();
    assert_eq!(response.metadata().get("x-echo-id"), Some("42"));
    assert_eq!(
        response.metadata().get_bin("x-echo-raw-bin"),
        Some(&[9u8, 0][..])
    );

    let mut request = Request::new(EchoRequest {
        message: "m".into(),
    });
    request.metadata_mut().insert("x-echo-id", "7").unwrap();
    request.metadata_mut().insert("x-repeat", "3").unwrap();
    let response = client.server_streaming_echo(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-echo-id"),
        Some("7"),
        "response headers"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_code_travels_with_its_message_and_trailers() {
    let server = TestServer::start().await;
    let client = TestingClient::new(server.channel(&server.unix).await);
    for code in sinew::Code::ALL.into_iter().skip(1) {
        let status = client
            .fail(FailRequest {
                code: code.as_u32(),
                message: format!("failing with {code} ✓"),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code);
        assert_eq!(status.message(), format!("failing with {code} ✓"));
        assert_eq!(
            status.metadata().get("x-fail-detail"),
            Some("from the testing service")
        );
    }
    // A code this version does not know is read as UNKNOWN.
    let status = client
        .fail(FailRequest {
            code: 99,
            message: "?".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_internal_and_the_server_goes_on() {
    let server = TestServer::start().await;
    let channel = server.channel(&server.tcp).await;
    let client = TestingClient::new(channel.clone());
    let status = client.panic(()).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().contains("panicked"), "{status}");
    // Same connection, next call.
    let echo = EchoClient::new(channel);
    let reply = echo
        .unary_echo(EchoRequest {
            message: "after".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "after");
    server.shutdown().await;
}

#[test]
fn invalid_metadata_is_refused_by_the_api_before_anything_is_sent() {
    let mut map = MetadataMap::new();
    assert!(map.insert("Upper", "v").is_err());
    assert!(map.insert("k", "new\nline").is_err());
    assert!(map.insert_bin("not-binary", vec![1u8]).is_err());
    assert!(map.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_larger_than_the_peer_accepts_is_resource_exhausted() {
    let server = TestServer::start_with(|b| b.max_header_list_size(4096)).await;
    let channel = sinew::Channel::builder(server.tcp.clone())
        .max_header_list_size(2048)
        .connect()
        .await
        .unwrap();
    let client = EchoClient::new(channel);
    let echo = |size: usize| {
        let mut request = Request::new(EchoRequest {
            message: "m".into(),
        });
        request
            .metadata_mut()
            .insert_bin("x-echo-blob-bin", vec![7u8; size])
            .unwrap();
        request
    };
    // Above the server's limit: refused before anything is sent, retryable.
    let status = client.unary_echo(echo(5000)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.is_not_processed(), "{status}");
    assert!(status.message().contains("4096"), "{status}");
    // Within the server's but above the client's: the echoed response
    // metadata cannot be sent; the server says so in the status.
    let status = client.unary_echo(echo(3000)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("2048"), "{status}");
    // The connection is fine, and metadata within both limits travels.
    let reply = client.unary_echo(echo(1000)).await.unwrap();
    assert_eq!(
        reply.metadata().get_bin("x-echo-blob-bin").unwrap().len(),
        1000
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_larger_than_the_peer_accepts_are_resource_exhausted() {
    let server = TestServer::start_with(|b| b.max_frame_size(64 * 1024)).await;
    let client = EchoClient::new(server.channel(&server.tcp).await);
    let status = client
        .unary_echo(EchoRequest {
            message: "x".repeat(100 * 1024),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    // Nothing was sent; the connection is fine.
    let ok = client
        .unary_echo(EchoRequest {
            message: "small".into(),
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().message, "small");

    // Responses larger than the client accepts: the server reports it.
    let server2 = TestServer::start().await;
    let channel = sinew::Channel::builder(server2.tcp.clone())
        .max_frame_size(16 * 1024)
        .connect()
        .await
        .unwrap();
    let client = EchoClient::new(channel);
    let status = client
        .unary_echo(EchoRequest {
            message: "y".repeat(15 * 1024),
        })
        .await
        .unwrap();
    assert_eq!(status.into_inner().message.len(), 15 * 1024);
    let mut request = Request::new(EchoRequest {
        message: "z".repeat(20 * 1024),
    });
    request.metadata_mut().insert("x-repeat", "1").unwrap();
    // The request is fine for the server (4 MiB limit) but the response is not.
    let mut stream = client
        .server_streaming_echo(request)
        .await
        .unwrap()
        .into_inner();
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    server.shutdown().await;
    server2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_cross_many_windows_intact() {
    let server = TestServer::start().await;
    for address in server.addresses() {
        let client = EchoClient::new(server.channel(&address).await);
        // 3 MiB: larger than the 1 MiB stream window, under the 4 MiB frame limit.
        let big: String = (0..3 * 1024 * 1024)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        let reply = client
            .unary_echo(EchoRequest {
                message: big.clone(),
            })
            .await
            .unwrap();
        assert!(reply.into_inner().message == big, "over {address}");
        // 16 MiB through one stream: more than both windows, so it only passes
        // if WINDOW_UPDATEs flow as the handler consumes.
        let testing = TestingClient::new(server.channel(&address).await);
        let chunks: Vec<_> = (0..64)
            .map(|index| Chunk {
                data: vec![index as u8; 256 * 1024],
                index,
            })
            .collect();
        let summary = testing
            .sink(futures_util::stream::iter(chunks))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (summary.chunks, summary.bytes),
            (64, 64 * 256 * 1024),
            "over {address}"
        );
    }
    server.shutdown().await;
}
