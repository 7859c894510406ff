//! A real `nats-server` SIGKILLed and restarted on the same port and files
//! mid-run: the client reconnects by itself, its subscription resumes, a
//! job stored before the kill is still there (JetStream's file store), and
//! a worker's pulls resume.

mod common;

use common::{NatsServer, WAIT};
use sinew_messaging::{Broker, Job, QueueConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_and_resume_after_the_server_restarts() {
    let mut server = NatsServer::start(None);
    let broker = Broker::nats(&server.url).await.unwrap();
    let mut subscription = broker.subscribe("events.>").await.unwrap();
    broker.publish("events.a", "before").await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, subscription.next_message())
            .await
            .unwrap()
            .unwrap()
            .payload,
        "before"
    );
    let queue = broker
        .work_queue("jobs", QueueConfig::default())
        .await
        .unwrap();
    queue
        .push(Job::new("stored before the kill"))
        .await
        .unwrap();

    server.kill_and_restart();

    // Publishing again, until the client is back and resubscribed: the
    // subscription sees one of these, at most a few are lost meanwhile
    // (core NATS is at most once).
    let resumed = async {
        loop {
            let _ = broker.publish("events.b", "after").await;
            if let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_millis(100), subscription.next_message()).await
            {
                break message;
            }
        }
    };
    let message = tokio::time::timeout(Duration::from_secs(20), resumed)
        .await
        .expect("the subscription resumes");
    assert_eq!(message.payload, "after");

    let mut worker = queue.pull(1).await.unwrap();
    let job = tokio::time::timeout(Duration::from_secs(20), worker.next_job())
        .await
        .expect("a job after the restart")
        .expect("the worker goes on");
    assert_eq!(job.payload(), "stored before the kill");
    job.ack().await.unwrap();
    // And pushes go on too.
    queue.push(Job::new("after")).await.unwrap();
    let job = tokio::time::timeout(WAIT, worker.next_job())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.payload(), "after");
    job.ack().await.unwrap();
}
