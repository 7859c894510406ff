//! Work queues on JetStream (the mapping is in the parent module's docs).

use super::{from_headers, nats_error, to_headers, Nats};
use crate::error::Error;
use crate::lock;
use crate::work::{
    Job, Leased, Pushed, QueueConfig, QueueStats, Settlement, DEAD_LETTER_DELIVERIES,
    DEAD_LETTER_FROM,
};
use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

const STREAM_PREFIX: &str = "SINEW_Q_";
const CONSUMER: &str = "sinew-workers";
/// How long a pull request waits at the server for jobs: short, so that a
/// pull that silently stalled (nats.rs#860) is replaced within it. No idle
/// heartbeat is asked for: with NATS 2.9 and async-nats 0.51, a job
/// delivered to a pull request after its idle heartbeats was not handed
/// over, and waited out its ack wait (found by
/// `a_full_dead_letter_queue_holds_the_job_back_until_it_has_room`).
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// How long after a failed pull request the next one is made.
const PULL_RETRY: Duration = Duration::from_secs(1);
/// How soon a job whose move to the dead-letter queue failed is tried
/// again.
const BURY_RETRY: Duration = Duration::from_secs(1);

/// The stream of queue `name`: `.` and `_` escaped, so that no two queue
/// names share one.
fn stream_name(queue: &str) -> String {
    let mut name = String::from(STREAM_PREFIX);
    for c in queue.chars() {
        match c {
            '.' => name.push_str("_2e"),
            '_' => name.push_str("_5f"),
            c => name.push(c),
        }
    }
    name
}

/// The queue whose stream is `stream`, if it is one of sinew's.
fn queue_name(stream: &str) -> Option<String> {
    let escaped = stream.strip_prefix(STREAM_PREFIX)?;
    Some(escaped.replace("_2e", ".").replace("_5f", "_"))
}

fn subject(queue: &str) -> String {
    format!("sinew.queue.{queue}")
}

fn is_not_found(error: &impl std::fmt::Display) -> bool {
    let text = error.to_string();
    text.contains("not found") || text.contains("10059") || text.contains("10014")
}

/// The stream of queue `queue`, which must exist.
async fn existing(nats: &Nats, queue: &str) -> Result<stream::Stream, Error> {
    nats.jetstream()
        .get_stream(stream_name(queue))
        .await
        .map_err(|error| {
            if is_not_found(&error) {
                Error::UnknownQueue(queue.to_owned())
            } else {
                nats_error(error)
            }
        })
}

/// Creates or updates queue `name` (or, without a config, opens it).
pub(crate) async fn declare(
    nats: &Nats,
    queue: &str,
    config: Option<QueueConfig>,
) -> Result<QueueConfig, Error> {
    let jetstream = nats.jetstream();
    let name = stream_name(queue);
    let Some(config) = config else {
        let mut stream = existing(nats, queue).await?;
        let info = stream.info().await.map_err(nats_error)?.clone();
        let consumer: jetstream::consumer::Consumer<pull::Config> =
            stream.get_consumer(CONSUMER).await.map_err(nats_error)?;
        let consumer_config = &consumer.cached_info().config;
        let mut found = QueueConfig::default()
            .ack_wait(consumer_config.ack_wait)
            .duplicate_window(info.config.duplicate_window)
            .max_jobs(info.config.max_messages.max(1) as u64)
            .max_bytes(info.config.max_bytes.max(1) as u64);
        // The rest is sinew's own, in the stream's description.
        let description = info.config.description.unwrap_or_default();
        for setting in description.split(';').map(str::trim) {
            if let Some(max) = setting.strip_prefix("max_deliveries=") {
                found = match max.parse() {
                    Ok(max) => found.max_deliveries(max),
                    Err(_) => found.unlimited_deliveries(),
                };
            }
            if let Some(dead_letter) = setting.strip_prefix("dead_letter=") {
                if !dead_letter.is_empty() {
                    found = found.dead_letter(dead_letter);
                }
            }
        }
        return Ok(found);
    };
    let stream_config = stream::Config {
        name: name.clone(),
        subjects: vec![subject(queue)],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        max_messages: config.max_jobs.min(i64::MAX as u64) as i64,
        max_bytes: config.max_bytes.min(i64::MAX as u64) as i64,
        max_message_size: nats.max_payload().min(i32::MAX as usize) as i32,
        duplicate_window: config.duplicate_window,
        // JetStream has no place for these; sinew keeps them here.
        description: Some(format!(
            "sinew work queue; max_deliveries={}; dead_letter={}",
            config
                .get_max_deliveries()
                .map_or("unlimited".to_owned(), |max| max.to_string()),
            config.dead_letter.clone().unwrap_or_default()
        )),
        ..Default::default()
    };
    let stream = match jetstream.get_stream(&name).await {
        Ok(_) => {
            jetstream
                .update_stream(stream_config)
                .await
                .map_err(nats_error)?;
            jetstream.get_stream(&name).await.map_err(nats_error)?
        }
        Err(_) => jetstream
            .create_stream(stream_config)
            .await
            .map_err(nats_error)?,
    };
    let consumer_config = pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        // Unlimited for JetStream: sinew's workers move a job past its
        // last delivery to the dead-letter queue (see the module docs), and
        // one whose move failed must come back to be tried again.
        max_deliver: -1,
        max_ack_pending: 1_000_000,
        ..Default::default()
    };
    // Creating the durable consumer again with new settings updates those
    // a server lets change (the ack wait, the deliveries).
    stream
        .create_consumer(consumer_config)
        .await
        .map_err(nats_error)?;
    Ok(config)
}

pub(crate) async fn push(nats: &Nats, queue: &str, job: Job) -> Result<Pushed, Error> {
    job.check(nats.max_payload())?;
    if job.key.is_some() {
        return Err(Error::Unsupported(
            "ordering keys on the NATS backend (NATS 2.9 cannot hold a key's later jobs back)",
        ));
    }
    let mut publish = jetstream::message::PublishMessage::build()
        .payload(job.payload)
        .headers(to_headers(&job.headers));
    if let Some(id) = &job.id {
        publish = publish.message_id(id);
    }
    let ack = nats
        .jetstream()
        .send_publish(subject(queue), publish)
        .await
        .map_err(nats_error)?
        .await
        .map_err(|error| {
            let text = error.to_string();
            if error.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
                Error::UnknownQueue(queue.to_owned())
            } else if text.contains("maximum messages") || text.contains("maximum bytes") {
                Error::QueueFull {
                    queue: queue.to_owned(),
                    limit: text,
                }
            } else {
                nats_error(error)
            }
        })?;
    Ok(Pushed {
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// A delivered JetStream message's means of being settled, and the slot it
/// holds in its worker (freed when the delivery is settled or dropped).
#[derive(Debug)]
pub(crate) struct Lease {
    message: jetstream::Message,
    /// Where the job goes if this delivery fails: set on its last one.
    dead_letter: Option<Arc<str>>,
    source: Arc<str>,
    nats: Nats,
    ack_wait: Duration,
    slot: Arc<Slot>,
}

/// A place among a worker's `max_in_flight`, taken by one delivery until
/// it is settled, dropped, or its lease runs out (whichever is first):
/// then the worker may fetch another job.
#[derive(Debug)]
struct Slot {
    slots: Arc<Semaphore>,
    released: AtomicBool,
    /// When the delivery's lease runs out (moved by `in_progress`).
    deadline: Mutex<Instant>,
}

impl Slot {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.slots.add_permits(1);
        }
    }

    fn deadline(&self) -> Instant {
        *lock(&self.deadline)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slot.release();
    }
}

/// The jobs a worker's task fetched for it.
pub(crate) type Fetched = mpsc::Receiver<Leased>;

/// Starts a worker on queue `name`: a task that fetches at most
/// `max_in_flight` jobs not yet settled.
pub(crate) async fn pull(
    nats: &Nats,
    queue: &str,
    config: &QueueConfig,
    max_in_flight: usize,
) -> Result<Fetched, Error> {
    let mut stream = existing(nats, queue).await?;
    let consumer: jetstream::consumer::Consumer<pull::Config> =
        stream.get_consumer(CONSUMER).await.map_err(nats_error)?;
    let _ = stream.info().await;
    let (jobs, fetched) = mpsc::channel(max_in_flight);
    let worker = WorkerTask {
        nats: nats.clone(),
        consumer,
        queue: Arc::from(queue),
        dead_letter: Arc::from(config.dead_letter_of(queue)),
        max_deliveries: config.get_max_deliveries(),
        ack_wait: config.get_ack_wait(),
        slots: Arc::new(Semaphore::new(max_in_flight)),
        out: Vec::new(),
        jobs,
    };
    tokio::spawn(worker.run());
    Ok(fetched)
}

struct WorkerTask {
    nats: Nats,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    queue: Arc<str>,
    dead_letter: Arc<str>,
    max_deliveries: Option<u32>,
    ack_wait: Duration,
    slots: Arc<Semaphore>,
    /// The slots of deliveries out, to free those whose lease ran out.
    out: Vec<Arc<Slot>>,
    jobs: mpsc::Sender<Leased>,
}

impl WorkerTask {
    /// Waits until the worker has room (a delivery settled, dropped, or
    /// its lease run out); how much, taken; `None` once the worker is gone.
    async fn room(&mut self) -> Option<usize> {
        loop {
            self.out
                .retain(|slot| !slot.released.load(Ordering::Acquire));
            let expiry = self.out.iter().map(|slot| slot.deadline()).min();
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                first = self.slots.acquire() => {
                    let first = first.ok()?;
                    first.forget();
                    let more = self.slots.available_permits();
                    if more > 0 {
                        if let Ok(rest) = self.slots.acquire_many(more as u32).await {
                            rest.forget();
                        }
                    }
                    return Some(1 + more);
                }
                () = tokio::time::sleep_until(expiry.unwrap_or(far)) => {
                    let now = Instant::now();
                    for slot in &self.out {
                        if slot.deadline() <= now {
                            slot.release();
                        }
                    }
                }
                () = self.jobs.closed() => return None,
            }
        }
    }

    async fn run(mut self) {
        loop {
            let Some(room) = self.room().await else {
                return;
            };
            let batch = tokio::select! {
                batch = self
                    .consumer
                    .batch()
                    .max_messages(room)
                    .expires(PULL_EXPIRES)
                    .messages() => batch,
                // The worker is gone.
                () = self.jobs.closed() => return,
            };
            let mut batch = match batch {
                Ok(batch) => batch,
                // The connection lost, typically: the client reconnects by
                // itself, and pulls are made again, a second apart.
                Err(_) => {
                    self.slots.add_permits(room);
                    tokio::time::sleep(PULL_RETRY).await;
                    continue;
                }
            };
            let mut left = room;
            while left > 0 {
                // The pull expired, or the connection was lost: it is
                // over, the next one is made at once.
                let Some(Ok(message)) = batch.next().await else {
                    break;
                };
                left -= 1;
                let slot = Arc::new(Slot {
                    slots: self.slots.clone(),
                    released: AtomicBool::new(false),
                    deadline: Mutex::new(Instant::now() + self.ack_wait),
                });
                self.out.push(slot.clone());
                if !self.hand_out(message, slot).await {
                    return;
                }
            }
            // Room the pull did not fill goes back.
            self.slots.add_permits(left);
        }
    }

    /// Sends the job to the worker, or moves it to the dead-letter queue
    /// if this is the delivery past the last; false once the worker is
    /// gone.
    async fn hand_out(&self, message: jetstream::Message, slot: Arc<Slot>) -> bool {
        let Ok(info) = message.info() else {
            return true;
        };
        let (sequence, attempt) = (info.stream_sequence, info.delivered.max(1) as u32);
        let lease = Lease {
            dead_letter: self
                .max_deliveries
                .filter(|max| attempt >= *max)
                .map(|_| self.dead_letter.clone()),
            source: self.queue.clone(),
            nats: self.nats.clone(),
            ack_wait: self.ack_wait,
            message,
            slot,
        };
        if self.max_deliveries.is_some_and(|max| attempt > max) {
            // A failed move leaves the job in place, back in a while.
            lease.bury_or_retry(attempt - 1).await;
            return true;
        }
        let leased = Leased {
            sequence,
            attempt,
            id: lease
                .message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("Nats-Msg-Id"))
                .map(|id| id.as_str().to_owned()),
            key: None,
            headers: from_headers(lease.message.headers.as_ref())
                .into_iter()
                .filter(|(name, _)| name != "Nats-Msg-Id")
                .collect(),
            payload: lease.message.payload.clone(),
            nats: Some(lease),
        };
        self.jobs.send(leased).await.is_ok()
    }
}

impl Lease {
    /// Moves the job to the dead-letter queue; if that fails (the
    /// dead-letter queue full, the connection lost), the job comes back
    /// after a while to be moved then: never left stuck, never dropped.
    async fn bury_or_retry(&self, deliveries: u32) {
        if self.bury(deliveries).await.is_err() {
            // Held a while, then given back at once (a nak's own delay is
            // not kept by NATS 2.9 when the message is delivered to a
            // pull request made meanwhile).
            let message = self.message.clone();
            tokio::spawn(async move {
                tokio::time::sleep(BURY_RETRY).await;
                let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
            });
        }
    }

    /// Moves the job to the dead-letter queue (a second move is a
    /// duplicate there), then terminates it here.
    async fn bury(&self, deliveries: u32) -> Result<(), Error> {
        // (Set on every delivery from the last one on.)
        let Some(target) = self.dead_letter.clone() else {
            return Ok(());
        };
        let info = self.message.info().map_err(nats_error)?;
        let mut headers = from_headers(self.message.headers.as_ref());
        headers.retain(|(name, _)| name != "Nats-Msg-Id");
        headers.push((DEAD_LETTER_FROM.to_owned(), self.source.to_string()));
        headers.push((DEAD_LETTER_DELIVERIES.to_owned(), deliveries.to_string()));
        let job = Job {
            id: Some(format!(
                "sinew-dead-{}-{}",
                info.stream, info.stream_sequence
            )),
            key: None,
            headers,
            payload: self.message.payload.clone(),
        };
        match push(&self.nats, &target, job.clone()).await {
            Err(Error::UnknownQueue(_)) => {
                declare(
                    &self.nats,
                    &target,
                    Some(QueueConfig::default().unlimited_deliveries()),
                )
                .await?;
                push(&self.nats, &target, job).await?;
            }
            other => {
                other?;
            }
        }
        self.message
            .double_ack_with(jetstream::AckKind::Term)
            .await
            .map_err(nats_error)
    }

    pub(crate) async fn settle(&self, settlement: Settlement) -> Result<(), Error> {
        let result = self.send(settlement).await;
        match settlement {
            Settlement::InProgress => {
                *lock(&self.slot.deadline) = Instant::now() + self.ack_wait;
            }
            _ => self.slot.release(),
        }
        result
    }

    async fn send(&self, settlement: Settlement) -> Result<(), Error> {
        let kind = match settlement {
            Settlement::Ack => jetstream::AckKind::Ack,
            Settlement::Term => jetstream::AckKind::Term,
            Settlement::InProgress => jetstream::AckKind::Progress,
            Settlement::Nak(delay) => {
                if self.dead_letter.is_some() {
                    let deliveries = self.message.info().map_or(0, |info| info.delivered as u32);
                    self.bury_or_retry(deliveries).await;
                    return Ok(());
                }
                jetstream::AckKind::Nak((!delay.is_zero()).then_some(delay))
            }
        };
        self.message.double_ack_with(kind).await.map_err(nats_error)
    }
}

pub(crate) async fn stats(nats: &Nats, queue: &str) -> Result<QueueStats, Error> {
    let mut stream = existing(nats, queue).await?;
    let state = stream.info().await.map_err(nats_error)?.state.clone();
    let consumer = stream.consumer_info(CONSUMER).await.map_err(nats_error)?;
    Ok(QueueStats {
        queue: queue.to_owned(),
        pending: consumer.num_pending,
        in_flight: consumer.num_ack_pending as u64,
        bytes: state.bytes,
        pushed: state.last_sequence,
        redelivered: consumer.num_redelivered as u64,
        workers: consumer.num_waiting as u64,
        ..QueueStats::default()
    })
}

pub(crate) async fn all_stats(nats: &Nats) -> Result<Vec<QueueStats>, Error> {
    let mut names = nats.jetstream().stream_names();
    let mut queues = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.map_err(nats_error)?;
        if let Some(queue) = queue_name(&name) {
            queues.push(queue);
        }
    }
    queues.sort();
    let mut all = Vec::new();
    for queue in queues {
        all.push(stats(nats, &queue).await?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_map_to_stream_names_and_back_without_collisions() {
        for queue in ["emails", "emails.eu", "emails_eu", "a._2e.b"] {
            let stream = stream_name(queue);
            assert!(!stream.contains('.'), "{stream}");
            assert_eq!(queue_name(&stream).as_deref(), Some(queue));
        }
        assert_ne!(stream_name("a.b"), stream_name("a_b"));
        assert_eq!(queue_name("ORDERS"), None);
    }
}
