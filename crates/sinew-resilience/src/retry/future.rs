//! [`Retrying`]: the attempts of one call under a [`RetryPolicy`], by the
//! rules of the module docs: send, and on a failure before the response
//! began, decide (again at once, after a wait, or not), wait, wait for the
//! service to be ready (within the call's deadline), send a copy.

use super::{next_attempt, pushback, Replay, RetryPolicy, RetryThrottle};
use crate::readiness::ReadyWithin;
use pin_project_lite::pin_project;
use sinew_rpc::call::{Attempts, CallRequest, CallResponse, Destination};
use sinew_rpc::{Code, Status};
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
        // What each next attempt is copied from: the request, or its head
        // and the replay of its stream.
        spare: CallRequest,
        replay: Option<Replay>,
        // Attempts sent, transparent ones included.
        sent: u32,
        counts: Counts,
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
        Readying { wait: ReadyWithin },
    }
}

/// What the decisions between attempts keep.
#[derive(Debug)]
struct Counts {
    /// Attempts that count against the policy's maximum.
    counted: u32,
    transparent_left: bool,
    /// Retries since the call began or since the last pushback: the
    /// backoff's exponent.
    backoff_exponent: u32,
    /// The method waits for a ready endpoint (`waitForReady`): calls no
    /// server saw because none was ready go again until the deadline.
    wait_for_ready: bool,
    /// Waits for ready so far: their backoff's exponent.
    ready_waits: u32,
}

/// The first wait for a ready endpoint, doubling up to [`READY_WAIT_MAX`].
const READY_WAIT_FIRST: Duration = Duration::from_millis(10);
const READY_WAIT_MAX: Duration = Duration::from_secs(1);

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
    /// The attempts of `request` under `policy`, the first sent at once
    /// by `service`, which is ready; later attempts wait for it to be
    /// ready again. A streaming request keeps up to `buffer` bytes of its
    /// messages for them.
    pub(crate) fn start(
        mut service: S,
        request: CallRequest,
        policy: RetryPolicy,
        throttle: Option<RetryThrottle>,
        wait_for_ready: bool,
        buffer: usize,
    ) -> Retrying<S, F> {
        let mut sent = 0;
        let (first, spare, replay) = if request.body().is_stream() {
            let (head, replay) = Replay::split(request, buffer);
            let first = next_attempt(&head, Some(&replay), &mut sent);
            (first, head, Some(replay))
        } else {
            let spare = request
                .try_spare()
                .expect("a single-message request has a spare");
            sent = 1;
            (request, spare, None)
        };
        let first = service.call(first);
        Retrying {
            service,
            policy,
            throttle,
            spare,
            replay,
            sent,
            counts: Counts::new(wait_for_ready),
            last_destination: None,
            state: State::Calling { future: first },
        }
    }

    /// The attempts of `request` under `policy`, the first sent once
    /// `service`, not ready now, is (within the call's deadline).
    pub(crate) fn unsent(
        service: S,
        request: CallRequest,
        policy: RetryPolicy,
        throttle: Option<RetryThrottle>,
        wait_for_ready: bool,
        buffer: usize,
    ) -> Retrying<S, F> {
        let wait = ReadyWithin::of(&request);
        let (spare, replay) = if request.body().is_stream() {
            let (head, replay) = Replay::split(request, buffer);
            (head, Some(replay))
        } else {
            (request, None)
        };
        Retrying {
            service,
            policy,
            throttle,
            state: State::Readying { wait },
            spare,
            replay,
            sent: 0,
            counts: Counts::new(wait_for_ready),
            last_destination: None,
        }
    }
}

impl Counts {
    /// Before the first attempt.
    fn new(wait_for_ready: bool) -> Counts {
        Counts {
            // (The first attempt, counted when it is made.)
            counted: 1,
            transparent_left: true,
            backoff_exponent: 0,
            wait_for_ready,
            ready_waits: 0,
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
            // A failed attempt, or one that could not be made (the service
            // below was not ready).
            let status = match this.state.as_mut().project() {
                StateProjection::Calling { future } => match ready!(future.poll(cx)) {
                    Ok(response) => {
                        // Committed: the response began.
                        if let Some(throttle) = this.throttle.as_ref() {
                            throttle.succeeded();
                        }
                        if let Some(replay) = this.replay.as_ref() {
                            replay.commit();
                        }
                        return Poll::Ready(Ok(response));
                    }
                    Err(status) => status,
                },
                StateProjection::Waiting { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Readying {
                        wait: ReadyWithin::of(this.spare),
                    });
                    continue;
                }
                StateProjection::Readying { wait } => {
                    match ready!(wait.poll_ready(this.service, cx)) {
                        Ok(()) => {
                            let mut request =
                                next_attempt(this.spare, this.replay.as_ref(), this.sent);
                            if let Some(destination) = this.last_destination.take() {
                                request
                                    .extensions_mut()
                                    .insert(Attempts::after(destination));
                            }
                            let future = this.service.call(request);
                            this.state.set(State::Calling { future });
                            continue;
                        }
                        Err(status) => status,
                    }
                }
            };
            if this.replay.as_ref().is_some_and(|replay| !replay.retire()) {
                // Its stream outgrew the retry buffer (or the caller's
                // stream failed): this attempt was the last.
                return Poll::Ready(Err(status));
            }
            let next = decide(
                &status,
                this.policy,
                this.throttle.as_ref(),
                this.spare,
                this.counts,
            );
            *this.last_destination = status.destination().cloned();
            match next {
                Next::Fail => return Poll::Ready(Err(status)),
                Next::Now => this.state.set(State::Readying {
                    wait: ReadyWithin::of(this.spare),
                }),
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
    }
}

/// What follows an attempt that failed with `status` (see the module docs),
/// counting the attempt about to be made.
fn decide(
    status: &Status,
    policy: &RetryPolicy,
    throttle: Option<&RetryThrottle>,
    spare: &CallRequest,
    counts: &mut Counts,
) -> Next {
    if status.is_not_processed() && counts.transparent_left {
        // No server saw it: once again at once, not counted.
        counts.transparent_left = false;
        return Next::Now;
    }
    if counts.wait_for_ready && status.is_not_processed() && status.code() == Code::Unavailable {
        // No endpoint was ready: wait, not counted, within the deadline.
        let wait = READY_WAIT_FIRST
            .saturating_mul(1 << counts.ready_waits.min(16))
            .min(READY_WAIT_MAX);
        counts.ready_waits += 1;
        return within_deadline(spare, wait);
    }
    if !policy.is_retryable(status.code()) {
        return Next::Fail;
    }
    if let Some(throttle) = throttle {
        throttle.failed();
    }
    let pushback = pushback(status);
    if counts.counted >= policy.max_attempts()
        || matches!(pushback, Some(None))
        || throttle.is_some_and(|throttle| !throttle.allows_retry())
    {
        return Next::Fail;
    }
    let wait = match pushback {
        Some(Some(wait)) => {
            counts.backoff_exponent = 0;
            wait
        }
        _ => {
            let wait = policy.delay(counts.backoff_exponent);
            counts.backoff_exponent += 1;
            wait
        }
    };
    let next = within_deadline(spare, wait);
    if !matches!(next, Next::Fail) {
        counts.counted += 1;
    }
    next
}

/// Another attempt after `wait`, unless it would start past the call's
/// deadline (the deadline covers every attempt: it could only fail).
fn within_deadline(spare: &CallRequest, wait: Duration) -> Next {
    if spare
        .deadline()
        // (A wait too long to add to the clock ends past any deadline: a
        // server's pushback can be any number.)
        .is_some_and(|deadline| {
            Instant::now()
                .checked_add(wait)
                .is_none_or(|start| start >= deadline)
        })
    {
        return Next::Fail;
    }
    if wait.is_zero() {
        Next::Now
    } else {
        Next::After(wait)
    }
}
