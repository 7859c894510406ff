//! A key-value store with versions, compare-and-set and watches: generated code
//! plus [`KeyValueStore`].

#![allow(missing_docs)] // generated code; the .proto comments become its docs
include!(concat!(env!("OUT_DIR"), "/sinew.examples.kv.rs"));

use futures_core::Stream;
use futures_util::StreamExt;
use key_value_server::KeyValue;
use sinew::{Request, Response, Status};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest value, in bytes.
pub const MAX_VALUE_LEN: usize = 1024 * 1024;
/// Events a watcher may fall behind before it is ended with `DATA_LOSS`.
pub const WATCH_BUFFER: usize = 1024;
/// Bytes of values a watcher may fall behind before it is ended with
/// `DATA_LOSS`: a watcher that stops reading holds at most this much.
pub const WATCH_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// Events of a watch.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[derive(Debug, Default)]
struct Data {
    entries: BTreeMap<String, (bytes::Bytes, u64)>,
    version: u64,
    watchers: Vec<Watcher>,
}

/// One change, shared by every watcher it is queued for (the value is the
/// store's own bytes, not a copy).
#[derive(Debug)]
struct Change {
    kind: watch_event::Kind,
    key: String,
    value: bytes::Bytes,
    version: u64,
}

/// The store's end of one watch: a bounded queue, in events and in bytes.
#[derive(Debug)]
struct Watcher {
    prefix: String,
    queue: mpsc::Sender<Arc<Change>>,
    /// Bytes of values in the queue (the watch takes them off as it sends).
    queued_bytes: Arc<AtomicUsize>,
    /// Set when the watcher fell too far behind and was dropped.
    lagged: Arc<AtomicBool>,
}

impl Data {
    /// A new version with `change`, queued for every watcher of its key.
    /// Called under the lock, so that watchers see changes in version order.
    /// A watcher too far behind (its queue full, in events or bytes) is
    /// dropped and told so: the store never holds more for a watcher that
    /// does not read.
    fn publish(&mut self, change: Change) {
        let change = Arc::new(change);
        self.watchers.retain(|watcher| {
            if !change.key.starts_with(&watcher.prefix) {
                return !watcher.queue.is_closed();
            }
            let size = change.value.len();
            if watcher.queued_bytes.load(Ordering::Relaxed) + size > WATCH_BUFFER_BYTES {
                watcher.lagged.store(true, Ordering::Relaxed);
                return false;
            }
            match watcher.queue.try_send(change.clone()) {
                Ok(()) => {
                    watcher.queued_bytes.fetch_add(size, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    watcher.lagged.store(true, Ordering::Relaxed);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

/// An in-memory implementation of the `KeyValue` service. Clones share the store.
#[derive(Debug, Clone, Default)]
pub struct KeyValueStore {
    data: Arc<Mutex<Data>>,
}

fn check_key(key: &str) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument("key must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Status::invalid_argument(format!(
            "key of {} bytes is longer than {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

impl KeyValueStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl KeyValue for KeyValueStore {
    type WatchStream = WatchStream;

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let key = request.into_inner().key;
        check_key(&key)?;
        let data = self.lock();
        match data.entries.get(&key) {
            Some((value, version)) => Ok(Response::new(GetResponse {
                value: value.to_vec(),
                version: *version,
            })),
            None => Err(Status::not_found(format!("no value for key {key:?}"))),
        }
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let PutRequest {
            key,
            value,
            expected_version,
        } = request.into_inner();
        check_key(&key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(Status::invalid_argument(format!(
                "value of {} bytes is larger than {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        let mut data = self.lock();
        if let Some(expected) = expected_version {
            let current = data.entries.get(&key).map_or(0, |(_, version)| *version);
            if current != expected {
                return Err(Status::failed_precondition(format!(
                    "key {key:?} is at version {current}, not {expected}"
                )));
            }
        }
        data.version += 1;
        let version = data.version;
        let value = bytes::Bytes::from(value);
        data.entries.insert(key.clone(), (value.clone(), version));
        data.publish(Change {
            kind: watch_event::Kind::Put,
            key,
            value,
            version,
        });
        Ok(Response::new(PutResponse { version }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let key = request.into_inner().key;
        check_key(&key)?;
        let mut data = self.lock();
        if data.entries.remove(&key).is_none() {
            return Err(Status::not_found(format!("no value for key {key:?}")));
        }
        data.version += 1;
        let version = data.version;
        data.publish(Change {
            kind: watch_event::Kind::Delete,
            key,
            value: bytes::Bytes::new(),
            version,
        });
        Ok(Response::new(DeleteResponse { version }))
    }

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let WatchRequest {
            prefix,
            send_initial,
        } = request.into_inner();
        // Subscribe and snapshot under the same lock: no change is missed or
        // doubled. The snapshot shares the stored values' bytes.
        let (queue, receiver) = mpsc::channel(WATCH_BUFFER);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let lagged = Arc::new(AtomicBool::new(false));
        let initial: Vec<Change> = {
            let mut data = self.lock();
            data.watchers.push(Watcher {
                prefix: prefix.clone(),
                queue,
                queued_bytes: queued_bytes.clone(),
                lagged: lagged.clone(),
            });
            if send_initial {
                data.entries
                    .range(prefix.clone()..)
                    .take_while(|(key, _)| key.starts_with(&prefix))
                    .map(|(key, (value, version))| Change {
                        kind: watch_event::Kind::Put,
                        key: key.clone(),
                        value: value.clone(),
                        version: *version,
                    })
                    .collect()
            } else {
                Vec::new()
            }
        };
        let event = |change: &Change| WatchEvent {
            kind: change.kind as i32,
            key: change.key.clone(),
            value: change.value.to_vec(),
            version: change.version,
        };
        let initial = futures_util::stream::iter(initial).map(move |change| Ok(event(&change)));
        let state = Some((receiver, queued_bytes, lagged));
        let changes = futures_util::stream::unfold(state, move |state| async move {
            let (mut receiver, queued_bytes, lagged) = state?;
            match receiver.recv().await {
                Some(change) => {
                    queued_bytes.fetch_sub(change.value.len(), Ordering::Relaxed);
                    Some((Ok(event(&change)), Some((receiver, queued_bytes, lagged))))
                }
                // Dropped by the store: only for falling behind.
                None if lagged.load(Ordering::Relaxed) => Some((
                    Err(Status::data_loss(format!(
                        "watcher fell more than {WATCH_BUFFER} events or \
                         {WATCH_BUFFER_BYTES} bytes behind; watch again"
                    ))),
                    None,
                )),
                None => None,
            }
        });
        let changes: WatchStream = Box::pin(initial.chain(changes));
        Ok(Response::new(changes))
    }
}
