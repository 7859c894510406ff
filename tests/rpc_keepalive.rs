//! Keepalive on both ends: a peer that stops answering (frozen, partitioned) is
//! found in about `interval + timeout`, and its calls fail with UNAVAILABLE; a
//! live peer answers the pings and its connection stays.
//!
//! The silent peers here are raw ones (sinew's frames by hand over a real TCP
//! socket) that complete the handshake and then read nothing and answer
//! nothing. A real frozen process (SIGSTOP) is in
//! `crates/sinew-cli/tests/keepalive_frozen_server.rs`.

mod common;
#[path = "common/raw.rs"]
mod raw;

use common::TestServer;
use raw::{RawClient, RawServer};
use sinew::{Channel, Code};
use sinew_tests::testing::{testing_client::TestingClient, SleepRequest};
use sinew_wire::{Frame, Settings};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_pings_a_silent_client_then_closes_the_connection() {
    let server = TestServer::start_with(|b| b.keepalive(Some(INTERVAL), TIMEOUT)).await;
    let mut raw = RawClient::handshake_with(&server.tcp, Settings::default()).await;
    // The client says nothing more and answers nothing: the server asks once,
    // then gives up and closes.
    let frames = tokio::time::timeout(Duration::from_secs(10), raw.read_until_closed())
        .await
        .expect("the server closed the silent connection");
    assert!(
        frames
            .iter()
            .any(|frame| matches!(frame, Frame::Ping(ping) if !ping.ack)),
        "the server pinged first: {frames:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_so_an_idle_live_connection_stays_up() {
    let server = TestServer::start_with(|b| b.keepalive(Some(INTERVAL), TIMEOUT)).await;
    let channel = Channel::builder(server.tcp.clone())
        .keepalive(Some(INTERVAL), TIMEOUT)
        .connect()
        .await
        .unwrap();
    let client = TestingClient::new(channel);
    client.sleep(SleepRequest { millis: 0 }).await.unwrap();
    // Idle for many intervals: both sides ping, both answer.
    tokio::time::sleep(INTERVAL * 12).await;
    // A call that lasts several intervals too: its stream is silent while the
    // handler sleeps, but the connection is not.
    client.sleep(SleepRequest { millis: 800 }).await.unwrap();
    assert_eq!(tower::load::Load::load(client.service()), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_finds_a_server_that_stopped_answering() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // A server that completes the handshake, takes one call, then goes silent
    // (it keeps the socket open and reads nothing).
    let silent = tokio::spawn(async move {
        let mut server = RawServer::accept(&listener).await;
        server.opened_calls(1).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(server);
    });
    let channel = Channel::builder(format!("tcp://127.0.0.1:{port}").parse().unwrap())
        .keepalive(Some(INTERVAL), TIMEOUT)
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        TestingClient::new(channel).sleep(SleepRequest { millis: 0 }),
    )
    .await
    .expect("keepalive ended the call")
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("keepalive"), "{status}");
    eprintln!("{status} after {:?}", started.elapsed());
    silent.abort();
}
