//! The NATS backend: the same [`Broker`](crate::Broker) API on a NATS
//! server, through the `async-nats` client. Core NATS carries
//! publish/subscribe, queue groups and request/reply; JetStream carries
//! the work queues.
//!
//! What differs from the embedded broker, because NATS is built so:
//! * A NATS publisher is never held back by a subscriber (core NATS is at
//!   most once). Messages wait in the client's own buffer for the
//!   subscription (65,536 messages, as async-nats has it); each time the
//!   subscriber reads, what has arrived moves to the subscription's
//!   bounded buffer under its [`SlowConsumer`] policy:
//!   the oldest dropped (`DropOldest`), the subscription ended if it does
//!   not fit (`Disconnect`), or left in the client's buffer (`Backpressure`),
//!   which when full drops what comes (counted in
//!   [`BrokerStats::dropped`](crate::BrokerStats::dropped), never logged
//!   per message).
//! * Figures are what this client saw: its publishes, its subscriptions'
//!   deliveries.
//! * Headers keep their order within a name, not across names (NATS
//!   headers are a map).
//!
//! ## Work queues on JetStream
//!
//! One stream per queue (work-queue retention, file storage), one durable
//! pull consumer per queue shared by every worker (never one consumer per worker: overlapping consumers on a
//! work-queue stream are refused, nats-server#4957), and a worker task
//! per [`Worker`](crate::Worker) that fetches only as many jobs as it has
//! room for.
//!
//! | sinew | JetStream |
//! |---|---|
//! | queue `emails.eu` | stream `SINEW_Q_emails_2eeu` (`.` and `_` escaped), subject `sinew.queue.emails.eu` |
//! | idempotency id | `Nats-Msg-Id`, the stream's duplicate window |
//! | ack wait | the consumer's `ack_wait` |
//! | max deliveries, dead-letter queue | the stream's description (`max_deliver` stays unlimited, below) |
//! | max jobs, max bytes | the stream's limits, `discard: new` (a push beyond is refused) |
//! | ack, nak(delay), in progress, term | `+ACK`, `-NAK {"delay"}`, `+WPI`, `+TERM` (acks and terms wait for the server's answer) |
//!
//! JetStream would stop delivering a job after `max_deliver` and leave it
//! in the stream; sinew moves it to the dead-letter queue instead: the
//! consumer's `max_deliver` is unlimited, and a worker that receives a
//! delivery past the last (or naks the last one) publishes the job to the
//! dead-letter queue, with a message id that makes a second move a
//! duplicate, then terminates it. A move that fails (the dead-letter queue
//! full, the connection lost) naks the job with a delay: it comes back and
//! the move is tried again, so that no job is left stuck or dropped. Ordering keys are refused
//! ([`Error::Unsupported`]): NATS 2.9 has no way to hold back a key's
//! later jobs while one is out.
//!
//! Pull requests last a second at most, so that a pull that silently
//! stalled (nats.rs#860) is replaced within it. (Not idle heartbeats: with
//! NATS 2.9 a job delivered to a pull request after its idle heartbeats
//! was not handed over by the client, and waited out its ack wait.)

pub(crate) mod queue;

use crate::broker::{BrokerStats, SlowConsumer, SubscribeOptions};
use crate::error::Error;
use crate::message::Message;
use crate::subject::{Filter, Subject};
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// A NATS client, as a broker backend. Clones share the connection.
#[derive(Clone, Debug)]
pub(crate) struct Nats {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    delivered: AtomicU64,
    subscriptions: AtomicU64,
    slow_consumers: AtomicU64,
    /// Messages the client dropped for a full subscription.
    dropped: AtomicU64,
}

pub(crate) fn nats_error(error: impl std::fmt::Display) -> Error {
    Error::Nats(error.to_string())
}

/// The client's own buffer for each subscription, in messages (between
/// the connection and the task filling the subscription's queue).
const CLIENT_BUFFER: usize = 65_536;

impl Nats {
    /// Connects to the NATS server at `url` (`nats://host:port`, or
    /// several, comma-separated); reconnects by itself after a failure.
    pub(crate) async fn connect(url: &str) -> Result<Nats, Error> {
        let counters = Arc::new(Counters::default());
        let events = counters.clone();
        let client = async_nats::ConnectOptions::new()
            .subscription_capacity(CLIENT_BUFFER)
            .event_callback(move |event| {
                let counters = events.clone();
                async move {
                    if let async_nats::Event::SlowConsumer(_) = event {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .connect(url)
            .await
            .map_err(nats_error)?;
        let jetstream = async_nats::jetstream::new(client.clone());
        Ok(Nats {
            inner: Arc::new(Inner {
                client,
                jetstream,
                counters,
            }),
        })
    }

    pub(crate) fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.inner.jetstream
    }

    pub(crate) fn max_payload(&self) -> usize {
        self.inner.client.server_info().max_payload
    }

    /// Checks `message` as the embedded broker does, its size counted as
    /// NATS counts it against the server's limit: headers included.
    fn check(&self, message: &Message) -> Result<(), Error> {
        message.check(usize::MAX)?;
        crate::message::check_payload(wire_size(message), self.max_payload())
    }

    pub(crate) async fn publish(&self, message: Message) -> Result<(), Error> {
        self.check(&message)?;
        let client = &self.inner.client;
        let subject = message.subject.as_str().to_owned();
        // Without headers, a plain PUB: HPUB would make every subscriber
        // parse an empty header block.
        let reply = message.reply.map(|reply| reply.as_str().to_owned());
        match (reply, message.headers.is_empty()) {
            (None, true) => client.publish(subject, message.payload).await,
            (Some(reply), true) => {
                client
                    .publish_with_reply(subject, reply, message.payload)
                    .await
            }
            (None, false) => {
                client
                    .publish_with_headers(subject, to_headers(&message.headers), message.payload)
                    .await
            }
            (Some(reply), false) => {
                client
                    .publish_with_reply_and_headers(
                        subject,
                        reply,
                        to_headers(&message.headers),
                        message.payload,
                    )
                    .await
            }
        }
        .map_err(nats_error)?;
        self.inner
            .counters
            .published
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) async fn flush(&self) -> Result<(), Error> {
        self.inner.client.flush().await.map_err(nats_error)
    }

    pub(crate) async fn subscribe(
        &self,
        filter: Filter,
        group: Option<&str>,
        options: SubscribeOptions,
    ) -> Result<NatsSubscription, Error> {
        let client = &self.inner.client;
        let filter = filter.as_str().to_owned();
        let subscriber = match group {
            Some(group) => client.queue_subscribe(filter, group.to_owned()).await,
            None => client.subscribe(filter).await,
        }
        .map_err(nats_error)?;
        // The subscription is known to the server once the client's
        // SUB is flushed: from then on it gets every message.
        client.flush().await.map_err(nats_error)?;
        let counters = self.inner.counters.clone();
        counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        Ok(NatsSubscription {
            subscriber: Some(subscriber),
            buffer: VecDeque::new(),
            options,
            dropped: 0,
            disconnected: false,
            ended: false,
            last: None,
            counters,
        })
    }

    pub(crate) async fn request(
        &self,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, Error> {
        self.check(&message)?;
        let subject = message.subject.clone();
        let request = async_nats::Request::new()
            .payload(message.payload)
            .headers(to_headers(&message.headers))
            .timeout(Some(timeout));
        let answer = self
            .inner
            .client
            .send_request(subject.as_str().to_owned(), request)
            .await
            .map_err(|error| match error.kind() {
                async_nats::RequestErrorKind::NoResponders => Error::NoResponders(subject.clone()),
                async_nats::RequestErrorKind::TimedOut => Error::TimedOut {
                    subject: subject.clone(),
                    timeout,
                },
                _ => nats_error(error),
            })?;
        self.inner
            .counters
            .published
            .fetch_add(1, Ordering::Relaxed);
        from_nats(answer, &mut None)
            .ok_or_else(|| Error::Nats("an answer with an invalid subject".into()))
    }

    pub(crate) async fn stats(&self) -> Result<BrokerStats, Error> {
        let counters = &self.inner.counters;
        Ok(BrokerStats {
            published: counters.published.load(Ordering::Relaxed),
            delivered: counters.delivered.load(Ordering::Relaxed),
            subscriptions: counters.subscriptions.load(Ordering::Relaxed),
            slow_consumers: counters.slow_consumers.load(Ordering::Relaxed),
            buffered: 0,
            dropped: counters.dropped.load(Ordering::Relaxed),
            queues: queue::all_stats(self).await?,
        })
    }
}

/// The bytes NATS counts against its payload limit: the payload, and the
/// headers as written (`NATS/1.0` line, `name: value` lines, a blank line).
pub(crate) fn wire_size(message: &Message) -> usize {
    if message.headers.is_empty() {
        return message.payload.len();
    }
    let headers: usize = message
        .headers
        .iter()
        .map(|(name, value)| name.len() + 2 + value.len() + 2)
        .sum();
    message.payload.len() + "NATS/1.0\r\n".len() + headers + 2
}

/// A NATS subscription: the client's own buffer for it (filled by the
/// connection), and the subscription's buffer, filled from it each time the
/// subscriber reads, under the subscription's policy: under `DropOldest`
/// and `Disconnect` everything that has arrived is taken at once (so that
/// what is dropped, or whether it is disconnected, is decided over all of
/// it), under `Backpressure` up to the capacity.
#[derive(Debug)]
pub(crate) struct NatsSubscription {
    /// `None` once disconnected as a slow consumer (dropping it
    /// unsubscribes).
    subscriber: Option<async_nats::Subscriber>,
    buffer: VecDeque<Message>,
    options: SubscribeOptions,
    dropped: u64,
    disconnected: bool,
    ended: bool,
    /// The subject of the last message: a subscription mostly sees the
    /// same few subjects, checked and allocated once instead of each time.
    last: Option<Subject>,
    counters: Arc<Counters>,
}

impl NatsSubscription {
    pub(crate) fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let (capacity, policy) = (self.options.capacity, self.options.policy);
        while let Some(subscriber) = self.subscriber.as_mut().filter(|_| !self.ended) {
            if policy == SlowConsumer::Backpressure && self.buffer.len() >= capacity {
                break;
            }
            let message = match subscriber.poll_next_unpin(cx) {
                Poll::Ready(Some(message)) => message,
                // The connection is closed for good.
                Poll::Ready(None) => {
                    self.ended = true;
                    break;
                }
                Poll::Pending => break,
            };
            // A message whose subject breaks sinew's rules (another NATS
            // client can publish one) is counted as dropped, not delivered.
            let Some(message) = from_nats(message, &mut self.last) else {
                self.dropped += 1;
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if self.buffer.len() >= capacity {
                self.dropped += 1;
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if policy == SlowConsumer::Disconnect {
                    // Ended: unsubscribed, uncounted; what it holds is
                    // still read.
                    self.disconnected = true;
                    self.ended = true;
                    self.subscriber = None;
                    self.counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    self.counters.subscriptions.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                self.buffer.pop_front();
            }
            self.buffer.push_back(message);
        }
        match self.buffer.pop_front() {
            Some(message) => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Some(message))
            }
            None if self.ended => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    pub(crate) fn disconnected(&self) -> bool {
        self.disconnected
    }
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        if !self.disconnected {
            self.counters.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

pub(crate) fn to_headers(headers: &[(String, String)]) -> async_nats::HeaderMap {
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers {
        map.append(name.as_str(), value.as_str());
    }
    map
}

pub(crate) fn from_headers(headers: Option<&async_nats::HeaderMap>) -> Vec<(String, String)> {
    let mut list = Vec::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            for value in values {
                list.push((name.to_string(), value.as_str().to_owned()));
            }
        }
    }
    list
}

/// A NATS message as sinew's; `None` if its subject breaks sinew's rules.
/// `last` is the subject of the message before, reused when it is the same.
fn from_nats(message: async_nats::Message, last: &mut Option<Subject>) -> Option<Message> {
    let subject = match last {
        Some(subject) if subject.as_str() == message.subject.as_str() => subject.clone(),
        _ => {
            let subject = Subject::new(message.subject.as_str()).ok()?;
            *last = Some(subject.clone());
            subject
        }
    };
    let reply = match message.reply {
        Some(reply) => Some(Subject::new(reply.as_str()).ok()?),
        None => None,
    };
    Some(Message {
        subject,
        reply,
        headers: from_headers(message.headers.as_ref()),
        payload: message.payload,
    })
}
