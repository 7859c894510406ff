//! The embedded store served as etcd's API on a free port, over gRPC, for
//! the tests that reach it as a client would (`#[path]`-included).

#![allow(dead_code)]

use sinew_cluster::etcd::Etcd;
use sinew_rpc::server::ServerHandle;
use sinew_rpc::Server;
use sinew_state::embedded::Store;
use std::time::Duration;

/// A store's etcd API on a free port: a client of it, the server's handle
/// (a shutdown cuts streams off at once, as a partition would) and its
/// `host:port`.
pub(crate) async fn served(store: &Store) -> (Etcd, ServerHandle, String) {
    let server = store
        .serve_etcd_api(
            Server::builder()
                .add_protocol(sinew_grpc::GrpcProtocol::default())
                .drain_timeout(Duration::ZERO),
        )
        .bind(["tcp://127.0.0.1:0"])
        .await
        .unwrap();
    let address = server.local_addresses()[0]
        .to_string()
        .replacen("tcp://", "", 1);
    let handle = server.handle();
    tokio::spawn(server.serve());
    (Etcd::connect([address.as_str()]).unwrap(), handle, address)
}

/// An in-memory store, served.
pub(crate) async fn embedded() -> (Etcd, ServerHandle, Store) {
    let store = Store::in_memory().unwrap();
    let (etcd, handle, _) = served(&store).await;
    (etcd, handle, store)
}
