//! Messaging for sinew: publish/subscribe over subjects with NATS
//! wildcards, queue groups, request/reply, and durable work queues, with
//! one API whatever the backend.
//!
//! * [`subject`]: [`Subject`]s messages are published to and [`Filter`]s
//!   subscriptions listen to (`orders.*.created`, `orders.>`), checked
//!   with a clear error for every rule broken.
//! * [`broker`]: the [`Broker`]: embedded in this process by default,
//!   served to other processes by any sinew server ([`Broker::service`]),
//!   reached in another process ([`Broker::connect`]), or a NATS server
//!   ([`Broker::nats`], [`nats`]). Bounded
//!   subscriptions with an explicit [`SlowConsumer`] policy (back-pressure
//!   the publisher, drop the oldest, or disconnect), counted, never a
//!   silent loss; queue groups; request/reply with a timeout.
//! * [`work`]: durable [`WorkQueue`]s, at least once: push with an
//!   idempotency id, pull with a limit of jobs in flight, ack, nak with a
//!   delay, in-progress, terminate; an ack wait, a dead-letter queue after
//!   the last delivery, ordering per key; kept in an embedded
//!   transactional store (redb).
//! * [`task`]: distributed tasks on a work queue: [`TaskQueue::submit`] a
//!   task and await its result; [`TaskQueue::serve`] runs a handler on the
//!   tasks, in as many processes as you like.
//! * [`message`]: the [`Message`] itself, and [`error`]: the [`Error`]
//!   every backend returns.
//!
//! ```
//! # async fn example() -> Result<(), sinew_messaging::Error> {
//! use sinew_messaging::{Broker, Job, QueueConfig};
//! let broker = Broker::new();
//! let mut created = broker.subscribe("orders.*.created").await?;
//! broker.publish("orders.eu.created", "order 17").await?;
//! let message = created.next_message().await.expect("delivered");
//! assert_eq!(message.payload, "order 17");
//!
//! let emails = broker.work_queue("emails", QueueConfig::default()).await?;
//! emails.push(Job::new("welcome, ada").id("signup-ada")).await?;
//! let mut worker = emails.pull(8).await?;
//! let job = worker.next_job().await.expect("a job");
//! assert_eq!(job.payload(), "welcome, ada");
//! job.ack().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod broker;
mod embedded;
pub mod error;
pub mod message;
#[cfg(feature = "nats")]
pub mod nats;
mod proto;
mod remote;
pub mod subject;
pub mod task;
pub mod work;

/// Locks `mutex`, whatever a panicking holder left behind: the data
/// guarded here (queues, waiters, figures) stays consistent between
/// statements, so a poisoned lock is no reason to fail every caller after.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

pub use broker::{
    Broker, BrokerBuilder, BrokerStats, SlowConsumer, SubscribeOptions, Subscription,
};
pub use error::Error;
pub use message::Message;
pub use subject::{Filter, Subject, SubjectError};
pub use task::{Pending, Task, TaskError, TaskQueue};
pub use work::{Delivery, FsyncPolicy, Job, Pushed, QueueConfig, QueueStats, WorkQueue, Worker};
