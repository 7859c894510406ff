//! Active health checking: each connected endpoint's
//! `grpc.health.v1.Health/Watch` for the balanced service (gRPC's
//! client-side health checking), on sinew's servers and any gRPC server.
//!
//! `SERVING` keeps the endpoint in the picks; any other status
//! (`NOT_SERVING`, `SERVICE_UNKNOWN`) takes it out until it says `SERVING`
//! again. A server that shuts down gracefully says `NOT_SERVING` before it
//! refuses calls, so it leaves the picks first. A server without the health
//! service (`UNIMPLEMENTED`) counts as serving, as in gRPC. A watch that
//! breaks is started again after a wait (100 ms doubling to 5 s), keeping
//! the last status meanwhile. The watch runs only while the endpoint is
//! connected (the endpoint's watcher drops it when the connection goes).

use super::endpoints::EndpointState;
use super::Shared;
use sinew_rpc::server::health::v1::health_check_response::ServingStatus;
use sinew_rpc::server::health::v1::{health_client::HealthClient, HealthCheckRequest};
use sinew_rpc::{Channel, Code};
use std::sync::Arc;
use std::time::Duration;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Follows `state`'s health until dropped.
pub(super) async fn watch(shared: Arc<Shared>, state: Arc<EndpointState>, channel: Channel) {
    let client = HealthClient::new(channel);
    let mut retry = FIRST_RETRY;
    loop {
        let request = HealthCheckRequest {
            service: shared.service.clone(),
        };
        match client.watch(request).await {
            Ok(response) => {
                let mut statuses = response.into_inner();
                while let Ok(Some(reply)) = statuses.message().await {
                    retry = FIRST_RETRY;
                    shared.set_serving(&state, reply.status() == ServingStatus::Serving);
                }
            }
            Err(status) if status.code() == Code::Unimplemented => {
                shared.set_serving(&state, true);
                tracing::debug!(
                    endpoint = %state.endpoint.load().address(),
                    "no health service: counted as serving"
                );
                return std::future::pending().await;
            }
            Err(status) => {
                tracing::debug!(
                    endpoint = %state.endpoint.load().address(),
                    %status,
                    "health watch failed"
                );
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}
