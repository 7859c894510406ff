//! The key-value API and typed configuration, on the embedded store (served
//! as etcd's API) and on a real etcd member: reads and writes with their
//! revisions, compare-and-swap by absence, revision and value, keys on a
//! lease, and a configuration watched through sets, a stale
//! compare-and-set, a value that does not decode, and a deletion.

#[path = "../../sinew-cluster/tests/support/etcd_cluster.rs"]
mod etcd_cluster;

#[path = "support/served.rs"]
mod served;

use sinew_cluster::etcd::Etcd;
use sinew_state::{Config, Expect, Kv, Lease, Swap};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_config_on_the_embedded_store() {
    let (etcd, handle, _store) = served::embedded().await;
    kv(etcd.clone()).await;
    config(etcd).await;
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_config_on_etcd() {
    let cluster = etcd_cluster::EtcdCluster::start(1).await;
    let etcd = Etcd::connect(cluster.client_addresses()).unwrap();
    kv(etcd.clone()).await;
    config(etcd).await;
}
