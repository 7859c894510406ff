//! The embedded store served as etcd's v3 API, reached by sinew's etcd
//! client as production reaches etcd: the etcd registry and resolver
//! (leases kept alive, puts, a prefix listed then watched), raw requests
//! (a compare-and-swap, a watch from a compacted revision, progress), and
//! the store's state surviving a restart of the server.

use futures_util::StreamExt;
use sinew_cluster::etcd::api::etcdserverpb::{
    compare, kv_client::KvClient, request_op, watch_client::WatchClient, watch_request,
    CompactionRequest, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use sinew_cluster::etcd::{Etcd, Registry};

#[path = "support/served.rs"]
mod served;
use sinew_cluster::{Endpoint, Resolve, Update};
use sinew_rpc::Request;
use sinew_state::embedded::Store;
use std::time::Duration;

const ECHO: &str = "grpc.examples.echo.Echo";

/// The next message of a watch stream, within 10 s.
async fn next(
    responses: &mut sinew_rpc::Streaming<sinew_cluster::etcd::api::etcdserverpb::WatchResponse>,
) -> sinew_cluster::etcd::api::etcdserverpb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("a watch response within 10 s")
        .unwrap()
        .expect("the stream goes on")
}

fn endpoint(port: u16) -> Endpoint {
    Endpoint::new(format!("tcp://127.0.0.1:{port}").parse().unwrap())
}

async fn update(updates: &mut sinew_cluster::resolve::Updates) -> Update {
    tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .expect("an update within 10 s")
        .expect("the stream goes on")
        .expect("no error")
}

fn ports(update: &Update) -> Vec<u16> {
    let Update::Reset(endpoints) = update else {
        return Vec::new();
    };
    let mut ports: Vec<u16> = endpoints
        .iter()
        .map(|e| match e.address() {
            sinew_transport::Address::Tcp { port, .. } => *port,
            other => panic!("{other}"),
        })
        .collect();
    ports.sort_unstable();
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinews_etcd_registry_runs_on_the_embedded_store() {
    let store = Store::in_memory().unwrap();
    let (_, handle, address) = served::served(&store).await;
    let registry =
        Registry::new(Etcd::connect([address.as_str()]).unwrap()).with_ttl(Duration::from_secs(2));
    let a = registry.register(&endpoint(7001), [ECHO]).await.unwrap();
    let mut updates = registry.resolver().resolve(ECHO);
    assert_eq!(ports(&update(&mut updates).await), [7001]);
    // A registration joins as the watch reports it; kept alive past its
    // TTL, it stays.
    let b = registry.register(&endpoint(7002), [ECHO]).await.unwrap();
    loop {
        if ports(&update(&mut updates).await) == [7001, 7002] {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let registered = registry.registered().await.unwrap();
    assert_eq!(registered.len(), 2, "kept alive past the TTL");
    // Deregistered (its lease revoked): gone at once.
    b.deregister().await;
    loop {
        if ports(&update(&mut updates).await) == [7001] {
            break;
        }
    }
    // Dropped without deregistering (a killed server): gone when its
    // lease expires, within the TTL and the expiry check.
    drop(a);
    let dropped = tokio::time::Instant::now();
    loop {
        let update = update(&mut updates).await;
        if matches!(&update, Update::Reset(endpoints) if endpoints.is_empty())
            || matches!(&update, Update::Remove(_))
        {
            break;
        }
    }
    assert!(
        dropped.elapsed() < Duration::from_secs(4),
        "{:?}",
        dropped.elapsed()
    );
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_requests_compare_and_swap_and_watch_as_on_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let store = Store::open(&path).unwrap();
    let (_, handle, address) = served::served(&store).await;
    let channel = Etcd::connect([address.as_str()]).unwrap().channel().clone();
    let kv = KvClient::new(channel.clone());
    let put = |key: &str, value: &str| PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    };
    kv.put(Request::new(put("counter", "0"))).await.unwrap();
    let cas = |from: &str, to: &str| TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            key: "counter".into(),
            target_union: Some(compare::TargetUnion::Value(from.into())),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put("counter", to))),
        }],
        failure: Vec::new(),
    };
    let won = kv
        .txn(Request::new(cas("0", "1")))
        .await
        .unwrap()
        .into_inner();
    let lost = kv
        .txn(Request::new(cas("0", "2")))
        .await
        .unwrap()
        .into_inner();
    assert!(won.succeeded && !lost.succeeded);
    assert_eq!(won.header.unwrap().revision, 2);
    // A watch from revision 1 replays both writes, then a compaction
    // cancels a watch from before it, with the revision to list from.
    let watch = WatchClient::new(channel.clone());
    let (requests, outgoing) = tokio::sync::mpsc::channel(4);
    let create = |start_revision: i64| WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: "counter".into(),
                start_revision,
                ..WatchCreateRequest::default()
            },
        )),
    };
    requests.send(create(1)).await.unwrap();
    let outgoing = futures_util::stream::unfold(outgoing, |mut receiver| async move {
        receiver.recv().await.map(|request| (request, receiver))
    });
    let mut responses = watch
        .watch(Request::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    let created = next(&mut responses).await;
    assert!(created.created);
    let mut values = Vec::new();
    while values.len() < 2 {
        let response = next(&mut responses).await;
        values.extend(
            response
                .events
                .iter()
                .map(|e| e.kv.as_ref().unwrap().value.clone()),
        );
    }
    assert_eq!(values, [b"0".to_vec(), b"1".to_vec()]);
    kv.compact(Request::new(CompactionRequest {
        revision: 2,
        physical: false,
    }))
    .await
    .unwrap();
    requests.send(create(1)).await.unwrap();
    let mut canceled = next(&mut responses).await;
    while !canceled.canceled {
        canceled = next(&mut responses).await;
    }
    assert_eq!(canceled.compact_revision, 2);
    drop((requests, responses, watch, kv, channel));
    handle.shutdown();
    drop(store);
    // The store's file, opened again once the server has let go of it: the
    // value and its revision are there.
    let mut reopened = Store::open(&path);
    for _ in 0..100 {
        if reopened.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        reopened = Store::open(&path);
    }
    let store = reopened.unwrap();
    let (_, handle, address) = served::served(&store).await;
    let channel = Etcd::connect([address.as_str()]).unwrap().channel().clone();
    let range = KvClient::new(channel)
        .range(Request::new(RangeRequest {
            key: "counter".into(),
            ..RangeRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(range.kvs[0].value, b"1");
    assert_eq!(range.kvs[0].mod_revision, 2);
    handle.shutdown();
}
