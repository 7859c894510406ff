//! [`Store`]: the embedded broker's work queues, kept in redb by one
//! thread of their own.
//!
//! Callers send commands (declare, push, pull, settle, stats) over a
//! channel; the store's thread takes every command waiting, applies them
//! all in one write transaction, commits it (group commit: one disk flush
//! for many callers), and only then answers them and hands out the jobs
//! the transaction leased. redb's writes block, which is why this is a
//! thread and not a task on the async runtime.
//!
//! Tables (keys are tuples, values protobuf-encoded or plain integers):
//!
//! ```text
//! queues    name                 -> StoredQueue { config, next_sequence }
//! jobs      (name, sequence)     -> StoredJob { id, key, headers, payload, pushed_at_ms }
//! attempts  (name, sequence)     -> deliveries so far (u32)
//! ids       (name, id)           -> (sequence, pushed_at_ms), within the duplicate window
//! ```
//!
//! What is leased to whom, and when, is in memory only ([`Schedule`]): a
//! restarted broker delivers every job not acked again, its delivery count
//! kept. Memory waiting for the thread is bounded: a push holds a share of
//! a 64 MiB budget (its payload's size) until it is answered.

use super::schedule::{Meta, Schedule};
use super::{FsyncPolicy, Job, Leased, Pushed, QueueConfig, QueueStats, Settlement};
use crate::error::Error;
use crate::lock;
use crate::proto::{headers_from_proto, headers_to_proto};
use bytes::Bytes;
use prost::Message as _;
use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc as tokio_mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

const QUEUES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("queues");
const JOBS: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("jobs");
const ATTEMPTS: TableDefinition<'_, (&str, u64), u32> = TableDefinition::new("attempts");
const IDS: TableDefinition<'_, (&str, &str), (u64, u64)> = TableDefinition::new("ids");

/// Bytes of pushed payloads waiting for the store's thread, at most.
const PUSH_BUDGET: usize = 64 << 20;
/// Commands applied in one transaction, at most.
const MAX_BATCH: usize = 1024;

/// A queue's record in the `queues` table.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredQueue {
    #[prost(message, optional, tag = "1")]
    config: Option<crate::proto::QueueConfig>,
    #[prost(uint64, tag = "2")]
    next_sequence: u64,
}

/// A job's record in the `jobs` table.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredJob {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(message, repeated, tag = "3")]
    headers: Vec<crate::proto::Header>,
    #[prost(bytes = "bytes", tag = "4")]
    payload: Bytes,
    #[prost(uint64, tag = "5")]
    pushed_at_ms: u64,
}

/// Headers a dead-lettered job carries: where it came from, and how many
/// times it was delivered there.
pub const DEAD_LETTER_FROM: &str = "sinew-dead-letter-from";
/// See [`DEAD_LETTER_FROM`].
pub const DEAD_LETTER_DELIVERIES: &str = "sinew-dead-letter-deliveries";

fn storage(error: impl std::fmt::Display) -> Error {
    Error::Storage(error.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

enum Command {
    Declare {
        queue: Arc<str>,
        /// `None`: open the queue as it is.
        config: Option<QueueConfig>,
        reply: oneshot::Sender<Result<QueueConfig, Error>>,
    },
    Push {
        queue: Arc<str>,
        job: Job,
        reply: oneshot::Sender<Result<Pushed, Error>>,
        _budget: Option<OwnedSemaphorePermit>,
    },
    Pull {
        queue: Arc<str>,
        max_in_flight: usize,
        jobs: tokio_mpsc::UnboundedSender<Leased>,
        reply: oneshot::Sender<Result<u64, Error>>,
    },
    Leave {
        queue: Arc<str>,
        worker: u64,
        /// Deliveries the worker never took: back to the queue at once.
        unseen: Vec<(u64, u32)>,
    },
    Settle {
        queue: Arc<str>,
        sequence: u64,
        attempt: u32,
        settlement: Settlement,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Stats {
        queue: Option<Arc<str>>,
        reply: oneshot::Sender<Result<Vec<QueueStats>, Error>>,
    },
}

/// The handle on the store's thread. Clones share it; the thread ends
/// when the last handle (workers' included) is gone.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    commands: mpsc::Sender<Command>,
    budget: Arc<Semaphore>,
    max_payload: usize,
    /// Every queue's figures, as the thread last published them.
    snapshot: Arc<Mutex<Vec<QueueStats>>>,
}

/// How often, at most, the thread publishes the queues' figures for
/// [`Store::snapshot`] (metrics read them at each scrape, without asking the
/// thread).
const SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl Store {
    /// A store in memory (what [`Broker::new`](crate::Broker::new) uses).
    pub(crate) fn in_memory(max_payload: usize) -> Store {
        Store::open(None, FsyncPolicy::Always, max_payload)
            .expect("an in-memory redb database opens")
    }

    /// The store in the file at `path` (created if missing), or in memory.
    pub(crate) fn open(
        path: Option<&Path>,
        fsync: FsyncPolicy,
        max_payload: usize,
    ) -> Result<Store, Error> {
        let db = match path {
            Some(path) => Database::create(path).map_err(storage)?,
            None => Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(storage)?,
        };
        let snapshot = Arc::new(Mutex::new(Vec::new()));
        let mut engine = Engine::load(db, fsync, snapshot.clone())?;
        engine.publish_snapshot();
        let (commands, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("sinew-work-queues".into())
            .spawn(move || engine.run(receiver))
            .map_err(storage)?;
        Ok(Store {
            shared: Arc::new(Shared {
                commands,
                budget: Arc::new(Semaphore::new(PUSH_BUDGET)),
                max_payload,
                snapshot,
            }),
        })
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .commands
            .send(command(reply))
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    pub(crate) async fn declare(
        &self,
        queue: &str,
        config: Option<QueueConfig>,
    ) -> Result<QueueConfig, Error> {
        let queue = Arc::from(queue);
        self.ask(|reply| Command::Declare {
            queue,
            config,
            reply,
        })
        .await
    }

    pub(crate) async fn push(&self, queue: &Arc<str>, job: Job) -> Result<Pushed, Error> {
        job.check(self.shared.max_payload)?;
        let share = job.payload.len().clamp(1, PUSH_BUDGET) as u32;
        let budget = self
            .shared
            .budget
            .clone()
            .acquire_many_owned(share)
            .await
            .map_err(|_| Error::Closed)?;
        let queue = queue.clone();
        self.ask(|reply| Command::Push {
            queue,
            job,
            reply,
            _budget: Some(budget),
        })
        .await
    }

    pub(crate) async fn pull(
        &self,
        queue: &Arc<str>,
        max_in_flight: usize,
    ) -> Result<Pulling, Error> {
        let (jobs, receiver) = tokio_mpsc::unbounded_channel();
        let worker = self
            .ask(|reply| Command::Pull {
                queue: queue.clone(),
                max_in_flight,
                jobs,
                reply,
            })
            .await?;
        Ok(Pulling {
            receiver,
            store: self.clone(),
            queue: queue.clone(),
            worker,
        })
    }

    pub(crate) async fn settle(
        &self,
        queue: &str,
        sequence: u64,
        attempt: u32,
        settlement: Settlement,
    ) -> Result<(), Error> {
        let queue = Arc::from(queue);
        self.ask(|reply| Command::Settle {
            queue,
            sequence,
            attempt,
            settlement,
            reply,
        })
        .await
    }

    pub(crate) async fn stats(&self, queue: &str) -> Result<QueueStats, Error> {
        let queue: Arc<str> = Arc::from(queue);
        let mut all = self
            .ask(|reply| Command::Stats {
                queue: Some(queue.clone()),
                reply,
            })
            .await?;
        all.pop()
            .ok_or_else(|| Error::UnknownQueue(queue.to_string()))
    }

    /// Every queue's figures as of at most a quarter of a second ago,
    /// without waiting for the thread.
    pub(crate) fn snapshot(&self) -> Vec<QueueStats> {
        lock(&self.shared.snapshot).clone()
    }

    pub(crate) async fn all_stats(&self) -> Result<Vec<QueueStats>, Error> {
        self.ask(|reply| Command::Stats { queue: None, reply })
            .await
    }
}

/// One worker's end: the jobs the store leased to it. Dropping it tells
/// the store the worker left.
#[derive(Debug)]
pub(crate) struct Pulling {
    receiver: tokio_mpsc::UnboundedReceiver<Leased>,
    store: Store,
    queue: Arc<str>,
    worker: u64,
}

impl Pulling {
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Leased>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for Pulling {
    fn drop(&mut self) {
        // Jobs sent that the worker never took go back at once, not after
        // their ack wait.
        self.receiver.close();
        let mut unseen = Vec::new();
        while let Ok(leased) = self.receiver.try_recv() {
            unseen.push((leased.sequence, leased.attempt));
        }
        let _ = self.store.shared.commands.send(Command::Leave {
            queue: self.queue.clone(),
            worker: self.worker,
            unseen,
        });
    }
}

/// A worker as the store knows it.
#[derive(Debug)]
struct Slot {
    jobs: tokio_mpsc::UnboundedSender<Leased>,
    max_in_flight: usize,
    in_flight: usize,
}

#[derive(Debug, Default)]
struct Counters {
    pushed: u64,
    duplicates: u64,
    acked: u64,
    redelivered: u64,
    dead_lettered: u64,
    terminated: u64,
}

/// One queue, in memory.
#[derive(Debug)]
struct Queue {
    config: QueueConfig,
    next_sequence: u64,
    schedule: Schedule,
    /// Ids within the duplicate window, and the same in push order (to
    /// forget them as the window passes).
    ids: HashMap<String, u64>,
    id_order: VecDeque<(u64, String)>,
    workers: BTreeMap<u64, Slot>,
    /// Where the next round of deliveries starts among the workers.
    turn: u64,
    counters: Counters,
}

impl Queue {
    fn new(config: QueueConfig, next_sequence: u64) -> Queue {
        Queue {
            config,
            next_sequence,
            schedule: Schedule::default(),
            ids: HashMap::new(),
            id_order: VecDeque::new(),
            workers: BTreeMap::new(),
            turn: 0,
            counters: Counters::default(),
        }
    }

    fn stats(&self, name: &str) -> QueueStats {
        let schedule = &self.schedule;
        QueueStats {
            queue: name.to_owned(),
            pending: (schedule.ready_len() + schedule.waiting_len() + schedule.held_len()) as u64,
            in_flight: schedule.leased_len() as u64,
            delayed: schedule.delayed_len() as u64,
            bytes: schedule.bytes(),
            pushed: self.counters.pushed,
            duplicates: self.counters.duplicates,
            acked: self.counters.acked,
            redelivered: self.counters.redelivered,
            dead_lettered: self.counters.dead_lettered,
            terminated: self.counters.terminated,
            workers: self.workers.len() as u64,
        }
    }

    fn stored(&self) -> StoredQueue {
        StoredQueue {
            config: Some(self.config.to_proto()),
            next_sequence: self.next_sequence,
        }
    }
}

/// An answer to send once the transaction is committed (or to turn into
/// the commit's error).
type Reply = Box<dyn FnOnce(Option<&str>)>;

fn reply_after<T: 'static>(
    replies: &mut Vec<Reply>,
    sender: oneshot::Sender<Result<T, Error>>,
    result: Result<T, Error>,
) {
    replies.push(Box::new(move |failed: Option<&str>| {
        let result = match failed {
            Some(error) => Err(Error::Storage(error.to_owned())),
            None => result,
        };
        let _ = sender.send(result);
    }));
}

/// A job leased in a transaction, to hand its worker after the commit.
type Delivering = (Arc<str>, tokio_mpsc::UnboundedSender<Leased>, Leased);

/// The store's thread: the database and every queue's schedule.
struct Engine {
    db: Database,
    fsync: FsyncPolicy,
    /// When a transaction was last made durable, and whether one since was
    /// not.
    last_durable: Instant,
    pending_durability: bool,
    queues: BTreeMap<Arc<str>, Queue>,
    next_worker: u64,
    /// Where the figures are published, when they were last, and whether
    /// they changed since.
    snapshot: Arc<Mutex<Vec<QueueStats>>>,
    snapshot_at: Instant,
    snapshot_stale: bool,
    /// Why the store refuses everything: a failed transaction whose
    /// effects on memory could not be undone.
    broken: Option<String>,
    /// Queues pushed to in the transaction under way, whose records are
    /// written before its commit.
    unsaved: Vec<Arc<str>>,
}

/// Answers every command of `batch` that waits for an answer with the
/// transaction's error (through `replies`); a worker leaving is done.
fn refuse(batch: Vec<Command>, replies: &mut Vec<Reply>) {
    for command in batch {
        match command {
            Command::Declare { reply, .. } => reply_after(replies, reply, Err(Error::Closed)),
            Command::Push { reply, .. } => reply_after(replies, reply, Err(Error::Closed)),
            Command::Pull { reply, .. } => reply_after(replies, reply, Err(Error::Closed)),
            Command::Settle { reply, .. } => reply_after(replies, reply, Err(Error::Closed)),
            Command::Stats { reply, .. } => reply_after(replies, reply, Err(Error::Closed)),
            Command::Leave { .. } => {}
        }
    }
}

/// The tables of one write transaction.
struct Tables<'t> {
    queues: redb::Table<'t, &'static str, &'static [u8]>,
    jobs: redb::Table<'t, (&'static str, u64), &'static [u8]>,
    attempts: redb::Table<'t, (&'static str, u64), u32>,
    ids: redb::Table<'t, (&'static str, &'static str), (u64, u64)>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, Error> {
        Ok(Tables {
            queues: txn.open_table(QUEUES).map_err(storage)?,
            jobs: txn.open_table(JOBS).map_err(storage)?,
            attempts: txn.open_table(ATTEMPTS).map_err(storage)?,
            ids: txn.open_table(IDS).map_err(storage)?,
        })
    }
}

impl Engine {
    /// The engine over `db`, every queue's jobs loaded.
    fn load(
        db: Database,
        fsync: FsyncPolicy,
        snapshot: Arc<Mutex<Vec<QueueStats>>>,
    ) -> Result<Engine, Error> {
        let mut engine = Engine {
            db,
            fsync,
            last_durable: Instant::now(),
            pending_durability: false,
            queues: BTreeMap::new(),
            next_worker: 0,
            snapshot,
            snapshot_at: Instant::now(),
            snapshot_stale: false,
            broken: None,
            unsaved: Vec::new(),
        };
        engine.reload()?;
        Ok(engine)
    }

    /// Rebuilds every queue from the database: at open, and after a failed
    /// commit (so that memory says what the disk says). Leases are lost:
    /// the jobs are delivered again.
    fn reload(&mut self) -> Result<(), Error> {
        let mut loaded = BTreeMap::new();
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let tables = Tables::open(&txn)?;
            let now = now_ms();
            for entry in tables.queues.iter().map_err(storage)? {
                let (name, record) = entry.map_err(storage)?;
                let name: Arc<str> = Arc::from(name.value());
                let stored = StoredQueue::decode(record.value()).map_err(storage)?;
                let config = QueueConfig::from_proto(&stored.config.unwrap_or_default());
                let mut queue = Queue::new(config, stored.next_sequence);
                let range = (&*name, 0u64)..=(&*name, u64::MAX);
                for entry in tables.jobs.range(range).map_err(storage)? {
                    let (key, record) = entry.map_err(storage)?;
                    let sequence = key.value().1;
                    let job = StoredJob::decode(record.value()).map_err(storage)?;
                    let attempts = tables
                        .attempts
                        .get((&*name, sequence))
                        .map_err(storage)?
                        .map_or(0, |guard| guard.value());
                    queue.schedule.add(
                        sequence,
                        Meta {
                            key: Some(job.key).filter(|key| !key.is_empty()).map(Arc::from),
                            size: job.payload.len() as u64,
                            attempts,
                        },
                    );
                }
                let window = queue.config.duplicate_window.as_millis() as u64;
                let range = (&*name, "")..;
                let mut ids = Vec::new();
                for entry in tables.ids.range(range).map_err(storage)? {
                    let (key, value) = entry.map_err(storage)?;
                    let (queue_name, id) = key.value();
                    if queue_name != &*name {
                        break;
                    }
                    let (sequence, pushed_at) = value.value();
                    if pushed_at.saturating_add(window) > now {
                        ids.push((pushed_at, id.to_owned(), sequence));
                    }
                }
                ids.sort();
                for (pushed_at, id, sequence) in ids {
                    queue.ids.insert(id.clone(), sequence);
                    queue.id_order.push_back((pushed_at, id));
                }
                loaded.insert(name, queue);
            }
        }
        txn.abort().map_err(storage)?;
        self.unsaved.clear();
        // Workers stay, with nothing in flight: the leases are gone.
        for (name, old) in std::mem::replace(&mut self.queues, loaded) {
            if let Some(queue) = self.queues.get_mut(&name) {
                queue.workers = old
                    .workers
                    .into_iter()
                    .map(|(id, slot)| {
                        (
                            id,
                            Slot {
                                in_flight: 0,
                                ..slot
                            },
                        )
                    })
                    .collect();
            }
        }
        Ok(())
    }

    fn run(mut self, commands: mpsc::Receiver<Command>) {
        loop {
            let first = match self.next_timer() {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    match commands.recv_timeout(wait) {
                        Ok(command) => Some(command),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match commands.recv() {
                    Ok(command) => Some(command),
                    Err(_) => break,
                },
            };
            let mut batch: Vec<Command> = first.into_iter().collect();
            while batch.len() < MAX_BATCH {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.step(batch);
            self.snapshot_stale = true;
            if self.snapshot_at.elapsed() >= SNAPSHOT_EVERY {
                self.publish_snapshot();
            }
        }
        // Everyone is gone: what was written without a flush is flushed.
        if self.pending_durability {
            if let Ok(txn) = self.db.begin_write() {
                let _ = txn.commit();
            }
        }
    }

    /// When the thread must wake without a command: a lease runs out, a
    /// delay ends, writes are due to be flushed, or figures published.
    fn next_timer(&self) -> Option<Instant> {
        let flush = match self.fsync {
            FsyncPolicy::Interval(interval) if self.pending_durability => {
                Some(self.last_durable + interval)
            }
            _ => None,
        };
        let snapshot = self
            .snapshot_stale
            .then_some(self.snapshot_at + SNAPSHOT_EVERY);
        self.queues
            .values()
            .filter_map(|queue| queue.schedule.next_timer())
            .chain(flush)
            .chain(snapshot)
            .min()
    }

    /// Publishes every queue's figures for [`Store::snapshot`].
    fn publish_snapshot(&mut self) {
        let figures = self
            .queues
            .iter()
            .map(|(name, queue)| queue.stats(name))
            .collect();
        *lock(&self.snapshot) = figures;
        self.snapshot_at = Instant::now();
        self.snapshot_stale = false;
    }

    /// Applies `batch` and what time did, in one transaction; answers
    /// after the commit.
    fn step(&mut self, batch: Vec<Command>) {
        let mut replies: Vec<Reply> = Vec::new();
        let mut deliveries: Vec<Delivering> = Vec::new();
        let result = self.transaction(batch, &mut replies, &mut deliveries);
        let failed = result.as_ref().err().map(ToString::to_string);
        for reply in replies {
            reply(failed.as_deref());
        }
        match failed {
            None => {
                for (queue, worker, leased) in deliveries {
                    let sequence = leased.sequence;
                    if worker.send(leased).is_err() {
                        self.unsent(&queue, sequence);
                    }
                }
            }
            Some(error) => {
                // The disk refused the transaction: memory goes back to
                // what the disk says; if it cannot be read either, every
                // call is refused from now on (never served from a memory
                // that disagrees with the disk).
                if self.broken.is_none() && self.reload().is_err() {
                    self.broken = Some(error);
                }
            }
        }
    }

    /// Gives back a job leased to a worker that left before it was sent:
    /// ready again, its delivery not counted.
    fn unsent(&mut self, name: &str, sequence: u64) {
        if let Some(queue) = self.queues.get_mut(name) {
            queue.schedule.unlease(sequence);
            queue.workers.retain(|_, slot| !slot.jobs.is_closed());
        }
    }

    fn transaction(
        &mut self,
        batch: Vec<Command>,
        replies: &mut Vec<Reply>,
        deliveries: &mut Vec<Delivering>,
    ) -> Result<(), Error> {
        if let Some(broken) = &self.broken {
            let error = Error::Storage(broken.clone());
            refuse(batch, replies);
            return Err(error);
        }
        let now = Instant::now();
        let durable = match self.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(interval) => now.duration_since(self.last_durable) >= interval,
        };
        let opened = self.db.begin_write().map_err(storage).and_then(|mut txn| {
            if !durable {
                txn.set_durability(Durability::None).map_err(storage)?;
            }
            Ok(txn)
        });
        let txn = match opened {
            Ok(txn) => txn,
            Err(error) => {
                refuse(batch, replies);
                return Err(error);
            }
        };
        {
            let mut tables = match Tables::open(&txn) {
                Ok(tables) => tables,
                Err(error) => {
                    refuse(batch, replies);
                    return Err(error);
                }
            };
            for command in batch {
                self.apply(command, &mut tables, now, replies)?;
            }
            self.expire(&mut tables, now)?;
            self.dispatch(&mut tables, now, deliveries)?;
            self.save_records(&mut tables)?;
        }
        txn.commit().map_err(storage)?;
        if durable {
            self.last_durable = now;
            self.pending_durability = false;
        } else {
            self.pending_durability = true;
        }
        Ok(())
    }

    fn apply(
        &mut self,
        command: Command,
        tables: &mut Tables<'_>,
        now: Instant,
        replies: &mut Vec<Reply>,
    ) -> Result<(), Error> {
        match command {
            Command::Declare {
                queue,
                config,
                reply,
            } => {
                let result = self.declare(tables, &queue, config);
                reply_after(replies, reply, result);
            }
            Command::Push {
                queue, job, reply, ..
            } => {
                let result = self.push(tables, &queue, job);
                reply_after(replies, reply, result);
            }
            Command::Pull {
                queue,
                max_in_flight,
                jobs,
                reply,
            } => {
                let result = match self.queues.get_mut(&queue) {
                    Some(state) => {
                        let worker = self.next_worker;
                        self.next_worker += 1;
                        state.workers.insert(
                            worker,
                            Slot {
                                jobs,
                                max_in_flight,
                                in_flight: 0,
                            },
                        );
                        Ok(worker)
                    }
                    None => Err(Error::UnknownQueue(queue.to_string())),
                };
                reply_after(replies, reply, result);
            }
            Command::Leave {
                queue,
                worker,
                unseen,
            } => {
                if let Some(state) = self.queues.get_mut(&queue) {
                    state.workers.remove(&worker);
                    for (sequence, attempt) in unseen {
                        if state
                            .schedule
                            .lease(sequence, attempt)
                            .is_ok_and(|lease| lease.worker == worker)
                        {
                            state.schedule.unlease(sequence);
                        }
                    }
                }
            }
            Command::Settle {
                queue,
                sequence,
                attempt,
                settlement,
                reply,
            } => {
                let result = self.settle(tables, &queue, sequence, attempt, settlement, now);
                reply_after(replies, reply, result);
            }
            Command::Stats { queue, reply } => {
                let stats = self
                    .queues
                    .iter()
                    .filter(|(name, _)| queue.as_ref().is_none_or(|wanted| wanted == *name))
                    .map(|(name, state)| state.stats(name))
                    .collect();
                let _ = reply.send(Ok(stats));
            }
        }
        Ok(())
    }

    fn declare(
        &mut self,
        tables: &mut Tables<'_>,
        name: &Arc<str>,
        config: Option<QueueConfig>,
    ) -> Result<QueueConfig, Error> {
        let Some(config) = config else {
            return match self.queues.get(name) {
                Some(queue) => Ok(queue.config.clone()),
                None => Err(Error::UnknownQueue(name.to_string())),
            };
        };
        let queue = self
            .queues
            .entry(name.clone())
            .or_insert_with(|| Queue::new(config.clone(), 1));
        queue.config = config.clone();
        let record = queue.stored().encode_to_vec();
        tables
            .queues
            .insert(&**name, record.as_slice())
            .map_err(storage)?;
        Ok(config)
    }

    /// Writes the record (the next sequence) of every queue pushed to in
    /// this transaction, once however many pushes changed it.
    fn save_records(&mut self, tables: &mut Tables<'_>) -> Result<(), Error> {
        for name in std::mem::take(&mut self.unsaved) {
            if let Some(queue) = self.queues.get(&name) {
                let record = queue.stored().encode_to_vec();
                tables
                    .queues
                    .insert(&*name, record.as_slice())
                    .map_err(storage)?;
            }
        }
        Ok(())
    }

    /// Declares the dead-letter queue `name` if it does not exist.
    fn dead_letter_queue(
        &mut self,
        tables: &mut Tables<'_>,
        name: &str,
    ) -> Result<Arc<str>, Error> {
        let name: Arc<str> = Arc::from(name);
        if !self.queues.contains_key(&name) {
            self.declare(
                tables,
                &name,
                Some(QueueConfig::default().unlimited_deliveries()),
            )?;
        }
        Ok(name)
    }

    fn push(
        &mut self,
        tables: &mut Tables<'_>,
        name: &Arc<str>,
        job: Job,
    ) -> Result<Pushed, Error> {
        let queue = self
            .queues
            .get_mut(name)
            .ok_or_else(|| Error::UnknownQueue(name.to_string()))?;
        let pushed_at = now_ms();
        forget_old_ids(queue, tables, name, pushed_at)?;
        if let Some(id) = &job.id {
            if let Some(&sequence) = queue.ids.get(id) {
                queue.counters.duplicates += 1;
                return Ok(Pushed {
                    sequence,
                    duplicate: true,
                });
            }
        }
        let size = job.payload.len() as u64;
        if queue.schedule.len() as u64 >= queue.config.max_jobs {
            return Err(Error::QueueFull {
                queue: name.to_string(),
                limit: format!("{} jobs", queue.config.max_jobs),
            });
        }
        if queue.schedule.bytes() + size > queue.config.max_bytes {
            return Err(Error::QueueFull {
                queue: name.to_string(),
                limit: format!("{} bytes", queue.config.max_bytes),
            });
        }
        let sequence = queue.next_sequence;
        queue.next_sequence += 1;
        let record = StoredJob {
            id: job.id.clone().unwrap_or_default(),
            key: job.key.clone().unwrap_or_default(),
            headers: headers_to_proto(job.headers),
            payload: job.payload,
            pushed_at_ms: pushed_at,
        }
        .encode_to_vec();
        tables
            .jobs
            .insert((&**name, sequence), record.as_slice())
            .map_err(storage)?;
        if let Some(id) = job.id {
            tables
                .ids
                .insert((&**name, id.as_str()), (sequence, pushed_at))
                .map_err(storage)?;
            queue.ids.insert(id.clone(), sequence);
            queue.id_order.push_back((pushed_at, id));
        }
        queue.schedule.add(
            sequence,
            Meta {
                key: job.key.map(Arc::from),
                size,
                attempts: 0,
            },
        );
        queue.counters.pushed += 1;
        if !self.unsaved.contains(name) {
            self.unsaved.push(name.clone());
        }
        Ok(Pushed {
            sequence,
            duplicate: false,
        })
    }

    fn settle(
        &mut self,
        tables: &mut Tables<'_>,
        name: &Arc<str>,
        sequence: u64,
        attempt: u32,
        settlement: Settlement,
        now: Instant,
    ) -> Result<(), Error> {
        let lost = || Error::LeaseLost {
            queue: name.to_string(),
            sequence,
            attempt,
        };
        let queue = self
            .queues
            .get_mut(name)
            .ok_or_else(|| Error::UnknownQueue(name.to_string()))?;
        let lease = queue
            .schedule
            .lease(sequence, attempt)
            .map_err(|_| lost())?;
        match settlement {
            Settlement::InProgress => {
                let deadline = now + queue.config.ack_wait;
                queue
                    .schedule
                    .extend(sequence, attempt, deadline)
                    .map_err(|_| lost())?;
                return Ok(());
            }
            Settlement::Ack | Settlement::Term => {
                queue
                    .schedule
                    .settle(sequence, attempt)
                    .map_err(|_| lost())?;
                remove_job(tables, name, sequence)?;
                if settlement == Settlement::Ack {
                    queue.counters.acked += 1;
                } else {
                    queue.counters.terminated += 1;
                }
            }
            Settlement::Nak(delay) => {
                if queue
                    .config
                    .max_deliveries
                    .is_some_and(|max| attempt >= max)
                {
                    // Moved by `expire`, in this same transaction.
                    queue.schedule.hold(sequence, attempt).map_err(|_| lost())?;
                } else {
                    let until = (!delay.is_zero()).then(|| now + delay.min(super::MAX_DURATION));
                    queue
                        .schedule
                        .release(sequence, attempt, until)
                        .map_err(|_| lost())?;
                }
            }
        }
        if let Some(queue) = self.queues.get_mut(name) {
            if let Some(slot) = queue.workers.get_mut(&lease.worker) {
                slot.in_flight = slot.in_flight.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// Moves job `sequence` of `name` (held in its schedule) to the queue's
    /// dead-letter queue, with headers saying where it came from and how
    /// many times it was delivered. False if the dead-letter queue is full:
    /// the job stays held, and is moved when there is room.
    fn dead_letter(
        &mut self,
        tables: &mut Tables<'_>,
        name: &Arc<str>,
        sequence: u64,
    ) -> Result<bool, Error> {
        let Some(queue) = self.queues.get(name) else {
            return Ok(false);
        };
        let deliveries = queue.schedule.attempts(sequence);
        let target = queue.config.dead_letter_of(name);
        let record = tables
            .jobs
            .get((&**name, sequence))
            .map_err(storage)?
            .map(|guard| StoredJob::decode(guard.value()))
            .transpose()
            .map_err(storage)?;
        if let Some(record) = record {
            let target = self.dead_letter_queue(tables, &target)?;
            let mut headers = headers_from_proto(record.headers);
            headers.push((DEAD_LETTER_FROM.to_owned(), name.to_string()));
            headers.push((DEAD_LETTER_DELIVERIES.to_owned(), deliveries.to_string()));
            let job = Job {
                // The id stays out: the dead-letter queue is no producer's
                // retry target, and its window must not drop a second job.
                id: None,
                key: Some(record.key).filter(|key| !key.is_empty()),
                headers,
                payload: record.payload,
            };
            match self.push(tables, &target, job) {
                Ok(_) => {}
                Err(Error::QueueFull { .. }) => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        remove_job(tables, name, sequence)?;
        if let Some(queue) = self.queues.get_mut(name) {
            queue.schedule.forget(sequence);
            queue.counters.dead_lettered += 1;
        }
        Ok(true)
    }

    /// Leases that ran out: the job goes back, or is held for the
    /// dead-letter queue after its last delivery; held jobs move there
    /// (when it has room); delays that ended make jobs ready.
    fn expire(&mut self, tables: &mut Tables<'_>, now: Instant) -> Result<(), Error> {
        let names: Vec<Arc<str>> = self.queues.keys().cloned().collect();
        for name in names {
            let Some(queue) = self.queues.get_mut(&name) else {
                continue;
            };
            queue.schedule.wake_delayed(now);
            let expired = queue.schedule.expire(now);
            let max = queue.config.max_deliveries;
            for (sequence, lease) in expired {
                if let Some(slot) = queue.workers.get_mut(&lease.worker) {
                    slot.in_flight = slot.in_flight.saturating_sub(1);
                }
                if max.is_some_and(|max| lease.attempt >= max) {
                    queue.schedule.hold_expired(sequence);
                } else {
                    queue.schedule.requeue_expired(sequence);
                }
            }
            for sequence in queue.schedule.held() {
                if !self.dead_letter(tables, &name, sequence)? {
                    // Full: the rest waits too, in order.
                    break;
                }
            }
        }
        Ok(())
    }

    /// Leases ready jobs to workers with room, round robin; the deliveries
    /// are handed out after the commit.
    fn dispatch(
        &mut self,
        tables: &mut Tables<'_>,
        now: Instant,
        deliveries: &mut Vec<Delivering>,
    ) -> Result<(), Error> {
        for (name, queue) in &mut self.queues {
            queue.workers.retain(|_, slot| !slot.jobs.is_closed());
            if queue.workers.is_empty() || queue.schedule.ready_len() == 0 {
                continue;
            }
            let ids: Vec<u64> = queue.workers.keys().copied().collect();
            let start = (queue.turn as usize) % ids.len();
            queue.turn = queue.turn.wrapping_add(1);
            // One job per worker per round, until no worker has room or no
            // job is ready.
            loop {
                let mut leased_any = false;
                for index in 0..ids.len() {
                    let worker = ids[(start + index) % ids.len()];
                    let Some(slot) = queue.workers.get_mut(&worker) else {
                        continue;
                    };
                    if slot.in_flight >= slot.max_in_flight {
                        continue;
                    }
                    let deadline = now + queue.config.ack_wait;
                    let Some((sequence, attempt)) = queue.schedule.lease_next(worker, deadline)
                    else {
                        break;
                    };
                    slot.in_flight += 1;
                    leased_any = true;
                    if attempt > 1 {
                        queue.counters.redelivered += 1;
                    }
                    tables
                        .attempts
                        .insert((&**name, sequence), attempt)
                        .map_err(storage)?;
                    let record = tables
                        .jobs
                        .get((&**name, sequence))
                        .map_err(storage)?
                        .map(|guard| StoredJob::decode(guard.value()))
                        .transpose()
                        .map_err(storage)?
                        .unwrap_or_default();
                    deliveries.push((
                        name.clone(),
                        slot.jobs.clone(),
                        Leased {
                            sequence,
                            attempt,
                            id: Some(record.id).filter(|id| !id.is_empty()),
                            key: Some(record.key).filter(|key| !key.is_empty()),
                            headers: headers_from_proto(record.headers),
                            payload: record.payload,
                            #[cfg(feature = "nats")]
                            nats: None,
                        },
                    ));
                }
                if !leased_any {
                    break;
                }
            }
        }
        Ok(())
    }
}

fn remove_job(tables: &mut Tables<'_>, name: &str, sequence: u64) -> Result<(), Error> {
    tables.jobs.remove((name, sequence)).map_err(storage)?;
    tables.attempts.remove((name, sequence)).map_err(storage)?;
    Ok(())
}

/// Forgets ids older than the queue's duplicate window.
fn forget_old_ids(
    queue: &mut Queue,
    tables: &mut Tables<'_>,
    name: &str,
    now: u64,
) -> Result<(), Error> {
    let window = queue.config.duplicate_window.as_millis() as u64;
    while let Some((pushed_at, _)) = queue.id_order.front() {
        if pushed_at.saturating_add(window) > now {
            break;
        }
        if let Some((_, id)) = queue.id_order.pop_front() {
            queue.ids.remove(&id);
            tables.ids.remove((name, id.as_str())).map_err(storage)?;
        }
    }
    Ok(())
}
