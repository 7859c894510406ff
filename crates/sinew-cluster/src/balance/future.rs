//! [`ResponseFuture`]: one call through a balanced channel. It counts itself
//! in its endpoint's load until its response begins, times that response
//! into the endpoint's latency estimate, and, when the call fails *not
//! processed*, sends it again to another ready endpoint.

use super::endpoints::EndpointState;
use super::Shared;
use pin_project_lite::pin_project;
use sinew_rpc::call::{CallRequest, CallResponse, Destination};
use sinew_rpc::client::ResponseFuture as ChannelFuture;
use sinew_rpc::Status;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tower::Service as _;

pin_project! {
    /// The future of one call through a [`Balanced`](super::Balanced)
    /// channel: resolves when the response begins.
    pub struct ResponseFuture {
        shared: Arc<Shared>,
        #[pin]
        attempt: Option<ChannelFuture>,
        // The endpoint of the attempt, counted in its load until it ends.
        counted: Option<Counted>,
        // A copy of the request for another endpoint (single-message
        // requests, while fail-overs are left).
        spare: Option<CallRequest>,
        failovers_left: usize,
        // Why there is no attempt.
        failure: Option<Status>,
    }
}

/// A call counted in its endpoint's calls in flight until dropped.
struct Counted {
    endpoint: Arc<EndpointState>,
    started: Instant,
}

impl Counted {
    fn new(endpoint: Arc<EndpointState>) -> Counted {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        endpoint.calls.fetch_add(1, Ordering::Relaxed);
        Counted {
            endpoint,
            started: Instant::now(),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ResponseFuture {
    pub(super) fn start(
        shared: Arc<Shared>,
        endpoint: Option<Arc<EndpointState>>,
        request: CallRequest,
    ) -> ResponseFuture {
        let Some(endpoint) = endpoint else {
            let failure = shared.failure().unwrap_or_else(|| {
                Status::unavailable(format!("no endpoint of {} is ready", shared.service))
                    .mark_not_processed()
            });
            return ResponseFuture {
                shared,
                attempt: None,
                counted: None,
                spare: None,
                failovers_left: 0,
                failure: Some(failure),
            };
        };
        // A copy only when another endpoint could take it.
        let spare = match shared.failover > 0 && shared.set.load().endpoints().len() > 1 {
            true => request.try_spare(),
            false => None,
        };
        let (attempt, counted) = send(endpoint, request);
        ResponseFuture {
            failovers_left: shared.failover,
            shared,
            attempt: Some(attempt),
            counted: Some(counted),
            spare,
            failure: None,
        }
    }
}

fn send(endpoint: Arc<EndpointState>, request: CallRequest) -> (ChannelFuture, Counted) {
    let attempt = endpoint.channel.clone().call(request);
    (attempt, Counted::new(endpoint))
}

impl Future for ResponseFuture {
    type Output = Result<CallResponse, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let Some(attempt) = this.attempt.as_mut().as_pin_mut() else {
                let failure = this.failure.take();
                return Poll::Ready(Err(failure.unwrap_or_else(|| {
                    Status::internal("balanced call polled after it ended")
                })));
            };
            let outcome = ready!(attempt.poll(cx));
            let counted = this.counted.take().expect("every attempt is counted");
            let status = match outcome {
                Ok(response) => {
                    let now = Instant::now();
                    counted.endpoint.rtt.observe(now - counted.started, now);
                    this.shared.record(&counted.endpoint, Ok(()));
                    this.attempt.set(None);
                    return Poll::Ready(Ok(response));
                }
                Err(status) => {
                    this.shared.record(&counted.endpoint, Err(&status));
                    status
                }
            };
            this.attempt.set(None);
            // Not processed: the endpoint never saw it; another can take it
            // (for a hash policy, the next endpoint of the call's key).
            let next = match (status.is_not_processed(), &this.spare, *this.failovers_left) {
                (true, Some(spare), 1..) => this
                    .shared
                    .pick(this.shared.key_of(spare), Some(&*counted.endpoint)),
                _ => None,
            };
            let Some(next) = next else {
                return Poll::Ready(Err(marked(status, &counted.endpoint)));
            };
            tracing::debug!(
                service = %this.shared.service,
                from = %counted.endpoint.endpoint.load().address(),
                to = %next.endpoint.load().address(),
                %status,
                "call not processed; sending it to another endpoint"
            );
            *this.failovers_left -= 1;
            let request = match *this.failovers_left {
                0 => this.spare.take(),
                _ => this.spare.as_ref().and_then(CallRequest::try_clone),
            };
            let Some(request) = request else {
                return Poll::Ready(Err(marked(status, &counted.endpoint)));
            };
            let (attempt, counted) = send(next, request);
            this.attempt.set(Some(attempt));
            *this.counted = Some(counted);
        }
    }
}

/// `status`, naming the endpoint its attempt failed on, for a retry layer
/// above to send the next attempt elsewhere.
fn marked(mut status: Status, endpoint: &Arc<EndpointState>) -> Status {
    status.set_destination(Destination::new(endpoint.clone()));
    status
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
