//! The "not processed" marker on a client's `Status`: set when the server's
//! application provably never saw the call, unset when it may have. Retry
//! layers rely on it to resend calls that are not idempotent.
//!
//! A raw server (sinew's frames written by hand over a real TCP socket) makes
//! the server side's choices deterministic: which call it refuses, and how.

#[path = "common/raw.rs"]
mod raw;

use bytes::BytesMut;
use raw::RawServer;
use sinew::{Channel, Code, Request};
use sinew_tests::testing::{testing_client::TestingClient, SleepRequest};
use sinew_wire::{encode, MetadataMap, Reason};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn sleep_call() -> Request<SleepRequest> {
    let mut request = Request::new(SleepRequest { millis: 0 });
    request.set_timeout(Duration::from_secs(10));
    request
}

/// Two calls in flight; the hand server answers the first, then `refuse`s the
/// second. Returns both outcomes' statuses.
async fn two_calls_one_refused(
    refuse: impl FnOnce(u32, u32, &mut BytesMut) + Send + 'static,
) -> (sinew::Status, sinew::Status) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut server = RawServer::accept(&listener).await;
        let ids = server.opened_calls(2).await;
        server.send(|out| refuse(ids[0], ids[1], out)).await;
        // Keep the connection open until the client is done with it.
        let _ = server.socket.read(&mut [0u8; 1024]).await;
    });
    let channel = Channel::connect(&format!("tcp://127.0.0.1:{port}"))
        .await
        .unwrap();
    let client = TestingClient::new(channel);
    let (first, second) = tokio::join!(client.sleep(sleep_call()), client.sleep(sleep_call()));
    server.abort();
    (first.unwrap_err(), second.unwrap_err())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_above_the_goaway_is_not_processed_and_one_the_server_answered_is() {
    let (answered, refused) = two_calls_one_refused(|first, second, out| {
        // The server took the first call (its handler failed with
        // UNAVAILABLE itself) and says it will never look at the second.
        let _ = second;
        encode::goaway(out, first, Reason::NoError, "shutting down");
        encode::trailers(
            out,
            first,
            Code::Unavailable,
            "the handler's own UNAVAILABLE",
            &[],
            &MetadataMap::new(),
        );
    })
    .await;
    assert_eq!(answered.code(), Code::Unavailable, "{answered:?}");
    assert!(
        !answered.is_not_processed(),
        "a status from a handler is never marked: {answered:?}"
    );
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.is_not_processed(),
        "a call above the GOAWAY's last stream was never processed: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reset_is_not_processed_and_a_plain_one_is_unknown() {
    let (plain, refused) = two_calls_one_refused(|first, second, out| {
        encode::reset(out, first, Code::Unavailable, "overloaded", false);
        encode::reset(out, second, Code::Unavailable, "stream limit", true);
    })
    .await;
    assert!(
        !plain.is_not_processed(),
        "a RESET without the REFUSED flag may follow processing: {plain:?}"
    );
    assert!(refused.is_not_processed(), "{refused:?}");
    assert_eq!(refused.message(), "stream limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_be_reached_never_processed_the_call() {
    // A port nothing listens on (bound, then closed).
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let channel = Channel::builder(format!("tcp://127.0.0.1:{port}").parse().unwrap()).lazy();
    let status = TestingClient::new(channel)
        .sleep(sleep_call())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.is_not_processed(), "{status:?}");
}
