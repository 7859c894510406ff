//! Publish/subscribe, queue groups, request/reply and the slow-consumer
//! policies, on the embedded broker and on the same broker served by a
//! sinew server and reached by the remote client: one behaviour, both
//! backends.

mod common;

use common::{broker, broker_with, eventually, next, quiet, Backend, WAIT};
use futures_util::StreamExt;
use sinew_messaging::{Broker, Error, Message, SlowConsumer, Subject, SubscribeOptions};
use std::time::Duration;

on_every_backend!(
    messages_reach_every_matching_subscription_and_no_other,
    a_queue_group_shares_the_messages_and_plain_subscribers_get_them_all,
    a_full_subscription_drops_its_oldest_when_told_to,
    a_slow_consumer_is_disconnected_when_told_to_and_counted,
    under_backpressure_nothing_is_lost_and_order_is_kept,
    a_request_gets_its_answer_or_says_why_not,
    bad_subjects_are_refused_and_the_broker_goes_on,
    oversize_payloads_and_bad_headers_are_refused_and_counted_nowhere,
    protobuf_messages_go_through_encoded_and_come_out_decoded,
);

async fn messages_reach_every_matching_subscription_and_no_other(backend: Backend) {
    let broker = broker(backend).await;
    let mut all = broker.subscribe("orders.>").await.unwrap();
    let mut created = broker.subscribe("orders.*.created").await.unwrap();
    let mut other = broker.subscribe("invoices.>").await.unwrap();
    broker.publish("orders.eu.created", "1").await.unwrap();
    broker.publish("orders.eu.paid", "2").await.unwrap();
    assert_eq!(next(&mut all).await.payload, "1");
    assert_eq!(next(&mut all).await.payload, "2");
    let message = next(&mut created).await;
    assert_eq!(message.subject.as_str(), "orders.eu.created");
    assert!(quiet(&mut created).await);
    assert!(quiet(&mut other).await);
    let stats = broker.stats().await.unwrap();
    assert_eq!((stats.published, stats.delivered), (2, 3));
    // Dropping a subscription unsubscribes it (at the broker, once the
    // call's end reaches it, for a remote one).
    drop(other);
    eventually("unsubscribed", async || {
        broker.stats().await.unwrap().subscriptions == 2
    })
    .await;
}

async fn a_queue_group_shares_the_messages_and_plain_subscribers_get_them_all(backend: Backend) {
    let broker = broker(backend).await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(broker.queue_subscribe("jobs.>", "workers").await.unwrap());
    }
    let mut audit = broker.subscribe("jobs.>").await.unwrap();
    for n in 0..30 {
        broker.publish("jobs.resize", n.to_string()).await.unwrap();
    }
    broker.flush().await.unwrap();
    let mut seen = Vec::new();
    for member in &mut members {
        let mut mine = 0;
        while !quiet_or_push(member, &mut seen).await {
            mine += 1;
        }
        if backend == Backend::Nats {
            // NATS picks a member at random.
            assert!(mine > 0, "every member gets some");
        } else {
            assert_eq!(mine, 10, "round robin over three members");
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 30, "each message to exactly one member");
    for _ in 0..30 {
        next(&mut audit).await;
    }
}

/// Takes the next message into `seen`; true if none came.
async fn quiet_or_push(
    subscription: &mut sinew_messaging::Subscription,
    seen: &mut Vec<bytes::Bytes>,
) -> bool {
    match tokio::time::timeout(Duration::from_millis(50), subscription.next_message()).await {
        Ok(Some(message)) => {
            seen.push(message.payload);
            false
        }
        _ => true,
    }
}

async fn a_full_subscription_drops_its_oldest_when_told_to(backend: Backend) {
    let broker = broker(backend).await;
    let options = SubscribeOptions::default()
        .capacity(2)
        .slow_consumer(SlowConsumer::DropOldest);
    let mut slow = broker.subscribe_with("ticks", None, options).await.unwrap();
    if backend == Backend::Remote {
        // A remote subscriber that does not read fills the call's window,
        // then the broker's buffer, which drops its oldest; what arrives
        // is the newest, and every message is either read or counted.
        let published = 200;
        for n in 0..published {
            let mut payload = vec![0u8; 64 * 1024];
            payload[..4].copy_from_slice(&(n as u32).to_be_bytes());
            broker.publish("ticks", payload).await.unwrap();
        }
        broker.flush().await.unwrap();
        let mut received = Vec::new();
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(200), slow.next_message()).await
        {
            received.push(u32::from_be_bytes(message.payload[..4].try_into().unwrap()));
        }
        assert!(slow.dropped() > 0, "the window is smaller than 12 MiB");
        assert_eq!(received.len() as u64 + slow.dropped(), published as u64);
        assert_eq!(received.last(), Some(&(published as u32 - 1)));
        assert!(received.windows(2).all(|pair| pair[0] < pair[1]));
        return;
    }
    for n in 0..5 {
        broker.publish("ticks", n.to_string()).await.unwrap();
    }
    if backend == Backend::Nats {
        // On NATS the policy applies as the subscriber reads, over all
        // that has arrived by then.
        broker.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(next(&mut slow).await.payload, "3");
        assert_eq!(slow.dropped(), 3);
        assert_eq!(next(&mut slow).await.payload, "4");
        return;
    }
    assert_eq!(slow.dropped(), 3);
    assert_eq!(next(&mut slow).await.payload, "3");
    assert_eq!(next(&mut slow).await.payload, "4");
}

async fn a_slow_consumer_is_disconnected_when_told_to_and_counted(backend: Backend) {
    let broker = broker(backend).await;
    let options = SubscribeOptions::default()
        .capacity(2)
        .slow_consumer(SlowConsumer::Disconnect);
    let mut slow = broker.subscribe_with("ticks", None, options).await.unwrap();
    let mut fast = broker.subscribe("ticks").await.unwrap();
    if backend == Backend::Nats {
        // On NATS the policy applies as the subscriber reads: three
        // messages arrived, two fit, the subscription ends.
        for n in 0..3 {
            broker.publish("ticks", n.to_string()).await.unwrap();
            next(&mut fast).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let held: Vec<Message> = (&mut slow).collect().await;
        assert_eq!(held.len(), 2);
        assert!(slow.disconnected());
        assert_eq!(slow.dropped(), 1);
        let stats = broker.stats().await.unwrap();
        assert_eq!((stats.slow_consumers, stats.subscriptions), (1, 1));
        broker.publish("ticks", "after").await.unwrap();
        assert_eq!(next(&mut fast).await.payload, "after");
        return;
    }
    // Large payloads fill a remote subscription's call window quickly.
    let payload = vec![7u8; 256 * 1024];
    let mut published = 0;
    while broker.stats().await.unwrap().slow_consumers == 0 {
        assert!(published < 1000, "disconnected in time");
        broker.publish("ticks", payload.clone()).await.unwrap();
        broker.flush().await.unwrap();
        next(&mut fast).await;
        published += 1;
    }
    // What it held, then the end, and it says why.
    let held: Vec<Message> = (&mut slow).collect().await;
    assert!(!held.is_empty() && held.len() < published);
    assert!(slow.disconnected());
    assert!(slow.dropped() >= 1);
    assert!(slow.error().is_none());
    let stats = broker.stats().await.unwrap();
    assert_eq!((stats.slow_consumers, stats.subscriptions), (1, 1));
    broker.publish("ticks", "after").await.unwrap();
    assert_eq!(next(&mut fast).await.payload, "after");
}

async fn under_backpressure_nothing_is_lost_and_order_is_kept(backend: Backend) {
    let broker = broker(backend).await;
    let options = SubscribeOptions::default().capacity(1);
    let mut subscription = broker.subscribe_with("work", None, options).await.unwrap();
    // Over NATS a publisher is never held back: what fits the client's
    // buffer for the subscription (1,024) is kept, nothing more.
    let count = match backend {
        Backend::Embedded => 100,
        Backend::Remote => 5000,
        Backend::Nats => 1000,
    };
    let publisher = {
        let broker = broker.clone();
        tokio::spawn(async move {
            for n in 0..count {
                broker.publish("work", n.to_string()).await.unwrap();
            }
            broker.flush().await.unwrap();
        })
    };
    if backend == Backend::Embedded {
        // Full: the publisher cannot finish until this side reads.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!publisher.is_finished());
    }
    for n in 0..count {
        assert_eq!(next(&mut subscription).await.payload, n.to_string());
    }
    publisher.await.unwrap();
    assert_eq!(subscription.dropped(), 0);
    if backend == Backend::Embedded {
        // A subscriber that leaves releases a waiting publisher.
        broker.publish("work", "x").await.unwrap();
        let blocked = {
            let broker = broker.clone();
            tokio::spawn(async move { broker.publish("work", "y").await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(subscription);
        tokio::time::timeout(WAIT, blocked).await.unwrap().unwrap();
    }
}

async fn a_request_gets_its_answer_or_says_why_not(backend: Backend) {
    let broker = broker(backend).await;
    let mut service = broker.subscribe("time.now").await.unwrap();
    let responder = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let request = service.next_message().await.unwrap();
            assert_eq!(request.header("asked-by"), Some("test"));
            let answer =
                Message::new(request.reply.unwrap(), "noon").with_header("served-by", "clock");
            broker.publish_message(answer).await.unwrap();
            broker.flush().await.unwrap();
            // The next request gets no answer.
            let _ignored = service.next_message().await;
        })
    };
    let request =
        Message::new(Subject::new("time.now").unwrap(), "?").with_header("asked-by", "test");
    let answer = broker.request_message(request, WAIT).await.unwrap();
    assert_eq!(answer.payload, "noon");
    assert_eq!(answer.header("served-by"), Some("clock"));
    let silent = broker
        .request("time.now", "?", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(silent, Error::TimedOut { .. }), "{silent}");
    let nobody = broker
        .request("time.tomorrow", "?", WAIT)
        .await
        .unwrap_err();
    assert!(matches!(nobody, Error::NoResponders(_)), "{nobody}");
    responder.await.unwrap();
}

async fn bad_subjects_are_refused_and_the_broker_goes_on(backend: Backend) {
    let broker = broker(backend).await;
    let mut ok = broker.subscribe("a.b").await.unwrap();
    for error in [
        broker.publish("a..b", "x").await.unwrap_err(),
        broker.publish("a.*", "x").await.unwrap_err(),
        broker.publish("a b", "x").await.unwrap_err(),
        broker.subscribe("a.>.b").await.unwrap_err(),
        broker
            .queue_subscribe("a.b", "two words")
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(error, Error::Subject(_)), "{error}");
    }
    broker.publish("a.b", "fine").await.unwrap();
    assert_eq!(next(&mut ok).await.payload, "fine");
}

async fn oversize_payloads_and_bad_headers_are_refused_and_counted_nowhere(backend: Backend) {
    // NATS's limit counts the headers too: room for the one used below.
    let limit = if backend == Backend::Nats { 64 } else { 16 };
    let broker = broker_with(backend, Some(limit)).await;
    assert_eq!(broker.max_payload(), limit);
    let mut subscription = broker.subscribe("in").await.unwrap();
    let big = broker
        .publish("in", vec![0u8; limit + 1])
        .await
        .unwrap_err();
    assert!(
        matches!(big, Error::PayloadTooLarge { size, max } if size == limit + 1 && max == limit),
        "{big}"
    );
    let subject = Subject::new("in").unwrap();
    for (name, value, rule) in [
        ("", "v", "name"),
        ("a:b", "v", "name"),
        ("a b", "v", "name"),
        ("trace", "line\r\nbreak", "value"),
    ] {
        let message = Message::new(subject.clone(), "x").with_header(name, value);
        let error = broker.publish_message(message).await.unwrap_err();
        match &error {
            Error::InvalidHeader { reason, .. } => assert!(reason.contains(rule), "{error}"),
            other => panic!("{other}"),
        }
    }
    let fine = Message::new(subject, "ok").with_header("trace-id", "7\tb");
    broker.publish_message(fine).await.unwrap();
    assert_eq!(
        next(&mut subscription).await.header("trace-id"),
        Some("7\tb")
    );
    let stats = broker.stats().await.unwrap();
    assert_eq!(
        (stats.published, stats.delivered, stats.subscriptions),
        (1, 1, 1)
    );
}

async fn protobuf_messages_go_through_encoded_and_come_out_decoded(backend: Backend) {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Order {
        #[prost(uint64, tag = "1")]
        id: u64,
        #[prost(string, tag = "2")]
        item: String,
    }
    let broker = broker(backend).await;
    let mut orders = broker.subscribe("orders.>").await.unwrap();
    let order = Order {
        id: 17,
        item: "tea".into(),
    };
    broker.publish_proto("orders.new", &order).await.unwrap();
    let message = next(&mut orders).await;
    assert_eq!(message.decode::<Order>().unwrap(), order);
    // A payload that is not the message says so.
    broker
        .publish("orders.bad", vec![0xff_u8; 3])
        .await
        .unwrap();
    assert!(next(&mut orders).await.decode::<Order>().is_err());
}

#[tokio::test]
async fn subscriptions_end_when_the_embedded_broker_is_gone() {
    let broker = Broker::new();
    let mut subscription = broker.subscribe("x").await.unwrap();
    broker.publish("x", "last").await.unwrap();
    drop(broker);
    assert_eq!(next(&mut subscription).await.payload, "last");
    let end = tokio::time::timeout(WAIT, subscription.next_message()).await;
    assert_eq!(end.unwrap(), None);
}

#[tokio::test]
async fn a_remote_subscription_says_why_it_ended_when_the_server_goes() {
    let served = Broker::new();
    // Subscriptions are calls that last: a graceful shutdown waits the
    // drain timeout for them, then ends them with UNAVAILABLE.
    let server = sinew_rpc::Server::builder()
        .drain_timeout(Duration::from_millis(200))
        .add_service(served.service())
        .bind(["tcp://127.0.0.1:0"])
        .await
        .unwrap();
    let address = server.local_addresses()[0].to_string();
    let handle = server.handle();
    let serving = tokio::spawn(server.serve());
    let broker = Broker::connect(&address).await.unwrap();
    let mut subscription = broker.subscribe("x").await.unwrap();
    broker.publish("x", "before").await.unwrap();
    assert_eq!(next(&mut subscription).await.payload, "before");
    handle.shutdown();
    drop(served);
    let end = tokio::time::timeout(WAIT, subscription.next_message()).await;
    assert_eq!(end.unwrap(), None);
    let why = subscription
        .error()
        .expect("the subscription says why it ended");
    assert!(matches!(why, Error::Remote(_)), "{why}");
    let _ = serving.await;
    // The publish stream is gone too: the next publish says so.
    let error = broker.publish("x", "after").await;
    let flushed = broker.flush().await;
    assert!(error.is_err() || flushed.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_subscriber_that_stops_reading_holds_publishers_back_only_so_long() {
    let served = Broker::builder()
        .remote_max_wait(Duration::from_millis(200))
        .build()
        .unwrap();
    let server = sinew_rpc::Server::builder()
        .add_service(served.service())
        .bind(["tcp://127.0.0.1:0"])
        .await
        .unwrap();
    let address = server.local_addresses()[0].to_string();
    tokio::spawn(server.serve());
    let broker = Broker::connect(&address).await.unwrap();
    // Back-pressure, a buffer of one, and never read.
    let options = SubscribeOptions::default().capacity(1);
    let stuck = broker.subscribe_with("feed", None, options).await.unwrap();
    let mut reader = served.subscribe("feed").await.unwrap();
    // Large messages fill the call's window, then the buffer: publishers
    // wait 200 ms, then the subscriber is ended and they go on.
    let payload = vec![1u8; 256 * 1024];
    let published = tokio::time::timeout(WAIT * 4, async {
        for _ in 0..64 {
            served.publish("feed", payload.clone()).await.unwrap();
        }
    })
    .await;
    assert!(published.is_ok(), "publishers were held back for good");
    for _ in 0..64 {
        next(&mut reader).await;
    }
    let stats = served.stats().await.unwrap();
    assert_eq!((stats.slow_consumers, stats.subscriptions), (1, 1));
    drop(stuck);
}
