//! Scatter/gather against real servers: a request reaches every endpoint
//! of a service, or a random sample, or every endpoint until a quorum has
//! answered; an endpoint that is down or too slow is a failure of its own
//! shard, reported, and never holds the others up.

mod common;

use common::{unused_tcp_port, TestServer};
use sinew::cluster::resolve::Fixed;
use sinew::cluster::scatter::{Gather, Scatter, Targets};
use sinew::transport::Address;
use sinew::Code;
use sinew_tests::testing::{SleepRequest, SleepResponse};
use std::time::{Duration, Instant};

const SLEEP: &str = "/sinew.testing.Testing/Sleep";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_and_a_dead_one_is_reported_not_waited_for() {
    let servers = [
        TestServer::start().await,
        TestServer::start().await,
        TestServer::start().await,
    ];
    let dead: Address = format!("tcp://127.0.0.1:{}", unused_tcp_port())
        .parse()
        .unwrap();
    let mut addresses: Vec<Address> = servers.iter().map(|server| server.tcp.clone()).collect();
    addresses.push(dead.clone());
    let scatter = Scatter::new(Fixed::new(addresses), "sinew.testing.Testing");

    let gather = Gather::default().shard_timeout(Duration::from_secs(2));
    let gathered = scatter
        .unary::<_, SleepResponse>(SLEEP, SleepRequest { millis: 0 }, &gather)
        .await
        .unwrap();
    assert_eq!(gathered.shards.len(), 4);
    assert_eq!(gathered.successes().count(), 3);
    let failures: Vec<_> = gathered.failures().collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0.address(), &dead);
    assert_eq!(failures[0].1.code(), Code::Unavailable, "{}", failures[0].1);
    assert!(!gathered.is_complete());
    // Each shard carried its own deadline to its server.
    for (_, response) in gathered.successes() {
        assert!(response.timeout_millis > 0 && response.timeout_millis <= 2000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_shards_miss_their_deadline_and_the_rest_come_back_in_time() {
    let servers = [TestServer::start().await, TestServer::start().await];
    let scatter = Scatter::new(
        Fixed::new(servers.iter().map(|server| server.tcp.clone())),
        "sinew.testing.Testing",
    );
    let gather = Gather::default().shard_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let gathered = scatter
        .unary::<_, SleepResponse>(SLEEP, SleepRequest { millis: 5_000 }, &gather)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the shard timeout"
    );
    assert_eq!(gathered.failures().count(), 2);
    for (_, status) in gathered.failures() {
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_or_a_quorum_is_enough() {
    let servers = [
        TestServer::start().await,
        TestServer::start().await,
        TestServer::start().await,
    ];
    let scatter = Scatter::new(
        Fixed::new(servers.iter().map(|server| server.tcp.clone())),
        "sinew.testing.Testing",
    );
    let sample = scatter
        .unary::<_, SleepResponse>(
            SLEEP,
            SleepRequest { millis: 0 },
            &Gather::default().targets(Targets::Random(2)),
        )
        .await
        .unwrap();
    assert_eq!(sample.shards.len(), 2);
    assert!(sample.is_complete());

    let quorum = scatter
        .unary::<_, SleepResponse>(
            SLEEP,
            SleepRequest { millis: 0 },
            &Gather::default().targets(Targets::Quorum(2)),
        )
        .await
        .unwrap();
    assert_eq!(quorum.shards.len(), 3);
    assert!(quorum.successes().count() >= 2);
    for (_, status) in quorum.failures() {
        assert_eq!(status.code(), Code::Cancelled, "{status}");
    }

    // No endpoint at all: an error, at once.
    let nobody = Scatter::new(Fixed::new(Vec::<Address>::new()), "sinew.testing.Testing");
    let error = nobody
        .unary::<_, SleepResponse>(SLEEP, SleepRequest { millis: 0 }, &Gather::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error}");
}
