//! gRPC health checking (`grpc.health.v1.Health`), offered by every sinew server
//! unless turned off with [`ServerBuilder::health`](super::ServerBuilder::health).
//!
//! Every service added to the server starts `SERVING`, and so does the server as
//! a whole (the empty service name). The application changes a status through a
//! [`HealthReporter`] (from [`ServerBuilder::health_reporter`](super::ServerBuilder::health_reporter)),
//! for instance `NOT_SERVING` while a dependency is down. When the server starts
//! shutting down, every status turns `NOT_SERVING` (so load balancers stop sending
//! new calls) and `Watch` streams end after telling their watchers so, instead of
//! holding the drain up.

use crate::request::{Request, Response};
use crate::status::Status;
use futures_core::Stream;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;

/// Code generated from `proto/grpc/health/v1/health.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, rustdoc::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
}

use v1::health_check_response::ServingStatus;
use v1::{HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse};

/// The statuses, published to every `Watch`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Snapshot {
    statuses: BTreeMap<String, ServingStatus>,
    shutting_down: bool,
}

/// Sets the health statuses a server reports. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HealthReporter {
    snapshot: Arc<watch::Sender<Snapshot>>,
}

impl Default for HealthReporter {
    fn default() -> Self {
        let mut statuses = BTreeMap::new();
        statuses.insert(String::new(), ServingStatus::Serving);
        let (sender, _) = watch::channel(Snapshot {
            statuses,
            shutting_down: false,
        });
        HealthReporter {
            snapshot: Arc::new(sender),
        }
    }
}

impl HealthReporter {
    /// Reports `service` (fully-qualified, or "" for the whole server) as serving.
    pub fn set_serving(&self, service: &str) {
        self.set(service, ServingStatus::Serving);
    }

    /// Reports `service` (fully-qualified, or "" for the whole server) as not serving.
    pub fn set_not_serving(&self, service: &str) {
        self.set(service, ServingStatus::NotServing);
    }

    /// The status reported for `service`, if it is known.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.snapshot.borrow().statuses.get(service).copied()
    }

    fn set(&self, service: &str, status: ServingStatus) {
        self.snapshot.send_if_modified(|snapshot| {
            let previous = snapshot.statuses.insert(service.to_owned(), status);
            previous != Some(status)
        });
    }

    /// Every status turns NOT_SERVING and watches end: the server is draining.
    pub(crate) fn shutting_down(&self) {
        self.snapshot.send_modify(|snapshot| {
            for status in snapshot.statuses.values_mut() {
                *status = ServingStatus::NotServing;
            }
            snapshot.shutting_down = true;
        });
    }
}

/// The health service over a [`HealthReporter`].
#[derive(Debug)]
pub(crate) struct Health {
    reporter: HealthReporter,
}

impl Health {
    pub(crate) fn new(reporter: HealthReporter) -> Health {
        Health { reporter }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

impl v1::health_server::Health for Health {
    type WatchStream = WatchStream;

    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.reporter.status(&service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    async fn list(
        &self,
        _request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        let snapshot = self.reporter.snapshot.borrow().clone();
        Ok(Response::new(HealthListResponse {
            statuses: snapshot
                .statuses
                .into_iter()
                .map(|(service, status)| (service, response(status)))
                .collect(),
        }))
    }

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let service = request.into_inner().service;
        let changes = self.reporter.snapshot.subscribe();
        // State: the receiver, the last status sent, whether the watch is over.
        let stream = futures_util::stream::unfold(
            (changes, None::<ServingStatus>, false),
            move |(mut changes, last, ended)| {
                let service = service.clone();
                async move {
                    if ended {
                        return None;
                    }
                    loop {
                        let (current, shutting_down) = {
                            let snapshot = changes.borrow_and_update();
                            let status = snapshot
                                .statuses
                                .get(&service)
                                .copied()
                                .unwrap_or(ServingStatus::ServiceUnknown);
                            (status, snapshot.shutting_down)
                        };
                        if Some(current) != last {
                            // The NOT_SERVING of a shutdown is the watch's last message.
                            return Some((
                                Ok(response(current)),
                                (changes, Some(current), shutting_down),
                            ));
                        }
                        if shutting_down || changes.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
