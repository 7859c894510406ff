//! [`ResponseFuture`]: one call through [`Configured`](super::Configured):
//! passed through (once the service below is ready, within the call's
//! deadline), retried, hedged, or failed before it was sent; and its response
//! body held to the method's size limit.

use crate::hedge::Hedging;
use crate::readiness::ReadyWithin;
use crate::retry::Retrying;
use futures_core::Stream;
use pin_project_lite::pin_project;
use sinew_rpc::call::{CallRequest, CallResponse, ResponseBody, ResponseFrame};
use sinew_rpc::Status;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tower::Service;

pin_project! {
    /// The future of one call through [`Configured`](super::Configured):
    /// resolves when the response begins.
    pub struct ResponseFuture<S, F> {
        #[pin]
        kind: Kind<S, F>,
        response_limit: Option<usize>,
    }
}

pin_project! {
    #[project = KindProjection]
    enum Kind<S, F> {
        Readying { service: S, request: Option<CallRequest>, wait: ReadyWithin },
        Direct { #[pin] future: F },
        Retrying { #[pin] retrying: Retrying<S, F> },
        Hedging { #[pin] hedging: Hedging<S, F> },
        Failed { status: Option<Status> },
    }
}

impl<S, F> ResponseFuture<S, F> {
    pub(super) fn direct(future: F, response_limit: Option<usize>) -> ResponseFuture<S, F> {
        ResponseFuture {
            kind: Kind::Direct { future },
            response_limit,
        }
    }

    /// A call sent once `service`, not ready now, is (within the call's
    /// deadline).
    pub(super) fn readying(
        service: S,
        request: CallRequest,
        response_limit: Option<usize>,
    ) -> ResponseFuture<S, F> {
        ResponseFuture {
            kind: Kind::Readying {
                wait: ReadyWithin::of(&request),
                service,
                request: Some(request),
            },
            response_limit,
        }
    }

    pub(super) fn retrying(
        retrying: Retrying<S, F>,
        response_limit: Option<usize>,
    ) -> ResponseFuture<S, F> {
        ResponseFuture {
            kind: Kind::Retrying { retrying },
            response_limit,
        }
    }

    pub(super) fn hedging(
        hedging: Hedging<S, F>,
        response_limit: Option<usize>,
    ) -> ResponseFuture<S, F> {
        ResponseFuture {
            kind: Kind::Hedging { hedging },
            response_limit,
        }
    }

    pub(super) fn failed(status: Status) -> ResponseFuture<S, F> {
        ResponseFuture {
            kind: Kind::Failed {
                status: Some(status),
            },
            response_limit: None,
        }
    }
}

impl<S, F> Future for ResponseFuture<S, F>
where
    S: Service<CallRequest, Response = CallResponse, Error = Status, Future = F>,
    F: Future<Output = Result<CallResponse, Status>>,
{
    type Output = Result<CallResponse, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let KindProjection::Readying {
            service,
            request,
            wait,
        } = this.kind.as_mut().project()
        {
            ready!(wait.poll_ready(service, cx))?;
            let request = request.take().expect("a call is sent once");
            let future = service.call(request);
            this.kind.set(Kind::Direct { future });
        }
        let response = match this.kind.project() {
            KindProjection::Readying { .. } => unreachable!("sent above"),
            KindProjection::Direct { future } => ready!(future.poll(cx)),
            KindProjection::Retrying { retrying } => ready!(retrying.poll(cx)),
            KindProjection::Hedging { hedging } => ready!(hedging.poll(cx)),
            KindProjection::Failed { status } => Err(status
                .take()
                .unwrap_or_else(|| Status::internal("call polled after it ended"))),
        }?;
        Poll::Ready(Ok(match *this.response_limit {
            Some(limit) => limited(response, limit),
            None => response,
        }))
    }
}

impl<S, F> std::fmt::Debug for ResponseFuture<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// `response`, ending with `RESOURCE_EXHAUSTED` (and the call cancelled) at
/// the first message larger than `limit` bytes.
fn limited(response: CallResponse, limit: usize) -> CallResponse {
    let (headers, body, extensions) = response.into_parts();
    let body = ResponseBody::new(Limited {
        body: Some(body),
        limit,
    });
    CallResponse::from_parts(headers, body, extensions)
}

/// A response body held to a message size limit.
struct Limited {
    /// `None` once it ended (dropping the body cancels the call).
    body: Option<ResponseBody>,
    limit: usize,
}

impl Stream for Limited {
    type Item = ResponseFrame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ResponseFrame>> {
        let limit = self.limit;
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(body).poll_next(cx));
        Poll::Ready(match frame {
            Some(ResponseFrame::Message(message)) if message.len() > limit => {
                self.body = None;
                Some(ResponseFrame::Status(Status::resource_exhausted(format!(
                    "response message of {} bytes is larger than the {limit} bytes the service config allows",
                    message.len()
                ))))
            }
            Some(ResponseFrame::Status(status)) => {
                self.body = None;
                Some(ResponseFrame::Status(status))
            }
            other => other,
        })
    }
}
