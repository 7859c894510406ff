//! Elections on the embedded store (served as etcd's API) and on a real
//! etcd member: one leader at a time among campaigning candidates, terms
//! that rise, an observer following each leader, proclaim, resign, and a
//! leader that stops renewing (killed) replaced within its TTL + 1 s.

#[path = "../../sinew-cluster/tests/support/etcd_cluster.rs"]
mod etcd_cluster;

#[path = "support/served.rs"]
mod served;

use served::embedded;

use sinew_cluster::etcd::Etcd;
use sinew_state::Election;
use std::time::Duration;

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} within 10 s"))
}

async fn one_leader_at_a_time(etcd: Etcd) {
    let election = Election::new(etcd.clone(), "one-at-a-time").with_ttl(Duration::from_secs(2));
    assert_eq!(election.leader().await.unwrap(), None);
    let mut observer = election.observe();
    assert_eq!(
        within("a first observation", observer.next())
            .await
            .unwrap(),
        None
    );
    let a = within("a leads", election.campaign("node-a"))
        .await
        .unwrap();
    // b, then c, wait in line while a leads.
    let candidates = |count: i64| {
        let kv = sinew_cluster::etcd::api::etcdserverpb::kv_client::KvClient::new(
            etcd.channel().clone(),
        );
        async move {
            for _ in 0..200 {
                let listed = kv
                    .range(sinew_rpc::Request::new(
                        sinew_cluster::etcd::api::etcdserverpb::RangeRequest {
                            key: b"/sinew/elections/one-at-a-time/".to_vec(),
                            range_end: b"/sinew/elections/one-at-a-time0".to_vec(),
                            count_only: true,
                            ..Default::default()
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                if listed.count == count {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("never {count} candidates");
        }
    };
    let b = tokio::spawn({
        let election = election.clone();
        async move { election.campaign("node-b").await }
    });
    candidates(2).await;
    let c = tokio::spawn({
        let election = election.clone();
        async move { election.campaign("node-c").await }
    });
    candidates(3).await;
    assert!(!b.is_finished() && !c.is_finished(), "only one leads");
    let leader = election.leader().await.unwrap().unwrap();
    assert_eq!(leader.value, b"node-a");
    assert_eq!(leader.term, a.fencing_token());
    let seen = within("the observer sees a", observer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.value, b"node-a");
    // A proclamation is seen as a change of value.
    a.proclaim("node-a v2").await.unwrap();
    let seen = within("the new value", observer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.value, b"node-a v2");
    // a resigns: b (first in line) leads, c still waits.
    let a_term = a.fencing_token();
    a.resign().await.unwrap();
    let b = within("b leads", b).await.unwrap().unwrap();
    assert!(b.fencing_token() > a_term);
    assert!(!c.is_finished());
    let seen = within("the observer sees b", observer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.value, b"node-b");
    // b is killed (no renewals, no resignation): c leads within the TTL
    // and a second.
    let b_term = b.fencing_token();
    let killed = tokio::time::Instant::now();
    b.orphan();
    let c = within("c leads", c).await.unwrap().unwrap();
    let failover = killed.elapsed();
    assert!(
        failover < Duration::from_secs(3),
        "fail-over in {failover:?}"
    );
    assert!(c.fencing_token() > b_term);
    // Its key deleted under it, c is told, and cannot proclaim.
    let mut lost = c.lost();
    sinew_cluster::etcd::api::etcdserverpb::kv_client::KvClient::new(etcd.channel().clone())
        .delete_range(sinew_rpc::Request::new(
            sinew_cluster::etcd::api::etcdserverpb::DeleteRangeRequest {
                key: election.leader().await.unwrap().unwrap().key,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        within("c told", lost.wait()).await,
        sinew_state::LostReason::KeyDeleted
    );
    assert_eq!(
        c.proclaim("late").await.unwrap_err().code(),
        sinew_rpc::Code::FailedPrecondition
    );
    assert_eq!(within("no leader", observer.next()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_on_the_embedded_store() {
    let (etcd, handle, _store) = embedded().await;
    one_leader_at_a_time(etcd).await;
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_on_etcd() {
    let cluster = etcd_cluster::EtcdCluster::start(1).await;
    one_leader_at_a_time(Etcd::connect(cluster.client_addresses()).unwrap()).await;
}
