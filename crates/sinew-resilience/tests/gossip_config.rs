//! A service config gossiped by the members of a real gossip cluster (UDP
//! on 127.0.0.1): a client following it puts the newest one a live member
//! publishes in force; a config that is not valid, or none any more, leaves
//! the last good one; a config that gossip cannot carry is refused.

#![cfg(feature = "gossip")]

mod support;

use sinew_cluster::gossip::{Member, Role, MAX_SERVICE_CONFIG};
use sinew_resilience::{ConfigHandle, ServiceConfig};
use sinew_rpc::Code;
use std::time::{Duration, SystemTime};
use support::{config, timeout, until};

const SERVICE: &str = "grpc.examples.echo.Echo";

async fn join(role: Role, seed: Option<&Member>) -> Member {
    let mut builder = Member::builder()
        .cluster("config-test")
        .role(role)
        .gossip_interval(Duration::from_millis(20));
    if let Some(seed) = seed {
        builder = builder.seeds([seed.gossip_address().to_string()]);
    }
    builder.join().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_follow_the_newest_service_config_the_members_publish() {
    let first = join(Role::Server, None).await;
    let second = join(Role::Server, Some(&first)).await;
    let observer = join(Role::Observer, Some(&first)).await;
    let handle = ConfigHandle::new(ServiceConfig::new());
    let _following = handle.follow_gossip(&observer, SERVICE);

    first
        .publish_service_config(SERVICE, &config("1s"), SystemTime::now())
        .await
        .unwrap();
    until(&handle, Some(Duration::from_secs(1))).await;
    // Another member publishes a newer one: it wins.
    tokio::time::sleep(Duration::from_millis(5)).await;
    second
        .publish_service_config(SERVICE, &config("2.5s"), SystemTime::now())
        .await
        .unwrap();
    until(&handle, Some(Duration::from_millis(2500))).await;
    assert_eq!(observer.service_config(SERVICE), Some(config("2.5s")));
    // An older version (written an hour ago), published later by the
    // first member, changes nothing.
    first
        .publish_service_config(
            SERVICE,
            &config("7s"),
            SystemTime::now() - Duration::from_secs(3600),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(timeout(&handle), Some(Duration::from_millis(2500)));
    // A config for another service changes nothing here.
    first
        .publish_service_config("other.Service", &config("9s"), SystemTime::now())
        .await
        .unwrap();
    // The newest is not a valid service config: the last good one stays.
    tokio::time::sleep(Duration::from_millis(5)).await;
    second
        .publish_service_config(SERVICE, r#"{"methodConfig": 5}"#, SystemTime::now())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(timeout(&handle), Some(Duration::from_millis(2500)));
    // Withdrawn: the newest left (the first member's) is in force.
    second.withdraw_service_config(SERVICE).await.unwrap();
    until(&handle, Some(Duration::from_secs(7))).await;
    // Its member leaves: none is published, the last good one stays.
    first.leave().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(observer.service_config(SERVICE), None);
    assert_eq!(timeout(&handle), Some(Duration::from_secs(7)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_gossip_cannot_carry_is_refused() {
    let member = join(Role::Server, None).await;
    let status = member
        .publish_service_config(SERVICE, "{ not json", SystemTime::now())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("not JSON"), "{status}");
    let huge = format!(r#"{{"pad": "{}"}}"#, "x".repeat(MAX_SERVICE_CONFIG));
    let status = member
        .publish_service_config(SERVICE, &huge, SystemTime::now())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("at most"), "{status}");
    assert_eq!(member.service_config(SERVICE), None);
}
