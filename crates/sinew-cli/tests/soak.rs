//! The soak check of the hardening issue: a real `sinew serve` under normal load
//! from two clients (sinew's protocol and gRPC) while a third party runs every
//! attack of `hardening.rs` in turn, for `SINEW_SOAK_SECONDS` (default 60).
//! Every normal call must succeed, and the server's resident memory must stay
//! under [`RSS_BOUND`] throughout.

mod attacks;
mod common;
#[path = "../../../tests/common/raw.rs"]
mod raw;

use common::{usage, Serve};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bound on the server's peak resident memory over the whole soak: the
/// largest attacks hold one connection's memory budget (64 MiB) or two.
const RSS_BOUND: u64 = 512 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_calls_succeed_while_attacks_rotate() {
    let seconds: u64 = std::env::var("SINEW_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let serve = Serve::start_with(&["--request-timeout", "2s", "--frame-timeout", "2s"]);
    let address: sinew::transport::Address = serve.tcp.parse().unwrap();
    let channel = sinew::Channel::connect(&serve.tcp).await.unwrap();
    attacks::put_big_value(channel.clone()).await;
    let grpc = sinew_grpc::connect(&serve.tcp.replace("tcp://", "grpc://"))
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut normal = Vec::new();
    for (name, channel) in [("sinew", channel), ("grpc", grpc)] {
        let (stop, calls) = (stop.clone(), calls.clone());
        normal.push(tokio::spawn(async move {
            let client = EchoClient::new(channel);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let message = format!("{name} {n}");
                let reply = client
                    .unary_echo(EchoRequest {
                        message: message.clone(),
                    })
                    .await
                    .unwrap_or_else(|status| panic!("normal {name} call {n} failed: {status}"));
                assert_eq!(reply.into_inner().message, message);
                n += 1;
                calls.fetch_add(1, Ordering::Relaxed);
                // Steady load, not a saturating one.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        }));
    }

    let started = Instant::now();
    let mut rounds = 0;
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let attack = attacks::ALL[rounds % attacks::ALL.len()];
        attacks::run(attack, &address).await;
        rounds += 1;
        let now = usage(serve.pid());
        peak = peak.max(now.peak_rss);
        assert!(
            now.peak_rss < RSS_BOUND,
            "after {attack}: server peak RSS {} MiB",
            now.peak_rss >> 20
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut per_client = Vec::new();
    for task in normal {
        per_client.push(task.await.expect("every normal call succeeded"));
    }
    let end = usage(serve.pid());
    eprintln!(
        "{rounds} attack rounds in {:?}; normal calls {per_client:?}, all OK; \
         server peak RSS {} MiB, {} MiB at the end, {:?} of CPU",
        started.elapsed(),
        peak >> 20,
        end.rss >> 20,
        end.cpu
    );
    assert!(per_client.iter().all(|&n| n > 0));
}
