//! [`Dispatch`]: the bottom of every server stack, where a call meets its
//! handler.
//!
//! Every call a server accepts, whatever protocol carried it (sinew's own, gRPC
//! through an extension) and whatever service it is for (the application's,
//! health, reflection, local-endpoint discovery), ends up here as a
//! [`ServerCall`]: layers added with
//! [`ServerBuilder::layer`](super::ServerBuilder::layer) wrap this service, and
//! without layers the connection runs the call the same way, without the
//! service around it (and without a box for its future).
//!
//! A dispatched call drives its handler to the call's end and resolves to the
//! status the call ended with, however it ended: the handler's own status (OK or not),
//! `INTERNAL` if it panicked, `DEADLINE_EXCEEDED` past the deadline, the
//! client's `CANCELLED` if it reset the call or `UNAVAILABLE` if its connection
//! went away, and `UNAVAILABLE` when a graceful shutdown's drain deadline ends
//! it. When the handler could not send that status itself, `run` sends it.

use super::call::{CallIo, ServerCall};
use crate::status::Status;
use futures_util::future::{BoxFuture, CatchUnwind};
use futures_util::FutureExt;
use pin_project_lite::pin_project;
use sinew_wire::Code;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The status of a call cancelled from outside: `DEADLINE_EXCEEDED` when the
/// cancellation came as the deadline passed, the cancellation's own otherwise.
fn deadline_or(status: Status, deadline: Option<Instant>) -> Status {
    match deadline {
        Some(deadline)
            if status.code() == Code::Cancelled
                && deadline.saturating_duration_since(Instant::now()) <= DEADLINE_SLACK =>
        {
            Status::deadline_exceeded("the caller's deadline passed")
        }
        _ => status,
    }
}

/// The service at the bottom of every server stack: runs a [`ServerCall`] on
/// the method its path names and resolves to the call's final status (see the
/// module docs). Never fails: a call that cannot run (an unknown method, a
/// deadline gone before it arrived) ends with its status, which is returned.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dispatch;

impl tower::Service<ServerCall> for Dispatch {
    type Response = Status;
    type Error = Status;
    type Future = DispatchFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ServerCall) -> DispatchFuture {
        DispatchFuture { running: run(call) }
    }
}

pin_project! {
    /// A call dispatched by [`Dispatch`], run to its end: resolves to the
    /// status it ended with (never an error). Not boxed: the stack around
    /// it boxes it once.
    pub struct DispatchFuture {
        #[pin]
        running: Running,
    }
}

impl Future for DispatchFuture {
    type Output = Result<Status, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().running.poll(cx).map(Ok)
    }
}

impl std::fmt::Debug for DispatchFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchFuture").finish_non_exhaustive()
    }
}

pin_project! {
    /// One call, from its handler's start to the call's end: see `run`.
    ///
    /// Written out rather than an `async fn` to stay small: the server spawns
    /// one per call.
    pub(crate) struct Running {
        io: CallIo,
        state: State,
        deadline: Option<Instant>,
        // What the handler's own calls inherit (`crate::inherit`).
        inherited: Option<Instant>,
        #[pin]
        expiry: Expiry,
    }
}

/// A cancellation this close to the call's deadline is the deadline's doing:
/// the client's clock ran out a moment before ours, and a gRPC client's reset
/// carries no reason (sinew's says `DEADLINE_EXCEEDED` itself).
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

enum State {
    /// The handler runs (its future is boxed by the generated code).
    Handling(CatchUnwind<AssertUnwindSafe<BoxFuture<'static, Status>>>),
    /// The call was refused before any handler: it ends with this status.
    Refused(Status),
    Done,
}

pin_project! {
    #[project = ExpiryProjection]
    enum Expiry {
        Never,
        At { #[pin] sleep: Sleep },
    }
}

/// Runs one call to its end; resolves to the status it ended with (see the
/// module docs).
pub(crate) fn run(mut call: ServerCall) -> Running {
    let io = call.io.clone();
    let call_deadline = call.deadline;
    let expiry = match call.deadline {
        Some(deadline) => Expiry::At {
            sleep: tokio::time::sleep_until(deadline),
        },
        None => Expiry::Never,
    };
    // (A bare status allocates nothing; the call is dispatched once.)
    let route = std::mem::replace(&mut call.route, Err(Status::new(Code::Internal, "")));
    // What the handler's own calls inherit (the deadline as the layers
    // left it, less the margin).
    let inherited = call.deadline.map(|deadline| {
        deadline
            .checked_sub(call.deadline_margin)
            .unwrap_or(deadline)
    });
    let state = match route {
        Ok((service, method)) => {
            State::Handling(AssertUnwindSafe(service.call(method, call)).catch_unwind())
        }
        Err(status) => State::Refused(status),
    };
    Running {
        io,
        state,
        deadline: call_deadline,
        inherited,
        expiry,
    }
}

impl Future for Running {
    type Output = Status;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Status> {
        let this = self.project();
        let status = match std::mem::replace(this.state, State::Done) {
            State::Refused(status) => {
                this.io.end(&status);
                return Poll::Ready(status);
            }
            State::Done => panic!("a call polled after its end"),
            State::Handling(mut handler) => {
                match crate::inherit::poll_with(*this.inherited, || Pin::new(&mut handler).poll(cx))
                {
                    // The handler ended the call itself.
                    Poll::Ready(Ok(status)) => return Poll::Ready(status),
                    Poll::Ready(Err(_panic)) => Status::internal("handler panicked"),
                    Poll::Pending => {
                        let expired = match this.expiry.project() {
                            ExpiryProjection::At { sleep } => sleep.poll(cx).is_ready(),
                            ExpiryProjection::Never => false,
                        };
                        if !expired {
                            if let Poll::Ready(status) = this.io.poll_cancelled(cx) {
                                // Cancelled from outside: the other side knows.
                                return Poll::Ready(deadline_or(status, *this.deadline));
                            }
                            *this.state = State::Handling(handler);
                            return Poll::Pending;
                        }
                        Status::deadline_exceeded(
                            "deadline exceeded while the server was handling the call",
                        )
                    }
                }
            }
        };
        // The handler could not end the call (it panicked, or the deadline
        // passed first): end it here. (The handler is dropped by now.)
        this.io.end(&status);
        Poll::Ready(status)
    }
}
