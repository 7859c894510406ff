//! The embedded gossip registry, with real members gossiping over UDP on
//! 127.0.0.1 in this process: publishing, resolving by name, a member that
//! leaves, one that dies, clusters kept apart by name, duplicate
//! registrations, an unknown name, and datagrams that are not gossip.
//!
//! Across OS processes (`sinew serve --join`, SIGKILL) it is tested in the
//! CLI's tests.

#[path = "support/updates.rs"]
mod updates;

use futures_util::StreamExt;
use sinew_cluster::gossip::{Member, Role, MEMBER_METADATA};
use sinew_cluster::resolve::Updates;
use sinew_cluster::{Endpoint, Resolve, Update};
use sinew_rpc::Code;
use std::time::{Duration, Instant};
use updates::{endpoint, next};

const ECHO: &str = "grpc.examples.echo.Echo";

/// A member of `cluster`, gossiping every 50 ms, joined through `seed`.
async fn member(cluster: &str, seed: Option<&Member>) -> Member {
    let mut builder = Member::builder()
        .cluster(cluster)
        .gossip_interval(Duration::from_millis(50));
    if let Some(seed) = seed {
        builder = builder.seeds([seed.gossip_address().to_string()]);
    }
    builder.join().await.unwrap()
}

/// Reads updates until the set's addresses are `ports`, within 10 s.
async fn until_set(updates: &mut Updates, ports: &[u16]) -> Vec<Endpoint> {
    let mut wanted: Vec<String> = ports
        .iter()
        .map(|port| format!("tcp://127.0.0.1:{port}"))
        .collect();
    wanted.sort();
    loop {
        if let Ok(Update::Reset(endpoints)) = next(updates).await {
            let addresses: Vec<String> = endpoints
                .iter()
                .map(|endpoint| endpoint.address().to_string())
                .collect();
            if addresses == wanted {
                return endpoints;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_publish_and_observers_resolve_as_members_come_and_go() {
    let a = member("c1", None).await;
    let b = member("c1", Some(&a)).await;
    let c = member("c1", Some(&a)).await;
    let observer = Member::builder()
        .cluster("c1")
        .role(Role::Observer)
        .gossip_interval(Duration::from_millis(50))
        .seeds([b.gossip_address().to_string()])
        .join()
        .await
        .unwrap();
    a.publish(&endpoint(7001).with_weight(3), [ECHO])
        .await
        .unwrap();
    b.publish(&endpoint(7002), [ECHO, "other.Service"])
        .await
        .unwrap();
    c.publish(&endpoint(7003), ["other.Service"]).await.unwrap();

    let mut updates = observer.resolver().resolve(ECHO);
    let endpoints = until_set(&mut updates, &[7001, 7002]).await;
    assert_eq!(endpoints[0].weight(), 3);
    assert_eq!(
        endpoints[0]
            .metadata()
            .get(MEMBER_METADATA)
            .map(String::as_str),
        Some(a.name())
    );
    let mut other = observer.resolver().resolve("other.Service");
    until_set(&mut other, &[7002, 7003]).await;

    // A member joins and publishes: it is in the set within a few rounds.
    let d = member("c1", Some(&c)).await;
    let joined = Instant::now();
    d.publish(&endpoint(7004), [ECHO]).await.unwrap();
    until_set(&mut updates, &[7001, 7002, 7004]).await;
    let join_time = joined.elapsed();

    // A member that leaves gracefully is out within a few rounds.
    let left = Instant::now();
    let leaving = tokio::spawn({
        let b = b.clone();
        async move { b.leave().await }
    });
    until_set(&mut updates, &[7001, 7004]).await;
    let leave_time = left.elapsed();
    leaving.await.unwrap();
    let error = b.publish(&endpoint(7009), [ECHO]).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error}");

    // A member that dies (stops gossiping without a word) is declared dead
    // by the failure detector.
    drop(d);
    let died = Instant::now();
    until_set(&mut updates, &[7001]).await;
    let death_time = died.elapsed();
    eprintln!(
        "gossip at 50 ms: joined in {join_time:?}, left in {leave_time:?}, dead in {death_time:?}"
    );

    // The member list says who is who.
    let members = observer.members().await;
    let report = members.iter().find(|m| m.name == a.name()).unwrap();
    assert!(report.live);
    assert_eq!(report.role, "server");
    assert_eq!(report.endpoints.len(), 1);
    let me = members.iter().find(|m| m.name == observer.name()).unwrap();
    assert_eq!(me.role, "observer");
    assert!(me.endpoints.is_empty());
    assert_eq!(observer.services(), [ECHO, "other.Service"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpublished_name_is_an_error_naming_the_published_services() {
    let a = member("c2", None).await;
    a.publish(&endpoint(7101), [ECHO]).await.unwrap();
    let observer = member("c2", Some(&a)).await;
    let mut updates = observer.resolver().resolve("no.Such");
    let error = next(&mut updates).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error}");
    assert!(
        error.message().contains("no.Such") && error.message().contains(ECHO),
        "{error}"
    );
    // The stream goes on: when a member publishes the name, it resolves.
    a.publish(&endpoint(7102), ["no.Such"]).await.unwrap();
    until_set(&mut updates, &[7102]).await;
    // And when the last endpoint goes, the set empties and the name is
    // unknown again.
    a.unpublish(endpoint(7102).address()).await.unwrap();
    assert_eq!(next(&mut updates).await.unwrap(), Update::Reset(Vec::new()));
    assert_eq!(next(&mut updates).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_on_the_same_seeds_stay_apart() {
    let a = member("blue", None).await;
    a.publish(&endpoint(7201), [ECHO]).await.unwrap();
    // A member of another cluster given a blue member as its seed.
    let red = member("red", Some(&a)).await;
    red.publish(&endpoint(7202), [ECHO]).await.unwrap();
    let blue = member("blue", Some(&a)).await;
    let mut updates = blue.resolver().resolve(ECHO);
    until_set(&mut updates, &[7201]).await;
    // Give the red member time to gossip at the blue ones.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names: Vec<String> = blue.members().await.into_iter().map(|m| m.name).collect();
    assert!(!names.contains(&red.name().to_owned()), "{names:?}");
    let names: Vec<String> = red.members().await.into_iter().map(|m| m.name).collect();
    assert_eq!(names, [red.name()]);
    // Whatever the blue set did meanwhile, the red endpoint was never in it.
    while let Some(Some(update)) = futures_util::FutureExt::now_or_never(updates.next()) {
        if let Ok(Update::Reset(endpoints)) = update {
            assert!(
                endpoints
                    .iter()
                    .all(|e| e.address() != endpoint(7202).address()),
                "{endpoints:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_published_twice_is_one_endpoint() {
    let a = member("c3", None).await;
    let b = member("c3", Some(&a)).await;
    a.publish(&endpoint(7301), [ECHO]).await.unwrap();
    a.publish(&endpoint(7301), [ECHO]).await.unwrap();
    b.publish(&endpoint(7301).with_weight(2), [ECHO])
        .await
        .unwrap();
    b.publish(&endpoint(7302), [ECHO]).await.unwrap();
    let mut updates = a.resolver().resolve(ECHO);
    let endpoints = until_set(&mut updates, &[7301, 7302]).await;
    assert_eq!(endpoints.len(), 2);
    // Withdrawn by one member, the address stays while the other publishes it.
    a.unpublish(endpoint(7301).address()).await.unwrap();
    b.unpublish(endpoint(7302).address()).await.unwrap();
    let endpoints = until_set(&mut updates, &[7301]).await;
    assert_eq!(endpoints[0].weight(), 2);
    let error = a
        .publish(&endpoint(7303), Vec::<String>::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_that_are_not_gossip_are_dropped() {
    let a = member("c4", None).await;
    a.publish(&endpoint(7401), [ECHO]).await.unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xff; 1],
        vec![0; 64],
        (0..=255).collect(),
        vec![0x41; 60_000],
        // A syn-like first byte followed by nonsense lengths.
        [0u8, 0, 255, 255, 255, 255].to_vec(),
    ];
    for _ in 0..20 {
        for datagram in &garbage {
            socket.send_to(datagram, a.gossip_address()).await.unwrap();
        }
    }
    // Still a working member: another joins through it and resolves.
    let b = member("c4", Some(&a)).await;
    let mut updates = b.resolver().resolve(ECHO);
    until_set(&mut updates, &[7401]).await;
}
