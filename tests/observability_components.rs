//! The figures of a process's parts in its metrics and dashboard data: a
//! server's connections and bytes, a balanced client's view of its
//! endpoints, a circuit breaker's circuits, an adaptive limit; all against
//! real servers, read back from the Prometheus exposition.

mod common;

use common::{eventually, TestServer};
use sinew::cluster::resolve::Fixed;
use sinew::cluster::Balanced;
use sinew::resilience::{AdaptiveLimit, AdaptiveLimitLayer, BreakerConfig, BreakerLayer};
use sinew::telemetry::Telemetry;
use sinew_tests::testing::{testing_client::TestingClient, SleepRequest};
use std::time::Duration;
use tower::Layer;

/// The value of the series `line_start` (name and labels, exactly as
/// encoded) in `text`.
fn value(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

/// The sum of every series of `name` in `text`.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_a_balanced_client_a_breaker_and_a_limit_show_in_the_metrics() {
    let limit = AdaptiveLimitLayer::new(AdaptiveLimit::default().initial(4).bounds(4, 4));
    let layer = limit.clone();
    let first = TestServer::start_with(move |builder| builder.layer(layer)).await;
    let second = TestServer::start().await;
    let telemetry = Telemetry::new();
    telemetry.watch_server(&first.handle);
    telemetry.watch_limit("sleepers", &limit);

    let resolver = Fixed::new([first.tcp.clone(), second.tcp.clone()]);
    let channel = Balanced::builder(resolver, "sinew.testing.Testing").build();
    telemetry.watch_balanced(&channel);
    tokio::time::timeout(Duration::from_secs(5), channel.until_ready(2))
        .await
        .expect("both endpoints ready");
    let breaker = BreakerLayer::per_method(BreakerConfig::default());
    telemetry.watch_breaker("testing", &breaker);
    let client = TestingClient::new(breaker.layer(channel.clone()));
    for _ in 0..10 {
        client
            .sleep(SleepRequest { millis: 0 })
            .await
            .expect("sleep");
    }

    let text = telemetry.metrics().encode();
    for server in [&first, &second] {
        let labels = format!(
            r#"{{target="sinew.testing.Testing",endpoint="{}""#,
            server.tcp
        );
        assert_eq!(
            value(&text, &format!("sinew_client_endpoint_up{labels}}}")),
            1.0
        );
        assert_eq!(
            value(&text, &format!("sinew_client_endpoint_ejected{labels}}}")),
            0.0
        );
        assert_eq!(
            value(&text, &format!("sinew_client_endpoint_in_flight{labels}}}")),
            0.0
        );
        let rtt = value(
            &text,
            &format!("sinew_client_endpoint_rtt_estimate_seconds{labels}}}"),
        );
        assert!(rtt > 0.0 && rtt < 5.0, "{rtt}");
    }
    assert_eq!(sum(&text, "sinew_client_endpoint_calls_total"), 10.0);
    assert!(text.contains("# TYPE sinew_client_endpoint_rtt_estimate_seconds gauge"));
    // One circuit, for the method called, closed (1) and not open (0).
    let circuit = r#"breaker="testing",circuit="/sinew.testing.Testing/Sleep""#;
    assert_eq!(
        value(
            &text,
            &format!(r#"sinew_circuit_breaker_state{{{circuit},state="closed"}}"#)
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"sinew_circuit_breaker_state{{{circuit},state="open"}}"#)
        ),
        0.0
    );
    assert_eq!(
        value(&text, r#"sinew_adaptive_limit{limit="sleepers"}"#),
        4.0
    );
    assert_eq!(
        value(
            &text,
            r#"sinew_adaptive_limit_shed_total{limit="sleepers"}"#
        ),
        0.0
    );
    // The first server: the balancer's connection, its calls' bytes.
    assert_eq!(value(&text, "sinew_server_connections "), 1.0);
    assert!(value(&text, "sinew_server_received_bytes_total ") > 0.0);
    assert_eq!(
        value(
            &text,
            r#"sinew_server_limit_hits_total{limit="max_concurrent_streams"}"#
        ),
        0.0
    );

    // The same figures for the dashboard.
    let components = telemetry.components();
    assert_eq!(components.clients.len(), 1);
    assert_eq!(components.clients[0].endpoints.len(), 2);
    let server = components.server.as_ref().expect("a watched server");
    assert_eq!(server.connections, 1);
    assert_eq!(server.refused["handshake"], 0);
    assert_eq!(components.breakers[0].circuits[0].state, "closed");
    assert_eq!(components.limits[0].limit, 4);

    // Watching does not keep the balanced channel alive.
    drop(client);
    drop(channel);
    assert!(telemetry.components().clients.is_empty());
    assert!(!telemetry
        .metrics()
        .encode()
        .contains("sinew_client_endpoint_up{"));
    // Its connection closes, and the server's gauge follows.
    eventually(
        Duration::from_secs(10),
        "the balancer's connection closed",
        || telemetry.components().server.unwrap().connections == 0,
    )
    .await;
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_watched_parts_no_component_series_are_exposed() {
    let telemetry = Telemetry::new();
    let text = telemetry.metrics().encode();
    assert!(!text.contains("sinew_server_"), "{text}");
    assert!(!text.contains("sinew_client_endpoint"), "{text}");
    let components = telemetry.components();
    assert!(components.server.is_none() && components.clients.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brokers_messages_and_work_queues_show_in_the_metrics() {
    use sinew::messaging::{Broker, Job, QueueConfig, SlowConsumer, SubscribeOptions};
    let broker = Broker::new();
    let telemetry = Telemetry::new();
    telemetry.watch_broker("events", &broker);
    let mut all = broker.subscribe("orders.>").await.unwrap();
    let options = SubscribeOptions::default()
        .capacity(1)
        .slow_consumer(SlowConsumer::DropOldest);
    let _slow = broker
        .subscribe_with("orders.>", None, options)
        .await
        .unwrap();
    for n in 0..3 {
        broker.publish("orders.new", n.to_string()).await.unwrap();
    }
    all.next_message().await.unwrap();
    let queue = broker
        .work_queue("emails", QueueConfig::default())
        .await
        .unwrap();
    for n in 0..4 {
        queue
            .push(Job::new("x").id(format!("mail-{n}")))
            .await
            .unwrap();
    }
    queue.push(Job::new("x").id("mail-0")).await.unwrap();
    let mut worker = queue.pull(1).await.unwrap();
    worker.next_job().await.unwrap().ack().await.unwrap();
    let _held = worker.next_job().await.unwrap();

    // The queues' figures are published by the store's thread a quarter of
    // a second apart at most.
    let mut text = String::new();
    eventually(Duration::from_secs(5), "the queue's figures", || {
        text = telemetry.metrics().encode();
        text.contains(r#"sinew_queue_acked_total{broker="events",queue="emails"} 1"#)
    })
    .await;
    assert_eq!(
        value(&text, r#"sinew_broker_published_total{broker="events"}"#),
        3.0
    );
    assert_eq!(
        value(&text, r#"sinew_broker_delivered_total{broker="events"}"#),
        6.0
    );
    assert_eq!(
        value(&text, r#"sinew_broker_subscriptions{broker="events"}"#),
        2.0
    );
    assert_eq!(
        value(&text, r#"sinew_broker_dropped_total{broker="events"}"#),
        2.0
    );
    assert_eq!(
        value(&text, r#"sinew_broker_buffered{broker="events"}"#),
        3.0
    );
    let emails = r#"{broker="events",queue="emails"}"#;
    for (name, expected) in [
        ("sinew_queue_pending", 2.0),
        ("sinew_queue_in_flight", 1.0),
        ("sinew_queue_workers", 1.0),
        ("sinew_queue_pushed_total", 4.0),
        ("sinew_queue_duplicates_total", 1.0),
        ("sinew_queue_acked_total", 1.0),
        ("sinew_queue_dead_lettered_total", 0.0),
    ] {
        assert_eq!(value(&text, &format!("{name}{emails}")), expected, "{name}");
    }
    // And in the dashboard's data.
    let components = telemetry.components();
    assert_eq!(components.brokers.len(), 1);
    assert_eq!(components.brokers[0].queues[0].name, "emails");
}
