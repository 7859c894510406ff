//! [`Broker`]: the embedded broker, in this process: publish, subscribe,
//! queue groups, request/reply.
//!
//! Each subscription has a bounded buffer and a [`SlowConsumer`] policy
//! that says what happens when it is full: the publisher waits
//! (`Backpressure`, the default: nothing is lost, memory stays bounded), the
//! oldest buffered message is dropped (`DropOldest`), or the subscription
//! is ended (`Disconnect`, as NATS does with a slow consumer). Drops and
//! disconnections are counted ([`Subscription::dropped`],
//! [`Broker::slow_consumers`]), never logged per message.
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
//! which; the broker and its subscribers are unaffected.

use crate::subject::{Filter, Subject, SubjectError};
use bytes::Bytes;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::Notify;

/// A message: its subject, where to reply (for a request), headers and
/// payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// What it was published to.
    pub subject: Subject,
    /// Where the publisher waits for an answer, for a request.
    pub reply: Option<Subject>,
    /// Headers, in the order added (names may repeat).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub payload: Bytes,
}

impl Message {
    /// A message to `subject` with `payload`, no headers, no reply.
    pub fn new(subject: Subject, payload: impl Into<Bytes>) -> Message {
        Message {
            subject,
            reply: None,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Adds a header (checked when the message is published).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A message to `subject` whose payload is `message`, encoded.
    pub fn encode<M: prost::Message>(subject: Subject, message: &M) -> Message {
        Message::new(subject, message.encode_to_vec())
    }

    /// The payload, decoded as an `M`.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.payload.clone())
    }
}

/// Checks a header: a name of visible characters without `:`, a value
/// without line breaks or other control characters (tab allowed).
fn check_header(name: &str, value: &str) -> Result<(), Error> {
    let bad_name = name.is_empty()
        || name
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control());
    let bad_value = value.chars().any(|c| c.is_control() && c != '\t');
    if bad_name || bad_value {
        return Err(Error::InvalidHeader {
            name: name.chars().take(80).collect(),
            reason: if bad_name {
                "a header name is visible characters, without `:`"
            } else {
                "a header value has no line break or other control character"
            },
        });
    }
    Ok(())
}

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
    capacity: usize,
    policy: SlowConsumer,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            capacity: 1024,
            policy: SlowConsumer::Backpressure,
        }
    }
}

impl SubscribeOptions {
    /// Messages buffered at most (default 1,024; at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// What a full buffer does (default [`SlowConsumer::Backpressure`]).
    pub fn slow_consumer(mut self, policy: SlowConsumer) -> Self {
        self.policy = policy;
        self
    }
}

/// Why a call to the broker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A subject or filter broke a rule.
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// A request found nobody subscribed to its subject.
    #[error("no responders for {0}")]
    NoResponders(Subject),
    /// The payload is larger than the broker takes.
    #[error("a payload of {size} bytes is over the broker's limit of {max}")]
    PayloadTooLarge {
        /// The payload's size.
        size: usize,
        /// The limit ([`BrokerBuilder::max_payload`]).
        max: usize,
    },
    /// A header broke a rule.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header's name (cut to 80 characters).
        name: String,
        /// The rule.
        reason: &'static str,
    },
    /// A request's answer did not come in time.
    #[error("no answer to a request on {subject} within {timeout:?}")]
    TimedOut {
        /// The request's subject.
        subject: Subject,
        /// How long it waited.
        timeout: Duration,
    },
}

/// One subscription's buffer, shared by the broker and the subscriber.
#[derive(Debug)]
struct Queue {
    state: Mutex<QueueState>,
    /// Woken when the subscriber takes a message (a waiting publisher).
    writable: Notify,
    capacity: usize,
    policy: SlowConsumer,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct QueueState {
    messages: VecDeque<Message>,
    /// No more messages: the subscriber left, or was disconnected.
    closed: bool,
    disconnected: bool,
    /// The subscriber, waiting for a message (woken by one, or the end).
    reader: Option<Waker>,
}

impl QueueState {
    /// Ends the queue; returns the reader to wake (after the lock).
    fn close(&mut self) -> Option<Waker> {
        self.closed = true;
        self.reader.take()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// What offering a message to a queue did.
enum Offered {
    Taken,
    /// Full, under back-pressure: wait and offer again.
    Full(Message),
    Closed,
}

impl Queue {
    fn offer(&self, message: Message) -> Offered {
        let mut state = lock(&self.state);
        if state.closed {
            return Offered::Closed;
        }
        if state.messages.len() >= self.capacity {
            match self.policy {
                SlowConsumer::Backpressure => return Offered::Full(message),
                SlowConsumer::DropOldest => {
                    state.messages.pop_front();
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                SlowConsumer::Disconnect => {
                    state.disconnected = true;
                    let reader = state.close();
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    drop(state);
                    if let Some(reader) = reader {
                        reader.wake();
                    }
                    return Offered::Closed;
                }
            }
        }
        state.messages.push_back(message);
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
        Offered::Taken
    }
}

/// A subscription the broker delivers to.
#[derive(Debug)]
struct Entry {
    id: u64,
    filter: Filter,
    group: Option<Arc<str>>,
    queue: Arc<Queue>,
}

#[derive(Debug)]
struct Inner {
    max_payload: usize,
    published: AtomicU64,
    delivered: AtomicU64,
    entries: Mutex<Vec<Entry>>,
    next_id: AtomicU64,
    /// Round-robin position of the queue groups.
    cursor: AtomicUsize,
    slow_consumers: AtomicU64,
    inbox: AtomicU64,
}

impl Drop for Inner {
    /// The broker is gone: every subscription ends once its buffer is read.
    fn drop(&mut self) {
        for entry in lock(&self.entries).drain(..) {
            let reader = lock(&entry.queue.state).close();
            if let Some(reader) = reader {
                reader.wake();
            }
        }
    }
}

/// The embedded broker. Clones share it.
#[derive(Clone, Debug)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl Default for Broker {
    fn default() -> Self {
        Broker::builder().build()
    }
}

/// The largest payload a broker takes by default: 1 MiB, as NATS.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// Settings of a [`Broker`].
#[derive(Clone, Debug)]
pub struct BrokerBuilder {
    max_payload: usize,
}

impl BrokerBuilder {
    /// The largest payload published (default [`DEFAULT_MAX_PAYLOAD`]).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// The broker.
    pub fn build(self) -> Broker {
        Broker {
            inner: Arc::new(Inner {
                max_payload: self.max_payload,
                published: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                entries: Mutex::default(),
                next_id: AtomicU64::new(0),
                cursor: AtomicUsize::new(0),
                slow_consumers: AtomicU64::new(0),
                inbox: AtomicU64::new(0),
            }),
        }
    }
}

/// A broker's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
}

impl Broker {
    /// A broker with the default settings and no subscription.
    pub fn new() -> Broker {
        Broker::default()
    }

    /// Settings, then [`BrokerBuilder::build`].
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder {
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }

    /// The broker's figures now.
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            published: self.inner.published.load(Ordering::Relaxed),
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            subscriptions: self.subscriptions() as u64,
            slow_consumers: self.slow_consumers(),
        }
    }

    /// Publishes `message` encoded to `subject`; returns how many
    /// subscriptions took it.
    pub async fn publish_proto<M: prost::Message>(
        &self,
        subject: &str,
        message: &M,
    ) -> Result<usize, Error> {
        self.publish_message(Message::encode(Subject::new(subject)?, message))
            .await
    }

    /// Every message published to a subject `filter` matches, from now on.
    pub fn subscribe(&self, filter: &str) -> Result<Subscription, Error> {
        self.subscribe_with(filter, None, SubscribeOptions::default())
    }

    /// As [`subscribe`](Broker::subscribe), one of the queue group
    /// `group`: each message goes to one member of it.
    pub fn queue_subscribe(&self, filter: &str, group: &str) -> Result<Subscription, Error> {
        self.subscribe_with(filter, Some(group), SubscribeOptions::default())
    }

    /// A subscription with its options (and queue group, if any).
    pub fn subscribe_with(
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
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            writable: Notify::new(),
            capacity: options.capacity,
            policy: options.policy,
            dropped: AtomicU64::new(0),
        });
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.entries).push(Entry {
            id,
            filter,
            group: group.map(Arc::from),
            queue: queue.clone(),
        });
        Ok(Subscription {
            broker: Arc::downgrade(&self.inner),
            id,
            queue,
        })
    }

    /// Publishes `payload` to `subject`; returns how many subscriptions
    /// took it. Waits while a back-pressured subscription is full.
    pub async fn publish(&self, subject: &str, payload: impl Into<Bytes>) -> Result<usize, Error> {
        let message = Message::new(Subject::new(subject)?, payload);
        self.publish_message(message).await
    }

    /// Publishes a whole message (headers, a reply subject); returns how
    /// many subscriptions took it, or why it was refused.
    pub async fn publish_message(&self, message: Message) -> Result<usize, Error> {
        if message.payload.len() > self.inner.max_payload {
            return Err(Error::PayloadTooLarge {
                size: message.payload.len(),
                max: self.inner.max_payload,
            });
        }
        for (name, value) in &message.headers {
            check_header(name, value)?;
        }
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let delivered = self.deliver(message).await;
        self.inner
            .delivered
            .fetch_add(delivered as u64, Ordering::Relaxed);
        Ok(delivered)
    }

    /// Offers `message` to every target; how many took it.
    async fn deliver(&self, message: Message) -> usize {
        let targets = self.targets(&message.subject);
        let mut delivered = 0;
        for queue in targets {
            let mut message = message.clone();
            loop {
                // Registered before offering, so that a take in between
                // wakes this publisher.
                let writable = queue.writable.notified();
                tokio::pin!(writable);
                writable.as_mut().enable();
                match queue.offer(message) {
                    Offered::Taken => {
                        delivered += 1;
                        break;
                    }
                    Offered::Closed => {
                        if lock(&queue.state).disconnected {
                            self.forget(&queue);
                        }
                        break;
                    }
                    Offered::Full(back) => {
                        message = back;
                        writable.await;
                    }
                }
            }
        }
        delivered
    }

    /// Sends a request and waits up to `timeout` for its first answer.
    pub async fn request(
        &self,
        subject: &str,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let subject = Subject::new(subject)?;
        let number = self.inner.inbox.fetch_add(1, Ordering::Relaxed);
        let inbox = Subject::new(&format!("_INBOX.{number}"))?;
        let mut answers = self.subscribe(inbox.as_str())?;
        let mut message = Message::new(subject.clone(), payload);
        message.reply = Some(inbox);
        if self.publish_message(message).await? == 0 {
            return Err(Error::NoResponders(subject));
        }
        match tokio::time::timeout(timeout, answers.next_message()).await {
            Ok(Some(answer)) => Ok(answer),
            _ => Err(Error::TimedOut { subject, timeout }),
        }
    }

    /// Subscriptions ended as slow consumers so far.
    pub fn slow_consumers(&self) -> u64 {
        self.inner.slow_consumers.load(Ordering::Relaxed)
    }

    /// Subscriptions now.
    pub fn subscriptions(&self) -> usize {
        lock(&self.inner.entries).len()
    }

    /// The queues a message to `subject` goes to: every plain subscription
    /// that matches, and one member of each matching queue group.
    fn targets(&self, subject: &Subject) -> Vec<Arc<Queue>> {
        let entries = lock(&self.inner.entries);
        let mut plain = Vec::new();
        let mut groups: Vec<(&Arc<str>, Vec<&Arc<Queue>>)> = Vec::new();
        for entry in entries.iter().filter(|entry| entry.filter.matches(subject)) {
            match &entry.group {
                None => plain.push(entry.queue.clone()),
                Some(group) => match groups.iter_mut().find(|(name, _)| *name == group) {
                    Some((_, members)) => members.push(&entry.queue),
                    None => groups.push((group, vec![&entry.queue])),
                },
            }
        }
        let turn = self.inner.cursor.fetch_add(1, Ordering::Relaxed);
        for (_, members) in groups {
            plain.push(members[turn % members.len()].clone());
        }
        plain
    }

    /// Removes a disconnected subscription (counted once).
    fn forget(&self, queue: &Arc<Queue>) {
        let mut entries = lock(&self.inner.entries);
        let before = entries.len();
        entries.retain(|entry| !Arc::ptr_eq(&entry.queue, queue));
        if entries.len() < before {
            self.inner.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Messages of one subscription, as a stream; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    broker: std::sync::Weak<Inner>,
    id: u64,
    queue: Arc<Queue>,
}

impl Subscription {
    /// The next message; `None` once the subscription ended (the broker is
    /// gone, or it was disconnected as a slow consumer) and its buffer is
    /// empty.
    pub async fn next_message(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        // Checked and registered under the lock a publisher takes to add a
        // message: no message or end can slip in between.
        let mut state = lock(&self.queue.state);
        if let Some(message) = state.messages.pop_front() {
            drop(state);
            self.queue.writable.notify_waiters();
            return Poll::Ready(Some(message));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        state.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Messages dropped for this subscription (full under
    /// [`SlowConsumer::DropOldest`], or the one that disconnected it).
    pub fn dropped(&self) -> u64 {
        self.queue.dropped.load(Ordering::Relaxed)
    }

    /// Whether it was ended as a slow consumer.
    pub fn disconnected(&self) -> bool {
        lock(&self.queue.state).disconnected
    }
}

impl futures_core::Stream for Subscription {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.get_mut().poll_message(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = lock(&self.queue.state).close();
        // A publisher waiting on this subscription's room goes on.
        self.queue.writable.notify_waiters();
        if let Some(inner) = self.broker.upgrade() {
            lock(&inner.entries).retain(|entry| entry.id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const WAIT: Duration = Duration::from_secs(5);

    async fn next(subscription: &mut Subscription) -> Message {
        tokio::time::timeout(WAIT, subscription.next_message())
            .await
            .expect("a message in time")
            .expect("the subscription goes on")
    }

    #[tokio::test]
    async fn messages_reach_every_matching_subscription_and_no_other() {
        let broker = Broker::new();
        let mut all = broker.subscribe("orders.>").unwrap();
        let mut created = broker.subscribe("orders.*.created").unwrap();
        let mut other = broker.subscribe("invoices.>").unwrap();
        assert_eq!(broker.publish("orders.eu.created", "1").await.unwrap(), 2);
        assert_eq!(broker.publish("orders.eu.paid", "2").await.unwrap(), 1);
        assert_eq!(next(&mut all).await.payload, "1");
        assert_eq!(next(&mut all).await.payload, "2");
        let message = next(&mut created).await;
        assert_eq!(message.subject.as_str(), "orders.eu.created");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), other.next_message())
                .await
                .is_err()
        );
        // Dropping a subscription unsubscribes it.
        drop(other);
        assert_eq!(broker.subscriptions(), 2);
    }

    #[tokio::test]
    async fn a_queue_group_shares_the_messages_and_plain_subscribers_get_them_all() {
        let broker = Broker::new();
        let mut members: Vec<Subscription> = (0..3)
            .map(|_| broker.queue_subscribe("jobs.>", "workers").unwrap())
            .collect();
        let mut audit = broker.subscribe("jobs.>").unwrap();
        for n in 0..30 {
            assert_eq!(
                broker.publish("jobs.resize", n.to_string()).await.unwrap(),
                2
            );
        }
        let mut seen = Vec::new();
        for member in &mut members {
            let mut mine = 0;
            while let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_millis(20), member.next_message()).await
            {
                seen.push(message.payload);
                mine += 1;
            }
            assert_eq!(mine, 10, "round robin over three members");
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 30, "each message to exactly one member");
        for _ in 0..30 {
            next(&mut audit).await;
        }
    }

    #[tokio::test]
    async fn a_full_subscription_drops_its_oldest_when_told_to() {
        let broker = Broker::new();
        let options = SubscribeOptions::default()
            .capacity(2)
            .slow_consumer(SlowConsumer::DropOldest);
        let mut slow = broker.subscribe_with("ticks", None, options).unwrap();
        for n in 0..5 {
            broker.publish("ticks", n.to_string()).await.unwrap();
        }
        assert_eq!(slow.dropped(), 3);
        assert_eq!(next(&mut slow).await.payload, "3");
        assert_eq!(next(&mut slow).await.payload, "4");
    }

    #[tokio::test]
    async fn a_slow_consumer_is_disconnected_when_told_to_and_counted() {
        let broker = Broker::new();
        let options = SubscribeOptions::default()
            .capacity(2)
            .slow_consumer(SlowConsumer::Disconnect);
        let mut slow = broker.subscribe_with("ticks", None, options).unwrap();
        let _fast = broker.subscribe("ticks").unwrap();
        for n in 0..3 {
            broker.publish("ticks", n.to_string()).await.unwrap();
        }
        assert!(slow.disconnected());
        assert_eq!(broker.slow_consumers(), 1);
        assert_eq!(broker.subscriptions(), 1);
        // What it held, then the end.
        let held: Vec<Message> = (&mut slow).collect().await;
        assert_eq!(held.len(), 2);
        assert_eq!(broker.publish("ticks", "3").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn under_backpressure_the_publisher_waits_and_nothing_is_lost() {
        let broker = Broker::new();
        let options = SubscribeOptions::default().capacity(1);
        let mut subscription = broker.subscribe_with("work", None, options).unwrap();
        broker.publish("work", "0").await.unwrap();
        let publisher = {
            let broker = broker.clone();
            tokio::spawn(async move {
                for n in 1..100 {
                    broker.publish("work", n.to_string()).await.unwrap();
                }
            })
        };
        // Full: the publisher cannot finish until this side reads.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!publisher.is_finished());
        for n in 0..100 {
            assert_eq!(next(&mut subscription).await.payload, n.to_string());
        }
        publisher.await.unwrap();
        assert_eq!(subscription.dropped(), 0);
        // A subscriber that leaves releases a waiting publisher.
        broker.publish("work", "x").await.unwrap();
        let blocked = {
            let broker = broker.clone();
            tokio::spawn(async move { broker.publish("work", "y").await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(subscription);
        assert_eq!(
            tokio::time::timeout(WAIT, blocked).await.unwrap().unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn a_request_gets_its_answer_or_says_why_not() {
        let broker = Broker::new();
        let mut service = broker.subscribe("time.now").unwrap();
        let responder = {
            let broker = broker.clone();
            tokio::spawn(async move {
                let request = service.next_message().await.unwrap();
                let mut answer = Message::new(request.reply.unwrap(), "noon");
                answer.headers.push(("served-by".into(), "clock".into()));
                broker.publish_message(answer).await.unwrap();
                // The next request gets no answer.
                let _ignored = service.next_message().await;
            })
        };
        let answer = broker.request("time.now", "?", WAIT).await.unwrap();
        assert_eq!(answer.payload, "noon");
        assert_eq!(answer.header("served-by"), Some("clock"));
        let silent = broker
            .request("time.now", "?", Duration::from_millis(20))
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

    #[tokio::test]
    async fn bad_subjects_are_refused_and_the_broker_goes_on() {
        let broker = Broker::new();
        let mut ok = broker.subscribe("a.b").unwrap();
        for error in [
            broker.publish("a..b", "x").await.unwrap_err(),
            broker.publish("a.*", "x").await.unwrap_err(),
            broker.subscribe("a.>.b").unwrap_err(),
            broker.queue_subscribe("a.b", "two words").unwrap_err(),
        ] {
            assert!(matches!(error, Error::Subject(_)), "{error}");
        }
        broker.publish("a.b", "fine").await.unwrap();
        assert_eq!(next(&mut ok).await.payload, "fine");
    }

    #[tokio::test]
    async fn subscriptions_end_when_the_broker_is_gone() {
        let broker = Broker::new();
        let mut subscription = broker.subscribe("x").unwrap();
        broker.publish("x", "last").await.unwrap();
        drop(broker);
        assert_eq!(next(&mut subscription).await.payload, "last");
        let end = tokio::time::timeout(WAIT, subscription.next_message()).await;
        assert_eq!(end.unwrap(), None);
    }

    #[tokio::test]
    async fn oversize_payloads_and_bad_headers_are_refused_and_counted_nowhere() {
        let broker = Broker::builder().max_payload(16).build();
        let mut subscription = broker.subscribe("in").unwrap();
        let big = broker.publish("in", vec![0u8; 17]).await.unwrap_err();
        assert!(
            matches!(big, Error::PayloadTooLarge { size: 17, max: 16 }),
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
        assert_eq!(broker.publish_message(fine).await.unwrap(), 1);
        assert_eq!(
            next(&mut subscription).await.header("trace-id"),
            Some("7\tb")
        );
        let stats = broker.stats();
        assert_eq!(
            (stats.published, stats.delivered, stats.subscriptions),
            (1, 1, 1)
        );
    }

    #[tokio::test]
    async fn protobuf_messages_go_through_encoded_and_come_out_decoded() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Order {
            #[prost(uint64, tag = "1")]
            id: u64,
            #[prost(string, tag = "2")]
            item: String,
        }
        let broker = Broker::new();
        let mut orders = broker.subscribe("orders.>").unwrap();
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
}
