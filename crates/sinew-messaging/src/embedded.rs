//! The embedded broker's engine, in this process: the subscriptions'
//! bounded buffers, delivery to plain subscribers and queue groups, and
//! request/reply. [`Broker`](crate::Broker) is its public face.
//!
//! A publisher offers a message to each target's buffer under that
//! buffer's lock; when a buffer is full, the subscription's
//! [`SlowConsumer`] policy decides (wait, drop the oldest, disconnect).
//! The list of subscriptions has a lock of its own, held only to pick the
//! targets, never while waiting.

use crate::broker::{SlowConsumer, SubscribeOptions};
use crate::error::Error;
use crate::lock;
use crate::message::Message;
use crate::subject::{Filter, Subject};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::Notify;

/// One subscription's buffer, shared by the broker and the subscriber.
#[derive(Debug)]
struct Queue {
    state: Mutex<QueueState>,
    /// Woken when the subscriber takes a message (a waiting publisher).
    writable: Notify,
    capacity: usize,
    policy: SlowConsumer,
    /// Under back-pressure, how long a publisher waits for room before the
    /// subscription is disconnected as a slow consumer (none: for ever).
    max_wait: Option<Duration>,
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

/// What offering a message to a queue did.
enum Offered {
    Taken,
    /// Full, under back-pressure: wait and offer again.
    Full(Message),
    Closed,
}

impl Queue {
    fn new(options: SubscribeOptions) -> Queue {
        Queue {
            state: Mutex::new(QueueState::default()),
            writable: Notify::new(),
            capacity: options.capacity,
            policy: options.policy,
            max_wait: options.max_wait,
            dropped: AtomicU64::new(0),
        }
    }

    /// Offers `message`, waiting for room under back-pressure; whether
    /// the queue took it (false: it is closed, or disconnected now).
    async fn offer_waiting(&self, mut message: Message) -> bool {
        loop {
            // Registered before offering, so that a take in between wakes
            // this publisher.
            let writable = self.writable.notified();
            tokio::pin!(writable);
            writable.as_mut().enable();
            match self.offer(message) {
                Offered::Taken => return true,
                Offered::Closed => return false,
                Offered::Full(back) => {
                    message = back;
                    match self.max_wait {
                        None => writable.await,
                        Some(wait) => {
                            if tokio::time::timeout(wait, writable).await.is_err() {
                                // Held the publisher too long: a slow
                                // consumer, ended (the message counted as
                                // the one it dropped).
                                let mut state = lock(&self.state);
                                state.disconnected = true;
                                let reader = state.close();
                                drop(state);
                                self.dropped.fetch_add(1, Ordering::Relaxed);
                                wake(reader);
                                return false;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Makes room for one more message under the policy (the caller
    /// holds the lock): whether there is room now.
    fn make_room(&self, state: &mut QueueState) -> Room {
        if state.messages.len() < self.capacity {
            return Room::Yes;
        }
        match self.policy {
            SlowConsumer::Backpressure => Room::Full,
            SlowConsumer::DropOldest => {
                state.messages.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Room::Yes
            }
            SlowConsumer::Disconnect => {
                state.disconnected = true;
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Room::Disconnected(state.close())
            }
        }
    }

    fn offer(&self, message: Message) -> Offered {
        let mut state = lock(&self.state);
        if state.closed {
            return Offered::Closed;
        }
        match self.make_room(&mut state) {
            Room::Yes => {}
            Room::Full => return Offered::Full(message),
            Room::Disconnected(reader) => {
                drop(state);
                wake(reader);
                return Offered::Closed;
            }
        }
        state.messages.push_back(message);
        let reader = state.reader.take();
        drop(state);
        wake(reader);
        Offered::Taken
    }
}

/// Whether a queue has room for one more message.
enum Room {
    Yes,
    Full,
    /// The policy ended the subscription; its reader to wake.
    Disconnected(Option<Waker>),
}

fn wake(reader: Option<Waker>) {
    if let Some(reader) = reader {
        reader.wake();
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
    /// Drops of subscriptions that are gone (the live ones count their
    /// own).
    dropped_before: AtomicU64,
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

/// The embedded broker's engine. Clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Embedded {
    inner: Arc<Inner>,
}

/// The figures of the engine (see [`BrokerStats`](crate::BrokerStats)).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Figures {
    pub(crate) published: u64,
    pub(crate) delivered: u64,
    pub(crate) subscriptions: u64,
    pub(crate) slow_consumers: u64,
    pub(crate) buffered: u64,
    pub(crate) dropped: u64,
}

impl Embedded {
    pub(crate) fn new(max_payload: usize) -> Embedded {
        Embedded {
            inner: Arc::new(Inner {
                max_payload,
                published: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                entries: Mutex::default(),
                next_id: AtomicU64::new(0),
                cursor: AtomicUsize::new(0),
                slow_consumers: AtomicU64::new(0),
                inbox: AtomicU64::new(0),
                dropped_before: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    pub(crate) fn figures(&self) -> Figures {
        let entries = lock(&self.inner.entries);
        let buffered = entries
            .iter()
            .map(|entry| lock(&entry.queue.state).messages.len() as u64)
            .sum();
        let dropped = entries
            .iter()
            .map(|entry| entry.queue.dropped.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.inner.dropped_before.load(Ordering::Relaxed);
        Figures {
            published: self.inner.published.load(Ordering::Relaxed),
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            subscriptions: entries.len() as u64,
            slow_consumers: self.inner.slow_consumers.load(Ordering::Relaxed),
            buffered,
            dropped,
        }
    }

    /// A subscription to `filter` (checked), in `group` (checked) if any.
    pub(crate) fn subscribe(
        &self,
        filter: Filter,
        group: Option<&str>,
        options: SubscribeOptions,
    ) -> Receiver {
        let queue = Arc::new(Queue::new(options));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.entries).push(Entry {
            id,
            filter,
            group: group.map(Arc::from),
            queue: queue.clone(),
        });
        Receiver {
            broker: Arc::downgrade(&self.inner),
            id,
            queue,
        }
    }

    /// Publishes a message (checked here); returns how many subscriptions
    /// took it. Waits while a back-pressured subscription is full.
    pub(crate) async fn publish(&self, message: Message) -> Result<usize, Error> {
        message.check(self.inner.max_payload)?;
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
            if queue.offer_waiting(message.clone()).await {
                delivered += 1;
            } else if lock(&queue.state).disconnected {
                self.forget(&queue);
            }
        }
        delivered
    }

    /// Publishes `message` as a request (its reply subject set to a new
    /// inbox) and waits up to `timeout` for its first answer.
    pub(crate) async fn request(
        &self,
        mut message: Message,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let number = self.inner.inbox.fetch_add(1, Ordering::Relaxed);
        let inbox = Subject::new(&format!("_INBOX.{number}"))?;
        let mut answers = self.subscribe(
            Filter::from(inbox.clone()),
            None,
            SubscribeOptions::default().capacity(1),
        );
        let subject = message.subject.clone();
        message.reply = Some(inbox);
        // The publish counts in the timeout: a request waiting for room in
        // a back-pressured subscription does not outlive its deadline.
        let asked = async {
            if self.publish(message).await? == 0 {
                return Err(Error::NoResponders(subject.clone()));
            }
            Ok(answers.next_message().await)
        };
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(Some(answer))) => Ok(answer),
            Ok(Err(error)) => Err(error),
            Ok(Ok(None)) | Err(_) => Err(Error::TimedOut { subject, timeout }),
        }
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
            self.inner
                .dropped_before
                .fetch_add(queue.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// The subscriber's end of one subscription; dropping it unsubscribes.
#[derive(Debug)]
pub(crate) struct Receiver {
    broker: std::sync::Weak<Inner>,
    id: u64,
    queue: Arc<Queue>,
}

impl Receiver {
    /// The next message; `None` once the subscription ended (the broker is
    /// gone, or it was disconnected as a slow consumer) and its buffer is
    /// empty.
    pub(crate) async fn next_message(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    pub(crate) fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
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
    pub(crate) fn dropped(&self) -> u64 {
        self.queue.dropped.load(Ordering::Relaxed)
    }

    /// Whether it was ended as a slow consumer.
    pub(crate) fn disconnected(&self) -> bool {
        lock(&self.queue.state).disconnected
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = lock(&self.queue.state).close();
        // A publisher waiting on this subscription's room goes on.
        self.queue.writable.notify_waiters();
        if let Some(inner) = self.broker.upgrade() {
            let mut entries = lock(&inner.entries);
            let before = entries.len();
            entries.retain(|entry| entry.id != self.id);
            if entries.len() < before {
                inner
                    .dropped_before
                    .fetch_add(self.dropped(), Ordering::Relaxed);
            }
        }
    }
}
