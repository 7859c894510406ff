//! The broker across processes: [`Served`], the broker service any sinew
//! server can offer (`Broker::service`), and [`Remote`], the backend of
//! [`Broker::connect`] that speaks to it.
//!
//! Publishing is one bidirectional stream per client, opened at the first
//! publish: messages go out without waiting for each one's answer (as NATS
//! does), and flow control carries a full subscription's back-pressure to
//! the publisher. A flush sends a token the broker echoes once everything
//! before it is delivered. Each subscription is a server-streaming call
//! (its buffer and slow-consumer policy are at the broker); a worker is one
//! too, with at most its `max_in_flight` jobs unsettled; everything else
//! is a unary call.
//!
//! A refusal crosses as a `Status` whose metadata names the error
//! ([`ERROR_KIND`]), so that the client returns the same [`Error`] the
//! embedded broker would have; a gRPC client sees an ordinary status
//! (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`, `NOT_FOUND`, ...).

use crate::broker::{Broker, BrokerStats, SubscribeOptions};
use crate::error::{Error, ERROR_KIND};
use crate::lock;
use crate::message::Message;
use crate::proto::{self, broker_client::BrokerClient, publish_frame::Frame};
use crate::subject::{Filter, Subject};
use crate::work::{Job, Leased, Pushed, QueueConfig, QueueStats, Settlement, WorkQueue};
use futures_util::StreamExt;
use sinew_rpc::call::BoxError;
use sinew_rpc::{CallRequest, CallResponse, Request, Response, Status, Streaming};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

/// How long a request waits for its answer when neither the request nor
/// the call says.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Publish frames queued for the stream at most, per client.
const PUBLISH_BUFFER: usize = 1024;

/// The error kind a served broker named a status with.
fn kind(status: &Status) -> Option<&str> {
    status.metadata().get(ERROR_KIND)
}

/// A queue call's status as the error the embedded broker would return.
pub(crate) fn error_from(status: Status, queue: &str) -> Error {
    match kind(&status) {
        Some("queue-full") => Error::QueueFull {
            queue: queue.to_owned(),
            limit: status.message().to_owned(),
        },
        Some("unknown-queue") => Error::UnknownQueue(queue.to_owned()),
        Some("storage") => Error::Storage(status.message().to_owned()),
        Some("closed") => Error::Closed,
        _ => Error::Remote(status),
    }
}

/// A job as it came from a remote broker.
pub(crate) fn leased(job: proto::Job) -> Leased {
    Leased {
        sequence: job.sequence,
        attempt: job.attempt,
        id: Some(job.id).filter(|id| !id.is_empty()),
        key: Some(job.key).filter(|key| !key.is_empty()),
        headers: proto::headers_from_proto(job.headers),
        payload: job.payload,
        #[cfg(feature = "nats")]
        nats: None,
    }
}

/// What the client calls through: a channel, or a stack of layers around
/// one, its errors turned into statuses (a concrete error type keeps the
/// calls' futures `Send` for every caller).
type Transport = BoxCloneSyncService<CallRequest, CallResponse, Status>;

/// The client of a served broker. Clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Remote {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: BrokerClient<Transport>,
    max_payload: usize,
    publisher: Mutex<Option<Publisher>>,
    flush_tokens: AtomicU64,
}

/// One publish stream: the frames going out, and what came back.
#[derive(Clone, Debug)]
struct Publisher {
    frames: mpsc::Sender<proto::PublishFrame>,
    state: Arc<PublishState>,
}

#[derive(Debug, Default)]
struct PublishState {
    /// Flushes waiting for their token, by token.
    waiters: Mutex<BTreeMap<u64, oneshot::Sender<()>>>,
    /// Why the stream ended, once it did.
    failure: Mutex<Option<Status>>,
}

impl PublishState {
    fn failed(&self) -> Option<Status> {
        lock(&self.failure).clone()
    }
}

impl Remote {
    pub(crate) async fn new<S>(service: S) -> Result<Remote, Error>
    where
        S: tower::Service<CallRequest, Response = CallResponse> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let transport =
            BoxCloneSyncService::new(service.map_err(|error| Status::from_error(error.into())));
        let client = BrokerClient::new(transport);
        let info = client.info(proto::InfoRequest {}).await?.into_inner();
        Ok(Remote {
            inner: Arc::new(Inner {
                client,
                max_payload: usize::try_from(info.max_payload).unwrap_or(usize::MAX),
                publisher: Mutex::new(None),
                flush_tokens: AtomicU64::new(1),
            }),
        })
    }

    pub(crate) fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    /// The open publish stream, or a new one. A stream that failed is
    /// reported once (what was sent on it and not yet delivered may be
    /// lost: the caller learns so), and replaced at the next call.
    fn publisher(&self) -> Result<Publisher, Error> {
        let mut current = lock(&self.inner.publisher);
        if let Some(publisher) = current.take() {
            if let Some(status) = publisher.state.failed() {
                return Err(Error::Remote(status));
            }
            if !publisher.frames.is_closed() {
                *current = Some(publisher.clone());
                return Ok(publisher);
            }
            return Err(Error::Remote(Status::unavailable(
                "the publish stream ended",
            )));
        }
        let (frames, outgoing) = mpsc::channel(PUBLISH_BUFFER);
        let state = Arc::new(PublishState::default());
        let publisher = Publisher {
            frames,
            state: state.clone(),
        };
        *current = Some(publisher.clone());
        let client = self.inner.client.clone();
        tokio::spawn(async move {
            let outgoing = tokio_stream::wrappers::ReceiverStream::new(outgoing);
            let failure = match client.publish(outgoing).await {
                Ok(response) => {
                    let mut acks = response.into_inner();
                    loop {
                        match acks.message().await {
                            Ok(Some(ack)) => {
                                let mut waiters = lock(&state.waiters);
                                let later = waiters.split_off(&ack.flushed.saturating_add(1));
                                for (_, waiter) in std::mem::replace(&mut *waiters, later) {
                                    let _ = waiter.send(());
                                }
                            }
                            Ok(None) => {
                                break Status::unavailable("the broker ended the publish stream")
                            }
                            Err(status) => break status,
                        }
                    }
                }
                Err(status) => status,
            };
            // Under the waiters' lock: a flush either sees the failure or
            // has its waiter dropped here (and learns of it so).
            let mut waiters = lock(&state.waiters);
            *lock(&state.failure) = Some(failure);
            waiters.clear();
        });
        Ok(publisher)
    }

    /// Forgets `publisher` (if it is still the current one) and returns
    /// why it failed.
    fn publish_failed(&self, publisher: &Publisher) -> Error {
        let mut current = lock(&self.inner.publisher);
        if current
            .as_ref()
            .is_some_and(|now| Arc::ptr_eq(&now.state, &publisher.state))
        {
            *current = None;
        }
        Error::Remote(
            publisher
                .state
                .failed()
                .unwrap_or_else(|| Status::unavailable("the publish stream ended")),
        )
    }

    pub(crate) async fn publish(&self, message: Message) -> Result<(), Error> {
        message.check(self.inner.max_payload)?;
        let publisher = self.publisher()?;
        let frame = proto::PublishFrame {
            frame: Some(Frame::Message(message.into())),
        };
        if publisher.frames.send(frame).await.is_err() {
            return Err(self.publish_failed(&publisher));
        }
        Ok(())
    }

    pub(crate) async fn flush(&self) -> Result<(), Error> {
        let publisher = self.publisher()?;
        let token = self.inner.flush_tokens.fetch_add(1, Ordering::Relaxed);
        let (done, flushed) = oneshot::channel();
        {
            let mut waiters = lock(&publisher.state.waiters);
            if publisher.state.failed().is_some() {
                drop(waiters);
                return Err(self.publish_failed(&publisher));
            }
            waiters.insert(token, done);
        }
        let frame = proto::PublishFrame {
            frame: Some(Frame::Flush(token)),
        };
        if publisher.frames.send(frame).await.is_err() || flushed.await.is_err() {
            return Err(self.publish_failed(&publisher));
        }
        Ok(())
    }

    pub(crate) async fn subscribe(
        &self,
        filter: Filter,
        group: Option<&str>,
        options: SubscribeOptions,
    ) -> Result<RemoteSubscription, Error> {
        let request = proto::SubscribeRequest {
            filter: filter.as_str().to_owned(),
            queue_group: group.unwrap_or_default().to_owned(),
            capacity: options.capacity as u32,
            slow_consumer: proto::SlowConsumer::from(options.policy) as i32,
            max_wait_ms: options.max_wait.map_or(0, |wait| {
                wait.as_millis().clamp(1, u128::from(u64::MAX)) as u64
            }),
        };
        let stream = self.inner.client.subscribe(request).await?.into_inner();
        Ok(RemoteSubscription {
            stream,
            dropped: 0,
            disconnected: false,
            error: None,
            done: false,
        })
    }

    pub(crate) async fn request(
        &self,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, Error> {
        message.check(self.inner.max_payload)?;
        let subject = message.subject.clone();
        let mut request = Request::new(proto::RequestMessage {
            message: Some(message.into()),
            timeout_ms: timeout.as_millis().max(1) as u64,
        });
        // The call outlives the wait at the broker by a margin, so that
        // the broker's answer (TimedOut) is what comes back.
        request.set_timeout(timeout.saturating_add(Duration::from_secs(1)));
        match self.inner.client.request(request).await {
            Ok(answer) => answer.into_inner().into_message(),
            Err(status) => Err(match kind(&status) {
                Some("no-responders") => Error::NoResponders(subject),
                Some("timed-out") => Error::TimedOut { subject, timeout },
                _ => Error::Remote(status),
            }),
        }
    }

    pub(crate) async fn stats(&self) -> Result<BrokerStats, Error> {
        let stats = self
            .inner
            .client
            .stats(proto::StatsRequest {})
            .await?
            .into_inner();
        Ok(BrokerStats {
            published: stats.published,
            delivered: stats.delivered,
            subscriptions: stats.subscriptions,
            slow_consumers: stats.slow_consumers,
            buffered: stats.buffered,
            dropped: stats.dropped,
            queues: stats
                .queues
                .into_iter()
                .map(QueueStats::from_proto)
                .collect(),
        })
    }

    pub(crate) async fn declare(
        &self,
        queue: &str,
        config: Option<QueueConfig>,
    ) -> Result<QueueConfig, Error> {
        let request = proto::DeclareRequest {
            queue: queue.to_owned(),
            config: config.map(|config| config.to_proto()),
        };
        let answer = self
            .inner
            .client
            .declare(request)
            .await
            .map_err(|status| error_from(status, queue))?
            .into_inner();
        Ok(QueueConfig::from_proto(&answer.config.unwrap_or_default()))
    }

    pub(crate) async fn push(&self, queue: &str, job: Job) -> Result<Pushed, Error> {
        job.check(self.inner.max_payload)?;
        let request = proto::PushRequest {
            queue: queue.to_owned(),
            id: job.id.unwrap_or_default(),
            key: job.key.unwrap_or_default(),
            headers: proto::headers_to_proto(job.headers),
            payload: job.payload,
        };
        let answer = self
            .inner
            .client
            .push(request)
            .await
            .map_err(|status| error_from(status, queue))?
            .into_inner();
        Ok(Pushed {
            sequence: answer.sequence,
            duplicate: answer.duplicate,
        })
    }

    pub(crate) async fn pull(
        &self,
        queue: &str,
        max_in_flight: usize,
    ) -> Result<Streaming<proto::Job>, Error> {
        let request = proto::PullRequest {
            queue: queue.to_owned(),
            max_in_flight: max_in_flight as u32,
        };
        Ok(self
            .inner
            .client
            .pull(request)
            .await
            .map_err(|status| error_from(status, queue))?
            .into_inner())
    }

    pub(crate) async fn settle(
        &self,
        queue: &str,
        sequence: u64,
        attempt: u32,
        settlement: Settlement,
    ) -> Result<(), Error> {
        let (settle, delay) = match settlement {
            Settlement::Ack => (proto::Settle::Ack, Duration::ZERO),
            Settlement::Nak(delay) => (proto::Settle::Nak, delay),
            Settlement::InProgress => (proto::Settle::InProgress, Duration::ZERO),
            Settlement::Term => (proto::Settle::Term, Duration::ZERO),
        };
        let request = proto::SettleRequest {
            queue: queue.to_owned(),
            sequence,
            attempt,
            settle: settle as i32,
            delay_ms: delay.as_millis() as u64,
        };
        match self.inner.client.settle(request).await {
            Ok(_) => Ok(()),
            Err(status) if kind(&status) == Some("lease-lost") => Err(Error::LeaseLost {
                queue: queue.to_owned(),
                sequence,
                attempt,
            }),
            Err(status) => Err(error_from(status, queue)),
        }
    }

    pub(crate) async fn queue_stats(&self, queue: &str) -> Result<QueueStats, Error> {
        let request = proto::QueueStatsRequest {
            queue: queue.to_owned(),
        };
        let stats = self
            .inner
            .client
            .queue_stats(request)
            .await
            .map_err(|status| error_from(status, queue))?
            .into_inner();
        Ok(QueueStats::from_proto(stats))
    }
}

/// A subscription at a remote broker: the messages of its call.
#[derive(Debug)]
pub(crate) struct RemoteSubscription {
    stream: Streaming<proto::Delivery>,
    dropped: u64,
    disconnected: bool,
    error: Option<Error>,
    done: bool,
}

impl RemoteSubscription {
    pub(crate) fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let item = std::task::ready!(futures_core::Stream::poll_next(
                Pin::new(&mut self.stream),
                cx
            ));
            match item {
                Some(Ok(delivery)) => {
                    self.dropped = self.dropped.saturating_add(delivery.dropped);
                    let Some(message) = delivery.message else {
                        continue;
                    };
                    match message.into_message() {
                        Ok(message) => return Poll::Ready(Some(message)),
                        Err(error) => {
                            // A broker that sends a broken subject is not
                            // one to go on listening to.
                            self.error = Some(error);
                            self.done = true;
                        }
                    }
                }
                Some(Err(status)) => {
                    if kind(&status) == Some("slow-consumer") {
                        self.disconnected = true;
                        self.dropped += 1;
                    } else {
                        self.error = Some(Error::Remote(status));
                    }
                    self.done = true;
                }
                None => self.done = true,
            }
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    pub(crate) fn disconnected(&self) -> bool {
        self.disconnected
    }

    pub(crate) fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }
}

/// The broker service: a [`Broker`] (embedded, typically) offered to other
/// processes.
#[derive(Debug)]
pub(crate) struct Served {
    broker: Broker,
}

impl Served {
    pub(crate) fn new(broker: Broker) -> Served {
        Served { broker }
    }

    /// A handle on queue `name` without declaring it (an unknown queue is
    /// refused by the store).
    fn queue(&self, name: &str) -> Result<WorkQueue, Status> {
        if self.broker.is_nats() {
            // A NATS job is settled through its own delivery, which does
            // not cross this service: workers go to NATS themselves.
            return Err(Error::Unsupported(
                "the work queues of a NATS-backed broker through a sinew server (use NATS directly)",
            )
            .to_status());
        }
        let name = Subject::new(name).map_err(|error| Error::from(error).to_status())?;
        Ok(self.broker.existing_queue(name))
    }
}

type Stream<T> = Pin<Box<dyn futures_core::Stream<Item = Result<T, Status>> + Send>>;

fn status(error: Error) -> Status {
    error.to_status()
}

impl proto::broker_server::Broker for Served {
    async fn info(
        &self,
        _request: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::Info>, Status> {
        Ok(Response::new(proto::Info {
            max_payload: self.broker.max_payload() as u64,
            server: concat!("sinew-messaging ", env!("CARGO_PKG_VERSION")).to_owned(),
        }))
    }

    type PublishStream = Stream<proto::PublishAck>;

    async fn publish(
        &self,
        request: Request<Streaming<proto::PublishFrame>>,
    ) -> Result<Response<Self::PublishStream>, Status> {
        let frames = request.into_inner();
        let broker = self.broker.clone();
        // State: the frames, the broker, and whether the stream failed
        // (a failure is sent once, then the stream ends).
        let acks = futures_util::stream::unfold(
            (frames, broker, false),
            |(mut frames, broker, failed)| async move {
                if failed {
                    return None;
                }
                loop {
                    let frame = match frames.message().await {
                        Ok(Some(frame)) => frame,
                        // The publisher is done, or gone.
                        Ok(None) | Err(_) => return None,
                    };
                    match frame.frame {
                        Some(Frame::Message(message)) => {
                            let published = match message.into_message() {
                                Ok(message) => broker.publish_message(message).await,
                                Err(error) => Err(error),
                            };
                            if let Err(error) = published {
                                return Some((Err(status(error)), (frames, broker, true)));
                            }
                        }
                        Some(Frame::Flush(token)) => {
                            let ack = proto::PublishAck { flushed: token };
                            return Some((Ok(ack), (frames, broker, false)));
                        }
                        None => {}
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(acks)))
    }

    type SubscribeStream = Stream<proto::Delivery>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let group = Some(request.queue_group.as_str()).filter(|group| !group.is_empty());
        // A remote subscriber holds the broker's publishers back for a
        // bounded time at most (see BrokerBuilder::remote_max_wait).
        let mut options = request.options();
        let wait = options
            .max_wait
            .map_or(self.broker.remote_max_wait(), |asked| {
                asked.min(self.broker.remote_max_wait())
            });
        options = options.max_wait(wait);
        let subscription = self
            .broker
            .subscribe_with(&request.filter, group, options)
            .await
            .map_err(status)?;
        // State: the subscription, drops already reported, whether it ended.
        let deliveries = futures_util::stream::unfold(
            (subscription, 0u64, false),
            |(mut subscription, reported, ended)| async move {
                if ended {
                    return None;
                }
                match subscription.next_message().await {
                    Some(message) => {
                        let dropped = subscription.dropped();
                        let delivery = proto::Delivery {
                            message: Some(message.into()),
                            dropped: dropped - reported,
                        };
                        Some((Ok(delivery), (subscription, dropped, false)))
                    }
                    None if subscription.disconnected() => {
                        let mut status = Status::resource_exhausted(
                            "a slow consumer: the subscription's buffer was full",
                        );
                        let _ = status.metadata_mut().insert(ERROR_KIND, "slow-consumer");
                        Some((Err(status), (subscription, reported, true)))
                    }
                    None => None,
                }
            },
        );
        Ok(Response::new(Box::pin(deliveries)))
    }

    async fn request(
        &self,
        request: Request<proto::RequestMessage>,
    ) -> Result<Response<proto::Message>, Status> {
        let call_timeout = request.timeout();
        let request = request.into_inner();
        let timeout = match request.timeout_ms {
            0 => call_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            ms => Duration::from_millis(ms),
        };
        let message = request
            .message
            .ok_or_else(|| Status::invalid_argument("a request without a message"))?
            .into_message()
            .map_err(status)?;
        let answer = self
            .broker
            .request_message(message, timeout)
            .await
            .map_err(status)?;
        Ok(Response::new(answer.into()))
    }

    async fn stats(
        &self,
        _request: Request<proto::StatsRequest>,
    ) -> Result<Response<proto::Stats>, Status> {
        let stats = self.broker.stats().await.map_err(status)?;
        Ok(Response::new(proto::Stats {
            published: stats.published,
            delivered: stats.delivered,
            subscriptions: stats.subscriptions,
            slow_consumers: stats.slow_consumers,
            buffered: stats.buffered,
            dropped: stats.dropped,
            queues: stats.queues.iter().map(QueueStats::to_proto).collect(),
        }))
    }

    async fn declare(
        &self,
        request: Request<proto::DeclareRequest>,
    ) -> Result<Response<proto::DeclareResponse>, Status> {
        let request = request.into_inner();
        let queue = match request.config {
            Some(config) => {
                self.broker
                    .work_queue(&request.queue, QueueConfig::from_proto(&config))
                    .await
            }
            None => self.broker.open_queue(&request.queue).await,
        }
        .map_err(status)?;
        Ok(Response::new(proto::DeclareResponse {
            config: Some(queue.config().to_proto()),
        }))
    }

    async fn push(
        &self,
        request: Request<proto::PushRequest>,
    ) -> Result<Response<proto::PushResponse>, Status> {
        let request = request.into_inner();
        let queue = self.queue(&request.queue)?;
        let job = Job {
            id: Some(request.id).filter(|id| !id.is_empty()),
            key: Some(request.key).filter(|key| !key.is_empty()),
            headers: proto::headers_from_proto(request.headers),
            payload: request.payload,
        };
        let pushed = queue.push(job).await.map_err(status)?;
        Ok(Response::new(proto::PushResponse {
            sequence: pushed.sequence,
            duplicate: pushed.duplicate,
        }))
    }

    type PullStream = Stream<proto::Job>;

    async fn pull(
        &self,
        request: Request<proto::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let request = request.into_inner();
        let worker = self
            .queue(&request.queue)?
            .pull(request.max_in_flight as usize)
            .await
            .map_err(status)?;
        let jobs = worker.map(|delivery| {
            Ok(proto::Job {
                sequence: delivery.sequence(),
                attempt: delivery.attempt(),
                id: delivery.id().unwrap_or_default().to_owned(),
                key: delivery.key().unwrap_or_default().to_owned(),
                headers: proto::headers_to_proto(delivery.headers().to_vec()),
                payload: delivery.payload().clone(),
            })
        });
        Ok(Response::new(Box::pin(jobs)))
    }

    async fn settle(
        &self,
        request: Request<proto::SettleRequest>,
    ) -> Result<Response<proto::SettleResponse>, Status> {
        let request = request.into_inner();
        let settlement = match proto::Settle::try_from(request.settle) {
            Ok(proto::Settle::Ack) => Settlement::Ack,
            Ok(proto::Settle::Nak) => Settlement::Nak(Duration::from_millis(request.delay_ms)),
            Ok(proto::Settle::InProgress) => Settlement::InProgress,
            Ok(proto::Settle::Term) => Settlement::Term,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown settlement {}",
                    request.settle
                )))
            }
        };
        self.queue(&request.queue)?
            .settle(request.sequence, request.attempt, settlement)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::SettleResponse {}))
    }

    async fn queue_stats(
        &self,
        request: Request<proto::QueueStatsRequest>,
    ) -> Result<Response<proto::QueueStats>, Status> {
        let request = request.into_inner();
        let stats = self.queue(&request.queue)?.stats().await.map_err(status)?;
        Ok(Response::new(stats.to_proto()))
    }
}
