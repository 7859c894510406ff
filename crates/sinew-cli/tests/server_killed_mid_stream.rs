//! A server killed with SIGKILL while a slow client still has a stream's worth
//! of small messages buffered: the client reads what had arrived, then the
//! stream ends with UNAVAILABLE at once (it used to take over a minute of
//! spinning, draining the inbox from the front of a vector).

mod common;

use common::Serve;
use futures_util::StreamExt;
use sinew::{Channel, Code, Request};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_from_a_killed_server_ends_with_unavailable_within_a_second() {
    let serve = Serve::start();
    let address: sinew::transport::Address = serve.tcp.parse().unwrap();
    // An 8 MiB window holds ~125,000 three-byte messages (each costs its
    // bytes plus 64 in flow control): plenty to show a quadratic drain (tens
    // of seconds), little to read in a debug build.
    let channel = Channel::builder(address)
        .initial_stream_window(8 * 1024 * 1024)
        .initial_connection_window(16 * 1024 * 1024)
        .connect()
        .await
        .unwrap();
    let client = EchoClient::new(channel);
    let mut request = Request::new(EchoRequest {
        message: "a".into(),
    });
    request
        .metadata_mut()
        .insert("x-repeat", "1000000")
        .unwrap();
    let mut stream = client
        .server_streaming_echo(request)
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
    // A slow reader: the server fills the stream's flow-control window with
    // three-byte messages while we wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    let mut buffered = 0u64;
    // (Measured rather than raced against a timer: a stream whose items are
    // all ready never yields, so a timer around it could not fire.)
    let status = loop {
        match stream.next().await {
            Some(Ok(_)) => buffered += 1,
            Some(Err(status)) => break status,
            None => panic!("the stream ended as if the server had finished"),
        }
    };
    let elapsed = killed.elapsed();
    eprintln!("{buffered} buffered messages, then {status}, {elapsed:?} after the kill");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(
        buffered > 10_000,
        "the window held many messages ({buffered}), so the drain was tested"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "the loss was reported {elapsed:?} after the kill"
    );
}
