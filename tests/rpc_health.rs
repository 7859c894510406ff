//! gRPC health checking on every server: Check, List, Watch, statuses set by the
//! application, NOT_SERVING while draining.

mod common;

use common::TestServer;
use sinew::rpc::server::health::v1::health_check_response::ServingStatus;
use sinew::rpc::server::health::v1::health_client::HealthClient;
use sinew::rpc::server::health::v1::{HealthCheckRequest, HealthListRequest};
use sinew::Code;

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_list_report_every_service_and_refuse_unknown_ones() {
    let server = TestServer::start().await;
    let health = HealthClient::new(server.channel(&server.unix).await);
    for service in [
        "",
        "grpc.examples.echo.Echo",
        "sinew.examples.kv.KeyValue",
        "grpc.health.v1.Health",
    ] {
        let status = health
            .check(check(service))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health.check(check("no.Such")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    server.health.set_not_serving("sinew.examples.kv.KeyValue");
    let list = health
        .list(HealthListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list.statuses["sinew.examples.kv.KeyValue"].status,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        list.statuses["grpc.examples.echo.Echo"].status,
        ServingStatus::Serving as i32
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_changes_and_unknown_services() {
    let server = TestServer::start().await;
    let health = HealthClient::new(server.channel(&server.tcp).await);
    let mut echo = health
        .watch(check("grpc.examples.echo.Echo"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        echo.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    server.health.set_not_serving("grpc.examples.echo.Echo");
    assert_eq!(
        echo.message().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    server.health.set_not_serving("grpc.examples.echo.Echo"); // no change: no message
    server.health.set_serving("grpc.examples.echo.Echo");
    assert_eq!(
        echo.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    let mut later = health
        .watch(check("later.Service"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        later.message().await.unwrap().unwrap().status,
        ServingStatus::ServiceUnknown as i32
    );
    server.health.set_serving("later.Service");
    assert_eq!(
        later.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    drop((echo, later));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_turns_everything_not_serving_and_ends_watches_without_holding_the_drain() {
    let server = TestServer::start().await;
    let health = HealthClient::new(server.channel(&server.tcp).await);
    let mut watch = health.watch(check("")).await.unwrap().into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    let reporter = server.health.clone();
    let report = server.shutdown().await;
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    assert!(
        watch.message().await.unwrap().is_none(),
        "the watch ends after NOT_SERVING"
    );
    // Had the watch held the drain up, it would have been cancelled at the drain
    // deadline; it ends with the NOT_SERVING sent before the drain begins.
    assert_eq!(report.cancelled_calls, 0, "{report:?}");
    assert_eq!(
        reporter.status("grpc.examples.echo.Echo"),
        Some(ServingStatus::NotServing)
    );
}
