//! [`Retrying`]: the attempts of one call under a [`RetryPolicy`], by the
//! rules of the module docs: send, and on a failure before the response
//! began, decide (again at once, after a wait, or not), wait, wait for the
//! service to be ready, send a copy.

use super::{next_attempt, pushback, RetryPolicy, RetryThrottle};
use pin_project_lite::pin_project;
use sinew_rpc::call::{Attempts, CallRequest, CallResponse, Destination};
use sinew_rpc::Status;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower::Service;

pin_project! {
    /// One call's attempts; resolves with the first response that begins, or
    /// the failure no retry follows.
    pub(crate) struct Retrying<S, F> {
        service: S,
        policy: RetryPolicy,
        throttle: Option<RetryThrottle>,
        // What each next attempt is copied from.
        spare: CallRequest,
        // Attempts that count against the policy's maximum.
        counted: u32,
        // Attempts sent, transparent ones included.
        sent: u32,
        transparent_left: bool,
        // Retries since the call began or since the last pushback: the
        // backoff's exponent.
        backoff_exponent: u32,
        // Where the attempt that failed last went, for the next to avoid.
        last_destination: Option<Destination>,
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<F> {
        Calling { #[pin] future: F },
        Waiting { #[pin] sleep: Sleep },
        Readying,
    }
}

/// What follows a failed attempt.
enum Next {
    Now,
    After(Duration),
    Fail,
}

impl<S, F> Retrying<S, F>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status, Future = F>,
    F: Future<Output = Result<CallResponse, Status>>,
{
    /// The attempts of a call whose first attempt is `first`, made from
    /// `service` with a request `spare` is a copy of; later attempts wait
    /// for `service` to be ready again.
    pub(crate) fn new(
        service: S,
        first: F,
        spare: CallRequest,
        policy: RetryPolicy,
        throttle: Option<RetryThrottle>,
    ) -> Retrying<S, F> {
        Retrying {
            service,
            policy,
            throttle,
            spare,
            counted: 1,
            sent: 1,
            transparent_left: true,
            backoff_exponent: 0,
            last_destination: None,
            state: State::Calling { future: first },
        }
    }
}

impl<S, F> Future for Retrying<S, F>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status, Future = F>,
    F: Future<Output = Result<CallResponse, Status>>,
{
    type Output = Result<CallResponse, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProjection::Calling { future } => {
                    let status = match ready!(future.poll(cx)) {
                        Ok(response) => {
                            // Committed: the response began.
                            if let Some(throttle) = this.throttle.as_ref() {
                                throttle.succeeded();
                            }
                            return Poll::Ready(Ok(response));
                        }
                        Err(status) => status,
                    };
                    let next = decide(
                        &status,
                        this.policy,
                        this.throttle.as_ref(),
                        this.spare,
                        this.counted,
                        this.transparent_left,
                        this.backoff_exponent,
                    );
                    *this.last_destination = status.destination().cloned();
                    match next {
                        Next::Fail => return Poll::Ready(Err(status)),
                        Next::Now => this.state.set(State::Readying),
                        Next::After(wait) => {
                            tracing::debug!(
                                path = %this.spare.path(),
                                %status,
                                ?wait,
                                attempt = *this.sent,
                                "retrying the call"
                            );
                            this.state.set(State::Waiting {
                                sleep: tokio::time::sleep(wait),
                            });
                        }
                    }
                }
                StateProjection::Waiting { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Readying);
                }
                StateProjection::Readying => {
                    ready!(this.service.poll_ready(cx))?;
                    let mut request = next_attempt(this.spare, this.sent);
                    if let Some(destination) = this.last_destination.take() {
                        request
                            .extensions_mut()
                            .insert(Attempts::after(destination));
                    }
                    let future = this.service.call(request);
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

/// What follows an attempt that failed with `status` (see the module docs),
/// counting the attempt about to be made.
fn decide(
    status: &Status,
    policy: &RetryPolicy,
    throttle: Option<&RetryThrottle>,
    spare: &CallRequest,
    counted: &mut u32,
    transparent_left: &mut bool,
    backoff_exponent: &mut u32,
) -> Next {
    if status.is_not_processed() && *transparent_left {
        // No server saw it: once again at once, not counted.
        *transparent_left = false;
        return Next::Now;
    }
    if !policy.is_retryable(status.code()) {
        return Next::Fail;
    }
    if let Some(throttle) = throttle {
        throttle.failed();
    }
    let pushback = pushback(status);
    if *counted >= policy.max_attempts()
        || matches!(pushback, Some(None))
        || throttle.is_some_and(|throttle| !throttle.allows_retry())
    {
        return Next::Fail;
    }
    let wait = match pushback {
        Some(Some(wait)) => {
            *backoff_exponent = 0;
            wait
        }
        _ => {
            let wait = policy.delay(*backoff_exponent);
            *backoff_exponent += 1;
            wait
        }
    };
    // The deadline covers every attempt: a retry that would start after it
    // could only fail.
    if spare
        .deadline()
        .is_some_and(|deadline| Instant::now() + wait >= deadline)
    {
        return Next::Fail;
    }
    *counted += 1;
    if wait.is_zero() {
        Next::Now
    } else {
        Next::After(wait)
    }
}
