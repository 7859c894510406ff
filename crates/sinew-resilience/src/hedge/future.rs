//! [`Hedging`]: the copies of one call under a [`HedgingPolicy`], by the
//! rules of the module docs.

use super::HedgingPolicy;
use crate::retry::{next_attempt, pushback, RetryThrottle};
use futures_util::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;
use sinew_rpc::call::{CallRequest, CallResponse};
use sinew_rpc::Status;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};
use tower::Service;

pin_project! {
    /// One call's copies; resolves with the first response that begins, or
    /// a failure that ends the call.
    pub(crate) struct Hedging<S, F> {
        service: S,
        policy: HedgingPolicy,
        throttle: Option<RetryThrottle>,
        // What each next copy is copied from.
        spare: CallRequest,
        // The copies in flight.
        in_flight: FuturesUnordered<F>,
        // Copies sent.
        sent: u32,
        // No more copies: a negative pushback, or the throttle said no.
        stopped: bool,
        // The latest non-fatal failure, returned if every copy fails.
        last_failure: Option<Status>,
        // When the next copy goes (reset with each copy sent).
        #[pin]
        timer: Sleep,
        // The next copy goes as soon as the service is ready.
        due: bool,
    }
}

impl<S, F> Hedging<S, F>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status, Future = F>,
    F: Future<Output = Result<CallResponse, Status>>,
{
    /// The copies of a call whose first copy is `first`, made from `service`
    /// with a request `spare` is a copy of.
    pub(crate) fn new(
        service: S,
        first: F,
        spare: CallRequest,
        policy: HedgingPolicy,
        throttle: Option<RetryThrottle>,
    ) -> Hedging<S, F> {
        let in_flight = FuturesUnordered::new();
        in_flight.push(first);
        let timer = tokio::time::sleep(policy.delay());
        Hedging {
            service,
            policy,
            throttle,
            spare,
            in_flight,
            sent: 1,
            stopped: false,
            last_failure: None,
            timer,
            due: false,
        }
    }
}

impl<S, F> Future for Hedging<S, F>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status, Future = F>,
    F: Future<Output = Result<CallResponse, Status>>,
{
    type Output = Result<CallResponse, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // Answers first: a copy that answered wins even if another is due.
            while let Poll::Ready(Some(outcome)) = this.in_flight.poll_next_unpin(cx) {
                let status = match outcome {
                    Ok(response) => {
                        if let Some(throttle) = this.throttle.as_ref() {
                            throttle.succeeded();
                        }
                        // Dropping the others (with this future) cancels them.
                        return Poll::Ready(Ok(response));
                    }
                    Err(status) => status,
                };
                // A copy no server saw (refused, a GOAWAY) says nothing
                // about the call: like a non-fatal failure, the next copy
                // goes.
                if !status.is_not_processed() && !this.policy.is_non_fatal(status.code()) {
                    return Poll::Ready(Err(status));
                }
                if let Some(throttle) = this.throttle.as_ref() {
                    throttle.failed();
                }
                match pushback(&status) {
                    Some(None) => *this.stopped = true,
                    Some(Some(wait)) => {
                        // The next copy after the server's wait, not at once.
                        // (A pushback too long to add to the clock: as
                        // good as never.)
                        match Instant::now().checked_add(wait) {
                            Some(at) => this.timer.as_mut().reset(at),
                            None => *this.stopped = true,
                        }
                        *this.due = false;
                    }
                    None => *this.due = true,
                }
                *this.last_failure = Some(status);
            }
            let more = !*this.stopped && *this.sent < this.policy.max_attempts();
            if !more {
                if this.in_flight.is_empty() {
                    let failure = this.last_failure.take();
                    return Poll::Ready(Err(failure.unwrap_or_else(|| {
                        Status::internal("hedged call polled after it ended")
                    })));
                }
                return Poll::Pending;
            }
            if !*this.due {
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *this.due = true;
            }
            // A copy is due: send it when the throttle allows and the
            // service is ready.
            if this
                .throttle
                .as_ref()
                .is_some_and(|throttle| !throttle.allows_retry())
            {
                *this.stopped = true;
                continue;
            }
            match this.service.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(status)) => {
                    // No copy can be sent: the copies in flight decide.
                    *this.stopped = true;
                    *this.last_failure = Some(status);
                    continue;
                }
                Poll::Ready(Ok(())) => {}
            }
            let request = next_attempt(this.spare, this.sent);
            this.in_flight.push(this.service.call(request));
            *this.due = false;
            this.timer
                .as_mut()
                .reset(Instant::now() + this.policy.delay());
        }
    }
}
