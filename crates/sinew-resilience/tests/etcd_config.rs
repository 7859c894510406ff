//! A service config kept in a real etcd (3.4, started by the test on
//! 127.0.0.1 with free ports and data in a temporary directory): every
//! client following the key puts each new version in force; a bad value or
//! a deleted key leaves the last good one; a follower that started while
//! the key was absent picks it up when it is written.

#![cfg(feature = "etcd")]

#[path = "../../sinew-cluster/tests/support/etcd_cluster.rs"]
mod etcd_cluster;
mod support;

use etcd_cluster::EtcdCluster;
use sinew_cluster::etcd::Etcd;
use sinew_resilience::{ConfigHandle, ServiceConfig};
use std::time::Duration;
use support::{config, timeout, until};

const KEY: &str = "/sinew/config/grpc.examples.echo.Echo";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_follow_a_service_config_kept_in_etcd() {
    let cluster = EtcdCluster::start(1).await;
    let etcd = Etcd::connect(cluster.client_addresses()).unwrap();
    // Two clients, one before the key exists.
    let early = ConfigHandle::new(ServiceConfig::new());
    let _early = early.follow_etcd(&etcd, KEY);
    etcd.put(KEY.as_bytes(), config("1s").as_bytes(), 0)
        .await
        .unwrap();
    until(&early, Some(Duration::from_secs(1))).await;
    let late = ConfigHandle::new(ServiceConfig::new());
    let _late = late.follow_etcd(&etcd, KEY);
    until(&late, Some(Duration::from_secs(1))).await;

    // A new version reaches both.
    etcd.put(KEY.as_bytes(), config("2.5s").as_bytes(), 0)
        .await
        .unwrap();
    until(&early, Some(Duration::from_millis(2500))).await;
    until(&late, Some(Duration::from_millis(2500))).await;

    // A bad value, a key next to it, a deletion: the last good one stays.
    etcd.put(KEY.as_bytes(), b"{ not json", 0).await.unwrap();
    etcd.put(
        format!("{KEY}-other").as_bytes(),
        config("9s").as_bytes(),
        0,
    )
    .await
    .unwrap();
    etcd.delete(KEY.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(timeout(&early), Some(Duration::from_millis(2500)));
    assert_eq!(timeout(&late), Some(Duration::from_millis(2500)));

    // Written again: in force again.
    etcd.put(KEY.as_bytes(), config("3s").as_bytes(), 0)
        .await
        .unwrap();
    until(&early, Some(Duration::from_secs(3))).await;
    until(&late, Some(Duration::from_secs(3))).await;
}
