//! The balanced channel against real servers: calls spread over every
//! endpoint, a server that shuts down mid-load costs no call, an endpoint
//! that comes up later gets calls, endpoints that leave the set get none,
//! and the errors when nothing can take a call name what went wrong.

mod common;

use common::{eventually, unused_tcp_port, TestServer};
use sinew::cluster::balance::Health;
use sinew::cluster::balance::OutlierDetection;
use sinew::cluster::resolve::{Fixed, Updates};
use sinew::cluster::{Balanced, Endpoint, Policy, Resolve, Update};
use sinew::transport::Address;
use sinew::{Code, Status};
use sinew_tests::testing::{testing_client::TestingClient, Counters, SleepRequest};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Calls the server finished.
fn served(server: &TestServer) -> u64 {
    Counters::get(&server.counters.sleeps_finished)
}

/// Whether the channel has `count` endpoints, all ready.
fn all_ready(channel: &Balanced, count: usize) -> bool {
    let report = channel.endpoints();
    report.len() == count && report.iter().all(|r| r.health == Health::Ready)
}

/// Waits (up to 5 s) until the channel has `count` endpoints, all ready.
async fn until_all_ready(channel: &Balanced, count: usize) {
    tokio::time::timeout(Duration::from_secs(5), channel.until_ready(count))
        .await
        .expect("every endpoint ready within 5 s");
    assert!(all_ready(channel, count), "{:#?}", channel.endpoints());
}

async fn three_servers() -> [TestServer; 3] {
    [
        TestServer::start().await,
        TestServer::start().await,
        TestServer::start().await,
    ]
}

fn fixed(servers: &[&TestServer]) -> Fixed {
    Fixed::new(servers.iter().map(|server| server.tcp.clone()))
}

async fn call(client: &TestingClient<Balanced>) -> Result<(), Status> {
    client.sleep(SleepRequest { millis: 0 }).await.map(drop)
}

/// A resolver whose updates the test sends.
struct Pushed(Mutex<Option<mpsc::UnboundedReceiver<Result<Update, Status>>>>);

impl Pushed {
    fn new() -> (Pushed, mpsc::UnboundedSender<Result<Update, Status>>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Pushed(Mutex::new(Some(receiver))), sender)
    }
}

impl Resolve for Pushed {
    fn resolve(&self, _service: &str) -> Updates {
        let receiver = self.0.lock().unwrap().take().expect("resolved once");
        Box::pin(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_every_endpoint() {
    let servers = three_servers().await;
    let refs: Vec<&TestServer> = servers.iter().collect();

    // Round robin: exactly a third each once every endpoint is ready.
    let channel = Balanced::builder(fixed(&refs), "sinew.testing.Testing")
        .policy(Policy::round_robin())
        .build();
    until_all_ready(&channel, 3).await;
    let client = TestingClient::new(channel.clone());
    for _ in 0..300 {
        call(&client).await.unwrap();
    }
    let counts: Vec<u64> = servers.iter().map(served).collect();
    assert_eq!(counts, [100, 100, 100]);

    // Peak EWMA, 64 calls at a time: every endpoint takes a real share.
    let channel = Balanced::builder(fixed(&refs), "sinew.testing.Testing").build();
    let client = TestingClient::new(channel);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    call(&client).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let shares: Vec<u64> = servers.iter().map(|s| served(s) - 100).collect();
    assert_eq!(shares.iter().sum::<u64>(), 3200);
    assert!(shares.iter().all(|&share| share >= 200), "{shares:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shutting_down_mid_load_costs_no_call() {
    let servers = three_servers().await;
    let refs: Vec<&TestServer> = servers.iter().collect();
    let channel = Balanced::builder(fixed(&refs), "sinew.testing.Testing").build();
    let client = TestingClient::new(channel.clone());
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for _ in 0..400 {
                    if let Err(status) = call(&client).await {
                        failed.push(status);
                    }
                }
                failed
            })
        })
        .collect();
    // Once calls flow everywhere, the first server drains and stops: its
    // GOAWAY turns calls it will not take into not-processed failures, which
    // the balancer sends elsewhere; the endpoint leaves the ready set.
    eventually(Duration::from_secs(10), "calls on every server", || {
        servers.iter().all(|server| served(server) > 20)
    })
    .await;
    let [first, second, third] = servers;
    let stopped = first.tcp.clone();
    first.shutdown().await;
    let mut failed = Vec::new();
    for task in tasks {
        failed.extend(task.await.unwrap());
    }
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    let report = channel.endpoints();
    let gone = report
        .iter()
        .find(|report| report.endpoint.address() == &stopped)
        .unwrap();
    assert_ne!(gone.health, Health::Ready);
    // The others answer everything from now on.
    let before = served(&second) + served(&third);
    for _ in 0..100 {
        call(&client).await.unwrap();
    }
    assert_eq!(served(&second) + served(&third), before + 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_comes_up_later_gets_calls() {
    let up = TestServer::start().await;
    let port = unused_tcp_port();
    let later: Address = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let resolver = Fixed::new([up.tcp.clone(), later.clone()]);
    let channel = Balanced::builder(resolver, "sinew.testing.Testing")
        .policy(Policy::round_robin())
        .build();
    let client = TestingClient::new(channel.clone());
    // The endpoint that is down is never picked: no call fails.
    for _ in 0..50 {
        call(&client).await.unwrap();
    }
    assert_eq!(served(&up), 50);
    let report = channel.endpoints();
    let down = report
        .iter()
        .find(|r| r.endpoint.address() == &later)
        .unwrap();
    assert_ne!(down.health, Health::Ready);
    // Waiting for readiness: one endpoint is, two are not.
    tokio::time::timeout(Duration::from_secs(1), channel.until_ready(1))
        .await
        .unwrap();
    let two = tokio::time::timeout(Duration::from_millis(200), channel.until_ready(2)).await;
    assert!(two.is_err(), "the endpoint that is down is not ready");

    let late = TestServer::start_on_tcp_port(port, |builder| builder).await;
    // Woken when the endpoint connects (its backoff is what takes time).
    tokio::time::timeout(Duration::from_secs(15), channel.until_ready(2))
        .await
        .expect("the new endpoint ready within 15 s");
    assert!(all_ready(&channel, 2));
    for _ in 0..50 {
        call(&client).await.unwrap();
    }
    assert_eq!(served(&late), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_the_resolver() {
    let servers = [TestServer::start().await, TestServer::start().await];
    let (resolver, updates) = Pushed::new();
    let channel = Balanced::builder(resolver, "sinew.testing.Testing")
        .policy(Policy::round_robin())
        .build();
    let client = TestingClient::new(channel.clone());

    updates
        .send(Ok(Update::Reset(vec![Endpoint::new(
            servers[0].tcp.clone(),
        )])))
        .unwrap();
    for _ in 0..10 {
        call(&client).await.unwrap();
    }
    assert_eq!(served(&servers[0]), 10);

    updates
        .send(Ok(Update::Add(vec![Endpoint::new(servers[1].tcp.clone())])))
        .unwrap();
    eventually(Duration::from_secs(5), "both endpoints ready", || {
        all_ready(&channel, 2)
    })
    .await;
    for _ in 0..10 {
        call(&client).await.unwrap();
    }
    assert_eq!((served(&servers[0]), served(&servers[1])), (15, 5));

    // A resolver error keeps the set: calls go on.
    updates
        .send(Err(Status::unavailable("registry unreachable")))
        .unwrap();
    updates
        .send(Ok(Update::Remove(vec![servers[0].tcp.clone()])))
        .unwrap();
    eventually(Duration::from_secs(5), "one endpoint left", || {
        channel.endpoints().len() == 1
    })
    .await;
    for _ in 0..10 {
        call(&client).await.unwrap();
    }
    assert_eq!((served(&servers[0]), served(&servers[1])), (15, 15));

    // An empty set, then the resolver's error: calls fail with it.
    updates.send(Ok(Update::Reset(Vec::new()))).unwrap();
    eventually(Duration::from_secs(5), "no endpoint left", || {
        channel.endpoints().is_empty()
    })
    .await;
    let status = call(&client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("has no endpoints"), "{status}");
    updates
        .send(Err(Status::not_found(
            "no service sinew.testing.Testing; known: a.A, b.B",
        )))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = call(&client).await.unwrap_err();
        if status.message().contains("known: a.A, b.B") {
            assert_eq!(status.code(), Code::Unavailable);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "last: {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_down_fails_fast_naming_each() {
    let ports = [unused_tcp_port(), unused_tcp_port()];
    let resolver = Fixed::parse(
        ports
            .map(|port| format!("tcp://127.0.0.1:{port}"))
            .iter()
            .map(String::as_str),
    )
    .unwrap();
    let channel = Balanced::builder(resolver, "sinew.testing.Testing").build();
    let client = TestingClient::new(channel.clone());
    // Until each endpoint has failed a connect, calls wait; then they fail.
    eventually(Duration::from_secs(5), "every endpoint failed", || {
        let report = channel.endpoints();
        report.len() == 2 && report.iter().all(|r| r.health == Health::Failed)
    })
    .await;
    let status = tokio::time::timeout(Duration::from_secs(5), call(&client))
        .await
        .expect("fails fast")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.is_not_processed());
    for port in ports {
        assert!(
            status.message().contains(&format!("127.0.0.1:{port}")),
            "{status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_calls_keep_failing_is_ejected_then_taken_back() {
    let good = [TestServer::start().await, TestServer::start().await];
    // Connected and healthy to the balancer's eye, but every call fails.
    let bad = TestServer::start_with(|builder| {
        builder.interceptor(|_call| Err(Status::unavailable("broken replica")))
    })
    .await;
    let resolver = Fixed::new([good[0].tcp.clone(), good[1].tcp.clone(), bad.tcp.clone()]);
    let channel = Balanced::builder(resolver, "sinew.testing.Testing")
        .policy(Policy::round_robin())
        .outlier_detection(
            OutlierDetection::new()
                .consecutive_failures(3)
                .ejection_time(Duration::from_secs(1), Duration::from_secs(2)),
        )
        .build();
    until_all_ready(&channel, 3).await;
    let client = TestingClient::new(channel.clone());
    let ejected = |channel: &Balanced| {
        channel
            .endpoints()
            .iter()
            .find(|report| report.endpoint.address() == &bad.tcp)
            .unwrap()
            .ejected
    };

    // Every third call reaches the broken replica until its third failure.
    let mut failed = 0;
    for _ in 0..30 {
        if let Err(status) = call(&client).await {
            assert_eq!(status.message(), "broken replica");
            failed += 1;
        }
    }
    assert_eq!(failed, 3);
    assert!(ejected(&channel));
    assert_eq!(served(&good[0]) + served(&good[1]), 27);

    // Its time is up: back in on probation, and out again at its first
    // failed probe (not after three more).
    eventually(Duration::from_secs(5), "the endpoint back in", || {
        !ejected(&channel)
    })
    .await;
    let mut failed = 0;
    for _ in 0..30 {
        if call(&client).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 1);
    assert!(ejected(&channel));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_back_from_an_ejection_is_in_full_after_its_probes_succeed() {
    let good = TestServer::start().await;
    // Fails calls while `broken` says so.
    let broken = Arc::new(AtomicBool::new(true));
    let failing = broken.clone();
    let flaky = TestServer::start_with(move |builder| {
        builder.interceptor(move |_call| {
            if failing.load(Ordering::Relaxed) {
                Err(Status::unavailable("broken replica"))
            } else {
                Ok(())
            }
        })
    })
    .await;
    let resolver = Fixed::new([good.tcp.clone(), flaky.tcp.clone()]);
    let channel = Balanced::builder(resolver, "sinew.testing.Testing")
        .policy(Policy::round_robin())
        .outlier_detection(
            OutlierDetection::new()
                .consecutive_failures(2)
                .ejection_time(Duration::from_millis(300), Duration::from_secs(2))
                .max_ejected_share(0.5)
                .probes(3),
        )
        .build();
    until_all_ready(&channel, 2).await;
    let client = TestingClient::new(channel.clone());
    let report = |channel: &Balanced| {
        channel
            .endpoints()
            .into_iter()
            .find(|report| report.endpoint.address() == &flaky.tcp)
            .unwrap()
    };
    for _ in 0..4 {
        let _ = call(&client).await;
    }
    assert!(report(&channel).ejected);
    // Mended while out: back on probation, three successes in a row end it.
    broken.store(false, Ordering::Relaxed);
    eventually(Duration::from_secs(5), "the endpoint back in", || {
        !report(&channel).ejected
    })
    .await;
    assert!(report(&channel).on_probation);
    for _ in 0..20 {
        call(&client).await.unwrap();
    }
    assert!(!report(&channel).on_probation);
    assert!(!report(&channel).ejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_not_serving_by_its_health_service_gets_no_calls() {
    let servers = three_servers().await;
    let refs: Vec<&TestServer> = servers.iter().collect();
    let channel = Balanced::builder(fixed(&refs), "sinew.testing.Testing")
        .policy(Policy::round_robin())
        .build();
    until_all_ready(&channel, 3).await;
    let client = TestingClient::new(channel.clone());
    let serving = |channel: &Balanced, server: &TestServer| {
        channel
            .endpoints()
            .iter()
            .find(|report| report.endpoint.address() == &server.tcp)
            .unwrap()
            .serving
    };

    servers[2].health.set_not_serving("sinew.testing.Testing");
    eventually(Duration::from_secs(5), "the health watch told", || {
        !serving(&channel, &servers[2])
    })
    .await;
    for _ in 0..30 {
        call(&client).await.unwrap();
    }
    assert_eq!(servers.iter().map(served).collect::<Vec<_>>(), [15, 15, 0]);

    servers[2].health.set_serving("sinew.testing.Testing");
    eventually(Duration::from_secs(5), "serving again", || {
        serving(&channel, &servers[2])
    })
    .await;
    for _ in 0..30 {
        call(&client).await.unwrap();
    }
    assert_eq!(servers.iter().map(served).sum::<u64>(), 60);
    assert!(served(&servers[2]) >= 9, "{}", served(&servers[2]));

    // Two of three not serving: more than half is unhealthy, so calls go to
    // every ready endpoint rather than pile onto one (panic).
    servers[0].health.set_not_serving("sinew.testing.Testing");
    servers[1].health.set_not_serving("sinew.testing.Testing");
    eventually(Duration::from_secs(5), "both told", || {
        !serving(&channel, &servers[0]) && !serving(&channel, &servers[1])
    })
    .await;
    let before: Vec<u64> = servers.iter().map(served).collect();
    for _ in 0..30 {
        call(&client).await.unwrap();
    }
    let after: Vec<u64> = servers.iter().map(served).collect();
    for (before, after) in before.iter().zip(&after) {
        assert_eq!(after - before, 10, "{before:?} -> {after:?}");
    }
}
