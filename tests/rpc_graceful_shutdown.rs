//! Graceful shutdown: calls in flight finish, new calls are refused, nothing is
//! dropped silently, and the drain deadline ends stragglers with a status.

mod common;

#[path = "common/raw.rs"]
mod raw;

use common::{eventually, TestServer};
use sinew::{Code, Request};
use sinew_tests::testing::{testing_client::TestingClient, Counters, SleepRequest};
use sinew_wire::{Frame, Reason};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_finish_during_a_graceful_shutdown() {
    let server = TestServer::start().await;
    let mut calls = Vec::new();
    let transports = server.addresses().len() as u64;
    for address in server.addresses() {
        let client = TestingClient::new(server.channel(&address).await);
        for _ in 0..5 {
            let client = client.clone();
            calls.push(tokio::spawn(async move {
                client.sleep(SleepRequest { millis: 400 }).await
            }));
        }
    }
    eventually(Duration::from_secs(5), "all calls started", || {
        Counters::get(&server.counters.sleeps_started) == 5 * transports
    })
    .await;
    let unix_path = match &server.unix {
        sinew::transport::Address::Unix(path) => path.clone(),
        _ => unreachable!(),
    };
    let tcp = server.tcp.clone();
    let report = server.shutdown().await;
    for call in calls {
        call.await
            .unwrap()
            .expect("call accepted before shutdown completes normally");
    }
    assert_eq!(report.drained_calls, 5 * transports, "{report:?}");
    assert_eq!(report.cancelled_calls, 0, "{report:?}");
    assert_eq!(report.connections, transports, "{report:?}");
    assert!(!unix_path.exists(), "the Unix socket file is removed");
    let refused = sinew::Channel::connect(&tcp.to_string()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_ends_stragglers_with_unavailable() {
    let server = TestServer::start_with(|b| b.drain_timeout(Duration::from_millis(200))).await;
    let client = TestingClient::new(server.channel(&server.tcp).await);
    let fast = client.clone();
    let straggler =
        tokio::spawn(async move { client.sleep(SleepRequest { millis: 60_000 }).await });
    let quick = tokio::spawn(async move { fast.sleep(SleepRequest { millis: 50 }).await });
    eventually(Duration::from_secs(5), "both started", || {
        Counters::get(&server.counters.sleeps_started) == 2
    })
    .await;
    let report = server.shutdown().await;
    quick.await.unwrap().expect("the quick call drains");
    let status = straggler.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("shutting down"), "{status}");
    assert!(
        !status.is_not_processed(),
        "the handler saw the straggler: {status:?}"
    );
    assert_eq!(report.drained_calls, 1, "{report:?}");
    assert_eq!(report.cancelled_calls, 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_tells_the_client_and_later_streams_are_refused_unprocessed() {
    let server = TestServer::start().await;
    let mut raw = raw::RawClient::handshake(&server.tcp).await;
    let long = prost::Message::encode_to_vec(&SleepRequest { millis: 500 });
    raw.call(1, "/sinew.testing.Testing/Sleep", None, Some(&long))
        .await;
    eventually(Duration::from_secs(5), "sleep started", || {
        Counters::get(&server.counters.sleeps_started) == 1
    })
    .await;
    server.handle.shutdown();
    match raw.next_significant_frame().await {
        Some(Frame::GoAway(goaway)) => {
            assert_eq!(goaway.reason, Reason::NoError);
            assert_eq!(goaway.last_stream_id, 1);
        }
        other => panic!("expected GOAWAY, got {other:?}"),
    }
    // A call the client sent after the GOAWAY (it crossed on the wire).
    raw.call(3, "/sinew.testing.Testing/Sleep", None, Some(&long))
        .await;
    match raw.end_of(3).await {
        Frame::Reset(reset) => {
            assert_eq!(reset.code, Code::Unavailable);
            assert!(reset.message.contains("not processed"));
            assert!(reset.refused, "the REFUSED flag is set: {reset:?}");
        }
        other => panic!("expected RESET, got {other:?}"),
    }
    match raw.end_of(1).await {
        Frame::Trailers(trailers) => assert_eq!(trailers.code, Code::Ok),
        other => panic!("expected TRAILERS OK for the accepted call, got {other:?}"),
    }
    // Then the server closes the connection.
    assert!(raw
        .read_until_closed()
        .await
        .iter()
        .all(|f| !matches!(f, Frame::Data(_))));
    let report = tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.drained_calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_reconnects_after_the_server_comes_back() {
    let server = TestServer::start().await;
    let address = server.tcp.clone();
    let channel = sinew::Channel::builder(address.clone())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    let client = TestingClient::new(channel);
    client.sleep(SleepRequest { millis: 0 }).await.unwrap();
    server.shutdown().await;
    let down = client
        .sleep(Request::new(SleepRequest { millis: 0 }))
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down}");

    // A new server on the same port: the channel finds it after its backoff.
    let sinew::transport::Address::Tcp { port, .. } = address else {
        unreachable!()
    };
    let revived = sinew::Server::builder()
        .add_service(sinew_tests::testing::testing_server::TestingServer::new(
            sinew_tests::testing::TestingService::default(),
        ))
        .bind([format!("tcp://127.0.0.1:{port}")])
        .await
        .unwrap();
    let handle = revived.handle();
    let task = tokio::spawn(revived.serve());
    let mut recovered = false;
    for _ in 0..100 {
        if client.sleep(SleepRequest { millis: 0 }).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recovered, "channel reconnected to the new server");
    handle.shutdown();
    task.await.unwrap();
}
