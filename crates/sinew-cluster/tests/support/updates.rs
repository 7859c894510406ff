//! Helpers for tests that read a resolver's stream of updates
//! (`#[path]`-included).

#![allow(dead_code)]

use futures_util::StreamExt;
use sinew_cluster::resolve::Updates;
use sinew_cluster::{Endpoint, Update};
use sinew_rpc::Status;
use std::time::Duration;

/// An endpoint at `tcp://127.0.0.1:PORT`.
pub(crate) fn endpoint(port: u16) -> Endpoint {
    Endpoint::new(format!("tcp://127.0.0.1:{port}").parse().unwrap())
}

/// The next update or error, within 10 s.
pub(crate) async fn next(updates: &mut Updates) -> Result<Update, Status> {
    tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .expect("an update within 10 s")
        .expect("the stream goes on")
}
