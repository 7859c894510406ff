//! [`Broker`]: publish/subscribe, queue groups, request/reply and work
//! queues, with one API whatever the backend.
//!
//! * **Embedded** ([`Broker::new`], [`Broker::builder`]): the broker lives
//!   in this process; nothing to run. Work queues are kept in an embedded
//!   transactional store ([`BrokerBuilder::storage`]), in memory by default.
//! * **Served** ([`Broker::service`]): any sinew server offers an embedded
//!   broker to other processes, over sinew's protocol (tcp, unix, shm), and
//!   over gRPC on the same port when the server adds the gRPC protocol
//!   (`sinew broker` does).
//! * **Remote** ([`Broker::connect`]): a broker served by another process,
//!   behind the same methods.
//! * **NATS** ([`Broker::nats`], feature `nats`): a NATS server, core NATS
//!   for messages and JetStream for work queues; [`crate::nats`] says what
//!   differs.
//!
//! Each subscription has a bounded buffer and a [`SlowConsumer`] policy
//! that says what happens when it is full: the publisher waits
//! (`Backpressure`, the default: nothing is lost, memory stays bounded), the
//! oldest buffered message is dropped (`DropOldest`), or the subscription
//! is ended (`Disconnect`, as NATS does with a slow consumer). Drops and
//! disconnections are counted ([`Subscription::dropped`],
//! [`BrokerStats::slow_consumers`]), never logged per message. A remote
//! subscription's buffer is at the broker; between it and the subscriber,
//! the call's flow control carries the back-pressure, for a bounded time:
//! a remote subscriber that holds publishers back longer than
//! [`BrokerBuilder::remote_max_wait`] (10 s) is ended as a slow consumer,
//! so that no peer can stall a broker's publishers for good.
//!
//! Subscribers with the same queue group on a filter share its messages:
//! each message goes to one of them (round robin), while every plain
//! subscriber still gets its copy.
//!
//! What a publisher sends is checked before anyone sees it: the subject
//! ([`crate::subject`]), the payload's size (at most
//! [`BrokerBuilder::max_payload`], 1 MiB by default, as NATS), and each
//! header (a name of visible characters without `:`, a value without line
//! breaks). A message that breaks a rule is refused with an error saying
//! which; the broker and its subscribers are unaffected. A remote client
//! checks the same rules (with the limit the broker told it) before
//! sending.

use crate::embedded::{self, Embedded};
use crate::error::Error;
use crate::message::Message;
use crate::remote::{self, Remote};
use crate::subject::{Filter, Subject};
use crate::work::{self, QueueConfig, QueueStats, WorkQueue};
use bytes::Bytes;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// What a full subscription does with one more message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlowConsumer {
    /// The publisher waits until the subscriber takes one.
    #[default]
    Backpressure,
    /// The oldest buffered message is dropped (and counted).
    DropOldest,
    /// The subscription ends: its stream ends after what it holds, and
    /// [`Subscription::disconnected`] says so.
    Disconnect,
}

/// How a subscription buffers.
#[derive(Clone, Copy, Debug)]
pub struct SubscribeOptions {
    pub(crate) capacity: usize,
    pub(crate) policy: SlowConsumer,
    pub(crate) max_wait: Option<Duration>,
}

/// Messages a subscription buffers by default.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Messages a subscription buffers at most, whatever is asked: with the
/// largest payloads, 64 MiB per subscription.
pub const MAX_CAPACITY: usize = 65_536;

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            capacity: DEFAULT_CAPACITY,
            policy: SlowConsumer::Backpressure,
            max_wait: None,
        }
    }
}

impl SubscribeOptions {
    /// Messages buffered at most (default [`DEFAULT_CAPACITY`]; at least 1,
    /// at most [`MAX_CAPACITY`]).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.clamp(1, MAX_CAPACITY);
        self
    }

    /// What a full buffer does (default [`SlowConsumer::Backpressure`]).
    pub fn slow_consumer(mut self, policy: SlowConsumer) -> Self {
        self.policy = policy;
        self
    }

    /// Under [`SlowConsumer::Backpressure`], how long a publisher waits
    /// for room at most: then the subscription is ended as a slow consumer
    /// (default: for as long as it takes; a served broker bounds remote
    /// subscribers' wait, see [`BrokerBuilder::remote_max_wait`]; NATS
    /// never holds a publisher back).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }
}

/// A broker's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Messages published (refused ones not included).
    pub published: u64,
    /// Copies delivered to subscriptions.
    pub delivered: u64,
    /// Subscriptions now.
    pub subscriptions: u64,
    /// Subscriptions ended as slow consumers.
    pub slow_consumers: u64,
    /// Messages waiting in subscriptions' buffers now.
    pub buffered: u64,
    /// Messages dropped for slow subscribers (dropped oldest, or the one
    /// that disconnected a subscription; on NATS, also those the client
    /// dropped for a full subscription).
    pub dropped: u64,
    /// Each work queue's figures, by name.
    pub queues: Vec<QueueStats>,
}

/// The largest payload a broker takes by default: 1 MiB, as NATS.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// Settings of an embedded [`Broker`].
#[derive(Clone, Debug)]
pub struct BrokerBuilder {
    max_payload: usize,
    storage: Option<PathBuf>,
    fsync: work::FsyncPolicy,
    remote_max_wait: Duration,
}

/// Default [`BrokerBuilder::remote_max_wait`]: 10 seconds.
pub const DEFAULT_REMOTE_MAX_WAIT: Duration = Duration::from_secs(10);

impl BrokerBuilder {
    /// The largest payload published or pushed (default
    /// [`DEFAULT_MAX_PAYLOAD`]).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Keeps work queues in the file `path` (a redb database, created if
    /// missing), so that they outlive the process. By default they are in
    /// memory.
    pub fn storage(mut self, path: impl Into<PathBuf>) -> Self {
        self.storage = Some(path.into());
        self
    }

    /// When the store forces its writes to disk (default
    /// [`FsyncPolicy::Always`](work::FsyncPolicy::Always)).
    pub fn fsync(mut self, policy: work::FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// When served ([`Broker::service`]), how long publishers wait at most
    /// for a remote subscriber that holds them back (back-pressure, its
    /// buffer full): then it is ended as a slow consumer, so that no peer
    /// can stall the broker's publishers for good (default
    /// [`DEFAULT_REMOTE_MAX_WAIT`]; a subscriber may ask for less).
    pub fn remote_max_wait(mut self, wait: Duration) -> Self {
        self.remote_max_wait = wait;
        self
    }

    /// The broker; fails if the storage file cannot be opened.
    pub fn build(self) -> Result<Broker, Error> {
        let store = work::Store::open(self.storage.as_deref(), self.fsync, self.max_payload)?;
        Ok(Broker {
            backend: Backend::Embedded {
                engine: Embedded::new(self.max_payload),
                store,
            },
            remote_max_wait: self.remote_max_wait,
        })
    }
}

/// A broker: publish, subscribe, request, and work queues. Clones share
/// it. See the [module docs](self) for the backends.
#[derive(Clone, Debug)]
pub struct Broker {
    backend: Backend,
    /// See [`BrokerBuilder::remote_max_wait`].
    remote_max_wait: Duration,
}

#[derive(Clone, Debug)]
enum Backend {
    Embedded {
        engine: Embedded,
        store: work::Store,
    },
    Remote(Remote),
    #[cfg(feature = "nats")]
    Nats(crate::nats::Nats),
}

impl Default for Broker {
    fn default() -> Self {
        Broker::new()
    }
}

impl Broker {
    /// An embedded broker with the default settings, work queues in memory.
    pub fn new() -> Broker {
        Broker {
            backend: Backend::Embedded {
                engine: Embedded::new(DEFAULT_MAX_PAYLOAD),
                store: work::Store::in_memory(DEFAULT_MAX_PAYLOAD),
            },
            remote_max_wait: DEFAULT_REMOTE_MAX_WAIT,
        }
    }

    /// Settings of an embedded broker, then [`BrokerBuilder::build`].
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder {
            max_payload: DEFAULT_MAX_PAYLOAD,
            storage: None,
            fsync: work::FsyncPolicy::default(),
            remote_max_wait: DEFAULT_REMOTE_MAX_WAIT,
        }
    }

    /// The broker served at `address` (`tcp://host:port`, `unix://path`,
    /// `shm://name`, or `host:port`) by a sinew server.
    pub async fn connect(address: &str) -> Result<Broker, Error> {
        let channel = sinew_rpc::Channel::connect(address).await?;
        Broker::over(channel).await
    }

    /// The broker served at the other end of `channel` (a channel with the
    /// layers or options of your choosing).
    pub async fn over<S>(channel: S) -> Result<Broker, Error>
    where
        S: tower::Service<sinew_rpc::CallRequest, Response = sinew_rpc::CallResponse>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<sinew_rpc::call::BoxError>,
        S::Future: Send + 'static,
    {
        Ok(Broker {
            backend: Backend::Remote(Remote::new(channel).await?),
            remote_max_wait: DEFAULT_REMOTE_MAX_WAIT,
        })
    }

    /// A NATS server (`nats://host:port`, or several comma-separated) as
    /// the broker: core NATS for publish/subscribe and requests, JetStream
    /// for work queues (NATS 2.9 or later, started with `-js`). See
    /// [`crate::nats`] for what differs from the embedded broker.
    #[cfg(feature = "nats")]
    pub async fn nats(url: &str) -> Result<Broker, Error> {
        Ok(Broker {
            backend: Backend::Nats(crate::nats::Nats::connect(url).await?),
            remote_max_wait: DEFAULT_REMOTE_MAX_WAIT,
        })
    }

    /// The broker service offering this broker to other processes: add it
    /// to a sinew server (`Server::builder().add_service(broker.service())`).
    pub fn service(&self) -> impl sinew_rpc::Service {
        crate::proto::broker_server::BrokerServer::new(remote::Served::new(self.clone()))
    }

    /// The largest payload this broker takes.
    pub fn max_payload(&self) -> usize {
        match &self.backend {
            Backend::Embedded { engine, .. } => engine.max_payload(),
            Backend::Remote(remote) => remote.max_payload(),
            #[cfg(feature = "nats")]
            Backend::Nats(nats) => nats.max_payload(),
        }
    }

    /// Publishes `payload` to `subject`. Waits while a back-pressured
    /// subscription is full.
    pub async fn publish(&self, subject: &str, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.publish_message(Message::new(Subject::new(subject)?, payload))
            .await
    }

    /// Publishes `message` encoded to `subject`.
    pub async fn publish_proto<M: prost::Message>(
        &self,
        subject: &str,
        message: &M,
    ) -> Result<(), Error> {
        self.publish_message(Message::encode(Subject::new(subject)?, message))
            .await
    }

    /// Publishes a whole message (headers, a reply subject), or says why
    /// it was refused.
    ///
    /// On a remote broker, messages are streamed without waiting for each
    /// one's delivery (as NATS does): an error found by the broker after
    /// sending (which the rules checked here make rare) ends the stream,
    /// and is returned by the next publish or [`flush`](Broker::flush).
    pub async fn publish_message(&self, message: Message) -> Result<(), Error> {
        match &self.backend {
            Backend::Embedded { engine, .. } => engine.publish(message).await.map(drop),
            Backend::Remote(remote) => remote.publish(message).await,
            #[cfg(feature = "nats")]
            Backend::Nats(nats) => nats.publish(message).await,
        }
    }

    /// Waits until every message published so far through this handle has
    /// been delivered to the subscriptions' buffers (at once for an
    /// embedded broker).
    pub async fn flush(&self) -> Result<(), Error> {
        match &self.backend {
            Backend::Embedded { .. } => Ok(()),
            Backend::Remote(remote) => remote.flush().await,
            #[cfg(feature = "nats")]
            Backend::Nats(nats) => nats.flush().await,
        }
    }

    /// Every message published to a subject `filter` matches, from now on.
    pub async fn subscribe(&self, filter: &str) -> Result<Subscription, Error> {
        self.subscribe_with(filter, None, SubscribeOptions::default())
            .await
    }

    /// As [`subscribe`](Broker::subscribe), one of the queue group
    /// `group`: each message goes to one member of it.
    pub async fn queue_subscribe(&self, filter: &str, group: &str) -> Result<Subscription, Error> {
        self.subscribe_with(filter, Some(group), SubscribeOptions::default())
            .await
    }

    /// A subscription with its options (and queue group, if any). Once
    /// this returns, the subscription gets every message published after.
    pub async fn subscribe_with(
        &self,
        filter: &str,
        group: Option<&str>,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let filter = Filter::new(filter)?;
        if let Some(group) = group {
            // A group name is one token: the same rules as a subject's.
            Subject::new(group)?;
        }
        let source = match &self.backend {
            Backend::Embedded { engine, .. } => {
                Source::Embedded(engine.subscribe(filter, group, options))
            }
            Backend::Remote(remote) => {
                Source::Remote(Box::new(remote.subscribe(filter, group, options).await?))
            }
            #[cfg(feature = "nats")]
            Backend::Nats(nats) => {
                Source::Nats(Box::new(nats.subscribe(filter, group, options).await?))
            }
        };
        Ok(Subscription { source })
    }

    /// Sends a request and waits up to `timeout` for its first answer.
    pub async fn request(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Message, Error> {
        self.request_message(Message::new(Subject::new(subject)?, payload), timeout)
            .await
    }

    /// Sends `message` (headers and all; its reply subject is replaced by
    /// a new inbox) and waits up to `timeout` for its first answer.
    pub async fn request_message(
        &self,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, Error> {
        match &self.backend {
            Backend::Embedded { engine, .. } => engine.request(message, timeout).await,
            Backend::Remote(remote) => remote.request(message, timeout).await,
            #[cfg(feature = "nats")]
            Backend::Nats(nats) => nats.request(message, timeout).await,
        }
    }

    /// Answers `request` (a message with a reply subject) with `payload`.
    /// A request without a reply subject is answered by nothing.
    pub async fn respond(&self, request: &Message, payload: impl Into<Bytes>) -> Result<(), Error> {
        match &request.reply {
            Some(reply) => {
                self.publish_message(Message::new(reply.clone(), payload))
                    .await
            }
            None => Ok(()),
        }
    }

    /// The work queue `name`, created with `config` if it does not exist;
    /// if it does, its settings become `config`'s.
    pub async fn work_queue(&self, name: &str, config: QueueConfig) -> Result<WorkQueue, Error> {
        self.declare(name, Some(config)).await
    }

    /// The work queue `name` with the settings it has;
    /// [`Error::UnknownQueue`] if it was never created.
    pub async fn open_queue(&self, name: &str) -> Result<WorkQueue, Error> {
        self.declare(name, None).await
    }

    async fn declare(&self, name: &str, config: Option<QueueConfig>) -> Result<WorkQueue, Error> {
        let name = Subject::new(name)?;
        let config = match &self.backend {
            Backend::Embedded { store, .. } => store.declare(name.as_str(), config).await?,
            Backend::Remote(remote) => remote.declare(name.as_str(), config).await?,
            #[cfg(feature = "nats")]
            Backend::Nats(nats) => crate::nats::queue::declare(nats, name.as_str(), config).await?,
        };
        Ok(WorkQueue::new(name, config, self.queue_backend()))
    }

    fn queue_backend(&self) -> work::Backend {
        match &self.backend {
            Backend::Embedded { store, .. } => work::Backend::Embedded(store.clone()),
            Backend::Remote(remote) => work::Backend::Remote(remote.clone()),
            #[cfg(feature = "nats")]
            Backend::Nats(nats) => work::Backend::Nats(nats.clone()),
        }
    }

    /// See [`BrokerBuilder::remote_max_wait`].
    pub(crate) fn remote_max_wait(&self) -> Duration {
        self.remote_max_wait
    }

    /// Whether this is the NATS backend.
    pub(crate) fn is_nats(&self) -> bool {
        #[cfg(feature = "nats")]
        if let Backend::Nats(_) = &self.backend {
            return true;
        }
        false
    }

    /// A handle on the work queue `name` as it is, without declaring it
    /// (for the served broker: a queue the store does not know is refused
    /// at each call).
    pub(crate) fn existing_queue(&self, name: Subject) -> WorkQueue {
        WorkQueue::new(name, QueueConfig::default(), self.queue_backend())
    }

    /// An embedded broker's figures without waiting: its subscriptions'
    /// now, its work queues' as of at most a quarter of a second ago (what
    /// metrics read at each scrape). `None` for a remote or NATS broker
    /// (ask [`stats`](Broker::stats)).
    pub fn stats_now(&self) -> Option<BrokerStats> {
        match &self.backend {
            Backend::Embedded { engine, store } => Some(embedded_stats(engine, store.snapshot())),
            _ => None,
        }
    }

    /// The broker's figures now, its work queues' included.
    pub async fn stats(&self) -> Result<BrokerStats, Error> {
        match &self.backend {
            Backend::Embedded { engine, store } => {
                Ok(embedded_stats(engine, store.all_stats().await?))
            }
            Backend::Remote(remote) => remote.stats().await,
            #[cfg(feature = "nats")]
            Backend::Nats(nats) => nats.stats().await,
        }
    }
}

/// An embedded broker's figures: its subscriptions' now, with `queues`.
fn embedded_stats(engine: &Embedded, queues: Vec<QueueStats>) -> BrokerStats {
    let figures = engine.figures();
    BrokerStats {
        published: figures.published,
        delivered: figures.delivered,
        subscriptions: figures.subscriptions,
        slow_consumers: figures.slow_consumers,
        buffered: figures.buffered,
        dropped: figures.dropped,
        queues,
    }
}

/// Messages of one subscription, as a stream; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    source: Source,
}

#[derive(Debug)]
enum Source {
    Embedded(embedded::Receiver),
    Remote(Box<remote::RemoteSubscription>),
    #[cfg(feature = "nats")]
    Nats(Box<crate::nats::NatsSubscription>),
}

impl Subscription {
    /// The next message; `None` once the subscription ended (the broker is
    /// gone, it was disconnected as a slow consumer, or the connection to
    /// a remote broker was lost: [`error`](Subscription::error) says) and
    /// its buffer is empty.
    pub async fn next_message(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        match &mut self.source {
            Source::Embedded(receiver) => receiver.poll_message(cx),
            Source::Remote(remote) => remote.poll_message(cx),
            #[cfg(feature = "nats")]
            Source::Nats(nats) => nats.poll_message(cx),
        }
    }

    /// Messages dropped for this subscription (full under
    /// [`SlowConsumer::DropOldest`], or the one that disconnected it).
    pub fn dropped(&self) -> u64 {
        match &self.source {
            Source::Embedded(receiver) => receiver.dropped(),
            Source::Remote(remote) => remote.dropped(),
            #[cfg(feature = "nats")]
            Source::Nats(nats) => nats.dropped(),
        }
    }

    /// Whether it was ended as a slow consumer.
    pub fn disconnected(&self) -> bool {
        match &self.source {
            Source::Embedded(receiver) => receiver.disconnected(),
            Source::Remote(remote) => remote.disconnected(),
            #[cfg(feature = "nats")]
            Source::Nats(nats) => nats.disconnected(),
        }
    }

    /// Why a remote subscription ended otherwise than by the broker's
    /// choice (the connection lost, the server shutting down).
    pub fn error(&self) -> Option<&Error> {
        match &self.source {
            Source::Embedded(_) => None,
            Source::Remote(remote) => remote.error(),
            #[cfg(feature = "nats")]
            Source::Nats(_) => None,
        }
    }
}

impl futures_core::Stream for Subscription {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.get_mut().poll_message(cx)
    }
}
