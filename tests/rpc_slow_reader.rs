//! A reader slower than its stream: many small messages wait in the stream's
//! inbox (small messages fit many to a window: each costs its bytes plus 64).
//! Taking them out must cost the same per message however many wait, and the
//! connection must stay usable meanwhile.

mod common;

use common::{eventually, TestServer};
use sinew_tests::testing::{testing_client::TestingClient, Counters, FloodRequest, SleepRequest};
use std::time::Duration;

/// 200,000 messages of a few bytes each, which take about 14 MB of window.
const MESSAGES: u64 = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_buffered_messages_drain_in_linear_time() {
    let server = TestServer::start().await;
    for address in [server.tcp.clone(), server.shm.clone()] {
        let channel = sinew::Channel::builder(address.clone())
            .initial_stream_window(32 << 20)
            .initial_connection_window(32 << 20)
            .connect()
            .await
            .unwrap();
        let client = TestingClient::new(channel);
        let before = Counters::get(&server.counters.flood_chunks_sent);
        let mut stream = client
            .flood(FloodRequest {
                count: MESSAGES,
                size: 0,
            })
            .await
            .unwrap()
            .into_inner();
        // Read nothing until the server has handed every message over: they
        // all wait in the client's inbox.
        eventually(
            Duration::from_secs(30),
            "the server sent every message",
            || Counters::get(&server.counters.flood_chunks_sent) - before == MESSAGES,
        )
        .await;
        // Meanwhile the connection carries other calls.
        client.sleep(SleepRequest { millis: 0 }).await.unwrap();
        // Quadratic pops took over a minute here; linear ones take well under a
        // second. (Measured, not raced against a timer: a stream whose items
        // are all ready never yields, so a timer around it could not fire.)
        let started = std::time::Instant::now();
        let mut next = 0;
        while let Some(chunk) = stream.message().await.unwrap() {
            assert_eq!(chunk.index, next, "messages arrive in order");
            next += 1;
        }
        let elapsed = started.elapsed();
        assert_eq!(next, MESSAGES, "over {address}");
        assert!(
            elapsed < Duration::from_secs(30),
            "draining {MESSAGES} buffered messages over {address} took {elapsed:?}"
        );
    }
    server.shutdown().await;
}
