//! A key-value store with versions, compare-and-set and watches: generated code
//! plus [`KeyValueStore`].

#![allow(missing_docs)] // generated code; the .proto comments become its docs
include!(concat!(env!("OUT_DIR"), "/sinew.examples.kv.rs"));

use futures_core::Stream;
use key_value_server::KeyValue;
use sinew::{Request, Response, Status};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest value, in bytes.
pub const MAX_VALUE_LEN: usize = 1024 * 1024;
/// Events a watcher may fall behind before it is ended with `DATA_LOSS`.
pub const WATCH_BUFFER: usize = 1024;

/// Events of a watch.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[derive(Debug, Default)]
struct Data {
    entries: BTreeMap<String, (bytes::Bytes, u64)>,
    version: u64,
}

/// An in-memory implementation of the `KeyValue` service. Clones share the store.
#[derive(Debug, Clone)]
pub struct KeyValueStore {
    data: Arc<Mutex<Data>>,
    events: broadcast::Sender<WatchEvent>,
}

impl Default for KeyValueStore {
    fn default() -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        KeyValueStore {
            data: Arc::default(),
            events,
        }
    }
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
        // Sent under the lock so that watchers see changes in version order.
        let _ = self.events.send(WatchEvent {
            kind: watch_event::Kind::Put as i32,
            key,
            value: value.to_vec(),
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
        let _ = self.events.send(WatchEvent {
            kind: watch_event::Kind::Delete as i32,
            key,
            value: Vec::new(),
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
        // Subscribe and snapshot under the same lock: no change is missed or doubled.
        let (initial, mut events) = {
            let data = self.lock();
            let initial: Vec<WatchEvent> = if send_initial {
                data.entries
                    .range(prefix.clone()..)
                    .take_while(|(key, _)| key.starts_with(&prefix))
                    .map(|(key, (value, version))| WatchEvent {
                        kind: watch_event::Kind::Put as i32,
                        key: key.clone(),
                        value: value.to_vec(),
                        version: *version,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (initial, self.events.subscribe())
        };
        let changes = async_stream_from(move |sender| async move {
            for event in initial {
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                let item = match events.recv().await {
                    Ok(event) if event.key.starts_with(&prefix) => Ok(event),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(missed)) => Err(Status::data_loss(
                        format!("watcher fell {missed} events behind; watch again"),
                    )),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let failed = item.is_err();
                if sender.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(changes))
    }
}

/// A stream fed by a producer task through a small channel; the task stops when
/// the stream (and so the call) is dropped.
fn async_stream_from<F, Fut>(producer: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<WatchEvent, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(producer(sender));
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    Box::pin(AbortOnDrop {
        stream,
        task: task.abort_handle(),
    })
}

struct AbortOnDrop<S> {
    stream: S,
    task: tokio::task::AbortHandle,
}

impl<S: Stream + Unpin> Stream for AbortOnDrop<S> {
    type Item = S::Item;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

impl<S> Drop for AbortOnDrop<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
