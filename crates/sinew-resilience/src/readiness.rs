//! [`ReadyWithin`]: a call's wait for the service below to be ready,
//! bounded by the call's deadline.
//!
//! The layers here wait for readiness inside a call's own future (a retry
//! before its next attempt, a breaker's call, a due hedge, a configured
//! call whose service was not ready when the caller asked), where the
//! deadline is known; tower's `poll_ready` is not told it. Without a bound
//! such a wait lasts as long as nothing is ready (a channel built to wait
//! for ready, every endpoint down), whatever the call's timeout.

use sinew_rpc::call::CallRequest;
use sinew_rpc::Status;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};
use tower::Service;

/// Waits for a service's readiness until a deadline. Its timer is made
/// when the wait begins (the first `Pending`), so a call that finds the
/// service ready pays for none.
#[derive(Debug)]
pub(crate) struct ReadyWithin {
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl ReadyWithin {
    /// A wait bounded by `deadline` (none: unbounded).
    pub(crate) fn new(deadline: Option<Instant>) -> ReadyWithin {
        ReadyWithin {
            deadline,
            timer: None,
        }
    }

    /// A wait bounded by `request`'s deadline.
    pub(crate) fn of(request: &CallRequest) -> ReadyWithin {
        ReadyWithin::new(request.deadline())
    }

    /// `service`'s readiness, or `DEADLINE_EXCEEDED` (not processed: no
    /// server saw the call) once the deadline passes before it.
    pub(crate) fn poll_ready<S, R>(
        &mut self,
        service: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Status>>
    where
        S: Service<R, Error = Status>,
    {
        match service.poll_ready(cx) {
            Poll::Pending => {
                let Some(deadline) = self.deadline else {
                    return Poll::Pending;
                };
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(not_ready_in_time())),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.timer = None;
                ready
            }
        }
    }
}

/// The failure of a call whose deadline passed while it waited for the
/// service below.
fn not_ready_in_time() -> Status {
    Status::deadline_exceeded("deadline exceeded while waiting for the service to be ready")
        .mark_not_processed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pair, request};
    use sinew_rpc::Code;
    use std::future::poll_fn;
    use std::time::Duration;
    use tower::Service;

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_readiness_ends_at_the_deadline() {
        let (mut service, mut handle) = pair();
        handle.allow(0);
        let mut call = request("/a.B/C");
        call.set_deadline(Some(Instant::now() + Duration::from_millis(100)));
        let mut wait = ReadyWithin::of(&call);
        let started = Instant::now();
        let status = poll_fn(|cx| wait.poll_ready::<_, CallRequest>(&mut service, cx))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(status.is_not_processed());
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_ready_in_time_is_used_and_no_deadline_sets_no_bound() {
        let (mut service, mut handle) = pair();
        handle.allow(0);
        let mut call = request("/a.B/C");
        call.set_deadline(Some(Instant::now() + Duration::from_secs(1)));
        let mut wait = ReadyWithin::of(&call);
        let ready = poll_fn(|cx| wait.poll_ready::<_, CallRequest>(&mut service, cx));
        let allow = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            handle.allow(1);
        };
        let (ready, ()) = tokio::join!(ready, allow);
        ready.unwrap();
        assert!(wait.timer.is_none(), "the timer goes once ready");

        // (The readiness granted goes with a call.)
        let _sent = service.call(request("/a.B/C"));
        let mut unbounded = ReadyWithin::new(None);
        let waited = tokio::time::timeout(
            Duration::from_secs(3600),
            poll_fn(|cx| unbounded.poll_ready::<_, CallRequest>(&mut service, cx)),
        )
        .await;
        assert!(waited.is_err(), "still waiting an hour later");
        assert!(unbounded.timer.is_none(), "no deadline, no timer");
    }
}
