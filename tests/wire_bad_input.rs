//! Bad input at a real server over a real socket: each case gets the documented
//! status or connection error (docs/protocol.md), the server never panics, and
//! other connections keep being served.

mod common;
#[path = "common/raw.rs"]
mod raw;

use common::{eventually, TestServer};
use raw::{raw_frame, RawClient};
use sinew::rpc::server::stats::{Limit, Refusal};
use sinew::transport::Address;
use sinew::Code;
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use sinew_tests::testing::{Chunk, Counters, FloodRequest, SleepRequest};
use sinew_wire::{encode, Frame, MetadataMap, Reason};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const UNARY_ECHO: &str = "/grpc.examples.echo.Echo/UnaryEcho";

/// The server still serves a fresh connection normally.
async fn still_serving(server: &TestServer) {
    let client = EchoClient::new(server.channel(&server.tcp).await);
    let reply = client
        .unary_echo(EchoRequest {
            message: "still here".into(),
        })
        .await
        .expect("server keeps serving other connections");
    assert_eq!(reply.into_inner().message, "still here");
}

fn expect_goaway(frames: &[Frame], reason: Reason, needle: &str) {
    let goaway = frames
        .iter()
        .find_map(|f| match f {
            Frame::GoAway(g) => Some(g),
            _ => None,
        })
        .unwrap_or_else(|| panic!("expected GOAWAY {reason}, got {frames:?}"));
    assert_eq!(goaway.reason, reason, "{goaway:?}");
    assert!(
        goaway.message.contains(needle),
        "{:?} lacks {needle:?}",
        goaway.message
    );
}

fn expect_trailers(frame: Frame, code: Code, needle: &str) {
    match frame {
        Frame::Trailers(t) => {
            assert_eq!(t.code, code, "{t:?}");
            assert!(
                t.message.contains(needle),
                "{:?} lacks {needle:?}",
                t.message
            );
        }
        other => panic!("expected TRAILERS {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_preface_is_refused_with_bad_preface() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(&server.tcp).await;
    raw.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    raw.read_preface().await;
    let frames = raw.read_until_closed().await;
    expect_goaway(&frames, Reason::BadPreface, "preface");
    still_serving(&server).await;
    // Counted: accepted, then refused at the handshake.
    let stats = server.handle.stats();
    assert_eq!(stats.refused(Refusal::Handshake), 1, "{stats:?}");
    assert_eq!(stats.connections_accepted, 2, "{stats:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_version_is_refused_with_its_reason() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(&server.tcp).await;
    let mut preface = sinew_wire::MAGIC.to_vec();
    preface.extend_from_slice(&[0, 9, 0, 0]);
    raw.send_bytes(&preface).await;
    raw.read_preface().await;
    let frames = raw.read_until_closed().await;
    expect_goaway(&frames, Reason::UnsupportedVersion, "version 9");
    still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    let server = TestServer::start_with(|b| b.handshake_timeout(Duration::from_millis(200))).await;
    let mut raw = RawClient::connect(&server.tcp).await;
    raw.read_preface().await;
    let frames = raw.read_until_closed().await;
    expect_goaway(&frames, Reason::BadPreface, "handshake timeout");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_longer_than_the_max_frame_size_is_a_frame_size_error() {
    let server = TestServer::start().await;
    let mut raw = RawClient::handshake(&server.tcp).await;
    let max = raw.server_settings.unwrap().max_frame_size;
    // Only the header: the server must refuse from the length field alone.
    let mut header = raw_frame(0x0, 0, 1, &[]);
    header[..4].copy_from_slice(&(max + 1).to_be_bytes());
    raw.send_bytes(&header).await;
    let frames = raw.read_until_closed().await;
    expect_goaway(
        &frames,
        Reason::FrameSizeError,
        "exceeds the maximum frame size",
    );
    still_serving(&server).await;
    let stats = server.handle.stats();
    assert_eq!(
        stats.connection_errors(Reason::FrameSizeError),
        1,
        "{stats:?}"
    );
    assert_eq!(
        stats.connection_errors(Reason::ProtocolError),
        0,
        "{stats:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_then_eof_is_a_protocol_error() {
    let server = TestServer::start().await;
    let mut raw = RawClient::handshake(&server.tcp).await;
    let frame = raw_frame(0x1, 0, 1, b"\x00\x22/grpc.examples.echo.Echo/UnaryEcho");
    raw.send_bytes(&frame[..frame.len() - 5]).await;
    raw.stream.shutdown().await.unwrap();
    let frames = raw.read_until_closed().await;
    expect_goaway(&frames, Reason::ProtocolError, "middle of a frame");
    still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_frame_kind_is_a_protocol_error() {
    let server = TestServer::start().await;
    let mut raw = RawClient::handshake(&server.tcp).await;
    raw.send_bytes(&raw_frame(0x42, 0, 1, b"what is this"))
        .await;
    let frames = raw.read_until_closed().await;
    expect_goaway(&frames, Reason::ProtocolError, "unknown frame kind 0x42");
    still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ids_going_backwards_are_a_protocol_error() {
    let server = TestServer::start().await;
    let mut raw = RawClient::handshake(&server.tcp).await;
    let echo = EchoRequest {
        message: "x".into(),
    };
    raw.call_message(5, UNARY_ECHO, &echo).await;
    expect_trailers(raw.end_of(5).await, Code::Ok, "");
    raw.call_message(3, UNARY_ECHO, &echo).await;
    let frames = raw.read_until_closed().await;
    expect_goaway(
        &frames,
        Reason::ProtocolError,
        "not above the highest stream id",
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_and_unknown_method_are_unimplemented_and_the_connection_goes_on() {
    let server = TestServer::start().await;
    let mut raw = RawClient::handshake(&server.tcp).await;
    let echo = EchoRequest {
        message: "x".into(),
    };
    raw.call_message(1, "/no.such.Service/Method", &echo).await;
    expect_trailers(
        raw.end_of(1).await,
        Code::Unimplemented,
        "unknown service no.such.Service",
    );
    raw.call_message(2, "/grpc.examples.echo.Echo/NoSuchMethod", &echo)
        .await;
    expect_trailers(
        raw.end_of(2).await,
        Code::Unimplemented,
        "unknown method NoSuchMethod of service grpc.examples.echo.Echo",
    );
    raw.call_message(3, "not a path", &echo).await;
    expect_trailers(
        raw.end_of(3).await,
        Code::Unimplemented,
        "malformed method path",
    );
    // The same connection still serves a valid call.
    raw.call_message(4, UNARY_ECHO, &echo).await;
    expect_trailers(raw.end_of(4).await, Code::Ok, "");

    // The typed client reports the same status.
    let channel = server.channel(&server.tcp).await;
    let status = sinew::Client::new(channel.clone())
        .unary::<_, EchoRequest>("/grpc.examples.echo.Echo/Nope", sinew::Request::new(echo))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_is_not_valid_protobuf_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut raw = RawClient::handshake(&server.tcp).await;
    // Field 1, wire type 2 (length-delimited), length 100, but only 3 bytes follow.
    raw.call(1, UNARY_ECHO, None, Some(b"\x0a\x64abc")).await;
    expect_trailers(
        raw.end_of(1).await,
        Code::InvalidArgument,
        "not a valid message",
    );
    // Two messages to a unary method.
    raw.send(|out| {
        encode::headers(out, 2, false, None, UNARY_ECHO, &MetadataMap::new());
        encode::data(out, 2, false, b"");
        encode::data(out, 2, true, b"");
    })
    .await;
    expect_trailers(raw.end_of(2).await, Code::InvalidArgument, "got more");
    // No message at all.
    raw.call(3, UNARY_ECHO, None, None).await;
    expect_trailers(raw.end_of(3).await, Code::InvalidArgument, "got none");
    raw.call_message(
        4,
        UNARY_ECHO,
        &EchoRequest {
            message: "ok".into(),
        },
    )
    .await;
    expect_trailers(raw.end_of(4).await, Code::Ok, "");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_already_expired_is_answered_without_running_the_handler() {
    let server = TestServer::start().await;
    let mut raw = RawClient::handshake(&server.tcp).await;
    let sleep = prost::Message::encode_to_vec(&SleepRequest { millis: 1 });
    raw.call(
        1,
        "/sinew.testing.Testing/Sleep",
        Some(Duration::ZERO),
        Some(&sleep),
    )
    .await;
    expect_trailers(
        raw.end_of(1).await,
        Code::DeadlineExceeded,
        "already expired",
    );
    assert_eq!(Counters::get(&server.counters.sleeps_started), 0);

    // A deadline that passes while the handler runs: the server enforces it itself.
    let sleep = prost::Message::encode_to_vec(&SleepRequest { millis: 10_000 });
    raw.call(
        2,
        "/sinew.testing.Testing/Sleep",
        Some(Duration::from_millis(100)),
        Some(&sleep),
    )
    .await;
    expect_trailers(
        raw.end_of(2).await,
        Code::DeadlineExceeded,
        "deadline exceeded",
    );
    eventually(Duration::from_secs(5), "handler cancelled", || {
        Counters::get(&server.counters.sleeps_cancelled) == 1
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_call_cancels_its_handlers() {
    let server = TestServer::start().await;
    let mut raw = RawClient::handshake(&server.tcp).await;
    // A client-streaming call left half-sent, and a long unary call.
    raw.send(|out| {
        encode::headers(
            out,
            1,
            false,
            None,
            "/sinew.testing.Testing/Sink",
            &MetadataMap::new(),
        );
        let chunk = prost::Message::encode_to_vec(&Chunk {
            data: vec![1; 1000],
            index: 0,
        });
        encode::data(out, 1, false, &chunk);
    })
    .await;
    let sleep = prost::Message::encode_to_vec(&SleepRequest { millis: 60_000 });
    raw.call(2, "/sinew.testing.Testing/Sleep", None, Some(&sleep))
        .await;
    eventually(Duration::from_secs(5), "sleep started", || {
        Counters::get(&server.counters.sleeps_started) == 1
    })
    .await;
    drop(raw); // vanish: no RESET, no GOAWAY, just a closed socket
    eventually(Duration::from_secs(5), "handler cancelled", || {
        Counters::get(&server.counters.sleeps_cancelled) == 1
    })
    .await;
    still_serving(&server).await;
    let report = server.shutdown().await;
    assert_eq!(
        report.cancelled_calls, 0,
        "nothing was left to cancel at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_held_by_flow_control() {
    let server = TestServer::start().await;
    let mut raw = RawClient::handshake(&server.tcp).await;
    let chunk_size = 64 * 1024u32;
    let flood = FloodRequest {
        count: 1_000_000,
        size: chunk_size,
    };
    raw.call_message(1, "/sinew.testing.Testing/Flood", &flood)
        .await;
    // Never read. The server may send one stream window (1 MiB) plus whatever the
    // kernel's socket buffers hold, then it must stop.
    let sent = || Counters::get(&server.counters.flood_chunks_sent);
    eventually(Duration::from_secs(5), "flood started", || sent() > 0).await;
    let mut last = sent();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sent();
        if now == last {
            break;
        }
        assert!(
            now < 1_000,
            "server kept producing: {now} chunks for a peer that never reads"
        );
        last = now;
    }
    let bytes = last * chunk_size as u64;
    assert!(
        bytes <= 2 * 1024 * 1024,
        "{bytes} bytes produced; flow control should stop at about one stream window (1 MiB)"
    );
    // The wait for window is counted.
    let stats = server.handle.stats();
    assert!(stats.flow_control_stalls >= 1, "{stats:?}");
    assert!(stats.bytes_sent >= bytes / 2, "{stats:?}");
    // Other connections are unaffected.
    still_serving(&server).await;
    drop(raw);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_beyond_the_flow_control_window_is_a_flow_control_error() {
    let server = TestServer::start().await;
    let mut raw = RawClient::handshake(&server.tcp).await;
    let window = raw.server_settings.unwrap().initial_stream_window as usize;
    let mut metadata = MetadataMap::new();
    metadata.insert("x-pause-millis", "60000").unwrap();
    let chunk = prost::Message::encode_to_vec(&Chunk {
        data: vec![7u8; 64 * 1024],
        index: 0,
    });
    raw.send(|out| {
        encode::headers(
            out,
            1,
            false,
            None,
            "/sinew.testing.Testing/Sink",
            &metadata,
        );
        // One frame more than the window allows (the handler reads one and then
        // pauses, which is not enough to earn a WINDOW_UPDATE).
        for _ in 0..(window / chunk.len() + 2) {
            encode::data(out, 1, false, &chunk);
        }
    })
    .await;
    let frames = raw.read_until_closed().await;
    expect_goaway(&frames, Reason::FlowControlError, "flow-control window");
    still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_above_max_concurrent_streams_are_refused_unprocessed() {
    let server = TestServer::start_with(|b| b.max_concurrent_streams(2)).await;
    let mut raw = RawClient::handshake(&server.tcp).await;
    assert_eq!(raw.server_settings.unwrap().max_concurrent_streams, 2);
    let sleep = prost::Message::encode_to_vec(&SleepRequest { millis: 300 });
    for id in 1..=3 {
        raw.call(id, "/sinew.testing.Testing/Sleep", None, Some(&sleep))
            .await;
    }
    match raw.end_of(3).await {
        Frame::Reset(reset) => {
            assert_eq!(reset.code, Code::Unavailable);
            assert!(reset.message.contains("not processed"), "{reset:?}");
            assert!(reset.refused, "the REFUSED flag is set: {reset:?}");
        }
        other => panic!("expected RESET for stream 3, got {other:?}"),
    }
    expect_trailers(raw.end_of(1).await, Code::Ok, "");
    expect_trailers(raw.end_of(2).await, Code::Ok, "");
    let stats = server.handle.stats();
    assert_eq!(stats.limit_hits(Limit::ConcurrentStreams), 1, "{stats:?}");
    assert_eq!(
        stats.calls_started, 2,
        "the refused call never started: {stats:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_and_misplaced_frames_are_protocol_errors() {
    let server = TestServer::start().await;
    let mut raw = RawClient::handshake(&server.tcp).await;
    raw.send(|out| encode::ping(out, false, *b"sinew!!!")).await;
    match raw.next_frame().await {
        Some(Frame::Ping(ping)) => assert!(ping.ack && &ping.payload == b"sinew!!!"),
        other => panic!("expected PING ACK, got {other:?}"),
    }
    // TRAILERS are the server's to send.
    raw.send(|out| encode::trailers(out, 1, Code::Ok, "", b"", &MetadataMap::new()))
        .await;
    let frames = raw.read_until_closed().await;
    expect_goaway(&frames, Reason::ProtocolError, "sent by a client");

    // DATA on a stream that was never opened.
    let mut raw = RawClient::handshake(&server.tcp).await;
    raw.send(|out| encode::data(out, 7, false, b"x")).await;
    let frames = raw.read_until_closed().await;
    expect_goaway(&frames, Reason::ProtocolError, "never opened");
    still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_connections_get_the_same_errors() {
    let server = TestServer::start().await;
    let Address::Unix(path) = &server.unix else {
        unreachable!()
    };
    let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
    use tokio::io::AsyncReadExt;
    stream.write_all(b"\x00\x00garbage").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("server closes")
        .unwrap();
    let mut buf = bytes::BytesMut::from(&answer[..]);
    sinew_wire::Preface::decode(&mut buf)
        .unwrap()
        .expect("preface");
    let frame = sinew_wire::FrameDecoder::new(1 << 20)
        .decode(&mut buf)
        .unwrap();
    assert!(matches!(frame, Some(Frame::GoAway(g)) if g.reason == Reason::BadPreface));
    still_serving(&server).await;
    server.shutdown().await;
}
