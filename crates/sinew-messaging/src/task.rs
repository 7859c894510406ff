//! Distributed tasks on a work queue: [`TaskQueue::submit`] a task and
//! await its result; [`TaskQueue::serve`] runs a handler on the tasks, in
//! as many processes on as many machines as you like (any broker every
//! process reaches: a served embedded broker, or NATS).
//!
//! A task is a job whose headers say where its result goes: the submitter
//! subscribes to the task's inbox (`_TASK.<queue>.<the task id in hex>`)
//! before it pushes, and the worker that completes the task publishes the
//! result there, then acks the job. Because the inbox is the task's, a
//! second submission of a task still running (a retry) gets the same
//! result; one made after the result was published gets none
//! ([`Pending::is_duplicate`] says the push was dropped). Everything else is the work queue's: a task
//! whose worker dies is delivered to another after the ack wait, one whose
//! handler fails is tried again (after a delay growing with each attempt)
//! until the queue's last delivery, when the submitter is told it failed
//! and the job goes to the dead-letter queue. A task's id (given, or made
//! up) is its job's idempotency id: submitted twice within the duplicate
//! window, it runs once.
//!
//! At least once: a worker that dies after publishing a result but before
//! the ack has its task run again, and the second result goes to an inbox
//! nobody listens to any more. Handlers with side effects check the task's
//! [`id`](Task::id).

use crate::broker::{Broker, SubscribeOptions, Subscription};
use crate::error::Error;
use crate::subject::Subject;
use crate::work::{Delivery, Job, QueueConfig, WorkQueue};
use bytes::Bytes;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The header carrying a task's inbox.
pub const REPLY_HEADER: &str = "sinew-task-reply";
/// The header of a result saying how the task ended: `ok` or `failed`.
pub const STATUS_HEADER: &str = "sinew-task-status";

/// Why a task gave no result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The handler failed on the task's last delivery (its message).
    #[error("the task failed: {0}")]
    Failed(String),
    /// No result within the time the submitter waited.
    #[error("no result within {0:?}")]
    TimedOut(Duration),
    /// The broker refused, or could not be reached.
    #[error(transparent)]
    Broker(#[from] Error),
}

/// A work queue of tasks. Clones share it.
#[derive(Clone, Debug)]
pub struct TaskQueue {
    broker: Broker,
    queue: WorkQueue,
}

/// A task being run: its payload and headers, which delivery this is.
#[derive(Debug)]
pub struct Task {
    delivery: Delivery,
}

impl Task {
    /// The task's id (its job's idempotency id).
    pub fn id(&self) -> &str {
        self.delivery.id().unwrap_or_default()
    }

    /// The task's payload.
    pub fn payload(&self) -> &Bytes {
        self.delivery.payload()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.delivery.header(name)
    }

    /// Which delivery this is: 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.delivery.attempt()
    }

    /// The payload, decoded as an `M`.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, prost::DecodeError> {
        self.delivery.decode()
    }

    /// Extends the task's lease: call it from a long handler.
    pub async fn in_progress(&self) -> Result<(), Error> {
        self.delivery.in_progress().await
    }
}

/// A submitted task; [`result`](Pending::result) waits for its end.
#[derive(Debug)]
pub struct Pending {
    id: String,
    duplicate: bool,
    inbox: Subscription,
}

impl Pending {
    /// The task's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether a task with this id was submitted already (within the
    /// queue's duplicate window): this submission was dropped, and waits
    /// for the first one's result (which it misses if it was published
    /// before this submission).
    pub fn is_duplicate(&self) -> bool {
        self.duplicate
    }

    /// The task's result, waiting up to `timeout`.
    pub async fn result(mut self, timeout: Duration) -> Result<Bytes, TaskError> {
        match tokio::time::timeout(timeout, self.inbox.next_message()).await {
            Ok(Some(message)) => match message.header(STATUS_HEADER) {
                Some("ok") => Ok(message.payload),
                _ => Err(TaskError::Failed(
                    String::from_utf8_lossy(&message.payload).into_owned(),
                )),
            },
            // The inbox ended: the broker is gone or out of reach.
            Ok(None) => Err(TaskError::Broker(Error::Closed)),
            Err(_) => Err(TaskError::TimedOut(timeout)),
        }
    }
}

/// `text` as one subject token: its bytes in hex.
fn hex(text: &str) -> String {
    text.bytes().map(|byte| format!("{byte:02x}")).collect()
}

/// A name no other submitter uses: the process, the time, a counter.
fn nonce() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl TaskQueue {
    /// The task queue `name` on `broker`, created with `config` if it does
    /// not exist (see [`Broker::work_queue`]).
    pub async fn new(broker: &Broker, name: &str, config: QueueConfig) -> Result<TaskQueue, Error> {
        Ok(TaskQueue {
            broker: broker.clone(),
            queue: broker.work_queue(name, config).await?,
        })
    }

    /// The task queue `name` on `broker` as it is ([`Error::UnknownQueue`]
    /// if it was never created).
    pub async fn open(broker: &Broker, name: &str) -> Result<TaskQueue, Error> {
        Ok(TaskQueue {
            broker: broker.clone(),
            queue: broker.open_queue(name).await?,
        })
    }

    /// The queue the tasks are jobs of.
    pub fn queue(&self) -> &WorkQueue {
        &self.queue
    }

    /// Submits `task` (a job: its payload, headers, and an id if the task
    /// must run once however many times it is submitted); its result is
    /// for the returned [`Pending`].
    pub async fn submit(&self, task: Job) -> Result<Pending, Error> {
        let id = task.id.clone().unwrap_or_else(nonce);
        let inbox = Subject::new(&format!("_TASK.{}.{}", self.queue.name(), hex(&id)))?;
        // Never a publisher held back by a submitter that does not read:
        // a task run twice (its first worker's lease ran out) answers
        // twice, and the oldest answer goes.
        let options = SubscribeOptions::default()
            .capacity(2)
            .slow_consumer(crate::SlowConsumer::DropOldest);
        let subscription = self
            .broker
            .subscribe_with(inbox.as_str(), None, options)
            .await?;
        let job = task.id(id.clone()).header(REPLY_HEADER, inbox.as_str());
        let pushed = self.queue.push(job).await?;
        Ok(Pending {
            id,
            duplicate: pushed.duplicate,
            inbox: subscription,
        })
    }

    /// Submits `task` and waits up to `timeout` for its result.
    pub async fn run(&self, task: Job, timeout: Duration) -> Result<Bytes, TaskError> {
        self.submit(task).await?.result(timeout).await
    }

    /// Runs `handler` on this queue's tasks, at most `max_in_flight` at a
    /// time, until the broker is gone (or the connection to it is lost:
    /// the error says). A handler's `Err` is tried again, after a delay of
    /// 100 ms times the attempt, until the queue's last delivery.
    pub async fn serve<F, Fut>(&self, max_in_flight: usize, handler: F) -> Result<(), Error>
    where
        F: Fn(Arc<Task>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, String>> + Send + 'static,
    {
        self.serve_until(max_in_flight, handler, std::future::pending())
            .await
    }

    /// As [`serve`](TaskQueue::serve), until `stop` completes: then no
    /// task is taken any more, and the tasks running finish and are
    /// settled (a graceful shutdown). Tasks delivered but not started go
    /// back to the queue: at once on the embedded broker, after their ack
    /// wait on a remote one or NATS.
    pub async fn serve_until<F, Fut>(
        &self,
        max_in_flight: usize,
        handler: F,
        stop: impl Future<Output = ()>,
    ) -> Result<(), Error>
    where
        F: Fn(Arc<Task>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, String>> + Send + 'static,
    {
        // The worker holds at most `max_in_flight` tasks unsettled: as many
        // handlers run at once, at most.
        let mut worker = self.queue.pull(max_in_flight).await?;
        let handler = Arc::new(handler);
        let last = self.queue.config().get_max_deliveries();
        let mut running = tokio::task::JoinSet::new();
        let mut stop = std::pin::pin!(stop);
        loop {
            let delivery = tokio::select! {
                delivery = worker.next_job() => delivery,
                () = &mut stop => None,
            };
            let Some(delivery) = delivery else { break };
            // Finished handlers' tasks are reaped as new ones start.
            while running.try_join_next().is_some() {}
            let broker = self.broker.clone();
            let handler = handler.clone();
            running.spawn(async move {
                let task = Arc::new(Task { delivery });
                let outcome = handler(task.clone()).await;
                let Ok(task) = Arc::try_unwrap(task) else {
                    // The handler kept the task: it cannot be settled; its
                    // lease runs out and it is delivered again.
                    return;
                };
                let _ = finish(&broker, task.delivery, outcome, last).await;
            });
        }
        // What was delivered and not started goes back now (the worker's
        // end tells the broker), what runs finishes.
        let error = worker.into_error();
        running.join_all().await;
        match error {
            Some(Error::Closed) | None => Ok(()),
            Some(error) => Err(error),
        }
    }
}

/// Publishes a task's result (or its final failure) and settles it.
async fn finish(
    broker: &Broker,
    delivery: Delivery,
    outcome: Result<Bytes, String>,
    last: Option<u32>,
) -> Result<(), Error> {
    let reply = delivery
        .header(REPLY_HEADER)
        .and_then(|reply| Subject::new(reply).ok());
    let result = |status: &str, payload: Bytes| {
        reply
            .clone()
            .map(|reply| crate::Message::new(reply, payload).with_header(STATUS_HEADER, status))
    };
    match outcome {
        Ok(output) => {
            if let Some(message) = result("ok", output) {
                broker.publish_message(message).await?;
                broker.flush().await?;
            }
            delivery.ack().await
        }
        Err(failure) => {
            let attempt = delivery.attempt();
            if last.is_some_and(|last| attempt >= last) {
                if let Some(message) = result("failed", Bytes::from(failure)) {
                    broker.publish_message(message).await?;
                    broker.flush().await?;
                }
                // The last delivery: the nak moves it to the dead letters.
                delivery.nak(Duration::ZERO).await
            } else {
                delivery.nak(Duration::from_millis(100) * attempt).await
            }
        }
    }
}
