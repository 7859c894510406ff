//! The key-value store: a server and a client in one process, showing errors
//! (NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT), a watch stream, and
//! deadlines (a watch bounded by a timeout ends with DEADLINE_EXCEEDED).
//!
//! ```text
//! cargo run --example kv
//! ```

use sinew::{Channel, Code, Request, Server};
use sinew_examples::kv::{
    key_value_client::KeyValueClient, key_value_server::KeyValueServer, watch_event, DeleteRequest,
    GetRequest, KeyValueStore, PutRequest, WatchRequest,
};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .add_service(KeyValueServer::new(KeyValueStore::default()))
        .bind(["tcp://127.0.0.1:0"])
        .await?;
    let address = server.local_addresses()[0].to_string();
    let handle = server.handle();
    let serving = tokio::spawn(server.serve());
    println!("key-value server on {address}");

    let kv = KeyValueClient::new(Channel::connect(&address).await?);

    // A watch on "config/", bounded by a deadline.
    let mut watch = Request::new(WatchRequest {
        prefix: "config/".into(),
        send_initial: true,
    });
    watch.set_timeout(Duration::from_millis(300));
    let mut events = kv.watch(watch).await?.into_inner();

    let created = kv
        .put(PutRequest {
            key: "config/replicas".into(),
            value: b"3".to_vec(),
            expected_version: Some(0), // create only
        })
        .await?
        .into_inner();
    println!("created config/replicas at version {}", created.version);

    // Compare-and-set with a stale version fails and changes nothing.
    let conflict = kv
        .put(PutRequest {
            key: "config/replicas".into(),
            value: b"5".to_vec(),
            expected_version: Some(created.version + 10),
        })
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::FailedPrecondition);
    println!("stale update refused: {conflict}");

    kv.delete(DeleteRequest {
        key: "config/replicas".into(),
    })
    .await?;
    let missing = kv
        .get(GetRequest {
            key: "config/replicas".into(),
        })
        .await
        .unwrap_err();
    println!("after delete: {missing}");
    let invalid = kv.get(GetRequest { key: String::new() }).await.unwrap_err();
    println!("empty key: {invalid}");

    loop {
        match events.message().await {
            Ok(Some(event)) => {
                let kind = watch_event::Kind::try_from(event.kind).map_or("?", |k| k.as_str_name());
                println!("watch: {kind} {} (version {})", event.key, event.version);
            }
            Ok(None) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::DeadlineExceeded);
                println!("watch ended by its deadline: {status}");
                break;
            }
        }
    }

    handle.shutdown();
    let report = serving.await?;
    println!("server drained {} calls", report.drained_calls);
    Ok(())
}
