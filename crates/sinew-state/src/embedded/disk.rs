//! The store's tables on disk, in redb: every change is written in one redb
//! transaction, committed (fsynced) before it is applied in memory and
//! answered, so an acknowledged write survives a crash.
//!
//! ```text
//!  kvs     key bytes -> mvccpb.KeyValue (protobuf)
//!  leases  lease id  -> granted TTL (seconds)
//!  meta    "revision", "next_lease" -> i64
//! ```
//!
//! At open everything is read into memory ([`Disk::load`]): the revision
//! goes on from where it was, leases get their whole TTL again (as etcd
//! gives them after a leader change), and the watch history starts empty
//! (a watch from before the restart is told its revision was compacted,
//! and lists again).

use super::state::{Changes, Lease, State};
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sinew_cluster::etcd::api::mvccpb::KeyValue;
use sinew_rpc::Status;
use tokio::time::Instant;

const KVS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("kvs");
const LEASES: TableDefinition<'_, i64, i64> = TableDefinition::new("leases");
const META: TableDefinition<'_, &str, i64> = TableDefinition::new("meta");

/// The store's redb database.
pub(crate) struct Disk {
    db: Database,
}

fn failed(what: &str) -> impl Fn(redb::Error) -> Status + '_ {
    move |error| Status::internal(format!("the embedded store could not {what}: {error}"))
}

impl Disk {
    /// Opens (or creates) the database file at `path`.
    pub(crate) fn open(path: &std::path::Path) -> Result<Disk, Status> {
        let db = Database::create(path).map_err(|e| {
            Status::unavailable(format!(
                "the embedded store cannot open {}: {e}",
                path.display()
            ))
        })?;
        Disk::with(db)
    }

    /// A database in memory only (tests, throwaway demos).
    pub(crate) fn in_memory() -> Result<Disk, Status> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| Status::internal(format!("the in-memory store: {e}")))?;
        Disk::with(db)
    }

    fn with(db: Database) -> Result<Disk, Status> {
        // The tables exist from the start, so reads never miss them.
        let txn = db.begin_write().map_err(|e| failed("begin")(e.into()))?;
        {
            txn.open_table(KVS)
                .map_err(|e| failed("open kvs")(e.into()))?;
            txn.open_table(LEASES)
                .map_err(|e| failed("open leases")(e.into()))?;
            txn.open_table(META)
                .map_err(|e| failed("open meta")(e.into()))?;
        }
        txn.commit().map_err(|e| failed("commit")(e.into()))?;
        Ok(Disk { db })
    }

    /// Everything on disk, as the state to start from.
    pub(crate) fn load(&self, now: Instant) -> Result<State, Status> {
        let read = |e: redb::Error| failed("read")(e);
        let txn = self.db.begin_read().map_err(|e| read(e.into()))?;
        let mut state = State::default();
        let meta = txn.open_table(META).map_err(|e| read(e.into()))?;
        let get = |name: &str| -> Result<i64, Status> {
            Ok(meta
                .get(name)
                .map_err(|e| read(e.into()))?
                .map_or(0, |value| value.value()))
        };
        state.revision = get("revision")?;
        state.next_lease = get("next_lease")?;
        state.compacted = state.revision;
        let leases = txn.open_table(LEASES).map_err(|e| read(e.into()))?;
        for entry in leases.iter().map_err(|e| read(e.into()))? {
            let (id, ttl) = entry.map_err(|e| read(e.into()))?;
            let ttl = ttl.value();
            state.leases.insert(
                id.value(),
                Lease {
                    ttl,
                    deadline: super::state::expiry(now, ttl),
                    keys: Default::default(),
                },
            );
        }
        let kvs = txn.open_table(KVS).map_err(|e| read(e.into()))?;
        for entry in kvs.iter().map_err(|e| read(e.into()))? {
            let (key, value) = entry.map_err(|e| read(e.into()))?;
            let kv = KeyValue::decode(value.value()).map_err(|e| {
                Status::data_loss(format!("the embedded store holds a broken record: {e}"))
            })?;
            let key = key.value().to_vec();
            if kv.lease != 0 {
                match state.leases.get_mut(&kv.lease) {
                    Some(lease) => {
                        lease.keys.insert(key.clone());
                    }
                    // Its lease is gone (should not happen: revoking
                    // deletes the keys in the same transaction).
                    None => continue,
                }
            }
            state.kvs.insert(key, kv);
        }
        Ok(state)
    }

    /// Writes `changes` in one transaction, durable when it returns.
    pub(crate) fn write(&self, changes: &Changes) -> Result<(), Status> {
        let write = |e: redb::Error| failed("write")(e);
        let txn = self.db.begin_write().map_err(|e| write(e.into()))?;
        {
            let mut kvs = txn.open_table(KVS).map_err(|e| write(e.into()))?;
            for (key, kv) in &changes.kvs {
                match kv {
                    Some(kv) => {
                        kvs.insert(key.as_slice(), kv.encode_to_vec().as_slice())
                            .map_err(|e| write(e.into()))?;
                    }
                    None => {
                        kvs.remove(key.as_slice()).map_err(|e| write(e.into()))?;
                    }
                }
            }
            let mut leases = txn.open_table(LEASES).map_err(|e| write(e.into()))?;
            for (id, ttl) in &changes.leases {
                match ttl {
                    Some(ttl) => {
                        leases.insert(*id, *ttl).map_err(|e| write(e.into()))?;
                    }
                    None => {
                        leases.remove(*id).map_err(|e| write(e.into()))?;
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(|e| write(e.into()))?;
            if let Some(revision) = changes.revision {
                meta.insert("revision", revision)
                    .map_err(|e| write(e.into()))?;
            }
            if let Some(next) = changes.next_lease {
                meta.insert("next_lease", next)
                    .map_err(|e| write(e.into()))?;
            }
        }
        txn.commit().map_err(|e| write(e.into()))
    }
}
