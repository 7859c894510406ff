//! The store through its public methods: persistence across a restart,
//! lease expiry and keep-alive, watches from now, from the past and from
//! a compacted revision.

use super::*;
use sinew_cluster::etcd::api::etcdserverpb::watch_create_request::FilterType;

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    }
}

fn get(store: &Store, key: &str) -> Option<String> {
    store
        .range(&RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        })
        .unwrap()
        .kvs
        .first()
        .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
}

fn prefix(key: &str) -> (Vec<u8>, Vec<u8>) {
    let mut end = key.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    (key.into(), end)
}

#[tokio::test]
async fn writes_survive_a_restart_and_revisions_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let lease;
    {
        let store = Store::open(&path).unwrap();
        store.put(&put("config/a", "1")).unwrap();
        store.put(&put("config/a", "2")).unwrap();
        lease = store
            .lease_grant(&LeaseGrantRequest { ttl: 60, id: 0 })
            .unwrap()
            .id;
        store
            .put(&PutRequest {
                lease,
                ..put("members/x", "up")
            })
            .unwrap();
        assert_eq!(store.revision(), 3);
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.revision(), 3);
    assert_eq!(get(&store, "config/a").as_deref(), Some("2"));
    let a = &store
        .range(&RangeRequest {
            key: "config/a".into(),
            ..RangeRequest::default()
        })
        .unwrap()
        .kvs[0];
    assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 2, 2));
    // The lease is back, its key with it, its TTL whole again.
    let ttl = store.lease_time_to_live(&LeaseTimeToLiveRequest {
        id: lease,
        keys: true,
    });
    assert!(ttl.ttl > 55 && ttl.ttl <= 60, "{ttl:?}");
    assert_eq!(ttl.keys, [b"members/x".to_vec()]);
    store.put(&put("config/b", "1")).unwrap();
    assert_eq!(store.revision(), 4);
    // Watches cannot start before the restart: their history is gone.
    let compacted = store.watch(&WatchCreateRequest {
        key: "config/a".into(),
        start_revision: 2,
        ..WatchCreateRequest::default()
    });
    assert_eq!(
        compacted.unwrap_err(),
        WatchEnd::Compacted {
            compact_revision: 3
        }
    );
}

#[tokio::test(start_paused = true)]
async fn leases_expire_with_their_keys_unless_kept_alive() {
    let store = Store::in_memory().unwrap();
    let short = store
        .lease_grant(&LeaseGrantRequest { ttl: 2, id: 0 })
        .unwrap()
        .id;
    let kept = store
        .lease_grant(&LeaseGrantRequest { ttl: 2, id: 0 })
        .unwrap()
        .id;
    for (key, lease) in [("lock/a", short), ("lock/b", kept)] {
        store
            .put(&PutRequest {
                lease,
                ..put(key, "holder")
            })
            .unwrap();
    }
    let mut watcher = store
        .watch(&WatchCreateRequest {
            key: "lock/a".into(),
            filters: vec![FilterType::Noput as i32],
            prev_kv: true,
            ..WatchCreateRequest::default()
        })
        .unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(store.lease_keep_alive(kept).ttl, 2);
    }
    assert_eq!(get(&store, "lock/a"), None, "expired with its lease");
    assert_eq!(get(&store, "lock/b").as_deref(), Some("holder"));
    assert_eq!(store.lease_keep_alive(short).ttl, 0, "gone");
    assert_eq!(
        store
            .lease_time_to_live(&LeaseTimeToLiveRequest {
                id: short,
                keys: false
            })
            .ttl,
        -1
    );
    // The watcher saw the deletion, with the holder's value before it.
    let (_, events) = watcher.next().await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].r#type, EventType::Delete as i32);
    assert_eq!(events[0].prev_kv.as_ref().unwrap().value, b"holder");
    // A key cannot go on a lease that is gone.
    let refused = store.put(&PutRequest {
        lease: short,
        ..put("lock/a", "late")
    });
    assert_eq!(refused.unwrap_err().code(), sinew_rpc::Code::NotFound);
    // Revoked: the key goes at once.
    store
        .lease_revoke(&LeaseRevokeRequest { id: kept })
        .unwrap();
    assert_eq!(get(&store, "lock/b"), None);
}

#[tokio::test]
async fn watches_replay_from_a_revision_then_follow() {
    let store = Store::in_memory().unwrap();
    store.put(&put("app/a", "1")).unwrap();
    store.put(&put("other", "1")).unwrap();
    store.put(&put("app/b", "1")).unwrap();
    let (key, range_end) = prefix("app/");
    let mut from_start = store
        .watch(&WatchCreateRequest {
            key: key.clone(),
            range_end: range_end.clone(),
            start_revision: 1,
            ..WatchCreateRequest::default()
        })
        .unwrap();
    let (revision, events) = from_start.next().await.unwrap();
    assert_eq!(revision, 3);
    let keys: Vec<&[u8]> = events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().key.as_slice())
        .collect();
    assert_eq!(keys, [b"app/a".as_slice(), b"app/b".as_slice()]);
    // Then live changes, a transaction's writes at one revision together.
    let follower = tokio::spawn(async move { from_start.next().await });
    tokio::task::yield_now().await;
    let txn = TxnRequest {
        success: vec![
            request(put("app/c", "1")),
            request(put("app/d", "1")),
            request(put("elsewhere", "1")),
        ],
        ..TxnRequest::default()
    };
    assert!(store.txn(&txn).unwrap().succeeded);
    let (revision, events) = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(revision, 4);
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e.kv.as_ref().unwrap().mod_revision == 4));
    // From before a compaction: told, with the revision to list from.
    store
        .compact(&CompactionRequest {
            revision: 3,
            physical: false,
        })
        .unwrap();
    assert!(store
        .watch(&WatchCreateRequest {
            key: key.clone(),
            range_end: range_end.clone(),
            start_revision: 3,
            ..WatchCreateRequest::default()
        })
        .is_err());
    let mut behind = store
        .watch(&WatchCreateRequest {
            key,
            range_end,
            start_revision: 4,
            ..WatchCreateRequest::default()
        })
        .unwrap();
    store
        .compact(&CompactionRequest {
            revision: 4,
            physical: false,
        })
        .unwrap();
    assert_eq!(
        behind.next().await.unwrap_err(),
        WatchEnd::Compacted {
            compact_revision: 4
        }
    );
    drop(store);
}

fn request(put: PutRequest) -> sinew_cluster::etcd::api::etcdserverpb::RequestOp {
    use sinew_cluster::etcd::api::etcdserverpb::request_op;
    sinew_cluster::etcd::api::etcdserverpb::RequestOp {
        request: Some(request_op::Request::RequestPut(put)),
    }
}

#[tokio::test]
async fn a_watch_ends_when_the_store_is_gone() {
    let store = Store::in_memory().unwrap();
    let mut watcher = store
        .watch(&WatchCreateRequest {
            key: "k".into(),
            ..WatchCreateRequest::default()
        })
        .unwrap();
    let waiting = tokio::spawn(async move { watcher.next().await });
    tokio::task::yield_now().await;
    drop(store);
    let ended = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.unwrap_err(), WatchEnd::Closed);
}
