//! Typed configuration: a protobuf message under a key, read, written
//! (with compare-and-set), and watched so the latest value is always at
//! hand.
//!
//! [`Config::watch`] returns once the key has been read, then keeps a
//! [`ConfigWatch`] current from a watch of that one key from the revision
//! read (resumed across broken streams, read again after a compaction): [`ConfigWatch::current`] is the
//! newest value every time it is asked, without a round trip, and
//! [`ConfigWatch::changed`] waits for the next one. A value that does not
//! decode as the message is not taken: the last good one stays current, and
//! [`ConfigWatch::last_error`] says why. The value seen is the latest
//! eventually (a watch may skip values that came and went between two
//! reads); [`Config::get`] reads linearizably.

use crate::kv::{Change, Expect, Kv, Swap, Watched};
use futures_util::StreamExt as _;
use sinew_cluster::etcd::Etcd;
use sinew_rpc::Status;
use std::marker::PhantomData;
use std::sync::Arc;

/// A message of type `T` stored under a key; cheap to clone.
pub struct Config<T> {
    kv: Kv,
    key: Vec<u8>,
    message: PhantomData<fn() -> T>,
}

impl<T> Clone for Config<T> {
    fn clone(&self) -> Self {
        Config {
            kv: self.kv.clone(),
            key: self.key.clone(),
            message: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Config<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("key", &String::from_utf8_lossy(&self.key))
            .finish()
    }
}

/// A value and where it stands in the store.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    /// The message.
    pub value: T,
    /// The revision of its last write (for [`Config::compare_and_set`]).
    pub mod_revision: i64,
    /// How many times it was written since the key was created.
    pub version: i64,
}

fn decode<T: prost::Message + Default>(key: &[u8], bytes: &[u8]) -> Result<T, Status> {
    T::decode(bytes).map_err(|error| {
        Status::data_loss(format!(
            "the value under {:?} is not a {}: {error}",
            String::from_utf8_lossy(key),
            std::any::type_name::<T>()
        ))
    })
}

impl<T: prost::Message + Default + Send + Sync + 'static> Config<T> {
    /// The message under `key` in the store `etcd` reaches.
    pub fn new(etcd: Etcd, key: impl Into<Vec<u8>>) -> Config<T> {
        Config {
            kv: Kv::new(etcd),
            key: key.into(),
            message: PhantomData,
        }
    }

    /// The value now, if set (a linearizable read).
    pub async fn get(&self) -> Result<Option<Versioned<T>>, Status> {
        let Some(kv) = self.kv.get(&self.key).await? else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            value: decode(&self.key, &kv.value)?,
            mod_revision: kv.mod_revision,
            version: kv.version,
        }))
    }

    /// Writes `value`; the revision of the write.
    pub async fn set(&self, value: &T) -> Result<i64, Status> {
        self.kv.put(&self.key, value.encode_to_vec()).await
    }

    /// Writes `value` only if the stored one is the one read at
    /// `expected_mod_revision` (0: only if none is set); whether it was
    /// written.
    pub async fn compare_and_set(
        &self,
        expected_mod_revision: i64,
        value: &T,
    ) -> Result<bool, Status> {
        let expected = match expected_mod_revision {
            0 => Expect::Absent,
            revision => Expect::ModRevision(revision),
        };
        let swap = self
            .kv
            .compare_and_swap(&self.key, expected, value.encode_to_vec())
            .await?;
        Ok(matches!(swap, Swap::Swapped { .. }))
    }

    /// Follows the value: returns once it has been read (see the module
    /// docs). The watch stops when the [`ConfigWatch`] is dropped.
    pub async fn watch(&self) -> Result<ConfigWatch<T>, Status> {
        let (sender, receiver) = tokio::sync::watch::channel(Current::<T> {
            value: None,
            raw: None,
            revision: 0,
            bad_value: None,
            outage: None,
        });
        // The value now, before returning; then the key's changes from the
        // revision after that read.
        let (stored, revision) = self.kv.get_at(&self.key).await?;
        update(&sender, &self.key, revision, stored.map(|kv| kv.value));
        let (kv, key) = (self.kv.clone(), self.key.clone());
        let task = tokio::spawn(async move {
            let mut from = revision + 1;
            loop {
                let mut watch = kv.watch_key(&key, from);
                while let Some(item) = watch.next().await {
                    match item {
                        Ok(Watched::Changes { revision, changes }) => {
                            let stored = match changes.last() {
                                Some(Change::Put { kv, .. }) => Some(kv.value.clone()),
                                _ => None,
                            };
                            // (The watch goes on from here by itself.)
                            update(&sender, &key, revision, stored);
                        }
                        // The revision to go on from is gone: read again.
                        Ok(Watched::Compacted { .. }) => break,
                        Err(status) => sender.send_modify(|current| current.outage = Some(status)),
                    }
                }
                loop {
                    match kv.get_at(&key).await {
                        Ok((stored, revision)) => {
                            update(&sender, &key, revision, stored.map(|kv| kv.value));
                            from = revision + 1;
                            break;
                        }
                        Err(status) => {
                            sender.send_modify(|current| current.outage = Some(status));
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        });
        Ok(ConfigWatch { receiver, task })
    }
}

/// Takes the bytes stored under `key` as of `revision` (`None`: not set)
/// into `sender`'s value: an update unless the bytes are the ones held
/// (and no outage was told); bytes that do not decode keep the last good
/// value.
fn update<T: prost::Message + Default>(
    sender: &tokio::sync::watch::Sender<Current<T>>,
    key: &[u8],
    revision: i64,
    stored: Option<Vec<u8>>,
) {
    sender.send_if_modified(|current| {
        current.revision = revision;
        // Reached again: the outage is over.
        let recovered = current.outage.take().is_some();
        if current.raw == stored {
            return recovered;
        }
        match stored.as_deref().map(|bytes| decode::<T>(key, bytes)) {
            None => {
                current.value = None;
                current.bad_value = None;
            }
            Some(Ok(value)) => {
                current.value = Some(Arc::new(value));
                current.bad_value = None;
            }
            // The last good value stays.
            Some(Err(status)) => current.bad_value = Some(status),
        }
        current.raw = stored;
        true
    });
}

/// What a [`ConfigWatch`] holds.
struct Current<T> {
    value: Option<Arc<T>>,
    /// The stored bytes the value was read from.
    raw: Option<Vec<u8>>,
    revision: i64,
    /// Why the stored bytes were not taken.
    bad_value: Option<Status>,
    /// The store unreachable since the last snapshot.
    outage: Option<Status>,
}

/// The latest value of a [`Config`], kept current; see the module docs.
pub struct ConfigWatch<T> {
    receiver: tokio::sync::watch::Receiver<Current<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> std::fmt::Debug for ConfigWatch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatch")
            .field("revision", &self.revision())
            .finish()
    }
}

impl<T> Drop for ConfigWatch<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T> ConfigWatch<T> {
    /// The newest good value (`None` while the key is not set).
    pub fn current(&self) -> Option<Arc<T>> {
        self.receiver.borrow().value.clone()
    }

    /// The store revision the current value was read at.
    pub fn revision(&self) -> i64 {
        self.receiver.borrow().revision
    }

    /// Why the last update was not taken (a value that does not decode,
    /// the store unreachable), if it was not; cleared by the next good one.
    pub fn last_error(&self) -> Option<Status> {
        let current = self.receiver.borrow();
        current.outage.clone().or_else(|| current.bad_value.clone())
    }

    /// Waits for the next update (a new value, the key deleted, or an
    /// error): `UNAVAILABLE` once the watch has ended.
    pub async fn changed(&mut self) -> Result<(), Status> {
        self.receiver
            .changed()
            .await
            .map_err(|_| Status::unavailable("the configuration's watch has ended"))
    }
}
