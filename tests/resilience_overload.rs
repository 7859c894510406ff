//! Overload protection on a real server: calls over the adaptive limit are
//! refused at once with RESOURCE_EXHAUSTED and a pushback, never run past
//! the limit; priorities decide who is refused first; a rate limit per key
//! holds each key to its own bucket.

mod common;

use common::{eventually, sleep, TestServer};
use sinew::resilience::limit::PRIORITY;
use sinew::resilience::retry::PUSHBACK;
use sinew::resilience::{
    AdaptiveLimit, AdaptiveLimitLayer, RateLimit, RateLimitKey, RateLimitLayer,
};
use sinew::{Channel, Code, Status};
use sinew_tests::testing::{testing_client::TestingClient, Counters, FloodRequest};
use std::time::Duration;

async fn client(server: &TestServer) -> TestingClient<Channel> {
    TestingClient::new(server.channel(&server.tcp).await)
}

/// A sleep call of `millis` with `priority`, if any.
fn call(millis: u64, priority: Option<&str>) -> sinew::Request<sinew_tests::testing::SleepRequest> {
    let mut request = sleep(millis, Some(Duration::from_secs(10)));
    if let Some(priority) = priority {
        request.metadata_mut().insert(PRIORITY, priority).unwrap();
    }
    request
}

fn assert_shed(status: &Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    let pushback: u64 = status.metadata().get(PUSHBACK).unwrap().parse().unwrap();
    assert!(pushback >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_the_adaptive_limit_are_refused_at_once_and_never_run() {
    let limit = AdaptiveLimitLayer::new(AdaptiveLimit::default().initial(8).bounds(4, 16));
    let layer = limit.clone();
    let server = TestServer::start_with(move |builder| builder.layer(layer)).await;
    let client = client(&server).await;
    // 200 calls of 50 ms at once, 50 times what the limit starts at (its
    // floor, 4, while it measures the latency of calls with no queue).
    let mut calls = Vec::new();
    for _ in 0..200 {
        let client = client.clone();
        calls.push(tokio::spawn(
            async move { client.sleep(call(50, None)).await },
        ));
    }
    let (mut ok, mut shed) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_shed(&status);
                shed += 1;
            }
        }
    }
    println!("{ok} ok, {shed} shed; limit now {}", limit.limit());
    assert!(ok >= 3 && shed > 0, "{ok} ok, {shed} shed");
    assert_eq!(limit.shed(), shed);
    // Only admitted calls reached a handler.
    assert_eq!(Counters::get(&server.counters.sleeps_started), ok as u64);
    assert!(limit.limit() <= 16);
    // (A call stops counting just after its status is sent.)
    eventually(Duration::from_secs(5), "no call counted any more", || {
        limit.in_flight() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sheddable_calls_go_first_and_critical_ones_last() {
    // A limit of exactly 10: sheddable calls fit under 5, normal under 9.
    let limit = AdaptiveLimitLayer::new(AdaptiveLimit::default().initial(10).bounds(10, 10));
    let layer = limit.clone();
    let server = TestServer::start_with(move |builder| builder.layer(layer)).await;
    let client = client(&server).await;
    // Six long calls hold six places.
    let mut holding = Vec::new();
    for _ in 0..6 {
        let client = client.clone();
        holding.push(tokio::spawn(async move {
            client.sleep(call(5_000, None)).await
        }));
    }
    let counters = server.counters.clone();
    eventually(Duration::from_secs(5), "six calls running", || {
        Counters::get(&counters.sleeps_started) == 6
    })
    .await;
    assert_shed(&client.sleep(call(0, Some("sheddable"))).await.unwrap_err());
    client.sleep(call(0, None)).await.unwrap();
    client.sleep(call(0, Some("critical"))).await.unwrap();
    // Three more normal ones: 9 in flight is normal's share; the next
    // normal call is refused, a critical one still admitted.
    for _ in 0..3 {
        let client = client.clone();
        holding.push(tokio::spawn(async move {
            client.sleep(call(5_000, None)).await
        }));
    }
    eventually(Duration::from_secs(5), "nine calls running", || {
        Counters::get(&counters.sleeps_started) == 11
    })
    .await;
    assert_shed(&client.sleep(call(0, None)).await.unwrap_err());
    client.sleep(call(0, Some("critical"))).await.unwrap();
    for call in holding {
        call.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_each_key_to_its_own_bucket() {
    let limit = RateLimitLayer::new(
        RateLimit::new(0.5, 3),
        RateLimitKey::Metadata("x-api-key".into()),
    );
    let layer = limit.clone();
    let server = TestServer::start_with(move |builder| builder.layer(layer)).await;
    let client = client(&server).await;
    let keyed = |key: &str| {
        let mut request = call(0, None);
        request.metadata_mut().insert("x-api-key", key).unwrap();
        request
    };
    for _ in 0..3 {
        client.sleep(keyed("alice")).await.unwrap();
    }
    let status = client.sleep(keyed("alice")).await.unwrap_err();
    assert_shed(&status);
    // One token every 2 s: the pushback says so.
    let pushback: u64 = status.metadata().get(PUSHBACK).unwrap().parse().unwrap();
    assert!((1..=2000).contains(&pushback), "{pushback}");
    client.sleep(keyed("bob")).await.unwrap();
    assert_eq!(limit.refused(), 1);
    assert_eq!(limit.keys(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_response_streams_do_not_fill_the_adaptive_limit() {
    // A limit of exactly 4: normal calls fit under 3 (90%).
    let limit = AdaptiveLimitLayer::new(AdaptiveLimit::default().initial(4).bounds(4, 4));
    let layer = limit.clone();
    let server = TestServer::start_with(move |builder| builder.layer(layer)).await;
    // The streams on a connection of their own, with room for what they
    // leave unread (each stops at its own stream window).
    let channel = Channel::builder(server.tcp.clone())
        .initial_connection_window(32 << 20)
        .connect()
        .await
        .unwrap();
    let streams = TestingClient::new(channel);
    let mut open = Vec::new();
    for _ in 0..10 {
        let mut stream = streams
            .flood(FloodRequest {
                count: u64::MAX,
                size: 1024,
            })
            .await
            .unwrap()
            .into_inner();
        // Running on the server: its first message is here.
        stream.message().await.unwrap().unwrap();
        open.push(stream);
    }
    assert_eq!(
        limit.in_flight(),
        0,
        "open streams are not held under the limit"
    );
    // Ten open streams, and the server still takes its limit's worth of
    // unary calls at once.
    let client = client(&server).await;
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.sleep(call(200, None)).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(limit.shed(), 0);
    // A server at its limit refuses a new stream like any other call.
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.sleep(call(1000, Some("critical"))).await })
        })
        .collect();
    eventually(Duration::from_secs(5), "the limit is full", || {
        limit.in_flight() == 4
    })
    .await;
    let status = streams
        .flood(FloodRequest { count: 1, size: 0 })
        .await
        .unwrap_err();
    assert_shed(&status);
    for call in busy {
        call.await.unwrap().unwrap();
    }
    drop(open);
}
