//! [`Hedging`]: the copies of one call under a [`HedgingPolicy`], by the
//! rules of the module docs.

use super::HedgingPolicy;
use crate::readiness::ReadyWithin;
use crate::retry::{next_attempt, pushback, RetryThrottle};
use futures_util::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;
use sinew_rpc::call::{Attempts, CallRequest, CallResponse};
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
        // That wait, within the call's deadline.
        wait: ReadyWithin,
    }
}

impl<S, F> Hedging<S, F>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status, Future = F>,
    F: Future<Output = Result<CallResponse, Status>>,
{
    /// The copies of `request` under `policy`, the first sent at once by
    /// `service`, which is ready.
    pub(crate) fn start(
        service: S,
        request: CallRequest,
        policy: HedgingPolicy,
        throttle: Option<RetryThrottle>,
    ) -> Hedging<S, F> {
        let mut hedging = Hedging::unsent(service, request, policy, throttle);
        let first = next_attempt(&hedging.spare, None, &mut hedging.sent);
        hedging.in_flight.push(hedging.service.call(first));
        hedging.due = false;
        hedging
    }

    /// The copies of `request` under `policy`, the first sent once
    /// `service`, not ready now, is (within the call's deadline).
    pub(crate) fn unsent(
        service: S,
        mut request: CallRequest,
        policy: HedgingPolicy,
        throttle: Option<RetryThrottle>,
    ) -> Hedging<S, F> {
        // Copies in flight together share where each went, for each next
        // one to go elsewhere.
        request.extensions_mut().insert(Attempts::new());
        let timer = tokio::time::sleep(policy.delay());
        let wait = ReadyWithin::of(&request);
        Hedging {
            service,
            policy,
            throttle,
            spare: request,
            in_flight: FuturesUnordered::new(),
            sent: 0,
            stopped: false,
            last_failure: None,
            timer,
            due: true,
            wait,
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
            if *this.sent > 0
                && this
                    .throttle
                    .as_ref()
                    .is_some_and(|throttle| !throttle.allows_retry())
            {
                *this.stopped = true;
                continue;
            }
            match this.wait.poll_ready(this.service, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(status)) => {
                    // No copy can be sent (or not before the deadline): the
                    // copies in flight decide.
                    *this.stopped = true;
                    *this.last_failure = Some(status);
                    continue;
                }
                Poll::Ready(Ok(())) => {}
            }
            let request = next_attempt(this.spare, None, this.sent);
            this.in_flight.push(this.service.call(request));
            *this.due = false;
            this.timer
                .as_mut()
                .reset(Instant::now() + this.policy.delay());
        }
    }
}
