//! One round of each attack of the hardening issue, against a server's TCP
//! address, for the soak test: each sends its attack, waits until the server
//! dealt with it (or a short while), and returns what it saw. The bounds each
//! attack must respect are asserted by the tests in `hardening.rs`; here they
//! only need to end.

#![allow(dead_code, unreachable_pub)]

use crate::raw::{raw_frame, RawClient};
use sinew::transport::Address;
use sinew_wire::{encode, Frame, MetadataMap, Reason, Settings};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub const UNARY_ECHO: &str = "/grpc.examples.echo.Echo/UnaryEcho";
pub const CLIENT_STREAMING_ECHO: &str = "/grpc.examples.echo.Echo/ClientStreamingEcho";
pub const KV_GET: &str = "/sinew.examples.kv.KeyValue/Get";

/// The attacks the soak test rotates through.
pub const ALL: &[&str] = &[
    "metadata-flood",
    "empty-data-flood",
    "ping-flood",
    "repeated-half-close",
    "unread-answers",
    "headers-only-calls",
    "trickled-frame",
    "silent-connections",
    "partial-grpc-messages",
];

/// Runs one round of attack `name` against `address`.
pub async fn run(name: &str, address: &Address) {
    match name {
        "metadata-flood" => drop(metadata_flood(address).await),
        "empty-data-flood" => drop(empty_data_flood(address).await),
        "ping-flood" => drop(ping_flood(address).await),
        "repeated-half-close" => drop(repeated_half_close(address).await),
        "unread-answers" => unread_answers(address, 300).await,
        "headers-only-calls" => headers_only_calls(address).await,
        "trickled-frame" => trickled_frame(address).await,
        "silent-connections" => silent_connections(address, 50).await,
        "partial-grpc-messages" => partial_grpc_messages(address, 100).await,
        other => panic!("no attack {other:?}"),
    }
}

/// Reads until the server closes, at most `limit`; the GOAWAY it sent, if any.
pub async fn goaway_within(client: &mut RawClient, limit: Duration) -> Option<sinew_wire::GoAway> {
    let frames = tokio::time::timeout(limit, client.read_until_closed())
        .await
        .unwrap_or_default();
    frames.into_iter().find_map(|f| match f {
        Frame::GoAway(g) => Some(g),
        _ => None,
    })
}

/// Reads until the server closes (10 s at most), and checks that it said
/// why with a GOAWAY of `reason`.
pub async fn closed_with(client: &mut RawClient, reason: Reason) -> sinew_wire::GoAway {
    expect_goaway(goaway_within(client, Duration::from_secs(10)).await, reason)
}

/// Writes `bytes`, ignoring a server that closes before taking them all.
async fn write_ignoring_close(client: &mut RawClient, bytes: &[u8]) {
    let _ = client.stream.write_all(bytes).await;
}

/// A 2.7 MB HEADERS frame with 128k distinct metadata keys; the server's
/// GOAWAY.
pub async fn metadata_flood(address: &Address) -> Option<sinew_wire::GoAway> {
    let mut huge = MetadataMap::new();
    for i in 0..128 * 1024 {
        huge.append(&format!("x-echo-{i}-bin"), "").unwrap();
    }
    let mut attack = bytes::BytesMut::new();
    encode::headers(&mut attack, 1, false, None, UNARY_ECHO, &huge);
    let mut client = RawClient::handshake(address).await;
    write_ignoring_close(&mut client, &attack).await;
    goaway_within(&mut client, Duration::from_secs(5)).await
}

/// Empty DATA frames on a bidirectional stream whose handler is blocked on a
/// one-byte window, ten times what the server's window allows; the GOAWAY.
pub async fn empty_data_flood(address: &Address) -> Option<sinew_wire::GoAway> {
    let settings = Settings {
        initial_stream_window: 1,
        initial_connection_window: 1,
        ..Default::default()
    };
    let mut client = RawClient::handshake_with(address, settings).await;
    let path = "/grpc.examples.echo.Echo/BidirectionalStreamingEcho";
    let mut batch = bytes::BytesMut::new();
    encode::headers(&mut batch, 1, false, None, path, &MetadataMap::new());
    let window = client.server_settings.unwrap().initial_stream_window as usize;
    for _ in 0..10 * window / sinew_wire::DATA_FRAME_COST {
        encode::data(&mut batch, 1, false, &[]);
    }
    write_ignoring_close(&mut client, &batch).await;
    goaway_within(&mut client, Duration::from_secs(5)).await
}

/// 100,000 PINGs; the GOAWAY.
pub async fn ping_flood(address: &Address) -> Option<sinew_wire::GoAway> {
    let mut client = RawClient::handshake(address).await;
    let mut batch = bytes::BytesMut::new();
    for _ in 0..100_000 {
        encode::ping(&mut batch, false, [7; 8]);
    }
    write_ignoring_close(&mut client, &batch).await;
    goaway_within(&mut client, Duration::from_secs(5)).await
}

/// One stream, then a million HALF_CLOSE frames on it; the GOAWAY.
pub async fn repeated_half_close(address: &Address) -> Option<sinew_wire::GoAway> {
    let mut client = RawClient::handshake(address).await;
    let mut batch = bytes::BytesMut::new();
    encode::headers(
        &mut batch,
        1,
        false,
        None,
        CLIENT_STREAMING_ECHO,
        &MetadataMap::new(),
    );
    for _ in 0..1_000_000 {
        encode::half_close(&mut batch, 1);
    }
    write_ignoring_close(&mut client, &batch).await;
    goaway_within(&mut client, Duration::from_secs(5)).await
}

/// Stores a 1 MiB value under the key "big" (what `unread_answers_open`
/// asks for), through `channel`.
pub async fn put_big_value(channel: sinew::Channel) {
    use sinew_examples::kv::{key_value_client::KeyValueClient, PutRequest};
    KeyValueClient::new(channel)
        .put(PutRequest {
            key: "big".into(),
            value: vec![7u8; 1 << 20],
            expected_version: None,
        })
        .await
        .unwrap();
}

/// The GOAWAY an attack got, checked for its reason.
pub fn expect_goaway(goaway: Option<sinew_wire::GoAway>, reason: Reason) -> sinew_wire::GoAway {
    let goaway = goaway.expect("the server sent a GOAWAY");
    assert_eq!(goaway.reason, reason, "{}", goaway.message);
    goaway
}

/// `calls` Gets of the key "big" with one-byte windows, answers never read
/// (the key must hold a large value). Returns the connection, still open:
/// dropping it ends the attack.
pub async fn unread_answers_open(address: &Address, calls: u32) -> RawClient {
    let settings = Settings {
        initial_stream_window: 1,
        initial_connection_window: 1,
        ..Default::default()
    };
    let mut client = RawClient::handshake_with(address, settings).await;
    let get = prost::Message::encode_to_vec(&sinew_examples::kv::GetRequest { key: "big".into() });
    client
        .send(|out| {
            for i in 0..calls {
                let id = 2 * i + 1;
                encode::headers(out, id, false, None, KV_GET, &MetadataMap::new());
                encode::data(out, id, true, &get);
            }
        })
        .await;
    client
}

async fn unread_answers(address: &Address, calls: u32) {
    let client = unread_answers_open(address, calls).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(client);
}

/// 1,024 calls opened with HEADERS and never continued, held a second.
pub async fn headers_only_calls(address: &Address) {
    let mut client = RawClient::handshake(address).await;
    client
        .send(|out| {
            for i in 0..1024 {
                encode::headers(out, 2 * i + 1, false, None, UNARY_ECHO, &MetadataMap::new());
            }
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A DATA frame announcing 4 MiB, sent a byte at a time for a second.
pub async fn trickled_frame(address: &Address) {
    let mut client = RawClient::handshake(address).await;
    let mut start = bytes::BytesMut::new();
    encode::headers(
        &mut start,
        1,
        false,
        None,
        CLIENT_STREAMING_ECHO,
        &MetadataMap::new(),
    );
    let mut header = raw_frame(0, 0, 1, &[]);
    header[..4].copy_from_slice(&(4u32 << 20).to_be_bytes());
    start.extend_from_slice(&header);
    write_ignoring_close(&mut client, &start).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        write_ignoring_close(&mut client, &[1]).await;
    }
}

/// `count` connections that send a preface and nothing else, held a second.
pub async fn silent_connections(address: &Address, count: usize) {
    let mut silent = Vec::new();
    for _ in 0..count {
        silent.push(RawClient::handshake(address).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// An HTTP/2 connection with `streams` gRPC calls, each sending the first MiB
/// of a message that announces 4 MiB; returns how many the server ended with
/// RESOURCE_EXHAUSTED within 3 s (the others are held until the connection
/// is dropped).
pub async fn partial_grpc_messages_counted(address: &Address, streams: usize) -> usize {
    let Address::Tcp { host, port } = address else {
        panic!("gRPC attacks need TCP")
    };
    let socket = tokio::net::TcpStream::connect((host.as_str(), *port))
        .await
        .unwrap();
    let (mut h2, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .handshake::<_, bytes::Bytes>(socket)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut responses = futures_util::stream::FuturesUnordered::new();
    let mut bodies = Vec::new();
    for _ in 0..streams {
        let Ok(ready) = h2.ready().await else { break };
        h2 = ready;
        let request =
            http::Request::post("http://sinew/grpc.examples.echo.Echo/ClientStreamingEcho")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
        let Ok((response, mut body)) = h2.send_request(request, false) else {
            break;
        };
        let mut partial = vec![0u8; 5 + (1 << 20)];
        partial[1..5].copy_from_slice(&(4u32 << 20).to_be_bytes());
        body.reserve_capacity(partial.len());
        let _ = body.send_data(partial.into(), false);
        responses.push(response);
        bodies.push(body);
    }
    let mut exhausted = 0;
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(response) = futures_util::StreamExt::next(&mut responses).await {
            let Ok(response) = response else { continue };
            let status = response.headers().get("grpc-status").cloned();
            assert_eq!(
                status.as_ref().and_then(|v| v.to_str().ok()),
                Some("8"),
                "{response:?}"
            );
            exhausted += 1;
        }
    })
    .await;
    drop(bodies);
    connection.abort();
    exhausted
}

async fn partial_grpc_messages(address: &Address, streams: usize) {
    partial_grpc_messages_counted(address, streams).await;
}
