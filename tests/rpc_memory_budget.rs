//! The server's per-connection memory budget (`connection_memory`) bounds
//! what a client that does not take its answers makes the server hold
//! (`crates/sinew-cli/tests/hardening.rs` attacks it). A client that does
//! take them, but asks for more at once than the budget holds, must be slowed
//! down at its requests and never see a call fail.

mod common;

use common::TestServer;
use futures_util::stream::{FuturesUnordered, StreamExt};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};

/// 256 echo calls of 1 MiB in flight on one connection: 256 MiB of answers
/// asked for at once, against the default budget (64 MiB), and against one of
/// 16 MiB (two of the server's 8 MiB receive windows: credit then flows only
/// while nothing waits). Every call succeeds with its whole echo, on every
/// transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asks_past_the_budget_is_slowed_not_failed() {
    asks_past_the_budget(TestServer::start().await).await;
    asks_past_the_budget(
        TestServer::start_with(|builder| builder.connection_memory(16 << 20)).await,
    )
    .await;
}

async fn asks_past_the_budget(server: TestServer) {
    const CALLS: usize = 256;
    const SIZE: usize = 1 << 20;
    for address in server.addresses() {
        let client = EchoClient::new(server.channel(&address).await);
        let mut calls: FuturesUnordered<_> = (0..CALLS)
            .map(|i| {
                let client = client.clone();
                // Each call's payload is its own, so a mixed-up answer shows.
                let message = char::from(b'a' + (i % 26) as u8).to_string().repeat(SIZE);
                async move {
                    let answer = client
                        .unary_echo(EchoRequest {
                            message: message.clone(),
                        })
                        .await;
                    (message, answer)
                }
            })
            .collect();
        let mut answered = 0;
        while let Some((message, answer)) = calls.next().await {
            let answer = answer.unwrap_or_else(|status| {
                panic!("a call over {address} failed after {answered} answers: {status}")
            });
            assert!(answer.into_inner().message == message, "over {address}");
            answered += 1;
        }
        assert_eq!(answered, CALLS);
    }
    server.shutdown().await;
}
