//! [`ResponseFuture`]: one call through [`Fault`](super::Fault): passed on
//! at once, failed, or passed on (or failed) after a delay.

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use sinew_rpc::Status;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;
use tower::Service;

pin_project! {
    /// The future of one call through [`Fault`](super::Fault).
    pub struct ResponseFuture<S: Service<R>, R> {
        #[pin]
        state: State<S, R>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<S: Service<R>, R> {
        Delaying {
            #[pin]
            sleep: Sleep,
            abandoned: BoxFuture<'static, Status>,
            service: S,
            request: Option<R>,
            abort: Option<Status>,
        },
        Calling { #[pin] future: S::Future },
        Failed { status: Option<Status> },
    }
}

impl<S: Service<R>, R> ResponseFuture<S, R> {
    pub(super) fn direct(future: S::Future) -> ResponseFuture<S, R> {
        ResponseFuture {
            state: State::Calling { future },
        }
    }

    pub(super) fn failed(status: Status) -> ResponseFuture<S, R> {
        ResponseFuture {
            state: State::Failed {
                status: Some(status),
            },
        }
    }

    pub(super) fn delayed(
        delay: Duration,
        abandoned: BoxFuture<'static, Status>,
        service: S,
        request: R,
        abort: Option<Status>,
    ) -> ResponseFuture<S, R> {
        ResponseFuture {
            state: State::Delaying {
                sleep: tokio::time::sleep(delay),
                abandoned,
                service,
                request: Some(request),
                abort,
            },
        }
    }
}

impl<S, R> Future for ResponseFuture<S, R>
where
    S: Service<R, Error = Status>,
{
    type Output = Result<S::Response, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProjection::Delaying {
                    sleep,
                    abandoned,
                    service,
                    request,
                    abort,
                } => {
                    if let Poll::Ready(status) = abandoned.as_mut().poll(cx) {
                        return Poll::Ready(Err(status));
                    }
                    // Past its deadline, a sleep stays ready: polling it
                    // again while the service readies is harmless.
                    ready!(sleep.poll(cx));
                    if let Some(status) = abort.take() {
                        return Poll::Ready(Err(status));
                    }
                    ready!(service.poll_ready(cx))?;
                    let request = request.take().expect("a delayed call is sent once");
                    let future = service.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProjection::Calling { future } => return future.poll(cx),
                StateProjection::Failed { status } => {
                    return Poll::Ready(Err(status
                        .take()
                        .unwrap_or_else(|| Status::internal("call polled after it ended"))))
                }
            }
        }
    }
}
