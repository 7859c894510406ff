//! Messaging: publish/subscribe, a queue group, request/reply and a durable
//! work queue on the embedded broker; then the same broker served by a
//! sinew server and used from a "remote" client with the same API.
//!
//! ```text
//! cargo run --example messaging
//! ```

use sinew::messaging::{Broker, Job, QueueConfig};
use sinew::Server;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In this process: nothing to run.
    let broker = Broker::new();

    // Publish/subscribe, with NATS wildcards.
    let mut orders = broker.subscribe("orders.*.created").await?;
    broker.publish("orders.eu.created", "order 17").await?;
    let message = orders.next_message().await.expect("delivered");
    println!("{}: {:?}", message.subject, message.payload);

    // Request/reply: a responder answers on the request's reply subject.
    let mut clock = broker.subscribe("time.now").await?;
    let responder = broker.clone();
    tokio::spawn(async move {
        while let Some(request) = clock.next_message().await {
            let _ = responder.respond(&request, "noon").await;
        }
    });
    let answer = broker
        .request("time.now", "?", Duration::from_secs(1))
        .await?;
    println!("time.now answered {:?}", answer.payload);

    // A durable work queue: push with an idempotency id, pull with at most
    // 8 jobs in flight, ack.
    let emails = broker
        .work_queue("emails", QueueConfig::default().max_deliveries(3))
        .await?;
    emails
        .push(Job::new("welcome, ada").id("signup-ada"))
        .await?;
    let again = emails
        .push(Job::new("welcome, ada").id("signup-ada"))
        .await?;
    println!("second push of signup-ada dropped: {}", again.duplicate);
    let mut worker = emails.pull(8).await?;
    let job = worker.next_job().await.expect("a job");
    println!(
        "job {} (delivery {}): {:?}",
        job.sequence(),
        job.attempt(),
        job.payload()
    );
    job.ack().await?;

    // Served by a sinew server (sinew's protocol and gRPC on one port), and
    // used from another process with the same API.
    let server = Server::builder()
        .drain_timeout(Duration::from_millis(100))
        .add_service(broker.service())
        .bind(["tcp://127.0.0.1:0"])
        .await?;
    let address = server.local_addresses()[0].to_string();
    let handle = server.handle();
    let serving = tokio::spawn(server.serve());

    let remote = Broker::connect(&address).await?;
    let mut local_view = broker.subscribe("sensors.>").await?;
    remote.publish("sensors.kitchen", "21.5").await?;
    let reading = local_view.next_message().await.expect("delivered");
    println!(
        "remote publish reached a local subscriber: {}",
        reading.subject
    );
    let emails = remote.open_queue("emails").await?;
    emails.push(Job::new("welcome, bob")).await?;
    let job = worker.next_job().await.expect("a job");
    println!("pushed remotely, worked locally: {:?}", job.payload());
    job.ack().await?;
    let stats = remote.stats().await?;
    println!(
        "{} published, {} acked on emails",
        stats.published, stats.queues[0].acked
    );

    handle.shutdown();
    serving.await?;
    Ok(())
}
