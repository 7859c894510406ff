//! The NATS backend: the same [`Broker`](crate::Broker) API on a NATS
//! server, through the `async-nats` client. Core NATS carries
//! publish/subscribe, queue groups and request/reply; JetStream carries
//! the work queues.
//!
//! What differs from the embedded broker, because NATS is built so:
//! * A NATS publisher is never held back by a subscriber (core NATS is at
//!   most once). A subscription here still has its bounded buffer and
//!   [`SlowConsumer`](crate::SlowConsumer) policy, filled by a task that
//!   reads the NATS subscription; under `Backpressure` that task waits, the
//!   client's own buffer for the subscription (1,024 messages) fills, and
//!   further messages are dropped by the client, counted in
//!   [`BrokerStats::dropped`](crate::BrokerStats::dropped) (never logged
//!   per message). A subscription's own drops (`DropOldest`) are counted by
//!   [`Subscription::dropped`](crate::Subscription::dropped).
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
//! | ack wait, max deliveries | the consumer's `ack_wait`, `max_deliver` (+1, below) |
//! | max jobs, max bytes | the stream's limits, `discard: new` (a push beyond is refused) |
//! | ack, nak(delay), in progress, term | `+ACK`, `-NAK {"delay"}`, `+WPI`, `+TERM` (acks and terms wait for the server's answer) |
//!
//! JetStream stops delivering a job after `max_deliver` and leaves it in
//! the stream; sinew moves it to the dead-letter queue instead: the
//! consumer allows one delivery more than asked, and a worker that
//! receives that extra delivery (or naks the last one) publishes the job to
//! the dead-letter queue, with a message id that makes a second move a
//! duplicate, then terminates it. Ordering keys are refused
//! ([`Error::Unsupported`]): NATS 2.9 has no way to hold back a key's
//! later jobs while one is out.
//!
//! Pull requests carry a heartbeat: a pull whose heartbeats stop (a
//! silent stall, nats.rs#860) is abandoned and made again.

pub(crate) mod queue;

use crate::broker::{BrokerStats, SubscribeOptions};
use crate::embedded::{self, Feed, Receiver};
use crate::error::Error;
use crate::message::Message;
use crate::subject::{Filter, Subject};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
const CLIENT_BUFFER: usize = 1024;

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
        let headers = to_headers(&message.headers);
        match message.reply {
            Some(reply) => {
                client
                    .publish_with_reply_and_headers(
                        subject,
                        reply.as_str().to_owned(),
                        headers,
                        message.payload,
                    )
                    .await
            }
            None => {
                client
                    .publish_with_headers(subject, headers, message.payload)
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
    ) -> Result<Receiver, Error> {
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
        Ok(embedded::fed(options, move |feed| {
            tokio::spawn(pump(subscriber, feed, counters)).abort_handle()
        }))
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
        from_nats(answer).ok_or_else(|| Error::Nats("an answer with an invalid subject".into()))
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

/// Counts a live subscription; uncounts it when its task ends or is
/// stopped.
struct Live(Arc<Counters>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Moves a NATS subscription's messages into the subscription's queue,
/// under its policy, until either side ends.
async fn pump(mut subscriber: async_nats::Subscriber, feed: Feed, counters: Arc<Counters>) {
    counters.subscriptions.fetch_add(1, Ordering::Relaxed);
    let _live = Live(counters.clone());
    while let Some(message) = subscriber.next().await {
        // A message whose subject breaks sinew's rules (another NATS
        // client can publish one) is counted as dropped, not delivered.
        let Some(message) = from_nats(message) else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // Counted before it is handed over, so that a subscriber who sees
        // the message sees it counted.
        counters.delivered.fetch_add(1, Ordering::Relaxed);
        if !feed.deliver(message).await {
            counters.delivered.fetch_sub(1, Ordering::Relaxed);
            if feed.disconnected() {
                counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    }
    // The connection is closed for good.
    feed.close();
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
fn from_nats(message: async_nats::Message) -> Option<Message> {
    let subject = Subject::new(message.subject.as_str()).ok()?;
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
