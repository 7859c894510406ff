//! Locks on the embedded store (served as etcd's API) and on a real etcd
//! member: mutual exclusion among contending tasks with fencing tokens that
//! only rise, try_acquire while held, a holder that stops renewing (as a
//! killed process) told `lost` before the next holder gets the lock, and a
//! key deleted under its holder.

#[path = "../../sinew-cluster/tests/support/etcd_cluster.rs"]
mod etcd_cluster;

#[path = "support/served.rs"]
mod served;

use served::embedded;

use sinew_cluster::etcd::Etcd;
use sinew_state::embedded::Store;
use sinew_state::{Fence, Lock, LostReason};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Contending tasks each take the lock a few times: never two inside at
/// once, and each holder's token above every earlier one.
async fn exclusion(etcd: Etcd) {
    let lock = Lock::new(etcd, "exclusion").with_ttl(Duration::from_secs(5));
    let inside = Arc::new(AtomicUsize::new(0));
    let fence = Arc::new(Fence::new());
    let mut tokens = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (lock, inside, fence) = (lock.clone(), inside.clone(), fence.clone());
        tasks.spawn(async move {
            let mut tokens = Vec::new();
            for _ in 0..5 {
                let guard = lock.acquire().await.unwrap();
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                fence.admit(guard.fencing_token()).unwrap();
                tokens.push(guard.fencing_token());
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                guard.release().await.unwrap();
            }
            tokens
        });
    }
    while let Some(held) = tasks.join_next().await {
        tokens.extend(held.unwrap());
    }
    assert_eq!(tokens.len(), 20);
    let mut sorted = tokens.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 20, "every holder had a token of its own");
}

/// A holder that stops renewing (killed) frees the lock within its TTL;
/// try_acquire does not wait; a stale token is refused by the fence; a
/// key deleted under its holder is told at once.
async fn failover(etcd: Etcd) {
    let lock = Lock::new(etcd.clone(), "failover").with_ttl(Duration::from_secs(2));
    let first = lock.acquire().await.unwrap();
    assert!(
        lock.try_acquire().await.unwrap().is_none(),
        "held: no wait, no lock"
    );
    let old_token = first.fencing_token();
    let fence = Fence::new();
    fence.admit(old_token).unwrap();
    // As a killed holder: no more renewals, no release.
    let started = tokio::time::Instant::now();
    first.orphan();
    let second = lock.acquire().await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "free within the TTL and the store's expiry: {waited:?}"
    );
    assert!(second.fencing_token() > old_token);
    fence.admit(second.fencing_token()).unwrap();
    assert!(
        fence.admit(old_token).is_err(),
        "the old holder is fenced off"
    );
    // The key deleted under its holder: told at once.
    let mut lost = second.lost();
    let kv =
        sinew_cluster::etcd::api::etcdserverpb::kv_client::KvClient::new(etcd.channel().clone());
    kv.delete_range(sinew_rpc::Request::new(
        sinew_cluster::etcd::api::etcdserverpb::DeleteRangeRequest {
            key: second.key().to_vec(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), lost.wait())
        .await
        .unwrap();
    assert_eq!(reason, LostReason::KeyDeleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_exclude_and_fail_over_on_the_embedded_store() {
    let (etcd, handle, _store) = embedded().await;
    exclusion(etcd.clone()).await;
    failover(etcd).await;
    handle.shutdown();
}

/// A holder cut off from the store (its renewals unanswered) is told
/// `lost` before the store expires its lease, so before anyone else can
/// take the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_is_told_before_the_store_lets_go() {
    let (etcd, handle, store) = embedded().await;
    // A 5 s lease: the margin between being told and the store letting go
    // is then half a second, room for a loaded machine to look.
    let lock = Lock::new(etcd, "cut-off").with_ttl(Duration::from_secs(5));
    let guard = lock.acquire().await.unwrap();
    let key = guard.key().to_vec();
    let mut lost = guard.lost();
    handle.shutdown();
    let reason = tokio::time::timeout(Duration::from_secs(10), lost.wait())
        .await
        .unwrap();
    let told = tokio::time::Instant::now();
    assert_eq!(reason, LostReason::Expired);
    // The store still has the key then; it lets go only later.
    let present = |store: &Store| {
        store
            .range(&sinew_cluster::etcd::api::etcdserverpb::RangeRequest {
                key: key.clone(),
                ..Default::default()
            })
            .unwrap()
            .count
            == 1
    };
    assert!(present(&store), "told lost while the store still held it");
    let mut gone = None;
    for _ in 0..250 {
        if !present(&store) {
            gone = Some(tokio::time::Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone = gone.expect("the store expired the lease");
    assert!(told < gone);
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_exclude_and_fail_over_on_etcd() {
    let cluster = etcd_cluster::EtcdCluster::start(1).await;
    let etcd = Etcd::connect(cluster.client_addresses()).unwrap();
    exclusion(etcd.clone()).await;
    failover(etcd).await;
}
