//! Every call kind, over TCP, Unix sockets and shared memory, against a real server.

mod common;

use common::TestServer;
use futures_util::StreamExt;
use sinew::{Code, Request};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use sinew_examples::kv::{key_value_client::KeyValueClient, GetRequest, PutRequest};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_over_every_transport() {
    let server = TestServer::start().await;
    for address in server.addresses() {
        let client = EchoClient::new(server.channel(&address).await);
        let response = client.unary_echo(request("hello")).await.unwrap();
        assert_eq!(response.into_inner().message, "hello", "over {address}");
        // Empty message (all defaults) is a valid zero-length protobuf payload.
        let response = client.unary_echo(request("")).await.unwrap();
        assert_eq!(response.into_inner().message, "");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_over_every_transport() {
    let server = TestServer::start().await;
    for address in server.addresses() {
        let client = EchoClient::new(server.channel(&address).await);
        let mut call = Request::new(request("tick"));
        call.metadata_mut().insert("x-repeat", "250").unwrap();
        let response = client.server_streaming_echo(call).await.unwrap();
        let mut stream = response.into_inner();
        let mut count = 0;
        while let Some(message) = stream.message().await.unwrap() {
            assert_eq!(message.message, "tick");
            count += 1;
        }
        assert_eq!(count, 250, "over {address}");
        assert!(stream.trailers().is_some(), "OK trailers were received");

        // A stream of zero messages still ends cleanly.
        let mut call = Request::new(request("none"));
        call.metadata_mut().insert("x-repeat", "0").unwrap();
        let stream = client
            .server_streaming_echo(call)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stream.count().await, 0);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_over_every_transport() {
    let server = TestServer::start().await;
    for address in server.addresses() {
        let client = EchoClient::new(server.channel(&address).await);
        let messages: Vec<_> = (0..100).map(|i| request(&format!("m{i}"))).collect();
        let response = client
            .client_streaming_echo(futures_util::stream::iter(messages))
            .await
            .unwrap();
        let expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
        assert_eq!(
            response.into_inner().message,
            expected.join("\n"),
            "over {address}"
        );

        let response = client
            .client_streaming_echo(futures_util::stream::iter(Vec::<EchoRequest>::new()))
            .await
            .unwrap();
        assert_eq!(response.into_inner().message, "");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_over_every_transport_is_interactive() {
    let server = TestServer::start().await;
    for address in server.addresses() {
        let client = EchoClient::new(server.channel(&address).await);
        // Send one message at a time and wait for its echo before sending the
        // next: proves responses flow while the request stream is still open.
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let requests = tokio_stream::wrappers::ReceiverStream::new(receiver);
        let mut responses = client
            .bidirectional_streaming_echo(requests)
            .await
            .unwrap()
            .into_inner();
        for i in 0..50 {
            sender.send(request(&format!("ping {i}"))).await.unwrap();
            let echoed = responses.message().await.unwrap().expect("an echo");
            assert_eq!(echoed.message, format!("ping {i}"), "over {address}");
        }
        drop(sender); // half-close
        assert!(responses.message().await.unwrap().is_none());
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_share_one_connection_and_complete_out_of_order() {
    use sinew_tests::testing::Counters;
    let server = TestServer::start().await;
    let channel = server.channel(&server.tcp).await;
    let client = sinew_tests::testing::testing_client::TestingClient::new(channel.clone());
    // Slow calls first (30 s each), fast ones after: the fast ones must all
    // complete while every slow one is still running on the same connection.
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .sleep(sinew_tests::testing::SleepRequest { millis: 30_000 })
                    .await
            })
        })
        .collect();
    common::eventually(
        std::time::Duration::from_secs(10),
        "slow calls started",
        || Counters::get(&server.counters.sleeps_started) == 20,
    )
    .await;
    let echo = EchoClient::new(channel);
    let fast: Vec<_> = (0..500)
        .map(|i| {
            let echo = echo.clone();
            tokio::spawn(async move { echo.unary_echo(request(&i.to_string())).await })
        })
        .collect();
    for (i, call) in fast.into_iter().enumerate() {
        assert_eq!(
            call.await.unwrap().unwrap().into_inner().message,
            i.to_string()
        );
    }
    assert_eq!(
        Counters::get(&server.counters.sleeps_finished),
        0,
        "the fast calls did not wait behind the slow ones"
    );
    for call in &slow {
        call.abort();
    }
    common::eventually(
        std::time::Duration::from_secs(10),
        "slow calls cancelled",
        || Counters::get(&server.counters.sleeps_cancelled) == 20,
    )
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_store_reports_errors_with_codes() {
    let server = TestServer::start().await;
    let kv = KeyValueClient::new(server.channel(&server.unix).await);
    let missing = kv.get(GetRequest { key: "a".into() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("\"a\""), "{missing}");

    let put = kv
        .put(PutRequest {
            key: "a".into(),
            value: b"1".to_vec(),
            expected_version: Some(0),
        })
        .await
        .unwrap()
        .into_inner();
    let conflict = kv
        .put(PutRequest {
            key: "a".into(),
            value: b"2".to_vec(),
            expected_version: Some(0),
        })
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::FailedPrecondition);
    let got = kv
        .get(GetRequest { key: "a".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.value, got.version), (b"1".to_vec(), put.version));

    let empty_key = kv.get(GetRequest { key: String::new() }).await.unwrap_err();
    assert_eq!(empty_key.code(), Code::InvalidArgument);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_spreads_calls_over_its_pool_of_connections() {
    // The connections calls arrive on, told apart by the client's port.
    let peers: Arc<Mutex<HashSet<String>>> = Arc::default();
    let seen = peers.clone();
    let server = TestServer::start_with(move |builder| {
        builder.interceptor(move |call| {
            if let Some(address) = call.peer().and_then(|peer| peer.address()) {
                seen.lock().unwrap().insert(address.to_string());
            }
            Ok(())
        })
    })
    .await;
    let channel = sinew::Channel::builder(server.tcp.clone())
        .connections(3)
        .connect()
        .await
        .unwrap();
    let client = EchoClient::new(channel);
    // The other two slots connect in the background once calls ask for
    // them; until they are up, calls go to the first. Batches of 60
    // concurrent calls until all three carry calls (10 s at most).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while peers.lock().unwrap().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections used: {:?}",
            peers.lock().unwrap()
        );
        let calls: Vec<_> = (0..60)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { client.unary_echo(request(&i.to_string())).await })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(
                call.await.unwrap().unwrap().into_inner().message,
                i.to_string()
            );
        }
    }
    let report = server.shutdown().await;
    assert_eq!(
        report.connections, 3,
        "one connection per pool slot: {report:?}"
    );
}

/// A channel to the server's `shm://` address with these shared-memory options.
async fn shm_channel(server: &TestServer, options: sinew::transport::ShmOptions) -> sinew::Channel {
    sinew::Channel::builder(server.shm.clone())
        .shm_options(options)
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smallest_shared_memory_rings_still_carry_large_messages() {
    let server = TestServer::start().await;
    let options = sinew::transport::ShmOptions {
        ring_capacity: 4096,
        slab_count: 0,
        ..Default::default()
    };
    let channel = shm_channel(&server, options).await;
    // The connecting side's ring size applies: two pages of control blocks and
    // two 4 KiB rings, no slabs, mapped twice (client and server are one
    // process here).
    let region_mappings = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.contains("memfd:sinew-shm"))
        .filter(|line| {
            let (range, _) = line.split_once(' ').unwrap();
            let (start, end) = range.split_once('-').unwrap();
            let size =
                u64::from_str_radix(end, 16).unwrap() - u64::from_str_radix(start, 16).unwrap();
            size == 4 * 4096
        })
        .count();
    assert_eq!(region_mappings, 2);
    // A message 256 times the ring passes in pieces, both ways, whole.
    let client = EchoClient::new(channel);
    let big: String = (0..1 << 20)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let reply = client.unary_echo(request(&big)).await.unwrap();
    assert!(reply.into_inner().message == big);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_go_through_slabs_and_through_the_ring_when_slabs_run_out() {
    let server = TestServer::start().await;
    // Four 64 KiB slabs each way: a 40 KiB message takes one, a 300 KiB one
    // more than there are, so it always goes through the ring; sixteen calls at
    // once exhaust the slabs and the rest fall back to the ring.
    let options = sinew::transport::ShmOptions {
        slab_size: 64 * 1024,
        slab_count: 4,
        ..Default::default()
    };
    let channel = shm_channel(&server, options).await;
    let client = EchoClient::new(channel);
    let mut calls = Vec::new();
    for round in 0..4 {
        for (i, size) in [40 << 10, 64 << 10, 100 << 10, 300 << 10]
            .into_iter()
            .enumerate()
        {
            let client = client.clone();
            let message: String = (0..size)
                .map(|at: usize| (b'a' + ((at * 7 + i + round) % 26) as u8) as char)
                .collect();
            calls.push(tokio::spawn(async move {
                let reply = client.unary_echo(request(&message)).await.unwrap();
                assert!(reply.into_inner().message == message, "{size}-byte echo");
            }));
        }
    }
    for call in calls {
        call.await.unwrap();
    }
    // A streamed answer of 40 messages just over the threshold: ten times the
    // slabs, so the stream keeps taking back the slabs the client copied out.
    let mut call = Request::new(request(&"s".repeat(33 << 10)));
    call.metadata_mut().insert("x-repeat", "40").unwrap();
    let mut stream = client
        .server_streaming_echo(call)
        .await
        .unwrap()
        .into_inner();
    let mut count = 0;
    while let Some(message) = stream.message().await.unwrap() {
        assert!(message.message == "s".repeat(33 << 10));
        count += 1;
    }
    assert_eq!(count, 40);
    server.shutdown().await;
}
