//! Shared memory between two real processes: this test process as the client,
//! a `sinew serve` child as the server. Every call kind, and 10,000 calls of
//! random sizes up to 4 MiB whose content is checked by hash.

mod common;

use common::Serve;
use futures_util::StreamExt;
use sinew::{Channel, Request};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

async fn client(serve: &Serve) -> EchoClient {
    assert!(serve.shm.starts_with("shm://"), "{}", serve.shm);
    let address: sinew::transport::Address = serve.shm.parse().unwrap();
    let channel = Channel::builder(address)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect over shared memory");
    EchoClient::new(channel)
}

fn echo(message: impl Into<String>) -> EchoRequest {
    EchoRequest {
        message: message.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_kind_crosses_the_process_boundary_over_shared_memory() {
    let serve = Serve::start();
    let client = client(&serve).await;

    let reply = client.unary_echo(echo("across processes")).await.unwrap();
    assert_eq!(reply.into_inner().message, "across processes");

    let mut request = Request::new(echo("again"));
    request.metadata_mut().insert("x-repeat", "500").unwrap();
    let mut stream = client
        .server_streaming_echo(request)
        .await
        .unwrap()
        .into_inner();
    let mut count = 0;
    while let Some(message) = stream.next().await {
        assert_eq!(message.unwrap().message, "again");
        count += 1;
    }
    assert_eq!(count, 500);

    let words = ["one", "two", "three"].map(echo);
    let joined = client
        .client_streaming_echo(futures_util::stream::iter(words))
        .await
        .unwrap();
    assert_eq!(joined.into_inner().message, "one\ntwo\nthree");

    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let mut replies = client
        .bidirectional_streaming_echo(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    for i in 0..100 {
        // One at a time: each answer arrives before the next question is sent.
        sender.send(echo(format!("ping {i}"))).await.unwrap();
        assert_eq!(
            replies.next().await.unwrap().unwrap().message,
            format!("ping {i}")
        );
    }
    drop(sender);
    assert!(replies.next().await.is_none());
}

/// xorshift64*: reproducible sizes and contents without a dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn hash(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_of_random_sizes_up_to_4_mib_come_back_intact() {
    const CALLS: usize = 10_000;
    const WORKERS: usize = 8;
    // 4 MiB less room for the message's own framing: the largest echo that fits
    // sinew's default 4 MiB frame limit.
    const LARGEST: u64 = 4 * 1024 * 1024 - 16;
    let serve = Serve::start();
    let client = client(&serve).await;
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            let mut random = Random(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1));
            let mut largest_seen = 0;
            for _ in 0..CALLS / WORKERS {
                // Log-uniform sizes from 1 byte to LARGEST: every order of
                // magnitude is exercised, the total stays bounded.
                let exponent = (random.next() % 2200) as f64 / 100.0;
                let size = (2f64.powf(exponent) as u64).clamp(1, LARGEST) as usize;
                let size = if random.next().is_multiple_of(1000) {
                    LARGEST as usize
                } else {
                    size
                };
                let fill = b'a' + (random.next() % 26) as u8;
                let mut message = vec![fill; size];
                // Mark a few positions so shifted or truncated content shows.
                for _ in 0..8 {
                    let at = (random.next() as usize) % size;
                    message[at] = b'A' + (random.next() % 26) as u8;
                }
                let message = String::from_utf8(message).unwrap();
                let sent = hash(&message);
                let reply = client.unary_echo(echo(message)).await.unwrap().into_inner();
                assert_eq!(reply.message.len(), size);
                assert_eq!(hash(&reply.message), sent, "content of a {size}-byte echo");
                largest_seen = largest_seen.max(size);
            }
            largest_seen
        }));
    }
    let mut largest = 0;
    for worker in workers {
        largest = largest.max(worker.await.unwrap());
    }
    assert!(largest > 2 * 1024 * 1024, "sizes reached {largest}");
}
