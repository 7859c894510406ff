//! The etcd registry against a real etcd cluster: three members of Debian's
//! `etcd` (3.4) started by the test on 127.0.0.1 with free ports and data in
//! a temporary directory (scripts/install-peers.sh installs it).
//!
//! Registration, resolution and deregistration; a lease lost and granted
//! again; a member killed and restarted while a watch resumes across a
//! compaction; the last set kept while etcd is down; duplicate
//! registrations; an unknown name; keys that are not records; an "etcd"
//! that speaks garbage.

#[path = "support/etcd_cluster.rs"]
mod etcd_cluster;

#[path = "support/updates.rs"]
mod updates;

use etcd_cluster::{free_port, EtcdCluster};
use futures_util::StreamExt;
use sinew_cluster::etcd::{Etcd, Registry};
use sinew_cluster::resolve::Updates;
use sinew_cluster::{Endpoint, Resolve, Update};
use sinew_rpc::Code;
use std::time::{Duration, Instant};
use updates::{endpoint, next};

const ECHO: &str = "grpc.examples.echo.Echo";

fn ports_of(endpoints: &[Endpoint]) -> Vec<u16> {
    endpoints
        .iter()
        .map(|endpoint| match endpoint.address() {
            sinew_transport::Address::Tcp { port, .. } => *port,
            other => panic!("not TCP: {other}"),
        })
        .collect()
}

/// Reads updates until the set's ports are `ports` (sorted), within 10 s.
async fn until_set(updates: &mut Updates, ports: &[u16]) {
    loop {
        if let Ok(Update::Reset(endpoints)) = next(updates).await {
            if ports_of(&endpoints) == ports {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_register_clients_resolve_and_deregistration_is_immediate() {
    let cluster = EtcdCluster::start(3).await;
    let etcd = Etcd::connect(cluster.client_addresses()).unwrap();
    let registry = Registry::new(etcd).with_prefix("/t1/");
    let a = registry
        .register(&endpoint(7001).with_weight(3).with_zone("eu-1"), [ECHO])
        .await
        .unwrap();
    let b = registry
        .register(&endpoint(7002), [ECHO, "other.Service"])
        .await
        .unwrap();
    let _c = registry
        .register(&endpoint(7003), ["other.Service"])
        .await
        .unwrap();

    let mut updates = registry.resolver().resolve(ECHO);
    let Update::Reset(endpoints) = next(&mut updates).await.unwrap() else {
        panic!("the first update is the whole set");
    };
    assert_eq!(ports_of(&endpoints), [7001, 7002]);
    assert_eq!(endpoints[0].weight(), 3);
    assert_eq!(endpoints[0].zone(), Some("eu-1"));

    // A new registration joins the set, a deregistration leaves it, each
    // as soon as etcd tells the watch.
    let start = Instant::now();
    let d = registry.register(&endpoint(7004), [ECHO]).await.unwrap();
    until_set(&mut updates, &[7001, 7002, 7004]).await;
    let joined = start.elapsed();
    let start = Instant::now();
    b.deregister().await;
    until_set(&mut updates, &[7001, 7004]).await;
    let left = start.elapsed();
    println!("etcd registry: joined in {joined:?}, left in {left:?}");
    assert!(left < Duration::from_secs(1), "{left:?}");

    // Dropping a registration without deregistering leaves the key until
    // the lease expires (a killed process): still there now.
    assert_eq!(a.addresses().len(), 1);
    drop(d);
    let registered = registry.registered().await.unwrap();
    let registered: Vec<String> = registered.iter().map(|(a, _)| a.to_string()).collect();
    assert!(
        registered.contains(&"tcp://127.0.0.1:7004".to_owned()),
        "{registered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_granted_again_and_the_keys_put_back() {
    let cluster = EtcdCluster::start(1).await;
    let etcd = Etcd::connect(cluster.client_addresses()).unwrap();
    let registry = Registry::new(etcd.clone())
        .with_prefix("/t2/")
        .with_ttl(Duration::from_secs(2));
    let registration = registry.register(&endpoint(7001), [ECHO]).await.unwrap();
    let mut updates = registry.resolver().resolve(ECHO);
    until_set(&mut updates, &[7001]).await;

    // The lease is revoked behind the registration's back (an operator, or
    // etcd expiring it while the server was cut off): its keys go at once.
    let first = registration.lease();
    etcd.revoke(first).await.unwrap();
    let revoked = Instant::now();
    until_set(&mut updates, &[]).await;
    // The supervisor notices at its next renewal, grants a new lease and
    // puts the key back.
    until_set(&mut updates, &[7001]).await;
    let back = revoked.elapsed();
    // (The new lease is recorded once every key is back.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while registration.lease() == first {
        assert!(
            Instant::now() < deadline,
            "the registration keeps the old lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(etcd
        .time_to_live(registration.lease())
        .await
        .unwrap()
        .is_some());
    println!("etcd registry: registered again {back:?} after the lease was revoked");

    // And the new lease is kept alive past its time to live.
    let kept = registration.lease();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        registration.lease(),
        kept,
        "the lease was renewed, not granted again"
    );
    let registered = registry.registered().await.unwrap();
    assert_eq!(registered.len(), 1, "{registered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_after_its_member_restarts_and_relists_after_a_compaction() {
    let mut cluster = EtcdCluster::start(3).await;
    // The resolver reads through member 0 only; writes go through the
    // others.
    let reader =
        Registry::new(Etcd::connect([cluster.client_address(0)]).unwrap()).with_prefix("/t3/");
    let writer = Registry::new(
        Etcd::connect([cluster.client_address(1), cluster.client_address(2)]).unwrap(),
    )
    .with_prefix("/t3/");
    let a = writer.register(&endpoint(7001), [ECHO]).await.unwrap();
    let _b = writer.register(&endpoint(7002), [ECHO]).await.unwrap();
    let mut updates = reader.resolver().resolve(ECHO);
    until_set(&mut updates, &[7001, 7002]).await;

    // Member 0 is killed: the resolver says etcd is unreachable but keeps
    // its set (no empty Reset comes). (Writes wait for the others to elect
    // a leader, if member 0 was it.)
    cluster.kill_member(0);
    cluster.until_healthy().await;
    let _c = writer.register(&endpoint(7003), [ECHO]).await.unwrap();
    a.deregister().await;
    let outage_end = Instant::now() + Duration::from_secs(2);
    while let Ok(item) = tokio::time::timeout_at(outage_end.into(), updates.next()).await {
        match item.expect("the stream goes on") {
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status}"),
            Ok(update) => panic!("no update while etcd is unreachable: {update:?}"),
        }
    }

    // Member 0 comes back: the watch resumes from the revision it had seen,
    // and misses nothing.
    let restarted = Instant::now();
    cluster.start_member(0);
    until_set(&mut updates, &[7002, 7003]).await;
    let resumed = restarted.elapsed();
    println!("etcd registry: caught up {resumed:?} after the member came back");

    // Now the watch's revision is compacted away while its member is down:
    // the resolver lists again.
    cluster.kill_member(0);
    cluster.until_healthy().await;
    let _d = writer.register(&endpoint(7004), [ECHO]).await.unwrap();
    let listing = writer.etcd().get_prefix(b"/t3/").await.unwrap();
    let kv = sinew_cluster::etcd::api::etcdserverpb::kv_client::KvClient::new(
        writer.etcd().channel().clone(),
    );
    kv.compact(sinew_cluster::etcd::api::etcdserverpb::CompactionRequest {
        revision: listing.revision,
        physical: true,
    })
    .await
    .unwrap();
    cluster.start_member(0);
    until_set(&mut updates, &[7002, 7003, 7004]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_unknown_names_and_keys_that_are_not_records() {
    let cluster = EtcdCluster::start(1).await;
    let etcd = Etcd::connect(cluster.client_addresses()).unwrap();
    let registry = Registry::new(etcd.clone()).with_prefix("/t4/");
    // Garbage under the prefix: skipped, the rest stands.
    etcd.put(
        b"/t4/not an address",
        b"{\"services\":[\"grpc.examples.echo.Echo\"]}",
        0,
    )
    .await
    .unwrap();
    etcd.put(b"/t4/tcp://127.0.0.1:7009", b"\xff not json", 0)
        .await
        .unwrap();
    // The same address registered twice is one endpoint.
    let first = registry.register(&endpoint(7001), [ECHO]).await.unwrap();
    let second = registry.register(&endpoint(7001), [ECHO]).await.unwrap();
    let mut updates = registry.resolver().resolve(ECHO);
    let Update::Reset(endpoints) = next(&mut updates).await.unwrap() else {
        panic!("the first update is the whole set");
    };
    assert_eq!(ports_of(&endpoints), [7001]);
    // The key belongs to the later registration: the first one going does
    // not take it away.
    first.deregister().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let registered = registry.registered().await.unwrap();
    assert_eq!(registered.len(), 1, "{registered:?}");
    second.deregister().await;
    until_set(&mut updates, &[]).await;

    // A name nothing registers: an error naming what is registered.
    let _other = registry
        .register(&endpoint(7005), ["other.Service"])
        .await
        .unwrap();
    let mut unknown = registry.resolver().resolve("no.Such");
    let error = next(&mut unknown).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error}");
    assert!(error.message().contains("other.Service"), "{error}");
    // It comes when a server registers it.
    let _late = registry
        .register(&endpoint(7006), ["no.Such"])
        .await
        .unwrap();
    until_set(&mut unknown, &[7006]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_that_is_not_there_or_speaks_garbage_is_a_clear_error() {
    // Nothing listening.
    let nobody = Etcd::connect([format!("127.0.0.1:{}", free_port())]).unwrap();
    let error = Registry::new(nobody.clone())
        .register(&endpoint(7001), [ECHO])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error}");
    assert!(error.message().contains("etcd at 127.0.0.1:"), "{error}");
    let mut updates = Registry::new(nobody).resolver().resolve(ECHO);
    assert_eq!(
        next(&mut updates).await.unwrap_err().code(),
        Code::Unavailable
    );

    // A server that answers HTTP/2's preface with garbage.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                for _ in 0..100 {
                    if socket
                        .write_all(b"garbage garbage garbage\r\n")
                        .await
                        .is_err()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    });
    let garbage = Etcd::connect([format!("127.0.0.1:{port}")]).unwrap();
    let started = Instant::now();
    let error = garbage.get_prefix(b"/t5/").await.unwrap_err();
    assert!(
        matches!(
            error.code(),
            Code::Unavailable | Code::Internal | Code::DeadlineExceeded
        ),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let mut updates = Registry::new(garbage).resolver().resolve(ECHO);
    assert!(next(&mut updates).await.is_err());
}
