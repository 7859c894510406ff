//! `sinew demo`'s work-queue section: a broker in the demo's process (the
//! embedded one, served on a free port), a task queue on it, every node
//! working on its tasks (`sinew serve --tasks`), and tasks submitted all
//! through the run. When node-4 is SIGKILLed, the tasks it was running are
//! delivered again after the queue's ack wait and completed by another
//! node; when node-2 drains, it stops taking tasks and finishes those it
//! runs. The report counts tasks submitted, completed, completed on a later
//! delivery, and lost (none).

use super::demo::lock;
use crate::error::CliError;
use sinew::messaging::{Broker, Job, QueueConfig, TaskError, TaskQueue};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The demo's task queue.
pub(crate) const QUEUE: &str = "demo.tasks";
/// How long a task takes on a node.
pub(crate) const TASK_TIME: &str = "100ms";
/// Tasks a node works on at once.
pub(crate) const TASK_CONCURRENCY: &str = "2";
/// A task not settled within this is delivered again.
const ACK_WAIT: Duration = Duration::from_secs(1);
/// Tasks submitted per second.
const RATE: u32 = 25;

/// The broker and its task queue, served for the nodes.
pub(crate) struct Tasks {
    /// Where the nodes reach the broker.
    pub(crate) address: String,
    queue: TaskQueue,
    server: sinew::rpc::ServerHandle,
    results: Arc<Mutex<Results>>,
}

#[derive(Default)]
struct Results {
    submitted: u64,
    /// Completed tasks by node, and how many of them on a later delivery.
    by_node: BTreeMap<String, (u64, u64)>,
    failed: u64,
    timed_out: u64,
}

impl Tasks {
    /// Starts the broker and declares the queue.
    pub(crate) async fn start() -> Result<Tasks, CliError> {
        let broker = Broker::new();
        let config = QueueConfig::default().ack_wait(ACK_WAIT);
        let queue = TaskQueue::new(&broker, QUEUE, config).await?;
        let server = sinew::Server::builder()
            .drain_timeout(Duration::from_secs(1))
            .add_service(broker.service())
            .bind(["tcp://127.0.0.1:0"])
            .await
            .map_err(|error| CliError::failure(format!("serving the demo's broker: {error}")))?;
        let address = server.local_addresses()[0].to_string();
        let handle = server.handle();
        tokio::spawn(server.serve());
        Ok(Tasks {
            address,
            queue,
            server: handle,
            results: Arc::default(),
        })
    }

    /// Submits tasks at a steady pace until `deadline`, each awaited (up to
    /// 10 s) by a task of its own; the handle ends when every result is in.
    pub(crate) fn submit_until(&self, deadline: Instant) -> tokio::task::JoinHandle<()> {
        let (queue, results) = (self.queue.clone(), self.results.clone());
        tokio::spawn(async move {
            let mut waiting = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
            let mut n = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                n += 1;
                let Ok(pending) = queue
                    .submit(Job::new(format!("task {n}")).id(format!("task-{n}")))
                    .await
                else {
                    continue;
                };
                lock(&results).submitted += 1;
                let results = results.clone();
                waiting.spawn(async move {
                    let outcome = pending.result(Duration::from_secs(10)).await;
                    let mut results = lock(&results);
                    match outcome {
                        Ok(done) => {
                            // "node-3 (delivery 2)"
                            let text = String::from_utf8_lossy(&done).into_owned();
                            let (node, delivery) =
                                text.split_once(" (delivery ").unwrap_or((&text, "1)"));
                            let entry = results.by_node.entry(node.to_owned()).or_default();
                            entry.0 += 1;
                            if delivery != "1)" {
                                entry.1 += 1;
                            }
                        }
                        Err(TaskError::TimedOut(_)) => results.timed_out += 1,
                        Err(_) => results.failed += 1,
                    }
                });
            }
            waiting.join_all().await;
        })
    }

    /// The section of the report, and stops the broker.
    pub(crate) fn report(&self) -> String {
        self.server.shutdown();
        let results = lock(&self.results);
        let completed: u64 = results.by_node.values().map(|(done, _)| done).sum();
        let later: u64 = results.by_node.values().map(|(_, later)| later).sum();
        let lost = results.submitted - completed - results.failed;
        let by_node = results
            .by_node
            .iter()
            .map(|(node, (done, later))| {
                if *later > 0 {
                    format!("{node} {done} ({later} on a later delivery)")
                } else {
                    format!("{node} {done}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "  work queue: {} tasks submitted to {QUEUE} ({RATE}/s; each {TASK_TIME} on a node, {TASK_CONCURRENCY} at a time per node, ack wait {}s); {completed} completed, {later} of them on a later delivery (a node killed or drained under them), {} failed, {lost} lost\n    completed by: {by_node}\n",
            results.submitted,
            ACK_WAIT.as_secs(),
            results.failed,
        )
    }

    /// Whether every submitted task completed.
    pub(crate) fn all_completed(&self) -> bool {
        let results = lock(&self.results);
        let completed: u64 = results.by_node.values().map(|(done, _)| done).sum();
        completed == results.submitted
    }
}
