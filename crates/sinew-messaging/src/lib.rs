//! Messaging for sinew: publish/subscribe over subjects with NATS
//! wildcards, queue groups, request/reply.
//!
//! * [`subject`]: [`Subject`]s messages are published to and [`Filter`]s
//!   subscriptions listen to (`orders.*.created`, `orders.>`), checked
//!   with a clear error for every rule broken.
//! * [`broker`]: the embedded [`Broker`], in this process: bounded
//!   subscriptions with an explicit [`SlowConsumer`] policy (back-pressure
//!   the publisher, drop the oldest, or disconnect), counted, never a
//!   silent loss; queue groups; request/reply with a timeout.
//!
//! ```
//! # async fn example() -> Result<(), sinew_messaging::broker::Error> {
//! use sinew_messaging::Broker;
//! let broker = Broker::new();
//! let mut created = broker.subscribe("orders.*.created")?;
//! broker.publish("orders.eu.created", "order 17").await?;
//! let message = created.next_message().await.expect("delivered");
//! assert_eq!(message.payload, "order 17");
//! # Ok(()) }
//! ```
//!
//! The same API is to be served by any sinew server (so that processes on
//! several machines share a broker), backed by NATS, and extended with
//! durable work queues and distributed tasks (issue 18).

#![forbid(unsafe_code)]

pub mod broker;
pub mod subject;

pub use broker::{
    Broker, BrokerBuilder, BrokerStats, Message, SlowConsumer, SubscribeOptions, Subscription,
};
pub use subject::{Filter, Subject, SubjectError};
