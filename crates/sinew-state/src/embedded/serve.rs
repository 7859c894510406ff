//! The embedded store served as etcd's v3 gRPC API (`KV`, `Watch`,
//! `Lease`, `Maintenance.Status`), on any sinew server: etcd's clients
//! (sinew's own in `sinew_cluster::etcd`, and with the gRPC protocol on the
//! server, etcd's) reach it as they reach etcd, so one client code path
//! serves development and production.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sinew_rpc::Server;
//! use sinew_state::embedded::Store;
//! let store = Store::open("state.redb")?;
//! let server = store
//!     .serve_etcd_api(Server::builder())
//!     .bind(["tcp://127.0.0.1:2379"])
//!     .await?;
//! server.serve().await;
//! # Ok(()) }
//! ```
//!
//! Requests that write run on tokio's blocking pool (a write waits for its
//! fsync). A watch stream carries up to [`MAX_WATCHES_PER_STREAM`] watches,
//! with at most 8 answers (of at most 1 MiB of events each) waiting for its
//! client; each reads the store's history at the pace
//! its client takes the responses (a client that stops reading stalls only
//! its own watches, and one left behind the history is cancelled with the
//! compact revision, as etcd does).

use super::{Store, WatchEnd};
use futures_util::StreamExt;
use sinew_cluster::etcd::api::etcdserverpb::{
    kv_server::{Kv, KvServer},
    lease_server::{Lease, LeaseServer},
    maintenance_server::{Maintenance, MaintenanceServer},
    watch_request,
    watch_server::{Watch, WatchServer},
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, StatusRequest, StatusResponse,
    TxnRequest, TxnResponse, WatchRequest, WatchResponse,
};
use sinew_rpc::server::ServerBuilder;
use sinew_rpc::{Request, Response, Status, Streaming};
use std::collections::HashMap;
use std::pin::Pin;

/// The most watches one watch stream may hold at once.
pub const MAX_WATCHES_PER_STREAM: usize = 1024;

/// The version `Maintenance.Status` reports (the etcd API level served).
const API_VERSION: &str = "3.5.0";

type Stream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

/// etcd's v3 API over a [`Store`]; see the module docs.
#[derive(Clone, Debug)]
pub struct EtcdApi {
    store: Store,
}

impl Store {
    /// `builder` with etcd's v3 API over this store added (add the gRPC
    /// protocol to it too for etcd's own clients).
    pub fn serve_etcd_api(&self, builder: ServerBuilder) -> ServerBuilder {
        let api = EtcdApi {
            store: self.clone(),
        };
        builder
            .add_service(KvServer::new(api.clone()))
            .add_service(WatchServer::new(api.clone()))
            .add_service(LeaseServer::new(api.clone()))
            .add_service(MaintenanceServer::new(api))
    }
}

impl EtcdApi {
    /// Runs `run` on the store in the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        run: impl FnOnce(&Store) -> Result<T, Status> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || run(&store)).await {
            Ok(result) => result.map(Response::new),
            Err(_) => Err(Status::internal("the embedded store's request failed")),
        }
    }
}

impl Kv for EtcdApi {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let request = request.into_inner();
        self.blocking(move |store| store.range(&request)).await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let request = request.into_inner();
        self.blocking(move |store| store.put(&request)).await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        self.blocking(move |store| store.delete_range(&request))
            .await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let request = request.into_inner();
        self.blocking(move |store| store.txn(&request)).await
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let request = request.into_inner();
        self.blocking(move |store| store.compact(&request)).await
    }
}

impl Lease for EtcdApi {
    type LeaseKeepAliveStream = Stream<LeaseKeepAliveResponse>;

    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let request = request.into_inner();
        self.blocking(move |store| store.lease_grant(&request))
            .await
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let request = request.into_inner();
        self.blocking(move |store| store.lease_revoke(&request))
            .await
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let store = self.store.clone();
        let renewals = request
            .into_inner()
            .map(move |request| request.map(|request| store.lease_keep_alive(request.id)));
        Ok(Response::new(Box::pin(renewals)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        Ok(Response::new(
            self.store.lease_time_to_live(&request.into_inner()),
        ))
    }
}

impl Maintenance for EtcdApi {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let header = self.store.header();
        let index = header.revision as u64;
        Ok(Response::new(StatusResponse {
            leader: header.member_id,
            header: Some(header),
            version: API_VERSION.to_owned(),
            raft_index: index,
            raft_term: 1,
            raft_applied_index: index,
            ..StatusResponse::default()
        }))
    }
}

impl Watch for EtcdApi {
    type WatchStream = Stream<WatchResponse>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<WatchResponse, Status>>(8);
        tokio::spawn(watches(self.store.clone(), request.into_inner(), sender));
        Ok(Response::new(Box::pin(futures_util::stream::poll_fn(
            move |cx| receiver.poll_recv(cx),
        ))))
    }
}

type Sender = tokio::sync::mpsc::Sender<Result<WatchResponse, Status>>;

/// Serves one watch stream: its create and cancel requests, a task per
/// watch, until the client ends the stream or goes away.
async fn watches(store: Store, mut requests: Streaming<WatchRequest>, sender: Sender) {
    let mut running: HashMap<i64, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut next_id = 0;
    loop {
        let request = tokio::select! {
            request = requests.message() => request,
            () = sender.closed() => break,
        };
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => break,
        };
        running.retain(|_, task| !task.is_finished());
        let answer = |response: WatchResponse| {
            let sender = sender.clone();
            async move { sender.send(Ok(response)).await.is_ok() }
        };
        match request.request_union {
            Some(watch_request::RequestUnion::CreateRequest(create)) => {
                let id = match create.watch_id {
                    0 => {
                        while running.contains_key(&next_id) {
                            next_id += 1;
                        }
                        next_id
                    }
                    id => id,
                };
                if running.contains_key(&id) || running.len() >= MAX_WATCHES_PER_STREAM {
                    let reason = if running.contains_key(&id) {
                        "etcdserver: watch ID in use"
                    } else {
                        "etcdserver: too many watches on this stream"
                    };
                    let refused = WatchResponse {
                        header: Some(store.header()),
                        watch_id: id,
                        created: true,
                        canceled: true,
                        cancel_reason: reason.to_owned(),
                        ..WatchResponse::default()
                    };
                    if !answer(refused).await {
                        break;
                    }
                    continue;
                }
                // The watcher first: the revision the created answer gives
                // is then the one it goes on from (a write landing between
                // the two cannot be missed).
                let watcher = store.watch(&create);
                let mut header = store.header();
                if let Ok(watcher) = &watcher {
                    header.revision = watcher.next_revision() - 1;
                }
                let created = WatchResponse {
                    header: Some(header),
                    watch_id: id,
                    created: true,
                    ..WatchResponse::default()
                };
                if !answer(created).await {
                    break;
                }
                match watcher {
                    Ok(watcher) => {
                        running.insert(
                            id,
                            tokio::spawn(forward(store.clone(), id, watcher, sender.clone())),
                        );
                    }
                    Err(end) => {
                        if !answer(ended(&store, id, end)).await {
                            break;
                        }
                    }
                }
            }
            Some(watch_request::RequestUnion::CancelRequest(cancel)) => {
                if let Some(task) = running.remove(&cancel.watch_id) {
                    task.abort();
                    let canceled = WatchResponse {
                        header: Some(store.header()),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..WatchResponse::default()
                    };
                    if !answer(canceled).await {
                        break;
                    }
                }
            }
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                let progress = WatchResponse {
                    header: Some(store.header()),
                    watch_id: -1,
                    ..WatchResponse::default()
                };
                if !answer(progress).await {
                    break;
                }
            }
            None => {}
        }
    }
    for task in running.into_values() {
        task.abort();
    }
}

/// The answer that ends a watch.
fn ended(store: &Store, id: i64, end: WatchEnd) -> WatchResponse {
    let (compact_revision, reason) = match end {
        WatchEnd::Compacted { compact_revision } => (
            compact_revision,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        WatchEnd::Closed => (0, "the store is closed"),
    };
    WatchResponse {
        header: Some(store.header()),
        watch_id: id,
        canceled: true,
        compact_revision,
        cancel_reason: reason.to_owned(),
        ..WatchResponse::default()
    }
}

/// Sends one watch's events until it ends or the stream goes.
async fn forward(store: Store, id: i64, mut watcher: super::Watcher, sender: Sender) {
    loop {
        let response = match watcher.next().await {
            Ok((revision, events)) => {
                let mut header = store.header();
                header.revision = revision;
                WatchResponse {
                    header: Some(header),
                    watch_id: id,
                    events,
                    ..WatchResponse::default()
                }
            }
            Err(end) => {
                let _ = sender.send(Ok(ended(&store, id, end))).await;
                return;
            }
        };
        if sender.send(Ok(response)).await.is_err() {
            return;
        }
    }
}
