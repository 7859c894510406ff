//! The key-value API and typed configuration, on the embedded store (served
//! as etcd's API) and on a real etcd member: reads and writes with their
//! revisions, compare-and-swap by absence, revision and value, keys on a
//! lease, a configuration watched through sets, a stale compare-and-set, a
//! value that does not decode, and a deletion; a prefix's changes watched
//! from a revision (with the values before them, ended by a compaction),
//! and resumed across etcd members killed without a change lost or
//! repeated.

#[path = "../../sinew-cluster/tests/support/etcd_cluster.rs"]
mod etcd_cluster;

#[path = "support/served.rs"]
mod served;

use futures_util::StreamExt;
use sinew_cluster::etcd::Etcd;
use sinew_state::{Change, Config, Expect, Kv, Lease, Swap, Watched};
use std::time::Duration;

#[derive(Clone, PartialEq, prost::Message)]
struct Settings {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint32, tag = "2")]
    replicas: u32,
}

async fn kv(etcd: Etcd) {
    let kv = Kv::new(etcd.clone());
    assert_eq!(kv.get("t/a").await.unwrap(), None);
    let first = kv.put("t/a", "1").await.unwrap();
    let second = kv.put("t/b", "2").await.unwrap();
    assert!(second > first, "each write a new revision");
    assert_eq!(kv.get("t/a").await.unwrap().unwrap().value, b"1");
    let served = kv.clone().serializable().get("t/b").await.unwrap().unwrap();
    assert_eq!(served.value, b"2");
    let (listed, at) = kv.list("t/").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(at >= second);
    // Compare-and-swap three ways.
    assert!(matches!(
        kv.compare_and_swap("t/new", Expect::Absent, "x")
            .await
            .unwrap(),
        Swap::Swapped { .. }
    ));
    let Swap::Conflict { current } = kv
        .compare_and_swap("t/new", Expect::Absent, "y")
        .await
        .unwrap()
    else {
        panic!("the key is there");
    };
    let current = current.unwrap();
    assert_eq!(current.value, b"x");
    let stale = current.mod_revision;
    assert!(matches!(
        kv.compare_and_swap("t/new", Expect::ModRevision(stale), "z")
            .await
            .unwrap(),
        Swap::Swapped { .. }
    ));
    assert!(matches!(
        kv.compare_and_swap("t/new", Expect::ModRevision(stale), "w")
            .await
            .unwrap(),
        Swap::Conflict { .. }
    ));
    assert!(matches!(
        kv.compare_and_swap("t/new", Expect::Value(b"z".to_vec()), "v")
            .await
            .unwrap(),
        Swap::Swapped { .. }
    ));
    // A key on a lease goes with it.
    let lease = Lease::grant(&etcd, Duration::from_secs(5)).await.unwrap();
    kv.put_on(&lease, "t/leased", "1").await.unwrap();
    lease.revoke().await.unwrap();
    assert_eq!(kv.get("t/leased").await.unwrap(), None);
    assert!(kv.delete("t/a").await.unwrap());
    assert!(!kv.delete("t/a").await.unwrap());
    assert_eq!(kv.delete_prefix("t/").await.unwrap(), 2);
}

/// Waits for the watch's next update, within 10 s.
async fn changed(watch: &mut sinew_state::ConfigWatch<Settings>) {
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("an update within 10 s")
        .unwrap();
}

async fn config(etcd: Etcd) {
    let config: Config<Settings> = Config::new(etcd.clone(), "/config/web");
    assert_eq!(config.get().await.unwrap(), None);
    let mut watch = config.watch().await.unwrap();
    assert_eq!(watch.current(), None);
    let v1 = Settings {
        name: "web".into(),
        replicas: 2,
    };
    config.set(&v1).await.unwrap();
    changed(&mut watch).await;
    assert_eq!(*watch.current().unwrap(), v1);
    // A compare-and-set against the revision read goes through once.
    let read = config.get().await.unwrap().unwrap();
    assert_eq!(read.value, v1);
    let v2 = Settings {
        replicas: 3,
        ..v1.clone()
    };
    assert!(config
        .compare_and_set(read.mod_revision, &v2)
        .await
        .unwrap());
    assert!(
        !config
            .compare_and_set(read.mod_revision, &v1)
            .await
            .unwrap(),
        "stale"
    );
    changed(&mut watch).await;
    assert_eq!(watch.current().unwrap().replicas, 3);
    // Bytes that are not a Settings: the last good value stays, the
    // error is told.
    Kv::new(etcd.clone())
        .put("/config/web", [0xff, 0xff, 0xff])
        .await
        .unwrap();
    changed(&mut watch).await;
    assert_eq!(watch.current().unwrap().replicas, 3);
    assert_eq!(
        watch.last_error().unwrap().code(),
        sinew_rpc::Code::DataLoss
    );
    assert!(config.get().await.is_err());
    // A key of the same prefix is no update of this one.
    Kv::new(etcd.clone())
        .put("/config/web2", "other")
        .await
        .unwrap();
    config.set(&v1).await.unwrap();
    changed(&mut watch).await;
    assert_eq!(*watch.current().unwrap(), v1);
    assert!(watch.last_error().is_none());
    // Deleted: none.
    Kv::new(etcd).delete("/config/web").await.unwrap();
    changed(&mut watch).await;
    assert_eq!(watch.current(), None);
}

/// The next item of a watch, within 10 s.
async fn next(watch: &mut sinew_state::Watch) -> Result<Watched, sinew_rpc::Status> {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a watch item within 10 s")
        .expect("the watch goes on")
}

/// The next changes of a watch, skipping outage notices.
async fn changes(watch: &mut sinew_state::Watch) -> Vec<Change> {
    loop {
        match next(watch).await {
            Ok(Watched::Changes { changes, .. }) => return changes,
            Ok(other) => panic!("{other:?}"),
            Err(_) => continue,
        }
    }
}

async fn watch_from_a_revision(etcd: Etcd) {
    let kv = Kv::new(etcd.clone());
    let first = kv.put("w/a", "1").await.unwrap();
    kv.put("w/b", "2").await.unwrap();
    kv.put("elsewhere", "3").await.unwrap();
    let mut watch = kv.watch("w/", first);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(changes(&mut watch).await);
    }
    let Change::Put { kv: a, previous } = &seen[0] else {
        panic!("{seen:?}")
    };
    assert_eq!(
        (a.key.as_slice(), a.value.as_slice(), previous),
        (&b"w/a"[..], &b"1"[..], &None)
    );
    // Then live changes, with the values before them.
    kv.put("w/a", "2").await.unwrap();
    let Change::Put { kv: a, previous } = changes(&mut watch).await.remove(0) else {
        panic!()
    };
    assert_eq!(
        (a.value, previous.unwrap().value),
        (b"2".to_vec(), b"1".to_vec())
    );
    let deleted = {
        kv.delete("w/b").await.unwrap();
        changes(&mut watch).await.remove(0)
    };
    let Change::Delete { key, previous, .. } = deleted else {
        panic!("{deleted:?}")
    };
    assert_eq!(
        (key, previous.unwrap().value),
        (b"w/b".to_vec(), b"2".to_vec())
    );
    // From a revision compacted away: told, and the watch ends.
    let now = kv.put("w/c", "1").await.unwrap();
    sinew_cluster::etcd::api::etcdserverpb::kv_client::KvClient::new(etcd.channel().clone())
        .compact(sinew_rpc::Request::new(
            sinew_cluster::etcd::api::etcdserverpb::CompactionRequest {
                revision: now,
                physical: false,
            },
        ))
        .await
        .unwrap();
    let mut old = kv.watch("w/", first);
    assert_eq!(
        next(&mut old).await.unwrap(),
        Watched::Compacted {
            compact_revision: now
        }
    );
    assert!(old.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_config_on_the_embedded_store() {
    let (etcd, handle, _store) = served::embedded().await;
    kv(etcd.clone()).await;
    config(etcd.clone()).await;
    watch_from_a_revision(etcd).await;
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_config_on_etcd() {
    let cluster = etcd_cluster::EtcdCluster::start(1).await;
    let etcd = Etcd::connect(cluster.client_addresses()).unwrap();
    kv(etcd.clone()).await;
    config(etcd.clone()).await;
    watch_from_a_revision(etcd).await;
}

/// Each member of a 3-member etcd killed in turn (and restarted) while a
/// watch runs and keys are written: every change comes once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_across_members_killed_without_a_change_lost_or_repeated() {
    let mut cluster = etcd_cluster::EtcdCluster::start(3).await;
    let etcd = Etcd::connect(cluster.client_addresses()).unwrap();
    let kv = Kv::new(etcd);
    // From the revision after a listing: no write can slip before it.
    let (_, listed) = kv.list("r/").await.unwrap();
    let mut watch = kv.watch("r/", listed + 1);
    kv.put("r/0", "0").await.unwrap();
    let mut seen: Vec<Vec<u8>> = changes(&mut watch)
        .await
        .into_iter()
        .map(|change| match change {
            Change::Put { kv, .. } => kv.key,
            other => panic!("{other:?}"),
        })
        .collect();
    for member in 0..3 {
        cluster.kill_member(member);
        let key = format!("r/{}", member + 1);
        // Written once even if a try's outcome is unknown and it is tried
        // again: only if absent.
        let mut written = false;
        for _ in 0..100 {
            if kv.compare_and_swap(&key, Expect::Absent, "x").await.is_ok() {
                written = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(written, "{key} written with a member down");
        cluster.start_member(member);
        cluster.until_healthy().await;
    }
    while seen.len() < 4 {
        for change in changes(&mut watch).await {
            let Change::Put { kv, .. } = change else {
                panic!("{change:?}")
            };
            seen.push(kv.key);
        }
    }
    let seen: Vec<String> = seen
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(seen, ["r/0", "r/1", "r/2", "r/3"]);
    // Nothing more (no repeat) arrives.
    let extra = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Ok(Watched::Changes { changes, .. }) = next(&mut watch).await {
                return changes;
            }
        }
    })
    .await;
    assert!(extra.is_err(), "a change came twice: {extra:?}");
}
