//! [`ResponseFuture`]: one call through a [`Breaker`](super::Breaker):
//! refused at once, or let through: it waits for the service below
//! (within the call's deadline), calls it, and records the outcome in its circuit (a probe that takes too long
//! counts as failed when its time is up).

use super::Outcome;
use crate::readiness::ReadyWithin;
use pin_project_lite::pin_project;
use sinew_rpc::call::{CallRequest, CallResponse};
use sinew_rpc::Status;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::time::Sleep;
use tower::Service;

pin_project! {
    /// The future of one call through a [`Breaker`](super::Breaker).
    pub struct ResponseFuture<S: Service<CallRequest>> {
        #[pin]
        state: State<S>,
        outcome: Option<Outcome>,
        // A probe's time limit.
        #[pin]
        probe_timer: Option<Sleep>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<S: Service<CallRequest>> {
        Readying { service: S, request: Option<CallRequest>, wait: ReadyWithin },
        Calling { #[pin] future: S::Future },
        Refused { status: Option<Status> },
    }
}

impl<S: Service<CallRequest>> ResponseFuture<S> {
    pub(super) fn new(service: S, request: CallRequest, outcome: Outcome) -> ResponseFuture<S> {
        let probe_timer = outcome
            .is_probe()
            .then(|| tokio::time::sleep(outcome.shared.config.probe_timeout));
        ResponseFuture {
            state: State::Readying {
                service,
                wait: ReadyWithin::of(&request),
                request: Some(request),
            },
            outcome: Some(outcome),
            probe_timer,
        }
    }

    pub(super) fn refused(status: Status) -> ResponseFuture<S> {
        ResponseFuture {
            state: State::Refused {
                status: Some(status),
            },
            outcome: None,
            probe_timer: None,
        }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status>,
{
    type Output = Result<CallResponse, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(timer) = this.probe_timer.as_mut().as_pin_mut() {
            if timer.poll(cx).is_ready() {
                // The probe took too long: the circuit opens again; the
                // call itself goes on.
                if let Some(outcome) = this.outcome.as_mut() {
                    outcome.record_failed();
                }
                this.probe_timer.set(None);
            }
        }
        loop {
            let result = match this.state.as_mut().project() {
                StateProjection::Refused { status } => {
                    return Poll::Ready(Err(status
                        .take()
                        .unwrap_or_else(|| Status::internal("call polled after it ended"))))
                }
                StateProjection::Readying {
                    service,
                    request,
                    wait,
                } => match ready!(wait.poll_ready(service, cx)) {
                    Ok(()) => {
                        let request = request.take().expect("a call is sent once");
                        let future = service.call(request);
                        this.state.set(State::Calling { future });
                        continue;
                    }
                    Err(status) => Err(status),
                },
                StateProjection::Calling { future } => ready!(future.poll(cx)),
            };
            if let Some(outcome) = this.outcome.as_mut() {
                outcome.record(result.as_ref().err());
            }
            return Poll::Ready(result);
        }
    }
}
