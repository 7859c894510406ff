//! Durable work queues, at least once: [`WorkQueue`].
//!
//! A producer [`push`](WorkQueue::push)es a [`Job`]; it is answered once
//! the job is stored. Workers [`pull`](WorkQueue::pull) with a limit on the
//! jobs they hold unsettled at a time, and settle each [`Delivery`]:
//! [`ack`](Delivery::ack) (done, removed), [`nak`](Delivery::nak) (failed:
//! deliver it again, after a delay), [`in_progress`](Delivery::in_progress)
//! (still working: the lease is extended), or [`term`](Delivery::term)
//! (never deliver it again). A job not settled within the queue's ack wait
//! is delivered again; one delivered [`max_deliveries`](QueueConfig::max_deliveries)
//! times moves to the dead-letter queue (`<queue>.dead` by default), itself
//! a work queue to pull from, so nothing is dropped.
//!
//! * An idempotency [`id`](Job::id) drops a second push of the same job
//!   within the queue's duplicate window (a producer retrying after a lost
//!   answer).
//! * An ordering [`key`](Job::key) delivers a key's jobs one at a time, in
//!   push order; jobs of other keys, or without one, go on meanwhile.
//! * A queue is bounded in jobs and bytes; a push beyond is refused
//!   ([`Error::QueueFull`]), never buffered without limit.
//!
//! The embedded broker keeps its queues in [redb](https://www.redb.org), an
//! embedded transactional store: in memory by default, or in a file
//! ([`BrokerBuilder::storage`](crate::BrokerBuilder::storage)). Pushes,
//! settlements and delivery counts are written in transactions, many
//! callers' at once in one (group commit); under
//! [`FsyncPolicy::Always`] (the default) a push is answered only once its
//! transaction is on disk, so a crash of the process or the machine loses
//! no job a producer was told was stored. Leases live in memory: after a
//! restart every job not acked is delivered again (delivery counts kept).

mod schedule;
mod store;

pub(crate) use store::Store;
pub use store::{DEAD_LETTER_DELIVERIES, DEAD_LETTER_FROM};

use crate::error::Error;
use crate::message::{check_headers, header};
use crate::remote::Remote;
use crate::subject::Subject;
use bytes::Bytes;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// When the store forces its writes to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// Every transaction, before anyone is answered (the default): an
    /// answered push survives a crash of the machine.
    #[default]
    Always,
    /// At most this long after a write: answered pushes of the last
    /// interval may be lost if the machine (not only the process) crashes,
    /// or if the process is killed before the interval's end. As JetStream's
    /// `sync_interval`; for jobs that can be lost, or pushed again.
    Interval(Duration),
}

/// Settings of a work queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliveries: Option<u32>,
    pub(crate) dead_letter: Option<String>,
    pub(crate) duplicate_window: Duration,
    pub(crate) max_jobs: u64,
    pub(crate) max_bytes: u64,
}

/// Default [`QueueConfig::ack_wait`]: 30 seconds, as JetStream.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Default [`QueueConfig::max_deliveries`].
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
/// Default [`QueueConfig::duplicate_window`]: 2 minutes, as JetStream.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Default [`QueueConfig::max_jobs`].
pub const DEFAULT_MAX_JOBS: u64 = 1_000_000;
/// Default [`QueueConfig::max_bytes`]: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Jobs a worker may hold unsettled at most, whatever it asks.
pub const MAX_IN_FLIGHT: usize = 10_000;
/// The longest ack wait, duplicate window or nak delay taken: a year
/// (longer ones are cut to it).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliveries: Some(DEFAULT_MAX_DELIVERIES),
            dead_letter: None,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            max_jobs: DEFAULT_MAX_JOBS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl QueueConfig {
    /// How long a delivered job is leased to its worker before it is
    /// delivered again (default [`DEFAULT_ACK_WAIT`]; at least 1 ms).
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait.clamp(Duration::from_millis(1), MAX_DURATION);
        self
    }

    /// Deliveries at most before a job moves to the dead-letter queue
    /// (default [`DEFAULT_MAX_DELIVERIES`]; at least 1).
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = Some(deliveries.max(1));
        self
    }

    /// Jobs are delivered until they are acked or terminated, however many
    /// times (a dead-letter queue's own setting).
    pub fn unlimited_deliveries(mut self) -> Self {
        self.max_deliveries = None;
        self
    }

    /// The queue that takes jobs delivered `max_deliveries` times (default
    /// `<queue>.dead`).
    pub fn dead_letter(mut self, queue: impl Into<String>) -> Self {
        self.dead_letter = Some(queue.into());
        self
    }

    /// How long a job's [`id`](Job::id) is remembered to drop a duplicate
    /// push (default [`DEFAULT_DUPLICATE_WINDOW`]; JetStream takes 100 ms
    /// at least).
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window.min(MAX_DURATION);
        self
    }

    /// Jobs held at most (default [`DEFAULT_MAX_JOBS`]).
    pub fn max_jobs(mut self, jobs: u64) -> Self {
        self.max_jobs = jobs.max(1);
        self
    }

    /// Bytes of payload held at most (default [`DEFAULT_MAX_BYTES`]).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// The ack wait in force.
    pub fn get_ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// The deliveries limit in force (`None`: unlimited).
    pub fn get_max_deliveries(&self) -> Option<u32> {
        self.max_deliveries
    }

    /// The dead-letter queue of `queue` under these settings.
    pub fn dead_letter_of(&self, queue: &str) -> String {
        self.dead_letter
            .clone()
            .unwrap_or_else(|| format!("{queue}.dead"))
    }

    /// The settings as the broker service carries them (zero: default).
    pub(crate) fn to_proto(&self) -> crate::proto::QueueConfig {
        crate::proto::QueueConfig {
            ack_wait_ms: self.ack_wait.as_millis().max(1) as u64,
            max_deliveries: self.max_deliveries.unwrap_or(u32::MAX),
            dead_letter: self.dead_letter.clone().unwrap_or_default(),
            duplicate_window_ms: self.duplicate_window.as_millis() as u64,
            max_jobs: self.max_jobs,
            max_bytes: self.max_bytes,
        }
    }

    /// The settings a broker service was sent, defaults for zeros.
    pub(crate) fn from_proto(proto: &crate::proto::QueueConfig) -> QueueConfig {
        let default = QueueConfig::default();
        let millis = |ms: u64| Duration::from_millis(ms).min(MAX_DURATION);
        QueueConfig {
            ack_wait: match proto.ack_wait_ms {
                0 => default.ack_wait,
                ms => millis(ms),
            },
            max_deliveries: match proto.max_deliveries {
                0 => default.max_deliveries,
                u32::MAX => None,
                n => Some(n),
            },
            dead_letter: Some(proto.dead_letter.clone()).filter(|name| !name.is_empty()),
            duplicate_window: match proto.duplicate_window_ms {
                0 => default.duplicate_window,
                ms => millis(ms),
            },
            max_jobs: match proto.max_jobs {
                0 => default.max_jobs,
                n => n,
            },
            max_bytes: match proto.max_bytes {
                0 => default.max_bytes,
                n => n,
            },
        }
    }
}

/// A job to push: a payload, and optionally an idempotency id, an ordering
/// key and headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Job {
    pub(crate) id: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) payload: Bytes,
}

/// Longest idempotency id or ordering key, in bytes.
pub const MAX_ID_LEN: usize = 256;

impl Job {
    /// A job carrying `payload`.
    pub fn new(payload: impl Into<Bytes>) -> Job {
        Job {
            payload: payload.into(),
            ..Job::default()
        }
    }

    /// A job carrying `message`, encoded.
    pub fn encode<M: prost::Message>(message: &M) -> Job {
        Job::new(message.encode_to_vec())
    }

    /// An idempotency id: a second push with the same id within the
    /// queue's duplicate window is dropped.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// An ordering key: jobs with the same key are delivered one at a time,
    /// in push order.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Checks the job against the broker's payload limit and the header
    /// rules; ids and keys are non-empty, at most [`MAX_ID_LEN`] bytes, no
    /// control character.
    pub(crate) fn check(&self, max_payload: usize) -> Result<(), Error> {
        crate::message::check_payload(self.payload.len(), max_payload)?;
        check_headers(&self.headers)?;
        for (what, value) in [("sinew-job-id", &self.id), ("sinew-job-key", &self.key)] {
            if let Some(value) = value {
                if value.is_empty()
                    || value.len() > MAX_ID_LEN
                    || value.chars().any(char::is_control)
                {
                    return Err(Error::InvalidHeader {
                        name: what.to_owned(),
                        reason: "an id or key is 1 to 256 bytes, without control characters",
                    });
                }
            }
        }
        Ok(())
    }
}

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pushed {
    /// The job's sequence number in its queue.
    pub sequence: u64,
    /// The id was seen within the duplicate window: this push was dropped,
    /// and `sequence` is the first push's.
    pub duplicate: bool,
}

/// A work queue's figures. Counters run from the broker's start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Jobs ready to deliver (those behind an earlier job of their key
    /// included).
    pub pending: u64,
    /// Jobs delivered and not settled.
    pub in_flight: u64,
    /// Jobs waiting for a nak's delay.
    pub delayed: u64,
    /// Bytes of payload held.
    pub bytes: u64,
    /// Jobs pushed (duplicates not included).
    pub pushed: u64,
    /// Pushes dropped as duplicates.
    pub duplicates: u64,
    /// Jobs acked.
    pub acked: u64,
    /// Deliveries after the first (naks and leases run out).
    pub redelivered: u64,
    /// Jobs moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Jobs terminated.
    pub terminated: u64,
    /// Workers pulling now.
    pub workers: u64,
}

impl QueueStats {
    pub(crate) fn to_proto(&self) -> crate::proto::QueueStats {
        crate::proto::QueueStats {
            queue: self.queue.clone(),
            pending: self.pending,
            in_flight: self.in_flight,
            delayed: self.delayed,
            bytes: self.bytes,
            pushed: self.pushed,
            duplicates: self.duplicates,
            acked: self.acked,
            redelivered: self.redelivered,
            dead_lettered: self.dead_lettered,
            terminated: self.terminated,
            workers: self.workers,
        }
    }

    pub(crate) fn from_proto(proto: crate::proto::QueueStats) -> QueueStats {
        QueueStats {
            queue: proto.queue,
            pending: proto.pending,
            in_flight: proto.in_flight,
            delayed: proto.delayed,
            bytes: proto.bytes,
            pushed: proto.pushed,
            duplicates: proto.duplicates,
            acked: proto.acked,
            redelivered: proto.redelivered,
            dead_lettered: proto.dead_lettered,
            terminated: proto.terminated,
            workers: proto.workers,
        }
    }
}

/// How a worker settles a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settlement {
    Ack,
    Nak(Duration),
    InProgress,
    Term,
}

/// The backend behind a queue's handles.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Embedded(Store),
    Remote(Remote),
    #[cfg(feature = "nats")]
    Nats(crate::nats::Nats),
}

impl Backend {
    /// Settles delivery `attempt` of job `sequence`, by number (the
    /// embedded and remote backends), or through the delivery's own lease
    /// (NATS).
    async fn settle(
        &self,
        queue: &str,
        sequence: u64,
        attempt: u32,
        settlement: Settlement,
        #[cfg(feature = "nats")] lease: Option<&crate::nats::queue::Lease>,
    ) -> Result<(), Error> {
        match self {
            Backend::Embedded(store) => store.settle(queue, sequence, attempt, settlement).await,
            Backend::Remote(remote) => remote.settle(queue, sequence, attempt, settlement).await,
            #[cfg(feature = "nats")]
            Backend::Nats(_) => match lease {
                Some(lease) => lease.settle(settlement).await,
                None => Err(Error::Unsupported(
                    "settling a NATS job by number: settle the delivery itself",
                )),
            },
        }
    }
}

/// A durable work queue of a [`Broker`](crate::Broker). Clones share it.
#[derive(Clone, Debug)]
pub struct WorkQueue {
    name: Arc<str>,
    config: QueueConfig,
    backend: Backend,
}

impl WorkQueue {
    pub(crate) fn new(name: Subject, config: QueueConfig, backend: Backend) -> WorkQueue {
        WorkQueue {
            name: Arc::from(name.as_str()),
            config,
            backend,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings in force.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Stores `job`; answered once it is stored (on disk, under
    /// [`FsyncPolicy::Always`]).
    pub async fn push(&self, job: Job) -> Result<Pushed, Error> {
        match &self.backend {
            Backend::Embedded(store) => store.push(&self.name, job).await,
            Backend::Remote(remote) => remote.push(&self.name, job).await,
            #[cfg(feature = "nats")]
            Backend::Nats(nats) => crate::nats::queue::push(nats, &self.name, job).await,
        }
    }

    /// A worker: the queue's jobs, at most `max_in_flight` (at least 1, at
    /// most [`MAX_IN_FLIGHT`]) delivered and not yet settled at a time.
    /// Jobs are spread over all of a queue's workers as they have room.
    pub async fn pull(&self, max_in_flight: usize) -> Result<Worker, Error> {
        let max_in_flight = max_in_flight.clamp(1, MAX_IN_FLIGHT);
        let source = match &self.backend {
            Backend::Embedded(store) => {
                WorkerSource::Embedded(store.pull(&self.name, max_in_flight).await?)
            }
            Backend::Remote(remote) => {
                WorkerSource::Remote(Box::new(remote.pull(&self.name, max_in_flight).await?))
            }
            #[cfg(feature = "nats")]
            Backend::Nats(nats) => WorkerSource::Nats(
                crate::nats::queue::pull(nats, &self.name, &self.config, max_in_flight).await?,
            ),
        };
        Ok(Worker {
            queue: self.name.clone(),
            backend: self.backend.clone(),
            source,
            error: None,
        })
    }

    /// Settles delivery `attempt` of job `sequence` (for the served broker,
    /// whose workers settle by number).
    pub(crate) async fn settle(
        &self,
        sequence: u64,
        attempt: u32,
        settlement: Settlement,
    ) -> Result<(), Error> {
        self.backend
            .settle(
                &self.name,
                sequence,
                attempt,
                settlement,
                #[cfg(feature = "nats")]
                None,
            )
            .await
    }

    /// The queue's figures now.
    pub async fn stats(&self) -> Result<QueueStats, Error> {
        match &self.backend {
            Backend::Embedded(store) => store.stats(&self.name).await,
            Backend::Remote(remote) => remote.queue_stats(&self.name).await,
            #[cfg(feature = "nats")]
            Backend::Nats(nats) => crate::nats::queue::stats(nats, &self.name).await,
        }
    }
}

/// A delivered job, as the store or a remote broker hands it out.
#[derive(Debug)]
pub(crate) struct Leased {
    pub(crate) sequence: u64,
    pub(crate) attempt: u32,
    pub(crate) id: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) payload: Bytes,
    /// A NATS delivery's lease (the other backends settle by number).
    #[cfg(feature = "nats")]
    pub(crate) nats: Option<crate::nats::queue::Lease>,
}

pub(crate) enum WorkerSource {
    Embedded(store::Pulling),
    Remote(Box<sinew_rpc::Streaming<crate::proto::Job>>),
    #[cfg(feature = "nats")]
    Nats(crate::nats::queue::Fetched),
}

impl fmt::Debug for WorkerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerSource::Embedded(_) => "Embedded",
            WorkerSource::Remote(_) => "Remote",
            #[cfg(feature = "nats")]
            WorkerSource::Nats(_) => "Nats",
        })
    }
}

/// A worker's jobs, as a stream of [`Delivery`]s. Dropping it stops the
/// deliveries; the jobs it holds unsettled are delivered again once their
/// lease runs out.
#[derive(Debug)]
pub struct Worker {
    queue: Arc<str>,
    backend: Backend,
    source: WorkerSource,
    error: Option<Error>,
}

impl Worker {
    /// The next job; `None` once the broker is gone or the connection to it
    /// lost ([`error`](Worker::error) says why).
    pub async fn next_job(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.poll_job(cx)).await
    }

    fn poll_job(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        if self.error.is_some() {
            return Poll::Ready(None);
        }
        let leased = match &mut self.source {
            WorkerSource::Embedded(pulling) => match pulling.poll_recv(cx) {
                Poll::Ready(Some(leased)) => leased,
                Poll::Ready(None) => {
                    self.error = Some(Error::Closed);
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            },
            WorkerSource::Remote(stream) => {
                match futures_core::Stream::poll_next(Pin::new(&mut **stream), cx) {
                    Poll::Ready(Some(Ok(job))) => crate::remote::leased(job),
                    Poll::Ready(Some(Err(status))) => {
                        self.error = Some(crate::remote::error_from(status, &self.queue));
                        return Poll::Ready(None);
                    }
                    Poll::Ready(None) => {
                        self.error = Some(Error::Closed);
                        return Poll::Ready(None);
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            #[cfg(feature = "nats")]
            WorkerSource::Nats(fetched) => match fetched.poll_recv(cx) {
                Poll::Ready(Some(leased)) => leased,
                Poll::Ready(None) => {
                    self.error = Some(Error::Closed);
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        Poll::Ready(Some(Delivery {
            queue: self.queue.clone(),
            backend: self.backend.clone(),
            leased,
        }))
    }

    /// Why the deliveries ended.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// Why the deliveries ended, owned.
    pub(crate) fn into_error(self) -> Option<Error> {
        self.error
    }
}

impl futures_core::Stream for Worker {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.get_mut().poll_job(cx)
    }
}

/// A job delivered to a worker, leased to it until it is settled or the
/// queue's ack wait runs out.
#[derive(Debug)]
pub struct Delivery {
    queue: Arc<str>,
    backend: Backend,
    leased: Leased,
}

impl Delivery {
    /// The job's sequence number in its queue.
    pub fn sequence(&self) -> u64 {
        self.leased.sequence
    }

    /// Which delivery of the job this is: 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.leased.attempt
    }

    /// The job's idempotency id, if it was pushed with one.
    pub fn id(&self) -> Option<&str> {
        self.leased.id.as_deref()
    }

    /// The job's ordering key, if it was pushed with one.
    pub fn key(&self) -> Option<&str> {
        self.leased.key.as_deref()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.leased.headers, name)
    }

    /// The job's headers.
    pub fn headers(&self) -> &[(String, String)] {
        &self.leased.headers
    }

    /// The job's payload.
    pub fn payload(&self) -> &Bytes {
        &self.leased.payload
    }

    /// The payload, decoded as an `M`.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.leased.payload.clone())
    }

    async fn settle(&self, settlement: Settlement) -> Result<(), Error> {
        self.backend
            .settle(
                &self.queue,
                self.leased.sequence,
                self.leased.attempt,
                settlement,
                #[cfg(feature = "nats")]
                self.leased.nats.as_ref(),
            )
            .await
    }

    /// Done: the job is removed. [`Error::LeaseLost`] if its lease ran out
    /// first (it is delivered again, or was).
    pub async fn ack(self) -> Result<(), Error> {
        self.settle(Settlement::Ack).await
    }

    /// Failed: deliver it again after `delay` (or move it to the dead-letter
    /// queue, if this was its last delivery).
    pub async fn nak(self, delay: Duration) -> Result<(), Error> {
        self.settle(Settlement::Nak(delay)).await
    }

    /// Still working: the lease runs for another ack wait from now.
    pub async fn in_progress(&self) -> Result<(), Error> {
        self.settle(Settlement::InProgress).await
    }

    /// Never deliver it again: the job is removed (counted as terminated).
    pub async fn term(self) -> Result<(), Error> {
        self.settle(Settlement::Term).await
    }
}
